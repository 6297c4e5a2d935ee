/* Alert rules with an injected clock: windows, thresholds, hysteresis, escalation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "alerts.h"

static aiq_alerts_t fresh(void)
{
    aiq_alerts_conf_t c;
    aiq_alerts_conf_default(&c);
    c.window_ms = 10000;
    c.clear_hold_ms = 2000;
    aiq_alerts_t a;
    aiq_alerts_init(&a, &c);
    return a;
}

/* n jobs at now, errors of them failing, each taking ms. */
static void jobs(aiq_alerts_t *a, int64_t now, int n, int errors, int64_t ms)
{
    for (int i = 0; i < n; i++)
        aiq_alerts_job(a, now, i < errors, ms, false, false);
}

static void test_error_rate_raises_critical_and_resolves(void **state)
{
    (void)state;
    aiq_alerts_t a = fresh();
    aiq_alert_event_t ev[8];
    jobs(&a, 1000, 100, 20, 50); /* 20 % errors */
    assert_int_equal(aiq_alerts_evaluate(&a, 1000, ev, 8), 1);
    assert_int_equal(ev[0].rule, AIQ_ALERT_ERROR_RATE);
    assert_int_equal(ev[0].from, AIQ_ALERT_OK);
    assert_int_equal(ev[0].to, AIQ_ALERT_CRITICAL);
    assert_true(ev[0].value > 0.19 && ev[0].value < 0.21);
    assert_true(ev[0].threshold == 0.10);
    /* the window slides past the errors; clean jobs keep coming */
    int64_t t = 1000, resolved_at = -1;
    while (t < 30000 && resolved_at < 0) {
        t += 500;
        jobs(&a, t, 20, 0, 50);
        int n = aiq_alerts_evaluate(&a, t, ev, 8);
        for (int i = 0; i < n; i++) {
            assert_int_equal(ev[i].rule, AIQ_ALERT_ERROR_RATE);
            if (ev[i].to == AIQ_ALERT_OK) {
                resolved_at = t;
                assert_int_equal(ev[i].since_ms, 1000);
            }
        }
    }
    assert_true(resolved_at > 0);
    assert_string_equal(aiq_alert_level_name(AIQ_ALERT_OK), "resolved");
}

static void test_hovering_value_does_not_flap(void **state)
{
    (void)state;
    aiq_alerts_t a = fresh();
    aiq_alert_event_t ev[8];
    int events = 0;
    /* queue depth alternating just above and just below 50 */
    for (int64_t t = 0; t < 20000; t += 100) {
        aiq_alerts_depth(&a, (t / 100) % 2 ? 51 : 49);
        events += aiq_alerts_evaluate(&a, t, ev, 8);
    }
    assert_int_equal(events, 1); /* raised once, never cleared */
    /* clearly below (40 = 50 * 0.8) but only briefly: still raised */
    aiq_alerts_depth(&a, 30);
    assert_int_equal(aiq_alerts_evaluate(&a, 20000, ev, 8), 0);
    assert_int_equal(aiq_alerts_evaluate(&a, 21000, ev, 8), 0);
    assert_int_equal(aiq_alerts_evaluate(&a, 22000, ev, 8), 1); /* held 2 s */
    assert_int_equal(ev[0].to, AIQ_ALERT_OK);
}

static void test_escalation_and_step_down(void **state)
{
    (void)state;
    aiq_alerts_t a = fresh();
    aiq_alert_event_t ev[8];
    aiq_alerts_depth(&a, 60);
    assert_int_equal(aiq_alerts_evaluate(&a, 0, ev, 8), 1);
    assert_int_equal(ev[0].to, AIQ_ALERT_WARNING);
    aiq_alerts_depth(&a, 150);
    assert_int_equal(aiq_alerts_evaluate(&a, 100, ev, 8), 1);
    assert_int_equal(ev[0].from, AIQ_ALERT_WARNING);
    assert_int_equal(ev[0].to, AIQ_ALERT_CRITICAL);
    assert_int_equal(ev[0].since_ms, 0); /* the alert started with the warning */
    aiq_alerts_depth(&a, 60);            /* below critical by the margin, still a warning */
    assert_int_equal(aiq_alerts_evaluate(&a, 200, ev, 8), 0);
    assert_int_equal(aiq_alerts_evaluate(&a, 2300, ev, 8), 1);
    assert_int_equal(ev[0].to, AIQ_ALERT_WARNING);
}

static void test_p95_and_min_jobs(void **state)
{
    (void)state;
    aiq_alerts_t a = fresh();
    aiq_alert_event_t ev[8];
    jobs(&a, 0, 10, 0, 40000); /* slow, but only 10 jobs: too little to judge */
    assert_int_equal(aiq_alerts_evaluate(&a, 0, ev, 8), 0);
    jobs(&a, 0, 10, 0, 26000);
    double v;
    assert_true(aiq_alerts_value(&a, AIQ_ALERT_RESPONSE_P95, 0, &v));
    assert_true(v >= 30000); /* half the jobs took 40 s */
    assert_int_equal(aiq_alerts_evaluate(&a, 0, ev, 8), 1);
    assert_int_equal(ev[0].rule, AIQ_ALERT_RESPONSE_P95);
    assert_int_equal(ev[0].to, AIQ_ALERT_CRITICAL);
}

static void test_cache_hit_rate_low_is_bad(void **state)
{
    (void)state;
    aiq_alerts_t a = fresh();
    aiq_alert_event_t ev[8];
    for (int i = 0; i < 100; i++)
        aiq_alerts_job(&a, 0, false, 10, true, i < 10); /* 10 % hits */
    assert_int_equal(aiq_alerts_evaluate(&a, 0, ev, 8), 1);
    assert_int_equal(ev[0].rule, AIQ_ALERT_CACHE_HIT_RATE);
    assert_int_equal(ev[0].to, AIQ_ALERT_WARNING);
    /* 33 % is above 30 % but not clearly (36 %): stays */
    for (int i = 0; i < 100; i++)
        aiq_alerts_job(&a, 11000, false, 10, true, i < 33);
    assert_int_equal(aiq_alerts_evaluate(&a, 11000, ev, 8), 0);
    assert_int_equal(aiq_alerts_evaluate(&a, 14000, ev, 8), 0);
}

static void test_window_forgets(void **state)
{
    (void)state;
    aiq_alerts_t a = fresh();
    double v;
    jobs(&a, 0, 50, 50, 10);
    assert_true(aiq_alerts_value(&a, AIQ_ALERT_ERROR_RATE, 5000, &v));
    assert_true(v == 1.0);
    assert_false(aiq_alerts_value(&a, AIQ_ALERT_ERROR_RATE, 10500, &v)); /* slid out */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_rate_raises_critical_and_resolves),
        cmocka_unit_test(test_hovering_value_does_not_flap),
        cmocka_unit_test(test_escalation_and_step_down),
        cmocka_unit_test(test_p95_and_min_jobs),
        cmocka_unit_test(test_cache_hit_rate_low_is_bad),
        cmocka_unit_test(test_window_forgets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
