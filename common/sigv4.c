/* sigv4.c — AWS Signature Version 4, signing and verifying, over OpenSSL libcrypto.
 * Every intermediate string lives in a bounded buffer on the stack; nothing is allocated. */
#include "sigv4.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ALGORITHM "AWS4-HMAC-SHA256"

/* A bounded string builder: appends stop at cap-1 and set `over`, checked once at the end. */
typedef struct sbuf {
    char *p;
    size_t len;
    size_t cap;
    bool over;
} sbuf_t;

typedef struct hdr {
    const char *name;  /* lower-case */
    const char *value; /* as sent; canonicalised when written */
} hdr_t;

static void sb_init(sbuf_t *b, char *p, size_t cap)
{
    b->p = p;
    b->len = 0;
    b->cap = cap;
    b->over = cap == 0;
    if (cap)
        p[0] = '\0';
}

static void sb_putn(sbuf_t *b, const char *s, size_t n)
{
    if (b->over || n >= b->cap - b->len) {
        b->over = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf_t *b, const char *s)
{
    sb_putn(b, s, strlen(s));
}

static void sb_putc(sbuf_t *b, char c)
{
    sb_putn(b, &c, 1);
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* SHA-256 fetched once per signature, or kept by a cache, and HMAC written out over it: on
 * OpenSSL 3 the implicit fetch inside every EVP_sha256() digest and the one-shot HMAC() cost
 * several times more than hashing a few hundred bytes. */
typedef struct hasher {
    EVP_MD *md;
    EVP_MD_CTX *ctx;
    bool owned; /* false: both borrowed from a cache */
} hasher_t;

static EVP_MD *sha256_fetch(void)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    return EVP_MD_fetch(NULL, "SHA256", NULL);
#else
    return (EVP_MD *)EVP_sha256();
#endif
}

static void sha256_release(EVP_MD *md)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    EVP_MD_free(md);
#else
    (void)md;
#endif
}

static void hasher_close(hasher_t *h)
{
    if (h->owned) {
        EVP_MD_CTX_free(h->ctx);
        sha256_release(h->md);
    }
    h->md = NULL;
    h->ctx = NULL;
}

/* A private digest and context, used when there is no cache to keep them. */
static int hasher_open_own(hasher_t *h, aiq_err_t *err)
{
    *h = (hasher_t){sha256_fetch(), EVP_MD_CTX_new(), true};
    if (h->md && h->ctx)
        return 0;
    hasher_close(h);
    return aiq_err_set(err, AIQ_ECRYPTO, "sigv4: SHA-256 unavailable");
}

/* SHA-256 of a || b. */
static int digest2(hasher_t *h, const void *a, size_t an, const void *b, size_t bn,
                   unsigned char out[32], aiq_err_t *err)
{
    unsigned int len = 0;

    if (!EVP_DigestInit_ex(h->ctx, h->md, NULL) || (an && !EVP_DigestUpdate(h->ctx, a, an)) ||
        (bn && !EVP_DigestUpdate(h->ctx, b, bn)) || !EVP_DigestFinal_ex(h->ctx, out, &len) ||
        len != 32)
        return aiq_err_set(err, AIQ_ECRYPTO, "sigv4: SHA-256 failed");
    return 0;
}

static int sha256_hex(hasher_t *h, const void *data, size_t n, char out[65], aiq_err_t *err)
{
    unsigned char md[32];
    int rc = digest2(h, data, n, NULL, 0, md, err);

    if (!rc)
        hex_encode(md, 32, out);
    return rc;
}

/* HMAC-SHA256 as RFC 2104 defines it. out may alias key. */
static int hmac256(hasher_t *h, const void *key, size_t key_len, const char *msg, size_t msg_len,
                   unsigned char out[32], aiq_err_t *err)
{
    unsigned char k[64] = {0}, pad[64], inner[32];
    int rc = 0;

    if (key_len > sizeof(k))
        rc = digest2(h, key, key_len, NULL, 0, k, err);
    else
        memcpy(k, key, key_len);
    for (size_t i = 0; i < sizeof(pad); i++)
        pad[i] = k[i] ^ 0x36;
    if (!rc)
        rc = digest2(h, pad, sizeof(pad), msg, msg_len, inner, err);
    for (size_t i = 0; i < sizeof(pad); i++)
        pad[i] = k[i] ^ 0x5c;
    if (!rc)
        rc = digest2(h, pad, sizeof(pad), inner, sizeof(inner), out, err);
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(inner, sizeof(inner));
    return rc;
}

static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

/* RFC 3986 encoding as SigV4 defines it: unreserved bytes kept, everything else (including
 * '%') as upper-case %XY. */
static void uri_encode(sbuf_t *b, const char *s, size_t n)
{
    static const char digits[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c)) {
            sb_putc(b, (char)c);
        } else {
            char esc[3] = {'%', digits[c >> 4], digits[c & 0x0f]};
            sb_putn(b, esc, 3);
        }
    }
}

/* Decodes %XY escapes; a '%' not followed by two hex digits stays literal, and so does '+'
 * (SigV4 query strings encode spaces as %20). out receives at most n bytes plus NUL. */
static size_t percent_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hex_value(s[i + 1])) >= 0 &&
            (lo = hex_value(s[i + 2])) >= 0) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return o;
}

/* Canonical URI: drop empty, "." and ".." segments (RFC 3986 normalisation as AWS applies it to
 * every service but S3), then encode each remaining segment once more. A trailing '/' is kept. */
static int canon_path(sbuf_t *b, const char *path, aiq_err_t *err)
{
    const char *seg[AIQ_SIGV4_SEGMENTS_MAX];
    size_t seg_len[AIQ_SIGV4_SEGMENTS_MAX];
    size_t nseg = 0, plen = strlen(path);

    if (path[0] != '/')
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: path must start with '/'");
    if (plen > AIQ_SIGV4_PATH_MAX)
        return aiq_err_set(err, AIQ_ETOOBIG, "sigv4: path longer than %d bytes",
                           AIQ_SIGV4_PATH_MAX);
    for (const char *p = path; *p;) {
        while (*p == '/')
            p++;
        const char *end = p + strcspn(p, "/");
        size_t n = (size_t)(end - p);
        if (n == 0 || (n == 1 && p[0] == '.')) {
            /* nothing */
        } else if (n == 2 && p[0] == '.' && p[1] == '.') {
            if (nseg)
                nseg--;
        } else if (nseg == AIQ_SIGV4_SEGMENTS_MAX) {
            return aiq_err_set(err, AIQ_ETOOBIG, "sigv4: path has more than %d segments",
                               AIQ_SIGV4_SEGMENTS_MAX);
        } else {
            seg[nseg] = p;
            seg_len[nseg++] = n;
        }
        p = end;
    }
    for (size_t i = 0; i < nseg; i++) {
        sb_putc(b, '/');
        uri_encode(b, seg[i], seg_len[i]);
    }
    if (nseg == 0 || path[plen - 1] == '/')
        sb_putc(b, '/');
    return 0;
}

typedef struct qparam {
    const char *key;
    const char *value;
} qparam_t;

static int cmp_qparam(const void *a, const void *b)
{
    const qparam_t *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : strcmp(x->value, y->value);
}

/* Appends decode-then-encode of s[0..n) to scratch as its own NUL-terminated string. */
static const char *scratch_encode(sbuf_t *scratch, const char *s, size_t n)
{
    char decoded[AIQ_SIGV4_QUERY_MAX + 1];
    size_t start = scratch->len;

    uri_encode(scratch, decoded, percent_decode(s, n, decoded));
    sb_putc(scratch, '\0'); /* counted in len, so the next string starts after it */
    return scratch->p + start;
}

/* Canonical query: split on '&', decode, re-encode, sort by key then value. */
static int canon_query(sbuf_t *b, const char *query, aiq_err_t *err)
{
    char space[3 * AIQ_SIGV4_QUERY_MAX + 2 * AIQ_SIGV4_PARAMS_MAX + 1];
    qparam_t params[AIQ_SIGV4_PARAMS_MAX];
    size_t n = 0;
    sbuf_t scratch;

    if (!query || !*query)
        return 0;
    if (strlen(query) > AIQ_SIGV4_QUERY_MAX)
        return aiq_err_set(err, AIQ_ETOOBIG, "sigv4: query longer than %d bytes",
                           AIQ_SIGV4_QUERY_MAX);
    sb_init(&scratch, space, sizeof(space));
    for (const char *p = query; *p;) {
        size_t len = strcspn(p, "&");
        if (len > 0) {
            if (n == AIQ_SIGV4_PARAMS_MAX)
                return aiq_err_set(err, AIQ_ETOOBIG, "sigv4: more than %d query parameters",
                                   AIQ_SIGV4_PARAMS_MAX);
            const char *eq = memchr(p, '=', len);
            size_t klen = eq ? (size_t)(eq - p) : len;
            params[n].key = scratch_encode(&scratch, p, klen);
            params[n].value = eq ? scratch_encode(&scratch, eq + 1, len - klen - 1)
                                 : scratch_encode(&scratch, "", 0);
            n++;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    if (scratch.over)
        return aiq_err_set(err, AIQ_ETOOBIG, "sigv4: encoded query too long");
    qsort(params, n, sizeof(params[0]), cmp_qparam);
    for (size_t i = 0; i < n; i++) {
        if (i)
            sb_putc(b, '&');
        sb_puts(b, params[i].key);
        sb_putc(b, '=');
        sb_puts(b, params[i].value);
    }
    return 0;
}

/* Header value as SigV4 signs it: surrounding blanks trimmed, inner runs collapsed to one space. */
static void canon_header_value(sbuf_t *b, const char *v)
{
    bool pending_space = false, started = false;
    for (; *v; v++) {
        if (*v == ' ' || *v == '\t') {
            pending_space = started;
            continue;
        }
        if (pending_space)
            sb_putc(b, ' ');
        pending_space = false;
        started = true;
        sb_putc(b, *v);
    }
}

/* The whole canonical request; hdrs must be sorted by lower-case name. */
static int canon_build(sbuf_t *b, const char *method, const char *path, const char *query,
                       const hdr_t *hdrs, size_t nhdrs, const char *payload_hex, aiq_err_t *err)
{
    int rc;

    sb_puts(b, method);
    sb_putc(b, '\n');
    if ((rc = canon_path(b, path, err)))
        return rc;
    sb_putc(b, '\n');
    if ((rc = canon_query(b, query, err)))
        return rc;
    sb_putc(b, '\n');
    for (size_t i = 0; i < nhdrs; i++) {
        sb_puts(b, hdrs[i].name);
        sb_putc(b, ':');
        canon_header_value(b, hdrs[i].value);
        sb_putc(b, '\n');
    }
    sb_putc(b, '\n');
    for (size_t i = 0; i < nhdrs; i++) {
        if (i)
            sb_putc(b, ';');
        sb_puts(b, hdrs[i].name);
    }
    sb_putc(b, '\n');
    sb_puts(b, payload_hex);
    if (b->over)
        return aiq_err_set(err, AIQ_ETOOBIG, "sigv4: canonical request longer than %zu bytes",
                           b->cap - 1);
    return 0;
}

/* ---- derived-key cache ----------------------------------------------------------------- */

#define CACHE_SLOTS 4 /* a day rollover and a credential rotation overlapping, with room */

typedef struct cache_slot {
    unsigned long long used; /* 0 = empty; otherwise the tick of the last hit */
    size_t secret_len;
    char secret[AIQ_SIGV4_KEY_MAX];
    char date[8];
    char region[AIQ_SIGV4_SCOPE_MAX + 1];
    char service[AIQ_SIGV4_SCOPE_MAX + 1];
    unsigned char key[32];
} cache_slot_t;

struct aiq_sigv4_cache {
    cache_slot_t slot[CACHE_SLOTS];
    unsigned long long tick, hits, misses;
    EVP_MD *md; /* fetched on first use, kept for the cache's life */
    EVP_MD_CTX *ctx;
};

aiq_sigv4_cache_t *aiq_sigv4_cache_new(void)
{
    return calloc(1, sizeof(aiq_sigv4_cache_t));
}

void aiq_sigv4_cache_free(aiq_sigv4_cache_t *cache)
{
    if (!cache)
        return;
    EVP_MD_CTX_free(cache->ctx);
    sha256_release(cache->md);
    OPENSSL_cleanse(cache, sizeof(*cache));
    free(cache);
}

/* The cache's digest and context (set up on first use), else private ones. */
static int hasher_open(hasher_t *h, aiq_sigv4_cache_t *cache, aiq_err_t *err)
{
    if (cache && !cache->md && !cache->ctx) {
        cache->md = sha256_fetch();
        cache->ctx = EVP_MD_CTX_new();
    }
    if (cache && cache->md && cache->ctx) {
        *h = (hasher_t){cache->md, cache->ctx, false};
        return 0;
    }
    return hasher_open_own(h, err);
}

void aiq_sigv4_cache_stats(const aiq_sigv4_cache_t *cache, unsigned long long *hits,
                           unsigned long long *misses)
{
    *hits = cache ? cache->hits : 0;
    *misses = cache ? cache->misses : 0;
}

static bool slot_matches(const cache_slot_t *s, const char *secret, size_t slen, const char *date,
                         const char *region, const char *service)
{
    return s->used && s->secret_len == slen && !memcmp(s->date, date, 8) &&
           !strcmp(s->region, region) && !strcmp(s->service, service) &&
           !CRYPTO_memcmp(s->secret, secret, slen);
}

/* The matching slot, or NULL after pointing *victim at the least recently used one. */
static cache_slot_t *cache_find(aiq_sigv4_cache_t *c, const char *secret, size_t slen,
                                const char *date, const char *region, const char *service,
                                cache_slot_t **victim)
{
    *victim = &c->slot[0];
    for (int i = 0; i < CACHE_SLOTS; i++) {
        cache_slot_t *s = &c->slot[i];
        if (slot_matches(s, secret, slen, date, region, service))
            return s;
        if (s->used < (*victim)->used)
            *victim = s;
    }
    return NULL;
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request") */
static int derive_key(hasher_t *h, const char *secret, size_t slen, const char *date,
                      const char *region, const char *service, unsigned char k[32], aiq_err_t *err)
{
    char kbuf[4 + AIQ_SIGV4_KEY_MAX];
    int rc;

    memcpy(kbuf, "AWS4", 4);
    memcpy(kbuf + 4, secret, slen);
    if (!(rc = hmac256(h, kbuf, 4 + slen, date, 8, k, err)) &&
        !(rc = hmac256(h, k, 32, region, strlen(region), k, err)) &&
        !(rc = hmac256(h, k, 32, service, strlen(service), k, err)))
        rc = hmac256(h, k, 32, "aws4_request", 12, k, err);
    OPENSSL_cleanse(kbuf, sizeof(kbuf));
    return rc;
}

/* The signing key, from the cache when it has one for this scope, derived (and cached) if not.
 * Region and service were checked against AIQ_SIGV4_SCOPE_MAX by the caller. */
static int signing_key(hasher_t *h, aiq_sigv4_cache_t *cache, const char *secret, const char *date,
                       const char *region, const char *service, unsigned char k[32], aiq_err_t *err)
{
    size_t slen = strlen(secret);
    cache_slot_t *hit, *victim;
    int rc;

    if (slen > AIQ_SIGV4_KEY_MAX)
        return aiq_err_set(err, AIQ_ETOOBIG, "sigv4: secret key longer than %d bytes",
                           AIQ_SIGV4_KEY_MAX);
    if (!cache)
        return derive_key(h, secret, slen, date, region, service, k, err);
    if ((hit = cache_find(cache, secret, slen, date, region, service, &victim))) {
        cache->hits++;
        hit->used = ++cache->tick;
        memcpy(k, hit->key, 32);
        return 0;
    }
    cache->misses++;
    if ((rc = derive_key(h, secret, slen, date, region, service, k, err)))
        return rc;
    OPENSSL_cleanse(victim, sizeof(*victim));
    victim->used = ++cache->tick;
    victim->secret_len = slen;
    memcpy(victim->secret, secret, slen);
    memcpy(victim->date, date, 8);
    memcpy(victim->region, region, strlen(region) + 1);
    memcpy(victim->service, service, strlen(service) + 1);
    memcpy(victim->key, k, 32);
    return 0;
}

/* signature = hex(HMAC(kSigning, string-to-sign)). */
static int compute_signature(hasher_t *h, const char *secret, aiq_sigv4_cache_t *cache,
                             const char *amz_date, const char *region, const char *service,
                             const char *creq, size_t creq_len, char sig[65], aiq_err_t *err)
{
    char sts_buf[256], creq_hex[65];
    unsigned char k[32];
    sbuf_t sts;
    int rc;

    if ((rc = sha256_hex(h, creq, creq_len, creq_hex, err)))
        return rc;
    sb_init(&sts, sts_buf, sizeof(sts_buf));
    sb_puts(&sts, ALGORITHM "\n");
    sb_puts(&sts, amz_date);
    sb_putc(&sts, '\n');
    sb_putn(&sts, amz_date, 8);
    sb_putc(&sts, '/');
    sb_puts(&sts, region);
    sb_putc(&sts, '/');
    sb_puts(&sts, service);
    sb_puts(&sts, "/aws4_request\n");
    sb_puts(&sts, creq_hex);
    if (sts.over)
        return aiq_err_set(err, AIQ_ETOOBIG, "sigv4: string to sign too long");
    if (!(rc = signing_key(h, cache, secret, amz_date, region, service, k, err)) &&
        !(rc = hmac256(h, k, 32, sts.p, sts.len, k, err)))
        hex_encode(k, 32, sig);
    OPENSSL_cleanse(k, sizeof(k));
    return rc;
}

static int format_amz_date(time_t now, char out[17], aiq_err_t *err)
{
    struct tm tm;

    if (!gmtime_r(&now, &tm) || strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16)
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: time %lld not representable", (long long)now);
    return 0;
}

static bool has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/* A scope part (region, service) or key id goes between '/' in the credential. */
static bool scope_part_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    return n > 0 && n <= max && strcspn(s, "/, \t\r\n;=") == n;
}

static int check_sign_input(const aiq_sigv4_req_t *req, const aiq_sigv4_creds_t *creds,
                            aiq_err_t *err)
{
    if (!req || !req->method || !req->host || !req->path || !req->region || !req->service)
        return aiq_err_set(err, AIQ_EINVAL,
                           "sigv4: method, host, path, region and service are "
                           "required");
    if (!*req->method || strcspn(req->method, " \t\r\n") != strlen(req->method))
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: bad method");
    if (!scope_part_ok(req->region, AIQ_SIGV4_SCOPE_MAX) ||
        !scope_part_ok(req->service, AIQ_SIGV4_SCOPE_MAX))
        return aiq_err_set(err, AIQ_EINVAL,
                           "sigv4: region and service must be 1..%d bytes "
                           "without '/', ',', ';', '=' or blanks",
                           AIQ_SIGV4_SCOPE_MAX);
    if (!req->body && req->body_len)
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: body is NULL but body_len is %zu",
                           req->body_len);
    if (has_crlf(req->host) || (req->content_type && has_crlf(req->content_type)) ||
        has_crlf(req->path) || (req->query && has_crlf(req->query)))
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: CR or LF in host, content type or URL");
    if (!creds)
        return 0;
    if (!creds->access_key || !creds->secret_key)
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: access key and secret key are required");
    if (!scope_part_ok(creds->access_key, AIQ_SIGV4_KEY_MAX))
        return aiq_err_set(err, AIQ_EINVAL,
                           "sigv4: access key must be 1..%d bytes without "
                           "'/', ',', ';', '=' or blanks",
                           AIQ_SIGV4_KEY_MAX);
    if (creds->session_token &&
        (has_crlf(creds->session_token) || strlen(creds->session_token) > AIQ_SIGV4_TOKEN_MAX))
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: session token has CR/LF or exceeds %d bytes",
                           AIQ_SIGV4_TOKEN_MAX);
    return 0;
}

/* Builds the canonical request for a sign call; fills amz_date and payload_hex on the way. */
static int sign_canonical(hasher_t *h, const aiq_sigv4_req_t *req, const aiq_sigv4_creds_t *creds,
                          sbuf_t *b, char amz_date[17], char payload_hex[65], aiq_err_t *err)
{
    hdr_t hdrs[4];
    size_t n = 0;
    int rc;

    if ((rc = check_sign_input(req, creds, err)) ||
        (rc = format_amz_date(req->now, amz_date, err)) ||
        (rc = sha256_hex(h, req->body, req->body_len, payload_hex, err)))
        return rc;
    /* Already in sorted order. */
    if (req->content_type)
        hdrs[n++] = (hdr_t){"content-type", req->content_type};
    hdrs[n++] = (hdr_t){"host", req->host};
    hdrs[n++] = (hdr_t){"x-amz-date", amz_date};
    if (creds && creds->session_token)
        hdrs[n++] = (hdr_t){"x-amz-security-token", creds->session_token};
    return canon_build(b, req->method, req->path, req->query, hdrs, n, payload_hex, err);
}

int aiq_sigv4_canonical_request(const aiq_sigv4_req_t *req, const aiq_sigv4_creds_t *creds,
                                char *out, size_t cap, aiq_err_t *err)
{
    char amz_date[17], payload_hex[65];
    hasher_t h;
    sbuf_t b;
    int rc;

    if (!out || cap == 0)
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: no output buffer");
    sb_init(&b, out, cap < (size_t)AIQ_SIGV4_CANON_MAX ? cap : (size_t)AIQ_SIGV4_CANON_MAX);
    if (!(rc = hasher_open_own(&h, err))) {
        rc = sign_canonical(&h, req, creds, &b, amz_date, payload_hex, err);
        hasher_close(&h);
    }
    if (rc) {
        out[0] = '\0';
        return rc;
    }
    return (int)b.len;
}

int aiq_sigv4_sign(const aiq_sigv4_req_t *req, const aiq_sigv4_creds_t *creds, aiq_sigv4_out_t *out,
                   aiq_err_t *err)
{
    char creq_buf[AIQ_SIGV4_CANON_MAX], sig[65];
    sbuf_t creq, auth;
    hasher_t h;
    int rc;

    if (!creds || !out)
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: creds and out are required");
    sb_init(&creq, creq_buf, sizeof(creq_buf));
    if ((rc = hasher_open(&h, creds->cache, err)))
        return rc;
    if (!(rc = sign_canonical(&h, req, creds, &creq, out->amz_date, out->content_sha256, err)))
        rc = compute_signature(&h, creds->secret_key, creds->cache, out->amz_date, req->region,
                               req->service, creq.p, creq.len, sig, err);
    hasher_close(&h);
    if (rc)
        return rc;
    sb_init(&auth, out->authorization, sizeof(out->authorization));
    sb_puts(&auth, ALGORITHM " Credential=");
    sb_puts(&auth, creds->access_key);
    sb_putc(&auth, '/');
    sb_putn(&auth, out->amz_date, 8);
    sb_putc(&auth, '/');
    sb_puts(&auth, req->region);
    sb_putc(&auth, '/');
    sb_puts(&auth, req->service);
    sb_puts(&auth, "/aws4_request, SignedHeaders=");
    sb_puts(&auth, req->content_type ? "content-type;host;x-amz-date" : "host;x-amz-date");
    if (creds->session_token)
        sb_puts(&auth, ";x-amz-security-token");
    sb_puts(&auth, ", Signature=");
    sb_puts(&auth, sig);
    if (auth.over)
        return aiq_err_set(err, AIQ_ETOOBIG, "sigv4: Authorization header longer than %zu bytes",
                           sizeof(out->authorization) - 1);
    return 0;
}

int aiq_sigv4_encode_segment(const char *in, char *out, size_t cap)
{
    sbuf_t b;

    if (!out || cap == 0)
        return AIQ_ETOOBIG;
    sb_init(&b, out, cap);
    uri_encode(&b, in ? in : "", in ? strlen(in) : 0);
    if (b.over || b.len > INT_MAX) {
        out[0] = '\0';
        return AIQ_ETOOBIG;
    }
    return (int)b.len;
}

/* ---- verification ---------------------------------------------------------------------- */

typedef struct auth_parts {
    char access_key[AIQ_SIGV4_KEY_MAX + 1];
    char date[9];
    char region[AIQ_SIGV4_SCOPE_MAX + 1];
    char service[AIQ_SIGV4_SCOPE_MAX + 1];
    char signed_headers[AIQ_SIGV4_HEADERS_MAX * 64];
    char signature[65];
    const char *names[AIQ_SIGV4_HEADERS_MAX];
    size_t nnames;
} auth_parts_t;

static bool copy_span(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        return false;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return true;
}

/* "AKID/20150830/us-east-1/service/aws4_request" */
static int parse_credential(auth_parts_t *a, const char *s, size_t n, aiq_err_t *err)
{
    const char *part[5];
    size_t len[5], k = 0;
    const char *p = s, *end = s + n;

    while (k < 5) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *stop = slash ? slash : end;
        part[k] = p;
        len[k++] = (size_t)(stop - p);
        if (!slash)
            break;
        p = slash + 1;
    }
    if (k != 5 || part[4] + len[4] != end || len[4] != 12 || memcmp(part[4], "aws4_request", 12))
        return aiq_err_set(err, AIQ_EINVAL,
                           "sigv4: malformed Credential (want "
                           "KEY/YYYYMMDD/REGION/SERVICE/aws4_request)");
    if (len[0] == 0 || !copy_span(a->access_key, sizeof(a->access_key), part[0], len[0]) ||
        len[1] != 8 || !copy_span(a->date, sizeof(a->date), part[1], len[1]) ||
        !copy_span(a->region, sizeof(a->region), part[2], len[2]) ||
        !copy_span(a->service, sizeof(a->service), part[3], len[3]))
        return aiq_err_set(err, AIQ_EINVAL,
                           "sigv4: malformed Credential (a part is empty or "
                           "too long)");
    return 0;
}

/* "host;x-amz-date": lower-case, strictly ascending, at most AIQ_SIGV4_HEADERS_MAX names. */
static int parse_signed_headers(auth_parts_t *a, const char *s, size_t n, aiq_err_t *err)
{
    if (!copy_span(a->signed_headers, sizeof(a->signed_headers), s, n) || n == 0)
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: SignedHeaders empty or too long");
    a->nnames = 0;
    for (char *p = a->signed_headers; p;) {
        char *semi = strchr(p, ';');
        if (semi)
            *semi = '\0';
        if (!*p || strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789-_.") != strlen(p))
            return aiq_err_set(err, AIQ_EINVAL,
                               "sigv4: SignedHeaders has an empty or "
                               "non-lower-case name");
        if (a->nnames == AIQ_SIGV4_HEADERS_MAX)
            return aiq_err_set(err, AIQ_ETOOBIG, "sigv4: more than %d signed headers",
                               AIQ_SIGV4_HEADERS_MAX);
        if (a->nnames && strcmp(a->names[a->nnames - 1], p) >= 0)
            return aiq_err_set(err, AIQ_EINVAL, "sigv4: SignedHeaders not sorted or repeated");
        a->names[a->nnames++] = p;
        p = semi ? semi + 1 : NULL;
    }
    return 0;
}

static int parse_signature(auth_parts_t *a, const char *s, size_t n, aiq_err_t *err)
{
    if (n != 64 || strspn(s, "0123456789abcdef") < 64)
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: Signature must be 64 lower-case hex digits");
    copy_span(a->signature, sizeof(a->signature), s, n);
    return 0;
}

/* "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=..." in any order. */
static int parse_authorization(auth_parts_t *a, const char *v, aiq_err_t *err)
{
    const size_t alen = sizeof(ALGORITHM) - 1;
    unsigned seen = 0;
    int rc;

    if (strncmp(v, ALGORITHM, alen) != 0 || (v[alen] != ' ' && v[alen] != '\t'))
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: Authorization is not " ALGORITHM);
    for (const char *p = v + alen; *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, ",");
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n == 0)
            break;
        unsigned bit;
        if (n > 11 && !strncmp(p, "Credential=", 11)) {
            bit = 1;
            rc = parse_credential(a, p + 11, n - 11, err);
        } else if (n > 14 && !strncmp(p, "SignedHeaders=", 14)) {
            bit = 2;
            rc = parse_signed_headers(a, p + 14, n - 14, err);
        } else if (n > 10 && !strncmp(p, "Signature=", 10)) {
            bit = 4;
            rc = parse_signature(a, p + 10, n - 10, err);
        } else {
            return aiq_err_set(err, AIQ_EINVAL, "sigv4: unknown Authorization component");
        }
        if (rc)
            return rc;
        if (seen & bit)
            return aiq_err_set(err, AIQ_EINVAL, "sigv4: repeated Authorization component");
        seen |= bit;
        p += strcspn(p, ",");
    }
    if (seen != 7)
        return aiq_err_set(err, AIQ_EINVAL,
                           "sigv4: Authorization lacks Credential, "
                           "SignedHeaders or Signature");
    return 0;
}

/* Strict "YYYYMMDDTHHMMSSZ" to epoch seconds; impossible dates (Feb 30) are rejected. */
static int parse_amz_date(const char *s, time_t *out)
{
    struct tm tm = {0};
    char back[17];

    if (strlen(s) != 16 || s[8] != 'T' || s[15] != 'Z' || strspn(s, "0123456789") != 8 ||
        strspn(s + 9, "0123456789") != 6)
        return -1;
    tm.tm_year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0') - 1900;
    tm.tm_mon = (s[4] - '0') * 10 + (s[5] - '0') - 1;
    tm.tm_mday = (s[6] - '0') * 10 + (s[7] - '0');
    tm.tm_hour = (s[9] - '0') * 10 + (s[10] - '0');
    tm.tm_min = (s[11] - '0') * 10 + (s[12] - '0');
    tm.tm_sec = (s[13] - '0') * 10 + (s[14] - '0');
    *out = timegm(&tm);
    if (*out == (time_t)-1 || format_amz_date(*out, back, NULL) || strcmp(back, s) != 0)
        return -1;
    return 0;
}

static int check_scope_and_date(const aiq_sigv4_verify_req_t *req, const auth_parts_t *a,
                                const char *amz_date, aiq_err_t *err)
{
    time_t t;
    long long skew, max = req->max_skew_s > 0 ? req->max_skew_s : AIQ_SIGV4_MAX_SKEW_S;

    if (strcmp(a->region, req->region) != 0 || strcmp(a->service, req->service) != 0)
        return aiq_err_set(err, AIQ_EINVAL,
                           "sigv4: credential scope %.64s/%.64s, this endpoint wants %.64s/%.64s",
                           a->region, a->service, req->region, req->service);
    if (!amz_date)
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: missing X-Amz-Date header");
    if (parse_amz_date(amz_date, &t))
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: X-Amz-Date is not YYYYMMDDTHHMMSSZ");
    if (memcmp(amz_date, a->date, 8) != 0)
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: credential date %s differs from X-Amz-Date",
                           a->date);
    skew = (long long)req->now - (long long)t;
    if (skew > max || skew < -max)
        return aiq_err_set(err, AIQ_EINVAL,
                           "sigv4: signature expired or not yet valid: X-Amz-Date %s is %llds from "
                           "server time (limit %llds)",
                           amz_date, skew, max);
    return 0;
}

static const aiq_sigv4_creds_t *find_creds(const aiq_sigv4_verify_req_t *req,
                                           const char *access_key)
{
    if (req->lookup)
        return req->lookup(req->lookup_ctx, access_key);
    if (req->creds && req->creds->access_key && !strcmp(req->creds->access_key, access_key))
        return req->creds;
    return NULL;
}

static bool has_name(const auth_parts_t *a, const char *name)
{
    for (size_t i = 0; i < a->nnames; i++)
        if (!strcmp(a->names[i], name))
            return true;
    return false;
}

/* Everything but the signature itself: headers present, token, payload hash header. */
static int check_headers(const aiq_sigv4_verify_req_t *req, const auth_parts_t *a,
                         const aiq_sigv4_creds_t *creds, const char *payload_hex, hdr_t *hdrs,
                         aiq_err_t *err)
{
    const char *token = req->header(req->header_ctx, "x-amz-security-token");
    const char *sent_hash = req->header(req->header_ctx, "x-amz-content-sha256");

    if (!has_name(a, "host") || !has_name(a, "x-amz-date"))
        return aiq_err_set(err, AIQ_EINVAL,
                           "sigv4: SignedHeaders must include host and "
                           "x-amz-date");
    for (size_t i = 0; i < a->nnames; i++) {
        hdrs[i].name = a->names[i];
        hdrs[i].value = req->header(req->header_ctx, a->names[i]);
        if (!hdrs[i].value)
            return aiq_err_set(err, AIQ_EINVAL, "sigv4: signed header %.64s is missing",
                               a->names[i]);
    }
    if (creds->session_token && (!token || strcmp(token, creds->session_token) != 0))
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: missing or wrong X-Amz-Security-Token");
    if (sent_hash && strcmp(sent_hash, payload_hex) != 0)
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: X-Amz-Content-Sha256 does not match the body");
    return 0;
}

/* The payload hash, the signed headers and the signature itself, once the key is known. */
static int verify_signature(hasher_t *h, const aiq_sigv4_verify_req_t *req, const auth_parts_t *a,
                            const aiq_sigv4_creds_t *creds, const char *amz_date, aiq_err_t *err)
{
    char creq_buf[AIQ_SIGV4_CANON_MAX], payload_hex[65], sig[65];
    hdr_t hdrs[AIQ_SIGV4_HEADERS_MAX];
    sbuf_t creq;
    int rc;

    if ((rc = sha256_hex(h, req->body, req->body_len, payload_hex, err)) ||
        (rc = check_headers(req, a, creds, payload_hex, hdrs, err)))
        return rc;
    sb_init(&creq, creq_buf, sizeof(creq_buf));
    if ((rc = canon_build(&creq, req->method, req->path, req->query, hdrs, a->nnames, payload_hex,
                          err)) ||
        (rc = compute_signature(h, creds->secret_key, NULL, amz_date, a->region, a->service, creq.p,
                                creq.len, sig, err)))
        return rc;
    if (CRYPTO_memcmp(sig, a->signature, 64) != 0)
        return aiq_err_set(err, AIQ_EINVAL,
                           "sigv4: signature does not match (check the secret "
                           "key and the canonical request)");
    return 0;
}

int aiq_sigv4_verify(const aiq_sigv4_verify_req_t *req, aiq_err_t *err)
{
    const aiq_sigv4_creds_t *creds;
    const char *authz, *amz_date;
    auth_parts_t a;
    hasher_t h;
    int rc;

    if (!req || !req->method || !req->path || !req->header || !req->region || !req->service ||
        (!req->body && req->body_len))
        return aiq_err_set(err, AIQ_EINVAL,
                           "sigv4: verify needs method, path, header, region, "
                           "service");
    authz = req->header(req->header_ctx, "authorization");
    if (!authz)
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: missing Authorization header");
    if ((rc = parse_authorization(&a, authz, err)))
        return rc;
    amz_date = req->header(req->header_ctx, "x-amz-date");
    if ((rc = check_scope_and_date(req, &a, amz_date, err)))
        return rc;
    creds = find_creds(req, a.access_key);
    if (!creds || !creds->secret_key)
        return aiq_err_set(err, AIQ_EINVAL, "sigv4: unknown access key %.32s", a.access_key);
    if ((rc = hasher_open_own(&h, err)))
        return rc;
    rc = verify_signature(&h, req, &a, creds, amz_date, err);
    hasher_close(&h);
    return rc;
}
