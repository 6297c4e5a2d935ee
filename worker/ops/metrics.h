/* metrics.h — the worker's counters, gauges and latency histograms, and their Prometheus
 * text rendering. Updated and rendered on the loop thread only; the admin HTTP server
 * serves a rendered copy (see admin_http.h). */
#ifndef AIQ_METRICS_H
#define AIQ_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define AIQ_METRICS_STATUSES   5 /* aiq_result_status_t values */
#define AIQ_METRICS_BUCKETS    14
#define AIQ_METRICS_BREAKERS   64
#define AIQ_METRICS_PARTITIONS 256

typedef struct aiq_metrics aiq_metrics_t;

/* Gauges the worker owns, read at render time. */
typedef struct aiq_metrics_gauges {
    int64_t inflight;
    int64_t max_inflight;
    int64_t backlog[4]; /* per priority */
    int draining;
    int64_t assigned_partitions;
    /* The provider, breakers and cache (issue #4, #5), read at render time. */
    int64_t call_limit, calls_inflight, calls_waiting, budget_tokens;
    /* the host's cache, counted by the cache itself across the workers sharing it */
    uint64_t cache_hits, cache_misses, cache_stale, cache_corrupt, cache_evicted;
    uint64_t cache_entries, cache_bytes;
    int nbreakers; /* models with a breaker, at most AIQ_METRICS_BREAKERS shown */
    struct {
        const char *model; /* borrowed for the render */
        int state;         /* aiq_breaker_state_t */
    } breakers[AIQ_METRICS_BREAKERS];
    int64_t alerts_active;       /* alert rules raised now (warning or critical) */
    int dlq_unwritable;          /* the DLQ refuses dead letters now */
    int64_t dlq_waiting;         /* records waiting for their dead letter */
    uint64_t dlq_write_failures; /* failed dead-letter writes since start */
    /* the consumer */
    int64_t lag[4];
    uint64_t rebalances;
    int n_oldest;
    struct {
        int prio;
        int32_t partition;
        int64_t age_ms;
    } oldest[AIQ_METRICS_PARTITIONS];
} aiq_metrics_gauges_t;

aiq_metrics_t *aiq_metrics_new(void); /* NULL when out of memory */
void aiq_metrics_free(aiq_metrics_t *m);

/* One finished job: priority 0..3, status an aiq_result_status_t, durations in ms. */
void aiq_metrics_job(aiq_metrics_t *m, int prio, int status, int64_t queued_ms, int64_t provider_ms,
                     int64_t total_ms, int64_t in_tokens, int64_t out_tokens);
void aiq_metrics_model_call(aiq_metrics_t *m, long http_status);
/* One finished job by operation (the caller folds unknown ones into "other") and model
 * (the first 16 distinct models keep their name, the rest count as "other"). */
void aiq_metrics_usage(aiq_metrics_t *m, const char *operation, const char *model, int status,
                       int64_t total_ms, int64_t in_tokens, int64_t out_tokens, double cost_usd);
void aiq_metrics_retry(aiq_metrics_t *m);

/* Events counted where they happen (one owner: /metrics, the snapshot and the progress line
 * all read them here). Allocation-free; loop thread. */
typedef enum aiq_metrics_event {
    AIQ_METRICS_THROTTLED = 0,    /* a model call answered 429 (throttling) */
    AIQ_METRICS_BUDGET_DENIED,    /* a retry not made: the retry budget was empty */
    AIQ_METRICS_BREAKER_REJECTED, /* a model call not made: the model's breaker was open */
    AIQ_METRICS_FALLBACK,         /* a job answered by the fallback chain */
    AIQ_METRICS_REQUEUED,         /* a job re-enqueued once to the high topic */
    AIQ_METRICS_COALESCED,        /* a model call saved: an identical job joined one */
    AIQ_METRICS_EVENTS
} aiq_metrics_event_t;
void aiq_metrics_count(aiq_metrics_t *m, aiq_metrics_event_t e);
uint64_t aiq_metrics_event_count(const aiq_metrics_t *m, aiq_metrics_event_t e);

/* Totals since start, for the progress line: the same counters /metrics renders, so the
 * two never disagree. finished is indexed by aiq_result_status_t. Loop thread. */
typedef struct aiq_metrics_totals {
    uint64_t finished[AIQ_METRICS_STATUSES];
    uint64_t retries, dlq;
} aiq_metrics_totals_t;
aiq_metrics_totals_t aiq_metrics_totals(const aiq_metrics_t *m);
/* One answered model call whose cost could not be priced (aiq_unpriced_calls_total). */
void aiq_metrics_unpriced(aiq_metrics_t *m);
void aiq_metrics_dlq(aiq_metrics_t *m, const char *kind);
void aiq_metrics_received(aiq_metrics_t *m, int prio);

/* Renders everything in the Prometheus text format (version 0.0.4) into a new malloc'd
 * string (caller frees); NULL when out of memory. */
char *aiq_metrics_render(const aiq_metrics_t *m, const aiq_metrics_gauges_t *g,
                         const char *worker_id);

/* The same numbers as one JSON document (schemas/metrics.schema.json) for the metrics
 * topic; counters are totals since the worker started. malloc'd, NULL when out of memory. */
char *aiq_metrics_snapshot(const aiq_metrics_t *m, const aiq_metrics_gauges_t *g,
                           const char *worker_id, const char *ts);

#endif
