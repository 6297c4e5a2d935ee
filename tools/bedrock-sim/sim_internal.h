/* sim_internal.h — what sim_request.c, sim_family.c and sim_stream.c share: the prompt a
 * request boils down to (input text, last user text, limits, cache points) and the
 * deterministic reply built from it. Not for the server or the fuzzer. */
#ifndef AIQ_SIM_INTERNAL_H
#define AIQ_SIM_INTERNAL_H

#include "sim_request.h"

#define SIM_CACHE_POINTS 4 /* cache points one prompt may have (Bedrock's limit) */

/* What a request asks the model, whatever its family's shape. */
typedef struct sim_prompt {
    size_t bytes;          /* input text, bytes */
    const char *last_user; /* the last user text (borrowed), "" when none */
    long long max_tokens;  /* 0 = no cap */
    json_t *stops;         /* borrowed array of strings, or NULL */
    uint64_t hash;         /* running FNV-1a of the model id and the input so far */
    size_t npoints;        /* cache points seen; more than SIM_CACHE_POINTS is an error */
    uint64_t point_key[SIM_CACHE_POINTS];
    size_t point_bytes[SIM_CACHE_POINTS];
} sim_prompt_t;

typedef struct sim_reply {
    char text[SIM_REPLY_MAX];
    size_t len;
    sim_usage_t usage;
    const char *stop_reason;   /* "end_turn", "max_tokens", "stop_sequence" */
    const char *stop_sequence; /* borrowed from the request JSON, or NULL */
    uint64_t id;               /* stable: hash of model id and request bytes */
} sim_reply_t;

void sim__prompt_init(sim_prompt_t *p, const char *model_id);
/* Counts text as input (user = it is a user turn's text, the one quoted in the reply). */
void sim__prompt_text(sim_prompt_t *p, const char *text, size_t len, bool user);
/* A cache point after everything added so far; false past SIM_CACHE_POINTS. */
bool sim__prompt_cache_point(sim_prompt_t *p);

/* The deterministic answer: "sim reply to: <first 60 chars of the last user text> [<model>]",
 * ~4 bytes a token, cut at the earliest stop sequence or at max_tokens. Cache points are
 * looked up in c's cache: the longest cached prefix is a cache read, the rest up to the last
 * point a cache write, and only the text after the last point plain input. */
void sim__reply_build(sim_reply_t *r, const sim_prompt_t *p, const sim_call_t *c);

/* The hash of c's model id and request bytes. */
uint64_t sim__call_id(const sim_call_t *c);

unsigned sim__tokens_of(size_t bytes);

/* why for a refused body in the words InvokeModel uses. */
#define SIM_MALFORMED "Malformed input request: "

/* Base64 (standard alphabet, padded) of p[0..n) as a new JSON string; NULL when out of
 * memory. And its reverse into a malloc'd buffer (*out, *out_len); -1 on a bad input. */
json_t *sim__base64_json(const void *p, size_t n);
int sim__base64_decode(const char *s, size_t n, unsigned char **out, size_t *out_len);

/* Converse's prompt from body (messages, system, toolConfig); -1 with why. */
int sim__converse_prompt(json_t *body, sim_prompt_t *p, char *why, size_t cap);

/* InvokeModel's prompt from a family body; -1 with why. */
int sim__family_prompt(sim_family_t f, json_t *body, sim_prompt_t *p, char *why, size_t cap);

#endif
