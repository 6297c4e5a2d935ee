/* bedrock_sim.c — a local stand-in for Amazon Bedrock Runtime (Converse, and InvokeModel with
 * Anthropic messages bodies) that checks SigV4 and injects latency and faults, for aiq's tests
 * and benchmarks.
 *
 * Threads: libmicrohttpd runs a pool of --threads epoll loops that call on_request. A delayed
 * reply is built at once, its connection suspended and handed to one timer thread that resumes
 * it when due, so a waiting request holds no thread. main only parses flags, starts both, waits
 * for SIGINT/SIGTERM and tears down in reverse order. */
#include "aiq_err.h"
#include "sigv4.h"
#include "timeutil.h"

#include <jansson.h>
#include <microhttpd.h>

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef AIQ_VERSION
#define AIQ_VERSION "unknown"
#endif

#define SIM_URI_MAX          4096        /* request target, bytes */
#define SIM_MODEL_ID_MAX     512         /* decoded model id, bytes */
#define SIM_STATS_MODELS     64          /* distinct model ids counted; the rest go to "_other" */
#define SIM_CONFIG_BODY_MAX  (64 * 1024) /* body of POST /_sim/config */
#define SIM_REPLY_MAX        1024        /* generated reply text, bytes */
#define SIM_QUOTE_CHARS      60          /* characters of the user's text quoted in the reply */
#define SIM_SHUTDOWN_WAIT_MS 2000        /* how long stop waits for in-flight replies */
#define SIM_ERROR_NS         "http://internal.amazon.com/coral/com.amazon.coral.service/"

/* ---- configuration: one table drives flags, environment, --help and POST /_sim/config ---- */

typedef struct sim_conf {
    const char *listen;
    int port;
    const char *region;
    const char *access_key;
    const char *secret_key;
    int latency_ms;
    int latency_jitter_ms;
    double fail_rate;
    int fail_status;
    double throttle_rate;
    uint64_t seed;
    int threads;
    int max_connections;
    int max_body;
    bool log_requests;
} sim_conf_t;

typedef enum opt_type { OPT_STR, OPT_INT, OPT_RATE, OPT_U64, OPT_BOOL } opt_type_t;

typedef struct opt {
    const char *name; /* flag is --name; the /_sim/config key is name with '_' for '-' */
    opt_type_t type;
    size_t off;
    long long min, max; /* OPT_INT bounds */
    const char *def;    /* default, parsed like a flag value */
    const char *env;    /* environment variable that overrides the default, or NULL */
    bool runtime;       /* settable through POST /_sim/config */
    const char *help;
} opt_t;

#define OPT(n, t, f, lo, hi, d, e, rt, h)                                                          \
    {                                                                                              \
        n, t, offsetof(sim_conf_t, f), lo, hi, d, e, rt, h                                         \
    }

static const opt_t options[] = {
    OPT("listen", OPT_STR, listen, 0, 0, "127.0.0.1", NULL, false,
        "numeric IPv4 or IPv6 address to listen on"),
    OPT("port", OPT_INT, port, 0, 65535, "8089", NULL, false,
        "TCP port; 0 picks a free one (the start-up line shows which)"),
    OPT("region", OPT_STR, region, 0, 0, "us-east-1", NULL, false,
        "region requests must be signed for (service is always \"bedrock\")"),
    OPT("access-key", OPT_STR, access_key, 0, 0, "AKIDSIMULATOR", "AWS_ACCESS_KEY_ID", false,
        "access key id requests must be signed with"),
    OPT("secret-key", OPT_STR, secret_key, 0, 0, "simulator-secret", "AWS_SECRET_ACCESS_KEY", false,
        "secret key of that access key (never logged)"),
    OPT("latency-ms", OPT_INT, latency_ms, 0, 600000, "20", NULL, true,
        "delay before every model response, in ms"),
    OPT("latency-jitter-ms", OPT_INT, latency_jitter_ms, 0, 600000, "0", NULL, true,
        "extra delay drawn uniformly from [0, this] ms"),
    OPT("fail-rate", OPT_RATE, fail_rate, 0, 0, "0", NULL, true,
        "share (0..1) of model requests answered with --fail-status"),
    OPT("fail-status", OPT_INT, fail_status, 400, 599, "503", NULL, true,
        "status of injected failures (503 ServiceUnavailableException,\n"
        "                       500 InternalServerException, 424 ModelErrorException,\n"
        "                       408 ModelTimeoutException, others InternalServerException)"),
    OPT("throttle-rate", OPT_RATE, throttle_rate, 0, 0, "0", NULL, true,
        "share (0..1) of model requests answered 429 ThrottlingException"),
    OPT("seed", OPT_U64, seed, 0, 0, "1", NULL, true,
        "seed of the fault and jitter draws; the n-th model request since\n"
        "                       start or the last /_sim/reset always draws the same"),
    OPT("threads", OPT_INT, threads, 1, 256, "4", NULL, false, "HTTP event-loop threads"),
    OPT("max-connections", OPT_INT, max_connections, 16, 1000000, "4096", NULL, false,
        "concurrent connections accepted; RLIMIT_NOFILE is raised to fit"),
    OPT("max-body", OPT_INT, max_body, 1024, 64 * 1024 * 1024, "4194304", NULL, false,
        "largest request body in bytes; a larger one gets 413"),
    OPT("log-requests", OPT_BOOL, log_requests, 0, 1, "false", NULL, true,
        "log one line per model request"),
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

/* ---- state ------------------------------------------------------------------------------- */

typedef struct model_count {
    char id[SIM_MODEL_ID_MAX + 1];
    uint64_t n;
} model_count_t;

typedef struct sim_stats {
    uint64_t requests, converse, invoke, other, auth_failures, models_other;
    uint64_t by_status[600];
    model_count_t models[SIM_STATS_MODELS];
    size_t nmodels;
    int64_t inflight, max_inflight;
} sim_stats_t;

typedef struct delay_item {
    int64_t due_ms; /* aiq_mono_ms() */
    struct MHD_Connection *conn;
} delay_item_t;

/* Suspended connections waiting for their reply time; a binary min-heap on due_ms. */
typedef struct delay_queue {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* on CLOCK_MONOTONIC */
    delay_item_t *heap;
    size_t n, cap;
    bool stopping; /* set once; afterwards nothing is suspended and the heap drains at once */
    pthread_t thread;
} delay_queue_t;

typedef struct sim {
    pthread_mutex_t conf_lock; /* guards conf's runtime fields and seq */
    sim_conf_t conf;
    uint64_t seq; /* model requests drawn since start or reset */
    pthread_mutex_t stats_lock;
    sim_stats_t stats;
    delay_queue_t delays;
    /* Fixed at start; read without a lock. */
    aiq_sigv4_creds_t creds;
    const char *region;
    size_t max_body;
    struct MHD_Daemon *daemon;
} sim_t;

typedef enum route {
    ROUTE_UNKNOWN,
    ROUTE_CONVERSE,
    ROUTE_INVOKE,
    ROUTE_SIM_STATS,
    ROUTE_SIM_RESET,
    ROUTE_SIM_CONFIG,
} route_t;

/* One HTTP request; created by on_uri, freed by on_completed. Touched only by the MHD thread
 * that owns the connection. */
typedef struct sim_req {
    sim_t *sim;
    char uri[SIM_URI_MAX + 1]; /* raw target; split into path and query at '?' */
    const char *path, *query;
    bool uri_too_long, started, counted, too_big;
    bool responded; /* answered before the body was read; later calls only drain */
    route_t route;
    char model_id[SIM_MODEL_ID_MAX + 1]; /* percent-decoded */
    char *body;
    size_t body_len, body_cap, body_limit;
    struct MHD_Response *pending; /* reply waiting out its latency */
    unsigned pending_status;
} sim_req_t;

/* ---- logging: one JSON object per line on stderr ----------------------------------------- */

/* Takes over fields (may be NULL). Safe on any thread: one fputs per line. */
static void sim_log(const char *level, const char *msg, json_t *fields)
{
    char ts[32];
    json_t *o = fields ? fields : json_object();
    char *line;

    if (!o)
        return;
    aiq_time_format(aiq_now_ms(), ts, sizeof(ts));
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "level", json_string(level));
    json_object_set_new(o, "msg", json_string(msg));
    json_object_set_new(o, "component", json_string("bedrock-sim"));
    line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (line) {
        fprintf(stderr, "%s\n", line);
        free(line);
    }
    json_decref(o);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    size_t n;

    (void)cls;
    vsnprintf(buf, sizeof(buf), fmt, ap);
    n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    sim_log("warn", "libmicrohttpd", json_pack("{ss}", "detail", buf));
}

/* ---- configuration parsing ----------------------------------------------------------------- */

static int opt_set(sim_conf_t *c, const opt_t *o, const char *text, aiq_err_t *err)
{
    char *end = NULL;
    void *field = (char *)c + o->off;

    errno = 0;
    switch (o->type) {
    case OPT_STR:
        if (!*text)
            return aiq_err_set(err, AIQ_EINVAL, "--%s: empty value", o->name);
        *(const char **)field = text;
        return 0;
    case OPT_INT: {
        long long v = strtoll(text, &end, 10);
        if (errno || end == text || *end || v < o->min || v > o->max)
            return aiq_err_set(err, AIQ_EINVAL, "--%s: '%s' is not an integer in %lld..%lld",
                               o->name, text, o->min, o->max);
        *(int *)field = (int)v;
        return 0;
    }
    case OPT_RATE: {
        double v = strtod(text, &end);
        if (errno || end == text || *end || !(v >= 0.0 && v <= 1.0))
            return aiq_err_set(err, AIQ_EINVAL, "--%s: '%s' is not a number in 0..1", o->name,
                               text);
        *(double *)field = v;
        return 0;
    }
    case OPT_U64: {
        unsigned long long v = strtoull(text, &end, 10);
        if (errno || end == text || *end || text[0] == '-')
            return aiq_err_set(err, AIQ_EINVAL, "--%s: '%s' is not an unsigned integer", o->name,
                               text);
        *(uint64_t *)field = v;
        return 0;
    }
    case OPT_BOOL:
        if (strcmp(text, "true") && strcmp(text, "false") && strcmp(text, "1") && strcmp(text, "0"))
            return aiq_err_set(err, AIQ_EINVAL, "--%s: '%s' is not true/false", o->name, text);
        *(bool *)field = !strcmp(text, "true") || !strcmp(text, "1");
        return 0;
    }
    return aiq_err_set(err, AIQ_EINVAL, "--%s: unknown option type", o->name);
}

/* The same validation for a JSON value from POST /_sim/config. */
static int opt_set_json(sim_conf_t *c, const opt_t *o, json_t *v, aiq_err_t *err)
{
    char text[64];

    if (o->type == OPT_BOOL && json_is_boolean(v))
        snprintf(text, sizeof(text), "%s", json_is_true(v) ? "true" : "false");
    else if ((o->type == OPT_INT || o->type == OPT_U64) && json_is_integer(v))
        snprintf(text, sizeof(text), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (o->type == OPT_RATE && json_is_number(v))
        snprintf(text, sizeof(text), "%.17g", json_number_value(v));
    else
        return aiq_err_set(err, AIQ_EINVAL, "%s: wrong JSON type", o->name);
    return opt_set(c, o, text, err);
}

static void json_key_of(const opt_t *o, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", o->name);
    for (char *p = buf; *p; p++)
        if (*p == '-')
            *p = '_';
}

static const opt_t *opt_find(const char *name, size_t len, bool json_key)
{
    for (size_t i = 0; i < NOPTIONS; i++) {
        char key[64];
        json_key_of(&options[i], key, sizeof(key));
        const char *want = json_key ? key : options[i].name;
        if (strlen(want) == len && !strncmp(want, name, len))
            return &options[i];
    }
    return NULL;
}

static void print_help(FILE *f)
{
    fprintf(f,
            "usage: bedrock-sim [--flag value | --flag=value]...\n\n"
            "Imitates Amazon Bedrock Runtime on HTTP: POST /model/{modelId}/converse and\n"
            "/model/{modelId}/invoke (Anthropic messages), SigV4-checked (service \"bedrock\").\n"
            "Unsigned control endpoints: GET /_sim/stats, POST /_sim/reset,\n"
            "GET|POST /_sim/config (JSON with the [runtime] keys below, '-' spelled '_').\n\n");
    for (size_t i = 0; i < NOPTIONS; i++) {
        const opt_t *o = &options[i];
        fprintf(f, "  --%-18s %s\n  %20s default %s%s%s%s%s\n", o->name, o->help, "", o->def,
                o->env ? ", env " : "", o->env ? o->env : "", o->runtime ? " [runtime]" : "",
                o->type == OPT_BOOL ? " (flag without value means true)" : "");
    }
    fprintf(f, "  --%-18s %s\n  --%-18s %s\n", "help", "print this and exit", "version",
            "print the aiq version and exit");
}

static int conf_defaults(sim_conf_t *c, aiq_err_t *err)
{
    for (size_t i = 0; i < NOPTIONS; i++) {
        const char *env = options[i].env ? getenv(options[i].env) : NULL;
        int rc = opt_set(c, &options[i], env && *env ? env : options[i].def, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* Returns 0 to run, 1 when --help/--version was handled, or a negative code. */
static int conf_parse_args(sim_conf_t *c, int argc, char **argv, aiq_err_t *err)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            print_help(stdout);
            return 1;
        }
        if (!strcmp(a, "--version")) {
            printf("bedrock-sim %s\n", AIQ_VERSION);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0)
            return aiq_err_set(err, AIQ_EINVAL, "unexpected argument '%s' (see --help)", a);
        const char *eq = strchr(a + 2, '=');
        size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        const opt_t *o = opt_find(a + 2, len, false);
        if (!o)
            return aiq_err_set(err, AIQ_EINVAL, "unknown flag '%s' (see --help)", a);
        const char *val = eq ? eq + 1 : NULL;
        if (!val && o->type == OPT_BOOL)
            val = "true";
        else if (!val && i + 1 < argc)
            val = argv[++i];
        if (!val)
            return aiq_err_set(err, AIQ_EINVAL, "--%s needs a value", o->name);
        int rc = opt_set(c, o, val, err);
        if (rc)
            return rc;
    }
    return 0;
}

static size_t opt_size(const opt_t *o)
{
    switch (o->type) {
    case OPT_STR:
        return sizeof(const char *);
    case OPT_INT:
        return sizeof(int);
    case OPT_RATE:
        return sizeof(double);
    case OPT_U64:
        return sizeof(uint64_t);
    case OPT_BOOL:
        return sizeof(bool);
    }
    return 0;
}

/* Copies only the runtime fields, so that threads reading the fixed ones need no lock. */
static void conf_copy_runtime(sim_conf_t *dst, const sim_conf_t *src)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (options[i].runtime)
            memcpy((char *)dst + options[i].off, (const char *)src + options[i].off,
                   opt_size(&options[i]));
}

static json_t *conf_runtime_json(const sim_conf_t *c)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < NOPTIONS; i++) {
        const opt_t *opt = &options[i];
        const void *field = (const char *)c + opt->off;
        char key[64];
        if (!opt->runtime)
            continue;
        json_key_of(opt, key, sizeof(key));
        switch (opt->type) {
        case OPT_INT:
            json_object_set_new(o, key, json_integer(*(const int *)field));
            break;
        case OPT_RATE:
            json_object_set_new(o, key, json_real(*(const double *)field));
            break;
        case OPT_U64:
            json_object_set_new(o, key, json_integer((json_int_t) * (const uint64_t *)field));
            break;
        case OPT_BOOL:
            json_object_set_new(o, key, json_boolean(*(const bool *)field));
            break;
        case OPT_STR:
            json_object_set_new(o, key, json_string(*(const char *const *)field));
            break;
        }
    }
    return o;
}

/* ---- deterministic draws --------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Uniform in [0, 1) for draw k of request seq. */
static double draw(uint64_t seed, uint64_t seq, unsigned k)
{
    return (double)(splitmix64(seed ^ splitmix64(seq * 4 + k)) >> 11) * 0x1.0p-53;
}

/* ---- stats ----------------------------------------------------------------------------------- */

static void stats_count_request(sim_t *s, route_t route, const char *model_id)
{
    sim_stats_t *st = &s->stats;

    pthread_mutex_lock(&s->stats_lock);
    st->requests++;
    if (route == ROUTE_CONVERSE)
        st->converse++;
    else if (route == ROUTE_INVOKE)
        st->invoke++;
    else
        st->other++;
    if (model_id[0]) {
        size_t i = 0;
        while (i < st->nmodels && strcmp(st->models[i].id, model_id) != 0)
            i++;
        if (i == st->nmodels && st->nmodels < SIM_STATS_MODELS)
            snprintf(st->models[st->nmodels++].id, sizeof(st->models[0].id), "%s", model_id);
        if (i < st->nmodels)
            st->models[i].n++;
        else
            st->models_other++;
    }
    pthread_mutex_unlock(&s->stats_lock);
}

static void stats_count_status(sim_t *s, unsigned status, bool auth_failure)
{
    pthread_mutex_lock(&s->stats_lock);
    if (status < 600)
        s->stats.by_status[status]++;
    if (auth_failure)
        s->stats.auth_failures++;
    pthread_mutex_unlock(&s->stats_lock);
}

static void stats_inflight(sim_t *s, int delta)
{
    pthread_mutex_lock(&s->stats_lock);
    s->stats.inflight += delta;
    if (s->stats.inflight > s->stats.max_inflight)
        s->stats.max_inflight = s->stats.inflight;
    pthread_mutex_unlock(&s->stats_lock);
}

static int64_t stats_get_inflight(sim_t *s)
{
    pthread_mutex_lock(&s->stats_lock);
    int64_t n = s->stats.inflight;
    pthread_mutex_unlock(&s->stats_lock);
    return n;
}

static json_t *stats_json(sim_t *s)
{
    json_t *models = json_object(), *status = json_object();
    sim_stats_t *st = &s->stats;
    json_t *o;

    pthread_mutex_lock(&s->stats_lock);
    for (size_t i = 0; i < st->nmodels; i++)
        json_object_set_new(models, st->models[i].id, json_integer((json_int_t)st->models[i].n));
    if (st->models_other)
        json_object_set_new(models, "_other", json_integer((json_int_t)st->models_other));
    for (unsigned i = 0; i < 600; i++) {
        char key[8];
        if (!st->by_status[i])
            continue;
        snprintf(key, sizeof(key), "%u", i);
        json_object_set_new(status, key, json_integer((json_int_t)st->by_status[i]));
    }
    o = json_pack("{sI s{sIsIsI} so so sI sI sI}", "requests", (json_int_t)st->requests, "by_kind",
                  "converse", (json_int_t)st->converse, "invoke", (json_int_t)st->invoke, "other",
                  (json_int_t)st->other, "by_model", models, "by_status", status, "auth_failures",
                  (json_int_t)st->auth_failures, "inflight", (json_int_t)st->inflight,
                  "max_inflight", (json_int_t)st->max_inflight);
    pthread_mutex_unlock(&s->stats_lock);
    return o;
}

static void stats_reset(sim_t *s)
{
    pthread_mutex_lock(&s->stats_lock);
    int64_t inflight = s->stats.inflight;
    memset(&s->stats, 0, sizeof(s->stats));
    s->stats.inflight = s->stats.max_inflight = inflight;
    pthread_mutex_unlock(&s->stats_lock);
    pthread_mutex_lock(&s->conf_lock);
    s->seq = 0;
    pthread_mutex_unlock(&s->conf_lock);
}

/* ---- delay queue: the timer thread --------------------------------------------------------- */

static void heap_push(delay_queue_t *q, delay_item_t it)
{
    size_t i = q->n++;
    while (i > 0 && q->heap[(i - 1) / 2].due_ms > it.due_ms) {
        q->heap[i] = q->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    q->heap[i] = it;
}

static delay_item_t heap_pop(delay_queue_t *q)
{
    delay_item_t top = q->heap[0], last = q->heap[--q->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= q->n)
            break;
        if (c + 1 < q->n && q->heap[c + 1].due_ms < q->heap[c].due_ms)
            c++;
        if (q->heap[c].due_ms >= last.due_ms)
            break;
        q->heap[i] = q->heap[c];
        i = c;
    }
    if (q->n)
        q->heap[i] = last;
    return top;
}

static void abs_deadline(int64_t due_mono_ms, struct timespec *ts)
{
    ts->tv_sec = (time_t)(due_mono_ms / 1000);
    ts->tv_nsec = (long)(due_mono_ms % 1000) * 1000000L;
}

/* Timer thread: resumes each suspended connection when due (all at once when stopping).
 * MHD_resume_connection is called without our lock held, and only for connections that were
 * suspended before they were pushed. */
static void *delay_thread(void *arg)
{
    delay_queue_t *q = arg;

    pthread_mutex_lock(&q->lock);
    while (!(q->stopping && q->n == 0)) {
        if (q->n == 0) {
            pthread_cond_wait(&q->cond, &q->lock);
            continue;
        }
        if (!q->stopping && q->heap[0].due_ms > aiq_mono_ms()) {
            struct timespec ts;
            abs_deadline(q->heap[0].due_ms, &ts);
            pthread_cond_timedwait(&q->cond, &q->lock, &ts);
            continue;
        }
        delay_item_t it = heap_pop(q);
        pthread_mutex_unlock(&q->lock);
        MHD_resume_connection(it.conn);
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

static int delay_queue_start(delay_queue_t *q, size_t cap, aiq_err_t *err)
{
    pthread_condattr_t attr;
    int rc = AIQ_EIO;

    q->heap = calloc(cap, sizeof(*q->heap));
    if (!q->heap)
        return aiq_err_set(err, AIQ_ENOMEM, "delay queue of %zu entries", cap);
    q->cap = cap;
    if (pthread_mutex_init(&q->lock, NULL))
        goto fail_heap;
    if (pthread_condattr_init(&attr))
        goto fail_lock;
    if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) || pthread_cond_init(&q->cond, &attr)) {
        pthread_condattr_destroy(&attr);
        goto fail_lock;
    }
    pthread_condattr_destroy(&attr);
    if (pthread_create(&q->thread, NULL, delay_thread, q))
        goto fail_cond;
    return 0;
fail_cond:
    pthread_cond_destroy(&q->cond);
fail_lock:
    pthread_mutex_destroy(&q->lock);
fail_heap:
    free(q->heap);
    q->heap = NULL;
    return aiq_err_set(err, rc, "cannot start the delay thread");
}

/* Resumes everything still waiting and joins the thread; afterwards nothing gets suspended. */
static void delay_queue_stop(delay_queue_t *q)
{
    if (!q->heap)
        return;
    pthread_mutex_lock(&q->lock);
    q->stopping = true;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
    pthread_join(q->thread, NULL);
    pthread_cond_destroy(&q->cond);
    pthread_mutex_destroy(&q->lock);
    free(q->heap);
    q->heap = NULL;
}

/* Runs on an MHD thread inside on_request. Suspends conn until due; false when the caller
 * must answer now (stopping, or the queue is full, which the connection limit rules out). */
static bool delay_queue_suspend(delay_queue_t *q, struct MHD_Connection *conn, int64_t due_ms)
{
    bool ok = false;

    pthread_mutex_lock(&q->lock);
    if (!q->stopping && q->n < q->cap) {
        /* Suspend before the item is visible: resuming a connection that is not suspended is
         * undefined behaviour in MHD. */
        MHD_suspend_connection(conn);
        heap_push(q, (delay_item_t){due_ms, conn});
        if (q->heap[0].conn == conn)
            pthread_cond_signal(&q->cond);
        ok = true;
    }
    pthread_mutex_unlock(&q->lock);
    return ok;
}

/* ---- HTTP responses ------------------------------------------------------------------------ */

/* Takes over body (from json_dumps / malloc); returns NULL when out of memory. */
static struct MHD_Response *json_response(char *body)
{
    struct MHD_Response *r;

    if (!body)
        return NULL;
    r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return NULL;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return r;
}

/* Takes over o. */
static struct MHD_Response *json_response_of(json_t *o)
{
    char *body = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return json_response(body);
}

/* Bedrock's error shape: {"message": ...} plus x-amzn-ErrorType. */
static struct MHD_Response *error_response(const char *type, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static struct MHD_Response *error_response(const char *type, const char *fmt, ...)
{
    char msg[600], etype[160];
    va_list ap;
    struct MHD_Response *r;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    r = json_response_of(json_pack("{ss}", "message", msg));
    if (r) {
        snprintf(etype, sizeof(etype), "%s:%s", type, SIM_ERROR_NS);
        MHD_add_response_header(r, "x-amzn-ErrorType", etype);
    }
    return r;
}

static const char *error_type_for(unsigned status)
{
    switch (status) {
    case 400:
        return "ValidationException";
    case 403:
        return "AccessDeniedException";
    case 404:
        return "ResourceNotFoundException";
    case 408:
        return "ModelTimeoutException";
    case 424:
        return "ModelErrorException";
    case 429:
        return "ThrottlingException";
    case 503:
        return "ServiceUnavailableException";
    default:
        return "InternalServerException";
    }
}

/* Queues resp (consumed; NULL means out of memory) now. */
static enum MHD_Result send_now(struct MHD_Connection *conn, unsigned status,
                                struct MHD_Response *resp)
{
    static const char oom[] = "{\"message\":\"simulator out of memory\"}";
    enum MHD_Result ret;

    if (!resp) {
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        resp =
            MHD_create_response_from_buffer(sizeof(oom) - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        if (!resp)
            return MHD_NO;
    }
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Every model-route reply goes through here: counted, logged, then sent after the drawn latency. */
static enum MHD_Result reply_model(sim_req_t *r, struct MHD_Connection *conn, unsigned status,
                                   struct MHD_Response *resp, int latency_ms, bool auth_failure)
{
    sim_t *s = r->sim;

    stats_count_status(s, status, auth_failure);
    pthread_mutex_lock(&s->conf_lock);
    bool log = s->conf.log_requests;
    pthread_mutex_unlock(&s->conf_lock);
    if (log)
        sim_log("info", "request",
                json_pack("{sssssisi}", "path", r->path, "model", r->model_id, "status",
                          (int)status, "latency_ms", latency_ms));
    if (latency_ms > 0 && resp) {
        r->pending = resp;
        r->pending_status = status;
        if (delay_queue_suspend(&s->delays, conn, aiq_mono_ms() + latency_ms))
            return MHD_YES;
        r->pending = NULL;
    }
    return send_now(conn, status, resp);
}

/* 413 for a body over the route's cap. */
static enum MHD_Result reply_too_large(sim_req_t *r, struct MHD_Connection *conn)
{
    if (r->route == ROUTE_SIM_CONFIG)
        return send_now(conn, 413, error_response("ValidationException", "config body too large"));
    return reply_model(
        r, conn, 413,
        error_response("ValidationException", "Input is too long for the requested model."), 0,
        false);
}

/* ---- Bedrock behaviour ----------------------------------------------------------------------- */

static size_t utf8_prefix(const char *s, size_t max_chars)
{
    size_t i = 0, chars = 0;
    while (s[i] && chars < max_chars) {
        i++;
        while ((s[i] & 0xC0) == 0x80)
            i++;
        chars++;
    }
    return i;
}

static size_t utf8_floor(const char *s, size_t len, size_t max_bytes)
{
    if (len <= max_bytes)
        return len;
    while (max_bytes > 0 && (s[max_bytes] & 0xC0) == 0x80)
        max_bytes--;
    return max_bytes;
}

static unsigned tokens_of(size_t bytes)
{
    return (unsigned)((bytes + 3) / 4);
}

_Static_assert(SIM_REPLY_MAX > sizeof("sim reply to:  []") + 4 * SIM_QUOTE_CHARS + SIM_MODEL_ID_MAX,
               "the reply text always fits");

typedef struct reply {
    char text[SIM_REPLY_MAX];
    size_t len;
    unsigned input_tokens, output_tokens;
    const char *stop_reason;   /* "end_turn", "max_tokens", "stop_sequence" */
    const char *stop_sequence; /* borrowed from the request JSON, or NULL */
} reply_t;

/* The deterministic answer: "sim reply to: <first 60 chars of the last user text> [<model>]",
 * ~4 bytes a token, cut at the earliest stop sequence or at max_tokens (0 = no cap). */
static void reply_build(reply_t *rp, const char *last_user, size_t input_bytes,
                        const char *model_id, long long max_tokens, json_t *stops)
{
    int n = snprintf(rp->text, sizeof(rp->text), "sim reply to: %.*s [%s]",
                     (int)utf8_prefix(last_user, SIM_QUOTE_CHARS), last_user, model_id);
    size_t cut = SIZE_MAX, idx;
    json_t *v;

    rp->len = n < 0 ? 0 : (size_t)n; /* never truncated: see the assertion on SIM_REPLY_MAX */
    rp->stop_reason = "end_turn";
    rp->stop_sequence = NULL;
    json_array_foreach(stops, idx, v)
    {
        const char *seq = json_string_value(v);
        const char *hit = seq && *seq ? strstr(rp->text, seq) : NULL;
        if (hit && (size_t)(hit - rp->text) < cut) {
            cut = (size_t)(hit - rp->text);
            rp->stop_sequence = seq;
        }
    }
    if (max_tokens > 0 && (unsigned long long)max_tokens * 4 < rp->len &&
        (unsigned long long)max_tokens * 4 < cut) {
        rp->len = utf8_floor(rp->text, rp->len, (size_t)max_tokens * 4);
        rp->stop_reason = "max_tokens";
        rp->stop_sequence = NULL;
    } else if (rp->stop_sequence) {
        rp->len = cut;
        rp->stop_reason = "stop_sequence";
    }
    rp->text[rp->len] = '\0';
    rp->input_tokens = tokens_of(input_bytes) ? tokens_of(input_bytes) : 1;
    rp->output_tokens = tokens_of(rp->len);
}

/* Texts of one message's content: a string (Anthropic) or an array of blocks with "text". */
static int scan_content(json_t *content, bool allow_string, size_t *bytes, const char **last,
                        char *why, size_t cap)
{
    size_t i;
    json_t *block;

    if (allow_string && json_is_string(content)) {
        *bytes += json_string_length(content);
        *last = json_string_value(content);
        return 0;
    }
    if (!json_is_array(content)) {
        snprintf(why, cap, "content must be an array of content blocks");
        return -1;
    }
    json_array_foreach(content, i, block)
    {
        json_t *text = json_object_get(block, "text");
        if (!json_is_object(block) || (text && !json_is_string(text))) {
            snprintf(why, cap, "content[%zu] is not a valid content block", i);
            return -1;
        }
        if (text) {
            *bytes += json_string_length(text);
            *last = json_string_value(text);
        }
    }
    return 0;
}

/* messages: non-empty array of {role: user|assistant, content}; finds the last user text. */
static int scan_messages(json_t *messages, bool allow_string, size_t *bytes, const char **last_user,
                         char *why, size_t cap)
{
    size_t i;
    json_t *m;

    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        snprintf(why, cap, "messages must be a non-empty array");
        return -1;
    }
    json_array_foreach(messages, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *last = NULL;
        if (!role || (strcmp(role, "user") && strcmp(role, "assistant"))) {
            snprintf(why, cap, "messages[%zu].role must be \"user\" or \"assistant\"", i);
            return -1;
        }
        if (scan_content(json_object_get(m, "content"), allow_string, bytes, &last, why, cap))
            return -1;
        if (!strcmp(role, "user") && last)
            *last_user = last;
    }
    return 0;
}

static bool is_string_array(json_t *a)
{
    size_t i;
    json_t *v;

    if (!json_is_array(a))
        return false;
    json_array_foreach(a, i, v)
    {
        if (!json_is_string(v))
            return false;
    }
    return true;
}

/* Converse: validates the body and writes the reply; NULL plus why on a validation error. */
static json_t *converse_reply(json_t *body, const char *model_id, int latency_ms, char *why,
                              size_t cap)
{
    json_t *cfg = json_object_get(body, "inferenceConfig"),
           *system = json_object_get(body, "system");
    json_t *max = json_object_get(cfg, "maxTokens"), *stops = json_object_get(cfg, "stopSequences");
    const char *last_user = "", *system_last = NULL; /* system text counts only as input */
    size_t bytes = 0;
    reply_t rp;

    if ((cfg && !json_is_object(cfg)) ||
        (max && (!json_is_integer(max) || json_integer_value(max) < 1)) ||
        (stops && !is_string_array(stops))) {
        snprintf(why, cap,
                 "inferenceConfig: maxTokens must be an integer >= 1 and stopSequences "
                 "an array of strings");
        return NULL;
    }
    if (system && scan_content(system, false, &bytes, &system_last, why, cap))
        return NULL;
    if (scan_messages(json_object_get(body, "messages"), false, &bytes, &last_user, why, cap))
        return NULL;
    reply_build(&rp, last_user, bytes, model_id, max ? json_integer_value(max) : 0, stops);
    return json_pack("{s{s{sss[{ss#}]}} ss s{sIsIsI} s{sI}}", "output", "message", "role",
                     "assistant", "content", "text", rp.text, (int)rp.len, "stopReason",
                     rp.stop_reason, "usage", "inputTokens", (json_int_t)rp.input_tokens,
                     "outputTokens", (json_int_t)rp.output_tokens, "totalTokens",
                     (json_int_t)(rp.input_tokens + rp.output_tokens), "metrics", "latencyMs",
                     (json_int_t)latency_ms);
}

/* FNV-1a, for stable message ids. */
static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

/* InvokeModel with an Anthropic messages body. */
static json_t *invoke_reply(json_t *body, const char *model_id, const char *raw, size_t raw_len,
                            char *why, size_t cap)
{
    json_t *max = json_object_get(body, "max_tokens"), *system = json_object_get(body, "system");
    json_t *stops = json_object_get(body, "stop_sequences");
    const char *last_user = "", *system_last = NULL; /* system text counts only as input */
    size_t bytes = 0;
    char id[40];
    reply_t rp;

    if (!json_is_string(json_object_get(body, "anthropic_version"))) {
        snprintf(why, cap,
                 "Malformed input request: #: required key [anthropic_version] not found");
        return NULL;
    }
    if (!json_is_integer(max) || json_integer_value(max) < 1) {
        snprintf(why, cap, "Malformed input request: #/max_tokens: must be an integer >= 1");
        return NULL;
    }
    if (stops && !is_string_array(stops)) {
        snprintf(why, cap, "Malformed input request: #/stop_sequences: expected array of strings");
        return NULL;
    }
    if (system && scan_content(system, true, &bytes, &system_last, why, cap))
        return NULL;
    if (scan_messages(json_object_get(body, "messages"), true, &bytes, &last_user, why, cap))
        return NULL;
    reply_build(&rp, last_user, bytes, model_id, json_integer_value(max), stops);
    uint64_t h = fnv1a(fnv1a(0xcbf29ce484222325ULL, model_id, strlen(model_id)), raw, raw_len);
    snprintf(id, sizeof(id), "msg_bdrk_sim%016" PRIx64, h);
    return json_pack("{ss ss ss ss s[{ss ss#}] ss so s{sIsI}}", "id", id, "type", "message", "role",
                     "assistant", "model", model_id, "content", "type", "text", "text", rp.text,
                     (int)rp.len, "stop_reason", rp.stop_reason, "stop_sequence",
                     rp.stop_sequence ? json_string(rp.stop_sequence) : json_null(), "usage",
                     "input_tokens", (json_int_t)rp.input_tokens, "output_tokens",
                     (json_int_t)rp.output_tokens);
}

/* ---- request handling ------------------------------------------------------------------------ */

static const char *on_sigv4_header(void *ctx, const char *name)
{
    return MHD_lookup_connection_value(ctx, MHD_HEADER_KIND, name);
}

static int verify_signature(sim_req_t *r, struct MHD_Connection *conn, aiq_err_t *err)
{
    sim_t *s = r->sim;
    aiq_sigv4_verify_req_t v = {.method = "POST",
                                .path = r->path,
                                .query = r->query,
                                .body = r->body,
                                .body_len = r->body_len,
                                .header = on_sigv4_header,
                                .header_ctx = conn,
                                .region = s->region,
                                .service = "bedrock",
                                .now = time(NULL)};
    /* Any session token is accepted: the simulator has no STS to check it against. */
    aiq_sigv4_creds_t creds = {.access_key = s->creds.access_key,
                               .secret_key = s->creds.secret_key};

    v.creds = &creds;
    return aiq_sigv4_verify(&v, err);
}

/* The per-request draws, under conf_lock so that seq and the knobs are read together. */
typedef struct draws {
    int latency_ms;
    unsigned fault_status; /* 0 = none */
} draws_t;

static draws_t draw_request(sim_t *s)
{
    draws_t d = {0, 0};

    pthread_mutex_lock(&s->conf_lock);
    const sim_conf_t *c = &s->conf;
    uint64_t seq = s->seq++;
    d.latency_ms = c->latency_ms;
    if (c->latency_jitter_ms > 0)
        d.latency_ms += (int)(draw(c->seed, seq, 0) * (c->latency_jitter_ms + 1));
    if (draw(c->seed, seq, 1) < c->throttle_rate)
        d.fault_status = 429;
    else if (draw(c->seed, seq, 2) < c->fail_rate)
        d.fault_status = (unsigned)c->fail_status;
    pthread_mutex_unlock(&s->conf_lock);
    return d;
}

static struct MHD_Response *fault_response(unsigned status)
{
    if (status == 429)
        return error_response("ThrottlingException",
                              "Too many requests, please wait before trying again.");
    return error_response(error_type_for(status), "injected failure (bedrock-sim fail_rate)");
}

/* POST /model/{id}/converse|invoke with the whole body in r->body. */
static enum MHD_Result handle_model(sim_req_t *r, struct MHD_Connection *conn)
{
    draws_t d = draw_request(r->sim);
    char why[300];
    aiq_err_t err = {0};
    json_error_t jerr;
    json_t *body, *out;

    if (r->too_big)
        return reply_too_large(r, conn);
    if (verify_signature(r, conn, &err))
        return reply_model(r, conn, 403, error_response("AccessDeniedException", "%s", err.msg),
                           d.latency_ms, true);
    body = json_loadb(r->body ? r->body : "", r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(body)) {
        json_decref(body);
        return reply_model(r, conn, 400,
                           error_response("ValidationException", "Malformed input request: %s",
                                          body ? "body must be a JSON object" : jerr.text),
                           d.latency_ms, false);
    }
    if (d.fault_status) {
        json_decref(body);
        return reply_model(r, conn, d.fault_status, fault_response(d.fault_status), d.latency_ms,
                           false);
    }
    out = r->route == ROUTE_CONVERSE
              ? converse_reply(body, r->model_id, d.latency_ms, why, sizeof(why))
              : invoke_reply(body, r->model_id, r->body, r->body_len, why, sizeof(why));
    json_decref(body);
    if (!out)
        return reply_model(r, conn, 400, error_response("ValidationException", "%s", why),
                           d.latency_ms, false);
    return reply_model(r, conn, 200, json_response_of(out), d.latency_ms, false);
}

/* POST /_sim/config: every key must name a runtime option; all or nothing. */
static enum MHD_Result handle_config(sim_req_t *r, struct MHD_Connection *conn, bool update)
{
    sim_t *s = r->sim;
    aiq_err_t err = {0};
    json_t *body = NULL, *v;
    const char *key;
    sim_conf_t next;

    if (update && r->too_big)
        return reply_too_large(r, conn);
    if (update) {
        body = json_loadb(r->body ? r->body : "", r->body_len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(body)) {
            json_decref(body);
            return send_now(
                conn, 400,
                error_response("ValidationException", "config body must be a JSON object"));
        }
    }
    pthread_mutex_lock(&s->conf_lock);
    next = s->conf;
    json_object_foreach(body, key, v)
    {
        const opt_t *o = opt_find(key, strlen(key), true);
        if (!o || !o->runtime) {
            aiq_err_set(&err, AIQ_EINVAL, "%s: not a runtime setting", key);
            break;
        }
        if (opt_set_json(&next, o, v, &err))
            break;
    }
    if (!err.code)
        conf_copy_runtime(&s->conf, &next);
    json_t *now = conf_runtime_json(&s->conf);
    pthread_mutex_unlock(&s->conf_lock);
    json_decref(body);
    if (err.code) {
        json_decref(now);
        return send_now(conn, 400, error_response("ValidationException", "%s", err.msg));
    }
    if (update)
        sim_log("info", "config changed", json_pack("{sO}", "config", now));
    return send_now(conn, 200, json_response_of(now));
}

static enum MHD_Result dispatch(sim_req_t *r, struct MHD_Connection *conn, const char *method)
{
    bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST");

    switch (r->route) {
    case ROUTE_CONVERSE:
    case ROUTE_INVOKE:
        return handle_model(r, conn);
    case ROUTE_SIM_STATS:
        if (get)
            return send_now(conn, 200, json_response_of(stats_json(r->sim)));
        break;
    case ROUTE_SIM_RESET:
        if (post) {
            stats_reset(r->sim);
            return send_now(conn, 200, json_response_of(json_pack("{sb}", "reset", 1)));
        }
        break;
    case ROUTE_SIM_CONFIG:
        if (get || post)
            return handle_config(r, conn, post);
        break;
    case ROUTE_UNKNOWN:
        return reply_model(r, conn, 404,
                           error_response("UnknownOperationException",
                                          "Unknown operation %s %.200s", method, r->path),
                           0, false);
    }
    return send_now(conn, 404,
                    error_response("UnknownOperationException", "Unknown operation %s %.200s",
                                   method, r->path));
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Percent-decodes s[0..n) into out (cap bytes with NUL); false when it does not fit, holds a
 * bad escape or decodes to an empty string, NUL or invalid UTF-8. */
static bool decode_model_id(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    json_t *probe;

    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
                return false;
            c = hexval(s[i + 1]) << 4 | hexval(s[i + 2]);
            i += 2;
        }
        if (c == 0 || o + 1 >= cap)
            return false;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    probe = o ? json_stringn(out, o) : NULL; /* jansson rejects invalid UTF-8 */
    json_decref(probe);
    return probe != NULL;
}

static route_t route_of(sim_req_t *r, const char *method)
{
    static const char prefix[] = "/model/";
    const char *p = r->path, *id, *slash;

    if (!strcmp(p, "/_sim/stats"))
        return ROUTE_SIM_STATS;
    if (!strcmp(p, "/_sim/reset"))
        return ROUTE_SIM_RESET;
    if (!strcmp(p, "/_sim/config"))
        return ROUTE_SIM_CONFIG;
    if (strcmp(method, "POST") || strncmp(p, prefix, sizeof(prefix) - 1))
        return ROUTE_UNKNOWN;
    id = p + sizeof(prefix) - 1;
    slash = strchr(id, '/');
    if (!slash || !decode_model_id(id, (size_t)(slash - id), r->model_id, sizeof(r->model_id))) {
        r->model_id[0] = '\0';
        return ROUTE_UNKNOWN;
    }
    if (!strcmp(slash, "/converse"))
        return ROUTE_CONVERSE;
    if (!strcmp(slash, "/invoke"))
        return ROUTE_INVOKE;
    r->model_id[0] = '\0';
    return ROUTE_UNKNOWN;
}

/* Appends an upload chunk; past body_limit the rest is dropped and too_big set. */
static void body_append(sim_req_t *r, const char *data, size_t n)
{
    if (r->too_big || n == 0)
        return;
    if (n > r->body_limit - r->body_len) {
        r->too_big = true;
        return;
    }
    if (r->body_len + n + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 4096;
        while (cap < r->body_len + n + 1)
            cap *= 2;
        if (cap > r->body_limit + 1)
            cap = r->body_limit + 1;
        char *p = realloc(r->body, cap);
        if (!p) {
            r->too_big = true;
            return;
        }
        r->body = p;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
}

static bool expects_continue(struct MHD_Connection *conn)
{
    const char *e = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Expect");
    return e && !strcasecmp(e, "100-continue");
}

/* First call for a request: route and count it. An announced oversized body is refused at once
 * when the client waits for "100 Continue" (it then never sends the body); otherwise the body
 * is read and dropped, so the client is not cut off mid-send and does see the 413. */
static enum MHD_Result on_first_call(sim_req_t *r, struct MHD_Connection *conn, const char *method)
{
    sim_t *s = r->sim;
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");

    r->started = true;
    r->route = r->uri_too_long ? ROUTE_UNKNOWN : route_of(r, method);
    r->body_limit = r->route == ROUTE_CONVERSE || r->route == ROUTE_INVOKE ? s->max_body
                    : r->route == ROUTE_SIM_CONFIG                         ? SIM_CONFIG_BODY_MAX
                                                                           : 0;
    if (r->route != ROUTE_SIM_STATS && r->route != ROUTE_SIM_RESET &&
        r->route != ROUTE_SIM_CONFIG) {
        stats_count_request(s, r->route, r->model_id);
        stats_inflight(s, 1);
        r->counted = true;
    }
    if (r->body_limit && cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || *end || n > r->body_limit) {
            r->too_big = true;
            if (expects_continue(conn)) {
                r->responded = true;
                return reply_too_large(r, conn);
            }
        }
    }
    return MHD_YES;
}

/* MHD access handler; runs on the connection's MHD thread. Calls: first (headers), one per
 * upload chunk, final (*upload_data_size == 0), and once more after a resume. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    sim_req_t *r = *req_cls;

    (void)cls;
    (void)url;
    (void)version;
    if (!r)
        return send_now(conn, 500, NULL);
    if (!r->started)
        return on_first_call(r, conn, method);
    if (*upload_data_size || r->responded) {
        if (r->body_limit && !r->responded)
            body_append(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->pending) {
        struct MHD_Response *resp = r->pending;
        r->pending = NULL;
        return send_now(conn, r->pending_status, resp);
    }
    return dispatch(r, conn, method);
}

/* URI log callback: the only place MHD shows the target before percent-decoding it, which
 * SigV4 needs. Allocates the request (freed in on_completed); NULL makes on_request answer 500. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    sim_req_t *r = calloc(1, sizeof(*r));
    size_t n = strlen(uri);
    char *q;

    (void)conn;
    if (!r)
        return NULL;
    r->sim = cls;
    if (n > SIM_URI_MAX) {
        r->uri_too_long = true;
        n = 0;
    }
    memcpy(r->uri, uri, n);
    r->uri[n] = '\0';
    q = strchr(r->uri, '?');
    if (q)
        *q++ = '\0';
    r->path = r->uri;
    r->query = q;
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    sim_req_t *r = *req_cls;

    (void)conn;
    (void)toe;
    if (!r)
        return;
    if (r->counted)
        stats_inflight(cls, -1);
    if (r->pending)
        MHD_destroy_response(r->pending);
    free(r->body);
    free(r);
    *req_cls = NULL;
}

/* ---- start-up and shutdown ------------------------------------------------------------------- */

/* Binds and listens; returns the socket or a negative code. */
static int open_listener(const char *host, int port, int backlog, char *shown, size_t cap,
                         aiq_err_t *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char portstr[8];
    int fd = -1, one = 1, rc;

    snprintf(portstr, sizeof(portstr), "%d", port);
    if ((rc = getaddrinfo(host, portstr, &hints, &ai)))
        return aiq_err_set(err, AIQ_EINVAL, "--listen %s: %s", host, gai_strerror(rc));
    /* Non-blocking: every pool thread polls this socket, and a lost accept race must not block. */
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, backlog) ||
        getsockname(fd, (struct sockaddr *)&ss, &sl)) {
        rc = aiq_err_set(err, AIQ_EIO, "listen on %s:%d: %s", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return rc;
    }
    port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
    snprintf(shown, cap, ai->ai_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
    freeaddrinfo(ai);
    return fd;
}

/* Raises RLIMIT_NOFILE toward what max_connections needs; returns the connection limit that the
 * final limit allows. */
static int fit_fd_limit(int max_connections)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)max_connections + 64;

    if (getrlimit(RLIMIT_NOFILE, &rl))
        return max_connections;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        int fit = rl.rlim_cur > 80 ? (int)(rl.rlim_cur - 64) : 16;
        sim_log("warn", "RLIMIT_NOFILE too low; connection limit reduced",
                json_pack("{sisI}", "max_connections", fit, "nofile", (json_int_t)rl.rlim_cur));
        return fit;
    }
    return max_connections;
}

static int start_daemon(sim_t *s, int listen_fd, int max_conns, aiq_err_t *err)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;

    flags |= MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL : MHD_USE_POLL;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
        MHD_OPTION_LISTEN_SOCKET, listen_fd, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->conf.threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)max_conns, MHD_OPTION_CONNECTION_TIMEOUT, 120u,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_END);
    if (!s->daemon)
        return aiq_err_set(err, AIQ_EIO, "MHD_start_daemon failed (see the libmicrohttpd log)");
    return 0;
}

/* Stop order: stop accepting, release every delayed reply, let them drain, stop the daemon. */
static void sim_stop(sim_t *s)
{
    MHD_socket lfd = MHD_quiesce_daemon(s->daemon);
    int64_t deadline = aiq_mono_ms() + SIM_SHUTDOWN_WAIT_MS;

    if (lfd != MHD_INVALID_SOCKET) /* quiesced: MHD no longer owns it */
        close(lfd);
    delay_queue_stop(&s->delays);
    while (stats_get_inflight(s) > 0 && aiq_mono_ms() < deadline)
        usleep(10 * 1000);
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
}

static int wait_for_signal(void)
{
    sigset_t set;
    int sig = 0;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigwait(&set, &sig);
    return sig;
}

/* Blocks SIGINT/SIGTERM in every thread (main waits for them with sigwait) and ignores SIGPIPE. */
static void setup_signals(void)
{
    sigset_t set;

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static void log_started(const sim_t *s, const char *shown, int max_conns)
{
    json_t *cfg = conf_runtime_json(&s->conf);
    sim_log("info", "started",
            json_pack("{ssssss#sisiso}", "listen", shown, "region", s->region, "access_key_prefix",
                      s->creds.access_key,
                      (int)(strlen(s->creds.access_key) < 4 ? strlen(s->creds.access_key) : 4),
                      "threads", s->conf.threads, "max_connections", max_conns, "config", cfg));
}

int main(int argc, char **argv)
{
    static sim_t sim; /* owned by main; large (stats table) so not on the stack */
    aiq_err_t err = {0};
    char shown[128];
    int rc, fd, max_conns;

    if ((rc = conf_defaults(&sim.conf, &err)) ||
        (rc = conf_parse_args(&sim.conf, argc, argv, &err))) {
        if (rc > 0)
            return 0;
        fprintf(stderr, "bedrock-sim: %s\n", err.msg);
        return 2;
    }
    sim.creds =
        (aiq_sigv4_creds_t){.access_key = sim.conf.access_key, .secret_key = sim.conf.secret_key};
    sim.region = sim.conf.region;
    sim.max_body = (size_t)sim.conf.max_body;
    pthread_mutex_init(&sim.conf_lock, NULL);
    pthread_mutex_init(&sim.stats_lock, NULL);
    setup_signals();
    max_conns = fit_fd_limit(sim.conf.max_connections);
    if ((fd = open_listener(sim.conf.listen, sim.conf.port, 4096, shown, sizeof(shown), &err)) < 0)
        goto fail;
    if ((rc = delay_queue_start(&sim.delays, (size_t)max_conns + 16, &err)))
        goto fail_fd;
    if ((rc = start_daemon(&sim, fd, max_conns, &err)))
        goto fail_delays;
    printf("bedrock-sim listening on http://%s\n", shown);
    fflush(stdout);
    log_started(&sim, shown, max_conns);
    int sig = wait_for_signal();
    sim_stop(&sim);
    sim_log("info", "stopped",
            json_pack("{ss so}", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM", "stats",
                      stats_json(&sim)));
    return 0; /* the listen socket was closed by sim_stop or MHD_stop_daemon */

fail_delays:
    delay_queue_stop(&sim.delays);
fail_fd:
    close(fd);
fail:
    sim_log("error", "start failed", json_pack("{ss}", "error", err.msg));
    return 1;
}
