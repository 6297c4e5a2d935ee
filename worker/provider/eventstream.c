#include "eventstream.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PRELUDE 12 /* total length, headers length, prelude CRC */

uint32_t aiq_es_crc32(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = data;
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Bytes of a header value of type t at p (the 2-byte length included), or -1. */
static long value_len(unsigned char t, const unsigned char *p, size_t left)
{
    static const long fixed[] = {0, 0, 1, 2, 4, 8, -2, -2, 8, 16};
    if (t > 9)
        return -1;
    if (fixed[t] >= 0)
        return fixed[t];
    return left < 2 ? -1 : 2 + ((long)p[0] << 8 | p[1]);
}

static void copy_str(char *dst, size_t cap, const unsigned char *v, size_t n)
{
    n = n < cap - 1 ? n : cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static int parse_headers(const unsigned char *p, size_t n, aiq_es_msg_t *m, aiq_err_t *err)
{
    size_t i = 0;
    while (i < n) {
        size_t nl = p[i++];
        if (nl == 0 || i + nl + 1 > n)
            return aiq_err_set(err, AIQ_EINVAL, "event stream: header name runs past the headers");
        const unsigned char *name = p + i;
        i += nl;
        unsigned char type = p[i++];
        long vl = value_len(type, p + i, n - i);
        if (vl < 0 || i + (size_t)vl > n)
            return aiq_err_set(err, AIQ_EINVAL, "event stream: bad header value");
        if (type == 7) {
            const unsigned char *v = p + i + 2;
            size_t len = (size_t)vl - 2;
            if (nl == 11 && memcmp(name, ":event-type", 11) == 0)
                copy_str(m->event_type, sizeof(m->event_type), v, len);
            else if (nl == 13 && memcmp(name, ":message-type", 13) == 0)
                copy_str(m->message_type, sizeof(m->message_type), v, len);
            else if ((nl == 15 && memcmp(name, ":exception-type", 15) == 0) ||
                     (nl == 11 && memcmp(name, ":error-code", 11) == 0))
                copy_str(m->exception_type, sizeof(m->exception_type), v, len);
        }
        i += (size_t)vl;
    }
    return 0;
}

/* One complete message at p of total bytes. */
static int one_message(const unsigned char *p, size_t total, aiq_es_on_msg cb, void *opaque,
                       aiq_err_t *err)
{
    uint32_t hlen = get_u32(p + 4);
    if (get_u32(p + 8) != aiq_es_crc32(0, p, 8))
        return aiq_err_set(err, AIQ_EINVAL, "event stream: prelude CRC mismatch");
    if (get_u32(p + total - 4) != aiq_es_crc32(0, p, total - 4))
        return aiq_err_set(err, AIQ_EINVAL, "event stream: message CRC mismatch");
    if ((size_t)hlen > total - PRELUDE - 4)
        return aiq_err_set(err, AIQ_EINVAL, "event stream: headers longer than the message");
    aiq_es_msg_t m;
    memset(&m, 0, sizeof(m));
    int rc = parse_headers(p + PRELUDE, hlen, &m, err);
    if (rc)
        return rc;
    m.payload = (const char *)p + PRELUDE + hlen;
    m.payload_len = total - PRELUDE - hlen - 4;
    return cb(opaque, &m);
}

static int append(aiq_es_t *es, const void *data, size_t n)
{
    if (es->len + n > es->cap) {
        size_t cap = es->cap ? es->cap : 4096;
        while (cap < es->len + n)
            cap *= 2;
        unsigned char *b = realloc(es->buf, cap);
        if (!b)
            return AIQ_ENOMEM;
        es->buf = b;
        es->cap = cap;
    }
    memcpy(es->buf + es->len, data, n);
    es->len += n;
    return 0;
}

int aiq_es_feed(aiq_es_t *es, const void *data, size_t n, aiq_es_on_msg cb, void *opaque,
                aiq_err_t *err)
{
    if (n && append(es, data, n))
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    size_t off = 0;
    int rc = 0;
    while (!rc && es->len - off >= PRELUDE) {
        uint32_t total = get_u32(es->buf + off);
        if (total < PRELUDE + 4)
            rc = aiq_err_set(err, AIQ_EINVAL, "event stream: message of %u bytes", total);
        else if (total > AIQ_ES_MESSAGE_MAX)
            rc = aiq_err_set(err, AIQ_ETOOBIG, "event stream: message of %u bytes (cap %u)", total,
                             AIQ_ES_MESSAGE_MAX);
        else if (es->len - off < total)
            break;
        else {
            rc = one_message(es->buf + off, total, cb, opaque, err);
            off += total;
        }
    }
    memmove(es->buf, es->buf + off, es->len - off);
    es->len -= off;
    return rc;
}

size_t aiq_es_pending(const aiq_es_t *es)
{
    return es->len;
}

void aiq_es_clear(aiq_es_t *es)
{
    free(es->buf);
    memset(es, 0, sizeof(*es));
}

int aiq_es_encode(unsigned char **buf, size_t *len, const char *const *names,
                  const char *const *values, size_t n, const void *payload, size_t payload_len)
{
    size_t hlen = 0;
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(names[i]), vl = strlen(values[i]);
        if (nl == 0 || nl > 255 || vl > 65535)
            return AIQ_EINVAL;
        hlen += 1 + nl + 1 + 2 + vl;
    }
    size_t total = PRELUDE + hlen + payload_len + 4;
    unsigned char *b = realloc(*buf, *len + total);
    if (!b)
        return AIQ_ENOMEM;
    *buf = b;
    unsigned char *m = b + *len, *p = m + PRELUDE;
    put_u32(m, (uint32_t)total);
    put_u32(m + 4, (uint32_t)hlen);
    put_u32(m + 8, aiq_es_crc32(0, m, 8));
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(names[i]), vl = strlen(values[i]);
        *p++ = (unsigned char)nl;
        memcpy(p, names[i], nl);
        p += nl;
        *p++ = 7;
        *p++ = (unsigned char)(vl >> 8);
        *p++ = (unsigned char)vl;
        memcpy(p, values[i], vl);
        p += vl;
    }
    if (payload_len)
        memcpy(p, payload, payload_len);
    p += payload_len;
    put_u32(p, aiq_es_crc32(0, m, total - 4));
    *len += total;
    return 0;
}
