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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classification_table),
        cmocka_unit_test(test_error_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
