#include "admin_http.h"
#include "timeutil.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* /healthz fails once the loop has not published for this long. */
#define STALL_MS 5000

struct aiq_admin_http {
    struct MHD_Daemon *d;
    aiq_log_t *log;
    pthread_mutex_t lock; /* guards everything below */
    char *metrics;
    int ready;
    char reason[256];
    int64_t last_beat_ms;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             const char *body)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* MHD thread. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)con_cls;
    aiq_admin_http_t *a = cls;
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    char body[512];
    enum MHD_Result ret;
    pthread_mutex_lock(&a->lock);
    if (strcmp(url, "/metrics") == 0) {
        ret = reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4", a->metrics ? a->metrics : "");
    } else if (strcmp(url, "/healthz") == 0) {
        int64_t age = aiq_mono_ms() - a->last_beat_ms;
        snprintf(body, sizeof(body), age < STALL_MS ? "ok\n" : "event loop stalled for %lld ms\n",
                 (long long)age);
        ret = reply(conn, age < STALL_MS ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain",
                    body);
    } else if (strcmp(url, "/readyz") == 0) {
        snprintf(body, sizeof(body), "%s\n", a->ready ? "ready" : a->reason);
        ret =
            reply(conn, a->ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", body);
    } else {
        ret = reply(conn, MHD_HTTP_NOT_FOUND, "text/plain",
                    "not found; try /metrics, /healthz or /readyz\n");
    }
    pthread_mutex_unlock(&a->lock);
    return ret;
}

static int parse_listen(const char *listen, struct sockaddr_storage *ss, aiq_err_t *err)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || !colon[1])
        return aiq_err_set(err, AIQ_EINVAL, "admin.listen '%s': expected host:port", listen);
    char host[256];
    size_t n = (size_t)(colon - listen);
    if (n >= sizeof(host))
        return aiq_err_set(err, AIQ_EINVAL, "admin.listen: host too long");
    memcpy(host, listen, n);
    host[n] = '\0';
    struct addrinfo hints = {.ai_family = AF_INET,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *res = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &res) || !res)
        return aiq_err_set(err, AIQ_EINVAL, "admin.listen '%s': cannot resolve", listen);
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

int aiq_admin_http_start(aiq_admin_http_t **out, const char *listen, aiq_log_t *log, aiq_err_t *err)
{
    struct sockaddr_storage ss;
    int rc = parse_listen(listen, &ss, err);
    if (rc)
        return rc;
    aiq_admin_http_t *a = calloc(1, sizeof(*a));
    if (!a)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    pthread_mutex_init(&a->lock, NULL);
    a->log = log;
    a->last_beat_ms = aiq_mono_ms();
    snprintf(a->reason, sizeof(a->reason), "starting");
    a->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL,
                            on_request, a, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                            MHD_OPTION_END);
    if (!a->d) {
        pthread_mutex_destroy(&a->lock);
        free(a);
        return aiq_err_set(err, AIQ_EIO, "admin.listen '%s': cannot listen (port in use?)", listen);
    }
    *out = a;
    return 0;
}

uint16_t aiq_admin_http_port(const aiq_admin_http_t *a)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(a->d, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : 0;
}

void aiq_admin_http_publish(aiq_admin_http_t *a, char *metrics, int ready, const char *reason)
{
    pthread_mutex_lock(&a->lock);
    if (metrics) {
        free(a->metrics);
        a->metrics = metrics;
    }
    a->ready = ready;
    snprintf(a->reason, sizeof(a->reason), "%s", reason ? reason : "");
    a->last_beat_ms = aiq_mono_ms();
    pthread_mutex_unlock(&a->lock);
}

void aiq_admin_http_stop(aiq_admin_http_t *a)
{
    if (!a)
        return;
    MHD_stop_daemon(a->d);
    pthread_mutex_destroy(&a->lock);
    free(a->metrics);
    free(a);
}
