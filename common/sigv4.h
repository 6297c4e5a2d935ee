/* sigv4.h — AWS Signature Version 4 (HMAC-SHA256) for requests aiq sends to Bedrock, and
 * its verification for the Bedrock simulator. Pure functions over caller buffers; safe on any
 * thread.
 *
 * Why not curl's CURLOPT_AWS_SIGV4: curl 7.88 puts the wire path into the canonical request
 * as is, but every AWS service except S3 wants the path URI-encoded a second time. A model id
 * with ':' travels as "%3A" and must be signed as "%253A", so curl's signature is rejected. */
#ifndef AIQ_SIGV4_H
#define AIQ_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "aiq_err.h"

/* Hard caps; an input above one fails with AIQ_ETOOBIG (never truncated). */
#define AIQ_SIGV4_KEY_MAX      128   /* access key id and secret key, bytes */
#define AIQ_SIGV4_TOKEN_MAX    4096  /* session token, bytes */
#define AIQ_SIGV4_SCOPE_MAX    64    /* region and service names, bytes */
#define AIQ_SIGV4_PATH_MAX     2048  /* wire path, bytes */
#define AIQ_SIGV4_QUERY_MAX    2048  /* raw query string, bytes */
#define AIQ_SIGV4_PARAMS_MAX   64    /* query parameters */
#define AIQ_SIGV4_SEGMENTS_MAX 128   /* path segments */
#define AIQ_SIGV4_HEADERS_MAX  16    /* signed headers verify accepts */
#define AIQ_SIGV4_CANON_MAX    16384 /* canonical request, bytes */
#define AIQ_SIGV4_MAX_SKEW_S   900   /* default clock skew verify accepts (AWS: 15 minutes) */

/* Derived signing keys, cached per (secret, date, region, service): HMAC("AWS4" + secret, date)
 * and its three successors are the same for every request of one day, so a hit saves four of
 * the five HMACs of a signature. A few slots, least recently used replaced; one entry per
 * credential and scope, so rotated or several credentials stay correct. Owned by the caller,
 * not thread-safe (one owner thread); keys are wiped when replaced and on free. */
typedef struct aiq_sigv4_cache aiq_sigv4_cache_t;

/* Returns an empty cache, or NULL when out of memory. */
aiq_sigv4_cache_t *aiq_sigv4_cache_new(void);

/* Wipes and frees. NULL is a no-op. */
void aiq_sigv4_cache_free(aiq_sigv4_cache_t *cache);

/* Lookups that found a key / had to derive one, since creation. */
void aiq_sigv4_cache_stats(const aiq_sigv4_cache_t *cache, unsigned long long *hits,
                           unsigned long long *misses);

/* Borrowed strings; the caller keeps them alive for the call. */
typedef struct aiq_sigv4_creds {
    const char *access_key;
    const char *secret_key;
    const char *session_token; /* NULL if none */
    /* Signing-key cache aiq_sigv4_sign reads and fills (borrowed; NULL derives the key every
     * time). Verification ignores it. */
    aiq_sigv4_cache_t *cache;
} aiq_sigv4_creds_t;

/* One request to sign. Every pointer is borrowed for the duration of the call. */
typedef struct aiq_sigv4_req {
    const char *method;       /* "POST" */
    const char *host;         /* Host header value as sent, e.g. "127.0.0.1:8089" */
    const char *path;         /* path exactly as sent on the wire, already percent-encoded once */
    const char *query;        /* raw query string without '?', or NULL */
    const char *content_type; /* signed if non-NULL */
    const void *body;         /* may be NULL when body_len is 0 */
    size_t body_len;
    const char *region;  /* "us-east-1" */
    const char *service; /* "bedrock" */
    time_t now;          /* request time, UTC epoch seconds */
} aiq_sigv4_req_t;

/* What the caller must send: Authorization and X-Amz-Date, plus X-Amz-Security-Token (the
 * creds' token) when there is one. content_sha256 may be sent as x-amz-content-sha256; it is
 * not signed. */
typedef struct aiq_sigv4_out {
    char authorization[512]; /* full value of the Authorization header */
    char amz_date[17];       /* X-Amz-Date value, YYYYMMDDTHHMMSSZ */
    char content_sha256[65]; /* hex SHA-256 of the body */
} aiq_sigv4_out_t;

/* Signs req (using and updating creds->cache when set). Signed headers: content-type (when set),
 * host, x-amz-date and, when creds->session_token is set, x-amz-security-token. The canonical URI
 * is the wire path with
 * "." / ".." / empty segments removed and then URI-encoded again ("%3A" -> "%253A"); the
 * canonical query is decoded, re-encoded and sorted.
 * Returns 0 and fills *out; AIQ_EINVAL (missing field, CR/LF in a header value, path not
 * starting with '/'), AIQ_ETOOBIG (a cap above) or AIQ_ECRYPTO, with the cause in err.
 * *out is unspecified on failure. */
int aiq_sigv4_sign(const aiq_sigv4_req_t *req, const aiq_sigv4_creds_t *creds, aiq_sigv4_out_t *out,
                   aiq_err_t *err);

/* Writes the canonical request aiq_sigv4_sign would hash for req into out (NUL-terminated),
 * for tests and for debugging a signature mismatch. Returns its length, or a negative
 * AIQ_E* code like aiq_sigv4_sign. creds may be NULL (no session token). */
int aiq_sigv4_canonical_request(const aiq_sigv4_req_t *req, const aiq_sigv4_creds_t *creds,
                                char *out, size_t cap, aiq_err_t *err);

/* Percent-encodes one path segment (RFC 3986 unreserved kept; '/' encoded too), for building
 * URLs from model ids: "a.b-v1:0" -> "a.b-v1%3A0". Writes a NUL-terminated string into out.
 * Returns its length, or AIQ_ETOOBIG when cap is too small (out then holds ""). */
int aiq_sigv4_encode_segment(const char *in, char *out, size_t cap);

/* Server side. Returns the value of request header `name` (lower-case; the callee matches
 * case-insensitively) or NULL when the request has none. The value is borrowed and must stay
 * valid until aiq_sigv4_verify returns; repeated headers should be joined with ','. */
typedef const char *(*aiq_sigv4_header_fn)(void *ctx, const char *name);

/* Server side. Returns the credentials that own access_key (borrowed, valid until
 * aiq_sigv4_verify returns), or NULL when the key is unknown. When the returned session_token
 * is non-NULL the request must carry exactly that x-amz-security-token. */
typedef const aiq_sigv4_creds_t *(*aiq_sigv4_lookup_fn)(void *ctx, const char *access_key);

/* One received request to verify. Every pointer is borrowed for the call. */
typedef struct aiq_sigv4_verify_req {
    const char *method;
    const char *path;  /* raw request path as received, before any percent-decoding */
    const char *query; /* raw query without '?', or NULL */
    const void *body;  /* may be NULL when body_len is 0 */
    size_t body_len;
    aiq_sigv4_header_fn header; /* required */
    void *header_ctx;
    const char *region;  /* the scope this server accepts */
    const char *service; /* e.g. "bedrock" */
    time_t now;          /* server time, UTC epoch seconds */
    int max_skew_s;      /* accepted |now - x-amz-date|; 0 means AIQ_SIGV4_MAX_SKEW_S */
    /* Key source: lookup when set, else the single pair in creds. */
    aiq_sigv4_lookup_fn lookup;
    void *lookup_ctx;
    const aiq_sigv4_creds_t *creds;
} aiq_sigv4_verify_req_t;

/* Checks the request's Authorization header (AWS4-HMAC-SHA256, header form only; presigned
 * query strings are not supported). Every header named in SignedHeaders is looked up through
 * req->header and must exist; host and x-amz-date must be among them. The payload hash is
 * always computed from the body; an x-amz-content-sha256 header, if sent, must equal it.
 * Returns 0 when valid; AIQ_EINVAL with the reason in err for: missing header, malformed
 * header, unknown access key, wrong region/service, bad or stale x-amz-date (skew), missing
 * or wrong session token, signature mismatch; AIQ_ETOOBIG or AIQ_ECRYPTO otherwise.
 * The reason never contains the secret or the expected signature. */
int aiq_sigv4_verify(const aiq_sigv4_verify_req_t *req, aiq_err_t *err);

#endif
