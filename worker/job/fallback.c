/* fallback.c — what answers when the model could not: another round through the high
 * topic while the deadline leaves room, then stale cache, canned answers, an error with
 * support text. Loop thread only. */

#include "job_internal.h"
#include "timeutil.h"

#include <stdlib.h>
#include <string.h>

/* "Retry requests at high priority" (the seed): a job whose in-process attempts are spent
 * goes once more through the high topic, keeping its deadline and counting its attempts;
 * its own record is then finished. Only when the deadline leaves room for another round. */
int aiq__may_requeue(const aiq_task_t *t)
{
    const aiq_config_t *cfg = t->pl->d.cfg;
    return cfg->requeue && t->job->attempt == 0 &&
           t->deadline_ms - aiq_now_ms() > 2 * cfg->retry_max_ms;
}

/* The support information of an error answer (the operation's, persona's or generic). */
char *aiq__support_text(const aiq_task_t *t, const aiq_op_t *op)
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
void aiq__task_fallback(aiq_task_t *t)
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
        aiq__task_answer(t, AIQ_RESULT_DEGRADED, fallback, text);
    else
        aiq__task_answer(t, AIQ_RESULT_FAILED, "error", aiq__support_text(t, op));
    aiq_metrics_count(pl->d.metrics, AIQ_METRICS_FALLBACK);
    TLOG(t, AIQ_LOG_WARN, "answered by fallback %s after %d attempt(s): %s: %s (request id %s)",
         t->fallback, t->attempts, t->error_kind, t->error_msg,
         t->request_id[0] ? t->request_id : "none");
    aiq__task_publish_result(t);
}
