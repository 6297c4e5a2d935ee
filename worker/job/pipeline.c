/* pipeline.c — a job from start to answer: checks, cache lookup, single-flight, the model
 * call and its outcome. Loop thread only. */

#include "dlq.h"
#include "job_internal.h"
#include "timeutil.h"
#include "topics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const aiq_pipeline_stats_t *aiq_pipeline_stats(const aiq_pipeline_t *pl)
{
    return &pl->stats;
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

void aiq__on_outcome(void *opaque, aiq_call_outcome_t *o)
{
    aiq_task_t *t = opaque;
    t->call = NULL;
    aiq__partial_flush(t); /* the streamed text still gathered goes before the result */
    /* Stored before the followers are answered: each answer frees a job slot, and an
     * identical job started in it no longer finds this call, so it must find the cache. */
    if (o->end == AIQ_CALL_OK && o->attempts > 0)
        cache_store(t, &o->reply, o->model);
    if (t->sf_leader) {
        /* Answered: later identical jobs find the cache (or call again), not this task. */
        aiq__sf_unregister(t);
        aiq__sf_deliver(t, o);
    }
    t->model = o->model;
    t->attempts = o->attempts;
    t->provider_ms = o->provider_ms;
    t->http_status = o->http_status;
    snprintf(t->request_id, sizeof(t->request_id), "%s", o->request_id);
    aiq__task_error(t, o->error_kind, "%s", o->error_msg);
    switch (o->end) {
    case AIQ_CALL_OK:
        t->reply = o->reply;
        memset(&o->reply, 0, sizeof(o->reply));
        aiq__task_answer(t, AIQ_RESULT_SUCCEEDED, NULL, NULL);
        aiq__task_publish_result(t);
        return;
    case AIQ_CALL_FINAL:
        /* The request is wrong: a canned answer would hide that from the caller. */
        aiq__task_answer(t, AIQ_RESULT_FAILED, "error", aiq__support_text(t, t->op));
        TLOG(t, AIQ_LOG_WARN, "model refused the job: %s: %s (request id %s)", t->error_kind,
             t->error_msg, t->request_id[0] ? t->request_id : "none");
        aiq__task_publish_result(t);
        return;
    case AIQ_CALL_REJECTED:
        /* The job asks for something its request cannot carry: it is refused, by name. */
        aiq__task_answer(t, AIQ_RESULT_REJECTED, NULL, NULL);
        TLOG(t, AIQ_LOG_WARN, "job refused: %s", t->error_msg);
        aiq__task_publish_result(t);
        return;
    case AIQ_CALL_EXHAUSTED:
        if (aiq__may_requeue(t)) {
            aiq__task_requeue(t);
            return;
        }
        aiq__task_fallback(t);
        return;
    default:
        aiq__task_fallback(t);
        return;
    }
}

void aiq__task_call(aiq_task_t *t)
{
    aiq_pipeline_t *pl = t->pl;
    if (t->deadline_ms <= aiq_now_ms()) {
        aiq__task_answer(t, AIQ_RESULT_EXPIRED, NULL, NULL);
        aiq__task_error(t, "deadline_exceeded", "deadline passed before the job started");
        aiq__task_publish_result(t);
        return;
    }
    aiq__task_set_state(t, AIQ_TASK_CALLING);
    pl->stats.model_calls++;
    t->call = aiq_provider_request(pl->d.provider, t->job, t->ref.prio, t->deadline_ms,
                                   aiq__on_outcome, t);
    if (t->call && t->job->stream)
        aiq_provider_on_partial(t->call, aiq__on_partial);
    if (!t->call) {
        aiq__task_error(t, "out_of_memory", "no memory for the model request");
        aiq__task_fallback(t);
    }
}

/* Answers from a fresh entry under the key made at fetch (returns 1). An expired entry is
 * kept for the fallback chain. */
static int cache_lookup(aiq_task_t *t)
{
    aiq_pipeline_t *pl = t->pl;
    const aiq_job_t *job = t->job;
    const char *model = t->call_model;
    aiq_err_t err = {0};
    if (job->cache_bypass || !t->keyed || !pl->d.cache)
        return 0; /* the key was made at fetch (task.c), or the job is not cached */
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
    aiq__task_answer(t, AIQ_RESULT_SUCCEEDED, NULL, NULL);
    pl->stats.cache_hits++;
    aiq__task_publish_result(t);
    return 1;
}

/* Refuses a decoded job that the worker cannot run: DLQ, and a "rejected" result. */
static void task_refuse(aiq_task_t *t, const char *reason)
{
    t->id_hint = strdup(t->job->id);
    aiq_job_free(t->job);
    t->job = NULL;
    t->op = NULL;
    t->keyed = 0; /* a refused job is not cached: its answer carries no key */
    aiq__task_reject(t, AIQ_JOB_INVALID, reason);
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
        aiq__task_illegal(t, AIQ_TASK_STARTED);
        return;
    }
    aiq__task_set_state(t, AIQ_TASK_STARTED);
    t->started_ms = aiq_now_ms();
    pl->stats.started++;
    if (!t->job) {
        aiq__task_reject(t, t->why, t->why_msg ? t->why_msg : "out of memory");
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
        aiq__task_call(t); /* answers "expired" */
        return;
    }
    if (cache_lookup(t) || (t->keyed && aiq__sf_join(t)))
        return;
    aiq__task_call(t);
}

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
        aiq__task_release(pl->live);
    aiq_reply_policy_free(pl->replies);
    free(pl);
}
