#include "worker.h"
#include "converse.h"
#include "admin_http.h"
#include "consumer.h"
#include "breaker_share.h"
#include "cache.h"
#include "creds.h"
#include "http_client.h"
#include "metrics.h"
#include "ops.h"
#include "alerter.h"
#include "provider.h"
#include "pipeline.h"
#include "publish.h"
#include "result.h"
#include "admission.h"
#include "timeutil.h"
#include "topics.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROGRESS_EVERY_MS 10000
/* How often queued jobs are checked for a passed deadline: an expired job is answered at
 * most this late even while every slot is held by slow model calls (hung provider, latency
 * spike). 100 ms keeps answers within 250 ms of the deadline with 10,000 jobs waiting
 * (tests/integration/test_hung_provider.py); a scan of 10,000 queued jobs costs < 1 ms. */
#define EXPIRY_SWEEP_MS 100

struct aiq_worker {
    uv_loop_t *loop;
    const aiq_config_t *cfg;
    aiq_log_t *log;
    aiq_consumer_t *consumer;
    aiq_publisher_t *pub;
    aiq_http_t *http;
    aiq_creds_t *creds;
    aiq_pipeline_t *pl;
    aiq_admission_t *adm; /* what runs next: the backlog and every slot */
    aiq_metrics_t *metrics;
    aiq_admin_http_t *admin; /* NULL when admin.listen is empty */
    aiq_ops_t *ops;          /* operations; pipeline and bedrock conf borrow them */
    aiq_breaker_share_t *breakers;
    aiq_provider_t *provider;
    aiq_cache_t *cache;     /* NULL when cache.enabled = 0 */
    aiq_alerter_t *alerter; /* NULL when alerts.enabled = 0 */
    aiq_bedrock_conf_t bedrock;
    uv_timer_t beat;
    uv_timer_t snapshot;
    char metrics_topic[AIQ_TOPIC_MAX];
    char endpoint[1024];
    int draining;
    int unready; /* what /readyz last said: 1 not ready */
    int exit_code;
    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer, progress, expiry;
    uint64_t last_progress_done;
};

/* ---- hooks from the consumer and the pipeline -------------------------------------- */

static void on_record(void *opaque, rd_kafka_message_t *msg, const aiq_consumer_ref_t *ref)
{
    aiq_worker_t *w = opaque;
    aiq_task_t *t = aiq_task_new(w->pl, msg, ref);
    if (!t) {
        /* Not tracked as finished, so the record is redelivered after a restart. */
        aiq_log_error(w->log, "out of memory queueing a record; it stays uncommitted");
        return;
    }
    aiq_metrics_received(w->metrics, ref->prio);
    if (!w->draining && aiq_task_expired(t, aiq_now_ms())) {
        /* Its deadline passed while it waited in Kafka: answered now, without waiting for a
         * slot or the next sweep, like the sweep does (counted in flight until published). */
        aiq_admission_run_now(w->adm, aiq_task_node(t), ref->prio, aiq_task_model(t),
                              aiq_mono_ms());
        return;
    }
    aiq_admission_push(w->adm, aiq_task_node(t), ref->prio, aiq_task_model(t), aiq_mono_ms());
}

typedef struct revoke_match {
    int prio;
    int32_t partition;
} revoke_match_t;

static bool match_partition(aiq_sched_node_t *n, void *arg)
{
    const revoke_match_t *m = arg;
    const aiq_consumer_ref_t *ref = aiq_task_ref(aiq_task_of_node(n));
    return !m || (ref->prio == m->prio && ref->partition == m->partition);
}

static void drop_node(aiq_sched_node_t *n, void *arg)
{
    aiq_worker_t *w = arg;
    aiq_task_t *t = aiq_task_of_node(n);
    aiq_consumer_drop(w->consumer, aiq_task_ref(t));
    aiq_task_drop(t);
}

typedef struct drop_ctx {
    aiq_worker_t *w;
    const revoke_match_t *match; /* NULL: everything */
} drop_ctx_t;

static bool match_ctx(aiq_sched_node_t *n, void *arg)
{
    const drop_ctx_t *d = arg;
    return match_partition(n, (void *)d->match);
}

static void drop_ctx_node(aiq_sched_node_t *n, void *arg)
{
    drop_node(n, ((drop_ctx_t *)arg)->w);
}

static void on_revoked(void *opaque, int prio, int32_t partition)
{
    aiq_worker_t *w = opaque;
    revoke_match_t m = {prio, partition};
    drop_ctx_t d = {w, &m};
    size_t n = aiq_admission_remove_if(w->adm, match_ctx, drop_ctx_node, &d);
    /* The dropped records may have been what kept this priority paused: refill now, or
     * nothing else would (no record arrives while paused, no job may be running). */
    aiq_admission_pump(w->adm, aiq_mono_ms());
    if (n)
        aiq_log_info(w->log,
                     "dropped %zu queued job(s) of a revoked partition; its new owner "
                     "runs them",
                     n);
}

static void finish_drain(aiq_worker_t *w)
{
    aiq_log_info(w->log, "drain complete");
    uv_stop(w->loop);
}

/* Drain ends when no job holds a slot and no record waits on the DLQ. */
static int drained(const aiq_worker_t *w)
{
    return aiq_admission_unacked(w->adm) == 0 && aiq_pipeline_stats(w->pl)->dlq_waiting == 0;
}

static void on_slot_free(void *opaque, aiq_task_t *t)
{
    aiq_worker_t *w = opaque;
    /* Draining ends in on_task_done, which follows for every task. */
    aiq_admission_release(w->adm, aiq_task_node(t), aiq_mono_ms());
}

static void on_task_done(void *opaque, aiq_task_t *t)
{
    aiq_worker_t *w = opaque;
    aiq_task_summary_t s = aiq_task_summary(t);
    if (w->alerter && s.answered)
        aiq_alerter_job(w->alerter, s.error, s.total_ms, s.lookup, s.hit);
    aiq_consumer_done(w->consumer, aiq_task_ref(t));
    /* The slot came back in on_slot_free, when the answer went out; this ends the wait for
     * its acknowledgement (worker.max_unacked bounds how many wait). */
    aiq_admission_finished(w->adm, aiq_task_node(t), aiq_mono_ms());
    if (w->draining && drained(w))
        finish_drain(w);
}

static void on_dlq_state(void *opaque, int writable, const char *why)
{
    aiq_worker_t *w = opaque;
    if (!writable)
        aiq_log_error(w->log, "%s: /readyz reports not ready until a dead letter is written", why);
    if (w->alerter)
        aiq_alerter_dlq(w->alerter, !writable, aiq_pipeline_stats(w->pl)->dlq_waiting, why);
}

/* ---- admission hooks ----------------------------------------------------------------- */

static void on_admit(void *opaque, aiq_sched_node_t *n)
{
    aiq_worker_t *w = opaque;
    aiq_pipeline_start(w->pl, aiq_task_of_node(n));
}

static void on_fetching(void *opaque, int prio, bool on)
{
    aiq_worker_t *w = opaque;
    aiq_consumer_set_fetching(w->consumer, prio, on);
}

static bool on_expired(void *opaque, aiq_sched_node_t *n, int64_t now_ms)
{
    (void)opaque;
    return aiq_task_expired(aiq_task_of_node(n), now_ms);
}

/* The one deadline sweep: queued jobs past their deadline are answered "expired" without
 * waiting for a slot, and started jobs still waiting for a model-call slot end too (a slow
 * call holding every slot would otherwise answer them long after their deadline). */
static void on_expiry_sweep(uv_timer_t *timer)
{
    aiq_worker_t *w = timer->data;
    aiq_provider_expire(w->provider, aiq_now_ms());
    aiq_admission_expire(w->adm, aiq_now_ms(), aiq_mono_ms());
}

/* ---- signals and drain ------------------------------------------------------------- */

static void publish_ready(aiq_worker_t *w, char *metrics);

static void on_drain_timeout(uv_timer_t *t)
{
    aiq_worker_t *w = t->data;
    aiq_log_warn(w->log,
                 "drain timeout: %lld job(s) still in flight are left uncommitted and "
                 "will be redelivered",
                 (long long)aiq_admission_inflight(w->adm));
    w->exit_code = 0;
    uv_stop(w->loop);
}

static void on_signal(uv_signal_t *s, int signum)
{
    aiq_worker_t *w = s->data;
    if (w->draining) {
        /* Second signal: leave now. Uncommitted work is redelivered, nothing is lost. */
        aiq_log_warn(w->log, "second signal %d: exiting without drain", signum);
        _exit(128 + signum);
    }
    w->draining = 1;
    if (w->admin)
        publish_ready(w, NULL); /* not ready at once, not at the next beat */
    aiq_consumer_set_fetching(w->consumer, -1, 0);
    drop_ctx_t d = {w, NULL};
    aiq_admission_drain(w->adm);
    size_t dropped = aiq_admission_remove_if(w->adm, match_ctx, drop_ctx_node, &d);
    aiq_log_info(w->log,
                 "signal %d: draining %lld in-flight job(s) (up to %lld ms); %zu queued "
                 "job(s) left for redelivery",
                 signum, (long long)aiq_admission_inflight(w->adm),
                 (long long)w->cfg->drain_timeout_ms, dropped);
    if (drained(w)) {
        finish_drain(w);
        return;
    }
    uv_timer_start(&w->drain_timer, on_drain_timeout, (uint64_t)w->cfg->drain_timeout_ms, 0);
}

static void on_progress(uv_timer_t *t)
{
    aiq_worker_t *w = t->data;
    /* The metrics registry owns the counters: this line and /metrics read the same ones. */
    aiq_metrics_totals_t s = aiq_metrics_totals(w->metrics);
    uint64_t done = 0;
    for (int i = 0; i < AIQ_METRICS_STATUSES; i++)
        done += s.finished[i];
    if (done == w->last_progress_done && aiq_admission_inflight(w->adm) == 0)
        return;
    w->last_progress_done = done;
    aiq_log_info(w->log,
                 "progress: succeeded=%llu degraded=%llu failed=%llu expired=%llu rejected=%llu "
                 "dlq=%llu retries=%llu inflight=%lld unacked=%lld backlog=%zu",
                 (unsigned long long)s.finished[AIQ_RESULT_SUCCEEDED],
                 (unsigned long long)s.finished[AIQ_RESULT_DEGRADED],
                 (unsigned long long)s.finished[AIQ_RESULT_FAILED],
                 (unsigned long long)s.finished[AIQ_RESULT_EXPIRED],
                 (unsigned long long)s.finished[AIQ_RESULT_REJECTED], (unsigned long long)s.dlq,
                 (unsigned long long)s.retries, (long long)aiq_admission_inflight(w->adm),
                 (long long)aiq_admission_unacked(w->adm), aiq_admission_len(w->adm));
}

static void add_breaker(void *ctx, const char *model, aiq_breaker_state_t state,
                        aiq_breaker_force_t force)
{
    (void)force;
    aiq_metrics_gauges_t *g = ctx;
    if (g->nbreakers >= AIQ_METRICS_BREAKERS)
        return;
    g->breakers[g->nbreakers].model = model;
    g->breakers[g->nbreakers].state = (int)state;
    g->nbreakers++;
}

static aiq_metrics_gauges_t gauges(aiq_worker_t *w);

/* Ready means this worker can take its share of the jobs now: not draining, a member of
 * the group (an empty assignment counts: the group has more members than partitions), Kafka
 * reachable, and the DLQ writable. The first failing condition is the reason. */
static int unready(aiq_worker_t *w, char *why, size_t cap)
{
    const char *dlq = aiq_pipeline_dlq_error(w->pl);
    if (w->draining)
        snprintf(why, cap, "draining");
    else if (aiq_consumer_unready(w->consumer, why, cap))
        return 1;
    else if (dlq)
        snprintf(why, cap, "%s", dlq);
    return w->draining || dlq;
}

static void publish_ready(aiq_worker_t *w, char *metrics)
{
    char why[512] = "";
    int not_ready = unready(w, why, sizeof(why));
    if (not_ready != w->unready) /* one line per change, with the reason */
        aiq_log_info(w->log, "/readyz: %s", not_ready ? why : "ready");
    w->unready = not_ready;
    aiq_admin_http_publish(w->admin, metrics, !not_ready, why);
}

/* Publishes a fresh metrics snapshot and readiness to the admin server (its own thread). */
static void on_beat(uv_timer_t *t)
{
    aiq_worker_t *w = t->data;
    aiq_metrics_gauges_t g = gauges(w);
    publish_ready(w, aiq_metrics_render(w->metrics, &g, w->cfg->worker_id));
}

static aiq_metrics_gauges_t gauges(aiq_worker_t *w)
{
    aiq_metrics_gauges_t g = {.inflight = aiq_admission_inflight(w->adm),
                              .max_inflight = w->cfg->max_inflight,
                              .draining = w->draining,
                              .assigned_partitions = aiq_consumer_assigned(w->consumer)};
    for (int p = 0; p < AIQ_PRIO_COUNT; p++)
        g.backlog[p] = (int64_t)aiq_admission_len_prio(w->adm, p);
    aiq_provider_stats_t ps = aiq_provider_stats(w->provider);
    const aiq_pipeline_stats_t *pls = aiq_pipeline_stats(w->pl);
    g.call_limit = ps.limit;
    g.calls_inflight = ps.inflight;
    g.calls_waiting = ps.waiting;
    g.budget_tokens = ps.budget_tokens;
    g.dlq_unwritable = aiq_pipeline_dlq_error(w->pl) != NULL;
    g.dlq_waiting = pls->dlq_waiting;
    g.dlq_write_failures = pls->dlq_write_failures;
    aiq_cache_stats_t cs;
    aiq_err_t err = {0};
    if (w->cache && aiq_cache_stats(w->cache, &cs, &err) == 0) {
        g.cache_hits = cs.hits;
        g.cache_misses = cs.misses;
        g.cache_stale = cs.stale;
        g.cache_corrupt = cs.corrupt;
        g.cache_evicted = cs.evicted;
        g.cache_entries = cs.entries;
        g.cache_bytes = cs.used_bytes;
    }
    aiq_breaker_share_each(w->breakers, aiq_now_ms(), add_breaker, &g);
    aiq_consumer_lag_t lag;
    aiq_consumer_lag(w->consumer, &lag);
    for (int p = 0; p < AIQ_PRIO_COUNT; p++)
        g.lag[p] = lag.lag[p];
    g.rebalances = lag.rebalances;
    g.alerts_active = w->alerter ? aiq_alerter_active(w->alerter) : 0;
    for (int i = 0; i < lag.n_oldest && i < AIQ_METRICS_PARTITIONS; i++) {
        g.oldest[i].prio = lag.oldest[i].prio;
        g.oldest[i].partition = lag.oldest[i].partition;
        g.oldest[i].age_ms = lag.oldest[i].age_ms;
        g.n_oldest = i + 1;
    }
    return g;
}

static void on_snapshot_sent(void *opaque, rd_kafka_resp_err_t err, int permanent,
                             const char *errstr)
{
    (void)permanent;
    aiq_worker_t *w = opaque;
    /* A lost snapshot is superseded by the next one; say so, do not retry. */
    if (err)
        aiq_log_warn(w->log, "metrics snapshot to %s not delivered: %s", w->metrics_topic, errstr);
}

static void on_snapshot(uv_timer_t *t)
{
    aiq_worker_t *w = t->data;
    aiq_metrics_gauges_t g = gauges(w);
    char ts[32];
    aiq_time_format(aiq_now_ms(), ts, sizeof(ts));
    char *doc = aiq_metrics_snapshot(w->metrics, &g, w->cfg->worker_id, ts);
    aiq_err_t err = {0};
    if (doc &&
        aiq_publisher_send(w->pub, w->metrics_topic, w->cfg->worker_id, strlen(w->cfg->worker_id),
                           doc, strlen(doc), NULL, on_snapshot_sent, w, &err))
        aiq_log_warn(w->log, "metrics snapshot: %s", err.msg);
    free(doc);
}

static void on_publisher_fatal(void *opaque, const char *errstr)
{
    aiq_worker_t *w = opaque;
    /* An idempotent producer in a fatal state cannot keep ordering guarantees; exiting
     * without committing makes the group redeliver everything unfinished. */
    aiq_log_error(w->log, "producer fatal (%s): exiting for a restart", errstr);
    w->exit_code = 70;
    uv_stop(w->loop);
}

static void on_consumer_fatal(void *opaque, const char *why)
{
    aiq_worker_t *w = opaque;
    /* A consumer in a fatal state never consumes again: an idle worker that looks alive
     * would hold its group slot for nothing. The consumer logged why. */
    (void)why;
    aiq_log_error(w->log, "consumer fatal: exiting for a restart");
    w->exit_code = 70;
    uv_stop(w->loop);
}

/* ---- construction ------------------------------------------------------------------ */

/* The AWS credentials chain; a temporary source is fetched here, blocking for a bounded
 * time, before the loop runs. */
static int open_credentials(aiq_worker_t *w, aiq_err_t *err)
{
    char session[160];
    snprintf(session, sizeof(session), "aiq-%s", w->cfg->worker_id);
    aiq_creds_conf_t cc = {.region = w->cfg->region,
                           .sts_endpoint = w->cfg->sts_endpoint,
                           .session_name = session,
                           .refresh_margin_ms = w->cfg->credentials_refresh_s * 1000};
    return aiq_creds_new(&w->creds, w->loop, w->http, w->log, &cc, err);
}

static const char *env_of(void *ctx, const char *name)
{
    (void)ctx;
    return getenv(name);
}

static int bedrock_conf(aiq_worker_t *w, aiq_err_t *err)
{
    const aiq_config_t *cfg = w->cfg;
    int rc = aiq_bedrock_endpoint(cfg->bedrock_endpoint, cfg->region, cfg->fips != 0, env_of, NULL,
                                  w->endpoint, sizeof(w->endpoint), err);
    if (rc)
        return rc;
    if (!aiq_model_id_valid(cfg->default_model))
        return aiq_err_set(err, AIQ_EINVAL,
                           "bedrock.default_model '%s' is not a Bedrock model id (botocore's "
                           "modelId pattern)",
                           cfg->default_model);
    w->bedrock = (aiq_bedrock_conf_t){
        .endpoint = w->endpoint,
        .region = cfg->region,
        .default_model = cfg->default_model,
        .default_max_tokens = cfg->default_max_tokens,
    };
    return 0;
}

/* Older workers kept breaker state in base itself, shared by every deployment on the host.
 * That store is left alone, not migrated: whose it was cannot be told, and adopting another
 * deployment's open breaker is the bug the scope fixes. */
static void warn_unscoped_store(aiq_worker_t *w, const char *base, const char *dir)
{
    char old[4200];
    snprintf(old, sizeof(old), "%s/data.mdb", base);
    if (access(old, F_OK) == 0)
        aiq_log_warn(w->log,
                     "breaker state: %s is an unscoped store of an older aiq, shared by every "
                     "deployment on the host; ignored. This deployment's state is in %s "
                     "(delete the old files once no older worker uses them)",
                     old, dir);
}

/* The host-shared cache, and the breaker state beside it (unless breaker.path says
 * elsewhere). */
static int open_shared_state(aiq_worker_t *w, aiq_err_t *err)
{
    const aiq_config_t *cfg = w->cfg;
    char dir[4096];
    int rc;
    if (cfg->cache_enabled) {
        aiq_cache_opts_t o;
        aiq_cache_opts_from_config(&o, cfg);
        if ((rc = aiq_cache_open(&w->cache, &o, err)))
            return rc;
        if ((rc = aiq_cache_sweeper_start(w->cache, cfg->cache_sweep_interval_ms, 0, err)))
            return rc;
        aiq_log_info(w->log, "cache: %s (max %lld bytes, ttl %lld s)", cfg->cache_path,
                     (long long)cfg->cache_max_bytes, (long long)cfg->cache_ttl_s);
    }
    char base[4096];
    if (cfg->breaker_path[0])
        snprintf(base, sizeof(base), "%s", cfg->breaker_path);
    else if (snprintf(base, sizeof(base), "%s/breakers", cfg->cache_path) >= (int)sizeof(base))
        return aiq_err_set(err, AIQ_EINVAL, "cache.path is too long");
    if (aiq_breaker_scope_dir(base, cfg->topic_prefix, dir, sizeof(dir)))
        return aiq_err_set(err, AIQ_EINVAL, "breaker.path or cache.path is too long");
    warn_unscoped_store(w, base, dir);
    return aiq_breaker_share_new(&w->breakers, w->loop, cfg, dir, w->log, w->pub, err);
}

/* A bad operations file fails the start: running with prompts nobody wrote is worse than not
 * running. The error names file, line and field. */
static int load_operations(aiq_worker_t *w, aiq_err_t *err)
{
    const aiq_config_t *cfg = w->cfg;
    aiq_ops_unknown_t unknown = strcmp(cfg->unknown_operations, "reject") == 0
                                    ? AIQ_OPS_UNKNOWN_REJECT
                                    : AIQ_OPS_UNKNOWN_ALLOW;
    aiq_err_t e2 = {0};
    int rc = aiq_ops_load(&w->ops, cfg->operations_file, unknown, &e2);
    if (rc)
        return aiq_err_set(err, rc, "worker.operations_file: %s", e2.msg);
    aiq_log_info(w->log, "operations: %zu from %s, unknown operations %s", aiq_ops_count(w->ops),
                 cfg->operations_file[0] ? cfg->operations_file : "the built-in set",
                 unknown == AIQ_OPS_UNKNOWN_REJECT ? "rejected" : "use \"*\"");
    return 0;
}

int aiq_worker_new(aiq_worker_t **out, uv_loop_t *loop, const aiq_config_t *cfg, aiq_log_t *log,
                   aiq_err_t *err)
{
    aiq_worker_t *w = calloc(1, sizeof(*w));
    if (!w)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    w->loop = loop;
    w->cfg = cfg;
    w->log = log;
    aiq_pipeline_deps_t d = {.loop = loop,
                             .cfg = cfg,
                             .log = log,
                             .on_done = on_task_done,
                             .on_slot_free = on_slot_free,
                             .on_dlq_state = on_dlq_state,
                             .opaque = w};
    aiq_consumer_hooks_t hooks = {.on_record = on_record,
                                  .on_revoked = on_revoked,
                                  .on_fatal = on_consumer_fatal,
                                  .opaque = w};
    int rc;
    if ((rc = bedrock_conf(w, err)) || (rc = load_operations(w, err)))
        goto fail;
    d.ops = w->ops;
    w->bedrock.ops = w->ops;
    aiq_admission_conf_t ac = {.max_inflight = cfg->max_inflight,
                               .max_unacked = cfg->max_unacked,
                               .model_max_inflight = cfg->model_max_inflight,
                               .backlog = cfg->backlog,
                               .aging_ms = cfg->aging_ms};
    aiq_admission_hooks_t ah = {
        .start = on_admit, .set_fetching = on_fetching, .expired = on_expired, .opaque = w};
    if (aiq_admission_new(&w->adm, &ac, &ah) || !(w->metrics = aiq_metrics_new())) {
        rc = aiq_err_set(err, AIQ_ENOMEM, "out of memory");
        goto fail_sched;
    }
    if ((rc = aiq_http_new(&w->http, loop, log, err)))
        goto fail_sched;
    if ((rc = open_credentials(w, err)))
        goto fail_http;
    if ((rc = aiq_publisher_new(&w->pub, loop, cfg, log, on_publisher_fatal, w, err)))
        goto fail_creds;
    if ((rc = open_shared_state(w, err)))
        goto fail_state;
    aiq_provider_deps_t pd = {.loop = loop,
                              .cfg = cfg,
                              .log = log,
                              .http = w->http,
                              .metrics = w->metrics,
                              .breakers = w->breakers,
                              .creds = w->creds,
                              .bedrock = w->bedrock};
    if ((rc = aiq_provider_new(&w->provider, &pd, err)))
        goto fail_state;
    d.pub = w->pub;
    d.metrics = w->metrics;
    d.provider = w->provider;
    d.cache = w->cache;
    if ((rc = aiq_pipeline_new(&w->pl, &d, err)))
        goto fail_provider;
    if ((rc = aiq_consumer_new(&w->consumer, loop, cfg, log, &hooks, err)))
        goto fail_pl;
    *out = w;
    return 0;
fail_pl:
    aiq_pipeline_free(w->pl);
fail_provider:
    aiq_provider_free(w->provider);
fail_state:
    aiq_breaker_share_free(w->breakers);
    aiq_cache_close(w->cache);
    aiq_publisher_free(w->pub);
fail_creds:
    aiq_creds_free(w->creds);
fail_http:
    aiq_http_close(w->http);
fail_sched:
    aiq_admission_free(w->adm);
    aiq_metrics_free(w->metrics);
fail:
    aiq_ops_free(w->ops);
    /* Handles closed above (HTTP, credentials) release their memory in close callbacks. */
    uv_run(loop, UV_RUN_DEFAULT);
    free(w);
    return rc;
}

/* Jobs waiting in the worker: the backlog, and those waiting for a model-call slot. */
static int64_t queue_depth(void *ctx)
{
    aiq_worker_t *w = ctx;
    int64_t n = 0;
    for (int p = 0; p < AIQ_PRIO_COUNT; p++)
        n += (int64_t)aiq_admission_len_prio(w->adm, p);
    return n + aiq_provider_stats(w->provider).waiting;
}

/* The producer looks a topic up on its first record: ~1 s that the first results of a
 * fresh worker would wait (their slots with them). Learn the topics answers go to first. */
static void warm_publisher(aiq_worker_t *w)
{
    char results[AIQ_TOPIC_MAX], dlq[AIQ_TOPIC_MAX], high[AIQ_TOPIC_MAX];
    aiq_topic_results(w->cfg->topic_prefix, results, sizeof(results));
    aiq_topic_dlq(w->cfg->topic_prefix, dlq, sizeof(dlq));
    aiq_topic_jobs(w->cfg->topic_prefix, AIQ_PRIO_HIGH, high, sizeof(high));
    const char *const topics[] = {results, dlq, high};
    int64_t t0 = aiq_mono_ms();
    int n = aiq_publisher_warm(w->pub, topics, 3, 5000);
    aiq_log_info(w->log, "producer knows %d of 3 answer topics after %lld ms", n,
                 (long long)(aiq_mono_ms() - t0));
}

int aiq_worker_start(aiq_worker_t *w, aiq_err_t *err)
{
    warm_publisher(w);
    int rc = aiq_consumer_start(w->consumer, err);
    if (rc)
        return rc;
    if (w->cfg->alerts_enabled &&
        (rc = aiq_alerter_new(&w->alerter, w->loop, w->cfg, w->log, w->pub, queue_depth, w, err)))
        return rc;
    uv_timer_init(w->loop, &w->snapshot);
    w->snapshot.data = w;
    aiq_topic_metrics(w->cfg->topic_prefix, w->metrics_topic, sizeof(w->metrics_topic));
    if (w->cfg->metrics_interval_ms > 0)
        uv_timer_start(&w->snapshot, on_snapshot, (uint64_t)w->cfg->metrics_interval_ms,
                       (uint64_t)w->cfg->metrics_interval_ms);
    if (w->cfg->admin_listen[0]) {
        if ((rc = aiq_admin_http_start(&w->admin, w->cfg->admin_listen, w->log, err)))
            return rc;
        aiq_log_info(w->log, "ops endpoints on port %u: /metrics /healthz /readyz",
                     (unsigned)aiq_admin_http_port(w->admin));
        uv_timer_init(w->loop, &w->beat);
        w->beat.data = w;
        uv_timer_start(&w->beat, on_beat, 0, 1000);
    }
    uv_signal_init(w->loop, &w->sigterm);
    uv_signal_init(w->loop, &w->sigint);
    w->sigterm.data = w->sigint.data = w;
    uv_signal_start(&w->sigterm, on_signal, SIGTERM);
    uv_signal_start(&w->sigint, on_signal, SIGINT);
    uv_timer_init(w->loop, &w->drain_timer);
    uv_timer_init(w->loop, &w->progress);
    uv_timer_init(w->loop, &w->expiry);
    w->drain_timer.data = w->progress.data = w->expiry.data = w;
    uv_timer_start(&w->progress, on_progress, PROGRESS_EVERY_MS, PROGRESS_EVERY_MS);
    uv_timer_start(&w->expiry, on_expiry_sweep, EXPIRY_SWEEP_MS, EXPIRY_SWEEP_MS);
    aiq_log_info(w->log, "worker started: group=%s max_inflight=%lld backlog=%lld endpoint=%s",
                 w->cfg->group_id, (long long)w->cfg->max_inflight, (long long)w->cfg->backlog,
                 w->endpoint);
    return 0;
}

static void close_cb_noop(uv_handle_t *h)
{
    (void)h;
}

int aiq_worker_shutdown(aiq_worker_t *w)
{
    if (aiq_publisher_flush(w->pub, 10000))
        aiq_log_warn(w->log, "producer flush timed out; unacknowledged results stay "
                             "uncommitted and will be redone");
    on_progress(&w->progress);
    /* Every record goes back to librdkafka before its handle does: rd_kafka_destroy waits
     * for the messages still held, so a job left running (a hung model call past the drain
     * timeout) would keep the worker from ever exiting. Queued jobs leave admission first:
     * the final revoke inside close looks there. */
    drop_ctx_t d = {w, NULL};
    aiq_admission_drain(w->adm);
    aiq_admission_remove_if(w->adm, match_ctx, drop_ctx_node, &d);
    aiq_pipeline_free(w->pl);
    w->pl = NULL;
    /* Offsets of finished jobs were stored as they finished; closing commits them. */
    aiq_consumer_close(w->consumer);
    aiq_alerter_free(w->alerter);
    aiq_provider_free(w->provider);
    aiq_breaker_share_free(w->breakers);
    aiq_cache_close(w->cache);
    aiq_ops_free(w->ops);
    aiq_publisher_free(w->pub);
    aiq_creds_free(w->creds); /* before http: it may have a refresh in flight */
    aiq_http_close(w->http);
    aiq_admission_free(w->adm);
    aiq_admin_http_stop(w->admin);
    aiq_metrics_free(w->metrics);
    if (w->admin)
        uv_close((uv_handle_t *)&w->beat, close_cb_noop);
    if (w->snapshot.data)
        uv_close((uv_handle_t *)&w->snapshot, close_cb_noop);
    uv_close((uv_handle_t *)&w->sigterm, close_cb_noop);
    uv_close((uv_handle_t *)&w->sigint, close_cb_noop);
    uv_close((uv_handle_t *)&w->drain_timer, close_cb_noop);
    uv_close((uv_handle_t *)&w->progress, close_cb_noop);
    uv_close((uv_handle_t *)&w->expiry, close_cb_noop);
    /* Let the loop run the close callbacks so every handle's memory is released. */
    uv_run(w->loop, UV_RUN_DEFAULT);
    int code = w->exit_code;
    aiq_log_info(w->log, "worker stopped");
    free(w);
    return code;
}
