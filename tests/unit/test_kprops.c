#include "aiq_err.h"
#include "config.h"
#include "kprops.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void kprops_env_name_maps_to_property(void **state)
{
    (void)state;
    char name[64];
    assert_int_equal(aiq_kprops_env_to_name("AIQ_KAFKA_RDKAFKA_SASL_USERNAME=u", name, 64), 1);
    assert_string_equal(name, "sasl.username");
    assert_int_equal(aiq_kprops_env_to_name("AIQ_KAFKA_RDKAFKA_SECURITY_PROTOCOL", name, 64), 1);
    assert_string_equal(name, "security.protocol");
    assert_int_equal(aiq_kprops_env_to_name("AIQ_KAFKA_BROKERS=x", name, 64), 0);
    assert_int_equal(aiq_kprops_env_to_name("AIQ_KAFKA_RDKAFKA_=x", name, 64), 0);
    /* A name that does not fit is refused, never truncated into another property. */
    assert_int_equal(aiq_kprops_env_to_name("AIQ_KAFKA_RDKAFKA_SSL_CA_LOCATION=x", name, 8), 0);
}

static void kprops_set_arg_round_trips_through_env(void **state)
{
    (void)state;
    aiq_err_t err = {0};
    assert_int_equal(aiq_kprops_set_arg("sasl.mechanisms=SCRAM-SHA-512", &err), 0);
    assert_string_equal(getenv("AIQ_KAFKA_RDKAFKA_SASL_MECHANISMS"), "SCRAM-SHA-512");
    assert_int_equal(aiq_kprops_set_arg("sasl.password=a=b", &err), 0); /* '=' in value */
    char **list = aiq_kprops_list_env();
    assert_non_null(list);
    int seen = 0;
    for (char **p = list; p[0]; p += 2) {
        if (!strcmp(p[0], "sasl.mechanisms") && !strcmp(p[1], "SCRAM-SHA-512"))
            seen |= 1;
        if (!strcmp(p[0], "sasl.password") && !strcmp(p[1], "a=b"))
            seen |= 2;
    }
    assert_int_equal(seen, 3);
    aiq_kprops_list_free(list);
    assert_int_equal(aiq_kprops_set_arg("novalue", &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "name=value"));
    assert_int_equal(aiq_kprops_set_arg("bad name=x", &err), AIQ_EINVAL);
    unsetenv("AIQ_KAFKA_RDKAFKA_SASL_MECHANISMS");
    unsetenv("AIQ_KAFKA_RDKAFKA_SASL_PASSWORD");
}

static void kprops_apply_env_names_bad_property(void **state)
{
    (void)state;
    setenv("AIQ_KAFKA_RDKAFKA_NO_SUCH_THING", "1", 1);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    aiq_err_t err = {0};
    assert_int_equal(aiq_kprops_apply_env(conf, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "AIQ_KAFKA_RDKAFKA_NO_SUCH_THING"));
    unsetenv("AIQ_KAFKA_RDKAFKA_NO_SUCH_THING");
    setenv("AIQ_KAFKA_RDKAFKA_SECURITY_PROTOCOL", "sasl_plaintext", 1);
    assert_int_equal(aiq_kprops_apply_env(conf, &err), 0);
    char v[64];
    size_t n = sizeof(v);
    assert_int_equal(rd_kafka_conf_get(conf, "security.protocol", v, &n), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "sasl_plaintext");
    unsetenv("AIQ_KAFKA_RDKAFKA_SECURITY_PROTOCOL");
    rd_kafka_conf_destroy(conf);
}

/* The worker's config: AIQ_KAFKA_RDKAFKA_* becomes kafka.rdkafka.*, and --print-config
 * hides the password. */
static void kprops_config_env_passthrough(void **state)
{
    (void)state;
    setenv("AIQ_KAFKA_RDKAFKA_SASL_PASSWORD", "s3cret", 1);
    aiq_config_t cfg;
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_init(&cfg), 0);
    assert_int_equal(aiq_config_load_env(&cfg, &err), 0);
    int found = 0;
    for (int i = 0; i < cfg.n_passthru; i++)
        found |=
            !strcmp(cfg.passthru_key[i], "sasl.password") && !strcmp(cfg.passthru_val[i], "s3cret");
    assert_true(found);
    char buf[16384] = "";
    FILE *f = fmemopen(buf, sizeof(buf) - 1, "w");
    aiq_config_dump(&cfg, f, AIQ_CFG_WORKER);
    fclose(f);
    assert_non_null(strstr(buf, "kafka.rdkafka.sasl.password = (hidden)"));
    assert_null(strstr(buf, "s3cret"));
    aiq_config_free(&cfg);
    unsetenv("AIQ_KAFKA_RDKAFKA_SASL_PASSWORD");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kprops_env_name_maps_to_property),
        cmocka_unit_test(kprops_set_arg_round_trips_through_env),
        cmocka_unit_test(kprops_apply_env_names_bad_property),
        cmocka_unit_test(kprops_config_env_passthrough),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
