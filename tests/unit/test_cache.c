#include "aiq_err.h"
#include "cache.h"

#include <errno.h>
#include <lmdb.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- helpers -------------------------------------------------------------------------- */

typedef struct fake_clock {
    int64_t now, step; /* each reading advances by step */
} fake_clock_t;

static int64_t on_clock(void *ctx)
{
    fake_clock_t *fc = ctx;
    int64_t t = fc->now;
    fc->now += fc->step;
    return t;
}

static char *make_dir(void)
{
    char tmpl[] = "/tmp/aiq-cache-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static void rm_env(const char *dir)
{
    char p[512];
    const char *files[] = {"data.mdb", "lock.mdb"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void key_n(uint64_t i, uint8_t key[32])
{
    for (int b = 0; b < 32; b++)
        key[b] = (uint8_t)((i * 0x9e3779b97f4a7c15ull) >> ((b % 8) * 8)) ^ (uint8_t)b;
    memcpy(key, &i, sizeof(i));
}

static aiq_cache_t *open_at(const char *dir, int64_t max_bytes, fake_clock_t *fc)
{
    aiq_cache_opts_t o;
    aiq_cache_opts_init(&o);
    o.path = dir;
    o.max_bytes = max_bytes;
    o.stale_grace_s = 100;
    if (fc) {
        o.clock = on_clock;
        o.clock_ctx = fc;
    }
    aiq_cache_t *c = NULL;
    aiq_err_t err = {0};
    if (aiq_cache_open(&c, &o, &err))
        fail_msg("open %s: %s", dir, err.msg);
    return c;
}

static void put_ok(aiq_cache_t *c, uint64_t i, const char *body, size_t len, int64_t ttl)
{
    uint8_t k[32];
    key_n(i, k);
    aiq_cache_meta_t m = {"op", "persona", "model"};
    aiq_err_t err = {0};
    if (aiq_cache_put(c, k, body, len, ttl, &m, &err))
        fail_msg("put %llu: %s", (unsigned long long)i, err.msg);
}

static aiq_cache_state_t get_n(aiq_cache_t *c, uint64_t i, aiq_cache_entry_t *e)
{
    uint8_t k[32];
    key_n(i, k);
    return aiq_cache_get(c, k, e);
}

static aiq_cache_stats_t stats_of(aiq_cache_t *c)
{
    aiq_cache_stats_t st;
    assert_int_equal(aiq_cache_stats(c, &st, NULL), 0);
    return st;
}

static void assert_consistent(aiq_cache_t *c, uint64_t entries)
{
    aiq_cache_verify_t v;
    assert_int_equal(aiq_cache_verify(c, &v, NULL), 0);
    assert_int_equal(v.entries, entries);
    assert_int_equal(v.decoded, entries);
    assert_int_equal(v.corrupt, 0);
    assert_int_equal(v.unindexed, 0);
    assert_int_equal(v.orphans, 0);
    assert_int_equal(v.age_records, entries);
    assert_int_equal(v.exp_records, entries);
}

/* English prose with JSON-ish structure: compresses like a model answer does. */
static char *prose(size_t len)
{
    static const char *words[] = {"the",       "market", "growth", "revenue",      "{\"score\": 7}",
                                  "team",      "risk",   "and",    "founders",     "strong",
                                  "retention", "of",     "a",      "\"risks\": [", "signal."};
    char *s = malloc(len + 1);
    size_t n = 0;
    unsigned x = 12345;
    while (n < len) {
        x = x * 1103515245u + 12345u;
        const char *w = words[(x >> 16) % 15];
        for (const char *p = w; *p && n < len; p++)
            s[n++] = *p;
        if (n < len)
            s[n++] = ' ';
    }
    s[len] = '\0';
    return s;
}

static char *noise(size_t len, unsigned seed)
{
    char *s = malloc(len + 1);
    for (size_t i = 0; i < len; i++) {
        seed = seed * 1103515245u + 12345u;
        s[i] = (char)(seed >> 16);
    }
    s[len] = '\0';
    return s;
}

/* ---- basics --------------------------------------------------------------------------- */

static void cache_put_get_replace_and_permissions(void **state)
{
    (void)state;
    char *root = make_dir(), dir[512], p[600];
    snprintf(dir, sizeof(dir), "%s/a/b", root);
    aiq_cache_t *c = open_at(dir, 4 << 20, NULL);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    snprintf(p, sizeof(p), "%s/data.mdb", dir);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    snprintf(p, sizeof(p), "%s/lock.mdb", dir);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    aiq_cache_entry_t e;
    assert_int_equal(get_n(c, 1, &e), AIQ_CACHE_MISS);
    assert_null(e.body);
    put_ok(c, 1, "{\"output\":\"hi\"}", 15, 60);
    assert_int_equal(get_n(c, 1, &e), AIQ_CACHE_HIT);
    assert_int_equal(e.len, 15);
    assert_string_equal(e.body, "{\"output\":\"hi\"}");
    assert_string_equal(e.operation, "op");
    assert_string_equal(e.persona, "persona");
    assert_string_equal(e.model, "model");
    assert_int_equal(e.ttl_s, 60);
    assert_false(e.compressed);
    aiq_cache_entry_clear(&e);
    assert_null(e.body);
    /* Replacing keeps one entry with exactly one pair of index records. */
    put_ok(c, 1, "second", 6, 30);
    assert_int_equal(get_n(c, 1, &e), AIQ_CACHE_HIT);
    assert_string_equal(e.body, "second");
    assert_int_equal(e.ttl_s, 30);
    aiq_cache_entry_clear(&e);
    /* NULL meta stores empty strings. */
    uint8_t k[32];
    key_n(2, k);
    assert_int_equal(aiq_cache_put(c, k, "", 0, 60, NULL, NULL), 0);
    assert_int_equal(aiq_cache_get(c, k, &e), AIQ_CACHE_HIT);
    assert_int_equal(e.len, 0);
    assert_string_equal(e.body, "");
    assert_string_equal(e.operation, "");
    aiq_cache_entry_clear(&e);
    assert_consistent(c, 2);
    aiq_cache_stats_t s = stats_of(c);
    assert_int_equal(s.entries, 2);
    assert_int_equal(s.hits, 3);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.puts, 3);
    assert_int_equal(s.map_bytes, 4 << 20);
    assert_true(s.readers_used >= 1);
    aiq_cache_close(c);
    aiq_cache_close(NULL);
    rm_env(dir);
    snprintf(p, sizeof(p), "%s/a", root);
    rmdir(p);
    rmdir(root);
    free(root);
}

static void cache_compression_round_trip(void **state)
{
    (void)state;
    char *dir = make_dir();
    aiq_cache_t *c = open_at(dir, 8 << 20, NULL);
    aiq_cache_entry_t e;
    char *small = prose(511), *large = prose(4000), *rnd = noise(2000, 7);
    put_ok(c, 1, small, 511, 60);
    put_ok(c, 2, large, 4000, 60);
    put_ok(c, 3, rnd, 2000, 60);
    assert_int_equal(get_n(c, 1, &e), AIQ_CACHE_HIT);
    assert_false(e.compressed); /* below compress_min */
    assert_memory_equal(e.body, small, 511);
    aiq_cache_entry_clear(&e);
    assert_int_equal(get_n(c, 2, &e), AIQ_CACHE_HIT);
    assert_true(e.compressed);
    assert_int_equal(e.len, 4000);
    assert_memory_equal(e.body, large, 4000);
    assert_true(e.stored_bytes < 4000 / 2);
    aiq_cache_entry_clear(&e);
    /* Incompressible: zstd would not save space, so the body is stored as it is. */
    assert_int_equal(get_n(c, 3, &e), AIQ_CACHE_HIT);
    assert_false(e.compressed);
    assert_memory_equal(e.body, rnd, 2000);
    aiq_cache_entry_clear(&e);
    /* Bodies larger than the cap are refused, not truncated. */
    uint8_t k[32];
    key_n(9, k);
    aiq_err_t err = {0};
    assert_int_equal(aiq_cache_put(c, k, large, AIQ_CACHE_BODY_MAX + 1u, 60, NULL, &err),
                     AIQ_ETOOBIG);
    assert_int_equal(aiq_cache_put(c, k, "x", 1, -1, NULL, &err), AIQ_EINVAL);
    free(small);
    free(large);
    free(rnd);
    aiq_cache_close(c);
    rm_env(dir);
    free(dir);
}

/* ---- TTL ------------------------------------------------------------------------------ */

static void cache_ttl_hit_stale_then_swept(void **state)
{
    (void)state;
    char *dir = make_dir();
    fake_clock_t fc = {1700000000000, 0};
    aiq_cache_t *c = open_at(dir, 4 << 20, &fc); /* grace 100 s */
    put_ok(c, 1, "short", 5, 10);
    put_ok(c, 2, "long", 4, 1000);
    int64_t t0 = 1700000000000;
    aiq_cache_entry_t e;
    fc.now = t0 + 5000;
    assert_int_equal(get_n(c, 1, &e), AIQ_CACHE_HIT);
    assert_int_equal(e.age_ms, 5000);
    aiq_cache_entry_clear(&e);
    fc.now = t0 + 10000;
    assert_int_equal(get_n(c, 1, &e), AIQ_CACHE_STALE);
    assert_string_equal(e.body, "short"); /* stale-if-error still has the answer */
    aiq_cache_entry_clear(&e);
    fc.now = t0 + 109999;
    assert_int_equal(get_n(c, 1, &e), AIQ_CACHE_STALE);
    aiq_cache_entry_clear(&e);
    /* A sweep inside the grace period keeps it. */
    uint64_t n = 99;
    assert_int_equal(aiq_cache_sweep(c, 0, &n, NULL), 0);
    assert_int_equal(n, 0);
    fc.now = t0 + 110000;
    assert_int_equal(get_n(c, 1, &e), AIQ_CACHE_MISS);
    assert_int_equal(stats_of(c).entries, 2); /* past grace, but still there until swept */
    assert_int_equal(aiq_cache_sweep(c, 0, &n, NULL), 0);
    assert_int_equal(n, 1);
    assert_int_equal(stats_of(c).entries, 1);
    assert_int_equal(get_n(c, 2, &e), AIQ_CACHE_HIT);
    aiq_cache_entry_clear(&e);
    aiq_cache_stats_t s = stats_of(c);
    assert_int_equal(s.expired_swept, 1);
    assert_int_equal(s.stale, 2);
    assert_consistent(c, 1);
    /* A clock that stepped back is age 0, not negative. */
    fc.now = t0 - 60000;
    assert_int_equal(get_n(c, 2, &e), AIQ_CACHE_HIT);
    assert_int_equal(e.age_ms, 0);
    aiq_cache_entry_clear(&e);
    aiq_cache_close(c);
    rm_env(dir);
    free(dir);
}

/* The sweeper thread removes, in batches, what is past ttl + grace, and nothing else. */
static void cache_sweeper_thread_removes_expired(void **state)
{
    (void)state;
    char *dir = make_dir();
    aiq_cache_t *c = open_at(dir, 8 << 20, NULL); /* real clock, grace 100 s */
    int64_t now = (int64_t)time(NULL) * 1000;
    for (uint64_t i = 0; i < 2500; i++) {
        uint8_t k[32];
        key_n(i, k);
        /* Even keys expired 200 s ago (past grace), odd ones are fresh. */
        int64_t at = i % 2 ? now : now - 300000;
        assert_int_equal(aiq_cache_put_at(c, k, "body", 4, at, 100, NULL, NULL), 0);
    }
    assert_int_equal(stats_of(c).entries, 2500);
    assert_int_equal(aiq_cache_sweeper_start(c, 10, 100, NULL), 0);
    assert_int_equal(aiq_cache_sweeper_start(c, 10, 100, NULL), AIQ_ESTATE);
    for (int i = 0; i < 500 && stats_of(c).entries != 1250; i++)
        usleep(10000);
    aiq_cache_stats_t s = stats_of(c);
    assert_int_equal(s.entries, 1250);
    assert_int_equal(s.expired_swept, 1250);
    aiq_cache_entry_t e;
    assert_int_equal(get_n(c, 1, &e), AIQ_CACHE_HIT);
    aiq_cache_entry_clear(&e);
    assert_int_equal(get_n(c, 0, &e), AIQ_CACHE_MISS);
    assert_consistent(c, 1250);
    aiq_cache_close(c); /* stops and joins the sweeper */
    rm_env(dir);
    free(dir);
}

/* ---- corruption ----------------------------------------------------------------------- */

typedef void (*mangle_fn)(uint8_t *v, size_t *n);

/* Rewrites the stored value of key i through raw LMDB (the cache must be closed). */
static void mangle(const char *dir, uint64_t i, mangle_fn fn)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "entries", 0, &dbi), 0);
    uint8_t k[32];
    key_n(i, k);
    MDB_val key = {32, k}, val;
    assert_int_equal(mdb_get(txn, dbi, &key, &val), 0);
    size_t n = val.mv_size;
    uint8_t *copy = malloc(n + 256);
    memcpy(copy, val.mv_data, n);
    fn(copy, &n);
    val.mv_data = copy;
    val.mv_size = n;
    assert_int_equal(mdb_put(txn, dbi, &key, &val, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    free(copy);
}

static void reseal(uint8_t *v, size_t n)
{
    uint64_t s = aiq__cache_value_sum(v, n);
    for (int b = 0; b < 8; b++)
        v[32 + b] = (uint8_t)(s >> (8 * b));
}

static void m_version(uint8_t *v, size_t *n)
{
    v[4] = 99; /* a future format */
    reseal(v, *n);
}

static void m_truncate(uint8_t *v, size_t *n)
{
    (void)v;
    *n -= 7;
}

static void m_garbage(uint8_t *v, size_t *n)
{
    for (size_t i = 0; i < 100; i++)
        v[i] = (uint8_t)(i * 77 + 3);
    *n = 100;
}

static void m_bitflip(uint8_t *v, size_t *n)
{
    v[*n / 2] ^= 0x10; /* checksum no longer matches */
}

/* Valid checksum, broken zstd frame: the frame magic (right after the 14 bytes of
 * "op", "persona", "model") is destroyed. */
static void m_zstd_magic(uint8_t *v, size_t *n)
{
    assert_int_equal(v[5] & 1, 1);
    v[40 + 14] ^= 0xff;
    reseal(v, *n);
}

/* Valid checksum, zstd content byte changed: caught by the frame's own checksum. */
static void m_zstd_content(uint8_t *v, size_t *n)
{
    v[*n - 20] ^= 0x5a;
    reseal(v, *n);
}

static int on_walk_count(const uint8_t key[32], aiq_cache_state_t st, const aiq_cache_entry_t *e,
                         void *ctx)
{
    (void)key;
    (void)st;
    int *counts = ctx;
    counts[e ? 0 : 1]++;
    return 0;
}

static void cache_corrupt_and_unknown_versions_are_counted_misses(void **state)
{
    (void)state;
    char *dir = make_dir();
    aiq_cache_t *c = open_at(dir, 4 << 20, NULL);
    char *big = prose(3000);
    for (uint64_t i = 1; i <= 7; i++)
        put_ok(c, i, big, i >= 5 && i <= 6 ? 3000 : 300, 600);
    aiq_cache_close(c);
    mangle_fn fns[] = {m_version, m_truncate, m_garbage, m_bitflip, m_zstd_magic, m_zstd_content};
    for (uint64_t i = 1; i <= 6; i++)
        mangle(dir, i, fns[i - 1]);
    c = open_at(dir, 4 << 20, NULL);
    aiq_cache_entry_t e;
    for (uint64_t i = 1; i <= 6; i++) {
        assert_int_equal(get_n(c, i, &e), AIQ_CACHE_MISS);
        assert_null(e.body);
    }
    assert_int_equal(get_n(c, 7, &e), AIQ_CACHE_HIT);
    aiq_cache_entry_clear(&e);
    aiq_cache_stats_t s = stats_of(c);
    assert_int_equal(s.corrupt, 6);
    assert_int_equal(s.misses, 6);
    assert_int_equal(s.errors, 0);
    int counts[2] = {0, 0};
    assert_int_equal(aiq_cache_walk(c, on_walk_count, counts, NULL), 0);
    assert_int_equal(counts[0], 1);
    assert_int_equal(counts[1], 6);
    /* A put over a corrupt value replaces it. */
    put_ok(c, 3, "fixed", 5, 600);
    assert_int_equal(get_n(c, 3, &e), AIQ_CACHE_HIT);
    assert_string_equal(e.body, "fixed");
    aiq_cache_entry_clear(&e);
    /* Invalidation by operation matches values whose header is intact (3, 7 and the two
     * with broken zstd bodies); the unreadable ones (1, 2, 4) go with purge. */
    uint64_t n = 0;
    assert_int_equal(aiq_cache_invalidate_by(c, "op", NULL, &n, NULL), 0);
    assert_int_equal(n, 4);
    assert_int_equal(aiq_cache_purge(c, &n, NULL), 0);
    assert_int_equal(n, 3);
    assert_consistent(c, 0);
    free(big);
    aiq_cache_close(c);
    rm_env(dir);
    free(dir);
}

/* ---- eviction ------------------------------------------------------------------------- */

static void cache_evicts_oldest_when_full(void **state)
{
    (void)state;
    char *dir = make_dir();
    fake_clock_t fc = {1700000000000, 1}; /* every put is 1 ms younger than the last */
    aiq_cache_t *c = open_at(dir, 1 << 20, &fc);
    const uint64_t N = 10000; /* 10 MiB of bodies into a 1 MiB map */
    for (uint64_t i = 0; i < N; i++) {
        char *b = noise(1000, (unsigned)i + 1);
        uint8_t k[32];
        key_n(i, k);
        aiq_err_t err = {0};
        if (aiq_cache_put(c, k, b, 1000, 3600, NULL, &err))
            fail_msg("put %llu failed: %s", (unsigned long long)i, err.msg);
        free(b);
    }
    aiq_cache_stats_t s = stats_of(c);
    assert_int_equal(s.puts + s.dropped, N);
    assert_true(s.dropped < N / 100);
    assert_int_equal(s.evicted, s.puts - s.entries); /* every key was new */
    assert_true(s.entries > 100 && s.entries < 1000);
    assert_true(s.file_bytes <= 1 << 20);
    aiq_cache_entry_t e;
    for (uint64_t i = N - 100; i < N; i++) {
        if (get_n(c, i, &e) != AIQ_CACHE_HIT)
            fail_msg("newest entry %llu is gone", (unsigned long long)i);
        char *b = noise(1000, (unsigned)i + 1);
        assert_memory_equal(e.body, b, 1000);
        free(b);
        aiq_cache_entry_clear(&e);
    }
    for (uint64_t i = 0; i < 1000; i++)
        assert_int_equal(get_n(c, i, &e), AIQ_CACHE_MISS);
    assert_int_equal(stats_of(c).corrupt, 0);
    assert_consistent(c, s.entries);
    /* A body that can never fit is dropped, not an error, and flushes nothing. */
    char *huge = noise(600000, 3);
    uint8_t k[32];
    key_n(N + 1, k);
    assert_int_equal(aiq_cache_put(c, k, huge, 600000, 60, NULL, NULL), 0);
    assert_int_equal(stats_of(c).dropped, s.dropped + 1);
    assert_int_equal(stats_of(c).entries, s.entries);
    free(huge);
    aiq_cache_close(c);
    rm_env(dir);
    free(dir);
}

/* The smallest map allowed (64 pages) must still hold entries: the slack kept free for
 * LMDB is capped at half the map, else every put evicted everything before it (found by
 * tests/system cache-full). */
static void cache_smallest_map_keeps_entries(void **state)
{
    (void)state;
    char *dir = make_dir();
    fake_clock_t fc = {1700000000000, 1};
    aiq_cache_t *c = open_at(dir, AIQ_CACHE_MIN_MAX_BYTES, &fc);
    const uint64_t N = 3000;
    for (uint64_t i = 0; i < N; i++) {
        char *b = noise(300, (unsigned)i + 1);
        put_ok(c, i, b, 300, 3600);
        free(b);
    }
    aiq_cache_stats_t s = stats_of(c);
    assert_true(s.dropped < N / 100);
    assert_true(s.entries > 100);
    aiq_cache_entry_t e;
    for (uint64_t i = N - 50; i < N; i++) {
        if (get_n(c, i, &e) != AIQ_CACHE_HIT)
            fail_msg("newest entry %llu is gone (%llu entries)", (unsigned long long)i,
                     (unsigned long long)s.entries);
        aiq_cache_entry_clear(&e);
    }
    assert_consistent(c, s.entries);
    aiq_cache_close(c);
    rm_env(dir);
    free(dir);
}

typedef struct pin_ctx {
    aiq_cache_t *c;
    int calls;
} pin_ctx_t;

/* Runs inside a walk, whose read snapshot pins every page freed after it: the map fills
 * up for good, eviction cannot help, and puts are dropped (counted), never failed. */
static int on_walk_write_while_pinned(const uint8_t key[32], aiq_cache_state_t st,
                                      const aiq_cache_entry_t *e, void *ctx)
{
    (void)key;
    (void)st;
    (void)e;
    pin_ctx_t *p = ctx;
    if (p->calls++)
        return 1;
    for (uint64_t i = 100; i < 3100; i++) {
        char *b = noise(1000, (unsigned)i);
        uint8_t k[32];
        key_n(i, k);
        assert_int_equal(aiq_cache_put(p->c, k, b, 1000, 3600, NULL, NULL), 0);
        free(b);
    }
    return 1;
}

static void cache_full_map_drops_puts_then_recovers(void **state)
{
    (void)state;
    char *dir = make_dir();
    fake_clock_t fc = {1700000000000, 1};
    aiq_cache_t *c = open_at(dir, 1 << 20, &fc);
    for (uint64_t i = 0; i < 100; i++) {
        char *b = noise(1000, (unsigned)i);
        put_ok(c, i, b, 1000, 3600);
        free(b);
    }
    pin_ctx_t p = {c, 0};
    assert_int_equal(aiq_cache_walk(c, on_walk_write_while_pinned, &p, NULL), 0);
    aiq_cache_stats_t s = stats_of(c);
    assert_true(s.dropped > 0);
    assert_int_equal(s.puts + s.dropped, 3100);
    assert_int_equal(s.errors, 0);
    /* The reader is gone: the same map takes new entries again. */
    for (uint64_t i = 5000; i < 6000; i++) {
        char *b = noise(1000, (unsigned)i);
        put_ok(c, i, b, 1000, 3600);
        free(b);
    }
    aiq_cache_stats_t s2 = stats_of(c);
    assert_true(s2.dropped - s.dropped < 10);
    aiq_cache_entry_t e;
    assert_int_equal(get_n(c, 5999, &e), AIQ_CACHE_HIT);
    aiq_cache_entry_clear(&e);
    assert_consistent(c, s2.entries);
    aiq_cache_close(c);
    rm_env(dir);
    free(dir);
}

/* ---- processes ------------------------------------------------------------------------ */

static void cache_put_in_child_is_hit_in_parent(void **state)
{
    (void)state;
    char *dir = make_dir();
    aiq_cache_t *c = open_at(dir, 1 << 20, NULL);
    aiq_cache_entry_t e;
    assert_int_equal(get_n(c, 42, &e), AIQ_CACHE_MISS); /* the parent's read txn exists */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* A process of its own: its own handle, never the parent's. A larger map makes
         * the parent adopt the size this process grows the file to. */
        aiq_cache_opts_t o;
        aiq_cache_opts_init(&o);
        o.path = dir;
        o.max_bytes = 8 << 20;
        aiq_cache_t *cc;
        if (aiq_cache_open(&cc, &o, NULL))
            _exit(2);
        char *b = noise(1000, 9);
        uint8_t k[32];
        for (uint64_t i = 0; i < 3000; i++) { /* ~3 MB: beyond the parent's 1 MiB map */
            key_n(1000 + i, k);
            if (aiq_cache_put(cc, k, b, 1000, 60, NULL, NULL))
                _exit(3);
        }
        key_n(42, k);
        int rc = aiq_cache_put(cc, k, "from child", 10, 60, NULL, NULL);
        aiq_cache_close(cc);
        _exit(rc ? 4 : 0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(get_n(c, 42, &e), AIQ_CACHE_HIT);
    assert_string_equal(e.body, "from child");
    aiq_cache_entry_clear(&e);
    assert_int_equal(get_n(c, 1000 + 2999, &e), AIQ_CACHE_HIT);
    aiq_cache_entry_clear(&e);
    aiq_cache_stats_t s = stats_of(c);
    assert_int_equal(s.errors, 0);
    assert_int_equal(s.map_bytes, 8 << 20); /* adopted */
    assert_int_equal(s.entries, 3001);
    aiq_cache_close(c);
    rm_env(dir);
    free(dir);
}

static void write_forever(const char *dir, unsigned seed)
{
    aiq_cache_opts_t o;
    aiq_cache_opts_init(&o);
    o.path = dir;
    o.max_bytes = 2 << 20; /* small, so eviction runs under the kills too */
    aiq_cache_t *c;
    if (aiq_cache_open(&c, &o, NULL))
        _exit(2);
    char *b = prose(9000);
    for (uint64_t i = 0;; i++) {
        seed = seed * 1103515245u + 12345u;
        uint8_t k[32];
        key_n(seed % 5000, k);
        size_t len = 50 + (seed >> 8) % 8000; /* small, compressed and overflow-page values */
        if (seed % 17 == 0)
            aiq_cache_invalidate_key(c, k, NULL);
        else if (aiq_cache_put(c, k, b, len, 3600, NULL, NULL))
            _exit(3);
    }
}

static void cache_survives_sigkill_during_writes(void **state)
{
    (void)state;
    char *dir = make_dir();
    aiq_cache_t *c = open_at(dir, 2 << 20, NULL); /* a reader that outlives every writer */
    unsigned seed = 1;
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            write_forever(dir, (unsigned)round * 7919u + 1);
        seed = seed * 1103515245u + 12345u;
        usleep(5000 + (seed >> 8) % 20000);
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status)); /* killed mid-burst, not exited on an error */
        aiq_cache_entry_t e;
        for (uint64_t i = 0; i < 50; i++) {
            get_n(c, i, &e);
            aiq_cache_entry_clear(&e);
        }
    }
    aiq_cache_stats_t s = stats_of(c);
    assert_int_equal(s.corrupt, 0);
    assert_int_equal(s.errors, 0);
    assert_true(s.entries > 0);
    int counts[2] = {0, 0};
    assert_int_equal(aiq_cache_walk(c, on_walk_count, counts, NULL), 0);
    assert_int_equal(counts[1], 0);
    assert_int_equal((uint64_t)counts[0], s.entries);
    assert_consistent(c, s.entries);
    aiq_cache_close(c);
    /* And it opens again, writable, as the next worker would. */
    c = open_at(dir, 2 << 20, NULL);
    put_ok(c, 1, "after", 5, 60);
    assert_consistent(c, stats_of(c).entries);
    aiq_cache_close(c);
    rm_env(dir);
    free(dir);
}

/* ---- invalidation --------------------------------------------------------------------- */

static void cache_invalidate_by_operation_persona_key_and_purge(void **state)
{
    (void)state;
    char *dir = make_dir();
    aiq_cache_t *c = open_at(dir, 16 << 20, NULL);
    const char *ops[] = {"vc-analysis", "content-generation"};
    const char *personas[] = {"investor", "founder", ""};
    uint64_t want_op0 = 0, want_founder = 0;
    for (uint64_t i = 0; i < 6000; i++) { /* more than one scan batch */
        uint8_t k[32];
        key_n(i, k);
        aiq_cache_meta_t m = {ops[i % 2], personas[i % 3], "m"};
        assert_int_equal(aiq_cache_put(c, k, "b", 1, 600, &m, NULL), 0);
        want_op0 += i % 2 == 0;
        want_founder += i % 3 == 1 && i % 2 == 1;
    }
    uint64_t n = 0;
    aiq_err_t err = {0};
    assert_int_equal(aiq_cache_invalidate_by(c, NULL, NULL, &n, &err), AIQ_EINVAL);
    assert_int_equal(aiq_cache_invalidate_by(c, "vc-analysis", NULL, &n, NULL), 0);
    assert_int_equal(n, want_op0);
    assert_int_equal(aiq_cache_invalidate_by(c, "vc-analysis", NULL, &n, NULL), 0);
    assert_int_equal(n, 0);
    assert_int_equal(aiq_cache_invalidate_by(c, NULL, "founder", &n, NULL), 0);
    assert_int_equal(n, want_founder);
    /* "" names the entries without persona. */
    assert_int_equal(aiq_cache_invalidate_by(c, "content-generation", "", &n, NULL), 0);
    assert_int_equal(n, 1000);
    uint64_t left = 6000 - want_op0 - want_founder - 1000;
    assert_int_equal(stats_of(c).entries, left);
    assert_consistent(c, left);
    /* The survivors are content-generation/investor: i % 6 == 3. */
    uint8_t k[32];
    key_n(3, k);
    assert_int_equal(aiq_cache_invalidate_key(c, k, NULL), 1);
    assert_int_equal(aiq_cache_invalidate_key(c, k, NULL), 0);
    assert_int_equal(aiq_cache_purge(c, &n, NULL), 0);
    assert_int_equal(n, left - 1);
    assert_int_equal(stats_of(c).entries, 0);
    assert_consistent(c, 0);
    aiq_cache_close(c);
    rm_env(dir);
    free(dir);
}

/* ---- options and read-only ------------------------------------------------------------ */

static void cache_read_only_and_bad_options(void **state)
{
    (void)state;
    char *dir = make_dir(), missing[600], file[600];
    aiq_cache_opts_t o;
    aiq_cache_opts_init(&o);
    aiq_cache_t *c = (aiq_cache_t *)1;
    aiq_err_t err = {0};
    snprintf(missing, sizeof(missing), "%s/none", dir);
    o.path = missing;
    o.read_only = true;
    assert_int_equal(aiq_cache_open(&c, &o, &err), AIQ_ENOTFOUND);
    assert_null(c);
    o.read_only = false;
    o.max_bytes = 1000;
    assert_int_equal(aiq_cache_open(&c, &o, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "cache.max_bytes"));
    o.max_bytes = 1 << 20;
    o.path = "";
    assert_int_equal(aiq_cache_open(&c, &o, &err), AIQ_EINVAL);
    snprintf(file, sizeof(file), "%s/file", dir);
    FILE *f = fopen(file, "w");
    fclose(f);
    o.path = file;
    assert_int_equal(aiq_cache_open(&c, &o, &err), AIQ_EINVAL);
    unlink(file);
    /* Written by one handle, read through a read-only one. */
    c = open_at(dir, 1 << 20, NULL);
    put_ok(c, 5, "ro", 2, 60);
    aiq_cache_close(c);
    o.path = dir;
    o.read_only = true;
    assert_int_equal(aiq_cache_open(&c, &o, &err), 0);
    aiq_cache_entry_t e;
    assert_int_equal(get_n(c, 5, &e), AIQ_CACHE_HIT);
    assert_string_equal(e.body, "ro");
    aiq_cache_entry_clear(&e);
    uint8_t k[32];
    key_n(6, k);
    assert_int_equal(aiq_cache_put(c, k, "x", 1, 60, NULL, &err), AIQ_ESTATE);
    assert_int_equal(aiq_cache_purge(c, NULL, &err), AIQ_ESTATE);
    assert_int_equal(aiq_cache_sweeper_start(c, 100, 0, &err), AIQ_ESTATE);
    aiq_cache_close(c);
    rm_env(dir);
    free(dir);
}

/* ---- bodies --------------------------------------------------------------------------- */

static void cache_body_from_result_and_back(void **state)
{
    (void)state;
    json_error_t je;
    json_t *r = json_loads(
        "{\"job_id\":\"j\",\"status\":\"succeeded\",\"output\":{\"text\":\"Hello \\u00e9\"},"
        "\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":12,\"output_tokens\":34,"
        "\"total_tokens\":46},\"model\":\"m1\",\"cache\":{\"hit\":false},\"worker\":\"w\"}",
        0, &je);
    assert_non_null(r);
    char *body;
    size_t len;
    assert_int_equal(aiq_cache_body_from_result(r, &body, &len), 0);
    assert_string_equal(body, "{\"output\":\"Hello \xc3\xa9\",\"stop_reason\":\"end_turn\","
                              "\"input_tokens\":12,\"output_tokens\":34,\"model\":\"m1\"}");
    assert_int_equal(len, strlen(body));
    /* The same bytes from fields. */
    char *body2;
    size_t len2;
    assert_int_equal(
        aiq_cache_body_encode("Hello \xc3\xa9", "end_turn", 12, 34, "m1", &body2, &len2), 0);
    assert_string_equal(body, body2);
    aiq_cache_body_t b;
    assert_int_equal(aiq_cache_body_decode(body, len, &b, NULL), 0);
    assert_string_equal(b.text, "Hello \xc3\xa9");
    assert_string_equal(b.stop_reason, "end_turn");
    assert_string_equal(b.model, "m1");
    assert_int_equal(b.input_tokens, 12);
    assert_int_equal(b.output_tokens, 34);
    aiq_cache_body_free(&b);
    free(body);
    free(body2);
    json_object_set_new(r, "status", json_string("degraded"));
    assert_int_equal(aiq_cache_body_from_result(r, &body, &len), AIQ_EINVAL);
    assert_null(body);
    json_object_set_new(r, "status", json_string("succeeded"));
    json_object_set_new(r, "output", json_null());
    assert_int_equal(aiq_cache_body_from_result(r, &body, &len), AIQ_EINVAL);
    json_decref(r);
    assert_int_equal(aiq_cache_body_encode("a\xff", NULL, 0, 0, NULL, &body, &len), AIQ_EINVAL);
    assert_int_equal(aiq_cache_body_decode("[1]", 3, &b, NULL), AIQ_EINVAL);
    assert_null(b.root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cache_put_get_replace_and_permissions),
        cmocka_unit_test(cache_compression_round_trip),
        cmocka_unit_test(cache_ttl_hit_stale_then_swept),
        cmocka_unit_test(cache_sweeper_thread_removes_expired),
        cmocka_unit_test(cache_corrupt_and_unknown_versions_are_counted_misses),
        cmocka_unit_test(cache_evicts_oldest_when_full),
        cmocka_unit_test(cache_smallest_map_keeps_entries),
        cmocka_unit_test(cache_full_map_drops_puts_then_recovers),
        cmocka_unit_test(cache_put_in_child_is_hit_in_parent),
        cmocka_unit_test(cache_survives_sigkill_during_writes),
        cmocka_unit_test(cache_invalidate_by_operation_persona_key_and_purge),
        cmocka_unit_test(cache_read_only_and_bad_options),
        cmocka_unit_test(cache_body_from_result_and_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
