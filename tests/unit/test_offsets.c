/* test_offsets.c — the per-partition completion tracker (worker/offsets.h): the offset to
 * store is always the lowest unfinished one, checked by hand and against a brute-force model
 * over random completion orders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "aiq_err.h"
#include "offsets.h"

static int setup_tracker(void **state)
{
    *state = aiq_offsets_new();
    return *state ? 0 : -1;
}

static int teardown_tracker(void **state)
{
    aiq_offsets_free(*state);
    return 0;
}

/* aiq_offsets_done as one value for the assertions: the offset to store, AIQ_OFFSET_NONE
 * when it did not move, or the error code (which is never a valid offset). */
static int64_t done(aiq_offsets_t *t, int64_t offset)
{
    int64_t store = 12345;
    int rc = aiq_offsets_done(t, offset, &store);
    if (rc)
        assert_int_equal(store, 12345); /* untouched on failure */
    return rc ? rc : store;
}

static void track_all(aiq_offsets_t *t, const int64_t *offs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(aiq_offsets_track(t, offs[i]), 0);
}

static void offsets_empty(void **state)
{
    aiq_offsets_t *t = *state;
    assert_int_equal(aiq_offsets_pending(t), 0);
    assert_int_equal(aiq_offsets_lowest(t), -1);
    assert_int_equal(done(t, 0), AIQ_ENOTFOUND);
    aiq_offsets_free(NULL);
}

/* Regression: "did not advance" was a bare -1, the value of AIQ_EINVAL; now it is rc 0
 * with AIQ_OFFSET_NONE, and a failure is a negative rc that leaves *store alone. */
static void offsets_not_advanced_is_not_an_error(void **state)
{
    aiq_offsets_t *t = *state;
    track_all(t, (const int64_t[]){0, 1}, 2);
    int64_t store = 99;
    assert_int_equal(aiq_offsets_done(t, 1, &store), 0);
    assert_int_equal(store, AIQ_OFFSET_NONE);
    assert_int_equal(aiq_offsets_done(t, 1, &store), AIQ_ENOTFOUND);
    assert_int_equal(aiq_offsets_done(t, 0, &store), 0);
    assert_int_equal(store, 2);
}

static void offsets_in_order(void **state)
{
    aiq_offsets_t *t = *state;
    track_all(t, (const int64_t[]){0, 1, 2, 3}, 4);
    assert_int_equal(aiq_offsets_pending(t), 4);
    assert_int_equal(aiq_offsets_lowest(t), 0);
    for (int64_t o = 0; o < 4; o++) {
        assert_int_equal(done(t, o), o + 1);
        assert_int_equal(aiq_offsets_pending(t), (size_t)(3 - o));
        assert_int_equal(aiq_offsets_lowest(t), o < 3 ? o + 1 : -1);
    }
    /* Tracking continues after the tracker ran empty. */
    assert_int_equal(aiq_offsets_track(t, 4), 0);
    assert_int_equal(aiq_offsets_lowest(t), 4);
    assert_int_equal(done(t, 4), 5);
}

static void offsets_out_of_order(void **state)
{
    aiq_offsets_t *t = *state;
    track_all(t, (const int64_t[]){1, 2, 3}, 3);
    assert_int_equal(done(t, 3), AIQ_OFFSET_NONE); /* 1 still unfinished */
    assert_int_equal(aiq_offsets_pending(t), 2);
    assert_int_equal(aiq_offsets_lowest(t), 1);
    assert_int_equal(done(t, 1), 2); /* 2 is now the lowest unfinished */
    assert_int_equal(aiq_offsets_pending(t), 1);
    assert_int_equal(aiq_offsets_lowest(t), 2);
    assert_int_equal(done(t, 2), 4); /* 3 was done already: skip past it */
    assert_int_equal(aiq_offsets_pending(t), 0);
    assert_int_equal(aiq_offsets_lowest(t), -1);
}

static void offsets_track_must_increase(void **state)
{
    aiq_offsets_t *t = *state;
    assert_int_equal(aiq_offsets_track(t, -1), AIQ_EINVAL);
    assert_int_equal(aiq_offsets_track(t, 5), 0);
    assert_int_equal(aiq_offsets_track(t, 5), AIQ_EINVAL);
    assert_int_equal(aiq_offsets_track(t, 4), AIQ_EINVAL);
    assert_int_equal(aiq_offsets_pending(t), 1);
    assert_int_equal(done(t, 5), 6);
    /* Even once 5 is finished and gone, an older offset may not come back. */
    assert_int_equal(aiq_offsets_track(t, 5), AIQ_EINVAL);
    assert_int_equal(aiq_offsets_track(t, 0), AIQ_EINVAL);
    assert_int_equal(aiq_offsets_pending(t), 0);
    assert_int_equal(aiq_offsets_track(t, 6), 0);
    assert_int_equal(aiq_offsets_lowest(t), 6);
}

static void offsets_done_unknown_or_twice(void **state)
{
    aiq_offsets_t *t = *state;
    track_all(t, (const int64_t[]){5, 6, 8}, 3);
    assert_int_equal(done(t, 4), AIQ_ENOTFOUND);
    assert_int_equal(done(t, 7), AIQ_ENOTFOUND); /* in a gap */
    assert_int_equal(done(t, 9), AIQ_ENOTFOUND);
    assert_int_equal(aiq_offsets_pending(t), 3);

    assert_int_equal(done(t, 6), AIQ_OFFSET_NONE);
    assert_int_equal(done(t, 6), AIQ_ENOTFOUND); /* finished, still held */
    assert_int_equal(aiq_offsets_pending(t), 2);

    assert_int_equal(done(t, 5), 8);
    assert_int_equal(done(t, 5), AIQ_ENOTFOUND); /* finished and released */
    assert_int_equal(done(t, 6), AIQ_ENOTFOUND);
    assert_int_equal(aiq_offsets_pending(t), 1);
    assert_int_equal(aiq_offsets_lowest(t), 8);
}

static void offsets_gaps(void **state)
{
    aiq_offsets_t *t = *state;
    track_all(t, (const int64_t[]){10, 12, 15}, 3);
    assert_int_equal(aiq_offsets_lowest(t), 10);
    assert_int_equal(done(t, 12), AIQ_OFFSET_NONE);
    assert_int_equal(done(t, 10), 15); /* 11, 13, 14 never existed */
    assert_int_equal(aiq_offsets_lowest(t), 15);
    assert_int_equal(done(t, 15), 16);

    /* A gap right after the head: finishing the head stores the next tracked offset. */
    track_all(t, (const int64_t[]){100, 1000}, 2);
    assert_int_equal(done(t, 100), 1000);
    assert_int_equal(done(t, 1000), 1001);
}

static void offsets_grow_beyond_ring(void **state)
{
    aiq_offsets_t *t = *state;
    const int64_t n = 10000;
    for (int64_t o = 0; o < n; o++)
        assert_int_equal(aiq_offsets_track(t, 1000 + o), 0);
    assert_int_equal(aiq_offsets_pending(t), (size_t)n);
    /* Newest first: nothing can be stored until the very first one finishes. */
    for (int64_t o = n - 1; o > 0; o--)
        assert_int_equal(done(t, 1000 + o), AIQ_OFFSET_NONE);
    assert_int_equal(aiq_offsets_pending(t), 1);
    assert_int_equal(aiq_offsets_lowest(t), 1000);
    assert_int_equal(done(t, 1000), 1000 + n);
    assert_int_equal(aiq_offsets_pending(t), 0);
}

static void offsets_grow_while_wrapped(void **state)
{
    aiq_offsets_t *t = *state;
    /* Move the ring's head forward, then fill it so it wraps, then force a grow: the
     * order of the tracked offsets must survive the copy. */
    int64_t next = 0, lowest = 0;
    for (int round = 0; round < 6; round++) {
        for (int i = 0; i < 50 + round * 40; i++)
            assert_int_equal(aiq_offsets_track(t, next++), 0);
        for (int i = 0; i < 37; i++, lowest++)
            assert_int_equal(done(t, lowest), lowest + 1);
        assert_int_equal(aiq_offsets_lowest(t), lowest);
        assert_int_equal(aiq_offsets_pending(t), (size_t)(next - lowest));
    }
    while (lowest < next) {
        assert_int_equal(done(t, lowest), lowest + 1);
        lowest++;
    }
    assert_int_equal(aiq_offsets_pending(t), 0);
}

/* xorshift64*: a local generator so the property test is reproducible from its seed. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * UINT64_C(2685821657736338717);
}

static size_t rng_below(uint64_t *s, size_t n)
{
    return (size_t)(rng_next(s) % n);
}

/* The brute-force model: offs[0..n_tracked) are tracked, finished[i] says whether offs[i]
 * is done. The value to store is the lowest unfinished offset, or last+1 when none. */
typedef struct model {
    const int64_t *offs;
    const bool *finished;
    size_t n_tracked;
} model_t;

static int64_t model_value(const model_t *m, size_t *pending, int64_t *lowest)
{
    *pending = 0;
    *lowest = -1;
    for (size_t i = 0; i < m->n_tracked; i++) {
        if (!m->finished[i]) {
            if (*lowest < 0)
                *lowest = m->offs[i];
            (*pending)++;
        }
    }
    if (*lowest >= 0)
        return *lowest;
    return m->n_tracked ? m->offs[m->n_tracked - 1] + 1 : -1;
}

/* Marks offs[i] done in both the tracker and the model and compares the outcomes. */
static void done_and_check(aiq_offsets_t *t, model_t *m, bool *finished, size_t i, uint64_t seed)
{
    size_t pending;
    int64_t lowest;
    int64_t before = model_value(m, &pending, &lowest);
    finished[i] = true;
    int64_t after = model_value(m, &pending, &lowest);
    int64_t got = done(t, m->offs[i]);
    int64_t want = after != before ? after : AIQ_OFFSET_NONE;
    if (got != want)
        print_error("seed %llu: done(%lld) returned %lld, model says %lld\n",
                    (unsigned long long)seed, (long long)m->offs[i], (long long)got,
                    (long long)want);
    assert_int_equal(got, want);
    assert_int_equal(aiq_offsets_pending(t), pending);
    assert_int_equal(aiq_offsets_lowest(t), lowest);
}

#define PROP_N 2000

static void offsets_random_order_matches_model(void **state)
{
    (void)state;
    static const uint64_t seeds[] = {1, 42, 0x9e3779b97f4a7c15ULL, 20261128, 7777777};
    int64_t *offs = malloc(PROP_N * sizeof(*offs));
    size_t *perm = malloc(PROP_N * sizeof(*perm));
    bool *finished = malloc(PROP_N * sizeof(*finished));
    assert_true(offs && perm && finished);

    for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
        uint64_t rng = seeds[s];
        aiq_offsets_t *t = aiq_offsets_new();
        assert_non_null(t);
        int64_t o = (int64_t)rng_below(&rng, 1000);
        for (size_t i = 0; i < PROP_N; i++) {
            /* Mostly consecutive, sometimes a gap (compaction, transaction markers). */
            o += rng_below(&rng, 4) == 0 ? 1 + (int64_t)rng_below(&rng, 20) : 1;
            offs[i] = o;
            finished[i] = false;
            perm[i] = i;
            assert_int_equal(aiq_offsets_track(t, o), 0);
        }
        for (size_t i = PROP_N - 1; i > 0; i--) { /* Fisher-Yates */
            size_t j = rng_below(&rng, i + 1);
            size_t tmp = perm[i];
            perm[i] = perm[j];
            perm[j] = tmp;
        }
        model_t m = {.offs = offs, .finished = finished, .n_tracked = PROP_N};
        for (size_t k = 0; k < PROP_N; k++)
            done_and_check(t, &m, finished, perm[k], seeds[s]);
        assert_int_equal(aiq_offsets_pending(t), 0);
        assert_int_equal(aiq_offsets_lowest(t), -1);
        aiq_offsets_free(t);
    }
    free(offs);
    free(perm);
    free(finished);
}

/* Like the one above, but tracking and finishing interleave, as they do in the worker, so
 * the ring wraps and grows while entries are in flight. */
static void offsets_random_interleaved_matches_model(void **state)
{
    (void)state;
    static const uint64_t seeds[] = {3, 99, 123456789, 0xdeadbeefULL};
    int64_t *offs = malloc(PROP_N * sizeof(*offs));
    bool *finished = malloc(PROP_N * sizeof(*finished));
    size_t *open = malloc(PROP_N * sizeof(*open)); /* indexes of unfinished offsets */
    assert_true(offs && finished && open);

    for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
        uint64_t rng = seeds[s];
        aiq_offsets_t *t = aiq_offsets_new();
        assert_non_null(t);
        model_t m = {.offs = offs, .finished = finished, .n_tracked = 0};
        size_t n_open = 0, n_done = 0;
        int64_t o = 0;
        while (n_done < PROP_N) {
            /* Track in bursts of up to 100 while fewer than ~300 are open, like a window. */
            bool track =
                m.n_tracked < PROP_N && (n_open == 0 || rng_below(&rng, 3) != 0) && n_open < 300;
            if (track) {
                size_t burst = 1 + rng_below(&rng, 100);
                for (size_t b = 0; b < burst && m.n_tracked < PROP_N; b++) {
                    o += 1 + (rng_below(&rng, 8) == 0 ? (int64_t)rng_below(&rng, 5) : 0);
                    offs[m.n_tracked] = o;
                    finished[m.n_tracked] = false;
                    open[n_open++] = m.n_tracked++;
                    assert_int_equal(aiq_offsets_track(t, o), 0);
                }
                continue;
            }
            size_t k = rng_below(&rng, n_open);
            size_t i = open[k];
            open[k] = open[--n_open];
            done_and_check(t, &m, finished, i, seeds[s]);
            n_done++;
        }
        assert_int_equal(aiq_offsets_pending(t), 0);
        aiq_offsets_free(t);
    }
    free(offs);
    free(finished);
    free(open);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup_tracker, teardown_tracker)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(offsets_empty),
        T(offsets_not_advanced_is_not_an_error),
        T(offsets_in_order),
        T(offsets_out_of_order),
        T(offsets_track_must_increase),
        T(offsets_done_unknown_or_twice),
        T(offsets_gaps),
        T(offsets_grow_beyond_ring),
        T(offsets_grow_while_wrapped),
        cmocka_unit_test(offsets_random_order_matches_model),
        cmocka_unit_test(offsets_random_interleaved_matches_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
