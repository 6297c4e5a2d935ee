/* config.h — aiq's one configuration table: every setting with its type, bounds,
 * default, help and environment variable. The table drives parsing, validation and --help. */
#ifndef AIQ_CONFIG_H
#define AIQ_CONFIG_H

#include "aiq_err.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define AIQ_CONFIG_PASSTHRU_MAX 64

/* Which binaries a setting concerns (for --help). */
enum { AIQ_CFG_WORKER = 1, AIQ_CFG_CLIENT = 2, AIQ_CFG_ALL = 3 };

typedef struct aiq_config {
    /* kafka */
    char *brokers;
    char *topic_prefix;
    char *group_id;
    char *group_instance_id;
    int64_t session_timeout_ms;
    char *group_protocol; /* "classic" or "consumer" (KIP-848) */
    /* worker */
    char *worker_id;
    int64_t max_inflight;
    int64_t model_max_inflight;
    int64_t max_unacked;
    int64_t backlog;
    int64_t max_job_bytes;
    int64_t default_timeout_ms;
    int64_t max_clock_skew_ms;
    char *reply_topics; /* patterns reply_to may name ({prefix}, trailing *) */
    int64_t dlq_max_record_bytes;
    int64_t drain_timeout_ms;
    int64_t revoke_timeout_ms;
    int64_t commit_interval_ms;
    int64_t aging_ms;
    int64_t max_attempts;
    int64_t retry_base_ms;
    int64_t retry_max_ms;
    char *operations_file;    /* "" = built-in (config/operations.json as shipped) */
    char *unknown_operations; /* "allow" | "reject" */
    int64_t retry_throttle_floor_ms;
    int64_t retry_budget;
    int64_t model_error_retries;
    int64_t requeue;
    /* circuit breaker */
    int64_t breaker_failures;
    int64_t breaker_failure_rate_pct;
    int64_t breaker_min_calls;
    int64_t breaker_window_ms;
    int64_t breaker_cooldown_ms;
    int64_t breaker_probes;
    char *breaker_path;
    /* bedrock */
    char *bedrock_endpoint;
    char *region;
    char *default_model;
    int64_t default_max_tokens;
    int64_t request_timeout_ms;
    int64_t min_concurrency;
    int64_t max_concurrency;
    int64_t adaptive;
    int64_t fips; /* bedrock.fips */
    char *sts_endpoint;
    int64_t credentials_refresh_s;
    /* response cache (common/cache.h) */
    char *cache_path;
    int64_t cache_enabled;
    int64_t cache_max_bytes;
    int64_t cache_ttl_s;
    int64_t cache_stale_grace_s;
    int64_t cache_compress_min;
    int64_t cache_sweep_interval_ms;
    /* alerts */
    int64_t alerts_enabled;
    int64_t alerts_window_ms;
    int64_t alerts_clear_hold_ms;
    int64_t alerts_min_jobs;
    int64_t alerts_response_p95_warn_ms, alerts_response_p95_crit_ms;
    int64_t alerts_error_rate_warn_pct, alerts_error_rate_crit_pct;
    int64_t alerts_queue_depth_warn, alerts_queue_depth_crit;
    int64_t alerts_cache_hit_min_pct;
    /* ops endpoints */
    char *admin_listen;
    int64_t metrics_interval_ms;
    /* logging */
    char *log_level;
    /* librdkafka properties passed through verbatim ("kafka.rdkafka.<name>") */
    int n_passthru;
    char *passthru_key[AIQ_CONFIG_PASSTHRU_MAX];
    char *passthru_val[AIQ_CONFIG_PASSTHRU_MAX];
} aiq_config_t;

/* Fills every setting with its default. Returns 0 or AIQ_ENOMEM. Free with aiq_config_free. */
int aiq_config_init(aiq_config_t *cfg);
void aiq_config_free(aiq_config_t *cfg);

/* Sets one setting by name ("worker.max_inflight") from text, validating type and bounds.
 * Returns 0, or AIQ_EINVAL (AIQ_ETOOBIG past AIQ_CONFIG_PASSTHRU_MAX pass-through
 * properties) with a message naming the key. */
int aiq_config_set(aiq_config_t *cfg, const char *key, const char *value, aiq_err_t *err);

/* Reads "key = value" lines ('#' starts a comment). Errors name file and line. */
int aiq_config_load_file(aiq_config_t *cfg, const char *path, aiq_err_t *err);

/* Applies every AIQ_* environment variable of the table (and AWS_REGION for the region
 * when AIQ_BEDROCK_REGION is unset). */
int aiq_config_load_env(aiq_config_t *cfg, aiq_err_t *err);

/* Prints every setting of the given scope: name, env var, default, bounds, help. */
void aiq_config_print_help(FILE *out, int scope);

/* Prints the effective configuration (for --print-config); never prints secrets. */
void aiq_config_dump(const aiq_config_t *cfg, FILE *out, int scope);

#endif
