/* alerter.h — the worker's side of the alert rules (common/alerts.h): fed with every
 * finished job and the queue depth, evaluated each second on the loop, each raise and
 * resolve logged and published to <prefix>alerts. Loop thread only. */
#ifndef AIQ_ALERTER_H
#define AIQ_ALERTER_H

#include "aiq_err.h"
#include "config.h"
#include "log.h"
#include "publish.h"

#include <stdbool.h>
#include <uv.h>

typedef struct aiq_alerter aiq_alerter_t;

/* Starts the evaluation timer. depth_fn reports the jobs waiting in the worker. pub and
 * log are borrowed. */
typedef int64_t (*aiq_alerter_depth_fn)(void *ctx);
int aiq_alerter_new(aiq_alerter_t **out, uv_loop_t *loop, const aiq_config_t *cfg, aiq_log_t *log,
                    aiq_publisher_t *pub, aiq_alerter_depth_fn depth, void *ctx, aiq_err_t *err);

/* Stops the timer; memory goes once the loop closed it. NULL is a no-op. */
void aiq_alerter_free(aiq_alerter_t *a);

/* One finished job: error = failed, expired or degraded. */
void aiq_alerter_job(aiq_alerter_t *a, bool error, int64_t total_ms, bool lookup, bool hit);

/* Alerts raised now (warning or critical), and events published since start. */
int aiq_alerter_active(const aiq_alerter_t *a);
uint64_t aiq_alerter_events(const aiq_alerter_t *a);

#endif
