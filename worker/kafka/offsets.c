#include "offsets.h"
#include "aiq_err.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    int64_t offset;
    int64_t since_ms; /* when it was tracked (0 when not given) */
    bool done;
} entry_t;

/* A ring of tracked offsets in arrival (= offset) order; finished entries are popped from
 * the head, so the head is always the lowest unfinished offset. */
struct aiq_offsets {
    entry_t *ring;
    size_t cap, head, len;
    size_t n_done; /* finished entries still in the ring (behind an unfinished head) */
    int64_t last;  /* highest offset tracked, -1 before the first */
};

aiq_offsets_t *aiq_offsets_new(void)
{
    aiq_offsets_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->last = -1;
    return t;
}

void aiq_offsets_free(aiq_offsets_t *t)
{
    if (!t)
        return;
    free(t->ring);
    free(t);
}

static entry_t *at(const aiq_offsets_t *t, size_t i)
{
    return &t->ring[(t->head + i) % t->cap];
}

static int grow(aiq_offsets_t *t)
{
    size_t ncap = t->cap ? t->cap * 2 : 64;
    entry_t *n = malloc(ncap * sizeof(*n));
    if (!n)
        return AIQ_ENOMEM;
    for (size_t i = 0; i < t->len; i++)
        n[i] = *at(t, i);
    free(t->ring);
    t->ring = n;
    t->cap = ncap;
    t->head = 0;
    return 0;
}

int aiq_offsets_track(aiq_offsets_t *t, int64_t offset)
{
    return aiq_offsets_track_at(t, offset, 0);
}

int aiq_offsets_track_at(aiq_offsets_t *t, int64_t offset, int64_t now_ms)
{
    if (offset < 0 || offset <= t->last)
        return AIQ_EINVAL;
    if (t->len == t->cap && grow(t))
        return AIQ_ENOMEM;
    *at(t, t->len) = (entry_t){.offset = offset, .since_ms = now_ms, .done = false};
    t->len++;
    t->last = offset;
    return 0;
}

/* Binary search: offsets in the ring are strictly increasing. */
static entry_t *find(const aiq_offsets_t *t, int64_t offset)
{
    size_t lo = 0, hi = t->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        entry_t *e = at(t, mid);
        if (e->offset == offset)
            return e;
        if (e->offset < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int aiq_offsets_done(aiq_offsets_t *t, int64_t offset, int64_t *store)
{
    entry_t *e = find(t, offset);
    if (!e || e->done)
        return AIQ_ENOTFOUND;
    e->done = true;
    t->n_done++;
    *store = AIQ_OFFSET_NONE;
    if (e != at(t, 0))
        return 0;
    while (t->len > 0 && at(t, 0)->done) {
        *store = at(t, 0)->offset + 1;
        t->head = (t->head + 1) % t->cap;
        t->len--;
        t->n_done--;
    }
    /* Gaps (compacted or transactional offsets) are skipped: the next tracked offset is
     * the lowest unfinished one, and committing it is what a restart needs. */
    if (t->len > 0)
        *store = at(t, 0)->offset;
    return 0;
}

size_t aiq_offsets_pending(const aiq_offsets_t *t)
{
    return t->len - t->n_done;
}

int64_t aiq_offsets_lowest(const aiq_offsets_t *t)
{
    return t->len ? at(t, 0)->offset : AIQ_OFFSET_NONE;
}

int64_t aiq_offsets_lowest_since(const aiq_offsets_t *t)
{
    return t->len ? at(t, 0)->since_ms : -1;
}
