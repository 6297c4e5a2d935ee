/* records.c — the records a job produces (result, DLQ, re-enqueue) with their headers,
 * sent and re-sent until the broker takes them. Loop thread only. */

#include "dlq.h"
#include "job_internal.h"
#include "timeutil.h"
#include "topics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void task_send(aiq_task_t *t);
static void enter_dlq(aiq_task_t *t);

static void dlq_state(aiq_pipeline_t *pl)
{
    if (pl->d.on_dlq_state)
        pl->d.on_dlq_state(pl->d.opaque, pl->dlq_failing == 0, pl->dlq_error);
}

/* A failed dead-letter write was followed by a delivered one, or the task went away. */
void aiq__dlq_unfail(aiq_task_t *t)
{
    if (!t->dlq_failing)
        return;
    t->dlq_failing = 0;
    if (--t->pl->dlq_failing == 0 && !t->pl->closing) {
        aiq_logj(t->pl->d.log, AIQ_LOG_INFO, NULL, "dead-letter topic %s writable again",
                 t->pl->dlq_topic);
        t->pl->dlq_error[0] = '\0';
        dlq_state(t->pl);
    }
}

static void add_header(rd_kafka_headers_t *h, const char *name, const char *value)
{
    if (value)
        rd_kafka_header_add(h, name, -1, value, -1);
}

static void add_header_int(rd_kafka_headers_t *h, const char *name, long long v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%lld", v);
    rd_kafka_header_add(h, name, -1, buf, -1);
}

/* Dead-letter headers: where the record came from and why it can never succeed. */
static rd_kafka_headers_t *dlq_headers(aiq_task_t *t)
{
    const aiq_config_t *cfg = t->pl->d.cfg;
    rd_kafka_headers_t *h = rd_kafka_headers_new(16);
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(t->msg, &tstype);
    char now[32];
    add_header(h, "aiq.dlq.original-topic", rd_kafka_topic_name(t->msg->rkt));
    add_header_int(h, "aiq.dlq.original-partition", t->msg->partition);
    add_header_int(h, "aiq.dlq.original-offset", t->msg->offset);
    add_header_int(h, "aiq.dlq.original-timestamp", ts);
    add_header(h, "aiq.dlq.original-timestamp-type",
               tstype == RD_KAFKA_TIMESTAMP_CREATE_TIME       ? "CreateTime"
               : tstype == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME ? "LogAppendTime"
                                                              : "NoTimestamp");
    add_header(h, "aiq.dlq.original-consumer-group", cfg->group_id);
    add_header(h, "aiq.dlq.error-kind", t->error_kind);
    add_header(h, "aiq.dlq.error-message", t->error_msg);
    add_header(h, "aiq.dlq.worker", cfg->worker_id);
    add_header_int(h, "aiq.dlq.attempt", t->job ? t->job->attempt : 0);
    add_header(h, "aiq.dlq.failed-at", aiq_time_format(aiq_now_ms(), now, sizeof(now)));
    if (aiq__task_id(t))
        add_header(h, "aiq.job-id", aiq__task_id(t));
    return h;
}

static rd_kafka_headers_t *result_headers(aiq_task_t *t)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
    add_header(h, "aiq.status", aiq_result_status_name(t->status));
    add_header(h, "aiq.worker", t->pl->d.cfg->worker_id);
    if (t->job) {
        add_header(h, "aiq.correlation-id", t->job->correlation_id);
        add_header(h, "traceparent", t->job->traceparent);
    }
    return h;
}

/* A re-enqueued job says where it came from, for tracing and for the DLQ if it ends there. */
static rd_kafka_headers_t *requeue_headers(aiq_task_t *t)
{
    rd_kafka_headers_t *h = result_headers(t);
    add_header(h, "aiq.requeued-from", rd_kafka_topic_name(t->msg->rkt));
    add_header_int(h, "aiq.requeued-offset", t->msg->offset);
    add_header(h, "aiq.requeue-reason", t->error_kind);
    return h;
}

static void on_send_retry(uv_timer_t *timer)
{
    task_send(timer->data);
}

static int is_dlq(const aiq_task_t *t)
{
    return t->out_kind == OUT_DLQ_RECORD || t->out_kind == OUT_DLQ_RESULT;
}

#define DLQ_BACKOFF_FIRST_MS 1000

#define DLQ_BACKOFF_MAX_MS 30000

/* A dead letter that could not be written. One refused for good (too large, say) is sent
 * again at once as headers plus its first bytes; otherwise, and when even that is refused
 * (a missing or forbidden topic, which an operator must fix), it is retried with a backoff
 * up to 30 s while /readyz, a metric and an alert say the DLQ cannot be written. It holds
 * no job slot meanwhile, and its offset stays uncommitted, so nothing is lost. */
static void dlq_failed(aiq_task_t *t, int permanent, const char *errstr)
{
    aiq_pipeline_t *pl = t->pl;
    pl->stats.dlq_write_failures++;
    snprintf(pl->dlq_error, sizeof(pl->dlq_error), "dead letters to %s fail: %s", pl->dlq_topic,
             errstr);
    if (!t->dlq_failing) {
        t->dlq_failing = 1;
        if (pl->dlq_failing++ == 0)
            dlq_state(pl);
    }
    if (permanent && !t->dlq_minimal) {
        t->dlq_minimal = 1;
        snprintf(t->dlq_refused, sizeof(t->dlq_refused), "%s", errstr);
        TLOG(t, AIQ_LOG_WARN,
             "dead letter refused by %s (%s); sending its headers and first %d bytes", t->out_topic,
             errstr, AIQ_DLQ_MINIMAL_BYTES);
        task_send(t);
        return;
    }
    t->dlq_backoff = t->dlq_backoff ? t->dlq_backoff * 2 : DLQ_BACKOFF_FIRST_MS;
    if (t->dlq_backoff > DLQ_BACKOFF_MAX_MS)
        t->dlq_backoff = DLQ_BACKOFF_MAX_MS;
    TLOG(t, AIQ_LOG_WARN, "dead letter to %s failed (%s); again in %lld ms", t->out_topic, errstr,
         (long long)t->dlq_backoff);
    aiq__task_timer_start(t, (uint64_t)t->dlq_backoff, on_send_retry);
}

/* A record that could not be written (delivery report or refused at once). */
static void send_failed(aiq_task_t *t, int permanent, const char *errstr)
{
    aiq_pipeline_t *pl = t->pl;
    pl->stats.publish_retries++;
    if (is_dlq(t)) {
        dlq_failed(t, permanent, errstr);
        return;
    }
    if (permanent && t->out_kind == OUT_REQUEUE) {
        TLOG(t, AIQ_LOG_WARN, "re-enqueue to %s failed for good (%s)", t->out_topic, errstr);
        aiq__task_fallback(t);
        return;
    }
    if (permanent && t->out_kind == OUT_RESULT) {
        /* The reply topic cannot take it (missing, too large): the DLQ keeps it instead. */
        TLOG(t, AIQ_LOG_ERROR,
             "result to %s failed for good (%s); "
             "sending it to %s",
             t->out_topic, errstr, pl->dlq_topic);
        aiq__task_error(t, "reply_failed", "result could not be written to %s: %s", t->out_topic,
                        errstr);
        snprintf(t->out_topic, sizeof(t->out_topic), "%s", pl->dlq_topic);
        t->out_kind = OUT_DLQ_RESULT;
        enter_dlq(t);
        task_send(t);
        return;
    }
    /* Never drop a result: retry (loudly) until the broker takes it. */
    TLOG(t, AIQ_LOG_WARN, "publish to %s failed (%s), retrying", t->out_topic, errstr);
    aiq__task_timer_start(t, 1000, on_send_retry);
}

static void on_delivered(void *opaque, rd_kafka_resp_err_t err, int permanent, const char *errstr)
{
    aiq_task_t *t = opaque;
    t->pending--;
    if (!err) {
        aiq__dlq_unfail(t);
        if (t->pending == 0)
            aiq__task_finish(t);
        return;
    }
    send_failed(t, permanent, errstr);
}

/* The dead letter's headers, and how much of the value (full length *len) it carries. */
static rd_kafka_headers_t *dlq_letter(aiq_task_t *t, const void *val, size_t *len)
{
    size_t full = *len;
    size_t keep = aiq_dlq_keep(full, t->pl->dlq_cap, t->dlq_minimal);
    if (!t->dlq_sha[0] && aiq_dlq_sha256_hex(val, full, t->dlq_sha))
        TLOG(t, AIQ_LOG_WARN, "no SHA-256 of the dead letter's value (libcrypto failed)");
    rd_kafka_headers_t *h = dlq_headers(t);
    aiq_dlq_add_size_headers(h, full, keep, t->dlq_sha, t->dlq_minimal, t->dlq_refused);
    if (keep < full && !t->dlq_minimal)
        TLOG(t, AIQ_LOG_WARN, "dead letter cut from %zu to %zu bytes (what %s accepts)", full, keep,
             t->out_topic);
    *len = keep;
    return h;
}

static void task_send(aiq_task_t *t)
{
    aiq_pipeline_t *pl = t->pl;
    aiq_err_t err = {0};
    const void *key = aiq__task_id(t) ? (const void *)aiq__task_id(t) : t->msg->key;
    size_t klen = aiq__task_id(t) ? strlen(aiq__task_id(t)) : t->msg->key_len;
    const void *val = t->out_kind == OUT_DLQ_RECORD ? t->msg->payload : t->out_val;
    size_t vlen = t->out_kind == OUT_DLQ_RECORD ? t->msg->len : t->out_len;
    if (klen > 1024)
        klen = 1024; /* a producer's key, in a dead letter: bounded like the value */
    rd_kafka_headers_t *h = is_dlq(t)                    ? dlq_letter(t, val, &vlen)
                            : t->out_kind == OUT_REQUEUE ? requeue_headers(t)
                                                         : result_headers(t);
    aiq__task_set_state(t, AIQ_TASK_PUBLISHING);
    /* The answer is out of the task's hands: its slot (and its model's call slot) serves the
     * next job while the broker acknowledges; the offset waits for the ack. Before the send:
     * a failed send may end the task. */
    aiq__task_slot_free(t);
    t->pending++;
    int rc =
        aiq_publisher_send(pl->d.pub, t->out_topic, key, klen, val, vlen, h, on_delivered, t, &err);
    if (rc) {
        t->pending--;
        send_failed(t, rc == AIQ_ETOOBIG || rc == AIQ_ENOTFOUND, err.msg);
    }
}

/* The record waits on the DLQ from now on, without its job slot. */
static void enter_dlq(aiq_task_t *t)
{
    if (t->dlq_waiting)
        return;
    t->dlq_waiting = 1;
    t->pl->stats.dlq_waiting++;
    aiq__task_slot_free(t);
}

static void publish_to_dlq(aiq_task_t *t)
{
    aiq_metrics_dlq(t->pl->d.metrics, t->error_kind);
    t->out_kind = OUT_DLQ_RECORD;
    snprintf(t->out_topic, sizeof(t->out_topic), "%s", t->pl->dlq_topic);
    enter_dlq(t);
    task_send(t);
}

static const char *reply_topic(aiq_task_t *t, const char *requested)
{
    return requested ? requested : t->pl->results_topic;
}

/* Estimated from the operations file's price table, cache reads and writes at their own
 * prices; -1 (null) for an unpriced model. */
double aiq__task_cost(aiq_pipeline_t *pl, const aiq_task_t *t)
{
    const aiq_bedrock_reply_t *r = &t->reply;
    aiq_usage_t u = {r->input_tokens, r->output_tokens, r->cache_read_tokens,
                     r->cache_write_tokens};
    double usd;
    if (!t->model || !pl->d.ops || aiq_ops_cost(pl->d.ops, t->model, &u, &usd))
        return -1;
    return usd;
}

/* Fills the rest of r from the task and encodes it into out_val. Returns 0 or the code of
 * aiq_result_encode, with err saying why; the caller, which knows what to do instead,
 * logs it. */
static int encode_result(aiq_task_t *t, const char *id, aiq_result_t *r, aiq_err_t *err)
{
    aiq_pipeline_t *pl = t->pl;
    int64_t now = aiq_now_ms();
    r->job_id = id;
    r->status = t->status;
    r->priority = aiq_priority_name((aiq_priority_t)t->ref.prio);
    r->model = t->model;
    r->attempts = (t->job ? t->job->attempt : 0) + t->attempts;
    r->fallback = t->fallback;
    char key_hex[2 * AIQ_CACHE_KEY_LEN + 1];
    if (t->keyed) {
        aiq_cache_key_hex(t->key, key_hex);
        r->cache_key = key_hex;
    }
    r->cache_hit = t->cache_hit || t->cache_stale;
    r->cache_stale = t->cache_stale;
    r->cache_age_ms = t->cache_age_ms;
    r->provider_ms = t->provider_ms;
    r->queued_ms = (t->started_ms ? t->started_ms : now) - t->received_ms;
    r->total_ms = now - t->received_ms;
    r->worker = pl->d.cfg->worker_id;
    r->cost_usd = aiq__task_cost(pl, t);
    r->completed_at_ms = now;
    if (t->error_kind[0]) {
        r->error_kind = t->error_kind;
        r->error_message = t->error_msg;
        r->http_status = t->http_status;
        r->request_id = t->request_id;
        if (t->status == AIQ_RESULT_FAILED && t->fallback)
            r->error_support = t->fallback_text;
    }
    free(t->out_val);
    t->out_val = NULL;
    return aiq_result_encode(r, &t->out_val, &t->out_len, err);
}

void aiq__task_publish_result(aiq_task_t *t)
{
    aiq_job_t *job = t->job;
    aiq_result_t r = {0};
    r.correlation_id = job->correlation_id;
    r.operation = job->operation;
    r.traceparent = job->traceparent;
    if (t->status == AIQ_RESULT_SUCCEEDED) {
        r.output_text = t->reply.text;
        r.output_extra = t->reply.extra;
        r.stop_reason = t->reply.stop_reason;
        r.input_tokens = t->reply.input_tokens;
        r.output_tokens = t->reply.output_tokens;
        r.cache_read_tokens = t->reply.cache_read_tokens;
        r.cache_write_tokens = t->reply.cache_write_tokens;
        r.total_tokens = t->reply.total_tokens;
    } else if (t->status == AIQ_RESULT_DEGRADED) {
        r.output_text = t->fallback_text;
    }
    aiq_err_t err = {0};
    if (encode_result(t, job->id, &r, &err)) {
        /* Only invalid UTF-8 from the model gets here: answer without the text. */
        TLOG(t, AIQ_LOG_WARN, "%s; answering without the model's text", err.msg);
        aiq__task_error(t, "bad_model_output", "model output is not valid UTF-8");
        aiq__task_answer(t, AIQ_RESULT_FAILED, t->fallback, t->fallback_text);
        r.output_text = NULL;
        if (encode_result(t, job->id, &r, &err)) {
            TLOG(t, AIQ_LOG_ERROR, "cannot encode result (%s); dead-lettering the job", err.msg);
            publish_to_dlq(t);
            return;
        }
    }
    snprintf(t->out_topic, sizeof(t->out_topic), "%s", reply_topic(t, job->reply_to));
    t->out_kind = OUT_RESULT;
    task_send(t);
}

static void on_reject_delivered(void *opaque, rd_kafka_resp_err_t err, int permanent,
                                const char *errstr)
{
    (void)permanent;
    aiq_task_t *t = opaque;
    /* The DLQ record is the durable answer; this result only spares the sender a wait. */
    if (err)
        TLOG(t, AIQ_LOG_WARN, "rejected result not delivered: %s", errstr);
    if (--t->pending == 0)
        aiq__task_finish(t);
}

/* A refused record goes to the DLQ; when it named an id, its sender also gets a
 * "rejected" result so it does not wait until its deadline. */
void aiq__task_reject(aiq_task_t *t, aiq_job_reject_t why, const char *msg)
{
    aiq_pipeline_t *pl = t->pl;
    aiq__task_error(t, aiq_job_reject_name(why), "%s", msg);
    TLOG(t, AIQ_LOG_WARN, "%s[%d]@%lld refused (%s): %s", rd_kafka_topic_name(t->msg->rkt),
         t->msg->partition, (long long)t->msg->offset, t->error_kind, msg);
    publish_to_dlq(t);
    if (!t->id_hint)
        return;
    aiq_result_t r = {0};
    aiq_err_t err = {0};
    aiq__task_answer(t, AIQ_RESULT_REJECTED, NULL, NULL);
    if (encode_result(t, t->id_hint, &r, &err)) {
        /* The DLQ record alone answers for this record. */
        TLOG(t, AIQ_LOG_WARN, "rejected result not encoded: %s", err.msg);
        return;
    }
    rd_kafka_headers_t *h = result_headers(t);
    t->pending++;
    if (aiq_publisher_send(pl->d.pub, pl->results_topic, t->id_hint, strlen(t->id_hint), t->out_val,
                           t->out_len, h, on_reject_delivered, t, &err)) {
        /* The DLQ record alone still answers for this record. */
        t->pending--;
        TLOG(t, AIQ_LOG_WARN, "rejected result not sent: %s", err.msg);
    }
}

void aiq__task_requeue(aiq_task_t *t)
{
    aiq_pipeline_t *pl = t->pl;
    json_t *root = t->job->root;
    char start[40];
    json_object_set_new(root, "attempt", json_integer(t->attempts));
    /* The deadline counts from created_at, else from the record's timestamp, which the
     * new record would reset: pin it. */
    if (!t->job->has_created_at)
        json_object_set_new(
            root, "created_at",
            json_string(aiq_time_format(t->deadline_ms - t->timeout_ms, start, sizeof(start))));
    free(t->out_val);
    t->out_val = json_dumps(root, JSON_COMPACT);
    if (!t->out_val) {
        aiq__task_fallback(t);
        return;
    }
    t->out_len = strlen(t->out_val);
    aiq_topic_jobs(pl->d.cfg->topic_prefix, AIQ_PRIO_HIGH, t->out_topic, sizeof(t->out_topic));
    t->out_kind = OUT_REQUEUE;
    aiq_metrics_count(pl->d.metrics, AIQ_METRICS_REQUEUED);
    TLOG(t, AIQ_LOG_INFO, "attempts spent (%s); re-enqueued to %s", t->error_kind, t->out_topic);
    task_send(t);
}

static void on_partial_delivered(void *opaque, rd_kafka_resp_err_t err, int permanent,
                                 const char *errstr)
{
    aiq_log_t *log = opaque;
    (void)permanent;
    /* Partials are a head start, not the answer: the result that follows holds the whole
     * text, so a lost one is logged and not sent again. */
    if (err)
        aiq_logj(log, AIQ_LOG_WARN, NULL, "partial record not delivered: %s", errstr);
}

/* Publishes the text gathered since the last partial to the job's reply topic, ahead of its
 * result and under the same key (so on the same partition, in order, before the result). */
void aiq__partial_flush(aiq_task_t *t)
{
    aiq_pipeline_t *pl = t->pl;
    const aiq_job_t *job = t->job;
    if (!t->partial.len)
        return;
    /* attempt counts like the result's: a re-enqueued job's calls come after its first round's. */
    aiq_result_partial_t p = {job->id,
                              job->correlation_id,
                              t->call_model,
                              pl->d.cfg->worker_id,
                              job->traceparent,
                              ++t->partial_seq,
                              job->attempt + t->partial_attempt,
                              t->partial.p,
                              t->partial.len};
    char *val = NULL;
    size_t vlen = 0;
    aiq_err_t err = {0};
    t->partial.len = 0;
    t->partial_ms = aiq_mono_ms();
    if (aiq_result_encode_partial(&p, &val, &vlen, &err)) {
        TLOG(t, AIQ_LOG_WARN, "partial %lld not published: %s", (long long)p.seq, err.msg);
        return;
    }
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);
    add_header(h, "aiq.status", "partial");
    add_header(h, "aiq.worker", pl->d.cfg->worker_id);
    if (aiq_publisher_send(pl->d.pub, reply_topic(t, job->reply_to), job->id, strlen(job->id), val,
                           vlen, h, on_partial_delivered, pl->d.log, &err))
        TLOG(t, AIQ_LOG_WARN, "partial %lld not published: %s", (long long)p.seq, err.msg);
    free(val);
}

/* A model streams a few characters at a time: one record each would multiply the records on
 * the reply topic by the tokens of the answer. The first piece goes at once (time to first
 * partial is the point); later ones gather until PARTIAL_BYTES or PARTIAL_MS, and what is
 * left goes before the result (aiq__on_outcome). */
#define PARTIAL_BYTES 256

#define PARTIAL_MS 50

#define PARTIAL_MAX (64 * 1024) /* one record's text at most */

void aiq__on_partial(void *opaque, int attempt, const char *text, size_t len)
{
    aiq_task_t *t = opaque;
    if (t->partial.len && attempt != t->partial_attempt)
        aiq__partial_flush(t); /* a retry's text is its own */
    t->partial_attempt = attempt;
    t->partial.max = 0;
    while (len) {
        size_t n = len < PARTIAL_MAX - t->partial.len ? len : PARTIAL_MAX - t->partial.len;
        if (aiq_strbuf_add(&t->partial, text, n)) {
            TLOG(t, AIQ_LOG_WARN, "partial text dropped: out of memory (the result has it all)");
            return;
        }
        text += n;
        len -= n;
        if (t->partial.len >= PARTIAL_MAX)
            aiq__partial_flush(t);
    }
    if (t->partial_seq == 0 || t->partial.len >= PARTIAL_BYTES ||
        aiq_mono_ms() - t->partial_ms >= PARTIAL_MS)
        aiq__partial_flush(t);
}
