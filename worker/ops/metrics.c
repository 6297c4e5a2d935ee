#include "metrics.h"

#include <curl/curl.h>
#include <dirent.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <lmdb.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const prio_names[4] = {"critical", "high", "normal", "low"};
static const char *const status_names[AIQ_METRICS_STATUSES] = {"succeeded", "failed", "degraded",
                                                               "expired", "rejected"};
/* Upper bounds in ms; the seed's 25 s warning and 30 s target are bucket edges. */
static const int64_t bucket_ms[AIQ_METRICS_BUCKETS] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 30000, 60000};

typedef struct histo {
    uint64_t buckets[AIQ_METRICS_BUCKETS]; /* non-cumulative; cumulated when rendered */
    uint64_t count;
    int64_t sum_ms;
} histo_t;

#define DLQ_KINDS 5
static const char *const dlq_kinds[DLQ_KINDS] = {"not_json", "invalid_job", "too_large",
                                                 "reply_failed", "other"};

/* Usage by operation and model: bounded label sets, anything past them is "other". */
#define USAGE_KEYS   48
#define USAGE_MODELS 16
#define LABEL_MAX    128

typedef struct usage {
    char operation[LABEL_MAX], model[LABEL_MAX];
    uint64_t finished[AIQ_METRICS_STATUSES];
    uint64_t tokens_in, tokens_out;
    double cost_usd;
    histo_t total;
} usage_t;

struct aiq_metrics {
    uint64_t received[4];
    uint64_t finished[4][AIQ_METRICS_STATUSES];
    histo_t queue_wait[4], provider[4], total[4];
    uint64_t tokens_in[4], tokens_out[4];
    uint64_t model_calls_2xx, model_calls_4xx, model_calls_5xx, model_calls_none;
    uint64_t retries;
    uint64_t events[AIQ_METRICS_EVENTS];
    uint64_t unpriced; /* answered model calls without a price: cost_usd null */
    uint64_t dlq[DLQ_KINDS];
    usage_t usage[USAGE_KEYS];
    int nusage;
    char models[USAGE_MODELS][LABEL_MAX];
    int nmodels;
};

aiq_metrics_t *aiq_metrics_new(void)
{
    return calloc(1, sizeof(aiq_metrics_t));
}

void aiq_metrics_free(aiq_metrics_t *m)
{
    free(m);
}

static void observe(histo_t *h, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    int i = 0;
    while (i < AIQ_METRICS_BUCKETS && ms > bucket_ms[i])
        i++;
    if (i < AIQ_METRICS_BUCKETS)
        h->buckets[i]++;
    h->count++;
    h->sum_ms += ms;
}

static int clamp_prio(int prio)
{
    return prio < 0 ? 0 : prio > 3 ? 3 : prio;
}

void aiq_metrics_job(aiq_metrics_t *m, int prio, int status, int64_t queued_ms, int64_t provider_ms,
                     int64_t total_ms, int64_t in_tokens, int64_t out_tokens)
{
    prio = clamp_prio(prio);
    if (status < 0 || status >= AIQ_METRICS_STATUSES)
        status = 1;
    m->finished[prio][status]++;
    observe(&m->queue_wait[prio], queued_ms);
    observe(&m->total[prio], total_ms);
    if (provider_ms > 0)
        observe(&m->provider[prio], provider_ms);
    m->tokens_in[prio] += (uint64_t)(in_tokens > 0 ? in_tokens : 0);
    m->tokens_out[prio] += (uint64_t)(out_tokens > 0 ? out_tokens : 0);
}

void aiq_metrics_model_call(aiq_metrics_t *m, long http_status)
{
    if (http_status >= 200 && http_status < 300)
        m->model_calls_2xx++;
    else if (http_status >= 400 && http_status < 500)
        m->model_calls_4xx++;
    else if (http_status >= 500)
        m->model_calls_5xx++;
    else
        m->model_calls_none++;
}

void aiq_metrics_retry(aiq_metrics_t *m)
{
    m->retries++;
}

void aiq_metrics_count(aiq_metrics_t *m, aiq_metrics_event_t e)
{
    if (m && (unsigned)e < AIQ_METRICS_EVENTS)
        m->events[e]++;
}

uint64_t aiq_metrics_event_count(const aiq_metrics_t *m, aiq_metrics_event_t e)
{
    return m && (unsigned)e < AIQ_METRICS_EVENTS ? m->events[e] : 0;
}

aiq_metrics_totals_t aiq_metrics_totals(const aiq_metrics_t *m)
{
    aiq_metrics_totals_t t = {.retries = m->retries};
    for (int p = 0; p < 4; p++)
        for (int s = 0; s < AIQ_METRICS_STATUSES; s++)
            t.finished[s] += m->finished[p][s];
    for (int k = 0; k < DLQ_KINDS; k++)
        t.dlq += m->dlq[k];
    return t;
}

void aiq_metrics_unpriced(aiq_metrics_t *m)
{
    m->unpriced++;
}

void aiq_metrics_dlq(aiq_metrics_t *m, const char *kind)
{
    int i = 0;
    while (i < DLQ_KINDS - 1 && strcmp(dlq_kinds[i], kind ? kind : ""))
        i++;
    m->dlq[i]++;
}

/* Label values are printed inside quotes: keep them to a safe alphabet. */
static void label_copy(char *dst, const char *src)
{
    size_t i = 0;
    for (; src && src[i] && i < LABEL_MAX - 1; i++) {
        char ch = src[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '.' || ch == '-' || ch == '_' || ch == ':' || ch == '/';
        dst[i] = ok ? ch : '_';
    }
    dst[i] = '\0';
}

static const char *model_label(aiq_metrics_t *m, const char *model)
{
    char want[LABEL_MAX];
    label_copy(want, model && *model ? model : "none");
    for (int i = 0; i < m->nmodels; i++)
        if (!strcmp(m->models[i], want))
            return m->models[i];
    if (m->nmodels == USAGE_MODELS)
        return "other";
    memcpy(m->models[m->nmodels], want, LABEL_MAX);
    return m->models[m->nmodels++];
}

void aiq_metrics_usage(aiq_metrics_t *m, const char *operation, const char *model, int status,
                       int64_t total_ms, int64_t in_tokens, int64_t out_tokens, double cost_usd)
{
    char op[LABEL_MAX];
    label_copy(op, operation && *operation ? operation : "other");
    const char *mod = model_label(m, model);
    usage_t *u = NULL;
    for (int i = 0; i < m->nusage && !u; i++)
        if (!strcmp(m->usage[i].operation, op) && !strcmp(m->usage[i].model, mod))
            u = &m->usage[i];
    if (!u) {
        if (m->nusage == USAGE_KEYS) {
            /* the last key collects everything past the bound */
            u = &m->usage[USAGE_KEYS - 1];
            snprintf(u->operation, LABEL_MAX, "other");
            snprintf(u->model, LABEL_MAX, "other");
        } else {
            u = &m->usage[m->nusage++];
            memcpy(u->operation, op, LABEL_MAX);
            snprintf(u->model, LABEL_MAX, "%s", mod);
        }
    }
    if (status < 0 || status >= AIQ_METRICS_STATUSES)
        status = 1;
    u->finished[status]++;
    u->tokens_in += (uint64_t)(in_tokens > 0 ? in_tokens : 0);
    u->tokens_out += (uint64_t)(out_tokens > 0 ? out_tokens : 0);
    if (cost_usd > 0)
        u->cost_usd += cost_usd;
    observe(&u->total, total_ms);
}

void aiq_metrics_received(aiq_metrics_t *m, int prio)
{
    m->received[clamp_prio(prio)]++;
}

/* A growable text buffer; any allocation failure poisons it (out == NULL at the end). */
typedef struct buf {
    char *s;
    size_t len, cap;
    int failed;
} buf_t;

static void put(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(buf_t *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap * 2 + (size_t)n;
        char *ns = realloc(b->s, ncap);
        if (!ns) {
            b->failed = 1;
            return;
        }
        b->s = ns;
        b->cap = ncap;
    }
}

static void render_histo(buf_t *b, const char *name, const char *help, const histo_t h[4],
                         const char *w)
{
    put(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int p = 0; p < 4; p++) {
        uint64_t cum = 0;
        for (int i = 0; i < AIQ_METRICS_BUCKETS; i++) {
            cum += h[p].buckets[i];
            put(b, "%s_bucket{worker=\"%s\",priority=\"%s\",le=\"%.3f\"} %llu\n", name, w,
                prio_names[p], (double)bucket_ms[i] / 1000.0, (unsigned long long)cum);
        }
        put(b, "%s_bucket{worker=\"%s\",priority=\"%s\",le=\"+Inf\"} %llu\n", name, w,
            prio_names[p], (unsigned long long)h[p].count);
        put(b, "%s_sum{worker=\"%s\",priority=\"%s\"} %.3f\n", name, w, prio_names[p],
            (double)h[p].sum_ms / 1000.0);
        put(b, "%s_count{worker=\"%s\",priority=\"%s\"} %llu\n", name, w, prio_names[p],
            (unsigned long long)h[p].count);
    }
}

static void render_counters(buf_t *b, const aiq_metrics_t *m, const char *w)
{
    put(b, "# HELP aiq_jobs_received_total Job records taken from Kafka.\n"
           "# TYPE aiq_jobs_received_total counter\n");
    for (int p = 0; p < 4; p++)
        put(b, "aiq_jobs_received_total{worker=\"%s\",priority=\"%s\"} %llu\n", w, prio_names[p],
            (unsigned long long)m->received[p]);
    put(b, "# HELP aiq_jobs_finished_total Jobs answered, by result status.\n"
           "# TYPE aiq_jobs_finished_total counter\n");
    for (int p = 0; p < 4; p++)
        for (int s = 0; s < AIQ_METRICS_STATUSES; s++)
            put(b, "aiq_jobs_finished_total{worker=\"%s\",priority=\"%s\",status=\"%s\"} %llu\n", w,
                prio_names[p], status_names[s], (unsigned long long)m->finished[p][s]);
    put(b, "# HELP aiq_tokens_total Model tokens, by direction.\n"
           "# TYPE aiq_tokens_total counter\n");
    for (int p = 0; p < 4; p++) {
        put(b, "aiq_tokens_total{worker=\"%s\",priority=\"%s\",direction=\"input\"} %llu\n", w,
            prio_names[p], (unsigned long long)m->tokens_in[p]);
        put(b, "aiq_tokens_total{worker=\"%s\",priority=\"%s\",direction=\"output\"} %llu\n", w,
            prio_names[p], (unsigned long long)m->tokens_out[p]);
    }
    put(b, "# HELP aiq_model_calls_total Model calls, by HTTP status class.\n"
           "# TYPE aiq_model_calls_total counter\n");
    put(b, "aiq_model_calls_total{worker=\"%s\",code=\"2xx\"} %llu\n", w,
        (unsigned long long)m->model_calls_2xx);
    put(b, "aiq_model_calls_total{worker=\"%s\",code=\"4xx\"} %llu\n", w,
        (unsigned long long)m->model_calls_4xx);
    put(b, "aiq_model_calls_total{worker=\"%s\",code=\"5xx\"} %llu\n", w,
        (unsigned long long)m->model_calls_5xx);
    put(b, "aiq_model_calls_total{worker=\"%s\",code=\"none\"} %llu\n", w,
        (unsigned long long)m->model_calls_none);
    put(b,
        "# HELP aiq_retries_total Model calls retried after a retryable failure.\n"
        "# TYPE aiq_retries_total counter\naiq_retries_total{worker=\"%s\"} %llu\n",
        w, (unsigned long long)m->retries);
    put(b,
        "# HELP aiq_unpriced_calls_total Answered model calls whose cost is unknown (no price "
        "for the model, or for its cache tokens): cost_usd null.\n"
        "# TYPE aiq_unpriced_calls_total counter\naiq_unpriced_calls_total{worker=\"%s\"} %llu\n",
        w, (unsigned long long)m->unpriced);
    put(b, "# HELP aiq_dlq_total Records sent to the dead-letter topic, by reason.\n"
           "# TYPE aiq_dlq_total counter\n");
    for (int i = 0; i < DLQ_KINDS; i++)
        put(b, "aiq_dlq_total{worker=\"%s\",kind=\"%s\"} %llu\n", w, dlq_kinds[i],
            (unsigned long long)m->dlq[i]);
}

static void render_gauges(buf_t *b, const aiq_metrics_gauges_t *g, const char *w)
{
    /* Rendered by the loop: a stalled loop freezes this while scrapes keep succeeding. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    put(b,
        "# HELP aiq_loop_heartbeat_timestamp_seconds When the event loop last published.\n"
        "# TYPE aiq_loop_heartbeat_timestamp_seconds gauge\n"
        "aiq_loop_heartbeat_timestamp_seconds{worker=\"%s\"} %lld\n",
        w, (long long)ts.tv_sec);
    put(b,
        "# HELP aiq_inflight Jobs being processed now.\n# TYPE aiq_inflight gauge\n"
        "aiq_inflight{worker=\"%s\"} %lld\n",
        w, (long long)g->inflight);
    put(b,
        "# HELP aiq_inflight_limit The in-flight limit.\n# TYPE aiq_inflight_limit gauge\n"
        "aiq_inflight_limit{worker=\"%s\"} %lld\n",
        w, (long long)g->max_inflight);
    put(b, "# HELP aiq_backlog Jobs held in memory waiting for a slot.\n"
           "# TYPE aiq_backlog gauge\n");
    for (int p = 0; p < 4; p++)
        put(b, "aiq_backlog{worker=\"%s\",priority=\"%s\"} %lld\n", w, prio_names[p],
            (long long)g->backlog[p]);
    put(b,
        "# HELP aiq_draining 1 while the worker drains after SIGTERM.\n"
        "# TYPE aiq_draining gauge\naiq_draining{worker=\"%s\"} %d\n",
        w, g->draining);
    put(b,
        "# HELP aiq_assigned_partitions Job partitions this worker owns.\n"
        "# TYPE aiq_assigned_partitions gauge\naiq_assigned_partitions{worker=\"%s\"} %lld\n",
        w, (long long)g->assigned_partitions);
}

#define RES_COUNTERS 9

/* name, help, value: the resilience counters in render order */
static void res_counters(const aiq_metrics_t *m, const aiq_metrics_gauges_t *g,
                         const char *names[RES_COUNTERS], uint64_t vals[RES_COUNTERS])
{
    static const char *const n[RES_COUNTERS] = {
        "throttled", "retry_budget_denied", "breaker_rejected", "fallbacks",  "requeued",
        "coalesced", "cache_hits",          "cache_misses",     "cache_stale"};
    const uint64_t *e = m->events;
    const uint64_t v[RES_COUNTERS] = {e[AIQ_METRICS_THROTTLED],
                                      e[AIQ_METRICS_BUDGET_DENIED],
                                      e[AIQ_METRICS_BREAKER_REJECTED],
                                      e[AIQ_METRICS_FALLBACK],
                                      e[AIQ_METRICS_REQUEUED],
                                      e[AIQ_METRICS_COALESCED],
                                      g->cache_hits,
                                      g->cache_misses,
                                      g->cache_stale};
    for (int i = 0; i < RES_COUNTERS; i++) {
        names[i] = n[i];
        vals[i] = v[i];
    }
}

static void render_usage(buf_t *b, const aiq_metrics_t *m, const char *w)
{
    put(b, "# HELP aiq_operation_jobs_total Jobs answered, by operation, model and status.\n"
           "# TYPE aiq_operation_jobs_total counter\n");
    for (int i = 0; i < m->nusage; i++)
        for (int s = 0; s < AIQ_METRICS_STATUSES; s++)
            put(b,
                "aiq_operation_jobs_total{worker=\"%s\",operation=\"%s\",model=\"%s\","
                "status=\"%s\"} %llu\n",
                w, m->usage[i].operation, m->usage[i].model, status_names[s],
                (unsigned long long)m->usage[i].finished[s]);
    put(b, "# HELP aiq_model_tokens_total Tokens by model, operation and direction.\n"
           "# TYPE aiq_model_tokens_total counter\n");
    for (int i = 0; i < m->nusage; i++) {
        const usage_t *u = &m->usage[i];
        put(b,
            "aiq_model_tokens_total{worker=\"%s\",operation=\"%s\",model=\"%s\","
            "direction=\"input\"} %llu\n"
            "aiq_model_tokens_total{worker=\"%s\",operation=\"%s\",model=\"%s\","
            "direction=\"output\"} %llu\n",
            w, u->operation, u->model, (unsigned long long)u->tokens_in, w, u->operation, u->model,
            (unsigned long long)u->tokens_out);
    }
    put(b, "# HELP aiq_cost_usd_total Estimated model cost (operations file price table).\n"
           "# TYPE aiq_cost_usd_total counter\n");
    for (int i = 0; i < m->nusage; i++)
        put(b, "aiq_cost_usd_total{worker=\"%s\",operation=\"%s\",model=\"%s\"} %.6f\n", w,
            m->usage[i].operation, m->usage[i].model, m->usage[i].cost_usd);
    put(b, "# HELP aiq_operation_job_seconds Time from receipt to result, by operation.\n"
           "# TYPE aiq_operation_job_seconds histogram\n");
    for (int i = 0; i < m->nusage; i++) {
        const usage_t *u = &m->usage[i];
        uint64_t cum = 0;
        for (int k = 0; k < AIQ_METRICS_BUCKETS; k++) {
            cum += u->total.buckets[k];
            put(b,
                "aiq_operation_job_seconds_bucket{worker=\"%s\",operation=\"%s\",model=\"%s\","
                "le=\"%.3f\"} %llu\n",
                w, u->operation, u->model, (double)bucket_ms[k] / 1000.0, (unsigned long long)cum);
        }
        put(b,
            "aiq_operation_job_seconds_bucket{worker=\"%s\",operation=\"%s\",model=\"%s\","
            "le=\"+Inf\"} %llu\n"
            "aiq_operation_job_seconds_sum{worker=\"%s\",operation=\"%s\",model=\"%s\"} %.3f\n"
            "aiq_operation_job_seconds_count{worker=\"%s\",operation=\"%s\",model=\"%s\"} %llu\n",
            w, u->operation, u->model, (unsigned long long)u->total.count, w, u->operation,
            u->model, (double)u->total.sum_ms / 1000.0, w, u->operation, u->model,
            (unsigned long long)u->total.count);
    }
}

static void render_consumer(buf_t *b, const aiq_metrics_gauges_t *g, const char *w)
{
    put(b, "# HELP aiq_consumer_lag Records not yet fetched, per priority topic.\n"
           "# TYPE aiq_consumer_lag gauge\n");
    for (int p = 0; p < 4; p++)
        put(b, "aiq_consumer_lag{worker=\"%s\",priority=\"%s\"} %lld\n", w, prio_names[p],
            (long long)g->lag[p]);
    put(b, "# HELP aiq_oldest_unfinished_seconds Age of the oldest unfinished job of a partition "
           "(a stuck job shows here while lag looks healthy).\n"
           "# TYPE aiq_oldest_unfinished_seconds gauge\n");
    for (int i = 0; i < g->n_oldest && i < AIQ_METRICS_PARTITIONS; i++)
        put(b,
            "aiq_oldest_unfinished_seconds{worker=\"%s\",priority=\"%s\",partition=\"%d\"} %.3f\n",
            w, prio_names[g->oldest[i].prio & 3], (int)g->oldest[i].partition,
            (double)g->oldest[i].age_ms / 1000.0);
    put(b,
        "# HELP aiq_alerts_active Alert rules raised on this worker now (see <prefix>alerts).\n"
        "# TYPE aiq_alerts_active gauge\naiq_alerts_active{worker=\"%s\"} %lld\n",
        w, (long long)g->alerts_active);
    put(b,
        "# HELP aiq_dlq_writable 1 while dead letters are written, 0 while the dead-letter "
        "topic refuses them (see /readyz).\n"
        "# TYPE aiq_dlq_writable gauge\naiq_dlq_writable{worker=\"%s\"} %d\n"
        "# HELP aiq_dlq_waiting Records waiting for their dead letter to be written.\n"
        "# TYPE aiq_dlq_waiting gauge\naiq_dlq_waiting{worker=\"%s\"} %lld\n"
        "# HELP aiq_dlq_write_failures_total Dead-letter writes that failed (each is retried).\n"
        "# TYPE aiq_dlq_write_failures_total counter\n"
        "aiq_dlq_write_failures_total{worker=\"%s\"} %llu\n",
        w, g->dlq_unwritable ? 0 : 1, w, (long long)g->dlq_waiting, w,
        (unsigned long long)g->dlq_write_failures);
    put(b,
        "# HELP aiq_rebalances_total Partition assignments and revocations served.\n"
        "# TYPE aiq_rebalances_total counter\naiq_rebalances_total{worker=\"%s\"} %llu\n",
        w, (unsigned long long)g->rebalances);
}

static void render_resilience(buf_t *b, const aiq_metrics_t *m, const aiq_metrics_gauges_t *g,
                              const char *w)
{
    static const char *const help[RES_COUNTERS] = {
        "Model calls answered 429 (throttling).",
        "Retries not made because the retry budget was empty.",
        "Model calls not made because the model's circuit breaker was open.",
        "Jobs answered by the fallback chain.",
        "Jobs whose attempts were spent, re-enqueued once to the high topic.",
        "Model calls saved: identical jobs that joined a call in flight.",
        "Jobs answered from a fresh cache entry.",
        "Cache lookups without a fresh entry.",
        "Cache lookups that found only an expired entry (kept for stale-if-error)."};
    const char *names[RES_COUNTERS];
    uint64_t vals[RES_COUNTERS];
    res_counters(m, g, names, vals);
    static const char *const prom[RES_COUNTERS] = {
        "aiq_throttled_total",        "aiq_retry_budget_denied_total",
        "aiq_breaker_rejected_total", "aiq_fallbacks_total",
        "aiq_requeued_total",         "aiq_coalesced_total",
        "aiq_cache_hits_total",       "aiq_cache_misses_total",
        "aiq_cache_stale_total"};
    (void)names;
    for (int i = 0; i < RES_COUNTERS; i++)
        put(b, "# HELP %s %s\n# TYPE %s counter\n%s{worker=\"%s\"} %llu\n", prom[i], help[i],
            prom[i], prom[i], w, (unsigned long long)vals[i]);
    put(b,
        "# HELP aiq_model_concurrency_limit Adaptive limit on model calls in flight (AIMD).\n"
        "# TYPE aiq_model_concurrency_limit gauge\naiq_model_concurrency_limit{worker=\"%s\"} "
        "%lld\n"
        "# HELP aiq_model_calls_inflight Model calls in flight.\n"
        "# TYPE aiq_model_calls_inflight gauge\naiq_model_calls_inflight{worker=\"%s\"} %lld\n"
        "# HELP aiq_model_calls_waiting Jobs waiting for a model-call slot.\n"
        "# TYPE aiq_model_calls_waiting gauge\naiq_model_calls_waiting{worker=\"%s\"} %lld\n"
        "# HELP aiq_retry_budget_tokens Tokens left in the retry budget.\n"
        "# TYPE aiq_retry_budget_tokens gauge\naiq_retry_budget_tokens{worker=\"%s\"} %lld\n"
        "# HELP aiq_cache_entries Entries in the host's cache.\n"
        "# TYPE aiq_cache_entries gauge\naiq_cache_entries{worker=\"%s\"} %llu\n"
        "# HELP aiq_cache_bytes Bytes used by the host's cache.\n"
        "# TYPE aiq_cache_bytes gauge\naiq_cache_bytes{worker=\"%s\"} %llu\n"
        "# HELP aiq_cache_corrupt_total Undecodable cache values met (served as misses).\n"
        "# TYPE aiq_cache_corrupt_total counter\naiq_cache_corrupt_total{worker=\"%s\"} %llu\n"
        "# HELP aiq_cache_evicted_total Entries evicted to stay within cache.max_bytes.\n"
        "# TYPE aiq_cache_evicted_total counter\naiq_cache_evicted_total{worker=\"%s\"} %llu\n",
        w, (long long)g->call_limit, w, (long long)g->calls_inflight, w,
        (long long)g->calls_waiting, w, (long long)g->budget_tokens, w,
        (unsigned long long)g->cache_entries, w, (unsigned long long)g->cache_bytes, w,
        (unsigned long long)g->cache_corrupt, w, (unsigned long long)g->cache_evicted);
    put(b, "# HELP aiq_breaker_state Circuit breaker per model: 0 closed, 1 open, 2 half-open.\n"
           "# TYPE aiq_breaker_state gauge\n");
    for (int i = 0; i < g->nbreakers && i < AIQ_METRICS_BREAKERS; i++)
        put(b, "aiq_breaker_state{worker=\"%s\",model=\"%s\"} %d\n", w, g->breakers[i].model,
            g->breakers[i].state);
}

static json_t *snapshot_resilience(const aiq_metrics_t *m, const aiq_metrics_gauges_t *g)
{
    const char *names[RES_COUNTERS];
    uint64_t vals[RES_COUNTERS];
    res_counters(m, g, names, vals);
    json_t *o = json_object();
    for (int i = 0; i < RES_COUNTERS; i++)
        json_object_set_new(o, names[i], json_integer((json_int_t)vals[i]));
    json_object_set_new(o, "model_concurrency_limit", json_integer(g->call_limit));
    json_object_set_new(o, "retry_budget_tokens", json_integer(g->budget_tokens));
    json_object_set_new(o, "cache_entries", json_integer((json_int_t)g->cache_entries));
    json_t *br = json_object();
    for (int i = 0; i < g->nbreakers && i < AIQ_METRICS_BREAKERS; i++)
        json_object_set_new(br, g->breakers[i].model,
                            json_string(g->breakers[i].state == 1   ? "open"
                                        : g->breakers[i].state == 2 ? "half_open"
                                                                    : "closed"));
    json_object_set_new(o, "breakers", br);
    return o;
}

/* ---- the process (the names of Prometheus' own process collector) ------------------- */

/* Fields 14, 15 (utime, stime) and 22 (starttime, in clock ticks since boot) of
 * /proc/self/stat; the command name (field 2) may hold spaces, so parse after its ')'. */
static int proc_stat(double *cpu_s, double *start_ticks)
{
    char line[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return -1;
    size_t n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[n] = '\0';
    char *p = strrchr(line, ')');
    unsigned long long ut, st, start;
    if (!p || sscanf(p + 2,
                     "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
                     "%*d %*d %llu",
                     &ut, &st, &start) != 3)
        return -1;
    double tick = (double)sysconf(_SC_CLK_TCK);
    *cpu_s = (double)(ut + st) / tick;
    *start_ticks = (double)start / tick;
    return 0;
}

static long long boot_time_s(void)
{
    char line[256];
    long long btime = -1;
    FILE *f = fopen("/proc/stat", "r");
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "btime %lld", &btime) == 1)
            break;
    if (f)
        fclose(f);
    return btime;
}

static long long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    long long n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

/* Reads /proc on the loop thread: a few small files and one directory, well under 0.1 ms. */
static void render_process(buf_t *b)
{
    double cpu, start;
    long long vsz, rss, btime = boot_time_s(), fds = open_fds();
    long page = sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/statm", "r");
    int mem = f && fscanf(f, "%lld %lld", &vsz, &rss) == 2;
    if (f)
        fclose(f);
    if (proc_stat(&cpu, &start) == 0) {
        put(b,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n",
            cpu);
        if (btime > 0)
            put(b,
                "# HELP process_start_time_seconds Start time of the process since unix epoch "
                "in seconds.\n# TYPE process_start_time_seconds gauge\n"
                "process_start_time_seconds %.2f\n",
                (double)btime + start);
    }
    if (mem)
        put(b,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
            "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %lld\n"
            "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
            "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %lld\n",
            rss * page, vsz * page);
    if (fds >= 0)
        put(b,
            "# HELP process_open_fds Number of open file descriptors.\n"
            "# TYPE process_open_fds gauge\nprocess_open_fds %lld\n",
            fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        put(b,
            "# HELP process_max_fds Maximum number of open file descriptors.\n"
            "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n",
            (unsigned long long)rl.rlim_cur);
}

/* Versions of aiq and of the libraries it runs with (the loaded ones, not the headers'). */
static void render_build_info(buf_t *b, const char *w)
{
    const curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
    int lmaj = 0, lmin = 0, lpatch = 0;
    mdb_version(&lmaj, &lmin, &lpatch);
    put(b,
        "# HELP aiq_build_info aiq's version and the versions of the libraries it runs with.\n"
        "# TYPE aiq_build_info gauge\naiq_build_info{worker=\"%s\",version=\"%s\","
        "librdkafka=\"%s\",libuv=\"%s\",libcurl=\"%s\",lmdb=\"%d.%d.%d\",jansson=\"%s\"} 1\n",
        w, AIQ_VERSION, rd_kafka_version_str(), uv_version_string(), cv ? cv->version : "", lmaj,
        lmin, lpatch, jansson_version_str());
}

char *aiq_metrics_render(const aiq_metrics_t *m, const aiq_metrics_gauges_t *g,
                         const char *worker_id)
{
    buf_t b = {.s = malloc(65536), .cap = 65536};
    if (!b.s)
        return NULL;
    b.s[0] = '\0';
    render_counters(&b, m, worker_id);
    render_gauges(&b, g, worker_id);
    render_resilience(&b, m, g, worker_id);
    render_consumer(&b, g, worker_id);
    render_usage(&b, m, worker_id);
    render_histo(&b, "aiq_queue_wait_seconds", "Time from receipt to a free slot.", m->queue_wait,
                 worker_id);
    render_histo(&b, "aiq_provider_seconds", "Time spent in model calls (all attempts).",
                 m->provider, worker_id);
    render_histo(&b, "aiq_job_seconds", "Time from receipt to result acknowledged.", m->total,
                 worker_id);
    render_build_info(&b, worker_id);
    render_process(&b);
    if (b.failed) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* Upper edge (ms) of the bucket holding quantile q; the last edge when beyond. */
static int64_t quantile_ms(const histo_t *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)h->count + 0.999999), cum = 0;
    for (int i = 0; i < AIQ_METRICS_BUCKETS; i++) {
        cum += h->buckets[i];
        if (cum >= want)
            return bucket_ms[i];
    }
    return bucket_ms[AIQ_METRICS_BUCKETS - 1];
}

static json_t *per_prio_counts(const uint64_t v[4])
{
    json_t *o = json_object();
    for (int p = 0; p < 4; p++)
        json_object_set_new(o, prio_names[p], json_integer((json_int_t)v[p]));
    return o;
}

static json_t *snapshot_finished(const aiq_metrics_t *m)
{
    json_t *o = json_object();
    for (int p = 0; p < 4; p++) {
        json_t *st = json_object();
        for (int s = 0; s < AIQ_METRICS_STATUSES; s++)
            json_object_set_new(st, status_names[s], json_integer((json_int_t)m->finished[p][s]));
        json_object_set_new(o, prio_names[p], st);
    }
    return o;
}

static json_t *snapshot_latency(const aiq_metrics_t *m)
{
    json_t *o = json_object();
    for (int p = 0; p < 4; p++)
        json_object_set_new(o, prio_names[p],
                            json_pack("{s:I, s:I, s:I, s:I}", "count",
                                      (json_int_t)m->total[p].count, "p50_ms",
                                      (json_int_t)quantile_ms(&m->total[p], 0.50), "p95_ms",
                                      (json_int_t)quantile_ms(&m->total[p], 0.95), "p99_ms",
                                      (json_int_t)quantile_ms(&m->total[p], 0.99)));
    return o;
}

static json_t *snapshot_calls(const aiq_metrics_t *m)
{
    json_t *dlq = json_object();
    for (int i = 0; i < DLQ_KINDS; i++)
        json_object_set_new(dlq, dlq_kinds[i], json_integer((json_int_t)m->dlq[i]));
    uint64_t in = 0, out = 0;
    for (int p = 0; p < 4; p++) {
        in += m->tokens_in[p];
        out += m->tokens_out[p];
    }
    return json_pack("{s:{s:I, s:I, s:I, s:I}, s:I, s:o, s:{s:I, s:I}}", "model_calls", "2xx",
                     (json_int_t)m->model_calls_2xx, "4xx", (json_int_t)m->model_calls_4xx, "5xx",
                     (json_int_t)m->model_calls_5xx, "none", (json_int_t)m->model_calls_none,
                     "retries", (json_int_t)m->retries, "dlq", dlq, "tokens", "input",
                     (json_int_t)in, "output", (json_int_t)out);
}

char *aiq_metrics_snapshot(const aiq_metrics_t *m, const aiq_metrics_gauges_t *g,
                           const char *worker_id, const char *ts)
{
    json_t *o =
        json_pack("{s:s, s:s, s:o, s:o, s:o, s:I, s:I, s:I, s:b}", "worker", worker_id, "ts", ts,
                  "received", per_prio_counts(m->received), "finished", snapshot_finished(m),
                  "latency_ms", snapshot_latency(m), "inflight", (json_int_t)g->inflight,
                  "inflight_limit", (json_int_t)g->max_inflight, "assigned_partitions",
                  (json_int_t)g->assigned_partitions, "draining", g->draining);
    if (!o)
        return NULL;
    uint64_t backlog[4];
    for (int p = 0; p < 4; p++)
        backlog[p] = (uint64_t)(g->backlog[p] > 0 ? g->backlog[p] : 0);
    json_object_set_new(o, "backlog", per_prio_counts(backlog));
    json_object_set_new(o, "resilience", snapshot_resilience(m, g));
    uint64_t lag[4];
    int64_t oldest[4] = {0, 0, 0, 0};
    for (int p = 0; p < 4; p++)
        lag[p] = (uint64_t)(g->lag[p] > 0 ? g->lag[p] : 0);
    for (int i = 0; i < g->n_oldest && i < AIQ_METRICS_PARTITIONS; i++)
        if (g->oldest[i].age_ms > oldest[g->oldest[i].prio & 3])
            oldest[g->oldest[i].prio & 3] = g->oldest[i].age_ms;
    json_object_set_new(o, "lag", per_prio_counts(lag));
    json_t *old = json_object();
    for (int p = 0; p < 4; p++)
        json_object_set_new(old, prio_names[p], json_integer(oldest[p]));
    json_object_set_new(o, "oldest_unfinished_ms", old);
    json_object_set_new(o, "rebalances", json_integer((json_int_t)g->rebalances));
    json_t *usage = json_array();
    for (int i = 0; i < m->nusage; i++) {
        const usage_t *u = &m->usage[i];
        json_t *by = json_object();
        for (int st = 0; st < AIQ_METRICS_STATUSES; st++)
            json_object_set_new(by, status_names[st], json_integer((json_int_t)u->finished[st]));
        json_array_append_new(
            usage, json_pack("{s:s, s:s, s:o, s:I, s:I, s:f}", "operation", u->operation, "model",
                             u->model, "finished", by, "input_tokens", (json_int_t)u->tokens_in,
                             "output_tokens", (json_int_t)u->tokens_out, "cost_usd", u->cost_usd));
    }
    json_object_set_new(o, "usage", usage);
    json_t *calls = snapshot_calls(m);
    if (calls) {
        json_object_update(o, calls);
        json_decref(calls);
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}
