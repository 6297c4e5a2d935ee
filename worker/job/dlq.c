#include "dlq.h"
#include "aiq_err.h"

#include <openssl/evp.h>
#include <stdio.h>

size_t aiq_dlq_value_cap(int64_t topic_max, int64_t producer_max, int64_t own_max)
{
    int64_t m = own_max;
    if (topic_max > 0 && topic_max < m)
        m = topic_max;
    if (producer_max > 0 && producer_max < m)
        m = producer_max;
    m -= AIQ_DLQ_OVERHEAD;
    /* lz4 grows incompressible input by at most 1/255 plus a few bytes of framing. */
    m = m - m / 255 - 64;
    return m > AIQ_DLQ_MINIMAL_BYTES ? (size_t)m : AIQ_DLQ_MINIMAL_BYTES;
}

size_t aiq_dlq_keep(size_t len, size_t cap, int minimal)
{
    if (minimal && cap > AIQ_DLQ_MINIMAL_BYTES)
        cap = AIQ_DLQ_MINIMAL_BYTES;
    return len < cap ? len : cap;
}

int aiq_dlq_sha256_hex(const void *val, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    out[0] = '\0';
    if (!EVP_Digest(len ? val : "", len, md, &n, EVP_sha256(), NULL) || n != sizeof(md))
        return AIQ_ECRYPTO;
    for (unsigned i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

void aiq_dlq_add_size_headers(rd_kafka_headers_t *h, size_t len, size_t kept, const char *sha_hex,
                              int minimal, const char *write_error)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%zu", len);
    rd_kafka_header_add(h, "aiq.dlq.original-size", -1, buf, -1);
    if (sha_hex && sha_hex[0])
        rd_kafka_header_add(h, "aiq.dlq.original-sha256", -1, sha_hex, -1);
    rd_kafka_header_add(h, "aiq.dlq.truncated", -1, kept < len ? "true" : "false", -1);
    if (minimal) {
        rd_kafka_header_add(h, "aiq.dlq.minimal", -1, "true", -1);
        if (write_error && write_error[0])
            rd_kafka_header_add(h, "aiq.dlq.write-error", -1, write_error, -1);
    }
}
