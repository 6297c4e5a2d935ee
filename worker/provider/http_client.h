/* http_client.h — HTTP requests through the libcurl multi interface driven by the libuv
 * loop: thousands in flight on one thread, never blocking. Loop thread only. */
#ifndef AIQ_HTTP_CLIENT_H
#define AIQ_HTTP_CLIENT_H

#include "aiq_err.h"
#include "log.h"

#include <curl/curl.h>
#include <uv.h>

#define AIQ_HTTP_BODY_MAX       (8u << 20) /* responses above this fail the request */
#define AIQ_HTTP_REQUEST_ID_MAX 80         /* x-amzn-RequestId kept, with its NUL */

typedef struct aiq_http aiq_http_t;
typedef struct aiq_http_req aiq_http_req_t;

typedef struct aiq_http_response {
    long status;      /* HTTP status, 0 when no response arrived */
    const char *body; /* NUL-terminated; valid only during the callback */
    size_t body_len;
    const char *error_type; /* x-amzn-ErrorType as sent, "" when absent */
    /* Retry-After as sent (delta-seconds or an HTTP-date), "" when absent */
    const char *retry_after;
    /* x-amz-retry-after as sent (milliseconds, AWS SDK convention), "" when absent */
    const char *amz_retry_after;
    /* x-amzn-RequestId as sent (what AWS support asks for), "" when absent */
    const char *request_id;
    /* Bedrock's X-Amzn-Bedrock-*-Token-Count headers of InvokeModel, "" when absent */
    const char *input_tokens, *output_tokens, *cache_read_tokens, *cache_write_tokens;
    CURLcode curl_code;     /* CURLE_OK when the exchange completed */
    const char *curl_error; /* human-readable transport error, "" when none */
    int64_t elapsed_ms;
} aiq_http_response_t;

/* Called once per request on the loop thread, unless the request was cancelled. */
typedef void (*aiq_http_done_cb)(void *opaque, const aiq_http_response_t *resp);

int aiq_http_new(aiq_http_t **out, uv_loop_t *loop, aiq_log_t *log, aiq_err_t *err);

/* Cancels every request (no callbacks) and closes the uv handles; the memory is released
 * once the loop has run the close callbacks. NULL is a no-op. */
void aiq_http_close(aiq_http_t *http);

/* Starts a request. method is "GET", "POST" or any other token (sent as is, with the body
 * when body_len > 0; a GET sends no body). Takes headers (freed on success and on failure);
 * copies url, method and body. *req_out (may be NULL) identifies the request for
 * aiq_http_cancel until cb runs. Returns 0, or AIQ_ENOMEM / AIQ_EHTTP (cb will not run). */
int aiq_http_request(aiq_http_t *http, const char *method, const char *url,
                     struct curl_slist *headers, const void *body, size_t body_len, long timeout_ms,
                     aiq_http_done_cb cb, void *opaque, aiq_http_req_t **req_out, aiq_err_t *err);

/* aiq_http_request with "POST". */
int aiq_http_post(aiq_http_t *http, const char *url, struct curl_slist *headers, const void *body,
                  size_t body_len, long timeout_ms, aiq_http_done_cb cb, void *opaque,
                  aiq_http_req_t **req_out, aiq_err_t *err);

/* The same exchange as aiq_http_request, performed on the calling thread: blocks for up to
 * timeout_ms, then calls cb before returning. For start-up work before the loop runs (and
 * tools); never call it from a loop callback. Takes headers. Returns 0 when cb ran (whatever
 * the HTTP outcome), AIQ_ENOMEM when it could not start (cb not called). */
int aiq_http_perform(const char *method, const char *url, struct curl_slist *headers,
                     const void *body, size_t body_len, long timeout_ms, aiq_http_done_cb cb,
                     void *opaque, aiq_err_t *err);

/* Body bytes of a 2xx response as they arrive, with the request's opaque; returns 0 to go on,
 * non-zero to abort the transfer (it then ends with CURLE_WRITE_ERROR). Loop thread. */
typedef int (*aiq_http_data_cb)(void *opaque, const char *data, size_t len);

/* Hands the body of a 2xx response to cb as it arrives instead of keeping it (the done
 * callback then sees body ""); other statuses are kept as usual. Call it right after the
 * request started, before the loop runs again. */
void aiq_http_stream_body(aiq_http_req_t *req, aiq_http_data_cb cb);

/* Stops a request; its callback will not run. */
void aiq_http_cancel(aiq_http_t *http, aiq_http_req_t *req);

/* Requests in flight. */
size_t aiq_http_inflight(const aiq_http_t *http);

#endif
