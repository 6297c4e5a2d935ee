/* breakers.h — the worker's circuit breakers, one per model, shared with every process on
 * the host through LMDB and with every host through the compacted <prefix>breaker topic.
 * Loop thread only.
 *
 * A transition made here is written to LMDB at once (other processes read it on their
 * next admission check) and published to Kafka (other hosts apply it when it arrives,
 * normally well within a second). Versions order transitions, so the newest wins
 * everywhere and echoes are ignored. */
#ifndef AIQ_BREAKER_SHARE_H
#define AIQ_BREAKER_SHARE_H

#include "aiq_err.h"
#include "breaker_state.h"
#include "config.h"
#include "log.h"
#include "publish.h"

#include <stdbool.h>
#include <uv.h>

typedef struct aiq_breakers aiq_breaker_share_t;

typedef struct aiq_breaker_share_stats {
    uint64_t opened, closed, reopened, applied_remote, rejected_calls, publish_failures;
} aiq_breaker_share_stats_t;

/* Opens the LMDB store at state_dir (created 0700), and, when the breaker topic exists,
 * a group-less consumer that reads it from the beginning. A missing topic is logged and
 * leaves cross-host sharing off; a store that cannot be opened is an error. pub is
 * borrowed. */
int aiq_breaker_share_new(aiq_breaker_share_t **out, uv_loop_t *loop, const aiq_config_t *cfg,
                          const char *state_dir, aiq_log_t *log, aiq_publisher_t *pub,
                          aiq_err_t *err);

/* Stops the consumer and closes the store; memory goes once the loop closed the watcher. */
void aiq_breaker_share_free(aiq_breaker_share_t *bs);

/* Admission for a call to model at now. *probe tells whether it is a half-open probe;
 * pass it back to aiq_breaker_share_report or aiq_breaker_share_abandon. */
bool aiq_breaker_share_allow(aiq_breaker_share_t *bs, const char *model, int64_t now_ms,
                             bool *probe);
void aiq_breaker_share_report(aiq_breaker_share_t *bs, const char *model, bool success, bool probe,
                              int64_t now_ms);
void aiq_breaker_share_abandon(aiq_breaker_share_t *bs, const char *model, bool probe);

/* State of model's breaker at now (CLOSED for one never seen). */
aiq_breaker_state_t aiq_breaker_share_state(aiq_breaker_share_t *bs, const char *model,
                                            int64_t now_ms);

/* Visits every known breaker (for metrics). */
typedef void (*aiq_breaker_share_visit_fn)(void *ctx, const char *model, aiq_breaker_state_t state,
                                           aiq_breaker_force_t force);
void aiq_breaker_share_each(aiq_breaker_share_t *bs, int64_t now_ms, aiq_breaker_share_visit_fn fn,
                            void *ctx);

const aiq_breaker_share_stats_t *aiq_breaker_share_stats(const aiq_breaker_share_t *bs);

#endif
