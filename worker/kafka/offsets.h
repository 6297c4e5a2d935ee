/* offsets.h — completion tracker of one partition: jobs finish out of order, the offset
 * that may be committed is the lowest unfinished one. Loop thread only. */
#ifndef AIQ_OFFSETS_H
#define AIQ_OFFSETS_H

#include <stddef.h>
#include <stdint.h>

typedef struct aiq_offsets aiq_offsets_t;

/* Returns a new empty tracker, or NULL when out of memory. */
aiq_offsets_t *aiq_offsets_new(void);
void aiq_offsets_free(aiq_offsets_t *t); /* NULL is a no-op */

/* Starts tracking offset. Offsets must be strictly increasing (Kafka delivers a partition
 * in order). Returns 0, AIQ_EINVAL when offset is not above the last one, AIQ_ENOMEM. */
int aiq_offsets_track(aiq_offsets_t *t, int64_t offset);

/* The same, remembering when (for the age of the oldest unfinished record). */
int aiq_offsets_track_at(aiq_offsets_t *t, int64_t offset, int64_t now_ms);

/* No offset: what aiq_offsets_done gives when the committable offset did not move, and
 * aiq_offsets_lowest when nothing is unfinished. Never an AIQ_E* code. */
#define AIQ_OFFSET_NONE ((int64_t)-1)

/* Marks offset finished. Returns 0 with *store set to the offset to store (the lowest
 * unfinished one, or last+1 when none is unfinished) when that advanced, or to
 * AIQ_OFFSET_NONE when it did not; AIQ_ENOTFOUND (*store untouched) when offset is not
 * tracked or already finished. */
int aiq_offsets_done(aiq_offsets_t *t, int64_t offset, int64_t *store);

/* Number of tracked, unfinished offsets. */
size_t aiq_offsets_pending(const aiq_offsets_t *t);

/* Lowest unfinished offset, or AIQ_OFFSET_NONE when none. */
int64_t aiq_offsets_lowest(const aiq_offsets_t *t);

/* When the lowest unfinished offset was tracked (its now_ms), or -1 when none. */
int64_t aiq_offsets_lowest_since(const aiq_offsets_t *t);

#endif
