/* cache.h — aiq's response cache: one LMDB environment per host, shared by every worker
 * process, with per-entry TTL, a stale grace period, bounded size (oldest evicted) and zstd.
 *
 * Threads: one aiq_cache_t may be used from several threads (in aiq-worker: the loop thread
 * plus the handle's own sweeper thread); calls serialise on internal locks and LMDB's write
 * lock. Processes: any number of processes may open the same directory, each with its own
 * handle; a put in one is visible to the next get in every other. Open a directory at most
 * once per process (LMDB's locks are per process) and never use a handle across fork().
 * Durability: MDB_NOSYNC. A killed process loses nothing that it committed and never leaves
 * a half-written entry; an OS crash can lose the last writes (it is a cache).
 * Counters in aiq_cache_stats_t marked "process" count this handle's calls only. */
#ifndef AIQ_CACHE_H
#define AIQ_CACHE_H

#include "aiq_err.h"
#include "cache_key.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AIQ_CACHE_DEFAULT_MAX_BYTES    (1LL << 30)
#define AIQ_CACHE_DEFAULT_TTL_S        86400
#define AIQ_CACHE_DEFAULT_GRACE_S      86400
#define AIQ_CACHE_DEFAULT_COMPRESS_MIN 512
#define AIQ_CACHE_DEFAULT_MAX_READERS  512
#define AIQ_CACHE_MIN_MAX_BYTES        (256LL << 10)
#define AIQ_CACHE_BODY_MAX             (8u << 20) /* larger bodies are refused (AIQ_ETOOBIG) */
#define AIQ_CACHE_META_MAX             4096       /* each of operation, persona, model */
#define AIQ_CACHE_SWEEP_BATCH          1000       /* default entries per sweeper write txn */

typedef struct aiq_cache aiq_cache_t;

/* Wall-clock milliseconds since the epoch; lets tests move time. */
typedef int64_t (*aiq_clock_fn)(void *ctx);

typedef struct aiq_cache_opts {
    const char *path;      /* directory (borrowed during open); created 0700 if missing */
    int64_t max_bytes;     /* LMDB map size = the bound on the data file; >= 256 KiB */
    int max_readers;       /* LMDB reader slots for all processes together */
    size_t compress_min;   /* bodies of at least this many bytes are zstd-compressed */
    int compress_level;    /* zstd level */
    int64_t stale_grace_s; /* an expired entry is kept (STALE) this long, then swept */
    aiq_clock_fn clock;    /* NULL = aiq_now_ms */
    void *clock_ctx;
    bool read_only; /* no writes; a missing directory is AIQ_ENOTFOUND, not created */
} aiq_cache_opts_t;

/* Fills o with the defaults above (path NULL, level 3, the real clock). */
void aiq_cache_opts_init(aiq_cache_opts_t *o);

/* aiq_cache_opts_init, then the cache.* settings of cfg (borrowed: path points into it). */
struct aiq_config;
void aiq_cache_opts_from_config(aiq_cache_opts_t *o, const struct aiq_config *cfg);

/* Opens (creating when needed) the environment in o->path: data and lock files mode 0600,
 * stale reader slots of dead processes cleared. If another process uses a larger map the
 * larger size is adopted. On success *out is the handle (close with aiq_cache_close).
 * Errors: AIQ_EINVAL (bad option, not an aiq cache), AIQ_ENOTFOUND (read_only and no
 * cache there), AIQ_EIO (filesystem or LMDB), AIQ_ENOMEM. */
int aiq_cache_open(aiq_cache_t **out, const aiq_cache_opts_t *o, aiq_err_t *err);

/* Stops the sweeper (waits for its current batch), closes the environment. NULL is a
 * no-op. No other call on c may be running. */
void aiq_cache_close(aiq_cache_t *c);

typedef enum aiq_cache_state {
    AIQ_CACHE_MISS = 0, /* absent, undecodable, or expired longer than the grace period */
    AIQ_CACHE_HIT,      /* fresh: age < ttl */
    AIQ_CACHE_STALE,    /* expired but within the grace period: for stale-if-error only */
} aiq_cache_state_t;

const char *aiq_cache_state_name(aiq_cache_state_t s); /* "miss", "hit", "stale" */

/* What an entry was stored for; used by invalidation. NULL members mean "". Borrowed. */
typedef struct aiq_cache_meta {
    const char *operation, *persona, *model;
} aiq_cache_meta_t;

/* One decoded entry. body, operation, persona and model all point into one malloc'd block
 * owned by the entry: release it with aiq_cache_entry_clear. Every string is
 * NUL-terminated ("" when none); len excludes the NUL. */
typedef struct aiq_cache_entry {
    char *body;
    size_t len;
    const char *operation, *persona, *model;
    int64_t stored_at_ms, ttl_s;
    int64_t age_ms;      /* now - stored_at, never negative */
    size_t stored_bytes; /* value size in LMDB, header included */
    bool compressed;
} aiq_cache_entry_t;

void aiq_cache_entry_clear(aiq_cache_entry_t *e); /* frees and zeroes; NULL is a no-op */

/* Looks key up in a fresh snapshot. On HIT or STALE *e holds a copy of the entry (the
 * caller clears it); on MISS *e is zeroed. A corrupt or unknown-format value is a MISS and
 * counted as corrupt; an LMDB failure is a MISS and counted as an error. Never blocks on
 * writers. */
aiq_cache_state_t aiq_cache_get(aiq_cache_t *c, const uint8_t key[AIQ_CACHE_KEY_LEN],
                                aiq_cache_entry_t *e);

/* Stores len bytes of body under key, stored now with ttl_s (>= 0; 0 = stale at once),
 * replacing any previous value. Copies everything. When the map is full the oldest
 * entries are evicted and the put retried; when it still does not fit the put is dropped
 * and counted, and 0 is returned all the same: a full cache never fails the caller.
 * Errors: AIQ_ESTATE (read-only handle), AIQ_EINVAL (ttl_s < 0, meta string too long),
 * AIQ_ETOOBIG (body over AIQ_CACHE_BODY_MAX), AIQ_ENOMEM, AIQ_EIO (LMDB failed). */
int aiq_cache_put(aiq_cache_t *c, const uint8_t key[AIQ_CACHE_KEY_LEN], const char *body,
                  size_t len, int64_t ttl_s, const aiq_cache_meta_t *meta, aiq_err_t *err);

/* aiq_cache_put with an explicit stored_at (warm-up from old results keeps their age). */
int aiq_cache_put_at(aiq_cache_t *c, const uint8_t key[AIQ_CACHE_KEY_LEN], const char *body,
                     size_t len, int64_t stored_at_ms, int64_t ttl_s, const aiq_cache_meta_t *meta,
                     aiq_err_t *err);

/* Removes key. Returns 1 when it was present, 0 when not, or a negative AIQ_E* code. */
int aiq_cache_invalidate_key(aiq_cache_t *c, const uint8_t key[AIQ_CACHE_KEY_LEN], aiq_err_t *err);

/* Removes every entry stored for operation (NULL = any) and persona (NULL = any; "" = the
 * entries without persona). At least one of them must be non-NULL. Scans the whole cache
 * in bounded write transactions. *n_removed (may be NULL) receives the count. */
int aiq_cache_invalidate_by(aiq_cache_t *c, const char *operation, const char *persona,
                            uint64_t *n_removed, aiq_err_t *err);

/* Removes everything. *n_removed (may be NULL) receives the number of entries. */
int aiq_cache_purge(aiq_cache_t *c, uint64_t *n_removed, aiq_err_t *err);

/* One sweep now, on the calling thread: deletes entries expired for longer than the grace
 * period, batch (0 = AIQ_CACHE_SWEEP_BATCH) per write transaction, until none is left. */
int aiq_cache_sweep(aiq_cache_t *c, size_t batch, uint64_t *n_removed, aiq_err_t *err);

/* Starts the handle's sweeper thread: every interval_ms it clears dead readers' slots and
 * runs aiq_cache_sweep(c, batch). Returns AIQ_ESTATE if already running or read-only. */
int aiq_cache_sweeper_start(aiq_cache_t *c, int64_t interval_ms, size_t batch, aiq_err_t *err);

typedef struct aiq_cache_stats {
    uint64_t entries;       /* entries in the environment (all processes) */
    uint64_t used_bytes;    /* pages holding entries and indexes */
    uint64_t file_bytes;    /* high-water mark of the data file */
    uint64_t map_bytes;     /* the bound (max_bytes) */
    uint32_t readers_used;  /* reader slots taken, all processes */
    uint32_t readers_max;   /* reader slots available */
    uint64_t hits, misses;  /* process: gets; misses include corrupt and expired */
    uint64_t stale;         /* process: gets answered STALE */
    uint64_t corrupt;       /* process: undecodable values met by get or walk */
    uint64_t puts, dropped; /* process: stored, and given up because the map was full */
    uint64_t evicted;       /* process: removed to make room */
    uint64_t expired_swept; /* process: removed by sweeps */
    uint64_t invalidated;   /* process: removed by invalidate and purge */
    uint64_t errors;        /* process: LMDB failures */
} aiq_cache_stats_t;

int aiq_cache_stats(aiq_cache_t *c, aiq_cache_stats_t *st, aiq_err_t *err);

/* Calls fn for every entry in key order, in one read snapshot (a long walk keeps that
 * snapshot's pages from being reused: admin use only). e is NULL for an undecodable value
 * (and corrupt is counted); e is only valid during the call. fn returns non-zero to stop.
 * Returns 0 or a negative AIQ_E* code. */
typedef int (*aiq_cache_walk_fn)(const uint8_t key[AIQ_CACHE_KEY_LEN], aiq_cache_state_t st,
                                 const aiq_cache_entry_t *e, void *ctx);
int aiq_cache_walk(aiq_cache_t *c, aiq_cache_walk_fn fn, void *ctx, aiq_err_t *err);

/* Consistency report of aiq_cache_verify: every entry decodes and has exactly its two
 * index records (by stored_at, by expiry) when corrupt, orphans and unindexed are all 0. */
typedef struct aiq_cache_verify {
    uint64_t entries, decoded, corrupt;
    uint64_t age_records, exp_records;
    uint64_t orphans;   /* index records without their entry */
    uint64_t unindexed; /* decodable entries missing an index record */
} aiq_cache_verify_t;

int aiq_cache_verify(aiq_cache_t *c, aiq_cache_verify_t *v, aiq_err_t *err);

/* The cacheable part of a result (schemas/result.schema.json) as compact JSON:
 * {"output":text,"stop_reason":s|null,"input_tokens":n,"output_tokens":n,"model":s|null}.
 * Worker and aiq-admin both build bodies here, so they are byte-identical. Only results
 * with status "succeeded" and a string output.text are cacheable: otherwise AIQ_EINVAL.
 * Borrows result; *out is malloc'd (caller frees), *len its length. */
int aiq_cache_body_from_result(const json_t *result, char **out, size_t *len);

/* The same body from fields (what aiq_cache_body_from_result extracts); text required,
 * stop_reason and model may be NULL. */
int aiq_cache_body_encode(const char *text, const char *stop_reason, int64_t input_tokens,
                          int64_t output_tokens, const char *model, char **out, size_t *len);

/* A decoded body: root is owned, the strings borrow from it (model/stop_reason NULL when
 * null). Free with aiq_cache_body_free. Returns 0 or AIQ_EINVAL when body is not one. */
typedef struct aiq_cache_body {
    json_t *root;
    const char *text, *stop_reason, *model;
    int64_t input_tokens, output_tokens;
} aiq_cache_body_t;

int aiq_cache_body_decode(const char *body, size_t len, aiq_cache_body_t *b, aiq_err_t *err);
void aiq_cache_body_free(aiq_cache_body_t *b);

/* Internal, exposed for tests that forge values: the checksum a stored value of n bytes
 * must carry (it covers everything but the checksum field itself). */
uint64_t aiq__cache_value_sum(const void *value, size_t n);

#endif
