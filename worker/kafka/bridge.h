/* bridge.h — the one way a librdkafka queue reaches the worker's libuv loop: librdkafka
 * writes to a pipe when the queue becomes non-empty, the loop polls the pipe and serves a
 * bounded number of items per turn, coming back on the next turn while more may wait.
 * Loop thread only. */
#ifndef AIQ_BRIDGE_H
#define AIQ_BRIDGE_H

#include "aiq_err.h"

#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <uv.h>

typedef struct aiq_bridge aiq_bridge_t;

/* Serves one item of the queue (a record, an event); returns 1 when it served one, 0 when
 * the queue was empty. Loop thread. */
typedef int (*aiq_bridge_serve_fn)(void *opaque);

typedef struct aiq_bridge_conf {
    rd_kafka_queue_t *queue; /* borrowed; must outlive the bridge */
    int budget;              /* items served per loop turn at most (> 0) */
    uint64_t tick_ms;        /* > 0: also serve every tick_ms (a consumer must poll to stay in
                              * its group, and the fd only signals an empty queue filling) */
    aiq_bridge_serve_fn serve;
    void *opaque;
} aiq_bridge_conf_t;

/* Creates the pipe (non-blocking, close-on-exec), points the queue's io event at it and
 * starts watching. Returns 0, AIQ_EINVAL for a bad conf, AIQ_EIO when the pipe cannot be
 * made, AIQ_ENOMEM. */
int aiq_bridge_new(aiq_bridge_t **out, uv_loop_t *loop, const aiq_bridge_conf_t *conf,
                   aiq_err_t *err);

/* Serves on the next loop turn even without a signal (work was left behind). */
void aiq_bridge_kick(aiq_bridge_t *b);

/* Stops librdkafka writing to the pipe and stops serving at once; the pipe and memory go
 * once the loop closed the watchers. Call before destroying the queue. NULL is a no-op. */
void aiq_bridge_free(aiq_bridge_t *b);

/* Serve passes that used up the whole budget (for tests and debugging). */
uint64_t aiq_bridge_full_turns(const aiq_bridge_t *b);

#endif
