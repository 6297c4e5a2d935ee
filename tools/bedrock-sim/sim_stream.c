/* sim_stream.c — AWS event-stream framing (application/vnd.amazon.eventstream), as
 * ConverseStream and InvokeModelWithResponseStream answer: each message is a 12-byte prelude
 * (total length, headers length, CRC-32 of those 8 bytes), string headers, the payload and a
 * CRC-32 of everything before it. Also the ConverseStream events built from a Converse reply. */
#include "sim_internal.h"
#include "sim_request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HDR_STRING 7 /* header value type: UTF-8 string with a 2-byte length */

void sim_buf_free(sim_buf_t *b)
{
    free(b->data);
    *b = (sim_buf_t){0};
}

static int buf_reserve(sim_buf_t *b, size_t more)
{
    if (more > SIM_STREAM_MAX - b->len)
        return -1;
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + more)
        cap *= 2;
    unsigned char *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint32_t sim_crc32(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = data;

    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = crc >> 1 ^ (0xEDB88320u & (0u - (crc & 1)));
    }
    return ~crc;
}

int sim_event_append(sim_buf_t *b, const char *const *names, const char *const *values, size_t n,
                     const void *payload, size_t payload_len)
{
    size_t hlen = 0;

    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(names[i]), vl = strlen(values[i]);
        if (nl == 0 || nl > 255 || vl > 32767)
            return -1;
        hlen += 1 + nl + 1 + 2 + vl;
    }
    if (hlen > SIM_STREAM_MAX || payload_len > SIM_STREAM_MAX)
        return -1;
    size_t total = 12 + hlen + payload_len + 4;
    if (buf_reserve(b, total))
        return -1;
    unsigned char *m = b->data + b->len, *p = m + 12;
    put_u32(m, (uint32_t)total);
    put_u32(m + 4, (uint32_t)hlen);
    put_u32(m + 8, sim_crc32(0, m, 8));
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(names[i]), vl = strlen(values[i]);
        *p++ = (unsigned char)nl;
        memcpy(p, names[i], nl);
        p += nl;
        *p++ = HDR_STRING;
        *p++ = (unsigned char)(vl >> 8);
        *p++ = (unsigned char)vl;
        memcpy(p, values[i], vl);
        p += vl;
    }
    if (payload_len)
        memcpy(p, payload, payload_len);
    p += payload_len;
    put_u32(p, sim_crc32(0, m, total - 4));
    b->len += total;
    return 0;
}

int sim_event_json(sim_buf_t *b, const char *event_type, json_t *o)
{
    const char *names[] = {":event-type", ":content-type", ":message-type"};
    const char *values[] = {event_type, "application/json", "event"};
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    int rc;

    if (!text)
        return -1;
    rc = sim_event_append(b, names, values, 3, text, strlen(text));
    free(text);
    return rc;
}

int sim_event_exception(sim_buf_t *b, const char *exception_type, const char *message)
{
    const char *names[] = {":exception-type", ":content-type", ":message-type"};
    const char *values[] = {exception_type, "application/json", "exception"};
    json_t *o = json_pack("{ss}", "message", message);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    int rc;

    json_decref(o);
    if (!text)
        return -1;
    rc = sim_event_append(b, names, values, 3, text, strlen(text));
    free(text);
    return rc;
}

static int parse_headers(const unsigned char *h, size_t hlen, char *hbuf, size_t hcap,
                         const char **names, const char **values, size_t max, size_t *nh)
{
    size_t i = 0, o = 0;

    *nh = 0;
    while (i < hlen) {
        size_t nl = h[i++];
        if (nl == 0 || i + nl + 3 > hlen || h[i + nl] != HDR_STRING || *nh == max)
            return -1;
        const unsigned char *name = h + i;
        i += nl + 1;
        size_t vl = (size_t)h[i] << 8 | h[i + 1];
        i += 2;
        if (i + vl > hlen || o + nl + vl + 2 > hcap)
            return -1;
        names[*nh] = hbuf + o;
        memcpy(hbuf + o, name, nl);
        o += nl;
        hbuf[o++] = '\0';
        values[*nh] = hbuf + o;
        memcpy(hbuf + o, h + i, vl);
        o += vl;
        hbuf[o++] = '\0';
        i += vl;
        (*nh)++;
    }
    return 0;
}

int sim_event_parse(const unsigned char *data, size_t len, size_t *used, char *hbuf, size_t hcap,
                    const char **names, const char **values, size_t max, size_t *nh,
                    const unsigned char **payload, size_t *payload_len)
{
    if (len < 16)
        return -1;
    uint32_t total = get_u32(data), hlen = get_u32(data + 4);
    if (total < 16 || total > len || hlen > total - 16 ||
        get_u32(data + 8) != sim_crc32(0, data, 8) ||
        get_u32(data + total - 4) != sim_crc32(0, data, total - 4))
        return -1;
    if (parse_headers(data + 12, hlen, hbuf, hcap, names, values, max, nh))
        return -1;
    *payload = data + 12 + hlen;
    *payload_len = total - 16 - hlen;
    *used = total;
    return 0;
}

/* ---- ConverseStream ----------------------------------------------------------------------------
 */

#define PIECES 3

static int text_deltas(sim_buf_t *out, const char *text, size_t len, int index)
{
    for (int k = 0; k < PIECES; k++) {
        size_t a = len * (size_t)k / PIECES, b = len * (size_t)(k + 1) / PIECES;
        while (a < len && (text[a] & 0xC0) == 0x80)
            a++;
        while (b < len && (text[b] & 0xC0) == 0x80)
            b++;
        json_t *ev = json_pack("{s{ss#}sI}", "delta", "text", text + a, (int)(b > a ? b - a : 0),
                               "contentBlockIndex", (json_int_t)index);
        int rc = sim_event_json(out, "contentBlockDelta", ev);
        json_decref(ev);
        if (rc)
            return rc;
    }
    return 0;
}

/* A toolUse block streams as contentBlockStart {toolUse: {toolUseId, name}} and one delta
 * carrying its input as a JSON string. */
static int tool_use_events(sim_buf_t *out, json_t *tu, int index)
{
    char *input = json_dumps(json_object_get(tu, "input"), JSON_COMPACT);
    json_t *start = json_pack("{s{s{sOsO}}sI}", "start", "toolUse", "toolUseId",
                              json_object_get(tu, "toolUseId"), "name", json_object_get(tu, "name"),
                              "contentBlockIndex", (json_int_t)index);
    json_t *delta = input ? json_pack("{s{s{ss}}sI}", "delta", "toolUse", "input", input,
                                      "contentBlockIndex", (json_int_t)index)
                          : NULL;
    int rc = start && delta ? sim_event_json(out, "contentBlockStart", start) : -1;

    if (!rc)
        rc = sim_event_json(out, "contentBlockDelta", delta);
    free(input);
    json_decref(start);
    json_decref(delta);
    return rc;
}

static int content_events(sim_buf_t *out, json_t *content)
{
    size_t i;
    json_t *block;

    json_array_foreach(content, i, block)
    {
        json_t *text = json_object_get(block, "text"), *tu = json_object_get(block, "toolUse");
        int rc = text ? text_deltas(out, json_string_value(text), json_string_length(text), (int)i)
                      : tool_use_events(out, tu, (int)i);
        json_t *stop = json_pack("{sI}", "contentBlockIndex", (json_int_t)i);
        if (!rc)
            rc = sim_event_json(out, "contentBlockStop", stop);
        json_decref(stop);
        if (rc)
            return rc;
    }
    return 0;
}

int sim_converse_stream(json_t *body, const sim_call_t *c, sim_buf_t *out, char *why, size_t cap)
{
    json_t *reply = sim_converse_reply(body, c, NULL, why, cap);
    json_t *msg = json_object_get(json_object_get(reply, "output"), "message");
    json_t *ev;
    int rc;

    if (!reply)
        return -1;
    ev = json_pack("{ss}", "role", "assistant");
    rc = sim_event_json(out, "messageStart", ev);
    json_decref(ev);
    if (!rc)
        rc = content_events(out, json_object_get(msg, "content"));
    ev = json_pack("{sO}", "stopReason", json_object_get(reply, "stopReason"));
    if (ev && json_object_get(reply, "additionalModelResponseFields"))
        json_object_set(ev, "additionalModelResponseFields",
                        json_object_get(reply, "additionalModelResponseFields"));
    if (!rc)
        rc = sim_event_json(out, "messageStop", ev);
    json_decref(ev);
    ev = json_pack("{sOsO}", "usage", json_object_get(reply, "usage"), "metrics",
                   json_object_get(reply, "metrics"));
    if (ev && json_object_get(reply, "trace"))
        json_object_set(ev, "trace", json_object_get(reply, "trace"));
    if (!rc)
        rc = sim_event_json(out, "metadata", ev);
    json_decref(ev);
    json_decref(reply);
    if (rc)
        why[0] = '\0';
    return rc;
}
