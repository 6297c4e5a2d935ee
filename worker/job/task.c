/* task.c — the job's states and the one function that moves them (checked against a
 * transition table, counted, traced), and a task's life: new, dropped, finished, freed.
 * Loop thread only. */

#include "job_internal.h"
#include "timeutil.h"

#include <stdlib.h>
#include <string.h>

static int64_t deadline_of(aiq_task_t *t);

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

const char *aiq__task_id(const aiq_task_t *t)
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

void aiq__task_illegal_at(aiq_task_t *t, aiq_task_state_t s, const char *file, int line)
{
    t->pl->stats.illegal_moves++;
    TLOG(t, AIQ_LOG_ERROR, "illegal state move %s -> %s (%s:%d)", state_names[t->state],
         state_names[s], base_name(file), line);
    if (AIQ_TASK_STRICT)
        abort();
}

void aiq__task_set_state_at(aiq_task_t *t, aiq_task_state_t s, const char *file, int line)
{
    aiq_pipeline_stats_t *st = &t->pl->stats;
    aiq_task_state_t from = t->state;
    int legal = aiq_task_move_legal(from, s);
    st->moves[from][s]++;
    if (!legal)
        aiq__task_illegal_at(t, s, file, line);
    if (from == s)
        return;
    if (aiq_log_enabled(t->pl->d.log, AIQ_LOG_DEBUG))
        TLOG(t, AIQ_LOG_DEBUG, "state %s -> %s (%s:%d)", state_names[from], state_names[s],
             base_name(file), line);
    t->state = s;
    st->entered[s]++;
}

void aiq__task_error(aiq_task_t *t, const char *kind, const char *fmt, ...)
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
void aiq__task_answer(aiq_task_t *t, aiq_result_status_t status, const char *fallback, char *text)
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

/* Frees a task: finished (DONE), or dropped unfinished, whose record is then redelivered
 * to whoever owns its partition next. */
void aiq__task_release(aiq_task_t *t)
{
    aiq_pipeline_t *pl = t->pl;
    if (t->state != AIQ_TASK_DONE)
        aiq__task_set_state(t, AIQ_TASK_DROPPED);
    aiq__dlq_unfail(t);
    if (t->dlq_waiting)
        pl->stats.dlq_waiting--;
    aiq__sf_unregister(t);
    aiq__sf_unlink(t);
    aiq__sf_promote(t);
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

/* The job's cache key, unless it bypasses the cache: what the lookup, single-flight and the
 * cache put use. Without one (a payload too large to canonicalise) the job just is not
 * cached, and says so. */
static void task_key(aiq_task_t *t)
{
    size_t ndrop = 0;
    const char *const *drop = t->op ? aiq_op_volatile_fields(t->op, &ndrop) : NULL;
    aiq_err_t err = {0};
    if (t->job->cache_bypass)
        return;
    if (aiq_cache_key_job(t->job, t->call_model, drop, ndrop, t->key, &err))
        TLOG(t, AIQ_LOG_WARN, "no cache key: %s", err.msg);
    else
        t->keyed = 1;
}

/* Decodes the record once, at fetch, and resolves what every later step needs: operation,
 * model, deadline and cache key. A record that does not decode keeps why for
 * aiq_pipeline_start. */
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
    task_key(t);
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
        aiq__task_illegal(t, AIQ_TASK_DROPPED);
        return;
    }
    aiq__task_release(t);
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

/* The operation's name for metrics: unknown ones (answered by "*") fold into "other". */
static const char *op_label(const aiq_task_t *t)
{
    const aiq_op_t *op = t->op;
    return op && strcmp(aiq_op_name(op), "*") != 0 ? aiq_op_name(op) : "other";
}

/* Gives the job slot back once: when its answer goes out (task_send), when it waits on the
 * DLQ, at the latest when it finishes. */
void aiq__task_slot_free(aiq_task_t *t)
{
    if (t->slot_freed)
        return;
    t->slot_freed = 1;
    if (t->pl->d.on_slot_free)
        t->pl->d.on_slot_free(t->pl->d.opaque, t);
}

void aiq__task_finish(aiq_task_t *t)
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
        double cost = called ? aiq__task_cost(t->pl, t) : 0;
        if (t->job)
            aiq_metrics_usage(t->pl->d.metrics, op_label(t), t->model, status, now - t->received_ms,
                              in, out, cost);
        if (t->job && called && t->status == AIQ_RESULT_SUCCEEDED && cost < 0)
            aiq_metrics_unpriced(t->pl->d.metrics);
    }
    aiq__task_set_state(t, AIQ_TASK_DONE);
    if (t->dlq_waiting) {
        t->dlq_waiting = 0;
        t->pl->stats.dlq_waiting--;
    }
    aiq__task_slot_free(t);
    t->pl->d.on_done(t->pl->d.opaque, t);
    aiq__task_release(t);
}

void aiq__task_timer_start(aiq_task_t *t, uint64_t ms, uv_timer_cb cb)
{
    if (!t->timer_on) {
        uv_timer_init(t->pl->d.loop, &t->timer);
        t->timer.data = t;
        t->timer_on = 1;
    }
    uv_timer_start(&t->timer, cb, ms, 0);
}

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
