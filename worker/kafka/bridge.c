/* bridge.c — librdkafka queue → pipe → uv_poll, bounded per loop turn. */
#include "bridge.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct aiq_bridge {
    aiq_bridge_conf_t conf;
    uv_poll_t poll;
    uv_idle_t more; /* runs another pass on the next turn when one turn's budget ran out */
    uv_timer_t tick;
    int fds[2];
    int closing_handles;
    uint64_t full_turns;
};

/* Serves at most budget items; returns 1 when more may be waiting. */
static int serve(aiq_bridge_t *b)
{
    for (int i = 0; i < b->conf.budget; i++)
        if (!b->conf.serve(b->conf.opaque))
            return 0;
    b->full_turns++;
    return 1;
}

static void on_more(uv_idle_t *h)
{
    aiq_bridge_t *b = h->data;
    if (!serve(b))
        uv_idle_stop(&b->more);
}

static void serve_turn(aiq_bridge_t *b)
{
    if (serve(b))
        uv_idle_start(&b->more, on_more);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    aiq_bridge_t *b = h->data;
    char buf[256];
    /* Wake-up bytes only: at most a pipe's worth, never the queue itself. */
    while (read(b->fds[0], buf, sizeof(buf)) > 0)
        ;
    serve_turn(b);
}

static void on_tick(uv_timer_t *t)
{
    serve_turn(t->data);
}

static int event_pipe(int fds[2], aiq_err_t *err)
{
    if (pipe(fds))
        return aiq_err_set(err, AIQ_EIO, "pipe: %s", strerror(errno));
    for (int i = 0; i < 2; i++) {
        int fl = fcntl(fds[i], F_GETFL);
        if (fl < 0 || fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) ||
            fcntl(fds[i], F_SETFD, FD_CLOEXEC)) {
            int e = errno;
            close(fds[0]);
            close(fds[1]);
            return aiq_err_set(err, AIQ_EIO, "pipe flags: %s", strerror(e));
        }
    }
    return 0;
}

int aiq_bridge_new(aiq_bridge_t **out, uv_loop_t *loop, const aiq_bridge_conf_t *conf,
                   aiq_err_t *err)
{
    if (!conf->queue || !conf->serve || conf->budget <= 0)
        return aiq_err_set(err, AIQ_EINVAL, "bridge: queue, serve and a budget > 0 required");
    aiq_bridge_t *b = calloc(1, sizeof(*b));
    if (!b)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    b->conf = *conf;
    int rc = event_pipe(b->fds, err);
    if (rc) {
        free(b);
        return rc;
    }
    uv_poll_init(loop, &b->poll, b->fds[0]);
    uv_idle_init(loop, &b->more);
    uv_timer_init(loop, &b->tick);
    b->poll.data = b->more.data = b->tick.data = b;
    rd_kafka_queue_io_event_enable(conf->queue, b->fds[1], "1", 1);
    uv_poll_start(&b->poll, UV_READABLE, on_readable);
    if (conf->tick_ms)
        uv_timer_start(&b->tick, on_tick, conf->tick_ms, conf->tick_ms);
    /* What was queued before the io event was enabled never signals the pipe. */
    aiq_bridge_kick(b);
    *out = b;
    return 0;
}

void aiq_bridge_kick(aiq_bridge_t *b)
{
    uv_idle_start(&b->more, on_more);
}

uint64_t aiq_bridge_full_turns(const aiq_bridge_t *b)
{
    return b->full_turns;
}

static void on_closed(uv_handle_t *h)
{
    aiq_bridge_t *b = h->data;
    if (--b->closing_handles > 0)
        return;
    /* Only now: libuv must not watch an fd that was closed under it. */
    close(b->fds[0]);
    close(b->fds[1]);
    free(b);
}

void aiq_bridge_free(aiq_bridge_t *b)
{
    if (!b)
        return;
    rd_kafka_queue_io_event_enable(b->conf.queue, -1, NULL, 0);
    b->closing_handles = 3;
    uv_close((uv_handle_t *)&b->poll, on_closed);
    uv_close((uv_handle_t *)&b->more, on_closed);
    uv_close((uv_handle_t *)&b->tick, on_closed);
}
