#include "http_client.h"
#include "timeutil.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Easy handles kept for reuse: a fresh one costs ~36,000 instructions (calloc of curl's
 * state), a reset one a fraction of that (bench/callgrind_job.py). */
#define HTTP_SPARE_MAX 64

struct aiq_http {
    uv_loop_t *loop;
    CURLM *multi;
    CURL *spare[HTTP_SPARE_MAX];
    int nspare;
    int closing;
    uv_timer_t timer;
    aiq_log_t *log;
    size_t inflight;
    struct aiq_http_req *reqs; /* in flight, for close */
    struct sock_ctx *socks;    /* watched sockets, for close */
};

struct aiq_http_req {
    struct aiq_http_req *prev, *next;
    aiq_http_t *http;
    CURL *easy;
    struct curl_slist *headers;
    char *body_out; /* request body copy */
    char *resp;
    size_t resp_len, resp_cap;
    int too_big;
    char error_type[128];
    char retry_after[64];
    char amz_retry_after[32];
    char request_id[AIQ_HTTP_REQUEST_ID_MAX];
    char tokens[4]
               [24]; /* X-Amzn-Bedrock-{Input,Output,Cache-Read-Input,Cache-Write-Input}-Token-Count
                      */
    char curl_error[CURL_ERROR_SIZE];
    int64_t started_ms;
    aiq_http_done_cb cb;
    aiq_http_data_cb on_data; /* set: a 2xx body goes here as it arrives */
    void *opaque;
};

/* One per socket curl asks us to watch. */
typedef struct sock_ctx {
    struct sock_ctx *prev, *next;
    uv_poll_t poll;
    curl_socket_t fd;
    aiq_http_t *http;
} sock_ctx_t;

static void check_done(aiq_http_t *http);

/* Intrusive doubly-linked list helpers for reqs and socks. */
#define LIST_PUSH(head, n)                                                                         \
    do {                                                                                           \
        (n)->prev = NULL;                                                                          \
        (n)->next = (head);                                                                        \
        if (head)                                                                                  \
            (head)->prev = (n);                                                                    \
        (head) = (n);                                                                              \
    } while (0)
#define LIST_UNLINK(head, n)                                                                       \
    do {                                                                                           \
        if ((n)->prev)                                                                             \
            (n)->prev->next = (n)->next;                                                           \
        else                                                                                       \
            (head) = (n)->next;                                                                    \
        if ((n)->next)                                                                             \
            (n)->next->prev = (n)->prev;                                                           \
    } while (0)

static CURL *easy_get(aiq_http_t *http)
{
    return http && http->nspare > 0 ? http->spare[--http->nspare] : curl_easy_init();
}

static void easy_put(aiq_http_t *http, CURL *e)
{
    if (!e)
        return;
    if (http && !http->closing && http->nspare < HTTP_SPARE_MAX) {
        curl_easy_reset(e);
        http->spare[http->nspare++] = e;
    } else {
        curl_easy_cleanup(e);
    }
}

static void req_free(aiq_http_req_t *req)
{
    easy_put(req->http, req->easy);
    curl_slist_free_all(req->headers);
    free(req->body_out);
    free(req->resp);
    free(req);
}

static void on_timer(uv_timer_t *t)
{
    aiq_http_t *http = t->data;
    int running;
    curl_multi_socket_action(http->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(http);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    aiq_http_t *http = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&http->timer);
    else
        uv_timer_start(&http->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock_ctx_t *ctx = p->data;
    aiq_http_t *http = ctx->http;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(http->multi, ctx->fd, flags, &running);
    check_done(http);
}

static void on_sock_closed(uv_handle_t *h)
{
    free(h->data);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *sockp)
{
    (void)easy;
    aiq_http_t *http = userp;
    sock_ctx_t *ctx = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (ctx) {
            uv_poll_stop(&ctx->poll);
            curl_multi_assign(http->multi, fd, NULL);
            LIST_UNLINK(http->socks, ctx);
            uv_close((uv_handle_t *)&ctx->poll, on_sock_closed);
        }
        return 0;
    }
    if (!ctx) {
        ctx = calloc(1, sizeof(*ctx));
        if (!ctx || uv_poll_init_socket(http->loop, &ctx->poll, fd)) {
            free(ctx);
            return -1;
        }
        ctx->fd = fd;
        ctx->http = http;
        ctx->poll.data = ctx;
        LIST_PUSH(http->socks, ctx);
        curl_multi_assign(http->multi, fd, ctx);
    }
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    uv_poll_start(&ctx->poll, events, on_poll);
    return 0;
}

int aiq_http_new(aiq_http_t **out, uv_loop_t *loop, aiq_log_t *log, aiq_err_t *err)
{
    aiq_http_t *http = calloc(1, sizeof(*http));
    if (!http)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    http->multi = curl_multi_init();
    if (!http->multi) {
        free(http);
        return aiq_err_set(err, AIQ_EHTTP, "curl_multi_init failed");
    }
    http->loop = loop;
    http->log = log;
    uv_timer_init(loop, &http->timer);
    http->timer.data = http;
    curl_multi_setopt(http->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(http->multi, CURLMOPT_SOCKETDATA, http);
    curl_multi_setopt(http->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(http->multi, CURLMOPT_TIMERDATA, http);
    /* Keep enough idle connections around for a full in-flight window to reuse. */
    curl_multi_setopt(http->multi, CURLMOPT_MAXCONNECTS, 1024L);
    *out = http;
    return 0;
}

static void on_http_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void aiq_http_close(aiq_http_t *http)
{
    if (!http)
        return;
    http->closing = 1;
    while (http->reqs)
        aiq_http_cancel(http, http->reqs);
    while (http->nspare > 0)
        curl_easy_cleanup(http->spare[--http->nspare]);
    curl_multi_cleanup(http->multi);
    /* Whatever sockets curl did not report removed are closed here. */
    while (http->socks) {
        sock_ctx_t *ctx = http->socks;
        LIST_UNLINK(http->socks, ctx);
        uv_poll_stop(&ctx->poll);
        uv_close((uv_handle_t *)&ctx->poll, on_sock_closed);
    }
    uv_timer_stop(&http->timer);
    uv_close((uv_handle_t *)&http->timer, on_http_timer_closed);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userp)
{
    aiq_http_req_t *req = userp;
    size_t n = size * nmemb;
    long status = 0;
    if (req->on_data && curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
        status >= 200 && status < 300)
        return req->on_data(req->opaque, ptr, n) ? 0 : n;
    if (req->resp_len + n + 1 > AIQ_HTTP_BODY_MAX) {
        req->too_big = 1;
        return 0; /* makes curl fail the transfer with CURLE_WRITE_ERROR */
    }
    if (req->resp_len + n + 1 > req->resp_cap) {
        size_t ncap = req->resp_cap ? req->resp_cap : 4096;
        while (ncap < req->resp_len + n + 1)
            ncap *= 2;
        char *nb = realloc(req->resp, ncap);
        if (!nb)
            return 0;
        req->resp = nb;
        req->resp_cap = ncap;
    }
    memcpy(req->resp + req->resp_len, ptr, n);
    req->resp_len += n;
    req->resp[req->resp_len] = '\0';
    return n;
}

static void copy_header_value(char *dst, size_t cap, const char *v, size_t n)
{
    while (n > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

/* Copies the value of header line buf into dst when its name (with ':') is name. */
static bool take_header(const char *buf, size_t n, const char *name, char *dst, size_t cap)
{
    size_t len = strlen(name);
    if (n <= len || strncasecmp(buf, name, len) != 0)
        return false;
    copy_header_value(dst, cap, buf + len, n - len);
    return true;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userp)
{
    aiq_http_req_t *req = userp;
    size_t n = size * nitems;
    static const char *const token_headers[4] = {
        "x-amzn-bedrock-input-token-count:", "x-amzn-bedrock-output-token-count:",
        "x-amzn-bedrock-cache-read-input-token-count:",
        "x-amzn-bedrock-cache-write-input-token-count:"};
    if (take_header(buf, n, "x-amzn-errortype:", req->error_type, sizeof(req->error_type)) ||
        take_header(buf, n, "retry-after:", req->retry_after, sizeof(req->retry_after)) ||
        take_header(buf, n, "x-amz-retry-after:", req->amz_retry_after,
                    sizeof(req->amz_retry_after)) ||
        take_header(buf, n, "x-amzn-requestid:", req->request_id, sizeof(req->request_id)))
        return n;
    for (int i = 0; i < 4; i++)
        if (take_header(buf, n, token_headers[i], req->tokens[i], sizeof(req->tokens[i])))
            break;
    return n;
}

/* A request with its easy handle set up (a spare of http's, when it has one; http may be
 * NULL), not yet running anywhere. Takes headers. */
static aiq_http_req_t *req_new(aiq_http_t *http, const char *method, const char *url,
                               struct curl_slist *headers, const void *body, size_t body_len,
                               long timeout_ms, aiq_http_done_cb cb, void *opaque)
{
    aiq_http_req_t *req = calloc(1, sizeof(*req));
    if (req)
        req->http = http;
    if (!req || !(req->easy = easy_get(http)) || !(req->body_out = malloc(body_len + 1))) {
        if (req)
            easy_put(http, req->easy);
        free(req);
        curl_slist_free_all(headers);
        return NULL;
    }
    if (body_len)
        memcpy(req->body_out, body, body_len);
    req->headers = headers;
    req->cb = cb;
    req->opaque = opaque;
    req->started_ms = aiq_mono_ms();
    CURL *e = req->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body_out);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
    curl_easy_setopt(e, CURLOPT_PRIVATE, req);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->curl_error);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 10000 ? timeout_ms : 10000L);
    return req;
}

/* Hands the outcome of a finished transfer to the request's callback. */
static void deliver(aiq_http_req_t *req, CURLcode code)
{
    aiq_http_response_t resp = {0};
    curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &resp.status);
    resp.body = req->resp ? req->resp : "";
    resp.body_len = req->resp_len;
    resp.error_type = req->error_type;
    resp.retry_after = req->retry_after;
    resp.amz_retry_after = req->amz_retry_after;
    resp.request_id = req->request_id;
    resp.input_tokens = req->tokens[0];
    resp.output_tokens = req->tokens[1];
    resp.cache_read_tokens = req->tokens[2];
    resp.cache_write_tokens = req->tokens[3];
    resp.curl_code = code;
    if (req->too_big)
        snprintf(req->curl_error, sizeof(req->curl_error), "response larger than %u bytes",
                 AIQ_HTTP_BODY_MAX);
    resp.curl_error =
        code == CURLE_OK ? "" : (req->curl_error[0] ? req->curl_error : curl_easy_strerror(code));
    resp.elapsed_ms = aiq_mono_ms() - req->started_ms;
    req->cb(req->opaque, &resp);
}

int aiq_http_request(aiq_http_t *http, const char *method, const char *url,
                     struct curl_slist *headers, const void *body, size_t body_len, long timeout_ms,
                     aiq_http_done_cb cb, void *opaque, aiq_http_req_t **req_out, aiq_err_t *err)
{
    aiq_http_req_t *req =
        req_new(http, method, url, headers, body, body_len, timeout_ms, cb, opaque);
    if (!req)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    CURLMcode mc = curl_multi_add_handle(http->multi, req->easy);
    if (mc != CURLM_OK) {
        int rc = aiq_err_set(err, AIQ_EHTTP, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
        req_free(req);
        return rc;
    }
    http->inflight++;
    LIST_PUSH(http->reqs, req);
    if (req_out)
        *req_out = req;
    return 0;
}

void aiq_http_stream_body(aiq_http_req_t *req, aiq_http_data_cb cb)
{
    req->on_data = cb;
}

int aiq_http_post(aiq_http_t *http, const char *url, struct curl_slist *headers, const void *body,
                  size_t body_len, long timeout_ms, aiq_http_done_cb cb, void *opaque,
                  aiq_http_req_t **req_out, aiq_err_t *err)
{
    return aiq_http_request(http, "POST", url, headers, body, body_len, timeout_ms, cb, opaque,
                            req_out, err);
}

int aiq_http_perform(const char *method, const char *url, struct curl_slist *headers,
                     const void *body, size_t body_len, long timeout_ms, aiq_http_done_cb cb,
                     void *opaque, aiq_err_t *err)
{
    aiq_http_req_t *req =
        req_new(NULL, method, url, headers, body, body_len, timeout_ms, cb, opaque);
    if (!req)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    deliver(req, curl_easy_perform(req->easy));
    req_free(req);
    return 0;
}

void aiq_http_cancel(aiq_http_t *http, aiq_http_req_t *req)
{
    if (!req)
        return;
    curl_multi_remove_handle(http->multi, req->easy);
    http->inflight--;
    LIST_UNLINK(http->reqs, req);
    req_free(req);
}

size_t aiq_http_inflight(const aiq_http_t *http)
{
    return http->inflight;
}

static void finish(aiq_http_t *http, CURL *easy, CURLcode code)
{
    aiq_http_req_t *req = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&req);
    curl_multi_remove_handle(http->multi, easy);
    http->inflight--;
    LIST_UNLINK(http->reqs, req);
    deliver(req, code);
    req_free(req);
}

static void check_done(aiq_http_t *http)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(http->multi, &left))) {
        if (msg->msg == CURLMSG_DONE)
            finish(http, msg->easy_handle, msg->data.result);
    }
}
