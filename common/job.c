#include "job.h"
#include "converse.h"
#include "timeutil.h"
#include "topics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_MAX     (1 << 20)
#define NAME_MAX_LEN 256
#define STOP_SEQ_MAX 4

const char *aiq_job_reject_name(aiq_job_reject_t r)
{
    switch (r) {
    case AIQ_JOB_OK:
        return "ok";
    case AIQ_JOB_TOO_LARGE:
        return "too_large";
    case AIQ_JOB_NOT_JSON:
        return "not_json";
    case AIQ_JOB_INVALID:
        return "invalid_job";
    }
    return "unknown";
}

static bool charset_ok(const char *s, const char *extra)
{
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr(extra, c)))
            return false;
    }
    return true;
}

bool aiq_job_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    return n >= 1 && n <= AIQ_JOB_ID_MAX && charset_ok(id, "._:-");
}

/* Field accessors: each returns 0 when the field is absent or well-typed, else fills err. */
static int opt_string(json_t *doc, const char *key, size_t max, const char **out, aiq_err_t *err)
{
    json_t *v = json_object_get(doc, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return aiq_err_set(err, AIQ_EINVAL, "%s: must be a string", key);
    size_t n = json_string_length(v);
    if (n == 0 || n > max)
        return aiq_err_set(err, AIQ_EINVAL, "%s: length must be 1..%zu", key, max);
    if (out)
        *out = json_string_value(v);
    return 0;
}

static int opt_int(json_t *doc, const char *key, int64_t min, int64_t max, int64_t *out,
                   aiq_err_t *err)
{
    json_t *v = json_object_get(doc, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return aiq_err_set(err, AIQ_EINVAL, "%s: must be an integer", key);
    int64_t i = json_integer_value(v);
    if (i < min || i > max)
        return aiq_err_set(err, AIQ_EINVAL, "%s: %lld out of range %lld..%lld", key, (long long)i,
                           (long long)min, (long long)max);
    *out = i;
    return 0;
}

static int opt_number(json_t *obj, const char *key, double min, double max, aiq_err_t *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return aiq_err_set(err, AIQ_EINVAL, "inference.%s: must be a number", key);
    double d = json_number_value(v);
    if (!(d >= min && d <= max))
        return aiq_err_set(err, AIQ_EINVAL, "inference.%s: must be in %g..%g", key, min, max);
    return 0;
}

/* The Converse fields a job passes through, checked by their botocore shapes; tenant and
 * user_id go out as requestMetadata too, so they must fit its pattern and agree with it. */
static int check_converse(json_t *doc, aiq_job_t *j, aiq_err_t *err)
{
    for (size_t i = 0; aiq_converse_fields[i]; i++) {
        json_t *v = json_object_get(doc, aiq_converse_fields[i]);
        if (v && !json_is_null(v) && aiq_converse_check_field(aiq_converse_fields[i], v, err))
            return AIQ_EINVAL;
    }
    json_t *meta = json_object_get(doc, "requestMetadata");
    const char *const names[] = {"tenant", "user_id"};
    const char *const vals[] = {j->tenant, j->user_id};
    size_t extra = 0;
    for (size_t i = 0; i < 2; i++) {
        if (!vals[i])
            continue;
        if (!aiq_converse_metadata_ok(vals[i], false))
            return aiq_err_set(err, AIQ_EINVAL,
                               "%s: sent as requestMetadata, so only letters, digits, "
                               "whitespace and :_@$#=/+,-. are allowed",
                               names[i]);
        const char *mine = json_string_value(json_object_get(meta, names[i]));
        if (mine && strcmp(mine, vals[i]) != 0)
            return aiq_err_set(err, AIQ_EINVAL,
                               "requestMetadata.%s: differs from the job's %s, which aiq sends "
                               "under that key",
                               names[i], names[i]);
        if (!mine)
            extra++;
    }
    if (json_object_size(meta) + extra > 16)
        return aiq_err_set(err, AIQ_EINVAL,
                           "requestMetadata: with tenant and user_id added it has more than "
                           "the 16 entries Bedrock allows");
    json_t *stream = json_object_get(doc, "stream");
    if (stream && !json_is_null(stream) && !json_is_boolean(stream))
        return aiq_err_set(err, AIQ_EINVAL, "stream: must be a boolean");
    j->stream = json_is_true(stream);
    return 0;
}

static int check_inference(json_t *inf, aiq_err_t *err)
{
    if (!inf || json_is_null(inf))
        return 0;
    if (!json_is_object(inf))
        return aiq_err_set(err, AIQ_EINVAL, "inference: must be an object");
    int64_t dummy;
    aiq_err_t e2 = {0};
    if (opt_int(inf, "max_tokens", 1, 200000, &dummy, &e2))
        return aiq_err_set(err, AIQ_EINVAL, "inference.%s", e2.msg);
    if (opt_number(inf, "temperature", 0.0, 1.0, err) || opt_number(inf, "top_p", 0.0, 1.0, err))
        return AIQ_EINVAL;
    json_t *stops = json_object_get(inf, "stop_sequences");
    if (stops && !json_is_null(stops)) {
        if (!json_is_array(stops) || json_array_size(stops) > STOP_SEQ_MAX)
            return aiq_err_set(err, AIQ_EINVAL,
                               "inference.stop_sequences: must be an array of at most %d strings",
                               STOP_SEQ_MAX);
        size_t i;
        json_t *s;
        json_array_foreach(stops, i, s)
        {
            if (!json_is_string(s) || json_string_length(s) == 0)
                return aiq_err_set(err, AIQ_EINVAL,
                                   "inference.stop_sequences[%zu]: must be a non-empty string", i);
        }
    }
    return 0;
}

static int check_cache(json_t *cache, aiq_job_t *job, aiq_err_t *err)
{
    if (!cache || json_is_null(cache))
        return 0;
    if (!json_is_object(cache))
        return aiq_err_set(err, AIQ_EINVAL, "cache: must be an object");
    json_t *bypass = json_object_get(cache, "bypass");
    if (bypass && !json_is_boolean(bypass))
        return aiq_err_set(err, AIQ_EINVAL, "cache.bypass: must be a boolean");
    aiq_err_t e2 = {0};
    int64_t ttl = -1;
    if (opt_int(cache, "ttl_s", 0, 30 * 86400, &ttl, &e2))
        return aiq_err_set(err, AIQ_EINVAL, "cache.%s", e2.msg);
    if (job) {
        job->cache_bypass = bypass && json_is_true(bypass);
        job->cache_ttl_s = ttl;
    }
    return 0;
}

static int check_identity(json_t *doc, aiq_job_t *j, aiq_err_t *err)
{
    json_t *id = json_object_get(doc, "id");
    if (!json_is_string(id) || !aiq_job_id_valid(json_string_value(id)))
        return aiq_err_set(err, AIQ_EINVAL, "id: required, 1..%d characters of [A-Za-z0-9._:-]",
                           AIQ_JOB_ID_MAX);
    j->id = json_string_value(id);
    json_t *op = json_object_get(doc, "operation");
    if (!json_is_string(op) || json_string_length(op) == 0 || json_string_length(op) > 64 ||
        !charset_ok(json_string_value(op), "._-"))
        return aiq_err_set(err, AIQ_EINVAL,
                           "operation: required, 1..64 characters of "
                           "[A-Za-z0-9._-]");
    j->operation = json_string_value(op);
    json_t *prio = json_object_get(doc, "priority");
    j->priority = -1;
    if (prio && !json_is_null(prio)) {
        j->priority = aiq_priority_parse(json_string_value(prio));
        if (j->priority < 0)
            return aiq_err_set(err, AIQ_EINVAL,
                               "priority: must be one of critical, high, normal, low");
    }
    return 0;
}

static int check_strings(json_t *doc, aiq_job_t *j, aiq_err_t *err)
{
    if (opt_string(doc, "persona", 64, &j->persona, err) ||
        opt_string(doc, "model", 2048, &j->model, err) ||
        opt_string(doc, "reply_to", 249, &j->reply_to, err) ||
        opt_string(doc, "correlation_id", NAME_MAX_LEN, &j->correlation_id, err) ||
        opt_string(doc, "tenant", NAME_MAX_LEN, &j->tenant, err) ||
        opt_string(doc, "user_id", NAME_MAX_LEN, &j->user_id, err) ||
        opt_string(doc, "traceparent", 55, &j->traceparent, err))
        return AIQ_EINVAL;
    /* system: one text, or Converse system blocks (cachePoint, guardContent). */
    json_t *sys = json_object_get(doc, "system");
    if (json_is_array(sys))
        j->system_blocks = sys;
    else if (opt_string(doc, "system", TEXT_MAX, &j->system, err))
        return AIQ_EINVAL;
    if (j->model && !aiq_model_id_valid(j->model))
        return aiq_err_set(err, AIQ_EINVAL,
                           "model: not a Bedrock model id (botocore's modelId pattern; \".\" "
                           "and \"..\" are path segments, not ids)");
    if (j->reply_to && !aiq_topic_name_valid(j->reply_to))
        return aiq_err_set(err, AIQ_EINVAL, "reply_to: not a valid Kafka topic name");
    if (j->traceparent && strlen(j->traceparent) != 55)
        return aiq_err_set(err, AIQ_EINVAL, "traceparent: must be a W3C traceparent (55 chars)");
    const char *created = NULL;
    if (opt_string(doc, "created_at", 64, &created, err))
        return AIQ_EINVAL;
    if (created && aiq_time_parse(created, &j->created_at_ms))
        return aiq_err_set(err, AIQ_EINVAL, "created_at: must be an RFC 3339 date-time");
    j->has_created_at = created != NULL;
    return 0;
}

static int check_request(json_t *doc, aiq_job_t *j, aiq_err_t *err)
{
    const char *api = NULL;
    if (opt_string(doc, "api", 16, &api, err))
        return AIQ_EINVAL;
    if (api && strcmp(api, "converse") && strcmp(api, "invoke"))
        return aiq_err_set(err, AIQ_EINVAL, "api: must be \"converse\" or \"invoke\"");
    j->api = (api && strcmp(api, "invoke") == 0) ? AIQ_API_INVOKE : AIQ_API_CONVERSE;
    j->payload = json_object_get(doc, "payload");
    j->messages = json_object_get(doc, "messages");
    j->body = json_object_get(doc, "body");
    j->inference = json_object_get(doc, "inference");
    if (json_is_null(j->inference))
        j->inference = NULL; /* the header promises an object or NULL */
    if (j->payload && !json_is_object(j->payload))
        return aiq_err_set(err, AIQ_EINVAL, "payload: must be an object");
    if (j->body && !json_is_object(j->body))
        return aiq_err_set(err, AIQ_EINVAL, "body: must be an object");
    if (j->messages && aiq_converse_check_messages(j->messages, err))
        return AIQ_EINVAL;
    if (j->system_blocks && aiq_converse_check_system(j->system_blocks, err))
        return AIQ_EINVAL;
    if (check_converse(doc, j, err))
        return AIQ_EINVAL;
    if (!j->payload && !j->messages && !j->body)
        return aiq_err_set(err, AIQ_EINVAL, "one of payload, messages or body is required");
    if (j->body && j->api != AIQ_API_INVOKE)
        return aiq_err_set(err, AIQ_EINVAL, "body: only allowed with \"api\": \"invoke\"");
    return check_inference(j->inference, err);
}

static int check_numbers(json_t *doc, aiq_job_t *j, aiq_err_t *err)
{
    int64_t attempt = 0;
    if (opt_int(doc, "timeout_ms", 1, AIQ_JOB_TIMEOUT_MAX_MS, &j->timeout_ms, err) ||
        opt_int(doc, "attempt", 0, 100, &attempt, err))
        return AIQ_EINVAL;
    j->attempt = (int)attempt;
    return check_cache(json_object_get(doc, "cache"), j, err);
}

static int check_doc(json_t *doc, aiq_job_t *j, aiq_err_t *err)
{
    if (!json_is_object(doc))
        return aiq_err_set(err, AIQ_EINVAL, "a job must be a JSON object");
    j->cache_ttl_s = -1;
    if (check_identity(doc, j, err) || check_strings(doc, j, err) || check_request(doc, j, err) ||
        check_numbers(doc, j, err))
        return AIQ_EINVAL;
    return 0;
}

int aiq_job_validate(json_t *doc, aiq_err_t *err)
{
    aiq_job_t scratch;
    memset(&scratch, 0, sizeof(scratch));
    return check_doc(doc, &scratch, err);
}

static char *id_hint_of(json_t *doc)
{
    const char *id = json_string_value(json_object_get(doc, "id"));
    return aiq_job_id_valid(id) ? strdup(id) : NULL;
}

int aiq_job_decode(const void *buf, size_t len, size_t max_len, aiq_job_t **out,
                   aiq_job_reject_t *reject, char **id_hint, aiq_err_t *err)
{
    *out = NULL;
    *reject = AIQ_JOB_OK;
    if (id_hint)
        *id_hint = NULL;
    if (len > max_len) {
        *reject = AIQ_JOB_TOO_LARGE;
        return aiq_err_set(err, AIQ_ETOOBIG, "record is %zu bytes, the limit is %zu", len, max_len);
    }
    json_error_t jerr;
    /* Any JSON value decodes (a scalar is JSON that breaks the schema, not "not_json"). */
    json_t *doc = json_loadb(buf ? buf : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!doc && json_error_code(&jerr) == json_error_duplicate_key) {
        /* Well-formed JSON, but ambiguous: no field of it, not even "id", can be trusted. */
        *reject = AIQ_JOB_INVALID;
        return aiq_err_set(err, AIQ_EINVAL, "invalid job: %s at byte %d", jerr.text, jerr.position);
    }
    if (!doc) {
        *reject = AIQ_JOB_NOT_JSON;
        return aiq_err_set(err, AIQ_EINVAL, "not JSON: %s at byte %d", jerr.text, jerr.position);
    }
    aiq_job_t *job = calloc(1, sizeof(*job));
    if (!job) {
        json_decref(doc);
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    }
    job->root = doc;
    if (check_doc(doc, job, err)) {
        *reject = AIQ_JOB_INVALID;
        if (id_hint)
            *id_hint = id_hint_of(doc);
        aiq_job_free(job);
        return AIQ_EINVAL;
    }
    *out = job;
    return 0;
}

int aiq_job_check_time(const aiq_job_t *job, int64_t now_ms, int64_t max_skew_ms, aiq_err_t *err)
{
    if (!job->has_created_at || job->created_at_ms - now_ms <= max_skew_ms)
        return 0;
    return aiq_err_set(err, AIQ_EINVAL,
                       "created_at: %.3f s in the future, more than the %lld ms clock skew "
                       "allowed (worker.max_clock_skew_ms)",
                       (double)(job->created_at_ms - now_ms) / 1000.0, (long long)max_skew_ms);
}

int64_t aiq_job_deadline(const aiq_job_t *job, int64_t record_ts_ms, int64_t default_timeout_ms,
                         int64_t *timeout_ms)
{
    int64_t timeout = job->timeout_ms ? job->timeout_ms : default_timeout_ms;
    int64_t start = job->has_created_at ? job->created_at_ms : record_ts_ms;
    int64_t cap = record_ts_ms + AIQ_JOB_TIMEOUT_MAX_MS;
    if (timeout_ms)
        *timeout_ms = timeout;
    /* created_at is the sender's word; the record's timestamp bounds how far it reaches. */
    return start > cap - timeout ? cap : start + timeout;
}

void aiq_job_free(aiq_job_t *job)
{
    if (!job)
        return;
    json_decref(job->root);
    free(job);
}
