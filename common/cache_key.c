#include "cache_key.h"
#include "canon.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

/* Part of every key: bump it whenever the canonical form or the framing changes, so old
 * entries simply stop matching instead of answering a different question. */
#define KEY_TAG "aiq-cache-key/1"

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
