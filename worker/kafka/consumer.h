/* consumer.h — the worker's Kafka consumer: subscribes to the four priority topics in one
 * group, hands records to the loop, pauses fetching when the local backlog is full, and
 * stores each partition's offset only up to its lowest unfinished record. Loop thread. */
#ifndef AIQ_CONSUMER_H
#define AIQ_CONSUMER_H

#include "aiq_err.h"
#include "config.h"
#include "log.h"
#include "topics.h"

#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <uv.h>

typedef struct aiq_consumer aiq_consumer_t;

/* Where a record came from, enough to finish it later: generation changes whenever the
 * partition is revoked, so a late finish of a revoked record is ignored. */
typedef struct aiq_consumer_ref {
    int prio;
    int32_t partition;
    int64_t offset;
    uint32_t generation;
} aiq_consumer_ref_t;

typedef struct aiq_consumer_hooks {
    /* A record arrived; takes msg (destroy with rd_kafka_message_destroy). */
    void (*on_record)(void *opaque, rd_kafka_message_t *msg, const aiq_consumer_ref_t *ref);
    /* This partition was revoked or lost: drop its work that has not started (calling
     * aiq_consumer_drop for each record). Running jobs may finish; on a revoke the
     * hand-over waits for them up to worker.revoke_timeout_ms. */
    void (*on_revoked)(void *opaque, int prio, int32_t partition);
    /* The consumer hit a fatal error (librdkafka will not consume again): why, with a
     * hint where one helps. May be NULL. Called once, on the loop thread. */
    void (*on_fatal)(void *opaque, const char *why);
    void *opaque;
} aiq_consumer_hooks_t;

int aiq_consumer_new(aiq_consumer_t **out, uv_loop_t *loop, const aiq_config_t *cfg, aiq_log_t *log,
                     const aiq_consumer_hooks_t *hooks, aiq_err_t *err);

/* Subscribes to the job topics and starts watching the queue. */
int aiq_consumer_start(aiq_consumer_t *c, aiq_err_t *err);

/* The record ref is finished (its result acknowledged): advance the stored offset if it
 * was the lowest unfinished one. Ignored for revoked partitions. */
void aiq_consumer_done(aiq_consumer_t *c, const aiq_consumer_ref_t *ref);

/* The record ref will never run here (dropped from the backlog because its partition was
 * revoked or the worker drains): it no longer holds up a revoked partition's hand-over, and
 * its offset is never committed by this worker. */
void aiq_consumer_drop(aiq_consumer_t *c, const aiq_consumer_ref_t *ref);

/* Pauses (want=0) or resumes (want=1) fetching on the assigned partitions of one priority
 * (prio < 0: all); partitions assigned later follow the current state. */
void aiq_consumer_set_fetching(aiq_consumer_t *c, int prio, int want);

/* True while this member holds an assignment from the group (possibly empty, when the
 * group has more members than partitions): from an assign until its partitions are lost. */
int aiq_consumer_joined(const aiq_consumer_t *c);

/* Whether the consumer can do its work: 0 when it is a member of the group (its assignment
 * may legitimately be empty) and Kafka is reachable; else 1 with the reason in why (cap
 * bytes). Kafka counts as unreachable from librdkafka's "all brokers down" until a record
 * or an assignment arrives, or a metadata request (sent from here while down, one at a
 * time, on a libuv pool thread) is answered. Loop thread. */
int aiq_consumer_unready(aiq_consumer_t *c, char *why, size_t cap);

/* Job partitions currently assigned. */
int aiq_consumer_assigned(const aiq_consumer_t *c);

#define AIQ_CONSUMER_OLDEST_MAX 256

/* Where the consumer stands: records not yet fetched per priority (end offset minus fetch
 * position, from what the last fetches reported), the age of the oldest unfinished record
 * of each partition that has one (a stuck job shows here while lag looks healthy), and
 * rebalance callbacks served. */
typedef struct aiq_consumer_lag {
    int64_t lag[AIQ_PRIO_COUNT];
    uint64_t rebalances;
    int n_oldest;
    struct {
        int prio;
        int32_t partition;
        int64_t age_ms;
    } oldest[AIQ_CONSUMER_OLDEST_MAX];
} aiq_consumer_lag_t;

void aiq_consumer_lag(aiq_consumer_t *c, aiq_consumer_lag_t *out);

/* Records received and not yet finished, over all partitions. */
size_t aiq_consumer_pending(const aiq_consumer_t *c);

/* Commits stored offsets, leaves the group and destroys the consumer. Blocks (shutdown
 * only); serves the final rebalance. NULL is a no-op. Handle memory is released once the
 * loop has closed the watchers. */
void aiq_consumer_close(aiq_consumer_t *c);

#endif
