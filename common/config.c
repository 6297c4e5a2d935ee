#include "config.h"
#include "kprops.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

typedef enum { CFG_STR, CFG_INT } cfg_type_t;

typedef struct cfg_entry {
    const char *name;
    cfg_type_t type;
    size_t offset;
    int64_t min, max; /* for CFG_INT; for CFG_STR min is the minimum length */
    const char *def;
    int scope;
    const char *help;
} cfg_entry_t;

#define S(field) offsetof(aiq_config_t, field)

/* The one table. Environment variable = "AIQ_" + upper(name with '.' → '_'). */
static const cfg_entry_t table[] = {
    {"kafka.brokers", CFG_STR, S(brokers), 1, 0, "127.0.0.1:9092", AIQ_CFG_ALL,
     "Kafka bootstrap servers, comma-separated host:port"},
    {"kafka.topic_prefix", CFG_STR, S(topic_prefix), 0, 0, "aiq.", AIQ_CFG_ALL,
     "Prefix of every aiq topic: <prefix>jobs.<priority>, <prefix>results, <prefix>dlq"},
    {"kafka.group_id", CFG_STR, S(group_id), 1, 0, "aiq-workers", AIQ_CFG_WORKER,
     "Consumer group shared by all workers"},
    {"kafka.group_instance_id", CFG_STR, S(group_instance_id), 0, 0, "", AIQ_CFG_WORKER,
     "Static membership id (e.g. the pod name); empty for dynamic membership"},
    {"kafka.session_timeout_ms", CFG_INT, S(session_timeout_ms), 6000, 300000, "10000",
     AIQ_CFG_WORKER,
     "Group session timeout; a dead worker's partitions move after this (classic protocol "
     "only: under consumer the broker's group.consumer.session.timeout.ms rules)"},
    {"kafka.group_protocol", CFG_STR, S(group_protocol), 1, 0, "classic", AIQ_CFG_WORKER,
     "Consumer group protocol: classic (JoinGroup/SyncGroup, cooperative-sticky) or consumer "
     "(KIP-848: the broker assigns and times out members; needs Kafka >= 4.0 and "
     "librdkafka >= 2.12)"},
    {"worker.id", CFG_STR, S(worker_id), 0, 0, "", AIQ_CFG_WORKER,
     "Worker id in results, logs and DLQ headers; empty = <hostname>-<pid>"},
    {"worker.max_inflight", CFG_INT, S(max_inflight), 1, 10000, "10", AIQ_CFG_WORKER,
     "Jobs processed at once by one worker (the seed's concurrency limit)"},
    {"worker.max_unacked", CFG_INT, S(max_unacked), 0, 1000000, "0", AIQ_CFG_WORKER,
     "Jobs started and not yet acknowledged by the broker (running, or answered and waiting "
     "for the ack), at most (0 = 4 x worker.max_inflight; below max_inflight it bounds the "
     "running jobs too). A job's slot frees when its answer goes out, not at the ack; its "
     "offset is still committed only after the ack"},
    {"worker.model_max_inflight", CFG_INT, S(model_max_inflight), 0, 10000, "0", AIQ_CFG_WORKER,
     "Of those, jobs for one model at most (0 = no cap of its own). Either way, with n "
     "models in use each gets at most max_inflight / n, so a hung or throttled model "
     "cannot stall the healthy ones; with one model in use it may take every slot"},
    {"worker.backlog", CFG_INT, S(backlog), 4, 1000000, "500", AIQ_CFG_WORKER,
     "Jobs held in memory waiting for a slot (the seed's queue size limit); each priority "
     "gets a quarter, but at least worker.max_inflight, and its partitions pause when "
     "its share is full"},
    {"worker.max_job_bytes", CFG_INT, S(max_job_bytes), 1024, 16777216, "524288", AIQ_CFG_ALL,
     "Largest job record accepted; larger ones go to the DLQ"},
    {"worker.default_timeout_ms", CFG_INT, S(default_timeout_ms), 1, 3600000, "45000", AIQ_CFG_ALL,
     "Deadline of a job without timeout_ms, counted from created_at"},
    {"worker.max_clock_skew_ms", CFG_INT, S(max_clock_skew_ms), 0, 86400000, "300000",
     AIQ_CFG_WORKER,
     "A job whose created_at is more than this far in the future is rejected: a clock that "
     "wrong (or a forged date) would otherwise push its deadline out of reach"},
    {"worker.reply_topics", CFG_STR, S(reply_topics), 0, 0, "{prefix}results,{prefix}reply.*",
     AIQ_CFG_WORKER,
     "Topics a job's reply_to may name: comma-separated names, a trailing * matches any "
     "rest, {prefix} is kafka.topic_prefix; aiq's own topics (jobs, DLQ, breaker, metrics, "
     "alerts) and names starting with __ are refused whatever this says; empty = none"},
    {"dlq.max_record_bytes", CFG_INT, S(dlq_max_record_bytes), 16384, 1073741824, "1000000",
     AIQ_CFG_WORKER,
     "Cap on one dead letter; the DLQ topic's max.message.bytes (read at start) and the "
     "producer's message.max.bytes cap it further. A longer value is cut, with its size and "
     "SHA-256 in headers"},
    {"worker.drain_timeout_ms", CFG_INT, S(drain_timeout_ms), 0, 3600000, "30000", AIQ_CFG_WORKER,
     "On SIGTERM, how long in-flight jobs may take to finish"},
    {"worker.commit_interval_ms", CFG_INT, S(commit_interval_ms), 1, 60000, "50", AIQ_CFG_WORKER,
     "How often finished offsets are committed (librdkafka auto-commit of the stored "
     "offsets); a crash redoes at most this window of finished jobs plus the running ones"},
    {"worker.revoke_timeout_ms", CFG_INT, S(revoke_timeout_ms), 0, 300000, "10000", AIQ_CFG_WORKER,
     "On a rebalance, how long in-flight jobs of revoked partitions may take to finish "
     "before the partitions are handed over"},
    {"worker.aging_ms", CFG_INT, S(aging_ms), 1, 86400000, "5000", AIQ_CFG_WORKER,
     "Anti-starvation: a priority queue not served for this long competes one level "
     "higher (up to one above critical), so low work still gets slots under load"},
    {"worker.max_attempts", CFG_INT, S(max_attempts), 1, 20, "3", AIQ_CFG_WORKER,
     "Model calls per job at most (first try + retries on throttling/5xx)"},
    {"worker.retry_base_ms", CFG_INT, S(retry_base_ms), 1, 60000, "200", AIQ_CFG_WORKER,
     "Backoff base; the n-th retry waits random(0, min(max, base*2^n))"},
    {"worker.retry_max_ms", CFG_INT, S(retry_max_ms), 1, 600000, "5000", AIQ_CFG_WORKER,
     "Backoff cap"},
    {"worker.retry_throttle_floor_ms", CFG_INT, S(retry_throttle_floor_ms), 0, 600000, "250",
     AIQ_CFG_WORKER,
     "Least wait before retrying a throttled call (429), so throttled retries never "
     "collapse to near-zero sleeps; Retry-After from Bedrock waits longer when it says so"},
    {"worker.retry_budget", CFG_INT, S(retry_budget), 0, 100000, "500", AIQ_CFG_WORKER,
     "Retry token bucket per model and worker: a retry costs 5 tokens (10 after a timeout or "
     "connection error), a success refunds; empty bucket = no retries, so an outage cannot "
     "become a retry storm"},
    {"worker.model_error_retries", CFG_INT, S(model_error_retries), 0, 20, "1", AIQ_CFG_WORKER,
     "Retries of 408 ModelTimeoutException and 424 ModelErrorException (0 = final)"},
    {"worker.requeue", CFG_INT, S(requeue), 0, 1, "1", AIQ_CFG_WORKER,
     "1: a job whose attempts are spent but whose deadline leaves room goes once more "
     "through the high topic (attempt count kept); 0: it falls back at once"},
    {"bedrock.min_concurrency", CFG_INT, S(min_concurrency), 1, 10000, "1", AIQ_CFG_WORKER,
     "Adaptive concurrency floor: model calls in flight never limited below this"},
    {"bedrock.max_concurrency", CFG_INT, S(max_concurrency), 0, 10000, "0", AIQ_CFG_WORKER,
     "Adaptive concurrency ceiling (0 = worker.max_inflight); the limit shrinks on "
     "throttling and latency growth and grows back on success (AIMD)"},
    {"bedrock.adaptive", CFG_INT, S(adaptive), 0, 1, "1", AIQ_CFG_WORKER,
     "1: adapt the model-call concurrency (AIMD); 0: always max_concurrency"},
    {"breaker.failures", CFG_INT, S(breaker_failures), 1, 1000, "5", AIQ_CFG_WORKER,
     "Circuit breaker (per model): open after this many failures in a row (5xx, timeouts, "
     "connection errors; not throttling, not 4xx)"},
    {"breaker.failure_rate_pct", CFG_INT, S(breaker_failure_rate_pct), 0, 100, "50", AIQ_CFG_WORKER,
     "... or when this % of the calls in breaker.window_ms failed (at least "
     "breaker.min_calls); 0 turns the rate rule off"},
    {"breaker.min_calls", CFG_INT, S(breaker_min_calls), 1, 1000000, "20", AIQ_CFG_WORKER,
     "Calls in the window before the rate rule applies"},
    {"breaker.window_ms", CFG_INT, S(breaker_window_ms), 100, 3600000, "10000", AIQ_CFG_WORKER,
     "Window of the failure-rate rule"},
    {"breaker.cooldown_ms", CFG_INT, S(breaker_cooldown_ms), 10, 3600000, "30000", AIQ_CFG_WORKER,
     "Open breaker turns half-open after this long"},
    {"breaker.half_open_probes", CFG_INT, S(breaker_probes), 1, 100, "1", AIQ_CFG_WORKER,
     "Calls let through (per worker) while half-open; all must succeed to close"},
    {"breaker.path", CFG_STR, S(breaker_path), 0, 0, "", AIQ_CFG_WORKER,
     "Base directory of the host-shared breaker state (LMDB, in prefix-<kafka.topic_prefix> below "
     "it); empty = <cache.path>/breakers"},
    {"worker.operations_file", CFG_STR, S(operations_file), 0, 0, "", AIQ_CFG_WORKER,
     "JSON file of operations: model, API, prompts and persona variants, inference defaults, "
     "cache TTL, volatile fields, fallback texts, model prices; empty = the built-in set "
     "(config/operations.json as shipped)"},
    {"worker.unknown_operations", CFG_STR, S(unknown_operations), 1, 0, "allow", AIQ_CFG_WORKER,
     "A job whose operation the operations file does not list: allow = use its \"*\" "
     "operation, reject = refuse the job as invalid_job (to the DLQ)"},
    {"bedrock.endpoint", CFG_STR, S(bedrock_endpoint), 0, 0, "", AIQ_CFG_WORKER,
     "Bedrock Runtime base URL (a VPC endpoint URL works); empty = "
     "AWS_ENDPOINT_URL_BEDROCK_RUNTIME, else AWS_ENDPOINT_URL, else the region's: "
     "https://bedrock-runtime.<region>.<partition suffix> (amazonaws.com, amazonaws.com.cn, ...)"},
    {"bedrock.fips", CFG_INT, S(fips), 0, 1, "0", AIQ_CFG_WORKER,
     "1 = the region's FIPS endpoint, bedrock-runtime-fips.<region>... (so does "
     "AWS_USE_FIPS_ENDPOINT=true); only when no endpoint URL is set"},
    {"bedrock.region", CFG_STR, S(region), 1, 0, "us-east-1", AIQ_CFG_WORKER,
     "AWS region for signing (AWS_REGION is used when this is not set explicitly)"},
    {"bedrock.default_model", CFG_STR, S(default_model), 1, 0,
     "anthropic.claude-3-haiku-20240307-v1:0", AIQ_CFG_WORKER,
     "Model id used when a job names none"},
    {"bedrock.default_max_tokens", CFG_INT, S(default_max_tokens), 1, 200000, "512", AIQ_CFG_WORKER,
     "maxTokens when a job gives no inference.max_tokens"},
    {"bedrock.request_timeout_ms", CFG_INT, S(request_timeout_ms), 100, 600000, "60000",
     AIQ_CFG_WORKER, "Cap on one model call (the job's deadline caps it further)"},
    {"bedrock.sts_endpoint", CFG_STR, S(sts_endpoint), 0, 0, "", AIQ_CFG_WORKER,
     "STS URL for web-identity credentials (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE); "
     "empty = AWS_ENDPOINT_URL_STS, else https://sts.<region>.amazonaws.com"},
    {"bedrock.credentials_refresh_s", CFG_INT, S(credentials_refresh_s), 1, 43200, "300",
     AIQ_CFG_WORKER,
     "Temporary AWS credentials (web identity, container) are refreshed this long before "
     "they expire, or at half their remaining lifetime when that comes sooner"},
    {"cache.path", CFG_STR, S(cache_path), 1, 0, "aiq-cache", AIQ_CFG_WORKER,
     "Directory of the host-shared response cache (LMDB), created 0700; every worker of a "
     "host must name the same directory (a relative path is relative to the working "
     "directory: set an absolute one, e.g. /var/lib/aiq/cache, in production)"},
    {"cache.enabled", CFG_INT, S(cache_enabled), 0, 1, "1", AIQ_CFG_WORKER,
     "1: answer repeated jobs from the cache; 0: never read or write it"},
    {"cache.max_bytes", CFG_INT, S(cache_max_bytes), 262144, 17592186044416LL, "1073741824",
     AIQ_CFG_WORKER,
     "Bound on the cache file (LMDB map size); the oldest entries are evicted to stay below"},
    {"cache.ttl_s", CFG_INT, S(cache_ttl_s), 0, 31536000, "86400", AIQ_CFG_WORKER,
     "Default time-to-live of a cached answer (an operation or job may set its own)"},
    {"cache.stale_grace_s", CFG_INT, S(cache_stale_grace_s), 0, 31536000, "86400", AIQ_CFG_WORKER,
     "How long an expired answer is kept for the stale-if-error fallback before it is swept"},
    {"cache.compress_min", CFG_INT, S(cache_compress_min), 0, 8388608, "512", AIQ_CFG_WORKER,
     "Answers of at least this many bytes are stored zstd-compressed"},
    {"cache.sweep_interval_ms", CFG_INT, S(cache_sweep_interval_ms), 100, 86400000, "60000",
     AIQ_CFG_WORKER, "How often a worker's sweeper deletes entries past ttl + grace"},
    {"alerts.enabled", CFG_INT, S(alerts_enabled), 0, 1, "1", AIQ_CFG_WORKER,
     "1: evaluate the seed's alert rules in the worker and publish raise/resolve events to "
     "<prefix>alerts (p95 job time 25/30 s, error rate 5/10 %, queue depth 50/100, cache hit "
     "rate below 30 %)"},
    {"alerts.window_ms", CFG_INT, S(alerts_window_ms), 1000, 86400000, "300000", AIQ_CFG_WORKER,
     "Sliding window of the alert rules"},
    {"alerts.clear_hold_ms", CFG_INT, S(alerts_clear_hold_ms), 0, 86400000, "30000", AIQ_CFG_WORKER,
     "Hysteresis: an alert resolves only after its value stayed 20 % on the good side of the "
     "threshold this long"},
    {"alerts.min_jobs", CFG_INT, S(alerts_min_jobs), 1, 1000000, "20", AIQ_CFG_WORKER,
     "Jobs in the window before the time and error-rate rules judge (50 lookups for the "
     "cache rule)"},
    {"alerts.response_p95_warn_ms", CFG_INT, S(alerts_response_p95_warn_ms), 1, 86400000, "25000",
     AIQ_CFG_WORKER, "Alert warning when the window's p95 job time (receipt to result) exceeds it"},
    {"alerts.response_p95_crit_ms", CFG_INT, S(alerts_response_p95_crit_ms), 0, 86400000, "30000",
     AIQ_CFG_WORKER, "Alert critical above this p95 job time; 0 = warning only"},
    {"alerts.error_rate_warn_pct", CFG_INT, S(alerts_error_rate_warn_pct), 1, 100, "5",
     AIQ_CFG_WORKER, "Alert warning above this % of the window's jobs failed, expired or degraded"},
    {"alerts.error_rate_crit_pct", CFG_INT, S(alerts_error_rate_crit_pct), 0, 100, "10",
     AIQ_CFG_WORKER, "Alert critical above this error rate (%); 0 = warning only"},
    {"alerts.queue_depth_warn", CFG_INT, S(alerts_queue_depth_warn), 1, 10000000, "50",
     AIQ_CFG_WORKER, "Alert warning above this many jobs waiting in the worker"},
    {"alerts.queue_depth_crit", CFG_INT, S(alerts_queue_depth_crit), 0, 10000000, "100",
     AIQ_CFG_WORKER, "Alert critical above this queue depth; 0 = warning only"},
    {"alerts.cache_hit_min_pct", CFG_INT, S(alerts_cache_hit_min_pct), 0, 100, "30", AIQ_CFG_WORKER,
     "Alert warning when the window's cache hit rate is below this %; 0 = off"},
    {"admin.listen", CFG_STR, S(admin_listen), 0, 0, "", AIQ_CFG_WORKER,
     "host:port for GET /metrics, /healthz, /readyz (e.g. 0.0.0.0:9464; port 0 picks one and "
     "logs it); empty = off, so several workers can share a host"},
    {"metrics.interval_ms", CFG_INT, S(metrics_interval_ms), 0, 3600000, "10000", AIQ_CFG_WORKER,
     "How often a metrics snapshot goes to <prefix>metrics; 0 = never"},
    {"log.level", CFG_STR, S(log_level), 1, 0, "info", AIQ_CFG_ALL, "debug, info, warn or error"},
};

#define N_ENTRIES       (sizeof(table) / sizeof(table[0]))
#define PASSTHRU_PREFIX "kafka.rdkafka."

static char **str_at(aiq_config_t *cfg, const cfg_entry_t *e)
{
    return (char **)((char *)cfg + e->offset);
}

static int64_t *int_at(aiq_config_t *cfg, const cfg_entry_t *e)
{
    return (int64_t *)((char *)cfg + e->offset);
}

static const cfg_entry_t *find(const char *key)
{
    for (size_t i = 0; i < N_ENTRIES; i++) {
        if (strcmp(table[i].name, key) == 0)
            return &table[i];
    }
    return NULL;
}

static int parse_int(const char *value, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (errno || end == value)
        return AIQ_EINVAL;
    while (isspace((unsigned char)*end))
        end++;
    if (*end)
        return AIQ_EINVAL;
    *out = v;
    return 0;
}

static int set_entry(aiq_config_t *cfg, const cfg_entry_t *e, const char *value, aiq_err_t *err)
{
    if (e->type == CFG_INT) {
        int64_t v;
        if (parse_int(value, &v))
            return aiq_err_set(err, AIQ_EINVAL, "%s: '%s' is not an integer", e->name, value);
        if (v < e->min || v > e->max)
            return aiq_err_set(err, AIQ_EINVAL, "%s: %lld is out of range [%lld, %lld]", e->name,
                               (long long)v, (long long)e->min, (long long)e->max);
        *int_at(cfg, e) = v;
        return 0;
    }
    if ((int64_t)strlen(value) < e->min)
        return aiq_err_set(err, AIQ_EINVAL, "%s: must not be empty", e->name);
    if (strcmp(e->name, "log.level") == 0 && (strcmp(value, "debug") && strcmp(value, "info") &&
                                              strcmp(value, "warn") && strcmp(value, "error")))
        return aiq_err_set(err, AIQ_EINVAL, "log.level: '%s' is not debug|info|warn|error", value);
    if (strcmp(e->name, "kafka.group_protocol") == 0 && strcmp(value, "classic") &&
        strcmp(value, "consumer"))
        return aiq_err_set(err, AIQ_EINVAL, "kafka.group_protocol: '%s' is not classic|consumer",
                           value);
    if (strcmp(e->name, "worker.unknown_operations") == 0 && strcmp(value, "allow") &&
        strcmp(value, "reject"))
        return aiq_err_set(err, AIQ_EINVAL, "worker.unknown_operations: '%s' is not allow|reject",
                           value);
    char *copy = strdup(value);
    if (!copy)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    free(*str_at(cfg, e));
    *str_at(cfg, e) = copy;
    return 0;
}

static int set_passthru(aiq_config_t *cfg, const char *key, const char *value, aiq_err_t *err)
{
    const char *name = key + strlen(PASSTHRU_PREFIX);
    if (!*name)
        return aiq_err_set(err, AIQ_EINVAL, "%s: missing librdkafka property name", key);
    for (int i = 0; i < cfg->n_passthru; i++) {
        if (strcmp(cfg->passthru_key[i], name) == 0) {
            char *v = strdup(value);
            if (!v)
                return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
            free(cfg->passthru_val[i]);
            cfg->passthru_val[i] = v;
            return 0;
        }
    }
    if (cfg->n_passthru == AIQ_CONFIG_PASSTHRU_MAX)
        return aiq_err_set(err, AIQ_ETOOBIG, "%s: more than %d librdkafka properties", key,
                           AIQ_CONFIG_PASSTHRU_MAX);
    char *k = strdup(name), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    }
    cfg->passthru_key[cfg->n_passthru] = k;
    cfg->passthru_val[cfg->n_passthru] = v;
    cfg->n_passthru++;
    return 0;
}

int aiq_config_set(aiq_config_t *cfg, const char *key, const char *value, aiq_err_t *err)
{
    if (strncmp(key, PASSTHRU_PREFIX, strlen(PASSTHRU_PREFIX)) == 0)
        return set_passthru(cfg, key, value, err);
    const cfg_entry_t *e = find(key);
    if (!e)
        return aiq_err_set(err, AIQ_EINVAL, "unknown setting '%s' (see --help)", key);
    return set_entry(cfg, e, value, err);
}

int aiq_config_init(aiq_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < N_ENTRIES; i++) {
        if (set_entry(cfg, &table[i], table[i].def, NULL)) {
            aiq_config_free(cfg);
            return AIQ_ENOMEM;
        }
    }
    return 0;
}

void aiq_config_free(aiq_config_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < N_ENTRIES; i++) {
        if (table[i].type == CFG_STR) {
            free(*str_at(cfg, &table[i]));
            *str_at(cfg, &table[i]) = NULL;
        }
    }
    for (int i = 0; i < cfg->n_passthru; i++) {
        free(cfg->passthru_key[i]);
        free(cfg->passthru_val[i]);
    }
    cfg->n_passthru = 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

int aiq_config_load_file(aiq_config_t *cfg, const char *path, aiq_err_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return aiq_err_set(err, AIQ_EIO, "cannot open config file %s: %s", path, strerror(errno));
    char line[4096];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            rc = aiq_err_set(err, AIQ_ETOOBIG, "%s:%d: line longer than %zu bytes", path, lineno,
                             sizeof(line) - 1);
            break;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = aiq_err_set(err, AIQ_EINVAL, "%s:%d: expected 'key = value'", path, lineno);
            break;
        }
        *eq = '\0';
        aiq_err_t e2 = {0};
        if (aiq_config_set(cfg, trim(s), trim(eq + 1), &e2)) {
            rc = aiq_err_set(err, e2.code, "%s:%d: %s", path, lineno, e2.msg);
            break;
        }
    }
    fclose(f);
    return rc;
}

static void env_name(const char *key, char *buf, size_t cap)
{
    size_t j = 0;
    for (const char *p = "AIQ_"; *p && j + 1 < cap; p++)
        buf[j++] = *p;
    for (const char *p = key; *p && j + 1 < cap; p++)
        buf[j++] = (*p == '.') ? '_' : (char)toupper((unsigned char)*p);
    buf[j] = '\0';
}

/* AIQ_KAFKA_RDKAFKA_<NAME> = kafka.rdkafka.<name>: secrets such as sasl.password can come
 * from the environment (a Kubernetes Secret) instead of a file. */
static int load_env_passthru(aiq_config_t *cfg, aiq_err_t *err)
{
    for (char **e = environ; e && *e; e++) {
        char name[256], key[sizeof(name) + sizeof(PASSTHRU_PREFIX)];
        const char *eq = strchr(*e, '=');
        if (!eq || !aiq_kprops_env_to_name(*e, name, sizeof(name)))
            continue;
        snprintf(key, sizeof(key), "%s%s", PASSTHRU_PREFIX, name);
        aiq_err_t e2 = {0};
        if (set_passthru(cfg, key, eq + 1, &e2))
            return aiq_err_set(err, e2.code, "environment %.*s: %s", (int)(eq - *e), *e, e2.msg);
    }
    return 0;
}

int aiq_config_load_env(aiq_config_t *cfg, aiq_err_t *err)
{
    const char *region = getenv("AWS_REGION");
    if (region && *region && aiq_config_set(cfg, "bedrock.region", region, err))
        return err ? err->code : AIQ_EINVAL;
    for (size_t i = 0; i < N_ENTRIES; i++) {
        char name[96];
        env_name(table[i].name, name, sizeof(name));
        const char *v = getenv(name);
        if (!v)
            continue;
        aiq_err_t e2 = {0};
        if (set_entry(cfg, &table[i], v, &e2))
            return aiq_err_set(err, e2.code, "environment %s: %s", name, e2.msg);
    }
    return load_env_passthru(cfg, err);
}

void aiq_config_print_help(FILE *out, int scope)
{
    fprintf(out, "Settings (config file 'key = value', environment variable, or --set key=value;\n"
                 "later sources win: file < environment < --set):\n\n");
    for (size_t i = 0; i < N_ENTRIES; i++) {
        const cfg_entry_t *e = &table[i];
        if (!(e->scope & scope))
            continue;
        char env[96];
        env_name(e->name, env, sizeof(env));
        fprintf(out, "  %-28s %s\n", e->name, e->help);
        if (e->type == CFG_INT)
            fprintf(out, "  %-28s default %s, range %lld..%lld, env %s\n", "", e->def,
                    (long long)e->min, (long long)e->max, env);
        else
            fprintf(out, "  %-28s default '%s', env %s\n", "", e->def, env);
    }
    if (scope & AIQ_CFG_WORKER)
        fprintf(
            out,
            "  %-28s any librdkafka property, passed through (SASL, TLS: e.g.\n"
            "  %-28s kafka.rdkafka.security.protocol = SASL_SSL), env\n"
            "  %-28s AIQ_KAFKA_RDKAFKA_<NAME> ('.' -> '_', e.g. AIQ_KAFKA_RDKAFKA_SASL_PASSWORD)\n",
            PASSTHRU_PREFIX "<name>", "", "");
}

void aiq_config_dump(const aiq_config_t *cfg, FILE *out, int scope)
{
    for (size_t i = 0; i < N_ENTRIES; i++) {
        const cfg_entry_t *e = &table[i];
        if (!(e->scope & scope))
            continue;
        if (e->type == CFG_INT)
            fprintf(out, "%s = %lld\n", e->name, (long long)*int_at((aiq_config_t *)cfg, e));
        else
            fprintf(out, "%s = %s\n", e->name, *str_at((aiq_config_t *)cfg, e));
    }
    for (int i = 0; i < cfg->n_passthru; i++) {
        /* Passed-through values can be SASL passwords: print the key only. */
        const char *k = cfg->passthru_key[i];
        int secret = strstr(k, "password") || strstr(k, "secret") || strstr(k, "key");
        fprintf(out, "%s%s = %s\n", PASSTHRU_PREFIX, k, secret ? "(hidden)" : cfg->passthru_val[i]);
    }
}
