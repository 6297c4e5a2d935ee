#include "alerts.h"

#include <string.h>

static const char *const rule_names[AIQ_ALERT_RULES] = {"response_p95", "error_rate", "queue_depth",
                                                        "cache_hit_rate"};
static const char *const level_names[] = {"resolved", "warning", "critical"};

/* Upper edges (ms) of the job-time histogram; the seed's 25 s and 30 s are edges. */
static const int64_t edge_ms[16] = {100,   250,   500,   1000,  2500,  5000,   10000,  15000,
                                    20000, 25000, 30000, 45000, 60000, 120000, 300000, 600000};

const char *aiq_alert_rule_name(aiq_alert_rule_t r)
{
    return (unsigned)r < AIQ_ALERT_RULES ? rule_names[r] : "unknown";
}

const char *aiq_alert_level_name(aiq_alert_level_t l)
{
    return (unsigned)l <= AIQ_ALERT_CRITICAL ? level_names[l] : "unknown";
}

void aiq_alerts_conf_default(aiq_alerts_conf_t *c)
{
    memset(c, 0, sizeof(*c));
    c->window_ms = 300000;
    c->warn[AIQ_ALERT_RESPONSE_P95] = 25000;
    c->crit[AIQ_ALERT_RESPONSE_P95] = 30000;
    c->warn[AIQ_ALERT_ERROR_RATE] = 0.05;
    c->crit[AIQ_ALERT_ERROR_RATE] = 0.10;
    c->warn[AIQ_ALERT_QUEUE_DEPTH] = 50;
    c->crit[AIQ_ALERT_QUEUE_DEPTH] = 100;
    c->warn[AIQ_ALERT_CACHE_HIT_RATE] = 0.30;
    c->min_jobs = 20;
    c->min_lookups = 50;
    c->clear_margin = 0.2;
    c->clear_hold_ms = 30000;
}

void aiq_alerts_init(aiq_alerts_t *a, const aiq_alerts_conf_t *c)
{
    memset(a, 0, sizeof(*a));
    a->conf = *c;
    if (a->conf.window_ms < AIQ_ALERT_SLOTS)
        a->conf.window_ms = AIQ_ALERT_SLOTS;
}

static aiq_alert_slot_t *slot_at(aiq_alerts_t *a, int64_t now_ms)
{
    int64_t width = a->conf.window_ms / AIQ_ALERT_SLOTS;
    int64_t start = now_ms - now_ms % width;
    aiq_alert_slot_t *s = &a->slot[(start / width) % AIQ_ALERT_SLOTS];
    if (s->start_ms != start) {
        memset(s, 0, sizeof(*s));
        s->start_ms = start;
    }
    return s;
}

void aiq_alerts_job(aiq_alerts_t *a, int64_t now_ms, bool error, int64_t total_ms, bool lookup,
                    bool hit)
{
    aiq_alert_slot_t *s = slot_at(a, now_ms);
    s->jobs++;
    s->errors += error;
    s->lookups += lookup;
    s->hits += lookup && hit;
    int i = 0;
    while (i < 15 && total_ms > edge_ms[i])
        i++;
    s->hist[i]++;
}

void aiq_alerts_depth(aiq_alerts_t *a, int64_t depth)
{
    a->depth = (double)depth;
}

/* The window's totals: slots that started within window_ms before now. */
static aiq_alert_slot_t window_sum(const aiq_alerts_t *a, int64_t now_ms)
{
    aiq_alert_slot_t t = {0};
    for (int k = 0; k < AIQ_ALERT_SLOTS; k++) {
        const aiq_alert_slot_t *s = &a->slot[k];
        if (s->jobs == 0 || s->start_ms <= now_ms - a->conf.window_ms || s->start_ms > now_ms)
            continue;
        t.jobs += s->jobs;
        t.errors += s->errors;
        t.lookups += s->lookups;
        t.hits += s->hits;
        for (int i = 0; i < 16; i++)
            t.hist[i] += s->hist[i];
    }
    return t;
}

bool aiq_alerts_value(const aiq_alerts_t *a, aiq_alert_rule_t r, int64_t now_ms, double *out)
{
    if (r == AIQ_ALERT_QUEUE_DEPTH) {
        *out = a->depth;
        return true;
    }
    aiq_alert_slot_t t = window_sum(a, now_ms);
    if (r == AIQ_ALERT_CACHE_HIT_RATE) {
        if ((int)t.lookups < a->conf.min_lookups || t.lookups == 0)
            return false;
        *out = (double)t.hits / t.lookups;
        return true;
    }
    if ((int)t.jobs < a->conf.min_jobs || t.jobs == 0)
        return false;
    if (r == AIQ_ALERT_ERROR_RATE) {
        *out = (double)t.errors / t.jobs;
        return true;
    }
    uint64_t need = (uint64_t)(0.95 * t.jobs + 0.999999), cum = 0;
    for (int i = 0; i < 16; i++) {
        cum += t.hist[i];
        if (cum >= need) {
            *out = (double)edge_ms[i];
            return true;
        }
    }
    *out = (double)edge_ms[15];
    return true;
}

/* Rules where a low value is bad (the cache hit rate) mirror the comparisons. */
static bool low_is_bad(aiq_alert_rule_t r)
{
    return r == AIQ_ALERT_CACHE_HIT_RATE;
}

static aiq_alert_level_t level_for(const aiq_alerts_conf_t *c, aiq_alert_rule_t r, double v)
{
    if (low_is_bad(r))
        return v < c->warn[r] ? AIQ_ALERT_WARNING : AIQ_ALERT_OK;
    if (c->crit[r] > 0 && v >= c->crit[r])
        return AIQ_ALERT_CRITICAL;
    return v >= c->warn[r] ? AIQ_ALERT_WARNING : AIQ_ALERT_OK;
}

static double threshold_of(const aiq_alerts_conf_t *c, aiq_alert_rule_t r, aiq_alert_level_t l)
{
    return l == AIQ_ALERT_CRITICAL ? c->crit[r] : c->warn[r];
}

/* Clearly on the good side of the current level's threshold, by the clear margin. */
static bool clearly_below(const aiq_alerts_conf_t *c, aiq_alert_rule_t r, aiq_alert_level_t l,
                          double v)
{
    double t = threshold_of(c, r, l);
    return low_is_bad(r) ? v > t * (1 + c->clear_margin) : v < t * (1 - c->clear_margin);
}

int aiq_alerts_evaluate(aiq_alerts_t *a, int64_t now_ms, aiq_alert_event_t *ev, int cap)
{
    int n = 0;
    for (int i = 0; i < AIQ_ALERT_RULES; i++) {
        aiq_alert_rule_t r = (aiq_alert_rule_t)i;
        double v;
        if (!aiq_alerts_value(a, r, now_ms, &v))
            continue; /* too little data: no news either way */
        aiq_alert_level_t cur = a->level[i], want = level_for(&a->conf, r, v);
        aiq_alert_level_t to = cur;
        if (want > cur) {
            to = want; /* raising is immediate */
        } else if (want < cur && clearly_below(&a->conf, r, cur, v)) {
            if (!a->good_since[i])
                a->good_since[i] = now_ms;
            if (now_ms - a->good_since[i] >= a->conf.clear_hold_ms)
                to = want;
        } else {
            a->good_since[i] = 0;
        }
        if (to == cur)
            continue;
        if (cur == AIQ_ALERT_OK)
            a->since[i] = now_ms;
        a->good_since[i] = 0;
        if (n < cap)
            ev[n++] = (aiq_alert_event_t){
                r, cur, to, v, threshold_of(&a->conf, r, to > cur ? to : cur), now_ms, a->since[i]};
        a->level[i] = to;
    }
    return n;
}
