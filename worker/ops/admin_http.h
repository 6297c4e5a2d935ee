/* admin_http.h — the worker's ops endpoints: GET /metrics (Prometheus text), /healthz (the
 * loop is turning), /readyz (the reason the loop publishes). Served by libmicrohttpd's own
 * thread from a snapshot the loop publishes, so scrapes never touch loop state. */
#ifndef AIQ_ADMIN_HTTP_H
#define AIQ_ADMIN_HTTP_H

#include "aiq_err.h"
#include "log.h"

#include <stdint.h>

typedef struct aiq_admin_http aiq_admin_http_t;

/* Listens on listen ("host:port"; port 0 picks a free one). Fails with AIQ_EINVAL for a bad
 * address, AIQ_EIO when it cannot bind. Any thread. */
int aiq_admin_http_start(aiq_admin_http_t **out, const char *listen, aiq_log_t *log,
                         aiq_err_t *err);

/* The port actually bound. */
uint16_t aiq_admin_http_port(const aiq_admin_http_t *a);

/* Loop thread: marks the loop alive now, and replaces the published state. Takes metrics
 * (malloc'd text, may be NULL to keep the previous one); copies reason. */
void aiq_admin_http_publish(aiq_admin_http_t *a, char *metrics, int ready, const char *reason);

/* Stops the server thread and frees everything. NULL is a no-op. */
void aiq_admin_http_stop(aiq_admin_http_t *a);

#endif
