/* provider.h — the Bedrock client that survives Bedrock: per model, an adaptive concurrency
 * limit (AIMD), a retry budget and the circuit breaker, under one cap on calls in flight;
 * the signed call; retries as retry.c decides. One callback per request. Loop thread only. */
#ifndef AIQ_PROVIDER_H
#define AIQ_PROVIDER_H

#include "aiq_err.h"
#include "bedrock.h"
#include "breaker_share.h"
#include "config.h"
#include "creds.h"
#include "http_client.h"
#include "job.h"
#include "log.h"
#include "metrics.h"

#include <uv.h>

typedef struct aiq_provider aiq_provider_t;
typedef struct aiq_provider_call aiq_provider_call_t;

/* How a request ended. Everything but OK, FINAL and REJECTED is "could not succeed in time": the
 * caller's fallback chain takes over. */
typedef enum aiq_call_end {
    AIQ_CALL_OK = 0,       /* reply filled */
    AIQ_CALL_FINAL,        /* refused for good (validation, auth, not found, quota) */
    AIQ_CALL_EXHAUSTED,    /* retryable failures until the attempts were spent */
    AIQ_CALL_NO_BUDGET,    /* a retry was due but the retry budget is empty */
    AIQ_CALL_BREAKER_OPEN, /* the model's breaker is open: not called (again) */
    AIQ_CALL_DEADLINE,     /* the deadline leaves no room for (another) call */
    AIQ_CALL_REJECTED,     /* the job asks for what the request cannot carry (error_msg says) */
} aiq_call_end_t;

const char *aiq_call_end_name(aiq_call_end_t e);

typedef struct aiq_call_outcome {
    aiq_call_end_t end;
    aiq_bedrock_reply_t reply; /* OK only; the callback may take it (then zero it) */
    const char *model;         /* borrowed from the job or the configuration */
    int attempts;              /* model calls made */
    int64_t provider_ms;       /* time spent in those calls */
    int http_status;           /* of the last call, 0 when none */
    char error_kind[64];       /* "ThrottlingException", "transport", ...; "" on OK */
    char error_msg[512];
    char request_id[AIQ_HTTP_REQUEST_ID_MAX]; /* x-amzn-RequestId of the last call, "" if none */
} aiq_call_outcome_t;

typedef void (*aiq_provider_cb)(void *opaque, aiq_call_outcome_t *outcome);

typedef struct aiq_provider_deps {
    uv_loop_t *loop;
    const aiq_config_t *cfg;
    aiq_log_t *log;
    aiq_http_t *http;
    aiq_metrics_t *metrics;
    aiq_breaker_share_t *breakers;
    aiq_creds_t *creds;
    aiq_bedrock_conf_t bedrock; /* strings borrowed for the provider's lifetime */
} aiq_provider_deps_t;

typedef struct aiq_provider_stats {
    uint64_t calls, deadline_cut; /* retries, throttling, budget and breaker refusals are
                                   * counted in the metrics registry */
    int inflight, waiting, limit, budget_tokens;
} aiq_provider_stats_t;

int aiq_provider_new(aiq_provider_t **out, const aiq_provider_deps_t *deps, aiq_err_t *err);

/* Cancels every request (no callbacks) and frees; timer memory goes with the loop's close
 * callbacks. NULL is a no-op. */
void aiq_provider_free(aiq_provider_t *p);

/* Asks for one answer to job (borrowed until the callback or cancel) before deadline_ms
 * (wall clock). Calls waiting for a slot go in request order (admission already ordered
 * the jobs by priority and aging; prio is unused). cb runs exactly
 * once, never from inside this call. NULL when out of memory. */
aiq_provider_call_t *aiq_provider_request(aiq_provider_t *p, const aiq_job_t *job, int prio,
                                          int64_t deadline_ms, aiq_provider_cb cb, void *opaque);

/* Text a ConverseStream call (a job with "stream": true) received so far, piece by piece, as
 * it arrives: attempt numbers the model call it came from (a retry starts again from its
 * first piece). Runs on the loop thread from inside the HTTP transfer; text is borrowed. */
typedef void (*aiq_provider_partial_cb)(void *opaque, int attempt, const char *text, size_t len);

/* Sets the partial-text callback of a request (called with the request's opaque); call it
 * right after aiq_provider_request. */
void aiq_provider_on_partial(aiq_provider_call_t *c, aiq_provider_partial_cb cb);

/* Stops a request; its callback will not run. */
void aiq_provider_cancel(aiq_provider_t *p, aiq_provider_call_t *call);

/* Ends, with AIQ_CALL_DEADLINE, every call still waiting for a slot whose deadline (wall
 * clock ms) is at or before now_ms; their callbacks run from here. Without it a waiting call
 * would end only when a slot frees, which slow calls (a latency spike) may hold for long
 * after its deadline. Bounded by the calls waiting (at most worker.max_inflight). */
void aiq_provider_expire(aiq_provider_t *p, int64_t now_ms);

/* The model a job is sent to (job, operation, or default). */
const char *aiq_provider_model(const aiq_provider_t *p, const aiq_job_t *job);

aiq_provider_stats_t aiq_provider_stats(const aiq_provider_t *p);

#endif
