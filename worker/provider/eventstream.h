/* eventstream.h — AWS event-stream framing (application/vnd.amazon.eventstream), as
 * ConverseStream answers: an incremental decoder that checks both CRCs and hands out each
 * message's :event-type / :message-type / :exception-type and payload. Any thread. */
#ifndef AIQ_EVENTSTREAM_H
#define AIQ_EVENTSTREAM_H

#include "aiq_err.h"

#include <stddef.h>
#include <stdint.h>

#define AIQ_ES_MESSAGE_MAX (1u << 20) /* larger messages are refused (AWS's cap is 16 MiB) */

typedef struct aiq_es_msg {
    char event_type[64];     /* :event-type, "" when absent */
    char message_type[16];   /* :message-type: "event", "exception" or "error" */
    char exception_type[64]; /* :exception-type (or :error-code), "" when absent */
    const char *payload;     /* borrowed for the callback */
    size_t payload_len;
} aiq_es_msg_t;

/* Returns 0 to go on, non-zero to stop the feed (returned by aiq_es_feed). */
typedef int (*aiq_es_on_msg)(void *opaque, const aiq_es_msg_t *msg);

/* Zero-initialise; aiq_es_clear frees. */
typedef struct aiq_es {
    unsigned char *buf;
    size_t len, cap;
} aiq_es_t;

/* Appends n bytes and calls cb for every complete message, in order. Returns 0, the
 * callback's non-zero value, AIQ_EINVAL on a broken frame (a CRC or length that does not
 * add up; err says which) or AIQ_ETOOBIG / AIQ_ENOMEM. */
int aiq_es_feed(aiq_es_t *es, const void *data, size_t n, aiq_es_on_msg cb, void *opaque,
                aiq_err_t *err);

/* Bytes of an incomplete message still buffered (0 at a clean end). */
size_t aiq_es_pending(const aiq_es_t *es);

void aiq_es_clear(aiq_es_t *es);

/* CRC-32 (IEEE 802.3, as the framing uses), continuing from crc (0 to start). */
uint32_t aiq_es_crc32(uint32_t crc, const void *data, size_t n);

/* Encodes one message with string headers (for tests and tools): appends to *buf (malloc'd,
 * grown; *len its length). Returns 0 or AIQ_ENOMEM / AIQ_EINVAL. */
int aiq_es_encode(unsigned char **buf, size_t *len, const char *const *names,
                  const char *const *values, size_t n, const void *payload, size_t payload_len);

#endif
