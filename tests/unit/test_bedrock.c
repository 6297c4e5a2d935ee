/* Bedrock requests and responses: every model family's request shape and response reading,
 * the Converse pass-through, what a request cannot carry, error classification (every error
 * shape of botocore's model and the unmodelled ones), the signed Host, endpoint resolution. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "bedrock.h"
#include "converse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const aiq_sigv4_creds_t CREDS = {"AKIDEXAMPLE", "secret", NULL, NULL};

static aiq_job_t *job_of(const char *json)
{
    aiq_job_t *job = NULL;
    aiq_job_reject_t why;
    aiq_err_t err = {0};
    if (aiq_job_decode(json, strlen(json), 1 << 20, &job, &why, NULL, &err))
        fail_msg("job does not decode: %s", err.msg);
    return job;
}

static aiq_bedrock_conf_t conf_of(const char *endpoint)
{
    aiq_bedrock_conf_t c = {.endpoint = endpoint,
                            .region = "us-east-1",
                            .default_model = "anthropic.claude-3-haiku-20240307-v1:0",
                            .default_max_tokens = 256};
    return c;
}

/* Builds job against endpoint; returns the request body (caller decrefs), fills call. */
static json_t *build(const char *endpoint, const char *json, aiq_bedrock_call_t *call)
{
    aiq_bedrock_conf_t conf = conf_of(endpoint);
    aiq_job_t *job = job_of(json);
    aiq_err_t err = {0};
    if (aiq_bedrock_build(&conf, &CREDS, job, 1700000000, call, &err))
        fail_msg("build failed: %s", err.msg);
    json_t *body = json_loads(call->body, 0, NULL);
    aiq_job_free(job);
    assert_non_null(body);
    return body;
}

/* The build error of json (it must fail with AIQ_EINVAL) */
static void build_refused(const char *json, const char *want_in_msg)
{
    aiq_bedrock_conf_t conf = conf_of("https://bedrock-runtime.us-east-1.amazonaws.com");
    aiq_job_t *job = job_of(json);
    aiq_bedrock_call_t call;
    aiq_err_t err = {0};
    int rc = aiq_bedrock_build(&conf, &CREDS, job, 1700000000, &call, &err);
    aiq_job_free(job);
    if (rc != AIQ_EINVAL || !strstr(err.msg, want_in_msg))
        fail_msg("rc %d, message '%s', want EINVAL naming '%s'", rc, err.msg, want_in_msg);
}

static const char *header_value(struct curl_slist *h, const char *name)
{
    size_t n = strlen(name);
    for (; h; h = h->next)
        if (strncmp(h->data, name, n) == 0 && h->data[n] == ':')
            return h->data + n + 2;
    return NULL;
}

static const char *str_at(json_t *root, const char *path)
{
    json_t *v = root;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok && v;
         tok = strtok_r(NULL, ".", &save)) {
        char *end;
        long idx = strtol(tok, &end, 10);
        v = *end == '\0' ? json_array_get(v, (size_t)idx) : json_object_get(v, tok);
    }
    return json_string_value(v);
}

static json_int_t int_at(json_t *root, const char *key)
{
    return json_integer_value(json_object_get(root, key));
}

#define CONVO                                                                                      \
    "\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"hi\"}]},"                           \
    "{\"role\":\"assistant\",\"content\":[{\"text\":\"hello\"}]},"                                 \
    "{\"role\":\"user\",\"content\":[{\"text\":\"rate 4.1\"}]}],\"system\":\"be brief\","          \
    "\"inference\":{\"max_tokens\":99,\"temperature\":0.5,\"top_p\":0.9,"                          \
    "\"stop_sequences\":[\"END\"]}"

static json_t *invoke(const char *model, aiq_bedrock_call_t *call)
{
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"id\":\"j1\",\"operation\":\"x\",\"api\":\"invoke\","
             "\"model\":\"%s\"," CONVO "}",
             model);
    return build("https://bedrock-runtime.us-east-1.amazonaws.com", json, call);
}

/* ---- request shapes, one per family ---------------------------------------------------- */

static void bedrock_invoke_anthropic_shape(void **state)
{
    (void)state;
    aiq_bedrock_call_t call;
    json_t *b = invoke("anthropic.claude-3-haiku-20240307-v1:0", &call);
    assert_int_equal(call.wire.family, AIQ_FAMILY_ANTHROPIC);
    assert_string_equal(str_at(b, "anthropic_version"), "bedrock-2023-05-31");
    assert_int_equal(int_at(b, "max_tokens"), 99);
    assert_string_equal(str_at(b, "messages.0.content.0.type"), "text");
    assert_string_equal(str_at(b, "messages.2.content.0.text"), "rate 4.1");
    assert_string_equal(str_at(b, "system.0.text"), "be brief");
    assert_string_equal(str_at(b, "stop_sequences.0"), "END");
    assert_true(strstr(call.url, "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke"));
    json_decref(b);
    aiq_bedrock_call_free(&call);
}

static void bedrock_invoke_nova_shape(void **state)
{
    (void)state;
    aiq_bedrock_call_t call;
    json_t *b = invoke("us.amazon.nova-lite-v1:0", &call);
    assert_int_equal(call.wire.family, AIQ_FAMILY_NOVA);
    assert_string_equal(str_at(b, "schemaVersion"), "messages-v1");
    assert_int_equal(int_at(json_object_get(b, "inferenceConfig"), "max_new_tokens"), 99);
    assert_string_equal(str_at(b, "system.0.text"), "be brief");
    assert_string_equal(str_at(b, "messages.1.content.0.text"), "hello");
    assert_null(json_object_get(b, "anthropic_version"));
    json_decref(b);
    aiq_bedrock_call_free(&call);
}

static void bedrock_invoke_titan_shape(void **state)
{
    (void)state;
    aiq_bedrock_call_t call;
    json_t *b = invoke("amazon.titan-text-express-v1", &call);
    assert_int_equal(call.wire.family, AIQ_FAMILY_TITAN);
    assert_string_equal(str_at(b, "inputText"),
                        "User: be brief\n\nhi\n\nBot: hello\n\nUser: rate 4.1\n\nBot:");
    json_t *cfg = json_object_get(b, "textGenerationConfig");
    assert_int_equal(int_at(cfg, "maxTokenCount"), 99);
    assert_string_equal(str_at(cfg, "stopSequences.0"), "END");
    assert_null(json_object_get(b, "anthropic_version"));
    assert_null(json_object_get(b, "messages"));
    json_decref(b);
    aiq_bedrock_call_free(&call);
}

static void bedrock_invoke_llama_shape(void **state)
{
    (void)state;
    aiq_bedrock_call_t call;
    json_t *b = invoke("meta.llama3-8b-instruct-v1:0", &call);
    assert_int_equal(call.wire.family, AIQ_FAMILY_LLAMA);
    assert_string_equal(str_at(b, "prompt"),
                        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nbe "
                        "brief<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\nhello<|eot_id|>"
                        "<|start_header_id|>user<|end_header_id|>\n\nrate 4.1<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n");
    assert_int_equal(int_at(b, "max_gen_len"), 99);
    json_decref(b);
    aiq_bedrock_call_free(&call);
}

static void bedrock_invoke_mistral_shape(void **state)
{
    (void)state;
    aiq_bedrock_call_t call;
    json_t *b = invoke("mistral.mistral-7b-instruct-v0:2", &call);
    assert_int_equal(call.wire.family, AIQ_FAMILY_MISTRAL);
    assert_string_equal(str_at(b, "prompt"),
                        "<s>[INST] be brief\n\nhi [/INST] hello</s>[INST] rate 4.1 [/INST]");
    assert_int_equal(int_at(b, "max_tokens"), 99);
    assert_string_equal(str_at(b, "stop.0"), "END");
    json_decref(b);
    aiq_bedrock_call_free(&call);
}

static void bedrock_invoke_cohere_shape(void **state)
{
    (void)state;
    aiq_bedrock_call_t call;
    json_t *b = invoke("cohere.command-r-v1:0", &call);
    assert_int_equal(call.wire.family, AIQ_FAMILY_COHERE);
    assert_string_equal(str_at(b, "message"), "rate 4.1");
    assert_string_equal(str_at(b, "preamble"), "be brief");
    assert_string_equal(str_at(b, "chat_history.0.role"), "USER");
    assert_string_equal(str_at(b, "chat_history.1.role"), "CHATBOT");
    assert_string_equal(str_at(b, "chat_history.1.message"), "hello");
    assert_string_equal(str_at(b, "stop_sequences.0"), "END");
    json_decref(b);
    aiq_bedrock_call_free(&call);
    b = invoke("cohere.command-text-v14", &call);
    assert_int_equal(call.wire.family, AIQ_FAMILY_COHERE_TEXT);
    assert_non_null(str_at(b, "prompt"));
    json_decref(b);
    aiq_bedrock_call_free(&call);
}

static void bedrock_invoke_own_body_passed_through(void **state)
{
    (void)state;
    aiq_bedrock_call_t call;
    json_t *b = build("https://h",
                      "{\"id\":\"j\",\"operation\":\"x\",\"api\":\"invoke\","
                      "\"model\":\"acme.thing-v1\",\"body\":{\"inputText\":\"x\",\"k\":[1,2]}}",
                      &call);
    assert_true(call.wire.own_body);
    assert_string_equal(call.body, "{\"inputText\":\"x\",\"k\":[1,2]}");
    json_decref(b);
    aiq_bedrock_call_free(&call);
}

/* ---- what a request cannot carry is refused by name ----------------------------------- */

static void bedrock_refuses_what_it_cannot_carry(void **state)
{
    (void)state;
    build_refused("{\"id\":\"j\",\"operation\":\"x\",\"api\":\"invoke\",\"model\":\"amazon.titan-"
                  "text-express-v1\",\"payload\":{},\"toolConfig\":{\"tools\":[{\"toolSpec\":"
                  "{\"name\":\"f\",\"inputSchema\":{\"json\":{}}}}]}}",
                  "toolConfig");
    build_refused("{\"id\":\"j\",\"operation\":\"x\",\"api\":\"invoke\",\"model\":\"acme.x-v1\","
                  "\"payload\":{}}",
                  "does not know the InvokeModel body");
    build_refused("{\"id\":\"j\",\"operation\":\"x\",\"api\":\"invoke\",\"model\":\"meta.llama3-"
                  "8b-instruct-v1:0\",\"messages\":[{\"role\":\"user\",\"content\":[{\"image\":"
                  "{\"format\":\"png\",\"source\":{\"bytes\":\"AAAA\"}}}]}]}",
                  "messages[0].content[0].image");
    build_refused("{\"id\":\"j\",\"operation\":\"x\",\"api\":\"invoke\",\"model\":\"acme.x-v1\","
                  "\"body\":{},\"inference\":{\"max_tokens\":5}}",
                  "inference");
    build_refused("{\"id\":\"j\",\"operation\":\"x\",\"api\":\"invoke\",\"model\":"
                  "\"anthropic.claude-v2\",\"payload\":{},\"stream\":true}",
                  "stream");
}

/* InvokeModel takes the guardrail, the latency setting and the service tier as headers. */
static void bedrock_invoke_headers(void **state)
{
    (void)state;
    aiq_bedrock_call_t call;
    json_t *b = build("https://h",
                      "{\"id\":\"j\",\"operation\":\"x\",\"api\":\"invoke\","
                      "\"model\":\"amazon.titan-text-express-v1\",\"payload\":{},"
                      "\"guardrailConfig\":{\"guardrailIdentifier\":\"g1\",\"guardrailVersion\":"
                      "\"DRAFT\",\"trace\":\"enabled_full\"},\"performanceConfig\":{\"latency\":"
                      "\"optimized\"},\"serviceTier\":{\"type\":\"flex\"}}",
                      &call);
    static const char *const want[][2] = {
        {"X-Amzn-Bedrock-GuardrailIdentifier", "g1"},
        {"X-Amzn-Bedrock-GuardrailVersion", "DRAFT"},
        {"X-Amzn-Bedrock-Trace", "ENABLED_FULL"},
        {"X-Amzn-Bedrock-PerformanceConfig-Latency", "optimized"},
        {"X-Amzn-Bedrock-Service-Tier", "flex"},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const char *v = header_value(call.headers, want[i][0]);
        if (!v || strcmp(v, want[i][1]))
            fail_msg("%s: %s, want %s", want[i][0], v ? v : "(none)", want[i][1]);
    }
    assert_null(json_object_get(b, "guardrailConfig")); /* not in the family's body */
    json_decref(b);
    aiq_bedrock_call_free(&call);
}

/* ---- Converse: the surface passed through ----------------------------------------------- */

static void bedrock_converse_passes_fields_through(void **state)
{
    (void)state;
    aiq_bedrock_call_t call;
    json_t *b = build(
        "https://h",
        "{\"id\":\"j\",\"operation\":\"x\",\"tenant\":\"acme\",\"user_id\":\"u-1\","
        "\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"hi\"},{\"cachePoint\":"
        "{\"type\":\"default\"}}]}],"
        "\"system\":[{\"text\":\"sys\"},{\"cachePoint\":{\"type\":\"default\"}}],"
        "\"toolConfig\":{\"tools\":[{\"toolSpec\":{\"name\":\"get\",\"inputSchema\":{\"json\":"
        "{\"type\":\"object\"}}}}]},"
        "\"guardrailConfig\":{\"guardrailIdentifier\":\"abc\",\"guardrailVersion\":\"1\","
        "\"trace\":\"enabled\"},"
        "\"additionalModelRequestFields\":{\"top_k\":5},"
        "\"additionalModelResponseFieldPaths\":[\"/stop_sequence\"],"
        "\"performanceConfig\":{\"latency\":\"optimized\"},"
        "\"promptVariables\":{\"v\":{\"text\":\"t\"}},"
        "\"requestMetadata\":{\"team\":\"a\"},\"serviceTier\":{\"type\":\"flex\"}}",
        &call);
    assert_string_equal(str_at(b, "toolConfig.tools.0.toolSpec.name"), "get");
    assert_string_equal(str_at(b, "guardrailConfig.trace"), "enabled");
    assert_int_equal(int_at(json_object_get(b, "additionalModelRequestFields"), "top_k"), 5);
    assert_string_equal(str_at(b, "additionalModelResponseFieldPaths.0"), "/stop_sequence");
    assert_string_equal(str_at(b, "performanceConfig.latency"), "optimized");
    assert_string_equal(str_at(b, "promptVariables.v.text"), "t");
    assert_string_equal(str_at(b, "serviceTier.type"), "flex");
    assert_string_equal(str_at(b, "requestMetadata.team"), "a");
    assert_string_equal(str_at(b, "requestMetadata.tenant"), "acme");
    assert_string_equal(str_at(b, "requestMetadata.user_id"), "u-1");
    assert_string_equal(str_at(b, "system.1.cachePoint.type"), "default");
    assert_string_equal(str_at(b, "messages.0.content.1.cachePoint.type"), "default");
    assert_true(strstr(call.url, "/converse"));
    json_decref(b);
    aiq_bedrock_call_free(&call);
}

/* Regression: payload floats were written with 17 digits ("4.0999999999999996"). */
static void bedrock_payload_numbers_shortest(void **state)
{
    (void)state;
    aiq_bedrock_call_t call;
    json_t *b = build("https://h",
                      "{\"id\":\"j\",\"operation\":\"x\",\"payload\":{\"rating\":4.1,\"n\":3,"
                      "\"r\":0.30000000000000004,\"w\":2.0}}",
                      &call);
    const char *text = str_at(b, "messages.0.content.0.text");
    assert_non_null(strstr(text, "{\"n\":3,\"r\":0.30000000000000004,\"rating\":4.1,\"w\":2.0}"));
    json_decref(b);
    aiq_bedrock_call_free(&call);
}

static void bedrock_operation_cache_point(void **state)
{
    (void)state;
    char path[] = "/tmp/aiq-test-ops-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *doc = "{\"operations\":{\"*\":{\"system\":\"static\"},\"cached\":{\"system\":"
                      "\"static system\",\"cache_point\":true}}}";
    assert_int_equal(write(fd, doc, strlen(doc)), (ssize_t)strlen(doc));
    close(fd);
    aiq_ops_t *ops = NULL;
    aiq_err_t err = {0};
    int rc = aiq_ops_load(&ops, path, AIQ_OPS_UNKNOWN_ALLOW, &err);
    unlink(path);
    if (rc)
        fail_msg("%s", err.msg);
    aiq_bedrock_conf_t conf = conf_of("https://h");
    conf.ops = ops;
    const char *names[] = {"cached", "other"};
    for (int i = 0; i < 2; i++) {
        char json[128];
        snprintf(json, sizeof(json), "{\"id\":\"j\",\"operation\":\"%s\",\"payload\":{}}",
                 names[i]);
        aiq_job_t *job = job_of(json);
        aiq_bedrock_call_t call;
        assert_int_equal(aiq_bedrock_build(&conf, &CREDS, job, 1700000000, &call, &err), 0);
        json_t *b = json_loads(call.body, 0, NULL);
        json_t *sys = json_object_get(b, "system");
        assert_int_equal(json_array_size(sys), i == 0 ? 2 : 1);
        if (i == 0) {
            assert_string_equal(str_at(b, "system.0.text"), "static system");
            assert_string_equal(str_at(b, "system.1.cachePoint.type"), "default");
        }
        json_decref(b);
        aiq_bedrock_call_free(&call);
        aiq_job_free(job);
    }
    aiq_ops_free(ops);
}

/* ---- responses -------------------------------------------------------------------------- */

static void parse(aiq_job_api_t api, aiq_bedrock_family_t fam, bool own, const char *body,
                  aiq_bedrock_reply_t *r)
{
    aiq_bedrock_wire_t w = {api, fam, own, false};
    aiq_bedrock_resp_t resp = {body, strlen(body), NULL, NULL, NULL, NULL};
    aiq_err_t err = {0};
    assert_int_equal(aiq_bedrock_parse(&w, &resp, r, &err), 0);
}

typedef struct fam_case {
    aiq_bedrock_family_t fam;
    const char *body;
    const char *text, *stop;
    int64_t in, out;
} fam_case_t;

static void bedrock_invoke_families_read(void **state)
{
    (void)state;
    static const fam_case_t cases[] = {
        {AIQ_FAMILY_ANTHROPIC,
         "{\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}],"
         "\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":7,\"output_tokens\":2}}",
         "ab", "end_turn", 7, 2},
        {AIQ_FAMILY_NOVA,
         "{\"output\":{\"message\":{\"role\":\"assistant\",\"content\":[{\"text\":\"n\"}]}},"
         "\"stopReason\":\"max_tokens\",\"usage\":{\"inputTokens\":3,\"outputTokens\":4,"
         "\"totalTokens\":7}}",
         "n", "max_tokens", 3, 4},
        {AIQ_FAMILY_TITAN,
         "{\"inputTextTokenCount\":5,\"results\":[{\"tokenCount\":6,\"outputText\":\"t\","
         "\"completionReason\":\"FINISH\"}]}",
         "t", "end_turn", 5, 6},
        {AIQ_FAMILY_LLAMA,
         "{\"generation\":\"l\",\"prompt_token_count\":8,\"generation_token_count\":9,"
         "\"stop_reason\":\"length\"}",
         "l", "max_tokens", 8, 9},
        {AIQ_FAMILY_MISTRAL, "{\"outputs\":[{\"text\":\"m\",\"stop_reason\":\"stop\"}]}", "m",
         "end_turn", 0, 0},
        {AIQ_FAMILY_COHERE,
         "{\"text\":\"c\",\"finish_reason\":\"COMPLETE\",\"generation_id\":\"g\"}", "c", "end_turn",
         0, 0},
        {AIQ_FAMILY_COHERE_TEXT,
         "{\"generations\":[{\"text\":\"ct\",\"finish_reason\":\"MAX_TOKENS\"}]}", "ct",
         "max_tokens", 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        aiq_bedrock_reply_t r;
        parse(AIQ_API_INVOKE, cases[i].fam, false, cases[i].body, &r);
        if (strcmp(r.text, cases[i].text) || strcmp(r.stop_reason, cases[i].stop) ||
            r.input_tokens != cases[i].in || r.output_tokens != cases[i].out || r.extra)
            fail_msg("%s: text '%s' stop '%s' in %lld out %lld extra %p",
                     aiq_bedrock_family_name(cases[i].fam), r.text, r.stop_reason,
                     (long long)r.input_tokens, (long long)r.output_tokens, (void *)r.extra);
        assert_int_equal(r.total_tokens, cases[i].in + cases[i].out);
        aiq_bedrock_reply_free(&r);
    }
}

/* Regression: a valid Titan 200 was read as an Anthropic reply, failed as bad_response and
 * opened the breaker. Now any 200 is an answer; one aiq cannot read is returned raw. */
static void bedrock_unreadable_200_is_an_answer(void **state)
{
    (void)state;
    aiq_bedrock_reply_t r;
    const char *body = "{\"results\":[{\"outputText\":\"t\"}]}";
    parse(AIQ_API_INVOKE, AIQ_FAMILY_ANTHROPIC, false, body, &r);
    assert_string_equal(r.text, "");
    assert_true(json_is_true(json_object_get(r.extra, "unparsed")));
    assert_string_equal(json_string_value(json_object_get(r.extra, "raw")), body);
    aiq_bedrock_reply_free(&r);
    parse(AIQ_API_CONVERSE, AIQ_FAMILY_UNKNOWN, false, "not json", &r);
    assert_true(json_is_true(json_object_get(r.extra, "unparsed")));
    assert_string_equal(json_string_value(json_object_get(r.extra, "raw")), "not json");
    aiq_bedrock_reply_free(&r);
}

static void bedrock_own_body_raw_intact(void **state)
{
    (void)state;
    aiq_bedrock_reply_t r;
    const char *body = "{\"generation\":\"x\",\"score\":4.0999999999999996}";
    parse(AIQ_API_INVOKE, AIQ_FAMILY_LLAMA, true, body, &r);
    assert_string_equal(r.text, "x");
    assert_string_equal(json_string_value(json_object_get(r.extra, "raw")), body);
    assert_null(json_object_get(r.extra, "unparsed"));
    aiq_bedrock_reply_free(&r);
    parse(AIQ_API_INVOKE, AIQ_FAMILY_UNKNOWN, true, "{\"anything\":1}", &r);
    assert_string_equal(json_string_value(json_object_get(r.extra, "raw")), "{\"anything\":1}");
    aiq_bedrock_reply_free(&r);
}

static void bedrock_converse_reply_carries_everything(void **state)
{
    (void)state;
    aiq_bedrock_reply_t r;
    parse(
        AIQ_API_CONVERSE, AIQ_FAMILY_UNKNOWN, false,
        "{\"output\":{\"message\":{\"role\":\"assistant\",\"content\":[{\"text\":\"let me "
        "look\"},{\"toolUse\":{\"toolUseId\":\"t1\",\"name\":\"get\",\"input\":{\"q\":1}}}]}},"
        "\"stopReason\":\"tool_use\",\"usage\":{\"inputTokens\":11,\"outputTokens\":3,"
        "\"cacheReadInputTokens\":1500,\"cacheWriteInputTokens\":500,\"totalTokens\":2014},"
        "\"trace\":{\"guardrail\":{\"modelOutput\":[\"x\"]}},"
        "\"additionalModelResponseFields\":{\"stop_sequence\":null},\"metrics\":{\"latencyMs\":5}}",
        &r);
    assert_string_equal(r.text, "let me look");
    assert_string_equal(r.stop_reason, "tool_use");
    assert_int_equal(r.input_tokens, 11);
    assert_int_equal(r.output_tokens, 3);
    assert_int_equal(r.cache_read_tokens, 1500);
    assert_int_equal(r.cache_write_tokens, 500);
    assert_int_equal(r.total_tokens, 2014);
    assert_string_equal(str_at(r.extra, "content.1.toolUse.name"), "get");
    assert_non_null(json_object_get(json_object_get(r.extra, "trace"), "guardrail"));
    assert_true(json_is_object(json_object_get(r.extra, "additional_model_response_fields")));
    aiq_bedrock_reply_t copy;
    assert_int_equal(aiq_bedrock_reply_copy(&copy, &r), 0);
    aiq_bedrock_reply_free(&r);
    assert_string_equal(str_at(copy.extra, "content.1.toolUse.toolUseId"), "t1");
    aiq_bedrock_reply_free(&copy);
    const char *stops[] = {"guardrail_intervened", "content_filtered", "malformed_tool_use",
                           "model_context_window_exceeded"};
    for (size_t i = 0; i < 4; i++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"output\":{\"message\":{\"content\":[]}},\"stopReason\":\"%s\"}", stops[i]);
        parse(AIQ_API_CONVERSE, AIQ_FAMILY_UNKNOWN, false, body, &r);
        assert_string_equal(r.stop_reason, stops[i]);
        aiq_bedrock_reply_free(&r);
    }
}

static void bedrock_token_headers_win(void **state)
{
    (void)state;
    aiq_bedrock_wire_t w = {AIQ_API_INVOKE, AIQ_FAMILY_MISTRAL, false, false};
    const char *body = "{\"outputs\":[{\"text\":\"m\",\"stop_reason\":\"stop\"}]}";
    aiq_bedrock_resp_t resp = {body, strlen(body), "12", "4", "100", "bogus"};
    aiq_bedrock_reply_t r;
    aiq_err_t err = {0};
    assert_int_equal(aiq_bedrock_parse(&w, &resp, &r, &err), 0);
    assert_int_equal(r.input_tokens, 12);
    assert_int_equal(r.output_tokens, 4);
    assert_int_equal(r.cache_read_tokens, 100);
    assert_int_equal(r.cache_write_tokens, 0);
    assert_int_equal(r.total_tokens, 116);
    aiq_bedrock_reply_free(&r);
}

/* Regression: a response claiming INT64_MAX input tokens overflowed total_tokens (signed
 * overflow, UBSan) when the result was encoded; counts are now bounded at the parse. */
static void bedrock_parse_token_counts_bounded(void **state)
{
    (void)state;
    aiq_bedrock_reply_t r;
    parse(AIQ_API_CONVERSE, AIQ_FAMILY_UNKNOWN, false,
          "{\"output\":{\"message\":{\"content\":[{\"text\":\"hi\"}]}},"
          "\"usage\":{\"inputTokens\":9223372036854775807,\"outputTokens\":-5}}",
          &r);
    assert_int_equal(r.input_tokens, 0);
    assert_int_equal(r.output_tokens, 0);
    assert_string_equal(r.text, "hi");
    aiq_bedrock_reply_free(&r);
    parse(AIQ_API_INVOKE, AIQ_FAMILY_ANTHROPIC, false,
          "{\"content\":[{\"type\":\"text\",\"text\":\"a\"}],"
          "\"usage\":{\"input_tokens\":1099511627776,\"output_tokens\":12}}",
          &r);
    assert_int_equal(r.input_tokens, AIQ_BEDROCK_TOKENS_MAX);
    assert_int_equal(r.output_tokens, 12);
    aiq_bedrock_reply_free(&r);
}

/* ---- errors ------------------------------------------------------------------------------ */

typedef struct row {
    long status;
    const char *type;
    int transport;
    aiq_bedrock_class_t want;
    const char *kind;
} row_t;

static const row_t table[] = {
    {200, "", 0, AIQ_BEDROCK_OK, "none"},
    /* every error shape of botocore's bedrock-runtime model, with its status */
    {400, "ValidationException", 0, AIQ_BEDROCK_FINAL, "ValidationException"},
    {400, "ServiceQuotaExceededException", 0, AIQ_BEDROCK_FINAL, "ServiceQuotaExceededException"},
    {403, "AccessDeniedException", 0, AIQ_BEDROCK_FINAL, "AccessDeniedException"},
    {404, "ResourceNotFoundException", 0, AIQ_BEDROCK_FINAL, "ResourceNotFoundException"},
    {408, "ModelTimeoutException", 0, AIQ_BEDROCK_MODEL_ERROR, "ModelTimeoutException"},
    {424, "ModelErrorException", 0, AIQ_BEDROCK_MODEL_ERROR, "ModelErrorException"},
    {429, "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/", 0,
     AIQ_BEDROCK_THROTTLED, "ThrottlingException"},
    {429, "ModelNotReadyException", 0, AIQ_BEDROCK_NOT_READY, "ModelNotReadyException"},
    {500, "InternalServerException", 0, AIQ_BEDROCK_RETRY, "InternalServerException"},
    {503, "ServiceUnavailableException:x", 0, AIQ_BEDROCK_RETRY, "ServiceUnavailableException"},
    /* unmodelled: what the front ends and the auth layer send */
    {403, "InvalidSignatureException", 0, AIQ_BEDROCK_FINAL, "InvalidSignatureException"},
    {403, "ExpiredTokenException", 0, AIQ_BEDROCK_CREDS, "ExpiredTokenException"},
    {403, "UnrecognizedClientException", 0, AIQ_BEDROCK_FINAL, "UnrecognizedClientException"},
    {403, "", 0, AIQ_BEDROCK_FINAL, "http_403"},
    {429, "", 0, AIQ_BEDROCK_THROTTLED, "http_429"},
    {502, "", 0, AIQ_BEDROCK_RETRY, "http_502"},
    {504, "", 0, AIQ_BEDROCK_RETRY, "http_504"},
    {529, "", 0, AIQ_BEDROCK_RETRY, "http_529"},
    {408, "", 0, AIQ_BEDROCK_MODEL_ERROR, "http_408"},
    {418, "", 0, AIQ_BEDROCK_FINAL, "http_418"},
    {0, "", 1, AIQ_BEDROCK_RETRY, "transport"},
    {200, "", 1, AIQ_BEDROCK_RETRY, "transport"}, /* body cut off mid-transfer */
};

static void bedrock_classification_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        char kind[64];
        const row_t *r = &table[i];
        aiq_bedrock_class_t got =
            aiq_bedrock_classify(r->status, r->type, r->transport, kind, sizeof(kind));
        if (got != r->want || strcmp(kind, r->kind) != 0)
            fail_msg("row %zu (%ld %s): class %d kind %s, want %d %s", i, r->status, r->type,
                     (int)got, kind, (int)r->want, r->kind);
    }
}

static void bedrock_error_message(void **state)
{
    (void)state;
    char buf[64];
    const char *body = "{\"message\":\"Too many requests, please wait\"}";
    aiq_bedrock_error_message(body, strlen(body), buf, sizeof(buf));
    assert_string_equal(buf, "Too many requests, please wait");
    aiq_bedrock_error_message("plain text", 10, buf, sizeof(buf));
    assert_string_equal(buf, "plain text");
}

/* ---- signing and endpoints --------------------------------------------------------------- */

static const char *header(struct curl_slist *h, const char *name)
{
    size_t n = strlen(name);
    for (; h; h = h->next)
        if (strncmp(h->data, name, n) == 0 && h->data[n] == ':')
            return h->data + n + 2;
    return NULL;
}

/* Regression: with https://host:443 curl sends "Host: host" but "host:443" was signed (AWS
 * answered 403). The Host sent is now set explicitly and is the one signed. */
static void bedrock_signed_host_is_sent_host(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"https://bedrock-runtime.us-east-1.amazonaws.com:443",
         "bedrock-runtime.us-east-1.amazonaws.com"},
        {"http://sim.local:80", "sim.local"},
        {"http://sim.local:8080", "sim.local:8080"},
        {"https://h:8443/base", "h:8443"},
        {"https://vpce-0a1b-xyz.bedrock-runtime.us-east-1.vpce.amazonaws.com",
         "vpce-0a1b-xyz.bedrock-runtime.us-east-1.vpce.amazonaws.com"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        aiq_bedrock_call_t call;
        json_t *b = build(cases[i][0], "{\"id\":\"j\",\"operation\":\"x\",\"payload\":{}}", &call);
        assert_string_equal(call.host, cases[i][1]);
        assert_string_equal(header(call.headers, "Host"), cases[i][1]);
        /* The signature over the host sent, recomputed with sigv4 alone. */
        const char *path = strstr(call.url + strlen("https://"), "/");
        aiq_sigv4_req_t req = {"POST",    cases[i][1],   path,        NULL,      "application/json",
                               call.body, call.body_len, "us-east-1", "bedrock", 1700000000};
        aiq_sigv4_out_t out;
        aiq_err_t err = {0};
        assert_int_equal(aiq_sigv4_sign(&req, &CREDS, &out, &err), 0);
        assert_string_equal(header(call.headers, "Authorization"), out.authorization);
        if (i == 3)
            assert_string_equal(path,
                                "/base/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse");
        json_decref(b);
        aiq_bedrock_call_free(&call);
    }
}

/* Regression: "." and ".." went into the path unencoded and changed it (/base/converse). */
static void bedrock_model_ids_checked_and_encoded(void **state)
{
    (void)state;
    assert_false(aiq_model_id_valid("."));
    assert_false(aiq_model_id_valid(".."));
    assert_false(aiq_model_id_valid("a/b"));
    assert_false(aiq_model_id_valid("has space"));
    assert_false(aiq_model_id_valid(""));
    assert_true(aiq_model_id_valid("anthropic.claude-3-haiku-20240307-v1:0"));
    assert_true(aiq_model_id_valid("us.anthropic.claude-3-5-haiku-20241022-v1:0"));
    assert_true(aiq_model_id_valid(
        "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-text-express-v1"));
    assert_true(aiq_model_id_valid(
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"));
    assert_true(aiq_model_id_valid("arn:aws-cn:bedrock:cn-north-1:123456789012:"
                                   "inference-profile/apac.amazon.nova-lite-v1:0"));
    aiq_bedrock_conf_t conf = conf_of("https://h/base");
    conf.default_model = "..";
    aiq_job_t *job = job_of("{\"id\":\"j\",\"operation\":\"x\",\"payload\":{}}");
    aiq_bedrock_call_t call;
    aiq_err_t err = {0};
    assert_int_equal(aiq_bedrock_build(&conf, &CREDS, job, 1700000000, &call, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "model"));
    conf.default_model = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.x.y-v1:0";
    assert_int_equal(aiq_bedrock_build(&conf, &CREDS, job, 1700000000, &call, &err), 0);
    assert_string_equal(call.url, "https://h/base/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A"
                                  "123456789012%3Ainference-profile%2Fus.x.y-v1%3A0/converse");
    aiq_bedrock_call_free(&call);
    aiq_job_free(job);
}

typedef struct env_pair {
    const char *svc, *global, *fips, *ignore;
} env_pair_t;

static const char *fake_env(void *ctx, const char *name)
{
    const env_pair_t *e = ctx;
    if (strcmp(name, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME") == 0)
        return e->svc;
    if (strcmp(name, "AWS_ENDPOINT_URL") == 0)
        return e->global;
    if (strcmp(name, "AWS_USE_FIPS_ENDPOINT") == 0)
        return e->fips;
    if (strcmp(name, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") == 0)
        return e->ignore;
    return NULL;
}

static void bedrock_endpoint_resolution(void **state)
{
    (void)state;
    static const struct {
        const char *configured, *region;
        bool fips;
        env_pair_t env;
        const char *want;
    } cases[] = {
        {"", "us-east-1", false, {0}, "https://bedrock-runtime.us-east-1.amazonaws.com"},
        {"", "cn-north-1", false, {0}, "https://bedrock-runtime.cn-north-1.amazonaws.com.cn"},
        {"", "us-gov-west-1", false, {0}, "https://bedrock-runtime.us-gov-west-1.amazonaws.com"},
        {"",
         "us-gov-west-1",
         true,
         {0},
         "https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com"},
        {"",
         "us-east-1",
         false,
         {NULL, NULL, "true", NULL},
         "https://bedrock-runtime-fips.us-east-1.amazonaws.com"},
        {"", "us-isob-east-1", false, {0}, "https://bedrock-runtime.us-isob-east-1.sc2s.sgov.gov"},
        {"", "us-east-1", false, {"http://svc:9/", "http://global:9", NULL, NULL}, "http://svc:9"},
        {"", "us-east-1", false, {NULL, "http://global:9", NULL, NULL}, "http://global:9"},
        {"https://mine:443/",
         "us-east-1",
         true,
         {"http://svc:9", "http://g", NULL, NULL},
         "https://mine:443"},
        {"",
         "eu-west-1",
         false,
         {"http://svc:9", NULL, NULL, "true"},
         "https://bedrock-runtime.eu-west-1.amazonaws.com"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[256];
        aiq_err_t err = {0};
        int rc = aiq_bedrock_endpoint(cases[i].configured, cases[i].region, cases[i].fips, fake_env,
                                      (void *)&cases[i].env, out, sizeof(out), &err);
        if (rc || strcmp(out, cases[i].want))
            fail_msg("case %zu: rc %d '%s' (%s), want %s", i, rc, out, err.msg, cases[i].want);
    }
    char out[256];
    aiq_err_t err = {0};
    env_pair_t bad = {"ftp://x", NULL, NULL, NULL};
    assert_int_equal(
        aiq_bedrock_endpoint("", "us-east-1", false, fake_env, &bad, out, sizeof(out), &err),
        AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"));
    env_pair_t none = {0};
    assert_int_equal(
        aiq_bedrock_endpoint("", "us-east-1/x", false, fake_env, &none, out, sizeof(out), &err),
        AIQ_EINVAL);
}

static void bedrock_family_of_ids(void **state)
{
    (void)state;
    assert_int_equal(aiq_bedrock_family_of("eu.anthropic.claude-3-haiku-20240307-v1:0"),
                     AIQ_FAMILY_ANTHROPIC);
    assert_int_equal(aiq_bedrock_family_of("arn:aws:bedrock:us-east-1::foundation-model/"
                                           "meta.llama3-8b-instruct-v1:0"),
                     AIQ_FAMILY_LLAMA);
    assert_int_equal(aiq_bedrock_family_of("arn:aws:bedrock:us-east-1:123456789012:"
                                           "inference-profile/global.amazon.nova-pro-v1:0"),
                     AIQ_FAMILY_NOVA);
    assert_int_equal(aiq_bedrock_family_of("arn:aws:bedrock:us-east-1:123456789012:"
                                           "application-inference-profile/abc"),
                     AIQ_FAMILY_UNKNOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bedrock_invoke_anthropic_shape),
        cmocka_unit_test(bedrock_invoke_nova_shape),
        cmocka_unit_test(bedrock_invoke_titan_shape),
        cmocka_unit_test(bedrock_invoke_llama_shape),
        cmocka_unit_test(bedrock_invoke_mistral_shape),
        cmocka_unit_test(bedrock_invoke_cohere_shape),
        cmocka_unit_test(bedrock_invoke_own_body_passed_through),
        cmocka_unit_test(bedrock_refuses_what_it_cannot_carry),
        cmocka_unit_test(bedrock_invoke_headers),
        cmocka_unit_test(bedrock_converse_passes_fields_through),
        cmocka_unit_test(bedrock_payload_numbers_shortest),
        cmocka_unit_test(bedrock_operation_cache_point),
        cmocka_unit_test(bedrock_invoke_families_read),
        cmocka_unit_test(bedrock_unreadable_200_is_an_answer),
        cmocka_unit_test(bedrock_own_body_raw_intact),
        cmocka_unit_test(bedrock_converse_reply_carries_everything),
        cmocka_unit_test(bedrock_token_headers_win),
        cmocka_unit_test(bedrock_parse_token_counts_bounded),
        cmocka_unit_test(bedrock_classification_table),
        cmocka_unit_test(bedrock_error_message),
        cmocka_unit_test(bedrock_signed_host_is_sent_host),
        cmocka_unit_test(bedrock_model_ids_checked_and_encoded),
        cmocka_unit_test(bedrock_endpoint_resolution),
        cmocka_unit_test(bedrock_family_of_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
