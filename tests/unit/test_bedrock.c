/* Bedrock error classification: every status and error type the issue names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "bedrock.h"

#include <string.h>

typedef struct row {
    long status;
    const char *type;
    int transport;
    aiq_bedrock_class_t want;
    const char *kind;
} row_t;

static const row_t table[] = {
    {200, "", 0, AIQ_BEDROCK_OK, "none"},
    {429, "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/", 0,
     AIQ_BEDROCK_THROTTLED, "ThrottlingException"},
    {429, "ModelNotReadyException", 0, AIQ_BEDROCK_THROTTLED, "ModelNotReadyException"},
    {429, "", 0, AIQ_BEDROCK_THROTTLED, "http_429"},
    {500, "InternalServerException", 0, AIQ_BEDROCK_RETRY, "InternalServerException"},
    {502, "", 0, AIQ_BEDROCK_RETRY, "http_502"},
    {503, "ServiceUnavailableException:x", 0, AIQ_BEDROCK_RETRY, "ServiceUnavailableException"},
    {504, "", 0, AIQ_BEDROCK_RETRY, "http_504"},
    {529, "", 0, AIQ_BEDROCK_RETRY, "http_529"},
    {0, "", 1, AIQ_BEDROCK_RETRY, "transport"},
    {200, "", 1, AIQ_BEDROCK_RETRY, "transport"}, /* body cut off mid-transfer */
    {400, "ValidationException", 0, AIQ_BEDROCK_FINAL, "ValidationException"},
    {403, "AccessDeniedException", 0, AIQ_BEDROCK_FINAL, "AccessDeniedException"},
    {403, "", 0, AIQ_BEDROCK_FINAL, "http_403"},
    {404, "ResourceNotFoundException", 0, AIQ_BEDROCK_FINAL, "ResourceNotFoundException"},
    {400, "ServiceQuotaExceededException", 0, AIQ_BEDROCK_FINAL, "ServiceQuotaExceededException"},
    {408, "ModelTimeoutException", 0, AIQ_BEDROCK_MODEL_ERROR, "ModelTimeoutException"},
    {424, "ModelErrorException", 0, AIQ_BEDROCK_MODEL_ERROR, "ModelErrorException"},
    {408, "", 0, AIQ_BEDROCK_MODEL_ERROR, "http_408"},
    {418, "", 0, AIQ_BEDROCK_FINAL, "http_418"},
};

static void test_classification_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        char kind[64];
        const row_t *r = &table[i];
        aiq_bedrock_class_t got =
            aiq_bedrock_classify(r->status, r->type, r->transport, kind, sizeof(kind));
        if (got != r->want || strcmp(kind, r->kind) != 0)
            fail_msg("row %zu (%ld %s): class %d kind %s, want %d %s", i, r->status, r->type,
                     (int)got, kind, (int)r->want, r->kind);
    }
}

static void test_error_message(void **state)
{
    (void)state;
    char buf[64];
    const char *body = "{\"message\":\"Too many requests, please wait\"}";
    aiq_bedrock_error_message(body, strlen(body), buf, sizeof(buf));
    assert_string_equal(buf, "Too many requests, please wait");
    aiq_bedrock_error_message("plain text", 10, buf, sizeof(buf));
    assert_string_equal(buf, "plain text");
}

/* Regression: a response claiming INT64_MAX input tokens overflowed total_tokens (signed
 * overflow, UBSan) when the result was encoded; counts are now bounded at the parse. */
static void test_parse_token_counts_bounded(void **state)
{
    (void)state;
    aiq_bedrock_reply_t r;
    aiq_err_t err = {0};
    const char *conv = "{\"output\":{\"message\":{\"content\":[{\"text\":\"hi\"}]}},"
                       "\"usage\":{\"inputTokens\":9223372036854775807,\"outputTokens\":-5}}";
    assert_int_equal(aiq_bedrock_parse(AIQ_API_CONVERSE, conv, strlen(conv), &r, &err), 0);
    assert_int_equal(r.input_tokens, 0);
    assert_int_equal(r.output_tokens, 0);
    assert_string_equal(r.text, "hi");
    aiq_bedrock_reply_free(&r);
    const char *inv = "{\"content\":[{\"type\":\"text\",\"text\":\"a\"}],"
                      "\"usage\":{\"input_tokens\":1099511627776,\"output_tokens\":12}}";
    assert_int_equal(aiq_bedrock_parse(AIQ_API_INVOKE, inv, strlen(inv), &r, &err), 0);
    assert_int_equal(r.input_tokens, AIQ_BEDROCK_TOKENS_MAX);
    assert_int_equal(r.output_tokens, 12);
    aiq_bedrock_reply_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classification_table),
        cmocka_unit_test(test_error_message),
        cmocka_unit_test(test_parse_token_counts_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
