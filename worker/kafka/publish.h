/* publish.h — the worker's idempotent Kafka producer: results, DLQ records. Delivery
 * reports come back to the loop thread through the queue bridge (bridge.h). */
#ifndef AIQ_PUBLISH_H
#define AIQ_PUBLISH_H

#include "aiq_err.h"
#include "config.h"
#include "log.h"

#include <librdkafka/rdkafka.h>
#include <uv.h>

typedef struct aiq_publisher aiq_publisher_t;

/* Delivery outcome, on the loop thread: err is RD_KAFKA_RESP_ERR_NO_ERROR once the broker
 * acknowledged the record; otherwise errstr says why and permanent tells whether sending
 * the same record again can ever succeed (unknown topic, too large, ...). */
typedef void (*aiq_publish_cb)(void *opaque, rd_kafka_resp_err_t err, int permanent,
                               const char *errstr);

/* Called once (loop thread) when the producer hit a fatal error and must be recreated. */
typedef void (*aiq_publish_fatal_cb)(void *opaque, const char *errstr);

int aiq_publisher_new(aiq_publisher_t **out, uv_loop_t *loop, const aiq_config_t *cfg,
                      aiq_log_t *log, aiq_publish_fatal_cb on_fatal, void *fatal_opaque,
                      aiq_err_t *err);

/* Queues one record; copies key and value; takes hdrs (also when it fails; may be NULL).
 * cb runs exactly once per successful call. When the record could not be queued (then cb
 * does not run) returns AIQ_ETOOBIG (larger than the producer's message.max.bytes) or
 * AIQ_ENOTFOUND (a topic known to be missing or refused), which no retry heals, or
 * AIQ_EKAFKA (the local queue is full, ...), which a later retry may. Loop thread. */
int aiq_publisher_send(aiq_publisher_t *p, const char *topic, const void *key, size_t klen,
                       const void *val, size_t vlen, rd_kafka_headers_t *hdrs, aiq_publish_cb cb,
                       void *opaque, aiq_err_t *err);

/* The producer's message.max.bytes: no record larger than this (key, value, headers) is
 * queued. */
int64_t aiq_publisher_max_message_bytes(const aiq_publisher_t *p);

/* Reads topic's max.message.bytes (admin DescribeConfigs) into *out, blocking up to
 * timeout_ms: for the start only, before the loop runs. Returns 0, AIQ_ENOTFOUND (no such
 * topic), AIQ_ETIMEDOUT or AIQ_EKAFKA (e.g. not authorised to describe it). */
int aiq_publisher_topic_max_bytes(aiq_publisher_t *p, const char *topic, int timeout_ms,
                                  int64_t *out, aiq_err_t *err);

/* Learns the partitions and leaders of topics (metadata, blocking up to timeout_ms in all:
 * for the start only, before the loop runs), so the first result is not held back while
 * the producer looks its topic up. Returns how many topics it learned; a topic it could
 * not learn is looked up again on first use, as without this call. */
int aiq_publisher_warm(aiq_publisher_t *p, const char *const *topics, int n, int timeout_ms);

/* Records queued or in flight. */
int aiq_publisher_outq(const aiq_publisher_t *p);

/* Blocks up to timeout_ms until everything queued was acknowledged, serving the delivery
 * callbacks. For shutdown only. Returns 0 or AIQ_ETIMEDOUT. */
int aiq_publisher_flush(aiq_publisher_t *p, int timeout_ms);

/* Stops the queue bridge and destroys the producer (unsent records are purged, their
 * callbacks never run). The bridge's memory goes once the loop closed its watchers. NULL is
 * a no-op. */
void aiq_publisher_free(aiq_publisher_t *p);

#endif
