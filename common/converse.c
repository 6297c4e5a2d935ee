/* The shapes below are transcribed from botocore's bedrock-runtime service model
 * (botocore/data/bedrock-runtime/2023-09-30/service-2.json): members, required members,
 * unions (exactly one member set), enums, and string lengths. Patterns are checked as the
 * character sets they allow; the integration tests validate every request the worker sends
 * with botocore itself, which holds the exact expressions. */
#include "converse.h"

#include <pthread.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef enum kind {
    K_STR,   /* string: min..max characters, optional character set, optional prefix */
    K_ENUM,  /* one of enums */
    K_BLOB,  /* base64 text (the JSON protocol's blob), at least min characters */
    K_DOC,   /* any JSON value (Document) */
    K_OBJ,   /* object with members; unknown keys are refused */
    K_UNION, /* K_OBJ with exactly one member set */
    K_LIST,  /* array of item, min..max elements */
    K_MAP,   /* object: key spec → item spec, min..max entries */
    K_BOOL,
} kind_t;

typedef struct spec spec_t;
typedef struct member {
    const char *name;
    const spec_t *spec;
    bool required;
} member_t;

struct spec {
    kind_t kind;
    long min, max;            /* max 0 = no bound */
    const char *chars;        /* K_STR: allowed besides letters and digits; NULL = any */
    const char *prefix;       /* K_STR: required prefix */
    const char *const *enums; /* K_ENUM */
    const member_t *members;  /* K_OBJ, K_UNION: terminated by a NULL name */
    const spec_t *item, *key; /* K_LIST, K_MAP */
};

/* ---- the shapes ------------------------------------------------------------------------ */

static const spec_t STR = {K_STR, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL};
static const spec_t NONEMPTY = {K_STR, 1, 0, NULL, NULL, NULL, NULL, NULL, NULL};
static const spec_t DOC = {K_DOC, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL};
static const spec_t BOOL = {K_BOOL, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL};
static const spec_t BLOB = {K_BLOB, 1, 0, NULL, NULL, NULL, NULL, NULL, NULL};
static const spec_t EMPTY_OBJ = {
    K_OBJ, 0, 0, NULL, NULL, NULL, (const member_t[]){{NULL, NULL, false}}, NULL, NULL};
#define ENUM(...)                                                                                  \
    {                                                                                              \
        K_ENUM, 0, 0, NULL, NULL, (const char *const[]){__VA_ARGS__, NULL}, NULL, NULL, NULL       \
    }
#define OBJ(...)                                                                                   \
    {                                                                                              \
        K_OBJ, 0, 0, NULL, NULL, NULL, (const member_t[]){__VA_ARGS__, {NULL, NULL, false}}, NULL, \
            NULL                                                                                   \
    }
#define UNION(...)                                                                                 \
    {                                                                                              \
        K_UNION, 0, 0, NULL, NULL, NULL, (const member_t[]){__VA_ARGS__, {NULL, NULL, false}},     \
            NULL, NULL                                                                             \
    }
#define LIST(it, lo, hi)                                                                           \
    {                                                                                              \
        K_LIST, lo, hi, NULL, NULL, NULL, NULL, it, NULL                                           \
    }

static const spec_t TOOL_NAME = {K_STR, 1, 64, "_-", NULL, NULL, NULL, NULL, NULL};
static const spec_t TOOL_USE_ID = {K_STR, 1, 64, "_.:-", NULL, NULL, NULL, NULL, NULL};
static const spec_t S3_URI = {K_STR, 1, 1024, NULL, "s3://", NULL, NULL, NULL, NULL};
static const spec_t ACCOUNT_ID = {K_STR, 12, 12, "", NULL, NULL, NULL, NULL, NULL};
static const spec_t S3_LOCATION = OBJ({"uri", &S3_URI, true}, {"bucketOwner", &ACCOUNT_ID, false});
static const spec_t BYTES_OR_S3 =
    UNION({"bytes", &BLOB, false}, {"s3Location", &S3_LOCATION, false});

static const spec_t IMAGE_FORMAT = ENUM("png", "jpeg", "gif", "webp");
static const spec_t IMAGE = OBJ({"format", &IMAGE_FORMAT, true}, {"source", &BYTES_OR_S3, true});
static const spec_t DOC_FORMAT =
    ENUM("pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md");
static const spec_t DOC_NAME = {K_STR, 1, 200, NULL, NULL, NULL, NULL, NULL, NULL};
static const spec_t DOC_TEXT_BLOCK = UNION({"text", &STR, false});
static const spec_t DOC_CONTENT = LIST(&DOC_TEXT_BLOCK, 0, 0);
static const spec_t DOC_SOURCE = UNION({"bytes", &BLOB, false}, {"s3Location", &S3_LOCATION, false},
                                       {"text", &STR, false}, {"content", &DOC_CONTENT, false});
static const spec_t CITATIONS = OBJ({"enabled", &BOOL, true});
static const spec_t DOCUMENT =
    OBJ({"format", &DOC_FORMAT, false}, {"name", &DOC_NAME, true}, {"source", &DOC_SOURCE, true},
        {"context", &STR, false}, {"citations", &CITATIONS, false});
static const spec_t VIDEO_FORMAT =
    ENUM("mkv", "mov", "mp4", "webm", "flv", "mpeg", "mpg", "wmv", "three_gp");
static const spec_t VIDEO = OBJ({"format", &VIDEO_FORMAT, true}, {"source", &BYTES_OR_S3, true});
static const spec_t AUDIO_FORMAT = ENUM("mp3", "opus", "wav", "aac", "flac", "mp4", "ogg", "mkv",
                                        "mka", "x-aac", "m4a", "mpeg", "mpga", "pcm", "webm");
static const spec_t AUDIO = OBJ({"format", &AUDIO_FORMAT, true}, {"source", &BYTES_OR_S3, true});

static const spec_t TOOL_USE_TYPE = ENUM("server_tool_use");
static const spec_t TOOL_USE = OBJ({"toolUseId", &TOOL_USE_ID, true}, {"name", &TOOL_NAME, true},
                                   {"input", &DOC, true}, {"type", &TOOL_USE_TYPE, false});
static const spec_t TOOL_RESULT_BLOCK =
    UNION({"json", &DOC, false}, {"text", &STR, false}, {"image", &IMAGE, false},
          {"document", &DOCUMENT, false}, {"video", &VIDEO, false});
static const spec_t TOOL_RESULT_CONTENT = LIST(&TOOL_RESULT_BLOCK, 0, 0);
static const spec_t TOOL_RESULT_STATUS = ENUM("success", "error");
static const spec_t TOOL_RESULT =
    OBJ({"toolUseId", &TOOL_USE_ID, true}, {"content", &TOOL_RESULT_CONTENT, true},
        {"status", &TOOL_RESULT_STATUS, false}, {"type", &STR, false});

static const spec_t QUALIFIER = ENUM("grounding_source", "query", "guard_content");
static const spec_t QUALIFIERS = LIST(&QUALIFIER, 0, 0);
static const spec_t GUARD_TEXT = OBJ({"text", &STR, true}, {"qualifiers", &QUALIFIERS, false});
static const spec_t GUARD_IMAGE_FORMAT = ENUM("png", "jpeg");
static const spec_t GUARD_IMAGE_SOURCE = UNION({"bytes", &BLOB, false});
static const spec_t GUARD_IMAGE =
    OBJ({"format", &GUARD_IMAGE_FORMAT, true}, {"source", &GUARD_IMAGE_SOURCE, true});
static const spec_t GUARD_CONTENT =
    UNION({"text", &GUARD_TEXT, false}, {"image", &GUARD_IMAGE, false});

static const spec_t CACHE_TYPE = ENUM("default");
static const spec_t CACHE_TTL = ENUM("5m", "1h");
static const spec_t CACHE_POINT = OBJ({"type", &CACHE_TYPE, true}, {"ttl", &CACHE_TTL, false});

static const spec_t REASONING_TEXT = OBJ({"text", &STR, true}, {"signature", &STR, false});
static const spec_t REASONING =
    UNION({"reasoningText", &REASONING_TEXT, false}, {"redactedContent", &BLOB, false});

/* citationsContent and searchResult are left out on purpose: aiq does not build or read
 * them, so a job carrying one is refused (unknown member) instead of half-supported. */
static const spec_t CONTENT_BLOCK =
    UNION({"text", &STR, false}, {"image", &IMAGE, false}, {"document", &DOCUMENT, false},
          {"video", &VIDEO, false}, {"audio", &AUDIO, false}, {"toolUse", &TOOL_USE, false},
          {"toolResult", &TOOL_RESULT, false}, {"guardContent", &GUARD_CONTENT, false},
          {"cachePoint", &CACHE_POINT, false}, {"reasoningContent", &REASONING, false});
static const spec_t CONTENT = LIST(&CONTENT_BLOCK, 1, AIQ_CONVERSE_CONTENT_MAX);
static const spec_t ROLE = ENUM("user", "assistant");
static const spec_t MESSAGE = OBJ({"role", &ROLE, true}, {"content", &CONTENT, true});
static const spec_t MESSAGES = LIST(&MESSAGE, 1, AIQ_CONVERSE_MESSAGES_MAX);

static const spec_t SYSTEM_BLOCK =
    UNION({"text", &NONEMPTY, false}, {"guardContent", &GUARD_CONTENT, false},
          {"cachePoint", &CACHE_POINT, false});
static const spec_t SYSTEM = LIST(&SYSTEM_BLOCK, 1, AIQ_CONVERSE_SYSTEM_MAX);

static const spec_t INPUT_SCHEMA = UNION({"json", &DOC, false});
static const spec_t TOOL_SPEC = OBJ({"name", &TOOL_NAME, true}, {"description", &NONEMPTY, false},
                                    {"inputSchema", &INPUT_SCHEMA, true}, {"strict", &BOOL, false});
static const spec_t SYSTEM_TOOL = OBJ({"name", &TOOL_NAME, true});
static const spec_t TOOL =
    UNION({"toolSpec", &TOOL_SPEC, false}, {"systemTool", &SYSTEM_TOOL, false},
          {"cachePoint", &CACHE_POINT, false});
static const spec_t TOOLS = LIST(&TOOL, 1, 0);
static const spec_t SPECIFIC_TOOL = OBJ({"name", &TOOL_NAME, true});
static const spec_t TOOL_CHOICE =
    UNION({"auto", &EMPTY_OBJ, false}, {"any", &EMPTY_OBJ, false}, {"tool", &SPECIFIC_TOOL, false});
static const spec_t TOOL_CONFIG = OBJ({"tools", &TOOLS, true}, {"toolChoice", &TOOL_CHOICE, false});

static const spec_t GUARDRAIL_ID = {K_STR, 0, 2048, ":-/", NULL, NULL, NULL, NULL, NULL};
static const spec_t GUARDRAIL_VERSION = {K_STR, 0, 8, "", NULL, NULL, NULL, NULL, NULL};
static const spec_t GUARDRAIL_TRACE = ENUM("enabled", "disabled", "enabled_full");
static const spec_t GUARDRAIL_CONFIG =
    OBJ({"guardrailIdentifier", &GUARDRAIL_ID, false},
        {"guardrailVersion", &GUARDRAIL_VERSION, false}, {"trace", &GUARDRAIL_TRACE, false});

static const spec_t FIELD_PATH = {K_STR, 1, 256, NULL, NULL, NULL, NULL, NULL, NULL};
static const spec_t FIELD_PATHS = LIST(&FIELD_PATH, 0, 10);
static const spec_t LATENCY = ENUM("standard", "optimized");
static const spec_t PERFORMANCE = OBJ({"latency", &LATENCY, false});
static const spec_t PROMPT_VALUE = UNION({"text", &STR, false});
static const spec_t PROMPT_VARIABLES = {K_MAP, 0, 0, NULL, NULL, NULL, NULL, &PROMPT_VALUE, &STR};
#define META_CHARS " \t\n\r\f\v:_@$#=/+,-."
static const spec_t META_KEY = {K_STR, 1, 256, META_CHARS, NULL, NULL, NULL, NULL, NULL};
static const spec_t META_VALUE = {K_STR, 0, 256, META_CHARS, NULL, NULL, NULL, NULL, NULL};
static const spec_t METADATA = {K_MAP, 1, 16, NULL, NULL, NULL, NULL, &META_VALUE, &META_KEY};
static const spec_t TIER_TYPE = ENUM("priority", "default", "flex", "reserved");
static const spec_t SERVICE_TIER = OBJ({"type", &TIER_TYPE, true});
/* Document: any JSON; Bedrock documents the object form for request fields. */
static const spec_t AMRF = {K_DOC, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL};

const char *const aiq_converse_fields[] = {"toolConfig",
                                           "guardrailConfig",
                                           "additionalModelRequestFields",
                                           "additionalModelResponseFieldPaths",
                                           "performanceConfig",
                                           "promptVariables",
                                           "requestMetadata",
                                           "serviceTier",
                                           NULL};
static const spec_t *const field_specs[] = {&TOOL_CONFIG, &GUARDRAIL_CONFIG, &AMRF,
                                            &FIELD_PATHS, &PERFORMANCE,      &PROMPT_VARIABLES,
                                            &METADATA,    &SERVICE_TIER};

/* ---- the checker ----------------------------------------------------------------------- */

#define PATH_MAX_LEN 256
#define DEPTH_MAX    32 /* DocumentSource content and tool results nest; nothing goes deeper */

static int check(const spec_t *s, const json_t *v, char *path, size_t plen, int depth,
                 aiq_err_t *err);

/* Appends ".name" (name set) or "[idx]" to path; returns the new length (cut at the cap). */
static size_t path_push(char *path, size_t plen, const char *name, size_t idx)
{
    int n = name ? snprintf(path + plen, PATH_MAX_LEN - plen, ".%s", name)
                 : snprintf(path + plen, PATH_MAX_LEN - plen, "[%zu]", idx);
    size_t len = n > 0 ? plen + (size_t)n : plen;
    return len < PATH_MAX_LEN ? len : PATH_MAX_LEN - 1;
}

static bool chars_ok(const char *s, const char *extra)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c && strchr(extra, c))))
            return false;
    }
    return true;
}

static bool digits_only(const char *s)
{
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* UTF-8 characters, not bytes: Smithy lengths count characters. */
static long utf8_chars(const char *s)
{
    long n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

static int check_str(const spec_t *s, const json_t *v, const char *path, aiq_err_t *err)
{
    if (!json_is_string(v))
        return aiq_err_set(err, AIQ_EINVAL, "%s: must be a string", path);
    const char *str = json_string_value(v);
    long n = utf8_chars(str);
    if (n < s->min || (s->max && n > s->max))
        return aiq_err_set(err, AIQ_EINVAL, "%s: length must be %ld..%ld", path, s->min,
                           s->max ? s->max : 1L << 30);
    /* An empty extra set means digits (and letters) only; ACCOUNT_ID is digits. */
    if (s == &ACCOUNT_ID && !digits_only(str))
        return aiq_err_set(err, AIQ_EINVAL, "%s: must be a 12-digit account id", path);
    if (s->chars && !chars_ok(str, s->chars))
        return aiq_err_set(err, AIQ_EINVAL, "%s: only letters, digits and \"%s\" are allowed", path,
                           s->chars);
    if (s->prefix && strncmp(str, s->prefix, strlen(s->prefix)) != 0)
        return aiq_err_set(err, AIQ_EINVAL, "%s: must start with %s", path, s->prefix);
    return 0;
}

static int check_enum(const spec_t *s, const json_t *v, const char *path, aiq_err_t *err)
{
    const char *str = json_string_value(v);
    for (const char *const *e = s->enums; str && *e; e++)
        if (strcmp(*e, str) == 0)
            return 0;
    char list[256] = "";
    size_t len = 0;
    for (const char *const *e = s->enums; *e && len < sizeof(list) - 1; e++) {
        int n = snprintf(list + len, sizeof(list) - len, "%s%s", len ? ", " : "", *e);
        len = n > 0 && (size_t)n < sizeof(list) - len ? len + (size_t)n : sizeof(list) - 1;
    }
    return aiq_err_set(err, AIQ_EINVAL, "%s: must be one of %s", path, list);
}

static bool base64_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/' || c == '='))
            return false;
    }
    return n % 4 == 0;
}

static int check_obj(const spec_t *s, const json_t *v, char *path, size_t plen, int depth,
                     aiq_err_t *err)
{
    if (!json_is_object(v))
        return aiq_err_set(err, AIQ_EINVAL, "%s: must be an object", path);
    const char *key;
    const json_t *val;
    size_t set = 0;
    json_object_foreach((json_t *)v, key, val)
    {
        const member_t *m = s->members;
        while (m->name && strcmp(m->name, key) != 0)
            m++;
        size_t n = path_push(path, plen, key, 0);
        if (!m->name) {
            int rc = aiq_err_set(err, AIQ_EINVAL, "%s: not a member of this Bedrock shape", path);
            path[plen] = '\0';
            return rc;
        }
        set++;
        int rc = check(m->spec, val, path, n, depth + 1, err);
        path[plen] = '\0';
        if (rc)
            return rc;
    }
    for (const member_t *m = s->members; m->name; m++)
        if (m->required && !json_object_get(v, m->name))
            return aiq_err_set(err, AIQ_EINVAL, "%s.%s: required", path, m->name);
    if (s->kind == K_UNION && set != 1)
        return aiq_err_set(err, AIQ_EINVAL, "%s: must have exactly one member (it has %zu)", path,
                           set);
    return 0;
}

static int check_list(const spec_t *s, const json_t *v, char *path, size_t plen, int depth,
                      aiq_err_t *err)
{
    if (!json_is_array(v))
        return aiq_err_set(err, AIQ_EINVAL, "%s: must be an array", path);
    size_t n = json_array_size(v);
    if ((long)n < s->min || (s->max && (long)n > s->max))
        return aiq_err_set(err, AIQ_EINVAL, "%s: must have %ld..%ld elements", path, s->min,
                           s->max ? s->max : 1L << 30);
    size_t i;
    const json_t *it;
    json_array_foreach((json_t *)v, i, it)
    {
        size_t len = path_push(path, plen, NULL, i);
        int rc = check(s->item, it, path, len, depth + 1, err);
        path[plen] = '\0';
        if (rc)
            return rc;
    }
    return 0;
}

static int check_map(const spec_t *s, const json_t *v, char *path, size_t plen, int depth,
                     aiq_err_t *err)
{
    if (!json_is_object(v))
        return aiq_err_set(err, AIQ_EINVAL, "%s: must be an object", path);
    size_t n = json_object_size(v);
    if ((long)n < s->min || (s->max && (long)n > s->max))
        return aiq_err_set(err, AIQ_EINVAL, "%s: must have %ld..%ld entries", path, s->min,
                           s->max ? s->max : 1L << 30);
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        size_t len = path_push(path, plen, key, 0);
        json_t *k = json_string(key);
        int rc = k ? check(s->key, k, path, len, depth + 1, err) : 0;
        json_decref(k);
        if (!rc)
            rc = check(s->item, val, path, len, depth + 1, err);
        path[plen] = '\0';
        if (rc)
            return rc;
    }
    return 0;
}

static int check(const spec_t *s, const json_t *v, char *path, size_t plen, int depth,
                 aiq_err_t *err)
{
    if (depth > DEPTH_MAX)
        return aiq_err_set(err, AIQ_EINVAL, "%s: nested too deep", path);
    switch (s->kind) {
    case K_STR:
        return check_str(s, v, path, err);
    case K_ENUM:
        return check_enum(s, v, path, err);
    case K_BLOB:
        if (!json_is_string(v) || (long)json_string_length(v) < s->min ||
            !base64_ok(json_string_value(v)))
            return aiq_err_set(err, AIQ_EINVAL, "%s: must be non-empty base64 text", path);
        return 0;
    case K_DOC:
        return 0;
    case K_BOOL:
        return json_is_boolean(v) ? 0 : aiq_err_set(err, AIQ_EINVAL, "%s: must be a boolean", path);
    case K_OBJ:
    case K_UNION:
        return check_obj(s, v, path, plen, depth, err);
    case K_LIST:
        return check_list(s, v, path, plen, depth, err);
    case K_MAP:
        return check_map(s, v, path, plen, depth, err);
    }
    return aiq_err_set(err, AIQ_EINVAL, "%s: unknown shape", path);
}

static int check_top(const spec_t *s, const char *name, const json_t *v, aiq_err_t *err)
{
    char path[PATH_MAX_LEN];
    snprintf(path, sizeof(path), "%s", name);
    return check(s, v, path, strlen(path), 0, err);
}

int aiq_converse_check_messages(const json_t *v, aiq_err_t *err)
{
    return check_top(&MESSAGES, "messages", v, err);
}

int aiq_converse_check_system(const json_t *v, aiq_err_t *err)
{
    return check_top(&SYSTEM, "system", v, err);
}

int aiq_converse_check_field(const char *name, const json_t *v, aiq_err_t *err)
{
    for (size_t i = 0; aiq_converse_fields[i]; i++)
        if (strcmp(aiq_converse_fields[i], name) == 0)
            return check_top(field_specs[i], name, v, err);
    return aiq_err_set(err, AIQ_EINVAL, "%s: not a Converse field aiq passes through", name);
}

bool aiq_converse_metadata_ok(const char *s, bool key)
{
    long n = s ? utf8_chars(s) : -1;
    return n >= (key ? 1 : 0) && n <= 256 && chars_ok(s, META_CHARS);
}

/* ---- model ids ------------------------------------------------------------------------- */

/* ConversationalModelId's pattern in POSIX ERE, anchored at both ends: "(?:" becomes "(",
 * and "[a-zA-Z0-9-:.]" is written "[a-zA-Z0-9:.-]" (in ERE "9-:" would be a range). */
static const char MODEL_ID_ERE[] =
    "^("
    "(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:("
    "([0-9]{12}:custom-model/[a-z0-9-]{1,63}[.][a-z0-9-]{1,63}/[a-z0-9]{12})"
    "|(:foundation-model/[a-z0-9-]{1,63}[.][a-z0-9-]{1,63}([.:]?[a-z0-9-]{1,63}))"
    "|([0-9]{12}:imported-model/[a-z0-9]{12})"
    "|([0-9]{12}:provisioned-model/[a-z0-9]{12})"
    "|([0-9]{12}:custom-model-deployment/[a-z0-9]{12})"
    "|([0-9]{12}:(inference-profile|application-inference-profile)/[a-zA-Z0-9:.-]+)))"
    "|([a-z0-9-]{1,63}[.][a-z0-9-]{1,63}([.:]?[a-z0-9-]{1,63}))"
    "|(([0-9a-zA-Z][_-]?)+)"
    "|([a-zA-Z0-9:.-]+)"
    "|(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:prompt/[0-9a-zA-Z]{10}(:[0-9]{1,5})?)"
    "|(arn:aws:sagemaker:[a-z0-9-]+:[0-9]{12}:endpoint/[a-zA-Z0-9-]+)"
    "|(arn:aws(-[^:]+)?:bedrock:([0-9a-z-]{1,20}):([0-9]{12}):(default-)?prompt-router/"
    "[a-zA-Z0-9:.-]+)"
    ")$";

static regex_t model_re;
static int model_re_ok;
static pthread_once_t model_re_once = PTHREAD_ONCE_INIT;

static void compile_model_re(void)
{
    model_re_ok = regcomp(&model_re, MODEL_ID_ERE, REG_EXTENDED | REG_NOSUB) == 0;
}

bool aiq_model_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n < 1 || n > 2048 || strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
        return false;
    /* The pattern's alternative [a-zA-Z0-9:.-]+ takes every id of those characters alone
     * (all foundation-model and inference-profile ids): no need to run the whole ERE, which
     * cost ~54,000 instructions a job (bench/callgrind_job.py). */
    if (strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:.-") == n)
        return true;
    pthread_once(&model_re_once, compile_model_re);
    return model_re_ok && regexec(&model_re, id, 0, NULL, 0) == 0;
}
