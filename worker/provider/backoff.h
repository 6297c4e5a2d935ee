/* backoff.h — how long to wait before retrying a provider call (capped exponential backoff with
 * full jitter, server hints) and whether to retry at all (a retry budget). Pure, no I/O. */
#ifndef AIQ_BACKOFF_H
#define AIQ_BACKOFF_H

#include <stdbool.h>
#include <stdint.h>

/* A server hint (Retry-After, x-amz-retry-after) above this is cut to it: a hint of an hour
 * must not park a job that has a 45 s deadline, and the caller's deadline check decides. */
#define AIQ_BACKOFF_HINT_MAX_MS 60000

typedef struct aiq_backoff_conf {
    int64_t base_ms;           /* ceiling of the first retry's delay */
    int64_t cap_ms;            /* no drawn delay exceeds this */
    int64_t throttle_floor_ms; /* a throttled retry waits at least this (cut to cap_ms) */
} aiq_backoff_conf_t;

/* Delay in ms before retry number `retry` (1 = first retry; values below 1 count as 1).
 * Full jitter: uniform in [0, ceil] with ceil = min(cap, base * 2^(retry-1)), drawn from rnd,
 * a uniform 64-bit random value the caller supplies (so the function stays pure and tests can
 * pin it). Overflow-safe for any retry number; negative conf values count as 0.
 * throttled: uniform in [floor, max(ceil, 2 * floor)] with floor = min(throttle_floor, cap),
 * upper end cut to cap. Throttled retries then never collapse to ~0 and, unlike
 * max(floor, draw), do not all land on the floor at the same instant.
 * retry_after_ms >= 0 is a server hint: a lower bound on the result, itself cut to
 * AIQ_BACKOFF_HINT_MAX_MS; it may exceed cap_ms (the server knows its own recovery better).
 * Pass -1 when there is no hint. Returns a value in [0, max(cap, AIQ_BACKOFF_HINT_MAX_MS)]. */
int64_t aiq_backoff_delay(const aiq_backoff_conf_t *c, int retry, bool throttled,
                          int64_t retry_after_ms, uint64_t rnd);

/* The server's hint in ms from the response headers (either may be NULL):
 * x-amz-retry-after (integer milliseconds) wins when valid, as the more precise one;
 * otherwise Retry-After, either delta-seconds or an IMF-fixdate HTTP date
 * ("Sun, 06 Nov 1994 08:49:37 GMT") taken relative to now_ms (wall clock, epoch ms), a date in
 * the past giving 0. The obsolete RFC 850 and asctime date forms are not accepted.
 * Returns ms >= 0 (huge values saturate at INT32_MAX seconds), or -1 when absent or
 * unparseable. */
int64_t aiq_backoff_retry_after_ms(const char *retry_after, const char *amz_retry_after_ms,
                                   int64_t now_ms);

/* Retry budget, after the AWS SDK "standard" retry mode: a token bucket shared by the calls of
 * one provider, so an outage does not turn every failing call into a retry storm. A retry
 * costs retry_cost tokens (timeout_cost after a timeout or connection error, which are more
 * likely to mean the provider is down); a successful call gives back what its retry cost, or
 * one token when it needed no retry, never above capacity. Fields are private to backoff.c;
 * the struct is public only so that callers can embed it. Single-threaded: the caller's loop. */
#define AIQ_RETRY_BUDGET_CAPACITY     500
#define AIQ_RETRY_BUDGET_RETRY_COST   5
#define AIQ_RETRY_BUDGET_TIMEOUT_COST 10

typedef struct aiq_retry_budget {
    int tokens;
    int capacity, retry_cost, timeout_cost;
} aiq_retry_budget_t;

/* Starts full. A value <= 0 takes the default above. */
void aiq_retry_budget_init(aiq_retry_budget_t *b, int capacity, int retry_cost, int timeout_cost);

/* Takes the cost of one retry. Returns true and sets *cost_out (may be NULL) to what was taken;
 * false when the budget cannot pay (nothing taken, *cost_out = 0): do not retry. */
bool aiq_retry_budget_take(aiq_retry_budget_t *b, bool timeout_like, int *cost_out);

/* A call succeeded. refund_cost: the *cost_out of the retry that led to this success, or
 * <= 0 when the call needed no retry (then one token comes back). Never exceeds capacity. */
void aiq_retry_budget_success(aiq_retry_budget_t *b, int refund_cost);

int aiq_retry_budget_tokens(const aiq_retry_budget_t *b);

#endif
