/* admission.h — the only place that decides what runs next: the backlog (one scheduler lane
 * per model, each with the priority-and-aging rule of scheduler.h), the one in-flight count
 * (worker.max_inflight), each model's share of it, pause and resume of
 * priorities, and the deadline sweep. Loop thread only. */
#ifndef AIQ_ADMISSION_H
#define AIQ_ADMISSION_H

#include "scheduler.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AIQ_ADM_PRIOS     4
#define AIQ_ADM_LANES     32  /* models with a lane of their own; more share lane 0 */
#define AIQ_ADM_MODEL_MAX 256 /* longer model ids share lane 0 */

typedef struct aiq_admission aiq_admission_t;

typedef struct aiq_admission_conf {
    int64_t max_inflight;       /* jobs holding a slot (started, answer not yet sent), at most */
    int64_t max_unacked;        /* jobs started and not finished (running, or answered and not
                                 * yet acknowledged by the broker) at most; 0: 4 * max_inflight.
                                 * Below max_inflight it bounds the running jobs too. */
    int64_t model_max_inflight; /* of which for one model, at most (0 or > max: max_inflight) */
    int64_t backlog;            /* queued jobs; each priority gets a share (see prio_share) */
    int64_t aging_ms;           /* scheduler.h */
} aiq_admission_conf_t;

/* What admission asks of the rest of the worker. Every hook runs on the loop thread, from
 * inside an aiq_admission_* call. */
typedef struct aiq_admission_hooks {
    /* Run this job now. It holds a slot until aiq_admission_release(node) and counts until
     * aiq_admission_finished(node). The hook may do both synchronously, from inside. */
    void (*start)(void *opaque, aiq_sched_node_t *node);
    /* Fetch from the priority's partitions, or stop (its share of the backlog is full). */
    void (*set_fetching)(void *opaque, int prio, bool on);
    /* Whether the node's deadline (wall clock) is at or before now_ms. */
    bool (*expired)(void *opaque, aiq_sched_node_t *node, int64_t now_ms);
    void *opaque;
} aiq_admission_hooks_t;

/* Copies conf and hooks. AIQ_ENOMEM or AIQ_EINVAL (err-less: the caller names the key). */
int aiq_admission_new(aiq_admission_t **out, const aiq_admission_conf_t *conf,
                      const aiq_admission_hooks_t *hooks);
void aiq_admission_free(aiq_admission_t *a); /* does not touch queued nodes; NULL is a no-op */

/* Queues a fetched job (node borrowed until it is started or removed) for model (NULL: a
 * record that names none or did not decode; it is never held back by a model's cap), then
 * starts what may start. Pauses the priority when its share is full. */
void aiq_admission_push(aiq_admission_t *a, aiq_sched_node_t *node, int prio, const char *model,
                        int64_t mono_ms);

/* Starts a fetched job at once, slots or not (its deadline passed while it waited in Kafka:
 * answering "expired" needs no model call). It counts as in flight until done. */
void aiq_admission_run_now(aiq_admission_t *a, aiq_sched_node_t *node, int prio, const char *model,
                           int64_t mono_ms);

/* A started job gave its slot back: its answer is handed to the producer, or it waits on the
 * DLQ. The model's slot is free for the next call; the job still counts until finished.
 * Starts what may. Once per started job. */
void aiq_admission_release(aiq_admission_t *a, aiq_sched_node_t *node, int64_t mono_ms);

/* A started job is finished: every record it produced was acknowledged (its offset may be
 * committed). Releases its slot too if it still held one. Starts what may. */
void aiq_admission_finished(aiq_admission_t *a, aiq_sched_node_t *node, int64_t mono_ms);

/* Starts jobs while slots are free: of the lanes with room (under the model's cap and its
 * share: max_inflight / models in use), the one whose head ranks first by the scheduler's
 * rule. Resumes priorities that fell to half their share. Nothing starts while draining. */
void aiq_admission_pump(aiq_admission_t *a, int64_t mono_ms);

/* The deadline sweep: starts every queued job whose deadline has passed, slots or not (an
 * expired answer needs no model call, and waiting for a slot held by a slow call would
 * answer it late). They count as in flight until done. Returns how many. */
size_t aiq_admission_expire(aiq_admission_t *a, int64_t now_ms, int64_t mono_ms);

/* Removes every queued node for which pred is true (revoke, drain), handing each to
 * on_removed. Returns how many. */
size_t aiq_admission_remove_if(aiq_admission_t *a, bool (*pred)(aiq_sched_node_t *, void *),
                               void (*on_removed)(aiq_sched_node_t *, void *), void *arg);

/* Stops starting jobs for good (drain); queued ones stay until removed. */
void aiq_admission_drain(aiq_admission_t *a);

int64_t aiq_admission_inflight(const aiq_admission_t *a); /* holding a slot */
int64_t aiq_admission_unacked(const aiq_admission_t *a);  /* started, not finished */
size_t aiq_admission_len(const aiq_admission_t *a);
size_t aiq_admission_len_prio(const aiq_admission_t *a, int prio);

/* The backlog share of one priority: a quarter of the backlog, but at least max_inflight
 * (a paused priority resumes at half its share, and what is queued then must keep every
 * slot busy until the first fetch after the resume arrives). */
int64_t aiq_admission_prio_share(const aiq_admission_t *a);

#endif
