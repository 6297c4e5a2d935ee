/* aimd.h — an adaptive limit on a provider's in-flight calls: additive increase while calls
 * succeed at full use, multiplicative decrease on throttling, overload or rising latency. Pure. */
#ifndef AIQ_AIMD_H
#define AIQ_AIMD_H

#include <stdbool.h>
#include <stdint.h>

#define AIQ_AIMD_DECREASE          0.7  /* limit factor on a throttle */
#define AIQ_AIMD_GENTLE_DECREASE   0.9  /* limit factor on high latency or a 5xx/timeout */
#define AIQ_AIMD_LATENCY_TOLERANCE 2.0  /* median latency above baseline times this is overload */
#define AIQ_AIMD_COOLDOWN_MS       100  /* minimum time between two decreases */
#define AIQ_AIMD_UTILIZATION       0.8  /* grow only while in-flight >= limit times this */
#define AIQ_AIMD_WINDOW            64   /* latency samples whose median is the current latency */
#define AIQ_AIMD_EVERY             8    /* the median is recomputed every this many samples */
#define AIQ_AIMD_BASE_ALPHA        0.01 /* baseline EWMA of the median, per sample: ~100 calls */
#define AIQ_AIMD_WARMUP            AIQ_AIMD_WINDOW /* samples before the signal is trusted */

/* A value <= 0 (or, for decrease, >= 1; for latency_tolerance, <= 1) takes the default:
 * min 1, max = min, initial = min, the factors and cooldown above. */
typedef struct aiq_aimd_conf {
    int min, max, initial;
    double decrease;          /* factor on a throttle, in (0, 1) */
    double latency_tolerance; /* > 1 */
    int64_t cooldown_ms;
} aiq_aimd_conf_t;

/* Fields are private to aimd.c; public only so callers can embed the struct. Not thread-safe:
 * one owner (the worker's loop thread) calls everything. */
typedef struct aiq_aimd {
    aiq_aimd_conf_t conf;
    double limit;   /* in [min, max]; fractional so +1/limit steps add up */
    double fast_ms; /* median of the last AIQ_AIMD_WINDOW latencies, once samples > 0 */
    double base_ms; /* slow EWMA of fast_ms: the latency an unloaded provider gives */
    int32_t window[AIQ_AIMD_WINDOW]; /* ring of the latest latencies, ms */
    int64_t samples;                 /* successes seen, saturating */
    int64_t last_decrease_ms;        /* valid when decreased */
    bool decreased;
} aiq_aimd_t;

void aiq_aimd_init(aiq_aimd_t *a, const aiq_aimd_conf_t *c);

/* The current limit on in-flight calls, in [min, max]. */
int aiq_aimd_limit(const aiq_aimd_t *a);

/* A call succeeded after latency_ms; inflight is the number of calls in flight when it
 * completed, counting itself. Grows the limit by 1/limit (one per window of `limit` successes)
 * only when inflight >= AIQ_AIMD_UTILIZATION * limit, so an idle pool does not grow without
 * bound. Feeds the latency signal: once AIQ_AIMD_WARMUP calls are in, a median of the last
 * AIQ_AIMD_WINDOW latencies above (baseline + 1 ms) times the tolerance decreases the limit by
 * AIQ_AIMD_GENTLE_DECREASE instead (same cooldown as throttles). A median, not a mean: model
 * latency is heavy-tailed (log-normal, p99 ten times p50), and a mean of a few samples jumps
 * past twice its baseline on every slow answer although nothing is overloaded; the median of
 * 64 moves by more than 2x only when most calls got slower. The baseline keeps learning, so a
 * lasting latency shift that load does not explain is absorbed after a few hundred calls
 * rather than pinning the limit at min. now_ms: any monotonic clock, in ms. */
void aiq_aimd_on_success(aiq_aimd_t *a, int64_t latency_ms, int inflight, int64_t now_ms);

/* The provider throttled a call (429): limit *= decrease, at most once per cooldown, where
 * the cooldown is max(cooldown_ms, median latency): the calls already in flight were sent
 * under the old limit, so their throttles are not new evidence. */
void aiq_aimd_on_throttle(aiq_aimd_t *a, int64_t now_ms);

/* A 5xx or timeout. Weaker evidence of overload than a throttle (it may be a model error or
 * an outage that fewer calls will not cure, and the breaker handles outages), so it decreases
 * gently (AIQ_AIMD_GENTLE_DECREASE) under the same shared cooldown, and never grows the limit.
 * Final errors (4xx other than 429) say nothing about load: do not report them. */
void aiq_aimd_on_failure(aiq_aimd_t *a, int64_t now_ms);

#endif
