/* result.h — the result record a worker publishes for every job (schemas/result.schema.json).
 * The struct borrows every string; encoding copies them into a new JSON text. */
#ifndef AIQ_RESULT_H
#define AIQ_RESULT_H

#include "aiq_err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum aiq_result_status {
    AIQ_RESULT_SUCCEEDED = 0, /* the model answered */
    AIQ_RESULT_FAILED,        /* the model call failed for good */
    AIQ_RESULT_DEGRADED,      /* answered by a fallback */
    AIQ_RESULT_EXPIRED,       /* deadline passed before a model call could finish */
    AIQ_RESULT_REJECTED,      /* the job itself is invalid */
} aiq_result_status_t;

const char *aiq_result_status_name(aiq_result_status_t s);

typedef struct aiq_result {
    const char *job_id;         /* required */
    const char *correlation_id; /* NULL → omitted */
    const char *operation;
    const char *priority;
    aiq_result_status_t status;
    const char *output_text; /* NULL → "output": null */
    /* Borrowed object whose members join "output" (content, trace, raw, unparsed, ...);
     * NULL → none. Ignored when output_text is NULL. */
    const json_t *output_extra;
    const char *stop_reason;
    int64_t input_tokens, output_tokens;
    int64_t cache_read_tokens, cache_write_tokens; /* prompt-cache input tokens */
    int64_t total_tokens; /* written as given: the model's own total, never recomputed here */
    double cost_usd;      /* < 0 → unknown */
    const char *model;
    bool cache_hit;        /* answered from the cache */
    bool cache_stale;      /* ... by an expired entry, as the stale-if-error fallback */
    const char *cache_key; /* hex key; NULL → omitted (no cache, or bypassed) */
    int64_t cache_age_ms;  /* age of the entry served; with cache_hit or cache_stale */
    const char *fallback;  /* NULL → "fallback": null */
    int attempts;
    int64_t queued_ms, provider_ms, total_ms;
    const char *worker;
    const char *error_kind; /* NULL → "error": null */
    const char *error_message;
    const char *error_support; /* support information of an error answer; NULL → omitted */
    int http_status;           /* 0 → omitted */
    const char *request_id;    /* x-amzn-RequestId of the failed call; NULL or "" → omitted */
    int64_t completed_at_ms;
    const char *traceparent;
} aiq_result_t;

/* Encodes r as compact JSON. On success *out is a NUL-terminated malloc'd string the
 * caller frees, *len its length. Returns AIQ_EINVAL when job_id is missing or a string
 * is not UTF-8, AIQ_ENOMEM on allocation failure. */
int aiq_result_encode(const aiq_result_t *r, char **out, size_t *len, aiq_err_t *err);

/* A partial record of a streamed job ("stream": true): one piece of the text as it arrived,
 * published to the job's reply topic before its result (schemas/result.schema.json, status
 * "partial"). Strings borrowed; NULL correlation_id / traceparent are omitted. */
typedef struct aiq_result_partial {
    const char *job_id; /* required */
    const char *correlation_id;
    const char *model;
    const char *worker;
    const char *traceparent;
    int64_t seq; /* 1, 2, ... per job across attempts */
    int attempt; /* the model call the text came from: a retry starts its text again */
    const char *text;
    size_t text_len;
} aiq_result_partial_t;

/* Encodes p like aiq_result_encode (same ownership and errors). */
int aiq_result_encode_partial(const aiq_result_partial_t *p, char **out, size_t *len,
                              aiq_err_t *err);

#endif
