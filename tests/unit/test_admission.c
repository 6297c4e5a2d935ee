/* Admission: what runs next across priorities and models, with fake hooks. */
#include "admission.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

typedef struct job {
    aiq_sched_node_t node; /* first: the hooks cast back */
    const char *model;
    int id;
    int started, finish_at_once;
    int64_t deadline_ms;
} job_t;

typedef struct fake {
    aiq_admission_t *a;
    job_t *order[64];
    int nstarted;
    int fetching[AIQ_ADM_PRIOS];
    int pauses;
} fake_t;

static fake_t *current;

static void on_start(void *opaque, aiq_sched_node_t *n)
{
    fake_t *f = opaque;
    job_t *j = (job_t *)n;
    j->started = 1;
    f->order[f->nstarted++] = j;
    if (j->finish_at_once)
        aiq_admission_finished(f->a, n, 0); /* re-enters admission from inside the hook */
}

static void on_fetching(void *opaque, int prio, bool on)
{
    fake_t *f = opaque;
    f->fetching[prio] = on;
    f->pauses += !on;
}

static bool on_expired(void *opaque, aiq_sched_node_t *n, int64_t now_ms)
{
    (void)opaque;
    return ((job_t *)n)->deadline_ms && ((job_t *)n)->deadline_ms <= now_ms;
}

static fake_t *fake_new(int64_t max_inflight, int64_t model_max, int64_t backlog)
{
    static fake_t f;
    memset(&f, 0, sizeof(f));
    for (int p = 0; p < AIQ_ADM_PRIOS; p++)
        f.fetching[p] = 1;
    aiq_admission_conf_t c = {.max_inflight = max_inflight,
                              .model_max_inflight = model_max,
                              .backlog = backlog,
                              .aging_ms = 1000};
    aiq_admission_hooks_t h = {on_start, on_fetching, on_expired, &f};
    assert_int_equal(aiq_admission_new(&f.a, &c, &h), 0);
    current = &f;
    return &f;
}

static void push(fake_t *f, job_t *j, int prio, int64_t now)
{
    aiq_admission_push(f->a, &j->node, prio, j->model, now);
}

/* A critical job of one model starts before older low jobs of another. */
static void admission_priority_across_models(void **state)
{
    (void)state;
    fake_t *f = fake_new(1, 0, 100);
    job_t busy = {.model = "a"}, low = {.model = "a", .id = 1}, crit = {.model = "b", .id = 2};
    push(f, &busy, 2, 0); /* takes the one slot */
    push(f, &low, 3, 10);
    push(f, &crit, 0, 20);
    assert_true(busy.started && !low.started && !crit.started);
    aiq_admission_finished(f->a, &busy.node, 30);
    assert_true(crit.started);
    assert_false(low.started);
    aiq_admission_finished(f->a, &crit.node, 40);
    assert_true(low.started);
    aiq_admission_free(f->a);
}

/* Aging holds across models too: a low job that waited long enough beats a fresh critical. */
static void admission_aging_across_models(void **state)
{
    (void)state;
    fake_t *f = fake_new(1, 0, 100);
    job_t busy = {.model = "a"}, low = {.model = "a", .id = 1}, crit = {.model = "b", .id = 2};
    push(f, &busy, 0, 0);
    push(f, &low, 3, 0);
    push(f, &crit, 0, 5000); /* low has waited 5 aging periods: level -1 beats 0 */
    aiq_admission_finished(f->a, &busy.node, 5000);
    assert_true(low.started);
    assert_false(crit.started);
    aiq_admission_free(f->a);
}

/* worker.model_max_inflight caps one model; the others use the remaining slots. */
static void admission_model_cap(void **state)
{
    (void)state;
    fake_t *f = fake_new(10, 2, 100);
    job_t a[3] = {{.model = "a"}, {.model = "a"}, {.model = "a"}}, b = {.model = "b"};
    for (int i = 0; i < 3; i++)
        push(f, &a[i], 2, i);
    push(f, &b, 3, 3);
    assert_true(a[0].started && a[1].started && b.started);
    assert_false(a[2].started);
    assert_int_equal(aiq_admission_inflight(f->a), 3);
    aiq_admission_finished(f->a, &a[0].node, 10);
    assert_true(a[2].started);
    aiq_admission_free(f->a);
}

/* A model whose calls never end holds at most its share: with the healthy model in use
 * (it had a job a moment ago), the hung one gets half; a throttled one arriving later gets
 * a third, and the healthy one keeps the rest. */
static void admission_sick_models_keep_to_their_share(void **state)
{
    (void)state;
    fake_t *f = fake_new(12, 0, 100);
    job_t ok0 = {.model = "ok", .finish_at_once = 1};
    push(f, &ok0, 2, 0);
    job_t hung[20], thr[20];
    for (int i = 0; i < 20; i++) {
        hung[i] = (job_t){.model = "hung"};
        push(f, &hung[i], 2, 1);
    }
    int running = 0;
    for (int i = 0; i < 20; i++)
        running += hung[i].started;
    assert_int_equal(running, 6); /* 12 / 2 models in use */
    for (int i = 0; i < 20; i++) {
        thr[i] = (job_t){.model = "thr"};
        push(f, &thr[i], 2, 2);
    }
    running = 0;
    for (int i = 0; i < 20; i++)
        running += thr[i].started;
    assert_int_equal(running, 4); /* 12 / 3 */
    job_t ok[5];
    for (int i = 0; i < 5; i++) {
        ok[i] = (job_t){.model = "ok", .finish_at_once = 1};
        push(f, &ok[i], 3, 100 + i); /* lower priority and younger than the sick backlog */
        assert_true(ok[i].started);
    }
    assert_int_equal(aiq_admission_inflight(f->a), 10);
    /* Once the healthy model has been idle a while, the sick ones may not grow: their
     * slots stay taken, but no new ones are handed out past the share of 2 models. */
    aiq_admission_pump(f->a, 100 + 20000);
    assert_int_equal(aiq_admission_inflight(f->a), 12);
    aiq_admission_free(f->a);
}

/* A single model (the common deployment) may use every slot. */
static void admission_single_model_uses_every_slot(void **state)
{
    (void)state;
    fake_t *f = fake_new(4, 0, 100);
    job_t j[6];
    for (int i = 0; i < 6; i++) {
        j[i] = (job_t){.model = "m"};
        push(f, &j[i], 2, i);
    }
    assert_int_equal(aiq_admission_inflight(f->a), 4);
    assert_int_equal(aiq_admission_len(f->a), 2);
    aiq_admission_free(f->a);
}

/* A priority pauses when its share is full and resumes at half. */
static void admission_pause_and_resume(void **state)
{
    (void)state;
    fake_t *f = fake_new(1, 0, 16); /* share: max(16/4, 1) = 4 */
    assert_int_equal(aiq_admission_prio_share(f->a), 4);
    job_t j[6];
    for (int i = 0; i < 6; i++) {
        j[i] = (job_t){.model = "m"};
        push(f, &j[i], 3, i);
    }
    /* one started, five queued: paused at the fourth queued */
    assert_int_equal(f->fetching[3], 0);
    assert_int_equal(f->fetching[0], 1);
    for (int i = 0; i < 3; i++)
        aiq_admission_finished(f->a, &f->order[i]->node, 10 + i); /* queue 5 -> 2 */
    assert_int_equal(aiq_admission_len_prio(f->a, 3), 2);
    assert_int_equal(f->fetching[3], 1);
    assert_int_equal(f->pauses, 1);
    aiq_admission_free(f->a);
}

/* The sweep starts expired jobs with every slot taken, and they count as in flight. */
static void admission_expire_ignores_slots(void **state)
{
    (void)state;
    fake_t *f = fake_new(1, 0, 100);
    job_t busy = {.model = "m"}, old = {.model = "m", .deadline_ms = 500},
          young = {.model = "m", .deadline_ms = 5000};
    push(f, &busy, 0, 0);
    push(f, &old, 1, 0);
    push(f, &young, 1, 0);
    assert_int_equal(aiq_admission_expire(f->a, 1000, 1000), 1);
    assert_true(old.started);
    assert_false(young.started);
    assert_int_equal(aiq_admission_inflight(f->a), 2);
    aiq_admission_free(f->a);
}

/* A released slot starts the next job while the first waits for its ack; the jobs waiting
 * for acks are bounded by max_unacked. */
static void admission_slot_frees_before_the_ack(void **state)
{
    (void)state;
    fake_t *f = fake_new(1, 0, 100);
    aiq_admission_conf_t c = {
        .max_inflight = 1, .max_unacked = 2, .backlog = 100, .aging_ms = 1000};
    aiq_admission_hooks_t h = {on_start, on_fetching, on_expired, f};
    aiq_admission_free(f->a);
    assert_int_equal(aiq_admission_new(&f->a, &c, &h), 0);
    job_t j[3] = {{.model = "m"}, {.model = "m"}, {.model = "m"}};
    for (int i = 0; i < 3; i++)
        push(f, &j[i], 2, i);
    assert_true(j[0].started && !j[1].started);
    aiq_admission_release(f->a, &j[0].node, 10); /* answer sent, ack pending */
    assert_true(j[1].started);
    assert_int_equal(aiq_admission_inflight(f->a), 1);
    assert_int_equal(aiq_admission_unacked(f->a), 2);
    aiq_admission_release(f->a, &j[1].node, 11);
    assert_false(j[2].started); /* two answers wait for their acks: the cap */
    aiq_admission_finished(f->a, &j[0].node, 12);
    assert_true(j[2].started);
    aiq_admission_finished(f->a, &j[1].node, 13); /* released already: only the ack counts */
    assert_int_equal(aiq_admission_inflight(f->a), 1);
    assert_int_equal(aiq_admission_unacked(f->a), 1);
    aiq_admission_free(f->a);
}

/* Nothing starts after drain; remove_if keeps the counts. */
static void admission_drain_and_remove(void **state)
{
    (void)state;
    fake_t *f = fake_new(1, 0, 100);
    job_t busy = {.model = "m"}, q1 = {.model = "m"}, q2 = {.model = "n"};
    push(f, &busy, 0, 0);
    push(f, &q1, 1, 0);
    push(f, &q2, 2, 0);
    aiq_admission_drain(f->a);
    aiq_admission_finished(f->a, &busy.node, 1);
    assert_false(q1.started || q2.started);
    assert_int_equal(aiq_admission_len(f->a), 2);
    assert_int_equal(aiq_admission_expire(f->a, 1 << 30, 2), 0);
    aiq_admission_free(f->a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(admission_priority_across_models),
        cmocka_unit_test(admission_aging_across_models),
        cmocka_unit_test(admission_model_cap),
        cmocka_unit_test(admission_sick_models_keep_to_their_share),
        cmocka_unit_test(admission_single_model_uses_every_slot),
        cmocka_unit_test(admission_pause_and_resume),
        cmocka_unit_test(admission_expire_ignores_slots),
        cmocka_unit_test(admission_slot_frees_before_the_ack),
        cmocka_unit_test(admission_drain_and_remove),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
