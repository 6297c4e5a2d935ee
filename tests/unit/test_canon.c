#include "aiq_err.h"
#include "cache_key.h"
#include "canon.h"
#include "job.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* Canonical text of a JSON document given as text (as the worker sees it: parsed by
 * jansson), with optional drop paths. The caller frees. */
static char *canon_of(const char *text, const char *const *drop, size_t ndrop)
{
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
    assert_non_null(v);
    char *out = NULL;
    size_t len = 0;
    aiq_err_t err = {0};
    assert_int_equal(aiq_canon_json(v, drop, ndrop, &out, &len, &err), 0);
    assert_int_equal(strlen(out), len);
    json_decref(v);
    return out;
}

static void expect_canon(const char *text, const char *want)
{
    char *got = canon_of(text, NULL, 0);
    assert_string_equal(got, want);
    free(got);
}

static void canon_sorts_keys_and_drops_whitespace(void **state)
{
    (void)state;
    const char *want = "{\"a\":{\"x\":[1,2,{\"p\":2,\"q\":1}],\"y\":2},\"b\":\"t x\"}";
    expect_canon("{\"b\":\"t x\",\"a\":{\"y\":2,\"x\":[1,2,{\"q\":1,\"p\":2}]}}", want);
    expect_canon(" {\n \"a\" : { \"x\" : [ 1 , 2 , { \"p\" : 2 , \"q\" : 1 } ] ,\t\"y\":2},\r\n"
                 "  \"b\" : \"t x\" } ",
                 want);
    /* Array order is meaning, never sorted. */
    expect_canon("[3,1,2]", "[3,1,2]");
    expect_canon("{}", "{}");
    expect_canon("[]", "[]");
    expect_canon("[true,false,null]", "[true,false,null]");
}

/* Keys sort by UTF-8 bytes, which is code point order: "A" < "z" < "é" < "😀". */
static void canon_key_order_is_code_point_order(void **state)
{
    (void)state;
    expect_canon("{\"\\ud83d\\ude00\":4,\"\u00e9\":3,\"z\":2,\"A\":1,\"Aa\":0}",
                 "{\"A\":1,\"Aa\":0,\"z\":2,\"\u00e9\":3,\"\xf0\x9f\x98\x80\":4}");
}

static void canon_unicode_escapes_equal_raw_utf8(void **state)
{
    (void)state;
    char *a = canon_of("{\"s\":\"caf\\u00e9 \\ud83d\\ude00\",\"\\u006b\":1}", NULL, 0);
    char *b = canon_of("{\"s\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\",\"k\":1}", NULL, 0);
    assert_string_equal(a, b);
    free(a);
    free(b);
    /* Escapes that must stay escaped come out in one spelling. */
    expect_canon("\"a\\\"b\\\\c\\/d\\n\\u0001\"", "\"a\\\"b\\\\c/d\\u000a\\u0001\"");
    /* No Unicode normalisation: precomposed and combining forms differ. */
    a = canon_of("\"\\u00e9\"", NULL, 0);
    b = canon_of("\"e\\u0301\"", NULL, 0);
    assert_string_not_equal(a, b);
    free(a);
    free(b);
}

static void canon_numbers_in_one_form(void **state)
{
    (void)state;
    const char *ones[] = {"1", "1.0", "1e0", "10e-1", "0.1e1", "1.00000", "100E-2"};
    for (size_t i = 0; i < sizeof(ones) / sizeof(ones[0]); i++) {
        char doc[64];
        snprintf(doc, sizeof(doc), "{\"a\":%s}", ones[i]);
        expect_canon(doc, "{\"a\":1}");
    }
    expect_canon("[-0,-0.0,0e5,0.0]", "[0,0,0,0]");
    expect_canon("[1.5,15e-1,0.15e1]", "[15e-1,15e-1,15e-1]");
    expect_canon("[0.1,-0.25,1e300,1E+300,123.456]", "[1e-1,-25e-2,1e300,1e300,123456e-3]");
    expect_canon("[1e18,1000000000000000000]", "[1000000000000000000,1000000000000000000]");
    /* Integer literals are exact to int64; doubles only to 53 bits. */
    expect_canon("[9007199254740993,9007199254740992,9223372036854775807,-9223372036854775808]",
                 "[9007199254740993,9007199254740992,9223372036854775807,-9223372036854775808]");
    expect_canon("9007199254740993.0", "9007199254740992");
    /* 2^63 and above are doubles written by their shortest digits. */
    expect_canon("9223372036854775808.0", "9223372036854776e3");
    /* A number is never a string. */
    char *n = canon_of("1", NULL, 0), *s = canon_of("\"1\"", NULL, 0);
    assert_string_not_equal(n, s);
    free(n);
    free(s);
}

static void canon_drops_volatile_fields(void **state)
{
    (void)state;
    const char *drop[] = {"request_id", "meta.ts", "a.b.c", "missing.path"};
    char *got = canon_of("{\"request_id\":\"r1\",\"meta\":{\"request_id\":2,\"ts\":3,\"keep\":4},"
                         "\"data\":{\"request_id\":5,\"ts\":6},\"a\":{\"b\":{\"c\":1,\"d\":2}},"
                         "\"list\":[{\"request_id\":7}]}",
                         drop, 4);
    assert_string_equal(got, "{\"a\":{\"b\":{\"d\":2}},\"data\":{\"request_id\":5,\"ts\":6},"
                             "\"list\":[{\"request_id\":7}],\"meta\":{\"keep\":4,"
                             "\"request_id\":2}}");
    free(got);
    /* A path prefix is not a path: "met" does not drop "meta", "meta." drops nothing. */
    const char *odd[] = {"met", "meta.", ""};
    got = canon_of("{\"meta\":{\"ts\":1}}", odd, 3);
    assert_string_equal(got, "{\"meta\":{\"ts\":1}}");
    free(got);
}

static void canon_refuses_what_it_cannot_write(void **state)
{
    (void)state;
    char *out = (char *)1;
    size_t len;
    aiq_err_t err = {0};
    /* Nesting deeper than the cap. */
    json_t *root = json_array(), *cur = root;
    for (int i = 0; i < AIQ_CANON_DEPTH_MAX + 5; i++) {
        json_t *next = json_array();
        json_array_append_new(cur, next);
        cur = next;
    }
    assert_int_equal(aiq_canon_json(root, NULL, 0, &out, &len, &err), AIQ_ETOOBIG);
    assert_null(out);
    json_decref(root);
    const char *many[AIQ_CANON_DROP_MAX + 1];
    for (int i = 0; i <= AIQ_CANON_DROP_MAX; i++)
        many[i] = "x";
    json_t *o = json_object();
    assert_int_equal(aiq_canon_json(o, many, AIQ_CANON_DROP_MAX + 1, &out, &len, &err), AIQ_EINVAL);
    json_decref(o);
}

static aiq_job_t *job_of(const char *text)
{
    aiq_job_t *job = NULL;
    aiq_job_reject_t rej;
    aiq_err_t err = {0};
    int rc = aiq_job_decode(text, strlen(text), 1 << 20, &job, &rej, NULL, &err);
    if (rc)
        fail_msg("job did not decode: %s", err.msg);
    return job;
}

static void key_of(const char *text, const char *model, const char *const *drop, size_t ndrop,
                   uint8_t key[AIQ_CACHE_KEY_LEN])
{
    aiq_job_t *job = job_of(text);
    aiq_err_t err = {0};
    assert_int_equal(aiq_cache_key_job(job, model, drop, ndrop, key, &err), 0);
    aiq_job_free(job);
}

#define GOLDEN_KEY "da759903d86ef6e68ffb6731e5e0c086b077e17e7df4c79e68f692cfd3abbe7b"

#define BASE "\"operation\":\"vc-analysis\",\"payload\":{\"company\":\"Acme\",\"stage\":\"seed\"}"

static void cache_key_ignores_order_ids_and_whitespace(void **state)
{
    (void)state;
    uint8_t a[32], b[32], c[32];
    key_of("{\"id\":\"j1\"," BASE ",\"persona\":\"investor\"}", "m1", NULL, 0, a);
    key_of("{ \"persona\" : \"investor\", \"payload\" : {\"stage\":\"seed\", \"company\" : "
           "\"Acme\"}, \"operation\":\"vc-analysis\", \"id\":\"other-id\", \"priority\":\"low\","
           " \"timeout_ms\": 1000, \"cache\": {\"ttl_s\": 5}}",
           "m1", NULL, 0, b);
    assert_memory_equal(a, b, 32);
    /* An absent inference and an empty one ask the same question. */
    key_of("{\"id\":\"j1\"," BASE ",\"persona\":\"investor\",\"inference\":{}}", "m1", NULL, 0, c);
    assert_memory_equal(a, c, 32);
}

static void cache_key_separates_persona_model_and_request(void **state)
{
    (void)state;
    uint8_t base[32], k[32];
    key_of("{\"id\":\"j\"," BASE "}", "m1", NULL, 0, base);
    const char *others[] = {
        "{\"id\":\"j\"," BASE ",\"persona\":\"founder\"}",
        "{\"id\":\"j\"," BASE ",\"system\":\"be brief\"}",
        "{\"id\":\"j\"," BASE ",\"inference\":{\"temperature\":0.5}}",
        "{\"id\":\"j\",\"operation\":\"vc-analysis\",\"payload\":{\"company\":\"Acme\"}}",
        "{\"id\":\"j\",\"operation\":\"content-generation\",\"payload\":{\"company\":\"Acme\","
        "\"stage\":\"seed\"}}",
        "{\"id\":\"j\",\"operation\":\"vc-analysis\",\"messages\":[{\"role\":\"user\","
        "\"content\":[{\"text\":\"Acme seed\"}]}]}",
    };
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        key_of(others[i], "m1", NULL, 0, k);
        assert_memory_not_equal(base, k, 32);
    }
    key_of("{\"id\":\"j\"," BASE "}", "m2", NULL, 0, k);
    assert_memory_not_equal(base, k, 32);
    /* model NULL = the job's own model. */
    uint8_t own[32];
    key_of("{\"id\":\"j\"," BASE ",\"model\":\"m2\"}", NULL, NULL, 0, own);
    assert_memory_equal(own, k, 32);
}

/* Length-prefixed framing: moving bytes between components changes the key. */
static void cache_key_framing_is_unambiguous(void **state)
{
    (void)state;
    uint8_t a[32], b[32];
    key_of("{\"id\":\"j\",\"operation\":\"a\",\"persona\":\"bc\",\"payload\":{}}", "m", NULL, 0, a);
    key_of("{\"id\":\"j\",\"operation\":\"ab\",\"persona\":\"c\",\"payload\":{}}", "m", NULL, 0, b);
    assert_memory_not_equal(a, b, 32);
    key_of("{\"id\":\"j\",\"operation\":\"a\",\"persona\":\"b\",\"payload\":{}}", "cm", NULL, 0, a);
    key_of("{\"id\":\"j\",\"operation\":\"a\",\"persona\":\"bc\",\"payload\":{}}", "m", NULL, 0, b);
    assert_memory_not_equal(a, b, 32);
}

static void cache_key_drops_volatile_payload_fields(void **state)
{
    (void)state;
    const char *drop[] = {"request_id", "meta.sent_at"};
    uint8_t a[32], b[32], c[32];
    key_of("{\"id\":\"1\"," BASE ",\"persona\":\"p\"}", "m", drop, 2, a);
    key_of("{\"id\":\"2\",\"operation\":\"vc-analysis\",\"persona\":\"p\",\"payload\":{"
           "\"company\":\"Acme\",\"stage\":\"seed\",\"request_id\":\"r-77\",\"meta\":{"
           "\"sent_at\":\"2026-01-01T00:00:00Z\"}}}",
           "m", drop, 2, b);
    key_of("{\"id\":\"3\",\"operation\":\"vc-analysis\",\"persona\":\"p\",\"payload\":{"
           "\"company\":\"Acme\",\"stage\":\"seed\",\"request_id\":\"r-78\",\"meta\":{}}}",
           "m", drop, 2, c);
    /* meta:{} remains (only its member is volatile), so c differs from a but the two
     * jobs that differ only in volatile values share a key. */
    assert_memory_not_equal(a, c, 32);
    key_of("{\"id\":\"4\",\"operation\":\"vc-analysis\",\"persona\":\"p\",\"payload\":{"
           "\"company\":\"Acme\",\"stage\":\"seed\",\"request_id\":\"r-79\",\"meta\":{"
           "\"sent_at\":\"2027-01-01T00:00:00Z\"}}}",
           "m", drop, 2, a);
    assert_memory_equal(a, b, 32);
    /* Without the drop list they differ. */
    key_of("{\"id\":\"4\",\"operation\":\"vc-analysis\",\"persona\":\"p\",\"payload\":{"
           "\"company\":\"Acme\",\"stage\":\"seed\",\"request_id\":\"r-79\",\"meta\":{"
           "\"sent_at\":\"2027-01-01T00:00:00Z\"}}}",
           "m", NULL, 0, c);
    assert_memory_not_equal(a, c, 32);
}

/* The key derivation is a persistent format: a change silently empties every cache, so it
 * must be deliberate (bump KEY_TAG in canon.c and this value together). */
static void cache_key_is_stable(void **state)
{
    (void)state;
    uint8_t k[32];
    char hex[65];
    key_of("{\"id\":\"j\"," BASE ",\"persona\":\"investor\"}", "anthropic.claude-3-haiku", NULL, 0,
           k);
    aiq_cache_key_hex(k, hex);
    assert_string_equal(hex, GOLDEN_KEY);
}

static void cache_key_hex_round_trip(void **state)
{
    (void)state;
    uint8_t k[32], back[32];
    char hex[65];
    for (int i = 0; i < 32; i++)
        k[i] = (uint8_t)(i * 37 + 5);
    aiq_cache_key_hex(k, hex);
    assert_int_equal(strlen(hex), 64);
    assert_int_equal(aiq_cache_key_parse(hex, back), 0);
    assert_memory_equal(k, back, 32);
    for (char *p = hex; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    assert_int_equal(aiq_cache_key_parse(hex, back), 0);
    assert_memory_equal(k, back, 32);
    hex[10] = 'g';
    assert_int_equal(aiq_cache_key_parse(hex, back), AIQ_EINVAL);
    assert_int_equal(aiq_cache_key_parse("abcd", back), AIQ_EINVAL);
    assert_int_equal(aiq_cache_key_parse(NULL, back), AIQ_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(canon_sorts_keys_and_drops_whitespace),
        cmocka_unit_test(canon_key_order_is_code_point_order),
        cmocka_unit_test(canon_unicode_escapes_equal_raw_utf8),
        cmocka_unit_test(canon_numbers_in_one_form),
        cmocka_unit_test(canon_drops_volatile_fields),
        cmocka_unit_test(canon_refuses_what_it_cannot_write),
        cmocka_unit_test(cache_key_ignores_order_ids_and_whitespace),
        cmocka_unit_test(cache_key_separates_persona_model_and_request),
        cmocka_unit_test(cache_key_framing_is_unambiguous),
        cmocka_unit_test(cache_key_drops_volatile_payload_fields),
        cmocka_unit_test(cache_key_is_stable),
        cmocka_unit_test(cache_key_hex_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
