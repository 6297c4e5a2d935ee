#include "aiq_err.h"
#include "idmap.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

static void idmap_put_get_replace(void **state)
{
    (void)state;
    aiq_idmap_t *m = aiq_idmap_new();
    assert_non_null(m);
    uint64_t v = 0;
    assert_int_equal(aiq_idmap_get(m, "a", &v), AIQ_ENOTFOUND);
    assert_int_equal(aiq_idmap_put(m, "a", 7), 1);
    assert_int_equal(aiq_idmap_put(m, "b", 8), 1);
    assert_int_equal(aiq_idmap_get(m, "a", &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(aiq_idmap_put(m, "a", 9), 0);
    assert_int_equal(aiq_idmap_get(m, "a", &v), 0);
    assert_int_equal(v, 9);
    assert_int_equal(aiq_idmap_len(m), 2);
    aiq_idmap_free(m);
    aiq_idmap_free(NULL);
}

/* 100,000 ids force many doublings; every id keeps its own value, absent ids stay absent. */
static void idmap_grows_and_keeps_every_value(void **state)
{
    (void)state;
    aiq_idmap_t *m = aiq_idmap_new();
    char id[64];
    for (uint64_t i = 0; i < 100000; i++) {
        snprintf(id, sizeof(id), "batch-%llu", (unsigned long long)i);
        assert_int_equal(aiq_idmap_put(m, id, i * 3), 1);
    }
    assert_int_equal(aiq_idmap_len(m), 100000);
    for (uint64_t i = 0; i < 100000; i++) {
        uint64_t v;
        snprintf(id, sizeof(id), "batch-%llu", (unsigned long long)i);
        assert_int_equal(aiq_idmap_get(m, id, &v), 0);
        assert_int_equal(v, i * 3);
        snprintf(id, sizeof(id), "other-%llu", (unsigned long long)i);
        assert_int_equal(aiq_idmap_get(m, id, &v), AIQ_ENOTFOUND);
    }
    aiq_idmap_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(idmap_put_get_replace),
        cmocka_unit_test(idmap_grows_and_keeps_every_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
