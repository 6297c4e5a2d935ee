/* test_sim_request.c — bedrock-sim's pure library (tools/bedrock-sim/sim_request.h): the
 * event-stream framing, the service-model check on a small hand-written shapes document and
 * on the checked-in botocore one, the model families and the prompt cache accounting. */
#include "sim_request.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void sim_crc32_matches_the_standard_check_value(void **state)
{
    (void)state;
    assert_int_equal(sim_crc32(0, "123456789", 9), 0xCBF43926u);
    /* continued over two halves as over the whole */
    assert_int_equal(sim_crc32(sim_crc32(0, "1234", 4), "56789", 5), 0xCBF43926u);
}

static void sim_event_empty_message_is_the_aws_test_vector(void **state)
{
    /* aws-c-event-stream's encoded empty message: 16 bytes, both CRCs. */
    static const unsigned char want[] = {0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00,
                                         0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff};
    sim_buf_t b = {0};

    (void)state;
    assert_int_equal(sim_event_append(&b, NULL, NULL, 0, NULL, 0), 0);
    assert_int_equal(b.len, sizeof(want));
    assert_memory_equal(b.data, want, sizeof(want));
    sim_buf_free(&b);
}

static void sim_event_round_trips_and_refuses_a_bad_crc(void **state)
{
    sim_buf_t b = {0};
    json_t *o = json_pack("{ss}", "role", "assistant");
    char hbuf[256];
    const char *names[4], *values[4];
    const unsigned char *payload;
    size_t nh, used, plen;

    (void)state;
    assert_int_equal(sim_event_json(&b, "messageStart", o), 0);
    assert_int_equal(sim_event_exception(&b, "throttlingException", "slow down"), 0);
    assert_int_equal(sim_event_parse(b.data, b.len, &used, hbuf, sizeof(hbuf), names, values, 4,
                                     &nh, &payload, &plen),
                     0);
    assert_int_equal(nh, 3);
    assert_string_equal(names[0], ":event-type");
    assert_string_equal(values[0], "messageStart");
    assert_string_equal(values[2], "event");
    assert_int_equal(plen, strlen("{\"role\":\"assistant\"}"));
    assert_memory_equal(payload, "{\"role\":\"assistant\"}", plen);
    size_t first = used;
    assert_int_equal(sim_event_parse(b.data + first, b.len - first, &used, hbuf, sizeof(hbuf),
                                     names, values, 4, &nh, &payload, &plen),
                     0);
    assert_string_equal(names[0], ":exception-type");
    assert_string_equal(values[0], "throttlingException");
    assert_string_equal(values[2], "exception");
    assert_int_equal(first + used, b.len);
    b.data[first + 20] ^= 1; /* a header byte: the message CRC no longer holds */
    assert_int_equal(sim_event_parse(b.data + first, b.len - first, &used, hbuf, sizeof(hbuf),
                                     names, values, 4, &nh, &payload, &plen),
                     -1);
    b.data[1] ^= 1; /* the total length: the prelude CRC no longer holds */
    assert_int_equal(sim_event_parse(b.data, b.len, &used, hbuf, sizeof(hbuf), names, values, 4,
                                     &nh, &payload, &plen),
                     -1);
    json_decref(o);
    sim_buf_free(&b);
}

/* A small model: one operation whose input has every kind of member. */
static const char *const tiny =
    "{\"operations\": {\"Op\": {\"input\": \"In\"}}, \"shapes\": {"
    "\"In\": {\"type\": \"structure\", \"required\": [\"id\", \"n\"], \"members\": {"
    "  \"id\": {\"shape\": \"Id\", \"location\": \"uri\", \"locationName\": \"id\"},"
    "  \"tr\": {\"shape\": \"Tr\", \"location\": \"header\", \"locationName\": \"X-Tr\"},"
    "  \"n\": {\"shape\": \"N\"}, \"f\": {\"shape\": \"F\"}, \"e\": {\"shape\": \"Tr\"},"
    "  \"l\": {\"shape\": \"L\"}, \"m\": {\"shape\": \"M\"}, \"u\": {\"shape\": \"U\"},"
    "  \"b\": {\"shape\": \"B\"}, \"d\": {\"shape\": \"D\"}}},"
    "\"Id\": {\"type\": \"string\", \"min\": 1, \"max\": 8, \"pattern\": \"[a-z]+\","
    "        \"ere\": \"[a-z]+\"},"
    "\"Tr\": {\"type\": \"string\", \"enum\": [\"ON\", \"OFF\"]},"
    "\"N\": {\"type\": \"integer\", \"min\": 1, \"max\": 10},"
    "\"F\": {\"type\": \"float\", \"min\": 0, \"max\": 1},"
    "\"L\": {\"type\": \"list\", \"member\": {\"shape\": \"Id\"}, \"max\": 2},"
    "\"M\": {\"type\": \"map\", \"key\": {\"shape\": \"Id\"}, \"value\": {\"shape\": \"N\"}},"
    "\"U\": {\"type\": \"structure\", \"union\": true, \"members\": {"
    "  \"a\": {\"shape\": \"N\"}, \"c\": {\"shape\": \"Id\"}}},"
    "\"B\": {\"type\": \"blob\", \"max\": 3},"
    "\"D\": {\"type\": \"structure\", \"document\": true, \"members\": {}}}}";

static const char *on_param(void *ctx, const char *location, const char *name)
{
    const char *const *p = ctx; /* {uri id, X-Tr} */
    if (!strcmp(location, "uri") && !strcmp(name, "id"))
        return p[0];
    if (!strcmp(location, "header") && !strcmp(name, "X-Tr"))
        return p[1];
    return NULL;
}

static int check(sim_model_t *m, const char *body, const char *id, const char *tr, char *why)
{
    const char *params[2] = {id, tr};
    json_t *b = json_loads(body, 0, NULL);
    assert_non_null(b);
    int rc = sim_model_check(m, "Op", b, on_param, params, why, 600);
    json_decref(b);
    return rc;
}

static sim_model_t *load(const char *text)
{
    char why[300];
    json_t *doc = json_loads(text, 0, NULL);
    assert_non_null(doc);
    sim_model_t *m = sim_model_new(doc, why, sizeof(why));
    json_decref(doc);
    assert_non_null(m);
    return m;
}

static void sim_model_checks_every_kind_of_member(void **state)
{
    static const struct {
        const char *body, *id, *tr, *why; /* why NULL: accepted; else a substring */
    } cases[] = {
        {"{\"n\": 5}", "abc", NULL, NULL},
        {"{\"n\": 5, \"f\": 0.5, \"e\": \"ON\", \"l\": [\"a\"], \"m\": {\"k\": 1},"
         " \"u\": {\"a\": 1}, \"b\": \"AAAA\", \"d\": {\"any\": [1, {\"x\": null}]}}",
         "abc", "OFF", NULL},
        {"{\"n\": 5}", "9a9", NULL, NULL}, /* unanchored: one letter somewhere will do */
        {"{\"n\": 5}", "999", NULL, "regular expression pattern"},
        {"{\"n\": 5}", "abcdefghi", NULL, "length less than or equal to 8"},
        {"{\"n\": 5}", NULL, NULL, "at 'id'"},
        {"{\"n\": 5}", "abc", "MAYBE", "enum value set: [ON, OFF]"},
        {"{}", "abc", NULL, "at 'n'"},
        {"{\"n\": 0}", "abc", NULL, "greater than or equal to 1"},
        {"{\"n\": 11}", "abc", NULL, "less than or equal to 10"},
        {"{\"n\": 2.5}", "abc", NULL, "be an integer"},
        {"{\"n\": 4294967297}", "abc", NULL, "32-bit"},
        {"{\"n\": 1, \"f\": 1.5}", "abc", NULL, "less than or equal to 1"},
        {"{\"n\": 1, \"zz\": 1}", "abc", NULL, "Member 'zz'"},
        {"{\"n\": 1, \"id\": \"abc\"}", "abc", NULL, "Member 'id'"}, /* a uri member */
        {"{\"n\": 1, \"l\": [\"a\", \"b\", \"c\"]}", "abc", NULL, "length less than"},
        {"{\"n\": 1, \"l\": [\"a\", \"1\"]}", "abc", NULL, "at 'l.2.member'"},
        {"{\"n\": 1, \"m\": {\"k\": 99}}", "abc", NULL, "at 'm.k'"},
        {"{\"n\": 1, \"m\": {\"9\": 1}}", "abc", NULL, "pattern"},
        {"{\"n\": 1, \"u\": {}}", "abc", NULL, "exactly one member"},
        {"{\"n\": 1, \"u\": {\"a\": 1, \"c\": \"x\"}}", "abc", NULL, "exactly one member"},
        {"{\"n\": 1, \"b\": \"AAAAAA==\"}", "abc", NULL, "length less than or equal to 3"},
        {"{\"n\": 1, \"b\": \"A-A=\"}", "abc", NULL, "base64"},
        {"{\"n\": 1, \"e\": null}", "abc", NULL, "must not be null"},
        {"{\"n\": 1, \"e\": 7}", "abc", NULL, "be a string"},
    };
    sim_model_t *m = load(tiny);
    char why[600];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = check(m, cases[i].body, cases[i].id, cases[i].tr, why);
        if (!cases[i].why) {
            if (rc)
                fail_msg("case %zu refused: %s", i, why);
        } else if (rc != -1 || !strstr(why, cases[i].why)) {
            fail_msg("case %zu: rc %d, why '%s', wanted '%s'", i, rc, why, cases[i].why);
        }
    }
    assert_int_equal(sim_model_check(m, "Nope", NULL, NULL, NULL, why, sizeof(why)), -1);
    sim_model_free(m);
    sim_model_free(NULL);
}

static void sim_model_bounds_nesting(void **state)
{
    sim_model_t *m = load(tiny);
    char body[1024] = "{\"n\": 1, \"d\": ", why[600];
    size_t n = strlen(body);

    (void)state;
    for (int i = 0; i < 70; i++)
        n += (size_t)snprintf(body + n, sizeof(body) - n, "[");
    for (int i = 0; i < 70; i++)
        n += (size_t)snprintf(body + n, sizeof(body) - n, "]");
    snprintf(body + n, sizeof(body) - n, "}");
    assert_int_equal(check(m, body, "abc", NULL, why), -1);
    assert_non_null(strstr(why, "nested deeper than 64"));
    sim_model_free(m);
}

static void sim_model_refuses_a_pattern_that_does_not_compile(void **state)
{
    char why[300];
    json_t *doc = json_loads("{\"operations\": {}, \"shapes\": {\"X\": {\"type\": \"string\","
                             " \"ere\": \"([\"}}}",
                             0, NULL);

    (void)state;
    assert_null(sim_model_new(doc, why, sizeof(why)));
    assert_non_null(strstr(why, "shape X"));
    json_decref(doc);
    doc = json_loads("[]", 0, NULL);
    assert_null(sim_model_new(doc, why, sizeof(why)));
    json_decref(doc);
}

static const char *on_model_id(void *ctx, const char *location, const char *name)
{
    const char *const *id = ctx;
    return !strcmp(location, "uri") && !strcmp(name, "modelId") ? *id : NULL;
}

/* The checked-in botocore model: Converse's real constraints. */
static void sim_model_botocore_converse(void **state)
{
    json_t *doc = json_load_file(SIM_MODEL_FILE, 0, NULL);
    char why[600];
    sim_model_t *m;
    const char *id[1] = {"anthropic.claude-3-haiku-20240307-v1:0"};

    (void)state;
    assert_non_null(doc);
    assert_non_null(m = sim_model_new(doc, why, sizeof(why)));
    json_decref(doc);
    json_t *ok = json_loads("{\"messages\": [{\"role\": \"user\", \"content\": [{\"text\": \"hi\"},"
                            " {\"cachePoint\": {\"type\": \"default\"}}]}],"
                            " \"inferenceConfig\": {\"maxTokens\": 5, \"temperature\": 0.1}}",
                            0, NULL);
    json_t *two = json_loads("{\"messages\": [{\"role\": \"user\", \"content\": [{\"text\": \"hi\","
                             " \"cachePoint\": {\"type\": \"default\"}}]}]}",
                             0, NULL);
    if (sim_model_check(m, "Converse", ok, on_model_id, id, why, sizeof(why)))
        fail_msg("a valid Converse refused: %s", why);
    assert_int_equal(sim_model_check(m, "Converse", two, on_model_id, id, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "messages.1.member.content.1.member"));
    id[0] = "$$$";
    assert_int_equal(sim_model_check(m, "Converse", ok, on_model_id, id, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "at 'modelId'"));
    json_t *u = sim_model_unenforced(m);
    assert_int_equal(json_array_size(u), 0);
    json_decref(u);
    json_decref(ok);
    json_decref(two);
    sim_model_free(m);
}

static void sim_family_looks_through_profiles_and_arns(void **state)
{
    (void)state;
    assert_int_equal(sim_family_of("meta.llama3-8b-instruct-v1:0"), SIM_FAMILY_LLAMA);
    assert_int_equal(sim_family_of("us.meta.llama3-8b-instruct-v1:0"), SIM_FAMILY_LLAMA);
    assert_int_equal(sim_family_of("arn:aws:bedrock:us-east-1::foundation-model/"
                                   "amazon.titan-text-express-v1"),
                     SIM_FAMILY_TITAN);
    assert_int_equal(sim_family_of("arn:aws:bedrock:eu-west-1:123456789012:inference-profile/"
                                   "eu.amazon.nova-pro-v1:0"),
                     SIM_FAMILY_NOVA);
    assert_int_equal(sim_family_of("global.cohere.command-r-v1:0"), SIM_FAMILY_COHERE);
    assert_int_equal(sim_family_of("mistral.mistral-7b-instruct-v0:2"), SIM_FAMILY_MISTRAL);
    assert_int_equal(sim_family_of("amazon.titan-embed-text-v1"), SIM_FAMILY_ANTHROPIC);
    assert_int_equal(sim_family_of("sim-a"), SIM_FAMILY_ANTHROPIC);
}

/* A cache that remembers one key. */
static bool on_cache(void *ctx, uint64_t key)
{
    uint64_t *seen = ctx;
    bool hit = *seen == key;
    *seen = key;
    return hit;
}

static void sim_cache_point_is_written_then_read(void **state)
{
    uint64_t seen = 0;
    sim_call_t c = {.model_id = "m.x", .cache = on_cache, .cache_ctx = &seen};
    json_t *body =
        json_loads("{\"system\": [{\"text\": \"0123456789012345678901234567890123456789\"},"
                   " {\"cachePoint\": {\"type\": \"default\"}}],"
                   " \"messages\": [{\"role\": \"user\", \"content\": [{\"text\": \"abcd\"}]}]}",
                   0, NULL);
    sim_usage_t u;
    char why[300];
    json_t *r;

    (void)state;
    assert_non_null(r = sim_converse_reply(body, &c, &u, why, sizeof(why)));
    assert_int_equal(u.cache_write, 10);
    assert_int_equal(u.cache_read, 0);
    assert_int_equal(u.input, 1);
    json_decref(r);
    assert_non_null(r = sim_converse_reply(body, &c, &u, why, sizeof(why)));
    assert_int_equal(u.cache_read, 10);
    assert_int_equal(u.cache_write, 0);
    json_t *usage = json_object_get(r, "usage");
    assert_int_equal(json_integer_value(json_object_get(usage, "totalTokens")),
                     u.input + u.output + 10);
    json_decref(r);
    c.model_id = "m.y"; /* another model: another prefix key */
    assert_non_null(r = sim_converse_reply(body, &c, &u, why, sizeof(why)));
    assert_int_equal(u.cache_write, 10);
    json_decref(r);
    json_decref(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sim_crc32_matches_the_standard_check_value),
        cmocka_unit_test(sim_event_empty_message_is_the_aws_test_vector),
        cmocka_unit_test(sim_event_round_trips_and_refuses_a_bad_crc),
        cmocka_unit_test(sim_model_checks_every_kind_of_member),
        cmocka_unit_test(sim_model_bounds_nesting),
        cmocka_unit_test(sim_model_refuses_a_pattern_that_does_not_compile),
        cmocka_unit_test(sim_model_botocore_converse),
        cmocka_unit_test(sim_family_looks_through_profiles_and_arns),
        cmocka_unit_test(sim_cache_point_is_written_then_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
