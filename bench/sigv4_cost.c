/* sigv4_cost.c — what SigV4 signing costs aiq: CPU per signature (derived key uncached vs
 * cached) for a realistic Converse request, and client CPU per keep-alive POST through the
 * curl-multi client against bedrock-sim, unsigned vs signed-uncached vs signed-cached.
 *
 * Usage: sigv4_cost [--sim URL] [--requests N] [--signs N] [--runs N] [--window N]
 * Without --sim only the signing part runs. Every figure is the median of --runs runs. */
#include "http_client.h"
#include "sigv4.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <openssl/evp.h>

#define MODEL    "anthropic.claude-3-haiku-20240307-v1:0"
#define RUNS_MAX 15

typedef struct opts {
    const char *sim;
    long requests, signs, runs, window;
} opts_t;

/* ~1.5 KB: a system prompt, two turns and inference settings, as the worker sends. */
static char *converse_body(size_t *len)
{
    static const char fmt[] =
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"Operation: vc-analysis\\n"
        "Persona: analyst\\nInput: {\\\"company\\\":\\\"Example Robotics GmbH\\\",\\\"round\\\":"
        "\\\"Series A\\\",\\\"amount_eur\\\":12000000,\\\"sector\\\":\\\"industrial automation"
        "\\\",\\\"founded\\\":2019,\\\"employees\\\":48,\\\"revenue_eur\\\":3100000,\\\"growth"
        "_pct\\\":140,\\\"notes\\\":\\\"%s\\\"}\"}]},{\"role\":\"assistant\",\"content\":[{"
        "\"text\":\"Understood. Summarise strengths, risks and a recommendation.\"}]},{\"role"
        "\":\"user\",\"content\":[{\"text\":\"Give the answer as three short paragraphs.\"}]}],"
        "\"system\":[{\"text\":\"You are a careful venture analyst. Be specific, cite the "
        "numbers given, never invent facts, and say when information is missing.\"}],"
        "\"inferenceConfig\":{\"maxTokens\":512,\"temperature\":0.2,\"topP\":0.9}}";
    static const char notes[] =
        "Strong pilot customers in automotive; gross margin 38 percent; two competitors with "
        "larger funding; founders previously at a robotics unicorn; ARR concentrated in three "
        "accounts; expansion to the US planned for next year; hardware supply chain in Asia; "
        "patents pending on the gripper design; board of four with one independent member; "
        "burn rate 450k per month with 14 months of runway before this round closes; "
        "customer interviews mention integration effort and service response times as the "
        "main concerns, and the sales cycle has been between six and nine months so far.";
    size_t cap = sizeof(fmt) + sizeof(notes);
    char *b = malloc(cap);
    int n = b ? snprintf(b, cap, fmt, notes) : -1;
    *len = n > 0 ? (size_t)n : 0;
    return b;
}

static double cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- signing alone ---------------------------------------------------------------------- */

static aiq_sigv4_req_t sign_req(const char *host, const char *path, const char *body, size_t len)
{
    return (aiq_sigv4_req_t){.method = "POST",
                             .host = host,
                             .path = path,
                             .content_type = "application/json",
                             .body = body,
                             .body_len = len,
                             .region = "us-east-1",
                             .service = "bedrock",
                             .now = time(NULL)};
}

static double sign_run(const aiq_sigv4_req_t *req, const aiq_sigv4_creds_t *creds, long n)
{
    aiq_sigv4_out_t out;
    double t0 = cpu_us();
    for (long i = 0; i < n; i++)
        if (aiq_sigv4_sign(req, creds, &out, NULL)) {
            fprintf(stderr, "sign failed\n");
            exit(1);
        }
    return (cpu_us() - t0) / (double)n;
}

/* The irreducible part: hashing the body once, with a digest fetched up front as the signer
 * does. */
static double sha_run(const char *body, size_t len, long n)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    EVP_MD *sha = EVP_MD_fetch(NULL, "SHA256", NULL);
#else
    EVP_MD *sha = (EVP_MD *)EVP_sha256();
#endif
    double t0 = cpu_us();
    for (long i = 0; i < n; i++)
        EVP_Digest(body, len, md, &mdlen, sha, NULL);
    double us = (cpu_us() - t0) / (double)n;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    EVP_MD_free(sha);
#endif
    return us;
}

static void bench_signing(const opts_t *o, const char *body, size_t len)
{
    aiq_sigv4_cache_t *cache = aiq_sigv4_cache_new();
    aiq_sigv4_creds_t plain = {"ASIAEXAMPLEEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                               "FwoGZXIvYXdzEXAMPLEsessiontokenEXAMPLEEXAMPLEEXAMPLE", NULL};
    aiq_sigv4_creds_t cached = plain;
    cached.cache = cache;
    aiq_sigv4_req_t req =
        sign_req("bedrock-runtime.us-east-1.amazonaws.com",
                 "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse", body, len);
    double u[RUNS_MAX], c[RUNS_MAX], s[RUNS_MAX];
    for (int r = 0; r < o->runs; r++) {
        u[r] = sign_run(&req, &plain, o->signs);
        c[r] = sign_run(&req, &cached, o->signs);
        s[r] = sha_run(body, len, o->signs);
    }
    printf("sign  body=%zu B, %ld signs x %ld runs (median CPU per signature)\n", len, o->signs,
           o->runs);
    printf("  uncached (5 HMAC + 2 SHA-256)   %8.2f us\n", median(u, (int)o->runs));
    printf("  cached   (1 HMAC + 2 SHA-256)   %8.2f us\n", median(c, (int)o->runs));
    printf("  of which SHA-256 of the body    %8.2f us\n", median(s, (int)o->runs));
    aiq_sigv4_cache_free(cache);
}

/* ---- keep-alive POSTs through the curl-multi client ------------------------------------- */

/* MODE_PLAIN sends headers signed once before the run: the same bytes on the wire and the same
 * 200 answer as the signed modes (an unsigned request would get a 403 from another code path
 * of the simulator), but no signing work per request. */
typedef enum mode { MODE_PLAIN, MODE_SIGNED, MODE_CACHED, MODE_COUNT } bench_mode_t;
static const char *const mode_names[] = {"unsigned", "signed-uncached", "signed-cached"};

typedef struct run {
    uv_loop_t *loop;
    aiq_http_t *http;
    bench_mode_t mode;
    const char *url, *host, *path, *body;
    size_t len;
    aiq_sigv4_creds_t creds;
    aiq_sigv4_out_t presigned; /* for MODE_PLAIN */
    long n, started, done, ok, other;
    int failed;
} run_t;

static struct curl_slist *append(struct curl_slist *h, const char *line)
{
    struct curl_slist *n = h ? curl_slist_append(h, line) : NULL;
    if (!n)
        curl_slist_free_all(h);
    return n;
}

static struct curl_slist *headers_for(run_t *r)
{
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = append(h, "Accept: application/json");
    h = append(h, "Expect:");
    aiq_sigv4_req_t req = sign_req(r->host, r->path, r->body, r->len);
    aiq_sigv4_out_t out = r->presigned;
    char line[4200];
    if (r->mode != MODE_PLAIN && aiq_sigv4_sign(&req, &r->creds, &out, NULL)) {
        curl_slist_free_all(h);
        return NULL;
    }
    snprintf(line, sizeof(line), "X-Amz-Date: %s", out.amz_date);
    h = append(h, line);
    snprintf(line, sizeof(line), "Authorization: %s", out.authorization);
    h = append(h, line);
    if (r->creds.session_token) {
        snprintf(line, sizeof(line), "X-Amz-Security-Token: %s", r->creds.session_token);
        h = append(h, line);
    }
    return h;
}

static void on_reply(void *opaque, const aiq_http_response_t *resp);

static void start_one(run_t *r)
{
    struct curl_slist *h = headers_for(r);
    aiq_err_t err = {0};
    r->started++;
    if (!h || aiq_http_post(r->http, r->url, h, r->body, r->len, 10000, on_reply, r, NULL, &err)) {
        fprintf(stderr, "cannot start a request: %s\n", err.msg);
        r->failed = 1;
        uv_stop(r->loop);
    }
}

static void on_reply(void *opaque, const aiq_http_response_t *resp)
{
    run_t *r = opaque;
    r->done++;
    if (resp->status == 200)
        r->ok++;
    else
        r->other++;
    if (resp->curl_code != CURLE_OK) {
        fprintf(stderr, "transport error: %s\n", resp->curl_error);
        r->failed = 1;
        uv_stop(r->loop);
        return;
    }
    if (r->started < r->n)
        start_one(r);
    else if (r->done == r->n)
        uv_stop(r->loop);
}

/* n requests with window in flight; returns client CPU microseconds per request. */
static double http_run(run_t *r, long n, long window)
{
    r->n = n;
    r->started = r->done = r->ok = r->other = 0;
    aiq_sigv4_req_t req = sign_req(r->host, r->path, r->body, r->len);
    if (aiq_sigv4_sign(&req, &r->creds, &r->presigned, NULL))
        exit(1);
    double t0 = cpu_us();
    for (long i = 0; i < window && i < n; i++)
        start_one(r);
    uv_run(r->loop, UV_RUN_DEFAULT);
    if (r->failed)
        exit(1);
    return (cpu_us() - t0) / (double)n;
}

static void bench_http(const opts_t *o, const char *body, size_t len)
{
    uv_loop_t loop;
    aiq_http_t *http = NULL;
    aiq_err_t err = {0};
    char url[1024], host[256];
    const char *hp = strstr(o->sim, "://");
    snprintf(host, sizeof(host), "%.*s", (int)strcspn(hp ? hp + 3 : o->sim, "/"),
             hp ? hp + 3 : o->sim);
    snprintf(url, sizeof(url), "%s/model/anthropic.claude-3-haiku-20240307-v1%%3A0/converse",
             o->sim);
    uv_loop_init(&loop);
    if (aiq_http_new(&http, &loop, NULL, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    aiq_sigv4_cache_t *cache = aiq_sigv4_cache_new();
    run_t r = {
        .loop = &loop,
        .http = http,
        .url = url,
        .host = host,
        .path = strstr(url + strlen(o->sim), "/model/"),
        .body = body,
        .len = len,
        .creds = {"AKIDSIMULATOR", "simulator-secret", "FwoGZXIvYXdzEXAMPLEsessiontoken", NULL}};
    double v[MODE_COUNT][RUNS_MAX];
    long ok[MODE_COUNT] = {0}, other[MODE_COUNT] = {0};
    for (int m = 0; m < MODE_COUNT; m++) { /* warm-up: connections opened, caches filled */
        r.mode = (bench_mode_t)m;
        r.creds.cache = m == MODE_CACHED ? cache : NULL;
        http_run(&r, 500, o->window);
    }
    for (int run = 0; run < o->runs; run++)
        for (int m = 0; m < MODE_COUNT; m++) { /* interleaved, so drift hits every mode alike */
            r.mode = (bench_mode_t)m;
            r.creds.cache = m == MODE_CACHED ? cache : NULL;
            v[m][run] = http_run(&r, o->requests, o->window);
            ok[m] += r.ok;
            other[m] += r.other;
        }
    printf("http  POST %zu B keep-alive to %s, window %ld, %ld requests x %ld runs (median "
           "client CPU per request, getrusage)\n",
           len, o->sim, o->window, o->requests, o->runs);
    for (int m = 0; m < MODE_COUNT; m++)
        printf("  %-16s %8.2f us   (HTTP 200: %ld, other: %ld)\n", mode_names[m],
               median(v[m], (int)o->runs), ok[m], other[m]);
    printf("  (unsigned = the same signed headers, computed once before the run)\n");
    aiq_sigv4_cache_free(cache);
    aiq_http_close(http);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
}

static long arg_long(const char *s, long lo, long hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < lo || v > hi) {
        fprintf(stderr, "sigv4_cost: '%s' is not in %ld..%ld\n", s, lo, hi);
        exit(2);
    }
    return v;
}

static int usage(void)
{
    fprintf(stderr, "usage: sigv4_cost [--sim URL] [--requests N] [--signs N] [--runs N] "
                    "[--window N]\n");
    return 2;
}

static int parse_args(opts_t *o, int argc, char **argv)
{
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return usage();
        if (!strcmp(a, "--sim"))
            o->sim = v;
        else if (!strcmp(a, "--requests"))
            o->requests = arg_long(v, 1, 10000000);
        else if (!strcmp(a, "--signs"))
            o->signs = arg_long(v, 1, 100000000);
        else if (!strcmp(a, "--runs"))
            o->runs = arg_long(v, 1, RUNS_MAX);
        else if (!strcmp(a, "--window"))
            o->window = arg_long(v, 1, 1024);
        else
            return usage();
    }
    return 0;
}

int main(int argc, char **argv)
{
    opts_t o = {.sim = NULL, .requests = 20000, .signs = 100000, .runs = 5, .window = 1};
    if (parse_args(&o, argc, argv))
        return 2;
    size_t len;
    char *body = converse_body(&len);
    if (!body)
        return 1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    bench_signing(&o, body, len);
    if (o.sim)
        bench_http(&o, body, len);
    curl_global_cleanup();
    free(body);
    return 0;
}
