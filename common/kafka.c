/* kafka.c — Kafka client configs of every aiq role, connecting, partition counts. */
#include "kafka.h"
#include "kprops.h"
#include "timeutil.h"

#include <stdio.h>
#include <string.h>

typedef struct prop {
    const char *name, *value;
} prop_t;

/* ---- the property tables, one per role ------------------------------------------------ */

static const prop_t worker_consumer_props[] = {
    /* Offsets are stored only once a record's result was acknowledged (consumer.c). */
    {"enable.auto.offset.store", "false"},
    {"auto.offset.reset", "earliest"},
    /* A resumed partition must not wait behind a long-poll fetch of idle ones. */
    {"fetch.wait.max.ms", "50"},
    /* Prefetch stays small: the worker's own backlog is the buffer that counts. */
    {"queued.max.messages.kbytes", "2048"},
    {"max.partition.fetch.bytes", "262144"},
    {NULL, NULL},
};

static const prop_t worker_producer_props[] = {
    {"enable.idempotence", "true"},   {"linger.ms", "5"}, {"compression.type", "lz4"},
    {"message.timeout.ms", "120000"}, {NULL, NULL},
};

static const prop_t breaker_follower_props[] = {
    /* assign() only: it never joins its group nor commits. */
    {"enable.auto.commit", "false"},
    {"fetch.wait.max.ms", "100"},
    {"allow.auto.create.topics", "false"},
    {NULL, NULL},
};

static const prop_t job_producer_props[] = {
    {"enable.idempotence", "true"},
    {"linger.ms", "5"},
    {"compression.type", "lz4"},
    {NULL, NULL},
};

/* A throwaway reader: assign() only, nothing committed, so it never shows up as lag nor
 * moves any group's offsets; partition EOFs tell it where the end is. */
static const prop_t reader_props[] = {
    {"enable.auto.commit", "false"},
    {"enable.auto.offset.store", "false"},
    {"enable.partition.eof", "true"},
    {NULL, NULL},
};

/* Idempotent: a retried send never puts the same job twice into the job topic. */
static const prop_t cli_producer_props[] = {
    {"enable.idempotence", "true"},
    {NULL, NULL},
};

static const prop_t no_props[] = {{NULL, NULL}};

int aiq_kafka_set(rd_kafka_conf_t *conf, const char *name, const char *value, aiq_err_t *err)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        return aiq_err_set(err, AIQ_EINVAL, "kafka property %s: %s", name, errstr);
    return 0;
}

static int set_table(rd_kafka_conf_t *conf, const prop_t *t, aiq_err_t *err)
{
    for (; t->name; t++)
        if (aiq_kafka_set(conf, t->name, t->value, err))
            return AIQ_EINVAL;
    return 0;
}

/* Client options the consumer protocol (KIP-848) leaves to the broker; librdkafka >= 2.12
 * refuses them there, aiq says so first and names the broker's settings instead. */
static const char *const consumer_forbidden[] = {
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol.type",
};

static int linked_or(int version)
{
    return version ? version : rd_kafka_version();
}

int aiq_kafka_worker_commits(int rdkafka_version)
{
    return linked_or(rdkafka_version) >= AIQ_RDKAFKA_REBAL_COMMIT;
}

static int is_consumer_protocol(const aiq_config_t *cfg)
{
    return cfg->group_protocol && strcmp(cfg->group_protocol, "consumer") == 0;
}

/* Runs before the pass-through is applied, so an option librdkafka does not know (2.0.2 has
 * no group.protocol) is still refused with the reason that matters. */
static int check_group_protocol(const aiq_config_t *cfg, int version, aiq_err_t *err)
{
    int consumer = is_consumer_protocol(cfg);
    size_t n = sizeof(consumer_forbidden) / sizeof(*consumer_forbidden);
    for (int i = 0; i < cfg->n_passthru; i++) {
        const char *k = cfg->passthru_key[i];
        if (strcmp(k, "group.protocol") == 0)
            return aiq_err_set(err, AIQ_EINVAL,
                               "kafka.rdkafka.group.protocol: set kafka.group_protocol "
                               "(classic|consumer) instead");
        for (size_t j = 0; consumer && j < n; j++)
            if (strcmp(k, consumer_forbidden[j]) == 0)
                return aiq_err_set(err, AIQ_EINVAL,
                                   "kafka.rdkafka.%s: not allowed with kafka.group_protocol="
                                   "consumer (KIP-848: the broker assigns partitions and sets "
                                   "group.consumer.session.timeout.ms and "
                                   "group.consumer.heartbeat.interval.ms)",
                                   k);
    }
    if (consumer && version < AIQ_RDKAFKA_KIP848)
        return aiq_err_set(err, AIQ_EINVAL,
                           "kafka.group_protocol=consumer needs librdkafka >= 2.12.0 (KIP-848), "
                           "this worker has %d.%d.%d: build with tools/librdkafka.sh and "
                           "-DAIQ_RDKAFKA_PREFIX, or use kafka.group_protocol=classic",
                           (version >> 24) & 0xff, (version >> 16) & 0xff, (version >> 8) & 0xff);
    return 0;
}

/* The worker's group membership. kafka.group_protocol=consumer (KIP-848) leaves the
 * assignor and the session to the broker: this is the one function that changes then.
 * Static membership (group.instance.id) under both. */
static int worker_group_options(rd_kafka_conf_t *conf, const aiq_config_t *cfg, aiq_err_t *err)
{
    if (aiq_kafka_set(conf, "group.id", cfg->group_id, err))
        return AIQ_EINVAL;
    if (is_consumer_protocol(cfg)) {
        if (aiq_kafka_set(conf, "group.protocol", "consumer", err))
            return AIQ_EINVAL;
    } else {
        char session[32];
        snprintf(session, sizeof(session), "%lld", (long long)cfg->session_timeout_ms);
        if (aiq_kafka_set(conf, "partition.assignment.strategy", "cooperative-sticky", err) ||
            aiq_kafka_set(conf, "session.timeout.ms", session, err))
            return AIQ_EINVAL;
    }
    if (cfg->group_instance_id && cfg->group_instance_id[0] &&
        aiq_kafka_set(conf, "group.instance.id", cfg->group_instance_id, err))
        return AIQ_EINVAL;
    return 0;
}

/* How the offsets the worker stores get committed. librdkafka's auto-commit skips every tick
 * while a rebalance is in flight, where a commit would meet a new generation and librdkafka
 * before 2.10 would declare the whole assignment lost; from 2.10 on the worker commits on
 * its own timer (consumer.c), also during rebalances, so a long one does not pile up
 * finished but uncommitted jobs. */
static int worker_commit_options(rd_kafka_conf_t *conf, const aiq_config_t *cfg, int version,
                                 aiq_err_t *err)
{
    char commit_ms[32];
    snprintf(commit_ms, sizeof(commit_ms), "%lld", (long long)cfg->commit_interval_ms);
    const char *auto_commit = aiq_kafka_worker_commits(version) ? "false" : "true";
    if (aiq_kafka_set(conf, "enable.auto.commit", auto_commit, err) ||
        aiq_kafka_set(conf, "auto.commit.interval.ms", commit_ms, err))
        return AIQ_EINVAL;
    return 0;
}

static int worker_consumer_options(rd_kafka_conf_t *conf, const aiq_kafka_params_t *pa,
                                   aiq_err_t *err)
{
    int version = linked_or(pa->rdkafka_version);
    return worker_group_options(conf, pa->cfg, err) ||
                   worker_commit_options(conf, pa->cfg, version, err)
               ? AIQ_EINVAL
               : 0;
}

static int breaker_follower_options(rd_kafka_conf_t *conf, const aiq_kafka_params_t *pa,
                                    aiq_err_t *err)
{
    /* librdkafka wants a group id for assign(); this one never joins or commits. */
    char group[300];
    snprintf(group, sizeof(group), "aiq-breakers-%s", pa->cfg->worker_id);
    return aiq_kafka_set(conf, "group.id", group, err);
}

static int group_option(rd_kafka_conf_t *conf, const aiq_kafka_params_t *pa, aiq_err_t *err)
{
    return pa->group_id ? aiq_kafka_set(conf, "group.id", pa->group_id, err) : 0;
}

typedef struct role {
    const prop_t *props;
    int worker; /* needs params->cfg; its pass-through goes first */
    /* How client.id is made when params->client_id is NULL: the fixed id, or (when
     * id_suffix is set) the worker id plus the suffix; NULL and NULL: librdkafka's. */
    const char *client_id, *id_suffix;
    int (*options)(rd_kafka_conf_t *conf, const aiq_kafka_params_t *pa, aiq_err_t *err);
} role_t;

static const role_t roles[AIQ_KAFKA_ROLE_COUNT] = {
    [AIQ_KAFKA_WORKER_CONSUMER] = {worker_consumer_props, 1, NULL, "", worker_consumer_options},
    [AIQ_KAFKA_WORKER_PRODUCER] = {worker_producer_props, 1, NULL, "-producer", NULL},
    [AIQ_KAFKA_BREAKER_FOLLOWER] = {breaker_follower_props, 1, "aiq-breakers", NULL,
                                    breaker_follower_options},
    [AIQ_KAFKA_JOB_PRODUCER] = {job_producer_props, 0, "aiq-producer", NULL, NULL},
    [AIQ_KAFKA_READER] = {reader_props, 0, NULL, NULL, group_option},
    [AIQ_KAFKA_CLI_PRODUCER] = {cli_producer_props, 0, NULL, NULL, NULL},
    [AIQ_KAFKA_CLI_ADMIN] = {no_props, 0, NULL, NULL, group_option},
};

/* ---- building ------------------------------------------------------------------------- */

static void on_rdkafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    const aiq_kafka_ctx_t *ctx = rd_kafka_opaque(rk);
    aiq_log_level_t lv = level <= 3 ? AIQ_LOG_ERROR : level <= 5 ? AIQ_LOG_WARN : AIQ_LOG_DEBUG;
    aiq_logc(ctx ? ctx->log : NULL, lv, fac, "librdkafka %s: %s", fac, buf);
}

void *aiq_kafka_owner(void *opaque)
{
    return opaque ? ((aiq_kafka_ctx_t *)opaque)->owner : NULL;
}

static int set_base(rd_kafka_conf_t *conf, const role_t *r, const aiq_kafka_params_t *pa,
                    aiq_err_t *err)
{
    char id[300];
    const char *client_id = pa->client_id ? pa->client_id : r->client_id;
    if (!client_id && r->id_suffix) {
        snprintf(id, sizeof(id), "%s%s", pa->cfg->worker_id, r->id_suffix);
        client_id = id;
    }
    if (aiq_kafka_set(conf, "bootstrap.servers", pa->brokers, err) ||
        (client_id && aiq_kafka_set(conf, "client.id", client_id, err)))
        return AIQ_EINVAL;
    return 0;
}

static int set_passthru(rd_kafka_conf_t *conf, const aiq_config_t *cfg, aiq_err_t *err)
{
    char errstr[512];
    for (int i = 0; cfg && i < cfg->n_passthru; i++)
        if (rd_kafka_conf_set(conf, cfg->passthru_key[i], cfg->passthru_val[i], errstr,
                              sizeof(errstr)) != RD_KAFKA_CONF_OK)
            return aiq_err_set(err, AIQ_EINVAL, "kafka.rdkafka.%s: %s", cfg->passthru_key[i],
                               errstr);
    return 0;
}

static int set_pairs(rd_kafka_conf_t *conf, const char *const *props, aiq_err_t *err)
{
    for (; props && props[0] && props[1]; props += 2)
        if (aiq_kafka_set(conf, props[0], props[1], err))
            return AIQ_EINVAL;
    return 0;
}

static int set_role(rd_kafka_conf_t *conf, const role_t *r, const aiq_kafka_params_t *pa,
                    aiq_err_t *err)
{
    if (set_table(conf, r->props, err) || (r->options && r->options(conf, pa, err)))
        return AIQ_EINVAL;
    return 0;
}

static int build(rd_kafka_conf_t *conf, const role_t *r, const aiq_kafka_params_t *pa,
                 aiq_err_t *err)
{
    if (set_base(conf, r, pa, err))
        return AIQ_EINVAL;
    if (r->worker)
        return set_passthru(conf, pa->cfg, err) || set_role(conf, r, pa, err) ? AIQ_EINVAL : 0;
    if (set_role(conf, r, pa, err) || set_passthru(conf, pa->cfg, err) ||
        set_pairs(conf, pa->props, err) || (pa->env_props && aiq_kprops_apply_env(conf, err)))
        return AIQ_EINVAL;
    return 0;
}

int aiq_kafka_conf_new(rd_kafka_conf_t **out, aiq_kafka_role_t role,
                       const aiq_kafka_params_t *params, aiq_err_t *err)
{
    if ((unsigned)role >= AIQ_KAFKA_ROLE_COUNT)
        return aiq_err_set(err, AIQ_EINVAL, "kafka: unknown client role %d", (int)role);
    const role_t *r = &roles[role];
    if (!params->brokers || !params->brokers[0])
        return aiq_err_set(err, AIQ_EINVAL, "kafka.brokers: required");
    if (r->worker && !params->cfg)
        return aiq_err_set(err, AIQ_EINVAL, "kafka: a worker client needs the worker's config");
    if (role == AIQ_KAFKA_WORKER_CONSUMER &&
        check_group_protocol(params->cfg, linked_or(params->rdkafka_version), err))
        return AIQ_EINVAL;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    if (build(conf, r, params, err)) {
        rd_kafka_conf_destroy(conf);
        return AIQ_EINVAL;
    }
    if (params->ctx) {
        rd_kafka_conf_set_opaque(conf, params->ctx);
        rd_kafka_conf_set_log_cb(conf, on_rdkafka_log);
    }
    *out = conf;
    return 0;
}

/* ---- connecting (CLI tools) ------------------------------------------------------------ */

/* Events of a fresh handle's main queue: errors only (nothing was produced yet). Returns 1
 * for an error retrying cannot cure, with its text in last. */
static int drain_errors(rd_kafka_queue_t *q, char *last, size_t cap, int *tls)
{
    rd_kafka_event_t *ev;
    int permanent = 0;
    while (!permanent && (ev = rd_kafka_queue_poll(q, 0))) {
        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_ERROR) {
            rd_kafka_resp_err_t e = rd_kafka_event_error(ev);
            /* "1/1 brokers are down" says less than the error that brought them down. */
            if (e != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || !last[0])
                snprintf(last, cap, "%s", rd_kafka_event_error_string(ev));
            *tls = e == RD_KAFKA_RESP_ERR__SSL;
            permanent =
                e == RD_KAFKA_RESP_ERR__AUTHENTICATION || *tls || rd_kafka_event_error_is_fatal(ev);
        }
        rd_kafka_event_destroy(ev);
    }
    return permanent;
}

static int wait_connected(rd_kafka_t *rk, int connect_ms, aiq_err_t *err)
{
    rd_kafka_queue_t *q = rd_kafka_queue_get_main(rk);
    int64_t until = aiq_mono_ms() + connect_ms;
    char last[400] = "";
    int tls = 0, rc = 0;
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        if (rd_kafka_metadata(rk, 0, NULL, &md, 500) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_metadata_destroy(md);
            break;
        }
        if (drain_errors(q, last, sizeof(last), &tls)) {
            rc = aiq_err_set(err, AIQ_EKAFKA, "Kafka %s failed: %s", tls ? "TLS" : "authentication",
                             last);
            break;
        }
        if (aiq_mono_ms() >= until) {
            /* librdkafka 2.0 logged a security.protocol hint itself when a listener hung up
             * on the first request; newer ones only log that the peer closed it. */
            const char *hint = strstr(last, "security.protocol")
                                   ? ""
                                   : " (is the broker up, and does security.protocol match "
                                     "its listener?)";
            rc = aiq_err_set(err, AIQ_ETIMEDOUT, "no answer from Kafka within %d s%s%s%s",
                             connect_ms / 1000, last[0] ? ": " : "", last, hint);

            break;
        }
    }
    rd_kafka_queue_destroy(q);
    return rc;
}

int aiq_kafka_connect(rd_kafka_t **out, rd_kafka_type_t type, rd_kafka_conf_t *conf, int connect_ms,
                      aiq_err_t *err)
{
    char errstr[512];
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return aiq_err_set(err, AIQ_EKAFKA, "%s", errstr);
    }
    int rc = wait_connected(rk, connect_ms, err);
    if (rc) {
        rd_kafka_destroy(rk);
        return rc;
    }
    *out = rk;
    return 0;
}

/* ---- metadata ------------------------------------------------------------------------- */

int aiq_kafka_partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms, int *count,
                              aiq_err_t *err)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt)
        return aiq_err_set(err, AIQ_EKAFKA, "topic %s: %s", topic,
                           rd_kafka_err2str(rd_kafka_last_error()));
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (e)
        return aiq_err_set(err, AIQ_EKAFKA, "metadata for %s: %s", topic, rd_kafka_err2str(e));
    int rc = 0;
    if (md->topic_cnt == 1 && !md->topics[0].err && md->topics[0].partition_cnt > 0)
        *count = md->topics[0].partition_cnt;
    else
        rc = aiq_err_set(err, AIQ_ENOTFOUND, "topic %s: %s", topic,
                         md->topic_cnt && md->topics[0].err ? rd_kafka_err2str(md->topics[0].err)
                                                            : "not found");
    rd_kafka_metadata_destroy(md);
    return rc;
}
