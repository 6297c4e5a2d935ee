/* AWS event-stream framing and the ConverseStream reader on top of it: messages split at any
 * byte, CRCs checked, text deltas handed out as they arrive, tool use assembled, exceptions
 * and early ends told apart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "bedrock.h"
#include "eventstream.h"

#include <stdlib.h>
#include <string.h>

static void add_event(unsigned char **buf, size_t *len, const char *type, const char *json)
{
    const char *names[] = {":event-type", ":content-type", ":message-type"};
    const char *values[] = {type, "application/json", "event"};
    assert_int_equal(aiq_es_encode(buf, len, names, values, 3, json, strlen(json)), 0);
}

static void add_exception(unsigned char **buf, size_t *len, const char *type, const char *json)
{
    const char *names[] = {":exception-type", ":content-type", ":message-type"};
    const char *values[] = {type, "application/json", "exception"};
    assert_int_equal(aiq_es_encode(buf, len, names, values, 3, json, strlen(json)), 0);
}

typedef struct seen {
    int n;
    char types[8][96];
    char payloads[8][128];
} seen_t;

static int on_msg(void *opaque, const aiq_es_msg_t *m)
{
    seen_t *s = opaque;
    if (s->n < 8) {
        snprintf(s->types[s->n], sizeof(s->types[0]), "%s/%s", m->message_type, m->event_type);
        snprintf(s->payloads[s->n], sizeof(s->payloads[0]), "%.*s", (int)m->payload_len,
                 m->payload);
    }
    s->n++;
    return 0;
}

static void eventstream_crc32_known_value(void **state)
{
    (void)state;
    assert_int_equal(aiq_es_crc32(0, "123456789", 9), 0xCBF43926u);
    assert_int_equal(aiq_es_crc32(aiq_es_crc32(0, "1234", 4), "56789", 5), 0xCBF43926u);
}

static void eventstream_messages_split_anywhere(void **state)
{
    (void)state;
    unsigned char *buf = NULL;
    size_t len = 0;
    add_event(&buf, &len, "messageStart", "{\"role\":\"assistant\"}");
    add_event(&buf, &len, "contentBlockDelta", "{\"delta\":{\"text\":\"hi\"}}");
    add_event(&buf, &len, "messageStop", "{}");
    for (size_t step = 1; step <= len; step++) {
        aiq_es_t es = {0};
        seen_t s = {0};
        aiq_err_t err = {0};
        for (size_t off = 0; off < len; off += step)
            assert_int_equal(
                aiq_es_feed(&es, buf + off, off + step < len ? step : len - off, on_msg, &s, &err),
                0);
        assert_int_equal(s.n, 3);
        assert_string_equal(s.types[1], "event/contentBlockDelta");
        assert_string_equal(s.payloads[1], "{\"delta\":{\"text\":\"hi\"}}");
        assert_int_equal(aiq_es_pending(&es), 0);
        aiq_es_clear(&es);
    }
    free(buf);
}

static void eventstream_refuses_broken_frames(void **state)
{
    (void)state;
    unsigned char *buf = NULL;
    size_t len = 0;
    add_event(&buf, &len, "messageStop", "{}");
    seen_t s = {0};
    aiq_err_t err = {0};
    aiq_es_t es = {0};
    buf[len - 6] ^= 1; /* a payload bit: the message CRC no longer matches */
    assert_int_equal(aiq_es_feed(&es, buf, len, on_msg, &s, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "message CRC"));
    aiq_es_clear(&es);
    buf[len - 6] ^= 1;
    buf[9] ^= 1; /* the prelude CRC */
    assert_int_equal(aiq_es_feed(&es, buf, len, on_msg, &s, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "prelude CRC"));
    aiq_es_clear(&es);
    unsigned char huge[12] = {0x7f, 0, 0, 0};
    assert_int_equal(aiq_es_feed(&es, huge, sizeof(huge), on_msg, &s, &err), AIQ_ETOOBIG);
    aiq_es_clear(&es);
    assert_int_equal(s.n, 0);
    free(buf);
}

typedef struct texts {
    char all[256];
    int pieces;
} texts_t;

static void on_text(void *opaque, const char *text, size_t len)
{
    texts_t *t = opaque;
    size_t n = strlen(t->all);
    snprintf(t->all + n, sizeof(t->all) - n, "%.*s", (int)len, text);
    t->pieces++;
}

static void stream_feed_all(aiq_bedrock_stream_t *s, const unsigned char *buf, size_t len, int want)
{
    aiq_err_t err = {0};
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0; i++) /* one byte at a time: the worst split */
        rc = aiq_bedrock_stream_feed(s, buf + i, 1, &err);
    assert_int_equal(rc, want);
}

static void eventstream_converse_stream_read(void **state)
{
    (void)state;
    unsigned char *buf = NULL;
    size_t len = 0;
    add_event(&buf, &len, "messageStart", "{\"role\":\"assistant\"}");
    add_event(&buf, &len, "contentBlockDelta",
              "{\"delta\":{\"text\":\"Hel\"},\"contentBlockIndex\":0}");
    add_event(&buf, &len, "contentBlockDelta",
              "{\"delta\":{\"text\":\"lo \\u00e9\"},\"contentBlockIndex\":0}");
    add_event(&buf, &len, "contentBlockStop", "{\"contentBlockIndex\":0}");
    add_event(&buf, &len, "contentBlockStart",
              "{\"start\":{\"toolUse\":{\"toolUseId\":\"t1\",\"name\":\"get\"}},"
              "\"contentBlockIndex\":1}");
    add_event(&buf, &len, "contentBlockDelta",
              "{\"delta\":{\"toolUse\":{\"input\":\"{\\\"q\\\":\"}},\"contentBlockIndex\":1}");
    add_event(&buf, &len, "contentBlockDelta",
              "{\"delta\":{\"toolUse\":{\"input\":\"4.1}\"}},\"contentBlockIndex\":1}");
    add_event(&buf, &len, "messageStop", "{\"stopReason\":\"tool_use\"}");
    add_event(&buf, &len, "metadata",
              "{\"usage\":{\"inputTokens\":5,\"outputTokens\":7,\"cacheReadInputTokens\":100,"
              "\"totalTokens\":112},\"metrics\":{\"latencyMs\":9},\"trace\":{\"guardrail\":{}}}");
    texts_t t = {{0}, 0};
    aiq_bedrock_stream_t *s = aiq_bedrock_stream_new(on_text, &t);
    stream_feed_all(s, buf, len, 0);
    assert_string_equal(t.all, "Hello \xc3\xa9");
    assert_int_equal(t.pieces, 2);
    aiq_bedrock_reply_t r;
    aiq_err_t err = {0};
    assert_int_equal(aiq_bedrock_stream_finish(s, &r, &err), 0);
    assert_string_equal(r.text, "Hello \xc3\xa9");
    assert_string_equal(r.stop_reason, "tool_use");
    assert_int_equal(r.input_tokens, 5);
    assert_int_equal(r.cache_read_tokens, 100);
    assert_int_equal(r.total_tokens, 112);
    json_t *tu = json_object_get(json_array_get(json_object_get(r.extra, "content"), 1), "toolUse");
    assert_string_equal(json_string_value(json_object_get(tu, "name")), "get");
    assert_true(json_real_value(json_object_get(json_object_get(tu, "input"), "q")) == 4.1);
    assert_non_null(json_object_get(r.extra, "trace"));
    aiq_bedrock_reply_free(&r);
    aiq_bedrock_stream_free(s);
    free(buf);
}

static void eventstream_exception_and_early_end(void **state)
{
    (void)state;
    unsigned char *buf = NULL;
    size_t len = 0;
    add_event(&buf, &len, "contentBlockDelta",
              "{\"delta\":{\"text\":\"par\"},\"contentBlockIndex\":0}");
    size_t cut = len;
    add_exception(&buf, &len, "throttlingException", "{\"message\":\"slow down\"}");
    aiq_bedrock_stream_t *s = aiq_bedrock_stream_new(NULL, NULL);
    stream_feed_all(s, buf, len, 1);
    const char *msg = NULL;
    assert_string_equal(aiq_bedrock_stream_exception(s, &msg), "ThrottlingException");
    assert_string_equal(msg, "slow down");
    char kind[64];
    assert_int_equal(
        aiq_bedrock_classify(500, aiq_bedrock_stream_exception(s, NULL), 0, kind, sizeof(kind)),
        AIQ_BEDROCK_THROTTLED);
    aiq_bedrock_reply_t r;
    aiq_err_t err = {0};
    assert_int_equal(aiq_bedrock_stream_finish(s, &r, &err), AIQ_EHTTP);
    aiq_bedrock_stream_free(s);
    s = aiq_bedrock_stream_new(NULL, NULL);
    stream_feed_all(s, buf, cut, 0); /* the text, then the connection ended */
    assert_int_equal(aiq_bedrock_stream_finish(s, &r, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "messageStop"));
    aiq_bedrock_stream_free(s);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(eventstream_crc32_known_value),
        cmocka_unit_test(eventstream_messages_split_anywhere),
        cmocka_unit_test(eventstream_refuses_broken_frames),
        cmocka_unit_test(eventstream_converse_stream_read),
        cmocka_unit_test(eventstream_exception_and_early_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
