#include "pipeline.h"
#include "cache.h"
#include "dlq.h"
#include "reply_policy.h"
#include "job.h"
#include "result.h"
#include "strbuf.h"
#include "timeutil.h"
#include "topics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What task_send is sending. */
typedef enum out_kind {
    OUT_RESULT = 0, /* out_val: the result, to the reply topic */
    OUT_DLQ_RECORD, /* the original record, to the DLQ */
    OUT_DLQ_RESULT, /* out_val: a result the reply topic refused, to the DLQ */
    OUT_REQUEUE,    /* out_val: the job again, to the high topic */
} out_kind_t;

#ifndef AIQ_TASK_STRICT
#define AIQ_TASK_STRICT 0 /* 1: an illegal state move aborts (debug and test builds) */
#endif

static const char *const state_names[AIQ_TASK_NSTATES] = {
    "queued", "started", "coalesced", "calling", "publishing", "done", "dropped"};

/* The legal moves: moves[from] has bit `to` set. PUBLISHING -> PUBLISHING is a resend, or a
 * record replaced by another (a refused result goes to the DLQ, a refused re-enqueue is
 * answered by the fallback chain). DONE and DROPPED are final: the task is freed. */
#define TO(s) (1u << (s))
static const unsigned moves[AIQ_TASK_NSTATES] = {
    [AIQ_TASK_QUEUED] = TO(AIQ_TASK_STARTED) | TO(AIQ_TASK_DROPPED),
    /* refused, expired or a cache hit answer at once; the rest call or join a call */
    [AIQ_TASK_STARTED] = TO(AIQ_TASK_COALESCED) | TO(AIQ_TASK_CALLING) | TO(AIQ_TASK_PUBLISHING),
    /* promoted to call when its leader went away; answered by the leader's outcome, or
     * expired when promoted too late */
    [AIQ_TASK_COALESCED] = TO(AIQ_TASK_CALLING) | TO(AIQ_TASK_PUBLISHING) | TO(AIQ_TASK_DROPPED),
    [AIQ_TASK_CALLING] = TO(AIQ_TASK_PUBLISHING) | TO(AIQ_TASK_DROPPED),
    [AIQ_TASK_PUBLISHING] = TO(AIQ_TASK_PUBLISHING) | TO(AIQ_TASK_DONE) | TO(AIQ_TASK_DROPPED),
};
#undef TO

struct aiq_task {
    aiq_sched_node_t node;
    struct aiq_task *prev, *next; /* live list, for shutdown */
    aiq_pipeline_t *pl;
    rd_kafka_message_t *msg;
    aiq_consumer_ref_t ref;
    aiq_task_state_t state; /* changed by task_set_state only */
    aiq_job_t *job;
    char *id_hint;                                /* id of a rejected record, when it had one */
    int64_t received_ms, started_ms, deadline_ms; /* wall clock */
    int64_t timeout_ms;                           /* the job's, or the default */
    int64_t provider_ms;
    int attempts;
    int pending;  /* records produced and not yet acknowledged */
    int timer_on; /* timer initialised: freeing must wait for its close */
    uv_timer_t timer;
    aiq_provider_call_t *call;
    /* resolved once, when the record is fetched (aiq_task_new) */
    const aiq_op_t *op;     /* the job's operation, NULL without an operations file */
    const char *call_model; /* the model a call would go to (borrowed from job/op/conf) */
    aiq_job_reject_t why;   /* !job: why the record was refused */
    char *why_msg;          /* !job: the decoder's message (malloc'd) */
    /* cache and single-flight */
    int keyed; /* key holds the job's cache key */
    uint8_t key[AIQ_CACHE_KEY_LEN];
    aiq_cache_entry_t stale; /* an expired entry kept for the fallback chain */
    int cache_hit, cache_stale;
    int64_t cache_age_ms;
    aiq_task_t *sf_next;         /* leaders in the same single-flight bucket */
    int sf_leader;               /* registered in the single-flight table */
    aiq_task_t *leader;          /* the identical job whose call this one waits for */
    aiq_task_t *followers;       /* jobs waiting for this one's call */
    aiq_task_t *f_prev, *f_next; /* siblings among a leader's followers */
    /* outcome */
    aiq_result_status_t status;
    aiq_bedrock_reply_t reply;
    const char *model;
    char error_kind[64];
    char error_msg[512];
    int http_status;
    int64_t partial_seq;                      /* partial records published (streamed jobs) */
    aiq_strbuf_t partial;                     /* text received, not yet published */
    int partial_attempt;                      /* the call it came from */
    int64_t partial_ms;                       /* monotonic time of the last partial published */
    char request_id[AIQ_HTTP_REQUEST_ID_MAX]; /* of the last model call */
    const char *fallback;                     /* static name, NULL when the model answered */
    char *fallback_text; /* malloc'd: the canned answer, or the support text of an error */
    /* what is being published, kept for re-sending after a transient failure */
    char *out_val;
    size_t out_len;
    char out_topic[AIQ_TOPIC_MAX];
    out_kind_t out_kind;
    /* dead letter */
    int slot_freed;      /* on_slot_free ran: the job slot went back to the worker */
    int dlq_waiting;     /* counted in stats.dlq_waiting until finished */
    int dlq_failing;     /* the last write failed: counted in pl->dlq_failing */
    int dlq_minimal;     /* the fitted letter was refused for good: headers + first bytes */
    int64_t dlq_backoff; /* ms before the next write after a failure */
    char dlq_sha[65];    /* of the whole value, computed once */
    char dlq_refused[256];
};

#define SF_BUCKETS 1024

struct aiq_pipeline {
    aiq_pipeline_deps_t d;
    aiq_task_t *sf[SF_BUCKETS]; /* single-flight: leaders by cache key */
    int closing;
    char results_topic[AIQ_TOPIC_MAX];
    char dlq_topic[AIQ_TOPIC_MAX];
    aiq_task_t *live;
    aiq_pipeline_stats_t stats;
    aiq_reply_policy_t *replies; /* where reply_to may point */
    size_t dlq_cap;              /* value bytes one dead letter may carry */
    int64_t dlq_failing;         /* dead letters whose last write failed */
    char dlq_error[320];         /* the latest such failure */
};

static void task_call(aiq_task_t *t);
static void task_publish_result(aiq_task_t *t);
static void task_send(aiq_task_t *t);
static void task_fallback(aiq_task_t *t);

/* ---- bookkeeping ---------------------------------------------------------------- */

/* Logs about a task carry its job id and, when the job has one, its trace id. */
#define TLOG(t, level, ...)                                                                        \
    aiq_logjt((t)->pl->d.log, (level), task_id(t), (t)->job ? (t)->job->traceparent : NULL,        \
              __VA_ARGS__)

static const char *task_id(const aiq_task_t *t)
{
    return t->job ? t->job->id : t->id_hint;
}

const char *aiq_task_state_name(aiq_task_state_t s)
{
    return (unsigned)s < AIQ_TASK_NSTATES ? state_names[s] : "?";
}

bool aiq_task_move_legal(aiq_task_state_t from, aiq_task_state_t to)
{
    return (unsigned)from < AIQ_TASK_NSTATES && (unsigned)to < AIQ_TASK_NSTATES &&
           (moves[from] & (1u << to));
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Counts and logs a move the table forbids (a bug); aborts in AIQ_TASK_STRICT builds. */
#define illegal_move(t, s) illegal_move_at((t), (s), __FILE__, __LINE__)
static void illegal_move_at(aiq_task_t *t, aiq_task_state_t s, const char *file, int line)
{
    t->pl->stats.illegal_moves++;
    TLOG(t, AIQ_LOG_ERROR, "illegal state move %s -> %s (%s:%d)", state_names[t->state],
         state_names[s], base_name(file), line);
    if (AIQ_TASK_STRICT)
        abort();
}

/* Every state change goes through here (as curl's mstate()): checked against moves[],
 * counted, and traced with the file and line that asked for it. An illegal move is a bug in this
 * file: it is counted and logged, and still made, because the caller already acts on the
 * new state; AIQ_TASK_STRICT builds abort instead. */
#define task_set_state(t, s) task_set_state_at((t), (s), __FILE__, __LINE__)
static void task_set_state_at(aiq_task_t *t, aiq_task_state_t s, const char *file, int line)
{
    aiq_pipeline_stats_t *st = &t->pl->stats;
    aiq_task_state_t from = t->state;
    int legal = aiq_task_move_legal(from, s);
    st->moves[from][s]++;
    if (!legal)
        illegal_move_at(t, s, file, line);
    if (from == s)
        return;
    if (aiq_log_enabled(t->pl->d.log, AIQ_LOG_DEBUG))
        TLOG(t, AIQ_LOG_DEBUG, "state %s -> %s (%s:%d)", state_names[from], state_names[s],
             base_name(file), line);
    t->state = s;
    st->entered[s]++;
}

/* Why the job was not answered by the model: the result's error kind and message. */
static void task_error(aiq_task_t *t, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void task_error(aiq_task_t *t, const char *kind, const char *fmt, ...)
{
    va_list ap;
    snprintf(t->error_kind, sizeof(t->error_kind), "%s", kind);
    va_start(ap, fmt);
    vsnprintf(t->error_msg, sizeof(t->error_msg), fmt, ap);
    va_end(ap);
}

/* Decides the answer: its status and, when the model did not give it, the fallback that
 * did (static name) and its text (taken; the answer text, or the support text of an
 * error). The one place a status is set. */
static void task_answer(aiq_task_t *t, aiq_result_status_t status, const char *fallback, char *text)
{
    t->status = status;
    t->fallback = fallback;
    if (text != t->fallback_text) {
        free(t->fallback_text);
        t->fallback_text = text;
    }
}

static void task_free_now(aiq_task_t *t)
{
    aiq_job_free(t->job);
    free(t->id_hint);
    free(t->why_msg);
    aiq_bedrock_reply_free(&t->reply);
    free(t->partial.p);
    free(t->out_val);
    free(t->fallback_text);
    aiq_cache_entry_clear(&t->stale);
    rd_kafka_message_destroy(t->msg);
    free(t);
}

static void on_timer_closed(uv_handle_t *h)
{
    task_free_now(h->data);
}

/* ---- single-flight: identical jobs in flight share one model call --------------------- */

static aiq_task_t **sf_bucket(aiq_pipeline_t *pl, const uint8_t key[AIQ_CACHE_KEY_LEN])
{
    unsigned h = (unsigned)key[0] | (unsigned)key[1] << 8; /* SHA-256 bytes: uniform */
    return &pl->sf[h % SF_BUCKETS];
}

static void sf_unregister(aiq_task_t *t)
{
    if (!t->sf_leader)
        return;
    for (aiq_task_t **pp = sf_bucket(t->pl, t->key); *pp; pp = &(*pp)->sf_next) {
        if (*pp == t) {
            *pp = t->sf_next;
            break;
        }
    }
    t->sf_next = NULL;
    t->sf_leader = 0;
}

static void follower_unlink(aiq_task_t *f)
{
    aiq_task_t *l = f->leader;
    if (!l)
        return;
    if (f->f_prev)
        f->f_prev->f_next = f->f_next;
    else
        l->followers = f->f_next;
    if (f->f_next)
        f->f_next->f_prev = f->f_prev;
    f->f_prev = f->f_next = NULL;
    f->leader = NULL;
}

/* Joins an identical job's call when one is in flight (returns 1), or becomes the one
 * others join (returns 0: go and call). */
static int sf_join(aiq_task_t *t)
{
    /* A streamed job calls on its own: its partial records come from its own call. */
    if (t->job && t->job->stream)
        return 0;
    aiq_task_t **b = sf_bucket(t->pl, t->key);
    for (aiq_task_t *l = *b; l; l = l->sf_next) {
        if (memcmp(l->key, t->key, AIQ_CACHE_KEY_LEN) == 0) {
            t->leader = l;
            t->f_prev = NULL;
            t->f_next = l->followers;
            if (l->followers)
                l->followers->f_prev = t;
            l->followers = t;
            t->pl->stats.coalesced++;
            aiq_metrics_count(t->pl->d.metrics, AIQ_METRICS_COALESCED);
            task_set_state(t, AIQ_TASK_COALESCED);
            return 1;
        }
    }
    t->sf_next = *b;
    *b = t;
    t->sf_leader = 1;
    return 0;
}

static void task_call(aiq_task_t *t);

/* A leader that goes away without an answer (revoke) hands its followers to the first of
 * them, which calls in its place. */
static void sf_promote(aiq_task_t *t)
{
    aiq_task_t *heir = t->followers;
    if (!heir)
        return;
    t->followers = NULL;
    aiq_task_t *rest = heir->f_next;
    heir->leader = NULL;
    heir->f_prev = heir->f_next = NULL;
    heir->followers = rest;
    for (aiq_task_t *f = rest; f; f = f->f_next)
        f->leader = heir;
    if (rest)
        rest->f_prev = NULL;
    if (t->pl->closing) {
        heir->followers = NULL;
        for (aiq_task_t *f = rest, *n; f; f = n) {
            n = f->f_next;
            f->leader = NULL;
            f->f_prev = f->f_next = NULL;
        }
        return;
    }
    aiq_task_t **b = sf_bucket(t->pl, heir->key);
    heir->sf_next = *b;
    *b = heir;
    heir->sf_leader = 1;
    task_call(heir);
}

static void dlq_unfail(aiq_task_t *t);

/* Frees a task: finished (DONE), or dropped unfinished, whose record is then redelivered
 * to whoever owns its partition next. */
static void task_release(aiq_task_t *t)
{
    aiq_pipeline_t *pl = t->pl;
    if (t->state != AIQ_TASK_DONE)
        task_set_state(t, AIQ_TASK_DROPPED);
    dlq_unfail(t);
    if (t->dlq_waiting)
        pl->stats.dlq_waiting--;
    sf_unregister(t);
    follower_unlink(t);
    sf_promote(t);
    if (t->prev)
        t->prev->next = t->next;
    else if (pl->live == t)
        pl->live = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
    if (t->call)
        aiq_provider_cancel(pl->d.provider, t->call);
    t->call = NULL;
    if (t->timer_on)
        uv_close((uv_handle_t *)&t->timer, on_timer_closed);
    else
        task_free_now(t);
}

static int64_t deadline_of(aiq_task_t *t);

/* Decodes the record once, at fetch, and resolves what every later step needs: operation,
 * model and deadline. A record that does not decode keeps why for aiq_pipeline_start. */
static void task_resolve(aiq_task_t *t)
{
    aiq_pipeline_t *pl = t->pl;
    aiq_err_t err = {0};
    if (aiq_job_decode(t->msg->payload, t->msg->len, (size_t)pl->d.cfg->max_job_bytes, &t->job,
                       &t->why, &t->id_hint, &err)) {
        t->job = NULL;
        t->why_msg = strdup(err.msg);
        return;
    }
    t->op = pl->d.ops ? aiq_ops_find(pl->d.ops, t->job->operation) : NULL;
    t->call_model = pl->d.provider ? aiq_provider_model(pl->d.provider, t->job) : t->job->model;
    t->deadline_ms = deadline_of(t);
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
    t->state = AIQ_TASK_QUEUED; /* the initial state: entered, not moved to */
    pl->stats.entered[AIQ_TASK_QUEUED]++;
    task_resolve(t);
    t->next = pl->live;
    if (pl->live)
        pl->live->prev = t;
    pl->live = t;
    return t;
}

void aiq_task_drop(aiq_task_t *t)
{
    if (t->state == AIQ_TASK_PUBLISHING) {
        /* Its delivery report would find it freed; only shutdown (aiq_pipeline_free, once
         * the publisher reports no more) may drop it. */
        illegal_move(t, AIQ_TASK_DROPPED);
        return;
    }
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

const char *aiq_task_model(const aiq_task_t *t)
{
    return t->job ? t->call_model : NULL;
}

aiq_task_state_t aiq_task_state(const aiq_task_t *t)
{
    return t->state;
}

const aiq_consumer_ref_t *aiq_task_ref(const aiq_task_t *t)
{
    return &t->ref;
}

aiq_task_summary_t aiq_task_summary(const aiq_task_t *t)
{
    aiq_task_summary_t s = {0};
    s.answered = t->job && t->out_kind != OUT_REQUEUE;
    s.error = t->status == AIQ_RESULT_FAILED || t->status == AIQ_RESULT_EXPIRED ||
              t->status == AIQ_RESULT_DEGRADED;
    s.lookup = t->keyed && t->pl->d.cache;
    s.hit = t->cache_hit && !t->cache_stale;
    s.total_ms = aiq_now_ms() - t->received_ms;
    return s;
}

const aiq_pipeline_stats_t *aiq_pipeline_stats(const aiq_pipeline_t *pl)
{
    return &pl->stats;
}

static double cost_of(aiq_pipeline_t *pl, const aiq_task_t *t);

/* The operation's name for metrics: unknown ones (answered by "*") fold into "other". */
static const char *op_label(const aiq_task_t *t)
{
    const aiq_op_t *op = t->op;
    return op && strcmp(aiq_op_name(op), "*") != 0 ? aiq_op_name(op) : "other";
}

/* Gives the job slot back once: when its answer goes out (task_send), when it waits on the
 * DLQ, at the latest when it finishes. */
static void slot_free(aiq_task_t *t)
{
    if (t->slot_freed)
        return;
    t->slot_freed = 1;
    if (t->pl->d.on_slot_free)
        t->pl->d.on_slot_free(t->pl->d.opaque, t);
}

static void dlq_state(aiq_pipeline_t *pl)
{
    if (pl->d.on_dlq_state)
        pl->d.on_dlq_state(pl->d.opaque, pl->dlq_failing == 0, pl->dlq_error);
}

/* A failed dead-letter write was followed by a delivered one, or the task went away. */
static void dlq_unfail(aiq_task_t *t)
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

static void task_finish(aiq_task_t *t)
{
    /* A re-enqueued job is not answered yet: its second round counts. */
    if ((t->job || t->id_hint) && t->out_kind != OUT_REQUEUE) {
        int64_t now = aiq_now_ms();
        int status = t->job ? (int)t->status : (int)AIQ_RESULT_REJECTED;
        /* Tokens and cost count where the model was called, not for cache hits or jobs
         * that shared another's call. */
        int called = t->attempts > 0 && !t->cache_hit;
        int64_t in = called ? t->reply.input_tokens : 0, out = called ? t->reply.output_tokens : 0;
        aiq_metrics_job(t->pl->d.metrics, t->ref.prio, status, t->started_ms - t->received_ms,
                        t->provider_ms, now - t->received_ms, in, out);
        double cost = called ? cost_of(t->pl, t) : 0;
        if (t->job)
            aiq_metrics_usage(t->pl->d.metrics, op_label(t), t->model, status, now - t->received_ms,
                              in, out, cost);
        if (t->job && called && t->status == AIQ_RESULT_SUCCEEDED && cost < 0)
            aiq_metrics_unpriced(t->pl->d.metrics);
    }
    task_set_state(t, AIQ_TASK_DONE);
    if (t->dlq_waiting) {
        t->dlq_waiting = 0;
        t->pl->stats.dlq_waiting--;
    }
    slot_free(t);
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
#define DLQ_BACKOFF_MAX_MS   30000

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
    timer_start(t, (uint64_t)t->dlq_backoff, on_send_retry);
}

static void enter_dlq(aiq_task_t *t);

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
        task_fallback(t);
        return;
    }
    if (permanent && t->out_kind == OUT_RESULT) {
        /* The reply topic cannot take it (missing, too large): the DLQ keeps it instead. */
        TLOG(t, AIQ_LOG_ERROR,
             "result to %s failed for good (%s); "
             "sending it to %s",
             t->out_topic, errstr, pl->dlq_topic);
        task_error(t, "reply_failed", "result could not be written to %s: %s", t->out_topic,
                   errstr);
        snprintf(t->out_topic, sizeof(t->out_topic), "%s", pl->dlq_topic);
        t->out_kind = OUT_DLQ_RESULT;
        enter_dlq(t);
        task_send(t);
        return;
    }
    /* Never drop a result: retry (loudly) until the broker takes it. */
    TLOG(t, AIQ_LOG_WARN, "publish to %s failed (%s), retrying", t->out_topic, errstr);
    timer_start(t, 1000, on_send_retry);
}

static void on_delivered(void *opaque, rd_kafka_resp_err_t err, int permanent, const char *errstr)
{
    aiq_task_t *t = opaque;
    t->pending--;
    if (!err) {
        dlq_unfail(t);
        if (t->pending == 0)
            task_finish(t);
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
    const void *key = task_id(t) ? (const void *)task_id(t) : t->msg->key;
    size_t klen = task_id(t) ? strlen(task_id(t)) : t->msg->key_len;
    const void *val = t->out_kind == OUT_DLQ_RECORD ? t->msg->payload : t->out_val;
    size_t vlen = t->out_kind == OUT_DLQ_RECORD ? t->msg->len : t->out_len;
    if (klen > 1024)
        klen = 1024; /* a producer's key, in a dead letter: bounded like the value */
    rd_kafka_headers_t *h = is_dlq(t)                    ? dlq_letter(t, val, &vlen)
                            : t->out_kind == OUT_REQUEUE ? requeue_headers(t)
                                                         : result_headers(t);
    task_set_state(t, AIQ_TASK_PUBLISHING);
    /* The answer is out of the task's hands: its slot (and its model's call slot) serves the
     * next job while the broker acknowledges; the offset waits for the ack. Before the send:
     * a failed send may end the task. */
    slot_free(t);
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
    slot_free(t);
}

static void publish_to_dlq(aiq_task_t *t)
{
    t->pl->stats.dlq++;
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
static double cost_of(aiq_pipeline_t *pl, const aiq_task_t *t)
{
    const aiq_bedrock_reply_t *r = &t->reply;
    aiq_usage_t u = {r->input_tokens, r->output_tokens, r->cache_read_tokens,
                     r->cache_write_tokens};
    double usd;
    if (!t->model || !pl->d.ops || aiq_ops_cost(pl->d.ops, t->model, &u, &usd))
        return -1;
    return usd;
}

static int encode_result(aiq_task_t *t, const char *id, aiq_result_t *r)
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
    r->cost_usd = cost_of(pl, t);
    r->completed_at_ms = now;
    if (t->error_kind[0]) {
        r->error_kind = t->error_kind;
        r->error_message = t->error_msg;
        r->http_status = t->http_status;
        r->request_id = t->request_id;
        if (t->status == AIQ_RESULT_FAILED && t->fallback)
            r->error_support = t->fallback_text;
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
    if (encode_result(t, job->id, &r)) {
        /* Only invalid UTF-8 from the model gets here: answer without the text. */
        task_error(t, "bad_model_output", "model output is not valid UTF-8");
        task_answer(t, AIQ_RESULT_FAILED, t->fallback, t->fallback_text);
        r.output_text = NULL;
        if (encode_result(t, job->id, &r)) {
            publish_to_dlq(t);
            return;
        }
    }
    snprintf(t->out_topic, sizeof(t->out_topic), "%s", reply_topic(t, job->reply_to));
    t->out_kind = OUT_RESULT;
    switch (t->status) {
    case AIQ_RESULT_SUCCEEDED:
        t->pl->stats.succeeded++;
        break;
    case AIQ_RESULT_EXPIRED:
        t->pl->stats.expired++;
        break;
    case AIQ_RESULT_REJECTED:
        t->pl->stats.rejected++;
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
        TLOG(t, AIQ_LOG_WARN, "rejected result not delivered: %s", errstr);
    if (--t->pending == 0)
        task_finish(t);
}

/* A refused record goes to the DLQ; when it named an id, its sender also gets a
 * "rejected" result so it does not wait until its deadline. */
static void task_reject(aiq_task_t *t, aiq_job_reject_t why, const char *msg)
{
    aiq_pipeline_t *pl = t->pl;
    t->pl->stats.rejected++;
    task_error(t, aiq_job_reject_name(why), "%s", msg);
    TLOG(t, AIQ_LOG_WARN, "%s[%d]@%lld refused (%s): %s", rd_kafka_topic_name(t->msg->rkt),
         t->msg->partition, (long long)t->msg->offset, t->error_kind, msg);
    publish_to_dlq(t);
    if (!t->id_hint)
        return;
    aiq_result_t r = {0};
    task_answer(t, AIQ_RESULT_REJECTED, NULL, NULL);
    if (encode_result(t, t->id_hint, &r))
        return;
    rd_kafka_headers_t *h = result_headers(t);
    aiq_err_t err = {0};
    t->pending++;
    if (aiq_publisher_send(pl->d.pub, pl->results_topic, t->id_hint, strlen(t->id_hint), t->out_val,
                           t->out_len, h, on_reject_delivered, t, &err)) {
        /* The DLQ record alone still answers for this record. */
        t->pending--;
        TLOG(t, AIQ_LOG_WARN, "rejected result not sent: %s", err.msg);
    }
}

/* ---- the model call and what follows it ------------------------------------------ */

/* "Retry requests at high priority" (the seed): a job whose in-process attempts are spent
 * goes once more through the high topic, keeping its deadline and counting its attempts;
 * its own record is then finished. Only when the deadline leaves room for another round. */
static int may_requeue(const aiq_task_t *t)
{
    const aiq_config_t *cfg = t->pl->d.cfg;
    return cfg->requeue && t->job->attempt == 0 &&
           t->deadline_ms - aiq_now_ms() > 2 * cfg->retry_max_ms;
}

static void task_requeue(aiq_task_t *t)
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
        task_fallback(t);
        return;
    }
    t->out_len = strlen(t->out_val);
    aiq_topic_jobs(pl->d.cfg->topic_prefix, AIQ_PRIO_HIGH, t->out_topic, sizeof(t->out_topic));
    t->out_kind = OUT_REQUEUE;
    pl->stats.requeued++;
    aiq_metrics_count(pl->d.metrics, AIQ_METRICS_REQUEUED);
    TLOG(t, AIQ_LOG_INFO, "attempts spent (%s); re-enqueued to %s", t->error_kind, t->out_topic);
    task_send(t);
}

/* The support information of an error answer (the operation's, persona's or generic). */
static char *support_text(const aiq_task_t *t, const aiq_op_t *op)
{
    const aiq_job_t *job = t->job;
    aiq_op_vars_t vars = {job->operation, job->persona, job->payload};
    aiq_err_t err = {0};
    char *text = NULL;
    if (op && aiq_op_render_fallback(op, &vars, AIQ_FALLBACK_SUPPORT, &text, &err) == 0)
        return text;
    return strdup(op ? aiq_op_fallback_text(op, job->persona, AIQ_FALLBACK_SUPPORT)
                     : "The request could not be answered. Quote the job id when you "
                       "contact support.");
}

/* The fallback chain: a stale cache entry, the operation's canned answer, a simplified
 * one, and last an error with support information. Canned answers are only for jobs that
 * name an operation and a payload; a job that brought its own prompt gets the error. */
static void task_fallback(aiq_task_t *t)
{
    aiq_pipeline_t *pl = t->pl;
    const aiq_job_t *job = t->job;
    const aiq_op_t *op = t->op;
    aiq_op_vars_t vars = {job->operation, job->persona, job->payload};
    aiq_err_t err = {0};
    char *text = NULL;
    const char *fallback = NULL;
    aiq_cache_body_t body;
    if (t->stale.body && aiq_cache_body_decode(t->stale.body, t->stale.len, &body, &err) == 0) {
        text = strdup(body.text);
        fallback = "stale_cache";
        t->cache_stale = 1;
        t->cache_age_ms = t->stale.age_ms;
        t->reply.input_tokens = t->reply.output_tokens = 0;
        aiq_cache_body_free(&body);
    }
    if (!text && op && job->payload && !job->messages && !job->body) {
        static const aiq_fallback_kind_t canned[] = {AIQ_FALLBACK_TEMPLATE,
                                                     AIQ_FALLBACK_SIMPLIFIED};
        static const char *const names[] = {"template", "simplified"};
        for (int i = 0; i < 2 && !text; i++) {
            if (aiq_op_fallback_configured(op, job->persona, canned[i]) &&
                aiq_op_render_fallback(op, &vars, canned[i], &text, &err) == 0)
                fallback = names[i];
        }
    }
    if (text)
        task_answer(t, AIQ_RESULT_DEGRADED, fallback, text);
    else
        task_answer(t, AIQ_RESULT_FAILED, "error", support_text(t, op));
    pl->stats.fallbacks++;
    aiq_metrics_count(pl->d.metrics, AIQ_METRICS_FALLBACK);
    TLOG(t, AIQ_LOG_WARN, "answered by fallback %s after %d attempt(s): %s: %s (request id %s)",
         t->fallback, t->attempts, t->error_kind, t->error_msg,
         t->request_id[0] ? t->request_id : "none");
    task_publish_result(t);
}

static int64_t ttl_of(const aiq_task_t *t)
{
    const aiq_pipeline_t *pl = t->pl;
    const aiq_op_t *op = t->op;
    if (t->job->cache_ttl_s >= 0)
        return t->job->cache_ttl_s;
    if (op && aiq_op_cache_ttl_s(op) >= 0)
        return aiq_op_cache_ttl_s(op);
    return pl->d.cfg->cache_ttl_s;
}

/* Stores the model's answer r (borrowed) to t's job, which model gave. */
static void cache_store(aiq_task_t *t, const aiq_bedrock_reply_t *r, const char *model)
{
    aiq_pipeline_t *pl = t->pl;
    char *body;
    size_t len;
    aiq_err_t err = {0};
    /* The cache body holds text, stop reason and token counts: an answer with more (tool
     * calls, a raw body, a guardrail trace) would come back from it without them. */
    if (!pl->d.cache || !t->keyed || !r->text || r->extra ||
        aiq_cache_body_encode(r->text, r->stop_reason, r->input_tokens, r->output_tokens, model,
                              &body, &len))
        return;
    aiq_cache_meta_t meta = {t->job->operation, t->job->persona, model};
    if (aiq_cache_put(pl->d.cache, t->key, body, len, ttl_of(t), &meta, &err))
        TLOG(t, AIQ_LOG_WARN, "not cached: %s", err.msg);
    free(body);
}

static void on_outcome(void *opaque, aiq_call_outcome_t *o);
static void partial_flush(aiq_task_t *t);

/* The leader's answer is every follower's: each gets its own copy of the outcome. */
static void sf_deliver(aiq_task_t *leader, const aiq_call_outcome_t *o)
{
    aiq_task_t *f = leader->followers;
    leader->followers = NULL;
    while (f) {
        aiq_task_t *next = f->f_next;
        f->leader = NULL;
        f->f_prev = f->f_next = NULL;
        aiq_call_outcome_t copy = *o;
        memset(&copy.reply, 0, sizeof(copy.reply));
        if (o->end == AIQ_CALL_OK && aiq_bedrock_reply_copy(&copy.reply, &o->reply))
            copy.end = AIQ_CALL_EXHAUSTED; /* out of memory: its fallback answers */
        copy.model = f->call_model;        /* not the leader's */
        copy.attempts = 0;                 /* the call was the leader's */
        copy.provider_ms = 0;
        on_outcome(f, &copy);
        aiq_bedrock_reply_free(&copy.reply);
        f = next;
    }
}

static void on_outcome(void *opaque, aiq_call_outcome_t *o)
{
    aiq_task_t *t = opaque;
    t->call = NULL;
    partial_flush(t); /* the streamed text still gathered goes before the result */
    /* Stored before the followers are answered: each answer frees a job slot, and an
     * identical job started in it no longer finds this call, so it must find the cache. */
    if (o->end == AIQ_CALL_OK && o->attempts > 0)
        cache_store(t, &o->reply, o->model);
    if (t->sf_leader) {
        /* Answered: later identical jobs find the cache (or call again), not this task. */
        sf_unregister(t);
        sf_deliver(t, o);
    }
    t->model = o->model;
    t->attempts = o->attempts;
    t->provider_ms = o->provider_ms;
    t->http_status = o->http_status;
    snprintf(t->request_id, sizeof(t->request_id), "%s", o->request_id);
    task_error(t, o->error_kind, "%s", o->error_msg);
    switch (o->end) {
    case AIQ_CALL_OK:
        t->reply = o->reply;
        memset(&o->reply, 0, sizeof(o->reply));
        task_answer(t, AIQ_RESULT_SUCCEEDED, NULL, NULL);
        task_publish_result(t);
        return;
    case AIQ_CALL_FINAL:
        /* The request is wrong: a canned answer would hide that from the caller. */
        task_answer(t, AIQ_RESULT_FAILED, "error", support_text(t, t->op));
        TLOG(t, AIQ_LOG_WARN, "model refused the job: %s: %s (request id %s)", t->error_kind,
             t->error_msg, t->request_id[0] ? t->request_id : "none");
        task_publish_result(t);
        return;
    case AIQ_CALL_REJECTED:
        /* The job asks for something its request cannot carry: it is refused, by name. */
        task_answer(t, AIQ_RESULT_REJECTED, NULL, NULL);
        TLOG(t, AIQ_LOG_WARN, "job refused: %s", t->error_msg);
        task_publish_result(t);
        return;
    case AIQ_CALL_EXHAUSTED:
        if (may_requeue(t)) {
            task_requeue(t);
            return;
        }
        task_fallback(t);
        return;
    default:
        task_fallback(t);
        return;
    }
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
static void partial_flush(aiq_task_t *t)
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
 * left goes before the result (on_outcome). */
#define PARTIAL_BYTES 256
#define PARTIAL_MS    50
#define PARTIAL_MAX   (64 * 1024) /* one record's text at most */

static void on_partial(void *opaque, int attempt, const char *text, size_t len)
{
    aiq_task_t *t = opaque;
    if (t->partial.len && attempt != t->partial_attempt)
        partial_flush(t); /* a retry's text is its own */
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
            partial_flush(t);
    }
    if (t->partial_seq == 0 || t->partial.len >= PARTIAL_BYTES ||
        aiq_mono_ms() - t->partial_ms >= PARTIAL_MS)
        partial_flush(t);
}

static void task_call(aiq_task_t *t)
{
    aiq_pipeline_t *pl = t->pl;
    if (t->deadline_ms <= aiq_now_ms()) {
        task_answer(t, AIQ_RESULT_EXPIRED, NULL, NULL);
        task_error(t, "deadline_exceeded", "deadline passed before the job started");
        task_publish_result(t);
        return;
    }
    task_set_state(t, AIQ_TASK_CALLING);
    pl->stats.model_calls++;
    t->call =
        aiq_provider_request(pl->d.provider, t->job, t->ref.prio, t->deadline_ms, on_outcome, t);
    if (t->call && t->job->stream)
        aiq_provider_on_partial(t->call, on_partial);
    if (!t->call) {
        task_error(t, "out_of_memory", "no memory for the model request");
        task_fallback(t);
    }
}

/* ---- start ------------------------------------------------------------------------- */

static int64_t deadline_of(aiq_task_t *t)
{
    rd_kafka_timestamp_type_t type;
    int64_t ts = rd_kafka_message_timestamp(t->msg, &type);
    /* A producer stamps CreateTime with its own clock: one in the future counts as now. */
    int64_t record_ts = ts > 0 && ts < t->received_ms ? ts : t->received_ms;
    return aiq_job_deadline(t->job, record_ts, t->pl->d.cfg->default_timeout_ms, &t->timeout_ms);
}

bool aiq_task_expired(const aiq_task_t *t, int64_t now_ms)
{
    return t->job && t->deadline_ms <= now_ms;
}

/* Computes the job's cache key (unless it bypasses the cache) and answers from a fresh
 * entry (returns 1). An expired entry is kept for the fallback chain. */
static int cache_lookup(aiq_task_t *t)
{
    aiq_pipeline_t *pl = t->pl;
    const aiq_job_t *job = t->job;
    if (job->cache_bypass)
        return 0;
    const aiq_op_t *op = t->op;
    size_t ndrop = 0;
    const char *const *drop = op ? aiq_op_volatile_fields(op, &ndrop) : NULL;
    const char *model = t->call_model;
    aiq_err_t err = {0};
    if (aiq_cache_key_job(job, model, drop, ndrop, t->key, &err)) {
        TLOG(t, AIQ_LOG_WARN, "no cache key: %s", err.msg);
        return 0;
    }
    t->keyed = 1;
    if (!pl->d.cache)
        return 0;
    aiq_cache_entry_t e;
    aiq_cache_state_t st = aiq_cache_get(pl->d.cache, t->key, &e);
    if (st == AIQ_CACHE_STALE) {
        t->stale = e;
        return 0;
    }
    if (st != AIQ_CACHE_HIT)
        return 0;
    aiq_cache_body_t body;
    int rc = aiq_cache_body_decode(e.body, e.len, &body, &err);
    if (rc == 0 && (t->reply.text = strdup(body.text)) != NULL) {
        snprintf(t->reply.stop_reason, sizeof(t->reply.stop_reason), "%s",
                 body.stop_reason ? body.stop_reason : "");
        t->reply.input_tokens = body.input_tokens;
        t->reply.output_tokens = body.output_tokens;
        t->reply.total_tokens = body.input_tokens + body.output_tokens; /* all the entry keeps */
    }
    if (rc == 0)
        aiq_cache_body_free(&body);
    int64_t age = e.age_ms;
    aiq_cache_entry_clear(&e);
    if (!t->reply.text)
        return 0; /* undecodable: treat as a miss */
    t->model = model;
    t->cache_hit = 1;
    t->cache_age_ms = age;
    task_answer(t, AIQ_RESULT_SUCCEEDED, NULL, NULL);
    pl->stats.cache_hits++;
    task_publish_result(t);
    return 1;
}

/* Refuses a decoded job that the worker cannot run: DLQ, and a "rejected" result. */
static void task_refuse(aiq_task_t *t, const char *reason)
{
    t->id_hint = strdup(t->job->id);
    aiq_job_free(t->job);
    t->job = NULL;
    t->op = NULL;
    task_reject(t, AIQ_JOB_INVALID, reason);
}

/* A job must never create jobs or write into aiq's own state (breaker, metrics, alerts,
 * DLQ): reply_to names only topics worker.reply_topics allows. */
static int reply_to_allowed(aiq_pipeline_t *pl, const char *topic, aiq_err_t *err)
{
    return !topic || aiq_reply_policy_check(pl->replies, topic, err) == 0;
}

void aiq_pipeline_start(aiq_pipeline_t *pl, aiq_task_t *t)
{
    aiq_err_t err = {0};
    if (t->state != AIQ_TASK_QUEUED) {
        /* The caller's bug; running it again would answer the job twice. */
        illegal_move(t, AIQ_TASK_STARTED);
        return;
    }
    task_set_state(t, AIQ_TASK_STARTED);
    t->started_ms = aiq_now_ms();
    pl->stats.started++;
    if (!t->job) {
        task_reject(t, t->why, t->why_msg ? t->why_msg : "out of memory");
        return;
    }
    if (!reply_to_allowed(pl, t->job->reply_to, &err)) {
        task_refuse(t, err.msg);
        return;
    }
    if (aiq_job_check_time(t->job, aiq_now_ms(), pl->d.cfg->max_clock_skew_ms, &err)) {
        task_refuse(t, err.msg);
        return;
    }
    if (pl->d.ops && !t->op) {
        char reason[160];
        snprintf(reason, sizeof(reason), "operation: '%.64s' is not configured", t->job->operation);
        task_refuse(t, reason);
        return;
    }
    if (t->deadline_ms <= aiq_now_ms()) {
        task_call(t); /* answers "expired" */
        return;
    }
    if (cache_lookup(t) || (t->keyed && sf_join(t)))
        return;
    task_call(t);
}

/* ---- lifecycle --------------------------------------------------------------------- */

#define DLQ_DESCRIBE_TIMEOUT_MS 3000

/* A dead letter is at most what the DLQ topic accepts (the broker refuses a larger one for
 * good): read its limit once, at the start. */
static void dlq_cap_read(aiq_pipeline_t *pl)
{
    const aiq_config_t *cfg = pl->d.cfg;
    int64_t topic_max = -1, producer_max = -1;
    aiq_err_t e2 = {0};
    if (pl->d.pub) {
        producer_max = aiq_publisher_max_message_bytes(pl->d.pub);
        if (aiq_publisher_topic_max_bytes(pl->d.pub, pl->dlq_topic, DLQ_DESCRIBE_TIMEOUT_MS,
                                          &topic_max, &e2))
            aiq_log_warn(pl->d.log,
                         "dead-letter topic %s: max.message.bytes unknown (%s); dead letters "
                         "are cut to what dlq.max_record_bytes and the producer allow",
                         pl->dlq_topic, e2.msg);
    }
    pl->dlq_cap = aiq_dlq_value_cap(topic_max, producer_max, cfg->dlq_max_record_bytes);
    aiq_log_info(pl->d.log,
                 "dead letters carry at most %zu value bytes (%s max.message.bytes %lld, "
                 "producer message.max.bytes %lld, dlq.max_record_bytes %lld)",
                 pl->dlq_cap, pl->dlq_topic, (long long)topic_max, (long long)producer_max,
                 (long long)cfg->dlq_max_record_bytes);
}

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
    int rc =
        aiq_reply_policy_new(&pl->replies, deps->cfg->topic_prefix, deps->cfg->reply_topics, err);
    if (rc) {
        free(pl);
        return rc;
    }
    dlq_cap_read(pl);
    *out = pl;
    return 0;
}

const char *aiq_pipeline_dlq_error(const aiq_pipeline_t *pl)
{
    return pl->dlq_failing ? pl->dlq_error : NULL;
}

size_t aiq_pipeline_dlq_cap(const aiq_pipeline_t *pl)
{
    return pl->dlq_cap;
}

void aiq_pipeline_free(aiq_pipeline_t *pl)
{
    if (!pl)
        return;
    pl->closing = 1;
    while (pl->live)
        task_release(pl->live);
    aiq_reply_policy_free(pl->replies);
    free(pl);
}
