/* sim_family.c — InvokeModel in each model family's own body shape: the request read into a
 * prompt, the reply and the streaming chunks written the way that family's model answers on
 * Bedrock (Anthropic Messages, Amazon Nova, Titan Text, Meta Llama, Mistral, Cohere). A body
 * that is not the family's shape gets the "Malformed input request" refusal Bedrock sends. */
#include "sim_internal.h"
#include "sim_request.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int malformed(char *why, size_t cap, const char *what)
{
    snprintf(why, cap, SIM_MALFORMED "%s", what);
    return -1;
}

static bool string_array(json_t *a)
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

/* An optional positive integer limit; -1 when present and not one. */
static int take_max(json_t *v, sim_prompt_t *p)
{
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1)
        return -1;
    p->max_tokens = json_integer_value(v);
    return 0;
}

static int take_stops(json_t *v, sim_prompt_t *p)
{
    if (!v)
        return 0;
    if (!string_array(v))
        return -1;
    p->stops = v;
    return 0;
}

/* Anthropic content: a string, or blocks {type: text, text, cache_control?}. */
static int anthropic_content(json_t *content, bool user, sim_prompt_t *p, char *why, size_t cap)
{
    size_t i;
    json_t *b;

    if (json_is_string(content)) {
        sim__prompt_text(p, json_string_value(content), json_string_length(content), user);
        return 0;
    }
    if (!json_is_array(content))
        return malformed(why, cap, "#/messages/content: expected type: JSONArray or String");
    json_array_foreach(content, i, b)
    {
        json_t *text = json_object_get(b, "text");
        if (!json_is_object(b) || !json_is_string(json_object_get(b, "type")) ||
            (text && !json_is_string(text)))
            return malformed(why, cap, "#/messages/content: not a valid content block");
        if (text)
            sim__prompt_text(p, json_string_value(text), json_string_length(text), user);
        if (json_object_get(b, "cache_control") && !sim__prompt_cache_point(p))
            return malformed(why, cap, "A maximum of 4 blocks with cache_control may be provided");
    }
    return 0;
}

static int anthropic_prompt(json_t *body, sim_prompt_t *p, char *why, size_t cap)
{
    json_t *messages = json_object_get(body, "messages"), *system = json_object_get(body, "system");
    size_t i;
    json_t *m;

    if (!json_is_string(json_object_get(body, "anthropic_version")))
        return malformed(why, cap, "#: required key [anthropic_version] not found");
    if (!json_is_integer(json_object_get(body, "max_tokens")) ||
        take_max(json_object_get(body, "max_tokens"), p))
        return malformed(why, cap, "#/max_tokens: must be an integer >= 1");
    if (take_stops(json_object_get(body, "stop_sequences"), p))
        return malformed(why, cap, "#/stop_sequences: expected array of strings");
    if (system && anthropic_content(system, false, p, why, cap))
        return -1;
    if (!json_is_array(messages) || json_array_size(messages) == 0)
        return malformed(why, cap, "#/messages: expected a non-empty array");
    json_array_foreach(messages, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role || (strcmp(role, "user") && strcmp(role, "assistant")))
            return malformed(why, cap, "#/messages/role: must be user or assistant");
        if (anthropic_content(json_object_get(m, "content"), !strcmp(role, "user"), p, why, cap))
            return -1;
    }
    return 0;
}

/* Nova: schemaVersion messages-v1, Converse-like messages and system, inferenceConfig with
 * max_new_tokens (maxTokens is accepted too) and stopSequences; cachePoint blocks. */
static int nova_prompt(json_t *body, sim_prompt_t *p, char *why, size_t cap)
{
    json_t *cfg = json_object_get(body, "inferenceConfig");
    json_t *max = json_object_get(cfg, "max_new_tokens");
    json_t *conv = json_object();
    int rc;

    /* Nova's messages and system are Converse's; the Converse reader does both. */
    if (conv && json_object_get(body, "messages"))
        json_object_set(conv, "messages", json_object_get(body, "messages"));
    if (conv && json_object_get(body, "system"))
        json_object_set(conv, "system", json_object_get(body, "system"));

    if (!max)
        max = json_object_get(cfg, "maxTokens");
    if ((cfg && !json_is_object(cfg)) || take_max(max, p) ||
        take_stops(json_object_get(cfg, "stopSequences"), p)) {
        json_decref(conv);
        return malformed(why, cap, "#/inferenceConfig: max_new_tokens must be an integer >= 1");
    }
    if (!conv)
        return malformed(why, cap, "out of memory");
    rc = sim__converse_prompt(conv, p, why, cap);
    json_decref(conv);
    if (rc) {
        char inner[200];
        snprintf(inner, sizeof(inner), "%s", why);
        return malformed(why, cap, inner);
    }
    return 0;
}

static int text_prompt(json_t *body, const char *key, sim_prompt_t *p, char *why, size_t cap)
{
    json_t *t = json_object_get(body, key);
    char msg[80];

    if (!json_is_string(t) || json_string_length(t) == 0) {
        snprintf(msg, sizeof(msg), "#: required key [%s] not found", key);
        return malformed(why, cap, msg);
    }
    sim__prompt_text(p, json_string_value(t), json_string_length(t), true);
    return 0;
}

static int titan_prompt(json_t *body, sim_prompt_t *p, char *why, size_t cap)
{
    json_t *cfg = json_object_get(body, "textGenerationConfig");

    if (text_prompt(body, "inputText", p, why, cap))
        return -1;
    if ((cfg && !json_is_object(cfg)) || take_max(json_object_get(cfg, "maxTokenCount"), p) ||
        take_stops(json_object_get(cfg, "stopSequences"), p))
        return malformed(why, cap, "#/textGenerationConfig: maxTokenCount must be an integer >= 1");
    return 0;
}

static int llama_prompt(json_t *body, sim_prompt_t *p, char *why, size_t cap)
{
    if (text_prompt(body, "prompt", p, why, cap))
        return -1;
    if (take_max(json_object_get(body, "max_gen_len"), p))
        return malformed(why, cap, "#/max_gen_len: must be an integer >= 1");
    return 0;
}

static int mistral_prompt(json_t *body, sim_prompt_t *p, char *why, size_t cap)
{
    if (text_prompt(body, "prompt", p, why, cap))
        return -1;
    if (take_max(json_object_get(body, "max_tokens"), p) ||
        take_stops(json_object_get(body, "stop"), p))
        return malformed(why, cap, "#/max_tokens: must be an integer >= 1");
    return 0;
}

/* Cohere Command R ({"message", "chat_history"}) or the older Command ({"prompt"}). */
static int cohere_prompt(json_t *body, sim_prompt_t *p, char *why, size_t cap)
{
    size_t i;
    json_t *turn, *preamble = json_object_get(body, "preamble");

    if (take_max(json_object_get(body, "max_tokens"), p) ||
        take_stops(json_object_get(body, "stop_sequences"), p))
        return malformed(why, cap, "#/max_tokens: must be an integer >= 1");
    if (!json_object_get(body, "message"))
        return text_prompt(body, "prompt", p, why, cap);
    if (json_is_string(preamble))
        sim__prompt_text(p, json_string_value(preamble), json_string_length(preamble), false);
    json_array_foreach(json_object_get(body, "chat_history"), i, turn)
    {
        json_t *m = json_object_get(turn, "message");
        if (!json_is_string(m))
            return malformed(why, cap, "#/chat_history: message must be a string");
        sim__prompt_text(p, json_string_value(m), json_string_length(m), false);
    }
    return text_prompt(body, "message", p, why, cap);
}

int sim__family_prompt(sim_family_t f, json_t *body, sim_prompt_t *p, char *why, size_t cap)
{
    switch (f) {
    case SIM_FAMILY_NOVA:
        return nova_prompt(body, p, why, cap);
    case SIM_FAMILY_TITAN:
        return titan_prompt(body, p, why, cap);
    case SIM_FAMILY_LLAMA:
        return llama_prompt(body, p, why, cap);
    case SIM_FAMILY_MISTRAL:
        return mistral_prompt(body, p, why, cap);
    case SIM_FAMILY_COHERE:
        return cohere_prompt(body, p, why, cap);
    case SIM_FAMILY_ANTHROPIC:
        break;
    }
    return anthropic_prompt(body, p, why, cap);
}

/* ---- replies -----------------------------------------------------------------------------------
 */

/* The family's name for a stop: Converse's end_turn/max_tokens/stop_sequence mapped. */
static const char *stop_word(sim_family_t f, const char *stop)
{
    bool max = !strcmp(stop, "max_tokens"), seq = !strcmp(stop, "stop_sequence");

    switch (f) {
    case SIM_FAMILY_TITAN:
        return max ? "LENGTH" : seq ? "STOP_CRITERIA_MET" : "FINISH";
    case SIM_FAMILY_LLAMA:
    case SIM_FAMILY_MISTRAL:
        return max ? "length" : "stop";
    case SIM_FAMILY_COHERE:
        return max ? "MAX_TOKENS" : "COMPLETE";
    default:
        return stop;
    }
}

static json_t *anthropic_usage(const sim_usage_t *u)
{
    json_t *o = json_pack("{sIsI}", "input_tokens", (json_int_t)u->input, "output_tokens",
                          (json_int_t)u->output);
    if (o && (u->cache_read || u->cache_write)) {
        json_object_set_new(o, "cache_creation_input_tokens", json_integer(u->cache_write));
        json_object_set_new(o, "cache_read_input_tokens", json_integer(u->cache_read));
    }
    return o;
}

static json_t *anthropic_reply(const sim_reply_t *r, const sim_call_t *c)
{
    char id[40];

    snprintf(id, sizeof(id), "msg_bdrk_sim%016" PRIx64, r->id);
    return json_pack("{ss ss ss ss s[{ss ss#}] ss so so}", "id", id, "type", "message", "role",
                     "assistant", "model", c->model_id, "content", "type", "text", "text", r->text,
                     (int)r->len, "stop_reason", r->stop_reason, "stop_sequence",
                     r->stop_sequence ? json_string(r->stop_sequence) : json_null(), "usage",
                     anthropic_usage(&r->usage));
}

static json_t *nova_usage(const sim_usage_t *u)
{
    return json_pack("{sIsIsIsIsI}", "inputTokens", (json_int_t)u->input, "outputTokens",
                     (json_int_t)u->output, "totalTokens",
                     (json_int_t)(u->input + u->output + u->cache_read + u->cache_write),
                     "cacheReadInputTokenCount", (json_int_t)u->cache_read,
                     "cacheWriteInputTokenCount", (json_int_t)u->cache_write);
}

static json_t *family_reply(sim_family_t f, const sim_reply_t *r, const sim_call_t *c)
{
    const char *stop = stop_word(f, r->stop_reason);
    char id[40];

    snprintf(id, sizeof(id), "sim-%016" PRIx64, r->id);
    switch (f) {
    case SIM_FAMILY_NOVA:
        return json_pack("{s{s{sss[{ss#}]}} ss so}", "output", "message", "role", "assistant",
                         "content", "text", r->text, (int)r->len, "stopReason", stop, "usage",
                         nova_usage(&r->usage));
    case SIM_FAMILY_TITAN:
        return json_pack("{sIs[{sIss#ss}]}", "inputTextTokenCount", (json_int_t)r->usage.input,
                         "results", "tokenCount", (json_int_t)r->usage.output, "outputText",
                         r->text, (int)r->len, "completionReason", stop);
    case SIM_FAMILY_LLAMA:
        return json_pack("{ss#sIsIss}", "generation", r->text, (int)r->len, "prompt_token_count",
                         (json_int_t)r->usage.input, "generation_token_count",
                         (json_int_t)r->usage.output, "stop_reason", stop);
    case SIM_FAMILY_MISTRAL:
        return json_pack("{s[{ss#ss}]}", "outputs", "text", r->text, (int)r->len, "stop_reason",
                         stop);
    case SIM_FAMILY_COHERE:
        return json_pack("{ssss#sssss[]}", "response_id", id, "text", r->text, (int)r->len,
                         "generation_id", id, "finish_reason", stop, "chat_history");
    case SIM_FAMILY_ANTHROPIC:
        break;
    }
    return anthropic_reply(r, c);
}

static int invoke_prepare(json_t *body, const sim_call_t *c, sim_family_t *f, sim_reply_t *r,
                          char *why, size_t cap)
{
    sim_prompt_t p;

    why[0] = '\0'; /* stays empty when only json_pack fails (out of memory) */
    *f = sim_family_of(c->model_id);
    sim__prompt_init(&p, c->model_id);
    if (sim__family_prompt(*f, body, &p, why, cap))
        return -1;
    sim__reply_build(r, &p, c);
    return 0;
}

json_t *sim_invoke_reply(json_t *body, const sim_call_t *c, sim_usage_t *usage, char *why,
                         size_t cap)
{
    sim_family_t f;
    sim_reply_t r;

    if (invoke_prepare(body, c, &f, &r, why, cap))
        return NULL;
    if (usage)
        *usage = r.usage;
    return family_reply(f, &r, c);
}

/* ---- streaming chunks --------------------------------------------------------------------------
 */

#define PIECES 3 /* the reply text is streamed in this many deltas */

/* Piece k of PIECES of r's text, cut at UTF-8 boundaries. */
static void piece(const sim_reply_t *r, int k, size_t *off, size_t *len)
{
    size_t a = r->len * (size_t)k / PIECES, b = r->len * (size_t)(k + 1) / PIECES;
    while (a < r->len && (r->text[a] & 0xC0) == 0x80)
        a++;
    while (b < r->len && (r->text[b] & 0xC0) == 0x80)
        b++;
    *off = a;
    *len = b > a ? b - a : 0;
}

static json_t *invocation_metrics(const sim_reply_t *r, const sim_call_t *c)
{
    return json_pack("{sIsIsIsI}", "inputTokenCount", (json_int_t)r->usage.input,
                     "outputTokenCount", (json_int_t)r->usage.output, "invocationLatency",
                     (json_int_t)c->latency_ms, "firstByteLatency", (json_int_t)c->latency_ms);
}

static int anthropic_chunks(json_t *out, const sim_reply_t *r, const sim_call_t *c)
{
    json_t *start = anthropic_reply(r, c);
    json_t *msg = json_pack("{sssO}", "type", "message_start", "message", start);

    if (start) {
        json_object_set_new(start, "content", json_array());
        json_object_set_new(start, "stop_reason", json_null());
        json_object_set_new(json_object_get(start, "usage"), "output_tokens", json_integer(0));
    }
    json_decref(start);
    json_array_append_new(out, msg);
    json_array_append_new(out,
                          json_pack("{sssIs{ssss}}", "type", "content_block_start", "index",
                                    (json_int_t)0, "content_block", "type", "text", "text", ""));
    for (int k = 0; k < PIECES; k++) {
        size_t off, len;
        piece(r, k, &off, &len);
        json_array_append_new(out, json_pack("{sssIs{ssss#}}", "type", "content_block_delta",
                                             "index", (json_int_t)0, "delta", "type", "text_delta",
                                             "text", r->text + off, (int)len));
    }
    json_array_append_new(
        out, json_pack("{sssI}", "type", "content_block_stop", "index", (json_int_t)0));
    json_array_append_new(out,
                          json_pack("{sss{ssso}s{sI}}", "type", "message_delta", "delta",
                                    "stop_reason", r->stop_reason, "stop_sequence",
                                    r->stop_sequence ? json_string(r->stop_sequence) : json_null(),
                                    "usage", "output_tokens", (json_int_t)r->usage.output));
    json_array_append_new(out, json_pack("{ss}", "type", "message_stop"));
    return 0;
}

static int nova_chunks(json_t *out, const sim_reply_t *r)
{
    json_array_append_new(out, json_pack("{s{ss}}", "messageStart", "role", "assistant"));
    for (int k = 0; k < PIECES; k++) {
        size_t off, len;
        piece(r, k, &off, &len);
        json_array_append_new(out, json_pack("{s{s{ss#}sI}}", "contentBlockDelta", "delta", "text",
                                             r->text + off, (int)len, "contentBlockIndex",
                                             (json_int_t)0));
    }
    json_array_append_new(
        out, json_pack("{s{sI}}", "contentBlockStop", "contentBlockIndex", (json_int_t)0));
    json_array_append_new(out, json_pack("{s{ss}}", "messageStop", "stopReason", r->stop_reason));
    json_array_append_new(out, json_pack("{s{so}}", "metadata", "usage", nova_usage(&r->usage)));
    return 0;
}

/* The text families: one chunk per piece, the stop and the counts on the last. */
static json_t *text_chunk(sim_family_t f, const sim_reply_t *r, size_t off, size_t len, bool last)
{
    const char *stop = stop_word(f, r->stop_reason);
    const char *t = r->text + off;

    switch (f) {
    case SIM_FAMILY_TITAN:
        return json_pack("{ss#sIsIsIso}", "outputText", t, (int)len, "index", (json_int_t)0,
                         "totalOutputTextTokenCount", (json_int_t)r->usage.output,
                         "inputTextTokenCount", (json_int_t)r->usage.input, "completionReason",
                         last ? json_string(stop) : json_null());
    case SIM_FAMILY_LLAMA:
        return json_pack("{ss#sosIso}", "generation", t, (int)len, "prompt_token_count",
                         off == 0 ? json_integer(r->usage.input) : json_null(),
                         "generation_token_count", (json_int_t)r->usage.output, "stop_reason",
                         last ? json_string(stop) : json_null());
    case SIM_FAMILY_MISTRAL:
        return json_pack("{s[{ss#so}]}", "outputs", "text", t, (int)len, "stop_reason",
                         last ? json_string(stop) : json_null());
    default: /* Cohere */
        return json_pack("{sbssss#}", "is_finished", 0, "event_type", "text-generation", "text", t,
                         (int)len);
    }
}

static int text_chunks(json_t *out, sim_family_t f, const sim_reply_t *r)
{
    for (int k = 0; k < PIECES; k++) {
        size_t off, len;
        piece(r, k, &off, &len);
        json_array_append_new(
            out, text_chunk(f, r, off, len, k == PIECES - 1 && f != SIM_FAMILY_COHERE));
    }
    if (f == SIM_FAMILY_COHERE)
        json_array_append_new(out,
                              json_pack("{sbsssss{ss#}}", "is_finished", 1, "event_type",
                                        "stream-end", "finish_reason", stop_word(f, r->stop_reason),
                                        "response", "text", r->text, (int)r->len));
    return 0;
}

int sim_invoke_stream(json_t *body, const sim_call_t *c, sim_buf_t *out, char *why, size_t cap)
{
    sim_family_t f;
    sim_reply_t r;
    json_t *chunks = json_array(), *ch;
    size_t i;
    int rc = 0;

    if (!chunks || invoke_prepare(body, c, &f, &r, why, cap)) {
        json_decref(chunks);
        return -1;
    }
    if (f == SIM_FAMILY_ANTHROPIC)
        anthropic_chunks(chunks, &r, c);
    else if (f == SIM_FAMILY_NOVA)
        nova_chunks(chunks, &r);
    else
        text_chunks(chunks, f, &r);
    json_object_set_new(json_array_get(chunks, json_array_size(chunks) - 1),
                        "amazon-bedrock-invocationMetrics", invocation_metrics(&r, c));
    json_array_foreach(chunks, i, ch)
    {
        char *text = json_dumps(ch, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_t *part =
            text ? json_pack("{so}", "bytes", sim__base64_json(text, strlen(text))) : NULL;
        free(text);
        rc = part ? sim_event_json(out, "chunk", part) : -1;
        json_decref(part);
        if (rc)
            break;
    }
    json_decref(chunks);
    return rc;
}
