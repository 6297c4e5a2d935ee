#include "backoff.h"

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

static uint64_t next_rnd(uint64_t *s)
{
    uint64_t x = (*s += 0x9e3779b97f4a7c15ULL);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static int64_t expected_ceiling(int64_t base, int64_t cap, int retry)
{
    int64_t c = base;
    for (int i = 1; i < retry && c < cap; i++)
        c *= 2;
    return c < cap ? c : cap;
}

/* Every draw lies in [0, min(cap, base*2^(n-1))], and the draws spread over that range. */
static void backoff_full_jitter_bounds(void **state)
{
    (void)state;
    aiq_backoff_conf_t c = {.base_ms = 100, .cap_ms = 20000, .throttle_floor_ms = 500};
    uint64_t seed = 1;
    for (int retry = 1; retry <= 20; retry++) {
        int64_t top = expected_ceiling(100, 20000, retry), lo = INT64_MAX, hi = -1;
        for (int i = 0; i < 10000; i++) {
            int64_t d = aiq_backoff_delay(&c, retry, false, -1, next_rnd(&seed));
            assert_in_range(d, 0, top);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        assert_true(lo <= top / 50);
        assert_true(hi >= top - top / 50);
    }
    assert_int_equal(aiq_backoff_delay(&c, 3, false, -1, 0), 0);
    assert_in_range(aiq_backoff_delay(&c, 3, false, -1, UINT64_MAX), 0, 400);
    /* Retry numbers below 1 count as the first retry. */
    for (int i = 0; i < 1000; i++)
        assert_in_range(aiq_backoff_delay(&c, i % 3 - 1, false, -1, next_rnd(&seed)), 0, 100);
}

/* Overflow-safe for huge retry numbers and huge bases (UBSan would flag a signed overflow). */
static void backoff_huge_retry_numbers(void **state)
{
    (void)state;
    aiq_backoff_conf_t c = {.base_ms = 250, .cap_ms = 30000};
    aiq_backoff_conf_t big = {.base_ms = INT64_MAX / 3, .cap_ms = INT64_MAX};
    aiq_backoff_conf_t neg = {.base_ms = -5, .cap_ms = -1, .throttle_floor_ms = -7};
    const int retries[] = {31, 32, 62, 63, 64, 65, 1000, INT_MAX};
    uint64_t seed = 7;
    for (size_t r = 0; r < sizeof(retries) / sizeof(retries[0]); r++) {
        for (int i = 0; i < 1000; i++) {
            assert_in_range(aiq_backoff_delay(&c, retries[r], false, -1, next_rnd(&seed)), 0,
                            30000);
            int64_t d = aiq_backoff_delay(&big, retries[r], false, -1, next_rnd(&seed));
            assert_true(d >= 0);
        }
    }
    assert_int_equal(aiq_backoff_delay(&big, INT_MAX, false, -1, UINT64_MAX),
                     INT64_MAX /* UINT64_MAX % 2^63 */);
    assert_int_equal(aiq_backoff_delay(&neg, 5, true, -1, 12345), 0);
}

/* Throttled retries wait at least the floor, spread over [floor, 2*floor] early on, and never
 * beyond cap. */
static void backoff_throttle_floor(void **state)
{
    (void)state;
    aiq_backoff_conf_t c = {.base_ms = 50, .cap_ms = 10000, .throttle_floor_ms = 1000};
    uint64_t seed = 3;
    for (int retry = 1; retry <= 12; retry++) {
        int64_t top = expected_ceiling(50, 10000, retry), hi_bound = top > 2000 ? top : 2000;
        int64_t lo = INT64_MAX, hi = -1;
        for (int i = 0; i < 5000; i++) {
            int64_t d = aiq_backoff_delay(&c, retry, true, -1, next_rnd(&seed));
            assert_in_range(d, 1000, hi_bound);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        assert_true(lo < 1100);              /* reaches down to the floor... */
        assert_true(hi > hi_bound * 9 / 10); /* ...and is jittered, not pinned there */
    }
    /* A floor above cap is cut to cap. */
    aiq_backoff_conf_t tight = {.base_ms = 50, .cap_ms = 300, .throttle_floor_ms = 1000};
    for (int i = 0; i < 100; i++)
        assert_int_equal(aiq_backoff_delay(&tight, 1, true, -1, next_rnd(&seed)), 300);
}

/* A server hint is a lower bound, may exceed cap, and is itself capped at 60 s. */
static void backoff_retry_after_lower_bound(void **state)
{
    (void)state;
    aiq_backoff_conf_t c = {.base_ms = 100, .cap_ms = 2000, .throttle_floor_ms = 200};
    uint64_t seed = 11;
    for (int i = 0; i < 2000; i++) {
        uint64_t r = next_rnd(&seed);
        assert_int_equal(aiq_backoff_delay(&c, 1, false, 3000, r), 3000);
        assert_int_equal(aiq_backoff_delay(&c, 2, true, 600000, r), AIQ_BACKOFF_HINT_MAX_MS);
        int64_t d = aiq_backoff_delay(&c, 4, false, 300, r);
        assert_in_range(d, 300, 800);
        assert_int_equal(d, aiq_backoff_delay(&c, 4, false, -1, r) > 300
                                ? aiq_backoff_delay(&c, 4, false, -1, r)
                                : 300);
    }
    assert_int_equal(aiq_backoff_delay(&c, 1, false, 0, 0), 0);
}

static void backoff_parses_retry_after(void **state)
{
    (void)state;
    const int64_t t0 = 784111777000LL; /* Sun, 06 Nov 1994 08:49:37 GMT */
    assert_int_equal(aiq_backoff_retry_after_ms(NULL, NULL, t0), -1);
    assert_int_equal(aiq_backoff_retry_after_ms("120", NULL, t0), 120000);
    assert_int_equal(aiq_backoff_retry_after_ms(" 5\t", NULL, t0), 5000);
    assert_int_equal(aiq_backoff_retry_after_ms("0", NULL, t0), 0);
    assert_int_equal(aiq_backoff_retry_after_ms("", NULL, t0), -1);
    assert_int_equal(aiq_backoff_retry_after_ms("-3", NULL, t0), -1);
    assert_int_equal(aiq_backoff_retry_after_ms("1.5", NULL, t0), -1);
    assert_int_equal(aiq_backoff_retry_after_ms("12 s", NULL, t0), -1);
    assert_int_equal(aiq_backoff_retry_after_ms("99999999999999999999999", NULL, t0),
                     (int64_t)INT32_MAX * 1000);
    /* x-amz-retry-after is in ms and wins; an invalid one falls back to Retry-After. */
    assert_int_equal(aiq_backoff_retry_after_ms("10", "250", t0), 250);
    assert_int_equal(aiq_backoff_retry_after_ms(NULL, "1500", t0), 1500);
    assert_int_equal(aiq_backoff_retry_after_ms("10", "soon", t0), 10000);
    assert_int_equal(aiq_backoff_retry_after_ms(NULL, "", t0), -1);
}

static void backoff_parses_http_dates(void **state)
{
    (void)state;
    const int64_t t0 = 784111777000LL; /* Sun, 06 Nov 1994 08:49:37 GMT */
    assert_int_equal(aiq_backoff_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", NULL, t0), 0);
    assert_int_equal(aiq_backoff_retry_after_ms("Sun, 06 Nov 1994 08:50:07 GMT", NULL, t0), 30000);
    assert_int_equal(aiq_backoff_retry_after_ms("Sun, 06 Nov 1994 08:50:07 GMT", NULL, t0 + 400),
                     29600);
    assert_int_equal(aiq_backoff_retry_after_ms("Sat, 05 Nov 1994 08:49:37 GMT", NULL, t0), 0);
    assert_int_equal(
        aiq_backoff_retry_after_ms("Tue, 29 Feb 2000 12:00:00 GMT", NULL, 951825600000LL - 2000),
        2000);
    assert_int_equal(
        aiq_backoff_retry_after_ms("Thu, 31 Dec 2099 23:59:59 GMT", NULL, 4102444799000LL - 1), 1);
    assert_int_equal(aiq_backoff_retry_after_ms("Thu, 01 Jan 1970 00:00:10 GMT", NULL, 0), 10000);
    /* Not IMF-fixdate, or not a real date. */
    const char *bad[] = {
        "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
        "Sun, 06 Nov 1994 08:49:37 gmt",  "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 31 Feb 1994 08:49:37 GMT",  "Sun, 29 Feb 2023 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",  "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 6 Nov 1994 08:49:37 GMT",   "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMTx", "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(aiq_backoff_retry_after_ms(bad[i], NULL, t0), -1);
    assert_int_equal(aiq_backoff_retry_after_ms("Thu, 29 Feb 2024 00:00:00 GMT ", NULL, 0),
                     1709164800000LL);
}

/* Capacity / cost retries drain the budget; then it refuses and takes nothing. */
static void backoff_budget_drains_and_refuses(void **state)
{
    (void)state;
    aiq_retry_budget_t b;
    int cost = -1;
    aiq_retry_budget_init(&b, 0, 0, 0);
    assert_int_equal(aiq_retry_budget_tokens(&b), 500);
    for (int i = 0; i < 100; i++) {
        assert_true(aiq_retry_budget_take(&b, false, &cost));
        assert_int_equal(cost, 5);
    }
    assert_int_equal(aiq_retry_budget_tokens(&b), 0);
    assert_false(aiq_retry_budget_take(&b, false, &cost));
    assert_int_equal(cost, 0);
    assert_int_equal(aiq_retry_budget_tokens(&b), 0);

    aiq_retry_budget_init(&b, 0, 0, 0);
    for (int i = 0; i < 50; i++)
        assert_true(aiq_retry_budget_take(&b, true, NULL));
    assert_false(aiq_retry_budget_take(&b, true, &cost));
    assert_false(aiq_retry_budget_take(&b, false, NULL));

    /* 7 tokens: one timeout retry (10) no, one ordinary retry (5) yes. */
    aiq_retry_budget_init(&b, 7, 5, 10);
    assert_false(aiq_retry_budget_take(&b, true, &cost));
    assert_true(aiq_retry_budget_take(&b, false, &cost));
    assert_int_equal(aiq_retry_budget_tokens(&b), 2);
}

/* A success refunds its retry's cost, or one token, never above capacity. */
static void backoff_budget_refunds_up_to_capacity(void **state)
{
    (void)state;
    aiq_retry_budget_t b;
    int cost;
    aiq_retry_budget_init(&b, 100, 5, 10);
    assert_true(aiq_retry_budget_take(&b, true, &cost));
    assert_true(aiq_retry_budget_take(&b, false, NULL));
    assert_int_equal(aiq_retry_budget_tokens(&b), 85);
    aiq_retry_budget_success(&b, cost);
    assert_int_equal(aiq_retry_budget_tokens(&b), 95);
    aiq_retry_budget_success(&b, 0);
    aiq_retry_budget_success(&b, -3);
    assert_int_equal(aiq_retry_budget_tokens(&b), 97);
    aiq_retry_budget_success(&b, 10);
    assert_int_equal(aiq_retry_budget_tokens(&b), 100);
    for (int i = 0; i < 1000; i++)
        aiq_retry_budget_success(&b, i % 3 ? 0 : 10);
    assert_int_equal(aiq_retry_budget_tokens(&b), 100);
    aiq_retry_budget_success(&b, INT_MAX);
    assert_int_equal(aiq_retry_budget_tokens(&b), 100);
    /* Drained by an outage, the budget recovers through successes without retries. */
    while (aiq_retry_budget_take(&b, false, NULL))
        ;
    assert_int_equal(aiq_retry_budget_tokens(&b), 0);
    for (int i = 0; i < 5; i++)
        aiq_retry_budget_success(&b, 0);
    assert_true(aiq_retry_budget_take(&b, false, &cost));
    assert_int_equal(aiq_retry_budget_tokens(&b), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(backoff_full_jitter_bounds),
        cmocka_unit_test(backoff_huge_retry_numbers),
        cmocka_unit_test(backoff_throttle_floor),
        cmocka_unit_test(backoff_retry_after_lower_bound),
        cmocka_unit_test(backoff_parses_retry_after),
        cmocka_unit_test(backoff_parses_http_dates),
        cmocka_unit_test(backoff_budget_drains_and_refuses),
        cmocka_unit_test(backoff_budget_refunds_up_to_capacity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
