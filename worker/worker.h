/* worker.h — the aiq-worker daemon: consumer, backlog, in-flight slots, pipeline, HTTP and
 * producer wired onto one libuv loop, with SIGTERM drain. Loop thread only. */
#ifndef AIQ_WORKER_H
#define AIQ_WORKER_H

#include "aiq_err.h"
#include "config.h"
#include "log.h"

#include <uv.h>

typedef struct aiq_worker aiq_worker_t;

/* Borrows loop, cfg and log for the worker's lifetime. AWS credentials are read from the
 * environment here; missing ones fail with AIQ_EINVAL and a message saying what to set. */
int aiq_worker_new(aiq_worker_t **out, uv_loop_t *loop, const aiq_config_t *cfg, aiq_log_t *log,
                   aiq_err_t *err);

/* Subscribes and installs the signal handlers; then run the loop. */
int aiq_worker_start(aiq_worker_t *w, aiq_err_t *err);

/* After the loop returned: flushes the producer, commits, leaves the group, frees.
 * Returns the process exit code (0 after a clean drain). */
int aiq_worker_shutdown(aiq_worker_t *w);

#endif
