#include "aimd.h"

#include <string.h>

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

/* The k-th smallest of v[0..n-1] (0-based); reorders v. Iterative quickselect; n is at most
 * AIQ_AIMD_WINDOW, so the cost is small and bounded. */
static int32_t kth_smallest(int32_t *v, int n, int k)
{
    int lo = 0, hi = n - 1;

    while (lo < hi) {
        int32_t pivot = v[(lo + hi) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i <= j) {
                int32_t t = v[i];
                v[i++] = v[j];
                v[j--] = t;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            break;
    }
    return v[k];
}

static double window_median(const aiq_aimd_t *a)
{
    int32_t tmp[AIQ_AIMD_WINDOW];
    int n = a->samples < AIQ_AIMD_WINDOW ? (int)a->samples : AIQ_AIMD_WINDOW;

    memcpy(tmp, a->window, (size_t)n * sizeof(tmp[0]));
    return (double)kth_smallest(tmp, n, n / 2);
}

static void observe_latency(aiq_aimd_t *a, int64_t latency_ms)
{
    int64_t x = latency_ms < 0 ? 0 : latency_ms > INT32_MAX ? INT32_MAX : latency_ms;

    a->window[a->samples % AIQ_AIMD_WINDOW] = (int32_t)x;
    if (a->samples < INT64_MAX)
        a->samples++;
    /* A median of 64 moves slowly, so recomputing it every few samples loses nothing. */
    if (a->samples <= AIQ_AIMD_WINDOW || a->samples % AIQ_AIMD_EVERY == 0)
        a->fast_ms = window_median(a);
    /* Until the window is full the baseline is the median itself: seeding it from the first
     * sample would start it at whatever end of the tail that sample came from. */
    if (a->samples <= AIQ_AIMD_WARMUP)
        a->base_ms = a->fast_ms;
    else
        a->base_ms += AIQ_AIMD_BASE_ALPHA * (a->fast_ms - a->base_ms);
}

void aiq_aimd_on_success(aiq_aimd_t *a, int64_t latency_ms, int inflight, int64_t now_ms)
{
    observe_latency(a, latency_ms);
    /* The +1 ms keeps a sub-millisecond baseline from making scheduling noise look like
     * overload. */
    if (a->samples > AIQ_AIMD_WARMUP &&
        a->fast_ms > (a->base_ms + 1.0) * a->conf.latency_tolerance) {
        decrease(a, AIQ_AIMD_GENTLE_DECREASE, now_ms);
        return;
    }
    /* Use is measured against the slots the limit really grants, (int)limit: at most that
     * many calls are ever in flight, so against the fractional limit a limit left between
     * 1.25 and 2, 2.5 and 3 or 3.75 and 4 (as a throttling storm leaves it) could never be
     * "fully used" and would never grow again. */
    if ((double)inflight < (double)aiq_aimd_limit(a) * AIQ_AIMD_UTILIZATION)
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
