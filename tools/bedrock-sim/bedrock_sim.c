/* bedrock_sim.c — a local stand-in for Amazon Bedrock Runtime (Converse, ConverseStream,
 * InvokeModel and InvokeModelWithResponseStream in each model family's shape, CountTokens)
 * that checks SigV4, refuses what botocore's service model refuses (--model), records what it
 * accepted (--record), and injects latency and faults, for aiq's tests and benchmarks.
 *
 * Faults: a profile of knobs (latency distribution, error mix, quotas) applies to every model,
 * optionally overridden per model id; outage windows and quota windows are its state. All of
 * it is set by flags and changed at runtime through POST /_sim/config and /_sim/outage.
 *
 * Threads: libmicrohttpd runs a pool of --threads epoll loops that call on_request. A delayed
 * reply is built at once, its connection suspended and handed to one timer thread that resumes
 * it when due, so a waiting request holds no thread. main only parses flags, starts both, waits
 * for SIGINT/SIGTERM and tears down in reverse order.
 *
 * What is read from a request (target, route, model id, bodies, replies) is in sim_request.c,
 * apart from the server so that fuzz/fuzz_sim_request.c can drive it. */
#include "aiq_err.h"
#include "sigv4.h"
#include "sim_request.h"
#include "timeutil.h"

#include <jansson.h>
#include <microhttpd.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
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

#define SIM_STATS_MODELS     64          /* distinct model ids counted; the rest go to "_other" */
#define SIM_CONFIG_BODY_MAX  (64 * 1024) /* body of POST /_sim/config */
#define SIM_SHUTDOWN_WAIT_MS 2000        /* how long stop waits for in-flight replies */
#define SIM_ERROR_NS         "http://internal.amazon.com/coral/com.amazon.bedrock/"
#define SIM_ERRORS_MAX       16  /* entries of one error mix */
#define SIM_ETYPE_MAX        64  /* error type name, bytes */
#define SIM_EMSG_MAX         200 /* error message, bytes */
#define SIM_OUTAGES_MAX      8   /* outage windows of one scope (all models, or one) */
#define SIM_OVERRIDES_MAX    16  /* models with a fault profile of their own */
#define SIM_QUOTA_SLOTS      100 /* buckets of one sliding quota window */
#define SIM_STATS_ETYPES     32  /* distinct error types counted; the rest go to "_other" */
#define SIM_WINDOW_MAX_MS    (24LL * 3600 * 1000) /* longest outage start offset or duration */
#define SIM_RETRY_AFTER_MAX  86400                /* retry_after_s of an error entry, seconds */
#define SIM_THROTTLE_MSG     "Too many requests, please wait before trying again."
#define SIM_UNAVAILABLE_MSG  "Bedrock is unable to process your request."
#define SIM_CACHE_SLOTS      4096              /* prompt-cache prefixes remembered */
#define SIM_CACHE_TTL_MS     (5 * 60 * 1000)   /* Bedrock's default cache TTL, refreshed on a hit */
#define SIM_MODEL_FILE_MAX   (8 * 1024 * 1024) /* --model file, bytes */

/* ---- fault profile: the knobs that can differ per model ---------------------------------- */

typedef enum lat_dist { LAT_FIXED, LAT_UNIFORM, LAT_LOGNORMAL } lat_dist_t;
static const char *const lat_dist_names[] = {"fixed", "uniform", "lognormal", NULL};

/* One entry of an error mix: this share of model requests gets this error. */
typedef struct sim_error {
    int status;        /* 400..599 */
    double rate;       /* 0..1 */
    int retry_after_s; /* Retry-After header, or -1 for none */
    bool in_stream;    /* on a streaming route: a 200 whose stream ends in this exception */
    bool untyped;      /* type null: no x-amzn-ErrorType header (type is "") */
    char type[SIM_ETYPE_MAX + 1];
    char message[SIM_EMSG_MAX + 1]; /* "" = a default by type */
} sim_error_t;

typedef struct sim_profile {
    int latency_ms, latency_jitter_ms, latency_dist, latency_min_ms, latency_max_ms;
    int latency_p50_ms, latency_p99_ms, latency_cap_ms;
    double fail_rate, throttle_rate;
    int fail_status;
    int quota_rps, quota_rpm; /* 0 = off */
    size_t nerrors;
    sim_error_t errors[SIM_ERRORS_MAX];
} sim_profile_t;

/* ---- configuration: one table drives flags, environment, --help and POST /_sim/config ---- */

typedef struct sim_conf {
    const char *listen;
    int port;
    const char *region;
    const char *access_key;
    const char *secret_key;
    sim_profile_t prof; /* the profile of every model without an override */
    uint64_t seed;
    int threads;
    int max_connections;
    int max_body;
    bool log_requests;
    const char *record;     /* NDJSON file of accepted model requests, or NULL */
    const char *model_file; /* shapes file (gen_model.py), or NULL for no model check */
    bool prompt_cache;
    int stream_gap_ms; /* between the events of a stream; 0 = all at once */
} sim_conf_t;

typedef enum opt_type { OPT_STR, OPT_INT, OPT_RATE, OPT_U64, OPT_BOOL, OPT_ENUM } opt_type_t;

typedef struct opt {
    const char *name; /* flag is --name; the /_sim/config key is name with '_' for '-' */
    opt_type_t type;
    size_t off;
    long long min, max; /* OPT_INT bounds */
    const char *def;    /* default, parsed like a flag value */
    const char *env;    /* environment variable that overrides the default, or NULL */
    bool runtime;       /* settable through POST /_sim/config */
    const char *help;
    const char *const *choices; /* OPT_ENUM names, NULL-terminated; the field holds the index */
} opt_t;

/* A field under prof. is a per-model knob too (see opt_in_profile). */
#define OPT(n, t, f, lo, hi, d, e, rt, h)                                                          \
    {                                                                                              \
        n, t, offsetof(sim_conf_t, f), lo, hi, d, e, rt, h, NULL                                   \
    }
#define OPT_E(n, f, names, d, h)                                                                   \
    {                                                                                              \
        n, OPT_ENUM, offsetof(sim_conf_t, f), 0, 0, d, NULL, true, h, names                        \
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
    OPT_E("latency-dist", prof.latency_dist, lat_dist_names, "fixed",
          "delay before every model response: fixed (latency-ms plus\n"
          "                       latency-jitter-ms), uniform (latency-min-ms..latency-max-ms)\n"
          "                       or lognormal (latency-p50-ms, latency-p99-ms)"),
    OPT("latency-ms", OPT_INT, prof.latency_ms, 0, 600000, "20", NULL, true,
        "fixed: delay before every model response, in ms"),
    OPT("latency-jitter-ms", OPT_INT, prof.latency_jitter_ms, 0, 600000, "0", NULL, true,
        "fixed: extra delay drawn uniformly from [0, this] ms"),
    OPT("latency-min-ms", OPT_INT, prof.latency_min_ms, 0, 600000, "0", NULL, true,
        "uniform: shortest delay, ms"),
    OPT("latency-max-ms", OPT_INT, prof.latency_max_ms, 0, 600000, "0", NULL, true,
        "uniform: longest delay, ms (>= latency-min-ms)"),
    OPT("latency-p50-ms", OPT_INT, prof.latency_p50_ms, 1, 600000, "20", NULL, true,
        "lognormal: median delay, ms (mu = ln p50)"),
    OPT("latency-p99-ms", OPT_INT, prof.latency_p99_ms, 1, 600000, "100", NULL, true,
        "lognormal: 99th percentile, ms, >= p50\n"
        "                       (sigma = (ln p99 - ln p50) / 2.326)"),
    OPT("latency-cap-ms", OPT_INT, prof.latency_cap_ms, 1, 600000, "120000", NULL, true,
        "no drawn delay exceeds this, whatever the distribution"),
    OPT("fail-rate", OPT_RATE, prof.fail_rate, 0, 0, "0", NULL, true,
        "share (0..1) of model requests answered with --fail-status"),
    OPT("fail-status", OPT_INT, prof.fail_status, 400, 599, "503", NULL, true,
        "status of injected failures (503 ServiceUnavailableException,\n"
        "                       500 InternalServerException, 424 ModelErrorException,\n"
        "                       408 ModelTimeoutException, others InternalServerException)"),
    OPT("throttle-rate", OPT_RATE, prof.throttle_rate, 0, 0, "0", NULL, true,
        "share (0..1) of model requests answered 429 ThrottlingException"),
    OPT("quota-rps", OPT_INT, prof.quota_rps, 0, 1000000, "0", NULL, true,
        "model requests admitted per second (sliding 1 s window kept in\n"
        "                       100 buckets of 10 ms); the rest get 429 ThrottlingException at\n"
        "                       once; only admitted requests count; 0 = off"),
    OPT("quota-rpm", OPT_INT, prof.quota_rpm, 0, 60000000, "0", NULL, true,
        "model requests admitted per minute (sliding 60 s window in 100\n"
        "                       buckets of 600 ms), on top of quota-rps; 0 = off"),
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
    OPT("model", OPT_STR, model_file, 0, 0, "builtin", "AIQ_SIM_MODEL", false,
        "shapes file made by tools/bedrock-sim/gen_model.py from botocore's\n"
        "                       bedrock-runtime service model; every model request is checked\n"
        "                       against its operation's input shape and refused with 400\n"
        "                       ValidationException as Bedrock does; builtin = the copy\n"
        "                       compiled in (bedrock-runtime.model.json), none = no check"),
    OPT("record", OPT_STR, record, 0, 0, NULL, "AIQ_SIM_RECORD", false,
        "append every signed model request with a JSON object body, one\n"
        "                       line {operation, modelId, headers (content-type, accept,\n"
        "                       x-amzn-bedrock-*), body, refused (the --model check's reason,\n"
        "                       or null)}, to this file"),
    OPT("stream-gap-ms", OPT_INT, stream_gap_ms, 0, 60000, "0", NULL, true,
        "converse-stream / invoke-with-response-stream: the first event goes\n"
        "                       out after the latency, each next one this many ms later\n"
        "                       (the connection waits suspended); 0 = all events at once"),
    OPT("prompt-cache", OPT_BOOL, prompt_cache, 0, 1, "true", NULL, true,
        "prompt caching: a prefix up to a cachePoint (cache_control for\n"
        "                       Anthropic bodies) seen in the last 5 min is a cache read,\n"
        "                       otherwise a cache write; no minimum prefix length"),
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))
_Static_assert(NOPTIONS <= 64, "a model override marks its knobs in a 64-bit set");
#define PROF_OFF offsetof(sim_conf_t, prof)

/* Knobs that take JSON: the same text as a flag value and as a POST /_sim/config key. */
static const char *const json_keys[] = {"errors", "outage", "models"};
#define NJSON_KEYS (sizeof(json_keys) / sizeof(json_keys[0]))

/* ---- state ------------------------------------------------------------------------------- */

typedef struct model_count {
    char id[SIM_MODEL_ID_MAX + 1];
    uint64_t n;
} model_count_t;

typedef struct etype_count {
    char type[SIM_ETYPE_MAX + 1];
    uint64_t n;
} etype_count_t;

typedef struct sim_stats {
    uint64_t requests, converse, invoke, converse_stream, invoke_stream, count_tokens, other;
    uint64_t auth_failures, models_other, validation_refused, recorded;
    uint64_t ok, throttled, quota_throttled, outage_rejected, etypes_other;
    uint64_t cache_reads, cache_writes; /* prompt-cache lookups that hit / missed */
    uint64_t by_status[600];
    model_count_t models[SIM_STATS_MODELS];
    size_t nmodels;
    etype_count_t etypes[SIM_STATS_ETYPES];
    size_t netypes;
    int64_t inflight, max_inflight;
} sim_stats_t;

/* Sliding window of admitted requests: SIM_QUOTA_SLOTS buckets of window/SIM_QUOTA_SLOTS ms.
 * A request is admitted while the current bucket and the 99 before it hold fewer than the
 * quota, so no window of 99 buckets ever admits more, and the count over any span of whole
 * windows stays within about 1 % of quota times the span. Exact where a token bucket of the
 * same rate would add a burst of its depth on top. */
typedef struct quota_window {
    int64_t head; /* bucket number (mono ms / bucket ms) of the newest bucket */
    uint32_t sum;
    uint32_t count[SIM_QUOTA_SLOTS];
} quota_window_t;

typedef struct outage_window {
    int64_t start_ms, end_ms; /* aiq_mono_ms(); end INT64_MAX = until stopped */
} outage_window_t;

/* What one scope (all models, or one model with an override) remembers between requests. */
typedef struct fault_state {
    size_t noutages;
    outage_window_t outages[SIM_OUTAGES_MAX];
    quota_window_t rps, rpm;
} fault_state_t;

typedef struct model_override {
    char id[SIM_MODEL_ID_MAX + 1];
    uint64_t set;          /* bit i: options[i] is overridden with given's value */
    bool errors_set;       /* given's error mix replaces the global one */
    bool own_rps, own_rpm; /* its quota has a window of its own (it overrides quota-rps/-rpm) */
    sim_profile_t given;   /* only the knobs in set (and errors when errors_set) mean anything */
    sim_profile_t eff;     /* the global profile with given's knobs on top; rebuilt on change */
    fault_state_t st;
} model_override_t;

typedef struct sim_faults {
    fault_state_t global;
    size_t noverrides;
    model_override_t overrides[SIM_OVERRIDES_MAX];
} sim_faults_t;

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

/* The prompt cache: direct-mapped prefix keys with their expiry; a colliding key evicts. */
typedef struct prompt_cache {
    pthread_mutex_t lock;
    struct {
        uint64_t key;
        int64_t expires_ms; /* aiq_mono_ms(); 0 = empty */
    } slot[SIM_CACHE_SLOTS];
} prompt_cache_t;

static void prompt_cache_clear(prompt_cache_t *c);

typedef struct sim {
    pthread_mutex_t conf_lock; /* guards conf's runtime fields, seq and faults */
    sim_conf_t conf;
    uint64_t seq; /* model requests drawn since start or reset */
    sim_faults_t faults;
    pthread_mutex_t stats_lock;
    sim_stats_t stats;
    delay_queue_t delays;
    prompt_cache_t cache;
    pthread_mutex_t record_lock; /* one line at a time into record */
    FILE *record;
    sim_model_t *model; /* NULL: no model check */
    /* Fixed at start; read without a lock. */
    aiq_sigv4_creds_t creds;
    const char *region;
    size_t max_body;
    struct MHD_Daemon *daemon;
} sim_t;

/* One HTTP request; created by on_uri, freed by on_completed. Touched only by the MHD thread
 * that owns the connection. */
typedef struct sim_req {
    sim_t *sim;
    char uri[SIM_URI_MAX + 1]; /* raw target; split into path and query at '?' */
    const char *path, *query;
    bool uri_too_long, started, counted, too_big;
    bool responded; /* answered before the body was read; later calls only drain */
    sim_route_t route;
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

static bool opt_in_profile(const opt_t *o)
{
    return o->off >= PROF_OFF && o->off < PROF_OFF + sizeof(sim_profile_t);
}

static void *conf_field(sim_conf_t *c, const opt_t *o)
{
    return (char *)c + o->off;
}

/* The same knob inside a bare profile; only for opt_in_profile(o). */
static void *prof_field(sim_profile_t *p, const opt_t *o)
{
    return (char *)p + (o->off - PROF_OFF);
}

static void choices_text(const opt_t *o, char *buf, size_t cap)
{
    size_t n = 0;

    buf[0] = '\0';
    for (int i = 0; o->choices[i] && n < cap; i++) {
        int w = snprintf(buf + n, cap - n, "%s%s", i ? "|" : "", o->choices[i]);
        n += w > 0 ? (size_t)w : 0;
    }
}

static int opt_set_enum(void *field, const opt_t *o, const char *label, const char *text,
                        aiq_err_t *err)
{
    char names[128];

    for (int i = 0; o->choices[i]; i++) {
        if (!strcmp(text, o->choices[i])) {
            *(int *)field = i;
            return 0;
        }
    }
    choices_text(o, names, sizeof(names));
    return aiq_err_set(err, AIQ_EINVAL, "%s: '%s' is not one of %s", label, text, names);
}

/* Parses text into field (o's type and bounds); label names the knob in the error. */
static int opt_set(void *field, const opt_t *o, const char *label, const char *text, aiq_err_t *err)
{
    char *end = NULL;

    errno = 0;
    switch (o->type) {
    case OPT_STR:
        if (!*text)
            return aiq_err_set(err, AIQ_EINVAL, "%s: empty value", label);
        *(const char **)field = text;
        return 0;
    case OPT_INT: {
        long long v = strtoll(text, &end, 10);
        if (errno || end == text || *end || v < o->min || v > o->max)
            return aiq_err_set(err, AIQ_EINVAL, "%s: '%s' is not an integer in %lld..%lld", label,
                               text, o->min, o->max);
        *(int *)field = (int)v;
        return 0;
    }
    case OPT_RATE: {
        double v = strtod(text, &end);
        if (errno || end == text || *end || !(v >= 0.0 && v <= 1.0))
            return aiq_err_set(err, AIQ_EINVAL, "%s: '%s' is not a number in 0..1", label, text);
        *(double *)field = v;
        return 0;
    }
    case OPT_U64: {
        unsigned long long v = strtoull(text, &end, 10);
        if (errno || end == text || *end || text[0] == '-')
            return aiq_err_set(err, AIQ_EINVAL, "%s: '%s' is not an unsigned integer", label, text);
        *(uint64_t *)field = v;
        return 0;
    }
    case OPT_BOOL:
        if (strcmp(text, "true") && strcmp(text, "false") && strcmp(text, "1") && strcmp(text, "0"))
            return aiq_err_set(err, AIQ_EINVAL, "%s: '%s' is not true/false", label, text);
        *(bool *)field = !strcmp(text, "true") || !strcmp(text, "1");
        return 0;
    case OPT_ENUM:
        return opt_set_enum(field, o, label, text, err);
    }
    return aiq_err_set(err, AIQ_EINVAL, "%s: unknown option type", label);
}

static int opt_set_flag(void *field, const opt_t *o, const char *text, aiq_err_t *err)
{
    char label[64];

    snprintf(label, sizeof(label), "--%s", o->name);
    return opt_set(field, o, label, text, err);
}

static const char *json_type_wanted(opt_type_t t)
{
    switch (t) {
    case OPT_BOOL:
        return "true or false";
    case OPT_INT:
    case OPT_U64:
        return "an integer";
    case OPT_RATE:
        return "a number in 0..1";
    case OPT_ENUM:
    case OPT_STR:
        return "a string";
    }
    return "?";
}

/* The same validation for a JSON value from POST /_sim/config; label is the JSON key path. */
static int opt_set_json(void *field, const opt_t *o, const char *label, json_t *v, aiq_err_t *err)
{
    char text[64];

    if (o->type == OPT_BOOL && json_is_boolean(v))
        snprintf(text, sizeof(text), "%s", json_is_true(v) ? "true" : "false");
    else if ((o->type == OPT_INT || o->type == OPT_U64) && json_is_integer(v))
        snprintf(text, sizeof(text), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (o->type == OPT_RATE && json_is_number(v))
        snprintf(text, sizeof(text), "%.17g", json_number_value(v));
    else if (o->type == OPT_ENUM && json_is_string(v))
        snprintf(text, sizeof(text), "%s", json_string_value(v));
    else
        return aiq_err_set(err, AIQ_EINVAL, "%s: must be %s", label, json_type_wanted(o->type));
    return opt_set(field, o, label, text, err);
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

static void print_help_json(FILE *f)
{
    fprintf(
        f,
        "\nKnobs that take JSON (the flag takes the same text as the /_sim/config key):\n"
        "  --errors JSON        error mix [runtime] [model], drawn after throttle-rate and\n"
        "                       fail-rate: [{\"status\": 429, \"type\": \"ThrottlingException\",\n"
        "                       \"rate\": 0.1, \"retry_after_s\": 2, \"message\": \"...\"}, ...];\n"
        "                       status 400..599 and rate 0..1 required, rates sum to <= 1, at\n"
        "                       most %d entries; type defaults from status (429 Throttling,\n"
        "                       503/529 ServiceUnavailable, 400 Validation, 403 AccessDenied,\n"
        "                       408 ModelTimeout, 424 ModelError, else InternalServer);\n"
        "                       type null sends no x-amzn-ErrorType (a gateway's 502/504);\n"
        "                       retry_after_s (0..%d) adds a Retry-After header; in_stream\n"
        "                       true: on converse-stream / invoke-with-response-stream the\n"
        "                       answer is a 200 stream that ends in that exception (:message-type\n"
        "                       exception, :exception-type the type with a lower-case first\n"
        "                       letter, e.g. modelStreamErrorException); null clears\n"
        "  --outage JSON        outage windows [runtime] [model], replacing the current ones:\n"
        "                       {\"start_ms\": 0, \"duration_ms\": 5000} or an array of at most "
        "%d;\n"
        "                       start_ms counts from now (default 0), no duration_ms = until\n"
        "                       stopped, both <= %lld; null clears. Inside a window every model\n"
        "                       request gets 503 ServiceUnavailableException at once\n"
        "  --models JSON        per-model profiles [runtime]: {\"<model id>\": {<[model] keys>},\n"
        "                       ...}; a model's knobs not named follow the global ones; an\n"
        "                       object replaces that model's earlier one (its quota and outage\n"
        "                       state stay unless it names outage); null removes one model, and\n"
        "                       \"models\": null all of them; at most %d models\n",
        SIM_ERRORS_MAX, SIM_RETRY_AFTER_MAX, SIM_OUTAGES_MAX, SIM_WINDOW_MAX_MS / 1000 * 1000,
        SIM_OVERRIDES_MAX);
    fprintf(
        f,
        "\nControl endpoints (unsigned, JSON):\n"
        "  GET  /_sim/stats     requests, ok, by_kind, by_model, by_status, by_error_type,\n"
        "                       throttled (all 429s), quota_throttled, outage_rejected,\n"
        "                       auth_failures, inflight, max_inflight, in_outage (all models),\n"
        "                       outage_models (ids of models in an outage of their own),\n"
        "                       validation_refused (--model refusals), recorded (--record\n"
        "                       lines), prompt_cache {reads, writes}\n"
        "  POST /_sim/reset     zeroes the counters and the draw sequence, empties the quota\n"
        "                       windows and the prompt cache and ends every outage; knobs and\n"
        "                       model profiles stay\n"
        "  GET|POST /_sim/config  every [runtime] key ('-' spelled '_'), errors, outage and\n"
        "                       models; POST changes only the keys it names, all or nothing, and\n"
        "                       answers the result; a bad key or value gets 400 naming it, e.g.\n"
        "                       {\"quota_rps\": 50, \"latency_dist\": \"lognormal\",\n"
        "                        \"errors\": [{\"status\": 503, \"rate\": 0.05}],\n"
        "                        \"models\": {\"m2\": {\"fail_rate\": 1, \"fail_status\": 500}}}\n"
        "  GET|POST /_sim/outage  {\"on\": true[, \"duration_ms\": N][, \"start_ms\": N]\n"
        "                       [, \"model\": \"id\"]} adds a window (no duration_ms: until\n"
        "                       stopped); {\"on\": false[, \"model\": \"id\"]} ends every window "
        "of\n"
        "                       that scope; both answer like GET: in_outage, outage, models\n"
        "\nA model request is checked in this order: body size (413), SigV4 (403), JSON (400),\n"
        "--record, the --model check of its operation's input shape (400 ValidationException),\n"
        "outage (503), quota (429), throttle-rate, fail-rate, error mix (independent draws),\n"
        "the family's body check (400 \"Malformed input request\"), reply. Outage and quota\n"
        "answers skip the latency; the rest wait it out. The n-th model request since start or\n"
        "reset always draws the same.\n");
}

static void print_help(FILE *f)
{
    fprintf(f,
            "usage: bedrock-sim [--flag value | --flag=value]...\n\n"
            "Imitates Amazon Bedrock Runtime on HTTP, SigV4-checked (service \"bedrock\"):\n"
            "POST /model/{modelId}/ converse, converse-stream, invoke,\n"
            "invoke-with-response-stream and count-tokens. InvokeModel answers in the shape of\n"
            "the model id's family: anthropic.* (Messages; also any unknown id), amazon.nova*,\n"
            "amazon.titan-text*, meta.llama*, mistral.*, cohere.command* (a \"us.\"/\"eu.\"/...\n"
            "prefix or an ARN is looked through). The streams are AWS event streams\n"
            "(application/vnd.amazon.eventstream, CRC-checked frames). Every answer carries\n"
            "x-amzn-RequestId; errors are {\"message\"} with x-amzn-ErrorType\n"
            "Type:" SIM_ERROR_NS ".\n"
            "Replies quote the user's text; in Converse, \"sim:tool\" (or toolChoice any/tool)\n"
            "answers a toolUse, \"sim:guardrail\" with a guardrailConfig answers\n"
            "guardrail_intervened (with a trace when enabled), \"sim:content_filtered\" answers\n"
            "content_filtered.\n"
            "[runtime] knobs change through POST /_sim/config; [model] ones can also be set\n"
            "for one model id (see --models).\n\n");
    for (size_t i = 0; i < NOPTIONS; i++) {
        const opt_t *o = &options[i];
        char names[128] = "";
        if (o->type == OPT_ENUM)
            choices_text(o, names, sizeof(names));
        fprintf(f, "  --%-18s %s\n  %20s default %s%s%s%s%s%s%s%s\n", o->name, o->help, "",
                o->def ? o->def : "none", o->env ? ", env " : "", o->env ? o->env : "",
                o->runtime ? " [runtime]" : "", opt_in_profile(o) ? " [model]" : "",
                o->type == OPT_BOOL ? " (flag without value means true)" : "",
                names[0] ? ", one of " : "", names);
    }
    fprintf(f, "  --%-18s %s\n  --%-18s %s\n", "help", "print this and exit", "version",
            "print the aiq version and exit");
    print_help_json(f);
}

static int conf_defaults(sim_conf_t *c, aiq_err_t *err)
{
    for (size_t i = 0; i < NOPTIONS; i++) {
        const char *env = options[i].env ? getenv(options[i].env) : NULL;
        if (!options[i].def && !(env && *env))
            continue; /* an optional path: NULL until set */
        int rc = opt_set_flag(conf_field(c, &options[i]), &options[i],
                              env && *env ? env : options[i].def, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int json_key_index(const char *name, size_t len)
{
    for (size_t i = 0; i < NJSON_KEYS; i++)
        if (strlen(json_keys[i]) == len && !strncmp(json_keys[i], name, len))
            return (int)i;
    return -1;
}

/* Returns 0 to run, 1 when --help/--version was handled, or a negative code. The values of the
 * JSON flags (--errors, ...) land in json_flags[i] for json_keys[i], applied once the sim is
 * set up. */
static int conf_parse_args(sim_conf_t *c, int argc, char **argv, const char **json_flags,
                           aiq_err_t *err)
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
        int jk = o ? -1 : json_key_index(a + 2, len);
        if (!o && jk < 0)
            return aiq_err_set(err, AIQ_EINVAL, "unknown flag '%s' (see --help)", a);
        const char *val = eq ? eq + 1 : NULL;
        if (!val && o && o->type == OPT_BOOL)
            val = "true";
        else if (!val && i + 1 < argc)
            val = argv[++i];
        if (!val)
            return aiq_err_set(err, AIQ_EINVAL, "%.*s needs a value", (int)len + 2, a);
        if (jk >= 0) {
            json_flags[jk] = val;
            continue;
        }
        int rc = opt_set_flag(conf_field(c, o), o, val, err);
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
    case OPT_ENUM:
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

/* Copies only the runtime fields (the scalar knobs and the whole profile with its error mix),
 * so that threads reading the fixed ones need no lock. */
static void conf_copy_runtime(sim_conf_t *dst, const sim_conf_t *src)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (options[i].runtime && !opt_in_profile(&options[i]))
            memcpy((char *)dst + options[i].off, (const char *)src + options[i].off,
                   opt_size(&options[i]));
    dst->prof = src->prof;
}

static json_t *opt_value_json(const opt_t *opt, const void *field)
{
    switch (opt->type) {
    case OPT_INT:
        return json_integer(*(const int *)field);
    case OPT_RATE:
        return json_real(*(const double *)field);
    case OPT_U64:
        return json_integer((json_int_t) * (const uint64_t *)field);
    case OPT_BOOL:
        return json_boolean(*(const bool *)field);
    case OPT_STR:
        return json_string(*(const char *const *)field);
    case OPT_ENUM:
        return json_string(opt->choices[*(const int *)field]);
    }
    return json_null();
}

/* The scalar [runtime] knobs. */
static json_t *conf_runtime_json(const sim_conf_t *c)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < NOPTIONS; i++) {
        const opt_t *opt = &options[i];
        char key[64];
        if (!opt->runtime)
            continue;
        json_key_of(opt, key, sizeof(key));
        json_object_set_new(o, key, opt_value_json(opt, (const char *)c + opt->off));
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

/* Standard normal variate for request seq: Box-Muller on draw 0 and a draw under a salted seed,
 * so the four per-request draws keep their meaning. */
static double draw_normal(uint64_t seed, uint64_t seq)
{
    double u1 = 1.0 - draw(seed, seq, 0); /* (0, 1]: the log stays finite */
    double u2 = draw(seed ^ 0x6a09e667f3bcc909ULL, seq, 0);

    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Draw 0 of request seq as a delay in ms under p's distribution, cut to latency_cap_ms. */
static int draw_latency(const sim_profile_t *p, uint64_t seed, uint64_t seq)
{
    double ms;

    switch (p->latency_dist) {
    case LAT_UNIFORM:
        ms = p->latency_min_ms +
             floor(draw(seed, seq, 0) * (p->latency_max_ms - p->latency_min_ms + 1));
        break;
    case LAT_LOGNORMAL: {
        double mu = log(p->latency_p50_ms), sigma = (log(p->latency_p99_ms) - mu) / 2.326;
        ms = floor(exp(mu + sigma * draw_normal(seed, seq)) + 0.5);
        break;
    }
    default:
        ms = p->latency_ms;
        if (p->latency_jitter_ms > 0)
            ms += floor(draw(seed, seq, 0) * (p->latency_jitter_ms + 1));
        break;
    }
    return ms > p->latency_cap_ms ? p->latency_cap_ms : (int)ms;
}

/* ---- fault state: quota windows, outage windows, model profiles ------------------------------ */

static const char *error_type_for(int status)
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
    case 529: /* "overloaded" */
        return "ServiceUnavailableException";
    default:
        return "InternalServerException";
    }
}

/* What a model request gets: draw_request decides from the seeded draws, admit from the
 * outage and quota state. */
typedef enum verdict_kind {
    V_MODEL,    /* a model reply (or a validation error) */
    V_INJECTED, /* throttle-rate, fail-rate or the error mix */
    V_OUTAGE,
    V_QUOTA,
} verdict_kind_t;

typedef struct verdict {
    verdict_kind_t kind;
    int latency_ms;
    int status;        /* of an error */
    int retry_after_s; /* -1: no Retry-After */
    bool in_stream;    /* answered inside a 200 event stream, on a streaming route */
    bool cache;        /* prompt-cache knob at draw time */
    int stream_gap_ms; /* stream-gap-ms at draw time */
    char type[SIM_ETYPE_MAX + 1];
    char message[SIM_EMSG_MAX + 1];
} verdict_t;

static void verdict_error(verdict_t *v, verdict_kind_t kind, int status, const char *type,
                          const char *message, int retry_after_s)
{
    v->kind = kind;
    v->status = status;
    v->retry_after_s = retry_after_s;
    v->in_stream = false;
    snprintf(v->type, sizeof(v->type), "%s", type);
    snprintf(v->message, sizeof(v->message), "%s", message);
}

static void quota_advance(quota_window_t *q, int64_t bucket)
{
    if (bucket <= q->head)
        return;
    if (bucket - q->head >= SIM_QUOTA_SLOTS) {
        memset(q->count, 0, sizeof(q->count));
        q->sum = 0;
    } else {
        for (int64_t b = q->head + 1; b <= bucket; b++) {
            size_t i = (size_t)(b % SIM_QUOTA_SLOTS);
            q->sum -= q->count[i];
            q->count[i] = 0;
        }
    }
    q->head = bucket;
}

/* Is there room for one more request at now under limit per window_ms (limit 0 = no quota)? */
static bool quota_room(quota_window_t *q, int limit, int64_t window_ms, int64_t now)
{
    if (limit <= 0)
        return true;
    quota_advance(q, now / (window_ms / SIM_QUOTA_SLOTS));
    return q->sum < (uint32_t)limit;
}

/* Counts an admitted request; right after quota_room said yes for the same limit. */
static void quota_take(quota_window_t *q, int limit)
{
    if (limit <= 0)
        return;
    q->count[q->head % SIM_QUOTA_SLOTS]++;
    q->sum++;
}

static void outages_prune(fault_state_t *st, int64_t now)
{
    size_t j = 0;

    for (size_t i = 0; i < st->noutages; i++)
        if (st->outages[i].end_ms > now)
            st->outages[j++] = st->outages[i];
    st->noutages = j;
}

static bool outage_active(const fault_state_t *st, int64_t now)
{
    for (size_t i = 0; i < st->noutages; i++)
        if (st->outages[i].start_ms <= now && now < st->outages[i].end_ms)
            return true;
    return false;
}

/* The windows still to come or running, in the shape POST accepts (times from now). */
static json_t *outages_json(const fault_state_t *st, int64_t now)
{
    json_t *a = json_array();

    for (size_t i = 0; a && i < st->noutages; i++) {
        const outage_window_t *w = &st->outages[i];
        int64_t from = w->start_ms > now ? w->start_ms : now;
        if (w->end_ms <= now)
            continue;
        json_t *o = json_pack("{sI}", "start_ms", (json_int_t)(from - now));
        if (o && w->end_ms != INT64_MAX)
            json_object_set_new(o, "duration_ms", json_integer((json_int_t)(w->end_ms - from)));
        json_array_append_new(a, o);
    }
    return a;
}

/* Empties every quota window and ends every outage (POST /_sim/reset). */
static void faults_reset_state(sim_faults_t *f)
{
    memset(&f->global, 0, sizeof(f->global));
    for (size_t i = 0; i < f->noverrides; i++)
        memset(&f->overrides[i].st, 0, sizeof(f->overrides[i].st));
}

static model_override_t *override_find(sim_faults_t *f, const char *id)
{
    for (size_t i = 0; i < f->noverrides; i++)
        if (!strcmp(f->overrides[i].id, id))
            return &f->overrides[i];
    return NULL;
}

/* Finds or adds id's override (a new one overrides nothing); NULL when the table is full. */
static model_override_t *override_get(sim_faults_t *f, const char *id)
{
    model_override_t *ov = override_find(f, id);

    if (ov || f->noverrides == SIM_OVERRIDES_MAX)
        return ov;
    ov = &f->overrides[f->noverrides++];
    memset(ov, 0, sizeof(*ov));
    snprintf(ov->id, sizeof(ov->id), "%s", id);
    return ov;
}

static void override_remove(sim_faults_t *f, model_override_t *ov)
{
    model_override_t *last = &f->overrides[--f->noverrides];

    if (ov != last)
        *ov = *last;
}

/* Cross-knob rules of one profile; scope prefixes the message ("" or "models.<id>: "). */
static int profile_check(const sim_profile_t *p, const char *scope, aiq_err_t *err)
{
    double sum = 0;

    if (p->latency_dist == LAT_UNIFORM && p->latency_min_ms > p->latency_max_ms)
        return aiq_err_set(err, AIQ_EINVAL, "%slatency_min_ms (%d) is above latency_max_ms (%d)",
                           scope, p->latency_min_ms, p->latency_max_ms);
    if (p->latency_dist == LAT_LOGNORMAL && p->latency_p99_ms < p->latency_p50_ms)
        return aiq_err_set(err, AIQ_EINVAL, "%slatency_p99_ms (%d) is below latency_p50_ms (%d)",
                           scope, p->latency_p99_ms, p->latency_p50_ms);
    for (size_t i = 0; i < p->nerrors; i++)
        sum += p->errors[i].rate;
    if (sum > 1.0 + 1e-9)
        return aiq_err_set(err, AIQ_EINVAL, "%serrors: the rates add up to %.6g, more than 1",
                           scope, sum);
    return 0;
}

/* Rebuilds every model's effective profile from global and its overrides, and checks them
 * all: after any change to either. */
static int faults_rebuild(const sim_profile_t *global, sim_faults_t *f, aiq_err_t *err)
{
    size_t rps = (size_t)(opt_find("quota_rps", 9, true) - options);
    size_t rpm = (size_t)(opt_find("quota_rpm", 9, true) - options);
    int rc = profile_check(global, "", err);

    for (size_t i = 0; !rc && i < f->noverrides; i++) {
        model_override_t *ov = &f->overrides[i];
        char scope[SIM_MODEL_ID_MAX + 16];
        ov->eff = *global;
        for (size_t k = 0; k < NOPTIONS; k++)
            if (ov->set >> k & 1)
                memcpy(prof_field(&ov->eff, &options[k]), prof_field(&ov->given, &options[k]),
                       opt_size(&options[k]));
        if (ov->errors_set) {
            ov->eff.nerrors = ov->given.nerrors;
            memcpy(ov->eff.errors, ov->given.errors, sizeof(ov->eff.errors));
        }
        ov->own_rps = ov->set >> rps & 1;
        ov->own_rpm = ov->set >> rpm & 1;
        snprintf(scope, sizeof(scope), "models.%s: ", ov->id);
        rc = profile_check(&ov->eff, scope, err);
    }
    return rc;
}

/* ---- fault JSON: the errors, outage and models keys -------------------------------------- */

static bool valid_type_name(const char *t)
{
    size_t n = strlen(t);

    if (n == 0 || n > SIM_ETYPE_MAX)
        return false;
    for (; *t; t++)
        if (!(*t >= 'a' && *t <= 'z') && !(*t >= 'A' && *t <= 'Z') && !(*t >= '0' && *t <= '9') &&
            *t != '_' && *t != '.')
            return false;
    return true;
}

static int int_in(json_t *v, long long lo, long long hi, long long *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return AIQ_EINVAL;
    *out = json_integer_value(v);
    return 0;
}

static int error_key(sim_error_t *e, const char *label, const char *k, json_t *v, aiq_err_t *err)
{
    long long n;

    if (!strcmp(k, "status")) {
        if (int_in(v, 400, 599, &n))
            return aiq_err_set(err, AIQ_EINVAL, "%s.status: must be an integer in 400..599", label);
        e->status = (int)n;
    } else if (!strcmp(k, "rate")) {
        if (!json_is_number(v) || !(json_number_value(v) >= 0.0 && json_number_value(v) <= 1.0))
            return aiq_err_set(err, AIQ_EINVAL, "%s.rate: must be a number in 0..1", label);
        e->rate = json_number_value(v);
    } else if (!strcmp(k, "type")) {
        if (json_is_null(v)) { /* a gateway's answer: no x-amzn-ErrorType at all */
            e->untyped = true;
            return 0;
        }
        if (!json_is_string(v) || !valid_type_name(json_string_value(v)))
            return aiq_err_set(err, AIQ_EINVAL,
                               "%s.type: must be 1..%d letters, digits, '_' or '.', or null", label,
                               SIM_ETYPE_MAX);
        snprintf(e->type, sizeof(e->type), "%s", json_string_value(v));
    } else if (!strcmp(k, "message")) {
        if (!json_is_string(v) || json_string_length(v) > SIM_EMSG_MAX ||
            strlen(json_string_value(v)) != json_string_length(v))
            return aiq_err_set(err, AIQ_EINVAL, "%s.message: must be a string of at most %d bytes",
                               label, SIM_EMSG_MAX);
        snprintf(e->message, sizeof(e->message), "%s", json_string_value(v));
    } else if (!strcmp(k, "retry_after_s")) {
        if (int_in(v, 0, SIM_RETRY_AFTER_MAX, &n))
            return aiq_err_set(err, AIQ_EINVAL, "%s.retry_after_s: must be an integer in 0..%d",
                               label, SIM_RETRY_AFTER_MAX);
        e->retry_after_s = (int)n;
    } else if (!strcmp(k, "in_stream")) {
        if (!json_is_boolean(v))
            return aiq_err_set(err, AIQ_EINVAL, "%s.in_stream: must be true or false", label);
        e->in_stream = json_is_true(v);
    } else {
        return aiq_err_set(err, AIQ_EINVAL,
                           "%s.%s: unknown key (status, rate, type, message, retry_after_s, "
                           "in_stream)",
                           label, k);
    }
    return 0;
}

static int error_parse(sim_error_t *e, json_t *item, const char *label, aiq_err_t *err)
{
    const char *k;
    json_t *v;

    if (!json_is_object(item))
        return aiq_err_set(err, AIQ_EINVAL, "%s: must be an object", label);
    *e = (sim_error_t){.rate = -1, .retry_after_s = -1};
    json_object_foreach(item, k, v)
    {
        int rc = error_key(e, label, k, v, err);
        if (rc)
            return rc;
    }
    if (!e->status || e->rate < 0)
        return aiq_err_set(err, AIQ_EINVAL, "%s: needs status and rate", label);
    if (!e->type[0] && !e->untyped)
        snprintf(e->type, sizeof(e->type), "%s", error_type_for(e->status));
    return 0;
}

static int errors_parse(sim_profile_t *p, json_t *v, const char *label, aiq_err_t *err)
{
    size_t i;
    json_t *item;

    if (json_is_null(v)) {
        p->nerrors = 0;
        return 0;
    }
    if (!json_is_array(v))
        return aiq_err_set(err, AIQ_EINVAL,
                           "%s: must be an array of {status, rate[, type, message, "
                           "retry_after_s]} or null",
                           label);
    if (json_array_size(v) > SIM_ERRORS_MAX)
        return aiq_err_set(err, AIQ_EINVAL, "%s: at most %d entries", label, SIM_ERRORS_MAX);
    json_array_foreach(v, i, item)
    {
        char l[SIM_MODEL_ID_MAX + 64];
        snprintf(l, sizeof(l), "%s[%zu]", label, i);
        int rc = error_parse(&p->errors[i], item, l, err);
        if (rc)
            return rc;
    }
    p->nerrors = json_array_size(v);
    return 0;
}

static json_t *errors_json(const sim_profile_t *p)
{
    json_t *a = json_array();

    for (size_t i = 0; a && i < p->nerrors; i++) {
        const sim_error_t *e = &p->errors[i];
        json_t *o = json_pack("{sisosf}", "status", e->status, "type",
                              e->untyped ? json_null() : json_string(e->type), "rate", e->rate);
        if (o && e->message[0])
            json_object_set_new(o, "message", json_string(e->message));
        if (o && e->retry_after_s >= 0)
            json_object_set_new(o, "retry_after_s", json_integer(e->retry_after_s));
        if (o && e->in_stream)
            json_object_set_new(o, "in_stream", json_true());
        json_array_append_new(a, o);
    }
    return a;
}

/* An outage window relative to now: start_ms from now, duration_ms < 0 = until stopped. */
typedef struct window_spec {
    long long start_ms, duration_ms;
} window_spec_t;

/* 0 when k is a window key and v valid, AIQ_ENOTFOUND when k is another key. */
static int window_field(window_spec_t *w, const char *label, const char *k, json_t *v,
                        aiq_err_t *err)
{
    bool start = !strcmp(k, "start_ms");

    if (!start && strcmp(k, "duration_ms"))
        return AIQ_ENOTFOUND;
    if (int_in(v, start ? 0 : 1, SIM_WINDOW_MAX_MS, start ? &w->start_ms : &w->duration_ms))
        return aiq_err_set(err, AIQ_EINVAL, "%s.%s: must be an integer in %d..%lld", label, k,
                           start ? 0 : 1, SIM_WINDOW_MAX_MS);
    return 0;
}

static int outage_add(fault_state_t *st, const window_spec_t *w, int64_t now, const char *label,
                      aiq_err_t *err)
{
    int64_t start = now + w->start_ms;

    outages_prune(st, now);
    if (st->noutages == SIM_OUTAGES_MAX)
        return aiq_err_set(err, AIQ_EINVAL, "%s: at most %d outage windows at a time", label,
                           SIM_OUTAGES_MAX);
    st->outages[st->noutages++] =
        (outage_window_t){start, w->duration_ms < 0 ? INT64_MAX : start + w->duration_ms};
    return 0;
}

static int window_parse(fault_state_t *st, json_t *item, int64_t now, const char *label,
                        aiq_err_t *err)
{
    window_spec_t w = {0, -1};
    const char *k;
    json_t *v;

    if (!json_is_object(item))
        return aiq_err_set(err, AIQ_EINVAL, "%s: must be an object {start_ms, duration_ms}", label);
    json_object_foreach(item, k, v)
    {
        int rc = window_field(&w, label, k, v, err);
        if (rc == AIQ_ENOTFOUND)
            return aiq_err_set(err, AIQ_EINVAL, "%s.%s: unknown key (start_ms, duration_ms)", label,
                               k);
        if (rc)
            return rc;
    }
    return outage_add(st, &w, now, label, err);
}

/* Replaces st's outage windows with v's: an object, an array of them, or null (none). */
static int outages_parse(fault_state_t *st, json_t *v, int64_t now, const char *label,
                         aiq_err_t *err)
{
    size_t i;
    json_t *item;

    st->noutages = 0;
    if (json_is_null(v))
        return 0;
    if (json_is_object(v))
        return window_parse(st, v, now, label, err);
    if (!json_is_array(v))
        return aiq_err_set(err, AIQ_EINVAL,
                           "%s: must be {start_ms, duration_ms}, an array of them, or null", label);
    if (json_array_size(v) > SIM_OUTAGES_MAX)
        return aiq_err_set(err, AIQ_EINVAL, "%s: at most %d windows", label, SIM_OUTAGES_MAX);
    json_array_foreach(v, i, item)
    {
        char l[SIM_MODEL_ID_MAX + 64];
        snprintf(l, sizeof(l), "%s[%zu]", label, i);
        int rc = window_parse(st, item, now, l, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int override_key(model_override_t *ov, const char *label, const char *k, json_t *v,
                        int64_t now, aiq_err_t *err)
{
    char l[SIM_MODEL_ID_MAX + 96];
    const opt_t *o;

    snprintf(l, sizeof(l), "%s.%s", label, k);
    if (!strcmp(k, "errors")) {
        ov->errors_set = true;
        return errors_parse(&ov->given, v, l, err);
    }
    if (!strcmp(k, "outage"))
        return outages_parse(&ov->st, v, now, l, err);
    o = opt_find(k, strlen(k), true);
    if (!o || !opt_in_profile(o))
        return aiq_err_set(err, AIQ_EINVAL, "%s: not a per-model knob (see --help, [model])", l);
    ov->set |= 1ULL << (o - options);
    return opt_set_json(prof_field(&ov->given, o), o, l, v, err);
}

/* The models key: {"<id>": {knobs} | null, ...} or null. */
static int models_apply(sim_faults_t *f, json_t *v, int64_t now, aiq_err_t *err)
{
    const char *id, *k;
    json_t *m, *kv;

    if (json_is_null(v)) {
        f->noverrides = 0;
        return 0;
    }
    if (!json_is_object(v))
        return aiq_err_set(err, AIQ_EINVAL,
                           "models: must be an object {\"<model id>\": {...} | null} or null");
    json_object_foreach(v, id, m)
    {
        char label[SIM_MODEL_ID_MAX + 16];
        model_override_t *ov;
        snprintf(label, sizeof(label), "models.%s", id);
        if (!*id || strlen(id) > SIM_MODEL_ID_MAX)
            return aiq_err_set(err, AIQ_EINVAL, "models: a model id has 1..%d bytes",
                               SIM_MODEL_ID_MAX);
        if (json_is_null(m)) {
            if ((ov = override_find(f, id)))
                override_remove(f, ov);
            continue;
        }
        if (!json_is_object(m))
            return aiq_err_set(err, AIQ_EINVAL, "%s: must be an object of [model] knobs or null",
                               label);
        if (!(ov = override_get(f, id)))
            return aiq_err_set(err, AIQ_EINVAL, "%s: at most %d models can have a profile", label,
                               SIM_OVERRIDES_MAX);
        ov->set = 0;
        ov->errors_set = false;
        json_object_foreach(m, k, kv)
        {
            int rc = override_key(ov, label, k, kv, now, err);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static json_t *override_json(model_override_t *ov, int64_t now)
{
    json_t *o = json_object();

    for (size_t k = 0; o && k < NOPTIONS; k++) {
        char key[64];
        if (!(ov->set >> k & 1))
            continue;
        json_key_of(&options[k], key, sizeof(key));
        json_object_set_new(o, key,
                            opt_value_json(&options[k], prof_field(&ov->given, &options[k])));
    }
    if (o && ov->errors_set)
        json_object_set_new(o, "errors", errors_json(&ov->given));
    if (o)
        json_object_set_new(o, "outage", outages_json(&ov->st, now));
    return o;
}

/* GET /_sim/config: what POST accepts, so the answer can be posted back. */
static json_t *config_json(const sim_conf_t *c, sim_faults_t *f, int64_t now)
{
    json_t *o = conf_runtime_json(c), *models = json_object();

    for (size_t i = 0; models && i < f->noverrides; i++)
        json_object_set_new(models, f->overrides[i].id, override_json(&f->overrides[i], now));
    if (o) {
        json_object_set_new(o, "errors", errors_json(&c->prof));
        json_object_set_new(o, "outage", outages_json(&f->global, now));
        json_object_set(o, "models", models);
    }
    json_decref(models);
    return o;
}

/* GET /_sim/outage: which scopes are in an outage now, and every window still to come. */
static json_t *outage_status_json(sim_faults_t *f, int64_t now)
{
    json_t *models = json_object();
    json_t *o = json_pack("{sbso}", "in_outage", outage_active(&f->global, now), "outage",
                          outages_json(&f->global, now));

    for (size_t i = 0; models && i < f->noverrides; i++) {
        model_override_t *ov = &f->overrides[i];
        outages_prune(&ov->st, now);
        if (ov->st.noutages)
            json_object_set_new(models, ov->id,
                                json_pack("{sbso}", "in_outage", outage_active(&ov->st, now),
                                          "outage", outages_json(&ov->st, now)));
    }
    if (o)
        json_object_set(o, "models", models);
    json_decref(models);
    return o;
}

/* A config update is built on a copy and committed whole, so a bad key changes nothing. */
typedef struct conf_txn {
    sim_conf_t conf;
    sim_faults_t faults;
} conf_txn_t;

static int config_key(conf_txn_t *t, const char *key, json_t *v, int64_t now, aiq_err_t *err)
{
    const opt_t *o;

    if (!strcmp(key, "errors"))
        return errors_parse(&t->conf.prof, v, "errors", err);
    if (!strcmp(key, "outage"))
        return outages_parse(&t->faults.global, v, now, "outage", err);
    if (!strcmp(key, "models"))
        return models_apply(&t->faults, v, now, err);
    o = opt_find(key, strlen(key), true);
    if (!o || !o->runtime)
        return aiq_err_set(err, AIQ_EINVAL, "%s: not a runtime setting", key);
    return opt_set_json(conf_field(&t->conf, o), o, key, v, err);
}

/* Applies every key of body to s's knobs and fault state, all or nothing; takes conf_lock.
 * Returns 0, AIQ_EINVAL naming the bad key in err, or AIQ_ENOMEM. */
static int sim_configure(sim_t *s, json_t *body, aiq_err_t *err)
{
    conf_txn_t *t = malloc(sizeof(*t)); /* ~200 KB: too big for an MHD thread's stack */
    const char *key;
    json_t *v;
    int rc = 0;

    if (!t)
        return aiq_err_set(err, AIQ_ENOMEM, "config: out of memory");
    pthread_mutex_lock(&s->conf_lock);
    int64_t now = aiq_mono_ms();
    t->conf = s->conf;
    t->faults = s->faults;
    json_object_foreach(body, key, v)
    {
        if ((rc = config_key(t, key, v, now, err)))
            break;
    }
    if (!rc)
        rc = faults_rebuild(&t->conf.prof, &t->faults, err);
    if (!rc) {
        conf_copy_runtime(&s->conf, &t->conf);
        s->faults = t->faults;
    }
    pthread_mutex_unlock(&s->conf_lock);
    free(t);
    return rc;
}

/* The body of POST /_sim/outage: {"on": bool[, "model": id][, start_ms][, duration_ms]}. */
typedef struct outage_req {
    int on; /* -1 = missing */
    const char *model;
    bool has_window;
    window_spec_t w;
} outage_req_t;

static int outage_req_parse(outage_req_t *q, json_t *body, aiq_err_t *err)
{
    const char *k;
    json_t *v;

    *q = (outage_req_t){.on = -1, .w = {0, -1}};
    json_object_foreach(body, k, v)
    {
        int rc = window_field(&q->w, "outage", k, v, err);
        if (!rc) {
            q->has_window = true;
        } else if (rc != AIQ_ENOTFOUND) {
            return rc;
        } else if (!strcmp(k, "on") && json_is_boolean(v)) {
            q->on = json_is_true(v);
        } else if (!strcmp(k, "model") && json_is_string(v) && json_string_length(v) > 0 &&
                   json_string_length(v) <= SIM_MODEL_ID_MAX) {
            q->model = json_string_value(v);
        } else {
            return aiq_err_set(err, AIQ_EINVAL,
                               "outage.%s: unknown key or bad value (on: bool, model: model id, "
                               "start_ms, duration_ms: ms)",
                               k);
        }
    }
    if (q->on < 0)
        return aiq_err_set(err, AIQ_EINVAL, "outage: needs \"on\": true or false");
    if (!q->on && q->has_window)
        return aiq_err_set(err, AIQ_EINVAL, "outage: start_ms and duration_ms need \"on\": true");
    return 0;
}

/* POST /_sim/outage: starts a window in the global or a model's scope, or ends them all. */
static int sim_outage(sim_t *s, json_t *body, aiq_err_t *err)
{
    outage_req_t q;
    sim_faults_t *f;
    int rc;

    if ((rc = outage_req_parse(&q, body, err)))
        return rc;
    if (!(f = malloc(sizeof(*f))))
        return aiq_err_set(err, AIQ_ENOMEM, "outage: out of memory");
    pthread_mutex_lock(&s->conf_lock);
    int64_t now = aiq_mono_ms();
    *f = s->faults;
    model_override_t *ov =
        q.model ? (q.on ? override_get(f, q.model) : override_find(f, q.model)) : NULL;
    fault_state_t *st = q.model ? (ov ? &ov->st : NULL) : &f->global;
    if (q.model && q.on && !ov)
        rc = aiq_err_set(err, AIQ_EINVAL, "outage: at most %d models can have a profile",
                         SIM_OVERRIDES_MAX);
    else if (st && q.on)
        rc = outage_add(st, &q.w, now, "outage", err);
    else if (st)
        st->noutages = 0;
    if (!rc)
        rc = faults_rebuild(&s->conf.prof, f, err); /* a model may be new */
    if (!rc)
        s->faults = *f;
    pthread_mutex_unlock(&s->conf_lock);
    free(f);
    return rc;
}

/* Applies the JSON flags (--errors, ...) at start-up, through the same path as POST. */
static int apply_json_flags(sim_t *s, const char **json_flags, aiq_err_t *err)
{
    for (size_t i = 0; i < NJSON_KEYS; i++) {
        json_error_t jerr;
        json_t *v, *body;
        int rc;
        if (!json_flags[i])
            continue;
        if (!(v = json_loads(json_flags[i], JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr)))
            return aiq_err_set(err, AIQ_EINVAL, "--%s: not JSON: %s", json_keys[i], jerr.text);
        body = json_object();
        json_object_set_new(body, json_keys[i], v);
        rc = sim_configure(s, body, err);
        json_decref(body);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- stats ----------------------------------------------------------------------------------- */

static void stats_count_request(sim_t *s, sim_route_t route, const char *model_id)
{
    sim_stats_t *st = &s->stats;

    pthread_mutex_lock(&s->stats_lock);
    st->requests++;
    if (route == SIM_ROUTE_CONVERSE)
        st->converse++;
    else if (route == SIM_ROUTE_INVOKE)
        st->invoke++;
    else if (route == SIM_ROUTE_CONVERSE_STREAM)
        st->converse_stream++;
    else if (route == SIM_ROUTE_INVOKE_STREAM)
        st->invoke_stream++;
    else if (route == SIM_ROUTE_COUNT_TOKENS)
        st->count_tokens++;
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

/* etype: the x-amzn-ErrorType value of an error reply ("Type:namespace"), or NULL. */
static void stats_count_status(sim_t *s, unsigned status, bool auth_failure, const char *etype)
{
    sim_stats_t *st = &s->stats;
    size_t tlen = etype ? strcspn(etype, ":") : 0;

    pthread_mutex_lock(&s->stats_lock);
    if (status < 600)
        st->by_status[status]++;
    st->ok += status == 200;
    st->throttled += status == 429;
    if (auth_failure)
        st->auth_failures++;
    if (tlen > 0 && tlen <= SIM_ETYPE_MAX) {
        size_t i = 0;
        while (i < st->netypes &&
               (strlen(st->etypes[i].type) != tlen || strncmp(st->etypes[i].type, etype, tlen)))
            i++;
        if (i == st->netypes && st->netypes < SIM_STATS_ETYPES)
            snprintf(st->etypes[st->netypes++].type, sizeof(st->etypes[0].type), "%.*s", (int)tlen,
                     etype);
        if (i < st->netypes)
            st->etypes[i].n++;
        else
            st->etypes_other++;
    }
    pthread_mutex_unlock(&s->stats_lock);
}

static void stats_count_rejection(sim_t *s, verdict_kind_t kind)
{
    pthread_mutex_lock(&s->stats_lock);
    s->stats.quota_throttled += kind == V_QUOTA;
    s->stats.outage_rejected += kind == V_OUTAGE;
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

/* Whether all models are in an outage now, and the ids of models in one of their own. */
static bool outage_now(sim_t *s, json_t *models)
{
    pthread_mutex_lock(&s->conf_lock);
    int64_t now = aiq_mono_ms();
    bool all = outage_active(&s->faults.global, now);
    for (size_t i = 0; i < s->faults.noverrides; i++)
        if (outage_active(&s->faults.overrides[i].st, now))
            json_array_append_new(models, json_string(s->faults.overrides[i].id));
    pthread_mutex_unlock(&s->conf_lock);
    return all;
}

static json_t *stats_json(sim_t *s)
{
    json_t *models = json_object(), *status = json_object(), *etypes = json_object();
    json_t *outage_models = json_array();
    bool in_outage = outage_now(s, outage_models); /* never both locks at once */
    sim_stats_t *st = &s->stats;
    json_t *o;

    pthread_mutex_lock(&s->stats_lock);
    for (size_t i = 0; i < st->netypes; i++)
        json_object_set_new(etypes, st->etypes[i].type, json_integer((json_int_t)st->etypes[i].n));
    if (st->etypes_other)
        json_object_set_new(etypes, "_other", json_integer((json_int_t)st->etypes_other));
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
    o = json_pack("{sI s{sIsIsIsIsIsI} so so sI sI sI}", "requests", (json_int_t)st->requests,
                  "by_kind", "converse", (json_int_t)st->converse, "invoke", (json_int_t)st->invoke,
                  "converse_stream", (json_int_t)st->converse_stream, "invoke_stream",
                  (json_int_t)st->invoke_stream, "count_tokens", (json_int_t)st->count_tokens,
                  "other", (json_int_t)st->other, "by_model", models, "by_status", status,
                  "auth_failures", (json_int_t)st->auth_failures, "inflight",
                  (json_int_t)st->inflight, "max_inflight", (json_int_t)st->max_inflight);
    if (o) {
        json_object_set_new(o, "ok", json_integer((json_int_t)st->ok));
        json_object_set_new(o, "by_error_type", etypes);
        json_object_set_new(o, "throttled", json_integer((json_int_t)st->throttled));
        json_object_set_new(o, "quota_throttled", json_integer((json_int_t)st->quota_throttled));
        json_object_set_new(o, "outage_rejected", json_integer((json_int_t)st->outage_rejected));
        json_object_set_new(o, "in_outage", json_boolean(in_outage));
        json_object_set_new(o, "outage_models", outage_models);
        json_object_set_new(o, "validation_refused",
                            json_integer((json_int_t)st->validation_refused));
        json_object_set_new(o, "recorded", json_integer((json_int_t)st->recorded));
        json_object_set_new(o, "prompt_cache",
                            json_pack("{sIsI}", "reads", (json_int_t)st->cache_reads, "writes",
                                      (json_int_t)st->cache_writes));
    } else {
        json_decref(etypes);
        json_decref(outage_models);
    }
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
    faults_reset_state(&s->faults);
    pthread_mutex_unlock(&s->conf_lock);
    prompt_cache_clear(&s->cache);
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
    if (r && type[0]) { /* "" = an answer without a type, as a gateway in front sends */
        snprintf(etype, sizeof(etype), "%s:%s", type, SIM_ERROR_NS);
        MHD_add_response_header(r, "x-amzn-ErrorType", etype);
    }
    return r;
}

/* Set by main before the daemon starts (read-only afterwards): request ids differ between runs. */
static uint64_t request_id_seed;

/* x-amzn-RequestId, as Bedrock sends on every answer: a UUID, unique within this process
 * (an atomic counter through splitmix64, a bijection) and between runs (the seed), so a test
 * can quote one failure. Any thread. */
static void add_request_id(struct MHD_Response *resp)
{
    static uint64_t counter;
    char id[40];

    uint64_t n = __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
    uint64_t a = splitmix64(n), b = splitmix64(request_id_seed ^ n);
    snprintf(id, sizeof(id), "%08x-%04x-4%03x-%04x-%012" PRIx64, (unsigned)(a >> 32),
             (unsigned)(a >> 16 & 0xffff), (unsigned)(a & 0xfff),
             (unsigned)(0x8000 | (b >> 48 & 0x3fff)), (uint64_t)(b & 0xffffffffffffULL));
    MHD_add_response_header(resp, "x-amzn-RequestId", id);
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
    add_request_id(resp);
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Every model-route reply goes through here: counted, logged, then sent after the drawn latency. */
static enum MHD_Result reply_model(sim_req_t *r, struct MHD_Connection *conn, unsigned status,
                                   struct MHD_Response *resp, int latency_ms, bool auth_failure)
{
    sim_t *s = r->sim;

    stats_count_status(s, status, auth_failure,
                       resp ? MHD_get_response_header(resp, "x-amzn-ErrorType") : NULL);
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
    if (r->route == SIM_ROUTE_SIM_CONFIG || r->route == SIM_ROUTE_SIM_OUTAGE)
        return send_now(conn, 413, error_response("ValidationException", "config body too large"));
    return reply_model(
        r, conn, 413,
        error_response("ValidationException", "Input is too long for the requested model."), 0,
        false);
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

static const char *default_message(const char *type)
{
    if (!strcmp(type, "ThrottlingException"))
        return SIM_THROTTLE_MSG;
    if (!strcmp(type, "ServiceUnavailableException"))
        return SIM_UNAVAILABLE_MSG;
    return "injected failure (bedrock-sim errors)";
}

/* Draws 1..3 of request seq: throttle-rate, then fail-rate, then one error of the mix. */
static void draw_fault(const sim_profile_t *p, uint64_t seed, uint64_t seq, verdict_t *v)
{
    double u, acc = 0;

    v->kind = V_MODEL;
    if (draw(seed, seq, 1) < p->throttle_rate) {
        verdict_error(v, V_INJECTED, 429, "ThrottlingException", SIM_THROTTLE_MSG, -1);
        return;
    }
    if (draw(seed, seq, 2) < p->fail_rate) {
        verdict_error(v, V_INJECTED, p->fail_status, error_type_for(p->fail_status),
                      "injected failure (bedrock-sim fail_rate)", -1);
        return;
    }
    u = draw(seed, seq, 3);
    for (size_t i = 0; i < p->nerrors; i++) {
        const sim_error_t *e = &p->errors[i];
        acc += e->rate;
        if (u < acc) {
            verdict_error(v, V_INJECTED, e->status, e->type,
                          e->message[0] ? e->message : default_message(e->type), e->retry_after_s);
            v->in_stream = e->in_stream;
            return;
        }
    }
}

/* The seeded part of a model request's fate (latency, injected fault), under conf_lock so that
 * seq and the knobs are read together. Taken first, so request n always draws the same. */
static void draw_request(sim_t *s, const char *model_id, verdict_t *v)
{
    pthread_mutex_lock(&s->conf_lock);
    uint64_t seq = s->seq++;
    model_override_t *ov = override_find(&s->faults, model_id);
    const sim_profile_t *p = ov ? &ov->eff : &s->conf.prof;
    v->latency_ms = draw_latency(p, s->conf.seed, seq);
    draw_fault(p, s->conf.seed, seq, v);
    v->cache = s->conf.prompt_cache;
    v->stream_gap_ms = s->conf.stream_gap_ms;
    pthread_mutex_unlock(&s->conf_lock);
}

/* The stateful part, for a signed and well-formed request: an outage beats the quota, which
 * beats an injected fault. Only an admitted request counts against the quota. */
static void admit(sim_t *s, const char *model_id, verdict_t *v)
{
    pthread_mutex_lock(&s->conf_lock);
    int64_t now = aiq_mono_ms();
    sim_faults_t *f = &s->faults;
    model_override_t *ov = override_find(f, model_id);
    const sim_profile_t *p = ov ? &ov->eff : &s->conf.prof;
    quota_window_t *rps = ov && ov->own_rps ? &ov->st.rps : &f->global.rps;
    quota_window_t *rpm = ov && ov->own_rpm ? &ov->st.rpm : &f->global.rpm;

    if (outage_active(&f->global, now) || (ov && outage_active(&ov->st, now))) {
        verdict_error(v, V_OUTAGE, 503, "ServiceUnavailableException",
                      SIM_UNAVAILABLE_MSG " (bedrock-sim outage)", -1);
    } else if (!quota_room(rps, p->quota_rps, 1000, now) ||
               !quota_room(rpm, p->quota_rpm, 60000, now)) {
        verdict_error(v, V_QUOTA, 429, "ThrottlingException", SIM_THROTTLE_MSG, -1);
    } else {
        quota_take(rps, p->quota_rps);
        quota_take(rpm, p->quota_rpm);
    }
    pthread_mutex_unlock(&s->conf_lock);
}

static struct MHD_Response *verdict_response(const verdict_t *v)
{
    struct MHD_Response *r = error_response(v->type, "%s", v->message);
    char secs[16];

    if (r && v->retry_after_s >= 0) {
        snprintf(secs, sizeof(secs), "%d", v->retry_after_s);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, secs);
    }
    return r;
}

/* ---- model calls: check, record, answer -------------------------------------------------- */

static bool on_cache_lookup(void *ctx, uint64_t key)
{
    sim_t *s = ctx;
    prompt_cache_t *c = &s->cache;
    int64_t now = aiq_mono_ms();

    pthread_mutex_lock(&c->lock);
    size_t i = (size_t)(key % SIM_CACHE_SLOTS);
    bool hit = c->slot[i].key == key && c->slot[i].expires_ms > now;
    c->slot[i].key = key;
    c->slot[i].expires_ms = now + SIM_CACHE_TTL_MS;
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_lock(&s->stats_lock);
    s->stats.cache_reads += hit;
    s->stats.cache_writes += !hit;
    pthread_mutex_unlock(&s->stats_lock);
    return hit;
}

static void prompt_cache_clear(prompt_cache_t *c)
{
    pthread_mutex_lock(&c->lock);
    memset(c->slot, 0, sizeof(c->slot));
    pthread_mutex_unlock(&c->lock);
}

typedef struct param_ctx {
    sim_req_t *r;
    struct MHD_Connection *conn;
} param_ctx_t;

static const char *on_model_param(void *ctx, const char *location, const char *name)
{
    param_ctx_t *pc = ctx;

    if (!strcmp(location, "uri"))
        return !strcmp(name, "modelId") ? pc->r->model_id : NULL;
    if (!strcmp(location, "header"))
        return MHD_lookup_connection_value(pc->conn, MHD_HEADER_KIND, name);
    return NULL; /* querystring: no model call of bedrock-runtime has one */
}

static enum MHD_Result on_header_collect(void *cls, enum MHD_ValueKind kind, const char *key,
                                         const char *value)
{
    json_t *h = cls;
    char name[128];

    (void)kind;
    if (strlen(key) >= sizeof(name) || !value)
        return MHD_YES;
    for (size_t i = 0; key[i]; i++)
        name[i] = (char)(key[i] >= 'A' && key[i] <= 'Z' ? key[i] + 32 : key[i]);
    name[strlen(key)] = '\0';
    if (!strncmp(name, "x-amzn-bedrock-", 15) || !strcmp(name, "content-type") ||
        !strcmp(name, "accept"))
        json_object_set_new(h, name, json_string(value));
    return MHD_YES;
}

/* One NDJSON line per signed, parsed model request, with the model check's verdict
 * (refused: its reason, or null): what --record is for. */
static void record_request(sim_req_t *r, struct MHD_Connection *conn, json_t *body,
                           const char *refused)
{
    sim_t *s = r->sim;
    json_t *headers, *line;
    char *text;

    if (!s->record)
        return;
    headers = json_object();
    MHD_get_connection_values(conn, MHD_HEADER_KIND, on_header_collect, headers);
    line = json_pack("{sssssososo}", "operation", sim_route_operation(r->route), "modelId",
                     r->model_id, "headers", headers, "body", json_incref(body), "refused",
                     refused ? json_string(refused) : json_null());
    text = line ? json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(line);
    if (!text)
        return;
    pthread_mutex_lock(&s->record_lock);
    fputs(text, s->record);
    fputc('\n', s->record);
    fflush(s->record); /* a test reads the file while the sim runs */
    pthread_mutex_unlock(&s->record_lock);
    free(text);
    pthread_mutex_lock(&s->stats_lock);
    s->stats.recorded++;
    pthread_mutex_unlock(&s->stats_lock);
}

/* The botocore-model check of a parsed request, recorded with its verdict; false after
 * answering 400 (*ret). */
static bool model_check(sim_req_t *r, struct MHD_Connection *conn, json_t *body, int latency_ms,
                        enum MHD_Result *ret)
{
    sim_t *s = r->sim;
    param_ctx_t pc = {r, conn};
    char why[600];
    bool ok = !s->model || !sim_model_check(s->model, sim_route_operation(r->route), body,
                                            on_model_param, &pc, why, sizeof(why));

    record_request(r, conn, body, ok ? NULL : why);
    if (ok)
        return true;
    pthread_mutex_lock(&s->stats_lock);
    s->stats.validation_refused++;
    pthread_mutex_unlock(&s->stats_lock);
    *ret = reply_model(r, conn, 400, error_response("ValidationException", "%s", why), latency_ms,
                       false);
    return false;
}

static void add_count_header(struct MHD_Response *resp, const char *name, unsigned n)
{
    char v[16];
    snprintf(v, sizeof(v), "%u", n);
    MHD_add_response_header(resp, name, v);
}

/* The headers InvokeModel answers with besides the body. */
static void invoke_headers(struct MHD_Response *resp, struct MHD_Connection *conn,
                           const sim_usage_t *u, int latency_ms)
{
    static const char *const echo[] = {"X-Amzn-Bedrock-PerformanceConfig-Latency",
                                       "X-Amzn-Bedrock-Service-Tier"};

    add_count_header(resp, "X-Amzn-Bedrock-Input-Token-Count", u->input);
    add_count_header(resp, "X-Amzn-Bedrock-Output-Token-Count", u->output);
    add_count_header(resp, "X-Amzn-Bedrock-Invocation-Latency", (unsigned)latency_ms);
    if (u->cache_read || u->cache_write) {
        add_count_header(resp, "X-Amzn-Bedrock-Cache-Read-Input-Token-Count", u->cache_read);
        add_count_header(resp, "X-Amzn-Bedrock-Cache-Write-Input-Token-Count", u->cache_write);
    }
    for (size_t i = 0; i < sizeof(echo) / sizeof(echo[0]); i++) {
        const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, echo[i]);
        if (v)
            MHD_add_response_header(resp, echo[i], v);
    }
}

/* A stream sent event by event, stream-gap-ms apart: the reader hands MHD only the events that
 * are due and suspends the connection until the next one is (the delay thread resumes it),
 * so a waiting stream holds no thread. Owned by its MHD response (on_stream_free). */
typedef struct stream_out {
    sim_t *sim;
    struct MHD_Connection *conn;
    sim_buf_t buf;   /* every event, framed */
    size_t released; /* bytes of buf that are due */
    int gap_ms;      /* > 0 */
    int64_t due_ms;  /* aiq_mono_ms() the next event is due; 0 before the first read */
} stream_out_t;

/* The length of the event at so->released (its prelude's total length), cut to what is
 * left: sim_event_append wrote the frames, so only a bug could make it disagree. */
static size_t next_event_len(const stream_out_t *so)
{
    const unsigned char *p = so->buf.data + so->released;
    size_t left = so->buf.len - so->released;
    size_t n =
        left < 4 ? left : ((size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3]);
    return n == 0 || n > left ? left : n;
}

/* MHD content reader; runs on the connection's MHD thread. */
static ssize_t on_stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    stream_out_t *so = cls;
    int64_t now = aiq_mono_ms();

    if (!so->due_ms)
        so->due_ms = now; /* the first event goes at once: the latency was waited out */
    while (so->released < so->buf.len && now >= so->due_ms) {
        so->released += next_event_len(so);
        so->due_ms += so->gap_ms;
    }
    if (pos >= so->released && so->released < so->buf.len &&
        !delay_queue_suspend(&so->sim->delays, so->conn, so->due_ms))
        so->released = so->buf.len; /* stopping: the rest at once */
    if (pos < so->released) {
        size_t n = so->released - (size_t)pos;
        n = n < max ? n : max;
        memcpy(out, so->buf.data + pos, n);
        return (ssize_t)n;
    }
    return so->released >= so->buf.len ? MHD_CONTENT_READER_END_OF_STREAM : 0; /* suspended */
}

static void on_stream_free(void *cls)
{
    stream_out_t *so = cls;
    sim_buf_free(&so->buf);
    free(so);
}

/* Takes over b's bytes. gap_ms 0: one buffer, all events at once. */
static struct MHD_Response *stream_response(sim_buf_t *b, bool invoke, sim_t *s,
                                            struct MHD_Connection *conn, int gap_ms)
{
    stream_out_t *so = gap_ms > 0 ? calloc(1, sizeof(*so)) : NULL;
    struct MHD_Response *r;

    if (so) {
        *so = (stream_out_t){.sim = s, .conn = conn, .buf = *b, .gap_ms = gap_ms};
        r = MHD_create_response_from_callback(b->len, 16 * 1024, on_stream_read, so,
                                              on_stream_free);
        if (!r)
            free(so); /* b still owns the bytes, freed below */
    } else {
        r = MHD_create_response_from_buffer(b->len, b->data ? (void *)b->data : (void *)"",
                                            b->data ? MHD_RESPMEM_MUST_FREE
                                                    : MHD_RESPMEM_PERSISTENT);
    }
    if (!r) {
        sim_buf_free(b);
        return NULL;
    }
    *b = (sim_buf_t){0};
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/vnd.amazon.eventstream");
    if (invoke)
        MHD_add_response_header(r, "X-Amzn-Bedrock-Content-Type", "application/json");
    return r;
}

/* An injected error on a streaming route with in_stream: the stream starts and then ends in
 * the exception, named as the stream union's member ("ThrottlingException" is
 * "throttlingException"). */
static struct MHD_Response *stream_exception(const verdict_t *v, bool invoke, sim_t *s,
                                             struct MHD_Connection *conn)
{
    char member[SIM_ETYPE_MAX + 1];
    sim_buf_t b = {0};
    json_t *start = invoke ? NULL : json_pack("{ss}", "role", "assistant");
    int rc = invoke ? 0 : sim_event_json(&b, "messageStart", start);

    json_decref(start);
    snprintf(member, sizeof(member), "%s", v->type);
    if (member[0] >= 'A' && member[0] <= 'Z')
        member[0] = (char)(member[0] + 32);
    if (rc || sim_event_exception(&b, member, v->message)) {
        sim_buf_free(&b);
        return NULL;
    }
    return stream_response(&b, invoke, s, conn, v->stream_gap_ms);
}

/* The reply of an admitted, well-formed model request; NULL with why on a refusal (why ""
 * = out of memory). */
static struct MHD_Response *model_reply(sim_req_t *r, struct MHD_Connection *conn, json_t *body,
                                        const verdict_t *v, char *why, size_t cap)
{
    sim_call_t c = {.model_id = r->model_id,
                    .latency_ms = v->latency_ms,
                    .raw = r->body,
                    .raw_len = r->body_len,
                    .cache = v->cache ? on_cache_lookup : NULL,
                    .cache_ctx = r->sim};
    sim_usage_t u = {0};
    sim_buf_t b = {0};
    json_t *out = NULL;
    struct MHD_Response *resp;

    switch (r->route) {
    case SIM_ROUTE_CONVERSE_STREAM:
    case SIM_ROUTE_INVOKE_STREAM: {
        bool invoke = r->route == SIM_ROUTE_INVOKE_STREAM;
        int rc = invoke ? sim_invoke_stream(body, &c, &b, why, cap)
                        : sim_converse_stream(body, &c, &b, why, cap);
        if (rc) {
            sim_buf_free(&b);
            return NULL;
        }
        return stream_response(&b, invoke, r->sim, conn, v->stream_gap_ms);
    }
    case SIM_ROUTE_INVOKE:
        out = sim_invoke_reply(body, &c, &u, why, cap);
        break;
    case SIM_ROUTE_COUNT_TOKENS:
        out = sim_count_tokens_reply(body, &c, why, cap);
        break;
    default:
        out = sim_converse_reply(body, &c, &u, why, cap);
        break;
    }
    if (!out)
        return NULL;
    resp = json_response_of(out);
    if (resp && r->route == SIM_ROUTE_INVOKE)
        invoke_headers(resp, conn, &u, v->latency_ms);
    return resp;
}

/* POST /model/{id}/<operation> with the whole body in r->body. */
static enum MHD_Result handle_model(sim_req_t *r, struct MHD_Connection *conn)
{
    verdict_t v;
    char why[300];
    aiq_err_t err = {0};
    json_error_t jerr;
    json_t *body;
    enum MHD_Result ret = MHD_NO;
    bool stream = r->route == SIM_ROUTE_CONVERSE_STREAM || r->route == SIM_ROUTE_INVOKE_STREAM;

    draw_request(r->sim, r->model_id, &v);
    if (r->too_big)
        return reply_too_large(r, conn);
    if (verify_signature(r, conn, &err))
        return reply_model(r, conn, 403, error_response("AccessDeniedException", "%s", err.msg),
                           v.latency_ms, true);
    body = json_loadb(r->body ? r->body : "", r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(body)) {
        json_decref(body);
        return reply_model(r, conn, 400,
                           error_response("ValidationException", "Malformed input request: %s",
                                          body ? "body must be a JSON object" : jerr.text),
                           v.latency_ms, false);
    }
    if (!model_check(r, conn, body, v.latency_ms, &ret)) {
        json_decref(body);
        return ret;
    }
    admit(r->sim, r->model_id, &v);
    if (v.kind != V_MODEL) {
        json_decref(body);
        stats_count_rejection(r->sim, v.kind);
        if (stream && v.in_stream)
            return reply_model(
                r, conn, 200,
                stream_exception(&v, r->route == SIM_ROUTE_INVOKE_STREAM, r->sim, conn),
                v.latency_ms, false);
        /* Outages and quotas answer at once, as the service does before a model is involved. */
        return reply_model(r, conn, (unsigned)v.status, verdict_response(&v),
                           v.kind == V_INJECTED ? v.latency_ms : 0, false);
    }
    struct MHD_Response *resp = model_reply(r, conn, body, &v, why, sizeof(why));
    json_decref(body);
    if (!resp && why[0])
        return reply_model(r, conn, 400, error_response("ValidationException", "%s", why),
                           v.latency_ms, false);
    return reply_model(r, conn, resp ? 200 : 500, resp, v.latency_ms, false);
}

/* The JSON object body of a control POST, or NULL after answering 400/413 (*ret). */
static json_t *control_body(sim_req_t *r, struct MHD_Connection *conn, enum MHD_Result *ret)
{
    json_error_t jerr;
    json_t *body;

    if (r->too_big) {
        *ret = reply_too_large(r, conn);
        return NULL;
    }
    body = json_loadb(r->body ? r->body : "", r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (json_is_object(body))
        return body;
    *ret = send_now(conn, 400,
                    body ? error_response("ValidationException", "body must be a JSON object")
                         : error_response("ValidationException", "body is not JSON: %s (line %d)",
                                          jerr.text, jerr.line));
    json_decref(body);
    return NULL;
}

static enum MHD_Result send_control_error(struct MHD_Connection *conn, const aiq_err_t *err)
{
    return send_now(conn, err->code == AIQ_ENOMEM ? 500 : 400,
                    error_response("ValidationException", "%s", err->msg));
}

/* GET|POST /_sim/config: a POST applies its keys all or nothing; both answer the config. */
static enum MHD_Result handle_config(sim_req_t *r, struct MHD_Connection *conn, bool update)
{
    sim_t *s = r->sim;
    aiq_err_t err = {0};
    enum MHD_Result ret = MHD_NO;
    json_t *body = NULL, *now;

    if (update && !(body = control_body(r, conn, &ret)))
        return ret;
    if (update && sim_configure(s, body, &err)) {
        json_decref(body);
        return send_control_error(conn, &err);
    }
    json_decref(body);
    pthread_mutex_lock(&s->conf_lock);
    now = config_json(&s->conf, &s->faults, aiq_mono_ms());
    pthread_mutex_unlock(&s->conf_lock);
    if (update)
        sim_log("info", "config changed", json_pack("{sO}", "config", now));
    return send_now(conn, 200, json_response_of(now));
}

/* GET|POST /_sim/outage. */
static enum MHD_Result handle_outage(sim_req_t *r, struct MHD_Connection *conn, bool update)
{
    sim_t *s = r->sim;
    aiq_err_t err = {0};
    enum MHD_Result ret = MHD_NO;
    json_t *body = NULL, *now;

    if (update && !(body = control_body(r, conn, &ret)))
        return ret;
    if (update && sim_outage(s, body, &err)) {
        json_decref(body);
        return send_control_error(conn, &err);
    }
    if (update)
        sim_log("info", "outage changed", json_pack("{sO}", "request", body));
    json_decref(body);
    pthread_mutex_lock(&s->conf_lock);
    now = outage_status_json(&s->faults, aiq_mono_ms());
    pthread_mutex_unlock(&s->conf_lock);
    return send_now(conn, 200, json_response_of(now));
}

static enum MHD_Result dispatch(sim_req_t *r, struct MHD_Connection *conn, const char *method)
{
    bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST");

    switch (r->route) {
    case SIM_ROUTE_CONVERSE:
    case SIM_ROUTE_INVOKE:
    case SIM_ROUTE_CONVERSE_STREAM:
    case SIM_ROUTE_INVOKE_STREAM:
    case SIM_ROUTE_COUNT_TOKENS:
        return handle_model(r, conn);
    case SIM_ROUTE_SIM_STATS:
        if (get)
            return send_now(conn, 200, json_response_of(stats_json(r->sim)));
        break;
    case SIM_ROUTE_SIM_RESET:
        if (post) {
            stats_reset(r->sim);
            return send_now(conn, 200, json_response_of(json_pack("{sb}", "reset", 1)));
        }
        break;
    case SIM_ROUTE_SIM_CONFIG:
        if (get || post)
            return handle_config(r, conn, post);
        break;
    case SIM_ROUTE_SIM_OUTAGE:
        if (get || post)
            return handle_outage(r, conn, post);
        break;
    case SIM_ROUTE_UNKNOWN:
        return reply_model(r, conn, 404,
                           error_response("UnknownOperationException",
                                          "Unknown operation %s %.200s", method, r->path),
                           0, false);
    }
    return send_now(conn, 404,
                    error_response("UnknownOperationException", "Unknown operation %s %.200s",
                                   method, r->path));
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
    r->route = r->uri_too_long ? SIM_ROUTE_UNKNOWN
                               : sim_route_of(r->path, method, r->model_id, sizeof(r->model_id));
    bool control = r->route == SIM_ROUTE_SIM_CONFIG || r->route == SIM_ROUTE_SIM_OUTAGE;
    r->body_limit = sim_route_is_model(r->route) ? s->max_body : control ? SIM_CONFIG_BODY_MAX : 0;
    if (r->route != SIM_ROUTE_SIM_STATS && r->route != SIM_ROUTE_SIM_RESET && !control) {
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

    (void)conn;
    if (!r)
        return NULL;
    r->sim = cls;
    r->uri_too_long = !sim_uri_split(r->uri, uri, &r->path, &r->query);
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
    if (s->model) /* what the request check enforces, and what it cannot (unenforced) */
        sim_log("info", "model check on",
                json_pack("{ssso}", "model", s->conf.model_file, "unenforced",
                          sim_model_unenforced(s->model)));
}

/* tools/bedrock-sim/bedrock-runtime.model.json, compiled in by embed.cmake. */
extern const unsigned char sim_model_builtin[];
extern const size_t sim_model_builtin_len;

/* --model FILE: the shapes file, loaded once; the sim refuses to start without a valid one
 * when it was asked for. */
static int load_model(sim_t *s, aiq_err_t *err)
{
    json_error_t jerr;
    char why[300];
    json_t *doc;

    if (!s->conf.model_file || !strcmp(s->conf.model_file, "none"))
        return 0;
    doc = !strcmp(s->conf.model_file, "builtin")
              ? json_loadb((const char *)sim_model_builtin, sim_model_builtin_len,
                           JSON_REJECT_DUPLICATES, &jerr)
              : json_load_file(s->conf.model_file, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return aiq_err_set(err, AIQ_EINVAL, "--model %s: %s (line %d)", s->conf.model_file,
                           jerr.text, jerr.line);
    s->model = sim_model_new(doc, why, sizeof(why));
    json_decref(doc);
    if (!s->model)
        return aiq_err_set(err, AIQ_EINVAL, "--model %s: %s", s->conf.model_file, why);
    return 0;
}

static int open_record(sim_t *s, aiq_err_t *err)
{
    if (!s->conf.record)
        return 0;
    s->record = fopen(s->conf.record, "a");
    if (!s->record)
        return aiq_err_set(err, AIQ_EIO, "--record %s: %s", s->conf.record, strerror(errno));
    return 0;
}

int main(int argc, char **argv)
{
    static sim_t sim; /* owned by main; large (stats, fault tables) so not on the stack */
    const char *json_flags[NJSON_KEYS] = {0};
    aiq_err_t err = {0};
    char shown[128];
    int rc, fd, max_conns;

    if ((rc = conf_defaults(&sim.conf, &err)) ||
        (rc = conf_parse_args(&sim.conf, argc, argv, json_flags, &err))) {
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
    pthread_mutex_init(&sim.cache.lock, NULL);
    pthread_mutex_init(&sim.record_lock, NULL);
    if ((rc = faults_rebuild(&sim.conf.prof, &sim.faults, &err)) ||
        (rc = apply_json_flags(&sim, json_flags, &err)) || (rc = load_model(&sim, &err)) ||
        (rc = open_record(&sim, &err))) {
        fprintf(stderr, "bedrock-sim: %s\n", err.msg);
        return 2;
    }
    setup_signals();
    request_id_seed = splitmix64((uint64_t)aiq_now_ms() ^ (uint64_t)getpid() << 32);
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
    if (sim.record)
        fclose(sim.record);
    sim_model_free(sim.model);
    return 0; /* the listen socket was closed by sim_stop or MHD_stop_daemon */

fail_delays:
    delay_queue_stop(&sim.delays);
fail_fd:
    close(fd);
fail:
    sim_log("error", "start failed", json_pack("{ss}", "error", err.msg));
    if (sim.record)
        fclose(sim.record);
    sim_model_free(sim.model);
    return 1;
}
