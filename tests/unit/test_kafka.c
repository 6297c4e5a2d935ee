/* test_kafka.c — the Kafka layer (common/kafka.h): each role's conf carries exactly the
 * properties its client set before the layer existed, pass-through properties are applied in
 * the documented order and named when wrong, kafka.group_protocol (classic, consumer) and
 * who commits follow the librdkafka version, the log context reaches librdkafka's callbacks,
 * and partition counts and connecting work against librdkafka's mock cluster. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "aiq_err.h"
#include "config.h"
#include "kafka.h"
#include "log.h"

#include <librdkafka/rdkafka_mock.h>

static aiq_config_t *worker_cfg(void)
{
    static aiq_config_t cfg;
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_init(&cfg), 0);
    assert_int_equal(aiq_config_set(&cfg, "kafka.brokers", "b1:9092,b2:9092", &err), 0);
    assert_int_equal(aiq_config_set(&cfg, "worker.id", "w7", &err), 0);
    assert_int_equal(aiq_config_set(&cfg, "kafka.group_id", "g1", &err), 0);
    assert_int_equal(aiq_config_set(&cfg, "kafka.session_timeout_ms", "12000", &err), 0);
    assert_int_equal(aiq_config_set(&cfg, "worker.commit_interval_ms", "75", &err), 0);
    return &cfg;
}

static void expect_prop(rd_kafka_conf_t *conf, const char *name, const char *want)
{
    char v[512];
    size_t n = sizeof(v);
    if (rd_kafka_conf_get(conf, name, v, &n) != RD_KAFKA_CONF_OK)
        fail_msg("%s is not a property", name);
    if (strcmp(v, want) != 0)
        fail_msg("%s = '%s', want '%s'", name, v, want);
}

static rd_kafka_conf_t *build(aiq_kafka_role_t role, const aiq_kafka_params_t *pa)
{
    rd_kafka_conf_t *conf = NULL;
    aiq_err_t err = {0};
    int rc = aiq_kafka_conf_new(&conf, role, pa, &err);
    if (rc)
        fail_msg("role %d: %s", (int)role, err.msg);
    return conf;
}

static void kafka_worker_consumer_props(void **state)
{
    (void)state;
    aiq_config_t *cfg = worker_cfg();
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_set(cfg, "kafka.group_instance_id", "pod-3", &err), 0);
    aiq_kafka_params_t pa = {.brokers = cfg->brokers, .cfg = cfg};
    rd_kafka_conf_t *conf = build(AIQ_KAFKA_WORKER_CONSUMER, &pa);
    expect_prop(conf, "bootstrap.servers", "b1:9092,b2:9092");
    expect_prop(conf, "client.id", "w7");
    expect_prop(conf, "group.id", "g1");
    expect_prop(conf, "group.instance.id", "pod-3");
    expect_prop(conf, "partition.assignment.strategy", "cooperative-sticky");
    expect_prop(conf, "session.timeout.ms", "12000");
    /* The worker commits itself from librdkafka 2.10 on (kafka_worker_commits_...). */
    expect_prop(conf, "enable.auto.commit", aiq_kafka_worker_commits(0) ? "false" : "true");
    expect_prop(conf, "auto.commit.interval.ms", "75");
    expect_prop(conf, "enable.auto.offset.store", "false");
    expect_prop(conf, "auto.offset.reset", "smallest"); /* librdkafka's name for earliest */
    expect_prop(conf, "fetch.wait.max.ms", "50");
    expect_prop(conf, "queued.max.messages.kbytes", "2048");
    expect_prop(conf, "max.partition.fetch.bytes", "262144");
    rd_kafka_conf_destroy(conf);
    aiq_config_free(cfg);
}

#define V2_0_2  0x020002ff /* Debian 12's librdkafka */
#define V2_10_0 0x020a00ff

static int linked_has_kip848(void)
{
    return rd_kafka_version() >= AIQ_RDKAFKA_KIP848;
}

/* Builds the worker consumer's conf as if librdkafka were `version`; NULL with err on a
 * refusal. */
static rd_kafka_conf_t *consumer_conf(const aiq_config_t *cfg, int version, aiq_err_t *err)
{
    rd_kafka_conf_t *conf = NULL;
    aiq_kafka_params_t pa = {.brokers = cfg->brokers, .cfg = cfg, .rdkafka_version = version};
    return aiq_kafka_conf_new(&conf, AIQ_KAFKA_WORKER_CONSUMER, &pa, err) ? NULL : conf;
}

/* kafka.group_protocol=consumer (KIP-848): no assignor, session or heartbeat of the
 * worker's (librdkafka's defaults stay), static membership still set, and the consumer is
 * created from it. */
static void kafka_group_protocol_consumer_leaves_them_to_the_broker(void **state)
{
    (void)state;
    if (!linked_has_kip848())
        skip(); /* linked against a librdkafka without group.protocol */
    aiq_config_t *cfg = worker_cfg();
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_set(cfg, "kafka.group_protocol", "consumer", &err), 0);
    assert_int_equal(aiq_config_set(cfg, "kafka.group_instance_id", "pod-3", &err), 0);
    rd_kafka_conf_t *conf = consumer_conf(cfg, 0, &err);
    assert_non_null(conf);
    expect_prop(conf, "group.protocol", "consumer");
    expect_prop(conf, "group.instance.id", "pod-3");
    expect_prop(conf, "session.timeout.ms", "45000"); /* librdkafka's default: not ours */
    expect_prop(conf, "heartbeat.interval.ms", "3000");
    expect_prop(conf, "partition.assignment.strategy", "range,roundrobin");
    expect_prop(conf, "enable.auto.commit", "false");
    char errstr[256];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk)
        fail_msg("librdkafka refuses the consumer conf: %s", errstr);
    rd_kafka_destroy(rk);
    aiq_config_free(cfg);
}

static void kafka_group_protocol_consumer_refuses_classic_options(void **state)
{
    (void)state;
    static const char *const forbidden[][2] = {{"session.timeout.ms", "30000"},
                                               {"heartbeat.interval.ms", "3000"},
                                               {"partition.assignment.strategy", "range"},
                                               {"group.protocol.type", "consumer"}};
    for (size_t i = 0; i < sizeof(forbidden) / sizeof(*forbidden); i++) {
        aiq_config_t *cfg = worker_cfg();
        aiq_err_t err = {0};
        char key[128];
        snprintf(key, sizeof(key), "kafka.rdkafka.%s", forbidden[i][0]);
        assert_int_equal(aiq_config_set(cfg, key, forbidden[i][1], &err), 0);
        rd_kafka_conf_t *conf = consumer_conf(cfg, V2_10_0, &err); /* classic passes them */
        assert_non_null(conf);
        rd_kafka_conf_destroy(conf);
        assert_int_equal(aiq_config_set(cfg, "kafka.group_protocol", "consumer", &err), 0);
        assert_null(consumer_conf(cfg, AIQ_RDKAFKA_KIP848, &err));
        assert_int_equal(err.code, AIQ_EINVAL);
        assert_non_null(strstr(err.msg, key));
        assert_non_null(strstr(err.msg, "kafka.group_protocol=consumer"));
        assert_non_null(strstr(err.msg, "group.consumer.session.timeout.ms"));
        aiq_config_free(cfg);
    }
}

static void kafka_group_protocol_consumer_needs_librdkafka_2_12(void **state)
{
    (void)state;
    aiq_config_t *cfg = worker_cfg();
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_set(cfg, "kafka.group_protocol", "consumer", &err), 0);
    assert_null(consumer_conf(cfg, V2_0_2, &err));
    assert_non_null(strstr(err.msg, "librdkafka >= 2.12.0"));
    assert_non_null(strstr(err.msg, "has 2.0.2"));
    assert_null(consumer_conf(cfg, AIQ_RDKAFKA_KIP848 - 1, &err));
    aiq_config_free(cfg);
}

static void kafka_group_protocol_only_through_its_key(void **state)
{
    (void)state;
    aiq_config_t *cfg = worker_cfg();
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_set(cfg, "kafka.rdkafka.group.protocol", "consumer", &err), 0);
    assert_null(consumer_conf(cfg, 0, &err));
    assert_non_null(strstr(err.msg, "set kafka.group_protocol"));
    aiq_config_free(cfg);
}

/* librdkafka before 2.10 could lose the assignment on a commit during a cooperative
 * rebalance: it auto-commits (between rebalances only); from 2.10 the worker commits. */
static void kafka_worker_commits_from_librdkafka_2_10(void **state)
{
    (void)state;
    aiq_config_t *cfg = worker_cfg();
    aiq_err_t err = {0};
    assert_int_equal(aiq_kafka_worker_commits(V2_0_2), 0);
    assert_int_equal(aiq_kafka_worker_commits(V2_10_0), 1);
    rd_kafka_conf_t *conf = consumer_conf(cfg, V2_0_2, &err);
    assert_non_null(conf);
    expect_prop(conf, "enable.auto.commit", "true");
    expect_prop(conf, "auto.commit.interval.ms", "75");
    rd_kafka_conf_destroy(conf);
    conf = consumer_conf(cfg, V2_10_0, &err);
    assert_non_null(conf);
    expect_prop(conf, "enable.auto.commit", "false");
    rd_kafka_conf_destroy(conf);
    aiq_config_free(cfg);
}

static void kafka_worker_producer_and_follower_props(void **state)
{
    (void)state;
    aiq_config_t *cfg = worker_cfg();
    aiq_kafka_params_t pa = {.brokers = cfg->brokers, .cfg = cfg};
    rd_kafka_conf_t *conf = build(AIQ_KAFKA_WORKER_PRODUCER, &pa);
    expect_prop(conf, "client.id", "w7-producer");
    expect_prop(conf, "enable.idempotence", "true");
    expect_prop(conf, "linger.ms", "5");
    expect_prop(conf, "compression.type", "lz4");
    expect_prop(conf, "message.timeout.ms", "120000");
    rd_kafka_conf_destroy(conf);

    conf = build(AIQ_KAFKA_BREAKER_FOLLOWER, &pa);
    expect_prop(conf, "client.id", "aiq-breakers");
    expect_prop(conf, "group.id", "aiq-breakers-w7");
    expect_prop(conf, "enable.auto.commit", "false");
    expect_prop(conf, "fetch.wait.max.ms", "100");
    expect_prop(conf, "allow.auto.create.topics", "false");
    rd_kafka_conf_destroy(conf);
    aiq_config_free(cfg);
}

static void kafka_library_and_cli_props(void **state)
{
    (void)state;
    aiq_kafka_params_t pa = {.brokers = "h:1"};
    rd_kafka_conf_t *conf = build(AIQ_KAFKA_JOB_PRODUCER, &pa);
    expect_prop(conf, "client.id", "aiq-producer");
    expect_prop(conf, "enable.idempotence", "true");
    expect_prop(conf, "linger.ms", "5");
    expect_prop(conf, "compression.type", "lz4");
    rd_kafka_conf_destroy(conf);

    pa.group_id = "aiq-results-reader";
    conf = build(AIQ_KAFKA_READER, &pa);
    expect_prop(conf, "group.id", "aiq-results-reader");
    expect_prop(conf, "enable.auto.commit", "false");
    expect_prop(conf, "enable.auto.offset.store", "false");
    expect_prop(conf, "enable.partition.eof", "true");
    rd_kafka_conf_destroy(conf);

    pa.group_id = NULL;
    conf = build(AIQ_KAFKA_CLI_PRODUCER, &pa);
    expect_prop(conf, "enable.idempotence", "true");
    expect_prop(conf, "linger.ms", "5"); /* librdkafka's default: not the job producer's */
    expect_prop(conf, "compression.type", "none");
    rd_kafka_conf_destroy(conf);

    pa.client_id = "aiq-admin";
    pa.group_id = "aiq-workers";
    conf = build(AIQ_KAFKA_CLI_ADMIN, &pa);
    expect_prop(conf, "client.id", "aiq-admin");
    expect_prop(conf, "group.id", "aiq-workers");
    rd_kafka_conf_destroy(conf);
}

/* The worker's own properties win over kafka.rdkafka.*; elsewhere the user's win. */
static void kafka_passthrough_order(void **state)
{
    (void)state;
    aiq_config_t *cfg = worker_cfg();
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_set(cfg, "kafka.rdkafka.enable.auto.offset.store", "true", &err),
                     0);
    assert_int_equal(aiq_config_set(cfg, "kafka.rdkafka.client.rack", "az1", &err), 0);
    aiq_kafka_params_t pa = {.brokers = cfg->brokers, .cfg = cfg};
    rd_kafka_conf_t *conf = build(AIQ_KAFKA_WORKER_CONSUMER, &pa);
    expect_prop(conf, "enable.auto.offset.store", "false");
    expect_prop(conf, "client.rack", "az1");
    rd_kafka_conf_destroy(conf);

    conf = build(AIQ_KAFKA_READER, &pa);
    expect_prop(conf, "enable.auto.offset.store", "true");
    rd_kafka_conf_destroy(conf);

    const char *props[] = {"linger.ms", "50", "compression.type", "zstd", NULL};
    aiq_kafka_params_t lib = {.brokers = "h:1", .client_id = "svc", .props = props};
    conf = build(AIQ_KAFKA_JOB_PRODUCER, &lib);
    expect_prop(conf, "client.id", "svc");
    expect_prop(conf, "linger.ms", "50");
    expect_prop(conf, "compression.type", "zstd");
    rd_kafka_conf_destroy(conf);

    /* CLI tools: the environment (AIQ_KAFKA_RDKAFKA_* and -X) comes last; the library never
     * reads it. */
    setenv("AIQ_KAFKA_RDKAFKA_LINGER_MS", "77", 1);
    aiq_kafka_params_t cli = {.brokers = "h:1", .env_props = 1};
    conf = build(AIQ_KAFKA_CLI_PRODUCER, &cli);
    expect_prop(conf, "linger.ms", "77");
    rd_kafka_conf_destroy(conf);
    conf = build(AIQ_KAFKA_JOB_PRODUCER, &lib);
    expect_prop(conf, "linger.ms", "50");
    rd_kafka_conf_destroy(conf);
    unsetenv("AIQ_KAFKA_RDKAFKA_LINGER_MS");
    aiq_config_free(cfg);
}

static void kafka_bad_property_is_named(void **state)
{
    (void)state;
    aiq_config_t *cfg = worker_cfg();
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_set(cfg, "kafka.rdkafka.no.such.thing", "1", &err), 0);
    aiq_kafka_params_t pa = {.brokers = cfg->brokers, .cfg = cfg};
    rd_kafka_conf_t *conf = (rd_kafka_conf_t *)&pa; /* must stay untouched */
    assert_int_equal(aiq_kafka_conf_new(&conf, AIQ_KAFKA_WORKER_CONSUMER, &pa, &err), AIQ_EINVAL);
    assert_ptr_equal(conf, (rd_kafka_conf_t *)&pa);
    assert_non_null(strstr(err.msg, "kafka.rdkafka.no.such.thing"));
    aiq_config_free(cfg);

    const char *props[] = {"linger.ms", "not-a-number", NULL};
    aiq_kafka_params_t lib = {.brokers = "h:1", .props = props};
    assert_int_equal(aiq_kafka_conf_new(&conf, AIQ_KAFKA_JOB_PRODUCER, &lib, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "kafka property linger.ms"));

    setenv("AIQ_KAFKA_RDKAFKA_NO_SUCH", "x", 1);
    aiq_kafka_params_t cli = {.brokers = "h:1", .env_props = 1};
    assert_int_equal(aiq_kafka_conf_new(&conf, AIQ_KAFKA_CLI_ADMIN, &cli, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "AIQ_KAFKA_RDKAFKA_NO_SUCH"));
    unsetenv("AIQ_KAFKA_RDKAFKA_NO_SUCH");

    aiq_kafka_params_t none = {.brokers = ""};
    assert_int_equal(aiq_kafka_conf_new(&conf, AIQ_KAFKA_READER, &none, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "kafka.brokers"));
    aiq_kafka_params_t nocfg = {.brokers = "h:1"};
    assert_int_equal(aiq_kafka_conf_new(&conf, AIQ_KAFKA_WORKER_PRODUCER, &nocfg, &err),
                     AIQ_EINVAL);
    assert_int_equal(aiq_kafka_conf_new(&conf, AIQ_KAFKA_ROLE_COUNT, &nocfg, &err), AIQ_EINVAL);
}

/* The owner comes back through the opaque, whatever its layout (the log is not first). */
typedef struct owner {
    int marker;
    aiq_kafka_ctx_t kctx;
} owner_t;

/* librdkafka's log lines (from its own threads) go to the context's log. */
static int file_has(FILE *f, const char *a, const char *b)
{
    char line[4096];
    rewind(f);
    while (fgets(line, sizeof(line), f))
        if (strstr(line, a) && strstr(line, b))
            return 1;
    return 0;
}

static void kafka_ctx_reaches_callbacks(void **state)
{
    (void)state;
    FILE *cap = tmpfile();
    assert_non_null(cap);
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(cap), 2);
    aiq_log_t *log = aiq_log_new("ctx-test", "i1", AIQ_LOG_DEBUG);
    owner_t o = {.marker = 42};
    o.kctx = (aiq_kafka_ctx_t){.log = log, .owner = &o};
    aiq_kafka_params_t pa = {.brokers = "127.0.0.1:1", .ctx = &o.kctx};
    rd_kafka_conf_t *conf = build(AIQ_KAFKA_CLI_PRODUCER, &pa);
    char errstr[256];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    assert_non_null(rk);
    owner_t *back = aiq_kafka_owner(rd_kafka_opaque(rk));
    assert_ptr_equal(back, &o);
    assert_int_equal(back->marker, 42);
    assert_null(aiq_kafka_owner(NULL));
    int seen = 0;
    for (int i = 0; i < 100 && !seen; i++) { /* port 1 refuses at once */
        rd_kafka_poll(rk, 20);
        seen = file_has(cap, "\"component\":\"ctx-test\"", "librdkafka");
    }
    rd_kafka_destroy(rk);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(cap);
    aiq_log_free(log);
    assert_true(seen);
}

static void kafka_partition_count_and_connect_on_mock_cluster(void **state)
{
    (void)state;
    char errstr[256];
    rd_kafka_conf_t *mconf = rd_kafka_conf_new();
    rd_kafka_t *mrk = rd_kafka_new(RD_KAFKA_PRODUCER, mconf, errstr, sizeof(errstr));
    assert_non_null(mrk);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(mrk, 3);
    assert_non_null(mc);
    assert_int_equal(rd_kafka_mock_topic_create(mc, "t.three", 3, 1), 0);

    aiq_kafka_params_t pa = {.brokers = rd_kafka_mock_cluster_bootstraps(mc), .group_id = "g"};
    rd_kafka_conf_t *conf = build(AIQ_KAFKA_READER, &pa);
    rd_kafka_t *rk = NULL;
    aiq_err_t err = {0};
    assert_int_equal(aiq_kafka_connect(&rk, RD_KAFKA_CONSUMER, conf, 10000, &err), 0);
    assert_non_null(rk);
    int n = 0;
    assert_int_equal(aiq_kafka_partition_count(rk, "t.three", 5000, &n, &err), 0);
    assert_int_equal(n, 3);
    /* The mock creates topics on request; a broker without it answers like this. */
    rd_kafka_mock_topic_set_error(mc, "t.missing", RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
    n = -5;
    int rc = aiq_kafka_partition_count(rk, "t.missing", 5000, &n, &err);
    assert_int_equal(rc, AIQ_ENOTFOUND);
    assert_int_equal(n, -5);
    assert_non_null(strstr(err.msg, "t.missing"));
    rd_kafka_destroy(rk);

    /* Every broker down: the connect gives up with the reason instead of hanging. */
    for (int b = 1; b <= 3; b++)
        rd_kafka_mock_broker_set_down(mc, b);
    conf = build(AIQ_KAFKA_CLI_ADMIN, &pa);
    rk = NULL;
    assert_int_equal(aiq_kafka_connect(&rk, RD_KAFKA_PRODUCER, conf, 1500, &err), AIQ_ETIMEDOUT);
    assert_null(rk);
    assert_non_null(strstr(err.msg, "no answer from Kafka within 1 s"));
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(mrk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kafka_worker_consumer_props),
        cmocka_unit_test(kafka_group_protocol_consumer_leaves_them_to_the_broker),
        cmocka_unit_test(kafka_group_protocol_consumer_refuses_classic_options),
        cmocka_unit_test(kafka_group_protocol_consumer_needs_librdkafka_2_12),
        cmocka_unit_test(kafka_group_protocol_only_through_its_key),
        cmocka_unit_test(kafka_worker_commits_from_librdkafka_2_10),
        cmocka_unit_test(kafka_worker_producer_and_follower_props),
        cmocka_unit_test(kafka_library_and_cli_props),
        cmocka_unit_test(kafka_passthrough_order),
        cmocka_unit_test(kafka_bad_property_is_named),
        cmocka_unit_test(kafka_ctx_reaches_callbacks),
        cmocka_unit_test(kafka_partition_count_and_connect_on_mock_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
