/* test_bridge.c — the queue→loop bridge (worker/kafka/bridge.h) on a real uv loop: it never
 * serves more than its budget in one loop turn and comes back on the next turn while work
 * is left, librdkafka's own wake-ups reach it through the pipe, and freeing it stops it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "aiq_err.h"
#include "bridge.h"

#include <librdkafka/rdkafka_mock.h>

/* A fake backlog: serve_one takes one item; per loop turn we count how many it took. */
typedef struct backlog {
    int left, served;
    int this_turn, max_turn, turns;
    uv_prepare_t prepare;
    uv_loop_t *loop;
} backlog_t;

static int serve_fake(void *opaque)
{
    backlog_t *b = opaque;
    if (b->left == 0) {
        uv_stop(b->loop); /* the bridge stops serving; nothing else keeps the test going */
        return 0;
    }
    b->left--;
    b->served++;
    b->this_turn++;
    return 1;
}

/* Runs once per loop turn, before the loop waits for I/O. */
static void on_prepare(uv_prepare_t *h)
{
    backlog_t *b = h->data;
    if (b->this_turn > b->max_turn)
        b->max_turn = b->this_turn;
    b->this_turn = 0;
    b->turns++;
}

static rd_kafka_t *bare_client(void)
{
    char errstr[256];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, rd_kafka_conf_new(), errstr, sizeof(errstr));
    assert_non_null(rk);
    return rk;
}

static void close_all(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT); /* runs the close callbacks; no handle may stay active */
    assert_int_equal(uv_loop_close(loop), 0);
}

static void bridge_serves_at_most_budget_per_turn(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    rd_kafka_t *rk = bare_client();
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    backlog_t b = {.left = 1000, .loop = &loop};
    uv_prepare_init(&loop, &b.prepare);
    b.prepare.data = &b;
    uv_prepare_start(&b.prepare, on_prepare);
    aiq_bridge_conf_t bc = {.queue = q, .budget = 64, .serve = serve_fake, .opaque = &b};
    aiq_bridge_t *br = NULL;
    aiq_err_t err = {0};
    assert_int_equal(aiq_bridge_new(&br, &loop, &bc, &err), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    on_prepare(&b.prepare); /* account the last turn */
    assert_int_equal(b.served, 1000);
    assert_true(b.max_turn <= 64);
    assert_true(b.max_turn > 0);
    /* 1000 / 64: 15 full passes, then one that found the backlog empty. */
    assert_int_equal(aiq_bridge_full_turns(br), 15);
    assert_true(b.turns >= 16);
    aiq_bridge_free(br);
    uv_close((uv_handle_t *)&b.prepare, NULL);
    close_all(&loop);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

static void bridge_rejects_bad_conf(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    backlog_t b = {.loop = &loop};
    aiq_bridge_t *br = NULL;
    aiq_err_t err = {0};
    aiq_bridge_conf_t bc = {.queue = NULL, .budget = 8, .serve = serve_fake, .opaque = &b};
    assert_int_equal(aiq_bridge_new(&br, &loop, &bc, &err), AIQ_EINVAL);
    rd_kafka_t *rk = bare_client();
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    bc = (aiq_bridge_conf_t){.queue = q, .budget = 0, .serve = serve_fake, .opaque = &b};
    assert_int_equal(aiq_bridge_new(&br, &loop, &bc, &err), AIQ_EINVAL);
    assert_null(br);
    aiq_bridge_free(NULL);
    close_all(&loop);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

/* Real wake-ups: delivery reports that librdkafka's threads put on the main queue. */
typedef struct reports {
    rd_kafka_queue_t *q;
    int acked, failed, want;
    uv_loop_t *loop;
} reports_t;

static int serve_reports(void *opaque)
{
    reports_t *r = opaque;
    rd_kafka_event_t *ev = rd_kafka_queue_poll(r->q, 0);
    if (!ev)
        return 0;
    if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_DR) {
        const rd_kafka_message_t *m;
        while ((m = rd_kafka_event_message_next(ev)))
            m->err ? r->failed++ : r->acked++;
    }
    rd_kafka_event_destroy(ev);
    if (r->acked + r->failed >= r->want)
        uv_stop(r->loop);
    return 1;
}

static void on_give_up(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void bridge_wakes_on_librdkafka_events(void **state)
{
    (void)state;
    char errstr[256];
    rd_kafka_t *mrk = bare_client();
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(mrk, 1);
    assert_non_null(mc);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers",
                                       rd_kafka_mock_cluster_bootstraps(mc), errstr,
                                       sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    rd_kafka_conf_set_events(conf, RD_KAFKA_EVENT_DR);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    assert_non_null(rk);

    uv_loop_t loop;
    uv_loop_init(&loop);
    reports_t r = {.q = rd_kafka_queue_get_main(rk), .want = 300, .loop = &loop};
    aiq_bridge_conf_t bc = {.queue = r.q, .budget = 4, .serve = serve_reports, .opaque = &r};
    aiq_bridge_t *br = NULL;
    aiq_err_t err = {0};
    assert_int_equal(aiq_bridge_new(&br, &loop, &bc, &err), 0);
    for (int i = 0; i < r.want; i++)
        assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("bridge.t"),
                                           RD_KAFKA_V_VALUE("v", 1), RD_KAFKA_V_END),
                         0);
    uv_timer_t give_up;
    uv_timer_init(&loop, &give_up);
    uv_timer_start(&give_up, on_give_up, 20000, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(r.acked, r.want);
    assert_int_equal(r.failed, 0);

    /* Freed: nothing is served any more, even with reports waiting. */
    aiq_bridge_free(br);
    r.want = 1000000;
    int acked = r.acked;
    rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("bridge.t"), RD_KAFKA_V_VALUE("v", 1), RD_KAFKA_V_END);
    rd_kafka_flush(rk, 5000);
    uv_close((uv_handle_t *)&give_up, NULL);
    close_all(&loop);
    assert_int_equal(r.acked, acked);
    rd_kafka_queue_destroy(r.q);
    rd_kafka_destroy(rk);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(mrk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bridge_serves_at_most_budget_per_turn),
        cmocka_unit_test(bridge_rejects_bad_conf),
        cmocka_unit_test(bridge_wakes_on_librdkafka_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
