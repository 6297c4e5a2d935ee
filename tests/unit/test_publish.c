/* test_publish.c — the worker's producer (worker/kafka/publish.h) against librdkafka's mock
 * cluster on a real uv loop: records are acknowledged once each, a retriable produce error is
 * retried and still acknowledged once without duplicates, a permanent one is reported once
 * with its reason, and a record that cannot be queued is refused at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "aiq_err.h"
#include "config.h"
#include "log.h"
#include "publish.h"

#include <librdkafka/rdkafka_mock.h>

#define PRODUCE_API 0 /* Kafka protocol ApiKey of Produce */
#define TOPIC       "aiq.results"
#define MAX_RECORDS 512

typedef struct fixture {
    rd_kafka_t *mrk;
    rd_kafka_mock_cluster_t *mc;
    aiq_config_t cfg;
    aiq_log_t *log;
    uv_loop_t loop;
    uv_timer_t give_up;
    aiq_publisher_t *pub;
    int want, reports, failed, permanent;
    int per_record[MAX_RECORDS]; /* delivery callbacks of each record */
    char last_err[256];
    int fatal;
} fixture_t;

static void on_fatal(void *opaque, const char *errstr)
{
    fixture_t *f = opaque;
    f->fatal++;
    snprintf(f->last_err, sizeof(f->last_err), "%s", errstr);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    char errstr[256];
    f->mrk = rd_kafka_new(RD_KAFKA_PRODUCER, rd_kafka_conf_new(), errstr, sizeof(errstr));
    f->mc = rd_kafka_mock_cluster_new(f->mrk, 3);
    if (!f->mc || rd_kafka_mock_topic_create(f->mc, TOPIC, 2, 3))
        return -1;
    aiq_err_t err = {0};
    if (aiq_config_init(&f->cfg) ||
        aiq_config_set(&f->cfg, "kafka.brokers", rd_kafka_mock_cluster_bootstraps(f->mc), &err) ||
        aiq_config_set(&f->cfg, "worker.id", "test-w", &err))
        return -1;
    f->log = aiq_log_new("test", "publish", AIQ_LOG_WARN);
    uv_loop_init(&f->loop);
    uv_timer_init(&f->loop, &f->give_up);
    if (aiq_publisher_new(&f->pub, &f->loop, &f->cfg, f->log, on_fatal, f, &err)) {
        fprintf(stderr, "publisher: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    aiq_publisher_free(f->pub);
    uv_close((uv_handle_t *)&f->give_up, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&f->loop);
    aiq_config_free(&f->cfg);
    aiq_log_free(f->log);
    rd_kafka_mock_cluster_destroy(f->mc);
    rd_kafka_destroy(f->mrk);
    free(f);
    return rc; /* a handle left open fails the test */
}

typedef struct rec {
    fixture_t *f;
    int i;
} rec_t;

static rec_t recs[MAX_RECORDS];

static void on_delivered(void *opaque, rd_kafka_resp_err_t err, int permanent, const char *errstr)
{
    rec_t *r = opaque;
    fixture_t *f = r->f;
    f->per_record[r->i]++;
    f->reports++;
    if (err) {
        f->failed++;
        f->permanent += permanent;
        snprintf(f->last_err, sizeof(f->last_err), "%s", errstr);
    }
    if (f->reports >= f->want)
        uv_stop(&f->loop);
}

static void on_give_up(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void send_n(fixture_t *f, int n, size_t vlen)
{
    static char val[2 << 20];
    memset(val, 'x', sizeof(val));
    aiq_err_t err = {0};
    for (int i = 0; i < n; i++) {
        char key[32];
        snprintf(key, sizeof(key), "job-%d", i);
        recs[i] = (rec_t){f, i};
        assert_int_equal(aiq_publisher_send(f->pub, TOPIC, key, strlen(key), val, vlen, NULL,
                                            on_delivered, &recs[i], &err),
                         0);
    }
    f->want += n;
}

/* Runs the loop until every report came (or 30 s passed: then the counts tell). */
static void run_until_reported(fixture_t *f)
{
    uv_timer_start(&f->give_up, on_give_up, 30000, 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&f->give_up);
}

/* Records the cluster holds in TOPIC (the high watermarks' sum). */
static int64_t stored(fixture_t *f)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(f->mc), errstr,
                      sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    int64_t total = 0;
    for (int p = 0; p < 2; p++) {
        int64_t lo = 0, hi = 0;
        assert_int_equal(rd_kafka_query_watermark_offsets(rk, TOPIC, p, &lo, &hi, 10000), 0);
        total += hi - lo;
    }
    rd_kafka_destroy(rk);
    return total;
}

static void each_reported_once(const fixture_t *f, int n)
{
    for (int i = 0; i < n; i++)
        if (f->per_record[i] != 1)
            fail_msg("record %d reported %d times", i, f->per_record[i]);
}

static void publish_acknowledges_each_record_once(void **state)
{
    fixture_t *f = *state;
    send_n(f, 200, 100);
    run_until_reported(f);
    assert_int_equal(f->reports, 200);
    assert_int_equal(f->failed, 0);
    each_reported_once(f, 200);
    assert_int_equal(aiq_publisher_outq(f->pub), 0);
    assert_int_equal(stored(f), 200);
}

/* NOT_LEADER and a timeout are retriable: librdkafka retries and the idempotent producer
 * keeps the retries from writing any record twice. Each leader answers its first two
 * produce requests with an error; the emptied error stacks prove they were retried. */
static void publish_retriable_error_is_retried(void **state)
{
    fixture_t *f = *state;
    for (int32_t p = 0; p < 2; p++) {
        assert_int_equal(rd_kafka_mock_partition_set_leader(f->mc, TOPIC, p, p + 1), 0);
        assert_int_equal(
            rd_kafka_mock_broker_push_request_error_rtts(f->mc, p + 1, PRODUCE_API, 2,
                                                         RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                                         0, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 0),
            0);
    }
    send_n(f, 50, 100);
    run_until_reported(f);
    assert_int_equal(f->reports, 50);
    assert_int_equal(f->failed, 0);
    each_reported_once(f, 50);
    assert_int_equal(stored(f), 50);
    assert_int_equal(f->fatal, 0);
    for (int32_t b = 1; b <= 2; b++) {
        size_t left = 99;
        assert_int_equal(rd_kafka_mock_broker_error_stack_cnt(f->mc, b, PRODUCE_API, &left), 0);
        assert_int_equal(left, 0);
    }
}

/* A permanent error fails the record once, saying why, and says it will never succeed. */
static void publish_permanent_error_reported_once(void **state)
{
    fixture_t *f = *state;
    rd_kafka_mock_push_request_errors(f->mc, PRODUCE_API, 1, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    send_n(f, 1, 100);
    run_until_reported(f);
    assert_int_equal(f->reports, 1);
    assert_int_equal(f->failed, 1);
    assert_int_equal(f->permanent, 1);
    each_reported_once(f, 1);
    assert_non_null(strstr(f->last_err, "too large"));
    /* The producer goes on: the next record is acknowledged. */
    f->reports = f->want = f->failed = f->permanent = 0;
    memset(f->per_record, 0, sizeof(f->per_record));
    send_n(f, 1, 100);
    run_until_reported(f);
    assert_int_equal(f->reports, 1);
    assert_int_equal(f->failed, 0);
}

/* Larger than message.max.bytes: refused by aiq_publisher_send itself, no callback; the
 * headers are freed (ASan sees a leak otherwise). Regression: without headers this path
 * passed NULL to rd_kafka_headers_destroy and crashed the worker. */
static void publish_refuses_what_cannot_be_queued(void **state)
{
    fixture_t *f = *state;
    static char big[(1 << 20) + 4096];
    aiq_err_t err = {0};
    recs[0] = (rec_t){f, 0};
    assert_int_equal(aiq_publisher_send(f->pub, TOPIC, "k", 1, big, sizeof(big), NULL, on_delivered,
                                        &recs[0], &err),
                     AIQ_ETOOBIG); /* no retry heals it */
    assert_non_null(strstr(err.msg, TOPIC));
    rd_kafka_headers_t *h = rd_kafka_headers_new(1);
    rd_kafka_header_add(h, "aiq-reason", -1, "x", 1);
    assert_int_equal(aiq_publisher_send(f->pub, TOPIC, "k", 1, big, sizeof(big), h, on_delivered,
                                        &recs[0], &err),
                     AIQ_ETOOBIG);
    assert_int_equal(aiq_publisher_flush(f->pub, 2000), 0);
    assert_int_equal(f->per_record[0], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(publish_acknowledges_each_record_once, setup, teardown),
        cmocka_unit_test_setup_teardown(publish_retriable_error_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(publish_permanent_error_reported_once, setup, teardown),
        cmocka_unit_test_setup_teardown(publish_refuses_what_cannot_be_queued, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
