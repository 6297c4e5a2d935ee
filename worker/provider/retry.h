/* retry.h — the one place that decides what follows a failed model call: retry after N ms,
 * or end with a reason. Pure apart from the retry budget it is handed; no I/O, no clock. */
#ifndef AIQ_RETRY_H
#define AIQ_RETRY_H

#include "backoff.h"
#include "bedrock.h"
#include "provider.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct aiq_retry_policy {
    int max_attempts;        /* non-throttled attempts at most (worker.max_attempts) */
    int model_error_retries; /* 408/424 answers tolerated (worker.model_error_retries) */
    aiq_backoff_conf_t backoff;
} aiq_retry_policy_t;

/* One failed attempt, as the provider saw it. The counts include this attempt. */
typedef struct aiq_retry_input {
    aiq_bedrock_class_t cls;
    int attempts;      /* model calls made */
    int throttles;     /* of which throttled */
    int model_errors;  /* of which 408/424 */
    bool timeout_like; /* transport failure or timeout: costs the budget more */
    int64_t hint_ms;   /* server's Retry-After / x-amz-retry-after, -1 when none */
    int64_t now_ms, deadline_ms;
    uint64_t rnd; /* uniform random value for the jitter */
} aiq_retry_input_t;

typedef struct aiq_retry_decision {
    bool retry;         /* true: wait wait_ms, then attempt again */
    aiq_call_end_t end; /* !retry: how the call ends */
    int64_t wait_ms;
    int cost; /* budget tokens taken for this retry (refunded on success or when cut) */
} aiq_retry_decision_t;

/* Decides what follows a failed attempt:
 *  - FINAL class ends FINAL; a model error past model_error_retries ends EXHAUSTED;
 *  - non-throttled attempts at max_attempts end EXHAUSTED (throttled ones do not count:
 *    throttling is back-pressure, not failure);
 *  - a retry takes budget tokens; an empty budget ends NO_BUDGET, except for throttled
 *    calls, which wait anyway (the adaptive limit bounds them);
 *  - the backoff delay (full jitter, server hint as lower bound) must end before the
 *    deadline, else the call ends DEADLINE and the tokens go back.
 * budget is the caller's (borrowed, changed). Any thread that owns the budget. */
aiq_retry_decision_t aiq_retry_decide(const aiq_retry_policy_t *policy, aiq_retry_budget_t *budget,
                                      const aiq_retry_input_t *in);

#endif
