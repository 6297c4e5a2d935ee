/* alerts.h — the seed's alert rules over a sliding window, with hysteresis so a value
 * hovering at a threshold raises once and clears once. Pure: callers feed jobs and the
 * queue depth with the time (an injected clock), and publish the events evaluate returns.
 * Single-threaded: one owner calls everything. */
#ifndef AIQ_ALERT_RULES_H
#define AIQ_ALERT_RULES_H

#include "aiq_err.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum aiq_alert_rule {
    AIQ_ALERT_RESPONSE_P95 = 0, /* p95 of job time, ms: above 25 s warning, 30 s critical */
    AIQ_ALERT_ERROR_RATE,       /* (failed + expired + degraded) / answered: 5 % / 10 % */
    AIQ_ALERT_QUEUE_DEPTH,      /* jobs waiting in the worker: above 50 / 100 */
    AIQ_ALERT_CACHE_HIT_RATE,   /* hits / lookups below 30 %: warning only */
    AIQ_ALERT_RULES,
} aiq_alert_rule_t;

typedef enum aiq_alert_level {
    AIQ_ALERT_OK = 0, /* named "resolved": events only reach it from a raised level */
    AIQ_ALERT_WARNING,
    AIQ_ALERT_CRITICAL,
} aiq_alert_level_t;

/* Static names: "response_p95", "error_rate", "queue_depth", "cache_hit_rate";
 * "resolved", "warning", "critical"; "unknown" for values out of range. */
const char *aiq_alert_rule_name(aiq_alert_rule_t r);
const char *aiq_alert_level_name(aiq_alert_level_t l);

#define AIQ_ALERT_SLOTS 10 /* the window is kept in this many time slots */

/* Rates are shares (0.05 = 5 %), times are ms, depth is jobs. */
typedef struct aiq_alert_rules_conf {
    int64_t window_ms; /* 300000; data counts for 0.9 to 1 window (slot granularity) */
    double warn[AIQ_ALERT_RULES];
    double crit[AIQ_ALERT_RULES]; /* <= 0: the rule has no critical level */
    int min_jobs;                 /* time and error rules judge from this many jobs (20) */
    int min_lookups;              /* the cache rule judges from this many lookups (50) */
    double clear_margin;          /* an alert clears only this far (share) on the good side
                                     of its threshold (0.2) ... */
    int64_t clear_hold_ms;        /* ... for this long (30000) */
} aiq_alert_rules_conf_t;

typedef struct aiq_alert_event {
    aiq_alert_rule_t rule;
    aiq_alert_level_t from, to;
    double value;     /* the rule's value now; 0 when no_data */
    double threshold; /* the one crossed: to's when rising, from's when falling */
    bool no_data;     /* resolved because the window holds too little data to judge */
    int64_t at_ms;    /* now, as passed to evaluate */
    int64_t since_ms; /* when the alert first left OK (kept through escalation and on the
                         resolved event) */
} aiq_alert_event_t;

typedef struct aiq_alerts aiq_alert_rules_t;

/* The seed's thresholds and the defaults noted above. */
void aiq_alert_rules_conf_default(aiq_alert_rules_conf_t *c);

/* Copies conf. Returns 0, AIQ_EINVAL (window_ms < AIQ_ALERT_SLOTS, negative margin or hold,
 * a critical threshold on the good side of the warning one) or AIQ_ENOMEM. */
int aiq_alert_rules_new(aiq_alert_rules_t **out, const aiq_alert_rules_conf_t *conf,
                        aiq_err_t *err);
void aiq_alert_rules_free(aiq_alert_rules_t *a); /* NULL is a no-op */

/* One answered job at now_ms: error (failed, expired or degraded), its time, whether it
 * looked the cache up and whether that hit. Time must not run backwards by more than a
 * window; such jobs land in a slot that is already outside it. */
void aiq_alert_rules_job(aiq_alert_rules_t *a, int64_t now_ms, bool error, int64_t total_ms,
                         bool lookup, bool hit);

/* The queue depth now (a gauge, not windowed). */
void aiq_alert_rules_depth(aiq_alert_rules_t *a, int64_t depth);

/* The rule's value over the window ending at now_ms; false when there is too little data. */
bool aiq_alert_rules_value(const aiq_alert_rules_t *a, aiq_alert_rule_t r, int64_t now_ms,
                           double *out);

/* The rule's current level. */
aiq_alert_level_t aiq_alert_rules_level(const aiq_alert_rules_t *a, aiq_alert_rule_t r);

/* Evaluates every rule at now_ms. Rising is immediate (OK -> warning -> critical, or
 * straight to critical); falling needs the value clear_margin on the good side of the
 * current level's threshold for clear_hold_ms, and an active alert whose window runs out of
 * data resolves after the same hold. Writes the level changes into ev (at most
 * AIQ_ALERT_RULES, one per rule; changes beyond cap are applied but not reported) and
 * returns their number. */
int aiq_alert_rules_evaluate(aiq_alert_rules_t *a, int64_t now_ms, aiq_alert_event_t *ev, int cap);

#endif
