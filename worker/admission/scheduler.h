/* scheduler.h — the worker's in-memory backlog: one FIFO per priority, and the rule that
 * picks the next job for a free slot (highest priority first, with aging). Loop thread only. */
#ifndef AIQ_SCHEDULER_H
#define AIQ_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Embedded in whatever is queued; the scheduler never allocates or frees nodes. */
typedef struct aiq_sched_node {
    struct aiq_sched_node *next;
    int prio;       /* 0 = critical .. 3 = low */
    int lane;       /* admission.c's lane (the job's model); the scheduler ignores it */
    int slot;       /* admission.c: holds a slot now */
    int64_t enq_ms; /* monotonic time it was queued */
} aiq_sched_node_t;

typedef struct aiq_sched aiq_sched_t;

/* aging_ms: a queue whose head has waited (and which has not been served) for k*aging_ms
 * competes as if k levels higher, up to one level above critical, so low work still
 * progresses under sustained critical load: about one slot per (prio+1)*aging_ms. */
aiq_sched_t *aiq_sched_new(int64_t aging_ms);
void aiq_sched_free(aiq_sched_t *s); /* does not touch queued nodes */

void aiq_sched_push(aiq_sched_t *s, aiq_sched_node_t *node, int prio, int64_t now_ms);

/* Removes and returns the node to run next, or NULL when empty. Among the queue heads the
 * lowest effective level wins; ties go to the higher real priority. */
aiq_sched_node_t *aiq_sched_pop(aiq_sched_t *s, int64_t now_ms);

/* The rank of the node aiq_sched_pop would return now, without removing it: false when
 * empty; else *level is its effective level and *prio, *enq_ms its own. Lets admission
 * compare the heads of several schedulers by the same rule. */
bool aiq_sched_peek(const aiq_sched_t *s, int64_t now_ms, int64_t *level, int *prio,
                    int64_t *enq_ms);

size_t aiq_sched_len(const aiq_sched_t *s);
size_t aiq_sched_len_prio(const aiq_sched_t *s, int prio);

/* Removes every node for which pred(node, arg) is true, handing each to on_removed (which
 * may free it). Returns how many were removed. */
size_t aiq_sched_remove_if(aiq_sched_t *s, bool (*pred)(aiq_sched_node_t *, void *),
                           void (*on_removed)(aiq_sched_node_t *, void *), void *arg);

#endif
