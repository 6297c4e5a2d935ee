/* sim_request.h — the parts of bedrock-sim that read what a client sent: the request target
 * (path, query, route, model id) and the Converse / InvokeModel bodies and their replies.
 * Pure functions over caller buffers, no HTTP server state, so tests and fuzzers call them. */
#ifndef AIQ_SIM_REQUEST_H
#define AIQ_SIM_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define SIM_URI_MAX      4096 /* request target, bytes */
#define SIM_MODEL_ID_MAX 512  /* decoded model id, bytes */
#define SIM_REPLY_MAX    1024 /* generated reply text, bytes */
#define SIM_QUOTE_CHARS  60   /* characters of the user's text quoted in the reply */

typedef enum sim_route {
    SIM_ROUTE_UNKNOWN,
    SIM_ROUTE_CONVERSE,
    SIM_ROUTE_INVOKE,
    SIM_ROUTE_SIM_STATS,
    SIM_ROUTE_SIM_RESET,
    SIM_ROUTE_SIM_CONFIG,
    SIM_ROUTE_SIM_OUTAGE,
} sim_route_t;

/* Copies the raw target uri into buf (SIM_URI_MAX + 1 bytes) and splits it at the first '?':
 * *path is the part before, *query the part after or NULL. Both point into buf. Returns false
 * (buf then holds "", *path "" and *query NULL) when uri is longer than SIM_URI_MAX. */
bool sim_uri_split(char buf[SIM_URI_MAX + 1], const char *uri, const char **path,
                   const char **query);

/* Percent-decodes s[0..n) into out (cap >= 1 bytes with NUL); false when it does not fit, holds a
 * bad escape or decodes to an empty string, NUL or invalid UTF-8. */
bool sim_model_id_decode(const char *s, size_t n, char *out, size_t cap);

/* The route of a request: the /_sim/ control paths for any method, POST
 * /model/{id}/converse|invoke for the model calls. For a model route the percent-decoded id
 * is written to model_id (cap >= 1 bytes); for any other route model_id is "". */
sim_route_t sim_route_of(const char *path, const char *method, char *model_id, size_t cap);

/* Converse: validates body and builds the reply (a new JSON object, caller owns it). Returns
 * NULL with the reason in why (cap bytes) when the body breaks the Converse request shape,
 * or NULL with why "" when out of memory. Borrows body and model_id. */
json_t *sim_converse_reply(json_t *body, const char *model_id, int latency_ms, char *why,
                           size_t cap);

/* InvokeModel with an Anthropic messages body: like sim_converse_reply; raw/raw_len are the
 * request bytes, hashed into the stable message id. */
json_t *sim_invoke_reply(json_t *body, const char *model_id, const char *raw, size_t raw_len,
                         char *why, size_t cap);

#endif
