/* bedrock.h — Amazon Bedrock Runtime requests and responses: build a Converse or
 * InvokeModel call for a job, sign it (SigV4), parse and classify what came back.
 * Pure functions over their arguments; any thread. */
#ifndef AIQ_BEDROCK_H
#define AIQ_BEDROCK_H

#include "aiq_err.h"
#include "job.h"
#include "ops.h"
#include "sigv4.h"

#include <curl/curl.h>
#include <stdint.h>

typedef struct aiq_bedrock_conf {
    const char *endpoint; /* "https://bedrock-runtime.us-east-1.amazonaws.com" or sim URL */
    const char *region;
    const char *default_model;
    int64_t default_max_tokens;
    /* Operations (borrowed): model, API, prompts and inference defaults per operation. NULL:
     * none, and a job without messages sends its payload as JSON. An operation aiq_ops_find
     * refuses (reject mode) fails the build with AIQ_ENOTFOUND. */
    const aiq_ops_t *ops;
} aiq_bedrock_conf_t;

typedef struct aiq_bedrock_call {
    char url[4096];
    const char *model; /* borrowed from the job, the operation or the conf */
    aiq_job_api_t api; /* the API called (job, else operation): parse the reply with this */
    char *body;        /* malloc'd JSON request body */
    size_t body_len;
    struct curl_slist *headers; /* signed headers, ready for aiq_http_post (which takes them) */
} aiq_bedrock_call_t;

typedef enum aiq_bedrock_class {
    AIQ_BEDROCK_OK = 0,
    AIQ_BEDROCK_RETRY,       /* 5xx, transport errors, timeouts: worth another attempt */
    AIQ_BEDROCK_THROTTLED,   /* 429 throttling / model not ready: retry, and slow down */
    AIQ_BEDROCK_MODEL_ERROR, /* 408 model timeout, 424 model error: retry a configured few */
    AIQ_BEDROCK_FINAL,       /* validation, auth, not found, quota: never succeeds as sent */
} aiq_bedrock_class_t;

typedef struct aiq_bedrock_reply {
    char *text; /* malloc'd concatenated text blocks */
    char stop_reason[32];
    int64_t input_tokens, output_tokens;
} aiq_bedrock_reply_t;

/* Builds and signs the request for job at time now with creds (borrowed for the call; its
 * session token, when set, is sent as X-Amz-Security-Token; its cache, when set, is used).
 * Fills call (free with aiq_bedrock_call_free). Fails with AIQ_EINVAL (err says why) or
 * AIQ_ENOMEM. */
int aiq_bedrock_build(const aiq_bedrock_conf_t *conf, const aiq_sigv4_creds_t *creds,
                      const aiq_job_t *job, time_t now, aiq_bedrock_call_t *call, aiq_err_t *err);
void aiq_bedrock_call_free(aiq_bedrock_call_t *call);

/* The model job goes to: its own, else its operation's, else the default. Borrowed. */
const char *aiq_bedrock_model(const aiq_bedrock_conf_t *conf, const aiq_job_t *job);

/* Token counts of a response outside 0..this are taken as 0 (unknown): 2^40 is far above any
 * real count and keeps every sum of them far from overflowing int64. */
#define AIQ_BEDROCK_TOKENS_MAX (1LL << 40)

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
