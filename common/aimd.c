#include "aimd.h"

void aiq_aimd_init(aiq_aimd_t *a, const aiq_aimd_conf_t *c)
{
    aiq_aimd_conf_t k = *c;

    k.min = k.min > 0 ? k.min : 1;
    k.max = k.max >= k.min ? k.max : k.min;
    k.initial = k.initial <= 0 ? k.min : k.initial < k.min ? k.min : k.initial;
    k.initial = k.initial > k.max ? k.max : k.initial;
    k.decrease = k.decrease > 0 && k.decrease < 1 ? k.decrease : AIQ_AIMD_DECREASE;
    k.latency_tolerance =
        k.latency_tolerance > 1 ? k.latency_tolerance : AIQ_AIMD_LATENCY_TOLERANCE;
    k.cooldown_ms = k.cooldown_ms > 0 ? k.cooldown_ms : AIQ_AIMD_COOLDOWN_MS;
    *a = (aiq_aimd_t){.conf = k, .limit = k.initial};
}

int aiq_aimd_limit(const aiq_aimd_t *a)
{
    return (int)a->limit;
}

/* Multiplies the limit by factor unless a decrease happened within the cooldown. */
static void decrease(aiq_aimd_t *a, double factor, int64_t now_ms)
{
    int64_t cooldown = a->conf.cooldown_ms;

    if (a->samples > 0 && a->fast_ms > (double)cooldown)
        cooldown = (int64_t)a->fast_ms;
    if (a->decreased && now_ms - a->last_decrease_ms < cooldown)
        return;
    a->limit *= factor;
    if (a->limit < a->conf.min)
        a->limit = a->conf.min;
    a->last_decrease_ms = now_ms;
    a->decreased = true;
}

static void observe_latency(aiq_aimd_t *a, int64_t latency_ms)
{
    double x = latency_ms > 0 ? (double)latency_ms : 0.0;

    if (a->samples == 0) {
        a->fast_ms = a->base_ms = x;
    } else {
        a->fast_ms += AIQ_AIMD_FAST_ALPHA * (x - a->fast_ms);
        a->base_ms += AIQ_AIMD_BASE_ALPHA * (x - a->base_ms);
    }
    if (a->samples < INT64_MAX)
        a->samples++;
}

void aiq_aimd_on_success(aiq_aimd_t *a, int64_t latency_ms, int inflight, int64_t now_ms)
{
    observe_latency(a, latency_ms);
    /* The +1 ms keeps a sub-millisecond baseline from making scheduling noise look like
     * overload. */
    if (a->samples >= AIQ_AIMD_WARMUP &&
        a->fast_ms > (a->base_ms + 1.0) * a->conf.latency_tolerance) {
        decrease(a, AIQ_AIMD_GENTLE_DECREASE, now_ms);
        return;
    }
    if ((double)inflight < a->limit * AIQ_AIMD_UTILIZATION)
        return;
    a->limit += 1.0 / a->limit;
    if (a->limit > a->conf.max)
        a->limit = a->conf.max;
}

void aiq_aimd_on_throttle(aiq_aimd_t *a, int64_t now_ms)
{
    decrease(a, a->conf.decrease, now_ms);
}

void aiq_aimd_on_failure(aiq_aimd_t *a, int64_t now_ms)
{
    decrease(a, AIQ_AIMD_GENTLE_DECREASE, now_ms);
}
