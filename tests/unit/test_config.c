/* test_config.c — the configuration table (common/config.h): defaults, validated sets whose
 * errors name the key, config files, environment overrides, and a dump without secrets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static int setup_cfg(void **state)
{
    aiq_config_t *cfg = malloc(sizeof(*cfg));
    if (!cfg || aiq_config_init(cfg)) {
        free(cfg);
        return -1;
    }
    *state = cfg;
    return 0;
}

static int teardown_cfg(void **state)
{
    aiq_config_t *cfg = *state;
    aiq_config_free(cfg);
    free(cfg);
    return 0;
}

/* Writes text to a new temporary file; path receives its name (caller unlinks). */
static void write_tmp(char *path, size_t cap, const char *text)
{
    snprintf(path, cap, "/tmp/aiq-test-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Returns what aiq_config_dump prints (caller frees). */
static char *dump(const aiq_config_t *cfg, int scope)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    aiq_config_dump(cfg, f, scope);
    assert_int_equal(fclose(f), 0);
    assert_non_null(buf);
    return buf;
}

static void config_defaults(void **state)
{
    aiq_config_t *cfg = *state;
    assert_int_equal(cfg->max_inflight, 10);
    assert_int_equal(cfg->backlog, 500);
    assert_int_equal(cfg->default_timeout_ms, 45000);
    assert_int_equal(cfg->max_job_bytes, 524288);
    assert_int_equal(cfg->aging_ms, 5000);
    assert_int_equal(cfg->max_attempts, 3);
    assert_int_equal(cfg->session_timeout_ms, 10000);
    assert_string_equal(cfg->brokers, "127.0.0.1:9092");
    assert_string_equal(cfg->topic_prefix, "aiq.");
    assert_string_equal(cfg->group_id, "aiq-workers");
    assert_string_equal(cfg->group_instance_id, "");
    assert_string_equal(cfg->region, "us-east-1");
    assert_string_equal(cfg->log_level, "info");
    assert_int_equal(cfg->n_passthru, 0);
}

static void config_set_int_in_range(void **state)
{
    aiq_config_t *cfg = *state;
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_set(cfg, "worker.max_inflight", "64", &err), 0);
    assert_int_equal(cfg->max_inflight, 64);
    /* Both bounds are inclusive; surrounding blanks are tolerated. */
    assert_int_equal(aiq_config_set(cfg, "worker.max_inflight", "1", &err), 0);
    assert_int_equal(cfg->max_inflight, 1);
    assert_int_equal(aiq_config_set(cfg, "worker.max_inflight", "10000", &err), 0);
    assert_int_equal(cfg->max_inflight, 10000);
    assert_int_equal(aiq_config_set(cfg, "worker.backlog", " 1000000 ", &err), 0);
    assert_int_equal(cfg->backlog, 1000000);
    assert_int_equal(aiq_config_set(cfg, "worker.drain_timeout_ms", "0", &err), 0);
    assert_int_equal(cfg->drain_timeout_ms, 0);
}

static void config_set_int_out_of_range(void **state)
{
    aiq_config_t *cfg = *state;
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_set(cfg, "worker.max_inflight", "10001", &err), AIQ_EINVAL);
    assert_int_equal(err.code, AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "worker.max_inflight"));
    assert_non_null(strstr(err.msg, "10001"));
    assert_int_equal(cfg->max_inflight, 10); /* unchanged */

    memset(&err, 0, sizeof(err));
    assert_int_equal(aiq_config_set(cfg, "worker.max_inflight", "0", &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "worker.max_inflight"));
    assert_int_equal(aiq_config_set(cfg, "kafka.session_timeout_ms", "-6000", &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "kafka.session_timeout_ms"));
    assert_int_equal(cfg->session_timeout_ms, 10000);
}

/* kafka.group_protocol is classic or consumer (KIP-848), classic by default. */
static void config_set_group_protocol(void **state)
{
    aiq_config_t *cfg = *state;
    aiq_err_t err = {0};
    assert_string_equal(cfg->group_protocol, "classic");
    assert_int_equal(aiq_config_set(cfg, "kafka.group_protocol", "consumer", &err), 0);
    assert_string_equal(cfg->group_protocol, "consumer");
    assert_int_equal(aiq_config_set(cfg, "kafka.group_protocol", "cooperative", &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "kafka.group_protocol"));
    assert_non_null(strstr(err.msg, "classic|consumer"));
    assert_string_equal(cfg->group_protocol, "consumer"); /* unchanged */
    setenv("AIQ_KAFKA_GROUP_PROTOCOL", "classic", 1);
    assert_int_equal(aiq_config_load_env(cfg, &err), 0);
    unsetenv("AIQ_KAFKA_GROUP_PROTOCOL");
    assert_string_equal(cfg->group_protocol, "classic");
}

static void config_set_rejects_non_integer(void **state)
{
    aiq_config_t *cfg = *state;
    static const char *const bad[] = {
        "", "ten", "12abc", "1.5", "0x10", "1e3", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        aiq_err_t err = {0};
        if (aiq_config_set(cfg, "worker.backlog", bad[i], &err) != AIQ_EINVAL)
            print_error("'%s' was accepted\n", bad[i]);
        assert_int_equal(err.code, AIQ_EINVAL);
        assert_non_null(strstr(err.msg, "worker.backlog"));
        assert_non_null(strstr(err.msg, "integer"));
    }
    assert_int_equal(cfg->backlog, 500);
}

static void config_set_rejects_unknown_key(void **state)
{
    aiq_config_t *cfg = *state;
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_set(cfg, "worker.max_inflite", "5", &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "worker.max_inflite"));
    assert_int_equal(aiq_config_set(cfg, "", "5", &err), AIQ_EINVAL);
    assert_int_equal(aiq_config_set(cfg, "kafka", "5", &err), AIQ_EINVAL);
    assert_int_equal(aiq_config_set(cfg, "WORKER.MAX_INFLIGHT", "5", &err), AIQ_EINVAL);
    assert_int_equal(cfg->max_inflight, 10);
}

static void config_set_strings(void **state)
{
    aiq_config_t *cfg = *state;
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_set(cfg, "kafka.brokers", "", &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "kafka.brokers"));
    assert_string_equal(cfg->brokers, "127.0.0.1:9092");

    assert_int_equal(aiq_config_set(cfg, "kafka.brokers", "k1:9092,k2:9092", &err), 0);
    assert_string_equal(cfg->brokers, "k1:9092,k2:9092");
    /* min length 0: an empty prefix is allowed. */
    assert_int_equal(aiq_config_set(cfg, "kafka.topic_prefix", "", &err), 0);
    assert_string_equal(cfg->topic_prefix, "");
}

static void config_set_log_level(void **state)
{
    aiq_config_t *cfg = *state;
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_set(cfg, "log.level", "verbose", &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "log.level"));
    assert_non_null(strstr(err.msg, "verbose"));
    assert_int_equal(aiq_config_set(cfg, "log.level", "DEBUG", &err), AIQ_EINVAL);
    assert_string_equal(cfg->log_level, "info");
    static const char *const ok[] = {"debug", "info", "warn", "error"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(aiq_config_set(cfg, "log.level", ok[i], &err), 0);
        assert_string_equal(cfg->log_level, ok[i]);
    }
}

static void config_passthru(void **state)
{
    aiq_config_t *cfg = *state;
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_set(cfg, "kafka.rdkafka.security.protocol", "SASL_SSL", &err), 0);
    assert_int_equal(cfg->n_passthru, 1);
    assert_string_equal(cfg->passthru_key[0], "security.protocol");
    assert_string_equal(cfg->passthru_val[0], "SASL_SSL");

    /* Setting the same property again replaces it. */
    assert_int_equal(aiq_config_set(cfg, "kafka.rdkafka.security.protocol", "SSL", &err), 0);
    assert_int_equal(cfg->n_passthru, 1);
    assert_string_equal(cfg->passthru_val[0], "SSL");

    assert_int_equal(aiq_config_set(cfg, "kafka.rdkafka.fetch.wait.max.ms", "50", &err), 0);
    assert_int_equal(cfg->n_passthru, 2);
    assert_string_equal(cfg->passthru_key[1], "fetch.wait.max.ms");

    assert_int_equal(aiq_config_set(cfg, "kafka.rdkafka.", "x", &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "kafka.rdkafka."));
    assert_int_equal(cfg->n_passthru, 2);
}

static void config_passthru_is_bounded(void **state)
{
    aiq_config_t *cfg = *state;
    aiq_err_t err = {0};
    char key[64];
    for (int i = 0; i < AIQ_CONFIG_PASSTHRU_MAX; i++) {
        snprintf(key, sizeof(key), "kafka.rdkafka.p%d", i);
        assert_int_equal(aiq_config_set(cfg, key, "v", &err), 0);
    }
    assert_int_equal(cfg->n_passthru, AIQ_CONFIG_PASSTHRU_MAX);
    assert_int_equal(aiq_config_set(cfg, "kafka.rdkafka.one.too.many", "v", &err), AIQ_ETOOBIG);
    assert_non_null(strstr(err.msg, "kafka.rdkafka.one.too.many"));
    assert_int_equal(cfg->n_passthru, AIQ_CONFIG_PASSTHRU_MAX);
    /* Replacing an existing one still works at the cap. */
    assert_int_equal(aiq_config_set(cfg, "kafka.rdkafka.p0", "w", &err), 0);
    assert_string_equal(cfg->passthru_val[0], "w");
}

static void config_load_file(void **state)
{
    aiq_config_t *cfg = *state;
    char path[64];
    write_tmp(path, sizeof(path),
              "# aiq worker\n"
              "\n"
              "   \n"
              "kafka.brokers = broker-a:9092\n"
              "  worker.max_inflight=25  \n"
              "\t# indented comment\n"
              "kafka.topic_prefix = prod.aiq.\r\n"
              "kafka.rdkafka.security.protocol = SASL_SSL\n"
              "bedrock.default_model = a = b\n"
              "log.level = warn"); /* no final newline */
    aiq_err_t err = {0};
    int rc = aiq_config_load_file(cfg, path, &err);
    unlink(path);
    if (rc)
        print_error("%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_string_equal(cfg->brokers, "broker-a:9092");
    assert_int_equal(cfg->max_inflight, 25);
    assert_string_equal(cfg->topic_prefix, "prod.aiq.");
    assert_int_equal(cfg->n_passthru, 1);
    assert_string_equal(cfg->passthru_val[0], "SASL_SSL");
    assert_string_equal(cfg->default_model, "a = b"); /* split at the first '=' */
    assert_string_equal(cfg->log_level, "warn");
    assert_int_equal(cfg->backlog, 500); /* untouched settings keep their defaults */
}

static void expect_file_error(aiq_config_t *cfg, const char *text, int code, int line,
                              const char *also)
{
    char path[64], where[96];
    write_tmp(path, sizeof(path), text);
    aiq_err_t err = {0};
    int rc = aiq_config_load_file(cfg, path, &err);
    unlink(path);
    snprintf(where, sizeof(where), "%s:%d: ", path, line);
    if (rc != code || !strstr(err.msg, where) || !strstr(err.msg, also))
        print_error("rc=%d msg=%s (want %s ... %s)\n", rc, err.msg, where, also);
    assert_int_equal(rc, code);
    assert_int_equal(err.code, code);
    assert_non_null(strstr(err.msg, where));
    assert_non_null(strstr(err.msg, also));
}

static void config_load_file_reports_line(void **state)
{
    aiq_config_t *cfg = *state;
    expect_file_error(cfg, "# ok\nworker.backlog = 7\nthis line has no equals\n", AIQ_EINVAL, 3,
                      "key = value");
    expect_file_error(cfg, "\n\n\n\nworker.max_inflight = 0\n", AIQ_EINVAL, 5,
                      "worker.max_inflight");
    expect_file_error(cfg, "no.such.key = 1\n", AIQ_EINVAL, 1, "no.such.key");
    expect_file_error(cfg, "kafka.brokers =\n", AIQ_EINVAL, 1, "kafka.brokers");

    /* A line longer than the line buffer is refused, not split into two settings. */
    size_t n = 5000;
    char *text = malloc(n + 32);
    assert_non_null(text);
    int off = snprintf(text, n + 32, "worker.id = x\nworker.id = ");
    memset(text + off, 'a', n);
    memcpy(text + off + n, "\n", 2);
    expect_file_error(cfg, text, AIQ_ETOOBIG, 2, "longer");
    free(text);

    aiq_err_t err = {0};
    assert_int_equal(aiq_config_load_file(cfg, "/nonexistent/aiq.conf", &err), AIQ_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent/aiq.conf"));
}

static void config_load_env(void **state)
{
    aiq_config_t *cfg = *state;
    aiq_err_t err = {0};
    unsetenv("AIQ_BEDROCK_REGION");
    setenv("AIQ_WORKER_MAX_INFLIGHT", "33", 1);
    setenv("AWS_REGION", "eu-central-1", 1);
    setenv("AIQ_KAFKA_BROKERS", "env-broker:9092", 1);
    int rc = aiq_config_load_env(cfg, &err);
    if (rc)
        print_error("%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg->max_inflight, 33);
    assert_string_equal(cfg->region, "eu-central-1");
    assert_string_equal(cfg->brokers, "env-broker:9092");

    /* AIQ_BEDROCK_REGION wins over AWS_REGION. */
    setenv("AIQ_BEDROCK_REGION", "ap-south-1", 1);
    assert_int_equal(aiq_config_load_env(cfg, &err), 0);
    assert_string_equal(cfg->region, "ap-south-1");

    /* A bad value names the environment variable and the key. */
    setenv("AIQ_WORKER_MAX_INFLIGHT", "lots", 1);
    assert_int_equal(aiq_config_load_env(cfg, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "AIQ_WORKER_MAX_INFLIGHT"));
    assert_non_null(strstr(err.msg, "worker.max_inflight"));
    assert_int_equal(cfg->max_inflight, 33);

    unsetenv("AIQ_WORKER_MAX_INFLIGHT");
    unsetenv("AWS_REGION");
    unsetenv("AIQ_BEDROCK_REGION");
    unsetenv("AIQ_KAFKA_BROKERS");
}

static void config_dump_hides_secrets(void **state)
{
    aiq_config_t *cfg = *state;
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_set(cfg, "kafka.rdkafka.security.protocol", "SASL_SSL", &err), 0);
    assert_int_equal(aiq_config_set(cfg, "kafka.rdkafka.sasl.password", "hunter2", &err), 0);
    assert_int_equal(aiq_config_set(cfg, "kafka.rdkafka.ssl.key.password", "s3cr3t-key", &err), 0);
    assert_int_equal(
        aiq_config_set(cfg, "kafka.rdkafka.sasl.oauthbearer.client.secret", "oauth-xyz", &err), 0);
    assert_int_equal(aiq_config_set(cfg, "worker.max_inflight", "42", &err), 0);

    char *text = dump(cfg, AIQ_CFG_ALL);
    assert_non_null(strstr(text, "worker.max_inflight = 42\n"));
    assert_non_null(strstr(text, "kafka.brokers = 127.0.0.1:9092\n"));
    assert_non_null(strstr(text, "kafka.rdkafka.security.protocol = SASL_SSL\n"));
    assert_non_null(strstr(text, "kafka.rdkafka.sasl.password = (hidden)\n"));
    assert_non_null(strstr(text, "kafka.rdkafka.ssl.key.password = (hidden)\n"));
    assert_null(strstr(text, "hunter2"));
    assert_null(strstr(text, "s3cr3t-key"));
    assert_null(strstr(text, "oauth-xyz"));
    free(text);

    /* Scope filters table entries: the client does not see worker-only settings. */
    text = dump(cfg, AIQ_CFG_CLIENT);
    assert_non_null(strstr(text, "kafka.brokers = "));
    assert_non_null(strstr(text, "worker.default_timeout_ms = 45000\n"));
    assert_null(strstr(text, "worker.max_inflight"));
    assert_null(strstr(text, "hunter2"));
    free(text);
}

static void config_help_lists_env_and_bounds(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    aiq_config_print_help(f, AIQ_CFG_WORKER);
    assert_int_equal(fclose(f), 0);
    assert_non_null(strstr(buf, "worker.max_inflight"));
    assert_non_null(strstr(buf, "range 1..10000, env AIQ_WORKER_MAX_INFLIGHT"));
    assert_non_null(strstr(buf, "env AIQ_KAFKA_BROKERS"));
    assert_non_null(strstr(buf, "kafka.rdkafka.<name>"));
    free(buf);
}

static void config_free_is_idempotent(void **state)
{
    (void)state;
    aiq_config_t cfg;
    assert_int_equal(aiq_config_init(&cfg), 0);
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_set(&cfg, "kafka.rdkafka.a", "b", &err), 0);
    aiq_config_free(&cfg);
    assert_null(cfg.brokers);
    assert_int_equal(cfg.n_passthru, 0);
    aiq_config_free(&cfg); /* second free: nothing left to release */
    aiq_config_free(NULL);
}

#define CFG_TEST(f) cmocka_unit_test_setup_teardown(f, setup_cfg, teardown_cfg)

int main(void)
{
    const struct CMUnitTest tests[] = {
        CFG_TEST(config_defaults),
        CFG_TEST(config_set_int_in_range),
        CFG_TEST(config_set_int_out_of_range),
        CFG_TEST(config_set_rejects_non_integer),
        CFG_TEST(config_set_rejects_unknown_key),
        CFG_TEST(config_set_strings),
        CFG_TEST(config_set_log_level),
        CFG_TEST(config_set_group_protocol),
        CFG_TEST(config_passthru),
        CFG_TEST(config_passthru_is_bounded),
        CFG_TEST(config_load_file),
        CFG_TEST(config_load_file_reports_line),
        CFG_TEST(config_load_env),
        CFG_TEST(config_dump_hides_secrets),
        cmocka_unit_test(config_help_lists_env_and_bounds),
        cmocka_unit_test(config_free_is_idempotent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
