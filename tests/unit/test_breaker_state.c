/* Breaker state machine with an injected clock: every transition the issue names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "aiq_err.h"
#include "breaker_state.h"

static aiq_breaker_t fresh(void)
{
    aiq_breaker_conf_t c;
    aiq_breaker_conf_default(&c);
    c.failure_rate = 0; /* consecutive rule only, unless a test turns it on */
    c.cooldown_ms = 1000;
    aiq_breaker_t b;
    aiq_breaker_init(&b, &c);
    return b;
}

static void fail_n(aiq_breaker_t *b, int n, int64_t now)
{
    for (int i = 0; i < n; i++) {
        bool probe;
        assert_true(aiq_breaker_allow(b, now, &probe));
        aiq_breaker_report(b, false, probe, now);
    }
}

static void test_opens_after_five_consecutive_failures(void **state)
{
    (void)state;
    aiq_breaker_t b = fresh();
    bool probe;
    fail_n(&b, 4, 100);
    assert_int_equal(aiq_breaker_state(&b, 100), AIQ_BREAKER_CLOSED);
    assert_true(aiq_breaker_allow(&b, 100, &probe));
    assert_false(probe);
    assert_true(aiq_breaker_report(&b, false, probe, 100)); /* fifth: a transition */
    assert_int_equal(aiq_breaker_state(&b, 100), AIQ_BREAKER_OPEN);
    assert_int_equal(b.shared.since_ms, 100);
    assert_false(aiq_breaker_allow(&b, 500, &probe));
}

static void test_success_resets_the_streak(void **state)
{
    (void)state;
    aiq_breaker_t b = fresh();
    bool probe;
    fail_n(&b, 4, 10);
    assert_true(aiq_breaker_allow(&b, 10, &probe));
    assert_false(aiq_breaker_report(&b, true, probe, 10));
    fail_n(&b, 4, 20);
    assert_int_equal(aiq_breaker_state(&b, 20), AIQ_BREAKER_CLOSED);
}

static void test_half_open_admits_probes_then_closes(void **state)
{
    (void)state;
    aiq_breaker_t b = fresh();
    bool probe;
    fail_n(&b, 5, 1000);
    assert_false(aiq_breaker_allow(&b, 1999, &probe));
    assert_int_equal(aiq_breaker_state(&b, 2000), AIQ_BREAKER_HALF_OPEN);
    assert_true(aiq_breaker_allow(&b, 2000, &probe));
    assert_true(probe);
    bool p2;
    assert_false(aiq_breaker_allow(&b, 2001, &p2)); /* one probe at a time by default */
    uint64_t v = b.shared.version;
    assert_true(aiq_breaker_report(&b, true, probe, 2100));
    assert_int_equal(aiq_breaker_state(&b, 2100), AIQ_BREAKER_CLOSED);
    assert_true(b.shared.version > v);
    assert_true(aiq_breaker_allow(&b, 2100, &probe));
    assert_false(probe);
}

static void test_failed_probe_reopens_with_new_cooldown(void **state)
{
    (void)state;
    aiq_breaker_t b = fresh();
    bool probe;
    fail_n(&b, 5, 1000);
    assert_true(aiq_breaker_allow(&b, 2500, &probe));
    assert_true(aiq_breaker_report(&b, false, probe, 2500));
    assert_int_equal(aiq_breaker_state(&b, 3000), AIQ_BREAKER_OPEN);
    assert_int_equal(aiq_breaker_state(&b, 3500), AIQ_BREAKER_HALF_OPEN);
}

static void test_abandoned_probe_frees_its_slot(void **state)
{
    (void)state;
    aiq_breaker_t b = fresh();
    bool probe;
    fail_n(&b, 5, 0);
    assert_true(aiq_breaker_allow(&b, 1000, &probe));
    aiq_breaker_abandon(&b, probe);
    assert_true(aiq_breaker_allow(&b, 1000, &probe));
    assert_true(probe);
}

static void test_late_report_from_before_open_is_ignored(void **state)
{
    (void)state;
    aiq_breaker_t b = fresh();
    fail_n(&b, 5, 0);
    /* a call admitted while closed answers after the breaker opened */
    assert_false(aiq_breaker_report(&b, true, false, 10));
    assert_int_equal(aiq_breaker_state(&b, 10), AIQ_BREAKER_OPEN);
}

static void test_failure_rate_opens(void **state)
{
    (void)state;
    aiq_breaker_t b = fresh();
    b.conf.failure_rate = 0.5;
    b.conf.min_calls = 10;
    bool probe;
    int64_t t = 100;
    int opened_at = -1;
    for (int i = 0; i < 20 && opened_at < 0; i++, t += 10) {
        assert_true(aiq_breaker_allow(&b, t, &probe));
        if (aiq_breaker_report(&b, i % 2 == 1, probe, t)) /* fail, ok, fail, ok ... */
            opened_at = i;
    }
    /* 10 calls with 5 failures reach the rate, but only a failure can open it: the 11th */
    assert_int_equal(opened_at, 10);
}

static void test_rate_window_forgets_old_calls(void **state)
{
    (void)state;
    aiq_breaker_t b = fresh();
    b.conf.failure_rate = 0.5;
    b.conf.min_calls = 10;
    bool probe;
    for (int i = 0; i < 9; i++) { /* 4 failures, 5 ok: below min_calls */
        assert_true(aiq_breaker_allow(&b, 100, &probe));
        aiq_breaker_report(&b, i % 2 == 0 ? true : false, probe, 100);
    }
    /* 11 s later the window is empty again: one failure is not a rate */
    assert_true(aiq_breaker_allow(&b, 11100, &probe));
    assert_false(aiq_breaker_report(&b, false, probe, 11100));
    assert_int_equal(aiq_breaker_state(&b, 11100), AIQ_BREAKER_CLOSED);
}

static void test_force_overrides_and_auto_lifts(void **state)
{
    (void)state;
    aiq_breaker_t b = fresh();
    bool probe;
    aiq_breaker_force(&b, AIQ_BREAKER_FORCED_OPEN, 50);
    assert_false(aiq_breaker_allow(&b, 100000, &probe)); /* no cooldown for a forced open */
    aiq_breaker_force(&b, AIQ_BREAKER_FORCED_CLOSED, 60);
    fail_n(&b, 50, 70);
    assert_int_equal(aiq_breaker_state(&b, 70), AIQ_BREAKER_CLOSED);
    aiq_breaker_force(&b, AIQ_BREAKER_AUTO, 80);
    fail_n(&b, 5, 90);
    assert_int_equal(aiq_breaker_state(&b, 90), AIQ_BREAKER_OPEN);
}

static void test_apply_takes_only_newer_versions(void **state)
{
    (void)state;
    aiq_breaker_t a = fresh(), b = fresh();
    fail_n(&a, 5, 5000);
    assert_true(aiq_breaker_apply(&b, &a.shared));
    assert_int_equal(aiq_breaker_state(&b, 5000), AIQ_BREAKER_OPEN);
    assert_false(aiq_breaker_apply(&b, &a.shared)); /* echo of the same transition */
    aiq_breaker_shared_t old = a.shared;
    old.version -= 1;
    old.state = AIQ_BREAKER_CLOSED;
    assert_false(aiq_breaker_apply(&b, &old));
    assert_int_equal(aiq_breaker_state(&b, 5000), AIQ_BREAKER_OPEN);
    bool probe;
    assert_true(aiq_breaker_allow(&b, 7000, &probe));
    assert_true(aiq_breaker_report(&b, true, probe, 7000));
    assert_true(b.shared.version > a.shared.version);
    assert_true(aiq_breaker_apply(&a, &b.shared));
    assert_int_equal(aiq_breaker_state(&a, 7000), AIQ_BREAKER_CLOSED);
    /* a host whose clock runs ahead: the next local transition still orders after it */
    aiq_breaker_shared_t ahead = {AIQ_BREAKER_CLOSED, AIQ_BREAKER_AUTO, 99999, 99999};
    assert_true(aiq_breaker_apply(&a, &ahead));
    fail_n(&a, 5, 8000);
    assert_int_equal(a.shared.version, 100000);
}

static void test_names_round_trip(void **state)
{
    (void)state;
    for (int s = 0; s < 3; s++)
        assert_int_equal(aiq_breaker_state_parse(aiq_breaker_state_name(s)), s);
    for (int f = 0; f < 3; f++)
        assert_int_equal(aiq_breaker_force_parse(aiq_breaker_force_name(f)), f);
    assert_int_equal(aiq_breaker_state_parse("ajar"), -1);
}

/* Each topic prefix has its own directory; prefixes that differ only in bytes a file name
 * must not hold stay apart, and "." or ".." can never climb out of the base. */
static void test_scope_dir_per_prefix(void **state)
{
    (void)state;
    char a[256], b[256];
    assert_int_equal(aiq_breaker_scope_dir("/c/breakers", "aiq.", a, sizeof(a)), 0);
    assert_string_equal(a, "/c/breakers/prefix-aiq.");
    assert_int_equal(aiq_breaker_scope_dir("/c/breakers", "test-1_x.", b, sizeof(b)), 0);
    assert_string_equal(b, "/c/breakers/prefix-test-1_x.");
    assert_int_equal(aiq_breaker_scope_dir("/c/breakers", "", a, sizeof(a)), 0);
    assert_string_equal(a, "/c/breakers/prefix-");
    assert_int_equal(aiq_breaker_scope_dir("/c/breakers", "..", a, sizeof(a)), 0);
    assert_string_equal(a, "/c/breakers/prefix-..");
    assert_int_equal(aiq_breaker_scope_dir("/c/breakers", "a/b %", a, sizeof(a)), 0);
    assert_string_equal(a, "/c/breakers/prefix-a%2Fb%20%25");
    assert_int_equal(aiq_breaker_scope_dir("/c/breakers", "aiq.", a, 20), AIQ_ETOOBIG);
}

static void test_store_record_round_trip(void **state)
{
    (void)state;
    aiq_breaker_shared_t s = {AIQ_BREAKER_OPEN, AIQ_BREAKER_FORCED_OPEN, 1796356395123, 42}, t;
    unsigned char rec[AIQ_BREAKER_RECORD_BYTES];
    aiq_breaker_record_pack(&s, rec);
    assert_int_equal(aiq_breaker_record_unpack(rec, sizeof(rec), &t), 0);
    assert_int_equal(t.state, s.state);
    assert_int_equal(t.force, s.force);
    assert_int_equal(t.since_ms, s.since_ms);
    assert_int_equal(t.version, s.version);
    assert_int_equal(aiq_breaker_record_unpack(rec, sizeof(rec) - 1, &t), AIQ_EINVAL);
    rec[0] = 7;
    assert_int_equal(aiq_breaker_record_unpack(rec, sizeof(rec), &t), AIQ_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_after_five_consecutive_failures),
        cmocka_unit_test(test_success_resets_the_streak),
        cmocka_unit_test(test_half_open_admits_probes_then_closes),
        cmocka_unit_test(test_failed_probe_reopens_with_new_cooldown),
        cmocka_unit_test(test_abandoned_probe_frees_its_slot),
        cmocka_unit_test(test_late_report_from_before_open_is_ignored),
        cmocka_unit_test(test_failure_rate_opens),
        cmocka_unit_test(test_rate_window_forgets_old_calls),
        cmocka_unit_test(test_force_overrides_and_auto_lifts),
        cmocka_unit_test(test_apply_takes_only_newer_versions),
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_scope_dir_per_prefix),
        cmocka_unit_test(test_store_record_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
