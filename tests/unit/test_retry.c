/* The retry decision, table-driven: each row is one failed attempt and what must follow. */
#include "retry.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#define NOW      1000000
#define RETRY    (-1) /* expected: a retry, not an end */
#define NO_LIMIT INT64_MAX

typedef struct row {
    const char *name;
    aiq_bedrock_class_t cls;
    int attempts, throttles, model_errors;
    bool timeout_like;
    int64_t hint_ms, deadline_in_ms;
    int budget_tokens; /* left in the bucket before the decision */
    int expect_end;    /* aiq_call_end_t, or RETRY */
    int64_t wait_min, wait_max;
    int expect_tokens_after;
} row_t;

static const aiq_retry_policy_t policy = {
    .max_attempts = 3,
    .model_error_retries = 1,
    .backoff = {.base_ms = 100, .cap_ms = 2000, .throttle_floor_ms = 500},
};

/* budget: capacity 500, retry 5, timeout 10 */
static const row_t rows[] = {
    {"final is never retried", AIQ_BEDROCK_FINAL, 1, 0, 0, false, -1, 60000, 500, AIQ_CALL_FINAL, 0,
     0, 500},
    {"first 5xx retries within base", AIQ_BEDROCK_RETRY, 1, 0, 0, false, -1, 60000, 500, RETRY, 0,
     100, 495},
    {"second 5xx doubles the ceiling", AIQ_BEDROCK_RETRY, 2, 0, 0, false, -1, 60000, 500, RETRY, 0,
     200, 495},
    {"timeouts cost more", AIQ_BEDROCK_RETRY, 1, 0, 0, true, -1, 60000, 500, RETRY, 0, 100, 490},
    {"attempts spent", AIQ_BEDROCK_RETRY, 3, 0, 0, false, -1, 60000, 500, AIQ_CALL_EXHAUSTED, 0, 0,
     500},
    {"throttles do not use up attempts", AIQ_BEDROCK_THROTTLED, 5, 3, 0, false, -1, 60000, 500,
     RETRY, 500, 2000, 495},
    {"throttled waits the floor at least", AIQ_BEDROCK_THROTTLED, 1, 1, 0, false, -1, 60000, 500,
     RETRY, 500, 1000, 495},
    {"empty budget ends the call", AIQ_BEDROCK_RETRY, 1, 0, 0, false, -1, 60000, 4,
     AIQ_CALL_NO_BUDGET, 0, 0, 4},
    {"empty budget does not stop a throttled call", AIQ_BEDROCK_THROTTLED, 1, 1, 0, false, -1,
     60000, 4, RETRY, 500, 1000, 4},
    {"one model error is tolerated", AIQ_BEDROCK_MODEL_ERROR, 1, 0, 1, false, -1, 60000, 500, RETRY,
     0, 100, 495},
    {"the second model error ends it", AIQ_BEDROCK_MODEL_ERROR, 2, 0, 2, false, -1, 60000, 500,
     AIQ_CALL_EXHAUSTED, 0, 0, 500},
    {"a server hint is a lower bound", AIQ_BEDROCK_RETRY, 1, 0, 0, false, 1500, 60000, 500, RETRY,
     1500, 1500, 495},
    {"no room before the deadline: tokens go back", AIQ_BEDROCK_RETRY, 1, 0, 0, false, 1500, 1000,
     500, AIQ_CALL_DEADLINE, 0, 0, 500},
    {"deadline already passed", AIQ_BEDROCK_THROTTLED, 1, 1, 0, false, -1, 0, 500,
     AIQ_CALL_DEADLINE, 0, 0, 500},
};

static void retry_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const row_t *r = &rows[i];
        for (uint64_t rnd = 0; rnd < 4; rnd++) {
            aiq_retry_budget_t b;
            aiq_retry_budget_init(&b, 500, 5, 10);
            aiq_retry_budget_take(&b, false, NULL); /* drain to the row's level */
            b.tokens = r->budget_tokens;
            aiq_retry_input_t in = {
                .cls = r->cls,
                .attempts = r->attempts,
                .throttles = r->throttles,
                .model_errors = r->model_errors,
                .timeout_like = r->timeout_like,
                .hint_ms = r->hint_ms,
                .now_ms = NOW,
                .deadline_ms = NOW + r->deadline_in_ms,
                .rnd = rnd * 0x5555555555555555ULL,
            };
            aiq_retry_decision_t d = aiq_retry_decide(&policy, &b, &in);
            if (r->expect_end == RETRY) {
                if (!d.retry)
                    fail_msg("%s: ended %s, expected a retry", r->name, aiq_call_end_name(d.end));
                if (d.wait_ms < r->wait_min || d.wait_ms > r->wait_max)
                    fail_msg("%s: waits %lld ms, expected %lld..%lld", r->name,
                             (long long)d.wait_ms, (long long)r->wait_min, (long long)r->wait_max);
            } else if (d.retry || (int)d.end != r->expect_end) {
                fail_msg("%s: %s, expected end %s", r->name,
                         d.retry ? "retries" : aiq_call_end_name(d.end),
                         aiq_call_end_name((aiq_call_end_t)r->expect_end));
            }
            if (aiq_retry_budget_tokens(&b) != r->expect_tokens_after)
                fail_msg("%s: %d tokens left, expected %d", r->name, aiq_retry_budget_tokens(&b),
                         r->expect_tokens_after);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(retry_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
