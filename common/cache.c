#include "cache.h"
#include "config.h"
#include "timeutil.h"

#include <errno.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zstd.h>

/* Environment layout: three named databases.
 *   entries: key (32-byte SHA-256) → value
 *   by_age:  be64(stored_at_ms) ‖ key → "" (eviction walks it from the oldest)
 *   by_exp:  be64(stored_at_ms + ttl_s*1000) ‖ key → "" (the sweeper walks it)
 * Every write transaction changes an entry together with both of its index records, so a
 * killed writer can never leave them out of step. Index records whose entry is gone or was
 * replaced ("orphans") are dropped whenever eviction or the sweeper reaches them.
 *
 * Value format, version 1, little-endian:
 *    0 u32 magic "AIQC"          4 u8 version (1)       5 u8 flags (bit 0: zstd body)
 *    6 u16 operation length      8 u16 persona length  10 u16 model length
 *   12 u32 body length (as given to put, before compression)
 *   16 i64 stored_at_ms         24 u32 ttl_s           28 u32 stored body length
 *   32 u64 checksum of bytes 0..31 and 40..end
 *   40 operation, persona, model, stored body (no terminators)
 * A value whose lengths do not add up exactly, whose checksum or zstd frame is wrong, or
 * whose version is unknown is never served: get counts it as corrupt and answers MISS. */
#define VAL_MAGIC   0x43514941u /* "AIQC" read little-endian */
#define VAL_VERSION 1
#define VAL_ZSTD    0x01
#define HDR_LEN     40
#define IDX_LEN     (8 + AIQ_CACHE_KEY_LEN)

#define EVICT_SLACK_PCT 10   /* trees may fill the map up to this much short of it... */
#define EVICT_SLACK_PGS 64   /* ...and at least this many pages short (small maps) */
#define EVICT_PER_PUT   8    /* entries one put may evict (each dirties pages too) */
#define EVICT_PCT       5    /* when the map is full: evict this share of the entries */
#define EVICT_TXN_MAX   1000 /* entries per eviction write txn */
#define EVICT_FULL_MAX  4000 /* entries one put may evict when the map is full */
#define SCAN_TXN_MAX    4096 /* entries examined per invalidation write txn */
#define PUT_RETRIES     3
#define CHECKSUM_SEED   0x6169712d63616368ull

typedef enum { VAL_OK = 0, VAL_CORRUPT, VAL_UNKNOWN_VERSION } val_check_t;

typedef struct hdr {
    unsigned flags;
    size_t op_len, persona_len, model_len, body_len, stored_len;
    int64_t stored_at;
    int64_t ttl_s;
    const uint8_t *strings, *stored; /* into the value */
} hdr_t;

struct aiq_cache {
    MDB_env *env;
    MDB_dbi db_main, db_age, db_exp;
    bool read_only;
    size_t compress_min;
    int level; /* zstd level, set on cctx at open */
    int64_t grace_ms;
    aiq_clock_fn clock;
    void *clock_ctx;
    size_t psize;
    /* Every transaction holds map_lock shared; adopting a map size that another process
     * grew to (MDB_MAP_RESIZED) needs it exclusive, as LMDB requires no live txn then. */
    pthread_rwlock_t map_lock;
    pthread_mutex_t read_mu; /* rtxn and dctx: gets reuse one reset/renewed read txn */
    MDB_txn *rtxn;
    ZSTD_DCtx *dctx;
    pthread_mutex_t comp_mu; /* cctx */
    ZSTD_CCtx *cctx;
    /* sweeper */
    pthread_mutex_t sw_mu;
    pthread_cond_t sw_cond;
    pthread_t sw_thread;
    bool sw_running;
    atomic_bool sw_stop;
    int64_t sw_interval_ms;
    size_t sw_batch;
    /* process-local counters */
    atomic_uint_fast64_t hits, misses, stale, corrupt, puts, dropped, evicted, expired_swept,
        invalidated, errors;
};

#define COUNT(c, f, n) atomic_fetch_add_explicit(&(c)->f, (n), memory_order_relaxed)
#define LOAD(c, f)     ((uint64_t)atomic_load_explicit(&(c)->f, memory_order_relaxed))

/* ---- bytes ---------------------------------------------------------------------------- */

static void le_put(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t le_get(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void idx_key(uint8_t out[IDX_LEN], int64_t ms, const uint8_t *key)
{
    uint64_t u = ms < 0 ? 0 : (uint64_t)ms;
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(u >> (56 - 8 * i));
    memcpy(out + 8, key, AIQ_CACHE_KEY_LEN);
}

static int64_t idx_ms(const uint8_t *p)
{
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | p[i];
    return u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u;
}

/* Word-at-a-time multiply/xorshift mix. Each step is a bijection of the state, so a change
 * confined to one 8-byte word is always detected; it guards against torn or garbage
 * values, not against an adversary (whoever can write the file owns the cache anyway). */
static uint64_t checksum(uint64_t seed, const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = seed ^ (n * 0x9e3779b97f4a7c15ull);
    for (; n >= 8; n -= 8, b += 8) {
        h = (h ^ le_get(b, 8)) * 0xff51afd7ed558ccdull;
        h ^= h >> 29;
    }
    if (n) {
        h = (h ^ le_get(b, (int)n) ^ ((uint64_t)n << 56)) * 0xc4ceb9fe1a85ec53ull;
        h ^= h >> 32;
    }
    h *= 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 31);
}

static uint64_t value_sum(const uint8_t *v, size_t n)
{
    return checksum(checksum(CHECKSUM_SEED, v, 32), v + HDR_LEN, n - HDR_LEN);
}

uint64_t aiq__cache_value_sum(const void *value, size_t n)
{
    return n < HDR_LEN ? 0 : value_sum(value, n);
}

static int64_t expiry_ms(const hdr_t *h)
{
    return h->stored_at + h->ttl_s * 1000;
}

/* ---- values --------------------------------------------------------------------------- */

static val_check_t hdr_parse(const uint8_t *v, size_t n, hdr_t *h)
{
    if (n < HDR_LEN || le_get(v, 4) != VAL_MAGIC)
        return VAL_CORRUPT;
    if (v[4] != VAL_VERSION)
        return VAL_UNKNOWN_VERSION;
    h->flags = v[5];
    h->op_len = le_get(v + 6, 2);
    h->persona_len = le_get(v + 8, 2);
    h->model_len = le_get(v + 10, 2);
    h->body_len = le_get(v + 12, 4);
    h->stored_at = (int64_t)le_get(v + 16, 8);
    h->ttl_s = (int64_t)le_get(v + 24, 4);
    h->stored_len = le_get(v + 28, 4);
    size_t strings = h->op_len + h->persona_len + h->model_len;
    if ((h->flags & ~VAL_ZSTD) || h->body_len > AIQ_CACHE_BODY_MAX || h->stored_at < 0 ||
        HDR_LEN + strings + h->stored_len != n ||
        (!(h->flags & VAL_ZSTD) && h->stored_len != h->body_len))
        return VAL_CORRUPT;
    if (le_get(v + 32, 8) != value_sum(v, n))
        return VAL_CORRUPT;
    h->strings = v + HDR_LEN;
    h->stored = h->strings + strings;
    return VAL_OK;
}

/* Copies one checked value out of the map into e: a single block holding the body, then
 * operation, persona and model, each NUL-terminated. Returns 0, VAL_CORRUPT (bad zstd
 * frame) or AIQ_ENOMEM. */
static int value_copy(ZSTD_DCtx *dctx, const hdr_t *h, size_t stored_bytes, aiq_cache_entry_t *e)
{
    size_t strings = h->op_len + h->persona_len + h->model_len;
    char *blk = malloc(h->body_len + strings + 4);
    if (!blk)
        return AIQ_ENOMEM;
    if (h->flags & VAL_ZSTD) {
        size_t got = ZSTD_decompressDCtx(dctx, blk, h->body_len, h->stored, h->stored_len);
        if (ZSTD_isError(got) || got != h->body_len) {
            free(blk);
            return VAL_CORRUPT;
        }
    } else if (h->body_len) {
        memcpy(blk, h->stored, h->body_len);
    }
    char *p = blk + h->body_len;
    *p++ = '\0';
    const uint8_t *s = h->strings;
    const char **dst[3] = {&e->operation, &e->persona, &e->model};
    size_t lens[3] = {h->op_len, h->persona_len, h->model_len};
    for (int i = 0; i < 3; i++) {
        memcpy(p, s, lens[i]);
        *dst[i] = p;
        p[lens[i]] = '\0';
        p += lens[i] + 1;
        s += lens[i];
    }
    e->body = blk;
    e->len = h->body_len;
    e->stored_at_ms = h->stored_at;
    e->ttl_s = h->ttl_s;
    e->stored_bytes = stored_bytes;
    e->compressed = h->flags & VAL_ZSTD;
    return 0;
}

static size_t meta_len(const char *s)
{
    return s ? strlen(s) : 0;
}

/* Compresses into dst when that saves space; returns the stored length. */
static size_t store_body(aiq_cache_t *c, uint8_t *dst, size_t cap, const char *body, size_t len,
                         bool *zstd)
{
    *zstd = false;
    if (len > 0 && len >= c->compress_min) {
        pthread_mutex_lock(&c->comp_mu);
        size_t n = ZSTD_compress2(c->cctx, dst, cap, body, len);
        pthread_mutex_unlock(&c->comp_mu);
        if (!ZSTD_isError(n) && n < len) {
            *zstd = true;
            return n;
        }
    }
    if (len)
        memcpy(dst, body, len);
    return len;
}

static int value_encode(aiq_cache_t *c, const char *body, size_t len, int64_t stored_at,
                        int64_t ttl_s, const aiq_cache_meta_t *m, uint8_t **out, size_t *out_len)
{
    const char *s[3] = {m ? m->operation : NULL, m ? m->persona : NULL, m ? m->model : NULL};
    size_t sl[3], strings = 0;
    for (int i = 0; i < 3; i++)
        strings += sl[i] = meta_len(s[i]);
    size_t cap = len >= c->compress_min ? ZSTD_compressBound(len) : len;
    if (cap < len)
        cap = len;
    uint8_t *v = malloc(HDR_LEN + strings + cap);
    if (!v)
        return AIQ_ENOMEM;
    uint8_t *p = v + HDR_LEN;
    for (int i = 0; i < 3; i++) {
        if (sl[i])
            memcpy(p, s[i], sl[i]);
        p += sl[i];
    }
    bool zstd;
    size_t stored = store_body(c, p, cap, body, len, &zstd);
    size_t n = HDR_LEN + strings + stored;
    le_put(v, VAL_MAGIC, 4);
    v[4] = VAL_VERSION;
    v[5] = zstd ? VAL_ZSTD : 0;
    for (int i = 0; i < 3; i++)
        le_put(v + 6 + 2 * i, sl[i], 2);
    le_put(v + 12, len, 4);
    le_put(v + 16, (uint64_t)stored_at, 8);
    le_put(v + 24, (uint64_t)ttl_s, 4);
    le_put(v + 28, stored, 4);
    le_put(v + 32, value_sum(v, n), 8);
    *out = v;
    *out_len = n;
    return 0;
}

/* ---- transactions --------------------------------------------------------------------- */

static int64_t now_ms(const aiq_cache_t *c)
{
    return c->clock ? c->clock(c->clock_ctx) : aiq_now_ms();
}

static void adopt_map_size(aiq_cache_t *c)
{
    pthread_rwlock_wrlock(&c->map_lock);
    mdb_env_set_mapsize(c->env, 0);
    pthread_rwlock_unlock(&c->map_lock);
}

/* Begins a txn and holds map_lock shared until txn_end; 0 or an LMDB code. */
static int txn_begin(aiq_cache_t *c, unsigned flags, MDB_txn **txn)
{
    for (int attempt = 0;; attempt++) {
        pthread_rwlock_rdlock(&c->map_lock);
        int rc = mdb_txn_begin(c->env, NULL, flags, txn);
        if (rc == 0)
            return 0;
        pthread_rwlock_unlock(&c->map_lock);
        if (rc != MDB_MAP_RESIZED || attempt == 2)
            return rc;
        adopt_map_size(c);
    }
}

/* Commits (commit = true) or aborts, and releases map_lock. */
static int txn_end(aiq_cache_t *c, MDB_txn *txn, bool commit)
{
    int rc = 0;
    if (commit)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    pthread_rwlock_unlock(&c->map_lock);
    return rc;
}

/* The reused read txn of gets, under read_mu. */
static int rtxn_acquire(aiq_cache_t *c)
{
    for (int attempt = 0;; attempt++) {
        pthread_rwlock_rdlock(&c->map_lock);
        int rc =
            c->rtxn ? mdb_txn_renew(c->rtxn) : mdb_txn_begin(c->env, NULL, MDB_RDONLY, &c->rtxn);
        if (rc == 0)
            return 0;
        if (c->rtxn) {
            mdb_txn_abort(c->rtxn);
            c->rtxn = NULL;
        }
        pthread_rwlock_unlock(&c->map_lock);
        if (rc != MDB_MAP_RESIZED || attempt == 2)
            return rc;
        adopt_map_size(c);
    }
}

static void rtxn_release(aiq_cache_t *c)
{
    mdb_txn_reset(c->rtxn); /* drops the snapshot at once so its pages can be reused */
    pthread_rwlock_unlock(&c->map_lock);
}

static int del_ok(int rc)
{
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int idx_del(MDB_txn *txn, MDB_dbi db, int64_t ms, const uint8_t *key)
{
    uint8_t ik[IDX_LEN];
    idx_key(ik, ms, key);
    MDB_val k = {IDX_LEN, ik};
    return del_ok(mdb_del(txn, db, &k, NULL));
}

static int idx_put(MDB_txn *txn, MDB_dbi db, int64_t ms, const uint8_t *key)
{
    uint8_t ik[IDX_LEN];
    idx_key(ik, ms, key);
    MDB_val k = {IDX_LEN, ik}, v = {0, ik};
    return mdb_put(txn, db, &k, &v, 0);
}

/* Looks key up in txn: returns 0 with *vc (and *h when VAL_OK), or an LMDB code
 * (MDB_NOTFOUND when absent). */
static int lookup(aiq_cache_t *c, MDB_txn *txn, const uint8_t *key, hdr_t *h, val_check_t *vc)
{
    MDB_val k = {AIQ_CACHE_KEY_LEN, (void *)key}, v;
    int rc = mdb_get(txn, c->db_main, &k, &v);
    if (rc == 0)
        *vc = hdr_parse(v.mv_data, v.mv_size, h);
    return rc;
}

/* Deletes key's entry and, when its value is readable, both its index records. Sets
 * *found. An unreadable value's index records stay behind as orphans. */
static int remove_entry(aiq_cache_t *c, MDB_txn *txn, const uint8_t *key, bool *found)
{
    hdr_t h;
    val_check_t vc;
    int rc = lookup(c, txn, key, &h, &vc);
    *found = rc != MDB_NOTFOUND;
    if (rc)
        return rc == MDB_NOTFOUND ? 0 : rc;
    if (vc == VAL_OK && ((rc = idx_del(txn, c->db_age, h.stored_at, key)) ||
                         (rc = idx_del(txn, c->db_exp, expiry_ms(&h), key))))
        return rc;
    MDB_val k = {AIQ_CACHE_KEY_LEN, (void *)key};
    return mdb_del(txn, c->db_main, &k, NULL);
}

static int lmdb_err(aiq_err_t *err, int rc, const char *what)
{
    if (rc == ENOMEM)
        return aiq_err_set(err, AIQ_ENOMEM, "cache %s: out of memory", what);
    return aiq_err_set(err, AIQ_EIO, "cache %s: %s", what, mdb_strerror(rc));
}

/* ---- open / close --------------------------------------------------------------------- */

void aiq_cache_opts_init(aiq_cache_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->max_bytes = AIQ_CACHE_DEFAULT_MAX_BYTES;
    o->max_readers = AIQ_CACHE_DEFAULT_MAX_READERS;
    o->compress_min = AIQ_CACHE_DEFAULT_COMPRESS_MIN;
    o->compress_level = 3;
    o->stale_grace_s = AIQ_CACHE_DEFAULT_GRACE_S;
}

/* mkdir -p with mode 0700 for every directory it creates. */
static int ensure_dir(const char *path, bool create, aiq_err_t *err)
{
    char buf[PATH_MAX];
    struct stat st;
    if (strlen(path) >= sizeof(buf))
        return aiq_err_set(err, AIQ_EINVAL, "cache.path: longer than %d bytes", PATH_MAX - 1);
    if (stat(path, &st) == 0)
        return S_ISDIR(st.st_mode)
                   ? 0
                   : aiq_err_set(err, AIQ_EINVAL, "cache.path %s: not a directory", path);
    if (!create)
        return aiq_err_set(err, AIQ_ENOTFOUND, "cache.path %s: no cache there", path);
    memcpy(buf, path, strlen(path) + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0700) && errno != EEXIST)
            return aiq_err_set(err, AIQ_EIO, "cache.path: mkdir %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0700) && errno != EEXIST)
        return aiq_err_set(err, AIQ_EIO, "cache.path: mkdir %s: %s", buf, strerror(errno));
    return 0;
}

static int check_opts(const aiq_cache_opts_t *o, aiq_err_t *err)
{
    if (!o || !o->path || !*o->path)
        return aiq_err_set(err, AIQ_EINVAL, "cache.path: must not be empty");
    if (o->max_bytes < AIQ_CACHE_MIN_MAX_BYTES || o->max_bytes > (1LL << 44))
        return aiq_err_set(err, AIQ_EINVAL, "cache.max_bytes: %lld is out of range [%lld, %lld]",
                           (long long)o->max_bytes, (long long)AIQ_CACHE_MIN_MAX_BYTES,
                           (long long)(1LL << 44));
    if (o->max_readers < 1 || o->max_readers > 65536)
        return aiq_err_set(err, AIQ_EINVAL, "cache: max_readers %d is out of range [1, 65536]",
                           o->max_readers);
    if (o->stale_grace_s < 0 || o->stale_grace_s > 100LL * 365 * 86400)
        return aiq_err_set(err, AIQ_EINVAL, "cache.stale_grace_s: %lld is out of range",
                           (long long)o->stale_grace_s);
    if (o->compress_level < 1 || o->compress_level > ZSTD_maxCLevel())
        return aiq_err_set(err, AIQ_EINVAL, "cache: zstd level %d is out of range",
                           o->compress_level);
    return 0;
}

static int open_dbs(aiq_cache_t *c, aiq_err_t *err)
{
    MDB_txn *txn;
    unsigned create = c->read_only ? 0 : MDB_CREATE;
    int rc = mdb_txn_begin(c->env, NULL, c->read_only ? MDB_RDONLY : 0, &txn);
    if (rc)
        return lmdb_err(err, rc, "open");
    if ((rc = mdb_dbi_open(txn, "entries", create, &c->db_main)) ||
        (rc = mdb_dbi_open(txn, "by_age", create, &c->db_age)) ||
        (rc = mdb_dbi_open(txn, "by_exp", create, &c->db_exp))) {
        mdb_txn_abort(txn);
        if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE)
            return aiq_err_set(err, AIQ_EINVAL, "cache: the environment is not an aiq cache");
        return lmdb_err(err, rc, "open");
    }
    rc = mdb_txn_commit(txn);
    return rc ? lmdb_err(err, rc, "open") : 0;
}

static int open_env(aiq_cache_t *c, const aiq_cache_opts_t *o, aiq_err_t *err)
{
    int rc = mdb_env_create(&c->env);
    if (rc)
        return lmdb_err(err, rc, "open");
    if ((rc = mdb_env_set_maxdbs(c->env, 4)) ||
        (rc = mdb_env_set_mapsize(c->env, (size_t)o->max_bytes)) ||
        (rc = mdb_env_set_maxreaders(c->env, (unsigned)o->max_readers)))
        return lmdb_err(err, rc, "open");
    /* NOTLS: read txns belong to the handle, not the thread, so the reset/renewed read txn
     * of gets may be used from whichever thread calls. NOSYNC: see cache.h. */
    unsigned flags = MDB_NOSYNC | MDB_NOTLS | (o->read_only ? MDB_RDONLY : 0);
    rc = mdb_env_open(c->env, o->path, flags, 0600);
    if (rc == ENOENT)
        return aiq_err_set(err, AIQ_ENOTFOUND, "cache.path %s: no cache there", o->path);
    if (rc)
        return aiq_err_set(err, AIQ_EIO, "cache.path %s: %s", o->path, mdb_strerror(rc));
    int dead = 0;
    mdb_reader_check(c->env, &dead); /* slots of killed processes would pin old pages */
    MDB_stat st;
    mdb_env_stat(c->env, &st);
    c->psize = st.ms_psize;
    return open_dbs(c, err);
}

static int init_locks(aiq_cache_t *c)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca))
        return AIQ_ENOMEM;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&c->sw_cond, &ca);
    pthread_condattr_destroy(&ca);
    if (rc)
        return AIQ_ENOMEM;
    if (pthread_rwlock_init(&c->map_lock, NULL) || pthread_mutex_init(&c->read_mu, NULL) ||
        pthread_mutex_init(&c->comp_mu, NULL) || pthread_mutex_init(&c->sw_mu, NULL))
        return AIQ_ENOMEM;
    return 0;
}

int aiq_cache_open(aiq_cache_t **out, const aiq_cache_opts_t *o, aiq_err_t *err)
{
    *out = NULL;
    int rc = check_opts(o, err);
    if (rc || (rc = ensure_dir(o->path, !o->read_only, err)))
        return rc;
    aiq_cache_t *c = calloc(1, sizeof(*c));
    if (!c)
        return aiq_err_set(err, AIQ_ENOMEM, "cache: out of memory");
    c->read_only = o->read_only;
    c->compress_min = o->compress_min;
    c->level = o->compress_level;
    c->grace_ms = o->stale_grace_s * 1000;
    c->clock = o->clock;
    c->clock_ctx = o->clock_ctx;
    if (init_locks(c)) {
        free(c);
        return aiq_err_set(err, AIQ_ENOMEM, "cache: cannot create locks");
    }
    c->cctx = ZSTD_createCCtx();
    c->dctx = ZSTD_createDCtx();
    /* The frame checksum (4 bytes) backs up the value checksum for compressed bodies. */
    if (!c->cctx || !c->dctx ||
        ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, c->level)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_checksumFlag, 1)))
        rc = aiq_err_set(err, AIQ_ENOMEM, "cache: cannot set up zstd");
    if (rc == 0)
        rc = open_env(c, o, err);
    if (rc) {
        aiq_cache_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

static void sweeper_stop(aiq_cache_t *c)
{
    if (!c->sw_running)
        return;
    pthread_mutex_lock(&c->sw_mu);
    atomic_store(&c->sw_stop, true);
    pthread_cond_signal(&c->sw_cond);
    pthread_mutex_unlock(&c->sw_mu);
    pthread_join(c->sw_thread, NULL);
    c->sw_running = false;
}

void aiq_cache_close(aiq_cache_t *c)
{
    if (!c)
        return;
    sweeper_stop(c);
    if (c->rtxn)
        mdb_txn_abort(c->rtxn);
    if (c->env)
        mdb_env_close(c->env);
    ZSTD_freeCCtx(c->cctx);
    ZSTD_freeDCtx(c->dctx);
    pthread_rwlock_destroy(&c->map_lock);
    pthread_mutex_destroy(&c->read_mu);
    pthread_mutex_destroy(&c->comp_mu);
    pthread_mutex_destroy(&c->sw_mu);
    pthread_cond_destroy(&c->sw_cond);
    free(c);
}

/* ---- get ------------------------------------------------------------------------------ */

const char *aiq_cache_state_name(aiq_cache_state_t s)
{
    switch (s) {
    case AIQ_CACHE_HIT:
        return "hit";
    case AIQ_CACHE_STALE:
        return "stale";
    case AIQ_CACHE_MISS:
        break;
    }
    return "miss";
}

void aiq_cache_entry_clear(aiq_cache_entry_t *e)
{
    if (!e)
        return;
    free(e->body);
    memset(e, 0, sizeof(*e));
}

static aiq_cache_state_t state_at(const aiq_cache_t *c, aiq_cache_entry_t *e, int64_t now)
{
    /* A clock that stepped back makes an entry look younger, never negative-aged. */
    e->age_ms = now > e->stored_at_ms ? now - e->stored_at_ms : 0;
    if (e->age_ms < e->ttl_s * 1000)
        return AIQ_CACHE_HIT;
    if (e->age_ms < e->ttl_s * 1000 + c->grace_ms)
        return AIQ_CACHE_STALE;
    return AIQ_CACHE_MISS;
}

/* Decodes a value into e: 0, VAL_CORRUPT / VAL_UNKNOWN_VERSION, or AIQ_ENOMEM. */
static int decode(ZSTD_DCtx *dctx, const MDB_val *v, aiq_cache_entry_t *e)
{
    hdr_t h;
    val_check_t vc = hdr_parse(v->mv_data, v->mv_size, &h);
    if (vc != VAL_OK)
        return (int)vc;
    return value_copy(dctx, &h, v->mv_size, e);
}

static aiq_cache_state_t miss(aiq_cache_t *c, aiq_cache_entry_t *e)
{
    aiq_cache_entry_clear(e);
    COUNT(c, misses, 1);
    return AIQ_CACHE_MISS;
}

aiq_cache_state_t aiq_cache_get(aiq_cache_t *c, const uint8_t key[AIQ_CACHE_KEY_LEN],
                                aiq_cache_entry_t *e)
{
    memset(e, 0, sizeof(*e));
    pthread_mutex_lock(&c->read_mu);
    int rc = rtxn_acquire(c), dec = 0;
    if (rc == 0) {
        MDB_val k = {AIQ_CACHE_KEY_LEN, (void *)key}, v;
        rc = mdb_get(c->rtxn, c->db_main, &k, &v);
        if (rc == 0)
            dec = decode(c->dctx, &v, e); /* copies out while the snapshot is held */
        rtxn_release(c);
    }
    pthread_mutex_unlock(&c->read_mu);
    if (rc && rc != MDB_NOTFOUND)
        COUNT(c, errors, 1);
    if (dec == VAL_CORRUPT || dec == VAL_UNKNOWN_VERSION)
        COUNT(c, corrupt, 1);
    else if (dec)
        COUNT(c, errors, 1);
    if (rc || dec)
        return miss(c, e);
    aiq_cache_state_t st = state_at(c, e, now_ms(c));
    if (st == AIQ_CACHE_MISS)
        return miss(c, e);
    if (st == AIQ_CACHE_HIT)
        COUNT(c, hits, 1);
    else
        COUNT(c, stale, 1);
    return st;
}

/* ---- eviction ------------------------------------------------------------------------- */

/* Handles one index record (ms ‖ key) met by eviction (age index) or the sweeper (expiry
 * index): removes the entry when the record is its current one, else just the record.
 * Values this version cannot read are removed by eviction (space must be found) but left
 * to their own version by the sweeper. Returns 0 or an LMDB code; *removed is 1 when an
 * entry went. */
static int reap(aiq_cache_t *c, MDB_txn *txn, MDB_dbi idx, const uint8_t *rec, bool evicting,
                int *removed)
{
    const uint8_t *key = rec + 8;
    int64_t ms = idx_ms(rec);
    hdr_t h;
    val_check_t vc;
    bool found;
    *removed = 0;
    int rc = lookup(c, txn, key, &h, &vc);
    if (rc == MDB_NOTFOUND)
        return idx_del(txn, idx, ms, key);
    if (rc)
        return rc;
    if (vc == VAL_OK && (idx == c->db_age ? h.stored_at : expiry_ms(&h)) == ms) {
        *removed = 1;
        return remove_entry(c, txn, key, &found);
    }
    if (vc == VAL_CORRUPT || (vc == VAL_UNKNOWN_VERSION && evicting)) {
        COUNT(c, corrupt, vc == VAL_CORRUPT);
        *removed = 1;
        if ((rc = remove_entry(c, txn, key, &found)))
            return rc;
    }
    return idx_del(txn, idx, ms, key);
}

/* Collects up to max index records from the start of idx, only those with ms <= until. */
static int collect(MDB_txn *txn, MDB_dbi idx, size_t max, int64_t until, uint8_t *recs, size_t *n)
{
    MDB_cursor *cur;
    *n = 0;
    int rc = mdb_cursor_open(txn, idx, &cur);
    if (rc)
        return rc;
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && *n < max;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != IDX_LEN)
            continue; /* not ours; never matches an entry */
        if (idx_ms(k.mv_data) > until)
            break;
        memcpy(recs + IDX_LEN * (*n)++, k.mv_data, IDX_LEN);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Walks up to max records of idx (ms <= until) and reaps them; *n_removed entries went. */
static int reap_batch(aiq_cache_t *c, MDB_txn *txn, MDB_dbi idx, size_t max, int64_t until,
                      uint64_t *n_removed, size_t *n_seen)
{
    uint8_t *recs = malloc(max * IDX_LEN);
    if (!recs)
        return ENOMEM;
    size_t n;
    int rc = collect(txn, idx, max, until, recs, &n);
    for (size_t i = 0; i < n && rc == 0; i++) {
        int removed;
        rc = reap(c, txn, idx, recs + i * IDX_LEN, idx == c->db_age, &removed);
        *n_removed += (uint64_t)removed;
    }
    free(recs);
    *n_seen = n;
    return rc;
}

static uint64_t tree_pages(MDB_txn *txn, MDB_dbi db)
{
    MDB_stat st;
    if (mdb_stat(txn, db, &st))
        return 0;
    return st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
}

/* Inside a put's txn: when the trees come within the slack of the map size, evict a few
 * of the oldest entries. The slack holds what LMDB needs besides the trees (pages freed by
 * the last transactions, which are not reusable yet, the free list, the pages a txn
 * copies); without it the map fills up completely, and then not even a delete fits.
 * *n gets the number evicted (counted by the caller once the txn commits). */
static int evict_some(aiq_cache_t *c, MDB_txn *txn, uint64_t *n)
{
    MDB_envinfo info;
    mdb_env_info(c->env, &info);
    uint64_t pages = info.me_mapsize / c->psize, slack = pages * EVICT_SLACK_PCT / 100;
    if (slack < EVICT_SLACK_PGS)
        slack = EVICT_SLACK_PGS;
    /* ...but never more than half the map: with the smallest maps (64 pages) a slack of
     * EVICT_SLACK_PGS left the trees no room, and every put evicted all before it. */
    if (slack > pages / 2)
        slack = pages / 2;
    uint64_t used =
        tree_pages(txn, c->db_main) + tree_pages(txn, c->db_age) + tree_pages(txn, c->db_exp);
    if (used + slack < pages)
        return 0;
    size_t seen;
    return reap_batch(c, txn, c->db_age, EVICT_PER_PUT, INT64_MAX, n, &seen);
}

/* The map is full: evict EVICT_PCT of the entries (at least enough for need bytes, at most
 * EVICT_FULL_MAX so that one put never stalls its caller for long; the next puts go on
 * evicting), in write txns of at most EVICT_TXN_MAX entries; a txn that itself hits the
 * full map is retried smaller. *n_removed gets the number evicted. */
static void evict_full(aiq_cache_t *c, size_t need, uint64_t *n_removed)
{
    MDB_txn *txn;
    MDB_stat st = {0};
    *n_removed = 0;
    if (txn_begin(c, MDB_RDONLY, &txn))
        return;
    mdb_stat(txn, c->db_main, &st);
    txn_end(c, txn, false);
    uint64_t avg = st.ms_entries
                       ? (st.ms_leaf_pages + st.ms_overflow_pages) * c->psize / st.ms_entries + 1
                       : 1;
    uint64_t target = st.ms_entries * EVICT_PCT / 100, by_bytes = 2 * need / avg + 1;
    if (target > EVICT_FULL_MAX)
        target = EVICT_FULL_MAX;
    if (target < by_bytes)
        target = by_bytes;
    if (target < 16)
        target = 16;
    size_t batch = EVICT_TXN_MAX;
    while (*n_removed < target && batch > 0) {
        size_t max = target - *n_removed < batch ? (size_t)(target - *n_removed) : batch, seen = 0;
        uint64_t n = 0;
        if (txn_begin(c, 0, &txn))
            break;
        int rc = reap_batch(c, txn, c->db_age, max, INT64_MAX, &n, &seen);
        rc = rc ? (txn_end(c, txn, false), rc) : txn_end(c, txn, true);
        if (rc == 0) {
            *n_removed += n;
            COUNT(c, evicted, n);
            if (seen == 0)
                break; /* nothing left to evict */
            continue;
        }
        if (rc != MDB_MAP_FULL && rc != MDB_TXN_FULL)
            break;
        batch /= 8; /* fewer deletions dirty fewer pages */
    }
}

/* ---- put ------------------------------------------------------------------------------ */

/* One write txn: evict a little if nearly full, unindex the old value, store the new one
 * and its index records. Returns 0 or an LMDB code (MDB_MAP_FULL). */
static int put_txn(aiq_cache_t *c, const uint8_t *key, uint8_t *val, size_t n)
{
    hdr_t h, old;
    val_check_t vc = VAL_CORRUPT;
    uint64_t evicted = 0;
    hdr_parse(val, n, &h);
    MDB_txn *txn;
    int rc = txn_begin(c, 0, &txn);
    if (rc)
        return rc;
    rc = evict_some(c, txn, &evicted);
    if (rc == 0 && (rc = lookup(c, txn, key, &old, &vc)) == MDB_NOTFOUND)
        rc = 0;
    else if (rc == 0 && vc == VAL_OK && (rc = idx_del(txn, c->db_age, old.stored_at, key)) == 0)
        rc = idx_del(txn, c->db_exp, expiry_ms(&old), key);
    MDB_val k = {AIQ_CACHE_KEY_LEN, (void *)key}, v = {n, val};
    if (rc == 0)
        rc = mdb_put(txn, c->db_main, &k, &v, 0);
    if (rc == 0)
        rc = idx_put(txn, c->db_age, h.stored_at, key);
    if (rc == 0)
        rc = idx_put(txn, c->db_exp, expiry_ms(&h), key);
    if (rc) {
        txn_end(c, txn, false);
        return rc;
    }
    if ((rc = txn_end(c, txn, true)) == 0)
        COUNT(c, evicted, evicted);
    return rc;
}

static int check_put(aiq_cache_t *c, size_t len, int64_t stored_at, int64_t ttl_s,
                     const aiq_cache_meta_t *m, aiq_err_t *err)
{
    if (c->read_only)
        return aiq_err_set(err, AIQ_ESTATE, "cache: opened read-only");
    if (len > AIQ_CACHE_BODY_MAX)
        return aiq_err_set(err, AIQ_ETOOBIG, "cache put: body of %zu bytes, the limit is %u", len,
                           AIQ_CACHE_BODY_MAX);
    if (ttl_s < 0 || ttl_s > UINT32_MAX || stored_at < 0)
        return aiq_err_set(err, AIQ_EINVAL, "cache put: ttl %lld s or stored_at %lld invalid",
                           (long long)ttl_s, (long long)stored_at);
    if (m && (meta_len(m->operation) > AIQ_CACHE_META_MAX ||
              meta_len(m->persona) > AIQ_CACHE_META_MAX || meta_len(m->model) > AIQ_CACHE_META_MAX))
        return aiq_err_set(err, AIQ_EINVAL, "cache put: operation, persona or model over %d bytes",
                           AIQ_CACHE_META_MAX);
    return 0;
}

int aiq_cache_put_at(aiq_cache_t *c, const uint8_t key[AIQ_CACHE_KEY_LEN], const char *body,
                     size_t len, int64_t stored_at_ms, int64_t ttl_s, const aiq_cache_meta_t *meta,
                     aiq_err_t *err)
{
    int rc = check_put(c, len, stored_at_ms, ttl_s, meta, err);
    uint8_t *val;
    size_t n;
    if (rc)
        return rc;
    if (value_encode(c, body, len, stored_at_ms, ttl_s, meta, &val, &n))
        return aiq_err_set(err, AIQ_ENOMEM, "cache put: out of memory");
    MDB_envinfo info;
    mdb_env_info(c->env, &info);
    /* A value that could never fit must not flush the whole cache first. */
    rc = n > info.me_mapsize / 4 ? MDB_MAP_FULL : put_txn(c, key, val, n);
    for (int i = 0; i < PUT_RETRIES && rc == MDB_MAP_FULL && n <= info.me_mapsize / 4; i++) {
        uint64_t evicted;
        evict_full(c, n, &evicted);
        if (evicted == 0)
            break;
        rc = put_txn(c, key, val, n);
    }
    free(val);
    if (rc == 0) {
        COUNT(c, puts, 1);
        return 0;
    }
    if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL) {
        COUNT(c, dropped, 1);
        return 0;
    }
    COUNT(c, errors, 1);
    return lmdb_err(err, rc, "put");
}

int aiq_cache_put(aiq_cache_t *c, const uint8_t key[AIQ_CACHE_KEY_LEN], const char *body,
                  size_t len, int64_t ttl_s, const aiq_cache_meta_t *meta, aiq_err_t *err)
{
    return aiq_cache_put_at(c, key, body, len, now_ms(c), ttl_s, meta, err);
}

/* ---- invalidation --------------------------------------------------------------------- */

int aiq_cache_invalidate_key(aiq_cache_t *c, const uint8_t key[AIQ_CACHE_KEY_LEN], aiq_err_t *err)
{
    if (c->read_only)
        return aiq_err_set(err, AIQ_ESTATE, "cache: opened read-only");
    MDB_txn *txn;
    bool found = false;
    int rc = txn_begin(c, 0, &txn);
    if (rc)
        return lmdb_err(err, rc, "invalidate");
    rc = remove_entry(c, txn, key, &found);
    rc = rc ? (txn_end(c, txn, false), rc) : txn_end(c, txn, true);
    if (rc)
        return lmdb_err(err, rc, "invalidate");
    COUNT(c, invalidated, found);
    return found ? 1 : 0;
}

typedef struct scan {
    const char *op, *persona;
    uint8_t resume[AIQ_CACHE_KEY_LEN];
    bool started, done;
    uint8_t *hits; /* keys to remove, up to EVICT_TXN_MAX */
    size_t n_hits;
} scan_t;

static bool meta_matches(const scan_t *s, const hdr_t *h)
{
    const char *p = (const char *)h->strings;
    if (s->op && (strlen(s->op) != h->op_len || memcmp(s->op, p, h->op_len)))
        return false;
    p += h->op_len;
    return !s->persona ||
           (strlen(s->persona) == h->persona_len && memcmp(s->persona, p, h->persona_len) == 0);
}

/* Examines up to SCAN_TXN_MAX entries after s->resume, collecting the matching keys. */
static int scan_step(aiq_cache_t *c, MDB_txn *txn, scan_t *s)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, c->db_main, &cur);
    if (rc)
        return rc;
    MDB_val k = {AIQ_CACHE_KEY_LEN, s->resume}, v;
    rc = mdb_cursor_get(cur, &k, &v, s->started ? MDB_SET_RANGE : MDB_FIRST);
    if (rc == 0 && s->started && k.mv_size == AIQ_CACHE_KEY_LEN &&
        memcmp(k.mv_data, s->resume, AIQ_CACHE_KEY_LEN) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    s->n_hits = 0;
    for (int seen = 0; rc == 0 && seen < SCAN_TXN_MAX && s->n_hits < EVICT_TXN_MAX; seen++) {
        hdr_t h;
        if (k.mv_size == AIQ_CACHE_KEY_LEN) {
            memcpy(s->resume, k.mv_data, AIQ_CACHE_KEY_LEN);
            s->started = true;
            if (hdr_parse(v.mv_data, v.mv_size, &h) == VAL_OK && meta_matches(s, &h))
                memcpy(s->hits + AIQ_CACHE_KEY_LEN * s->n_hits++, k.mv_data, AIQ_CACHE_KEY_LEN);
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    s->done = rc == MDB_NOTFOUND;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int scan_txn(aiq_cache_t *c, scan_t *s, uint64_t *n)
{
    MDB_txn *txn;
    int rc = txn_begin(c, 0, &txn);
    if (rc)
        return rc;
    uint64_t removed = 0;
    rc = scan_step(c, txn, s);
    for (size_t i = 0; i < s->n_hits && rc == 0; i++) {
        bool found;
        rc = remove_entry(c, txn, s->hits + AIQ_CACHE_KEY_LEN * i, &found);
        removed += found;
    }
    rc = rc ? (txn_end(c, txn, false), rc) : txn_end(c, txn, true);
    if (rc == 0)
        *n += removed;
    return rc;
}

int aiq_cache_invalidate_by(aiq_cache_t *c, const char *operation, const char *persona,
                            uint64_t *n_removed, aiq_err_t *err)
{
    uint64_t n = 0;
    if (n_removed)
        *n_removed = 0;
    if (c->read_only)
        return aiq_err_set(err, AIQ_ESTATE, "cache: opened read-only");
    if (!operation && !persona)
        return aiq_err_set(err, AIQ_EINVAL, "cache invalidate: name an operation or a persona");
    scan_t s = {.op = operation, .persona = persona};
    s.hits = malloc(AIQ_CACHE_KEY_LEN * EVICT_TXN_MAX);
    if (!s.hits)
        return aiq_err_set(err, AIQ_ENOMEM, "cache invalidate: out of memory");
    int rc = 0;
    while (!s.done && rc == 0)
        rc = scan_txn(c, &s, &n);
    free(s.hits);
    COUNT(c, invalidated, n);
    if (n_removed)
        *n_removed = n;
    return rc ? lmdb_err(err, rc, "invalidate") : 0;
}

int aiq_cache_purge(aiq_cache_t *c, uint64_t *n_removed, aiq_err_t *err)
{
    if (n_removed)
        *n_removed = 0;
    if (c->read_only)
        return aiq_err_set(err, AIQ_ESTATE, "cache: opened read-only");
    MDB_txn *txn;
    MDB_stat st = {0};
    int rc = txn_begin(c, 0, &txn);
    if (rc)
        return lmdb_err(err, rc, "purge");
    if ((rc = mdb_stat(txn, c->db_main, &st)) || (rc = mdb_drop(txn, c->db_main, 0)) ||
        (rc = mdb_drop(txn, c->db_age, 0)) || (rc = mdb_drop(txn, c->db_exp, 0))) {
        txn_end(c, txn, false);
        return lmdb_err(err, rc, "purge");
    }
    if ((rc = txn_end(c, txn, true)))
        return lmdb_err(err, rc, "purge");
    COUNT(c, invalidated, st.ms_entries);
    if (n_removed)
        *n_removed = st.ms_entries;
    return 0;
}

/* ---- sweeping ------------------------------------------------------------------------- */

int aiq_cache_sweep(aiq_cache_t *c, size_t batch, uint64_t *n_removed, aiq_err_t *err)
{
    uint64_t total = 0;
    if (n_removed)
        *n_removed = 0;
    if (c->read_only)
        return aiq_err_set(err, AIQ_ESTATE, "cache: opened read-only");
    if (batch == 0)
        batch = AIQ_CACHE_SWEEP_BATCH;
    /* Swept when expired for longer than the grace: expires_at <= now - grace. */
    int64_t until = now_ms(c) - c->grace_ms;
    int rc = 0;
    for (;;) {
        MDB_txn *txn;
        uint64_t n = 0;
        size_t seen = 0;
        if ((rc = txn_begin(c, 0, &txn)))
            break;
        rc = reap_batch(c, txn, c->db_exp, batch, until, &n, &seen);
        rc = rc ? (txn_end(c, txn, false), rc) : txn_end(c, txn, true);
        if (rc)
            break;
        total += n;
        COUNT(c, expired_swept, n);
        /* Between batches the write lock is free for the workers' puts. */
        if (seen < batch || atomic_load(&c->sw_stop))
            break;
    }
    if (n_removed)
        *n_removed = total;
    return rc ? lmdb_err(err, rc, "sweep") : 0;
}

static void *sweeper_main(void *arg)
{
    aiq_cache_t *c = arg;
    pthread_mutex_lock(&c->sw_mu);
    while (!atomic_load(&c->sw_stop)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += c->sw_interval_ms / 1000;
        ts.tv_nsec += (c->sw_interval_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        int rc = 0;
        while (!atomic_load(&c->sw_stop) && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&c->sw_cond, &c->sw_mu, &ts);
        if (atomic_load(&c->sw_stop))
            break;
        pthread_mutex_unlock(&c->sw_mu);
        int dead = 0;
        mdb_reader_check(c->env, &dead);
        if (aiq_cache_sweep(c, c->sw_batch, NULL, NULL))
            COUNT(c, errors, 1);
        pthread_mutex_lock(&c->sw_mu);
    }
    pthread_mutex_unlock(&c->sw_mu);
    return NULL;
}

int aiq_cache_sweeper_start(aiq_cache_t *c, int64_t interval_ms, size_t batch, aiq_err_t *err)
{
    if (c->read_only || c->sw_running)
        return aiq_err_set(err, AIQ_ESTATE, "cache sweeper: read-only or already running");
    if (interval_ms < 1)
        return aiq_err_set(err, AIQ_EINVAL, "cache.sweep_interval_ms: must be positive");
    c->sw_interval_ms = interval_ms;
    c->sw_batch = batch ? batch : AIQ_CACHE_SWEEP_BATCH;
    atomic_store(&c->sw_stop, false);
    /* Signals belong to the caller's loop thread, not to this helper. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&c->sw_thread, NULL, sweeper_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc)
        return aiq_err_set(err, AIQ_ENOMEM, "cache sweeper: %s", strerror(rc));
    c->sw_running = true;
    return 0;
}

/* ---- stats, walk, verify -------------------------------------------------------------- */

static int count_reader(const char *msg, void *ctx)
{
    /* mdb_reader_list prints a title line, then one line per reader slot in use, or
     * "(no active readers)". */
    if (!strstr(msg, "pid") && !strstr(msg, "no active"))
        (*(uint32_t *)ctx)++;
    return 0;
}

int aiq_cache_stats(aiq_cache_t *c, aiq_cache_stats_t *st, aiq_err_t *err)
{
    memset(st, 0, sizeof(*st));
    MDB_txn *txn;
    MDB_stat ms;
    MDB_envinfo info;
    int rc = txn_begin(c, MDB_RDONLY, &txn);
    if (rc)
        return lmdb_err(err, rc, "stats");
    if ((rc = mdb_stat(txn, c->db_main, &ms)) == 0) {
        st->entries = ms.ms_entries;
        st->used_bytes = (tree_pages(txn, c->db_main) + tree_pages(txn, c->db_age) +
                          tree_pages(txn, c->db_exp)) *
                         c->psize;
    }
    txn_end(c, txn, false);
    if (rc)
        return lmdb_err(err, rc, "stats");
    mdb_env_info(c->env, &info);
    st->file_bytes = (uint64_t)(info.me_last_pgno + 1) * c->psize;
    st->map_bytes = info.me_mapsize;
    st->readers_max = info.me_maxreaders;
    mdb_reader_list(c->env, count_reader, &st->readers_used);
    st->hits = LOAD(c, hits);
    st->misses = LOAD(c, misses);
    st->stale = LOAD(c, stale);
    st->corrupt = LOAD(c, corrupt);
    st->puts = LOAD(c, puts);
    st->dropped = LOAD(c, dropped);
    st->evicted = LOAD(c, evicted);
    st->expired_swept = LOAD(c, expired_swept);
    st->invalidated = LOAD(c, invalidated);
    st->errors = LOAD(c, errors);
    return 0;
}

/* Calls fn(key, value, ctx) for every record of db in one read txn. */
typedef int (*each_fn)(aiq_cache_t *c, MDB_txn *txn, const MDB_val *k, const MDB_val *v, void *ctx);

static int each(aiq_cache_t *c, MDB_dbi db, each_fn fn, void *ctx, aiq_err_t *err)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = txn_begin(c, MDB_RDONLY, &txn), stop = 0;
    if (rc)
        return lmdb_err(err, rc, "walk");
    if ((rc = mdb_cursor_open(txn, db, &cur))) {
        txn_end(c, txn, false);
        return lmdb_err(err, rc, "walk");
    }
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !stop;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        stop = fn(c, txn, &k, &v, ctx);
    mdb_cursor_close(cur);
    txn_end(c, txn, false);
    if (stop < 0)
        return stop;
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : lmdb_err(err, rc, "walk");
}

typedef struct walk_ctx {
    aiq_cache_walk_fn fn;
    void *ctx;
    ZSTD_DCtx *dctx;
    int64_t now;
} walk_ctx_t;

static int on_walk_record(aiq_cache_t *c, MDB_txn *txn, const MDB_val *k, const MDB_val *v,
                          void *ctx)
{
    (void)txn;
    walk_ctx_t *w = ctx;
    if (k->mv_size != AIQ_CACHE_KEY_LEN)
        return 0;
    aiq_cache_entry_t e = {0};
    int dec = decode(w->dctx, v, &e);
    if (dec == AIQ_ENOMEM)
        return AIQ_ENOMEM;
    if (dec)
        COUNT(c, corrupt, 1);
    aiq_cache_state_t st = dec ? AIQ_CACHE_MISS : state_at(c, &e, w->now);
    int stop = w->fn(k->mv_data, st, dec ? NULL : &e, w->ctx);
    aiq_cache_entry_clear(&e);
    return stop ? 1 : 0;
}

int aiq_cache_walk(aiq_cache_t *c, aiq_cache_walk_fn fn, void *ctx, aiq_err_t *err)
{
    walk_ctx_t w = {fn, ctx, ZSTD_createDCtx(), now_ms(c)};
    if (!w.dctx)
        return aiq_err_set(err, AIQ_ENOMEM, "cache walk: out of memory");
    int rc = each(c, c->db_main, on_walk_record, &w, err);
    ZSTD_freeDCtx(w.dctx);
    if (rc == AIQ_ENOMEM)
        return aiq_err_set(err, rc, "cache walk: out of memory");
    return rc;
}

typedef struct verify_ctx {
    aiq_cache_verify_t *v;
    ZSTD_DCtx *dctx;
    bool age; /* which index on_verify_index is walking */
} verify_ctx_t;

static bool has_idx(aiq_cache_t *c, MDB_txn *txn, MDB_dbi db, int64_t ms, const uint8_t *key)
{
    uint8_t ik[IDX_LEN];
    idx_key(ik, ms, key);
    MDB_val k = {IDX_LEN, ik}, v;
    (void)c;
    return mdb_get(txn, db, &k, &v) == 0;
}

static int on_verify_entry(aiq_cache_t *c, MDB_txn *txn, const MDB_val *k, const MDB_val *v,
                           void *ctx)
{
    verify_ctx_t *vc = ctx;
    aiq_cache_entry_t e = {0};
    vc->v->entries++;
    if (k->mv_size != AIQ_CACHE_KEY_LEN || decode(vc->dctx, v, &e)) {
        vc->v->corrupt++;
        return 0;
    }
    vc->v->decoded++;
    hdr_t h;
    hdr_parse(v->mv_data, v->mv_size, &h);
    if (!has_idx(c, txn, c->db_age, h.stored_at, k->mv_data) ||
        !has_idx(c, txn, c->db_exp, expiry_ms(&h), k->mv_data))
        vc->v->unindexed++;
    aiq_cache_entry_clear(&e);
    return 0;
}

static int on_verify_index(aiq_cache_t *c, MDB_txn *txn, const MDB_val *k, const MDB_val *v,
                           void *ctx)
{
    (void)v;
    verify_ctx_t *vc = ctx;
    if (vc->age)
        vc->v->age_records++;
    else
        vc->v->exp_records++;
    hdr_t h;
    val_check_t check = VAL_CORRUPT;
    int rc = k->mv_size == IDX_LEN ? lookup(c, txn, (const uint8_t *)k->mv_data + 8, &h, &check)
                                   : MDB_NOTFOUND;
    if (rc == 0 && check == VAL_OK && (vc->age ? h.stored_at : expiry_ms(&h)) == idx_ms(k->mv_data))
        return 0;
    vc->v->orphans++;
    return 0;
}

int aiq_cache_verify(aiq_cache_t *c, aiq_cache_verify_t *v, aiq_err_t *err)
{
    memset(v, 0, sizeof(*v));
    verify_ctx_t vc = {v, ZSTD_createDCtx(), false};
    if (!vc.dctx)
        return aiq_err_set(err, AIQ_ENOMEM, "cache verify: out of memory");
    int rc = each(c, c->db_main, on_verify_entry, &vc, err);
    vc.age = true;
    if (rc == 0)
        rc = each(c, c->db_age, on_verify_index, &vc, err);
    vc.age = false;
    if (rc == 0)
        rc = each(c, c->db_exp, on_verify_index, &vc, err);
    ZSTD_freeDCtx(vc.dctx);
    return rc;
}

/* ---- bodies --------------------------------------------------------------------------- */

int aiq_cache_body_encode(const char *text, const char *stop_reason, int64_t input_tokens,
                          int64_t output_tokens, const char *model, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (!text)
        return AIQ_EINVAL;
    json_t *o = json_object();
    if (!o)
        return AIQ_ENOMEM;
    /* Fixed member order: the body is byte-identical wherever it is built. set_new takes
     * the value even when it fails; a NULL value (text not UTF-8) makes it fail. */
    int bad = json_object_set_new(o, "output", json_string(text));
    bad |=
        json_object_set_new(o, "stop_reason", stop_reason ? json_string(stop_reason) : json_null());
    bad |= json_object_set_new(o, "input_tokens", json_integer(input_tokens));
    bad |= json_object_set_new(o, "output_tokens", json_integer(output_tokens));
    bad |= json_object_set_new(o, "model", model ? json_string(model) : json_null());
    char *s = bad ? NULL : json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!s)
        return bad ? AIQ_EINVAL : AIQ_ENOMEM;
    *out = s;
    *len = strlen(s);
    return 0;
}

int aiq_cache_body_from_result(const json_t *result, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    const char *status = json_string_value(json_object_get(result, "status"));
    const char *text =
        json_string_value(json_object_get(json_object_get(result, "output"), "text"));
    if (!status || strcmp(status, "succeeded") || !text)
        return AIQ_EINVAL;
    json_t *usage = json_object_get(result, "usage");
    return aiq_cache_body_encode(text, json_string_value(json_object_get(result, "stop_reason")),
                                 json_integer_value(json_object_get(usage, "input_tokens")),
                                 json_integer_value(json_object_get(usage, "output_tokens")),
                                 json_string_value(json_object_get(result, "model")), out, len);
}

int aiq_cache_body_decode(const char *body, size_t len, aiq_cache_body_t *b, aiq_err_t *err)
{
    memset(b, 0, sizeof(*b));
    json_error_t je;
    json_t *o = json_loadb(body, len, 0, &je);
    json_t *t = json_object_get(o, "output");
    if (!json_is_object(o) || !json_is_string(t)) {
        json_decref(o);
        return aiq_err_set(err, AIQ_EINVAL, "cache body: not a cached result");
    }
    b->root = o;
    b->text = json_string_value(t);
    b->stop_reason = json_string_value(json_object_get(o, "stop_reason"));
    b->model = json_string_value(json_object_get(o, "model"));
    b->input_tokens = json_integer_value(json_object_get(o, "input_tokens"));
    b->output_tokens = json_integer_value(json_object_get(o, "output_tokens"));
    return 0;
}

void aiq_cache_body_free(aiq_cache_body_t *b)
{
    if (!b)
        return;
    json_decref(b->root);
    memset(b, 0, sizeof(*b));
}

void aiq_cache_opts_from_config(aiq_cache_opts_t *o, const aiq_config_t *cfg)
{
    aiq_cache_opts_init(o);
    o->path = cfg->cache_path;
    o->max_bytes = cfg->cache_max_bytes;
    o->compress_min = (size_t)cfg->cache_compress_min;
    o->stale_grace_s = cfg->cache_stale_grace_s;
}
