/* The streaming JSON writer: what it writes parses back to what was given. */
#include "jsonw.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static char *finish_ok(aiq_jw_t *w)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(aiq_jw_finish(w, &out, &len), 0);
    assert_int_equal(len, strlen(out));
    return out;
}

static void jsonw_nesting_and_commas(void **state)
{
    (void)state;
    aiq_jw_t w = {0};
    aiq_jw_obj_begin(&w);
    aiq_jw_key(&w, "a");
    aiq_jw_int(&w, -5);
    aiq_jw_key(&w, "b");
    aiq_jw_obj_begin(&w);
    aiq_jw_key(&w, "c");
    aiq_jw_bool(&w, true);
    aiq_jw_key(&w, "d");
    aiq_jw_null(&w);
    aiq_jw_obj_end(&w);
    aiq_jw_key(&w, "e");
    aiq_jw_str(&w, NULL);
    aiq_jw_key(&w, "f");
    aiq_jw_obj_begin(&w);
    aiq_jw_obj_end(&w);
    aiq_jw_obj_end(&w);
    char *s = finish_ok(&w);
    assert_string_equal(s, "{\"a\":-5,\"b\":{\"c\":true,\"d\":null},\"e\":null,\"f\":{}}");
    free(s);
}

static void jsonw_strings_escape_and_round_trip(void **state)
{
    (void)state;
    const char *in = "q\"b\\s/\n\r\t\b\f\x01\x1f\x7f é 😀";
    aiq_jw_t w = {0};
    aiq_jw_obj_begin(&w);
    aiq_jw_key(&w, "k\"ey");
    aiq_jw_str(&w, in);
    aiq_jw_obj_end(&w);
    char *s = finish_ok(&w);
    json_error_t je;
    json_t *v = json_loads(s, 0, &je);
    assert_non_null(v);
    assert_string_equal(json_string_value(json_object_get(v, "k\"ey")), in);
    assert_non_null(strstr(s, "\\u0001"));
    json_decref(v);
    free(s);
}

static void jsonw_refuses_what_is_not_utf8(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\xc0\xaf",         /* overlong '/' */
        "\xed\xa0\x80",     /* a surrogate */
        "\xf4\x90\x80\x80", /* past U+10FFFF */
        "ab\xe2\x82",       /* cut short */
        "\x80",             /* a continuation alone */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        aiq_jw_t w = {0};
        char *out = NULL;
        size_t len = 0;
        aiq_jw_obj_begin(&w);
        aiq_jw_key(&w, "t");
        aiq_jw_str(&w, bad[i]);
        aiq_jw_obj_end(&w);
        assert_int_equal(aiq_jw_finish(&w, &out, &len), AIQ_EINVAL);
        assert_null(out);
    }
}

static void jsonw_reals_are_shortest_and_stay_reals(void **state)
{
    (void)state;
    static const double vals[] = {0.1, 2.0, 1e-7, 0.000312, 123456.789, 1.0 / 3, 5e300};
    static const char *const text[] = {"0.1",        "2.0", "1e-07", "0.000312",
                                       "123456.789", NULL,  "5e+300"};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        aiq_jw_t w = {0};
        aiq_jw_real(&w, vals[i]);
        char *s = finish_ok(&w);
        if (text[i])
            assert_string_equal(s, text[i]);
        json_t *v = json_loads(s, JSON_DECODE_ANY, NULL);
        assert_non_null(v);
        assert_true(json_is_real(v));
        assert_true(json_real_value(v) == vals[i]);
        json_decref(v);
        free(s);
    }
    aiq_jw_t w = {0};
    aiq_jw_real(&w, 1.0 / 0.0);
    char *s = finish_ok(&w);
    assert_string_equal(s, "null");
    free(s);
}

static void jsonw_embeds_jansson_values_and_bounds_depth(void **state)
{
    (void)state;
    json_t *v = json_pack("{s:[i,s]}", "x", 1, "y");
    aiq_jw_t w = {0};
    aiq_jw_obj_begin(&w);
    aiq_jw_key(&w, "v");
    aiq_jw_json(&w, v);
    aiq_jw_key(&w, "n");
    aiq_jw_int(&w, INT64_MIN);
    aiq_jw_obj_end(&w);
    char *s = finish_ok(&w);
    assert_string_equal(s, "{\"v\":{\"x\":[1,\"y\"]},\"n\":-9223372036854775808}");
    free(s);
    json_decref(v);
    aiq_jw_t d = {0};
    for (int i = 0; i <= AIQ_JSONW_DEPTH; i++)
        aiq_jw_obj_begin(&d);
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(aiq_jw_finish(&d, &out, &len), AIQ_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(jsonw_nesting_and_commas),
        cmocka_unit_test(jsonw_strings_escape_and_round_trip),
        cmocka_unit_test(jsonw_refuses_what_is_not_utf8),
        cmocka_unit_test(jsonw_reals_are_shortest_and_stay_reals),
        cmocka_unit_test(jsonw_embeds_jansson_values_and_bounds_depth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
