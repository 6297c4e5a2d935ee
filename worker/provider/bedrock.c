#include "bedrock.h"
#include "converse.h"
#include "eventstream.h"
#include "sigv4.h"
#include "strbuf.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- model families ------------------------------------------------------------------ */

static bool starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

aiq_bedrock_family_t aiq_bedrock_family_of(const char *model)
{
    if (!model)
        return AIQ_FAMILY_UNKNOWN;
    const char *id = aiq_ops_base_model(model);
    if (starts(id, "arn:"))
        return AIQ_FAMILY_UNKNOWN; /* an opaque resource: its model is not in its name */
    if (starts(id, "anthropic."))
        return AIQ_FAMILY_ANTHROPIC;
    if (starts(id, "amazon.nova-"))
        return AIQ_FAMILY_NOVA;
    if (starts(id, "amazon.titan-text-") || starts(id, "amazon.titan-tg1"))
        return AIQ_FAMILY_TITAN;
    if (starts(id, "meta.llama"))
        return AIQ_FAMILY_LLAMA;
    if (starts(id, "mistral."))
        return AIQ_FAMILY_MISTRAL;
    if (starts(id, "cohere.command-r"))
        return AIQ_FAMILY_COHERE;
    if (starts(id, "cohere.command-text") || starts(id, "cohere.command-light"))
        return AIQ_FAMILY_COHERE_TEXT;
    return AIQ_FAMILY_UNKNOWN;
}

const char *aiq_bedrock_family_name(aiq_bedrock_family_t f)
{
    static const char *const names[] = {"unknown", "anthropic", "nova",   "titan",
                                        "llama",   "mistral",   "cohere", "cohere-text"};
    return (unsigned)f < sizeof(names) / sizeof(names[0]) ? names[f] : "unknown";
}

/* ---- the request's inputs ------------------------------------------------------------ */

static json_t *user_message(const char *text)
{
    return json_pack("[{s:s, s:[{s:s}]}]", "role", "user", "content", "text", text);
}

/* Text of a job without its own messages when the worker has no operations: the payload as
 * JSON (numbers in their shortest form). */
static json_t *messages_from_payload(const aiq_job_t *job)
{
    char *payload = NULL;
    if (job->payload ? aiq_ops_json_text(job->payload, 0, &payload) : !(payload = strdup("{}")))
        return NULL;
    size_t cap = strlen(payload) + strlen(job->operation) + 128;
    char *text = malloc(cap);
    if (!text) {
        free(payload);
        return NULL;
    }
    snprintf(text, cap, "Operation: %s\nPersona: %s\nInput: %s", job->operation,
             job->persona ? job->persona : "default", payload);
    free(payload);
    json_t *msgs = user_message(text);
    free(text);
    return msgs;
}

/* The request's inputs once the precedence is applied: the job's own fields, then the
 * operation's (its persona variant first), then the worker's defaults. */
typedef struct req_in {
    json_t *messages;   /* owned; NULL when the job brings an InvokeModel body */
    json_t *system;     /* owned array of SystemContentBlocks, or NULL */
    char *system_owned; /* rendered from the operation */
    int64_t max_tokens;
    json_t *temperature; /* owned number, or NULL */
    const aiq_op_t *op;
} req_in_t;

static void req_in_free(req_in_t *in)
{
    json_decref(in->messages);
    json_decref(in->system);
    json_decref(in->temperature);
    free(in->system_owned);
}

/* The system blocks: the job's array as given, else one text block (the job's, else the
 * operation's), followed by a cachePoint when the operation asks for one: everything before
 * it is the same for every job of the operation, so Bedrock can cache it. */
static int system_blocks(const aiq_job_t *job, req_in_t *in)
{
    if (job->system_blocks) {
        in->system = json_deep_copy(job->system_blocks);
        return in->system ? 0 : AIQ_ENOMEM;
    }
    const char *text = job->system ? job->system : in->system_owned;
    if (!text)
        return 0;
    in->system = json_pack("[{s:s}]", "text", text);
    if (in->system && in->op && aiq_op_cache_point(in->op))
        json_array_append_new(in->system, json_pack("{s:{s:s}}", "cachePoint", "type", "default"));
    return in->system ? 0 : AIQ_ENOMEM;
}

static int prompt_from_op(const aiq_job_t *job, req_in_t *in, aiq_err_t *err)
{
    aiq_op_vars_t vars = {
        .operation = job->operation, .persona = job->persona, .payload = job->payload};
    char *user = NULL;
    int rc = aiq_op_render(in->op, &vars, &in->system_owned, &user, err);
    if (rc)
        return rc;
    in->messages = user_message(user);
    free(user);
    return in->messages ? 0 : aiq_err_set(err, AIQ_ENOMEM, "out of memory");
}

static int req_in_init(const aiq_bedrock_conf_t *conf, const aiq_op_t *op, const aiq_job_t *job,
                       req_in_t *in, aiq_err_t *err)
{
    memset(in, 0, sizeof(*in));
    in->op = op;
    json_t *mt = json_object_get(job->inference, "max_tokens");
    in->max_tokens = json_is_integer(mt)               ? json_integer_value(mt)
                     : op && aiq_op_max_tokens(op) > 0 ? aiq_op_max_tokens(op)
                                                       : conf->default_max_tokens;
    /* The validator lets null stand for absent; Bedrock must not see nulls. */
    json_t *temp = json_object_get(job->inference, "temperature");
    double t;
    if (json_is_number(temp))
        in->temperature = json_incref(temp);
    else if (op && aiq_op_temperature(op, &t))
        in->temperature = json_real(t);
    int rc = 0;
    /* A job's own messages come with its own system prompt only, as they always did. */
    if (job->messages)
        in->messages = json_incref(job->messages);
    else if (job->body)
        return 0;
    else if (op)
        rc = prompt_from_op(job, in, err);
    else if (!(in->messages = messages_from_payload(job)))
        rc = aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    if (!rc && system_blocks(job, in))
        rc = aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    return rc;
}

/* ---- Converse ------------------------------------------------------------------------- */

static json_t *inference_config(const req_in_t *in, const aiq_job_t *job)
{
    json_t *cfg = json_object();
    json_t *inf = job->inference;
    json_object_set_new(cfg, "maxTokens", json_integer(in->max_tokens));
    if (in->temperature)
        json_object_set(cfg, "temperature", in->temperature);
    if (json_is_number(json_object_get(inf, "top_p")))
        json_object_set(cfg, "topP", json_object_get(inf, "top_p"));
    if (json_is_array(json_object_get(inf, "stop_sequences")))
        json_object_set(cfg, "stopSequences", json_object_get(inf, "stop_sequences"));
    return cfg;
}

/* The job's requestMetadata with its tenant and user_id added (the decoder checked they fit
 * and agree); NULL when there is none. */
static json_t *request_metadata(const aiq_job_t *job)
{
    json_t *own = json_object_get(job->root, "requestMetadata");
    json_t *meta = json_is_object(own) ? json_copy(own) : json_object();
    if (job->tenant)
        json_object_set_new(meta, "tenant", json_string(job->tenant));
    if (job->user_id)
        json_object_set_new(meta, "user_id", json_string(job->user_id));
    if (json_object_size(meta) == 0) {
        json_decref(meta);
        return NULL;
    }
    return meta;
}

static json_t *converse_body(const req_in_t *in, const aiq_job_t *job)
{
    json_t *body = json_object();
    json_object_set(body, "messages", in->messages);
    if (in->system)
        json_object_set(body, "system", in->system);
    json_object_set_new(body, "inferenceConfig", inference_config(in, job));
    for (size_t i = 0; aiq_converse_fields[i]; i++) {
        json_t *v = json_object_get(job->root, aiq_converse_fields[i]);
        if (v && !json_is_null(v) && strcmp(aiq_converse_fields[i], "requestMetadata") != 0)
            json_object_set(body, aiq_converse_fields[i], v);
    }
    json_t *meta = request_metadata(job);
    if (meta)
        json_object_set_new(body, "requestMetadata", meta);
    return body;
}

/* ---- InvokeModel bodies, one per family ------------------------------------------------- */

/* The family bodies aiq builds carry text (Anthropic and Nova also cache points); anything
 * else in the conversation is refused by name rather than left out. */
static int text_only(const req_in_t *in, bool cache_ok, aiq_err_t *err)
{
    size_t i, j;
    json_t *m, *b;
    json_array_foreach(in->messages, i, m)
    {
        json_array_foreach(json_object_get(m, "content"), j, b)
        {
            if (json_is_string(json_object_get(b, "text")) ||
                (cache_ok && json_object_get(b, "cachePoint")))
                continue;
            const char *what = json_object_iter_key(json_object_iter(b));
            return aiq_err_set(err, AIQ_EINVAL,
                               "messages[%zu].content[%zu].%s: the InvokeModel body aiq builds "
                               "for this model carries text%s only; use api converse or bring "
                               "a body",
                               i, j, what ? what : "?", cache_ok ? " and cachePoint" : "");
        }
    }
    json_array_foreach(in->system, i, b)
    {
        if (json_is_string(json_object_get(b, "text")) ||
            (cache_ok && json_object_get(b, "cachePoint")))
            continue;
        const char *what = json_object_iter_key(json_object_iter(b));
        return aiq_err_set(err, AIQ_EINVAL,
                           "system[%zu].%s: the InvokeModel body aiq builds for this model "
                           "carries text only; use api converse",
                           i, what ? what : "?");
    }
    return 0;
}

/* The "text" members of blocks joined by sep; malloc'd ("" when none), NULL when out of
 * memory. */
static char *join_text(json_t *blocks, const char *sep)
{
    aiq_strbuf_t b = {.max = 0};
    size_t i;
    json_t *blk;
    int rc = aiq_strbuf_add(&b, "", 0);
    json_array_foreach(blocks, i, blk)
    {
        json_t *t = json_object_get(blk, "text");
        if (rc || !json_is_string(t))
            continue;
        if (b.len)
            rc = aiq_strbuf_add(&b, sep, strlen(sep));
        if (!rc)
            rc = aiq_strbuf_add(&b, json_string_value(t), json_string_length(t));
    }
    if (rc) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

static char *system_text(const req_in_t *in)
{
    return join_text(in->system, "\n\n");
}

/* The text of one message: its text blocks joined. */
static char *message_text(json_t *m)
{
    return join_text(json_object_get(m, "content"), "\n");
}

/* Anthropic content blocks: text, and a cachePoint as cache_control on the block before. */
static json_t *anthropic_blocks(json_t *blocks)
{
    json_t *out = json_array(), *b;
    size_t i;
    json_array_foreach(blocks, i, b)
    {
        json_t *text = json_object_get(b, "text");
        json_t *last = json_array_get(out, json_array_size(out) - 1);
        if (json_is_string(text))
            json_array_append_new(out, json_pack("{s:s, s:O}", "type", "text", "text", text));
        else if (json_object_get(b, "cachePoint") && last)
            json_object_set_new(last, "cache_control", json_pack("{s:s}", "type", "ephemeral"));
    }
    return out;
}

static json_t *anthropic_body(const req_in_t *in, const aiq_job_t *job)
{
    json_t *msgs = json_array(), *m;
    size_t i;
    json_array_foreach(in->messages, i, m) json_array_append_new(
        msgs, json_pack("{s:O, s:o}", "role", json_object_get(m, "role"), "content",
                        anthropic_blocks(json_object_get(m, "content"))));
    json_t *body = json_pack("{s:s, s:I, s:o}", "anthropic_version", "bedrock-2023-05-31",
                             "max_tokens", (json_int_t)in->max_tokens, "messages", msgs);
    json_t *inf = job->inference;
    if (body && in->system)
        json_object_set_new(body, "system", anthropic_blocks(in->system));
    if (body && in->temperature)
        json_object_set(body, "temperature", in->temperature);
    if (body && json_is_number(json_object_get(inf, "top_p")))
        json_object_set(body, "top_p", json_object_get(inf, "top_p"));
    if (body && json_is_array(json_object_get(inf, "stop_sequences")))
        json_object_set(body, "stop_sequences", json_object_get(inf, "stop_sequences"));
    return body;
}

static json_t *nova_body(const req_in_t *in, const aiq_job_t *job)
{
    json_t *cfg = json_pack("{s:I}", "max_new_tokens", (json_int_t)in->max_tokens);
    json_t *inf = job->inference;
    if (in->temperature)
        json_object_set(cfg, "temperature", in->temperature);
    if (json_is_number(json_object_get(inf, "top_p")))
        json_object_set(cfg, "top_p", json_object_get(inf, "top_p"));
    if (json_is_array(json_object_get(inf, "stop_sequences")))
        json_object_set(cfg, "stopSequences", json_object_get(inf, "stop_sequences"));
    json_t *body = json_pack("{s:s, s:O, s:o}", "schemaVersion", "messages-v1", "messages",
                             in->messages, "inferenceConfig", cfg);
    if (body && in->system)
        json_object_set(body, "system", in->system);
    return body;
}

/* The conversation as one prompt for the text-completion families. */
typedef enum prompt_style { P_PLAIN, P_LLAMA3, P_MISTRAL } prompt_style_t;

static int prompt_add(aiq_strbuf_t *b, const char *s)
{
    return aiq_strbuf_add(b, s, strlen(s));
}

static int prompt_turn(aiq_strbuf_t *b, prompt_style_t style, const char *role, const char *text,
                       bool first)
{
    bool user = strcmp(role, "user") == 0;
    int rc = 0;
    switch (style) {
    case P_LLAMA3:
        rc = prompt_add(b, "<|start_header_id|>");
        if (!rc)
            rc = prompt_add(b, role);
        if (!rc)
            rc = prompt_add(b, "<|end_header_id|>\n\n");
        if (!rc)
            rc = prompt_add(b, text);
        return rc ? rc : prompt_add(b, "<|eot_id|>");
    case P_MISTRAL:
        rc = prompt_add(b, user ? "[INST] " : " ");
        if (!rc)
            rc = prompt_add(b, text);
        return rc ? rc : prompt_add(b, user ? " [/INST]" : "</s>");
    case P_PLAIN:
    default:
        if (!first)
            rc = prompt_add(b, "\n\n");
        if (!rc)
            rc = prompt_add(b, user ? "User: " : "Bot: ");
        return rc ? rc : prompt_add(b, text);
    }
}

static char *prompt_of(const req_in_t *in, prompt_style_t style)
{
    aiq_strbuf_t b = {.max = 0};
    char *sys = system_text(in);
    int rc = sys ? 0 : AIQ_ENOMEM;
    if (!rc && style == P_LLAMA3)
        rc = prompt_add(&b, "<|begin_of_text|>");
    if (!rc && style == P_MISTRAL)
        rc = prompt_add(&b, "<s>");
    if (!rc && sys[0] && style == P_LLAMA3)
        rc = prompt_turn(&b, style, "system", sys, true);
    size_t i;
    json_t *m;
    json_array_foreach(in->messages, i, m)
    {
        char *t = rc ? NULL : message_text(m);
        if (!t) {
            rc = AIQ_ENOMEM;
            break;
        }
        /* Mistral and plain prompts have no system turn: it leads the first user turn. */
        if (i == 0 && sys[0] && style != P_LLAMA3) {
            size_t n = strlen(sys) + strlen(t) + 3;
            char *joined = malloc(n);
            if (joined)
                snprintf(joined, n, "%s\n\n%s", sys, t);
            free(t);
            if (!(t = joined)) {
                rc = AIQ_ENOMEM;
                break;
            }
        }
        rc = prompt_turn(&b, style, json_string_value(json_object_get(m, "role")), t, i == 0);
        free(t);
    }
    if (!rc && style == P_LLAMA3)
        rc = prompt_add(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    if (!rc && style == P_PLAIN)
        rc = prompt_add(&b, "\n\nBot:");
    free(sys);
    if (rc) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

static json_t *prompt_body(const req_in_t *in, prompt_style_t style, const char *key)
{
    char *prompt = prompt_of(in, style);
    json_t *body = prompt ? json_pack("{s:s}", key, prompt) : NULL;
    free(prompt);
    return body;
}

/* Sets name to the job's inference value under key, when it has one. */
static void copy_inf(json_t *dst, const char *name, const aiq_job_t *job, const char *key)
{
    json_t *v = json_object_get(job->inference, key);
    if (v && !json_is_null(v))
        json_object_set(dst, name, v);
}

static json_t *titan_body(const req_in_t *in, const aiq_job_t *job)
{
    json_t *body = prompt_body(in, P_PLAIN, "inputText");
    json_t *cfg = json_pack("{s:I}", "maxTokenCount", (json_int_t)in->max_tokens);
    if (in->temperature)
        json_object_set(cfg, "temperature", in->temperature);
    copy_inf(cfg, "topP", job, "top_p");
    copy_inf(cfg, "stopSequences", job, "stop_sequences");
    if (body)
        json_object_set(body, "textGenerationConfig", cfg);
    json_decref(cfg);
    return body;
}

static json_t *llama_body(const req_in_t *in, const aiq_job_t *job)
{
    json_t *body = prompt_body(in, P_LLAMA3, "prompt");
    if (!body)
        return NULL;
    json_object_set_new(body, "max_gen_len", json_integer(in->max_tokens));
    if (in->temperature)
        json_object_set(body, "temperature", in->temperature);
    copy_inf(body, "top_p", job, "top_p");
    return body;
}

static json_t *mistral_body(const req_in_t *in, const aiq_job_t *job)
{
    json_t *body = prompt_body(in, P_MISTRAL, "prompt");
    if (!body)
        return NULL;
    json_object_set_new(body, "max_tokens", json_integer(in->max_tokens));
    if (in->temperature)
        json_object_set(body, "temperature", in->temperature);
    copy_inf(body, "top_p", job, "top_p");
    copy_inf(body, "stop", job, "stop_sequences");
    return body;
}

/* Cohere Command R: the last user turn is "message", the ones before it chat_history. */
static json_t *cohere_body(const req_in_t *in, const aiq_job_t *job)
{
    size_t n = json_array_size(in->messages), i;
    json_t *hist = json_array(), *m;
    char *last = NULL;
    json_array_foreach(in->messages, i, m)
    {
        char *t = message_text(m);
        if (!t)
            break;
        if (i + 1 == n) {
            last = t;
            break;
        }
        bool user = strcmp(json_string_value(json_object_get(m, "role")), "user") == 0;
        json_array_append_new(
            hist, json_pack("{s:s, s:s}", "role", user ? "USER" : "CHATBOT", "message", t));
        free(t);
    }
    char *sys = system_text(in);
    json_t *body = last && sys ? json_pack("{s:s, s:I}", "message", last, "max_tokens",
                                           (json_int_t)in->max_tokens)
                               : NULL;
    if (body && json_array_size(hist))
        json_object_set(body, "chat_history", hist);
    if (body && sys[0])
        json_object_set_new(body, "preamble", json_string(sys));
    if (body && in->temperature)
        json_object_set(body, "temperature", in->temperature);
    if (body) {
        copy_inf(body, "p", job, "top_p");
        copy_inf(body, "stop_sequences", job, "stop_sequences");
    }
    json_decref(hist);
    free(last);
    free(sys);
    return body;
}

static json_t *cohere_text_body(const req_in_t *in, const aiq_job_t *job)
{
    json_t *body = prompt_body(in, P_PLAIN, "prompt");
    if (!body)
        return NULL;
    json_object_set_new(body, "max_tokens", json_integer(in->max_tokens));
    if (in->temperature)
        json_object_set(body, "temperature", in->temperature);
    copy_inf(body, "p", job, "top_p");
    copy_inf(body, "stop_sequences", job, "stop_sequences");
    return body;
}

static int invoke_body(const req_in_t *in, const aiq_job_t *job, aiq_bedrock_family_t fam,
                       json_t **out, aiq_err_t *err)
{
    if (job->body) {
        *out = json_incref(job->body);
        return 0;
    }
    int rc = text_only(in, fam == AIQ_FAMILY_ANTHROPIC || fam == AIQ_FAMILY_NOVA, err);
    if (rc)
        return rc;
    switch (fam) {
    case AIQ_FAMILY_ANTHROPIC:
        *out = anthropic_body(in, job);
        break;
    case AIQ_FAMILY_NOVA:
        *out = nova_body(in, job);
        break;
    case AIQ_FAMILY_TITAN:
        *out = titan_body(in, job);
        break;
    case AIQ_FAMILY_LLAMA:
        *out = llama_body(in, job);
        break;
    case AIQ_FAMILY_MISTRAL:
        *out = mistral_body(in, job);
        break;
    case AIQ_FAMILY_COHERE:
        *out = cohere_body(in, job);
        break;
    case AIQ_FAMILY_COHERE_TEXT:
        *out = cohere_text_body(in, job);
        break;
    default:
        return aiq_err_set(err, AIQ_EINVAL, "model: unknown family"); /* checked before */
    }
    return *out ? 0 : aiq_err_set(err, AIQ_ENOMEM, "out of memory building the request body");
}

/* ---- what a request cannot carry ------------------------------------------------------ */

/* The Converse fields InvokeModel takes too, as X-Amzn-Bedrock-* headers. */
static bool as_invoke_header(const char *field)
{
    return strcmp(field, "guardrailConfig") == 0 || strcmp(field, "performanceConfig") == 0 ||
           strcmp(field, "serviceTier") == 0;
}

/* InvokeModel's header members, from the job's Converse-shaped fields: the guardrail (its
 * trace upper-cased: enabled → ENABLED), the latency setting, the service tier. NULL (h
 * freed) when out of memory. */
static struct curl_slist *add_header(struct curl_slist *h, const char *name, const char *value);

static struct curl_slist *invoke_headers(struct curl_slist *h, const aiq_job_t *job)
{
    json_t *g = json_object_get(job->root, "guardrailConfig");
    const char *id = json_string_value(json_object_get(g, "guardrailIdentifier"));
    const char *ver = json_string_value(json_object_get(g, "guardrailVersion"));
    const char *trace = json_string_value(json_object_get(g, "trace"));
    const char *lat = json_string_value(
        json_object_get(json_object_get(job->root, "performanceConfig"), "latency"));
    const char *tier =
        json_string_value(json_object_get(json_object_get(job->root, "serviceTier"), "type"));
    char up[16];
    if (h && id)
        h = add_header(h, "X-Amzn-Bedrock-GuardrailIdentifier", id);
    if (h && ver)
        h = add_header(h, "X-Amzn-Bedrock-GuardrailVersion", ver);
    if (h && trace) {
        size_t i = 0;
        for (; trace[i] && i < sizeof(up) - 1; i++)
            up[i] = (char)(trace[i] >= 'a' && trace[i] <= 'z' ? trace[i] - 32 : trace[i]);
        up[i] = '\0';
        h = add_header(h, "X-Amzn-Bedrock-Trace", up);
    }
    if (h && lat)
        h = add_header(h, "X-Amzn-Bedrock-PerformanceConfig-Latency", lat);
    if (h && tier)
        h = add_header(h, "X-Amzn-Bedrock-Service-Tier", tier);
    return h;
}

/* A job field this request would not send is refused by name, never dropped. */
static int check_carried(const aiq_job_t *job, const aiq_bedrock_wire_t *w, const char *model,
                         aiq_err_t *err)
{
    if (!aiq_model_id_valid(model))
        return aiq_err_set(err, AIQ_EINVAL,
                           "model: '%s' is not a Bedrock model id (botocore's modelId pattern)",
                           model);
    if (job->stream && w->api != AIQ_API_CONVERSE)
        return aiq_err_set(err, AIQ_EINVAL,
                           "stream: streams go through ConverseStream; this job goes to "
                           "InvokeModel (InvokeModelWithResponseStream is not supported; use "
                           "api converse)");
    if (w->api == AIQ_API_CONVERSE) {
        if (job->body)
            return aiq_err_set(err, AIQ_EINVAL, "body: only with api invoke");
        return 0;
    }
    for (size_t i = 0; aiq_converse_fields[i]; i++) {
        json_t *v = json_object_get(job->root, aiq_converse_fields[i]);
        if (v && !json_is_null(v) && !as_invoke_header(aiq_converse_fields[i]))
            return aiq_err_set(err, AIQ_EINVAL,
                               "%s: a Converse field; this job goes to InvokeModel, which has "
                               "no such member (use api converse)",
                               aiq_converse_fields[i]);
    }
    if (w->own_body) {
        static const char *const unused[] = {"messages", "system", "inference", NULL};
        for (size_t i = 0; unused[i]; i++)
            if (json_object_get(job->root, unused[i]) &&
                !json_is_null(json_object_get(job->root, unused[i])))
                return aiq_err_set(err, AIQ_EINVAL,
                                   "%s: not sent with a body of the job's own (put it in body)",
                                   unused[i]);
        return 0;
    }
    if (w->family == AIQ_FAMILY_UNKNOWN)
        return aiq_err_set(err, AIQ_EINVAL,
                           "model: aiq does not know the InvokeModel body of '%s' (known: "
                           "anthropic, amazon.nova, amazon.titan-text, meta.llama, mistral, "
                           "cohere.command); bring a body or use api converse",
                           model);
    return 0;
}

/* The decoder reports converse for a job without "api", so only an explicit choice in the
 * job beats the operation's. */
static aiq_job_api_t api_of(const aiq_job_t *job, const aiq_op_t *op)
{
    if (!op || json_object_get(job->root, "api") || job->body)
        return job->api;
    return aiq_op_api(op);
}

static int request_body(const aiq_bedrock_conf_t *conf, const aiq_op_t *op, const aiq_job_t *job,
                        const aiq_bedrock_wire_t *w, char **out, aiq_err_t *err)
{
    req_in_t in;
    int rc = req_in_init(conf, op, job, &in, err);
    json_t *body = NULL;
    if (!rc && w->api == AIQ_API_INVOKE)
        rc = invoke_body(&in, job, w->family, &body, err);
    else if (!rc && !(body = converse_body(&in, job)))
        rc = aiq_err_set(err, AIQ_ENOMEM, "out of memory building the request body");
    if (!rc) {
        *out = json_dumps(body, JSON_COMPACT);
        if (!*out)
            rc = aiq_err_set(err, AIQ_ENOMEM, "out of memory building the request body");
    }
    json_decref(body);
    req_in_free(&in);
    return rc;
}

/* ---- URL, Host, signature ------------------------------------------------------------- */

/* "https://host:port/base" → the Host header for it and the path prefix "/base" (may be "").
 * A default port (443 for https, 80 for http) is dropped: curl leaves it out of the Host it
 * sends, and what is signed must be what is sent. */
static int split_endpoint(const char *endpoint, char *host, size_t hcap, const char **base)
{
    const char *p = strstr(endpoint, "://");
    if (!p)
        return AIQ_EINVAL;
    bool https = (size_t)(p - endpoint) == 5 && strncmp(endpoint, "https", 5) == 0;
    bool http = (size_t)(p - endpoint) == 4 && strncmp(endpoint, "http", 4) == 0;
    if (!https && !http)
        return AIQ_EINVAL;
    p += 3;
    size_t n = strcspn(p, "/?#");
    if (n == 0 || n >= hcap)
        return AIQ_EINVAL;
    memcpy(host, p, n);
    host[n] = '\0';
    const char *dflt = https ? ":443" : ":80";
    size_t dl = strlen(dflt);
    if (n > dl && strcmp(host + n - dl, dflt) == 0 && host[n - dl - 1] != ':')
        host[n - dl] = '\0';
    *base = p + strcspn(p, "/");
    return 0;
}

static int build_url(const aiq_bedrock_conf_t *conf, aiq_bedrock_call_t *call, const char **path,
                     aiq_err_t *err)
{
    const char *base;
    if (split_endpoint(conf->endpoint, call->host, sizeof(call->host), &base))
        return aiq_err_set(err, AIQ_EINVAL, "bedrock.endpoint '%s' is not an http(s) URL",
                           conf->endpoint);
    char model_enc[2048 * 3 + 1];
    if (aiq_sigv4_encode_segment(call->model, model_enc, sizeof(model_enc)) < 0)
        return aiq_err_set(err, AIQ_EINVAL, "model id too long");
    int n = snprintf(call->url, sizeof(call->url), "%s/model/%s/%s", conf->endpoint, model_enc,
                     call->wire.api == AIQ_API_INVOKE ? "invoke"
                     : call->wire.stream              ? "converse-stream"
                                                      : "converse");
    if (n < 0 || (size_t)n >= sizeof(call->url))
        return aiq_err_set(err, AIQ_EINVAL, "request URL too long");
    *path = call->url + strlen(conf->endpoint) - strlen(base);
    return 0;
}

/* NULL (and h freed) when out of memory or when the line would not fit: a session token cut
 * short would only fail later as a signature mismatch. */
static struct curl_slist *add_header(struct curl_slist *h, const char *name, const char *value)
{
    char line[AIQ_SIGV4_TOKEN_MAX + 64];
    int len = snprintf(line, sizeof(line), "%s: %s", name, value);
    struct curl_slist *n =
        len >= 0 && (size_t)len < sizeof(line) ? curl_slist_append(h, line) : NULL;
    if (!n)
        curl_slist_free_all(h);
    return n;
}

static int sign(const aiq_bedrock_conf_t *conf, const aiq_sigv4_creds_t *creds,
                aiq_bedrock_call_t *call, const char *path, time_t now, aiq_err_t *err)
{
    aiq_sigv4_req_t req = {
        .method = "POST",
        .host = call->host,
        .path = path,
        .query = NULL,
        .content_type = "application/json",
        .body = call->body,
        .body_len = call->body_len,
        .region = conf->region,
        .service = "bedrock",
        .now = now,
    };
    aiq_sigv4_out_t out;
    int rc = aiq_sigv4_sign(&req, creds, &out, err);
    if (rc)
        return rc;
    struct curl_slist *h = NULL;
    /* Sent explicitly so that curl's own choice of Host can never differ from the signed one. */
    h = add_header(h, "Host", call->host);
    h = h ? add_header(h, "Content-Type", "application/json") : NULL;
    h = h ? add_header(h, "Accept",
                       call->wire.stream ? "application/vnd.amazon.eventstream"
                                         : "application/json")
          : NULL;
    h = h ? add_header(h, "X-Amz-Date", out.amz_date) : NULL;
    h = h ? add_header(h, "Authorization", out.authorization) : NULL;
    if (h && creds->session_token)
        h = add_header(h, "X-Amz-Security-Token", creds->session_token);
    /* curl adds "Expect: 100-continue" to large POSTs; Bedrock does not need the round trip. */
    h = h ? add_header(h, "Expect", "") : NULL;
    if (!h)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    call->headers = h;
    return 0;
}

const char *aiq_bedrock_model(const aiq_bedrock_conf_t *conf, const aiq_job_t *job)
{
    const aiq_op_t *op = conf->ops ? aiq_ops_find(conf->ops, job->operation) : NULL;
    return job->model               ? job->model
           : op && aiq_op_model(op) ? aiq_op_model(op)
                                    : conf->default_model;
}

int aiq_bedrock_build(const aiq_bedrock_conf_t *conf, const aiq_sigv4_creds_t *creds,
                      const aiq_job_t *job, time_t now, aiq_bedrock_call_t *call, aiq_err_t *err)
{
    memset(call, 0, sizeof(*call));
    const aiq_op_t *op = conf->ops ? aiq_ops_find(conf->ops, job->operation) : NULL;
    if (conf->ops && !op)
        return aiq_err_set(err, AIQ_ENOTFOUND,
                           "unknown operation '%s' (worker.unknown_operations = reject)",
                           job->operation);
    call->model = aiq_bedrock_model(conf, job);
    call->wire.api = api_of(job, op);
    call->wire.own_body = call->wire.api == AIQ_API_INVOKE && job->body;
    call->wire.family = aiq_bedrock_family_of(call->model);
    call->wire.stream = job->stream && call->wire.api == AIQ_API_CONVERSE;
    const char *path;
    int rc = check_carried(job, &call->wire, call->model, err);
    if (!rc)
        rc = build_url(conf, call, &path, err);
    if (!rc)
        rc = request_body(conf, op, job, &call->wire, &call->body, err);
    if (rc)
        return rc;
    call->body_len = strlen(call->body);
    rc = sign(conf, creds, call, path, now, err);
    if (!rc && call->wire.api == AIQ_API_INVOKE &&
        !(call->headers = invoke_headers(call->headers, job)))
        rc = aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    if (rc)
        aiq_bedrock_call_free(call);
    return rc;
}

void aiq_bedrock_call_free(aiq_bedrock_call_t *call)
{
    free(call->body);
    curl_slist_free_all(call->headers);
    call->body = NULL;
    call->headers = NULL;
}

/* ---- responses -------------------------------------------------------------------------- */

/* A provider's token count, bounded where the response enters the worker: a hostile or broken
 * response (INT64_MAX, negative) must not overflow the sums downstream (the result's
 * total_tokens, metrics, cost). Outside 0..AIQ_BEDROCK_TOKENS_MAX it counts as 0 (unknown). */
static int64_t token_count(json_t *v)
{
    json_int_t n = json_integer_value(v);
    return n >= 0 && n <= AIQ_BEDROCK_TOKENS_MAX ? (int64_t)n : 0;
}

/* A token-count header, when sent, wins over the body: it is what Bedrock bills. */
static void header_count(const char *h, int64_t *dst)
{
    if (!h || !*h)
        return;
    char *end;
    long long n = strtoll(h, &end, 10);
    if (*end == '\0' && n >= 0 && n <= AIQ_BEDROCK_TOKENS_MAX)
        *dst = (int64_t)n;
}

/* Concatenated "text" members of content blocks (with type_filter: only blocks of that
 * "type"). 0 or AIQ_ENOMEM. */
static int concat_text(json_t *content, const char *type_filter, char **out)
{
    size_t total = 1, i;
    json_t *block;
    json_array_foreach(content, i, block) total +=
        json_string_length(json_object_get(block, "text"));
    char *s = malloc(total);
    if (!s)
        return AIQ_ENOMEM;
    size_t pos = 0;
    json_array_foreach(content, i, block)
    {
        const char *type = json_string_value(json_object_get(block, "type"));
        json_t *t = json_object_get(block, "text");
        if (!json_is_string(t) || (type_filter && type && strcmp(type, type_filter)))
            continue;
        memcpy(s + pos, json_string_value(t), json_string_length(t));
        pos += json_string_length(t);
    }
    s[pos] = '\0';
    *out = s;
    return 0;
}

static void set_stop(aiq_bedrock_reply_t *r, const char *stop)
{
    snprintf(r->stop_reason, sizeof(r->stop_reason), "%s", stop ? stop : "");
}

/* The families' own stop reasons in Converse's vocabulary; others are kept as they are. */
static const char *stop_of(const char *native)
{
    static const char *const map[][2] = {
        {"FINISH", "end_turn"},
        {"COMPLETE", "end_turn"},
        {"stop", "end_turn"},
        {"LENGTH", "max_tokens"},
        {"MAX_TOKENS", "max_tokens"},
        {"length", "max_tokens"},
        {"model_length", "max_tokens"},
        {"STOP_CRITERIA_MET", "stop_sequence"},
        {"STOP_SEQUENCE", "stop_sequence"},
        {"CONTENT_FILTERED", "content_filtered"},
        {"ERROR_TOXIC", "content_filtered"},
    };
    for (size_t i = 0; native && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(native, map[i][0]) == 0)
            return map[i][1];
    return native;
}

static json_t *extra_of(aiq_bedrock_reply_t *r)
{
    if (!r->extra)
        r->extra = json_object();
    return r->extra;
}

/* Any block without text (toolUse, reasoningContent, ...) makes the whole content part of
 * the result, so nothing the model said is lost. */
static void keep_content(aiq_bedrock_reply_t *r, json_t *content)
{
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        if (!json_is_string(json_object_get(b, "text"))) {
            json_object_set(extra_of(r), "content", content);
            return;
        }
    }
}

/* 0 when the response had the shape, 1 when not, AIQ_ENOMEM. */
static int read_converse(json_t *doc, aiq_bedrock_reply_t *r)
{
    json_t *content =
        json_object_get(json_object_get(json_object_get(doc, "output"), "message"), "content");
    if (!json_is_array(content))
        return 1;
    json_t *usage = json_object_get(doc, "usage");
    r->input_tokens = token_count(json_object_get(usage, "inputTokens"));
    r->output_tokens = token_count(json_object_get(usage, "outputTokens"));
    /* Converse's names; Nova's InvokeModel says ...TokenCount. */
    json_t *cr = json_object_get(usage, "cacheReadInputTokens");
    json_t *cw = json_object_get(usage, "cacheWriteInputTokens");
    r->cache_read_tokens =
        token_count(cr ? cr : json_object_get(usage, "cacheReadInputTokenCount"));
    r->cache_write_tokens =
        token_count(cw ? cw : json_object_get(usage, "cacheWriteInputTokenCount"));
    if (json_is_integer(json_object_get(usage, "totalTokens")))
        r->total_tokens = token_count(json_object_get(usage, "totalTokens"));
    set_stop(r, json_string_value(json_object_get(doc, "stopReason")));
    keep_content(r, content);
    json_t *trace = json_object_get(doc, "trace");
    if (trace)
        json_object_set(extra_of(r), "trace", trace);
    json_t *amrf = json_object_get(doc, "additionalModelResponseFields");
    if (amrf)
        json_object_set(extra_of(r), "additional_model_response_fields", amrf);
    return concat_text(content, NULL, &r->text) ? AIQ_ENOMEM : 0;
}

static int read_anthropic(json_t *doc, aiq_bedrock_reply_t *r)
{
    json_t *content = json_object_get(doc, "content");
    if (!json_is_array(content))
        return 1;
    json_t *usage = json_object_get(doc, "usage");
    r->input_tokens = token_count(json_object_get(usage, "input_tokens"));
    r->output_tokens = token_count(json_object_get(usage, "output_tokens"));
    r->cache_read_tokens = token_count(json_object_get(usage, "cache_read_input_tokens"));
    r->cache_write_tokens = token_count(json_object_get(usage, "cache_creation_input_tokens"));
    set_stop(r, json_string_value(json_object_get(doc, "stop_reason")));
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        const char *type = json_string_value(json_object_get(b, "type"));
        if (!type || strcmp(type, "text") != 0) {
            json_object_set(extra_of(r), "content", content);
            break;
        }
    }
    return concat_text(content, "text", &r->text) ? AIQ_ENOMEM : 0;
}

/* One text at path[0].key of an array member (Titan, Mistral, Cohere text). */
static json_t *first_of(json_t *doc, const char *array)
{
    json_t *a = json_object_get(doc, array);
    return json_is_array(a) ? json_array_get(a, 0) : NULL;
}

static int take_text(aiq_bedrock_reply_t *r, json_t *text)
{
    if (!json_is_string(text))
        return 1;
    r->text = strdup(json_string_value(text));
    return r->text ? 0 : AIQ_ENOMEM;
}

static int read_family(aiq_bedrock_family_t fam, json_t *doc, aiq_bedrock_reply_t *r)
{
    json_t *first;
    switch (fam) {
    case AIQ_FAMILY_ANTHROPIC:
        return read_anthropic(doc, r);
    case AIQ_FAMILY_NOVA:
        return read_converse(doc, r);
    case AIQ_FAMILY_TITAN:
        first = first_of(doc, "results");
        r->input_tokens = token_count(json_object_get(doc, "inputTextTokenCount"));
        r->output_tokens = token_count(json_object_get(first, "tokenCount"));
        set_stop(r, stop_of(json_string_value(json_object_get(first, "completionReason"))));
        return take_text(r, json_object_get(first, "outputText"));
    case AIQ_FAMILY_LLAMA:
        r->input_tokens = token_count(json_object_get(doc, "prompt_token_count"));
        r->output_tokens = token_count(json_object_get(doc, "generation_token_count"));
        set_stop(r, stop_of(json_string_value(json_object_get(doc, "stop_reason"))));
        return take_text(r, json_object_get(doc, "generation"));
    case AIQ_FAMILY_MISTRAL:
        first = first_of(doc, "outputs");
        set_stop(r, stop_of(json_string_value(json_object_get(first, "stop_reason"))));
        return take_text(r, json_object_get(first, "text"));
    case AIQ_FAMILY_COHERE:
        set_stop(r, stop_of(json_string_value(json_object_get(doc, "finish_reason"))));
        return take_text(r, json_object_get(doc, "text"));
    case AIQ_FAMILY_COHERE_TEXT:
        first = first_of(doc, "generations");
        set_stop(r, stop_of(json_string_value(json_object_get(first, "finish_reason"))));
        return take_text(r, json_object_get(first, "text"));
    default:
        return 1;
    }
}

/* The body as it came: a JSON string when it is UTF-8 (a JSON body is), else base64. */
static int keep_raw(aiq_bedrock_reply_t *r, const char *body, size_t len)
{
    json_t *s = json_stringn(body ? body : "", len);
    if (s)
        return json_object_set_new(extra_of(r), "raw", s) ? AIQ_ENOMEM : 0;
    if (len > (1u << 30))
        return AIQ_ENOMEM;
    unsigned char *b64 = malloc(4 * ((len + 2) / 3) + 1);
    if (!b64)
        return AIQ_ENOMEM;
    EVP_EncodeBlock(b64, (const unsigned char *)body, (int)len);
    json_object_set_new(extra_of(r), "raw_base64", json_string((char *)b64));
    free(b64);
    return 0;
}

int aiq_bedrock_parse(const aiq_bedrock_wire_t *wire, const aiq_bedrock_resp_t *resp,
                      aiq_bedrock_reply_t *r, aiq_err_t *err)
{
    memset(r, 0, sizeof(*r));
    r->total_tokens = -1;
    json_t *doc = json_loadb(resp->body ? resp->body : "", resp->len, 0, NULL);
    int rc = 1;
    if (doc && wire->api == AIQ_API_CONVERSE)
        rc = read_converse(doc, r);
    else if (doc)
        rc = read_family(wire->family, doc, r);
    json_decref(doc);
    header_count(resp->input_tokens, &r->input_tokens);
    header_count(resp->output_tokens, &r->output_tokens);
    header_count(resp->cache_read_tokens, &r->cache_read_tokens);
    header_count(resp->cache_write_tokens, &r->cache_write_tokens);
    if (r->total_tokens < 0)
        r->total_tokens =
            r->input_tokens + r->output_tokens + r->cache_read_tokens + r->cache_write_tokens;
    if (rc == 1) {
        /* A 200 is the model's answer: it is returned as it came, marked, and is no failure. */
        free(r->text);
        r->text = strdup("");
        r->stop_reason[0] = '\0';
        rc = r->text ? 0 : AIQ_ENOMEM;
        if (!rc && json_object_set_new(extra_of(r), "unparsed", json_true()))
            rc = AIQ_ENOMEM;
    }
    if (!rc && (wire->own_body || json_is_true(json_object_get(r->extra, "unparsed"))))
        rc = keep_raw(r, resp->body, resp->len);
    if (rc) {
        aiq_bedrock_reply_free(r);
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory reading the model response");
    }
    return 0;
}

void aiq_bedrock_reply_free(aiq_bedrock_reply_t *reply)
{
    free(reply->text);
    json_decref(reply->extra);
    reply->text = NULL;
    reply->extra = NULL;
}

int aiq_bedrock_reply_copy(aiq_bedrock_reply_t *dst, const aiq_bedrock_reply_t *src)
{
    *dst = *src;
    dst->text = src->text ? strdup(src->text) : NULL;
    dst->extra = src->extra ? json_deep_copy(src->extra) : NULL;
    if ((src->text && !dst->text) || (src->extra && !dst->extra)) {
        aiq_bedrock_reply_free(dst);
        return AIQ_ENOMEM;
    }
    return 0;
}

/* ---- errors --------------------------------------------------------------------------- */

/* Error types by how a retry can end. The unmodelled ones are what the services send besides
 * the model's shapes: botocore treats expired tokens as a credential refresh, signature
 * errors as final. */
static const struct {
    const char *type;
    aiq_bedrock_class_t cls;
} TYPES[] = {
    {"ThrottlingException", AIQ_BEDROCK_THROTTLED},
    {"ModelNotReadyException", AIQ_BEDROCK_NOT_READY},
    {"ModelTimeoutException", AIQ_BEDROCK_MODEL_ERROR},
    {"ModelErrorException", AIQ_BEDROCK_MODEL_ERROR},
    {"ServiceUnavailableException", AIQ_BEDROCK_RETRY},
    {"InternalServerException", AIQ_BEDROCK_RETRY},
    {"ModelStreamErrorException", AIQ_BEDROCK_RETRY},
    {"ServiceQuotaExceededException", AIQ_BEDROCK_FINAL},
    {"ValidationException", AIQ_BEDROCK_FINAL},
    {"AccessDeniedException", AIQ_BEDROCK_FINAL},
    {"ResourceNotFoundException", AIQ_BEDROCK_FINAL},
    {"InvalidSignatureException", AIQ_BEDROCK_FINAL},
    {"UnrecognizedClientException", AIQ_BEDROCK_FINAL},
    {"ExpiredTokenException", AIQ_BEDROCK_CREDS},
    {"ExpiredToken", AIQ_BEDROCK_CREDS},
};

aiq_bedrock_class_t aiq_bedrock_classify(long status, const char *error_type, int transport_failed,
                                         char *kind, size_t kind_cap)
{
    if (transport_failed || status == 0) {
        snprintf(kind, kind_cap, "transport");
        return AIQ_BEDROCK_RETRY;
    }
    if (status >= 200 && status < 300) {
        snprintf(kind, kind_cap, "none");
        return AIQ_BEDROCK_OK;
    }
    size_t n = error_type ? strcspn(error_type, ":") : 0;
    if (n > 0)
        snprintf(kind, kind_cap, "%.*s", (int)n, error_type);
    else
        snprintf(kind, kind_cap, "http_%ld", status);
    for (size_t i = 0; i < sizeof(TYPES) / sizeof(TYPES[0]); i++)
        if (strcmp(kind, TYPES[i].type) == 0)
            return TYPES[i].cls;
    switch (status) {
    case 429:
        return AIQ_BEDROCK_THROTTLED;
    case 408:
    case 424:
        return AIQ_BEDROCK_MODEL_ERROR;
    case 500:
    case 502:
    case 503:
    case 504:
    case 529: /* "overloaded" (Anthropic's), a transient server condition */
        return AIQ_BEDROCK_RETRY;
    default:
        return AIQ_BEDROCK_FINAL;
    }
}

void aiq_bedrock_error_message(const char *body, size_t len, char *buf, size_t cap)
{
    json_t *doc = json_loadb(body, len, 0, NULL);
    const char *m = json_string_value(json_object_get(doc, "message"));
    if (!m)
        m = json_string_value(json_object_get(doc, "Message"));
    if (m)
        snprintf(buf, cap, "%s", m);
    else
        snprintf(buf, cap, "%.*s", (int)(len < 300 ? len : 300), body ? body : "");
    json_decref(doc);
}

/* ---- endpoint ------------------------------------------------------------------------- */

static const struct {
    const char *prefix, *suffix;
} PARTITIONS[] = {
    {"cn-", "amazonaws.com.cn"},   {"us-gov-", "amazonaws.com"},   {"us-iso-", "c2s.ic.gov"},
    {"us-isob-", "sc2s.sgov.gov"}, {"us-isof-", "csp.hci.ic.gov"}, {"eu-isoe-", "cloud.adc-e.uk"},
    {"eusc-", "amazonaws.eu"},
};

static const char *env(aiq_bedrock_getenv_fn fn, void *ctx, const char *name)
{
    const char *v = fn ? fn(ctx, name) : NULL;
    return v && *v ? v : NULL;
}

static bool region_ok(const char *r)
{
    size_t n = strlen(r);
    return n > 0 && n <= 32 && strspn(r, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

static int copy_url(const char *url, const char *source, char *out, size_t cap, aiq_err_t *err)
{
    char host[512];
    const char *base;
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    if (n >= cap)
        return aiq_err_set(err, AIQ_EINVAL, "%s: URL too long", source);
    memcpy(out, url, n);
    out[n] = '\0';
    if (split_endpoint(out, host, sizeof(host), &base))
        return aiq_err_set(err, AIQ_EINVAL, "%s: '%s' is not an http(s)://host URL", source, url);
    return 0;
}

int aiq_bedrock_endpoint(const char *configured, const char *region, bool fips,
                         aiq_bedrock_getenv_fn getenv_fn, void *ctx, char *out, size_t cap,
                         aiq_err_t *err)
{
    if (configured && *configured)
        return copy_url(configured, "bedrock.endpoint", out, cap, err);
    const char *ignore = env(getenv_fn, ctx, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
    if (!ignore || strcmp(ignore, "true") != 0) {
        const char *svc = env(getenv_fn, ctx, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME");
        if (svc)
            return copy_url(svc, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", out, cap, err);
        const char *global = env(getenv_fn, ctx, "AWS_ENDPOINT_URL");
        if (global)
            return copy_url(global, "AWS_ENDPOINT_URL", out, cap, err);
    }
    if (!region || !region_ok(region))
        return aiq_err_set(err, AIQ_EINVAL, "bedrock.region '%s' is not a region",
                           region ? region : "");
    const char *use_fips = env(getenv_fn, ctx, "AWS_USE_FIPS_ENDPOINT");
    fips = fips || (use_fips && strcmp(use_fips, "true") == 0);
    const char *suffix = "amazonaws.com";
    for (size_t i = 0; i < sizeof(PARTITIONS) / sizeof(PARTITIONS[0]); i++)
        if (starts(region, PARTITIONS[i].prefix))
            suffix = PARTITIONS[i].suffix;
    int n =
        snprintf(out, cap, "https://bedrock-runtime%s.%s.%s", fips ? "-fips" : "", region, suffix);
    if (n < 0 || (size_t)n >= cap)
        return aiq_err_set(err, AIQ_EINVAL, "endpoint too long");
    return 0;
}

/* ---- ConverseStream --------------------------------------------------------------------- */

#define STREAM_BLOCKS_MAX 64 /* content blocks one streamed message may have */

struct aiq_bedrock_stream {
    aiq_es_t es;
    aiq_bedrock_text_cb on_text;
    void *opaque;
    json_t *blocks; /* index → {"text": s} or {"toolUse": {toolUseId, name, input (text)}} */
    char stop[64];
    bool stopped, ended;
    json_t *usage, *trace, *amrf;
    char exception[64];
    char exc_msg[256];
};

aiq_bedrock_stream_t *aiq_bedrock_stream_new(aiq_bedrock_text_cb on_text, void *opaque)
{
    aiq_bedrock_stream_t *s = calloc(1, sizeof(*s));
    if (!s || !(s->blocks = json_array())) {
        free(s);
        return NULL;
    }
    s->on_text = on_text;
    s->opaque = opaque;
    return s;
}

void aiq_bedrock_stream_free(aiq_bedrock_stream_t *s)
{
    if (!s)
        return;
    aiq_es_clear(&s->es);
    json_decref(s->blocks);
    json_decref(s->usage);
    json_decref(s->trace);
    json_decref(s->amrf);
    free(s);
}

/* The block at index, created as kind ("text" or "toolUse") when new. */
static json_t *stream_block(aiq_bedrock_stream_t *s, json_t *index, const char *kind)
{
    json_int_t i = json_integer_value(index);
    if (!json_is_integer(index) || i < 0 || i >= STREAM_BLOCKS_MAX)
        return NULL;
    while ((json_int_t)json_array_size(s->blocks) <= i)
        json_array_append_new(s->blocks, json_null());
    json_t *b = json_array_get(s->blocks, (size_t)i);
    if (json_is_null(b)) {
        b = strcmp(kind, "text") == 0 ? json_pack("{s:s}", "text", "")
                                      : json_pack("{s:{s:s, s:s, s:s}}", "toolUse", "toolUseId", "",
                                                  "name", "", "input", "");
        json_array_set_new(s->blocks, (size_t)i, b);
    }
    return b;
}

static void append_str(json_t *obj, const char *key, const char *more, size_t n)
{
    const char *old = json_string_value(json_object_get(obj, key));
    size_t ol = old ? strlen(old) : 0;
    char *joined = malloc(ol + n + 1);
    if (!joined)
        return;
    memcpy(joined, old ? old : "", ol);
    memcpy(joined + ol, more, n);
    joined[ol + n] = '\0';
    json_object_set_new(obj, key, json_stringn(joined, ol + n));
    free(joined);
}

static int on_delta(aiq_bedrock_stream_t *s, json_t *ev)
{
    json_t *delta = json_object_get(ev, "delta");
    json_t *text = json_object_get(delta, "text");
    json_t *tool = json_object_get(json_object_get(delta, "toolUse"), "input");
    json_t *idx = json_object_get(ev, "contentBlockIndex");
    if (json_is_string(text)) {
        json_t *b = stream_block(s, idx, "text");
        if (!b)
            return AIQ_EINVAL;
        append_str(b, "text", json_string_value(text), json_string_length(text));
        if (s->on_text && json_string_length(text))
            s->on_text(s->opaque, json_string_value(text), json_string_length(text));
    } else if (json_is_string(tool)) {
        json_t *b = stream_block(s, idx, "toolUse");
        if (!b)
            return AIQ_EINVAL;
        append_str(json_object_get(b, "toolUse"), "input", json_string_value(tool),
                   json_string_length(tool));
    }
    return 0;
}

static int on_start(aiq_bedrock_stream_t *s, json_t *ev)
{
    json_t *tu = json_object_get(json_object_get(ev, "start"), "toolUse");
    if (!tu)
        return 0;
    json_t *b = stream_block(s, json_object_get(ev, "contentBlockIndex"), "toolUse");
    if (!b)
        return AIQ_EINVAL;
    json_t *dst = json_object_get(b, "toolUse");
    json_object_set(dst, "toolUseId", json_object_get(tu, "toolUseId"));
    json_object_set(dst, "name", json_object_get(tu, "name"));
    return 0;
}

static int on_stream_msg(void *opaque, const aiq_es_msg_t *m)
{
    aiq_bedrock_stream_t *s = opaque;
    json_t *ev = json_loadb(m->payload, m->payload_len, 0, NULL);
    if (strcmp(m->message_type, "event") != 0) {
        /* An exception ends the stream; its type is the union member's name. */
        snprintf(s->exception, sizeof(s->exception), "%s",
                 m->exception_type[0] ? m->exception_type : "streamError");
        if (s->exception[0] >= 'a' && s->exception[0] <= 'z')
            s->exception[0] = (char)(s->exception[0] - 32);
        const char *msg = json_string_value(json_object_get(ev, "message"));
        snprintf(s->exc_msg, sizeof(s->exc_msg), "%s", msg ? msg : "");
        json_decref(ev);
        return 1;
    }
    int rc = 0;
    const char *t = m->event_type;
    if (strcmp(t, "contentBlockDelta") == 0)
        rc = on_delta(s, ev);
    else if (strcmp(t, "contentBlockStart") == 0)
        rc = on_start(s, ev);
    else if (strcmp(t, "messageStop") == 0) {
        const char *stop = json_string_value(json_object_get(ev, "stopReason"));
        snprintf(s->stop, sizeof(s->stop), "%s", stop ? stop : "");
        s->stopped = true;
        json_t *amrf = json_object_get(ev, "additionalModelResponseFields");
        if (amrf)
            s->amrf = json_incref(amrf);
    } else if (strcmp(t, "metadata") == 0) {
        s->usage = json_incref(json_object_get(ev, "usage"));
        json_t *trace = json_object_get(ev, "trace");
        if (trace)
            s->trace = json_incref(trace);
        s->ended = true;
    }
    json_decref(ev);
    return rc;
}

int aiq_bedrock_stream_feed(aiq_bedrock_stream_t *s, const void *data, size_t len, aiq_err_t *err)
{
    if (s->exception[0])
        return 1;
    int rc = aiq_es_feed(&s->es, data, len, on_stream_msg, s, err);
    return rc;
}

const char *aiq_bedrock_stream_exception(const aiq_bedrock_stream_t *s, const char **message)
{
    if (message)
        *message = s->exc_msg;
    return s->exception[0] ? s->exception : NULL;
}

int aiq_bedrock_stream_finish(aiq_bedrock_stream_t *s, aiq_bedrock_reply_t *r, aiq_err_t *err)
{
    memset(r, 0, sizeof(*r));
    if (s->exception[0])
        return aiq_err_set(err, AIQ_EHTTP, "%s: %s", s->exception, s->exc_msg);
    if (!s->stopped || aiq_es_pending(&s->es))
        return aiq_err_set(err, AIQ_EINVAL, "the stream ended before its messageStop");
    json_t *content = json_array();
    size_t i;
    json_t *b;
    json_array_foreach(s->blocks, i, b)
    {
        json_t *tu = json_object_get(b, "toolUse");
        if (tu) {
            /* The input arrives as JSON text in pieces; as a whole it is the document. */
            json_t *input = json_loads(json_string_value(json_object_get(tu, "input")), 0, NULL);
            json_object_set_new(tu, "input", input ? input : json_object());
        }
        if (!json_is_null(b))
            json_array_append(content, b);
    }
    json_t *doc = json_pack("{s:{s:{s:s, s:o}}, s:s}", "output", "message", "role", "assistant",
                            "content", content, "stopReason", s->stop);
    if (doc && s->usage)
        json_object_set(doc, "usage", s->usage);
    if (doc && s->trace)
        json_object_set(doc, "trace", s->trace);
    if (doc && s->amrf)
        json_object_set(doc, "additionalModelResponseFields", s->amrf);
    r->total_tokens = -1;
    int rc = doc ? read_converse(doc, r) : AIQ_ENOMEM;
    json_decref(doc);
    if (!rc && r->total_tokens < 0)
        r->total_tokens =
            r->input_tokens + r->output_tokens + r->cache_read_tokens + r->cache_write_tokens;
    if (rc) {
        aiq_bedrock_reply_free(r);
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory reading the stream");
    }
    return 0;
}
