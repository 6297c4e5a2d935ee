/* fuzz_canon.c — the payload canonicaliser behind every cache key (aiq_canon_json), on any
 * JSON value the job decoder would let through (same parser flags). The first input byte
 * picks a volatile-field list; the rest is the JSON text. Properties checked besides memory
 * safety:
 *  - the canonical text is JSON, and canonicalising it again gives the same bytes
 *    (with no drop list: the dropped members are already gone);
 *  - member order does not matter: the same value rebuilt with every object's members in
 *    reverse order has the same canonical text;
 *  - errors are only the documented ones (AIQ_EINVAL, AIQ_ETOOBIG, AIQ_ENOMEM). */
#include "canon.h"
#include "fuzz.h"

#include <jansson.h>
#include <string.h>

#define FUZZ_FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY) /* as aiq_job_decode */

static const char *const drop_all[] = {"request_id", "meta.ts", "meta.trace.id", "a.b.c", "x"};

/* A deep copy with the members of every object inserted last-first. NULL when too deep for the
 * C stack (the canonicaliser refuses those anyway) or out of memory. */
static json_t *reversed(json_t *v, int depth)
{
    if (depth > AIQ_CANON_DEPTH_MAX + 1)
        return NULL;
    if (json_is_array(v)) {
        json_t *a = json_array();
        for (size_t i = 0; a && i < json_array_size(v); i++) {
            json_t *c = reversed(json_array_get(v, i), depth + 1);
            if (!c || json_array_append_new(a, c)) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    if (!json_is_object(v))
        return json_copy(v);
    size_t n = json_object_size(v), i = 0;
    const char **keys = calloc(n ? n : 1, sizeof(*keys));
    json_t *o = keys ? json_object() : NULL;
    const char *k;
    json_t *c;
    json_object_foreach(v, k, c)
    {
        keys[i++] = k;
    }
    while (o && i > 0) {
        i--;
        c = reversed(json_object_get(v, keys[i]), depth + 1);
        if (!c || json_object_set_new(o, keys[i], c)) {
            json_decref(o);
            o = NULL;
        }
    }
    free(keys);
    return o;
}

static void check_canon(json_t *v, const char *const *drop, size_t ndrop)
{
    char *out = NULL, *again = NULL, *rev_out = NULL;
    size_t len = 0, len2 = 0, len3 = 0;
    aiq_err_t err = {0};

    int rc = aiq_canon_json(v, drop, ndrop, &out, &len, &err);
    if (rc) {
        FUZZ_CHECK(rc == AIQ_EINVAL || rc == AIQ_ETOOBIG || rc == AIQ_ENOMEM, "rc %d", rc);
        FUZZ_CHECK(err.msg[0], "error %d without a message", rc);
        return;
    }
    FUZZ_CHECK(strlen(out) == len, "length %zu but strlen %zu", len, strlen(out));
    json_error_t jerr;
    json_t *back = json_loadb(out, len, FUZZ_FLAGS, &jerr);
    FUZZ_CHECK(back, "canonical text is not JSON (%s): %s", jerr.text, out);
    FUZZ_CHECK(aiq_canon_json(back, NULL, 0, &again, &len2, &err) == 0, "%s", err.msg);
    FUZZ_CHECK(len2 == len && !memcmp(again, out, len), "not idempotent:\n%s\n%s", out, again);

    json_t *rev = reversed(v, 0);
    if (rev) {
        FUZZ_CHECK(aiq_canon_json(rev, drop, ndrop, &rev_out, &len3, &err) == 0, "%s", err.msg);
        FUZZ_CHECK(len3 == len && !memcmp(rev_out, out, len), "order matters:\n%s\n%s", out,
                   rev_out);
    }
    json_decref(rev);
    json_decref(back);
    free(out);
    free(again);
    free(rev_out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t ndrop = data[0] % (sizeof(drop_all) / sizeof(drop_all[0]) + 1);
    json_t *v = json_loadb((const char *)data + 1, size - 1, FUZZ_FLAGS, NULL);
    if (!v)
        return 0;
    check_canon(v, ndrop ? drop_all : NULL, ndrop);
    json_decref(v);
    return 0;
}
