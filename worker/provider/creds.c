/* creds.c — the AWS credentials chain and its refresh. Static sources (environment, shared
 * file) are read once; temporary ones (web identity, container) are fetched once, blocking,
 * at start-up, and then again on the loop through the curl-multi client before they expire. */
#include "creds.h"
#include "timeutil.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DEFAULT_MARGIN_MS  300000
#define DEFAULT_MIN_MS     5000
#define DEFAULT_RETRY_MS   1000
#define DEFAULT_TIMEOUT_MS 5000
#define RETRY_MAX_MS       60000
#define START_ATTEMPTS     3
#define TOKEN_FILE_MAX     (64 * 1024)   /* web identity JWTs are a few KB */
#define SHARED_FILE_MAX    (1024 * 1024) /* many profiles, still bounded */
#define RESPONSE_MAX       (64 * 1024)   /* STS and container answers are ~2 KB */
#define CONTAINER_HOST     "http://169.254.170.2"
#define SESSION_NAME_MAX   64 /* STS RoleSessionName limit */
#define DESC_MAX           512

typedef enum src { SRC_ENV, SRC_WEB_IDENTITY, SRC_CONTAINER, SRC_SHARED_FILE } src_t;

static const char *const src_names[] = {"environment", "web_identity", "container", "shared_file"};

struct aiq_creds {
    uv_loop_t *loop;
    aiq_http_t *http;
    aiq_log_t *log;
    aiq_creds_getenv_fn getenv_fn;
    void *env_ctx;
    aiq_creds_clock_fn clock_fn;
    void *clock_ctx;
    int64_t margin_ms, min_ms, retry_base_ms, timeout_ms;
    src_t src;
    char desc[DESC_MAX]; /* where from, for logs: never a secret */
    /* web identity */
    char *role_arn, *token_file, *session_name, *sts_url;
    /* container */
    char *url, *auth_file, *auth_token;
    /* Two generations, so that strings handed out by aiq_creds_get outlive one refresh. */
    aiq_creds_value_t set[2];
    int cur;
    aiq_sigv4_cache_t *cache;
    uv_timer_t timer;
    bool timer_live;
    aiq_http_req_t *req; /* refresh in flight */
    int64_t backoff_ms;
    char last_error[256];
    aiq_creds_stats_t stats;
};

/* ---- small helpers ------------------------------------------------------------------------ */

static const char *env_of(const aiq_creds_t *c, const char *name)
{
    const char *v = c->getenv_fn ? c->getenv_fn(c->env_ctx, name) : getenv(name);
    return v && *v ? v : NULL; /* the SDKs treat an empty variable as unset */
}

static int64_t now_of(const aiq_creds_t *c)
{
    return c->clock_fn ? c->clock_fn(c->clock_ctx) : aiq_now_ms();
}

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static char *dup_or_null(const char *s, bool *oom)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        *oom = true;
    return d;
}

static bool has_ctl(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return true;
    return false;
}

/* Copies a credential field, refusing empty, oversized and control-character values. */
static int put_field(char *dst, size_t cap, const char *src, size_t n, const char *what,
                     aiq_err_t *err)
{
    if (n == 0)
        return aiq_err_set(err, AIQ_EINVAL, "%s is empty", what);
    if (n >= cap)
        return aiq_err_set(err, AIQ_ETOOBIG, "%s is longer than %zu bytes", what, cap - 1);
    if (has_ctl(src, n))
        return aiq_err_set(err, AIQ_EINVAL, "%s contains control characters", what);
    memcpy(dst, src, n);
    dst[n] = '\0';
    return 0;
}

static void fmt_time(int64_t ms, char *buf, size_t cap)
{
    if (ms)
        aiq_time_format(ms, buf, cap);
    else
        snprintf(buf, cap, "never");
}

/* Reads a whole small file, NUL-terminated. Returns 0, AIQ_EIO (err has strerror) or
 * AIQ_ETOOBIG. *out is malloc'd; the caller wipes and frees it. */
static int read_file(const char *path, size_t max, char **out, size_t *len, int *errno_out,
                     aiq_err_t *err)
{
    FILE *f = fopen(path, "rb");
    *out = NULL;
    *errno_out = 0;
    if (!f) {
        *errno_out = errno;
        return aiq_err_set(err, AIQ_EIO, "%s", strerror(errno));
    }
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    int bad = buf ? ferror(f) : 1;
    fclose(f);
    if (!buf)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    if (bad || n > max) {
        OPENSSL_cleanse(buf, n);
        free(buf);
        return bad ? aiq_err_set(err, AIQ_EIO, "read error")
                   : aiq_err_set(err, AIQ_ETOOBIG, "larger than %zu bytes", max);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* A token file: contents without surrounding whitespace, which must not be empty. */
static int read_token_file(const char *path, const char *var, char **out, aiq_err_t *err)
{
    size_t n;
    int eno;
    aiq_err_t e2 = {0};
    int rc = read_file(path, TOKEN_FILE_MAX, out, &n, &eno, &e2);
    if (rc)
        return aiq_err_set(err, rc, "%s=%s: %s", var, path, e2.msg);
    char *s = *out, *end = s + n;
    while (s < end && strchr(" \t\r\n", *s))
        s++;
    while (end > s && strchr(" \t\r\n", end[-1]))
        *--end = '\0';
    if (s == end || has_ctl(s, (size_t)(end - s))) {
        wipe_free(*out);
        *out = NULL;
        return aiq_err_set(err, AIQ_EINVAL, "%s=%s: file is empty or has control characters", var,
                           path);
    }
    memmove(*out, s, (size_t)(end - s) + 1);
    return 0;
}

/* ---- STS XML ------------------------------------------------------------------------------ */

static const char *find(const char *p, const char *end, const char *needle)
{
    size_t n = strlen(needle);
    for (; p && (size_t)(end - p) >= n; p++) {
        p = memchr(p, needle[0], (size_t)(end - p));
        if (!p || (size_t)(end - p) < n)
            return NULL;
        if (!memcmp(p, needle, n))
            return p;
    }
    return NULL;
}

/* Decodes the five predefined entities and ASCII character references. */
static int xml_decode(const char *s, size_t n, char *out, size_t cap, const char *what,
                      aiq_err_t *err)
{
    static const struct {
        const char *name;
        char c;
    } ents[] = {{"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'}, {"apos;", '\''}};
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '&') {
            size_t k, semi = i + 1;
            while (semi < n && semi - i < 10 && s[semi] != ';')
                semi++;
            if (semi >= n || s[semi] != ';')
                return aiq_err_set(err, AIQ_EINVAL, "STS response: bad entity in <%s>", what);
            for (k = 0; k < sizeof(ents) / sizeof(ents[0]); k++)
                if (semi - i == strlen(ents[k].name) && !memcmp(s + i + 1, ents[k].name, semi - i))
                    break;
            if (k < sizeof(ents) / sizeof(ents[0])) {
                c = ents[k].c;
            } else if (s[i + 1] == '#') {
                char num[12] = {0}, *e;
                memcpy(num, s + i + 2, semi - i - 2);
                long v = num[0] == 'x' ? strtol(num + 1, &e, 16) : strtol(num, &e, 10);
                if (*e || e == num || v <= 0 || v > 0x7e)
                    return aiq_err_set(err, AIQ_EINVAL,
                                       "STS response: unsupported character reference in <%s>",
                                       what);
                c = (char)v;
            } else {
                return aiq_err_set(err, AIQ_EINVAL, "STS response: unknown entity in <%s>", what);
            }
            i = semi;
        }
        if (o + 1 >= cap)
            return aiq_err_set(err, AIQ_ETOOBIG, "STS response: <%s> longer than %zu bytes", what,
                               cap - 1);
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

/* The text of the one element <name> in [p, end), trimmed and decoded into out. AIQ_ENOTFOUND
 * when absent; AIQ_EINVAL when repeated, unterminated, empty or holding markup. */
static int xml_field(const char *p, const char *end, const char *name, char *out, size_t cap,
                     aiq_err_t *err)
{
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", name);
    snprintf(close, sizeof(close), "</%s>", name);
    const char *a = find(p, end, open);
    if (!a)
        return aiq_err_set(err, AIQ_ENOTFOUND, "STS response: <%s> missing", name);
    a += strlen(open);
    const char *b = find(a, end, close);
    if (!b)
        return aiq_err_set(err, AIQ_EINVAL, "STS response: <%s> not closed", name);
    if (find(b, end, open))
        return aiq_err_set(err, AIQ_EINVAL, "STS response: <%s> repeated", name);
    if (memchr(a, '<', (size_t)(b - a)))
        return aiq_err_set(err, AIQ_EINVAL, "STS response: unexpected markup in <%s>", name);
    while (a < b && strchr(" \t\r\n", *a))
        a++;
    while (b > a && strchr(" \t\r\n", b[-1]))
        b--;
    if (a == b)
        return aiq_err_set(err, AIQ_EINVAL, "STS response: <%s> is empty", name);
    return xml_decode(a, (size_t)(b - a), out, cap, name, err);
}

static int sts_error(const char *p, const char *end, aiq_err_t *err)
{
    char code[128], msg[256];
    aiq_err_t ignore = {0};
    if (xml_field(p, end, "Code", code, sizeof(code), &ignore))
        snprintf(code, sizeof(code), "(no Code)");
    if (xml_field(p, end, "Message", msg, sizeof(msg), &ignore))
        msg[0] = '\0';
    return aiq_err_set(err, AIQ_EINVAL, "STS error %s%s%s", code, msg[0] ? ": " : "", msg);
}

int aiq_creds_parse_sts(const char *body, size_t len, aiq_creds_value_t *out, aiq_err_t *err)
{
    const char *end = body + len, *a, *b;
    char exp[64];
    int rc;

    memset(out, 0, sizeof(*out));
    if (find(body, end, "<ErrorResponse"))
        return sts_error(body, end, err);
    if (!find(body, end, "<AssumeRoleWithWebIdentityResponse"))
        return aiq_err_set(err, AIQ_EINVAL,
                           "STS response is not an "
                           "AssumeRoleWithWebIdentityResponse document");
    if (!(a = find(body, end, "<Credentials>")) || !(b = find(a, end, "</Credentials>")))
        return aiq_err_set(err, AIQ_EINVAL, "STS response: <Credentials> missing or not closed");
    if (find(b, end, "<Credentials>"))
        return aiq_err_set(err, AIQ_EINVAL, "STS response: <Credentials> repeated");
    if ((rc = xml_field(a, b, "AccessKeyId", out->access_key, sizeof(out->access_key), err)) ||
        (rc = xml_field(a, b, "SecretAccessKey", out->secret_key, sizeof(out->secret_key), err)) ||
        (rc = xml_field(a, b, "SessionToken", out->session_token, sizeof(out->session_token),
                        err)) ||
        (rc = xml_field(a, b, "Expiration", exp, sizeof(exp), err)))
        goto fail;
    if (has_ctl(out->access_key, strlen(out->access_key)) ||
        has_ctl(out->secret_key, strlen(out->secret_key)) ||
        has_ctl(out->session_token, strlen(out->session_token))) {
        rc = aiq_err_set(err, AIQ_EINVAL, "STS response: control characters in a credential");
        goto fail;
    }
    if (aiq_time_parse(exp, &out->expires_ms)) {
        rc =
            aiq_err_set(err, AIQ_EINVAL, "STS response: <Expiration> '%.40s' is not RFC 3339", exp);
        goto fail;
    }
    return 0;
fail:
    if (rc == AIQ_ENOTFOUND)
        rc = AIQ_EINVAL;
    OPENSSL_cleanse(out, sizeof(*out));
    return rc;
}

/* ---- container JSON ----------------------------------------------------------------------- */

static int json_field(json_t *doc, const char *name, bool required, char *dst, size_t cap,
                      aiq_err_t *err)
{
    json_t *v = json_object_get(doc, name);
    char what[80];
    snprintf(what, sizeof(what), "container credentials: %s", name);
    if (!v && !required)
        return 0;
    if (!json_is_string(v))
        return aiq_err_set(err, AIQ_EINVAL, "%s %s", what, v ? "is not a string" : "missing");
    return put_field(dst, cap, json_string_value(v), json_string_length(v), what, err);
}

int aiq_creds_parse_container(const char *body, size_t len, aiq_creds_value_t *out, aiq_err_t *err)
{
    json_error_t jerr;
    char exp[64];
    int rc;

    memset(out, 0, sizeof(*out));
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return aiq_err_set(err, AIQ_EINVAL, "container credentials: not a JSON object (%s)",
                           doc ? "other JSON" : jerr.text);
    }
    json_t *code = json_object_get(doc, "code"), *msg = json_object_get(doc, "message");
    if (!json_object_get(doc, "AccessKeyId") && (json_is_string(code) || json_is_string(msg))) {
        rc = aiq_err_set(err, AIQ_EINVAL, "container credentials error %.100s: %.200s",
                         json_is_string(code) ? json_string_value(code) : "(no code)",
                         json_is_string(msg) ? json_string_value(msg) : "");
        goto out;
    }
    if ((rc =
             json_field(doc, "AccessKeyId", true, out->access_key, sizeof(out->access_key), err)) ||
        (rc = json_field(doc, "SecretAccessKey", true, out->secret_key, sizeof(out->secret_key),
                         err)) ||
        (rc = json_field(doc, "Token", false, out->session_token, sizeof(out->session_token),
                         err)) ||
        (rc = json_field(doc, "Expiration", true, exp, sizeof(exp), err)))
        goto out;
    if (aiq_time_parse(exp, &out->expires_ms))
        rc = aiq_err_set(err, AIQ_EINVAL,
                         "container credentials: Expiration '%.40s' is not RFC 3339", exp);
out:
    json_decref(doc);
    if (rc)
        OPENSSL_cleanse(out, sizeof(*out));
    return rc;
}

/* ---- shared credentials file -------------------------------------------------------------- */

typedef struct span {
    const char *p;
    size_t n;
} span_t;

static span_t trim_span(const char *p, size_t n)
{
    while (n && strchr(" \t\r", *p)) {
        p++;
        n--;
    }
    while (n && strchr(" \t\r", p[n - 1]))
        n--;
    return (span_t){p, n};
}

static bool span_is(span_t s, const char *word)
{
    return s.n == strlen(word) && !strncasecmp(s.p, word, s.n);
}

typedef struct profile_scan {
    aiq_creds_value_t *out;
    bool have_key, have_secret;
    const char *unsupported; /* a setting that names another credential mechanism */
} profile_scan_t;

/* One "key = value" line of the wanted profile. */
static int profile_line(profile_scan_t *ps, span_t line, int lineno, aiq_err_t *err)
{
    static const char *const other[] = {
        "role_arn",       "credential_process",      "sso_start_url",    "sso_session",
        "source_profile", "web_identity_token_file", "credential_source"};
    const char *eq = memchr(line.p, '=', line.n);
    if (!eq)
        return aiq_err_set(err, AIQ_EINVAL, "line %d: expected 'key = value'", lineno);
    span_t k = trim_span(line.p, (size_t)(eq - line.p));
    span_t v = trim_span(eq + 1, line.n - (size_t)(eq - line.p) - 1);
    aiq_creds_value_t *o = ps->out;
    if (span_is(k, "aws_access_key_id")) {
        ps->have_key = true;
        return put_field(o->access_key, sizeof(o->access_key), v.p, v.n, "aws_access_key_id", err);
    }
    if (span_is(k, "aws_secret_access_key")) {
        ps->have_secret = true;
        return put_field(o->secret_key, sizeof(o->secret_key), v.p, v.n, "aws_secret_access_key",
                         err);
    }
    if (span_is(k, "aws_session_token") || span_is(k, "aws_security_token"))
        return v.n ? put_field(o->session_token, sizeof(o->session_token), v.p, v.n,
                               "aws_session_token", err)
                   : 0;
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
        if (span_is(k, other[i]))
            ps->unsupported = other[i];
    return 0;
}

int aiq_creds_parse_shared(const char *text, size_t len, const char *profile,
                           aiq_creds_value_t *out, aiq_err_t *err)
{
    profile_scan_t ps = {.out = out};
    bool in = false, seen = false;
    int lineno = 0, rc = 0;
    const char *p = text, *end = text + len;

    memset(out, 0, sizeof(*out));
    while (p < end && !rc) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        span_t line = trim_span(p, (size_t)((nl ? nl : end) - p));
        p = nl ? nl + 1 : end;
        lineno++;
        if (line.n == 0 || line.p[0] == '#' || line.p[0] == ';')
            continue;
        if (line.p[0] == '[') {
            if (line.n < 2 || line.p[line.n - 1] != ']') {
                rc = aiq_err_set(err, AIQ_EINVAL, "line %d: malformed section header", lineno);
                continue;
            }
            span_t name = trim_span(line.p + 1, line.n - 2);
            in = name.n == strlen(profile) && !memcmp(name.p, profile, name.n);
            seen |= in;
            continue;
        }
        if (in)
            rc = profile_line(&ps, line, lineno, err);
    }
    if (!rc && !seen)
        rc = aiq_err_set(err, AIQ_ENOTFOUND, "no profile [%s]", profile);
    else if (!rc && (!ps.have_key || !ps.have_secret))
        rc = aiq_err_set(err, AIQ_EINVAL, "profile [%s] has no %s%s%s%s", profile,
                         ps.have_key ? "aws_secret_access_key" : "aws_access_key_id",
                         ps.unsupported ? " (it uses " : "", ps.unsupported ? ps.unsupported : "",
                         ps.unsupported ? ", which aiq does not support)" : "");
    if (rc)
        OPENSSL_cleanse(out, sizeof(*out));
    return rc;
}

/* ---- refresh schedule --------------------------------------------------------------------- */

int64_t aiq_creds_refresh_delay_ms(int64_t now_ms, int64_t expires_ms, int64_t margin_ms,
                                   int64_t min_ms)
{
    if (!expires_ms)
        return -1;
    int64_t left = expires_ms - now_ms;
    int64_t d = left - margin_ms < left / 2 ? left - margin_ms : left / 2;
    return d < min_ms ? min_ms : d;
}

/* ---- fetching temporary credentials ------------------------------------------------------- */

/* One HTTP request for a temporary source, built fresh each time: the token files rotate. */
typedef struct fetch {
    const char *method;
    const char *url;
    struct curl_slist *headers;
    char *body; /* holds the web identity token: wiped */
    size_t body_len;
} fetch_t;

static void fetch_clear(fetch_t *f)
{
    curl_slist_free_all(f->headers);
    f->headers = NULL;
    if (f->body) {
        OPENSSL_cleanse(f->body, f->body_len);
        free(f->body);
        f->body = NULL;
    }
}

static bool add_header(fetch_t *f, const char *line)
{
    struct curl_slist *n = curl_slist_append(f->headers, line);
    if (n)
        f->headers = n;
    return n != NULL;
}

/* Appends "&name=" + percent-encoded value to the form body. */
static bool form_add(char **body, size_t *len, size_t *cap, const char *name, const char *value)
{
    size_t need = *len + strlen(name) + 2 + 3 * strlen(value) + 1;
    if (need > *cap) {
        size_t ncap = need * 2;
        char *nb = malloc(ncap);
        if (!nb)
            return false;
        memcpy(nb, *body, *len);
        OPENSSL_cleanse(*body, *len);
        free(*body);
        *body = nb;
        *cap = ncap;
    }
    *len += (size_t)snprintf(*body + *len, *cap - *len, "%s%s=", *len ? "&" : "", name);
    int n = aiq_sigv4_encode_segment(value, *body + *len, *cap - *len);
    if (n < 0)
        return false;
    *len += (size_t)n;
    return true;
}

static int prepare_sts(aiq_creds_t *c, fetch_t *f, aiq_err_t *err)
{
    char *token = NULL;
    int rc = read_token_file(c->token_file, "AWS_WEB_IDENTITY_TOKEN_FILE", &token, err);
    if (rc)
        return rc;
    size_t len = 0, cap = 256;
    char *body = malloc(cap);
    bool ok = body && form_add(&body, &len, &cap, "Action", "AssumeRoleWithWebIdentity") &&
              form_add(&body, &len, &cap, "Version", "2011-06-15") &&
              form_add(&body, &len, &cap, "RoleArn", c->role_arn) &&
              form_add(&body, &len, &cap, "RoleSessionName", c->session_name) &&
              form_add(&body, &len, &cap, "WebIdentityToken", token);
    wipe_free(token);
    f->body = body;
    f->body_len = len;
    f->method = "POST";
    f->url = c->sts_url;
    ok = ok && add_header(f, "Content-Type: application/x-www-form-urlencoded; charset=utf-8") &&
         add_header(f, "Accept: text/xml") && add_header(f, "Expect:");
    if (!ok) {
        fetch_clear(f);
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory building the STS request");
    }
    return 0;
}

static int prepare_container(aiq_creds_t *c, fetch_t *f, aiq_err_t *err)
{
    char *token = NULL, *line = NULL;
    int rc = 0;
    if (c->auth_file &&
        (rc = read_token_file(c->auth_file, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token, err)))
        return rc;
    const char *auth = token ? token : c->auth_token;
    f->method = "GET";
    f->url = c->url;
    if (auth && (line = malloc(strlen(auth) + 32)))
        snprintf(line, strlen(auth) + 32, "Authorization: %s", auth);
    bool ok = (!auth || (line && add_header(f, line))) && add_header(f, "Accept: application/json");
    wipe_free(line);
    wipe_free(token);
    if (!ok) {
        fetch_clear(f);
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory building the credentials request");
    }
    return 0;
}

static int fetch_prepare(aiq_creds_t *c, fetch_t *f, aiq_err_t *err)
{
    memset(f, 0, sizeof(*f));
    return c->src == SRC_WEB_IDENTITY ? prepare_sts(c, f, err) : prepare_container(c, f, err);
}

/* A short printable excerpt of an unexpected body, for error messages. */
static void excerpt(const char *body, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < cap && i < 120; i++)
        out[o++] = (body[i] >= 0x20 && body[i] < 0x7f) ? body[i] : ' ';
    out[o] = '\0';
}

/* Turns a response into credentials. AIQ_EHTTP for what may pass (transport errors, 429,
 * 5xx), AIQ_EINVAL for answers that will not change by asking again. */
static int fetch_result(aiq_creds_t *c, const aiq_http_response_t *resp, aiq_creds_value_t *v,
                        aiq_err_t *err)
{
    const char *who = c->src == SRC_WEB_IDENTITY ? "STS" : "container endpoint";
    aiq_err_t e2 = {0};
    char snip[128];
    int rc;

    if (resp->curl_code != CURLE_OK)
        return aiq_err_set(err, AIQ_EHTTP, "%s %s: %s", who,
                           c->src == SRC_WEB_IDENTITY ? c->sts_url : c->url, resp->curl_error);
    if (resp->body_len > RESPONSE_MAX)
        return aiq_err_set(err, AIQ_EINVAL, "%s answered %zu bytes (limit %d)", who, resp->body_len,
                           RESPONSE_MAX);
    rc = c->src == SRC_WEB_IDENTITY ? aiq_creds_parse_sts(resp->body, resp->body_len, v, &e2)
                                    : aiq_creds_parse_container(resp->body, resp->body_len, v, &e2);
    bool transient = resp->status == 429 || resp->status >= 500;
    if (resp->status != 200) {
        if (!rc)
            OPENSSL_cleanse(v, sizeof(*v));
        /* An XML or JSON error document says more than its first bytes would. */
        bool structured = resp->body_len && (resp->body[0] == '<' || resp->body[0] == '{');
        excerpt(resp->body, resp->body_len, snip, sizeof(snip));
        return aiq_err_set(err, transient ? AIQ_EHTTP : AIQ_EINVAL, "%s answered HTTP %ld: %s", who,
                           resp->status, rc && structured ? e2.msg : snip);
    }
    if (rc)
        return aiq_err_set(err, rc, "%s", e2.msg);
    if (v->expires_ms - now_of(c) <= AIQ_CREDS_EXPIRY_SLACK_MS) {
        char ts[32];
        fmt_time(v->expires_ms, ts, sizeof(ts));
        OPENSSL_cleanse(v, sizeof(*v));
        return aiq_err_set(err, AIQ_EINVAL,
                           "%s handed out credentials expiring at %s, already (nearly) expired: "
                           "is the clock right?",
                           who, ts);
    }
    return 0;
}

typedef struct sync_fetch {
    aiq_creds_t *c;
    aiq_creds_value_t *v;
    aiq_err_t *err;
    int rc;
} sync_fetch_t;

static void on_sync_fetched(void *opaque, const aiq_http_response_t *resp)
{
    sync_fetch_t *s = opaque;
    s->rc = fetch_result(s->c, resp, s->v, s->err);
}

/* Start-up only: the loop is not running yet, so a bounded blocking exchange is fine. */
static int fetch_blocking(aiq_creds_t *c, aiq_creds_value_t *v, aiq_err_t *err)
{
    int rc = 0;
    for (int attempt = 0; attempt < START_ATTEMPTS; attempt++) {
        if (attempt) {
            struct timespec ts = {0, 200000000L << (attempt - 1)};
            nanosleep(&ts, NULL);
        }
        fetch_t f;
        if ((rc = fetch_prepare(c, &f, err)))
            return rc;
        sync_fetch_t s = {c, v, err, 0};
        rc = aiq_http_perform(f.method, f.url, f.headers, f.body, f.body_len, c->timeout_ms,
                              on_sync_fetched, &s, err);
        f.headers = NULL; /* taken */
        fetch_clear(&f);
        if (!rc)
            rc = s.rc;
        if (rc != AIQ_EHTTP)
            return rc;
    }
    return rc;
}

/* ---- the refresh cycle (loop thread) ------------------------------------------------------ */

static void on_refresh_timer(uv_timer_t *t);

static void schedule(aiq_creds_t *c, int64_t delay_ms)
{
    c->stats.next_refresh_ms = now_of(c) + delay_ms;
    uv_timer_start(&c->timer, on_refresh_timer, (uint64_t)delay_ms, 0);
}

static void log_installed(aiq_creds_t *c, const char *what)
{
    const aiq_creds_value_t *v = &c->set[c->cur];
    char ts[32];
    fmt_time(v->expires_ms, ts, sizeof(ts));
    long long next = c->stats.next_refresh_ms ? (c->stats.next_refresh_ms - now_of(c)) / 1000 : -1;
    /* Four characters say which key (AKIA long-term, ASIA temporary) without identifying it. */
    aiq_log_info(c->log,
                 "AWS credentials %s: source=%s (%s) key_id=%.4s... session_token=%s "
                 "expires=%s next_refresh_in_s=%lld",
                 what, src_names[c->src], c->desc, v->access_key,
                 v->session_token[0] ? "yes" : "no", ts, next);
}

static void refresh_failed(aiq_creds_t *c, const char *why)
{
    const aiq_creds_value_t *v = &c->set[c->cur];
    int64_t now = now_of(c);
    char ts[32];
    c->stats.failures++;
    snprintf(c->last_error, sizeof(c->last_error), "%s", why);
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : c->retry_base_ms;
    if (c->backoff_ms > RETRY_MAX_MS)
        c->backoff_ms = RETRY_MAX_MS;
    fmt_time(v->expires_ms, ts, sizeof(ts));
    bool expired = now >= v->expires_ms - AIQ_CREDS_EXPIRY_SLACK_MS;
    aiq_log_warn(c->log,
                 "AWS credentials refresh from %s failed: %s; the current ones %s %s; "
                 "retrying in %lld ms",
                 src_names[c->src], why, expired ? "EXPIRED at" : "stay in use until", ts,
                 (long long)c->backoff_ms);
    schedule(c, c->backoff_ms);
}

static void on_refreshed(void *opaque, const aiq_http_response_t *resp)
{
    aiq_creds_t *c = opaque;
    aiq_creds_value_t v;
    aiq_err_t err = {0};
    c->req = NULL;
    if (fetch_result(c, resp, &v, &err)) {
        refresh_failed(c, err.msg);
        return;
    }
    /* The other generation is overwritten: handed out two refreshes ago, long returned. */
    c->cur = !c->cur;
    c->set[c->cur] = v;
    OPENSSL_cleanse(&v, sizeof(v));
    c->stats.refreshes++;
    c->stats.expires_ms = c->set[c->cur].expires_ms;
    c->backoff_ms = 0;
    c->last_error[0] = '\0';
    schedule(c,
             aiq_creds_refresh_delay_ms(now_of(c), c->stats.expires_ms, c->margin_ms, c->min_ms));
    log_installed(c, "refreshed");
}

static void on_refresh_timer(uv_timer_t *t)
{
    aiq_creds_t *c = t->data;
    fetch_t f;
    aiq_err_t err = {0};
    c->stats.next_refresh_ms = 0;
    if (fetch_prepare(c, &f, &err)) {
        refresh_failed(c, err.msg);
        return;
    }
    int rc = aiq_http_request(c->http, f.method, f.url, f.headers, f.body, f.body_len,
                              (long)c->timeout_ms, on_refreshed, c, &c->req, &err);
    f.headers = NULL; /* taken */
    fetch_clear(&f);
    if (rc)
        refresh_failed(c, err.msg);
}

/* ---- the chain ---------------------------------------------------------------------------- */

/* Each source returns 1 when it provided credentials into *v, 0 when it is not configured
 * (why says so), or a negative code when it is configured but broken. */
typedef int (*source_fn)(aiq_creds_t *c, aiq_creds_value_t *v, char *why, size_t cap,
                         aiq_err_t *err);

static int from_env(aiq_creds_t *c, aiq_creds_value_t *v, char *why, size_t cap, aiq_err_t *err)
{
    const char *ak = env_of(c, "AWS_ACCESS_KEY_ID"), *sk = env_of(c, "AWS_SECRET_ACCESS_KEY");
    const char *tok = env_of(c, "AWS_SESSION_TOKEN");
    int rc;
    if (!ak && !sk) {
        snprintf(why, cap, "AWS_ACCESS_KEY_ID unset");
        return 0;
    }
    if (!ak || !sk)
        return aiq_err_set(err, AIQ_EINVAL,
                           "AWS credentials from the environment: %s is set "
                           "but %s is not",
                           ak ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                           ak ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
    aiq_err_t e2 = {0};
    if ((rc = put_field(v->access_key, sizeof(v->access_key), ak, strlen(ak), "AWS_ACCESS_KEY_ID",
                        &e2)) ||
        (rc = put_field(v->secret_key, sizeof(v->secret_key), sk, strlen(sk),
                        "AWS_SECRET_ACCESS_KEY", &e2)) ||
        (tok && (rc = put_field(v->session_token, sizeof(v->session_token), tok, strlen(tok),
                                "AWS_SESSION_TOKEN", &e2))))
        return aiq_err_set(err, rc, "AWS credentials from the environment: %s", e2.msg);
    c->src = SRC_ENV;
    snprintf(c->desc, sizeof(c->desc), "AWS_ACCESS_KEY_ID%s", tok ? " + AWS_SESSION_TOKEN" : "");
    return 1;
}

/* RoleSessionName allows [A-Za-z0-9+=,.@_-], 2..64 characters. */
static void session_name_from(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = in ? in : ""; *p && o + 1 < cap && o < SESSION_NAME_MAX; p++)
        out[o++] = (strchr("+=,.@_-", *p) || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
                    (*p >= 'A' && *p <= 'Z'))
                       ? *p
                       : '-';
    out[o] = '\0';
    if (o < 2)
        snprintf(out, cap, "aiq-worker");
}

static int from_web_identity(aiq_creds_t *c, aiq_creds_value_t *v, char *why, size_t cap,
                             aiq_err_t *err)
{
    (void)v; /* fetched later, once the endpoint is known */
    const char *arn = env_of(c, "AWS_ROLE_ARN"), *file = env_of(c, "AWS_WEB_IDENTITY_TOKEN_FILE");
    if (!arn && !file) {
        snprintf(why, cap, "AWS_ROLE_ARN unset");
        return 0;
    }
    if (!arn || !file)
        return aiq_err_set(err, AIQ_EINVAL, "web identity credentials: %s is set but %s is not",
                           arn ? "AWS_ROLE_ARN" : "AWS_WEB_IDENTITY_TOKEN_FILE",
                           arn ? "AWS_WEB_IDENTITY_TOKEN_FILE" : "AWS_ROLE_ARN");
    c->src = SRC_WEB_IDENTITY;
    c->role_arn = strdup(arn);
    c->token_file = strdup(file);
    return c->role_arn && c->token_file ? 1 : aiq_err_set(err, AIQ_ENOMEM, "out of memory");
}

/* Plain http is accepted only towards this host or the ECS/EKS agents, as the SDKs do: the
 * authorization token must not travel in clear to anywhere else. */
static bool container_url_ok(const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    bool ok = false;
    if (u && !curl_url_set(u, CURLUPART_URL, url, 0) &&
        !curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) &&
        !curl_url_get(u, CURLUPART_HOST, &host, 0)) {
        ok = !strcasecmp(scheme, "https") ||
             (!strcasecmp(scheme, "http") &&
              ((!strncmp(host, "127.", 4) && strspn(host, "0123456789.") == strlen(host)) ||
               !strcasecmp(host, "localhost") || !strcmp(host, "[::1]") ||
               !strcmp(host, "169.254.170.2") || !strcmp(host, "169.254.170.23") ||
               !strcasecmp(host, "[fd00:ec2::23]")));
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

static int from_container(aiq_creds_t *c, aiq_creds_value_t *v, char *why, size_t cap,
                          aiq_err_t *err)
{
    (void)v;
    const char *rel = env_of(c, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = env_of(c, "AWS_CONTAINER_CREDENTIALS_FULL_URI");
    const char *file = env_of(c, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    const char *tok = env_of(c, "AWS_CONTAINER_AUTHORIZATION_TOKEN");
    if (!rel && !full) {
        snprintf(why, cap, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/_FULL_URI unset");
        return 0;
    }
    c->src = SRC_CONTAINER;
    if (rel) {
        size_t n = strlen(CONTAINER_HOST) + strlen(rel) + 2;
        if ((c->url = malloc(n)))
            snprintf(c->url, n, "%s%s%s", CONTAINER_HOST, rel[0] == '/' ? "" : "/", rel);
    } else {
        c->url = strdup(full);
    }
    if (!c->url)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    if (!rel && !container_url_ok(c->url))
        return aiq_err_set(err, AIQ_EINVAL,
                           "container credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI %.200s must "
                           "be https, or http to a loopback address or the ECS/EKS agent",
                           c->url);
    if (tok && strpbrk(tok, "\r\n"))
        return aiq_err_set(err, AIQ_EINVAL,
                           "container credentials: AWS_CONTAINER_AUTHORIZATION_TOKEN has CR/LF");
    bool oom = false;
    c->auth_file = dup_or_null(file, &oom);
    c->auth_token = file ? NULL : dup_or_null(tok, &oom);
    return oom ? aiq_err_set(err, AIQ_ENOMEM, "out of memory") : 1;
}

static int shared_file_path(aiq_creds_t *c, char *path, size_t cap, bool *explicit_path)
{
    const char *p = env_of(c, "AWS_SHARED_CREDENTIALS_FILE"), *home = env_of(c, "HOME");
    *explicit_path = p != NULL;
    if (p && strncmp(p, "~/", 2) != 0)
        return snprintf(path, cap, "%s", p) < (int)cap ? 0 : -1;
    if (!home)
        return -1;
    return snprintf(path, cap, "%s/%s", home, p ? p + 2 : ".aws/credentials") < (int)cap ? 0 : -1;
}

static int from_shared_file(aiq_creds_t *c, aiq_creds_value_t *v, char *why, size_t cap,
                            aiq_err_t *err)
{
    char path[1024];
    bool explicit_path;
    const char *named = env_of(c, "AWS_PROFILE"), *profile = named ? named : "default";
    if (shared_file_path(c, path, sizeof(path), &explicit_path)) {
        if (explicit_path || named)
            return aiq_err_set(err, AIQ_EINVAL,
                               "shared credentials file: cannot build its path "
                               "(HOME unset or path too long)");
        snprintf(why, cap, "HOME unset");
        return 0;
    }
    char *text;
    size_t len;
    int eno, rc;
    aiq_err_t e2 = {0};
    if ((rc = read_file(path, SHARED_FILE_MAX, &text, &len, &eno, &e2))) {
        if (eno == ENOENT && !explicit_path && !named) {
            snprintf(why, cap, "%.200s not found", path);
            return 0;
        }
        return aiq_err_set(err, rc, "shared credentials file %s: %s", path, e2.msg);
    }
    rc = aiq_creds_parse_shared(text, len, profile, v, &e2);
    wipe_free(text);
    if (rc == AIQ_ENOTFOUND && !named) {
        snprintf(why, cap, "%.200s has no [default] profile", path);
        return 0;
    }
    if (rc)
        return aiq_err_set(err, rc, "shared credentials file %s: %s%s", path, e2.msg,
                           rc == AIQ_ENOTFOUND ? " (named by AWS_PROFILE)" : "");
    c->src = SRC_SHARED_FILE;
    snprintf(c->desc, sizeof(c->desc), "%.400s, profile %.64s", path, profile);
    return 1;
}

static int resolve(aiq_creds_t *c, aiq_creds_value_t *v, aiq_err_t *err)
{
    static const source_fn sources[] = {from_env, from_web_identity, from_container,
                                        from_shared_file};
    static const char *const labels[] = {"environment", "web identity", "container",
                                         "shared credentials file"};
    char tried[400] = "";
    size_t used = 0;
    for (size_t i = 0; i < sizeof(sources) / sizeof(sources[0]); i++) {
        char why[256] = "";
        int rc = sources[i](c, v, why, sizeof(why), err);
        if (rc)
            return rc < 0 ? rc : 0;
        int n = snprintf(tried + used, sizeof(tried) - used, "%s%s (%s)", i ? ", " : "", labels[i],
                         why);
        if (n > 0 && (size_t)n < sizeof(tried) - used)
            used += (size_t)n;
    }
    return aiq_err_set(err, AIQ_ENOTFOUND, "no AWS credentials found; tried %s", tried);
}

/* The endpoint, session name and first fetch of a temporary source. */
static int setup_temporary(aiq_creds_t *c, const aiq_creds_conf_t *conf, aiq_creds_value_t *v,
                           aiq_err_t *err)
{
    char name[SESSION_NAME_MAX + 1];
    int rc;
    if (!c->loop || !c->http)
        return aiq_err_set(err, AIQ_EINVAL, "%s credentials need a loop and an HTTP client",
                           src_names[c->src]);
    if (c->src == SRC_WEB_IDENTITY) {
        const char *ep = conf->sts_endpoint && *conf->sts_endpoint
                             ? conf->sts_endpoint
                             : env_of(c, "AWS_ENDPOINT_URL_STS");
        const char *sn = env_of(c, "AWS_ROLE_SESSION_NAME");
        size_t n = ep ? strlen(ep) + 1 : strlen(conf->region) + 32;
        if (!(c->sts_url = malloc(n)))
            return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
        if (ep)
            snprintf(c->sts_url, n, "%s", ep);
        else
            snprintf(c->sts_url, n, "https://sts.%s.amazonaws.com/", conf->region);
        session_name_from(sn ? sn : conf->session_name, name, sizeof(name));
        if (!(c->session_name = strdup(name)))
            return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
        snprintf(c->desc, sizeof(c->desc), "role %.200s, session %s, STS %.200s", c->role_arn,
                 c->session_name, c->sts_url);
    } else {
        snprintf(c->desc, sizeof(c->desc), "%.300s%s", c->url,
                 c->auth_file    ? ", token file"
                 : c->auth_token ? ", token"
                                 : "");
    }
    aiq_err_t e2 = {0};
    if ((rc = fetch_blocking(c, v, &e2)))
        return aiq_err_set(err, rc, "%s credentials (%s): %s", src_names[c->src], c->desc, e2.msg);
    return 0;
}

static void destroy(aiq_creds_t *c)
{
    free(c->role_arn);
    free(c->token_file);
    free(c->session_name);
    free(c->sts_url);
    free(c->url);
    free(c->auth_file);
    wipe_free(c->auth_token);
    aiq_sigv4_cache_free(c->cache);
    OPENSSL_cleanse(c, sizeof(*c));
    free(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    destroy(h->data);
}

int aiq_creds_new(aiq_creds_t **out, uv_loop_t *loop, aiq_http_t *http, aiq_log_t *log,
                  const aiq_creds_conf_t *conf, aiq_err_t *err)
{
    aiq_creds_t *c = calloc(1, sizeof(*c));
    int rc;
    if (!c || !(c->cache = aiq_sigv4_cache_new())) {
        free(c);
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    }
    c->loop = loop;
    c->http = http;
    c->log = log;
    c->getenv_fn = conf->getenv;
    c->env_ctx = conf->env_ctx;
    c->clock_fn = conf->now_ms;
    c->clock_ctx = conf->clock_ctx;
    c->margin_ms = conf->refresh_margin_ms > 0 ? conf->refresh_margin_ms : DEFAULT_MARGIN_MS;
    c->min_ms = conf->min_refresh_ms > 0 ? conf->min_refresh_ms : DEFAULT_MIN_MS;
    c->retry_base_ms = conf->retry_base_ms > 0 ? conf->retry_base_ms : DEFAULT_RETRY_MS;
    c->timeout_ms = conf->fetch_timeout_ms > 0 ? conf->fetch_timeout_ms : DEFAULT_TIMEOUT_MS;
    aiq_creds_value_t *v = &c->set[0];
    if ((rc = resolve(c, v, err)))
        goto fail;
    if (c->src == SRC_WEB_IDENTITY || c->src == SRC_CONTAINER) {
        if ((rc = setup_temporary(c, conf, v, err)))
            goto fail;
        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        c->timer_live = true;
        c->stats.expires_ms = v->expires_ms;
        schedule(c, aiq_creds_refresh_delay_ms(now_of(c), v->expires_ms, c->margin_ms, c->min_ms));
    }
    log_installed(c, "loaded");
    *out = c;
    return 0;
fail:
    destroy(c);
    return rc;
}

int aiq_creds_get(aiq_creds_t *c, aiq_sigv4_creds_t *out, aiq_err_t *err)
{
    const aiq_creds_value_t *v = &c->set[c->cur];
    if (v->expires_ms && now_of(c) >= v->expires_ms - AIQ_CREDS_EXPIRY_SLACK_MS) {
        char ts[32];
        fmt_time(v->expires_ms, ts, sizeof(ts));
        return aiq_err_set(err, AIQ_ETIMEDOUT,
                           "AWS credentials from %s expired at %s and no refresh has succeeded "
                           "yet%s%.300s",
                           src_names[c->src], ts, c->last_error[0] ? ": " : "", c->last_error);
    }
    out->access_key = v->access_key;
    out->secret_key = v->secret_key;
    out->session_token = v->session_token[0] ? v->session_token : NULL;
    out->cache = c->cache;
    return 0;
}

const char *aiq_creds_source(const aiq_creds_t *c)
{
    return src_names[c->src];
}

void aiq_creds_stats(const aiq_creds_t *c, aiq_creds_stats_t *out)
{
    *out = c->stats;
}

void aiq_creds_free(aiq_creds_t *c)
{
    if (!c)
        return;
    if (c->req)
        aiq_http_cancel(c->http, c->req);
    c->req = NULL;
    if (!c->timer_live) {
        destroy(c);
        return;
    }
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}
