/* alerts.h — the seed's alert rules over a sliding window, with hysteresis so a value
 * hovering at a threshold raises once and clears once. Pure: callers feed jobs and queue
 * depth with the time, and publish the events evaluate returns. Not thread-safe. */
#ifndef AIQ_ALERTS_H
#define AIQ_ALERTS_H

#include <stdbool.h>
#include <stdint.h>

typedef enum aiq_alert_rule {
    AIQ_ALERT_RESPONSE_P95 = 0, /* p95 of job time, ms: warning 25 s, critical 30 s */
    AIQ_ALERT_ERROR_RATE,       /* failed + expired + degraded share: 5 % / 10 % */
    AIQ_ALERT_QUEUE_DEPTH,      /* jobs waiting in the worker: 50 / 100 */
    AIQ_ALERT_CACHE_HIT_RATE,   /* hits / lookups below 30 %: warning only */
    AIQ_ALERT_RULES,
} aiq_alert_rule_t;

typedef enum aiq_alert_level {
    AIQ_ALERT_OK = 0, /* "resolved" when reached from another level */
    AIQ_ALERT_WARNING,
    AIQ_ALERT_CRITICAL,
} aiq_alert_level_t;

const char *aiq_alert_rule_name(aiq_alert_rule_t r);   /* "response_p95", ... */
const char *aiq_alert_level_name(aiq_alert_level_t l); /* "resolved", "warning", "critical" */

#define AIQ_ALERT_SLOTS 10 /* the window is kept in this many time slots */

typedef struct aiq_alerts_conf {
    int64_t window_ms;                                   /* default 300000 */
    double warn[AIQ_ALERT_RULES], crit[AIQ_ALERT_RULES]; /* crit <= 0: no critical level */
    int min_jobs;          /* rate and p95 rules need this many jobs in the window (20) */
    int min_lookups;       /* the cache rule needs this many lookups (50) */
    double clear_margin;   /* clear only this far (share) on the good side (0.2) */
    int64_t clear_hold_ms; /* ... for this long (30000) */
} aiq_alerts_conf_t;

typedef struct aiq_alert_event {
    aiq_alert_rule_t rule;
    aiq_alert_level_t from, to;
    double value, threshold; /* threshold crossed (to's, or from's when resolving) */
    int64_t at_ms, since_ms; /* since: when the alert first fired (for resolved too) */
} aiq_alert_event_t;

typedef struct aiq_alert_slot {
    int64_t start_ms;
    uint32_t jobs, errors, lookups, hits;
    uint32_t hist[16]; /* job time by aiq_alerts' bucket edges */
} aiq_alert_slot_t;

typedef struct aiq_alerts {
    aiq_alerts_conf_t conf;
    aiq_alert_slot_t slot[AIQ_ALERT_SLOTS];
    double depth;
    aiq_alert_level_t level[AIQ_ALERT_RULES];
    int64_t since[AIQ_ALERT_RULES], good_since[AIQ_ALERT_RULES];
} aiq_alerts_t;

void aiq_alerts_conf_default(aiq_alerts_conf_t *c);
void aiq_alerts_init(aiq_alerts_t *a, const aiq_alerts_conf_t *c);

/* One finished job: error (failed, expired or degraded), its time, and whether it looked
 * the cache up (lookup) and hit. */
void aiq_alerts_job(aiq_alerts_t *a, int64_t now_ms, bool error, int64_t total_ms, bool lookup,
                    bool hit);
void aiq_alerts_depth(aiq_alerts_t *a, int64_t depth);

/* The current value of a rule over the window; false when there is too little data. */
bool aiq_alerts_value(const aiq_alerts_t *a, aiq_alert_rule_t r, int64_t now_ms, double *out);

/* Evaluates every rule at now; writes up to cap level changes into ev and returns their
 * number. */
int aiq_alerts_evaluate(aiq_alerts_t *a, int64_t now_ms, aiq_alert_event_t *ev, int cap);

#endif
