#include "ops.h"
#include "converse.h"
#include "strbuf.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* config/operations.json, compiled in by common/embed_ops.cmake (one source of truth). */
extern const char aiq__ops_builtin_json[];
extern const size_t aiq__ops_builtin_len;

#define BUILTIN_NAME "built-in operations (config/operations.json)"
#define PATH_DEPTH   6

/* Used when neither the operation nor "*" has a template: the pre-operations behaviour. */
static const char DEFAULT_TEMPLATE[] = "Operation: {{operation}}\nPersona: {{persona}}\n"
                                       "Input: {{payload}}";

/* Never NULL, never with placeholders: callers may show them raw. */
static const char *const GENERIC_FALLBACK[] = {
    "The service is temporarily limited, so this is a standard answer rather than an "
    "individual analysis. Please try again in a few minutes for the full result.",
    "A full answer is not available right now. Please try again later.",
    "If the problem persists, contact support and quote the job id of this request.",
};

enum { T_SYSTEM, T_TEMPLATE, T_FB_TEMPLATE, T_FB_SIMPLIFIED, T_FB_SUPPORT, T_COUNT };

typedef struct texts {
    const char *t[T_COUNT]; /* borrowed from the JSON root; NULL = not set here */
} texts_t;

typedef struct persona {
    const char *name;
    texts_t texts;
} persona_t;

enum { MISSING_UNSET = -1, MISSING_EMPTY = 0, MISSING_ERROR = 1 };

struct aiq_op {
    const char *name;
    const char *model;  /* NULL: not set */
    int api;            /* aiq_job_api_t, or -1 when not set */
    int64_t max_tokens; /* 0: not set */
    double temperature;
    bool has_temperature;
    int64_t cache_ttl_s; /* -1: not set */
    const char **volatile_fields;
    size_t n_volatile;
    bool has_volatile;
    int on_missing;
    int cache_point; /* 1: a cachePoint after the system prompt; 0: none; -1: not set */
    const json_t *example;
    texts_t texts;
    persona_t *personas;
    size_t n_personas;
    const aiq_op_t *base; /* the "*" operation; NULL for "*" itself */
};

typedef struct price {
    const char *model;
    double in, out;
    double cache_read, cache_write; /* < 0: not listed */
} price_t;

struct aiq_ops {
    json_t *root;  /* owns every string the operations borrow */
    aiq_op_t *ops; /* sorted by name */
    size_t n;
    aiq_op_t deflt;
    price_t *prices; /* sorted by model */
    size_t n_prices;
    aiq_ops_unknown_t unknown;
};

/* ---- load errors: file, line (found by searching the text for the key path), field ---- */

typedef struct load_ctx {
    const char *file;
    const char *text; /* the document's text, NUL-terminated */
    const char *path[PATH_DEPTH];
    int depth;
    aiq_err_t *err;
} load_ctx_t;

static void push(load_ctx_t *c, const char *key)
{
    if (c->depth < PATH_DEPTH)
        c->path[c->depth] = key;
    c->depth++;
}

static void pop(load_ctx_t *c)
{
    c->depth--;
}

/* jansson keeps no positions of values, so the line is where the key path first appears in
 * the text, searching each key after the previous one; 0 when not found. */
static int find_line(const load_ctx_t *c, const char *extra)
{
    const char *p = c->text;
    char q[300];
    int depth = c->depth < PATH_DEPTH ? c->depth : PATH_DEPTH;
    for (int i = 0; i <= depth; i++) {
        const char *k = i < depth ? c->path[i] : extra;
        if (!k)
            break;
        int n = snprintf(q, sizeof(q), "\"%s\"", k);
        const char *hit = (n > 0 && (size_t)n < sizeof(q)) ? strstr(p, q) : NULL;
        if (!hit)
            return 0;
        p = hit + n;
    }
    int line = 1;
    for (const char *s = c->text; s < p; s++)
        line += *s == '\n';
    return p == c->text ? 0 : line;
}

static void field_path(const load_ctx_t *c, const char *extra, char *buf, size_t cap)
{
    size_t pos = 0;
    buf[0] = '\0';
    int depth = c->depth < PATH_DEPTH ? c->depth : PATH_DEPTH;
    for (int i = 0; i <= depth && pos < cap; i++) {
        const char *k = i < depth ? c->path[i] : extra;
        if (!k)
            break;
        int n = snprintf(buf + pos, cap - pos, "%s%s", pos ? "." : "", k);
        if (n < 0)
            break;
        pos += (size_t)n;
    }
}

/* Records "<file>:<line>: <field path>: <message>"; extra is a last path key or NULL. */
__attribute__((format(printf, 4, 5))) static int fail(const load_ctx_t *c, int code,
                                                      const char *extra, const char *fmt, ...)
{
    char msg[320], where[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    field_path(c, extra, where, sizeof(where));
    int line = find_line(c, extra);
    char lbuf[24] = "";
    if (line > 0)
        snprintf(lbuf, sizeof(lbuf), ":%d", line);
    return aiq_err_set(c->err, code, "%s%s: %s%s%s", c->file, lbuf, where, where[0] ? ": " : "",
                       msg);
}

/* ---- template syntax ----------------------------------------------------------------- */

typedef struct ph {
    const char *open; /* the "{{" */
    const char *name; /* trimmed name inside */
    size_t name_len;
    const char *end; /* just past the "}}" */
} ph_t;

/* Finds the next placeholder at or after s: 1 found, 0 none, AIQ_EINVAL when a "{{" has no
 * "}}" (ph->open says where). */
static int next_ph(const char *s, ph_t *ph)
{
    const char *o = strstr(s, "{{");
    if (!o)
        return 0;
    ph->open = o;
    const char *cl = strstr(o + 2, "}}");
    if (!cl)
        return AIQ_EINVAL;
    const char *n = o + 2, *e = cl;
    while (n < e && isspace((unsigned char)*n))
        n++;
    while (e > n && isspace((unsigned char)e[-1]))
        e--;
    ph->name = n;
    ph->name_len = (size_t)(e - n);
    ph->end = cl + 2;
    return 1;
}

static bool name_char(unsigned char ch)
{
    return isalnum(ch) || ch == '_' || ch == '-' || ch >= 0x80;
}

/* A field name or dotted path: segments of [A-Za-z0-9_-] (and UTF-8) joined by '.'. */
static bool path_valid(const char *s, size_t len)
{
    if (len == 0)
        return false;
    size_t seg = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.') {
            if (seg == 0)
                return false;
            seg = 0;
        } else if (name_char((unsigned char)s[i])) {
            seg++;
        } else {
            return false;
        }
    }
    return seg > 0;
}

static int check_template(const load_ctx_t *c, const char *key, const char *s)
{
    ph_t ph;
    const char *p = s;
    int rc;
    while ((rc = next_ph(p, &ph)) == 1) {
        if (!path_valid(ph.name, ph.name_len))
            return fail(c, AIQ_EINVAL, key,
                        "placeholder '%.*s' is not a field name or dotted path (letters, "
                        "digits, '_', '-', joined by '.')",
                        (int)((size_t)(ph.end - ph.open) < 80 ? ph.end - ph.open : 80), ph.open);
        p = ph.end;
    }
    if (rc < 0)
        return fail(c, AIQ_EINVAL, key, "'{{' at offset %zu has no closing '}}'",
                    (size_t)(ph.open - s));
    return 0;
}

/* ---- typed fields -------------------------------------------------------------------- */

static int check_keys(const load_ctx_t *c, json_t *obj, const char *const *allowed)
{
    char unknown[200] = "", list[300] = "";
    size_t ulen = 0, llen = 0;
    const char *first = NULL, *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], k))
            i++;
        if (allowed[i])
            continue;
        if (!first)
            first = k;
        int n = snprintf(unknown + ulen, sizeof(unknown) - ulen, "%s'%s'", ulen ? ", " : "", k);
        if (n > 0 && (size_t)n < sizeof(unknown) - ulen)
            ulen += (size_t)n;
    }
    if (!first)
        return 0;
    for (size_t i = 0; allowed[i]; i++) {
        int n = snprintf(list + llen, sizeof(list) - llen, "%s%s", i ? ", " : "", allowed[i]);
        if (n > 0 && (size_t)n < sizeof(list) - llen)
            llen += (size_t)n;
    }
    return fail(c, AIQ_EINVAL, first, "unknown key%s %s (allowed: %s)",
                strchr(unknown, ',') ? "s" : "", unknown, list);
}

/* Each getter leaves *out alone when key is absent; a present key of the wrong type or out of
 * bounds is an error naming it. */
static int get_str(const load_ctx_t *c, json_t *obj, const char *key, bool is_template,
                   const char **out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0)
        return fail(c, AIQ_EINVAL, key, "must be a non-empty string");
    if (strlen(json_string_value(v)) != json_string_length(v))
        return fail(c, AIQ_EINVAL, key, "must not contain NUL characters");
    int rc = is_template ? check_template(c, key, json_string_value(v)) : 0;
    if (rc)
        return rc;
    *out = json_string_value(v);
    return 0;
}

static int get_int(const load_ctx_t *c, json_t *obj, const char *key, int64_t min, int64_t max,
                   int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return fail(c, AIQ_EINVAL, key, "must be an integer in [%lld, %lld]", (long long)min,
                    (long long)max);
    *out = json_integer_value(v);
    return 0;
}

static int get_num(const load_ctx_t *c, json_t *obj, const char *key, double min, double max,
                   double *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    if (!json_is_number(v) || !(json_number_value(v) >= min && json_number_value(v) <= max))
        return fail(c, AIQ_EINVAL, key, "must be a number in [%g, %g]", min, max);
    *out = json_number_value(v);
    return 0;
}

/* ---- operations ---------------------------------------------------------------------- */

static const char *const FALLBACK_KEYS[] = {"template", "simplified", "support", NULL};
static const char *const PERSONA_KEYS[] = {"description", "system", "template", "fallback", NULL};
static const char *const OP_KEYS[] = {"description", "model",           "api",         "system",
                                      "template",    "max_tokens",      "temperature", "personas",
                                      "cache_ttl_s", "volatile_fields", "fallback",    "on_missing",
                                      "example",     "cache_point",     NULL};

static int load_fallback(load_ctx_t *c, json_t *obj, texts_t *t)
{
    json_t *fb = json_object_get(obj, "fallback");
    if (!fb)
        return 0;
    if (!json_is_object(fb))
        return fail(c, AIQ_EINVAL, "fallback", "must be an object");
    push(c, "fallback");
    int rc = check_keys(c, fb, FALLBACK_KEYS);
    for (int i = 0; !rc && FALLBACK_KEYS[i]; i++)
        rc = get_str(c, fb, FALLBACK_KEYS[i], true, &t->t[T_FB_TEMPLATE + i]);
    pop(c);
    return rc;
}

/* system, template and fallback: the texts both operations and personas carry. */
static int load_texts(load_ctx_t *c, json_t *obj, texts_t *t)
{
    json_t *d = json_object_get(obj, "description");
    if (d && !json_is_string(d))
        return fail(c, AIQ_EINVAL, "description", "must be a string");
    int rc = get_str(c, obj, "system", true, &t->t[T_SYSTEM]);
    if (!rc)
        rc = get_str(c, obj, "template", true, &t->t[T_TEMPLATE]);
    return rc ? rc : load_fallback(c, obj, t);
}

static bool persona_name_valid(const char *name)
{
    size_t n = strlen(name);
    return n >= 1 && n <= 64;
}

static int load_personas(load_ctx_t *c, json_t *obj, aiq_op_t *op)
{
    json_t *ps = json_object_get(obj, "personas"), *v;
    if (!ps)
        return 0;
    if (!json_is_object(ps))
        return fail(c, AIQ_EINVAL, "personas", "must be an object (persona name → overrides)");
    if (json_object_size(ps) > AIQ_OPS_PERSONAS)
        return fail(c, AIQ_ETOOBIG, "personas", "more than %d personas", AIQ_OPS_PERSONAS);
    op->personas = calloc(json_object_size(ps) + 1, sizeof(*op->personas));
    if (!op->personas)
        return aiq_err_set(c->err, AIQ_ENOMEM, "out of memory");
    push(c, "personas");
    const char *name;
    int rc = 0;
    json_object_foreach(ps, name, v)
    {
        if (!persona_name_valid(name))
            rc = fail(c, AIQ_EINVAL, name, "persona names are 1 to 64 bytes");
        else if (!json_is_object(v))
            rc = fail(c, AIQ_EINVAL, name, "must be an object");
        if (rc)
            break;
        push(c, name);
        persona_t *p = &op->personas[op->n_personas++];
        p->name = name;
        rc = check_keys(c, v, PERSONA_KEYS);
        if (!rc)
            rc = load_texts(c, v, &p->texts);
        pop(c);
        if (rc)
            break;
    }
    pop(c);
    return rc;
}

static int load_volatile(load_ctx_t *c, json_t *obj, aiq_op_t *op)
{
    json_t *arr = json_object_get(obj, "volatile_fields"), *v;
    if (!arr)
        return 0;
    if (!json_is_array(arr))
        return fail(c, AIQ_EINVAL, "volatile_fields", "must be an array of field paths");
    if (json_array_size(arr) > AIQ_OPS_VOLATILE)
        return fail(c, AIQ_ETOOBIG, "volatile_fields", "more than %d fields", AIQ_OPS_VOLATILE);
    op->volatile_fields = calloc(json_array_size(arr) + 1, sizeof(*op->volatile_fields));
    if (!op->volatile_fields)
        return aiq_err_set(c->err, AIQ_ENOMEM, "out of memory");
    op->has_volatile = true; /* owns the array from here, even if an element is bad */
    size_t i;
    json_array_foreach(arr, i, v)
    {
        const char *s = json_string_value(v);
        if (!s || !path_valid(s, strlen(s)))
            return fail(c, AIQ_EINVAL, "volatile_fields",
                        "element %zu is not a field name or dotted path", i);
        op->volatile_fields[op->n_volatile++] = s;
    }
    return 0;
}

static int load_enums(load_ctx_t *c, json_t *obj, aiq_op_t *op)
{
    const char *api = NULL, *missing = NULL;
    int rc = get_str(c, obj, "api", false, &api);
    if (!rc)
        rc = get_str(c, obj, "on_missing", false, &missing);
    if (rc)
        return rc;
    if (api && strcmp(api, "converse") && strcmp(api, "invoke"))
        return fail(c, AIQ_EINVAL, "api", "'%s' is not converse|invoke", api);
    if (api)
        op->api = strcmp(api, "invoke") == 0 ? AIQ_API_INVOKE : AIQ_API_CONVERSE;
    if (missing && strcmp(missing, "empty") && strcmp(missing, "error"))
        return fail(c, AIQ_EINVAL, "on_missing", "'%s' is not empty|error", missing);
    if (missing)
        op->on_missing = strcmp(missing, "error") == 0 ? MISSING_ERROR : MISSING_EMPTY;
    return 0;
}

static int load_scalars(load_ctx_t *c, json_t *obj, aiq_op_t *op)
{
    int rc = get_str(c, obj, "model", false, &op->model);
    if (!rc && op->model && strlen(op->model) > 2048)
        rc = fail(c, AIQ_EINVAL, "model", "longer than 2048 bytes");
    if (!rc && op->model && !aiq_model_id_valid(op->model))
        rc = fail(c, AIQ_EINVAL, "model",
                  "'%s' is not a Bedrock model id (botocore's modelId pattern)", op->model);
    if (!rc)
        rc = load_enums(c, obj, op);
    if (!rc)
        rc = get_int(c, obj, "max_tokens", 1, 200000, &op->max_tokens);
    if (!rc)
        rc = get_int(c, obj, "cache_ttl_s", 0, 2592000, &op->cache_ttl_s);
    if (!rc && json_object_get(obj, "temperature")) {
        rc = get_num(c, obj, "temperature", 0.0, 1.0, &op->temperature);
        op->has_temperature = rc == 0;
    }
    json_t *ex = json_object_get(obj, "example");
    if (!rc && ex && !json_is_object(ex))
        rc = fail(c, AIQ_EINVAL, "example", "must be an object (an example payload)");
    op->example = ex;
    json_t *cp = json_object_get(obj, "cache_point");
    if (!rc && cp && !json_is_boolean(cp))
        rc = fail(c, AIQ_EINVAL, "cache_point", "must be true or false");
    if (cp)
        op->cache_point = json_is_true(cp);
    return rc;
}

static bool op_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (strcmp(name, "*") == 0)
        return true;
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("._-", name[i]))
            return false;
    return true;
}

static int load_op(load_ctx_t *c, const char *name, json_t *def, aiq_op_t *op)
{
    op->name = name;
    op->api = -1;
    op->cache_ttl_s = -1;
    op->cache_point = -1;
    op->on_missing = MISSING_UNSET;
    if (!op_name_valid(name))
        return fail(c, AIQ_EINVAL, name,
                    "operation names are \"*\" or 1 to 64 of [A-Za-z0-9._-] (as in jobs)");
    if (!json_is_object(def))
        return fail(c, AIQ_EINVAL, name, "must be an object");
    push(c, name);
    int rc = check_keys(c, def, OP_KEYS);
    if (!rc)
        rc = load_scalars(c, def, op);
    if (!rc)
        rc = load_texts(c, def, &op->texts);
    if (!rc)
        rc = load_personas(c, def, op);
    if (!rc)
        rc = load_volatile(c, def, op);
    pop(c);
    return rc;
}

/* Settings an operation leaves out come from "*" (texts are looked up at render time, since
 * the persona decides among them). */
static void inherit(aiq_op_t *op, const aiq_op_t *d)
{
    op->base = d;
    if (!op->model)
        op->model = d->model;
    if (op->api < 0)
        op->api = d->api;
    if (!op->max_tokens)
        op->max_tokens = d->max_tokens;
    if (!op->has_temperature) {
        op->has_temperature = d->has_temperature;
        op->temperature = d->temperature;
    }
    if (op->cache_ttl_s < 0)
        op->cache_ttl_s = d->cache_ttl_s;
    if (!op->has_volatile) {
        op->volatile_fields = d->volatile_fields;
        op->n_volatile = d->n_volatile;
    }
    if (op->on_missing == MISSING_UNSET)
        op->on_missing = d->on_missing;
    if (op->cache_point < 0)
        op->cache_point = d->cache_point;
}

static int cmp_op(const void *a, const void *b)
{
    return strcmp(((const aiq_op_t *)a)->name, ((const aiq_op_t *)b)->name);
}

static int load_operations(load_ctx_t *c, aiq_ops_t *ops)
{
    json_t *all = json_object_get(ops->root, "operations"), *v;
    ops->deflt =
        (aiq_op_t){.name = "*", .api = -1, .cache_ttl_s = -1, .on_missing = -1, .cache_point = -1};
    if (!all)
        return 0;
    if (!json_is_object(all))
        return fail(c, AIQ_EINVAL, "operations", "must be an object (name → operation)");
    if (json_object_size(all) > AIQ_OPS_MAX)
        return fail(c, AIQ_ETOOBIG, "operations", "more than %d operations", AIQ_OPS_MAX);
    ops->ops = calloc(json_object_size(all) + 1, sizeof(*ops->ops));
    if (!ops->ops)
        return aiq_err_set(c->err, AIQ_ENOMEM, "out of memory");
    push(c, "operations");
    const char *name;
    int rc = 0;
    json_object_foreach(all, name, v)
    {
        aiq_op_t *op = strcmp(name, "*") == 0 ? &ops->deflt : &ops->ops[ops->n++];
        if ((rc = load_op(c, name, v, op)))
            break;
    }
    pop(c);
    if (rc)
        return rc;
    for (size_t i = 0; i < ops->n; i++)
        inherit(&ops->ops[i], &ops->deflt);
    qsort(ops->ops, ops->n, sizeof(*ops->ops), cmp_op);
    return 0;
}

/* ---- prices -------------------------------------------------------------------------- */

static const char *const PRICE_KEYS[] = {
    "description",           "usd_per_1k_input",       "usd_per_1k_output",
    "usd_per_1k_cache_read", "usd_per_1k_cache_write", NULL};

static int cmp_price(const void *a, const void *b)
{
    return strcmp(((const price_t *)a)->model, ((const price_t *)b)->model);
}

static int load_price(load_ctx_t *c, const char *model, json_t *v, price_t *p)
{
    if (!json_is_object(v))
        return fail(c, AIQ_EINVAL, model, "must be an object");
    push(c, model);
    int rc = check_keys(c, v, PRICE_KEYS);
    for (int i = 1; !rc && i <= 2; i++)
        if (!json_object_get(v, PRICE_KEYS[i]))
            rc = fail(c, AIQ_EINVAL, PRICE_KEYS[i], "is required");
    p->model = model;
    if (!rc)
        rc = get_num(c, v, "usd_per_1k_input", 0.0, 1000.0, &p->in);
    if (!rc)
        rc = get_num(c, v, "usd_per_1k_output", 0.0, 1000.0, &p->out);
    p->cache_read = p->cache_write = -1;
    if (!rc && json_object_get(v, "usd_per_1k_cache_read"))
        rc = get_num(c, v, "usd_per_1k_cache_read", 0.0, 1000.0, &p->cache_read);
    if (!rc && json_object_get(v, "usd_per_1k_cache_write"))
        rc = get_num(c, v, "usd_per_1k_cache_write", 0.0, 1000.0, &p->cache_write);
    pop(c);
    return rc;
}

static int load_models(load_ctx_t *c, aiq_ops_t *ops)
{
    json_t *all = json_object_get(ops->root, "models"), *v;
    if (!all)
        return 0;
    if (!json_is_object(all))
        return fail(c, AIQ_EINVAL, "models", "must be an object (model id → prices)");
    if (json_object_size(all) > AIQ_OPS_MODELS)
        return fail(c, AIQ_ETOOBIG, "models", "more than %d models", AIQ_OPS_MODELS);
    ops->prices = calloc(json_object_size(all) + 1, sizeof(*ops->prices));
    if (!ops->prices)
        return aiq_err_set(c->err, AIQ_ENOMEM, "out of memory");
    push(c, "models");
    const char *model;
    int rc = 0;
    json_object_foreach(all, model, v)
    {
        if ((rc = load_price(c, model, v, &ops->prices[ops->n_prices++])))
            break;
    }
    pop(c);
    if (!rc)
        qsort(ops->prices, ops->n_prices, sizeof(*ops->prices), cmp_price);
    return rc;
}

/* ---- load / free --------------------------------------------------------------------- */

static const char *const TOP_KEYS[] = {"description", "operations", "models", NULL};

static int read_file(const char *path, char **text, size_t *len, aiq_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return aiq_err_set(err, AIQ_EIO, "%s: cannot open operations file: %s", path,
                           strerror(errno));
    char *buf = malloc(AIQ_OPS_FILE_MAX + 2);
    if (!buf) {
        fclose(f);
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    }
    size_t n = fread(buf, 1, AIQ_OPS_FILE_MAX + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > AIQ_OPS_FILE_MAX) {
        free(buf);
        return bad ? aiq_err_set(err, AIQ_EIO, "%s: read error", path)
                   : aiq_err_set(err, AIQ_ETOOBIG, "%s: larger than %d bytes", path,
                                 AIQ_OPS_FILE_MAX);
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 0;
}

static int parse(load_ctx_t *c, aiq_ops_t *ops, size_t len)
{
    json_error_t jerr;
    ops->root = json_loadb(c->text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!ops->root)
        return aiq_err_set(c->err, AIQ_EINVAL, "%s:%d:%d: %s", c->file, jerr.line, jerr.column,
                           jerr.text);
    if (!json_is_object(ops->root))
        return fail(c, AIQ_EINVAL, NULL, "the document must be a JSON object");
    json_t *d = json_object_get(ops->root, "description");
    if (d && !json_is_string(d))
        return fail(c, AIQ_EINVAL, "description", "must be a string");
    int rc = check_keys(c, ops->root, TOP_KEYS);
    if (!rc)
        rc = load_operations(c, ops);
    return rc ? rc : load_models(c, ops);
}

int aiq_ops_load(aiq_ops_t **out, const char *path, aiq_ops_unknown_t unknown, aiq_err_t *err)
{
    bool builtin = !path || !*path;
    char *text = NULL;
    size_t len = aiq__ops_builtin_len;
    int rc;
    if (!builtin && (rc = read_file(path, &text, &len, err)))
        return rc;
    load_ctx_t c = {.file = builtin ? BUILTIN_NAME : path,
                    .text = builtin ? aiq__ops_builtin_json : text,
                    .err = err};
    aiq_ops_t *ops = calloc(1, sizeof(*ops));
    if (!ops) {
        free(text);
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    }
    ops->unknown = unknown;
    rc = parse(&c, ops, len);
    free(text);
    if (rc) {
        aiq_ops_free(ops);
        return rc;
    }
    *out = ops;
    return 0;
}

static void free_op(aiq_op_t *op)
{
    free(op->personas);
    if (op->has_volatile)
        free(op->volatile_fields);
}

void aiq_ops_free(aiq_ops_t *ops)
{
    if (!ops)
        return;
    for (size_t i = 0; i < ops->n; i++)
        free_op(&ops->ops[i]);
    free_op(&ops->deflt);
    free(ops->ops);
    free(ops->prices);
    json_decref(ops->root);
    free(ops);
}

/* ---- queries ------------------------------------------------------------------------- */

size_t aiq_ops_count(const aiq_ops_t *ops)
{
    return ops->n;
}

const aiq_op_t *aiq_ops_find(const aiq_ops_t *ops, const char *operation)
{
    aiq_op_t key = {.name = operation ? operation : ""};
    const aiq_op_t *op =
        !ops->n ? NULL : bsearch(&key, ops->ops, ops->n, sizeof(*ops->ops), cmp_op);
    if (op)
        return op;
    return ops->unknown == AIQ_OPS_UNKNOWN_ALLOW ? &ops->deflt : NULL;
}

static const price_t *price_find(const aiq_ops_t *ops, const char *model)
{
    price_t key = {.model = model};
    if (!ops->n_prices)
        return NULL; /* no "models": bsearch must not get a NULL array */
    return bsearch(&key, ops->prices, ops->n_prices, sizeof(*ops->prices), cmp_price);
}

/* Cross-region inference profiles put a geography before the model id. */
static const char *const GEO_PREFIXES[] = {"us.", "eu.", "apac.", "global.", "us-gov.",
                                           "jp.", "au.", "ca.",   NULL};

static const char *strip_geo(const char *id)
{
    for (size_t i = 0; GEO_PREFIXES[i]; i++)
        if (strncmp(id, GEO_PREFIXES[i], strlen(GEO_PREFIXES[i])) == 0)
            return id + strlen(GEO_PREFIXES[i]);
    return id;
}

const char *aiq_ops_base_model(const char *model)
{
    if (!model)
        return NULL;
    if (strncmp(model, "arn:", 4) == 0) {
        /* arn:<partition>:bedrock:<region>:<account>:<type>/<id> */
        const char *p = model;
        for (int colons = 0; *p && colons < 5; p++)
            if (*p == ':')
                colons++;
        const char *slash = strchr(p, '/');
        if (!slash)
            return model;
        size_t tlen = (size_t)(slash - p);
        if (tlen == 16 && strncmp(p, "foundation-model", tlen) == 0)
            return slash + 1;
        if (tlen == 17 && strncmp(p, "inference-profile", tlen) == 0)
            return strip_geo(slash + 1);
        /* Application inference profiles, provisioned and custom models are opaque ids: only
         * an entry under their full ARN prices them. */
        return model;
    }
    return strip_geo(model);
}

static const price_t *price_of(const aiq_ops_t *ops, const char *model)
{
    if (!model || !ops)
        return NULL;
    const price_t *p = price_find(ops, model);
    return p ? p : price_find(ops, aiq_ops_base_model(model));
}

int aiq_ops_price(const aiq_ops_t *ops, const char *model, double *usd_per_1k_in,
                  double *usd_per_1k_out)
{
    const price_t *p = price_of(ops, model);
    if (!p)
        return AIQ_ENOTFOUND;
    *usd_per_1k_in = p->in;
    *usd_per_1k_out = p->out;
    return 0;
}

int aiq_ops_cost(const aiq_ops_t *ops, const char *model, const aiq_usage_t *u, double *usd)
{
    const price_t *p = price_of(ops, model);
    if (!p || (u->cache_read > 0 && p->cache_read < 0) ||
        (u->cache_write > 0 && p->cache_write < 0))
        return AIQ_ENOTFOUND;
    double sum = (double)u->input * p->in + (double)u->output * p->out;
    if (u->cache_read > 0)
        sum += (double)u->cache_read * p->cache_read;
    if (u->cache_write > 0)
        sum += (double)u->cache_write * p->cache_write;
    *usd = sum / 1000.0;
    return 0;
}

bool aiq_op_cache_point(const aiq_op_t *op)
{
    return op->cache_point > 0;
}

const char *aiq_op_name(const aiq_op_t *op)
{
    return op->name;
}

const char *aiq_op_model(const aiq_op_t *op)
{
    return op->model;
}

aiq_job_api_t aiq_op_api(const aiq_op_t *op)
{
    return op->api == AIQ_API_INVOKE ? AIQ_API_INVOKE : AIQ_API_CONVERSE;
}

int64_t aiq_op_max_tokens(const aiq_op_t *op)
{
    return op->max_tokens;
}

bool aiq_op_temperature(const aiq_op_t *op, double *out)
{
    if (op->has_temperature)
        *out = op->temperature;
    return op->has_temperature;
}

int64_t aiq_op_cache_ttl_s(const aiq_op_t *op)
{
    return op->cache_ttl_s;
}

const json_t *aiq_op_example(const aiq_op_t *op)
{
    return op->example;
}

const char *const *aiq_op_volatile_fields(const aiq_op_t *op, size_t *n)
{
    static const char *const none[1] = {NULL};
    *n = op->n_volatile;
    return op->volatile_fields ? (const char *const *)op->volatile_fields : none;
}

/* ---- rendering ----------------------------------------------------------------------- */

static const persona_t *persona_find(const aiq_op_t *op, const char *persona)
{
    for (size_t i = 0; persona && i < op->n_personas; i++)
        if (strcmp(op->personas[i].name, persona) == 0)
            return &op->personas[i];
    return NULL;
}

/* The persona's variant in op, op's own, then the same in "*". */
static const char *text_of(const aiq_op_t *op, const char *persona, int which)
{
    for (const aiq_op_t *o = op; o; o = o->base) {
        const persona_t *p = persona_find(o, persona);
        if (p && p->texts.t[which])
            return p->texts.t[which];
        if (o->texts.t[which])
            return o->texts.t[which];
    }
    return NULL;
}

typedef aiq_strbuf_t buf_t;

static int buf_add(buf_t *b, const char *s, size_t n)
{
    return aiq_strbuf_add(b, s, n);
}

/* Shortest "%.*g" spelling that reads back as d, so 4.1 stays "4.1" (jansson writes 17
 * digits: "4.0999999999999996"); ".0" is kept on integral values, as they were written. */
static int put_real(buf_t *b, double d)
{
    char tmp[40];
    if (!isfinite(d))
        return buf_add(b, "null", 4); /* jansson never parses these; a built value may hold them */
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    int rc = buf_add(b, tmp, strlen(tmp));
    return rc || strpbrk(tmp, ".eEn") ? rc : buf_add(b, ".0", 2);
}

static int put_string(buf_t *b, const char *s, size_t n)
{
    int rc = buf_add(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        char esc[8];
        if (c == '"' || c == '\\')
            snprintf(esc, sizeof(esc), "\\%c", c);
        else if (c == '\n')
            snprintf(esc, sizeof(esc), "\\n");
        else if (c == '\t')
            snprintf(esc, sizeof(esc), "\\t");
        else
            snprintf(esc, sizeof(esc), "\\u%04x", c);
        rc = buf_add(b, s + run, i - run);
        if (!rc)
            rc = buf_add(b, esc, strlen(esc));
        run = i + 1;
    }
    if (!rc)
        rc = buf_add(b, s + run, n - run);
    return rc ? rc : buf_add(b, "\"", 1);
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int put_json(buf_t *b, const json_t *v, int depth);

static int put_object(buf_t *b, const json_t *v, int depth)
{
    size_t n = json_object_size(v), i = 0;
    const char **keys = n ? malloc(n * sizeof(*keys)) : NULL;
    if (n && !keys)
        return AIQ_ENOMEM;
    const char *k;
    json_t *val;
    json_object_foreach((json_t *)v, k, val) keys[i++] = k;
    if (n)
        qsort(keys, n, sizeof(*keys), cmp_key);
    int rc = buf_add(b, "{", 1);
    for (i = 0; !rc && i < n; i++) {
        if (i)
            rc = buf_add(b, ",", 1);
        if (!rc)
            rc = put_string(b, keys[i], strlen(keys[i]));
        if (!rc)
            rc = buf_add(b, ":", 1);
        if (!rc)
            rc = put_json(b, json_object_get(v, keys[i]), depth + 1);
    }
    free(keys);
    return rc ? rc : buf_add(b, "}", 1);
}

static int put_json(buf_t *b, const json_t *v, int depth)
{
    char tmp[32];
    if (depth > 1024)
        return AIQ_ETOOBIG;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return put_object(b, v, depth);
    case JSON_ARRAY: {
        int rc = buf_add(b, "[", 1);
        for (size_t i = 0; !rc && i < json_array_size(v); i++) {
            if (i)
                rc = buf_add(b, ",", 1);
            if (!rc)
                rc = put_json(b, json_array_get(v, i), depth + 1);
        }
        return rc ? rc : buf_add(b, "]", 1);
    }
    case JSON_STRING:
        return put_string(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf_add(b, tmp, strlen(tmp));
    case JSON_REAL:
        return put_real(b, json_real_value(v));
    case JSON_TRUE:
        return buf_add(b, "true", 4);
    case JSON_FALSE:
        return buf_add(b, "false", 5);
    default:
        return buf_add(b, "null", 4);
    }
}

int aiq_ops_json_text(const json_t *v, size_t max, char **out)
{
    buf_t b = {.max = max};
    int rc = buf_add(&b, "", 0);
    if (!rc)
        rc = put_json(&b, v, 0);
    if (rc) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    return 0;
}

static int buf_add_json(buf_t *b, const json_t *v)
{
    if (json_is_string(v))
        return buf_add(b, json_string_value(v), strlen(json_string_value(v)));
    return put_json(b, v, 0);
}

/* Walks a dotted path through objects (and arrays, by decimal index); JSON null counts as
 * missing. */
static const json_t *lookup(const json_t *root, const char *p, size_t len)
{
    const json_t *cur = root;
    const char *end = p + len;
    while (cur && p < end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        if (json_is_object(cur)) {
            cur = json_object_getn(cur, p, n);
        } else if (json_is_array(cur) && n < 10 && strspn(p, "0123456789") >= n) {
            cur = json_array_get(cur, strtoul(p, NULL, 10));
        } else {
            cur = NULL;
        }
        p = dot ? dot + 1 : end;
    }
    return json_is_null(cur) ? NULL : cur;
}

static bool is_name(const ph_t *ph, const char *name)
{
    return ph->name_len == strlen(name) && memcmp(ph->name, name, ph->name_len) == 0;
}

typedef struct render_ctx {
    const aiq_op_t *op;
    const aiq_op_vars_t *v;
    const char *what; /* "template", "system", "fallback" for messages */
    aiq_err_t *err;
} render_ctx_t;

static int fill(const render_ctx_t *r, buf_t *b, const ph_t *ph)
{
    const aiq_op_vars_t *v = r->v;
    if (is_name(ph, "operation")) {
        const char *s = v->operation ? v->operation : r->op->name;
        return buf_add(b, s, strlen(s));
    }
    if (is_name(ph, "persona"))
        return buf_add(b, v->persona ? v->persona : "", v->persona ? strlen(v->persona) : 0);
    if (is_name(ph, "payload"))
        return v->payload ? buf_add_json(b, v->payload) : buf_add(b, "{}", 2);
    const char *name = ph->name;
    size_t len = ph->name_len;
    if (len > 8 && memcmp(name, "payload.", 8) == 0) {
        name += 8;
        len -= 8;
    }
    const json_t *val = v->payload ? lookup(v->payload, name, len) : NULL;
    if (val)
        return buf_add_json(b, val);
    if (r->op->on_missing == MISSING_ERROR)
        return aiq_err_set(r->err, AIQ_EINVAL,
                           "operation '%s': the payload has no field '%.*s' (the %s needs it)",
                           v->operation ? v->operation : r->op->name, (int)len, name, r->what);
    return 0;
}

/* One pass over the template; inserted values are never scanned again (no recursion). */
static int render(const render_ctx_t *r, const char *tpl, char **out)
{
    buf_t b = {.max = AIQ_OPS_RENDER_MAX};
    ph_t ph;
    const char *p = tpl;
    int rc = buf_add(&b, "", 0);
    while (!rc && next_ph(p, &ph) == 1) {
        rc = buf_add(&b, p, (size_t)(ph.open - p));
        if (!rc)
            rc = fill(r, &b, &ph);
        p = ph.end;
    }
    if (!rc)
        rc = buf_add(&b, p, strlen(p));
    if (rc) {
        free(b.p);
        if (rc == AIQ_ETOOBIG)
            return aiq_err_set(r->err, rc, "operation '%s': the rendered %s exceeds %d bytes",
                               r->v->operation ? r->v->operation : r->op->name, r->what,
                               AIQ_OPS_RENDER_MAX);
        if (rc == AIQ_ENOMEM)
            return aiq_err_set(r->err, rc, "out of memory rendering the %s", r->what);
        return rc;
    }
    *out = b.p;
    return 0;
}

int aiq_op_render(const aiq_op_t *op, const aiq_op_vars_t *vars, char **system, char **user,
                  aiq_err_t *err)
{
    render_ctx_t r = {op, vars, "system prompt", err};
    const char *sys = text_of(op, vars->persona, T_SYSTEM);
    const char *tpl = text_of(op, vars->persona, T_TEMPLATE);
    char *s = NULL;
    int rc = sys ? render(&r, sys, &s) : 0;
    if (rc)
        return rc;
    r.what = "template";
    rc = render(&r, tpl ? tpl : DEFAULT_TEMPLATE, user);
    if (rc) {
        free(s);
        return rc;
    }
    *system = s;
    return 0;
}

const char *aiq_op_fallback_text(const aiq_op_t *op, const char *persona, aiq_fallback_kind_t kind)
{
    int k = kind >= AIQ_FALLBACK_TEMPLATE && kind <= AIQ_FALLBACK_SUPPORT ? (int)kind : 0;
    const char *t = op ? text_of(op, persona, T_FB_TEMPLATE + k) : NULL;
    return t ? t : GENERIC_FALLBACK[k];
}

bool aiq_op_fallback_configured(const aiq_op_t *op, const char *persona, aiq_fallback_kind_t kind)
{
    int k = kind >= AIQ_FALLBACK_TEMPLATE && kind <= AIQ_FALLBACK_SUPPORT ? (int)kind : 0;
    return op && text_of(op, persona, T_FB_TEMPLATE + k) != NULL;
}

int aiq_op_render_fallback(const aiq_op_t *op, const aiq_op_vars_t *vars, aiq_fallback_kind_t kind,
                           char **out, aiq_err_t *err)
{
    render_ctx_t r = {op, vars, "fallback text", err};
    return render(&r, aiq_op_fallback_text(op, vars->persona, kind), out);
}
