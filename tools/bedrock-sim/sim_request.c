/* sim_request.c — what bedrock-sim reads from a request: target, route, model id, and the
 * Converse / InvokeModel bodies with the deterministic replies built from them. Kept apart
 * from the HTTP server so that it can be fuzzed (fuzz/fuzz_sim_request.c). */
#include "sim_request.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ---- request target ---------------------------------------------------------------------- */

bool sim_uri_split(char buf[SIM_URI_MAX + 1], const char *uri, const char **path,
                   const char **query)
{
    size_t n = strlen(uri);
    bool fits = n <= SIM_URI_MAX;
    char *q;

    if (!fits)
        n = 0; /* the caller answers 404: no route is derived from a cut-off target */
    memcpy(buf, uri, n);
    buf[n] = '\0';
    q = strchr(buf, '?');
    if (q)
        *q++ = '\0';
    *path = buf;
    *query = q;
    return fits;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

bool sim_model_id_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    json_t *probe;

    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
                return false;
            c = hexval(s[i + 1]) << 4 | hexval(s[i + 2]);
            i += 2;
        }
        if (c == 0 || o + 1 >= cap)
            return false;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    probe = o ? json_stringn(out, o) : NULL; /* jansson rejects invalid UTF-8 */
    json_decref(probe);
    return probe != NULL;
}

sim_route_t sim_route_of(const char *path, const char *method, char *model_id, size_t cap)
{
    static const char prefix[] = "/model/";
    const char *id, *slash;

    model_id[0] = '\0';
    if (!strcmp(path, "/_sim/stats"))
        return SIM_ROUTE_SIM_STATS;
    if (!strcmp(path, "/_sim/reset"))
        return SIM_ROUTE_SIM_RESET;
    if (!strcmp(path, "/_sim/config"))
        return SIM_ROUTE_SIM_CONFIG;
    if (!strcmp(path, "/_sim/outage"))
        return SIM_ROUTE_SIM_OUTAGE;
    if (strcmp(method, "POST") || strncmp(path, prefix, sizeof(prefix) - 1))
        return SIM_ROUTE_UNKNOWN;
    id = path + sizeof(prefix) - 1;
    slash = strchr(id, '/');
    if (!slash || !sim_model_id_decode(id, (size_t)(slash - id), model_id, cap)) {
        model_id[0] = '\0';
        return SIM_ROUTE_UNKNOWN;
    }
    if (!strcmp(slash, "/converse"))
        return SIM_ROUTE_CONVERSE;
    if (!strcmp(slash, "/invoke"))
        return SIM_ROUTE_INVOKE;
    model_id[0] = '\0';
    return SIM_ROUTE_UNKNOWN;
}

/* ---- Bedrock behaviour ----------------------------------------------------------------------- */

static size_t utf8_prefix(const char *s, size_t max_chars)
{
    size_t i = 0, chars = 0;
    while (s[i] && chars < max_chars) {
        i++;
        while ((s[i] & 0xC0) == 0x80)
            i++;
        chars++;
    }
    return i;
}

static size_t utf8_floor(const char *s, size_t len, size_t max_bytes)
{
    if (len <= max_bytes)
        return len;
    while (max_bytes > 0 && (s[max_bytes] & 0xC0) == 0x80)
        max_bytes--;
    return max_bytes;
}

static unsigned tokens_of(size_t bytes)
{
    return (unsigned)((bytes + 3) / 4);
}

_Static_assert(SIM_REPLY_MAX > sizeof("sim reply to:  []") + 4 * SIM_QUOTE_CHARS + SIM_MODEL_ID_MAX,
               "the reply text always fits");

typedef struct reply {
    char text[SIM_REPLY_MAX];
    size_t len;
    unsigned input_tokens, output_tokens;
    const char *stop_reason;   /* "end_turn", "max_tokens", "stop_sequence" */
    const char *stop_sequence; /* borrowed from the request JSON, or NULL */
} reply_t;

/* The deterministic answer: "sim reply to: <first 60 chars of the last user text> [<model>]",
 * ~4 bytes a token, cut at the earliest stop sequence or at max_tokens (0 = no cap). */
static void reply_build(reply_t *rp, const char *last_user, size_t input_bytes,
                        const char *model_id, long long max_tokens, json_t *stops)
{
    int n = snprintf(rp->text, sizeof(rp->text), "sim reply to: %.*s [%s]",
                     (int)utf8_prefix(last_user, SIM_QUOTE_CHARS), last_user, model_id);
    size_t cut = SIZE_MAX, idx;
    json_t *v;

    rp->len = n < 0 ? 0 : (size_t)n; /* never truncated: see the assertion on SIM_REPLY_MAX */
    rp->stop_reason = "end_turn";
    rp->stop_sequence = NULL;
    json_array_foreach(stops, idx, v)
    {
        const char *seq = json_string_value(v);
        const char *hit = seq && *seq ? strstr(rp->text, seq) : NULL;
        if (hit && (size_t)(hit - rp->text) < cut) {
            cut = (size_t)(hit - rp->text);
            rp->stop_sequence = seq;
        }
    }
    if (max_tokens > 0 && (unsigned long long)max_tokens * 4 < rp->len &&
        (unsigned long long)max_tokens * 4 < cut) {
        rp->len = utf8_floor(rp->text, rp->len, (size_t)max_tokens * 4);
        rp->stop_reason = "max_tokens";
        rp->stop_sequence = NULL;
    } else if (rp->stop_sequence) {
        rp->len = cut;
        rp->stop_reason = "stop_sequence";
    }
    rp->text[rp->len] = '\0';
    rp->input_tokens = tokens_of(input_bytes) ? tokens_of(input_bytes) : 1;
    rp->output_tokens = tokens_of(rp->len);
}

/* Texts of one message's content: a string (Anthropic) or an array of blocks with "text". */
static int scan_content(json_t *content, bool allow_string, size_t *bytes, const char **last,
                        char *why, size_t cap)
{
    size_t i;
    json_t *block;

    if (allow_string && json_is_string(content)) {
        *bytes += json_string_length(content);
        *last = json_string_value(content);
        return 0;
    }
    if (!json_is_array(content)) {
        snprintf(why, cap, "content must be an array of content blocks");
        return -1;
    }
    json_array_foreach(content, i, block)
    {
        json_t *text = json_object_get(block, "text");
        if (!json_is_object(block) || (text && !json_is_string(text))) {
            snprintf(why, cap, "content[%zu] is not a valid content block", i);
            return -1;
        }
        if (text) {
            *bytes += json_string_length(text);
            *last = json_string_value(text);
        }
    }
    return 0;
}

/* messages: non-empty array of {role: user|assistant, content}; finds the last user text. */
static int scan_messages(json_t *messages, bool allow_string, size_t *bytes, const char **last_user,
                         char *why, size_t cap)
{
    size_t i;
    json_t *m;

    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        snprintf(why, cap, "messages must be a non-empty array");
        return -1;
    }
    json_array_foreach(messages, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *last = NULL;
        if (!role || (strcmp(role, "user") && strcmp(role, "assistant"))) {
            snprintf(why, cap, "messages[%zu].role must be \"user\" or \"assistant\"", i);
            return -1;
        }
        if (scan_content(json_object_get(m, "content"), allow_string, bytes, &last, why, cap))
            return -1;
        if (!strcmp(role, "user") && last)
            *last_user = last;
    }
    return 0;
}

static bool is_string_array(json_t *a)
{
    size_t i;
    json_t *v;

    if (!json_is_array(a))
        return false;
    json_array_foreach(a, i, v)
    {
        if (!json_is_string(v))
            return false;
    }
    return true;
}

/* Converse: validates the body and writes the reply; NULL plus why on a validation error. */
json_t *sim_converse_reply(json_t *body, const char *model_id, int latency_ms, char *why,
                           size_t cap)
{
    json_t *cfg = json_object_get(body, "inferenceConfig"),
           *system = json_object_get(body, "system");
    json_t *max = json_object_get(cfg, "maxTokens"), *stops = json_object_get(cfg, "stopSequences");
    const char *last_user = "", *system_last = NULL; /* system text counts only as input */
    size_t bytes = 0;
    reply_t rp;

    why[0] = '\0'; /* stays empty when only json_pack fails (out of memory) */
    if ((cfg && !json_is_object(cfg)) ||
        (max && (!json_is_integer(max) || json_integer_value(max) < 1)) ||
        (stops && !is_string_array(stops))) {
        snprintf(why, cap,
                 "inferenceConfig: maxTokens must be an integer >= 1 and stopSequences "
                 "an array of strings");
        return NULL;
    }
    if (system && scan_content(system, false, &bytes, &system_last, why, cap))
        return NULL;
    if (scan_messages(json_object_get(body, "messages"), false, &bytes, &last_user, why, cap))
        return NULL;
    reply_build(&rp, last_user, bytes, model_id, max ? json_integer_value(max) : 0, stops);
    return json_pack("{s{s{sss[{ss#}]}} ss s{sIsIsI} s{sI}}", "output", "message", "role",
                     "assistant", "content", "text", rp.text, (int)rp.len, "stopReason",
                     rp.stop_reason, "usage", "inputTokens", (json_int_t)rp.input_tokens,
                     "outputTokens", (json_int_t)rp.output_tokens, "totalTokens",
                     (json_int_t)(rp.input_tokens + rp.output_tokens), "metrics", "latencyMs",
                     (json_int_t)latency_ms);
}

/* FNV-1a, for stable message ids. */
static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

/* InvokeModel with an Anthropic messages body. */
json_t *sim_invoke_reply(json_t *body, const char *model_id, const char *raw, size_t raw_len,
                         char *why, size_t cap)
{
    json_t *max = json_object_get(body, "max_tokens"), *system = json_object_get(body, "system");
    json_t *stops = json_object_get(body, "stop_sequences");
    const char *last_user = "", *system_last = NULL; /* system text counts only as input */
    size_t bytes = 0;
    char id[40];
    reply_t rp;

    why[0] = '\0'; /* stays empty when only json_pack fails (out of memory) */
    if (!json_is_string(json_object_get(body, "anthropic_version"))) {
        snprintf(why, cap,
                 "Malformed input request: #: required key [anthropic_version] not found");
        return NULL;
    }
    if (!json_is_integer(max) || json_integer_value(max) < 1) {
        snprintf(why, cap, "Malformed input request: #/max_tokens: must be an integer >= 1");
        return NULL;
    }
    if (stops && !is_string_array(stops)) {
        snprintf(why, cap, "Malformed input request: #/stop_sequences: expected array of strings");
        return NULL;
    }
    if (system && scan_content(system, true, &bytes, &system_last, why, cap))
        return NULL;
    if (scan_messages(json_object_get(body, "messages"), true, &bytes, &last_user, why, cap))
        return NULL;
    reply_build(&rp, last_user, bytes, model_id, json_integer_value(max), stops);
    uint64_t h = fnv1a(fnv1a(0xcbf29ce484222325ULL, model_id, strlen(model_id)), raw, raw_len);
    snprintf(id, sizeof(id), "msg_bdrk_sim%016" PRIx64, h);
    return json_pack("{ss ss ss ss s[{ss ss#}] ss so s{sIsI}}", "id", id, "type", "message", "role",
                     "assistant", "model", model_id, "content", "type", "text", "text", rp.text,
                     (int)rp.len, "stop_reason", rp.stop_reason, "stop_sequence",
                     rp.stop_sequence ? json_string(rp.stop_sequence) : json_null(), "usage",
                     "input_tokens", (json_int_t)rp.input_tokens, "output_tokens",
                     (json_int_t)rp.output_tokens);
}
