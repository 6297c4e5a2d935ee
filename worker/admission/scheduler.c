#include "scheduler.h"

#include <stdlib.h>

#define N_PRIO 4

typedef struct fifo {
    aiq_sched_node_t *head, *tail;
    size_t len;
    int64_t served_ms; /* when this queue last gave a node to a slot */
} fifo_t;

struct aiq_sched {
    fifo_t q[N_PRIO];
    int64_t aging_ms;
    size_t len;
};

aiq_sched_t *aiq_sched_new(int64_t aging_ms)
{
    aiq_sched_t *s = calloc(1, sizeof(*s));
    if (s)
        s->aging_ms = aging_ms > 0 ? aging_ms : 1;
    return s;
}

void aiq_sched_free(aiq_sched_t *s)
{
    free(s);
}

void aiq_sched_push(aiq_sched_t *s, aiq_sched_node_t *node, int prio, int64_t now_ms)
{
    if (prio < 0)
        prio = 0;
    if (prio >= N_PRIO)
        prio = N_PRIO - 1;
    fifo_t *q = &s->q[prio];
    node->next = NULL;
    node->prio = prio;
    node->enq_ms = now_ms;
    if (q->tail)
        q->tail->next = node;
    else
        q->head = node;
    q->tail = node;
    q->len++;
    s->len++;
}

/* A queue ages from the later of its head's arrival and its last service, so a long-waiting
 * low queue gets one slot per few aging periods, not the whole pool: critical latency
 * holds while low still progresses. Levels reach -1 so an aged queue can beat a fresh
 * critical (at 0 it could only tie, and ties go to critical). */
static int64_t effective_level(const aiq_sched_t *s, const fifo_t *q, int64_t now)
{
    int64_t since = q->head->enq_ms > q->served_ms ? q->head->enq_ms : q->served_ms;
    int64_t waited = now > since ? now - since : 0;
    int64_t level = q->head->prio - waited / s->aging_ms;
    return level < -1 ? -1 : level;
}

/* The queue whose head runs next, or -1 when empty. */
static int best_queue(const aiq_sched_t *s, int64_t now_ms, int64_t *level_out)
{
    int best = -1;
    int64_t best_level = 0;
    /* Heads are each queue's oldest node, so only they can have aged the most. */
    for (int p = 0; p < N_PRIO; p++) {
        if (!s->q[p].head)
            continue;
        int64_t level = effective_level(s, &s->q[p], now_ms);
        if (best < 0 || level < best_level) {
            best = p;
            best_level = level;
        }
    }
    *level_out = best_level;
    return best;
}

bool aiq_sched_peek(const aiq_sched_t *s, int64_t now_ms, int64_t *level, int *prio,
                    int64_t *enq_ms)
{
    int best = best_queue(s, now_ms, level);
    if (best < 0)
        return false;
    *prio = best;
    *enq_ms = s->q[best].head->enq_ms;
    return true;
}

aiq_sched_node_t *aiq_sched_pop(aiq_sched_t *s, int64_t now_ms)
{
    int64_t level;
    int best = best_queue(s, now_ms, &level);
    if (best < 0)
        return NULL;
    fifo_t *q = &s->q[best];
    aiq_sched_node_t *n = q->head;
    q->head = n->next;
    if (!q->head)
        q->tail = NULL;
    q->len--;
    s->len--;
    q->served_ms = now_ms;
    n->next = NULL;
    return n;
}

size_t aiq_sched_len(const aiq_sched_t *s)
{
    return s->len;
}

size_t aiq_sched_len_prio(const aiq_sched_t *s, int prio)
{
    return (prio >= 0 && prio < N_PRIO) ? s->q[prio].len : 0;
}

size_t aiq_sched_remove_if(aiq_sched_t *s, bool (*pred)(aiq_sched_node_t *, void *),
                           void (*on_removed)(aiq_sched_node_t *, void *), void *arg)
{
    size_t removed = 0;
    for (int p = 0; p < N_PRIO; p++) {
        fifo_t *q = &s->q[p];
        aiq_sched_node_t **link = &q->head, *prev = NULL;
        while (*link) {
            aiq_sched_node_t *n = *link;
            if (!pred(n, arg)) {
                prev = n;
                link = &n->next;
                continue;
            }
            *link = n->next;
            if (q->tail == n)
                q->tail = prev;
            q->len--;
            s->len--;
            removed++;
            on_removed(n, arg);
        }
    }
    return removed;
}
