/* bedrock.h — Amazon Bedrock Runtime requests and responses: build a Converse or
 * InvokeModel call for a job, sign it (SigV4), parse and classify what came back.
 * Pure functions over their arguments; any thread. */
#ifndef AIQ_BEDROCK_H
#define AIQ_BEDROCK_H

#include "aiq_err.h"
#include "job.h"

#include <curl/curl.h>
#include <stdint.h>

typedef struct aiq_bedrock_conf {
    const char *endpoint; /* "https://bedrock-runtime.us-east-1.amazonaws.com" or sim URL */
    const char *region;
    const char *default_model;
    int64_t default_max_tokens;
    const char *access_key; /* borrowed; never logged */
    const char *secret_key;
    const char *session_token; /* NULL when none */
} aiq_bedrock_conf_t;

typedef struct aiq_bedrock_call {
    char url[4096];
    const char *model; /* borrowed from the job or the conf */
    char *body;        /* malloc'd JSON request body */
    size_t body_len;
    struct curl_slist *headers; /* signed headers, ready for aiq_http_post (which takes them) */
} aiq_bedrock_call_t;

typedef enum aiq_bedrock_class {
    AIQ_BEDROCK_OK = 0,
    AIQ_BEDROCK_RETRY, /* throttling, 5xx, transport errors: worth another attempt */
    AIQ_BEDROCK_FINAL, /* validation, auth, not found: will never succeed as sent */
} aiq_bedrock_class_t;

typedef struct aiq_bedrock_reply {
    char *text; /* malloc'd concatenated text blocks */
    char stop_reason[32];
    int64_t input_tokens, output_tokens;
} aiq_bedrock_reply_t;

/* Builds and signs the request for job at time now. Fills call (free with
 * aiq_bedrock_call_free). Fails with AIQ_EINVAL (err says why) or AIQ_ENOMEM. */
int aiq_bedrock_build(const aiq_bedrock_conf_t *conf, const aiq_job_t *job, time_t now,
                      aiq_bedrock_call_t *call, aiq_err_t *err);
void aiq_bedrock_call_free(aiq_bedrock_call_t *call);

/* Parses a 200 response body of the given API. Fills reply (free with
 * aiq_bedrock_reply_free) or fails with AIQ_EINVAL. */
int aiq_bedrock_parse(aiq_job_api_t api, const char *body, size_t len, aiq_bedrock_reply_t *reply,
                      aiq_err_t *err);
void aiq_bedrock_reply_free(aiq_bedrock_reply_t *reply);

/* Classifies an exchange from its HTTP status (0 = none), the x-amzn-ErrorType header
 * (anything after ':' ignored) and the transport result. Writes the bare error type
 * into kind (e.g. "ThrottlingException", "transport", "http_500"). */
aiq_bedrock_class_t aiq_bedrock_classify(long status, const char *error_type, int transport_failed,
                                         char *kind, size_t kind_cap);

/* Error message from a Bedrock error body ({"message": ...}), or the body itself, copied
 * into buf (truncated). */
void aiq_bedrock_error_message(const char *body, size_t len, char *buf, size_t cap);

#endif
