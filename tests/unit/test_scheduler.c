/* test_scheduler.c — the worker's backlog (worker/scheduler.h): strict priority, FIFO per
 * priority, aging exactly as documented (level = prio - waited/aging_ms, never above
 * critical, ties to the higher real priority), remove_if, and freedom from starvation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scheduler.h"

enum { CRIT = 0, HIGH = 1, NORMAL = 2, LOW = 3 };

typedef struct job {
    aiq_sched_node_t node; /* first member: a node pointer is a job pointer */
    int id;
} job_t;

static int pop_id(aiq_sched_t *s, int64_t now)
{
    aiq_sched_node_t *n = aiq_sched_pop(s, now);
    return n ? ((job_t *)n)->id : -1;
}

static void scheduler_empty(void **state)
{
    (void)state;
    aiq_sched_t *s = aiq_sched_new(1000);
    assert_non_null(s);
    assert_null(aiq_sched_pop(s, 0));
    assert_int_equal(aiq_sched_len(s), 0);
    for (int p = -1; p <= 4; p++)
        assert_int_equal(aiq_sched_len_prio(s, p), 0);
    aiq_sched_free(s);
    aiq_sched_free(NULL);
}

static void scheduler_strict_priority(void **state)
{
    (void)state;
    aiq_sched_t *s = aiq_sched_new(1000);
    job_t j[6] = {{.id = 0}, {.id = 1}, {.id = 2}, {.id = 3}, {.id = 4}, {.id = 5}};
    static const int prio[6] = {LOW, NORMAL, HIGH, CRIT, LOW, CRIT};
    for (int i = 0; i < 6; i++)
        aiq_sched_push(s, &j[i].node, prio[i], 0);
    assert_int_equal(aiq_sched_len(s), 6);
    assert_int_equal(aiq_sched_len_prio(s, CRIT), 2);
    assert_int_equal(aiq_sched_len_prio(s, HIGH), 1);
    assert_int_equal(aiq_sched_len_prio(s, NORMAL), 1);
    assert_int_equal(aiq_sched_len_prio(s, LOW), 2);

    /* 999 ms of waiting is less than one aging step: nothing has aged. */
    static const int want[6] = {3, 5, 2, 1, 0, 4};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(pop_id(s, 999), want[i]);
        assert_int_equal(aiq_sched_len(s), (size_t)(5 - i));
    }
    assert_null(aiq_sched_pop(s, 999));
    assert_int_equal(aiq_sched_len_prio(s, CRIT), 0);
    aiq_sched_free(s);
}

static void scheduler_fifo_within_priority(void **state)
{
    (void)state;
    aiq_sched_t *s = aiq_sched_new(1000000);
    job_t j[12];
    for (int i = 0; i < 12; i++) {
        j[i].id = i;
        aiq_sched_push(s, &j[i].node, i % 2 ? NORMAL : HIGH, i);
    }
    for (int i = 0; i < 12; i += 2)
        assert_int_equal(pop_id(s, 100), i); /* the highs, oldest first */
    for (int i = 1; i < 12; i += 2)
        assert_int_equal(pop_id(s, 100), i); /* then the normals, oldest first */

    /* Popping a queue empty and refilling it keeps FIFO order. */
    aiq_sched_push(s, &j[0].node, NORMAL, 200);
    aiq_sched_push(s, &j[1].node, NORMAL, 201);
    assert_int_equal(pop_id(s, 300), 0);
    aiq_sched_push(s, &j[2].node, NORMAL, 301);
    assert_int_equal(pop_id(s, 300), 1);
    assert_int_equal(pop_id(s, 300), 2);
    assert_null(aiq_sched_pop(s, 300));
    aiq_sched_free(s);
}

static void scheduler_push_records_and_clamps(void **state)
{
    (void)state;
    aiq_sched_t *s = aiq_sched_new(1000);
    job_t a = {.id = 1}, b = {.id = 2};
    aiq_sched_push(s, &a.node, -3, 42);
    aiq_sched_push(s, &b.node, 9, 43);
    assert_int_equal(a.node.prio, CRIT);
    assert_int_equal(a.node.enq_ms, 42);
    assert_int_equal(b.node.prio, LOW);
    assert_int_equal(aiq_sched_len_prio(s, CRIT), 1);
    assert_int_equal(aiq_sched_len_prio(s, LOW), 1);
    assert_int_equal(pop_id(s, 43), 1);
    assert_int_equal(pop_id(s, 43), 2);
    aiq_sched_free(s);
}

/* Queues job 1 (prio_a at t_a) and job 2 (prio_b at t_b) and returns the id popped first
 * at now. */
static int first_of(int64_t aging, int prio_a, int64_t t_a, int prio_b, int64_t t_b, int64_t now)
{
    aiq_sched_t *s = aiq_sched_new(aging);
    assert_non_null(s);
    job_t a = {.id = 1}, b = {.id = 2};
    aiq_sched_push(s, &a.node, prio_a, t_a);
    aiq_sched_push(s, &b.node, prio_b, t_b);
    int first = pop_id(s, now);
    assert_int_equal(pop_id(s, now), 3 - first);
    aiq_sched_free(s);
    return first;
}

static void scheduler_aging_levels(void **state)
{
    (void)state;
    /* A low job (id 1) queued at t=0 with aging_ms=1000 is at level 3 - floor(waited/1000),
     * never below -1; a job queued at now is at its own priority. Ties go to the higher real
     * priority, i.e. to the competitor (id 2). */

    /* vs a fresh normal (level 2): low reaches level 2 at 1000 (tie), 1 at 2000 (wins). */
    assert_int_equal(first_of(1000, LOW, 0, NORMAL, 999, 999), 2);
    assert_int_equal(first_of(1000, LOW, 0, NORMAL, 1000, 1000), 2);
    assert_int_equal(first_of(1000, LOW, 0, NORMAL, 1999, 1999), 2);
    assert_int_equal(first_of(1000, LOW, 0, NORMAL, 2000, 2000), 1);

    /* vs a fresh high (level 1): tie from 2000, low wins from 3000. */
    assert_int_equal(first_of(1000, LOW, 0, HIGH, 2000, 2000), 2);
    assert_int_equal(first_of(1000, LOW, 0, HIGH, 2999, 2999), 2);
    assert_int_equal(first_of(1000, LOW, 0, HIGH, 3000, 3000), 1);

    /* vs a critical (level 0): the low job reaches level 0 at 3000 (a tie the critical
     * wins) and level -1 at 4000, where it beats a fresh critical; a critical that waited
     * as long is at -1 too, and wins the tie. */
    assert_int_equal(first_of(1000, LOW, 0, CRIT, 2999, 2999), 2);
    assert_int_equal(first_of(1000, LOW, 0, CRIT, 3000, 3000), 2);
    assert_int_equal(first_of(1000, LOW, 0, CRIT, 2999, 3000), 2);
    assert_int_equal(first_of(1000, LOW, 0, CRIT, 3001, 4000), 1);
    assert_int_equal(first_of(1000, LOW, 0, CRIT, 0, 5000), 2);

    /* Both aged to level 0: a tie the normal wins; and waiting counts from each job's own
     * enqueue time. */
    assert_int_equal(first_of(1000, NORMAL, 0, LOW, 0, 100000), 1);
    assert_int_equal(first_of(1000, LOW, 0, NORMAL, 1000, 3000), 2); /* 0 vs 0: tie */
    assert_int_equal(first_of(1000, LOW, 0, NORMAL, 1001, 3000), 1); /* 0 vs 1 */

    /* A node queued "in the future" (clock skew between callers) has not waited at all. */
    assert_int_equal(first_of(1000, LOW, 10000, NORMAL, 10000, 0), 2);
}

static bool id_divisible_by_3(aiq_sched_node_t *n, void *arg)
{
    (void)arg;
    return ((job_t *)n)->id % 3 == 0;
}

static bool never(aiq_sched_node_t *n, void *arg)
{
    (void)n;
    (void)arg;
    return false;
}

static bool always(aiq_sched_node_t *n, void *arg)
{
    (void)n;
    (void)arg;
    return true;
}

typedef struct removed {
    int ids[32];
    int n;
} removed_t;

static void on_removed_record(aiq_sched_node_t *n, void *arg)
{
    removed_t *r = arg;
    assert_true(r->n < 32);
    r->ids[r->n++] = ((job_t *)n)->id;
}

static void on_removed_free(aiq_sched_node_t *n, void *arg)
{
    (*(int *)arg)++;
    free(n);
}

static void scheduler_remove_if(void **state)
{
    (void)state;
    aiq_sched_t *s = aiq_sched_new(1000000);
    job_t j[13];
    for (int i = 0; i < 12; i++) {
        j[i].id = i;
        aiq_sched_push(s, &j[i].node, i % 4, i); /* prio p holds p, p+4, p+8 */
    }
    removed_t r = {.n = 0};
    assert_int_equal(aiq_sched_remove_if(s, never, on_removed_record, &r), 0);
    assert_int_equal(r.n, 0);
    assert_int_equal(aiq_sched_len(s), 12);

    /* Removes 0 (head of critical), 9 (tail of high), 6 (middle of normal), 3 (head of
     * low): each queue keeps two. */
    assert_int_equal(aiq_sched_remove_if(s, id_divisible_by_3, on_removed_record, &r), 4);
    assert_int_equal(r.n, 4);
    int seen = 0;
    for (int i = 0; i < r.n; i++)
        seen |= 1 << r.ids[i];
    assert_int_equal(seen, (1 << 0) | (1 << 3) | (1 << 6) | (1 << 9));
    assert_int_equal(aiq_sched_len(s), 8);
    for (int p = 0; p < 4; p++)
        assert_int_equal(aiq_sched_len_prio(s, p), 2);

    /* The high queue lost its tail: a new push must still land behind 5. */
    j[12].id = 12;
    aiq_sched_push(s, &j[12].node, HIGH, 12);
    assert_int_equal(aiq_sched_len_prio(s, HIGH), 3);
    static const int want[] = {4, 8, 1, 5, 12, 2, 10, 7, 11};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        assert_int_equal(pop_id(s, 20), want[i]);
    assert_null(aiq_sched_pop(s, 20));
    assert_int_equal(aiq_sched_len(s), 0);
    aiq_sched_free(s);
}

static void scheduler_remove_if_may_free(void **state)
{
    (void)state;
    aiq_sched_t *s = aiq_sched_new(1000);
    for (int i = 0; i < 10; i++) {
        job_t *j = malloc(sizeof(*j));
        assert_non_null(j);
        j->id = i;
        aiq_sched_push(s, &j->node, i % 2 ? LOW : CRIT, i);
    }
    int freed = 0;
    assert_int_equal(aiq_sched_remove_if(s, always, on_removed_free, &freed), 10);
    assert_int_equal(freed, 10);
    assert_int_equal(aiq_sched_len(s), 0);
    assert_int_equal(aiq_sched_len_prio(s, CRIT), 0);
    assert_int_equal(aiq_sched_len_prio(s, LOW), 0);
    assert_null(aiq_sched_pop(s, 100));

    /* Emptied queues accept new nodes (head and tail were both reset). */
    job_t a = {.id = 50}, b = {.id = 51};
    aiq_sched_push(s, &a.node, LOW, 200);
    aiq_sched_push(s, &b.node, LOW, 201);
    assert_int_equal(pop_id(s, 202), 50);
    assert_int_equal(pop_id(s, 202), 51);
    aiq_sched_free(s);
}

#define STARVE_POPS  10000
#define STARVE_AGING 1000
#define STARVE_STEP  10 /* simulated ms between pops */

/* Sustained critical load: before every pop a new critical job arrives, and one low job
 * waits from t=0. The header promises that low work still progresses under sustained critical
 * load. The low job reaches critical level after LOW*aging_ms; allowing it one more aging_ms
 * to win over fresh criticals bounds the wait at (LOW+1)*aging_ms/step pops, plus the pop at
 * t=0. */
static void scheduler_low_not_starved(void **state)
{
    (void)state;
    const int bound = (LOW + 1) * STARVE_AGING / STARVE_STEP + 1;
    aiq_sched_t *s = aiq_sched_new(STARVE_AGING);
    job_t *crit = calloc(STARVE_POPS, sizeof(*crit));
    assert_non_null(crit);
    job_t low = {.id = -2};
    aiq_sched_push(s, &low.node, LOW, 0);

    int low_at = -1;
    for (int i = 0; i < STARVE_POPS && low_at < 0; i++) {
        int64_t now = (int64_t)i * STARVE_STEP;
        crit[i].id = i;
        aiq_sched_push(s, &crit[i].node, CRIT, now);
        aiq_sched_node_t *n = aiq_sched_pop(s, now);
        assert_non_null(n);
        if (n == &low.node)
            low_at = i + 1;
    }
    if (low_at < 0 || low_at > bound)
        print_error("low job popped after %d pops (bound %d; -1 = never in %d pops)\n", low_at,
                    bound, STARVE_POPS);
    free(crit);
    aiq_sched_free(s);
    assert_true(low_at > 0);
    assert_true(low_at <= bound);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(scheduler_empty),
        cmocka_unit_test(scheduler_strict_priority),
        cmocka_unit_test(scheduler_fifo_within_priority),
        cmocka_unit_test(scheduler_push_records_and_clamps),
        cmocka_unit_test(scheduler_aging_levels),
        cmocka_unit_test(scheduler_remove_if),
        cmocka_unit_test(scheduler_remove_if_may_free),
        cmocka_unit_test(scheduler_low_not_starved),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
