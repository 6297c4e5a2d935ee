#include "canon.h"
#include "strbuf.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Part of every key: bump it whenever the canonical form or the framing changes, so old
 * entries simply stop matching instead of answering a different question. */
#define KEY_TAG "aiq-cache-key/1"

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

/* One component: 8-byte big-endian length, then the bytes; so ("a","bc") != ("ab","c"). */
static int frame(EVP_MD_CTX *md, const void *p, size_t n)
{
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
    return EVP_DigestUpdate(md, len, sizeof(len)) == 1 &&
                   (n == 0 || EVP_DigestUpdate(md, p, n) == 1)
               ? 0
               : AIQ_ECRYPTO;
}

static int frame_str(EVP_MD_CTX *md, const char *s)
{
    return frame(md, s ? s : "", s ? strlen(s) : 0);
}

static int frame_json(EVP_MD_CTX *md, const json_t *v, const char *const *drop, size_t ndrop,
                      aiq_err_t *err)
{
    if (!v || json_is_null(v))
        return frame(md, "", 0); /* absent; a present value is never "" */
    char *text;
    size_t len;
    int rc = aiq_canon_json(v, drop, ndrop, &text, &len, err);
    if (rc)
        return rc;
    rc = frame(md, text, len);
    free(text);
    return rc;
}

static int hash_job(EVP_MD_CTX *md, const aiq_job_t *job, const char *model,
                    const char *const *drop, size_t ndrop, aiq_err_t *err)
{
    int rc;
    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 || frame_str(md, KEY_TAG) ||
        frame_str(md, job->operation) || frame_str(md, model) || frame_str(md, job->persona) ||
        frame_str(md, job->api == AIQ_API_INVOKE ? "invoke" : "converse") ||
        frame_str(md, job->system))
        return aiq_err_set(err, AIQ_ECRYPTO, "cache key: SHA-256 failed");
    /* The defaults of an absent inference object and of {} are the same answer. */
    const json_t *inf = job->inference;
    if (inf && json_is_object(inf) && json_object_size(inf) == 0)
        inf = NULL;
    if ((rc = frame_json(md, job->payload, drop, ndrop, err)) ||
        (rc = frame_json(md, job->messages, NULL, 0, err)) ||
        (rc = frame_json(md, job->body, drop, ndrop, err)) ||
        (rc = frame_json(md, inf, NULL, 0, err)))
        return rc == AIQ_ECRYPTO ? aiq_err_set(err, rc, "cache key: SHA-256 failed") : rc;
    return 0;
}

int aiq_cache_key_job(const aiq_job_t *job, const char *model, const char *const *drop,
                      size_t ndrop, uint8_t key[AIQ_CACHE_KEY_LEN], aiq_err_t *err)
{
    if (!job || (ndrop && !drop))
        return aiq_err_set(err, AIQ_EINVAL, "cache key: no job");
    if (ndrop > AIQ_CANON_DROP_MAX)
        return aiq_err_set(err, AIQ_EINVAL, "cache key: %zu volatile fields, at most %d", ndrop,
                           AIQ_CANON_DROP_MAX);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        return aiq_err_set(err, AIQ_ENOMEM, "cache key: out of memory");
    int rc = hash_job(md, job, model ? model : job->model, drop, ndrop, err);
    unsigned int n = 0;
    if (rc == 0 && (EVP_DigestFinal_ex(md, key, &n) != 1 || n != AIQ_CACHE_KEY_LEN))
        rc = aiq_err_set(err, AIQ_ECRYPTO, "cache key: SHA-256 failed");
    EVP_MD_CTX_free(md);
    return rc;
}

void aiq_cache_key_hex(const uint8_t key[AIQ_CACHE_KEY_LEN], char out[65])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < AIQ_CACHE_KEY_LEN; i++) {
        out[2 * i] = hex[key[i] >> 4];
        out[2 * i + 1] = hex[key[i] & 15];
    }
    out[64] = '\0';
}

static int nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int aiq_cache_key_parse(const char *hex, uint8_t key[AIQ_CACHE_KEY_LEN])
{
    if (!hex || strlen(hex) != 2 * AIQ_CACHE_KEY_LEN)
        return AIQ_EINVAL;
    for (int i = 0; i < AIQ_CACHE_KEY_LEN; i++) {
        int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return AIQ_EINVAL;
        key[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}
