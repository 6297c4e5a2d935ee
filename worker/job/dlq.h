/* dlq.h — dead letters that always fit the dead-letter topic: a value over the cap is cut,
 * and headers carry its full size and SHA-256, so an operator can fetch the original from its
 * topic (partition, offset in the other headers) while retention lasts. Pure; any thread. */
#ifndef AIQ_DLQ_H
#define AIQ_DLQ_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

/* What the fallback dead letter keeps of the value when the fitted one was refused for good:
 * enough to recognise the record, small enough for any topic. */
#define AIQ_DLQ_MINIMAL_BYTES 1024

/* Room kept for the key, the aiq.dlq.* headers (the error message is at most 512 bytes)
 * and the record and batch framing. */
#define AIQ_DLQ_OVERHEAD 8192

/* Value bytes a dead letter may carry: the smallest of the DLQ topic's max.message.bytes
 * (topic_max, <= 0 when unknown), the producer's message.max.bytes (producer_max) and
 * dlq.max_record_bytes (own_max), less AIQ_DLQ_OVERHEAD and the growth lz4 gives data that
 * does not compress (the broker checks the compressed batch). At least AIQ_DLQ_MINIMAL_BYTES. */
size_t aiq_dlq_value_cap(int64_t topic_max, int64_t producer_max, int64_t own_max);

/* How many of len value bytes a dead letter keeps: up to cap, or AIQ_DLQ_MINIMAL_BYTES for
 * the minimal letter. */
size_t aiq_dlq_keep(size_t len, size_t cap, int minimal);

/* The hex SHA-256 of len bytes at val (val may be NULL when len is 0) into out. Returns 0, or
 * AIQ_ECRYPTO when libcrypto failed (out is then ""). */
int aiq_dlq_sha256_hex(const void *val, size_t len, char out[65]);

/* Adds to h: aiq.dlq.original-size (len), aiq.dlq.original-sha256 (sha_hex, of all len
 * bytes), aiq.dlq.truncated ("true" when kept < len, else "false") and, when minimal,
 * aiq.dlq.minimal = "true" with aiq.dlq.write-error = why the full letter was refused. */
void aiq_dlq_add_size_headers(rd_kafka_headers_t *h, size_t len, size_t kept, const char *sha_hex,
                              int minimal, const char *write_error);

#endif
