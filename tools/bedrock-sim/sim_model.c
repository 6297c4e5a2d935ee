/* sim_model.c — a request checked against botocore's service model: the shapes file that
 * gen_model.py compacts from botocore's bedrock-runtime service-2.json, walked generically.
 * Structures (required and unknown members, unions with exactly one member), lists, maps,
 * strings (length in code points, enum, pattern), integer/long (and their 32/64-bit range),
 * float/double, boolean, blob (base64, decoded length), timestamp and document, with the
 * uri and header members read through a callback. Patterns are the model's, translated to
 * POSIX extended regexes by gen_model.py and matched with regexec() as Smithy means them:
 * anywhere in the value, not anchored unless the pattern anchors itself. */
#include "sim_internal.h"
#include "sim_request.h"

#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_MAX_BYTES 256 /* of the member path quoted in a refusal */
#define VALUE_SHOWN    64  /* bytes of a refused value quoted */

struct sim_model {
    json_t *doc;      /* owned copy of the shapes file */
    json_t *shapes;   /* borrowed from doc */
    json_t *ops;      /* borrowed from doc */
    json_t *re_index; /* shape name -> index into re */
    regex_t *re;
    size_t nre;
};

typedef struct vctx {
    const sim_model_t *m;
    char *why;
    size_t cap;
    char path[PATH_MAX_BYTES];
} vctx_t;

/* ---- loading --------------------------------------------------------------------------------- */

static int compile_patterns(sim_model_t *m, char *why, size_t cap)
{
    const char *name;
    json_t *s;
    size_t n = 0;

    json_object_foreach(m->shapes, name, s)
    {
        n += json_is_string(json_object_get(s, "ere"));
    }
    m->re = calloc(n ? n : 1, sizeof(*m->re));
    if (!m->re) {
        snprintf(why, cap, "out of memory");
        return -1;
    }
    json_object_foreach(m->shapes, name, s)
    {
        const char *ere = json_string_value(json_object_get(s, "ere"));
        if (!ere)
            continue;
        int rc = regcomp(&m->re[m->nre], ere, REG_EXTENDED | REG_NOSUB);
        if (rc) {
            char msg[128];
            regerror(rc, &m->re[m->nre], msg, sizeof(msg));
            snprintf(why, cap, "shape %s: pattern does not compile: %s", name, msg);
            return -1;
        }
        json_object_set_new(m->re_index, name, json_integer((json_int_t)m->nre++));
    }
    return 0;
}

sim_model_t *sim_model_new(json_t *doc, char *why, size_t cap)
{
    sim_model_t *m = calloc(1, sizeof(*m));

    if (!m) {
        snprintf(why, cap, "out of memory");
        return NULL;
    }
    m->doc = json_deep_copy(doc);
    m->shapes = json_object_get(m->doc, "shapes");
    m->ops = json_object_get(m->doc, "operations");
    m->re_index = json_object();
    if (!json_is_object(m->shapes) || !json_is_object(m->ops) || !m->re_index) {
        snprintf(why, cap, "not a shapes file (needs \"operations\" and \"shapes\" objects)");
        sim_model_free(m);
        return NULL;
    }
    if (compile_patterns(m, why, cap)) {
        sim_model_free(m);
        return NULL;
    }
    return m;
}

void sim_model_free(sim_model_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nre; i++)
        regfree(&m->re[i]);
    free(m->re);
    json_decref(m->re_index);
    json_decref(m->doc);
    free(m);
}

json_t *sim_model_unenforced(const sim_model_t *m)
{
    json_t *u = json_object_get(m->doc, "unenforced");
    return json_is_array(u) ? json_deep_copy(u) : json_array();
}

/* ---- refusals ----------------------------------------------------------------------------------
 */

static int fail(vctx_t *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(vctx_t *v, const char *fmt, ...)
{
    char msg[400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(v->why, v->cap, "1 validation error detected: %s", msg);
    return -1;
}

/* The value as AWS quotes it: strings as they are (cut), everything else as JSON. */
static void shown(json_t *val, char *buf, size_t cap)
{
    char *text = json_is_string(val) ? NULL : json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
    const char *s = json_is_string(val) ? json_string_value(val) : text ? text : "?";

    snprintf(buf, cap, "%.*s%s", VALUE_SHOWN, s, strlen(s) > VALUE_SHOWN ? "..." : "");
    free(text);
}

static int fail_value(vctx_t *v, json_t *val, const char *constraint, ...)
    __attribute__((format(printf, 3, 4)));

static int fail_value(vctx_t *v, json_t *val, const char *constraint, ...)
{
    char what[200], value[VALUE_SHOWN + 8];
    va_list ap;

    va_start(ap, constraint);
    vsnprintf(what, sizeof(what), constraint, ap);
    va_end(ap);
    shown(val, value, sizeof(value));
    return fail(v, "Value '%s' at '%s' failed to satisfy constraint: Member must %s", value,
                v->path, what);
}

/* Appends ".seg" (or "seg" at the top) to the path; returns the old length to restore. */
static size_t path_push(vctx_t *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static size_t path_push(vctx_t *v, const char *fmt, ...)
{
    size_t n = strlen(v->path);
    va_list ap;

    if (n && n + 1 < sizeof(v->path))
        v->path[n] = '.', v->path[n + 1] = '\0';
    va_start(ap, fmt);
    size_t at = strlen(v->path);
    vsnprintf(v->path + at, sizeof(v->path) - at, fmt, ap);
    va_end(ap);
    return n;
}

static void path_pop(vctx_t *v, size_t n)
{
    v->path[n] = '\0';
}

/* ---- checks by type ----------------------------------------------------------------------------
 */

static int check_value(vctx_t *v, json_t *val, const char *shape_name, int depth);

static size_t utf8_chars(const char *s, size_t n)
{
    size_t chars = 0;
    for (size_t i = 0; i < n; i++)
        chars += ((unsigned char)s[i] & 0xC0) != 0x80;
    return chars;
}

static bool has_bound(json_t *shape, const char *k, double *out)
{
    json_t *b = json_object_get(shape, k);
    if (!json_is_number(b))
        return false;
    *out = json_number_value(b);
    return true;
}

/* min/max as a length (strings, blobs, lists, maps). */
static int check_length(vctx_t *v, json_t *val, json_t *shape, size_t len)
{
    double lo, hi;

    if (has_bound(shape, "min", &lo) && (double)len < lo)
        return fail_value(v, val, "have length greater than or equal to %.0f", lo);
    if (has_bound(shape, "max", &hi) && (double)len > hi)
        return fail_value(v, val, "have length less than or equal to %.0f", hi);
    return 0;
}

static int check_enum(vctx_t *v, json_t *val, json_t *shape)
{
    json_t *e = json_object_get(shape, "enum"), *item;
    size_t i, n = 0;
    char list[300];

    if (!json_is_array(e))
        return 0;
    json_array_foreach(e, i, item)
    {
        if (json_equal(item, val))
            return 0;
    }
    list[0] = '\0';
    json_array_foreach(e, i, item)
    {
        int w =
            snprintf(list + n, sizeof(list) - n, "%s%s", i ? ", " : "", json_string_value(item));
        n = w > 0 && (size_t)w < sizeof(list) - n ? n + (size_t)w : n;
    }
    return fail_value(v, val, "satisfy enum value set: [%s]", list);
}

static int check_pattern(vctx_t *v, json_t *val, const char *shape_name, json_t *shape)
{
    json_t *idx = json_object_get(v->m->re_index, shape_name);
    const char *s = json_string_value(val);

    if (!idx)
        return 0; /* no pattern, or one listed as unenforced */
    if (strlen(s) == json_string_length(val) &&
        regexec(&v->m->re[json_integer_value(idx)], s, 0, NULL, 0) == 0)
        return 0;
    return fail_value(v, val, "satisfy regular expression pattern: %s",
                      json_string_value(json_object_get(shape, "pattern")));
}

static int check_string(vctx_t *v, json_t *val, const char *shape_name, json_t *shape)
{
    if (!json_is_string(val))
        return fail_value(v, val, "be a string");
    if (check_length(v, val, shape, utf8_chars(json_string_value(val), json_string_length(val))) ||
        check_enum(v, val, shape))
        return -1;
    return check_pattern(v, val, shape_name, shape);
}

static int check_number(vctx_t *v, json_t *val, json_t *shape, const char *type)
{
    bool integral = !strcmp(type, "integer") || !strcmp(type, "long");
    double lo, hi, x;

    if (integral && !json_is_integer(val))
        return fail_value(v, val, "be an integer");
    if (!integral && !json_is_number(val))
        return fail_value(v, val, "be a number");
    if (!strcmp(type, "integer") &&
        (json_integer_value(val) < INT32_MIN || json_integer_value(val) > INT32_MAX))
        return fail_value(v, val, "be a 32-bit integer");
    x = json_number_value(val);
    if (has_bound(shape, "min", &lo) && x < lo)
        return fail_value(v, val, "have value greater than or equal to %g", lo);
    if (has_bound(shape, "max", &hi) && x > hi)
        return fail_value(v, val, "have value less than or equal to %g", hi);
    return 0;
}

static int check_blob(vctx_t *v, json_t *val, json_t *shape)
{
    unsigned char *raw;
    size_t n;

    if (!json_is_string(val) ||
        sim__base64_decode(json_string_value(val), json_string_length(val), &raw, &n))
        return fail_value(v, val, "be base64-encoded binary data");
    free(raw);
    return check_length(v, val, shape, n);
}

/* A document: any JSON, bounded only by depth. */
static int check_document(vctx_t *v, json_t *val, int depth)
{
    const char *k;
    json_t *x;
    size_t i;

    if (depth > SIM_MODEL_DEPTH_MAX)
        return fail(v, "Value at '%s' is nested deeper than %d levels", v->path,
                    SIM_MODEL_DEPTH_MAX);
    if (json_is_object(val)) {
        json_object_foreach(val, k, x)
        {
            if (check_document(v, x, depth + 1))
                return -1;
        }
    } else if (json_is_array(val)) {
        json_array_foreach(val, i, x)
        {
            if (check_document(v, x, depth + 1))
                return -1;
        }
    }
    return 0;
}

static int check_list(vctx_t *v, json_t *val, json_t *shape, int depth)
{
    const char *member =
        json_string_value(json_object_get(json_object_get(shape, "member"), "shape"));
    size_t i;
    json_t *x;

    if (!json_is_array(val))
        return fail_value(v, val, "be a list");
    if (check_length(v, val, shape, json_array_size(val)))
        return -1;
    json_array_foreach(val, i, x)
    {
        size_t n = path_push(v, "%zu.member", i + 1);
        int rc = check_value(v, x, member, depth + 1);
        path_pop(v, n);
        if (rc)
            return -1;
    }
    return 0;
}

static int check_map(vctx_t *v, json_t *val, json_t *shape, int depth)
{
    const char *ks = json_string_value(json_object_get(json_object_get(shape, "key"), "shape"));
    const char *vs = json_string_value(json_object_get(json_object_get(shape, "value"), "shape"));
    const char *k;
    json_t *x;

    if (!json_is_object(val))
        return fail_value(v, val, "be a map");
    if (check_length(v, val, shape, json_object_size(val)))
        return -1;
    json_object_foreach(val, k, x)
    {
        json_t *key = json_string(k);
        size_t n = path_push(v, "%.60s", k);
        int rc = key ? check_value(v, key, ks, depth + 1) : -1;
        json_decref(key);
        if (!rc)
            rc = check_value(v, x, vs, depth + 1);
        path_pop(v, n);
        if (rc)
            return -1;
    }
    return 0;
}

/* The members of a structure that travel in the body (no location). */
static int check_members(vctx_t *v, json_t *val, json_t *shape, const char *shape_name, int depth)
{
    json_t *members = json_object_get(shape, "members"), *req = json_object_get(shape, "required");
    const char *k;
    json_t *x;
    size_t i;

    json_object_foreach(val, k, x)
    {
        json_t *spec = json_object_get(members, k);
        if (!spec || json_object_get(spec, "location"))
            return fail(v, "Member '%.100s' at '%s' is not defined in shape %s", k,
                        v->path[0] ? v->path : "(body)", shape_name);
        size_t n = path_push(v, "%s", k);
        int rc =
            json_is_null(x)
                ? fail(v,
                       "Value null at '%s' failed to satisfy constraint: "
                       "Member must not be null",
                       v->path)
                : check_value(v, x, json_string_value(json_object_get(spec, "shape")), depth + 1);
        path_pop(v, n);
        if (rc)
            return -1;
    }
    json_array_foreach(req, i, x)
    {
        json_t *spec = json_object_get(members, json_string_value(x));
        if (spec && !json_object_get(spec, "location") &&
            !json_object_get(val, json_string_value(x))) {
            size_t n = path_push(v, "%s", json_string_value(x));
            int rc = fail(v,
                          "Value null at '%s' failed to satisfy constraint: Member must not be "
                          "null",
                          v->path);
            path_pop(v, n);
            return rc;
        }
    }
    return 0;
}

static int check_structure(vctx_t *v, json_t *val, json_t *shape, const char *shape_name, int depth)
{
    if (json_is_true(json_object_get(shape, "document")))
        return check_document(v, val, depth);
    if (!json_is_object(val))
        return fail_value(v, val, "be a structure");
    if (json_is_true(json_object_get(shape, "union")) && json_object_size(val) != 1)
        return fail(v,
                    "Value at '%s' failed to satisfy constraint: Member must have exactly one "
                    "member set, not %zu (%s is a union)",
                    v->path[0] ? v->path : "(body)", json_object_size(val), shape_name);
    return check_members(v, val, shape, shape_name, depth);
}

static int check_value(vctx_t *v, json_t *val, const char *shape_name, int depth)
{
    json_t *shape = shape_name ? json_object_get(v->m->shapes, shape_name) : NULL;
    const char *type = json_string_value(json_object_get(shape, "type"));

    if (!type)
        return fail(v, "the model has no shape %s (at '%s')", shape_name ? shape_name : "?",
                    v->path);
    if (depth > SIM_MODEL_DEPTH_MAX)
        return fail(v, "Value at '%s' is nested deeper than %d levels", v->path,
                    SIM_MODEL_DEPTH_MAX);
    if (!strcmp(type, "structure"))
        return check_structure(v, val, shape, shape_name, depth);
    if (!strcmp(type, "list"))
        return check_list(v, val, shape, depth);
    if (!strcmp(type, "map"))
        return check_map(v, val, shape, depth);
    if (!strcmp(type, "string"))
        return check_string(v, val, shape_name, shape);
    if (!strcmp(type, "boolean"))
        return json_is_boolean(val) ? 0 : fail_value(v, val, "be a boolean");
    if (!strcmp(type, "blob"))
        return check_blob(v, val, shape);
    if (!strcmp(type, "timestamp"))
        return json_is_number(val) ? 0 : fail_value(v, val, "be a timestamp (epoch seconds)");
    if (!strcmp(type, "integer") || !strcmp(type, "long") || !strcmp(type, "float") ||
        !strcmp(type, "double"))
        return check_number(v, val, shape, type);
    return fail(v, "shape %s has a type (%s) the sim does not know", shape_name, type);
}

/* ---- a request
 * ----------------------------------------------------------------------------------- */

/* The uri and header members: present when required, and each a valid string of its shape. */
static int check_params(vctx_t *v, json_t *input, sim_param_fn param, void *ctx)
{
    json_t *members = json_object_get(input, "members"), *req = json_object_get(input, "required");
    const char *k;
    json_t *spec;

    json_object_foreach(members, k, spec)
    {
        const char *loc = json_string_value(json_object_get(spec, "location"));
        const char *name = json_string_value(json_object_get(spec, "locationName"));
        bool required = false;
        size_t i;
        json_t *r;
        if (!loc || !name)
            continue;
        json_array_foreach(req, i, r)
        {
            required = required || !strcmp(json_string_value(r), k);
        }
        const char *value = param ? param(ctx, loc, name) : NULL;
        if (!value) {
            if (required)
                return fail(v,
                            "Value null at '%s' failed to satisfy constraint: Member must not "
                            "be null",
                            k);
            continue;
        }
        json_t *s = json_string(value);
        size_t n = path_push(v, "%s", k);
        int rc = s ? check_value(v, s, json_string_value(json_object_get(spec, "shape")), 1)
                   : fail(v, "Value at '%s' is not valid UTF-8", k);
        path_pop(v, n);
        json_decref(s);
        if (rc)
            return -1;
    }
    return 0;
}

int sim_model_check(const sim_model_t *m, const char *operation, json_t *body, sim_param_fn param,
                    void *ctx, char *why, size_t cap)
{
    vctx_t v = {.m = m, .why = why, .cap = cap};
    json_t *op = operation ? json_object_get(m->ops, operation) : NULL;
    const char *in_name = json_string_value(json_object_get(op, "input"));
    json_t *input = in_name ? json_object_get(m->shapes, in_name) : NULL;
    const char *payload = json_string_value(json_object_get(input, "payload"));

    why[0] = '\0';
    if (!input)
        return fail(&v, "the model has no operation %s", operation ? operation : "?");
    if (check_params(&v, input, param, ctx))
        return -1;
    if (!payload)
        return check_members(&v, body, input, in_name, 1);
    /* A payload member: the body is that member. A blob payload (InvokeModel's body) is the
     * model family's business, not the service model's. */
    json_t *spec = json_object_get(json_object_get(input, "members"), payload);
    const char *ps = json_string_value(json_object_get(spec, "shape"));
    const char *pt = json_string_value(json_object_get(json_object_get(m->shapes, ps), "type"));
    if (pt && !strcmp(pt, "structure"))
        return check_value(&v, body, ps, 1);
    return 0;
}
