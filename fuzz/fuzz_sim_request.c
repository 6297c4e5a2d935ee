/* fuzz_sim_request.c — what bedrock-sim reads from a client: the request target (split, route,
 * percent-decoded model id), the SigV4 Authorization check over the request's headers
 * (aiq_sigv4_verify), and the Converse / InvokeModel bodies with the replies built from them.
 *
 * Input: an HTTP-like text. The first line is the raw request target; then "Name: value"
 * header lines up to an empty line; the rest is the body:
 *     /model/m%3A1/converse?a=b
 *     Authorization: AWS4-HMAC-SHA256 Credential=...
 *     X-Amz-Date: 20260101T000000Z
 *
 *     {"messages":[...]}
 * Properties checked besides memory safety:
 *  - verify returns only documented codes, with a reason that never shows the secret (unless
 *    the client itself sent it, e.g. as its region);
 *  - sign/verify agree: the same path, query, host and body signed by aiq_sigv4_sign verify,
 *    and stop verifying once one signature digit is changed;
 *  - a model route has a non-empty model id that re-encodes into the path; other routes none;
 *  - a reply is JSON with a text of at most SIM_REPLY_MAX bytes and a known stop reason; a
 *    refusal always says why;
 *  - both event streams parse back message by message with valid CRCs and JSON payloads;
 *  - the service-model check of every body ends with a verdict, a refusal with a reason. */
#include "fuzz.h"
#include "sigv4.h"
#include "sim_request.h"

#include <jansson.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#define FUZZ_HEADERS_MAX 32
#define FUZZ_NOW         1767225600 /* 2026-01-01T00:00:00Z: the time of the seed signatures */
#define FUZZ_KEY         "AKIDSIMULATOR"
#define FUZZ_SECRET      "simulator-secret"
#define FUZZ_REGION      "us-east-1"

typedef struct header {
    const char *name, *value;
} header_t;

typedef struct headers {
    header_t h[FUZZ_HEADERS_MAX];
    size_t n;
} headers_t;

/* Like MHD: the first header of that name, case-insensitively. */
static const char *on_header(void *ctx, const char *name)
{
    const headers_t *hs = ctx;
    for (size_t i = 0; i < hs->n; i++)
        if (!strcasecmp(hs->h[i].name, name))
            return hs->h[i].value;
    return NULL;
}

/* Splits text (NUL-terminated, modified in place) into target, headers and body. */
static char *split_request(char *text, size_t size, headers_t *hs, char **body, size_t *body_len)
{
    char *target = text, *p = strchr(text, '\n');

    *body = text + size;
    *body_len = 0;
    hs->n = 0;
    if (!p)
        return target;
    *p++ = '\0';
    while (*p && *p != '\n') {
        char *eol = strchr(p, '\n'), *colon;
        if (eol)
            *eol = '\0';
        colon = strchr(p, ':');
        if (colon && hs->n < FUZZ_HEADERS_MAX) {
            *colon = '\0';
            char *v = colon + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            hs->h[hs->n++] = (header_t){p, v};
        }
        if (!eol)
            return target;
        p = eol + 1;
    }
    if (*p == '\n') {
        *body = p + 1;
        *body_len = size - (size_t)(*body - text);
    }
    return target;
}

static aiq_sigv4_verify_req_t verify_req(const char *path, const char *query, const char *body,
                                         size_t body_len, headers_t *hs,
                                         const aiq_sigv4_creds_t *creds)
{
    return (aiq_sigv4_verify_req_t){.method = "POST",
                                    .path = path,
                                    .query = query,
                                    .body = body,
                                    .body_len = body_len,
                                    .header = on_header,
                                    .header_ctx = hs,
                                    .region = FUZZ_REGION,
                                    .service = "bedrock",
                                    .now = FUZZ_NOW,
                                    .creds = creds};
}

/* The headers exactly as the client sent them, as the sim checks them. */
static void check_verify(const char *path, const char *query, const char *body, size_t body_len,
                         headers_t *hs)
{
    aiq_sigv4_creds_t creds = {.access_key = FUZZ_KEY, .secret_key = FUZZ_SECRET};
    aiq_sigv4_verify_req_t v = verify_req(path, query, body, body_len, hs, &creds);
    aiq_err_t err = {0};

    int rc = aiq_sigv4_verify(&v, &err);
    FUZZ_CHECK(rc == 0 || rc == AIQ_EINVAL || rc == AIQ_ETOOBIG || rc == AIQ_ECRYPTO, "rc %d", rc);
    FUZZ_CHECK(rc == 0 || err.msg[0], "refusal %d without a reason", rc);
    /* The reason may echo what the client sent (its scope, its date), never the server's secret. */
    if (strstr(err.msg, FUZZ_SECRET)) {
        bool sent = false;
        for (size_t i = 0; i < hs->n; i++)
            sent = sent || strstr(hs->h[i].value, FUZZ_SECRET);
        FUZZ_CHECK(sent, "reason shows the secret: %s", err.msg);
    }
}

/* What aiq_sigv4_sign produces for this request must pass verify, and fail with one digit off. */
static void check_sign_verify(const char *path, const char *query, const char *body,
                              size_t body_len, const headers_t *sent)
{
    const char *host = on_header((void *)sent, "host");
    const char *token = on_header((void *)sent, "x-amz-security-token");
    aiq_sigv4_creds_t creds = {
        .access_key = FUZZ_KEY, .secret_key = FUZZ_SECRET, .session_token = token};
    aiq_sigv4_req_t req = {.method = "POST",
                           .host = host ? host : "127.0.0.1:8089",
                           .path = path,
                           .query = query,
                           .content_type = "application/json",
                           .body = body,
                           .body_len = body_len,
                           .region = FUZZ_REGION,
                           .service = "bedrock",
                           .now = FUZZ_NOW};
    aiq_sigv4_out_t out;
    aiq_err_t err = {0};

    if (aiq_sigv4_sign(&req, &creds, &out, &err))
        return; /* an input sign refuses (CR/LF, too long, no leading '/') */
    headers_t hs = {.n = 4,
                    .h = {{"Content-Type", req.content_type},
                          {"Host", req.host},
                          {"X-Amz-Date", out.amz_date},
                          {"Authorization", out.authorization}}};
    if (token)
        hs.h[hs.n++] = (header_t){"X-Amz-Security-Token", token};
    aiq_sigv4_verify_req_t v = verify_req(path, query, body, body_len, &hs, &creds);
    FUZZ_CHECK(aiq_sigv4_verify(&v, &err) == 0, "signed request refused: %s (path %s query %s)",
               err.msg, path, query ? query : "(none)");

    size_t n = strlen(out.authorization);
    out.authorization[n - 1] = out.authorization[n - 1] == '0' ? '1' : '0';
    FUZZ_CHECK(aiq_sigv4_verify(&v, &err) == AIQ_EINVAL, "a changed signature verified");
}

static const char *on_param(void *ctx, const char *location, const char *name)
{
    return !strcmp(location, "uri") && !strcmp(name, "modelId") ? ctx : NULL;
}

static void check_route(const char *path)
{
    char model_id[SIM_MODEL_ID_MAX + 1];
    const char *methods[] = {"POST", "GET"};

    for (size_t m = 0; m < 2; m++) {
        memset(model_id, 'x', sizeof(model_id));
        sim_route_t r = sim_route_of(path, methods[m], model_id, sizeof(model_id));
        bool model = sim_route_is_model(r);
        FUZZ_CHECK(memchr(model_id, '\0', sizeof(model_id)), "model id not terminated");
        FUZZ_CHECK(model == (model_id[0] != '\0'), "route %d with model id '%s'", r, model_id);
        FUZZ_CHECK(!model || !strcmp(methods[m], "POST"), "model route for GET");
        if (model) {
            /* What a client would put in the path for that id decodes back to it. */
            char enc[3 * SIM_MODEL_ID_MAX + 1], again[SIM_MODEL_ID_MAX + 1];
            FUZZ_CHECK(aiq_sigv4_encode_segment(model_id, enc, sizeof(enc)) >= 0, "encode");
            FUZZ_CHECK(sim_model_id_decode(enc, strlen(enc), again, sizeof(again)) &&
                           !strcmp(again, model_id),
                       "model id '%s' does not survive encode/decode", model_id);
        }
    }
}

static void check_reply(json_t *out, const char *why, bool converse)
{
    if (!out) {
        FUZZ_CHECK(why[0], "refused without a reason");
        return;
    }
    char *text = json_dumps(out, JSON_COMPACT);
    FUZZ_CHECK(text, "reply does not serialise");
    free(text);
    json_t *t =
        converse
            ? json_object_get(
                  json_array_get(
                      json_object_get(json_object_get(json_object_get(out, "output"), "message"),
                                      "content"),
                      0),
                  "text")
            : json_object_get(json_array_get(json_object_get(out, "content"), 0), "text");
    FUZZ_CHECK(json_is_string(t) && json_string_length(t) < SIM_REPLY_MAX, "reply text");
    const char *stop =
        json_string_value(json_object_get(out, converse ? "stopReason" : "stop_reason"));
    FUZZ_CHECK(
        stop && (!strcmp(stop, "end_turn") || !strcmp(stop, "max_tokens") ||
                 !strcmp(stop, "stop_sequence") ||
                 (converse && (!strcmp(stop, "tool_use") || !strcmp(stop, "guardrail_intervened") ||
                               !strcmp(stop, "content_filtered")))),
        "stop reason %s", stop ? stop : "(none)");
    if (!converse)
        FUZZ_CHECK(json_is_null(json_object_get(out, "stop_sequence")) ==
                       !!strcmp(stop, "stop_sequence"),
                   "stop_sequence and stop_reason disagree");
}

/* Any key hits every other time: both cache paths get exercised. */
static bool on_cache(void *ctx, uint64_t key)
{
    (void)ctx;
    return key & 1;
}

/* Every message of an event stream parses back with intact CRCs and the expected headers. */
static void check_event_stream(const sim_buf_t *b)
{
    size_t off = 0;

    while (off < b->len) {
        char hbuf[1024];
        const char *names[8], *values[8];
        size_t nh, used, plen;
        const unsigned char *payload;
        FUZZ_CHECK(sim_event_parse(b->data + off, b->len - off, &used, hbuf, sizeof(hbuf), names,
                                   values, 8, &nh, &payload, &plen) == 0,
                   "event at %zu does not parse", off);
        FUZZ_CHECK(nh == 3 && !strcmp(names[2], ":message-type"), "event headers");
        json_t *o = json_loadb((const char *)payload, plen, 0, NULL);
        FUZZ_CHECK(json_is_object(o), "event payload is not a JSON object");
        json_decref(o);
        off += used;
    }
}

static void check_streams(json_t *doc, const sim_call_t *call)
{
    sim_buf_t b = {0};
    char why[300];

    if (sim_converse_stream(doc, call, &b, why, sizeof(why)) == 0)
        check_event_stream(&b);
    sim_buf_free(&b);
    if (sim_invoke_stream(doc, call, &b, why, sizeof(why)) == 0)
        check_event_stream(&b);
    sim_buf_free(&b);
}

/* The checked-in shapes file (FUZZ_MODEL_FILE) judges every body without crashing, and a
 * refusal always says why. Loaded once. */
static void check_model(json_t *doc, const char *model_id)
{
    static sim_model_t *model;
    static bool tried;
    static const char *const ops[] = {"Converse", "ConverseStream", "CountTokens", "InvokeModel"};
    char why[600];

    if (!tried) {
        json_t *m = json_load_file(FUZZ_MODEL_FILE, 0, NULL);
        tried = true;
        model = m ? sim_model_new(m, why, sizeof(why)) : NULL;
        json_decref(m);
        FUZZ_CHECK(model, "cannot load %s", FUZZ_MODEL_FILE);
    }
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        int rc = sim_model_check(model, ops[i], doc, on_param, (void *)model_id, why, sizeof(why));
        FUZZ_CHECK(rc == 0 || (rc == -1 && why[0]), "%s: refusal without a reason", ops[i]);
    }
}

static void check_body(const char *path, const char *body, size_t body_len)
{
    char model_id[SIM_MODEL_ID_MAX + 1], why[300];
    json_t *doc = json_loadb(body, body_len, JSON_REJECT_DUPLICATES, NULL);

    if (!json_is_object(doc)) {
        json_decref(doc);
        return;
    }
    if (sim_route_of(path, "POST", model_id, sizeof(model_id)) == SIM_ROUTE_UNKNOWN)
        snprintf(model_id, sizeof(model_id), "anthropic.claude-3-haiku-20240307-v1:0");
    sim_call_t call = {.model_id = model_id,
                       .latency_ms = 42,
                       .raw = body,
                       .raw_len = body_len,
                       .cache = on_cache,
                       .cache_ctx = NULL};
    json_t *out = sim_converse_reply(doc, &call, NULL, why, sizeof(why));
    check_reply(out, why, true);
    json_decref(out);
    if (sim_family_of(model_id) == SIM_FAMILY_ANTHROPIC) {
        out = sim_invoke_reply(doc, &call, NULL, why, sizeof(why));
        check_reply(out, why, false);
        json_decref(out);
    }
    check_streams(doc, &call);
    out = sim_count_tokens_reply(doc, &call, why, sizeof(why));
    FUZZ_CHECK(out ? json_integer_value(json_object_get(out, "inputTokens")) >= 1 : why[0] != 0,
               "count tokens");
    json_decref(out);
    check_model(doc, model_id);
    json_decref(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1), uri[SIM_URI_MAX + 1], *body;
    const char *path, *query;
    size_t body_len;
    headers_t hs;

    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    const char *target = split_request(text, size, &hs, &body, &body_len);
    if (!sim_uri_split(uri, target, &path, &query)) {
        FUZZ_CHECK(!*path && !query, "a cut target was split");
        free(text);
        return 0;
    }
    FUZZ_CHECK(strlen(path) + (query ? strlen(query) + 1 : 0) == strlen(target),
               "split lost bytes");
    check_route(path);
    check_verify(path, query, body, body_len, &hs);
    check_sign_verify(path, query, body, body_len, &hs);
    check_body(path, body, body_len);
    free(text);
    return 0;
}
