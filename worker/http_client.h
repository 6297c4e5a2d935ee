/* http_client.h — HTTP requests through the libcurl multi interface driven by the libuv
 * loop: thousands in flight on one thread, never blocking. Loop thread only. */
#ifndef AIQ_HTTP_CLIENT_H
#define AIQ_HTTP_CLIENT_H

#include "aiq_err.h"
#include "log.h"

#include <curl/curl.h>
#include <uv.h>

#define AIQ_HTTP_BODY_MAX (8u << 20) /* responses above this fail the request */

typedef struct aiq_http aiq_http_t;
typedef struct aiq_http_req aiq_http_req_t;

typedef struct aiq_http_response {
    long status;      /* HTTP status, 0 when no response arrived */
    const char *body; /* NUL-terminated; valid only during the callback */
    size_t body_len;
    const char *error_type;  /* x-amzn-ErrorType as sent, "" when absent */
    const char *retry_after; /* Retry-After or x-amz-retry-after, "" when absent */
    CURLcode curl_code;      /* CURLE_OK when the exchange completed */
    const char *curl_error;  /* human-readable transport error, "" when none */
    int64_t elapsed_ms;
} aiq_http_response_t;

/* Called once per request on the loop thread, unless the request was cancelled. */
typedef void (*aiq_http_done_cb)(void *opaque, const aiq_http_response_t *resp);

int aiq_http_new(aiq_http_t **out, uv_loop_t *loop, aiq_log_t *log, aiq_err_t *err);

/* Cancels every request (no callbacks) and closes the uv handles; the memory is released
 * once the loop has run the close callbacks. NULL is a no-op. */
void aiq_http_close(aiq_http_t *http);

/* Starts a POST. Takes headers (freed on success and on failure); copies body.
 * *req_out (may be NULL) identifies the request for aiq_http_cancel until cb runs. */
int aiq_http_post(aiq_http_t *http, const char *url, struct curl_slist *headers, const void *body,
                  size_t body_len, long timeout_ms, aiq_http_done_cb cb, void *opaque,
                  aiq_http_req_t **req_out, aiq_err_t *err);

/* Stops a request; its callback will not run. */
void aiq_http_cancel(aiq_http_t *http, aiq_http_req_t *req);

/* Requests in flight. */
size_t aiq_http_inflight(const aiq_http_t *http);

#endif
