/* aiq-admin cache: operations on the host's response cache. Warm-up turns NDJSON files or
 * the results topic into entries keyed exactly as the worker keys them. */
#include "admin_cache.h"
#include "cache.h"
#include "config.h"
#include "job.h"
#include "ops.h"
#include "timeutil.h"
#include "topics.h"
#include "kafka.h"
#include "kprops.h"

#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LINE_MAX_BYTES (16u << 20) /* an NDJSON line longer than this is a bad line */
#define BAD_SHOWN_MAX  100         /* bad lines reported one by one, then only counted */
#define PROGRESS_MS    2000
#define KAFKA_IDLE_MS  30000 /* give up when the topic yields nothing for this long */
#define LIST_DEFAULT   100

typedef struct cache_opts {
    aiq_config_t cfg;
    const char *file;
    const char *key, *operation, *persona, *model;
    const char *drop[AIQ_CANON_DROP_MAX];
    size_t ndrop;
    int64_t ttl_s; /* -1 = per record, else the configured default */
    long limit;
    bool from_topic, yes, json;
} cache_opts_t;

/* Options that take a value in a separate word, for aiq_admin_cache_wanted. */
static const char *const valued[] = {
    "-b",      "--brokers",    "--prefix", "--partitions", "--replication-factor",
    "--group", "--cache-path", "-c",       "--config",     "-s",
    "--set",   "--file",       "--key",    "--operation",  "--persona",
    "--ttl",   "--model",      "--drop",   "--limit",      NULL};

bool aiq_admin_cache_wanted(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--"))
            return i + 1 < argc && !strcmp(argv[i + 1], "cache");
        if (a[0] != '-' || !a[1])
            return !strcmp(a, "cache");
        for (int j = 0; valued[j]; j++)
            if (!strcmp(a, valued[j]))
                i++;
    }
    return false;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: aiq-admin [options] cache COMMAND\n\n"
            "The response cache is the LMDB directory every worker of a host shares.\n\n"
            "Commands:\n"
            "  stats [--json]        entries, bytes used, file size and bound, reader slots\n"
            "  get KEY               one entry (64 hex digits) as JSON; exit 1 when absent\n"
            "  list [--limit N]      key, state, operation, persona, model, age and size of\n"
            "                        the first N entries in key order (default 100; 0 = all)\n"
            "  invalidate --key KEY | --operation OP [--persona P] | --persona P\n"
            "                        remove one entry, or every entry of an operation and/or\n"
            "                        persona (--persona '' = the entries without one)\n"
            "  purge --yes           remove every entry\n"
            "  sweep                 remove now what is past its TTL plus the grace period\n"
            "  verify                check that every entry decodes and is indexed (exit 1\n"
            "                        when not)\n"
            "  warm --file F         store the results of an NDJSON file, one object a line:\n"
            "                        {\"job\": {job}, \"result\": {result}} (key computed as the\n"
            "                        worker does) or {\"key\": \"<64 hex>\", \"result\": {...}};\n"
            "                        only results with status \"succeeded\" are stored\n"
            "  warm --from-topic     the same from <prefix>results, read from the beginning\n"
            "                        up to its end when the command starts; results need a\n"
            "                        cache.key (64 hex); nothing is committed\n\n"
            "Warm options:\n"
            "  --ttl S               TTL of what is stored (default: the job's cache.ttl_s or\n"
            "                        the result's cache.ttl_s, else cache.ttl_s); an entry's age\n"
            "                        counts from the result's completed_at\n"
            "  --model M             model of jobs that name none (default\n"
            "                        the operation's model, else bedrock.default_model);\n"
            "                        must be what the worker calls\n"
            "  --drop PATH           a volatile payload field of every job (repeatable; default:\n"
            "                        the operation's volatile_fields)\n\n"
            "Options:\n"
            "  --cache-path DIR      the cache directory (setting cache.path, env\n"
            "                        AIQ_CACHE_PATH, default ./aiq-cache)\n"
            "  -c, --config FILE     settings file ('key = value'; cache.*, kafka.*,\n"
            "                        bedrock.default_model, worker.operations_file are used)\n"
            "  -s, --set KEY=VALUE   one setting (wins over file and environment)\n"
            "  -b, --brokers LIST    for --from-topic (env AIQ_KAFKA_BROKERS)\n"
            "      --prefix PREFIX   for --from-topic (env AIQ_KAFKA_TOPIC_PREFIX)\n\n"
            "Exit codes: 0 done, 1 failed or (get) not found, 2 usage, 3 warm done but bad\n"
            "input lines or records were skipped (each reported on stderr with its line).\n");
}

/* ---- options -------------------------------------------------------------------------- */

static int set_kv(aiq_config_t *cfg, char *kv)
{
    aiq_err_t err = {0};
    char *eq = strchr(kv, '=');
    if (!eq) {
        fprintf(stderr, "aiq-admin: --set %s: expected KEY=VALUE\n", kv);
        return 2;
    }
    *eq = '\0';
    int rc = aiq_config_set(cfg, kv, eq + 1, &err);
    *eq = '=';
    if (rc)
        fprintf(stderr, "aiq-admin: %s\n", err.msg);
    return rc ? 2 : 0;
}

/* Config sources in order: defaults < file < environment < --set < explicit options. */
static int load_config(cache_opts_t *o, int argc, char **argv)
{
    aiq_err_t err = {0};
    for (int i = 1; i + 1 < argc; i++)
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) &&
            aiq_config_load_file(&o->cfg, argv[i + 1], &err)) {
            fprintf(stderr, "aiq-admin: %s\n", err.msg);
            return 2;
        }
    if (aiq_config_load_env(&o->cfg, &err)) {
        fprintf(stderr, "aiq-admin: %s\n", err.msg);
        return 2;
    }
    for (int i = 1; i + 1 < argc; i++)
        if ((!strcmp(argv[i], "-s") || !strcmp(argv[i], "--set")) && set_kv(&o->cfg, argv[i + 1]))
            return 2;
    return 0;
}

static int parse_num(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < min || v > max) {
        fprintf(stderr, "aiq-admin: '%s' is not a number in %lld..%lld\n", s, min, max);
        return 2;
    }
    *out = v;
    return 0;
}

static int set_opt(cache_opts_t *o, int c, const char *arg)
{
    aiq_err_t err = {0};
    long long v;
    const char *keys[] = {"kafka.brokers", "kafka.topic_prefix", "cache.path"};
    switch (c) {
    case 'b':
    case 1:
    case 2:
        if (aiq_config_set(&o->cfg, keys[c == 'b' ? 0 : c], arg, &err)) {
            fprintf(stderr, "aiq-admin: %s\n", err.msg);
            return 2;
        }
        return 0;
    case 3:
        o->file = arg;
        return 0;
    case 4:
        o->key = arg;
        return 0;
    case 5:
        o->operation = arg;
        return 0;
    case 6:
        o->persona = arg;
        return 0;
    case 7:
        o->model = arg;
        return 0;
    case 8:
        if (o->ndrop == AIQ_CANON_DROP_MAX) {
            fprintf(stderr, "aiq-admin: more than %d --drop paths\n", AIQ_CANON_DROP_MAX);
            return 2;
        }
        o->drop[o->ndrop++] = arg;
        return 0;
    case 9:
        if (parse_num(arg, 0, 31536000, &v))
            return 2;
        o->ttl_s = v;
        return 0;
    case 10:
        if (parse_num(arg, 0, 1000000000, &v))
            return 2;
        o->limit = (long)v;
        return 0;
    }
    return 0;
}

static int parse_opts(cache_opts_t *o, int argc, char **argv)
{
    static const struct option lo[] = {
        {"brokers", 1, 0, 'b'}, {"prefix", 1, 0, 1}, {"cache-path", 1, 0, 2},
        {"file", 1, 0, 3},      {"key", 1, 0, 4},    {"operation", 1, 0, 5},
        {"persona", 1, 0, 6},   {"model", 1, 0, 7},  {"drop", 1, 0, 8},
        {"ttl", 1, 0, 9},       {"limit", 1, 0, 10}, {"from-topic", 0, 0, 11},
        {"yes", 0, 0, 12},      {"json", 0, 0, 13},  {"config", 1, 0, 'c'},
        {"set", 1, 0, 's'},     {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "b:c:s:h", lo, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return -1;
        }
        if (c == '?')
            return 2;
        if (c == 11 || c == 12 || c == 13) {
            *(c == 11 ? &o->from_topic : c == 12 ? &o->yes : &o->json) = true;
            continue;
        }
        if (c != 'c' && c != 's' && set_opt(o, c, optarg))
            return 2;
    }
    return 0;
}

/* ---- opening -------------------------------------------------------------------------- */

static aiq_cache_t *open_cache(const aiq_config_t *cfg, bool read_only, bool must_exist)
{
    char data[4200];
    struct stat st;
    snprintf(data, sizeof(data), "%s/data.mdb", cfg->cache_path);
    if (must_exist && stat(data, &st)) {
        fprintf(stderr, "aiq-admin: no cache at %s (see --cache-path)\n", cfg->cache_path);
        return NULL;
    }
    aiq_cache_opts_t o;
    aiq_cache_opts_from_config(&o, cfg);
    o.read_only = read_only;
    aiq_cache_t *c = NULL;
    aiq_err_t err = {0};
    if (aiq_cache_open(&c, &o, &err)) {
        fprintf(stderr, "aiq-admin: %s\n", err.msg);
        return NULL;
    }
    return c;
}

/* ---- stats, get, list ----------------------------------------------------------------- */

static int cmd_stats(const cache_opts_t *o)
{
    aiq_cache_t *c = open_cache(&o->cfg, true, true);
    if (!c)
        return 1;
    aiq_cache_stats_t st;
    aiq_err_t err = {0};
    int rc = aiq_cache_stats(c, &st, &err);
    aiq_cache_close(c);
    if (rc) {
        fprintf(stderr, "aiq-admin: %s\n", err.msg);
        return 1;
    }
    if (o->json) {
        json_t *j =
            json_pack("{s:s,s:I,s:I,s:I,s:I,s:i,s:i}", "path", o->cfg.cache_path, "entries",
                      (json_int_t)st.entries, "used_bytes", (json_int_t)st.used_bytes, "file_bytes",
                      (json_int_t)st.file_bytes, "map_bytes", (json_int_t)st.map_bytes,
                      "readers_used", (int)st.readers_used, "readers_max", (int)st.readers_max);
        char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        int ok = s != NULL;
        if (ok)
            printf("%s\n", s);
        free(s);
        json_decref(j);
        return ok ? 0 : 1;
    }
    printf("path         %s\nentries      %llu\nused_bytes   %llu (%.1f%% of the bound)\n"
           "file_bytes   %llu\nmap_bytes    %llu (cache.max_bytes)\nreaders      %u of %u "
           "slots in use\n",
           o->cfg.cache_path, (unsigned long long)st.entries, (unsigned long long)st.used_bytes,
           st.map_bytes ? 100.0 * (double)st.used_bytes / (double)st.map_bytes : 0.0,
           (unsigned long long)st.file_bytes, (unsigned long long)st.map_bytes, st.readers_used,
           st.readers_max);
    return 0;
}

static json_t *entry_json(const uint8_t key[AIQ_CACHE_KEY_LEN], aiq_cache_state_t st,
                          const aiq_cache_entry_t *e)
{
    char hex[65], at[32];
    aiq_cache_key_hex(key, hex);
    json_t *body = json_loadb(e->body, e->len, 0, NULL);
    if (!body)
        body = json_stringn_nocheck(e->body, e->len);
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:b,s:I,s:o}", "key", hex, "state",
                     aiq_cache_state_name(st), "operation", e->operation, "persona", e->persona,
                     "model", e->model, "stored_at", aiq_time_format(e->stored_at_ms, at, 32),
                     "ttl_s", (json_int_t)e->ttl_s, "age_ms", (json_int_t)e->age_ms, "compressed",
                     e->compressed, "stored_bytes", (json_int_t)e->stored_bytes, "body", body);
}

/* Every entry decodes and is indexed: what an operator runs after a crash, and what the
 * SIGKILL test asserts. */
static int cmd_verify(const cache_opts_t *o)
{
    aiq_cache_t *c = open_cache(&o->cfg, true, true);
    if (!c)
        return 1;
    aiq_cache_verify_t v;
    aiq_err_t err = {0};
    int rc = aiq_cache_verify(c, &v, &err);
    aiq_cache_close(c);
    if (rc) {
        fprintf(stderr, "aiq-admin: %s\n", err.msg);
        return 1;
    }
    int ok = v.corrupt == 0 && v.orphans == 0 && v.unindexed == 0;
    printf("entries %llu, decoded %llu, corrupt %llu, orphan index records %llu, unindexed "
           "%llu: %s\n",
           (unsigned long long)v.entries, (unsigned long long)v.decoded,
           (unsigned long long)v.corrupt, (unsigned long long)v.orphans,
           (unsigned long long)v.unindexed, ok ? "ok" : "NOT consistent");
    return ok ? 0 : 1;
}

static int cmd_get(const cache_opts_t *o, const char *hex)
{
    uint8_t key[AIQ_CACHE_KEY_LEN];
    if (!hex || aiq_cache_key_parse(hex, key)) {
        fprintf(stderr, "aiq-admin: cache get needs a key of 64 hex digits\n");
        return 2;
    }
    aiq_cache_t *c = open_cache(&o->cfg, true, true);
    if (!c)
        return 1;
    aiq_cache_entry_t e;
    aiq_cache_state_t st = aiq_cache_get(c, key, &e);
    aiq_cache_stats_t s;
    aiq_cache_stats(c, &s, NULL);
    aiq_cache_close(c);
    if (st == AIQ_CACHE_MISS) {
        fprintf(stderr, "aiq-admin: %s: %s\n", hex,
                s.corrupt ? "present but undecodable (a miss for the workers)"
                          : "not in the cache (or expired past the grace period)");
        return 1;
    }
    json_t *j = entry_json(key, st, &e);
    char *s2 = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    int ok = s2 != NULL;
    if (ok)
        printf("%s\n", s2);
    free(s2);
    json_decref(j);
    aiq_cache_entry_clear(&e);
    return ok ? 0 : 1;
}

typedef struct list_ctx {
    long left;
    unsigned long shown, corrupt;
} list_ctx_t;

static int on_list(const uint8_t key[AIQ_CACHE_KEY_LEN], aiq_cache_state_t st,
                   const aiq_cache_entry_t *e, void *ctx)
{
    list_ctx_t *l = ctx;
    char hex[65];
    aiq_cache_key_hex(key, hex);
    if (!e) {
        printf("%s corrupt\n", hex);
        l->corrupt++;
    } else {
        printf("%s %-5s %s %s %s %llds %zuB\n", hex,
               st == AIQ_CACHE_MISS ? "expired" : aiq_cache_state_name(st),
               *e->operation ? e->operation : "-", *e->persona ? e->persona : "-",
               *e->model ? e->model : "-", (long long)(e->age_ms / 1000), e->stored_bytes);
    }
    l->shown++;
    return l->left > 0 && --l->left == 0;
}

static int cmd_list(const cache_opts_t *o)
{
    aiq_cache_t *c = open_cache(&o->cfg, true, true);
    if (!c)
        return 1;
    list_ctx_t l = {o->limit < 0 ? LIST_DEFAULT : o->limit, 0, 0};
    aiq_err_t err = {0};
    int rc = aiq_cache_walk(c, on_list, &l, &err);
    aiq_cache_close(c);
    if (rc)
        fprintf(stderr, "aiq-admin: %s\n", err.msg);
    return rc ? 1 : 0;
}

/* ---- invalidate, purge, sweep --------------------------------------------------------- */

static int cmd_invalidate(const cache_opts_t *o)
{
    uint8_t key[AIQ_CACHE_KEY_LEN];
    if (o->key ? (o->operation || o->persona || aiq_cache_key_parse(o->key, key))
               : (!o->operation && !o->persona)) {
        fprintf(stderr, "aiq-admin: cache invalidate needs --key KEY (64 hex digits), or "
                        "--operation and/or --persona\n");
        return 2;
    }
    aiq_cache_t *c = open_cache(&o->cfg, false, true);
    if (!c)
        return 1;
    aiq_err_t err = {0};
    uint64_t n = 0;
    int rc;
    if (o->key) {
        rc = aiq_cache_invalidate_key(c, key, &err);
        n = rc > 0 ? 1 : 0;
    } else {
        rc = aiq_cache_invalidate_by(c, o->operation, o->persona, &n, &err);
    }
    aiq_cache_close(c);
    if (rc < 0) {
        fprintf(stderr, "aiq-admin: %s\n", err.msg);
        return 1;
    }
    printf("removed %llu\n", (unsigned long long)n);
    return 0;
}

static int cmd_purge_or_sweep(const cache_opts_t *o, bool purge)
{
    if (purge && !o->yes) {
        fprintf(stderr, "aiq-admin: cache purge removes every cached answer of this host; add "
                        "--yes to confirm\n");
        return 2;
    }
    aiq_cache_t *c = open_cache(&o->cfg, false, true);
    if (!c)
        return 1;
    aiq_err_t err = {0};
    uint64_t n = 0;
    int rc = purge ? aiq_cache_purge(c, &n, &err) : aiq_cache_sweep(c, 0, &n, &err);
    aiq_cache_close(c);
    if (rc) {
        fprintf(stderr, "aiq-admin: %s\n", err.msg);
        return 1;
    }
    printf("%s %llu\n", purge ? "purged" : "swept", (unsigned long long)n);
    return 0;
}

/* ---- warm ----------------------------------------------------------------------------- */

typedef struct warm {
    const cache_opts_t *o;
    aiq_cache_t *c;
    aiq_ops_t *ops; /* worker.operations_file: models and volatile fields, as the worker */
    uint64_t read, stored, skipped, expired, bad, dropped;
    int64_t next_progress;
} warm_t;

typedef enum { W_STORED, W_SKIPPED, W_EXPIRED, W_BAD } warm_outcome_t;

static void bad_input(warm_t *w, const char *where, const char *why)
{
    if (++w->bad <= BAD_SHOWN_MAX)
        fprintf(stderr, "aiq-admin: %s: %s\n", where, why);
    else if (w->bad == BAD_SHOWN_MAX + 1)
        fprintf(stderr, "aiq-admin: more bad input; only counted from here on\n");
}

static int64_t ttl_of(const warm_t *w, json_int_t record_ttl)
{
    if (w->o->ttl_s >= 0)
        return w->o->ttl_s;
    return record_ttl >= 0 ? (int64_t)record_ttl : w->o->cfg.cache_ttl_s;
}

/* Stores the cacheable part of result under key. An old result keeps its age: stored_at
 * is its completed_at (when sane), and one already past ttl + grace is not stored. */
static warm_outcome_t store_result(warm_t *w, const uint8_t key[AIQ_CACHE_KEY_LEN],
                                   const json_t *result, const aiq_cache_meta_t *meta,
                                   int64_t ttl_s, const char **why)
{
    char *body;
    size_t len;
    const char *status = json_string_value(json_object_get(result, "status"));
    if (!status || strcmp(status, "succeeded"))
        return W_SKIPPED;
    if (aiq_cache_body_from_result(result, &body, &len)) {
        *why = "succeeded result without a string output.text";
        return W_BAD;
    }
    int64_t now = aiq_now_ms(), at = now;
    const char *done = json_string_value(json_object_get(result, "completed_at"));
    if (done && aiq_time_parse(done, &at) == 0 && (at > now || at < 0))
        at = now;
    if (at + (ttl_s + w->o->cfg.cache_stale_grace_s) * 1000 <= now) {
        free(body);
        return W_EXPIRED;
    }
    aiq_cache_stats_t before, after;
    aiq_cache_stats(w->c, &before, NULL);
    aiq_err_t err = {0};
    int rc = aiq_cache_put_at(w->c, key, body, len, at, ttl_s, meta, &err);
    free(body);
    aiq_cache_stats(w->c, &after, NULL);
    w->dropped += after.dropped - before.dropped;
    if (rc) {
        *why = "the cache refused it (see the message above)";
        fprintf(stderr, "aiq-admin: %s\n", err.msg);
        return W_BAD;
    }
    return W_STORED;
}

static void count(warm_t *w, warm_outcome_t out, const char *where, const char *why)
{
    if (out == W_STORED)
        w->stored++;
    else if (out == W_SKIPPED)
        w->skipped++;
    else if (out == W_EXPIRED)
        w->expired++;
    else
        bad_input(w, where, why);
    int64_t now = aiq_mono_ms();
    if (now >= w->next_progress) {
        if (w->next_progress)
            fprintf(stderr, "warm: %llu read, %llu stored\n", (unsigned long long)w->read,
                    (unsigned long long)w->stored);
        w->next_progress = now + PROGRESS_MS;
    }
}

static const char *model_for(const warm_t *w, const aiq_job_t *job)
{
    const aiq_op_t *op = aiq_ops_find(w->ops, job->operation);
    return job->model               ? job->model
           : w->o->model            ? w->o->model
           : op && aiq_op_model(op) ? aiq_op_model(op)
                                    : w->o->cfg.default_model;
}

/* The key of a {"job": ...} line, computed exactly as the worker does. */
static warm_outcome_t key_from_job(warm_t *w, json_t *jobj, uint8_t key[AIQ_CACHE_KEY_LEN],
                                   aiq_job_t **job, const char **why, aiq_err_t *err)
{
    char *text = json_dumps(jobj, JSON_COMPACT);
    aiq_job_reject_t rej;
    int rc = text ? aiq_job_decode(text, strlen(text), (size_t)w->o->cfg.max_job_bytes, job, &rej,
                                   NULL, err)
                  : AIQ_ENOMEM;
    free(text);
    if (rc) {
        *why = err->msg[0] ? err->msg : "job does not decode";
        return W_BAD;
    }
    /* --drop wins; else the operation's volatile fields, as the worker drops them */
    const char *const *drop = w->o->drop;
    size_t ndrop = w->o->ndrop;
    const aiq_op_t *op = aiq_ops_find(w->ops, (*job)->operation);
    if (!ndrop && op)
        drop = aiq_op_volatile_fields(op, &ndrop);
    if (aiq_cache_key_job(*job, model_for(w, *job), drop, ndrop, key, err)) {
        *why = err->msg;
        return W_BAD;
    }
    return W_STORED;
}

/* Finds a line's key: from "key", or computed from "job" (*job set). W_STORED = found. */
static warm_outcome_t line_key(warm_t *w, json_t *doc, uint8_t key[AIQ_CACHE_KEY_LEN],
                               aiq_job_t **job, const char **why, aiq_err_t *err)
{
    json_t *jobj = json_object_get(doc, "job");
    const char *hex = json_string_value(json_object_get(doc, "key"));
    if (!json_is_object(json_object_get(doc, "result")) || (!hex && !json_is_object(jobj)))
        return W_BAD;
    if (!hex)
        return key_from_job(w, jobj, key, job, why, err);
    if (aiq_cache_key_parse(hex, key)) {
        *why = "key: not 64 hex digits";
        return W_BAD;
    }
    return W_STORED;
}

static warm_outcome_t warm_line(warm_t *w, const char *line, size_t len, char *why_buf,
                                size_t why_cap)
{
    json_error_t je;
    const char *why = "expected {\"job\": {...}, \"result\": {...}} or {\"key\": ..., "
                      "\"result\": {...}}";
    json_t *doc = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        snprintf(why_buf, why_cap, "not JSON: %s", je.text);
        return W_BAD;
    }
    json_t *result = json_object_get(doc, "result");
    uint8_t key[AIQ_CACHE_KEY_LEN];
    aiq_job_t *job = NULL;
    aiq_err_t err = {0};
    warm_outcome_t out = line_key(w, doc, key, &job, &why, &err);
    if (out == W_STORED) {
        aiq_cache_meta_t meta = {
            job ? job->operation : json_string_value(json_object_get(result, "operation")),
            job ? job->persona : json_string_value(json_object_get(doc, "persona")),
            job ? model_for(w, job) : json_string_value(json_object_get(result, "model"))};
        out = store_result(w, key, result, &meta, ttl_of(w, job ? job->cache_ttl_s : -1), &why);
    }
    if (out == W_BAD)
        snprintf(why_buf, why_cap, "%s", why);
    aiq_job_free(job);
    json_decref(doc);
    return out;
}

static int warm_report(const warm_t *w, const char *what)
{
    printf("warm: read %llu %s: stored %llu, skipped %llu (not succeeded), expired %llu, "
           "dropped %llu (cache full), bad %llu\n",
           (unsigned long long)w->read, what, (unsigned long long)w->stored,
           (unsigned long long)w->skipped, (unsigned long long)w->expired,
           (unsigned long long)w->dropped, (unsigned long long)w->bad);
    return w->bad ? 3 : 0;
}

static int warm_file(warm_t *w)
{
    FILE *f = strcmp(w->o->file, "-") ? fopen(w->o->file, "r") : stdin;
    if (!f) {
        perror(w->o->file);
        return 1;
    }
    char *line = NULL, where[4400], why[600];
    size_t cap = 0;
    ssize_t n;
    unsigned long lineno = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (strspn(line, " \t") == (size_t)n)
            continue; /* blank lines are not records */
        w->read++;
        snprintf(where, sizeof(where), "%s:%lu", w->o->file, lineno);
        snprintf(why, sizeof(why), "line longer than %u bytes", LINE_MAX_BYTES);
        count(w,
              (size_t)n > LINE_MAX_BYTES ? W_BAD : warm_line(w, line, (size_t)n, why, sizeof(why)),
              where, why);
    }
    free(line);
    if (f != stdin)
        fclose(f);
    return warm_report(w, "lines");
}

/* ---- warm --from-topic ---------------------------------------------------------------- */

static warm_outcome_t warm_record(warm_t *w, const rd_kafka_message_t *m, const char **why)
{
    json_t *r = json_loadb(m->payload ? m->payload : "", m->len, 0, NULL);
    warm_outcome_t out = W_BAD;
    *why = "not a JSON object";
    if (json_is_object(r)) {
        json_t *cache = json_object_get(r, "cache");
        const char *hex = json_string_value(json_object_get(cache, "key"));
        const char *status = json_string_value(json_object_get(r, "status"));
        uint8_t key[AIQ_CACHE_KEY_LEN];
        const char *persona = json_string_value(json_object_get(cache, "persona"));
        if (!persona)
            persona = json_string_value(json_object_get(r, "persona"));
        aiq_cache_meta_t meta = {json_string_value(json_object_get(r, "operation")), persona,
                                 json_string_value(json_object_get(r, "model"))};
        json_t *ttl = json_object_get(cache, "ttl_s");
        if (!status || strcmp(status, "succeeded") || !hex)
            out = W_SKIPPED; /* failures, fallbacks and cache-less results are not answers */
        else if (aiq_cache_key_parse(hex, key))
            *why = "cache.key is not 64 hex digits";
        else
            out = store_result(w, key, r, &meta,
                               ttl_of(w, json_is_integer(ttl) ? json_integer_value(ttl) : -1), why);
    }
    json_decref(r);
    return out;
}

typedef struct part {
    int64_t end; /* high watermark when the command started */
    bool done;
} part_t;

static rd_kafka_t *warm_consumer(const aiq_config_t *cfg)
{
    char group[64];
    snprintf(group, sizeof(group), "aiq-admin-warm-%d", (int)getpid());
    /* cfg brings kafka.rdkafka.<name> from --config / --set (SASL, TLS). */
    aiq_kafka_params_t params = {
        .brokers = cfg->brokers, .group_id = group, .cfg = cfg, .env_props = 1};
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk = NULL;
    aiq_err_t err = {0};
    if (aiq_kafka_conf_new(&conf, AIQ_KAFKA_READER, &params, &err) ||
        aiq_kafka_connect(&rk, RD_KAFKA_CONSUMER, conf, AIQ_KPROPS_CONNECT_MS, &err))
        fprintf(stderr, "aiq-admin: %s\n", err.msg);
    return rk;
}

/* Assigns every non-empty partition of topic from its start; returns how many, or -1. */
static int assign_all(rd_kafka_t *rk, const char *topic, part_t **parts, int *nparts)
{
    aiq_err_t err = {0};
    if (aiq_kafka_partition_count(rk, topic, 30000, nparts, &err)) {
        fprintf(stderr, "aiq-admin: no topic %s: %s\n", topic, err.msg);
        return -1;
    }
    *parts = calloc((size_t)*nparts + 1, sizeof(part_t));
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(*nparts);
    int open = 0;
    for (int p = 0; p < *nparts; p++) {
        int64_t lo = 0, hi = 0;
        if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 30000)) {
            fprintf(stderr, "aiq-admin: %s [%d]: no watermarks\n", topic, p);
            open = -1;
            break;
        }
        (*parts)[p] = (part_t){hi, hi <= lo};
        if (hi > lo) {
            rd_kafka_topic_partition_list_add(l, topic, p)->offset = lo;
            open++;
        }
    }
    if (open > 0 && rd_kafka_assign(rk, l)) {
        fprintf(stderr, "aiq-admin: cannot assign %s\n", topic);
        open = -1;
    }
    rd_kafka_topic_partition_list_destroy(l);
    return open;
}

static void on_message(warm_t *w, rd_kafka_message_t *m, part_t *parts, int nparts, int *open)
{
    int p = m->partition;
    bool in = p >= 0 && p < nparts && !parts[p].done;
    if (in && m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->offset < parts[p].end) {
        /* Only records below the end noted at the start: the topic keeps growing. */
        char where[128];
        const char *why = "";
        snprintf(where, sizeof(where), "%s [%d] offset %lld", rd_kafka_topic_name(m->rkt), p,
                 (long long)m->offset);
        w->read++;
        count(w, warm_record(w, m, &why), where, why);
    } else if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        fprintf(stderr, "aiq-admin: %s\n", rd_kafka_message_errstr(m));
    }
    if (!in)
        return;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF ||
        (m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->offset + 1 >= parts[p].end)) {
        parts[p].done = true;
        (*open)--;
    }
}

static int warm_topic(warm_t *w)
{
    char topic[AIQ_TOPIC_MAX];
    if (aiq_topic_results(w->o->cfg.topic_prefix, topic, sizeof(topic))) {
        fprintf(stderr, "aiq-admin: --prefix is too long\n");
        return 2;
    }
    rd_kafka_t *rk = warm_consumer(&w->o->cfg);
    if (!rk)
        return 1;
    part_t *parts = NULL;
    int nparts = 0, open = assign_all(rk, topic, &parts, &nparts), rc = 0;
    int64_t idle_since = aiq_mono_ms();
    while (open > 0) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
        if (!m) {
            if (aiq_mono_ms() - idle_since > KAFKA_IDLE_MS) {
                fprintf(stderr, "aiq-admin: %s yielded nothing for %d s; stopping early\n", topic,
                        KAFKA_IDLE_MS / 1000);
                rc = 1;
                break;
            }
            continue;
        }
        idle_since = aiq_mono_ms();
        on_message(w, m, parts, nparts, &open);
        rd_kafka_message_destroy(m);
    }
    free(parts);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    if (open < 0)
        return 1;
    int r = warm_report(w, "records");
    return rc ? rc : r;
}

static int cmd_warm(const cache_opts_t *o)
{
    if (!o->file == !o->from_topic) {
        fprintf(stderr, "aiq-admin: cache warm needs --file F or --from-topic\n");
        return 2;
    }
    warm_t w = {.o = o};
    aiq_err_t err = {0};
    if (aiq_ops_load(&w.ops, o->cfg.operations_file, AIQ_OPS_UNKNOWN_ALLOW, &err)) {
        fprintf(stderr, "aiq-admin: worker.operations_file: %s\n", err.msg);
        return 1;
    }
    w.c = open_cache(&o->cfg, false, false);
    if (!w.c) {
        aiq_ops_free(w.ops);
        return 1;
    }
    int rc = o->file ? warm_file(&w) : warm_topic(&w);
    aiq_cache_close(w.c);
    aiq_ops_free(w.ops);
    return rc;
}

/* ---- entry ---------------------------------------------------------------------------- */

static int dispatch(const cache_opts_t *o, int argc, char **argv)
{
    /* The words getopt left, in order: "cache" VERB [ARG]. */
    int words = argc - optind;
    const char *verb = words > 1 ? argv[optind + 1] : "";
    const char *arg = words > 2 ? argv[optind + 2] : NULL;
    if (words > 3) {
        fprintf(stderr, "aiq-admin: unexpected '%s'; see 'aiq-admin cache --help'\n",
                argv[optind + 3]);
        return 2;
    }
    if (!strcmp(verb, "stats") && !arg)
        return cmd_stats(o);
    if (!strcmp(verb, "get") && arg)
        return cmd_get(o, arg);
    if (!strcmp(verb, "verify") && !arg)
        return cmd_verify(o);
    if (!strcmp(verb, "list") && !arg)
        return cmd_list(o);
    if (!strcmp(verb, "invalidate") && !arg)
        return cmd_invalidate(o);
    if ((!strcmp(verb, "purge") || !strcmp(verb, "sweep")) && !arg)
        return cmd_purge_or_sweep(o, verb[0] == 'p');
    if (!strcmp(verb, "warm") && !arg)
        return cmd_warm(o);
    fprintf(stderr, "aiq-admin: unknown cache command '%s%s%s'; see 'aiq-admin cache --help'\n",
            verb, arg ? " " : "", arg ? arg : "");
    return 2;
}

int aiq_admin_cache(int argc, char **argv)
{
    cache_opts_t o = {.ttl_s = -1, .limit = -1};
    if (aiq_config_init(&o.cfg)) {
        fprintf(stderr, "aiq-admin: out of memory\n");
        return 1;
    }
    int rc = load_config(&o, argc, argv);
    if (rc == 0)
        rc = parse_opts(&o, argc, argv);
    if (rc == 0)
        rc = dispatch(&o, argc, argv);
    aiq_config_free(&o.cfg);
    return rc < 0 ? 0 : rc;
}
