/* Alert rules with an injected clock: windows, thresholds, hysteresis, escalation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "alert_rules.h"

/* Rules with a 10 s window (1 s slots) and a 2 s hold. */
static aiq_alert_rules_t *fresh(void)
{
    aiq_alert_rules_conf_t c;
    aiq_alert_rules_conf_default(&c);
    c.window_ms = 10000;
    c.clear_hold_ms = 2000;
    aiq_alert_rules_t *a = NULL;
    assert_int_equal(aiq_alert_rules_new(&a, &c, NULL), 0);
    return a;
}

/* n jobs at now, the first errors of them failing, each taking ms. */
static void jobs(aiq_alert_rules_t *a, int64_t now, int n, int errors, int64_t ms)
{
    for (int i = 0; i < n; i++)
        aiq_alert_rules_job(a, now, i < errors, ms, false, false);
}

static void alerts_error_rate_raises_critical_and_resolves(void **state)
{
    (void)state;
    aiq_alert_rules_t *a = fresh();
    aiq_alert_event_t ev[8];
    jobs(a, 1000, 100, 20, 50); /* 20 % errors */
    assert_int_equal(aiq_alert_rules_evaluate(a, 1000, ev, 8), 1);
    assert_int_equal(ev[0].rule, AIQ_ALERT_ERROR_RATE);
    assert_int_equal(ev[0].from, AIQ_ALERT_OK);
    assert_int_equal(ev[0].to, AIQ_ALERT_CRITICAL); /* straight to critical */
    assert_true(ev[0].value > 0.19 && ev[0].value < 0.21);
    assert_true(ev[0].threshold == 0.10);
    assert_false(ev[0].no_data);
    /* clean jobs keep coming, the rate sinks: after the hold below 8 % (10 % less the
     * margin) it steps down to a warning, after the hold below 4 % it resolves */
    aiq_alert_level_t seen[8];
    int64_t t = 1000;
    int events = 0;
    while (t < 30000 && aiq_alert_rules_level(a, AIQ_ALERT_ERROR_RATE) != AIQ_ALERT_OK) {
        t += 500;
        jobs(a, t, 20, 0, 50);
        const int n = aiq_alert_rules_evaluate(a, t, ev, 8);
        for (int i = 0; i < n && events < 8; i++) {
            assert_int_equal(ev[i].rule, AIQ_ALERT_ERROR_RATE);
            assert_int_equal(ev[i].since_ms, 1000);
            seen[events++] = ev[i].to;
        }
        if (n && ev[0].to == AIQ_ALERT_WARNING) {
            assert_true(ev[0].value < 0.08 && ev[0].value > 0.05);
            assert_true(ev[0].threshold == 0.10);
        }
        if (n && ev[0].to == AIQ_ALERT_OK) {
            assert_int_equal(ev[0].from, AIQ_ALERT_WARNING);
            assert_true(ev[0].value < 0.04);
            assert_true(ev[0].threshold == 0.05);
        }
    }
    assert_int_equal(events, 2);
    assert_int_equal(seen[0], AIQ_ALERT_WARNING);
    assert_int_equal(seen[1], AIQ_ALERT_OK);
    assert_true(t < 30000);
    assert_int_equal(aiq_alert_rules_level(a, AIQ_ALERT_ERROR_RATE), AIQ_ALERT_OK);
    assert_string_equal(aiq_alert_level_name(AIQ_ALERT_OK), "resolved");
    assert_string_equal(aiq_alert_rule_name(AIQ_ALERT_ERROR_RATE), "error_rate");
    aiq_alert_rules_free(a);
}

static void alerts_hovering_value_does_not_flap(void **state)
{
    (void)state;
    aiq_alert_rules_t *a = fresh();
    aiq_alert_event_t ev[8];
    int events = 0;
    /* queue depth alternating just above and just below 50 */
    for (int64_t t = 0; t < 20000; t += 100) {
        aiq_alert_rules_depth(a, (t / 100) % 2 ? 51 : 49);
        events += aiq_alert_rules_evaluate(a, t, ev, 8);
    }
    assert_int_equal(events, 1); /* raised once, never cleared */
    assert_int_equal(aiq_alert_rules_level(a, AIQ_ALERT_QUEUE_DEPTH), AIQ_ALERT_WARNING);
    /* clearly below (< 40 = 50 * 0.8), but interrupted before the hold ran out */
    aiq_alert_rules_depth(a, 30);
    assert_int_equal(aiq_alert_rules_evaluate(a, 20000, ev, 8), 0);
    assert_int_equal(aiq_alert_rules_evaluate(a, 21000, ev, 8), 0);
    aiq_alert_rules_depth(a, 45); /* not clearly below: the hold starts over */
    assert_int_equal(aiq_alert_rules_evaluate(a, 21500, ev, 8), 0);
    aiq_alert_rules_depth(a, 30);
    assert_int_equal(aiq_alert_rules_evaluate(a, 22000, ev, 8), 0);
    assert_int_equal(aiq_alert_rules_evaluate(a, 23000, ev, 8), 0);
    assert_int_equal(aiq_alert_rules_evaluate(a, 24000, ev, 8), 1); /* held 2 s */
    assert_int_equal(ev[0].to, AIQ_ALERT_OK);
    assert_int_equal(ev[0].since_ms, 100);
    /* exactly at the threshold is not beyond it */
    aiq_alert_rules_depth(a, 50);
    assert_int_equal(aiq_alert_rules_evaluate(a, 25000, ev, 8), 0);
    aiq_alert_rules_free(a);
}

static void alerts_escalation_and_step_down(void **state)
{
    (void)state;
    aiq_alert_rules_t *a = fresh();
    aiq_alert_event_t ev[8];
    aiq_alert_rules_depth(a, 60);
    assert_int_equal(aiq_alert_rules_evaluate(a, 0, ev, 8), 1);
    assert_int_equal(ev[0].to, AIQ_ALERT_WARNING);
    assert_true(ev[0].threshold == 50);
    aiq_alert_rules_depth(a, 150);
    assert_int_equal(aiq_alert_rules_evaluate(a, 100, ev, 8), 1);
    assert_int_equal(ev[0].from, AIQ_ALERT_WARNING);
    assert_int_equal(ev[0].to, AIQ_ALERT_CRITICAL);
    assert_true(ev[0].threshold == 100);
    assert_int_equal(ev[0].since_ms, 0); /* the alert started with the warning */
    aiq_alert_rules_depth(a, 90);        /* below critical, but not by the margin (80) */
    assert_int_equal(aiq_alert_rules_evaluate(a, 200, ev, 8), 0);
    assert_int_equal(aiq_alert_rules_evaluate(a, 5000, ev, 8), 0);
    aiq_alert_rules_depth(a, 60); /* clearly below critical, still a warning */
    assert_int_equal(aiq_alert_rules_evaluate(a, 5100, ev, 8), 0);
    assert_int_equal(aiq_alert_rules_evaluate(a, 7100, ev, 8), 1);
    assert_int_equal(ev[0].from, AIQ_ALERT_CRITICAL);
    assert_int_equal(ev[0].to, AIQ_ALERT_WARNING);
    assert_true(ev[0].threshold == 100);
    aiq_alert_rules_depth(a, 10);
    assert_int_equal(aiq_alert_rules_evaluate(a, 7200, ev, 8), 0);
    assert_int_equal(aiq_alert_rules_evaluate(a, 9200, ev, 8), 1);
    assert_int_equal(ev[0].from, AIQ_ALERT_WARNING);
    assert_int_equal(ev[0].to, AIQ_ALERT_OK);
    assert_int_equal(ev[0].since_ms, 0);
    aiq_alert_rules_free(a);
}

static void alerts_p95_and_min_jobs(void **state)
{
    (void)state;
    aiq_alert_rules_t *a = fresh();
    aiq_alert_event_t ev[8];
    jobs(a, 0, 19, 19, 40000); /* slow and failing, but 19 < 20 jobs: too few to judge */
    assert_int_equal(aiq_alert_rules_evaluate(a, 0, ev, 8), 0);
    double v;
    assert_false(aiq_alert_rules_value(a, AIQ_ALERT_RESPONSE_P95, 0, &v));
    jobs(a, 0, 21, 0, 26000);
    assert_true(aiq_alert_rules_value(a, AIQ_ALERT_RESPONSE_P95, 0, &v));
    assert_true(v > 30000 && v <= 45000); /* 19 of 40 took 40 s */
    assert_int_equal(aiq_alert_rules_evaluate(a, 0, ev, 8), 2);
    assert_int_equal(ev[0].rule, AIQ_ALERT_RESPONSE_P95);
    assert_int_equal(ev[0].to, AIQ_ALERT_CRITICAL);
    assert_int_equal(ev[1].rule, AIQ_ALERT_ERROR_RATE);
    aiq_alert_rules_free(a);
}

static void alerts_p95_just_under_threshold_is_ok(void **state)
{
    (void)state;
    aiq_alert_rules_t *a = fresh();
    aiq_alert_event_t ev[8];
    jobs(a, 0, 100, 0, 24900); /* all in the 20-25 s bucket */
    double v;
    assert_true(aiq_alert_rules_value(a, AIQ_ALERT_RESPONSE_P95, 0, &v));
    assert_true(v > 20000 && v < 25000);
    assert_int_equal(aiq_alert_rules_evaluate(a, 0, ev, 8), 0);
    jobs(a, 0, 100, 0, 25100); /* half over 25 s: p95 in the 25-30 s bucket */
    assert_int_equal(aiq_alert_rules_evaluate(a, 0, ev, 8), 1);
    assert_int_equal(ev[0].to, AIQ_ALERT_WARNING);
    assert_true(ev[0].value > 25000 && ev[0].value < 30000);
    aiq_alert_rules_free(a);
}

static void alerts_cache_hit_rate_low_is_bad(void **state)
{
    (void)state;
    aiq_alert_rules_t *a = fresh();
    aiq_alert_event_t ev[8];
    for (int i = 0; i < 49; i++)
        aiq_alert_rules_job(a, 0, false, 10, true, false); /* 49 misses: under min_lookups */
    assert_int_equal(aiq_alert_rules_evaluate(a, 0, ev, 8), 0);
    for (int i = 0; i < 51; i++)
        aiq_alert_rules_job(a, 0, false, 10, true, i < 10); /* 10 hits of 100 lookups */
    assert_int_equal(aiq_alert_rules_evaluate(a, 0, ev, 8), 1);
    assert_int_equal(ev[0].rule, AIQ_ALERT_CACHE_HIT_RATE);
    assert_int_equal(ev[0].to, AIQ_ALERT_WARNING);
    assert_true(ev[0].value == 0.10);
    /* 33 % is above 30 % but not clearly (36 %): stays raised */
    for (int i = 0; i < 100; i++)
        aiq_alert_rules_job(a, 11000, false, 10, true, i < 33);
    assert_int_equal(aiq_alert_rules_evaluate(a, 11000, ev, 8), 0);
    assert_int_equal(aiq_alert_rules_evaluate(a, 14000, ev, 8), 0);
    /* 50 %: clearly good; resolves after the hold */
    for (int i = 0; i < 300; i++)
        aiq_alert_rules_job(a, 15000, false, 10, true, i < 200);
    assert_int_equal(aiq_alert_rules_evaluate(a, 15000, ev, 8), 0);
    assert_int_equal(aiq_alert_rules_evaluate(a, 17000, ev, 8), 1);
    assert_int_equal(ev[0].to, AIQ_ALERT_OK);
    assert_true(ev[0].threshold == 0.30);
    aiq_alert_rules_free(a);
}

static void alerts_window_forgets(void **state)
{
    (void)state;
    aiq_alert_rules_t *a = fresh();
    double v;
    jobs(a, 0, 50, 50, 10);
    jobs(a, 4000, 50, 0, 10);
    assert_true(aiq_alert_rules_value(a, AIQ_ALERT_ERROR_RATE, 5000, &v));
    assert_true(v == 0.5);
    assert_true(aiq_alert_rules_value(a, AIQ_ALERT_ERROR_RATE, 10500, &v)); /* first slot out */
    assert_true(v == 0.0);
    assert_false(aiq_alert_rules_value(a, AIQ_ALERT_ERROR_RATE, 14500, &v)); /* all slid out */
    /* a slot reused after a full turn of the ring holds only the new data */
    jobs(a, 20000, 40, 10, 10);
    assert_true(aiq_alert_rules_value(a, AIQ_ALERT_ERROR_RATE, 20000, &v));
    assert_true(v == 0.25);
    aiq_alert_rules_free(a);
}

static void alerts_idle_worker_resolves_for_lack_of_data(void **state)
{
    (void)state;
    aiq_alert_rules_t *a = fresh();
    aiq_alert_event_t ev[8];
    jobs(a, 0, 30, 30, 10);
    assert_int_equal(aiq_alert_rules_evaluate(a, 0, ev, 8), 1);
    assert_int_equal(ev[0].to, AIQ_ALERT_CRITICAL);
    assert_int_equal(aiq_alert_rules_evaluate(a, 9000, ev, 8), 0);  /* still in the window */
    assert_int_equal(aiq_alert_rules_evaluate(a, 10500, ev, 8), 0); /* empty: hold starts */
    assert_int_equal(aiq_alert_rules_evaluate(a, 12500, ev, 8), 1);
    assert_int_equal(ev[0].to, AIQ_ALERT_OK);
    assert_true(ev[0].no_data);
    assert_true(ev[0].value == 0);
    assert_int_equal(aiq_alert_rules_evaluate(a, 20000, ev, 8), 0); /* and stays quiet */
    aiq_alert_rules_free(a);
}

static void alerts_conf_validated(void **state)
{
    (void)state;
    aiq_alert_rules_conf_t c;
    aiq_alert_rules_t *a = NULL;
    aiq_err_t err = {0};
    aiq_alert_rules_conf_default(&c);
    c.crit[AIQ_ALERT_ERROR_RATE] = 0.01; /* critical milder than the warning */
    assert_int_equal(aiq_alert_rules_new(&a, &c, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "error_rate"));
    aiq_alert_rules_conf_default(&c);
    c.window_ms = 5;
    assert_int_equal(aiq_alert_rules_new(&a, &c, &err), AIQ_EINVAL);
    aiq_alert_rules_conf_default(&c);
    c.crit[AIQ_ALERT_QUEUE_DEPTH] = 0; /* no critical level */
    assert_int_equal(aiq_alert_rules_new(&a, &c, &err), 0);
    aiq_alert_event_t ev[8];
    aiq_alert_rules_depth(a, 1000);
    assert_int_equal(aiq_alert_rules_evaluate(a, 0, ev, 8), 1);
    assert_int_equal(ev[0].to, AIQ_ALERT_WARNING);
    aiq_alert_rules_free(a);
    aiq_alert_rules_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(alerts_error_rate_raises_critical_and_resolves),
        cmocka_unit_test(alerts_hovering_value_does_not_flap),
        cmocka_unit_test(alerts_escalation_and_step_down),
        cmocka_unit_test(alerts_p95_and_min_jobs),
        cmocka_unit_test(alerts_p95_just_under_threshold_is_ok),
        cmocka_unit_test(alerts_cache_hit_rate_low_is_bad),
        cmocka_unit_test(alerts_window_forgets),
        cmocka_unit_test(alerts_idle_worker_resolves_for_lack_of_data),
        cmocka_unit_test(alerts_conf_validated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
