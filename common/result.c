#include "result.h"
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

/* json_string() fails on invalid UTF-8; such text must not vanish silently. */
static int put_str(json_t *o, const char *key, const char *v, int *bad)
{
    if (!v)
        return json_object_set_new(o, key, json_null());
    json_t *s = json_string(v);
    if (!s) {
        *bad = 1;
        return -1;
    }
    return json_object_set_new(o, key, s);
}

static json_t *usage_obj(const aiq_result_t *r)
{
    json_t *u = json_object();
    json_object_set_new(u, "input_tokens", json_integer(r->input_tokens));
    json_object_set_new(u, "output_tokens", json_integer(r->output_tokens));
    json_object_set_new(u, "cache_read_input_tokens", json_integer(r->cache_read_tokens));
    json_object_set_new(u, "cache_write_input_tokens", json_integer(r->cache_write_tokens));
    json_object_set_new(u, "total_tokens", json_integer(r->total_tokens));
    /* Unknown (negative) or non-finite cost is null, never a silently missing key. */
    json_object_set_new(u, "cost_usd",
                        r->cost_usd >= 0 && isfinite(r->cost_usd) ? json_real(r->cost_usd)
                                                                  : json_null());
    return u;
}

static json_t *timings_obj(const aiq_result_t *r)
{
    json_t *t = json_object();
    json_object_set_new(t, "queued_ms", json_integer(r->queued_ms));
    json_object_set_new(t, "provider_ms", json_integer(r->provider_ms));
    json_object_set_new(t, "total_ms", json_integer(r->total_ms));
    return t;
}

static json_t *error_obj(const aiq_result_t *r, int *bad)
{
    if (!r->error_kind)
        return json_null();
    json_t *e = json_object();
    put_str(e, "kind", r->error_kind, bad);
    put_str(e, "message", r->error_message ? r->error_message : "", bad);
    if (r->http_status)
        json_object_set_new(e, "http_status", json_integer(r->http_status));
    if (r->error_support)
        put_str(e, "support", r->error_support, bad);
    if (r->request_id && r->request_id[0])
        put_str(e, "request_id", r->request_id, bad);
    return e;
}

static json_t *cache_obj(const aiq_result_t *r, int *bad)
{
    json_t *c = json_pack("{s:b}", "hit", r->cache_hit);
    if (r->cache_key)
        put_str(c, "key", r->cache_key, bad);
    if (r->cache_hit || r->cache_stale) {
        json_object_set_new(c, "age_ms", json_integer(r->cache_age_ms));
        json_object_set_new(c, "stale", json_boolean(r->cache_stale));
    }
    return c;
}

static json_t *output_obj(const aiq_result_t *r, int *bad)
{
    if (!r->output_text)
        return json_null();
    json_t *o = json_object();
    put_str(o, "text", r->output_text, bad);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)r->output_extra, k, v)
    {
        if (strcmp(k, "text") != 0)
            json_object_set(o, k, v);
    }
    return o;
}

int aiq_result_encode(const aiq_result_t *r, char **out, size_t *len, aiq_err_t *err)
{
    if (!r->job_id)
        return aiq_err_set(err, AIQ_EINVAL, "result without job_id");
    json_t *o = json_object();
    if (!o)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    int bad = 0;
    char done_at[32];
    put_str(o, "job_id", r->job_id, &bad);
    if (r->correlation_id)
        put_str(o, "correlation_id", r->correlation_id, &bad);
    put_str(o, "status", aiq_result_status_name(r->status), &bad);
    put_str(o, "operation", r->operation, &bad);
    put_str(o, "priority", r->priority, &bad);
    json_object_set_new(o, "output", output_obj(r, &bad));
    put_str(o, "stop_reason", r->stop_reason, &bad);
    json_object_set_new(o, "usage", usage_obj(r));
    put_str(o, "model", r->model, &bad);
    json_object_set_new(o, "cache", cache_obj(r, &bad));
    put_str(o, "fallback", r->fallback, &bad);
    json_object_set_new(o, "attempts", json_integer(r->attempts));
    json_object_set_new(o, "timings", timings_obj(r));
    put_str(o, "worker", r->worker, &bad);
    json_object_set_new(o, "error", error_obj(r, &bad));
    put_str(o, "completed_at", aiq_time_format(r->completed_at_ms, done_at, sizeof(done_at)), &bad);
    if (r->traceparent)
        put_str(o, "traceparent", r->traceparent, &bad);
    if (bad) {
        json_decref(o);
        return aiq_err_set(err, AIQ_EINVAL, "result for %s has a string that is not UTF-8",
                           r->job_id);
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!s)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    *out = s;
    *len = strlen(s);
    return 0;
}

int aiq_result_encode_partial(const aiq_result_partial_t *p, char **out, size_t *len,
                              aiq_err_t *err)
{
    if (!p->job_id)
        return aiq_err_set(err, AIQ_EINVAL, "partial without job_id");
    json_t *o = json_object();
    json_t *text = json_stringn(p->text ? p->text : "", p->text ? p->text_len : 0);
    if (!o || !text) {
        json_decref(o);
        json_decref(text);
        return aiq_err_set(err, text ? AIQ_ENOMEM : AIQ_EINVAL,
                           text ? "out of memory" : "partial text is not UTF-8");
    }
    int bad = 0;
    put_str(o, "job_id", p->job_id, &bad);
    if (p->correlation_id)
        put_str(o, "correlation_id", p->correlation_id, &bad);
    put_str(o, "status", "partial", &bad);
    json_object_set_new(o, "seq", json_integer(p->seq));
    json_object_set_new(o, "attempt", json_integer(p->attempt));
    json_object_set_new(o, "delta", json_pack("{s:o}", "text", text));
    put_str(o, "model", p->model, &bad);
    put_str(o, "worker", p->worker, &bad);
    if (p->traceparent)
        put_str(o, "traceparent", p->traceparent, &bad);
    char *s = bad ? NULL : json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!s)
        return aiq_err_set(err, bad ? AIQ_EINVAL : AIQ_ENOMEM,
                           bad ? "partial has a string that is not UTF-8" : "out of memory");
    *out = s;
    *len = strlen(s);
    return 0;
}
