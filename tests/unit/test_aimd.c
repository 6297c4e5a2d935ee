#include "aimd.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static uint64_t next_rnd(uint64_t *s)
{
    uint64_t x = (*s += 0x9e3779b97f4a7c15ULL);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* A log-normal latency in ms with the given median and p99 (Box-Muller on next_rnd). */
static int64_t lognormal_ms(uint64_t *s, double p50, double p99)
{
    double u1 = ((double)(next_rnd(s) >> 11) + 1.0) / 9007199254740993.0; /* (0, 1] */
    double u2 = (double)(next_rnd(s) >> 11) / 9007199254740992.0;
    double z = sqrt(-2.0 * log(u1)) * cos(2.0 * 3.141592653589793 * u2);
    double sigma = log(p99 / p50) / 2.326;
    return (int64_t)llround(p50 * exp(sigma * z));
}

static void aimd_defaults_and_clamping(void **state)
{
    (void)state;
    aiq_aimd_t a;
    aiq_aimd_init(&a, &(aiq_aimd_conf_t){0});
    assert_int_equal(aiq_aimd_limit(&a), 1);
    assert_int_equal(a.conf.max, 1);
    assert_int_equal(a.conf.cooldown_ms, AIQ_AIMD_COOLDOWN_MS);
    assert_true(a.conf.decrease == AIQ_AIMD_DECREASE);
    aiq_aimd_init(&a, &(aiq_aimd_conf_t){.min = 5, .max = 3, .initial = 100, .decrease = 1.5});
    assert_int_equal(a.conf.max, 5);
    assert_int_equal(aiq_aimd_limit(&a), 5);
    assert_true(a.conf.decrease == AIQ_AIMD_DECREASE);
    aiq_aimd_init(&a, &(aiq_aimd_conf_t){.min = 2, .max = 50, .initial = 1});
    assert_int_equal(aiq_aimd_limit(&a), 2);
    aiq_aimd_init(&a, &(aiq_aimd_conf_t){.min = 2, .max = 50, .initial = 80});
    assert_int_equal(aiq_aimd_limit(&a), 50);
}

/* At full use the limit grows by about one per `limit` successes, up to max and no further. */
static void aimd_grows_to_max_at_full_use(void **state)
{
    (void)state;
    aiq_aimd_t a;
    int64_t now = 0;
    aiq_aimd_init(&a, &(aiq_aimd_conf_t){.min = 1, .max = 40, .initial = 10});
    /* From 10 to 20 takes about sum(10..19) = 145 successes. */
    int n = 0;
    while (aiq_aimd_limit(&a) < 20) {
        aiq_aimd_on_success(&a, 20, aiq_aimd_limit(&a), now++);
        n++;
    }
    assert_in_range(n, 130, 160);
    for (int i = 0; i < 5000; i++)
        aiq_aimd_on_success(&a, 20, aiq_aimd_limit(&a), now++);
    assert_int_equal(aiq_aimd_limit(&a), 40);
    assert_true(a.limit <= 40.0);
}

/* An idle or lightly used pool does not grow, however many calls succeed. */
static void aimd_does_not_grow_when_idle(void **state)
{
    (void)state;
    aiq_aimd_t a;
    aiq_aimd_init(&a, &(aiq_aimd_conf_t){.min = 1, .max = 1000, .initial = 20});
    for (int i = 0; i < 10000; i++)
        aiq_aimd_on_success(&a, 20, 1 + i % 15, i); /* at most 15 of 20: below 80 % */
    assert_int_equal(aiq_aimd_limit(&a), 20);
    aiq_aimd_on_success(&a, 20, 16, 10001); /* 16 = 80 %: used */
    assert_true(a.limit > 20.0);
}

/* A storm leaves the limit fractional (50 * 0.7^8 = 2.88: two slots); at full use of those
 * slots it must grow again, not stay below the utilisation bar for ever. */
static void aimd_grows_back_from_a_fractional_limit(void **state)
{
    (void)state;
    aiq_aimd_t a;
    aiq_aimd_init(&a, &(aiq_aimd_conf_t){.min = 1, .max = 50, .initial = 50, .cooldown_ms = 100});
    for (int i = 0; i < 8; i++)
        aiq_aimd_on_throttle(&a, 1000 * (int64_t)(i + 1));
    assert_int_equal(aiq_aimd_limit(&a), 2);
    assert_true(a.limit > 2.5 && a.limit < 3.0);
    int64_t now = 10000;
    for (int i = 0; i < 600; i++)
        aiq_aimd_on_success(&a, 20, aiq_aimd_limit(&a), now++);
    assert_true(aiq_aimd_limit(&a) >= 20);
}

/* A throttle takes the limit down by the factor, once per cooldown however many arrive. */
static void aimd_throttle_decreases_once_per_cooldown(void **state)
{
    (void)state;
    aiq_aimd_t a;
    aiq_aimd_init(&a, &(aiq_aimd_conf_t){.min = 2, .max = 200, .initial = 100, .cooldown_ms = 100});
    aiq_aimd_on_throttle(&a, 1000);
    assert_int_equal(aiq_aimd_limit(&a), 70);
    for (int i = 0; i < 50; i++) /* a burst of 429s from calls sent under the old limit */
        aiq_aimd_on_throttle(&a, 1000 + i);
    assert_int_equal(aiq_aimd_limit(&a), 70);
    aiq_aimd_on_throttle(&a, 1099);
    assert_int_equal(aiq_aimd_limit(&a), 70);
    aiq_aimd_on_throttle(&a, 1100);
    assert_int_equal(aiq_aimd_limit(&a), 49);
    /* 5xx/timeouts decrease gently, under the same cooldown. */
    aiq_aimd_on_failure(&a, 1150);
    assert_int_equal(aiq_aimd_limit(&a), 49);
    aiq_aimd_on_failure(&a, 1200);
    assert_int_equal(aiq_aimd_limit(&a), 44);
    /* Never below min. */
    for (int i = 0; i < 100; i++)
        aiq_aimd_on_throttle(&a, 1300 + 100 * i);
    assert_int_equal(aiq_aimd_limit(&a), 2);
    assert_true(a.limit >= 2.0);
}

/* The cooldown stretches to one round trip when calls are slower than cooldown_ms. */
static void aimd_cooldown_is_at_least_one_rtt(void **state)
{
    (void)state;
    aiq_aimd_t a;
    aiq_aimd_init(&a, &(aiq_aimd_conf_t){.min = 1, .max = 100, .initial = 100, .cooldown_ms = 50});
    for (int i = 0; i < 10; i++)
        aiq_aimd_on_success(&a, 400, 100, i);
    aiq_aimd_on_throttle(&a, 1000);
    assert_int_equal(aiq_aimd_limit(&a), 70);
    aiq_aimd_on_throttle(&a, 1300);
    assert_int_equal(aiq_aimd_limit(&a), 70);
    aiq_aimd_on_throttle(&a, 1400);
    assert_int_equal(aiq_aimd_limit(&a), 49);
}

/* Latency well above its baseline shrinks the limit even without throttles; steady latency
 * does not. */
static void aimd_latency_growth_shrinks(void **state)
{
    (void)state;
    aiq_aimd_t a;
    int64_t now = 0;
    uint64_t seed = 5;
    aiq_aimd_init(&a, &(aiq_aimd_conf_t){.min = 4, .max = 64, .initial = 64, .cooldown_ms = 100});
    for (int i = 0; i < 500; i++, now += 2)
        aiq_aimd_on_success(&a, 18 + (int64_t)(next_rnd(&seed) % 5), 64, now);
    assert_int_equal(aiq_aimd_limit(&a), 64);
    for (int i = 0; i < 60; i++, now += 10)
        aiq_aimd_on_success(&a, 100, 64, now);
    int shrunk = aiq_aimd_limit(&a);
    assert_true(shrunk < 64 * 0.8);
    assert_true(shrunk >= 4);
    /* A lasting shift is absorbed by the baseline: the limit stops falling and grows again. */
    for (int i = 0; i < 3000; i++, now += 10)
        aiq_aimd_on_success(&a, 100, aiq_aimd_limit(&a), now);
    assert_true(aiq_aimd_limit(&a) > shrunk);
}

/* Regression (bench littles, log-normal p50 100 ms / p99 1 s): a heavy-tailed but stationary
 * latency is not overload. An EWMA of the last ~5 calls crossed twice its baseline on every
 * slow answer and held C = 100 at ~60 % of its bound; the median of a window does not move. */
static void aimd_heavy_tail_stationary_keeps_limit(void **state)
{
    (void)state;
    aiq_aimd_t a;
    int64_t now = 0;
    uint64_t seed = 17;
    int lowest = 100;
    aiq_aimd_init(&a, &(aiq_aimd_conf_t){.min = 1, .max = 100, .initial = 100, .cooldown_ms = 1});
    for (int i = 0; i < 50000; i++, now += 2) {
        aiq_aimd_on_success(&a, lognormal_ms(&seed, 100, 1000), aiq_aimd_limit(&a), now);
        lowest = aiq_aimd_limit(&a) < lowest ? aiq_aimd_limit(&a) : lowest;
    }
    assert_int_equal(lowest, 100);
    assert_in_range((int64_t)a.fast_ms, 70, 140); /* the median tracks p50, not the mean */
}

/* The same tail with every call three times slower is overload: the limit shrinks within a
 * few hundred calls (gently), and a throttle still takes it down by the full factor. */
static void aimd_heavy_tail_real_rise_shrinks(void **state)
{
    (void)state;
    aiq_aimd_t a;
    int64_t now = 0;
    uint64_t seed = 23;
    aiq_aimd_init(&a, &(aiq_aimd_conf_t){.min = 1, .max = 100, .initial = 100, .cooldown_ms = 1});
    for (int i = 0; i < 5000; i++, now += 2)
        aiq_aimd_on_success(&a, lognormal_ms(&seed, 100, 1000), 100, now);
    assert_int_equal(aiq_aimd_limit(&a), 100);
    int n = 0;
    while (aiq_aimd_limit(&a) == 100 && n < 400) {
        aiq_aimd_on_success(&a, lognormal_ms(&seed, 300, 3000), 100, now);
        now += 5;
        n++;
    }
    assert_true(n < 400);
    int shrunk = aiq_aimd_limit(&a);
    assert_int_equal(shrunk, 90);
    aiq_aimd_on_throttle(&a, now + 100000);
    assert_in_range(aiq_aimd_limit(&a), 62, 63); /* 90 x 0.7, rounded down */
    printf("3x rise: first decrease after %d calls\n", n);
}

/* Closed loop: a server that throttles every call beyond C = 50 in flight, a client that keeps
 * `limit` calls in flight. After warm-up the limit stays within [0.5C, 1.5C]. */
#define LOOP_C     50
#define LOOP_CALLS 200
static void aimd_closed_loop_settles_near_capacity(void **state)
{
    (void)state;
    struct call {
        int64_t done_at;
        bool throttled;
    } calls[LOOP_CALLS];
    int n = 0, admitted = 0, completed = 0, throttles = 0, lo = 1 << 30, hi = 0;
    double sum = 0;
    uint64_t seed = 9;
    aiq_aimd_t a;
    aiq_aimd_init(&a, &(aiq_aimd_conf_t){.min = 1, .max = 150, .initial = 5});

    for (int64_t now = 0; completed < 6000; now++) {
        for (int i = 0; i < n;) {
            if (calls[i].done_at > now) {
                i++;
                continue;
            }
            if (calls[i].throttled) {
                aiq_aimd_on_throttle(&a, now);
                throttles++;
            } else {
                aiq_aimd_on_success(&a, 20, n, now);
                admitted--;
            }
            calls[i] = calls[--n];
            if (++completed > 2000) {
                int l = aiq_aimd_limit(&a);
                lo = l < lo ? l : lo;
                hi = l > hi ? l : hi;
                sum += l;
            }
        }
        while (n < aiq_aimd_limit(&a) && n < LOOP_CALLS) {
            bool throttled = admitted >= LOOP_C;
            calls[n++] = (struct call){now + (throttled ? 2 : 15 + (int64_t)(next_rnd(&seed) % 10)),
                                       throttled};
            admitted += !throttled;
        }
    }
    double mean = sum / 4000;
    printf("closed loop: limit in [%d, %d], mean %.1f, %d throttles\n", lo, hi, mean, throttles);
    assert_true(lo >= LOOP_C / 2);
    assert_true(hi <= LOOP_C * 3 / 2);
    assert_true(mean >= LOOP_C * 0.6 && mean <= LOOP_C * 1.2);
    assert_true(throttles > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(aimd_defaults_and_clamping),
        cmocka_unit_test(aimd_grows_to_max_at_full_use),
        cmocka_unit_test(aimd_does_not_grow_when_idle),
        cmocka_unit_test(aimd_grows_back_from_a_fractional_limit),
        cmocka_unit_test(aimd_throttle_decreases_once_per_cooldown),
        cmocka_unit_test(aimd_cooldown_is_at_least_one_rtt),
        cmocka_unit_test(aimd_latency_growth_shrinks),
        cmocka_unit_test(aimd_heavy_tail_stationary_keeps_limit),
        cmocka_unit_test(aimd_heavy_tail_real_rise_shrinks),
        cmocka_unit_test(aimd_closed_loop_settles_near_capacity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
