/* creds.h — where the worker's AWS credentials come from: the AWS SDK chain (environment, web
 * identity through STS, container endpoint, shared credentials file), refreshed before expiry. */
#ifndef AIQ_CREDS_H
#define AIQ_CREDS_H

#include "aiq_err.h"
#include "http_client.h"
#include "log.h"
#include "sigv4.h"

#include <stdint.h>
#include <uv.h>

typedef struct aiq_creds aiq_creds_t;

/* Value of environment variable name, or NULL when unset. */
typedef const char *(*aiq_creds_getenv_fn)(void *ctx, const char *name);

/* Wall clock, milliseconds since the Unix epoch. */
typedef int64_t (*aiq_creds_clock_fn)(void *ctx);

/* Credentials expiring within this much of now count as expired: a request signed with them
 * might reach AWS too late, and clocks drift. */
#define AIQ_CREDS_EXPIRY_SLACK_MS 10000

/* Every pointer is borrowed for aiq_creds_new only; zero values pick the defaults. */
typedef struct aiq_creds_conf {
    const char *region;         /* for the default STS endpoint; required */
    const char *sts_endpoint;   /* NULL/"": AWS_ENDPOINT_URL_STS, else https://sts.<region>... */
    const char *session_name;   /* RoleSessionName when AWS_ROLE_SESSION_NAME is unset */
    int64_t refresh_margin_ms;  /* refresh this long before expiry (or at half-life if sooner);
                                   0 = 300000 */
    int64_t min_refresh_ms;     /* least time between two scheduled refreshes; 0 = 5000 */
    int64_t retry_base_ms;      /* first retry after a failed refresh, doubling up to 60 s;
                                   0 = 1000 */
    int64_t fetch_timeout_ms;   /* one STS or container request; 0 = 5000 */
    aiq_creds_getenv_fn getenv; /* NULL = the process environment */
    void *env_ctx;
    aiq_creds_clock_fn now_ms; /* NULL = aiq_now_ms */
    void *clock_ctx;
} aiq_creds_conf_t;

typedef struct aiq_creds_stats {
    uint64_t refreshes;      /* successful refreshes after start-up */
    uint64_t failures;       /* failed refresh attempts */
    int64_t expires_ms;      /* expiry of the credentials in use; 0 = they do not expire */
    int64_t next_refresh_ms; /* wall time of the next scheduled fetch; 0 = none */
} aiq_creds_stats_t;

/* Resolves the chain, in order: (1) AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY
 * (+ AWS_SESSION_TOKEN); (2) AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE → STS
 * AssumeRoleWithWebIdentity; (3) AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI (with
 * AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE or _TOKEN); (4) AWS_SHARED_CREDENTIALS_FILE or
 * ~/.aws/credentials, profile AWS_PROFILE or default. The first configured source wins; one
 * that is configured but broken (half-set variables, unreadable token file, missing profile
 * named by AWS_PROFILE) fails here with AIQ_EINVAL/AIQ_EIO naming it, and nothing configured
 * fails with AIQ_ENOTFOUND listing what was tried.
 * The first fetch of (2) and (3) blocks the calling thread (up to 3 attempts of
 * fetch_timeout_ms each, on transport errors and 5xx only), so call this before the loop
 * runs. Later refreshes run on loop through http, ahead of expiry; a failed one is logged
 * and retried with backoff while the old credentials stay in use.
 * loop and http are borrowed and may be NULL when only static sources can be used (then a
 * temporary source is AIQ_EINVAL). Logs the source, the first 4 characters of the access key
 * id and the expiry; never a secret. Loop thread. */
int aiq_creds_new(aiq_creds_t **out, uv_loop_t *loop, aiq_http_t *http, aiq_log_t *log,
                  const aiq_creds_conf_t *conf, aiq_err_t *err);

/* Fills *out with the credentials to sign with now, including the signing-key cache. The
 * strings are borrowed: valid until control returns to the loop (they survive at least the
 * next refresh). Returns 0, or AIQ_ETIMEDOUT when the credentials have expired (within
 * AIQ_CREDS_EXPIRY_SLACK_MS) and no refresh succeeded yet — a retryable condition; err says
 * when and why. Loop thread. */
int aiq_creds_get(aiq_creds_t *c, aiq_sigv4_creds_t *out, aiq_err_t *err);

/* "environment", "web_identity", "container" or "shared_file". */
const char *aiq_creds_source(const aiq_creds_t *c);

void aiq_creds_stats(const aiq_creds_t *c, aiq_creds_stats_t *out);

/* Cancels a refresh in flight (before http is closed) and releases everything, wiping the
 * secrets; the memory goes once the loop has run the timer's close callback. NULL is a no-op.
 * Loop thread. */
void aiq_creds_free(aiq_creds_t *c);

/* ---- pure helpers, exposed for tests; any thread ------------------------------------------ */

typedef struct aiq_creds_value {
    char access_key[AIQ_SIGV4_KEY_MAX + 1];
    char secret_key[AIQ_SIGV4_KEY_MAX + 1];
    char session_token[AIQ_SIGV4_TOKEN_MAX + 1]; /* "" when none */
    int64_t expires_ms;                          /* 0 = does not expire */
} aiq_creds_value_t;

/* Parses an STS AssumeRoleWithWebIdentity response. Returns 0 with every field set (all four
 * of AccessKeyId, SecretAccessKey, SessionToken, Expiration are required); AIQ_EINVAL for an
 * ErrorResponse (err: "STS error <Code>: <Message>"), another document, or a missing, empty,
 * repeated or malformed field (err names it); AIQ_ETOOBIG when a field exceeds its cap. */
int aiq_creds_parse_sts(const char *body, size_t len, aiq_creds_value_t *out, aiq_err_t *err);

/* Parses a container credentials response {AccessKeyId, SecretAccessKey, Token,
 * Expiration}; Token is optional, the others required. Errors as aiq_creds_parse_sts; an
 * error document {"code", "message"} is reported with both. */
int aiq_creds_parse_container(const char *body, size_t len, aiq_creds_value_t *out, aiq_err_t *err);

/* Reads profile from the text of a shared credentials file (INI: [name] sections, key = value,
 * '#' or ';' comment lines). Returns 0 (expires_ms 0); AIQ_ENOTFOUND when there is no such
 * profile; AIQ_EINVAL when the profile lacks aws_access_key_id or aws_secret_access_key (err
 * names an unsupported role_arn / credential_process / sso setting when that is why) or has
 * a malformed line; AIQ_ETOOBIG when a value exceeds its cap. */
int aiq_creds_parse_shared(const char *text, size_t len, const char *profile,
                           aiq_creds_value_t *out, aiq_err_t *err);

/* When to fetch credentials expiring at expires_ms, as a delay from now_ms: at
 * expires - margin, or at half the remaining lifetime when that is sooner, but never sooner
 * than min_ms. -1 when expires_ms is 0 (never). */
int64_t aiq_creds_refresh_delay_ms(int64_t now_ms, int64_t expires_ms, int64_t margin_ms,
                                   int64_t min_ms);

#endif
