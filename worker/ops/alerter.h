/* alerter.h — the worker's side of the alert rules (common/alerts.h): fed with every
 * answered job, it evaluates the rules each second on the loop and logs and publishes each
 * raise, escalation, step-down and resolve to <prefix>alerts. Loop thread only. */
#ifndef AIQ_ALERTER_H
#define AIQ_ALERTER_H

#include "aiq_err.h"
#include "config.h"
#include "log.h"
#include "publish.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct aiq_alerter aiq_alerter_t;

/* Jobs waiting in the worker now (backlog and jobs waiting for a model-call slot). */
typedef int64_t (*aiq_alerter_depth_fn)(void *ctx);

/* Builds the rules from cfg's alerts.* keys and starts the one-second evaluation timer on
 * loop. cfg, log and pub are borrowed and must outlive the alerter; depth(ctx) is called
 * on each tick. Returns 0, AIQ_EINVAL (bad thresholds, prefix too long) or AIQ_ENOMEM. */
int aiq_alerter_new(aiq_alerter_t **out, uv_loop_t *loop, const aiq_config_t *cfg, aiq_log_t *log,
                    aiq_publisher_t *pub, aiq_alerter_depth_fn depth, void *ctx, aiq_err_t *err);

/* Stops and closes the timer; the memory goes when the loop runs the close callback.
 * NULL is a no-op. */
void aiq_alerter_free(aiq_alerter_t *a);

/* One answered job: error = failed, expired or degraded; total_ms = receipt to result;
 * lookup = it looked the cache up, hit = the cache answered it. */
void aiq_alerter_job(aiq_alerter_t *a, bool error, int64_t total_ms, bool lookup, bool hit);

/* The dead-letter topic stopped (failing = true, why says how) or started again taking
 * dead letters: raises, or resolves, the critical alert "dlq_unwritable" (logged and
 * published like the rules' events; value = records waiting on the DLQ). Repeating the
 * current state does nothing. NULL a is a no-op. */
void aiq_alerter_dlq(aiq_alerter_t *a, bool failing, int64_t waiting, const char *why);

/* Rules raised now (warning or critical), and events queued for publishing since start. */
int aiq_alerter_active(const aiq_alerter_t *a);
uint64_t aiq_alerter_events(const aiq_alerter_t *a);

#endif
