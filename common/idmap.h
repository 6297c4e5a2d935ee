/* idmap.h — a map from job id (string) to a caller's number, e.g. an index into its own
 * array: open addressing, grows by doubling, keys copied. Single-threaded. */
#ifndef AIQ_IDMAP_H
#define AIQ_IDMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct aiq_idmap aiq_idmap_t;

aiq_idmap_t *aiq_idmap_new(void);    /* NULL when out of memory */
void aiq_idmap_free(aiq_idmap_t *m); /* NULL is a no-op */

/* Sets id's value (copies id). Returns 1 when id was new, 0 when an existing value was
 * replaced, AIQ_ENOMEM when out of memory (the map is unchanged). */
int aiq_idmap_put(aiq_idmap_t *m, const char *id, uint64_t value);

/* Returns 0 and *value when id is in the map, AIQ_ENOTFOUND otherwise. */
int aiq_idmap_get(const aiq_idmap_t *m, const char *id, uint64_t *value);

size_t aiq_idmap_len(const aiq_idmap_t *m);

/* The 64-bit FNV-1a hash the map uses; stable across versions (batch ids derive from it). */
uint64_t aiq_idmap_hash(const char *s);

#endif
