#include "alerter.h"
#include "alert_rules.h"
#include "timeutil.h"
#include "topics.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EVAL_EVERY_MS 1000

struct aiq_alerter {
    uv_timer_t timer; /* data points back here; the close callback frees through it */
    const aiq_config_t *cfg;
    aiq_log_t *log;
    aiq_publisher_t *pub;
    aiq_alerter_depth_fn depth;
    void *ctx;
    aiq_alert_rules_t *rules;
    char topic[AIQ_TOPIC_MAX];
    uint64_t events;
    int dlq_failing;
    int64_t dlq_since_ms;
};

static const char *const units[AIQ_ALERT_RULES] = {"ms", "share", "jobs", "share"};

/* opaque is the log, not the alerter: a delivery report may come while the publisher is
 * freed at shutdown, after the alerter. */
static void on_sent(void *opaque, rd_kafka_resp_err_t err, int permanent, const char *errstr)
{
    (void)permanent;
    /* The event is in the log too; a lost one is not worth a retry that could pile up. */
    if (err)
        aiq_log_warn((aiq_log_t *)opaque, "alert event not delivered: %s", errstr);
}

static void describe(const aiq_alerter_t *a, const aiq_alert_event_t *e, char *msg, size_t cap)
{
    const char *rule = aiq_alert_rule_name(e->rule);
    const long long win_s = (long long)(a->cfg->alerts_window_ms / 1000);
    if (e->no_data)
        snprintf(msg, cap, "%s resolved: too few jobs in the last %lld s to judge", rule, win_s);
    else if (e->to > e->from)
        snprintf(msg, cap, "%s %s: %.4g %s beyond %.4g over the last %lld s", rule,
                 aiq_alert_level_name(e->to), e->value, units[e->rule], e->threshold, win_s);
    else
        snprintf(msg, cap, "%s %s: %.4g %s, back from %s (%.4g) over the last %lld s", rule,
                 aiq_alert_level_name(e->to), e->value, units[e->rule],
                 aiq_alert_level_name(e->from), e->threshold, win_s);
}

static char *event_json(const aiq_alerter_t *a, const aiq_alert_event_t *e, const char *msg)
{
    char ts[40], started[40];
    json_t *o = json_pack("{s:s, s:s, s:s, s:f, s:f, s:s, s:b, s:I, s:s, s:s, s:s, s:s}", "alert",
                          aiq_alert_rule_name(e->rule), "severity", aiq_alert_level_name(e->to),
                          "previous", aiq_alert_level_name(e->from), "value", e->value, "threshold",
                          e->threshold, "unit", units[e->rule], "no_data", e->no_data, "window_ms",
                          (json_int_t)a->cfg->alerts_window_ms, "worker", a->cfg->worker_id, "ts",
                          aiq_time_format(e->at_ms, ts, sizeof(ts)), "started_at",
                          aiq_time_format(e->since_ms, started, sizeof(started)), "message", msg);
    char *val = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return val;
}

static void publish(aiq_alerter_t *a, const aiq_alert_event_t *e)
{
    char msg[256], key[320];
    describe(a, e, msg, sizeof(msg));
    aiq_logj(a->log, e->to == AIQ_ALERT_CRITICAL ? AIQ_LOG_ERROR : AIQ_LOG_WARN, NULL, "alert %s",
             msg);
    char *val = event_json(a, e, msg);
    if (!val) {
        aiq_log_warn(a->log, "alert event not built: out of memory");
        return;
    }
    snprintf(key, sizeof(key), "%s/%s", a->cfg->worker_id, aiq_alert_rule_name(e->rule));
    aiq_err_t err = {0};
    if (aiq_publisher_send(a->pub, a->topic, key, strlen(key), val, strlen(val), NULL, on_sent,
                           a->log, &err))
        aiq_log_warn(a->log, "alert event not sent: %s", err.msg);
    else
        a->events++;
    free(val);
}

static void on_tick(uv_timer_t *t)
{
    aiq_alerter_t *a = t->data;
    aiq_alert_rules_depth(a->rules, a->depth(a->ctx));
    aiq_alert_event_t ev[AIQ_ALERT_RULES];
    const int n = aiq_alert_rules_evaluate(a->rules, aiq_now_ms(), ev, AIQ_ALERT_RULES);
    for (int i = 0; i < n; i++)
        publish(a, &ev[i]);
}

/* The rules from the alerts.* keys; rates are configured in percent. */
static void conf_from(const aiq_config_t *cfg, aiq_alert_rules_conf_t *c)
{
    aiq_alert_rules_conf_default(c);
    c->window_ms = cfg->alerts_window_ms;
    c->clear_hold_ms = cfg->alerts_clear_hold_ms;
    c->min_jobs = (int)cfg->alerts_min_jobs;
    c->warn[AIQ_ALERT_RESPONSE_P95] = (double)cfg->alerts_response_p95_warn_ms;
    c->crit[AIQ_ALERT_RESPONSE_P95] = (double)cfg->alerts_response_p95_crit_ms;
    c->warn[AIQ_ALERT_ERROR_RATE] = (double)cfg->alerts_error_rate_warn_pct / 100.0;
    c->crit[AIQ_ALERT_ERROR_RATE] = (double)cfg->alerts_error_rate_crit_pct / 100.0;
    c->warn[AIQ_ALERT_QUEUE_DEPTH] = (double)cfg->alerts_queue_depth_warn;
    c->crit[AIQ_ALERT_QUEUE_DEPTH] = (double)cfg->alerts_queue_depth_crit;
    c->warn[AIQ_ALERT_CACHE_HIT_RATE] = (double)cfg->alerts_cache_hit_min_pct / 100.0;
}

int aiq_alerter_new(aiq_alerter_t **out, uv_loop_t *loop, const aiq_config_t *cfg, aiq_log_t *log,
                    aiq_publisher_t *pub, aiq_alerter_depth_fn depth, void *ctx, aiq_err_t *err)
{
    aiq_alert_rules_conf_t c;
    conf_from(cfg, &c);
    aiq_alerter_t *a = calloc(1, sizeof(*a));
    if (!a)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    int rc = aiq_alert_rules_new(&a->rules, &c, err);
    if (rc)
        goto fail;
    if (aiq_topic_alerts(cfg->topic_prefix, a->topic, sizeof(a->topic))) {
        rc = aiq_err_set(err, AIQ_EINVAL, "kafka.topic_prefix is too long");
        goto fail;
    }
    a->cfg = cfg;
    a->log = log;
    a->pub = pub;
    a->depth = depth;
    a->ctx = ctx;
    uv_timer_init(loop, &a->timer);
    a->timer.data = a;
    uv_timer_start(&a->timer, on_tick, EVAL_EVERY_MS, EVAL_EVERY_MS);
    *out = a;
    return 0;
fail:
    aiq_alert_rules_free(a->rules);
    free(a);
    return rc;
}

static void on_closed(uv_handle_t *h)
{
    aiq_alerter_t *a = h->data;
    aiq_alert_rules_free(a->rules);
    free(a);
}

void aiq_alerter_free(aiq_alerter_t *a)
{
    if (a)
        uv_close((uv_handle_t *)&a->timer, on_closed);
}

void aiq_alerter_job(aiq_alerter_t *a, bool error, int64_t total_ms, bool lookup, bool hit)
{
    aiq_alert_rules_job(a->rules, aiq_now_ms(), error, total_ms, lookup, hit);
}

void aiq_alerter_dlq(aiq_alerter_t *a, bool failing, int64_t waiting, const char *why)
{
    if (!a || (int)failing == a->dlq_failing)
        return;
    a->dlq_failing = failing;
    int64_t now = aiq_now_ms();
    if (failing)
        a->dlq_since_ms = now;
    char ts[40], started[40], msg[400], key[320];
    snprintf(msg, sizeof(msg), "dlq_unwritable %s: %s", failing ? "critical" : "resolved",
             failing ? why : "dead letters are written again");
    aiq_logj(a->log, failing ? AIQ_LOG_ERROR : AIQ_LOG_WARN, NULL, "alert %s", msg);
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:I, s:f, s:s, s:b, s:I, s:s, s:s, s:s, s:s}", "alert",
                  "dlq_unwritable", "severity", failing ? "critical" : "resolved", "previous",
                  failing ? "resolved" : "critical", "value",
                  (json_int_t)(waiting > 0 ? waiting : 0), "threshold", 1.0, "unit", "records",
                  "no_data", 0, "window_ms", (json_int_t)a->cfg->alerts_window_ms, "worker",
                  a->cfg->worker_id, "ts", aiq_time_format(now, ts, sizeof(ts)), "started_at",
                  aiq_time_format(a->dlq_since_ms, started, sizeof(started)), "message", msg);
    char *val = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!val) {
        aiq_log_warn(a->log, "alert event not built: out of memory");
        return;
    }
    snprintf(key, sizeof(key), "%s/dlq_unwritable", a->cfg->worker_id);
    aiq_err_t err = {0};
    if (aiq_publisher_send(a->pub, a->topic, key, strlen(key), val, strlen(val), NULL, on_sent,
                           a->log, &err))
        aiq_log_warn(a->log, "alert event not sent: %s", err.msg);
    else
        a->events++;
    free(val);
}

int aiq_alerter_active(const aiq_alerter_t *a)
{
    int n = a->dlq_failing;
    for (int i = 0; i < AIQ_ALERT_RULES; i++)
        n += aiq_alert_rules_level(a->rules, (aiq_alert_rule_t)i) != AIQ_ALERT_OK;
    return n;
}

uint64_t aiq_alerter_events(const aiq_alerter_t *a)
{
    return a->events;
}
