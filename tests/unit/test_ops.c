/* test_ops.c — operations as configuration (common/ops.h): template rendering, the persona →
 * operation → "*" precedence, load-time validation with errors naming file, line and field,
 * prices, the shipped config/operations.json, and the Bedrock requests built from operations
 * (worker/bedrock.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bedrock.h"
#include "job.h"
#include "ops.h"

#ifndef AIQ_OPS_FILE
#error "AIQ_OPS_FILE (path of config/operations.json) must be defined by the build"
#endif

static const char *const SHIPPED[] = {"vc-analysis", "content-generation", "business-framework",
                                      "persona-detection"};

/* JSON in tests is written with single quotes; this turns them into double quotes. */
static char *q(const char *text)
{
    char *s = strdup(text);
    assert_non_null(s);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    return s;
}

/* Writes text (single-quoted JSON) to a temporary file and loads it. The file is removed. */
static int load_text(const char *text, aiq_ops_unknown_t unknown, aiq_ops_t **out, aiq_err_t *err)
{
    char path[] = "/tmp/test_ops_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    char *doc = q(text);
    size_t n = strlen(doc);
    assert_int_equal(write(fd, doc, n), (ssize_t)n);
    close(fd);
    free(doc);
    *out = NULL;
    int rc = aiq_ops_load(out, path, unknown, err);
    unlink(path);
    return rc;
}

static aiq_ops_t *must_load(const char *text, aiq_ops_unknown_t unknown)
{
    aiq_ops_t *ops = NULL;
    aiq_err_t err = {0};
    int rc = load_text(text, unknown, &ops, &err);
    if (rc)
        print_error("load failed: %s\n", err.msg);
    assert_int_equal(rc, 0);
    return ops;
}

/* Expects text to fail loading with code, and every needle in the error message. */
static void expect_load_error(const char *text, int code, const char *const *needles)
{
    aiq_ops_t *ops = NULL;
    aiq_err_t err = {0};
    int rc = load_text(text, AIQ_OPS_UNKNOWN_ALLOW, &ops, &err);
    assert_null(ops);
    if (rc != code)
        print_error("rc=%d (want %d) msg=%s\n", rc, code, err.msg);
    assert_int_equal(rc, code);
    for (size_t i = 0; needles[i]; i++) {
        if (!strstr(err.msg, needles[i]))
            print_error("error '%s' lacks '%s'\n", err.msg, needles[i]);
        assert_non_null(strstr(err.msg, needles[i]));
    }
}

static json_t *payload(const char *text)
{
    char *doc = q(text);
    json_error_t jerr;
    json_t *p = json_loads(doc, 0, &jerr);
    free(doc);
    assert_non_null(p);
    return p;
}

/* Renders op for persona/payload and compares system and user (NULL system = none). */
static void expect_render(const aiq_op_t *op, const char *operation, const char *persona,
                          const json_t *pl, const char *want_system, const char *want_user)
{
    aiq_op_vars_t v = {.operation = operation, .persona = persona, .payload = pl};
    char *sys = (char *)1, *user = NULL;
    aiq_err_t err = {0};
    int rc = aiq_op_render(op, &v, &sys, &user, &err);
    if (rc)
        print_error("render failed: %s\n", err.msg);
    assert_int_equal(rc, 0);
    if (want_system)
        assert_string_equal(sys, want_system);
    else
        assert_null(sys);
    assert_string_equal(user, want_user);
    free(sys);
    free(user);
}

/* ---- templates ----------------------------------------------------------------------- */

static void ops_render_fields_and_nested_paths(void **state)
{
    (void)state;
    aiq_ops_t *ops = must_load(
        "{'operations': {'t': {'template': 'A={{a}} D={{ b.c.d }} N={{n}} F={{f}} T={{t}} "
        "O={{obj}} L={{list.1}} LX={{list.7}} P={{payload.a}} op={{operation}} pe={{persona}} "
        "all={{payload}}'}}}",
        AIQ_OPS_UNKNOWN_ALLOW);
    json_t *pl = payload("{'a': 'x y', 'b': {'c': {'d': 'deep'}}, 'n': 42, 'f': 1.5, 't': true, "
                         "'obj': {'z': 1, 'y': [true, null]}, 'list': ['p', 'q']}");
    const aiq_op_t *op = aiq_ops_find(ops, "t");
    assert_non_null(op);
    assert_string_equal(aiq_op_name(op), "t");
    expect_render(op, NULL, "Der Profi", pl, NULL,
                  "A=x y D=deep N=42 F=1.5 T=true O={\"y\":[true,null],\"z\":1} L=q LX= P=x y "
                  "op=t pe=Der Profi all={\"a\":\"x y\",\"b\":{\"c\":{\"d\":\"deep\"}},"
                  "\"f\":1.5,\"list\":[\"p\",\"q\"],\"n\":42,\"obj\":{\"y\":[true,null],\"z\":1},"
                  "\"t\":true}");
    /* No persona and no payload: both render empty / {}; inserted text is not re-scanned. */
    expect_render(op, NULL, NULL, NULL, NULL, "A= D= N= F= T= O= L= LX= P= op=t pe= all={}");
    json_t *inj = payload("{'a': '{{n}}', 'n': 1}");
    expect_render(op, NULL, NULL, inj, NULL,
                  "A={{n}} D= N=1 F= T= O= L= LX= P={{n}} op=t pe= all={\"a\":\"{{n}}\",\"n\":1}");
    json_decref(inj);
    json_decref(pl);
    aiq_ops_free(ops);
}

static void ops_persona_over_operation_over_default(void **state)
{
    (void)state;
    aiq_ops_t *ops = must_load(
        "{'operations': {"
        " '*': {'system': 'S0', 'template': 'T0 {{operation}}',"
        "       'fallback': {'template': 'F0'},"
        "       'personas': {'P': {'template': 'TP0', 'fallback': {'simplified': 'FSP0'}}}},"
        " 'x': {'system': 'SX', 'fallback': {'template': 'FX {{who}}'},"
        "       'personas': {'Q': {'system': 'SQ', 'fallback': {'template': 'FQ'}}}},"
        " 'y': {'template': 'TY'}}}",
        AIQ_OPS_UNKNOWN_ALLOW);
    const aiq_op_t *x = aiq_ops_find(ops, "x"), *y = aiq_ops_find(ops, "y");
    const aiq_op_t *other = aiq_ops_find(ops, "not-listed");
    assert_non_null(x);
    assert_non_null(y);
    assert_non_null(other);
    assert_string_equal(aiq_op_name(other), "*");
    assert_int_equal(aiq_ops_count(ops), 2);
    expect_render(x, "x", NULL, NULL, "SX", "T0 x");
    expect_render(x, "x", "Q", NULL, "SQ", "T0 x");      /* persona variant in the operation */
    expect_render(x, "x", "P", NULL, "SX", "TP0");       /* persona variant in "*" */
    expect_render(x, "x", "nobody", NULL, "SX", "T0 x"); /* unknown persona: no variant */
    expect_render(y, "y", "P", NULL, "S0", "TY");        /* the operation beats "*"'s persona */
    expect_render(other, "not-listed", NULL, NULL, "S0", "T0 not-listed");
    /* Fallback texts follow the same chain; unset everywhere → generic wording. */
    assert_string_equal(aiq_op_fallback_text(x, NULL, AIQ_FALLBACK_TEMPLATE), "FX {{who}}");
    assert_string_equal(aiq_op_fallback_text(x, "Q", AIQ_FALLBACK_TEMPLATE), "FQ");
    assert_string_equal(aiq_op_fallback_text(y, NULL, AIQ_FALLBACK_TEMPLATE), "F0");
    assert_string_equal(aiq_op_fallback_text(x, "P", AIQ_FALLBACK_SIMPLIFIED), "FSP0");
    const char *generic = aiq_op_fallback_text(x, NULL, AIQ_FALLBACK_SUPPORT);
    assert_non_null(generic);
    assert_true(strlen(generic) > 20);
    assert_null(strstr(generic, "{{"));
    assert_string_equal(aiq_op_fallback_text(NULL, NULL, AIQ_FALLBACK_SUPPORT), generic);
    assert_false(aiq_op_fallback_configured(x, NULL, AIQ_FALLBACK_SUPPORT));
    assert_false(aiq_op_fallback_configured(x, NULL, AIQ_FALLBACK_SIMPLIFIED));
    assert_true(aiq_op_fallback_configured(x, "P", AIQ_FALLBACK_SIMPLIFIED));
    assert_true(aiq_op_fallback_configured(y, NULL, AIQ_FALLBACK_TEMPLATE));
    assert_false(aiq_op_fallback_configured(NULL, NULL, AIQ_FALLBACK_TEMPLATE));
    json_t *pl = payload("{'who': 'Acme'}");
    aiq_op_vars_t v = {.operation = "x", .persona = NULL, .payload = pl};
    char *out = NULL;
    assert_int_equal(aiq_op_render_fallback(x, &v, AIQ_FALLBACK_TEMPLATE, &out, NULL), 0);
    assert_string_equal(out, "FX Acme");
    free(out);
    json_decref(pl);
    aiq_ops_free(ops);
}

static void ops_missing_field_rule(void **state)
{
    (void)state;
    aiq_ops_t *ops =
        must_load("{'operations': {'lax': {'template': '[{{a}}|{{b.c}}]'},"
                  " 'strict': {'template': '[{{a}}|{{b.c}}]', 'on_missing': 'error'}}}",
                  AIQ_OPS_UNKNOWN_ALLOW);
    json_t *partial = payload("{'a': 'A', 'b': {'c': null}}");
    json_t *full = payload("{'a': 'A', 'b': {'c': 0}}");
    expect_render(aiq_ops_find(ops, "lax"), NULL, NULL, partial, NULL, "[A|]");
    const aiq_op_t *strict = aiq_ops_find(ops, "strict");
    expect_render(strict, NULL, NULL, full, NULL, "[A|0]");
    aiq_op_vars_t v = {.operation = "strict", .payload = partial};
    char *sys = NULL, *user = (char *)1;
    aiq_err_t err = {0};
    assert_int_equal(aiq_op_render(strict, &v, &sys, &user, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "'b.c'"));
    assert_non_null(strstr(err.msg, "strict"));
    assert_ptr_equal(user, (char *)1); /* untouched on failure */
    json_decref(partial);
    json_decref(full);
    aiq_ops_free(ops);
}

static void ops_render_size_bound(void **state)
{
    (void)state;
    aiq_ops_t *ops = must_load("{'operations': {'big': {'template': '{{s}}{{s}}'},"
                               " 'one': {'template': '{{s}}'}}}",
                               AIQ_OPS_UNKNOWN_ALLOW);
    char *s = malloc(AIQ_OPS_RENDER_MAX + 1);
    assert_non_null(s);
    memset(s, 'x', AIQ_OPS_RENDER_MAX);
    s[AIQ_OPS_RENDER_MAX] = '\0';
    json_t *pl = json_pack("{s:s}", "s", s);
    aiq_op_vars_t v = {.payload = pl};
    char *sys = NULL, *user = NULL;
    aiq_err_t err = {0};
    /* Exactly the cap fits; one byte more does not. */
    assert_int_equal(aiq_op_render(aiq_ops_find(ops, "one"), &v, &sys, &user, &err), 0);
    assert_int_equal(strlen(user), AIQ_OPS_RENDER_MAX);
    free(user);
    assert_int_equal(aiq_op_render(aiq_ops_find(ops, "big"), &v, &sys, &user, &err), AIQ_ETOOBIG);
    assert_non_null(strstr(err.msg, "big"));
    assert_non_null(strstr(err.msg, "262144"));
    json_decref(pl);
    free(s);
    aiq_ops_free(ops);
}

/* ---- validation at load -------------------------------------------------------------- */

static void ops_load_unterminated_placeholder(void **state)
{
    (void)state;
    expect_load_error(
        "{'operations': {\n 'ok': {'template': 'x'},\n"
        " 'my-op': {'system': 'fine',\n  'template': 'Hello {{name'}}}",
        AIQ_EINVAL,
        (const char *const[]){":4:", "operations.my-op.template", "no closing '}}'", NULL});
    expect_load_error("{'operations': {'p': {'personas': {'Der Profi': {'fallback': "
                      "{'support': 'call {{phone'}}}}}}",
                      AIQ_EINVAL,
                      (const char *const[]){"operations.p.personas.Der Profi.fallback.support",
                                            "no closing", NULL});
    expect_load_error("{'operations': {'p': {'template': 'a {{b c}} d'}}}", AIQ_EINVAL,
                      (const char *const[]){"operations.p.template", "'{{b c}}'", NULL});
    expect_load_error("{'operations': {'p': {'template': 'a {{}} d'}}}", AIQ_EINVAL,
                      (const char *const[]){"operations.p.template", NULL});
}

static void ops_load_unknown_keys(void **state)
{
    (void)state;
    expect_load_error("{'operations': {'vc': {\n'tempalte': 'x', 'modle': 'm', 'api': 'invoke'}}}",
                      AIQ_EINVAL,
                      (const char *const[]){":2:", "operations.vc", "'tempalte'", "'modle'",
                                            "allowed:", "template", NULL});
    expect_load_error("{'operation': {}}", AIQ_EINVAL,
                      (const char *const[]){"unknown key 'operation'", NULL});
    expect_load_error("{'operations': {'p': {'personas': {'X': {'model': 'm'}}}}}", AIQ_EINVAL,
                      (const char *const[]){"operations.p.personas.X", "'model'", NULL});
    expect_load_error("{'operations': {'p': {'fallback': {'templates': 'a'}}}}", AIQ_EINVAL,
                      (const char *const[]){"operations.p.fallback", "'templates'", NULL});
    expect_load_error("{'models': {'m': {'usd_per_1k_input': 1, 'usd_per_1k_out': 2}}}", AIQ_EINVAL,
                      (const char *const[]){"models.m", "'usd_per_1k_out'", NULL});
}

static void ops_load_bad_values(void **state)
{
    (void)state;
    expect_load_error("{'operations': {'p': {'api': 'grpc'}}}", AIQ_EINVAL,
                      (const char *const[]){"operations.p.api", "converse|invoke", NULL});
    expect_load_error("{'operations': {'p': {'temperature': 1.5}}}", AIQ_EINVAL,
                      (const char *const[]){"operations.p.temperature", NULL});
    expect_load_error("{'operations': {'p': {'cache_ttl_s': -1}}}", AIQ_EINVAL,
                      (const char *const[]){"operations.p.cache_ttl_s", NULL});
    expect_load_error("{'operations': {'p': {'max_tokens': 'many'}}}", AIQ_EINVAL,
                      (const char *const[]){"operations.p.max_tokens", NULL});
    expect_load_error("{'operations': {'p': {'volatile_fields': ['ok', 'a..b']}}}", AIQ_EINVAL,
                      (const char *const[]){"operations.p.volatile_fields", "element 1", NULL});
    expect_load_error("{'operations': {'p': {'on_missing': 'skip'}}}", AIQ_EINVAL,
                      (const char *const[]){"operations.p.on_missing", NULL});
    expect_load_error("{'operations': {'p': {'model': '..'}}}", AIQ_EINVAL,
                      (const char *const[]){"operations.p.model", "modelId pattern", NULL});
    expect_load_error("{'operations': {'p': {'cache_point': 'yes'}}}", AIQ_EINVAL,
                      (const char *const[]){"operations.p.cache_point", NULL});
    expect_load_error("{'models': {'m': {'usd_per_1k_input': 1, 'usd_per_1k_output': 1, "
                      "'usd_per_1k_cache_read': -1}}}",
                      AIQ_EINVAL, (const char *const[]){"models.m.usd_per_1k_cache_read", NULL});
    expect_load_error("{'operations': {'bad name': {}}}", AIQ_EINVAL,
                      (const char *const[]){"operations.bad name", NULL});
    expect_load_error("{'models': {'m': {'usd_per_1k_input': 1}}}", AIQ_EINVAL,
                      (const char *const[]){"models.m.usd_per_1k_output", "required", NULL});
    /* Syntax errors name line and column; duplicate keys are refused. */
    expect_load_error("{'operations': {\n  'p': {'template': 'x',}\n}}", AIQ_EINVAL,
                      (const char *const[]){":2:", NULL});
    expect_load_error("{'operations': {'p': {}, 'p': {}}}", AIQ_EINVAL,
                      (const char *const[]){"duplicate", NULL});
    aiq_ops_t *ops = NULL;
    aiq_err_t err = {0};
    assert_int_equal(aiq_ops_load(&ops, "/nonexistent/ops.json", AIQ_OPS_UNKNOWN_ALLOW, &err),
                     AIQ_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent/ops.json"));
    assert_null(ops);
}

static void ops_reject_mode_and_settings(void **state)
{
    (void)state;
    const char *text = "{'operations': {'*': {'model': 'm-default', 'cache_ttl_s': 60,"
                       " 'volatile_fields': ['ts', 'meta.id'], 'max_tokens': 99},"
                       " 'a': {'model': 'm-a', 'api': 'invoke', 'temperature': 0.25,"
                       "       'volatile_fields': []},"
                       " 'b': {'cache_ttl_s': 5}}}";
    aiq_ops_t *ops = must_load(text, AIQ_OPS_UNKNOWN_REJECT);
    assert_null(aiq_ops_find(ops, "zzz"));
    assert_null(aiq_ops_find(ops, NULL));
    const aiq_op_t *a = aiq_ops_find(ops, "a"), *b = aiq_ops_find(ops, "b");
    assert_string_equal(aiq_op_model(a), "m-a");
    assert_string_equal(aiq_op_model(b), "m-default");
    assert_int_equal(aiq_op_api(a), AIQ_API_INVOKE);
    assert_int_equal(aiq_op_api(b), AIQ_API_CONVERSE);
    double t = -1;
    assert_true(aiq_op_temperature(a, &t));
    assert_true(t == 0.25);
    assert_false(aiq_op_temperature(b, &t));
    assert_int_equal(aiq_op_max_tokens(a), 99);
    assert_int_equal(aiq_op_cache_ttl_s(a), 60);
    assert_int_equal(aiq_op_cache_ttl_s(b), 5);
    size_t n = 9;
    const char *const *vf = aiq_op_volatile_fields(a, &n);
    assert_non_null(vf);
    assert_int_equal(n, 0); /* an operation's list replaces "*"'s, even when empty */
    vf = aiq_op_volatile_fields(b, &n);
    assert_int_equal(n, 2);
    assert_string_equal(vf[0], "ts");
    assert_string_equal(vf[1], "meta.id");
    aiq_ops_free(ops);
    aiq_ops_free(NULL);
    /* Allow mode: "*" answers; no "*" in the file is an empty default. */
    ops = must_load("{'operations': {'a': {}}}", AIQ_OPS_UNKNOWN_ALLOW);
    const aiq_op_t *d = aiq_ops_find(ops, "zzz");
    assert_non_null(d);
    assert_null(aiq_op_model(d));
    assert_int_equal(aiq_op_cache_ttl_s(d), -1);
    json_t *pl = payload("{'k': 1}");
    expect_render(d, "zzz", "P", pl, NULL, "Operation: zzz\nPersona: P\nInput: {\"k\":1}");
    json_decref(pl);
    aiq_ops_free(ops);
}

static void ops_prices(void **state)
{
    (void)state;
    aiq_ops_t *ops = must_load(
        "{'models': {'anthropic.m-v1:0': {'usd_per_1k_input': 0.003, 'usd_per_1k_output': 0.015},"
        " 'free': {'usd_per_1k_input': 0, 'usd_per_1k_output': 0}}}",
        AIQ_OPS_UNKNOWN_ALLOW);
    double in = -1, out = -1;
    assert_int_equal(aiq_ops_price(ops, "anthropic.m-v1:0", &in, &out), 0);
    assert_true(in == 0.003 && out == 0.015);
    in = out = -1;
    assert_int_equal(aiq_ops_price(ops, "us.anthropic.m-v1:0", &in, &out), 0);
    assert_true(in == 0.003 && out == 0.015);
    assert_int_equal(aiq_ops_price(ops, "free", &in, &out), 0);
    assert_true(in == 0 && out == 0);
    in = 7;
    assert_int_equal(aiq_ops_price(ops, "anthropic.other", &in, &out), AIQ_ENOTFOUND);
    assert_true(in == 7);
    assert_int_equal(aiq_ops_price(ops, NULL, &in, &out), AIQ_ENOTFOUND);
    aiq_ops_free(ops);
}

/* Regression: a foundation-model ARN got cost_usd null and profile ids were priced only by
 * chance (any text before the first dot was dropped). */
static void ops_prices_by_base_model(void **state)
{
    (void)state;
    aiq_ops_t *ops = must_load(
        "{'models': {'anthropic.m-v1:0': {'usd_per_1k_input': 0.003, 'usd_per_1k_output': 0.015,"
        " 'usd_per_1k_cache_read': 0.0003, 'usd_per_1k_cache_write': 0.00375},"
        " 'amazon.nova-lite-v1:0': {'usd_per_1k_input': 0.00006, 'usd_per_1k_output': 0.00024},"
        " 'arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/app1':"
        "  {'usd_per_1k_input': 0.001, 'usd_per_1k_output': 0.002}}}",
        AIQ_OPS_UNKNOWN_ALLOW);
    static const char *const priced[] = {
        "anthropic.m-v1:0",
        "us.anthropic.m-v1:0",
        "eu.anthropic.m-v1:0",
        "apac.anthropic.m-v1:0",
        "global.anthropic.m-v1:0",
        "arn:aws:bedrock:us-east-1::foundation-model/anthropic.m-v1:0",
        "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.m-v1:0",
        "arn:aws-cn:bedrock:cn-north-1::foundation-model/anthropic.m-v1:0",
    };
    for (size_t i = 0; i < sizeof(priced) / sizeof(priced[0]); i++) {
        double in = -1, out = -1;
        if (aiq_ops_price(ops, priced[i], &in, &out) || in != 0.003 || out != 0.015)
            fail_msg("%s: not priced as anthropic.m-v1:0", priced[i]);
    }
    double in, out;
    assert_int_equal(aiq_ops_price(ops, "m-v1:0", &in, &out), AIQ_ENOTFOUND);
    assert_int_equal(aiq_ops_price(ops, "xx.anthropic.m-v1:0", &in, &out), AIQ_ENOTFOUND);
    assert_int_equal(aiq_ops_price(ops,
                                   "arn:aws:bedrock:us-east-1:123456789012:"
                                   "application-inference-profile/app1",
                                   &in, &out),
                     0);
    assert_true(in == 0.001);
    assert_int_equal(aiq_ops_price(ops,
                                   "arn:aws:bedrock:us-east-1:123456789012:"
                                   "application-inference-profile/other",
                                   &in, &out),
                     AIQ_ENOTFOUND);

    /* Cache reads and writes at their own prices; no cache price, no guess. */
    aiq_usage_t u = {11, 3, 1500, 500};
    double usd = -1;
    assert_int_equal(aiq_ops_cost(ops, "us.anthropic.m-v1:0", &u, &usd), 0);
    double want = (11 * 0.003 + 3 * 0.015 + 1500 * 0.0003 + 500 * 0.00375) / 1000.0;
    assert_true(usd > want - 1e-12 && usd < want + 1e-12);
    assert_int_equal(aiq_ops_cost(ops, "amazon.nova-lite-v1:0", &u, &usd), AIQ_ENOTFOUND);
    aiq_usage_t plain = {1000, 1000, 0, 0};
    assert_int_equal(aiq_ops_cost(ops, "amazon.nova-lite-v1:0", &plain, &usd), 0);
    assert_true(usd > 0.0003 - 1e-12 && usd < 0.0003 + 1e-12);
    aiq_ops_free(ops);
}

/* Regression: floats in prompts were written with 17 digits ("4.0999999999999996"). */
static void ops_numbers_shortest_in_prompts(void **state)
{
    (void)state;
    json_t *v = json_loads("{\"b\":[4.1,0.1,1e300,2.0,-0.5,3],\"a\":\"q\\\"\\n\\u0001\"}", 0, NULL);
    char *text = NULL;
    assert_int_equal(aiq_ops_json_text(v, 0, &text), 0);
    assert_string_equal(text, "{\"a\":\"q\\\"\\n\\u0001\",\"b\":[4.1,0.1,1e+300,2.0,-0.5,3]}");
    free(text);
    json_decref(v);
    aiq_ops_t *ops = must_load("{'operations': {'r': {'template': '{{rating}} {{payload}}'}}}",
                               AIQ_OPS_UNKNOWN_ALLOW);
    json_t *payload = json_pack("{s:f}", "rating", 4.1);
    aiq_op_vars_t vars = {.operation = "r", .payload = payload};
    char *sys = NULL, *user = NULL;
    aiq_err_t err = {0};
    assert_int_equal(aiq_op_render(aiq_ops_find(ops, "r"), &vars, &sys, &user, &err), 0);
    assert_string_equal(user, "4.1 {\"rating\":4.1}");
    free(sys);
    free(user);
    json_decref(payload);
    aiq_ops_free(ops);
}

/* ---- the shipped file ---------------------------------------------------------------- */

static void render_example(const aiq_op_t *op, const char *persona, char **sys, char **user)
{
    const json_t *ex = aiq_op_example(op);
    assert_non_null(ex);
    aiq_op_vars_t v = {.operation = aiq_op_name(op), .persona = persona, .payload = ex};
    aiq_err_t err = {0};
    int rc = aiq_op_render(op, &v, sys, user, &err);
    if (rc)
        print_error("%s/%s: %s\n", aiq_op_name(op), persona ? persona : "-", err.msg);
    assert_int_equal(rc, 0);
}

static void ops_shipped_file_renders_examples(void **state)
{
    (void)state;
    aiq_ops_t *file = NULL, *builtin = NULL;
    aiq_err_t err = {0};
    int rc = aiq_ops_load(&file, AIQ_OPS_FILE, AIQ_OPS_UNKNOWN_REJECT, &err);
    if (rc)
        print_error("%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(aiq_ops_load(&builtin, NULL, AIQ_OPS_UNKNOWN_REJECT, &err), 0);
    assert_int_equal(aiq_ops_count(file), 4);
    assert_int_equal(aiq_ops_count(builtin), 4);
    const char *personas[] = {NULL, "Der Profi", "Der Skeptiker", "Der Zeitknappe",
                              "Der Überforderte"};
    for (size_t i = 0; i < 4; i++) {
        const aiq_op_t *f = aiq_ops_find(file, SHIPPED[i]), *b = aiq_ops_find(builtin, SHIPPED[i]);
        assert_non_null(f);
        assert_non_null(b);
        for (size_t p = 0; p < 5; p++) {
            char *fs, *fu, *bs, *bu;
            render_example(f, personas[p], &fs, &fu);
            render_example(b, personas[p], &bs, &bu);
            /* Built-in and file are one source: identical renders. */
            assert_string_equal(fs, bs);
            assert_string_equal(fu, bu);
            assert_true(strlen(fs) > 40 && strlen(fu) > 40);
            assert_null(strstr(fu, "{{"));
            assert_null(strstr(fs, "{{"));
            free(fs);
            free(fu);
            free(bs);
            free(bu);
            for (int k = AIQ_FALLBACK_TEMPLATE; k <= AIQ_FALLBACK_SUPPORT; k++) {
                aiq_op_vars_t v = {.persona = personas[p], .payload = aiq_op_example(f)};
                char *out = NULL;
                assert_int_equal(aiq_op_render_fallback(f, &v, k, &out, &err), 0);
                assert_null(strstr(out, "{{"));
                free(out);
            }
        }
    }
    char *sys, *user;
    render_example(aiq_ops_find(file, "vc-analysis"), NULL, &sys, &user);
    assert_true(strncmp(user, "Visibility check for Test Restaurant (restaurant) in Munich.", 60) ==
                0);
    assert_non_null(strstr(sys, "online visibility"));
    free(sys);
    free(user);
    render_example(aiq_ops_find(file, "business-framework"), NULL, &sys, &user);
    assert_non_null(
        strstr(user, "Apply the SWOT framework to Test Restaurant, a restaurant in Munich."));
    free(sys);
    free(user);
    render_example(aiq_ops_find(file, "vc-analysis"), "Der Zeitknappe", &sys, &user);
    assert_non_null(strstr(user, "only the three most important next steps"));
    free(sys);
    free(user);
    /* Persona-adapted fallback: "*"'s variant applies where the operation has none. */
    const aiq_op_t *pd = aiq_ops_find(file, "persona-detection");
    assert_non_null(strstr(aiq_op_fallback_text(pd, "Der Zeitknappe", AIQ_FALLBACK_SIMPLIFIED),
                           "Not available right now"));
    assert_non_null(
        strstr(aiq_op_fallback_text(pd, NULL, AIQ_FALLBACK_TEMPLATE), "\"persona\": \"unknown\""));
    assert_int_equal(aiq_op_cache_ttl_s(aiq_ops_find(file, "content-generation")), 3600);
    size_t n;
    const char *const *vf = aiq_op_volatile_fields(aiq_ops_find(file, "vc-analysis"), &n);
    assert_int_equal(n, 3);
    assert_string_equal(vf[2], "meta.requestedAt");
    double in, out;
    assert_int_equal(aiq_ops_price(file, "anthropic.claude-3-haiku-20240307-v1:0", &in, &out), 0);
    assert_true(in == 0.00025 && out == 0.00125);
    assert_null(aiq_ops_find(file, "unknown-op"));
    aiq_ops_free(file);
    aiq_ops_free(builtin);
}

/* ---- Bedrock requests from operations ------------------------------------------------ */

static const char OPS_FOR_BEDROCK[] =
    "{'operations': {"
    " '*': {'system': 'Default system.', 'template': 'default {{payload}}'},"
    " 'summarize': {'model': 'op.model-v1:0', 'system': 'You summarize for {{audience}}.',"
    "   'template': 'Summarize {{doc.title}} in {{n}} words.', 'max_tokens': 321,"
    "   'temperature': 0.5},"
    " 'inv': {'api': 'invoke', 'model': 'anthropic.claude-v2', 'template': 'Invoke {{x}}',"
    "  'max_tokens': 77}}}";

typedef struct built {
    int rc;
    aiq_bedrock_call_t call;
    json_t *body;
    aiq_err_t err;
} built_t;

static built_t build(const aiq_ops_t *ops, const char *job_text)
{
    built_t b;
    memset(&b, 0, sizeof(b));
    aiq_bedrock_conf_t conf = {.endpoint = "http://127.0.0.1:1",
                               .region = "us-east-1",
                               .default_model = "conf.default-v1:0",
                               .default_max_tokens = 512,
                               .ops = ops};
    aiq_sigv4_creds_t creds = {.access_key = "AKIDTEST", .secret_key = "secret"};
    char *doc = q(job_text);
    aiq_job_t *job = NULL;
    aiq_job_reject_t why;
    int rc = aiq_job_decode(doc, strlen(doc), 65536, &job, &why, NULL, &b.err);
    free(doc);
    if (rc)
        print_error("job: %s\n", b.err.msg);
    assert_int_equal(rc, 0);
    b.rc = aiq_bedrock_build(&conf, &creds, job, 1700000000, &b.call, &b.err);
    if (!b.rc) {
        b.body = json_loads(b.call.body, 0, NULL);
        assert_non_null(b.body);
        /* The model borrowed from the job or the ops must outlive the job: copy it. */
        b.call.model = strdup(b.call.model);
    }
    aiq_job_free(job);
    return b;
}

static void built_free(built_t *b)
{
    if (!b->rc)
        free((char *)b->call.model);
    aiq_bedrock_call_free(&b->call);
    json_decref(b->body);
}

static const char *jstr(json_t *root, const char *pointer)
{
    json_t *v = root;
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", pointer);
    for (char *save = NULL, *tok = strtok_r(buf, "/", &save); tok && v;
         tok = strtok_r(NULL, "/", &save))
        v = json_is_array(v) ? json_array_get(v, strtoul(tok, NULL, 10)) : json_object_get(v, tok);
    return json_string_value(v);
}

static void ops_bedrock_converse_from_operation(void **state)
{
    (void)state;
    aiq_ops_t *ops = must_load(OPS_FOR_BEDROCK, AIQ_OPS_UNKNOWN_ALLOW);
    built_t b = build(ops, "{'id': 'j1', 'operation': 'summarize', 'payload': {'audience': "
                           "'CFOs', 'doc': {'title': 'Q3 report'}, 'n': 50}}");
    assert_int_equal(b.rc, 0);
    assert_int_equal(b.call.wire.api, AIQ_API_CONVERSE);
    assert_string_equal(b.call.model, "op.model-v1:0");
    assert_non_null(strstr(b.call.url, "/model/op.model-v1%3A0/converse"));
    assert_string_equal(jstr(b.body, "system/0/text"), "You summarize for CFOs.");
    assert_string_equal(jstr(b.body, "messages/0/role"), "user");
    assert_string_equal(jstr(b.body, "messages/0/content/0/text"),
                        "Summarize Q3 report in 50 words.");
    json_t *inf = json_object_get(b.body, "inferenceConfig");
    assert_int_equal(json_integer_value(json_object_get(inf, "maxTokens")), 321);
    assert_true(json_number_value(json_object_get(inf, "temperature")) == 0.5);
    built_free(&b);

    /* The job's model, system and inference beat the operation's. */
    b = build(ops, "{'id': 'j2', 'operation': 'summarize', 'model': 'job.model-v1:0', 'system': "
                   "'Job system.', 'inference': {'max_tokens': 9, 'temperature': 0.1}, "
                   "'payload': {'doc': {'title': 'T'}, 'n': 5}}");
    assert_int_equal(b.rc, 0);
    assert_string_equal(b.call.model, "job.model-v1:0");
    assert_string_equal(jstr(b.body, "system/0/text"), "Job system.");
    assert_string_equal(jstr(b.body, "messages/0/content/0/text"), "Summarize T in 5 words.");
    inf = json_object_get(b.body, "inferenceConfig");
    assert_int_equal(json_integer_value(json_object_get(inf, "maxTokens")), 9);
    assert_true(json_number_value(json_object_get(inf, "temperature")) == 0.1);
    built_free(&b);

    /* An operation without a model: the worker's default; unknown names use "*". */
    b = build(ops, "{'id': 'j3', 'operation': 'other', 'payload': {'k': 'v'}}");
    assert_int_equal(b.rc, 0);
    assert_string_equal(b.call.model, "conf.default-v1:0");
    assert_string_equal(jstr(b.body, "system/0/text"), "Default system.");
    assert_string_equal(jstr(b.body, "messages/0/content/0/text"), "default {\"k\":\"v\"}");
    inf = json_object_get(b.body, "inferenceConfig");
    assert_int_equal(json_integer_value(json_object_get(inf, "maxTokens")), 512);
    assert_null(json_object_get(inf, "temperature"));
    built_free(&b);

    /* A job that brings its own messages keeps them and gets no operation system prompt. */
    b = build(ops, "{'id': 'j4', 'operation': 'summarize', 'messages': [{'role': 'user', "
                   "'content': [{'text': 'mine'}]}]}");
    assert_int_equal(b.rc, 0);
    assert_string_equal(jstr(b.body, "messages/0/content/0/text"), "mine");
    assert_null(json_object_get(b.body, "system"));
    assert_string_equal(b.call.model, "op.model-v1:0");
    built_free(&b);
    aiq_ops_free(ops);
}

static void ops_bedrock_invoke_and_reject(void **state)
{
    (void)state;
    aiq_ops_t *ops = must_load(OPS_FOR_BEDROCK, AIQ_OPS_UNKNOWN_REJECT);
    built_t b = build(ops, "{'id': 'j5', 'operation': 'inv', 'payload': {'x': 'it'}}");
    assert_int_equal(b.rc, 0);
    assert_int_equal(b.call.wire.api, AIQ_API_INVOKE);
    assert_non_null(strstr(b.call.url, "/model/anthropic.claude-v2/invoke"));
    assert_string_equal(jstr(b.body, "anthropic_version"), "bedrock-2023-05-31");
    assert_int_equal(json_integer_value(json_object_get(b.body, "max_tokens")), 77);
    assert_string_equal(jstr(b.body, "system/0/text"), "Default system.");
    assert_string_equal(jstr(b.body, "messages/0/content/0/type"), "text");
    assert_string_equal(jstr(b.body, "messages/0/content/0/text"), "Invoke it");
    built_free(&b);

    /* An explicit "api" in the job beats the operation's. */
    b = build(ops, "{'id': 'j6', 'operation': 'inv', 'api': 'converse', 'payload': {'x': 1}}");
    assert_int_equal(b.rc, 0);
    assert_int_equal(b.call.wire.api, AIQ_API_CONVERSE);
    assert_string_equal(jstr(b.body, "messages/0/content/0/text"), "Invoke 1");
    built_free(&b);

    b = build(ops, "{'id': 'j7', 'operation': 'nope', 'payload': {}}");
    assert_int_equal(b.rc, AIQ_ENOTFOUND);
    assert_non_null(strstr(b.err.msg, "nope"));
    assert_null(b.call.body);
    built_free(&b);

    /* Without operations the payload goes as JSON, as before. */
    b = build(NULL, "{'id': 'j8', 'operation': 'nope', 'persona': 'P', 'payload': {'b': 1, "
                    "'a': 2}}");
    assert_int_equal(b.rc, 0);
    assert_string_equal(jstr(b.body, "messages/0/content/0/text"),
                        "Operation: nope\nPersona: P\nInput: {\"a\":2,\"b\":1}");
    built_free(&b);
    aiq_ops_free(ops);
}

static void ops_bedrock_parse_invoke_usage(void **state)
{
    (void)state;
    const char *body = "{\"content\":[{\"type\":\"text\",\"text\":\"hi \"},{\"type\":\"tool_use\","
                       "\"text\":\"no\"},{\"type\":\"text\",\"text\":\"there\"}],"
                       "\"stop_reason\":\"max_tokens\",\"usage\":{\"input_tokens\":12,"
                       "\"output_tokens\":34}}";
    aiq_bedrock_reply_t r;
    aiq_bedrock_wire_t w = {AIQ_API_INVOKE, AIQ_FAMILY_ANTHROPIC, false, false};
    aiq_bedrock_resp_t resp = {body, strlen(body), NULL, NULL, NULL, NULL};
    assert_int_equal(aiq_bedrock_parse(&w, &resp, &r, NULL), 0);
    assert_string_equal(r.text, "hi there");
    assert_string_equal(r.stop_reason, "max_tokens");
    assert_int_equal(r.input_tokens, 12);
    assert_int_equal(r.output_tokens, 34);
    aiq_bedrock_reply_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ops_render_fields_and_nested_paths),
        cmocka_unit_test(ops_persona_over_operation_over_default),
        cmocka_unit_test(ops_missing_field_rule),
        cmocka_unit_test(ops_render_size_bound),
        cmocka_unit_test(ops_load_unterminated_placeholder),
        cmocka_unit_test(ops_load_unknown_keys),
        cmocka_unit_test(ops_load_bad_values),
        cmocka_unit_test(ops_reject_mode_and_settings),
        cmocka_unit_test(ops_prices),
        cmocka_unit_test(ops_prices_by_base_model),
        cmocka_unit_test(ops_numbers_shortest_in_prompts),
        cmocka_unit_test(ops_shipped_file_renders_examples),
        cmocka_unit_test(ops_bedrock_converse_from_operation),
        cmocka_unit_test(ops_bedrock_invoke_and_reject),
        cmocka_unit_test(ops_bedrock_parse_invoke_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
