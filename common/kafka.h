/* kafka.h — the one place aiq's Kafka clients are configured and connected: every client
 * (worker consumer and producer, breaker follower, libaiq_producer, the CLI tools) gets its
 * librdkafka conf from aiq_kafka_conf_new, and its topics' partition counts from here. */
#ifndef AIQ_KAFKA_H
#define AIQ_KAFKA_H

#include "aiq_err.h"
#include "config.h"
#include "log.h"

#include <librdkafka/rdkafka.h>

/* What a client is for; each role has one table of properties in kafka.c. */
typedef enum aiq_kafka_role {
    AIQ_KAFKA_WORKER_CONSUMER,  /* the worker's group member on the job topics */
    AIQ_KAFKA_WORKER_PRODUCER,  /* the worker's idempotent producer: results, DLQ, metrics */
    AIQ_KAFKA_BREAKER_FOLLOWER, /* the worker's group-less reader of the breaker topic */
    AIQ_KAFKA_JOB_PRODUCER,     /* libaiq_producer: idempotent, batched, compressed */
    AIQ_KAFKA_READER,           /* assign()-only reader that never commits: results, CLI */
    AIQ_KAFKA_CLI_PRODUCER,     /* aiq-admin's idempotent producer (DLQ replay, breakers) */
    AIQ_KAFKA_CLI_ADMIN,        /* aiq-admin's metadata, admin API and group queries */
    AIQ_KAFKA_ROLE_COUNT,
} aiq_kafka_role_t;

/* The explicit log context of a client: the handle's opaque points at it, so librdkafka's
 * log callback (on librdkafka's threads) finds the log whatever the owner's struct looks
 * like, and the client's own callbacks (rebalance, error, ...) get the owner back through
 * aiq_kafka_owner(). Embedded in the owner, which keeps it alive as long as the handle. */
typedef struct aiq_kafka_ctx {
    aiq_log_t *log; /* borrowed; NULL: the default logger */
    void *owner;
} aiq_kafka_ctx_t;

/* Inputs of aiq_kafka_conf_new; everything is borrowed for the call only (ctx: for the
 * handle's life). Fields a role does not use are ignored. */
typedef struct aiq_kafka_params {
    const char *brokers;   /* bootstrap.servers; required (worker roles: cfg->brokers) */
    const char *client_id; /* NULL: the role's default, else librdkafka's */
    const char *group_id;  /* READER and CLI_ADMIN: group.id (NULL: none) */
    /* Worker roles: the group, timeouts and worker id. Any role: its kafka.rdkafka.*
     * pass-through properties. May be NULL for the non-worker roles. */
    const aiq_config_t *cfg;
    const char *const *props; /* NULL-terminated name, value, ... pairs (libaiq_producer) */
    int env_props;            /* 1: also every AIQ_KAFKA_RDKAFKA_* variable (CLI tools) */
    /* WORKER_CONSUMER: the librdkafka version (rd_kafka_version() form) the options are
     * chosen for; 0: the linked one. Tests pass older ones. */
    int rdkafka_version;
    aiq_kafka_ctx_t *ctx; /* NULL: no log callback; the caller sets its own opaque */
} aiq_kafka_params_t;

/* librdkafka versions (rd_kafka_version() form) from which the worker relies on a feature. */
#define AIQ_RDKAFKA_KIP848 0x020c0000 /* 2.12.0: group.protocol=consumer is GA */
#define AIQ_RDKAFKA_REBAL_COMMIT                                                                   \
    0x020a0000 /* 2.10.0: a commit during a cooperative rebalance                                  \
                * no longer loses the assignment (#4908) */

/* 1 when the worker's consumer commits on its own timer (librdkafka >= 2.10, whose
 * auto-commit still skips every tick while a rebalance is in flight: the worker then
 * commits during rebalances too), 0 when librdkafka auto-commits. version: as in
 * aiq_kafka_params_t.rdkafka_version (0: the linked one). */
int aiq_kafka_worker_commits(int rdkafka_version);

/* Builds the conf of a role: bootstrap.servers and client.id, the role's properties and the
 * user's pass-through properties. Worker roles apply cfg's kafka.rdkafka.* first and their
 * own properties after (the consumer's offset handling must not be overridden); the other
 * roles apply theirs first, then cfg's pass-through, props, and (env_props) the environment,
 * so a user's setting wins there. With ctx, the opaque is ctx and librdkafka logs through
 * ctx->log. Returns 0 with *out (the caller owns it), or AIQ_EINVAL naming the property
 * (pass-through ones as kafka.rdkafka.<name> or the environment variable) and librdkafka's
 * reason. The worker consumer follows kafka.group_protocol: under consumer (KIP-848) the
 * broker assigns partitions and owns session and heartbeat, so partition.assignment.strategy,
 * session.timeout.ms, heartbeat.interval.ms and group.protocol.type are refused from the
 * pass-through, as is consumer itself on a librdkafka older than 2.12 (AIQ_EINVAL saying
 * why). Any thread. */
int aiq_kafka_conf_new(rd_kafka_conf_t **out, aiq_kafka_role_t role,
                       const aiq_kafka_params_t *params, aiq_err_t *err);

/* The owner stored in the aiq_kafka_ctx_t an opaque points at (NULL for NULL). */
void *aiq_kafka_owner(void *opaque);

/* Sets one property or fills err naming it ("kafka property <name>: <reason>"). */
int aiq_kafka_set(rd_kafka_conf_t *conf, const char *name, const char *value, aiq_err_t *err);

/* Creates a client and waits up to connect_ms until a broker answers, so wrong credentials,
 * a refused TLS handshake or an unreachable cluster fail at once with the reason ("Kafka
 * authentication failed: ...", "Kafka TLS failed: ...", "no answer from Kafka within N s:
 * ...") instead of as a timeout later. Call it on a fresh conf (it reads the handle's main
 * queue before anything is produced). Takes conf over, also on failure. Returns 0 with *out,
 * or AIQ_EKAFKA / AIQ_ETIMEDOUT with the reason in err. Blocks the calling thread (CLI). */
int aiq_kafka_connect(rd_kafka_t **out, rd_kafka_type_t type, rd_kafka_conf_t *conf, int connect_ms,
                      aiq_err_t *err);

/* Partition count of topic from the cluster's metadata, waiting up to timeout_ms. Returns
 * 0 with *count > 0, AIQ_ENOTFOUND when the topic does not exist (or has no partitions), or
 * AIQ_EKAFKA when the metadata request failed; err says which. Blocks the calling thread. */
int aiq_kafka_partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms, int *count,
                              aiq_err_t *err);

#endif
