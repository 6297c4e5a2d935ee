/* coalesce.c — single-flight: identical jobs in flight share one model call; the first
 * leads, the others wait as followers and get a copy of its outcome. Loop thread only. */

#include "job_internal.h"

#include <string.h>

static aiq_task_t **sf_bucket(aiq_pipeline_t *pl, const uint8_t key[AIQ_CACHE_KEY_LEN])
{
    unsigned h = (unsigned)key[0] | (unsigned)key[1] << 8; /* SHA-256 bytes: uniform */
    return &pl->sf[h % SF_BUCKETS];
}

void aiq__sf_unregister(aiq_task_t *t)
{
    if (!t->sf_leader)
        return;
    for (aiq_task_t **pp = sf_bucket(t->pl, t->key); *pp; pp = &(*pp)->sf_next) {
        if (*pp == t) {
            *pp = t->sf_next;
            break;
        }
    }
    t->sf_next = NULL;
    t->sf_leader = 0;
}

void aiq__sf_unlink(aiq_task_t *f)
{
    aiq_task_t *l = f->leader;
    if (!l)
        return;
    if (f->f_prev)
        f->f_prev->f_next = f->f_next;
    else
        l->followers = f->f_next;
    if (f->f_next)
        f->f_next->f_prev = f->f_prev;
    f->f_prev = f->f_next = NULL;
    f->leader = NULL;
}

/* Joins an identical job's call when one is in flight (returns 1), or becomes the one
 * others join (returns 0: go and call). */
int aiq__sf_join(aiq_task_t *t)
{
    /* A streamed job calls on its own: its partial records come from its own call. */
    if (t->job && t->job->stream)
        return 0;
    aiq_task_t **b = sf_bucket(t->pl, t->key);
    for (aiq_task_t *l = *b; l; l = l->sf_next) {
        if (memcmp(l->key, t->key, AIQ_CACHE_KEY_LEN) == 0) {
            t->leader = l;
            t->f_prev = NULL;
            t->f_next = l->followers;
            if (l->followers)
                l->followers->f_prev = t;
            l->followers = t;
            aiq_metrics_count(t->pl->d.metrics, AIQ_METRICS_COALESCED);
            aiq__task_set_state(t, AIQ_TASK_COALESCED);
            return 1;
        }
    }
    t->sf_next = *b;
    *b = t;
    t->sf_leader = 1;
    return 0;
}

/* A leader that goes away without an answer (revoke) hands its followers to the first of
 * them, which calls in its place. */
void aiq__sf_promote(aiq_task_t *t)
{
    aiq_task_t *heir = t->followers;
    if (!heir)
        return;
    t->followers = NULL;
    aiq_task_t *rest = heir->f_next;
    heir->leader = NULL;
    heir->f_prev = heir->f_next = NULL;
    heir->followers = rest;
    for (aiq_task_t *f = rest; f; f = f->f_next)
        f->leader = heir;
    if (rest)
        rest->f_prev = NULL;
    if (t->pl->closing) {
        heir->followers = NULL;
        for (aiq_task_t *f = rest, *n; f; f = n) {
            n = f->f_next;
            f->leader = NULL;
            f->f_prev = f->f_next = NULL;
        }
        return;
    }
    aiq_task_t **b = sf_bucket(t->pl, heir->key);
    heir->sf_next = *b;
    *b = heir;
    heir->sf_leader = 1;
    aiq__task_call(heir);
}

/* The leader's answer is every follower's: each gets its own copy of the outcome. */
void aiq__sf_deliver(aiq_task_t *leader, const aiq_call_outcome_t *o)
{
    aiq_task_t *f = leader->followers;
    leader->followers = NULL;
    while (f) {
        aiq_task_t *next = f->f_next;
        f->leader = NULL;
        f->f_prev = f->f_next = NULL;
        aiq_call_outcome_t copy = *o;
        memset(&copy.reply, 0, sizeof(copy.reply));
        if (o->end == AIQ_CALL_OK && aiq_bedrock_reply_copy(&copy.reply, &o->reply))
            copy.end = AIQ_CALL_EXHAUSTED; /* out of memory: its fallback answers */
        copy.model = f->call_model;        /* not the leader's */
        copy.attempts = 0;                 /* the call was the leader's */
        copy.provider_ms = 0;
        aiq__on_outcome(f, &copy);
        aiq_bedrock_reply_free(&copy.reply);
        f = next;
    }
}
