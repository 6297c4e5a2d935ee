/* sim_request.c — what bedrock-sim reads from a request: target, route, model id, the
 * Converse and CountTokens bodies with the deterministic replies built from them, and the
 * prompt-cache accounting every family shares. Kept apart from the HTTP server so that it can
 * be fuzzed (fuzz/fuzz_sim_request.c). InvokeModel's families are in sim_family.c, the
 * event streams in sim_stream.c, the service-model check in sim_model.c. */
#include "sim_internal.h"
#include "sim_request.h"

#include <inttypes.h>
#include <stdlib.h>
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

/* The model calls: requestUri /model/{modelId}/<suffix> of each operation in botocore's model. */
static const struct {
    const char *suffix, *operation;
    sim_route_t route;
} model_routes[] = {
    {"converse", "Converse", SIM_ROUTE_CONVERSE},
    {"converse-stream", "ConverseStream", SIM_ROUTE_CONVERSE_STREAM},
    {"invoke", "InvokeModel", SIM_ROUTE_INVOKE},
    {"invoke-with-response-stream", "InvokeModelWithResponseStream", SIM_ROUTE_INVOKE_STREAM},
    {"count-tokens", "CountTokens", SIM_ROUTE_COUNT_TOKENS},
};

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
    for (size_t i = 0; i < sizeof(model_routes) / sizeof(model_routes[0]); i++)
        if (!strcmp(slash + 1, model_routes[i].suffix))
            return model_routes[i].route;
    model_id[0] = '\0';
    return SIM_ROUTE_UNKNOWN;
}

bool sim_route_is_model(sim_route_t r)
{
    return sim_route_operation(r) != NULL;
}

const char *sim_route_operation(sim_route_t r)
{
    for (size_t i = 0; i < sizeof(model_routes) / sizeof(model_routes[0]); i++)
        if (model_routes[i].route == r)
            return model_routes[i].operation;
    return NULL;
}

/* ---- the prompt and the reply every family shares -------------------------------------------- */

sim_family_t sim_family_of(const char *model_id)
{
    static const char *const geo[] = {"us.", "eu.", "apac.", "global.", "us-gov.",
                                      "jp.", "au.", "ca.",   NULL};
    static const struct {
        const char *prefix;
        sim_family_t f;
    } fams[] = {
        {"anthropic.", SIM_FAMILY_ANTHROPIC},    {"amazon.nova", SIM_FAMILY_NOVA},
        {"amazon.titan-text", SIM_FAMILY_TITAN}, {"meta.llama", SIM_FAMILY_LLAMA},
        {"mistral.", SIM_FAMILY_MISTRAL},        {"cohere.command", SIM_FAMILY_COHERE},
    };
    const char *id = model_id, *slash = strrchr(model_id, '/');

    if (!strncmp(id, "arn:", 4) && slash) /* .../foundation-model/<id>, inference-profile/<id> */
        id = slash + 1;
    for (size_t i = 0; geo[i]; i++)
        if (!strncmp(id, geo[i], strlen(geo[i]))) {
            id += strlen(geo[i]);
            break;
        }
    for (size_t i = 0; i < sizeof(fams) / sizeof(fams[0]); i++)
        if (!strncmp(id, fams[i].prefix, strlen(fams[i].prefix)))
            return fams[i].f;
    return SIM_FAMILY_ANTHROPIC;
}

const char *sim_family_name(sim_family_t f)
{
    static const char *const names[] = {"anthropic", "nova", "titan", "llama", "mistral", "cohere"};
    return (unsigned)f < sizeof(names) / sizeof(names[0]) ? names[f] : "?";
}

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

unsigned sim__tokens_of(size_t bytes)
{
    return (unsigned)((bytes + 3) / 4);
}

/* FNV-1a, for stable ids and cache keys. */
static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

uint64_t sim__call_id(const sim_call_t *c)
{
    return fnv1a(fnv1a(0xcbf29ce484222325ULL, c->model_id, strlen(c->model_id)), c->raw,
                 c->raw ? c->raw_len : 0);
}

void sim__prompt_init(sim_prompt_t *p, const char *model_id)
{
    *p = (sim_prompt_t){.last_user = ""};
    p->hash = fnv1a(0xcbf29ce484222325ULL, model_id, strlen(model_id) + 1);
}

void sim__prompt_text(sim_prompt_t *p, const char *text, size_t len, bool user)
{
    p->bytes += len;
    p->hash = fnv1a(fnv1a(p->hash, text, len), "\x1f", 1); /* a separator: "ab","c" != "a","bc" */
    if (user)
        p->last_user = text;
}

bool sim__prompt_cache_point(sim_prompt_t *p)
{
    if (p->npoints == SIM_CACHE_POINTS)
        return false;
    p->point_key[p->npoints] = p->hash;
    p->point_bytes[p->npoints++] = p->bytes;
    return true;
}

/* Longest cached prefix first: a hit there is a read; every longer point was just recorded by
 * the lookup, so it is written. */
static void cache_account(const sim_prompt_t *p, const sim_call_t *c, unsigned total,
                          sim_usage_t *u)
{
    size_t read_bytes = 0;

    u->input = total;
    if (!c->cache || !p->npoints)
        return;
    for (size_t i = p->npoints; i-- > 0;)
        if (c->cache(c->cache_ctx, p->point_key[i])) {
            read_bytes = p->point_bytes[i];
            break;
        }
    unsigned last = sim__tokens_of(p->point_bytes[p->npoints - 1]);
    u->cache_read = sim__tokens_of(read_bytes);
    u->cache_write = last - u->cache_read;
    u->input = total > last ? total - last : 0;
}

_Static_assert(SIM_REPLY_MAX > sizeof("sim reply to:  []") + 4 * SIM_QUOTE_CHARS + SIM_MODEL_SHOWN,
               "the reply text always fits");

void sim__reply_build(sim_reply_t *rp, const sim_prompt_t *p, const sim_call_t *c)
{
    size_t mlen = utf8_floor(c->model_id, strlen(c->model_id), SIM_MODEL_SHOWN);
    int n = snprintf(rp->text, sizeof(rp->text), "sim reply to: %.*s [%.*s]",
                     (int)utf8_prefix(p->last_user, SIM_QUOTE_CHARS), p->last_user, (int)mlen,
                     c->model_id);
    size_t cut = SIZE_MAX, idx;
    json_t *v;

    rp->len = n < 0 ? 0 : (size_t)n; /* never truncated: see the assertion on SIM_REPLY_MAX */
    rp->stop_reason = "end_turn";
    rp->stop_sequence = NULL;
    json_array_foreach(p->stops, idx, v)
    {
        const char *seq = json_string_value(v);
        const char *hit = seq && *seq ? strstr(rp->text, seq) : NULL;
        if (hit && (size_t)(hit - rp->text) < cut) {
            cut = (size_t)(hit - rp->text);
            rp->stop_sequence = seq;
        }
    }
    if (p->max_tokens > 0 && (unsigned long long)p->max_tokens * 4 < rp->len &&
        (unsigned long long)p->max_tokens * 4 < cut) {
        rp->len = utf8_floor(rp->text, rp->len, (size_t)p->max_tokens * 4);
        rp->stop_reason = "max_tokens";
        rp->stop_sequence = NULL;
    } else if (rp->stop_sequence) {
        rp->len = cut;
        rp->stop_reason = "stop_sequence";
    }
    rp->text[rp->len] = '\0';
    rp->usage = (sim_usage_t){0};
    cache_account(p, c, sim__tokens_of(p->bytes) ? sim__tokens_of(p->bytes) : 1, &rp->usage);
    rp->usage.output = sim__tokens_of(rp->len);
    rp->id = sim__call_id(c);
}

/* ---- base64 ------------------------------------------------------------------------------------
 */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

json_t *sim__base64_json(const void *data, size_t n)
{
    const unsigned char *p = data;
    size_t olen = (n + 2) / 3 * 4, o = 0;
    char *out = malloc(olen + 1);
    json_t *s;

    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? b64[v & 63] : '=';
    }
    out[o] = '\0';
    s = json_stringn(out, o);
    free(out);
    return s;
}

static int b64_value(char ch)
{
    const char *at = ch ? strchr(b64, ch) : NULL;
    return at ? (int)(at - b64) : -1;
}

int sim__base64_decode(const char *s, size_t n, unsigned char **out, size_t *out_len)
{
    unsigned char *buf;
    size_t o = 0;

    if (n % 4)
        return -1;
    if (!(buf = malloc(n / 4 * 3 + 1)))
        return -1;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            bool last_quad = i + 4 == n;
            if (s[i + k] == '=' && last_quad && k >= 2 && (k == 3 || s[i + 3] == '=')) {
                v[k] = 0;
                pad++;
            } else if ((v[k] = b64_value(s[i + k])) < 0) {
                free(buf);
                return -1;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | v[3];
        buf[o++] = (unsigned char)(w >> 16);
        if (pad < 2)
            buf[o++] = (unsigned char)(w >> 8);
        if (pad < 1)
            buf[o++] = (unsigned char)w;
    }
    buf[o] = '\0';
    *out = buf;
    *out_len = o;
    return 0;
}

/* ---- Converse ----------------------------------------------------------------------------------
 */

/* One content block of a message or the system list. Text counts as input; a cachePoint marks
 * the prefix so far; tool results' text counts too. Every other block (image, document, ...)
 * passes through: the model check has already judged its shape. */
static int scan_block(json_t *block, bool user, sim_prompt_t *p, const char *where, size_t i,
                      char *why, size_t cap)
{
    json_t *text = json_object_get(block, "text");
    json_t *tr = json_object_get(block, "toolResult");

    if (!json_is_object(block) || (text && !json_is_string(text))) {
        snprintf(why, cap, "%s[%zu] is not a valid content block", where, i);
        return -1;
    }
    if (text)
        sim__prompt_text(p, json_string_value(text), json_string_length(text), user);
    if (json_object_get(block, "cachePoint") && !sim__prompt_cache_point(p)) {
        snprintf(why, cap, "A maximum of %d cachePoint blocks are allowed per request",
                 SIM_CACHE_POINTS);
        return -1;
    }
    if (json_is_object(tr)) {
        size_t k;
        json_t *part;
        json_array_foreach(json_object_get(tr, "content"), k, part)
        {
            json_t *t = json_object_get(part, "text");
            if (json_is_string(t))
                sim__prompt_text(p, json_string_value(t), json_string_length(t), false);
        }
    }
    return 0;
}

static int scan_blocks(json_t *blocks, bool user, sim_prompt_t *p, const char *where, char *why,
                       size_t cap)
{
    size_t i;
    json_t *b;

    if (!json_is_array(blocks)) {
        snprintf(why, cap, "%s must be an array of content blocks", where);
        return -1;
    }
    json_array_foreach(blocks, i, b)
    {
        if (scan_block(b, user, p, where, i, why, cap))
            return -1;
    }
    return 0;
}

/* Tools come first in the cached prefix, as Bedrock orders it: tools, system, messages. */
static int scan_tools(json_t *tool_config, sim_prompt_t *p, char *why, size_t cap)
{
    size_t i;
    json_t *t;

    json_array_foreach(json_object_get(tool_config, "tools"), i, t)
    {
        json_t *spec = json_object_get(t, "toolSpec");
        if (spec) {
            char *dump = json_dumps(spec, JSON_COMPACT | JSON_SORT_KEYS);
            if (dump)
                sim__prompt_text(p, dump, strlen(dump), false);
            free(dump); /* the hash and byte count are taken; the text is not kept */
        }
        if (json_object_get(t, "cachePoint") && !sim__prompt_cache_point(p)) {
            snprintf(why, cap, "A maximum of %d cachePoint blocks are allowed per request",
                     SIM_CACHE_POINTS);
            return -1;
        }
    }
    return 0;
}

int sim__converse_prompt(json_t *body, sim_prompt_t *p, char *why, size_t cap)
{
    json_t *system = json_object_get(body, "system"), *messages = json_object_get(body, "messages");
    size_t i;
    json_t *m;

    if (scan_tools(json_object_get(body, "toolConfig"), p, why, cap))
        return -1;
    if (system && scan_blocks(system, false, p, "system", why, cap))
        return -1;
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        snprintf(why, cap, "messages must be a non-empty array");
        return -1;
    }
    json_array_foreach(messages, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role || (strcmp(role, "user") && strcmp(role, "assistant"))) {
            snprintf(why, cap, "messages[%zu].role must be \"user\" or \"assistant\"", i);
            return -1;
        }
        if (scan_blocks(json_object_get(m, "content"), !strcmp(role, "user"), p, "content", why,
                        cap))
            return -1;
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

static int converse_limits(json_t *body, sim_prompt_t *p, char *why, size_t cap)
{
    json_t *cfg = json_object_get(body, "inferenceConfig");
    json_t *max = json_object_get(cfg, "maxTokens"), *stops = json_object_get(cfg, "stopSequences");

    if ((cfg && !json_is_object(cfg)) ||
        (max && (!json_is_integer(max) || json_integer_value(max) < 1)) ||
        (stops && !is_string_array(stops))) {
        snprintf(why, cap,
                 "inferenceConfig: maxTokens must be an integer >= 1 and stopSequences "
                 "an array of strings");
        return -1;
    }
    p->max_tokens = max ? json_integer_value(max) : 0;
    p->stops = stops;
    return 0;
}

/* The tool the model "calls": with toolChoice any or tool, or when the user asks with
 * "sim:tool", the named tool or the first one. */
static const char *tool_to_call(json_t *body, const char *last_user)
{
    json_t *tc = json_object_get(body, "toolConfig"), *choice = json_object_get(tc, "toolChoice");
    json_t *first = json_object_get(
        json_object_get(json_array_get(json_object_get(tc, "tools"), 0), "toolSpec"), "name");
    const char *named = json_string_value(json_object_get(json_object_get(choice, "tool"), "name"));

    if (named)
        return named;
    if (json_object_get(choice, "any") || strstr(last_user, "sim:tool"))
        return json_string_value(first);
    return NULL;
}

/* additionalModelResponseFieldPaths ["/a/b", ...]: each answered with its last key, null. */
static json_t *response_fields(json_t *paths)
{
    json_t *o = json_object();
    size_t i;
    json_t *v;

    json_array_foreach(paths, i, v)
    {
        const char *s = json_string_value(v), *slash = s ? strrchr(s, '/') : NULL;
        if (slash && slash[1])
            json_object_set_new(o, slash + 1, json_null());
    }
    return o;
}

/* A guardrail intervenes when the user text says "sim:guardrail" and a guardrail is set. */
static json_t *guardrail_trace(json_t *gc)
{
    const char *id = json_string_value(json_object_get(gc, "guardrailIdentifier"));
    return json_pack("{s{s{s{s{s[{ssssss}]}}}}}", "guardrail", "inputAssessment", id ? id : "sim",
                     "contentPolicy", "filters", "type", "VIOLENCE", "confidence", "HIGH", "action",
                     "BLOCKED");
}

static json_t *usage_json(const sim_usage_t *u)
{
    json_t *o = json_pack("{sIsIsI}", "inputTokens", (json_int_t)u->input, "outputTokens",
                          (json_int_t)u->output, "totalTokens",
                          (json_int_t)(u->input + u->output + u->cache_read + u->cache_write));
    if (o && (u->cache_read || u->cache_write)) {
        json_object_set_new(o, "cacheReadInputTokens", json_integer(u->cache_read));
        json_object_set_new(o, "cacheWriteInputTokens", json_integer(u->cache_write));
    }
    return o;
}

json_t *sim_converse_reply(json_t *body, const sim_call_t *c, sim_usage_t *usage, char *why,
                           size_t cap)
{
    json_t *gc = json_object_get(body, "guardrailConfig");
    sim_prompt_t p;
    sim_reply_t rp;
    json_t *content, *out;
    const char *tool;

    why[0] = '\0'; /* stays empty when only json_pack fails (out of memory) */
    sim__prompt_init(&p, c->model_id);
    if (converse_limits(body, &p, why, cap) || sim__converse_prompt(body, &p, why, cap))
        return NULL;
    sim__reply_build(&rp, &p, c);
    bool blocked = gc && strstr(p.last_user, "sim:guardrail");
    if (blocked) {
        rp.len = (size_t)snprintf(rp.text, sizeof(rp.text), "sim guardrail intervened");
        rp.stop_reason = "guardrail_intervened";
    } else if (strstr(p.last_user, "sim:content_filtered")) {
        rp.stop_reason = "content_filtered";
    }
    content = json_pack("[{ss#}]", "text", rp.text, (int)rp.len);
    if (!blocked && (tool = tool_to_call(body, p.last_user)) && content) {
        char id[40];
        snprintf(id, sizeof(id), "tooluse_sim%016" PRIx64, rp.id);
        json_array_append_new(
            content, json_pack("{s{sssss{}}}", "toolUse", "toolUseId", id, "name", tool, "input"));
        rp.stop_reason = "tool_use";
    }
    if (usage)
        *usage = rp.usage;
    out = json_pack("{s{s{ssso}} ss so s{sI}}", "output", "message", "role", "assistant", "content",
                    content, "stopReason", rp.stop_reason, "usage", usage_json(&rp.usage),
                    "metrics", "latencyMs", (json_int_t)c->latency_ms);
    if (out && json_object_get(body, "additionalModelResponseFieldPaths"))
        json_object_set_new(
            out, "additionalModelResponseFields",
            response_fields(json_object_get(body, "additionalModelResponseFieldPaths")));
    if (out && blocked && json_is_string(json_object_get(gc, "trace")) &&
        strcmp(json_string_value(json_object_get(gc, "trace")), "disabled"))
        json_object_set_new(out, "trace", guardrail_trace(gc));
    if (out && json_object_get(body, "performanceConfig"))
        json_object_set(out, "performanceConfig", json_object_get(body, "performanceConfig"));
    if (out && json_object_get(body, "serviceTier"))
        json_object_set(out, "serviceTier", json_object_get(body, "serviceTier"));
    return out;
}

/* ---- CountTokens ------------------------------------------------------------------------------
 */

static int count_invoke_body(json_t *ib, const sim_call_t *c, unsigned *n, char *why, size_t cap)
{
    json_t *b64v = json_object_get(ib, "body"), *doc;
    unsigned char *raw;
    size_t raw_len;
    sim_prompt_t p;

    if (!json_is_string(b64v) ||
        sim__base64_decode(json_string_value(b64v), json_string_length(b64v), &raw, &raw_len)) {
        snprintf(why, cap, "input.invokeModel.body must be base64");
        return -1;
    }
    doc = json_loadb((const char *)raw, raw_len, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    sim__prompt_init(&p, c->model_id);
    int rc = json_is_object(doc)
                 ? sim__family_prompt(sim_family_of(c->model_id), doc, &p, why, cap)
                 : (snprintf(why, cap, SIM_MALFORMED "body is not a JSON object"), -1);
    json_decref(doc);
    *n = sim__tokens_of(p.bytes);
    return rc;
}

json_t *sim_count_tokens_reply(json_t *body, const sim_call_t *c, char *why, size_t cap)
{
    json_t *in = json_object_get(body, "input");
    json_t *conv = json_object_get(in, "converse"), *inv = json_object_get(in, "invokeModel");
    unsigned n = 0;

    why[0] = '\0';
    if (!json_is_object(in) || !!conv == !!inv) {
        snprintf(why, cap, "input must have exactly one of converse and invokeModel");
        return NULL;
    }
    if (conv) {
        sim_prompt_t p;
        sim__prompt_init(&p, c->model_id);
        if (sim__converse_prompt(conv, &p, why, cap))
            return NULL;
        n = sim__tokens_of(p.bytes);
    } else if (count_invoke_body(inv, c, &n, why, cap)) {
        return NULL;
    }
    return json_pack("{sI}", "inputTokens", (json_int_t)(n ? n : 1));
}
