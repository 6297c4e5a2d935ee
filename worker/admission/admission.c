#include "admission.h"
#include "aiq_err.h"

#include <stdlib.h>
#include <string.h>

/* One lane per model: its own scheduler (so a model at its cap holds back only its own jobs,
 * never the head of another model's queue) and its count of jobs in flight. Lane 0 takes
 * records without a model and every model past the first AIQ_ADM_LANES - 1. */
typedef struct lane {
    char model[AIQ_ADM_MODEL_MAX];
    aiq_sched_t *sched;
    int64_t inflight;
    int64_t pushed_ms; /* monotonic: the last job queued for this model */
} lane_t;

/* A model that had a job queued this recently is still in use: it keeps its share of the
 * slots even while another model (a hung one, say) would take every slot. */
#define ACTIVE_MS 10000

struct aiq_admission {
    aiq_admission_conf_t conf;
    aiq_admission_hooks_t h;
    lane_t lanes[AIQ_ADM_LANES];
    int nlanes;
    int64_t inflight; /* holding a slot */
    int64_t unacked;  /* started, not finished */
    size_t len, len_prio[AIQ_ADM_PRIOS];
    bool fetching[AIQ_ADM_PRIOS];
    bool draining;
    bool pumping; /* a start hook may finish a job and re-enter pump: one loop at a time */
};

int aiq_admission_new(aiq_admission_t **out, const aiq_admission_conf_t *conf,
                      const aiq_admission_hooks_t *hooks)
{
    if (conf->max_inflight < 1 || conf->backlog < 1 || !hooks->start || !hooks->set_fetching ||
        !hooks->expired)
        return AIQ_EINVAL;
    aiq_admission_t *a = calloc(1, sizeof(*a));
    if (!a)
        return AIQ_ENOMEM;
    a->conf = *conf;
    if (a->conf.model_max_inflight < 1 || a->conf.model_max_inflight > conf->max_inflight)
        a->conf.model_max_inflight = conf->max_inflight;
    if (a->conf.max_unacked <= 0)
        a->conf.max_unacked = 4 * conf->max_inflight;
    a->h = *hooks;
    if (!(a->lanes[0].sched = aiq_sched_new(conf->aging_ms))) {
        free(a);
        return AIQ_ENOMEM;
    }
    a->nlanes = 1;
    for (int p = 0; p < AIQ_ADM_PRIOS; p++)
        a->fetching[p] = true;
    *out = a;
    return 0;
}

void aiq_admission_free(aiq_admission_t *a)
{
    if (!a)
        return;
    for (int i = 0; i < a->nlanes; i++)
        aiq_sched_free(a->lanes[i].sched);
    free(a);
}

/* The lane of model, created on first use; 0 when there is none or no room for another. */
static int lane_of(aiq_admission_t *a, const char *model)
{
    if (!model || !model[0] || strlen(model) >= AIQ_ADM_MODEL_MAX)
        return 0;
    for (int i = 1; i < a->nlanes; i++)
        if (strcmp(a->lanes[i].model, model) == 0)
            return i;
    if (a->nlanes == AIQ_ADM_LANES)
        return 0;
    lane_t *l = &a->lanes[a->nlanes];
    if (!(l->sched = aiq_sched_new(a->conf.aging_ms)))
        return 0;
    memcpy(l->model, model, strlen(model) + 1);
    return a->nlanes++;
}

int64_t aiq_admission_prio_share(const aiq_admission_t *a)
{
    int64_t q = (a->conf.backlog + AIQ_ADM_PRIOS - 1) / AIQ_ADM_PRIOS;
    return q > a->conf.max_inflight ? q : a->conf.max_inflight;
}

static void set_fetching(aiq_admission_t *a, int prio, bool on)
{
    if (a->fetching[prio] == on)
        return;
    a->fetching[prio] = on;
    a->h.set_fetching(a->h.opaque, prio, on);
}

/* Resumes a paused priority once its queue is down to half its share. */
static void refill(aiq_admission_t *a)
{
    for (int p = 0; p < AIQ_ADM_PRIOS; p++)
        if ((int64_t)a->len_prio[p] <= aiq_admission_prio_share(a) / 2)
            set_fetching(a, p, true);
}

static int clamp_prio(int prio)
{
    return prio < 0 ? 0 : prio >= AIQ_ADM_PRIOS ? AIQ_ADM_PRIOS - 1 : prio;
}

void aiq_admission_push(aiq_admission_t *a, aiq_sched_node_t *node, int prio, const char *model,
                        int64_t mono_ms)
{
    prio = clamp_prio(prio);
    node->lane = lane_of(a, model);
    a->lanes[node->lane].pushed_ms = mono_ms;
    aiq_sched_push(a->lanes[node->lane].sched, node, prio, mono_ms);
    a->len++;
    a->len_prio[prio]++;
    if ((int64_t)a->len_prio[prio] >= aiq_admission_prio_share(a))
        set_fetching(a, prio, false);
    aiq_admission_pump(a, mono_ms);
}

/* In use: jobs queued or in flight, or one queued recently (a model with a trickle of
 * traffic is in use between its jobs too). Lane 0 never counts. */
static bool lane_active(const aiq_admission_t *a, int i, int64_t mono_ms)
{
    const lane_t *l = &a->lanes[i];
    return i > 0 &&
           (l->inflight > 0 || aiq_sched_len(l->sched) > 0 || mono_ms - l->pushed_ms < ACTIVE_MS);
}

/* Per-model isolation under the one global cap: with n models in use, each may hold at
 * most max_inflight / n slots (and at most model_max_inflight). Slots cannot be taken
 * back from a call that hangs, so a model never borrows past its share: a model that hangs
 * or is throttled holds its share, and the others keep theirs. With one model in use it
 * may take every slot. Lane 0 (no model: refused records) never calls one. */
static bool lane_has_room(const aiq_admission_t *a, int i, int64_t share)
{
    if (i == 0)
        return true;
    int64_t held = a->lanes[i].inflight;
    return held < a->conf.model_max_inflight && held < share;
}

/* The lane whose head runs next: lowest effective level, then the more urgent priority,
 * then the longer wait. -1 when nothing may start. */
static int best_lane(const aiq_admission_t *a, int64_t mono_ms)
{
    int best = -1, best_prio = 0, active = 0;
    int64_t best_level = 0, best_enq = 0;
    for (int i = 1; i < a->nlanes; i++)
        active += lane_active(a, i, mono_ms);
    int64_t share = a->conf.max_inflight / (active > 1 ? active : 1);
    share = share > 0 ? share : 1;
    for (int i = 0; i < a->nlanes; i++) {
        int64_t level, enq;
        int prio;
        if (!aiq_sched_peek(a->lanes[i].sched, mono_ms, &level, &prio, &enq) ||
            !lane_has_room(a, i, share))
            continue;
        if (best < 0 || level < best_level || (level == best_level && prio < best_prio) ||
            (level == best_level && prio == best_prio && enq < best_enq)) {
            best = i;
            best_level = level;
            best_prio = prio;
            best_enq = enq;
        }
    }
    return best;
}

static void start(aiq_admission_t *a, aiq_sched_node_t *n)
{
    a->len--;
    a->len_prio[n->prio]--;
    a->inflight++;
    a->unacked++;
    a->lanes[n->lane].inflight++;
    n->slot = 1;
    a->h.start(a->h.opaque, n);
}

void aiq_admission_run_now(aiq_admission_t *a, aiq_sched_node_t *node, int prio, const char *model,
                           int64_t mono_ms)
{
    node->prio = clamp_prio(prio);
    node->lane = lane_of(a, model);
    a->lanes[node->lane].pushed_ms = mono_ms;
    /* start() takes it out of the counts of queued jobs: count it in first. */
    a->len++;
    a->len_prio[node->prio]++;
    start(a, node);
}

void aiq_admission_pump(aiq_admission_t *a, int64_t mono_ms)
{
    if (a->pumping)
        return;
    a->pumping = true;
    while (!a->draining && a->inflight < a->conf.max_inflight && a->unacked < a->conf.max_unacked) {
        int lane = best_lane(a, mono_ms);
        if (lane < 0)
            break;
        start(a, aiq_sched_pop(a->lanes[lane].sched, mono_ms));
    }
    a->pumping = false;
    if (!a->draining)
        refill(a);
}

static void release(aiq_admission_t *a, aiq_sched_node_t *node)
{
    if (!node->slot)
        return;
    node->slot = 0;
    a->inflight--;
    a->lanes[node->lane].inflight--;
}

void aiq_admission_release(aiq_admission_t *a, aiq_sched_node_t *node, int64_t mono_ms)
{
    release(a, node);
    aiq_admission_pump(a, mono_ms);
}

void aiq_admission_finished(aiq_admission_t *a, aiq_sched_node_t *node, int64_t mono_ms)
{
    release(a, node);
    a->unacked--;
    aiq_admission_pump(a, mono_ms);
}

typedef struct expiry_scan {
    aiq_admission_t *a;
    int64_t now_ms;          /* wall clock, like deadlines */
    aiq_sched_node_t *found; /* removed nodes, linked through their next */
} expiry_scan_t;

static bool match_expired(aiq_sched_node_t *n, void *arg)
{
    expiry_scan_t *scan = arg;
    return scan->a->h.expired(scan->a->h.opaque, n, scan->now_ms);
}

static void collect_node(aiq_sched_node_t *n, void *arg)
{
    expiry_scan_t *scan = arg;
    n->next = scan->found; /* the scheduler no longer links n */
    scan->found = n;
}

size_t aiq_admission_expire(aiq_admission_t *a, int64_t now_ms, int64_t mono_ms)
{
    if (a->draining)
        return 0;
    expiry_scan_t scan = {a, now_ms, NULL};
    size_t n = 0;
    for (int i = 0; i < a->nlanes; i++)
        n += aiq_sched_remove_if(a->lanes[i].sched, match_expired, collect_node, &scan);
    /* Started only after the scan: a start may finish synchronously and pump. The counts
     * drop as each starts, so the backlog shares stay true meanwhile. */
    while (scan.found) {
        aiq_sched_node_t *node = scan.found;
        scan.found = node->next;
        start(a, node);
    }
    aiq_admission_pump(a, mono_ms); /* resumes the priorities the removed jobs had paused */
    return n;
}

typedef struct remove_ctx {
    aiq_admission_t *a;
    bool (*pred)(aiq_sched_node_t *, void *);
    void (*on_removed)(aiq_sched_node_t *, void *);
    void *arg;
} remove_ctx_t;

static bool remove_match(aiq_sched_node_t *n, void *arg)
{
    remove_ctx_t *c = arg;
    return c->pred(n, c->arg);
}

static void remove_one(aiq_sched_node_t *n, void *arg)
{
    remove_ctx_t *c = arg;
    c->a->len--;
    c->a->len_prio[n->prio]--;
    c->on_removed(n, c->arg);
}

size_t aiq_admission_remove_if(aiq_admission_t *a, bool (*pred)(aiq_sched_node_t *, void *),
                               void (*on_removed)(aiq_sched_node_t *, void *), void *arg)
{
    remove_ctx_t c = {a, pred, on_removed, arg};
    size_t n = 0;
    for (int i = 0; i < a->nlanes; i++)
        n += aiq_sched_remove_if(a->lanes[i].sched, remove_match, remove_one, &c);
    return n;
}

void aiq_admission_drain(aiq_admission_t *a)
{
    a->draining = true;
}

int64_t aiq_admission_inflight(const aiq_admission_t *a)
{
    return a->inflight;
}

int64_t aiq_admission_unacked(const aiq_admission_t *a)
{
    return a->unacked;
}

size_t aiq_admission_len(const aiq_admission_t *a)
{
    return a->len;
}

size_t aiq_admission_len_prio(const aiq_admission_t *a, int prio)
{
    return prio >= 0 && prio < AIQ_ADM_PRIOS ? a->len_prio[prio] : 0;
}
