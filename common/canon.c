#include "canon.h"
#include "strbuf.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef aiq_strbuf_t buf_t;

static int buf_put(buf_t *b, const void *s, size_t n)
{
    return aiq_strbuf_add(b, s, n);
}

static int buf_str(buf_t *b, const char *s)
{
    return buf_put(b, s, strlen(s));
}

static int put_string(buf_t *b, const char *s, size_t n)
{
    int rc = buf_put(b, "\"", 1);
    size_t run = 0; /* bytes copied verbatim in one go */
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        char esc[8];
        if (c == '"' || c == '\\')
            snprintf(esc, sizeof(esc), "\\%c", c);
        else
            snprintf(esc, sizeof(esc), "\\u%04x", c);
        rc = buf_put(b, s + run, i - run);
        if (rc == 0)
            rc = buf_str(b, esc);
        run = i + 1;
    }
    if (rc == 0)
        rc = buf_put(b, s + run, n - run);
    return rc ? rc : buf_put(b, "\"", 1);
}

static int put_int(buf_t *b, long long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%lld", v);
    return buf_put(b, tmp, (size_t)n);
}

/* Shortest "%.*e" spelling of d that reads back as d, rewritten as "<digits>e<exp>" with
 * no trailing zeros in digits, so every double has exactly one spelling. */
static int put_real(buf_t *b, double d)
{
    if (!isfinite(d))
        return AIQ_EINVAL;
    if (d == 0)
        return buf_str(b, "0"); /* -0 == 0 */
    /* In range the conversion is defined, and exact exactly when d is integral. */
    if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == (double)(long long)d)
        return put_int(b, (long long)d);
    char tmp[48];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    char digits[24];
    size_t nd = 0;
    const char *p = tmp, *e = strchr(tmp, 'e');
    if (!e)
        return AIQ_EINVAL;
    bool neg = *p == '-';
    for (; p < e; p++) /* skips the sign and the locale's decimal point */
        if (*p >= '0' && *p <= '9' && nd < sizeof(digits) - 1)
            digits[nd++] = *p;
    long exp10 = strtol(e + 1, NULL, 10) - (long)(nd - 1);
    while (nd > 1 && digits[nd - 1] == '0') {
        nd--;
        exp10++;
    }
    digits[nd] = '\0';
    char out[64];
    int n = snprintf(out, sizeof(out), "%s%se%ld", neg ? "-" : "", digits, exp10);
    return buf_put(b, out, (size_t)n);
}

typedef struct member {
    const char *key;
    size_t klen;
    json_t *val;
} member_t;

static int member_cmp(const void *a, const void *b)
{
    const member_t *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    if (c)
        return c;
    return (x->klen > y->klen) - (x->klen < y->klen);
}

static int put_value(buf_t *b, const json_t *v, const char *const *drop, size_t ndrop, int depth);

/* A drop path equal to member key k drops that member. */
static bool drop_here(const char *const *drop, size_t ndrop, const char *k, size_t klen)
{
    for (size_t i = 0; i < ndrop; i++)
        if (strlen(drop[i]) == klen && memcmp(drop[i], k, klen) == 0)
            return true;
    return false;
}

static bool continues_in(const char *path, const char *k, size_t klen)
{
    return strncmp(path, k, klen) == 0 && path[klen] == '.' && path[klen + 1];
}

/* Paths "k.rest" continue as "rest" inside member k. The list is allocated only on the
 * members that lie on a drop path, so deep documents cost no stack for it. */
static int put_member_value(buf_t *b, const member_t *m, const char *const *drop, size_t ndrop,
                            int depth)
{
    size_t nsub = 0;
    for (size_t i = 0; i < ndrop; i++)
        nsub += continues_in(drop[i], m->key, m->klen);
    if (nsub == 0)
        return put_value(b, m->val, NULL, 0, depth + 1);
    const char **sub = malloc(nsub * sizeof(*sub));
    if (!sub)
        return AIQ_ENOMEM;
    nsub = 0;
    for (size_t i = 0; i < ndrop; i++)
        if (continues_in(drop[i], m->key, m->klen))
            sub[nsub++] = drop[i] + m->klen + 1;
    int rc = put_value(b, m->val, sub, nsub, depth + 1);
    free(sub);
    return rc;
}

static int put_member(buf_t *b, const member_t *m, bool first, const char *const *drop,
                      size_t ndrop, int depth)
{
    int rc = first ? 0 : buf_put(b, ",", 1);
    if (rc == 0)
        rc = put_string(b, m->key, m->klen);
    if (rc == 0)
        rc = buf_put(b, ":", 1);
    return rc ? rc : put_member_value(b, m, drop, ndrop, depth);
}

static int put_object(buf_t *b, const json_t *o, const char *const *drop, size_t ndrop, int depth)
{
    size_t n = json_object_size(o), k = 0;
    member_t *m = n ? malloc(n * sizeof(*m)) : NULL;
    if (n && !m)
        return AIQ_ENOMEM;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)o, key, val)
    {
        size_t klen = strlen(key);
        if (ndrop && drop_here(drop, ndrop, key, klen))
            continue;
        m[k++] = (member_t){key, klen, val};
    }
    if (k > 1)
        qsort(m, k, sizeof(*m), member_cmp);
    int rc = buf_put(b, "{", 1);
    for (size_t i = 0; i < k && rc == 0; i++)
        rc = put_member(b, &m[i], i == 0, drop, ndrop, depth);
    free(m);
    return rc ? rc : buf_put(b, "}", 1);
}

static int put_array(buf_t *b, const json_t *a, int depth)
{
    int rc = buf_put(b, "[", 1);
    for (size_t i = 0; i < json_array_size(a) && rc == 0; i++) {
        if (i)
            rc = buf_put(b, ",", 1);
        if (rc == 0)
            rc = put_value(b, json_array_get(a, i), NULL, 0, depth + 1);
    }
    return rc ? rc : buf_put(b, "]", 1);
}

static int put_value(buf_t *b, const json_t *v, const char *const *drop, size_t ndrop, int depth)
{
    if (depth > AIQ_CANON_DEPTH_MAX)
        return AIQ_ETOOBIG;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return put_object(b, v, drop, ndrop, depth);
    case JSON_ARRAY:
        return put_array(b, v, depth);
    case JSON_STRING:
        return put_string(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return put_int(b, (long long)json_integer_value(v));
    case JSON_REAL:
        return put_real(b, json_real_value(v));
    case JSON_TRUE:
        return buf_str(b, "true");
    case JSON_FALSE:
        return buf_str(b, "false");
    case JSON_NULL:
        return buf_str(b, "null");
    }
    return AIQ_EINVAL;
}

int aiq_canon_json(const json_t *v, const char *const *drop, size_t ndrop, char **out, size_t *len,
                   aiq_err_t *err)
{
    *out = NULL;
    *len = 0;
    if (!v || (ndrop && !drop))
        return aiq_err_set(err, AIQ_EINVAL, "canon: no value");
    if (ndrop > AIQ_CANON_DROP_MAX)
        return aiq_err_set(err, AIQ_EINVAL, "canon: %zu volatile fields, at most %d", ndrop,
                           AIQ_CANON_DROP_MAX);
    buf_t b = {.max = AIQ_CANON_MAX};
    int rc = put_value(&b, v, drop, ndrop, 0);
    if (rc) {
        free(b.p);
        if (rc == AIQ_ETOOBIG)
            return aiq_err_set(err, rc, "canon: larger than %u bytes or deeper than %d",
                               AIQ_CANON_MAX, AIQ_CANON_DEPTH_MAX);
        if (rc == AIQ_ENOMEM)
            return aiq_err_set(err, rc, "canon: out of memory");
        return aiq_err_set(err, rc, "canon: number is not finite");
    }
    if (!b.p && buf_put(&b, "", 0))
        return aiq_err_set(err, AIQ_ENOMEM, "canon: out of memory");
    *out = b.p;
    *len = b.len;
    return 0;
}
