/* test_result.c — result encoding (common/result.h): every field lands in the JSON as
 * schemas/result.schema.json says, and bad input is refused instead of half-encoded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "result.h"

#define TP55 "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

/* 2026-11-28T00:38:43.250Z */
#define DONE_MS INT64_C(1795826323250)

/* Encodes r, checks the length contract, and parses the text back. */
static json_t *encode_parse(const aiq_result_t *r)
{
    char *out = NULL;
    size_t len = 0;
    aiq_err_t err = {0};
    int rc = aiq_result_encode(r, &out, &len, &err);
    if (rc)
        print_error("encode: %s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_non_null(out);
    assert_int_equal(len, strlen(out));
    json_error_t jerr;
    json_t *doc = json_loadb(out, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        print_error("not JSON: %s: %s\n", jerr.text, out);
    assert_non_null(doc);
    free(out);
    return doc;
}

static const char *str_at(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static json_int_t int_at(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static void assert_null_at(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_non_null(v);           /* present ... */
    assert_true(json_is_null(v)); /* ... and null */
}

static aiq_result_t succeeded(void)
{
    return (aiq_result_t){.job_id = "job-1",
                          .correlation_id = "corr-9",
                          .operation = "vc-analysis",
                          .priority = "high",
                          .status = AIQ_RESULT_SUCCEEDED,
                          .output_text = "Acme looks \"fine\"\n\xe2\x9c\x93",
                          .stop_reason = "end_turn",
                          .input_tokens = 120,
                          .output_tokens = 34,
                          .cache_read_tokens = 1500,
                          .cache_write_tokens = 500,
                          .total_tokens = 2154,
                          .cost_usd = 0.25,
                          .model = "anthropic.claude-3-haiku-20240307-v1:0",
                          .cache_hit = true,
                          .attempts = 2,
                          .queued_ms = 5,
                          .provider_ms = 900,
                          .total_ms = 910,
                          .worker = "w0-123",
                          .completed_at_ms = DONE_MS,
                          .traceparent = TP55};
}

static void result_encodes_succeeded(void **state)
{
    (void)state;
    aiq_result_t r = succeeded();
    json_t *o = encode_parse(&r);

    assert_string_equal(str_at(o, "job_id"), "job-1");
    assert_string_equal(str_at(o, "correlation_id"), "corr-9");
    assert_string_equal(str_at(o, "status"), "succeeded");
    assert_string_equal(str_at(o, "operation"), "vc-analysis");
    assert_string_equal(str_at(o, "priority"), "high");
    json_t *output = json_object_get(o, "output");
    assert_true(json_is_object(output));
    assert_string_equal(str_at(output, "text"), "Acme looks \"fine\"\n\xe2\x9c\x93");
    assert_string_equal(str_at(o, "stop_reason"), "end_turn");

    json_t *usage = json_object_get(o, "usage");
    assert_true(json_is_object(usage));
    assert_int_equal(int_at(usage, "input_tokens"), 120);
    assert_int_equal(int_at(usage, "output_tokens"), 34);
    /* Regression: the total was recomputed as input + output (154), dropping cache tokens. */
    assert_int_equal(int_at(usage, "total_tokens"), 2154);
    assert_int_equal(int_at(usage, "cache_read_input_tokens"), 1500);
    assert_int_equal(int_at(usage, "cache_write_input_tokens"), 500);
    assert_true(json_is_real(json_object_get(usage, "cost_usd")));
    assert_true(json_real_value(json_object_get(usage, "cost_usd")) == 0.25);

    assert_string_equal(str_at(o, "model"), "anthropic.claude-3-haiku-20240307-v1:0");
    assert_true(json_is_true(json_object_get(json_object_get(o, "cache"), "hit")));
    assert_null_at(o, "fallback");
    assert_int_equal(int_at(o, "attempts"), 2);

    json_t *timings = json_object_get(o, "timings");
    assert_int_equal(int_at(timings, "queued_ms"), 5);
    assert_int_equal(int_at(timings, "provider_ms"), 900);
    assert_int_equal(int_at(timings, "total_ms"), 910);

    assert_string_equal(str_at(o, "worker"), "w0-123");
    assert_null_at(o, "error");
    assert_string_equal(str_at(o, "completed_at"), "2026-11-28T00:38:43.250Z");
    assert_string_equal(str_at(o, "traceparent"), TP55);
    json_decref(o);
}

static void result_encodes_failed_with_error(void **state)
{
    (void)state;
    aiq_result_t r = {.job_id = "job-2",
                      .status = AIQ_RESULT_FAILED,
                      .operation = "vc-analysis",
                      .priority = "low",
                      .input_tokens = 0,
                      .output_tokens = 0,
                      .cost_usd = 0.0,
                      .attempts = 3,
                      .worker = "w1",
                      .error_kind = "throttled",
                      .error_message = "Too many requests",
                      .http_status = 429,
                      .request_id = "8c1d7f3e-5b2a-4c9d-9e0f-1a2b3c4d5e6f",
                      .completed_at_ms = INT64_C(1795826323005)};
    json_t *o = encode_parse(&r);
    assert_string_equal(str_at(o, "status"), "failed");
    json_t *e = json_object_get(o, "error");
    assert_true(json_is_object(e));
    assert_string_equal(str_at(e, "request_id"), "8c1d7f3e-5b2a-4c9d-9e0f-1a2b3c4d5e6f");
    assert_string_equal(str_at(e, "kind"), "throttled");
    assert_string_equal(str_at(e, "message"), "Too many requests");
    assert_int_equal(int_at(e, "http_status"), 429);
    assert_null_at(o, "output");
    assert_int_equal(int_at(json_object_get(o, "usage"), "total_tokens"), 0);
    /* A zero cost is known (free), not unknown. */
    assert_true(json_is_number(json_object_get(json_object_get(o, "usage"), "cost_usd")));
    assert_int_equal(int_at(o, "attempts"), 3);
    assert_string_equal(str_at(o, "completed_at"), "2026-11-28T00:38:43.005Z");
    json_decref(o);

    /* Without a message or an HTTP status: message is "", http_status is omitted. */
    r.error_message = NULL;
    r.http_status = 0;
    r.request_id = "";
    o = encode_parse(&r);
    e = json_object_get(o, "error");
    assert_null(json_object_get(e, "request_id"));
    assert_string_equal(str_at(e, "kind"), "throttled");
    assert_string_equal(str_at(e, "message"), "");
    assert_null(json_object_get(e, "http_status"));
    json_decref(o);
}

/* Tool calls, traces and raw bodies join "output" beside the text. */
static void result_output_extra(void **state)
{
    (void)state;
    aiq_result_t r = succeeded();
    json_t *extra = json_pack("{s:[{s:{s:s}}], s:b, s:s}", "content", "toolUse", "name", "get",
                              "unparsed", 1, "text", "must not replace the text");
    r.output_extra = extra;
    json_t *o = encode_parse(&r);
    json_t *out = json_object_get(o, "output");
    assert_string_equal(str_at(out, "text"), "Acme looks \"fine\"\n\xe2\x9c\x93");
    assert_true(json_is_true(json_object_get(out, "unparsed")));
    assert_true(json_is_array(json_object_get(out, "content")));
    json_decref(o);
    json_decref(extra);
}

static void result_encodes_partial(void **state)
{
    (void)state;
    aiq_result_partial_t p = {"job-s", "corr", "m.x-v1", "w1", NULL, 3, 2, "Hel\"lo", 6};
    char *out = NULL;
    size_t len = 0;
    aiq_err_t err = {0};
    assert_int_equal(aiq_result_encode_partial(&p, &out, &len, &err), 0);
    assert_string_equal(out,
                        "{\"job_id\":\"job-s\",\"correlation_id\":\"corr\",\"status\":"
                        "\"partial\",\"seq\":3,\"attempt\":2,\"delta\":{\"text\":\"Hel\\\"lo\"},"
                        "\"model\":\"m.x-v1\",\"worker\":\"w1\"}");
    free(out);
    p.text = "\xff";
    p.text_len = 1;
    assert_int_equal(aiq_result_encode_partial(&p, &out, &len, &err), AIQ_EINVAL);
}

static void result_optional_fields(void **state)
{
    (void)state;
    aiq_result_t r = {.job_id = "job-3",
                      .status = AIQ_RESULT_DEGRADED,
                      .output_text = "",
                      .input_tokens = 7,
                      .output_tokens = 8,
                      .total_tokens = 15,
                      .cost_usd = -1.0,
                      .fallback = "template",
                      .completed_at_ms = 0};
    json_t *o = encode_parse(&r);
    /* Absent pointers: correlation_id and traceparent are omitted, the rest are null. */
    assert_null(json_object_get(o, "correlation_id"));
    assert_null(json_object_get(o, "traceparent"));
    assert_null_at(o, "operation");
    assert_null_at(o, "priority");
    assert_null_at(o, "stop_reason");
    assert_null_at(o, "model");
    assert_null_at(o, "worker");
    assert_null_at(o, "error");
    json_t *usage = json_object_get(o, "usage");
    assert_int_equal(int_at(usage, "total_tokens"), 15);
    assert_null_at(usage, "cost_usd"); /* < 0 means unknown */
    assert_string_equal(str_at(json_object_get(o, "output"), "text"), "");
    assert_string_equal(str_at(o, "fallback"), "template");
    assert_false(json_is_true(json_object_get(json_object_get(o, "cache"), "hit")));
    assert_true(json_is_false(json_object_get(json_object_get(o, "cache"), "hit")));
    assert_string_equal(str_at(o, "status"), "degraded");
    assert_string_equal(str_at(o, "completed_at"), "1970-01-01T00:00:00.000Z");
    json_decref(o);
}

static void result_rejects_missing_job_id(void **state)
{
    (void)state;
    aiq_result_t r = succeeded();
    r.job_id = NULL;
    char *out = (char *)&r;
    size_t len = 12345;
    aiq_err_t err = {0};
    assert_int_equal(aiq_result_encode(&r, &out, &len, &err), AIQ_EINVAL);
    assert_int_equal(err.code, AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "job_id"));
    /* Outputs untouched on failure. */
    assert_ptr_equal(out, (char *)&r);
    assert_int_equal(len, 12345);
    assert_int_equal(aiq_result_encode(&r, &out, &len, NULL), AIQ_EINVAL);
}

static void expect_not_utf8(const aiq_result_t *r)
{
    char *out = NULL;
    size_t len = 0;
    aiq_err_t err = {0};
    assert_int_equal(aiq_result_encode(r, &out, &len, &err), AIQ_EINVAL);
    assert_null(out);
    assert_int_equal(err.code, AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "UTF-8"));
    assert_non_null(strstr(err.msg, r->job_id));
}

static void result_rejects_invalid_utf8(void **state)
{
    (void)state;
    aiq_result_t r = succeeded();
    r.output_text = "truncated \xe2\x9c"; /* a cut multi-byte sequence */
    expect_not_utf8(&r);

    r = succeeded();
    r.output_text = "latin-1 caf\xe9";
    expect_not_utf8(&r);

    r = succeeded();
    r.error_kind = "provider";
    r.error_message = "bad \xff byte";
    expect_not_utf8(&r);

    r = succeeded();
    r.model = "\xc0\xaf"; /* overlong encoding of '/' */
    expect_not_utf8(&r);
}

static void result_status_names(void **state)
{
    (void)state;
    assert_string_equal(aiq_result_status_name(AIQ_RESULT_SUCCEEDED), "succeeded");
    assert_string_equal(aiq_result_status_name(AIQ_RESULT_FAILED), "failed");
    assert_string_equal(aiq_result_status_name(AIQ_RESULT_DEGRADED), "degraded");
    assert_string_equal(aiq_result_status_name(AIQ_RESULT_EXPIRED), "expired");
    assert_string_equal(aiq_result_status_name(AIQ_RESULT_REJECTED), "rejected");

    /* And each lands in the encoded record. */
    static const char *const names[] = {"succeeded", "failed", "degraded", "expired", "rejected"};
    for (int s = AIQ_RESULT_SUCCEEDED; s <= AIQ_RESULT_REJECTED; s++) {
        aiq_result_t r = {.job_id = "j", .status = (aiq_result_status_t)s, .cost_usd = -1};
        json_t *o = encode_parse(&r);
        assert_string_equal(str_at(o, "status"), names[s]);
        json_decref(o);
    }
}

static void result_has_schema_required_keys(void **state)
{
    (void)state;
    static const char *const required[] = {"job_id",  "status", "output",   "usage",
                                           "model",   "cache",  "fallback", "attempts",
                                           "timings", "worker", "error",    "completed_at"};
    aiq_result_t r = {.job_id = "j", .status = AIQ_RESULT_EXPIRED, .cost_usd = -1};
    json_t *o = encode_parse(&r);
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (!json_object_get(o, required[i]))
            print_error("missing %s\n", required[i]);
        assert_non_null(json_object_get(o, required[i]));
    }
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(result_encodes_succeeded),
        cmocka_unit_test(result_encodes_failed_with_error),
        cmocka_unit_test(result_optional_fields),
        cmocka_unit_test(result_output_extra),
        cmocka_unit_test(result_encodes_partial),
        cmocka_unit_test(result_rejects_missing_job_id),
        cmocka_unit_test(result_rejects_invalid_utf8),
        cmocka_unit_test(result_status_names),
        cmocka_unit_test(result_has_schema_required_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
