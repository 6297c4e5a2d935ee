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
#include <stdbool.h>
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

/* Which InvokeModel body and response shape a model speaks. Converse needs none of this:
 * it is the model-agnostic default. */
typedef enum aiq_bedrock_family {
    AIQ_FAMILY_UNKNOWN = 0,
    AIQ_FAMILY_ANTHROPIC,   /* anthropic.*: Messages API */
    AIQ_FAMILY_NOVA,        /* amazon.nova-*: messages-v1 */
    AIQ_FAMILY_TITAN,       /* amazon.titan-text-*: inputText / results[] */
    AIQ_FAMILY_LLAMA,       /* meta.llama*: prompt / generation (Llama 3 chat format) */
    AIQ_FAMILY_MISTRAL,     /* mistral.*: prompt / outputs[] ([INST] format) */
    AIQ_FAMILY_COHERE,      /* cohere.command-r*: message, chat_history / text */
    AIQ_FAMILY_COHERE_TEXT, /* cohere.command-text, -light: prompt / generations[] */
} aiq_bedrock_family_t;

/* The family of a model id, inference profile id or ARN (foundation-model and
 * inference-profile ARNs name their model; other ARNs are UNKNOWN). */
aiq_bedrock_family_t aiq_bedrock_family_of(const char *model);
const char *aiq_bedrock_family_name(aiq_bedrock_family_t f);

/* What was sent, which says how to read the reply. */
typedef struct aiq_bedrock_wire {
    aiq_job_api_t api;
    aiq_bedrock_family_t family; /* InvokeModel only */
    bool own_body;               /* the job brought the InvokeModel body */
    bool stream;                 /* ConverseStream: the reply is an event stream */
} aiq_bedrock_wire_t;

typedef struct aiq_bedrock_call {
    char url[4096];
    char host[512];    /* the Host header sent, and signed: no default port */
    const char *model; /* borrowed from the job, the operation or the conf */
    aiq_bedrock_wire_t wire;
    char *body; /* malloc'd JSON request body */
    size_t body_len;
    struct curl_slist *headers; /* signed headers, ready for aiq_http_post (which takes them) */
} aiq_bedrock_call_t;

typedef enum aiq_bedrock_class {
    AIQ_BEDROCK_OK = 0,
    AIQ_BEDROCK_RETRY,       /* 5xx, 529, transport errors, timeouts: worth another attempt */
    AIQ_BEDROCK_THROTTLED,   /* 429 ThrottlingException: retry, and slow down */
    AIQ_BEDROCK_NOT_READY,   /* 429 ModelNotReadyException: this model is loading; retry it,
                              * without slowing the others (not throttling) */
    AIQ_BEDROCK_MODEL_ERROR, /* 408 model timeout, 424 model error: retry a configured few */
    AIQ_BEDROCK_CREDS,       /* 403 expired token: retry with refreshed credentials */
    AIQ_BEDROCK_FINAL,       /* validation, auth, not found, quota: never succeeds as sent */
} aiq_bedrock_class_t;

typedef struct aiq_bedrock_reply {
    char *text;           /* malloc'd concatenated text blocks ("" when none could be read) */
    char stop_reason[64]; /* Converse's stopReason vocabulary; "" when unknown */
    int64_t input_tokens, output_tokens;
    int64_t cache_read_tokens, cache_write_tokens; /* prompt-cache input tokens */
    int64_t total_tokens; /* as the response says; else the sum of the four */
    /* Owned; NULL or an object merged into the result's "output": content (the message's
     * blocks when any is not text: toolUse, reasoningContent, ...), trace (guardrail),
     * additional_model_response_fields, raw (the response body byte for byte: InvokeModel
     * with the job's own body, or a body aiq could not read), unparsed (true: text, stop
     * reason and usage could not be read from this 200 response). */
    json_t *extra;
} aiq_bedrock_reply_t;

/* Builds and signs the request for job at time now with creds (borrowed for the call; its
 * session token, when set, is sent as X-Amz-Security-Token). Fills call (free with
 * aiq_bedrock_call_free). Fails with AIQ_ENOTFOUND (unknown operation in reject mode),
 * AIQ_EINVAL when the job asks for something this request cannot carry (err names the
 * field: the job is answered "rejected", never sent without it), or AIQ_ENOMEM. */
int aiq_bedrock_build(const aiq_bedrock_conf_t *conf, const aiq_sigv4_creds_t *creds,
                      const aiq_job_t *job, time_t now, aiq_bedrock_call_t *call, aiq_err_t *err);
void aiq_bedrock_call_free(aiq_bedrock_call_t *call);

/* The model job goes to: its own, else its operation's, else the default. Borrowed. */
const char *aiq_bedrock_model(const aiq_bedrock_conf_t *conf, const aiq_job_t *job);

/* Token counts of a response outside 0..this are taken as 0 (unknown): 2^40 is far above any
 * real count and keeps every sum of them far from overflowing int64. */
#define AIQ_BEDROCK_TOKENS_MAX (1LL << 40)

/* A 200 response: its body and the token-count headers InvokeModel sends
 * (X-Amzn-Bedrock-Input-Token-Count, ...; NULL or "" when absent). */
typedef struct aiq_bedrock_resp {
    const char *body;
    size_t len;
    const char *input_tokens, *output_tokens, *cache_read_tokens, *cache_write_tokens;
} aiq_bedrock_resp_t;

/* Reads a 200 response of what wire says was sent. A 200 is the model's answer whatever its
 * shape: a body aiq cannot read is returned raw with extra.unparsed, never as an error. Fills
 * reply (free with aiq_bedrock_reply_free). Returns 0, or AIQ_ENOMEM. */
int aiq_bedrock_parse(const aiq_bedrock_wire_t *wire, const aiq_bedrock_resp_t *resp,
                      aiq_bedrock_reply_t *reply, aiq_err_t *err);
void aiq_bedrock_reply_free(aiq_bedrock_reply_t *reply);
/* A deep copy of src into dst (free with aiq_bedrock_reply_free). 0 or AIQ_ENOMEM. */
int aiq_bedrock_reply_copy(aiq_bedrock_reply_t *dst, const aiq_bedrock_reply_t *src);

/* Classifies an exchange from its HTTP status (0 = none), the x-amzn-ErrorType header
 * (anything after ':' ignored) and the transport result, as botocore's model and retry
 * rules do. Writes the bare error type into kind (e.g. "ThrottlingException", "transport",
 * "http_500"). */
aiq_bedrock_class_t aiq_bedrock_classify(long status, const char *error_type, int transport_failed,
                                         char *kind, size_t kind_cap);

/* Error message from a Bedrock error body ({"message": ...}), or the body itself, copied
 * into buf (truncated). */
void aiq_bedrock_error_message(const char *body, size_t len, char *buf, size_t cap);

/* ConverseStream: an event-stream reader that gathers the streamed message into the reply
 * Converse would have given, and hands each text delta to on_text as it arrives. */
typedef struct aiq_bedrock_stream aiq_bedrock_stream_t;
typedef void (*aiq_bedrock_text_cb)(void *opaque, const char *text, size_t len);

/* NULL when out of memory. on_text may be NULL; opaque is passed to it. */
aiq_bedrock_stream_t *aiq_bedrock_stream_new(aiq_bedrock_text_cb on_text, void *opaque);
void aiq_bedrock_stream_free(aiq_bedrock_stream_t *s); /* NULL is a no-op */

/* Feeds response bytes (calls on_text from here). Returns 0; 1 once the stream carried an
 * exception (aiq_bedrock_stream_exception names it; later bytes are ignored); AIQ_EINVAL on
 * broken framing (err says what), AIQ_ETOOBIG, AIQ_ENOMEM. */
int aiq_bedrock_stream_feed(aiq_bedrock_stream_t *s, const void *data, size_t len, aiq_err_t *err);

/* The exception type the stream ended in ("ThrottlingException", ...: the union member
 * with its first letter upper-cased, as x-amzn-ErrorType spells it) and its message; NULL
 * when none. Borrowed from s. */
const char *aiq_bedrock_stream_exception(const aiq_bedrock_stream_t *s, const char **message);

/* After the last byte: fills reply (free with aiq_bedrock_reply_free) as aiq_bedrock_parse
 * would from the same message given by Converse. Fails with AIQ_EHTTP after an exception,
 * AIQ_EINVAL when the stream ended before its messageStop, AIQ_ENOMEM. */
int aiq_bedrock_stream_finish(aiq_bedrock_stream_t *s, aiq_bedrock_reply_t *reply, aiq_err_t *err);

/* Reads an environment variable; NULL when unset. */
typedef const char *(*aiq_bedrock_getenv_fn)(void *ctx, const char *name);

/* The Bedrock Runtime endpoint, first of: configured (bedrock.endpoint, "" = none), the
 * environment's AWS_ENDPOINT_URL_BEDROCK_RUNTIME, then AWS_ENDPOINT_URL (both skipped when
 * AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true), then the region's partition endpoint:
 * https://bedrock-runtime[-fips].<region>.<dns suffix> (aws, aws-cn .amazonaws.com.cn,
 * aws-us-gov, the iso partitions, aws-eusc). fips (or AWS_USE_FIPS_ENDPOINT=true) picks the
 * FIPS host. Written to out without a trailing '/'. Fails with AIQ_EINVAL (a URL that is not
 * http(s)://host..., a region that is not one) naming the source. */
int aiq_bedrock_endpoint(const char *configured, const char *region, bool fips,
                         aiq_bedrock_getenv_fn getenv_fn, void *ctx, char *out, size_t cap,
                         aiq_err_t *err);

#endif
