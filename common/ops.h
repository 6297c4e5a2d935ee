/* ops.h — operations as configuration: per operation the model, API, prompts (with persona
 * variants), inference defaults, cache TTL, volatile fields, fallback texts, and model prices.
 * Loaded once at start from a JSON file (config/operations.json is the shipped default and is
 * also compiled in); read-only afterwards, so any thread may read a loaded set. */
#ifndef AIQ_OPS_H
#define AIQ_OPS_H

#include "aiq_err.h"
#include "job.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AIQ_OPS_FILE_MAX   (4 * 1024 * 1024) /* largest operations file read, bytes */
#define AIQ_OPS_RENDER_MAX (256 * 1024)      /* largest rendered text (prompt or fallback) */
#define AIQ_OPS_MAX        1000              /* operations per file */
#define AIQ_OPS_PERSONAS   100               /* personas per operation */
#define AIQ_OPS_VOLATILE   64                /* volatile fields per operation */
#define AIQ_OPS_MODELS     1000              /* priced models per file */

typedef struct aiq_ops aiq_ops_t; /* a loaded operations file */
typedef struct aiq_op aiq_op_t;   /* one operation; owned by its aiq_ops_t */

/* What aiq_ops_find does with a name the file does not list (worker.unknown_operations). */
typedef enum aiq_ops_unknown {
    AIQ_OPS_UNKNOWN_ALLOW = 0, /* use the "*" operation */
    AIQ_OPS_UNKNOWN_REJECT,    /* NULL: the job is invalid */
} aiq_ops_unknown_t;

/* The fallback chain's texts, in the order the chain uses them. */
typedef enum aiq_fallback_kind {
    AIQ_FALLBACK_TEMPLATE = 0, /* the operation's canned answer */
    AIQ_FALLBACK_SIMPLIFIED,   /* a basic answer */
    AIQ_FALLBACK_SUPPORT,      /* support information for the error result */
} aiq_fallback_kind_t;

/* What a template can refer to besides payload fields. */
typedef struct aiq_op_vars {
    const char *operation; /* the job's operation name; NULL: the aiq_op_t's own name */
    const char *persona;   /* the job's persona; NULL: none ({{persona}} renders empty) */
    const json_t *payload; /* the job's payload object; NULL: {} */
} aiq_op_vars_t;

/* Loads and validates the operations file at path, or the built-in set (the shipped
 * config/operations.json, compiled in) when path is NULL or "". On success *out is a new set
 * (free with aiq_ops_free). Fails with AIQ_EIO (unreadable), AIQ_ETOOBIG (over
 * AIQ_OPS_FILE_MAX or a count limit), AIQ_EINVAL (bad JSON or a bad field) or AIQ_ENOMEM;
 * err then names the file, the line when known, and the field ("operations.x.template"). */
int aiq_ops_load(aiq_ops_t **out, const char *path, aiq_ops_unknown_t unknown, aiq_err_t *err);
void aiq_ops_free(aiq_ops_t *ops); /* NULL is a no-op */

/* Operations listed by name (the "*" operation not counted). */
size_t aiq_ops_count(const aiq_ops_t *ops);

/* The operation for a job's operation name. A name the file does not list gets the "*"
 * operation in allow mode and NULL in reject mode: the caller then refuses the job as
 * invalid_job. The result is borrowed from ops. */
const aiq_op_t *aiq_ops_find(const aiq_ops_t *ops, const char *operation);

/* Price in USD per 1,000 input and output tokens of a model id. An id not listed is priced
 * as its base model (aiq_ops_base_model). Returns 0, or AIQ_ENOTFOUND (outputs untouched). */
int aiq_ops_price(const aiq_ops_t *ops, const char *model, double *usd_per_1k_in,
                  double *usd_per_1k_out);

/* The base model id a model id is priced as: a cross-region inference profile id without its
 * geography ("us.", "eu.", "apac.", "global.", ...), a foundation-model ARN's model id, an
 * inference-profile ARN's profile id without its geography. Other ARNs (application
 * inference profiles, provisioned or custom models) name no model: they are returned as they
 * are, priced only by an entry under the full ARN. Borrowed from model. */
const char *aiq_ops_base_model(const char *model);

/* Token counts of one model call; cache_read and cache_write are input tokens read from and
 * written to the prompt cache, not included in input. */
typedef struct aiq_usage {
    int64_t input, output, cache_read, cache_write;
} aiq_usage_t;

/* Cost in USD of usage u on model: input, output, cache read and cache write tokens at their
 * prices. Returns 0, or AIQ_ENOTFOUND when the model has no price, or used the cache and
 * lists no price for that (*usd untouched): an unknown cost, never a guessed one. */
int aiq_ops_cost(const aiq_ops_t *ops, const char *model, const aiq_usage_t *u, double *usd);

/* Renders v as compact JSON text for prompts: keys sorted, numbers in their shortest
 * round-trip form (4.1, not 4.0999999999999996). *out is malloc'd (caller frees). Returns 0,
 * AIQ_ETOOBIG past max bytes (0 = no limit) or deeper than 1024, AIQ_ENOMEM. Any thread. */
int aiq_ops_json_text(const json_t *v, size_t max, char **out);

/* Accessors; every pointer is borrowed from the set. Fields an operation leaves out come from
 * the "*" operation. */
const char *aiq_op_name(const aiq_op_t *op);              /* "*" for the default operation */
const char *aiq_op_model(const aiq_op_t *op);             /* NULL: bedrock.default_model */
aiq_job_api_t aiq_op_api(const aiq_op_t *op);             /* AIQ_API_CONVERSE when not set */
int64_t aiq_op_max_tokens(const aiq_op_t *op);            /* 0: bedrock.default_max_tokens */
bool aiq_op_temperature(const aiq_op_t *op, double *out); /* false: not set */
int64_t aiq_op_cache_ttl_s(const aiq_op_t *op);           /* -1: the cache's default */
const json_t *aiq_op_example(const aiq_op_t *op);
/* True when the operation puts a cachePoint after its system prompt ("cache_point": true),
 * so Bedrock can cache the static prefix of every job of it. */
bool aiq_op_cache_point(const aiq_op_t *op); /* example payload, or NULL (warm-up, docs) */

/* Field names / dotted paths of the payload the cache key ignores; *n receives the count
 * (0 with a non-NULL empty array when none). */
const char *const *aiq_op_volatile_fields(const aiq_op_t *op, size_t *n);

/* Builds the prompt of a job: *system (NULL when no system prompt is configured) and *user,
 * both malloc'd NUL-terminated strings the caller frees. Each text is chosen as: the
 * persona's variant in the operation, the operation's, the persona's variant in "*", then
 * "*"'s. Returns 0; AIQ_EINVAL when a field the template needs is missing and the operation
 * says "on_missing": "error"; AIQ_ETOOBIG past AIQ_OPS_RENDER_MAX; AIQ_ENOMEM. On failure
 * nothing is returned to free. Any thread. */
int aiq_op_render(const aiq_op_t *op, const aiq_op_vars_t *vars, char **system, char **user,
                  aiq_err_t *err);

/* The raw (unrendered) fallback text of kind for persona (NULL: none), chosen like the
 * prompt texts; a generic built-in wording when nothing is configured, so never NULL. */
const char *aiq_op_fallback_text(const aiq_op_t *op, const char *persona, aiq_fallback_kind_t kind);

/* True when the file configures that text (persona variant, operation or "*"); false when
 * aiq_op_fallback_text would give the generic wording, so a chain can skip the stage. */
bool aiq_op_fallback_configured(const aiq_op_t *op, const char *persona, aiq_fallback_kind_t kind);

/* The same text with its placeholders filled from vars (vars->persona picks the variant):
 * *out is malloc'd, caller frees. Fails like aiq_op_render. */
int aiq_op_render_fallback(const aiq_op_t *op, const aiq_op_vars_t *vars, aiq_fallback_kind_t kind,
                           char **out, aiq_err_t *err);

#endif
