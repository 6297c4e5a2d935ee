/* job.h — the job record: decode from Kafka bytes and check against schemas/job.schema.json.
 * A decoded job owns its JSON tree; every string field borrows from it. */
#ifndef AIQ_JOB_H
#define AIQ_JOB_H

#include "aiq_err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define AIQ_JOB_ID_MAX 128

/* Why a record was refused; the names are what DLQ headers and results carry. */
typedef enum aiq_job_reject {
    AIQ_JOB_OK = 0,
    AIQ_JOB_TOO_LARGE, /* "too_large": bigger than the configured cap */
    AIQ_JOB_NOT_JSON,  /* "not_json": not a UTF-8 JSON document */
    AIQ_JOB_INVALID,   /* "invalid_job": JSON, but breaks the job schema */
} aiq_job_reject_t;

const char *aiq_job_reject_name(aiq_job_reject_t r);

typedef enum aiq_job_api { AIQ_API_CONVERSE = 0, AIQ_API_INVOKE = 1 } aiq_job_api_t;

typedef struct aiq_job {
    json_t *root; /* owned */
    /* Borrowed from root; NULL when absent. */
    const char *id;
    const char *operation;
    const char *persona;
    const char *model;
    const char *reply_to;
    const char *correlation_id;
    const char *tenant;
    const char *user_id;
    const char *traceparent;
    const char *system;    /* the text form of "system" */
    json_t *system_blocks; /* the array form (Converse SystemContentBlocks), or NULL */
    json_t *payload;       /* object or NULL */
    json_t *messages;      /* array or NULL */
    json_t *body;          /* object or NULL (InvokeModel body) */
    json_t *inference;     /* object or NULL */
    aiq_job_api_t api;
    int priority;          /* aiq_priority_t, or -1 when the job names none */
    int64_t created_at_ms; /* valid when has_created_at (0 is the epoch, a valid time) */
    bool has_created_at;
    int64_t timeout_ms; /* 0 when absent: the worker's default applies */
    int attempt;
    bool stream; /* "stream": true: ConverseStream, partial results */
    bool cache_bypass;
    int64_t cache_ttl_s; /* -1 when absent */
} aiq_job_t;

/* Decodes and validates len bytes. On success *out is a new job (free with aiq_job_free).
 * On failure returns AIQ_ETOOBIG or AIQ_EINVAL, sets *reject, and err says what is wrong
 * (naming the field). When the record was JSON with a usable "id", *id_hint receives a
 * copy of it (caller frees) so the refusal can still be answered; else NULL. */
int aiq_job_decode(const void *buf, size_t len, size_t max_len, aiq_job_t **out,
                   aiq_job_reject_t *reject, char **id_hint, aiq_err_t *err);

/* The longest timeout_ms a job may ask for (1 h). */
#define AIQ_JOB_TIMEOUT_MAX_MS INT64_C(3600000)

/* Refuses a created_at more than max_skew_ms after now_ms (wall clock): a clock that wrong,
 * or a forged date, would push the deadline out of reach. Returns 0 or AIQ_EINVAL with err
 * saying by how much. A job without created_at passes. */
int aiq_job_check_time(const aiq_job_t *job, int64_t now_ms, int64_t max_skew_ms, aiq_err_t *err);

/* The job's deadline (wall clock ms): created_at (else record_ts_ms, the record's timestamp
 * or, without one, when it was received) plus timeout_ms (else default_timeout_ms), and never
 * later than record_ts_ms + AIQ_JOB_TIMEOUT_MAX_MS whatever created_at says. *timeout_ms
 * (may be NULL) receives the timeout that applies. */
int64_t aiq_job_deadline(const aiq_job_t *job, int64_t record_ts_ms, int64_t default_timeout_ms,
                         int64_t *timeout_ms);

/* Checks an already parsed document (used by producers before sending). Borrows doc. */
int aiq_job_validate(json_t *doc, aiq_err_t *err);

void aiq_job_free(aiq_job_t *job);

/* True when id is 1..128 chars of [A-Za-z0-9._:-]. */
bool aiq_job_id_valid(const char *id);

#endif
