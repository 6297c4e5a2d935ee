#include "alert_rules.h"

#include <stdlib.h>
#include <string.h>

#define N_BUCKETS 16

static const char *const rule_names[AIQ_ALERT_RULES] = {"response_p95", "error_rate", "queue_depth",
                                                        "cache_hit_rate"};
static const char *const level_names[] = {"resolved", "warning", "critical"};

/* Upper edges (ms) of the job-time histogram; the seed's 25 s and 30 s are edges, so the
 * interpolated p95 is exact at the default thresholds. The last bucket is open. */
static const int64_t edge_ms[N_BUCKETS] = {100,   250,    500,    1000,  2500,  5000,
                                           10000, 15000,  20000,  25000, 30000, 45000,
                                           60000, 120000, 300000, 600000};

/* One slice of the window: counts of the jobs answered in [start_ms, start_ms + width). */
typedef struct slot {
    int64_t start_ms;
    uint32_t jobs, errors, lookups, hits;
    uint32_t hist[N_BUCKETS];
} slot_t;

struct aiq_alerts {
    aiq_alert_rules_conf_t conf;
    slot_t slot[AIQ_ALERT_SLOTS];
    double depth;
    aiq_alert_level_t level[AIQ_ALERT_RULES];
    int64_t since[AIQ_ALERT_RULES];
    int64_t good_since[AIQ_ALERT_RULES]; /* -1: not on the good side */
};

const char *aiq_alert_rule_name(aiq_alert_rule_t r)
{
    return (unsigned)r < AIQ_ALERT_RULES ? rule_names[r] : "unknown";
}

const char *aiq_alert_level_name(aiq_alert_level_t l)
{
    return (unsigned)l <= AIQ_ALERT_CRITICAL ? level_names[l] : "unknown";
}

void aiq_alert_rules_conf_default(aiq_alert_rules_conf_t *c)
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

/* Rules where a low value is bad (the cache hit rate) mirror every comparison. */
static bool low_is_bad(aiq_alert_rule_t r)
{
    return r == AIQ_ALERT_CACHE_HIT_RATE;
}

int aiq_alert_rules_new(aiq_alert_rules_t **out, const aiq_alert_rules_conf_t *conf, aiq_err_t *err)
{
    if (conf->window_ms < AIQ_ALERT_SLOTS || conf->clear_margin < 0 || conf->clear_hold_ms < 0)
        return aiq_err_set(err, AIQ_EINVAL, "alerts: window, margin or hold out of range");
    for (int i = 0; i < AIQ_ALERT_RULES; i++) {
        const double w = conf->warn[i], c = conf->crit[i];
        if (c > 0 && (low_is_bad((aiq_alert_rule_t)i) ? c > w : c < w))
            return aiq_err_set(err, AIQ_EINVAL,
                               "alerts: %s critical threshold is milder than "
                               "its warning threshold",
                               rule_names[i]);
    }
    aiq_alert_rules_t *a = calloc(1, sizeof(*a));
    if (!a)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    a->conf = *conf;
    for (int i = 0; i < AIQ_ALERT_SLOTS; i++)
        a->slot[i].start_ms = INT64_MIN; /* never inside a window */
    for (int i = 0; i < AIQ_ALERT_RULES; i++)
        a->good_since[i] = -1;
    *out = a;
    return 0;
}

void aiq_alert_rules_free(aiq_alert_rules_t *a)
{
    free(a);
}

static slot_t *slot_at(aiq_alert_rules_t *a, int64_t now_ms)
{
    const int64_t width = a->conf.window_ms / AIQ_ALERT_SLOTS;
    int64_t idx = now_ms / width - (now_ms % width < 0); /* floor, also for negative times */
    slot_t *s = &a->slot[((idx % AIQ_ALERT_SLOTS) + AIQ_ALERT_SLOTS) % AIQ_ALERT_SLOTS];
    if (s->start_ms != idx * width) {
        memset(s, 0, sizeof(*s));
        s->start_ms = idx * width;
    }
    return s;
}

void aiq_alert_rules_job(aiq_alert_rules_t *a, int64_t now_ms, bool error, int64_t total_ms,
                         bool lookup, bool hit)
{
    slot_t *s = slot_at(a, now_ms);
    s->jobs++;
    s->errors += error;
    s->lookups += lookup;
    s->hits += lookup && hit;
    int i = 0;
    while (i < N_BUCKETS - 1 && total_ms > edge_ms[i])
        i++;
    s->hist[i]++;
}

void aiq_alert_rules_depth(aiq_alert_rules_t *a, int64_t depth)
{
    a->depth = (double)depth;
}

/* The window's totals: slots that started within window_ms before now. */
static slot_t window_sum(const aiq_alert_rules_t *a, int64_t now_ms)
{
    slot_t t = {0};
    for (int k = 0; k < AIQ_ALERT_SLOTS; k++) {
        const slot_t *s = &a->slot[k];
        if (s->start_ms <= now_ms - a->conf.window_ms || s->start_ms > now_ms)
            continue;
        t.jobs += s->jobs;
        t.errors += s->errors;
        t.lookups += s->lookups;
        t.hits += s->hits;
        for (int i = 0; i < N_BUCKETS; i++)
            t.hist[i] += s->hist[i];
    }
    return t;
}

/* p95 interpolated linearly inside its bucket, as Prometheus' histogram_quantile does, so
 * jobs just under a threshold edge do not read as over it. */
static double p95_of(const slot_t *t)
{
    const double rank = 0.95 * t->jobs;
    double cum = 0;
    for (int i = 0; i < N_BUCKETS; i++) {
        if (t->hist[i] == 0 || cum + t->hist[i] < rank) {
            cum += t->hist[i];
            continue;
        }
        const double lo = i ? (double)edge_ms[i - 1] : 0;
        if (i == N_BUCKETS - 1)
            return lo; /* open bucket: its lower edge, like histogram_quantile */
        return lo + (edge_ms[i] - lo) * (rank - cum) / t->hist[i];
    }
    return 0;
}

bool aiq_alert_rules_value(const aiq_alert_rules_t *a, aiq_alert_rule_t r, int64_t now_ms,
                           double *out)
{
    if (r == AIQ_ALERT_QUEUE_DEPTH) {
        *out = a->depth;
        return true;
    }
    const slot_t t = window_sum(a, now_ms);
    if (r == AIQ_ALERT_CACHE_HIT_RATE) {
        if (t.lookups == 0 || t.lookups < (uint32_t)a->conf.min_lookups)
            return false;
        *out = (double)t.hits / t.lookups;
        return true;
    }
    if (t.jobs == 0 || t.jobs < (uint32_t)a->conf.min_jobs)
        return false;
    *out = r == AIQ_ALERT_ERROR_RATE ? (double)t.errors / t.jobs : p95_of(&t);
    return true;
}

aiq_alert_level_t aiq_alert_rules_level(const aiq_alert_rules_t *a, aiq_alert_rule_t r)
{
    return (unsigned)r < AIQ_ALERT_RULES ? a->level[r] : AIQ_ALERT_OK;
}

/* Strictly beyond the threshold, like the rules file's "> 25" and "< 0.3". */
static bool beyond(aiq_alert_rule_t r, double v, double threshold)
{
    return low_is_bad(r) ? v < threshold : v > threshold;
}

static aiq_alert_level_t level_for(const aiq_alert_rules_conf_t *c, aiq_alert_rule_t r, double v)
{
    if (c->crit[r] > 0 && beyond(r, v, c->crit[r]))
        return AIQ_ALERT_CRITICAL;
    return beyond(r, v, c->warn[r]) ? AIQ_ALERT_WARNING : AIQ_ALERT_OK;
}

static double threshold_of(const aiq_alert_rules_conf_t *c, aiq_alert_rule_t r, aiq_alert_level_t l)
{
    return l == AIQ_ALERT_CRITICAL ? c->crit[r] : c->warn[r];
}

/* On the good side of the current level's threshold by the clear margin. */
static bool clearly_good(const aiq_alert_rules_conf_t *c, aiq_alert_rule_t r, aiq_alert_level_t l,
                         double v)
{
    const double t = threshold_of(c, r, l);
    return low_is_bad(r) ? v > t * (1 + c->clear_margin) : v < t * (1 - c->clear_margin);
}

/* The level rule i moves to at now: rises at once, falls after the hold. */
static aiq_alert_level_t next_level(aiq_alert_rules_t *a, int i, int64_t now_ms, bool have,
                                    double v)
{
    const aiq_alert_rule_t r = (aiq_alert_rule_t)i;
    const aiq_alert_level_t cur = a->level[i];
    const aiq_alert_level_t want = have ? level_for(&a->conf, r, v) : AIQ_ALERT_OK;
    if (want > cur)
        return want;
    /* Without data there is no value to hold against: an alert must not stay raised for
     * good on a worker that went idle, so running out of data counts as good. */
    if (want == cur || (have && !clearly_good(&a->conf, r, cur, v))) {
        a->good_since[i] = -1;
        return cur;
    }
    if (a->good_since[i] < 0)
        a->good_since[i] = now_ms;
    return now_ms - a->good_since[i] >= a->conf.clear_hold_ms ? want : cur;
}

int aiq_alert_rules_evaluate(aiq_alert_rules_t *a, int64_t now_ms, aiq_alert_event_t *ev, int cap)
{
    int n = 0;
    for (int i = 0; i < AIQ_ALERT_RULES; i++) {
        const aiq_alert_rule_t r = (aiq_alert_rule_t)i;
        double v = 0;
        const bool have = aiq_alert_rules_value(a, r, now_ms, &v);
        if (!have && a->level[i] == AIQ_ALERT_OK)
            continue;
        const aiq_alert_level_t cur = a->level[i], to = next_level(a, i, now_ms, have, v);
        if (to == cur)
            continue;
        if (cur == AIQ_ALERT_OK)
            a->since[i] = now_ms;
        a->good_since[i] = -1;
        a->level[i] = to;
        if (n < cap)
            ev[n++] = (aiq_alert_event_t){
                .rule = r,
                .from = cur,
                .to = to,
                .value = have ? v : 0,
                .threshold = threshold_of(&a->conf, r, to > cur ? to : cur),
                .no_data = !have,
                .at_ms = now_ms,
                .since_ms = a->since[i],
            };
    }
    return n;
}
