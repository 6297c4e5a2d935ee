#include "bedrock.h"
#include "sigv4.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *user_message(const char *text)
{
    return json_pack("[{s:s, s:[{s:s}]}]", "role", "user", "content", "text", text);
}

/* Text of a job without its own messages when the worker has no operations: the payload as
 * canonical JSON. */
static json_t *messages_from_payload(const aiq_job_t *job)
{
    char *payload =
        job->payload ? json_dumps(job->payload, JSON_COMPACT | JSON_SORT_KEYS) : strdup("{}");
    if (!payload)
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
    const char *system; /* the job's or system_owned; NULL = none */
    char *system_owned; /* rendered from the operation */
    int64_t max_tokens;
    json_t *temperature; /* owned number, or NULL */
} req_in_t;

static void req_in_free(req_in_t *in)
{
    json_decref(in->messages);
    json_decref(in->temperature);
    free(in->system_owned);
}

static int prompt_from_op(const aiq_op_t *op, const aiq_job_t *job, req_in_t *in, aiq_err_t *err)
{
    aiq_op_vars_t vars = {
        .operation = job->operation, .persona = job->persona, .payload = job->payload};
    char *user = NULL;
    int rc = aiq_op_render(op, &vars, &in->system_owned, &user, err);
    if (rc)
        return rc;
    in->messages = user_message(user);
    free(user);
    if (!job->system)
        in->system = in->system_owned;
    return in->messages ? 0 : aiq_err_set(err, AIQ_ENOMEM, "out of memory");
}

static int req_in_init(const aiq_bedrock_conf_t *conf, const aiq_op_t *op, const aiq_job_t *job,
                       req_in_t *in, aiq_err_t *err)
{
    memset(in, 0, sizeof(*in));
    in->system = job->system;
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
    if (job->messages) {
        in->messages = json_incref(job->messages);
        return 0;
    }
    if (job->body)
        return 0;
    if (op)
        return prompt_from_op(op, job, in, err);
    in->messages = messages_from_payload(job);
    return in->messages ? 0 : aiq_err_set(err, AIQ_ENOMEM, "out of memory");
}

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

static json_t *converse_body(const req_in_t *in, const aiq_job_t *job)
{
    json_t *body = json_object();
    json_object_set(body, "messages", in->messages);
    if (in->system)
        json_object_set_new(body, "system", json_pack("[{s:s}]", "text", in->system));
    json_object_set_new(body, "inferenceConfig", inference_config(in, job));
    return body;
}

/* Anthropic messages body for InvokeModel, from the Converse-shaped messages. */
static json_t *invoke_body(const req_in_t *in, const aiq_job_t *job)
{
    if (job->body)
        return json_incref(job->body);
    json_t *out = json_array();
    size_t i, j;
    json_t *m, *block;
    json_array_foreach(in->messages, i, m)
    {
        json_t *content = json_array();
        json_array_foreach(json_object_get(m, "content"), j, block)
            json_array_append_new(content, json_pack("{s:s, s:O}", "type", "text", "text",
                                                     json_object_get(block, "text")));
        json_array_append_new(
            out, json_pack("{s:O, s:o}", "role", json_object_get(m, "role"), "content", content));
    }
    json_t *body = json_pack("{s:s, s:I, s:o}", "anthropic_version", "bedrock-2023-05-31",
                             "max_tokens", (json_int_t)in->max_tokens, "messages", out);
    json_t *inf = job->inference;
    if (body && in->system)
        json_object_set_new(body, "system", json_string(in->system));
    if (body && in->temperature)
        json_object_set(body, "temperature", in->temperature);
    if (body && json_is_number(json_object_get(inf, "top_p")))
        json_object_set(body, "top_p", json_object_get(inf, "top_p"));
    if (body && json_is_array(json_object_get(inf, "stop_sequences")))
        json_object_set(body, "stop_sequences", json_object_get(inf, "stop_sequences"));
    return body;
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
                        aiq_job_api_t api, char **out, aiq_err_t *err)
{
    req_in_t in;
    int rc = req_in_init(conf, op, job, &in, err);
    json_t *body = NULL;
    if (!rc) {
        body = api == AIQ_API_INVOKE ? invoke_body(&in, job) : converse_body(&in, job);
        *out = body ? json_dumps(body, JSON_COMPACT) : NULL;
        if (!*out)
            rc = aiq_err_set(err, AIQ_ENOMEM, "out of memory building the request body");
    }
    json_decref(body);
    req_in_free(&in);
    return rc;
}

/* "https://host:port/base" → host "host:port" and the path prefix "/base" (may be ""). */
static int split_endpoint(const char *endpoint, char *host, size_t hcap, const char **base)
{
    const char *p = strstr(endpoint, "://");
    if (!p)
        return AIQ_EINVAL;
    p += 3;
    size_t n = strcspn(p, "/");
    if (n == 0 || n >= hcap)
        return AIQ_EINVAL;
    memcpy(host, p, n);
    host[n] = '\0';
    *base = p + n;
    return 0;
}

static int build_url(const aiq_bedrock_conf_t *conf, aiq_bedrock_call_t *call, aiq_job_api_t api,
                     char *host, size_t hcap, const char **path, aiq_err_t *err)
{
    const char *base;
    if (split_endpoint(conf->endpoint, host, hcap, &base))
        return aiq_err_set(err, AIQ_EINVAL, "bedrock.endpoint '%s' is not a URL", conf->endpoint);
    char model_enc[2048 * 3 + 1];
    if (aiq_sigv4_encode_segment(call->model, model_enc, sizeof(model_enc)) < 0)
        return aiq_err_set(err, AIQ_EINVAL, "model id too long");
    int n = snprintf(call->url, sizeof(call->url), "%s/model/%s/%s", conf->endpoint, model_enc,
                     api == AIQ_API_INVOKE ? "invoke" : "converse");
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
                aiq_bedrock_call_t *call, const char *host, const char *path, time_t now,
                aiq_err_t *err)
{
    aiq_sigv4_req_t req = {
        .method = "POST",
        .host = host,
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
    h = add_header(h, "Content-Type", "application/json");
    h = h ? add_header(h, "Accept", "application/json") : NULL;
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
    call->api = api_of(job, op);
    char host[512];
    const char *path;
    int rc = build_url(conf, call, call->api, host, sizeof(host), &path, err);
    if (!rc)
        rc = request_body(conf, op, job, call->api, &call->body, err);
    if (rc)
        return rc;
    call->body_len = strlen(call->body);
    rc = sign(conf, creds, call, host, path, now, err);
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

static int concat_text(json_t *content, const char *type_filter, char **out)
{
    size_t total = 0, i;
    json_t *block;
    json_array_foreach(content, i, block)
    {
        const char *t = json_string_value(json_object_get(block, "text"));
        if (t)
            total += strlen(t);
    }
    char *s = malloc(total + 1);
    if (!s)
        return AIQ_ENOMEM;
    s[0] = '\0';
    size_t pos = 0;
    json_array_foreach(content, i, block)
    {
        const char *type = json_string_value(json_object_get(block, "type"));
        const char *t = json_string_value(json_object_get(block, "text"));
        if (!t || (type_filter && type && strcmp(type, type_filter)))
            continue;
        size_t n = strlen(t);
        memcpy(s + pos, t, n);
        pos += n;
        s[pos] = '\0';
    }
    *out = s;
    return 0;
}

/* A provider's token count, bounded where the response enters the worker: a hostile or broken
 * response (INT64_MAX, negative) must not overflow the sums downstream (the result's
 * total_tokens, metrics, cost). Outside 0..AIQ_BEDROCK_TOKENS_MAX it counts as 0 (unknown). */
static int64_t token_count(json_t *v)
{
    json_int_t n = json_integer_value(v);
    return n >= 0 && n <= AIQ_BEDROCK_TOKENS_MAX ? (int64_t)n : 0;
}

static int parse_converse(json_t *doc, aiq_bedrock_reply_t *r, aiq_err_t *err)
{
    json_t *content =
        json_object_get(json_object_get(json_object_get(doc, "output"), "message"), "content");
    if (!json_is_array(content))
        return aiq_err_set(err, AIQ_EINVAL, "Converse response without output.message.content");
    json_t *usage = json_object_get(doc, "usage");
    r->input_tokens = token_count(json_object_get(usage, "inputTokens"));
    r->output_tokens = token_count(json_object_get(usage, "outputTokens"));
    const char *stop = json_string_value(json_object_get(doc, "stopReason"));
    snprintf(r->stop_reason, sizeof(r->stop_reason), "%s", stop ? stop : "");
    return concat_text(content, NULL, &r->text) ? aiq_err_set(err, AIQ_ENOMEM, "out of memory") : 0;
}

static int parse_invoke(json_t *doc, aiq_bedrock_reply_t *r, aiq_err_t *err)
{
    json_t *content = json_object_get(doc, "content");
    if (!json_is_array(content))
        return aiq_err_set(err, AIQ_EINVAL, "InvokeModel response without content[]");
    json_t *usage = json_object_get(doc, "usage");
    r->input_tokens = token_count(json_object_get(usage, "input_tokens"));
    r->output_tokens = token_count(json_object_get(usage, "output_tokens"));
    const char *stop = json_string_value(json_object_get(doc, "stop_reason"));
    snprintf(r->stop_reason, sizeof(r->stop_reason), "%s", stop ? stop : "");
    return concat_text(content, "text", &r->text) ? aiq_err_set(err, AIQ_ENOMEM, "out of memory")
                                                  : 0;
}

int aiq_bedrock_parse(aiq_job_api_t api, const char *body, size_t len, aiq_bedrock_reply_t *reply,
                      aiq_err_t *err)
{
    memset(reply, 0, sizeof(*reply));
    json_error_t jerr;
    json_t *doc = json_loadb(body, len, 0, &jerr);
    if (!doc)
        return aiq_err_set(err, AIQ_EINVAL, "model response is not JSON: %s", jerr.text);
    int rc =
        api == AIQ_API_INVOKE ? parse_invoke(doc, reply, err) : parse_converse(doc, reply, err);
    json_decref(doc);
    return rc;
}

void aiq_bedrock_reply_free(aiq_bedrock_reply_t *reply)
{
    free(reply->text);
    reply->text = NULL;
}

static int is_type(const char *kind, const char *name)
{
    return strcmp(kind, name) == 0;
}

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
    if (is_type(kind, "ThrottlingException") || is_type(kind, "ModelNotReadyException"))
        return AIQ_BEDROCK_THROTTLED;
    if (is_type(kind, "ModelTimeoutException") || is_type(kind, "ModelErrorException"))
        return AIQ_BEDROCK_MODEL_ERROR;
    if (is_type(kind, "ServiceUnavailableException") || is_type(kind, "InternalServerException"))
        return AIQ_BEDROCK_RETRY;
    if (is_type(kind, "ServiceQuotaExceededException") || is_type(kind, "ValidationException") ||
        is_type(kind, "AccessDeniedException") || is_type(kind, "ResourceNotFoundException"))
        return AIQ_BEDROCK_FINAL;
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
    case 529:
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
