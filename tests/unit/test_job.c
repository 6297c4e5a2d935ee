/* test_job.c — job decoding and validation against the contract of common/job.h:
 * what is accepted, what each refusal is classified as, and that errors name the field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "job.h"
#include "topics.h"

#define MAX_LEN 65536

/* Every valid case starts from these two required fields. */
#define BASE   "\"id\":\"job-1\",\"operation\":\"vc-analysis\""
#define MSG_OK "\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"hi\"}]}]"
#define TP55   "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

typedef struct decoded {
    int rc;
    aiq_job_t *job;
    aiq_job_reject_t reject;
    char *hint;
    aiq_err_t err;
} decoded_t;

static decoded_t decode_bytes(const void *buf, size_t len, size_t max_len)
{
    decoded_t d;
    memset(&d, 0, sizeof(d));
    d.reject = (aiq_job_reject_t)-1;
    d.hint = (char *)&d; /* must be overwritten: NULL or a copy */
    d.rc = aiq_job_decode(buf, len, max_len, &d.job, &d.reject, &d.hint, &d.err);
    return d;
}

static decoded_t decode(const char *text)
{
    return decode_bytes(text, strlen(text), MAX_LEN);
}

static void decoded_free(decoded_t *d)
{
    aiq_job_free(d->job);
    free(d->hint);
}

/* text must be refused as AIQ_JOB_INVALID, with an error that names field; the same text
 * parsed by the caller must fail aiq_job_validate with the same message. */
static void expect_invalid(const char *text, const char *field)
{
    decoded_t d = decode(text);
    if (d.rc != AIQ_EINVAL || d.reject != AIQ_JOB_INVALID || !strstr(d.err.msg, field))
        print_error("case %s\n  rc=%d reject=%d msg=%s (want field '%s')\n", text, d.rc,
                    (int)d.reject, d.err.msg, field);
    assert_int_equal(d.rc, AIQ_EINVAL);
    assert_int_equal(d.reject, AIQ_JOB_INVALID);
    assert_null(d.job);
    assert_int_equal(d.err.code, AIQ_EINVAL);
    assert_non_null(strstr(d.err.msg, field));
    decoded_free(&d);

    json_t *doc = json_loads(text, JSON_DECODE_ANY, NULL);
    if (doc) {
        aiq_err_t verr = {0};
        assert_int_equal(aiq_job_validate(doc, &verr), AIQ_EINVAL);
        assert_non_null(strstr(verr.msg, field));
        json_decref(doc);
    }
}

static void expect_not_json(const void *buf, size_t len)
{
    decoded_t d = decode_bytes(buf, len, MAX_LEN);
    assert_int_equal(d.rc, AIQ_EINVAL);
    assert_int_equal(d.reject, AIQ_JOB_NOT_JSON);
    assert_null(d.job);
    assert_null(d.hint);
    assert_non_null(strstr(d.err.msg, "not JSON"));
    decoded_free(&d);
}

static void job_decodes_minimal(void **state)
{
    (void)state;
    decoded_t d = decode("{" BASE ",\"payload\":{}}");
    assert_int_equal(d.rc, 0);
    assert_int_equal(d.reject, AIQ_JOB_OK);
    assert_null(d.hint);
    aiq_job_t *j = d.job;
    assert_non_null(j);
    assert_non_null(j->root);
    assert_string_equal(j->id, "job-1");
    assert_string_equal(j->operation, "vc-analysis");
    assert_true(json_is_object(j->payload));
    assert_int_equal(json_object_size(j->payload), 0);
    /* Absent fields have the documented "absent" values. */
    assert_null(j->persona);
    assert_null(j->model);
    assert_null(j->reply_to);
    assert_null(j->correlation_id);
    assert_null(j->tenant);
    assert_null(j->user_id);
    assert_null(j->traceparent);
    assert_null(j->system);
    assert_null(j->messages);
    assert_null(j->body);
    assert_null(j->inference);
    assert_int_equal(j->api, AIQ_API_CONVERSE);
    assert_int_equal(j->priority, -1);
    assert_int_equal(j->created_at_ms, 0);
    assert_int_equal(j->timeout_ms, 0);
    assert_int_equal(j->attempt, 0);
    assert_false(j->cache_bypass);
    assert_int_equal(j->cache_ttl_s, -1);
    decoded_free(&d);
}

static void job_decodes_full(void **state)
{
    (void)state;
    const char *text =
        "{\"id\":\"Full_job.2:x-1\",\"operation\":\"content-generation\",\"priority\":\"low\","
        "\"payload\":{\"company\":\"Acme\"},"
        "\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"a\"},{\"text\":\"b\"}]},"
        "{\"role\":\"assistant\",\"content\":[{\"text\":\"c\"}]}],"
        "\"system\":\"be brief\","
        "\"inference\":{\"max_tokens\":200000,\"temperature\":0.0,\"top_p\":1,"
        "\"stop_sequences\":[\"a\",\"b\",\"c\",\"d\"]},"
        "\"cache\":{\"bypass\":true,\"ttl_s\":2592000},"
        "\"persona\":\"investor\",\"model\":\"anthropic.claude-3-haiku-20240307-v1:0\","
        "\"reply_to\":\"team.results_v2\",\"correlation_id\":\"corr-9\","
        "\"created_at\":\"2026-11-28T02:08:43.25+01:30\",\"timeout_ms\":3600000,"
        "\"attempt\":100,\"tenant\":\"t1\",\"user_id\":\"u1\",\"traceparent\":\"" TP55 "\","
        "\"api\":\"invoke\",\"body\":{\"anthropic_version\":\"bedrock-2023-05-31\"},"
        "\"unknown_future_field\":[1,2,3]}";
    decoded_t d = decode(text);
    if (d.rc)
        print_error("%s\n", d.err.msg);
    assert_int_equal(d.rc, 0);
    aiq_job_t *j = d.job;
    assert_non_null(j);
    assert_string_equal(j->id, "Full_job.2:x-1");
    assert_string_equal(j->operation, "content-generation");
    assert_int_equal(j->priority, AIQ_PRIO_LOW);
    assert_string_equal(json_string_value(json_object_get(j->payload, "company")), "Acme");
    assert_int_equal(json_array_size(j->messages), 2);
    assert_string_equal(j->system, "be brief");
    assert_int_equal(json_integer_value(json_object_get(j->inference, "max_tokens")), 200000);
    assert_true(j->cache_bypass);
    assert_int_equal(j->cache_ttl_s, 2592000);
    assert_string_equal(j->persona, "investor");
    assert_string_equal(j->model, "anthropic.claude-3-haiku-20240307-v1:0");
    assert_string_equal(j->reply_to, "team.results_v2");
    assert_string_equal(j->correlation_id, "corr-9");
    /* 02:08:43.250 at +01:30 is 00:38:43.250Z. */
    assert_int_equal(j->created_at_ms, INT64_C(1795826323250));
    assert_int_equal(j->timeout_ms, 3600000);
    assert_int_equal(j->attempt, 100);
    assert_string_equal(j->tenant, "t1");
    assert_string_equal(j->user_id, "u1");
    assert_string_equal(j->traceparent, TP55);
    assert_int_equal(j->api, AIQ_API_INVOKE);
    assert_string_equal(json_string_value(json_object_get(j->body, "anthropic_version")),
                        "bedrock-2023-05-31");
    /* Strings borrow from the owned tree. */
    assert_ptr_equal(j->id, json_string_value(json_object_get(j->root, "id")));
    decoded_free(&d);
}

static void job_decodes_priorities_and_times(void **state)
{
    (void)state;
    static const char *const names[] = {"critical", "high", "normal", "low"};
    for (int p = 0; p < 4; p++) {
        char text[256];
        snprintf(text, sizeof(text), "{" BASE ",\"priority\":\"%s\",\"payload\":{}}", names[p]);
        decoded_t d = decode(text);
        assert_int_equal(d.rc, 0);
        assert_int_equal(d.job->priority, p);
        decoded_free(&d);
    }
    static const struct {
        const char *text;
        int64_t ms;
    } times[] = {
        {"2026-11-28T02:08:43Z", INT64_C(1795831723000)},
        {"2026-11-28T02:08:43.5Z", INT64_C(1795831723500)},
        {"2026-11-28T02:08:43.123456Z", INT64_C(1795831723123)},
        {"2026-11-28T02:08:43-05:00", INT64_C(1795831723000) + 5 * 3600000},
        {"1970-01-01T00:00:01.001Z", 1001},
    };
    for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text), "{" BASE ",\"created_at\":\"%s\",\"payload\":{}}",
                 times[i].text);
        decoded_t d = decode(text);
        assert_int_equal(d.rc, 0);
        assert_int_equal(d.job->created_at_ms, times[i].ms);
        decoded_free(&d);
    }
    /* Explicit nulls count as absent. */
    decoded_t d = decode("{" BASE ",\"priority\":null,\"persona\":null,\"inference\":null,"
                         "\"cache\":null,\"timeout_ms\":null,\"payload\":{}}");
    assert_int_equal(d.rc, 0);
    assert_int_equal(d.job->priority, -1);
    assert_null(d.job->persona);
    assert_null(d.job->inference); /* "object or NULL", never a JSON null */
    assert_int_equal(d.job->timeout_ms, 0);
    assert_int_equal(d.job->cache_ttl_s, -1);
    decoded_free(&d);
}

static void job_id_valid_charset_and_length(void **state)
{
    (void)state;
    char id[AIQ_JOB_ID_MAX + 2];
    memset(id, 'a', sizeof(id));
    id[AIQ_JOB_ID_MAX] = '\0';
    assert_true(aiq_job_id_valid(id));
    id[AIQ_JOB_ID_MAX] = 'a';
    id[AIQ_JOB_ID_MAX + 1] = '\0';
    assert_false(aiq_job_id_valid(id));

    assert_true(aiq_job_id_valid("a"));
    assert_true(aiq_job_id_valid("AZaz09._:-"));
    assert_false(aiq_job_id_valid(""));
    assert_false(aiq_job_id_valid(NULL));
    assert_false(aiq_job_id_valid("a b"));
    assert_false(aiq_job_id_valid("a/b"));
    assert_false(aiq_job_id_valid("a\"b"));
    assert_false(aiq_job_id_valid("caf\xc3\xa9"));
}

static void job_rejects_too_large(void **state)
{
    (void)state;
    const char *text = "{" BASE ",\"payload\":{}}";
    size_t len = strlen(text);

    decoded_t d = decode_bytes(text, len, len - 1);
    assert_int_equal(d.rc, AIQ_ETOOBIG);
    assert_int_equal(d.reject, AIQ_JOB_TOO_LARGE);
    assert_int_equal(d.err.code, AIQ_ETOOBIG);
    assert_null(d.job);
    assert_null(d.hint); /* never parsed, so no id */
    assert_non_null(strstr(d.err.msg, "limit"));
    decoded_free(&d);

    d = decode_bytes(text, len, len); /* exactly at the cap is allowed */
    assert_int_equal(d.rc, 0);
    assert_non_null(d.job);
    decoded_free(&d);
}

static void job_rejects_not_json(void **state)
{
    (void)state;
    static const char garbage[] = "\xff\xfe\x00garbage\x01 not json";
    expect_not_json(garbage, sizeof(garbage) - 1);
    static const char *const texts[] = {
        "hello",
        "{\"id\":\"job-1\",\"operation\":", /* truncated */
        "{\"id\":\"job-1\",\"operation\":\"op\",\"payload\":{}",
        "",
        "{\"id\":\"caf\xc3\"}", /* invalid UTF-8 inside a string */
        "{\"id\":\"job-1\"} trailing",
        "{'id':'job-1'}",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        expect_not_json(texts[i], strlen(texts[i]));
    expect_not_json(NULL, 0);
}

static void job_rejects_non_object(void **state)
{
    (void)state;
    expect_invalid("[{\"id\":\"job-1\"}]", "object");
    expect_invalid("42", "object");
    expect_invalid("\"job-1\"", "object");
    expect_invalid("null", "object");
}

static void job_rejects_bad_identity(void **state)
{
    (void)state;
    expect_invalid("{\"operation\":\"op\",\"payload\":{}}", "id");
    expect_invalid("{\"id\":7,\"operation\":\"op\",\"payload\":{}}", "id");
    expect_invalid("{\"id\":\"\",\"operation\":\"op\",\"payload\":{}}", "id");
    expect_invalid("{\"id\":\"has space\",\"operation\":\"op\",\"payload\":{}}", "id");
    expect_invalid("{\"id\":\"a/b\",\"operation\":\"op\",\"payload\":{}}", "id");

    char text[512];
    char longid[AIQ_JOB_ID_MAX + 2];
    memset(longid, 'x', AIQ_JOB_ID_MAX + 1);
    longid[AIQ_JOB_ID_MAX + 1] = '\0';
    snprintf(text, sizeof(text), "{\"id\":\"%s\",\"operation\":\"op\",\"payload\":{}}", longid);
    expect_invalid(text, "id");

    expect_invalid("{\"id\":\"job-1\",\"payload\":{}}", "operation");
    expect_invalid("{\"id\":\"job-1\",\"operation\":\"\",\"payload\":{}}", "operation");
    expect_invalid("{\"id\":\"job-1\",\"operation\":\"a:b\",\"payload\":{}}", "operation");
    expect_invalid("{" BASE ",\"priority\":\"urgent\",\"payload\":{}}", "priority");
    expect_invalid("{" BASE ",\"priority\":0,\"payload\":{}}", "priority");
    expect_invalid("{" BASE ",\"priority\":\"CRITICAL\",\"payload\":{}}", "priority");
}

static void job_rejects_bad_request(void **state)
{
    (void)state;
    expect_invalid("{" BASE ",\"payload\":[]}", "payload");
    expect_invalid("{" BASE ",\"payload\":\"text\"}", "payload");
    expect_invalid("{" BASE "}", "payload");
    expect_invalid("{" BASE ",\"payload\":null}", "payload");
    expect_invalid("{" BASE ",\"body\":{}}", "body");
    expect_invalid("{" BASE ",\"api\":\"converse\",\"body\":{}}", "body");
    expect_invalid("{" BASE ",\"api\":\"invoke\",\"body\":[]}", "body");
    expect_invalid("{" BASE ",\"api\":\"stream\",\"payload\":{}}", "api");
}

static void job_rejects_bad_messages(void **state)
{
    (void)state;
    expect_invalid("{" BASE ",\"messages\":[]}", "messages");
    expect_invalid("{" BASE ",\"messages\":{}}", "messages");
    expect_invalid("{" BASE ",\"messages\":[{\"role\":\"system\",\"content\":[{\"text\":\"x\"}]}]}",
                   "messages[0].role");
    expect_invalid("{" BASE ",\"messages\":[{\"content\":[{\"text\":\"x\"}]}]}",
                   "messages[0].role");
    expect_invalid("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":[]}]}",
                   "messages[0].content");
    expect_invalid("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                   "messages[0].content");
    expect_invalid("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"a\"}]},"
                   "{\"role\":\"user\",\"content\":[{\"text\":\"b\"},{\"image\":\"c\"}]}]}",
                   "messages[1].content[1]");
    expect_invalid("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":5}]}]}",
                   "messages[0].content[0]");
}

#define PBASE      BASE ",\"payload\":{}"
#define MSG(block) "{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":[" block "]}]}"

/* Regression: {"text":"hi","cachePoint":{...}} and "type":"text" inside a block passed, and
 * cachePoint, image, document and tool blocks were refused. Now botocore's shapes decide. */
static void job_converse_content_blocks(void **state)
{
    (void)state;
    static const char *const valid[] = {
        MSG("{\"text\":\"a\"},{\"cachePoint\":{\"type\":\"default\",\"ttl\":\"1h\"}}"),
        MSG("{\"image\":{\"format\":\"png\",\"source\":{\"bytes\":\"iVBORw0K\"}}}"),
        MSG("{\"document\":{\"format\":\"pdf\",\"name\":\"q3\",\"source\":{\"s3Location\":"
            "{\"uri\":\"s3://bkt/q3.pdf\",\"bucketOwner\":\"123456789012\"}}}},{\"text\":\"sum\"}"),
        MSG("{\"video\":{\"format\":\"mp4\",\"source\":{\"s3Location\":{\"uri\":\"s3://b/v\"}}}}"),
        MSG("{\"toolUse\":{\"toolUseId\":\"t-1\",\"name\":\"get\",\"input\":{\"a\":[1]}}}"),
        MSG("{\"toolResult\":{\"toolUseId\":\"t-1\",\"content\":[{\"json\":{\"ok\":true}},"
            "{\"text\":\"x\"}],\"status\":\"error\"}}"),
        MSG("{\"guardContent\":{\"text\":{\"text\":\"g\",\"qualifiers\":[\"query\"]}}}"),
        MSG("{\"reasoningContent\":{\"reasoningText\":{\"text\":\"r\",\"signature\":\"s\"}}}"),
    };
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        decoded_t d = decode(valid[i]);
        if (d.rc)
            fail_msg("case %zu refused: %s", i, d.err.msg);
        decoded_free(&d);
    }
    expect_invalid(MSG("{\"text\":\"hi\",\"cachePoint\":{\"type\":\"default\"}}"),
                   "messages[0].content[0]: must have exactly one member");
    expect_invalid(MSG("{\"type\":\"text\",\"text\":\"hi\"}"), "messages[0].content[0].type");
    expect_invalid(MSG("{}"), "messages[0].content[0]: must have exactly one member");
    expect_invalid(MSG("{\"cachePoint\":{\"type\":\"ephemeral\"}}"),
                   "messages[0].content[0].cachePoint.type: must be one of default");
    expect_invalid(MSG("{\"image\":{\"format\":\"png\",\"source\":{\"bytes\":\"not base64!\"}}}"),
                   "messages[0].content[0].image.source.bytes");
    expect_invalid(MSG("{\"image\":{\"format\":\"png\"}}"),
                   "messages[0].content[0].image.source: required");
    expect_invalid(
        MSG("{\"video\":{\"format\":\"mp4\",\"source\":{\"s3Location\":{\"uri\":\"http://x\"}}}}"),
        "s3Location.uri: must start with s3://");
    expect_invalid(MSG("{\"toolUse\":{\"toolUseId\":\"t 1\",\"name\":\"get\",\"input\":{}}}"),
                   "toolUse.toolUseId");
    expect_invalid(MSG("{\"citationsContent\":{}}"), "citationsContent: not a member");
}

static void job_converse_fields(void **state)
{
    (void)state;
    decoded_t d =
        decode("{" PBASE ",\"system\":[{\"text\":\"s\"},{\"cachePoint\":{\"type\":"
               "\"default\"}}],\"toolConfig\":{\"tools\":[{\"toolSpec\":{\"name\":"
               "\"f\",\"inputSchema\":{\"json\":{}}}}],\"toolChoice\":{\"any\":{}}},"
               "\"guardrailConfig\":{\"guardrailIdentifier\":\"g1\",\"guardrailVersion\":"
               "\"DRAFT\",\"trace\":\"enabled_full\"},\"serviceTier\":{\"type\":\"flex\"},"
               "\"tenant\":\"acme co\",\"requestMetadata\":{\"tenant\":\"acme co\"},"
               "\"stream\":false}");
    if (d.rc)
        fail_msg("refused: %s", d.err.msg);
    assert_non_null(d.job->system_blocks);
    assert_null(d.job->system);
    assert_false(d.job->stream);
    decoded_free(&d);
    expect_invalid("{" PBASE ",\"system\":[]}", "system");
    expect_invalid("{" PBASE ",\"system\":[{\"text\":\"\"}]}", "system[0].text");
    expect_invalid("{" PBASE ",\"toolConfig\":{}}", "toolConfig.tools: required");
    expect_invalid("{" PBASE ",\"toolConfig\":{\"tools\":[{\"toolSpec\":{\"name\":\"f\"}}]}}",
                   "toolConfig.tools[0].toolSpec.inputSchema: required");
    expect_invalid("{" PBASE ",\"guardrailConfig\":{\"trace\":\"on\"}}", "guardrailConfig.trace");
    expect_invalid("{" PBASE ",\"performanceConfig\":{\"latency\":\"fast\"}}",
                   "performanceConfig.latency");
    expect_invalid("{" PBASE ",\"additionalModelResponseFieldPaths\":[\"\"]}",
                   "additionalModelResponseFieldPaths[0]");
    expect_invalid("{" PBASE ",\"promptVariables\":{\"v\":{\"text\":1}}}",
                   "promptVariables.v.text");
    expect_invalid("{" PBASE ",\"serviceTier\":{}}", "serviceTier.type: required");
    expect_invalid("{" PBASE ",\"requestMetadata\":{\"k\":\"a;b\"}}", "requestMetadata.k");
    expect_invalid("{" PBASE ",\"tenant\":\"a;b\"}", "tenant");
    expect_invalid("{" PBASE ",\"tenant\":\"acme\",\"requestMetadata\":{\"tenant\":\"other\"}}",
                   "requestMetadata.tenant: differs");
    expect_invalid("{" PBASE ",\"stream\":1}", "stream");
    /* 16 entries of the job's own plus tenant: one too many for Bedrock. */
    char big[1024];
    size_t n =
        (size_t)snprintf(big, sizeof(big), "{" PBASE ",\"tenant\":\"t\",\"requestMetadata\":{");
    for (int i = 0; i < 16; i++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "%s\"k%d\":\"v\"", i ? "," : "", i);
    snprintf(big + n, sizeof(big) - n, "}}");
    expect_invalid(big, "16 entries");
}

/* Regression: "." and ".." were sent as path segments and changed the request path. */
static void job_model_id_pattern(void **state)
{
    (void)state;
    expect_invalid("{" PBASE ",\"model\":\".\"}", "model");
    expect_invalid("{" PBASE ",\"model\":\"..\"}", "model");
    expect_invalid("{" PBASE ",\"model\":\"a/../b\"}", "model");
    expect_invalid("{" PBASE ",\"model\":\"arn:aws:bedrock:us-east-1:1:foundation-model/x\"}",
                   "model");
    decoded_t d = decode("{" PBASE ",\"model\":\"arn:aws:bedrock:us-east-1:123456789012:"
                         "application-inference-profile/a1b2c3\"}");
    assert_int_equal(d.rc, 0);
    decoded_free(&d);
}

static void job_rejects_bad_inference(void **state)
{
    (void)state;
    expect_invalid("{" BASE "," MSG_OK ",\"inference\":{\"temperature\":1.5}}",
                   "inference.temperature");
    expect_invalid("{" BASE "," MSG_OK ",\"inference\":{\"temperature\":-0.1}}",
                   "inference.temperature");
    expect_invalid("{" BASE "," MSG_OK ",\"inference\":{\"top_p\":\"high\"}}", "inference.top_p");
    expect_invalid("{" BASE "," MSG_OK ",\"inference\":{\"max_tokens\":0}}",
                   "inference.max_tokens");
    expect_invalid("{" BASE "," MSG_OK ",\"inference\":{\"max_tokens\":200001}}",
                   "inference.max_tokens");
    expect_invalid("{" BASE "," MSG_OK ",\"inference\":{\"max_tokens\":1.5}}",
                   "inference.max_tokens");
    expect_invalid("{" BASE "," MSG_OK
                   ",\"inference\":{\"stop_sequences\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}}",
                   "inference.stop_sequences");
    expect_invalid("{" BASE "," MSG_OK ",\"inference\":{\"stop_sequences\":[\"a\",\"\"]}}",
                   "inference.stop_sequences[1]");
    expect_invalid("{" BASE "," MSG_OK ",\"inference\":[]}", "inference");
}

static void job_rejects_bad_strings(void **state)
{
    (void)state;
    expect_invalid("{" BASE ",\"created_at\":\"yesterday\",\"payload\":{}}", "created_at");
    expect_invalid("{" BASE ",\"created_at\":\"2026-11-28 02:08:43Z\",\"payload\":{}}",
                   "created_at");
    expect_invalid("{" BASE ",\"created_at\":\"2026-11-28T02:08:43\",\"payload\":{}}",
                   "created_at");
    expect_invalid("{" BASE ",\"created_at\":\"2026-11-28T02:08:43.Z\",\"payload\":{}}",
                   "created_at");
    expect_invalid("{" BASE ",\"created_at\":\"2026-13-28T02:08:43Z\",\"payload\":{}}",
                   "created_at");
    expect_invalid("{" BASE ",\"created_at\":1764295723,\"payload\":{}}", "created_at");
    expect_invalid("{" BASE ",\"reply_to\":\"bad topic!\",\"payload\":{}}", "reply_to");
    expect_invalid("{" BASE ",\"reply_to\":\"..\",\"payload\":{}}", "reply_to");
    expect_invalid("{" BASE ",\"reply_to\":\"\",\"payload\":{}}", "reply_to");
    expect_invalid("{" BASE ",\"traceparent\":\"00-abc-01\",\"payload\":{}}", "traceparent");
    expect_invalid("{" BASE ",\"traceparent\":\"" TP55 "0\",\"payload\":{}}", "traceparent");
    expect_invalid("{" BASE ",\"persona\":\"\",\"payload\":{}}", "persona");
    expect_invalid("{" BASE ",\"tenant\":42,\"payload\":{}}", "tenant");
}

static void job_rejects_bad_numbers(void **state)
{
    (void)state;
    expect_invalid("{" BASE ",\"timeout_ms\":0,\"payload\":{}}", "timeout_ms");
    expect_invalid("{" BASE ",\"timeout_ms\":3600001,\"payload\":{}}", "timeout_ms");
    expect_invalid("{" BASE ",\"timeout_ms\":\"45000\",\"payload\":{}}", "timeout_ms");
    expect_invalid("{" BASE ",\"attempt\":-1,\"payload\":{}}", "attempt");
    expect_invalid("{" BASE ",\"attempt\":101,\"payload\":{}}", "attempt");
    expect_invalid("{" BASE ",\"cache\":{\"bypass\":\"yes\"},\"payload\":{}}", "cache.bypass");
    expect_invalid("{" BASE ",\"cache\":{\"bypass\":1},\"payload\":{}}", "cache.bypass");
    expect_invalid("{" BASE ",\"cache\":{\"ttl_s\":-1},\"payload\":{}}", "cache.ttl_s");
    expect_invalid("{" BASE ",\"cache\":{\"ttl_s\":2592001},\"payload\":{}}", "cache.ttl_s");
    expect_invalid("{" BASE ",\"cache\":true,\"payload\":{}}", "cache");
}

static void job_rejects_duplicate_keys(void **state)
{
    (void)state;
    /* Well-formed JSON that is ambiguous: an invalid job, named by the repeated key, and no
     * id hint because not even "id" can be trusted. */
    decoded_t d =
        decode("{" BASE ",\"priority\":\"low\",\"priority\":\"critical\",\"payload\":{}}");
    assert_int_equal(d.rc, AIQ_EINVAL);
    assert_int_equal(d.reject, AIQ_JOB_INVALID);
    assert_null(d.job);
    assert_null(d.hint);
    assert_non_null(strstr(d.err.msg, "duplicate"));
    assert_non_null(strstr(d.err.msg, "priority"));
    decoded_free(&d);

    d = decode("{\"id\":\"a\",\"id\":\"b\",\"operation\":\"op\",\"payload\":{}}");
    assert_int_equal(d.reject, AIQ_JOB_INVALID);
    assert_null(d.hint);
    assert_non_null(strstr(d.err.msg, "\"id\""));
    decoded_free(&d);

    /* Nested objects too. */
    d = decode("{" BASE ",\"payload\":{\"k\":1,\"k\":2}}");
    assert_int_equal(d.reject, AIQ_JOB_INVALID);
    assert_non_null(strstr(d.err.msg, "\"k\""));
    decoded_free(&d);
}

static void job_id_hint_only_for_usable_id(void **state)
{
    (void)state;
    decoded_t d = decode("{\"id\":\"bad-1\",\"operation\":\"op\",\"priority\":\"urgent\","
                         "\"payload\":{}}");
    assert_int_equal(d.reject, AIQ_JOB_INVALID);
    assert_non_null(d.hint);
    assert_string_equal(d.hint, "bad-1");
    decoded_free(&d);

    d = decode("{\"operation\":\"op\",\"payload\":{}}");
    assert_int_equal(d.reject, AIQ_JOB_INVALID);
    assert_null(d.hint);
    decoded_free(&d);

    d = decode("{\"id\":\"not valid\",\"operation\":\"op\",\"payload\":{}}");
    assert_int_equal(d.reject, AIQ_JOB_INVALID);
    assert_null(d.hint);
    decoded_free(&d);

    d = decode("{\"id\":17,\"operation\":\"op\",\"payload\":{}}");
    assert_null(d.hint);
    decoded_free(&d);

    d = decode("[\"id\"]");
    assert_int_equal(d.reject, AIQ_JOB_INVALID);
    assert_null(d.hint);
    decoded_free(&d);

    /* A caller that does not want the hint may pass NULL. */
    aiq_job_t *job = (aiq_job_t *)&d;
    aiq_job_reject_t why = AIQ_JOB_OK;
    const char *text = "{\"id\":\"bad-1\",\"operation\":\"op\"}";
    assert_int_equal(aiq_job_decode(text, strlen(text), MAX_LEN, &job, &why, NULL, NULL),
                     AIQ_EINVAL);
    assert_null(job);
    assert_int_equal(why, AIQ_JOB_INVALID);
}

static void job_validate_accepts_and_rejects(void **state)
{
    (void)state;
    json_t *doc = json_pack("{s:s, s:s, s:{}}", "id", "job-1", "operation", "op", "payload");
    assert_non_null(doc);
    aiq_err_t err = {0};
    assert_int_equal(aiq_job_validate(doc, &err), 0);

    json_object_set_new(doc, "attempt", json_integer(-1));
    assert_int_equal(aiq_job_validate(doc, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "attempt"));
    /* The document is borrowed, not consumed or changed. */
    assert_int_equal(json_integer_value(json_object_get(doc, "attempt")), -1);
    json_decref(doc);

    assert_int_equal(aiq_job_validate(NULL, NULL), AIQ_EINVAL);
}

static void job_reject_names(void **state)
{
    (void)state;
    assert_string_equal(aiq_job_reject_name(AIQ_JOB_OK), "ok");
    assert_string_equal(aiq_job_reject_name(AIQ_JOB_TOO_LARGE), "too_large");
    assert_string_equal(aiq_job_reject_name(AIQ_JOB_NOT_JSON), "not_json");
    assert_string_equal(aiq_job_reject_name(AIQ_JOB_INVALID), "invalid_job");
}

/* Issue #17: the epoch counted as "no created_at", so such a job succeeded instead of
 * expiring. */
static void job_epoch_is_a_valid_time(void **state)
{
    (void)state;
    decoded_t d = decode("{" BASE ",\"created_at\":\"1970-01-01T00:00:00Z\",\"timeout_ms\":5000,"
                         "\"payload\":{}}");
    assert_int_equal(d.rc, 0);
    assert_true(d.job->has_created_at);
    assert_int_equal(d.job->created_at_ms, 0);
    /* received now: the deadline is 5 s after the epoch, long past */
    assert_int_equal(aiq_job_deadline(d.job, INT64_C(1795831723000), 45000, NULL), 5000);
    decoded_free(&d);
    d = decode("{" BASE ",\"payload\":{}}");
    assert_false(d.job->has_created_at);
    int64_t timeout = 0;
    assert_int_equal(aiq_job_deadline(d.job, 1000, 45000, &timeout), 46000);
    assert_int_equal(timeout, 45000);
    decoded_free(&d);
}

static void job_future_created_at_beyond_skew_is_refused(void **state)
{
    (void)state;
    const int64_t now = INT64_C(1795831723000); /* 2026-11-28T02:08:43Z */
    const int64_t skew = 300000;
    static const struct {
        const char *created_at;
        int ok;
    } cases[] = {
        {"2026-11-28T02:13:43Z", 1},     /* exactly the skew ahead */
        {"2026-11-28T02:13:43.001Z", 0}, /* 1 ms more */
        {"2026-11-28T02:08:43Z", 1},
        {"1970-01-01T00:00:00Z", 1}, /* the past is not refused: it expires */
        {"9999-12-31T23:59:59.999Z", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text), "{" BASE ",\"created_at\":\"%s\",\"payload\":{}}",
                 cases[i].created_at);
        decoded_t d = decode(text);
        assert_int_equal(d.rc, 0);
        aiq_err_t err = {0};
        int rc = aiq_job_check_time(d.job, now, skew, &err);
        assert_int_equal(rc, cases[i].ok ? 0 : AIQ_EINVAL);
        if (!cases[i].ok) {
            assert_non_null(strstr(err.msg, "created_at"));
            assert_non_null(strstr(err.msg, "worker.max_clock_skew_ms"));
        }
        decoded_free(&d);
    }
    decoded_t d = decode("{" BASE ",\"payload\":{}}");
    assert_int_equal(aiq_job_check_time(d.job, now, 0, NULL), 0);
    decoded_free(&d);
}

/* Issue #17: a created_at of 9999-12-31 meant the deadline never came. */
static void job_deadline_capped_by_record_timestamp(void **state)
{
    (void)state;
    const int64_t ts = INT64_C(1795831723000);
    decoded_t d = decode("{" BASE ",\"created_at\":\"9999-12-31T23:59:59Z\",\"timeout_ms\":3600000,"
                         "\"payload\":{}}");
    assert_int_equal(d.rc, 0);
    assert_int_equal(aiq_job_deadline(d.job, ts, 45000, NULL), ts + AIQ_JOB_TIMEOUT_MAX_MS);
    decoded_free(&d);
    /* 4 min ahead (within the skew) with a 1 h timeout: still capped at record + 1 h */
    d = decode("{" BASE ",\"created_at\":\"2026-11-28T02:12:43Z\",\"timeout_ms\":3600000,"
               "\"payload\":{}}");
    assert_int_equal(aiq_job_deadline(d.job, ts, 45000, NULL), ts + AIQ_JOB_TIMEOUT_MAX_MS);
    decoded_free(&d);
    /* a short timeout ahead by 4 min: created_at + timeout, below the cap */
    d = decode("{" BASE ",\"created_at\":\"2026-11-28T02:12:43Z\",\"timeout_ms\":1000,"
               "\"payload\":{}}");
    assert_int_equal(aiq_job_deadline(d.job, ts, 45000, NULL), ts + 240000 + 1000);
    decoded_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(job_decodes_minimal),
        cmocka_unit_test(job_decodes_full),
        cmocka_unit_test(job_decodes_priorities_and_times),
        cmocka_unit_test(job_id_valid_charset_and_length),
        cmocka_unit_test(job_rejects_too_large),
        cmocka_unit_test(job_rejects_not_json),
        cmocka_unit_test(job_rejects_non_object),
        cmocka_unit_test(job_rejects_bad_identity),
        cmocka_unit_test(job_rejects_bad_request),
        cmocka_unit_test(job_rejects_bad_messages),
        cmocka_unit_test(job_converse_content_blocks),
        cmocka_unit_test(job_converse_fields),
        cmocka_unit_test(job_model_id_pattern),
        cmocka_unit_test(job_rejects_bad_inference),
        cmocka_unit_test(job_rejects_bad_strings),
        cmocka_unit_test(job_rejects_bad_numbers),
        cmocka_unit_test(job_rejects_duplicate_keys),
        cmocka_unit_test(job_id_hint_only_for_usable_id),
        cmocka_unit_test(job_validate_accepts_and_rejects),
        cmocka_unit_test(job_reject_names),
        cmocka_unit_test(job_epoch_is_a_valid_time),
        cmocka_unit_test(job_future_created_at_beyond_skew_is_refused),
        cmocka_unit_test(job_deadline_capped_by_record_timestamp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
