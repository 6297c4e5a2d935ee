/* pipeline.h — one job's life in the worker, as an explicit state machine:
 * queued → started → (coalesced →) calling → publishing → done, or dropped. Every move goes
 * through one function that checks it against a table, counts it and traces it. Loop
 * thread only. */
#ifndef AIQ_PIPELINE_H
#define AIQ_PIPELINE_H

#include "aiq_err.h"
#include "config.h"
#include "consumer.h"
#include "log.h"
#include "cache.h"
#include "metrics.h"
#include "ops.h"
#include "provider.h"
#include "publish.h"
#include "scheduler.h"

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <uv.h>

typedef struct aiq_pipeline aiq_pipeline_t;
typedef struct aiq_task aiq_task_t;

/* Where a task is in its life. */
typedef enum aiq_task_state {
    AIQ_TASK_QUEUED = 0, /* decoded, in the backlog, waiting for admission */
    AIQ_TASK_STARTED,    /* admitted: being checked and looked up in the cache */
    AIQ_TASK_COALESCED,  /* waiting for an identical job's model call */
    AIQ_TASK_CALLING,    /* its model call is waiting for a slot or in flight */
    AIQ_TASK_PUBLISHING, /* a result, DLQ or re-enqueue record is not yet acknowledged */
    AIQ_TASK_DONE,       /* every record acknowledged; on_done ran */
    AIQ_TASK_DROPPED,    /* freed unfinished (revoked backlog, shutdown): redelivered later */
    AIQ_TASK_NSTATES
} aiq_task_state_t;

const char *aiq_task_state_name(aiq_task_state_t s); /* "queued", ...; "?" out of range */

/* Whether the pipeline may move a task from one state to the other (same-state: only
 * publishing, a record sent again or replaced). */
bool aiq_task_move_legal(aiq_task_state_t from, aiq_task_state_t to);

/* What only the pipeline knows. Jobs answered by status, dead letters, fallbacks, re-enqueues
 * and coalesced calls are counted once, in the metrics registry (metrics.h), which the
 * progress line, /metrics and the snapshot read. */
typedef struct aiq_pipeline_stats {
    uint64_t started, model_calls, publish_retries;
    uint64_t cache_hits;                /* answered from a fresh cache entry */
    uint64_t dlq_write_failures;        /* dead-letter writes that failed (each is retried) */
    int64_t dlq_waiting;                /* records waiting on the DLQ (they hold no job slot) */
    uint64_t entered[AIQ_TASK_NSTATES]; /* tasks that entered each state */
    uint64_t moves[AIQ_TASK_NSTATES][AIQ_TASK_NSTATES]; /* [from][to], same-state included */
    uint64_t illegal_moves; /* moves the table forbids: a bug, logged at error */
} aiq_pipeline_stats_t;

/* Called when a task is finished: every record it produced was acknowledged. The task is
 * freed by the pipeline after the callback returns. */
typedef void (*aiq_task_done_cb)(void *opaque, aiq_task_t *task);

/* Called exactly once per started task, before its on_done or when it begins waiting on the
 * DLQ (a dead letter may take long to write and must not hold a job slot meanwhile). */
typedef void (*aiq_task_slot_cb)(void *opaque, aiq_task_t *task);

/* Called when the DLQ stops (writable = 0, why says the latest failure) or starts again
 * (writable = 1) taking dead letters. */
typedef void (*aiq_dlq_state_cb)(void *opaque, int writable, const char *why);

typedef struct aiq_pipeline_deps {
    uv_loop_t *loop;
    const aiq_config_t *cfg;
    aiq_log_t *log;
    aiq_publisher_t *pub;
    aiq_metrics_t *metrics;
    aiq_provider_t *provider;
    const aiq_ops_t *ops; /* NULL: no operations (no canned fallbacks, no prices) */
    aiq_cache_t *cache;   /* NULL: cache off (single-flight still coalesces) */
    aiq_task_done_cb on_done;
    aiq_task_slot_cb on_slot_free; /* NULL: not told */
    aiq_dlq_state_cb on_dlq_state; /* NULL: not told */
    void *opaque;
} aiq_pipeline_deps_t;

/* Reads the DLQ topic's max.message.bytes through deps->pub (blocking a few seconds at most:
 * call it before the loop runs); when it cannot, dead letters are cut to what
 * dlq.max_record_bytes and the producer allow, and a warning says why. */
int aiq_pipeline_new(aiq_pipeline_t **out, const aiq_pipeline_deps_t *deps, aiq_err_t *err);

/* NULL while dead letters are written; else why they are not (for /readyz). */
const char *aiq_pipeline_dlq_error(const aiq_pipeline_t *pl);

/* Value bytes a dead letter carries at most. */
size_t aiq_pipeline_dlq_cap(const aiq_pipeline_t *pl);

/* Frees every live task (in-flight ones are abandoned: their records are redelivered after
 * a restart) and the pipeline. NULL is a no-op. */
void aiq_pipeline_free(aiq_pipeline_t *pl);

/* Wraps a consumed record (taken) into a task waiting in the backlog, decoding it once and
 * resolving its operation, model and deadline. NULL when out of memory (the record is then
 * destroyed). */
aiq_task_t *aiq_task_new(aiq_pipeline_t *pl, rd_kafka_message_t *msg,
                         const aiq_consumer_ref_t *ref);

/* Frees a task unfinished (backlog dropped on revoke or drain): it ends "dropped", its
 * model call is cancelled, and the identical jobs waiting for that call get a new leader.
 * A task that is publishing is refused (counted as an illegal move): its delivery report
 * is still to come. */
void aiq_task_drop(aiq_task_t *task);

aiq_sched_node_t *aiq_task_node(aiq_task_t *task);
aiq_task_t *aiq_task_of_node(aiq_sched_node_t *node);
const aiq_consumer_ref_t *aiq_task_ref(const aiq_task_t *task);
aiq_task_state_t aiq_task_state(const aiq_task_t *task);

/* Whether a queued task's deadline (wall clock) is at or before now_ms. The record was
 * decoded once, by aiq_task_new; one that did not decode is never expired here
 * (aiq_pipeline_start refuses it). */
bool aiq_task_expired(const aiq_task_t *task, int64_t now_ms);

/* The model a queued task's call would go to (NULL for a record that did not decode): what
 * admission keys its per-model call slots on. Borrowed, valid while the task lives. */
const char *aiq_task_model(const aiq_task_t *task);

/* Runs a task from the backlog; on_done fires when it is finished. A task that is not
 * queued (started twice) is refused: counted as an illegal move, nothing else happens. */
void aiq_pipeline_start(aiq_pipeline_t *pl, aiq_task_t *task);

const aiq_pipeline_stats_t *aiq_pipeline_stats(const aiq_pipeline_t *pl);

/* How a finished task ended, for the alert rules (valid in the on_done callback). */
typedef struct aiq_task_summary {
    bool answered;    /* a result for a job (not a re-enqueue, not a refused record) */
    bool error;       /* failed, expired or degraded */
    bool lookup, hit; /* looked the cache up; was answered from it */
    int64_t total_ms; /* receipt to now */
} aiq_task_summary_t;
aiq_task_summary_t aiq_task_summary(const aiq_task_t *task);

#endif
