#include "pipeline.h"
#include "job.h"
#include "result.h"
#include "timeutil.h"
#include "topics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum task_state {
    TASK_QUEUED = 0,
    TASK_CALLING,
    TASK_BACKOFF,
    TASK_PUBLISHING,
    TASK_DONE,
} task_state_t;

static const char *const state_names[] = {"queued", "calling", "backoff", "publishing", "done"};

struct aiq_task {
    aiq_sched_node_t node;
    struct aiq_task *prev, *next; /* live list, for shutdown */
    aiq_pipeline_t *pl;
    rd_kafka_message_t *msg;
    aiq_consumer_ref_t ref;
    task_state_t state;
    aiq_job_t *job;
    char *id_hint;                                /* id of a rejected record, when it had one */
    int64_t received_ms, started_ms, deadline_ms; /* wall clock */
    int64_t provider_ms;
    int attempts;
    int pending;  /* records produced and not yet acknowledged */
    int timer_on; /* timer initialised: freeing must wait for its close */
    uv_timer_t timer;
    aiq_http_req_t *req;
    /* outcome */
    aiq_result_status_t status;
    aiq_bedrock_reply_t reply;
    const char *model;
    char error_kind[64];
    char error_msg[512];
    int http_status;
    /* what is being published, kept for re-sending after a transient failure */
    char *out_val;
    size_t out_len;
    char out_topic[AIQ_TOPIC_MAX];
    int out_is_dlq;
};

struct aiq_pipeline {
    aiq_pipeline_deps_t d;
    char results_topic[AIQ_TOPIC_MAX];
    char dlq_topic[AIQ_TOPIC_MAX];
    aiq_task_t *live;
    uint64_t rng;
    aiq_pipeline_stats_t stats;
};

static void task_call(aiq_task_t *t);
static void task_publish_result(aiq_task_t *t);
static void task_send(aiq_task_t *t);

/* ---- bookkeeping ---------------------------------------------------------------- */

static void set_state(aiq_task_t *t, task_state_t s)
{
    if (aiq_log_enabled(t->pl->d.log, AIQ_LOG_DEBUG))
        aiq_logj(t->pl->d.log, AIQ_LOG_DEBUG, t->job ? t->job->id : t->id_hint, "state %s -> %s",
                 state_names[t->state], state_names[s]);
    t->state = s;
}

static const char *task_id(const aiq_task_t *t)
{
    return t->job ? t->job->id : t->id_hint;
}

static void task_free_now(aiq_task_t *t)
{
    aiq_job_free(t->job);
    free(t->id_hint);
    aiq_bedrock_reply_free(&t->reply);
    free(t->out_val);
    rd_kafka_message_destroy(t->msg);
    free(t);
}

static void on_timer_closed(uv_handle_t *h)
{
    task_free_now(h->data);
}

static void task_release(aiq_task_t *t)
{
    aiq_pipeline_t *pl = t->pl;
    if (t->prev)
        t->prev->next = t->next;
    else if (pl->live == t)
        pl->live = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
    if (t->req)
        aiq_http_cancel(pl->d.http, t->req);
    t->req = NULL;
    if (t->timer_on)
        uv_close((uv_handle_t *)&t->timer, on_timer_closed);
    else
        task_free_now(t);
}

aiq_task_t *aiq_task_new(aiq_pipeline_t *pl, rd_kafka_message_t *msg, const aiq_consumer_ref_t *ref)
{
    aiq_task_t *t = calloc(1, sizeof(*t));
    if (!t) {
        rd_kafka_message_destroy(msg);
        return NULL;
    }
    t->pl = pl;
    t->msg = msg;
    t->ref = *ref;
    t->received_ms = aiq_now_ms();
    t->next = pl->live;
    if (pl->live)
        pl->live->prev = t;
    pl->live = t;
    return t;
}

void aiq_task_drop(aiq_task_t *t)
{
    task_release(t);
}

aiq_sched_node_t *aiq_task_node(aiq_task_t *t)
{
    return &t->node;
}

aiq_task_t *aiq_task_of_node(aiq_sched_node_t *node)
{
    return (aiq_task_t *)((char *)node - offsetof(aiq_task_t, node));
}

const aiq_consumer_ref_t *aiq_task_ref(const aiq_task_t *t)
{
    return &t->ref;
}

const aiq_pipeline_stats_t *aiq_pipeline_stats(const aiq_pipeline_t *pl)
{
    return &pl->stats;
}

static void task_finish(aiq_task_t *t)
{
    if (t->job || t->id_hint) {
        int64_t now = aiq_now_ms();
        aiq_metrics_job(t->pl->d.metrics, t->ref.prio,
                        t->job ? (int)t->status : (int)AIQ_RESULT_REJECTED,
                        t->started_ms - t->received_ms, t->provider_ms, now - t->received_ms,
                        t->reply.input_tokens, t->reply.output_tokens);
    }
    set_state(t, TASK_DONE);
    t->pl->d.on_done(t->pl->d.opaque, t);
    task_release(t);
}

static void timer_start(aiq_task_t *t, uint64_t ms, uv_timer_cb cb)
{
    if (!t->timer_on) {
        uv_timer_init(t->pl->d.loop, &t->timer);
        t->timer.data = t;
        t->timer_on = 1;
    }
    uv_timer_start(&t->timer, cb, ms, 0);
}

/* ---- publishing ----------------------------------------------------------------- */

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
    if (task_id(t))
        add_header(h, "aiq.job-id", task_id(t));
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

static void on_send_retry(uv_timer_t *timer)
{
    task_send(timer->data);
}

static void on_delivered(void *opaque, rd_kafka_resp_err_t err, int permanent, const char *errstr)
{
    aiq_task_t *t = opaque;
    aiq_pipeline_t *pl = t->pl;
    t->pending--;
    if (!err) {
        if (t->pending == 0)
            task_finish(t);
        return;
    }
    pl->stats.publish_retries++;
    if (permanent && !t->out_is_dlq) {
        /* The reply topic cannot take it (missing, too large): the DLQ keeps it instead. */
        aiq_logj(pl->d.log, AIQ_LOG_ERROR, task_id(t),
                 "result to %s failed for good (%s); "
                 "sending it to %s",
                 t->out_topic, errstr, pl->dlq_topic);
        snprintf(t->error_kind, sizeof(t->error_kind), "reply_failed");
        snprintf(t->error_msg, sizeof(t->error_msg), "result could not be written to %s: %s",
                 t->out_topic, errstr);
        snprintf(t->out_topic, sizeof(t->out_topic), "%s", pl->dlq_topic);
        t->out_is_dlq = 2; /* the value is the result, not the original record */
        task_send(t);
        return;
    }
    /* Never drop a record: retry (loudly) until the broker takes it. */
    aiq_logj(pl->d.log, AIQ_LOG_WARN, task_id(t), "publish to %s failed (%s), retrying",
             t->out_topic, errstr);
    timer_start(t, permanent ? 5000 : 1000, on_send_retry);
}

static void task_send(aiq_task_t *t)
{
    aiq_pipeline_t *pl = t->pl;
    aiq_err_t err = {0};
    const void *key = task_id(t) ? (const void *)task_id(t) : t->msg->key;
    size_t klen = task_id(t) ? strlen(task_id(t)) : t->msg->key_len;
    const void *val = t->out_is_dlq == 1 ? t->msg->payload : t->out_val;
    size_t vlen = t->out_is_dlq == 1 ? t->msg->len : t->out_len;
    rd_kafka_headers_t *h = t->out_is_dlq ? dlq_headers(t) : result_headers(t);
    set_state(t, TASK_PUBLISHING);
    t->pending++;
    if (aiq_publisher_send(pl->d.pub, t->out_topic, key, klen, val, vlen, h, on_delivered, t,
                           &err)) {
        t->pending--;
        pl->stats.publish_retries++;
        aiq_logj(pl->d.log, AIQ_LOG_WARN, task_id(t), "%s; retrying", err.msg);
        timer_start(t, 500, on_send_retry);
    }
}

static void publish_to_dlq(aiq_task_t *t)
{
    t->pl->stats.dlq++;
    aiq_metrics_dlq(t->pl->d.metrics, t->error_kind);
    t->out_is_dlq = 1;
    snprintf(t->out_topic, sizeof(t->out_topic), "%s", t->pl->dlq_topic);
    task_send(t);
}

static const char *reply_topic(aiq_task_t *t, const char *requested)
{
    return requested ? requested : t->pl->results_topic;
}

static int encode_result(aiq_task_t *t, const char *id, aiq_result_t *r)
{
    aiq_pipeline_t *pl = t->pl;
    int64_t now = aiq_now_ms();
    r->job_id = id;
    r->status = t->status;
    r->priority = aiq_priority_name((aiq_priority_t)t->ref.prio);
    r->model = t->model;
    r->attempts = t->attempts;
    r->provider_ms = t->provider_ms;
    r->queued_ms = (t->started_ms ? t->started_ms : now) - t->received_ms;
    r->total_ms = now - t->received_ms;
    r->worker = pl->d.cfg->worker_id;
    r->cost_usd = -1;
    r->completed_at_ms = now;
    if (t->error_kind[0]) {
        r->error_kind = t->error_kind;
        r->error_message = t->error_msg;
        r->http_status = t->http_status;
    }
    aiq_err_t err = {0};
    free(t->out_val);
    t->out_val = NULL;
    if (aiq_result_encode(r, &t->out_val, &t->out_len, &err)) {
        aiq_logj(pl->d.log, AIQ_LOG_ERROR, id, "cannot encode result: %s", err.msg);
        return -1;
    }
    return 0;
}

static void task_publish_result(aiq_task_t *t)
{
    aiq_job_t *job = t->job;
    aiq_result_t r = {0};
    r.correlation_id = job->correlation_id;
    r.operation = job->operation;
    r.traceparent = job->traceparent;
    if (t->status == AIQ_RESULT_SUCCEEDED) {
        r.output_text = t->reply.text;
        r.stop_reason = t->reply.stop_reason;
        r.input_tokens = t->reply.input_tokens;
        r.output_tokens = t->reply.output_tokens;
    }
    if (encode_result(t, job->id, &r)) {
        /* Only invalid UTF-8 from the model gets here: answer without the text. */
        snprintf(t->error_kind, sizeof(t->error_kind), "bad_model_output");
        snprintf(t->error_msg, sizeof(t->error_msg), "model output is not valid UTF-8");
        t->status = AIQ_RESULT_FAILED;
        r.output_text = NULL;
        if (encode_result(t, job->id, &r)) {
            publish_to_dlq(t);
            return;
        }
    }
    snprintf(t->out_topic, sizeof(t->out_topic), "%s", reply_topic(t, job->reply_to));
    t->out_is_dlq = 0;
    switch (t->status) {
    case AIQ_RESULT_SUCCEEDED:
        t->pl->stats.succeeded++;
        break;
    case AIQ_RESULT_EXPIRED:
        t->pl->stats.expired++;
        break;
    default:
        t->pl->stats.failed++;
        break;
    }
    task_send(t);
}

static void on_reject_delivered(void *opaque, rd_kafka_resp_err_t err, int permanent,
                                const char *errstr)
{
    (void)permanent;
    aiq_task_t *t = opaque;
    /* The DLQ record is the durable answer; this result only spares the sender a wait. */
    if (err)
        aiq_logj(t->pl->d.log, AIQ_LOG_WARN, task_id(t), "rejected result not delivered: %s",
                 errstr);
    if (--t->pending == 0)
        task_finish(t);
}

/* A refused record goes to the DLQ; when it named an id, its sender also gets a
 * "rejected" result so it does not wait until its deadline. */
static void task_reject(aiq_task_t *t, aiq_job_reject_t why, const char *msg)
{
    aiq_pipeline_t *pl = t->pl;
    t->pl->stats.rejected++;
    snprintf(t->error_kind, sizeof(t->error_kind), "%s", aiq_job_reject_name(why));
    snprintf(t->error_msg, sizeof(t->error_msg), "%s", msg);
    aiq_logj(pl->d.log, AIQ_LOG_WARN, t->id_hint, "%s[%d]@%lld refused (%s): %s",
             rd_kafka_topic_name(t->msg->rkt), t->msg->partition, (long long)t->msg->offset,
             t->error_kind, msg);
    publish_to_dlq(t);
    if (!t->id_hint)
        return;
    aiq_result_t r = {0};
    t->status = AIQ_RESULT_REJECTED;
    if (encode_result(t, t->id_hint, &r))
        return;
    rd_kafka_headers_t *h = result_headers(t);
    aiq_err_t err = {0};
    t->pending++;
    if (aiq_publisher_send(pl->d.pub, pl->results_topic, t->id_hint, strlen(t->id_hint), t->out_val,
                           t->out_len, h, on_reject_delivered, t, &err)) {
        /* The DLQ record alone still answers for this record. */
        t->pending--;
        aiq_logj(pl->d.log, AIQ_LOG_WARN, t->id_hint, "rejected result not sent: %s", err.msg);
    }
}

/* ---- the model call ---------------------------------------------------------------- */

static uint64_t next_rand(aiq_pipeline_t *pl)
{
    /* xorshift64*: plenty for backoff jitter, and per pipeline instead of global. */
    pl->rng ^= pl->rng >> 12;
    pl->rng ^= pl->rng << 25;
    pl->rng ^= pl->rng >> 27;
    return pl->rng * 2685821657736338717ULL;
}

static int64_t backoff_ms(aiq_task_t *t, const char *retry_after)
{
    const aiq_config_t *cfg = t->pl->d.cfg;
    int64_t cap = cfg->retry_base_ms << (t->attempts < 16 ? t->attempts - 1 : 15);
    if (cap > cfg->retry_max_ms || cap <= 0)
        cap = cfg->retry_max_ms;
    int64_t wait = (int64_t)(next_rand(t->pl) % (uint64_t)(cap + 1));
    char *end;
    long secs = retry_after && *retry_after ? strtol(retry_after, &end, 10) : 0;
    if (secs > 0 && secs < 3600 && wait < secs * 1000)
        wait = secs * 1000;
    return wait;
}

static void on_backoff_done(uv_timer_t *timer)
{
    task_call(timer->data);
}

static void call_failed(aiq_task_t *t, aiq_bedrock_class_t cls, const char *retry_after)
{
    int64_t now = aiq_now_ms();
    if (cls == AIQ_BEDROCK_RETRY && t->attempts < t->pl->d.cfg->max_attempts) {
        int64_t wait = backoff_ms(t, retry_after);
        if (now + wait < t->deadline_ms) {
            t->pl->stats.retries++;
            aiq_metrics_retry(t->pl->d.metrics);
            aiq_logj(t->pl->d.log, AIQ_LOG_INFO, t->job->id,
                     "attempt %d failed (%s), retrying in %lld ms", t->attempts, t->error_kind,
                     (long long)wait);
            set_state(t, TASK_BACKOFF);
            timer_start(t, (uint64_t)wait, on_backoff_done);
            return;
        }
    }
    t->status = now >= t->deadline_ms ? AIQ_RESULT_EXPIRED : AIQ_RESULT_FAILED;
    aiq_logj(t->pl->d.log, AIQ_LOG_WARN, t->job->id,
             "model call failed after %d attempt(s): %s: %s", t->attempts, t->error_kind,
             t->error_msg);
    task_publish_result(t);
}

static void on_model_reply(void *opaque, const aiq_http_response_t *resp)
{
    aiq_task_t *t = opaque;
    t->req = NULL;
    t->provider_ms += resp->elapsed_ms;
    t->http_status = (int)resp->status;
    aiq_metrics_model_call(t->pl->d.metrics, resp->curl_code == CURLE_OK ? resp->status : 0);
    aiq_bedrock_class_t cls =
        aiq_bedrock_classify(resp->status, resp->error_type, resp->curl_code != CURLE_OK,
                             t->error_kind, sizeof(t->error_kind));
    if (cls == AIQ_BEDROCK_OK) {
        aiq_err_t err = {0};
        if (aiq_bedrock_parse(t->job->api, resp->body, resp->body_len, &t->reply, &err) == 0) {
            t->error_kind[0] = '\0';
            t->status = AIQ_RESULT_SUCCEEDED;
            task_publish_result(t);
            return;
        }
        snprintf(t->error_kind, sizeof(t->error_kind), "bad_response");
        snprintf(t->error_msg, sizeof(t->error_msg), "%s", err.msg);
        call_failed(t, AIQ_BEDROCK_RETRY, NULL);
        return;
    }
    if (resp->curl_code != CURLE_OK)
        snprintf(t->error_msg, sizeof(t->error_msg), "%s", resp->curl_error);
    else
        aiq_bedrock_error_message(resp->body, resp->body_len, t->error_msg, sizeof(t->error_msg));
    call_failed(t, cls, resp->retry_after);
}

static void task_call(aiq_task_t *t)
{
    aiq_pipeline_t *pl = t->pl;
    int64_t left = t->deadline_ms - aiq_now_ms();
    if (left <= 0) {
        t->status = AIQ_RESULT_EXPIRED;
        if (!t->error_kind[0])
            snprintf(t->error_kind, sizeof(t->error_kind), "deadline_exceeded");
        snprintf(t->error_msg, sizeof(t->error_msg), "deadline passed before the model answered");
        task_publish_result(t);
        return;
    }
    aiq_bedrock_call_t call;
    aiq_err_t err = {0};
    if (aiq_bedrock_build(&pl->d.bedrock, t->job, (time_t)(aiq_now_ms() / 1000), &call, &err)) {
        snprintf(t->error_kind, sizeof(t->error_kind), "request_build");
        snprintf(t->error_msg, sizeof(t->error_msg), "%s", err.msg);
        t->status = AIQ_RESULT_FAILED;
        task_publish_result(t);
        return;
    }
    t->model = call.model;
    t->attempts++;
    pl->stats.model_calls++;
    long timeout =
        (long)(left < pl->d.cfg->request_timeout_ms ? left : pl->d.cfg->request_timeout_ms);
    set_state(t, TASK_CALLING);
    int rc = aiq_http_post(pl->d.http, call.url, call.headers, call.body, call.body_len, timeout,
                           on_model_reply, t, &t->req, &err);
    call.headers = NULL; /* taken by aiq_http_post */
    aiq_bedrock_call_free(&call);
    if (rc) {
        snprintf(t->error_kind, sizeof(t->error_kind), "transport");
        snprintf(t->error_msg, sizeof(t->error_msg), "%s", err.msg);
        call_failed(t, AIQ_BEDROCK_RETRY, NULL);
    }
}

/* ---- start ------------------------------------------------------------------------- */

static int64_t deadline_of(aiq_task_t *t)
{
    const aiq_job_t *job = t->job;
    int64_t start = job->created_at_ms;
    if (!start) {
        rd_kafka_timestamp_type_t type;
        int64_t ts = rd_kafka_message_timestamp(t->msg, &type);
        start = (type == RD_KAFKA_TIMESTAMP_CREATE_TIME && ts > 0) ? ts : t->received_ms;
    }
    return start + (job->timeout_ms ? job->timeout_ms : t->pl->d.cfg->default_timeout_ms);
}

/* reply_to must not point back into aiq's own input: a job must never create jobs. */
static int reply_to_allowed(aiq_pipeline_t *pl, const char *topic)
{
    return !topic || (aiq_topic_priority(pl->d.cfg->topic_prefix, topic) < 0 &&
                      strcmp(topic, pl->dlq_topic) != 0);
}

void aiq_pipeline_start(aiq_pipeline_t *pl, aiq_task_t *t)
{
    aiq_err_t err = {0};
    aiq_job_reject_t why;
    t->started_ms = aiq_now_ms();
    pl->stats.started++;
    if (aiq_job_decode(t->msg->payload, t->msg->len, (size_t)pl->d.cfg->max_job_bytes, &t->job,
                       &why, &t->id_hint, &err)) {
        task_reject(t, why, err.msg);
        return;
    }
    if (!reply_to_allowed(pl, t->job->reply_to)) {
        t->id_hint = strdup(t->job->id);
        aiq_job_free(t->job);
        t->job = NULL;
        task_reject(t, AIQ_JOB_INVALID, "reply_to: must not name a job topic or the DLQ");
        return;
    }
    t->deadline_ms = deadline_of(t);
    task_call(t);
}

/* ---- lifecycle --------------------------------------------------------------------- */

int aiq_pipeline_new(aiq_pipeline_t **out, const aiq_pipeline_deps_t *deps, aiq_err_t *err)
{
    aiq_pipeline_t *pl = calloc(1, sizeof(*pl));
    if (!pl)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    pl->d = *deps;
    if (aiq_topic_results(deps->cfg->topic_prefix, pl->results_topic, AIQ_TOPIC_MAX) ||
        aiq_topic_dlq(deps->cfg->topic_prefix, pl->dlq_topic, AIQ_TOPIC_MAX)) {
        free(pl);
        return aiq_err_set(err, AIQ_EINVAL, "kafka.topic_prefix is too long");
    }
    pl->rng = (uint64_t)aiq_now_ms() ^ ((uint64_t)(uintptr_t)pl << 16) ^ 0x9E3779B97F4A7C15ULL;
    *out = pl;
    return 0;
}

void aiq_pipeline_free(aiq_pipeline_t *pl)
{
    if (!pl)
        return;
    while (pl->live)
        task_release(pl->live);
    free(pl);
}
