#include "retry.h"

static aiq_retry_decision_t end_with(aiq_call_end_t end)
{
    return (aiq_retry_decision_t){.retry = false, .end = end};
}

aiq_retry_decision_t aiq_retry_decide(const aiq_retry_policy_t *policy, aiq_retry_budget_t *budget,
                                      const aiq_retry_input_t *in)
{
    if (in->cls == AIQ_BEDROCK_FINAL)
        return end_with(AIQ_CALL_FINAL);
    if (in->cls == AIQ_BEDROCK_MODEL_ERROR && in->model_errors > policy->model_error_retries)
        return end_with(AIQ_CALL_EXHAUSTED);
    bool throttled = in->cls == AIQ_BEDROCK_THROTTLED;
    if (!throttled && in->attempts - in->throttles >= policy->max_attempts)
        return end_with(AIQ_CALL_EXHAUSTED);
    int cost = 0;
    if (!aiq_retry_budget_take(budget, in->timeout_like, &cost) && !throttled)
        return end_with(AIQ_CALL_NO_BUDGET);
    int64_t wait =
        aiq_backoff_delay(&policy->backoff, in->attempts, throttled, in->hint_ms, in->rnd);
    if (in->now_ms + wait >= in->deadline_ms) {
        aiq_retry_budget_success(budget, cost); /* not spent after all */
        return end_with(AIQ_CALL_DEADLINE);
    }
    return (aiq_retry_decision_t){.retry = true, .wait_ms = wait, .cost = cost};
}
