/* test_consumer.c — the worker's consumer (worker/kafka/consumer.h) in a group on
 * librdkafka's mock cluster, on a real uv loop: every record arrives once, an offset is
 * committed only once every record below it was finished, and a partition leader change in
 * the middle of the stream loses and repeats nothing. */
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
#include "consumer.h"
#include "log.h"
#include "topics.h"

#include <librdkafka/rdkafka_mock.h>

#define PREFIX   "tc."
#define PARTS    2
#define MAX_RECS 256

typedef struct fixture {
    rd_kafka_t *mrk; /* owns the mock cluster; also the test's producer */
    rd_kafka_mock_cluster_t *mc;
    aiq_config_t cfg;
    aiq_log_t *log;
    uv_loop_t loop;
    uv_timer_t wait;
    aiq_consumer_t *c;
    char topic[AIQ_TOPIC_MAX]; /* the normal-priority job topic */
    int finish_at_once;        /* 1: aiq_consumer_done inside on_record */
    int n;                     /* records received */
    aiq_consumer_ref_t refs[MAX_RECS];
    int seen[PARTS][MAX_RECS]; /* deliveries per partition and offset */
    int (*until)(struct fixture *f);
} fixture_t;

static void on_record(void *opaque, rd_kafka_message_t *msg, const aiq_consumer_ref_t *ref)
{
    fixture_t *f = opaque;
    if (ref->partition >= 0 && ref->partition < PARTS && ref->offset >= 0 && ref->offset < MAX_RECS)
        f->seen[ref->partition][ref->offset]++;
    if (f->n < MAX_RECS)
        f->refs[f->n++] = *ref;
    rd_kafka_message_destroy(msg);
    if (f->finish_at_once)
        aiq_consumer_done(f->c, ref);
}

static void on_revoked(void *opaque, int prio, int32_t partition)
{
    (void)opaque;
    (void)prio;
    (void)partition;
}

static void produce(fixture_t *f, int32_t partition, int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(rd_kafka_producev(f->mrk, RD_KAFKA_V_TOPIC(f->topic),
                                           RD_KAFKA_V_PARTITION(partition),
                                           RD_KAFKA_V_VALUE("{}", 2), RD_KAFKA_V_END),
                         0);
    assert_int_equal(rd_kafka_flush(f->mrk, 10000), 0);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    char errstr[256];
    rd_kafka_conf_t *pconf = rd_kafka_conf_new();
    rd_kafka_conf_set(pconf, "test.mock.num.brokers", "3", errstr, sizeof(errstr));
    f->mrk = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, errstr, sizeof(errstr));
    f->mc = f->mrk ? rd_kafka_handle_mock_cluster(f->mrk) : NULL;
    if (!f->mc)
        return -1;
    for (int p = 0; p < AIQ_PRIO_COUNT; p++) {
        char t[AIQ_TOPIC_MAX];
        aiq_topic_jobs(PREFIX, (aiq_priority_t)p, t, sizeof(t));
        if (rd_kafka_mock_topic_create(f->mc, t, PARTS, 3))
            return -1;
    }
    aiq_topic_jobs(PREFIX, AIQ_PRIO_NORMAL, f->topic, sizeof(f->topic));
    aiq_err_t err = {0};
    if (aiq_config_init(&f->cfg) ||
        aiq_config_set(&f->cfg, "kafka.brokers", rd_kafka_mock_cluster_bootstraps(f->mc), &err) ||
        aiq_config_set(&f->cfg, "kafka.topic_prefix", PREFIX, &err) ||
        aiq_config_set(&f->cfg, "kafka.group_id", "tc-group", &err) ||
        aiq_config_set(&f->cfg, "worker.id", "tc-w", &err) ||
        aiq_config_set(&f->cfg, "worker.commit_interval_ms", "20", &err))
        return -1;
    f->log = aiq_log_new("test", "consumer", AIQ_LOG_WARN);
    uv_loop_init(&f->loop);
    uv_timer_init(&f->loop, &f->wait);
    f->wait.data = f;
    aiq_consumer_hooks_t hooks = {.on_record = on_record, .on_revoked = on_revoked, .opaque = f};
    if (aiq_consumer_new(&f->c, &f->loop, &f->cfg, f->log, &hooks, &err) ||
        aiq_consumer_start(f->c, &err)) {
        fprintf(stderr, "consumer: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    aiq_consumer_close(f->c);
    uv_close((uv_handle_t *)&f->wait, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&f->loop);
    aiq_config_free(&f->cfg);
    aiq_log_free(f->log);
    rd_kafka_destroy(f->mrk);
    free(f);
    return rc; /* a handle left open fails the test */
}

static void on_wait(uv_timer_t *t)
{
    fixture_t *f = t->data;
    if (!f->until || f->until(f))
        uv_stop(t->loop);
}

static void on_cap(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* Runs the loop until cond holds (checked every 20 ms) or max_ms passed. */
static void run_until(fixture_t *f, int (*cond)(fixture_t *f), int max_ms)
{
    f->until = cond;
    uv_timer_start(&f->wait, on_wait, 20, 20);
    uv_timer_t cap;
    uv_timer_init(&f->loop, &cap);
    uv_timer_start(&cap, on_cap, (uint64_t)max_ms, 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&f->wait);
    uv_close((uv_handle_t *)&cap, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static int want_n;
static int got_n(fixture_t *f)
{
    return f->n >= want_n;
}

/* The group's committed offset of partition p of the normal topic (RD_KAFKA_OFFSET_INVALID
 * when none), asked of the coordinator by a client that never joins. */
static int64_t committed(fixture_t *f, int32_t p)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", f->cfg.brokers, errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "group.id", f->cfg.group_id, errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, f->topic, p);
    assert_int_equal(rd_kafka_committed(rk, l, 10000), 0);
    int64_t off = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return off;
}

/* Lets the consumer's auto-commit (every 20 ms) run for a while. */
static void settle(fixture_t *f)
{
    run_until(f, NULL, 300);
}

/* Runs the loop until partition p's committed offset is want (the auto-commit is
 * asynchronous; slow machines and sanitizers take longer), up to 15 s; returns the last
 * one seen. */
static int64_t committed_becomes(fixture_t *f, int32_t p, int64_t want)
{
    int64_t got = committed(f, p);
    for (int i = 0; i < 75 && got != want; i++) {
        run_until(f, NULL, 200);
        got = committed(f, p);
    }
    return got;
}

static void consumer_receives_each_record_once(void **state)
{
    fixture_t *f = *state;
    produce(f, 0, 30);
    produce(f, 1, 20);
    want_n = 50;
    run_until(f, got_n, 30000);
    assert_int_equal(f->n, 50);
    for (int o = 0; o < 30; o++)
        assert_int_equal(f->seen[0][o], 1);
    for (int o = 0; o < 20; o++)
        assert_int_equal(f->seen[1][o], 1);
    assert_int_equal(aiq_consumer_pending(f->c), 50);
    assert_true(aiq_consumer_joined(f->c));
    assert_int_equal(aiq_consumer_assigned(f->c), AIQ_PRIO_COUNT * PARTS);
}

static const aiq_consumer_ref_t *ref_at(fixture_t *f, int32_t p, int64_t offset)
{
    for (int i = 0; i < f->n; i++)
        if (f->refs[i].partition == p && f->refs[i].offset == offset)
            return &f->refs[i];
    fail_msg("no record at [%d]@%lld", p, (long long)offset);
    return NULL;
}

/* Nothing is committed for a record still running, nor past it while it runs. */
static void consumer_commits_only_finished_records(void **state)
{
    fixture_t *f = *state;
    produce(f, 0, 10);
    want_n = 10;
    run_until(f, got_n, 30000);
    assert_int_equal(f->n, 10);
    settle(f);
    assert_int_equal(committed(f, 0), RD_KAFKA_OFFSET_INVALID);

    /* 0..9 finish out of order, all but 4. */
    static const int order[] = {9, 1, 0, 3, 2, 8, 5, 7, 6};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
        aiq_consumer_done(f->c, ref_at(f, 0, order[i]));
    assert_int_equal(committed_becomes(f, 0, 4), 4);
    settle(f); /* and it stays there: 5..9 are finished, 4 is not */
    assert_int_equal(committed(f, 0), 4);
    assert_int_equal(aiq_consumer_pending(f->c), 1);

    aiq_consumer_done(f->c, ref_at(f, 0, 4));
    assert_int_equal(committed_becomes(f, 0, 10), 10);
    assert_int_equal(aiq_consumer_pending(f->c), 0);
}

/* The partition's leader moves to another broker between two halves of the stream: the
 * consumer follows it, every record arrives exactly once and all are committed. */
static void consumer_follows_leader_change(void **state)
{
    fixture_t *f = *state;
    f->finish_at_once = 1;
    assert_int_equal(rd_kafka_mock_partition_set_leader(f->mc, f->topic, 0, 1), 0);
    produce(f, 0, 40);
    want_n = 40;
    run_until(f, got_n, 30000);
    assert_int_equal(f->n, 40);

    assert_int_equal(rd_kafka_mock_partition_set_leader(f->mc, f->topic, 0, 3), 0);
    produce(f, 0, 40);
    want_n = 80;
    run_until(f, got_n, 30000);
    assert_int_equal(f->n, 80);
    for (int o = 0; o < 80; o++)
        if (f->seen[0][o] != 1)
            fail_msg("offset %d delivered %d times", o, f->seen[0][o]);
    assert_int_equal(committed_becomes(f, 0, 80), 80);
    assert_int_equal(aiq_consumer_pending(f->c), 0);
}

static char why[512];

static int is_ready(fixture_t *f)
{
    return !aiq_consumer_unready(f->c, why, sizeof(why));
}

static int kafka_unreachable(fixture_t *f)
{
    return aiq_consumer_unready(f->c, why, sizeof(why)) && strstr(why, "Kafka unreachable");
}

/* Every broker goes down with the assignment still held: the consumer is not ready, saying
 * Kafka is unreachable (librdkafka never reports the brokers' return, the probe finds it),
 * and ready again once they are back. */
static void consumer_unready_while_kafka_down(void **state)
{
    fixture_t *f = *state;
    assert_false(is_ready(f)); /* not joined yet */
    assert_non_null(strstr(why, "not yet joined"));
    run_until(f, is_ready, 30000);
    assert_true(is_ready(f));
    for (int32_t b = 1; b <= 3; b++)
        assert_int_equal(rd_kafka_mock_broker_set_down(f->mc, b), 0);
    run_until(f, kafka_unreachable, 30000);
    assert_true(kafka_unreachable(f));
    for (int32_t b = 1; b <= 3; b++)
        assert_int_equal(rd_kafka_mock_broker_set_up(f->mc, b), 0);
    run_until(f, is_ready, 60000);
    if (!is_ready(f))
        fail_msg("still not ready after the brokers came back: %s", why);
}

static aiq_consumer_t *member(fixture_t *f, aiq_config_t *cfg, const char *id)
{
    aiq_err_t err = {0};
    aiq_consumer_t *c = NULL;
    aiq_consumer_hooks_t hooks = {.on_record = on_record, .on_revoked = on_revoked, .opaque = f};
    assert_int_equal(aiq_config_init(cfg), 0);
    assert_int_equal(aiq_config_set(cfg, "kafka.brokers", f->cfg.brokers, &err), 0);
    assert_int_equal(aiq_config_set(cfg, "kafka.topic_prefix", "one.", &err), 0);
    assert_int_equal(aiq_config_set(cfg, "kafka.group_id", "tc-standby", &err), 0);
    assert_int_equal(aiq_config_set(cfg, "worker.id", id, &err), 0);
    assert_int_equal(aiq_consumer_new(&c, &f->loop, cfg, f->log, &hooks, &err), 0);
    assert_int_equal(aiq_consumer_start(c, &err), 0);
    return c;
}

static aiq_consumer_t *standby[2];

static int both_ready(fixture_t *f)
{
    (void)f;
    return !aiq_consumer_unready(standby[0], why, sizeof(why)) &&
           !aiq_consumer_unready(standby[1], why, sizeof(why));
}

/* More members than partitions (two members, one partition: the other topics of the prefix
 * answer "unknown topic"): the member the group gives nothing is a member all the same, and
 * ready. */
static void consumer_ready_with_an_empty_assignment(void **state)
{
    fixture_t *f = *state;
    char t[AIQ_TOPIC_MAX];
    aiq_topic_jobs("one.", AIQ_PRIO_CRITICAL, t, sizeof(t));
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, t, 1, 3), 0);
    for (int p = 1; p < AIQ_PRIO_COUNT; p++) {
        aiq_topic_jobs("one.", (aiq_priority_t)p, t, sizeof(t));
        rd_kafka_mock_topic_set_error(f->mc, t, RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
    }
    aiq_config_t cfg[2];
    standby[0] = member(f, &cfg[0], "tc-s0");
    standby[1] = member(f, &cfg[1], "tc-s1");
    run_until(f, both_ready, 40000);
    int ready = both_ready(f);
    int a0 = aiq_consumer_assigned(standby[0]), a1 = aiq_consumer_assigned(standby[1]);
    for (int i = 0; i < 2; i++) {
        aiq_consumer_close(standby[i]);
        aiq_config_free(&cfg[i]);
    }
    if (!ready)
        fail_msg("not both ready: %s (assigned %d and %d)", why, a0, a1);
    assert_int_equal(a0 + a1, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(consumer_receives_each_record_once, setup, teardown),
        cmocka_unit_test_setup_teardown(consumer_commits_only_finished_records, setup, teardown),
        cmocka_unit_test_setup_teardown(consumer_follows_leader_change, setup, teardown),
        cmocka_unit_test_setup_teardown(consumer_unready_while_kafka_down, setup, teardown),
        cmocka_unit_test_setup_teardown(consumer_ready_with_an_empty_assignment, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
