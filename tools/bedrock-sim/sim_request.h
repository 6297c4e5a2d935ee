/* sim_request.h — the parts of bedrock-sim that read what a client sent: the request target
 * (path, query, route, model id), the model calls' bodies (Converse, ConverseStream,
 * InvokeModel in each model family's shape, InvokeModelWithResponseStream, CountTokens) and
 * their replies, AWS event-stream framing, and the check of a request against botocore's
 * service model (sim_model_*). Pure functions over caller buffers, no HTTP server state, so
 * tests and fuzzers call them. */
#ifndef AIQ_SIM_REQUEST_H
#define AIQ_SIM_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_URI_MAX      4096 /* request target, bytes */
#define SIM_MODEL_ID_MAX 3072 /* decoded model id, bytes; the model allows 2048 chars (--model) */
#define SIM_REPLY_MAX    (3 * 1024)   /* generated reply text, bytes */
#define SIM_QUOTE_CHARS  60           /* characters of the user's text quoted in the reply */
#define SIM_MODEL_SHOWN  200          /* bytes of the model id quoted in the reply */
#define SIM_STREAM_MAX   (256 * 1024) /* one event-stream reply, bytes */

typedef enum sim_route {
    SIM_ROUTE_UNKNOWN,
    SIM_ROUTE_CONVERSE,
    SIM_ROUTE_INVOKE,
    SIM_ROUTE_CONVERSE_STREAM,
    SIM_ROUTE_INVOKE_STREAM,
    SIM_ROUTE_COUNT_TOKENS,
    SIM_ROUTE_SIM_STATS,
    SIM_ROUTE_SIM_RESET,
    SIM_ROUTE_SIM_CONFIG,
    SIM_ROUTE_SIM_OUTAGE,
} sim_route_t;

/* The InvokeModel body shapes the sim answers, chosen by model id (sim_family_of). */
typedef enum sim_family {
    SIM_FAMILY_ANTHROPIC, /* anthropic.*, and any id of no known family */
    SIM_FAMILY_NOVA,      /* amazon.nova-* */
    SIM_FAMILY_TITAN,     /* amazon.titan-text-* */
    SIM_FAMILY_LLAMA,     /* meta.llama* */
    SIM_FAMILY_MISTRAL,   /* mistral.* */
    SIM_FAMILY_COHERE,    /* cohere.command* */
} sim_family_t;

/* Copies the raw target uri into buf (SIM_URI_MAX + 1 bytes) and splits it at the first '?':
 * *path is the part before, *query the part after or NULL. Both point into buf. Returns false
 * (buf then holds "", *path "" and *query NULL) when uri is longer than SIM_URI_MAX. */
bool sim_uri_split(char buf[SIM_URI_MAX + 1], const char *uri, const char **path,
                   const char **query);

/* Percent-decodes s[0..n) into out (cap >= 1 bytes with NUL); false when it does not fit, holds a
 * bad escape or decodes to an empty string, NUL or invalid UTF-8. */
bool sim_model_id_decode(const char *s, size_t n, char *out, size_t cap);

/* The route of a request: the /_sim/ control paths for any method, POST
 * /model/{id}/converse|converse-stream|invoke|invoke-with-response-stream|count-tokens for the
 * model calls. For a model route the percent-decoded id is written to model_id (cap >= 1
 * bytes); for any other route model_id is "". */
sim_route_t sim_route_of(const char *path, const char *method, char *model_id, size_t cap);

/* Whether r is one of the model calls (and not a control path or unknown). */
bool sim_route_is_model(sim_route_t r);

/* The operation name of a model route in botocore's model ("Converse", ...), or NULL. */
const char *sim_route_operation(sim_route_t r);

/* The family of a model id: a cross-region prefix ("us.", "eu.", ...) and an ARN's resource
 * path are looked through, so "us.meta.llama3-..." and ".../foundation-model/meta.llama3-..."
 * are both Llama. */
sim_family_t sim_family_of(const char *model_id);
const char *sim_family_name(sim_family_t f);

/* The prompt cache: called with the key of a prompt prefix that ends at a cache point (it
 * covers the model id and everything before the point). Returns true when that prefix is
 * cached (a cache read) and records it otherwise (a cache write). Called on any thread. */
typedef bool (*sim_cache_fn)(void *ctx, uint64_t key);

/* What one model call knows besides its body. Everything is borrowed. */
typedef struct sim_call {
    const char *model_id;
    int latency_ms;  /* reported as metrics.latencyMs / invocation latency */
    const char *raw; /* the request bytes, hashed into stable ids */
    size_t raw_len;
    sim_cache_fn cache; /* NULL: no prompt caching */
    void *cache_ctx;
} sim_call_t;

/* Token counts of a reply, for the X-Amzn-Bedrock-*-Token-Count headers. */
typedef struct sim_usage {
    unsigned input, output, cache_read, cache_write;
} sim_usage_t;

/* Converse: validates body and builds the reply (a new JSON object, caller owns it). Returns
 * NULL with the reason in why (cap bytes) when the body breaks the Converse request shape,
 * or NULL with why "" when out of memory. Borrows body. usage may be NULL. */
json_t *sim_converse_reply(json_t *body, const sim_call_t *c, sim_usage_t *usage, char *why,
                           size_t cap);

/* InvokeModel: the body in the shape of the model id's family, answered in that family's
 * shape; like sim_converse_reply. */
json_t *sim_invoke_reply(json_t *body, const sim_call_t *c, sim_usage_t *usage, char *why,
                         size_t cap);

/* CountTokens: {"input": {"converse": {...}} | {"invokeModel": {"body": base64}}} answered
 * {"inputTokens": n}; like sim_converse_reply. */
json_t *sim_count_tokens_reply(json_t *body, const sim_call_t *c, char *why, size_t cap);

/* ---- AWS event-stream framing ---------------------------------------------------------------- */

/* A growable byte buffer, capped at SIM_STREAM_MAX. */
typedef struct sim_buf {
    unsigned char *data;
    size_t len, cap;
} sim_buf_t;

void sim_buf_free(sim_buf_t *b); /* frees data and zeroes b */

/* CRC-32 (IEEE 802.3, as zlib's crc32) of p[0..n), continuing from crc (0 to start). */
uint32_t sim_crc32(uint32_t crc, const void *p, size_t n);

/* Appends one event-stream message: prelude (total length, headers length, CRC-32 of both),
 * the string headers names[i]: values[i], payload, and the CRC-32 of all that. Returns 0, or
 * -1 when a header is over 255/32767 bytes or the buffer would pass SIM_STREAM_MAX / out of
 * memory (b unchanged). */
int sim_event_append(sim_buf_t *b, const char *const *names, const char *const *values, size_t n,
                     const void *payload, size_t payload_len);

/* An event (":message-type" event) with JSON payload o (borrowed) of type event_type. */
int sim_event_json(sim_buf_t *b, const char *event_type, json_t *o);

/* An exception message (":message-type" exception) of type exception_type carrying
 * {"message": message}. */
int sim_event_exception(sim_buf_t *b, const char *exception_type, const char *message);

/* Parses the message at data[0..len): on success *used is its length, the headers are
 * written to names/values (up to max, each NUL-terminated into hbuf of hcap bytes) with *nh
 * their count, and *payload / *payload_len point into data. Returns -1 on any framing or CRC
 * error. For tests and the fuzzer: the reverse of sim_event_append. */
int sim_event_parse(const unsigned char *data, size_t len, size_t *used, char *hbuf, size_t hcap,
                    const char **names, const char **values, size_t max, size_t *nh,
                    const unsigned char **payload, size_t *payload_len);

/* ConverseStream: the Converse reply of body as events messageStart, contentBlockDelta (the
 * text in a few pieces), contentBlockStop, messageStop, metadata appended to out. Returns 0,
 * or -1 with why like sim_converse_reply. */
int sim_converse_stream(json_t *body, const sim_call_t *c, sim_buf_t *out, char *why, size_t cap);

/* InvokeModelWithResponseStream: the family's streaming chunks, each a "chunk" event
 * {"bytes": base64(chunk JSON)}; the last chunk carries amazon-bedrock-invocationMetrics. */
int sim_invoke_stream(json_t *body, const sim_call_t *c, sim_buf_t *out, char *why, size_t cap);

/* ---- the service model: botocore's shapes, checked generically ------------------------------ */

/* A loaded shapes file (tools/bedrock-sim/gen_model.py output): operations with their input
 * shape and the shapes they reach. Immutable once loaded, shared by all threads. */
typedef struct sim_model sim_model_t;

#define SIM_MODEL_DEPTH_MAX 64 /* nesting a request may have; deeper is refused */

/* Parses the shapes document doc (borrowed; it is copied). Returns NULL with why when it is
 * not a shapes document or a pattern does not compile. */
sim_model_t *sim_model_new(json_t *doc, char *why, size_t cap);
void sim_model_free(sim_model_t *m); /* NULL is a no-op */

/* The value of a request member that is not in the body: a uri label or a header. */
typedef const char *(*sim_param_fn)(void *ctx, const char *location, const char *name);

/* Checks the request of operation (e.g. "Converse") against its input shape: body (the JSON
 * payload; for an operation whose payload is a blob it is not looked into) and every uri and
 * header member through param. Returns 0, or -1 with an AWS-style validation message in why
 * ("1 validation error detected: Value ... at 'messages.1.member.role' failed to satisfy
 * constraint: ..."). An operation the model lacks is refused too. */
int sim_model_check(const sim_model_t *m, const char *operation, json_t *body, sim_param_fn param,
                    void *ctx, char *why, size_t cap);

/* The names and patterns the model has that the sim cannot enforce (a pattern outside the
 * regex subset it translates); a new JSON array, for --help and /_sim/stats. */
json_t *sim_model_unenforced(const sim_model_t *m);

#endif
