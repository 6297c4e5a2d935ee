#include "result.h"
#include "jsonw.h"
#include "timeutil.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *aiq_result_status_name(aiq_result_status_t s)
{
    switch (s) {
    case AIQ_RESULT_SUCCEEDED:
        return "succeeded";
    case AIQ_RESULT_FAILED:
        return "failed";
    case AIQ_RESULT_DEGRADED:
        return "degraded";
    case AIQ_RESULT_EXPIRED:
        return "expired";
    case AIQ_RESULT_REJECTED:
        return "rejected";
    }
    return "failed";
}

/* Members in the order the schema lists them. The writer refuses text that is not UTF-8:
 * such text must not vanish silently. */
static void put_usage(aiq_jw_t *w, const aiq_result_t *r)
{
    aiq_jw_key(w, "usage");
    aiq_jw_obj_begin(w);
    aiq_jw_key(w, "input_tokens");
    aiq_jw_int(w, r->input_tokens);
    aiq_jw_key(w, "output_tokens");
    aiq_jw_int(w, r->output_tokens);
    aiq_jw_key(w, "cache_read_input_tokens");
    aiq_jw_int(w, r->cache_read_tokens);
    aiq_jw_key(w, "cache_write_input_tokens");
    aiq_jw_int(w, r->cache_write_tokens);
    aiq_jw_key(w, "total_tokens");
    aiq_jw_int(w, r->total_tokens);
    /* Unknown (negative) or non-finite cost is null, never a silently missing key. */
    aiq_jw_key(w, "cost_usd");
    if (r->cost_usd >= 0 && isfinite(r->cost_usd))
        aiq_jw_real(w, r->cost_usd);
    else
        aiq_jw_null(w);
    aiq_jw_obj_end(w);
}

static void put_timings(aiq_jw_t *w, const aiq_result_t *r)
{
    aiq_jw_key(w, "timings");
    aiq_jw_obj_begin(w);
    aiq_jw_key(w, "queued_ms");
    aiq_jw_int(w, r->queued_ms);
    aiq_jw_key(w, "provider_ms");
    aiq_jw_int(w, r->provider_ms);
    aiq_jw_key(w, "total_ms");
    aiq_jw_int(w, r->total_ms);
    aiq_jw_obj_end(w);
}

static void put_error(aiq_jw_t *w, const aiq_result_t *r)
{
    aiq_jw_key(w, "error");
    if (!r->error_kind) {
        aiq_jw_null(w);
        return;
    }
    aiq_jw_obj_begin(w);
    aiq_jw_key(w, "kind");
    aiq_jw_str(w, r->error_kind);
    aiq_jw_key(w, "message");
    aiq_jw_str(w, r->error_message ? r->error_message : "");
    if (r->http_status) {
        aiq_jw_key(w, "http_status");
        aiq_jw_int(w, r->http_status);
    }
    if (r->error_support) {
        aiq_jw_key(w, "support");
        aiq_jw_str(w, r->error_support);
    }
    if (r->request_id && r->request_id[0]) {
        aiq_jw_key(w, "request_id");
        aiq_jw_str(w, r->request_id);
    }
    aiq_jw_obj_end(w);
}

static void put_cache(aiq_jw_t *w, const aiq_result_t *r)
{
    aiq_jw_key(w, "cache");
    aiq_jw_obj_begin(w);
    aiq_jw_key(w, "hit");
    aiq_jw_bool(w, r->cache_hit);
    if (r->cache_key) {
        aiq_jw_key(w, "key");
        aiq_jw_str(w, r->cache_key);
    }
    if (r->cache_hit || r->cache_stale) {
        aiq_jw_key(w, "age_ms");
        aiq_jw_int(w, r->cache_age_ms);
        aiq_jw_key(w, "stale");
        aiq_jw_bool(w, r->cache_stale);
    }
    aiq_jw_obj_end(w);
}

static void put_output(aiq_jw_t *w, const aiq_result_t *r)
{
    aiq_jw_key(w, "output");
    if (!r->output_text) {
        aiq_jw_null(w);
        return;
    }
    aiq_jw_obj_begin(w);
    aiq_jw_key(w, "text");
    aiq_jw_str(w, r->output_text);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)r->output_extra, k, v)
    {
        if (strcmp(k, "text") != 0) {
            aiq_jw_key(w, k);
            aiq_jw_json(w, v);
        }
    }
    aiq_jw_obj_end(w);
}

static void put_member(aiq_jw_t *w, const char *key, const char *v)
{
    aiq_jw_key(w, key);
    aiq_jw_str(w, v);
}

static int finish(aiq_jw_t *w, const char *what, const char *id, char **out, size_t *len,
                  aiq_err_t *err)
{
    int rc = aiq_jw_finish(w, out, len);
    if (rc == AIQ_EINVAL)
        return aiq_err_set(err, rc, "%s for %s has a string that is not UTF-8", what, id);
    return rc ? aiq_err_set(err, rc, "out of memory") : 0;
}

int aiq_result_encode(const aiq_result_t *r, char **out, size_t *len, aiq_err_t *err)
{
    if (!r->job_id)
        return aiq_err_set(err, AIQ_EINVAL, "result without job_id");
    aiq_jw_t w = {0};
    char done_at[32];
    aiq_jw_obj_begin(&w);
    put_member(&w, "job_id", r->job_id);
    if (r->correlation_id)
        put_member(&w, "correlation_id", r->correlation_id);
    put_member(&w, "status", aiq_result_status_name(r->status));
    put_member(&w, "operation", r->operation);
    put_member(&w, "priority", r->priority);
    put_output(&w, r);
    put_member(&w, "stop_reason", r->stop_reason);
    put_usage(&w, r);
    put_member(&w, "model", r->model);
    put_cache(&w, r);
    put_member(&w, "fallback", r->fallback);
    aiq_jw_key(&w, "attempts");
    aiq_jw_int(&w, r->attempts);
    put_timings(&w, r);
    put_member(&w, "worker", r->worker);
    put_error(&w, r);
    put_member(&w, "completed_at", aiq_time_format(r->completed_at_ms, done_at, sizeof(done_at)));
    if (r->traceparent)
        put_member(&w, "traceparent", r->traceparent);
    aiq_jw_obj_end(&w);
    return finish(&w, "result", r->job_id, out, len, err);
}

int aiq_result_encode_partial(const aiq_result_partial_t *p, char **out, size_t *len,
                              aiq_err_t *err)
{
    if (!p->job_id)
        return aiq_err_set(err, AIQ_EINVAL, "partial without job_id");
    aiq_jw_t w = {0};
    aiq_jw_obj_begin(&w);
    put_member(&w, "job_id", p->job_id);
    if (p->correlation_id)
        put_member(&w, "correlation_id", p->correlation_id);
    put_member(&w, "status", "partial");
    aiq_jw_key(&w, "seq");
    aiq_jw_int(&w, p->seq);
    aiq_jw_key(&w, "attempt");
    aiq_jw_int(&w, p->attempt);
    aiq_jw_key(&w, "delta");
    aiq_jw_obj_begin(&w);
    aiq_jw_key(&w, "text");
    aiq_jw_strn(&w, p->text ? p->text : "", p->text ? p->text_len : 0);
    aiq_jw_obj_end(&w);
    put_member(&w, "model", p->model);
    put_member(&w, "worker", p->worker);
    if (p->traceparent)
        put_member(&w, "traceparent", p->traceparent);
    aiq_jw_obj_end(&w);
    return finish(&w, "partial", p->job_id, out, len, err);
}
