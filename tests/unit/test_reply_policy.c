/* reply_policy: results go only where worker.reply_topics allows, never into aiq's own
 * topics or Kafka's internal ones (issue #17: a reply_to of aiq.breaker wrote the result
 * into the compacted breaker topic). */
#include "reply_policy.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#define DEFAULTS "{prefix}results,{prefix}reply.*"

static aiq_reply_policy_t *policy(const char *patterns)
{
    aiq_reply_policy_t *p = NULL;
    aiq_err_t err = {0};
    assert_int_equal(aiq_reply_policy_new(&p, "aiq.", patterns, &err), 0);
    return p;
}

/* Refused with a reason containing want, under the defaults and under "*" (allow all). */
static void refused(const char *topic, const char *want)
{
    const char *sets[] = {DEFAULTS, "*"};
    for (int i = 0; i < 2; i++) {
        aiq_reply_policy_t *p = policy(sets[i]);
        aiq_err_t err = {0};
        assert_int_equal(aiq_reply_policy_check(p, topic, &err), AIQ_EINVAL);
        assert_non_null(strstr(err.msg, want));
        assert_non_null(strstr(err.msg, topic));
        aiq_reply_policy_free(p);
    }
}

static void allowed(const char *patterns, const char *topic)
{
    aiq_reply_policy_t *p = policy(patterns);
    aiq_err_t err = {0};
    assert_int_equal(aiq_reply_policy_check(p, topic, &err), 0);
    aiq_reply_policy_free(p);
}

static void reply_policy_refuses_breaker(void **state)
{
    (void)state;
    refused("aiq.breaker", "breaker topic");
}

static void reply_policy_refuses_metrics(void **state)
{
    (void)state;
    refused("aiq.metrics", "metrics topic");
}

static void reply_policy_refuses_alerts(void **state)
{
    (void)state;
    refused("aiq.alerts", "alerts topic");
}

static void reply_policy_refuses_dlq(void **state)
{
    (void)state;
    refused("aiq.dlq", "dead-letter topic");
}

static void reply_policy_refuses_job_topics(void **state)
{
    (void)state;
    refused("aiq.jobs.critical", "job topic");
    refused("aiq.jobs.high", "job topic");
    refused("aiq.jobs.normal", "job topic");
    refused("aiq.jobs.low", "job topic");
}

static void reply_policy_refuses_kafka_internal(void **state)
{
    (void)state;
    refused("__consumer_offsets", "Kafka internal");
    refused("__transaction_state", "Kafka internal");
    refused("__anything", "Kafka internal");
}

/* Kafka treats '.' and '_' alike in topic names: aiq_breaker is the breaker topic too. */
static void reply_policy_refuses_dot_underscore_twins(void **state)
{
    (void)state;
    refused("aiq_breaker", "breaker topic");
    refused("aiq.jobs_high", "job topic");
}

static void reply_policy_defaults_allow_results_and_reply(void **state)
{
    (void)state;
    allowed(DEFAULTS, "aiq.results");
    allowed(DEFAULTS, "aiq.reply.billing");
    allowed(DEFAULTS, "aiq.reply.x.y");
    aiq_reply_policy_t *p = policy(DEFAULTS);
    aiq_err_t err = {0};
    assert_int_equal(aiq_reply_policy_check(p, "orders", &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "worker.reply_topics"));
    assert_int_equal(aiq_reply_policy_check(p, "aiq.reply", &err), AIQ_EINVAL);
    assert_int_equal(aiq_reply_policy_check(p, "aiq.resultsX", &err), AIQ_EINVAL);
    assert_int_equal(aiq_reply_policy_check(p, "other.results", &err), AIQ_EINVAL);
    aiq_reply_policy_free(p);
}

static void reply_policy_patterns_and_empty(void **state)
{
    (void)state;
    allowed(" orders , team-*,{prefix}x.* ", "orders");
    allowed("orders,team-*", "team-a.results");
    allowed("{prefix}x.*", "aiq.x.1");
    allowed("*", "anything.at.all");
    aiq_reply_policy_t *p = policy("");
    aiq_err_t err = {0};
    assert_int_equal(aiq_reply_policy_check(p, "aiq.results", &err), AIQ_EINVAL);
    aiq_reply_policy_free(p);
    /* a pattern that would allow an internal topic does not */
    p = policy("aiq.*");
    assert_int_equal(aiq_reply_policy_check(p, "aiq.alerts", &err), AIQ_EINVAL);
    assert_int_equal(aiq_reply_policy_check(p, "aiq.anything", &err), 0);
    aiq_reply_policy_free(p);
}

static void reply_policy_bad_patterns_name_the_key(void **state)
{
    (void)state;
    const char *bad[] = {"bad topic", "a*b", "x/y", "."};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        aiq_reply_policy_t *p = NULL;
        aiq_err_t err = {0};
        assert_int_equal(aiq_reply_policy_new(&p, "aiq.", bad[i], &err), AIQ_EINVAL);
        assert_null(p);
        assert_non_null(strstr(err.msg, "worker.reply_topics"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reply_policy_refuses_breaker),
        cmocka_unit_test(reply_policy_refuses_metrics),
        cmocka_unit_test(reply_policy_refuses_alerts),
        cmocka_unit_test(reply_policy_refuses_dlq),
        cmocka_unit_test(reply_policy_refuses_job_topics),
        cmocka_unit_test(reply_policy_refuses_kafka_internal),
        cmocka_unit_test(reply_policy_refuses_dot_underscore_twins),
        cmocka_unit_test(reply_policy_defaults_allow_results_and_reply),
        cmocka_unit_test(reply_policy_patterns_and_empty),
        cmocka_unit_test(reply_policy_bad_patterns_name_the_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
