/* libaiq_producer: job submission and result reading for backend services. */
#include "aiq/producer.h"
#include "idmap.h"
#include "job.h"
#include "kafka.h"
#include "timeutil.h"
#include "topics.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

struct aiq_producer {
    rd_kafka_t *rk;
    char prefix[AIQ_TOPIC_MAX];
    size_t max_job_bytes;
    aiq_delivery_cb on_delivery;
    void *opaque;
    uint64_t failed;
    double rate, tokens; /* token bucket; rate 0 = unlimited */
    int64_t refill_ms;
    int fatal; /* 1 once Kafka refused us for good (login, TLS, fatal error) */
    char fatal_msg[512];
    char last_err[512]; /* the latest error librdkafka reported, for aiq_producer_connect */
};

#define RESULTS_CONNECT_MS 15000 /* how long aiq_results_open waits for a broker to answer */

struct aiq_results {
    rd_kafka_t *rk;
    int n;         /* partitions of the topic */
    int64_t *hi;   /* high watermark of each partition when the reader was opened */
    int64_t *next; /* offset of the next record to read, per partition */
    int fatal;     /* 1 once Kafka refused the reader for good (login, TLS) */
    char last_err[400];
};

/* The conf of role (kafka.c) with the caller's properties last; the reason in errstr. */
static rd_kafka_conf_t *client_conf(aiq_kafka_role_t role, const aiq_kafka_params_t *params,
                                    char *errstr, size_t errlen)
{
    rd_kafka_conf_t *kc = NULL;
    aiq_err_t err = {0};
    if (aiq_kafka_conf_new(&kc, role, params, &err))
        snprintf(errstr, errlen, "%s", err.msg);
    return kc;
}

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    aiq_producer_t *p = opaque;
    char *id = m->_private;
    if (m->err)
        p->failed++;
    const char *why = !m->err ? "" : p->fatal ? p->fatal_msg : rd_kafka_err2str(m->err);
    if (p->on_delivery)
        p->on_delivery(p->opaque, id, m->err == 0, why);
    free(id);
}

/* What to check when no broker answered: librdkafka 2.0 logged a security.protocol hint
 * itself when a listener hung up on the first request, newer ones only that it hung up. */
static const char *no_answer_hint(const char *last_err)
{
    return strstr(last_err, "security.protocol")
               ? ""
               : " (is the broker up, and does security.protocol match its listener?)";
}

/* Errors that retrying cannot cure: a refused login or TLS handshake (librdkafka would
 * retry them for ever) and librdkafka's own fatal errors. */
static int permanent_kafka_error(rd_kafka_t *rk, int err)
{
    (void)rk;
    return err == RD_KAFKA_RESP_ERR__AUTHENTICATION || err == RD_KAFKA_RESP_ERR__SSL ||
           err == RD_KAFKA_RESP_ERR__FATAL;
}

/* Runs inside aiq_producer_poll / _flush / _submit on the caller's thread. A permanent
 * error fails every queued job at once (with the reason) instead of after
 * message.timeout.ms, so a caller with wrong credentials learns it in milliseconds. */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    aiq_producer_t *p = opaque;
    /* "1/1 brokers are down" says less than the error that brought them down. */
    if (err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || !p->last_err[0])
        snprintf(p->last_err, sizeof(p->last_err), "%s", reason);
    if (p->fatal || !permanent_kafka_error(rk, err))
        return;
    char why[480];
    if (err == RD_KAFKA_RESP_ERR__FATAL)
        rd_kafka_fatal_error(rk, why, sizeof(why));
    else
        snprintf(why, sizeof(why), "%s", reason);
    snprintf(p->fatal_msg, sizeof(p->fatal_msg), "Kafka %s failed: %s",
             err == RD_KAFKA_RESP_ERR__SSL     ? "TLS"
             : err == RD_KAFKA_RESP_ERR__FATAL ? "producer"
                                               : "authentication",
             why);
    p->fatal = 1;
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
}

int aiq_producer_new(aiq_producer_t **out, const aiq_producer_conf_t *conf, char *errstr,
                     size_t errlen)
{
    if (!conf->brokers || !*conf->brokers) {
        snprintf(errstr, errlen, "brokers: required");
        return AIQ_SUBMIT_EINVAL;
    }
    aiq_producer_t *p = calloc(1, sizeof(*p));
    if (!p)
        return AIQ_SUBMIT_ENOMEM;
    snprintf(p->prefix, sizeof(p->prefix), "%s", conf->topic_prefix ? conf->topic_prefix : "aiq.");
    p->max_job_bytes = conf->max_job_bytes ? conf->max_job_bytes : 524288;
    p->on_delivery = conf->on_delivery;
    p->opaque = conf->opaque;
    p->rate = conf->rate_per_s > 0 ? conf->rate_per_s : 0;
    p->refill_ms = aiq_mono_ms();
    aiq_kafka_params_t params = {
        .brokers = conf->brokers, .client_id = conf->client_id, .props = conf->kafka_props};
    rd_kafka_conf_t *kc = client_conf(AIQ_KAFKA_JOB_PRODUCER, &params, errstr, errlen);
    if (!kc) {
        free(p);
        return AIQ_SUBMIT_EINVAL;
    }
    rd_kafka_conf_set_opaque(kc, p);
    rd_kafka_conf_set_dr_msg_cb(kc, on_dr);
    rd_kafka_conf_set_error_cb(kc, on_error);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, errlen);
    if (!p->rk) {
        rd_kafka_conf_destroy(kc);
        free(p);
        return AIQ_SUBMIT_EKAFKA;
    }
    *out = p;
    return 0;
}

/* Random RFC 4122 version-4 UUID text. */
static void new_job_id(char *buf, size_t cap)
{
    unsigned char b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        uint64_t t = (uint64_t)aiq_now_ms() ^ (uint64_t)(uintptr_t)buf;
        memcpy(b, &t, 8);
        memcpy(b + 8, &t, 8);
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(buf, cap, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

/* Fills id and created_at when absent, applies the options, then checks the whole
 * document. */
static int complete_job(json_t *doc, const aiq_submit_opts_t *o, char *errstr, size_t errlen)
{
    if (!json_is_object(doc)) {
        snprintf(errstr, errlen, "a job must be a JSON object");
        return AIQ_SUBMIT_EINVAL;
    }
    if (!json_object_get(doc, "id")) {
        char id[64];
        if (!o || !o->default_id)
            new_job_id(id, sizeof(id));
        json_object_set_new(doc, "id", json_string(o && o->default_id ? o->default_id : id));
    }
    if (o && o->priority)
        json_object_set_new(doc, "priority", json_string(o->priority));
    if (o && o->timeout_ms > 0 && !json_object_get(doc, "timeout_ms"))
        json_object_set_new(doc, "timeout_ms", json_integer(o->timeout_ms));
    if (!json_object_get(doc, "created_at")) {
        char ts[32];
        json_object_set_new(doc, "created_at",
                            json_string(aiq_time_format(aiq_now_ms(), ts, sizeof(ts))));
    }
    aiq_err_t err = {0};
    if (aiq_job_validate(doc, &err)) {
        snprintf(errstr, errlen, "%s", err.msg);
        return AIQ_SUBMIT_EINVAL;
    }
    return 0;
}

static int produce(aiq_producer_t *p, const char *topic, const char *id, char *text, size_t len,
                   char *errstr, size_t errlen)
{
    char *opaque = strdup(id);
    if (!opaque)
        return AIQ_SUBMIT_ENOMEM;
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(id, strlen(id)), RD_KAFKA_V_VALUE(text, len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
    if (!e)
        return 0;
    free(opaque);
    free(text);
    snprintf(errstr, errlen, "produce to %s: %s", topic, rd_kafka_err2str(e));
    return e == RD_KAFKA_RESP_ERR__QUEUE_FULL ? AIQ_SUBMIT_EFULL : AIQ_SUBMIT_EKAFKA;
}

/* Parses, completes and checks a job; on success *doc_out owns the document. */
static int prepare(const char *job_json, size_t len, const aiq_submit_opts_t *o, json_t **doc_out,
                   char *errstr, size_t errlen)
{
    json_error_t jerr;
    json_t *doc = json_loadb(job_json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        snprintf(errstr, errlen, "not JSON: %s at byte %d", jerr.text, jerr.position);
        return AIQ_SUBMIT_EINVAL;
    }
    int rc = complete_job(doc, o, errstr, errlen);
    if (rc) {
        json_decref(doc);
        return rc;
    }
    *doc_out = doc;
    return 0;
}

static int doc_priority(json_t *doc)
{
    int prio = aiq_priority_parse(json_string_value(json_object_get(doc, "priority")));
    return prio < 0 ? AIQ_PRIO_NORMAL : prio;
}

/* Blocks until the token bucket allows one more submission, serving delivery reports. */
static void rate_wait(aiq_producer_t *p)
{
    if (p->rate <= 0)
        return;
    for (;;) {
        int64_t now = aiq_mono_ms();
        p->tokens += (double)(now - p->refill_ms) * p->rate / 1000.0;
        p->refill_ms = now;
        double burst = p->rate / 10.0 > 1.0 ? p->rate / 10.0 : 1.0;
        if (p->tokens > burst)
            p->tokens = burst;
        if (p->tokens >= 1.0) {
            p->tokens -= 1.0;
            return;
        }
        int wait = (int)((1.0 - p->tokens) * 1000.0 / p->rate) + 1;
        rd_kafka_poll(p->rk, wait);
    }
}

int aiq_producer_submit_ex(aiq_producer_t *p, const char *job_json, size_t len,
                           const aiq_submit_opts_t *opts, char *id_out, size_t id_cap,
                           int *prio_out, char *errstr, size_t errlen)
{
    rate_wait(p);
    if (p->fatal) {
        snprintf(errstr, errlen, "%s", p->fatal_msg);
        return AIQ_SUBMIT_EKAFKA;
    }
    json_t *doc = NULL;
    int rc = prepare(job_json, len, opts, &doc, errstr, errlen);
    if (rc)
        return rc;
    const char *id = json_string_value(json_object_get(doc, "id"));
    int prio = doc_priority(doc);
    char topic[AIQ_TOPIC_MAX];
    aiq_topic_jobs(p->prefix, (aiq_priority_t)prio, topic, sizeof(topic));
    char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) {
        json_decref(doc);
        return AIQ_SUBMIT_ENOMEM;
    }
    size_t tlen = strlen(text);
    if (tlen > p->max_job_bytes) {
        snprintf(errstr, errlen, "job is %zu bytes, the limit is %zu", tlen, p->max_job_bytes);
        free(text);
        json_decref(doc);
        return AIQ_SUBMIT_ETOOBIG;
    }
    if (id_out)
        snprintf(id_out, id_cap, "%s", id);
    if (prio_out)
        *prio_out = prio;
    rc = produce(p, topic, id, text, tlen, errstr, errlen);
    json_decref(doc);
    return rc;
}

int aiq_producer_submit(aiq_producer_t *p, const char *job_json, size_t len, char *id_out,
                        size_t id_cap, char *errstr, size_t errlen)
{
    return aiq_producer_submit_ex(p, job_json, len, NULL, id_out, id_cap, NULL, errstr, errlen);
}

int aiq_job_check_ex(const char *job_json, size_t len, const aiq_submit_opts_t *opts,
                     size_t max_job_bytes, char *id_out, size_t id_cap, int *prio_out, char *errstr,
                     size_t errlen)
{
    json_t *doc = NULL;
    int rc = prepare(job_json, len, opts, &doc, errstr, errlen);
    if (rc)
        return rc;
    if (max_job_bytes) {
        char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
        size_t tlen = text ? strlen(text) : 0;
        free(text);
        if (!text)
            rc = AIQ_SUBMIT_ENOMEM;
        else if (tlen > max_job_bytes) {
            snprintf(errstr, errlen, "job is %zu bytes, the limit is %zu", tlen, max_job_bytes);
            rc = AIQ_SUBMIT_ETOOBIG;
        }
    }
    if (!rc && id_out)
        snprintf(id_out, id_cap, "%s", json_string_value(json_object_get(doc, "id")));
    if (!rc && prio_out)
        *prio_out = doc_priority(doc);
    json_decref(doc);
    return rc;
}

int aiq_job_check(const char *job_json, size_t len, char *errstr, size_t errlen)
{
    json_error_t jerr;
    json_t *doc = json_loadb(job_json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        snprintf(errstr, errlen, "not JSON: %s at byte %d", jerr.text, jerr.position);
        return AIQ_SUBMIT_EINVAL;
    }
    aiq_err_t err = {0};
    int rc = aiq_job_validate(doc, &err) ? AIQ_SUBMIT_EINVAL : 0;
    if (rc)
        snprintf(errstr, errlen, "%s", err.msg);
    json_decref(doc);
    return rc;
}

int aiq_producer_poll(aiq_producer_t *p, int timeout_ms)
{
    return rd_kafka_poll(p->rk, timeout_ms);
}

int aiq_producer_flush(aiq_producer_t *p, int timeout_ms)
{
    if (rd_kafka_flush(p->rk, timeout_ms))
        return p->fatal ? AIQ_SUBMIT_EKAFKA : AIQ_SUBMIT_ETIMEDOUT;
    return p->fatal ? AIQ_SUBMIT_EKAFKA : 0;
}

int aiq_producer_error(const aiq_producer_t *p, char *errstr, size_t errlen)
{
    if (!p->fatal)
        return 0;
    snprintf(errstr, errlen, "%s", p->fatal_msg);
    return AIQ_SUBMIT_EKAFKA;
}

int aiq_producer_connect(aiq_producer_t *p, int timeout_ms, char *errstr, size_t errlen)
{
    int64_t until = aiq_mono_ms() + timeout_ms;
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        int64_t left = until - aiq_mono_ms();
        int slice = left < 500 ? (left > 0 ? (int)left : 1) : 500;
        if (rd_kafka_metadata(p->rk, 0, NULL, &md, slice) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_metadata_destroy(md);
            return 0;
        }
        rd_kafka_poll(p->rk, 0); /* serves on_error */
        if (p->fatal)
            return aiq_producer_error(p, errstr, errlen);
        if (aiq_mono_ms() >= until) {
            snprintf(errstr, errlen, "no answer from Kafka within %d ms%s%s%s", timeout_ms,
                     p->last_err[0] ? ": " : "", p->last_err, no_answer_hint(p->last_err));
            return AIQ_SUBMIT_ETIMEDOUT;
        }
    }
}

uint64_t aiq_producer_failed(const aiq_producer_t *p)
{
    return p->failed;
}

void aiq_producer_free(aiq_producer_t *p)
{
    if (!p)
        return;
    rd_kafka_flush(p->rk, p->fatal ? 0 : 10000);
    rd_kafka_destroy(p->rk);
    free(p);
}

/* ---- results ------------------------------------------------------------------------ */

/* Client-level errors of the reader; runs inside rd_kafka_consumer_poll on the caller's
 * thread. */
static void on_results_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    aiq_results_t *r = opaque;
    if (r->fatal)
        return;
    if (permanent_kafka_error(rk, err)) {
        snprintf(r->last_err, sizeof(r->last_err), "Kafka %s failed: %s",
                 err == RD_KAFKA_RESP_ERR__SSL ? "TLS" : "authentication", reason);
        r->fatal = 1;
    } else if (err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || !r->last_err[0]) {
        snprintf(r->last_err, sizeof(r->last_err), "%s", reason);
    }
}

/* Waits until a broker answers, so a refused login (or TLS handshake) is reported with its
 * reason at once instead of as a metadata timeout later. */
static int results_connect(aiq_results_t *r, int timeout_ms, char *errstr, size_t errlen)
{
    int64_t until = aiq_mono_ms() + timeout_ms;
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        if (rd_kafka_metadata(r->rk, 0, NULL, &md, 500) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_metadata_destroy(md);
            return 0;
        }
        rd_kafka_message_t *m;
        while ((m = rd_kafka_consumer_poll(r->rk, 0))) /* serves on_results_error */
            rd_kafka_message_destroy(m);
        if (r->fatal) {
            snprintf(errstr, errlen, "%s", r->last_err);
            return AIQ_SUBMIT_EKAFKA;
        }
        if (aiq_mono_ms() >= until) {
            snprintf(errstr, errlen, "no answer from Kafka within %d ms%s%s%s", timeout_ms,
                     r->last_err[0] ? ": " : "", r->last_err, no_answer_hint(r->last_err));
            return AIQ_SUBMIT_ETIMEDOUT;
        }
    }
}

/* A topic created a moment ago may not be in the broker's metadata yet: ask again for a
 * few seconds before calling it missing. */
static int partition_count(rd_kafka_t *rk, const char *topic, char *errstr, size_t errlen)
{
    int64_t until = aiq_mono_ms() + 5000;
    int n = 0;
    aiq_err_t err = {0};
    while (aiq_kafka_partition_count(rk, topic, 10000, &n, &err)) {
        if (aiq_mono_ms() >= until) {
            snprintf(errstr, errlen, "%s", err.msg);
            return AIQ_SUBMIT_EKAFKA;
        }
        rd_kafka_poll(rk, 200);
    }
    return n;
}

static rd_kafka_resp_err_t watermarks(rd_kafka_t *rk, const char *topic, int part, int64_t *hi)
{
    int64_t lo, until = aiq_mono_ms() + 10000;
    rd_kafka_resp_err_t e;
    /* Right after topic creation a partition's leader may still be loading it. */
    while ((e = rd_kafka_query_watermark_offsets(rk, topic, part, &lo, hi, 5000)) &&
           (e == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION ||
            e == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
            e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) &&
           aiq_mono_ms() < until)
        rd_kafka_poll(rk, 200);
    return e;
}

/* Start offsets for since_ms: the first record with a timestamp >= since_ms, or the high
 * watermark when there is none (or since_ms < 0). */
static int start_offsets(aiq_results_t *r, const char *topic, int64_t since_ms, char *errstr,
                         size_t errlen)
{
    for (int i = 0; i < r->n; i++)
        r->next[i] = r->hi[i];
    if (since_ms < 0)
        return 0;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(r->n);
    for (int i = 0; i < r->n; i++)
        rd_kafka_topic_partition_list_add(l, topic, i)->offset = since_ms;
    rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(r->rk, l, 10000);
    for (int i = 0; !e && i < l->cnt; i++) {
        int64_t off = l->elems[i].offset;
        if (l->elems[i].err)
            e = l->elems[i].err;
        else if (off >= 0 && off < r->hi[l->elems[i].partition])
            r->next[l->elems[i].partition] = off;
    }
    rd_kafka_topic_partition_list_destroy(l);
    if (e)
        snprintf(errstr, errlen, "offsets for time in %s: %s", topic, rd_kafka_err2str(e));
    return e ? AIQ_SUBMIT_EKAFKA : 0;
}

/* Assigns every partition at an explicit offset (the high watermark when reading from the
 * end), so nothing produced after this call is missed (OFFSET_END would be resolved later,
 * racing with fast results). */
static int assign_from(aiq_results_t *r, const char *topic, int64_t since_ms, char *errstr,
                       size_t errlen)
{
    r->hi = calloc((size_t)r->n, sizeof(*r->hi));
    r->next = calloc((size_t)r->n, sizeof(*r->next));
    if (!r->hi || !r->next)
        return AIQ_SUBMIT_ENOMEM;
    for (int i = 0; i < r->n; i++) {
        rd_kafka_resp_err_t e = watermarks(r->rk, topic, i, &r->hi[i]);
        if (e) {
            snprintf(errstr, errlen, "watermarks of %s[%d]: %s", topic, i, rd_kafka_err2str(e));
            return AIQ_SUBMIT_EKAFKA;
        }
    }
    int rc = start_offsets(r, topic, since_ms, errstr, errlen);
    if (rc)
        return rc;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(r->n);
    for (int i = 0; i < r->n; i++)
        rd_kafka_topic_partition_list_add(l, topic, i)->offset = r->next[i];
    rd_kafka_resp_err_t e = rd_kafka_assign(r->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        snprintf(errstr, errlen, "assign %s: %s", topic, rd_kafka_err2str(e));
        return AIQ_SUBMIT_EKAFKA;
    }
    return 0;
}

int aiq_results_open(aiq_results_t **out, const char *brokers, const char *topic,
                     const char *const *kafka_props, char *errstr, size_t errlen)
{
    return aiq_results_open_at(out, brokers, topic, -1, kafka_props, errstr, errlen);
}

int aiq_results_caught_up(const aiq_results_t *r)
{
    for (int i = 0; i < r->n; i++)
        if (r->next[i] < r->hi[i])
            return 0;
    return 1;
}

int aiq_results_open_at(aiq_results_t **out, const char *brokers, const char *topic,
                        int64_t since_ms, const char *const *kafka_props, char *errstr,
                        size_t errlen)
{
    aiq_results_t *r = calloc(1, sizeof(*r));
    if (!r)
        return AIQ_SUBMIT_ENOMEM;
    aiq_kafka_params_t params = {
        .brokers = brokers, .group_id = "aiq-results-reader", .props = kafka_props};
    rd_kafka_conf_t *kc = client_conf(AIQ_KAFKA_READER, &params, errstr, errlen);
    if (!kc) {
        free(r);
        return AIQ_SUBMIT_EINVAL;
    }
    rd_kafka_conf_set_opaque(kc, r);
    rd_kafka_conf_set_error_cb(kc, on_results_error);
    r->rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, errlen);
    if (!r->rk) {
        rd_kafka_conf_destroy(kc);
        free(r);
        return AIQ_SUBMIT_EKAFKA;
    }
    rd_kafka_poll_set_consumer(r->rk);
    int rc = results_connect(r, RESULTS_CONNECT_MS, errstr, errlen);
    if (!rc) {
        r->n = partition_count(r->rk, topic, errstr, errlen);
        rc = r->n < 0 ? r->n : assign_from(r, topic, since_ms, errstr, errlen);
    }
    if (rc) {
        aiq_results_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* A partial record of a streamed job (header aiq.status: partial) comes ahead of its result
 * and is no answer. */
static int is_partial(rd_kafka_message_t *m)
{
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t n = 0;
    return rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
           rd_kafka_header_get_last(h, "aiq.status", &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR &&
           n == 7 && memcmp(v, "partial", 7) == 0;
}

int aiq_results_next(aiq_results_t *r, int timeout_ms, char **json, char *job_id, size_t id_cap,
                     char *errstr, size_t errlen)
{
    int64_t until = aiq_mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = until - aiq_mono_ms();
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, left > 0 ? (int)left : 0);
        if (r->fatal) {
            if (m)
                rd_kafka_message_destroy(m);
            snprintf(errstr, errlen, "%s", r->last_err);
            return AIQ_SUBMIT_EKAFKA;
        }
        if (!m)
            return 0;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF && m->partition < r->n) {
            /* Control records (transaction markers) are never delivered: the end is. */
            if (r->next[m->partition] < m->offset)
                r->next[m->partition] = m->offset;
            rd_kafka_message_destroy(m);
            if (aiq_mono_ms() >= until)
                return 0;
            continue;
        }
        if (m->err) {
            int permanent = permanent_kafka_error(r->rk, m->err);
            snprintf(errstr, errlen, "%s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            if (permanent)
                return AIQ_SUBMIT_EKAFKA;
            if (aiq_mono_ms() >= until)
                return 0;
            continue;
        }
        if (is_partial(m)) {
            if (m->partition >= 0 && m->partition < r->n)
                r->next[m->partition] = m->offset + 1;
            rd_kafka_message_destroy(m);
            if (aiq_mono_ms() >= until)
                return 0;
            continue;
        }
        char *s = malloc(m->len + 1);
        if (!s) {
            rd_kafka_message_destroy(m);
            return AIQ_SUBMIT_ENOMEM;
        }
        if (m->partition >= 0 && m->partition < r->n)
            r->next[m->partition] = m->offset + 1;
        memcpy(s, m->payload, m->len);
        s[m->len] = '\0';
        size_t klen = m->key_len < id_cap ? m->key_len : id_cap - 1;
        memcpy(job_id, m->key ? m->key : "", m->key ? klen : 0);
        job_id[m->key ? klen : 0] = '\0';
        rd_kafka_message_destroy(m);
        *json = s;
        return 1;
    }
}

void aiq_results_close(aiq_results_t *r)
{
    if (!r)
        return;
    if (r->rk) {
        rd_kafka_consumer_close(r->rk);
        rd_kafka_destroy(r->rk);
    }
    free(r->hi);
    free(r->next);
    free(r);
}

/* ---- collector ---------------------------------------------------------------------- */

/* Expected ids map to 0 while unanswered, 1 once answered. */
struct aiq_collector {
    aiq_results_t *r;
    aiq_idmap_t *ids;
    size_t answered;
    uint64_t duplicates;
};

int aiq_collector_new(aiq_collector_t **out, aiq_results_t *r)
{
    aiq_collector_t *c = calloc(1, sizeof(*c));
    if (!c || !(c->ids = aiq_idmap_new())) {
        free(c);
        return AIQ_SUBMIT_ENOMEM;
    }
    c->r = r;
    *out = c;
    return 0;
}

int aiq_collector_expect(aiq_collector_t *c, const char *job_id)
{
    uint64_t v;
    if (aiq_idmap_get(c->ids, job_id, &v) == 0)
        return 0;
    return aiq_idmap_put(c->ids, job_id, 0) < 0 ? AIQ_SUBMIT_ENOMEM : 0;
}

int aiq_collector_next(aiq_collector_t *c, int timeout_ms, char **json, char *job_id, size_t id_cap,
                       char *errstr, size_t errlen)
{
    int64_t until = aiq_mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = until - aiq_mono_ms();
        int rc =
            aiq_results_next(c->r, left > 0 ? (int)left : 0, json, job_id, id_cap, errstr, errlen);
        if (rc <= 0)
            return rc;
        uint64_t answered;
        if (aiq_idmap_get(c->ids, job_id, &answered) == 0) {
            if (!answered) {
                aiq_idmap_put(c->ids, job_id, 1); /* replaces: cannot fail */
                c->answered++;
                return 1;
            }
            c->duplicates++;
        }
        free(*json);
        *json = NULL;
        if (left <= 0)
            return 0;
    }
}

size_t aiq_collector_pending(const aiq_collector_t *c)
{
    return aiq_idmap_len(c->ids) - c->answered;
}

uint64_t aiq_collector_duplicates(const aiq_collector_t *c)
{
    return c->duplicates;
}

void aiq_collector_free(aiq_collector_t *c)
{
    if (!c)
        return;
    aiq_idmap_free(c->ids);
    free(c);
}
