/* cache_bench: what aiq's response cache costs. Fills a fresh cache with N entries whose
 * bodies look like model answers (English prose with markdown and JSON-ish fragments,
 * 1-2 KB, wrapped in the cache body JSON), then measures put rate, lookup latency
 * (p50/p99/p99.9 of hits and of misses), hits per second on one core, the compression
 * ratio and the cost of computing a job's key. One process, one thread. */
#include "cache.h"
#include "cache_key.h"
#include "canon.h"
#include "job.h"
#include "timeutil.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct bench_opts {
    long entries, lookups;
    const char *dir;
    long map_mb;
    long compress_min;
    int level, keep;
} bench_opts_t;

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static const char *const words[] = {
    "the",      "company",     "market",    "growth",    "revenue",     "team",       "risk",
    "founders", "product",     "customers", "strong",    "retention",   "of",         "a",
    "and",      "in",          "to",        "with",      "recurring",   "annual",     "margin",
    "segment",  "competitive", "advantage", "pricing",   "churn",       "pipeline",   "enterprise",
    "traction", "valuation",   "round",     "investors", "capital",     "efficiency", "burn",
    "runway",   "months",      "headcount", "platform",  "integration", "regulatory", "exposure",
    "demand",   "signal",      "is",        "are",       "has",         "shows",      "remains",
    "expected", "likely",      "however",   "moreover",  "therefore",   "while",      "because",
    "Series",   "seed",        "B2B",       "SaaS",      "EBITDA",      "CAC",        "LTV"};
#define N_WORDS (sizeof(words) / sizeof(words[0]))

static void put_s(char *buf, size_t cap, size_t *n, const char *s)
{
    while (*s && *n + 1 < cap)
        buf[(*n)++] = *s++;
    buf[*n] = '\0';
}

static void sentence(char *buf, size_t cap, size_t *n, uint64_t *rng)
{
    int len = 8 + (int)(rng_next(rng) % 14);
    for (int i = 0; i < len; i++) {
        const char *w = words[rng_next(rng) % N_WORDS];
        if (i == 0 && *n + 2 < cap) {
            buf[(*n)++] = (char)(w[0] >= 'a' && w[0] <= 'z' ? w[0] - 32 : w[0]);
            put_s(buf, cap, n, w + 1);
        } else {
            put_s(buf, cap, n, w);
        }
        put_s(buf, cap, n, i + 1 < len ? (rng_next(rng) % 9 == 0 ? ", " : " ") : ". ");
    }
}

/* A model answer of target bytes: heading, prose paragraphs, a bullet list, a JSON block. */
static size_t answer(char *buf, size_t cap, size_t target, uint64_t *rng)
{
    size_t n = 0;
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "## Assessment of company %llu\n\n",
             (unsigned long long)(rng_next(rng) % 100000));
    put_s(buf, cap, &n, tmp);
    while (n < target * 2 / 3 && n + 400 < cap) {
        sentence(buf, cap, &n, rng);
        if (rng_next(rng) % 4 == 0)
            put_s(buf, cap, &n, "\n\n");
    }
    put_s(buf, cap, &n, "\n\nKey risks:\n");
    for (int i = 0; i < 3; i++) {
        put_s(buf, cap, &n, "- ");
        sentence(buf, cap, &n, rng);
        put_s(buf, cap, &n, "\n");
    }
    snprintf(tmp, sizeof(tmp),
             "\n```json\n{\"score\": %d, \"confidence\": 0.%02d, \"recommendation\": \"%s\", "
             "\"arr_musd\": %d.%d}\n```\n",
             (int)(rng_next(rng) % 10), (int)(rng_next(rng) % 100),
             rng_next(rng) % 2 ? "invest" : "pass", (int)(rng_next(rng) % 90),
             (int)(rng_next(rng) % 10));
    put_s(buf, cap, &n, tmp);
    while (n < target && n + 200 < cap)
        sentence(buf, cap, &n, rng);
    return n;
}

static void key_of(long i, uint8_t key[32])
{
    char s[32];
    unsigned int n = 32;
    int len = snprintf(s, sizeof(s), "job-%ld", i);
    EVP_Digest(s, (size_t)len, key, &n, EVP_sha256(), NULL);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct(const int64_t *v, long n, double p)
{
    long i = (long)(p * (double)(n - 1));
    return (double)v[i] / 1000.0;
}

static int fill(aiq_cache_t *c, const bench_opts_t *o, double *body_bytes)
{
    char text[4096];
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    aiq_cache_meta_t meta = {"vc-analysis", "investor", "anthropic.claude-3-haiku-20240307-v1:0"};
    int64_t t0 = now_ns(), next = t0 + 5000000000LL, in_put = 0;
    *body_bytes = 0;
    for (long i = 0; i < o->entries; i++) {
        size_t target = 1000 + rng_next(&rng) % 900; /* answer text 1.0-1.9 KB */
        answer(text, sizeof(text), target, &rng);
        char *body;
        size_t len;
        uint8_t key[32];
        aiq_err_t err = {0};
        if (aiq_cache_body_encode(text, "end_turn", 420, (int64_t)target / 4, meta.model, &body,
                                  &len))
            return 1;
        key_of(i, key);
        int64_t a = now_ns();
        int rc = aiq_cache_put(c, key, body, len, 86400, &meta, &err);
        in_put += now_ns() - a;
        if (rc) {
            fprintf(stderr, "cache_bench: put: %s\n", err.msg);
            free(body);
            return 1;
        }
        *body_bytes += (double)len;
        free(body);
        if (now_ns() > next) {
            fprintf(stderr, "cache_bench: %ld/%ld stored\n", i + 1, o->entries);
            next += 5000000000LL;
        }
    }
    double s = (double)in_put / 1e9;
    printf("put:      %ld entries: %.0f puts/s, %.1f us per aiq_cache_put (one write txn each, "
           "zstd included; %.1f s wall with body generation)\n",
           o->entries, (double)o->entries / s, s * 1e6 / (double)o->entries,
           (double)(now_ns() - t0) / 1e9);
    return 0;
}

/* Lookups of random existing keys (miss=0) or absent keys (miss=1). */
static int lookups(aiq_cache_t *c, const bench_opts_t *o, int miss, double *stored, double *bodies)
{
    int64_t *lat = malloc((size_t)o->lookups * sizeof(*lat));
    uint64_t rng = 12345 + (uint64_t)miss;
    long hits = 0;
    *stored = *bodies = 0;
    int64_t t0 = now_ns();
    for (long i = 0; i < o->lookups; i++) {
        uint8_t key[32];
        long k = (long)(rng_next(&rng) % (uint64_t)o->entries) + (miss ? o->entries : 0);
        key_of(k, key);
        aiq_cache_entry_t e;
        int64_t a = now_ns();
        aiq_cache_state_t st = aiq_cache_get(c, key, &e);
        lat[i] = now_ns() - a;
        hits += st == AIQ_CACHE_HIT;
        *stored += (double)e.stored_bytes;
        *bodies += (double)e.len;
        aiq_cache_entry_clear(&e);
    }
    double s = (double)(now_ns() - t0) / 1e9;
    qsort(lat, (size_t)o->lookups, sizeof(*lat), cmp_i64);
    printf("%s  %ld lookups: p50 %.2f us, p99 %.2f us, p99.9 %.2f us; %.0f lookups/s on one "
           "core (incl. key hashing)\n",
           miss ? "miss:" : "hit: ", o->lookups, pct(lat, o->lookups, 0.5),
           pct(lat, o->lookups, 0.99), pct(lat, o->lookups, 0.999), (double)o->lookups / s);
    free(lat);
    if (!miss && hits != o->lookups) {
        fprintf(stderr, "cache_bench: only %ld of %ld lookups hit\n", hits, o->lookups);
        return 1;
    }
    return 0;
}

/* What computing a job's key costs the worker (canonical payload + SHA-256). */
static void key_cost(void)
{
    const char *text =
        "{\"id\":\"j-1\",\"operation\":\"vc-analysis\",\"persona\":\"investor\",\"payload\":{"
        "\"company\":\"Acme Robotics\",\"stage\":\"Series A\",\"sector\":\"industrial "
        "automation\",\"arr_usd\":4200000,\"growth_yoy\":1.8,\"team\":[{\"name\":\"A. "
        "Founder\",\"role\":\"CEO\"},{\"name\":\"B. Builder\",\"role\":\"CTO\"}],\"question\":"
        "\"Assess the investment case, main risks and a valuation range.\",\"request_id\":"
        "\"r-123\",\"meta\":{\"sent_at\":\"2026-11-28T04:00:00Z\"}},\"inference\":{"
        "\"max_tokens\":800,\"temperature\":0.2}}";
    aiq_job_t *job;
    aiq_job_reject_t rej;
    if (aiq_job_decode(text, strlen(text), 1 << 20, &job, &rej, NULL, NULL))
        return;
    const char *drop[] = {"request_id", "meta.sent_at"};
    uint8_t key[32];
    int n = 200000;
    int64_t t0 = now_ns();
    for (int i = 0; i < n; i++)
        aiq_cache_key_job(job, "anthropic.claude-3-haiku-20240307-v1:0", drop, 2, key, NULL);
    printf("key:      %.2f us per aiq_cache_key_job (%zu-byte job, 2 volatile fields)\n",
           (double)(now_ns() - t0) / 1e3 / n, strlen(text));
    aiq_job_free(job);
}

static int parse_args(bench_opts_t *o, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--keep")) {
            o->keep = 1;
            continue;
        }
        if (!v)
            return -1;
        i++;
        if (!strcmp(a, "--entries"))
            o->entries = strtol(v, NULL, 10);
        else if (!strcmp(a, "--lookups"))
            o->lookups = strtol(v, NULL, 10);
        else if (!strcmp(a, "--dir"))
            o->dir = v;
        else if (!strcmp(a, "--map-mb"))
            o->map_mb = strtol(v, NULL, 10);
        else if (!strcmp(a, "--level"))
            o->level = (int)strtol(v, NULL, 10);
        else if (!strcmp(a, "--compress-min"))
            o->compress_min = strtol(v, NULL, 10);
        else
            return -1;
    }
    return o->entries > 0 && o->lookups > 0 && o->dir ? 0 : -1;
}

int main(int argc, char **argv)
{
    bench_opts_t o = {1000000, 1000000, NULL, 0, AIQ_CACHE_DEFAULT_COMPRESS_MIN, 3, 0};
    if (parse_args(&o, argc, argv)) {
        fprintf(stderr,
                "usage: cache_bench --dir DIR [--entries N (1000000)] [--lookups M "
                "(1000000)] [--map-mb MB] [--compress-min BYTES] [--level ZSTD_LEVEL] [--keep]\n");
        return 2;
    }
    if (!o.map_mb)
        o.map_mb = 64 + o.entries * 3 / 1000; /* ~1.2 KB per entry used, with room */
    aiq_cache_opts_t co;
    aiq_cache_opts_init(&co);
    co.path = o.dir;
    co.max_bytes = (int64_t)o.map_mb << 20;
    co.compress_min = (size_t)o.compress_min;
    co.compress_level = o.level;
    aiq_cache_t *c;
    aiq_err_t err = {0};
    if (aiq_cache_open(&c, &co, &err)) {
        fprintf(stderr, "cache_bench: %s\n", err.msg);
        return 1;
    }
    double body_bytes, stored, bodies, s2, b2;
    int rc = fill(c, &o, &body_bytes);
    if (rc == 0)
        rc = lookups(c, &o, 0, &stored, &bodies) || lookups(c, &o, 1, &s2, &b2);
    aiq_cache_stats_t st;
    if (rc == 0 && aiq_cache_stats(c, &st, NULL) == 0) {
        printf("size:     %llu entries, body %.0f B avg, value %.0f B avg (40 B header + meta "
               "+ zstd body): ratio %.2fx; trees %.0f MB, file %.0f MB, map %ld MB; "
               "evicted %llu\n",
               (unsigned long long)st.entries, bodies / (double)o.lookups,
               stored / (double)o.lookups, bodies / stored, (double)st.used_bytes / 1e6,
               (double)st.file_bytes / 1e6, o.map_mb, (unsigned long long)st.evicted);
        key_cost();
    }
    aiq_cache_close(c);
    if (!o.keep) {
        char p[4200];
        snprintf(p, sizeof(p), "%s/data.mdb", o.dir);
        unlink(p);
        snprintf(p, sizeof(p), "%s/lock.mdb", o.dir);
        unlink(p);
    }
    return rc;
}
