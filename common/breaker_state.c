#include "breaker_state.h"

#include "aiq_err.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const state_names[] = {"closed", "open", "half_open"};
static const char *const force_names[] = {"auto", "forced_open", "forced_closed"};

const char *aiq_breaker_state_name(aiq_breaker_state_t s)
{
    return (unsigned)s < 3 ? state_names[s] : "unknown";
}

const char *aiq_breaker_force_name(aiq_breaker_force_t f)
{
    return (unsigned)f < 3 ? force_names[f] : "unknown";
}

static int find_name(const char *const *names, const char *s)
{
    for (int i = 0; s && i < 3; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

int aiq_breaker_state_parse(const char *s)
{
    return find_name(state_names, s);
}

int aiq_breaker_force_parse(const char *s)
{
    return find_name(force_names, s);
}

void aiq_breaker_conf_default(aiq_breaker_conf_t *c)
{
    *c = (aiq_breaker_conf_t){
        .consecutive_failures = 5,
        .failure_rate = 0.5,
        .min_calls = 20,
        .window_ms = 10000,
        .cooldown_ms = 30000,
        .half_open_probes = 1,
    };
}

void aiq_breaker_init(aiq_breaker_t *b, const aiq_breaker_conf_t *c)
{
    memset(b, 0, sizeof(*b));
    b->conf = *c;
    if (b->conf.half_open_probes < 1)
        b->conf.half_open_probes = 1;
    if (b->conf.window_ms < AIQ_BREAKER_BUCKETS)
        b->conf.window_ms = AIQ_BREAKER_BUCKETS;
}

aiq_breaker_state_t aiq_breaker_state(const aiq_breaker_t *b, int64_t now_ms)
{
    if (b->shared.force == AIQ_BREAKER_FORCED_OPEN)
        return AIQ_BREAKER_OPEN;
    if (b->shared.force == AIQ_BREAKER_FORCED_CLOSED)
        return AIQ_BREAKER_CLOSED;
    if (b->shared.state == AIQ_BREAKER_OPEN && now_ms - b->shared.since_ms >= b->conf.cooldown_ms)
        return AIQ_BREAKER_HALF_OPEN;
    return b->shared.state;
}

static void window_clear(aiq_breaker_t *b)
{
    memset(b->calls, 0, sizeof(b->calls));
    memset(b->fails, 0, sizeof(b->fails));
    b->bucket_ms = 0;
}

/* Advances the ring so the head bucket covers now. */
static void window_roll(aiq_breaker_t *b, int64_t now_ms)
{
    int64_t width = b->conf.window_ms / AIQ_BREAKER_BUCKETS;
    if (b->bucket_ms == 0 || now_ms - b->bucket_ms >= b->conf.window_ms + width) {
        window_clear(b);
        b->bucket_ms = now_ms;
        return;
    }
    while (now_ms >= b->bucket_ms + width) {
        b->head = (b->head + 1) % AIQ_BREAKER_BUCKETS;
        b->calls[b->head] = b->fails[b->head] = 0;
        b->bucket_ms += width;
    }
}

static bool rate_tripped(const aiq_breaker_t *b)
{
    if (b->conf.failure_rate <= 0)
        return false;
    uint64_t calls = 0, fails = 0;
    for (int i = 0; i < AIQ_BREAKER_BUCKETS; i++) {
        calls += b->calls[i];
        fails += b->fails[i];
    }
    return calls >= (uint64_t)(b->conf.min_calls > 0 ? b->conf.min_calls : 1) &&
           (double)fails >= b->conf.failure_rate * (double)calls;
}

/* Hybrid logical clock: follows the wall clock, but always moves past every version seen,
 * so a transition made after applying a remote one orders after it everywhere. */
static void transition(aiq_breaker_t *b, aiq_breaker_state_t to, int64_t now_ms)
{
    uint64_t v = b->shared.version + 1;
    b->shared.version = (uint64_t)now_ms > v ? (uint64_t)now_ms : v;
    b->shared.state = to;
    b->shared.since_ms = now_ms;
    b->consecutive = 0;
    b->probes_out = b->probes_won = 0;
    window_clear(b);
}

bool aiq_breaker_allow(aiq_breaker_t *b, int64_t now_ms, bool *probe)
{
    *probe = false;
    switch (aiq_breaker_state(b, now_ms)) {
    case AIQ_BREAKER_CLOSED:
        return true;
    case AIQ_BREAKER_HALF_OPEN:
        if (b->probes_out + b->probes_won >= b->conf.half_open_probes)
            return false;
        b->probes_out++;
        *probe = true;
        return true;
    default:
        return false;
    }
}

void aiq_breaker_abandon(aiq_breaker_t *b, bool probe)
{
    if (probe && b->probes_out > 0)
        b->probes_out--;
}

bool aiq_breaker_report(aiq_breaker_t *b, bool success, bool probe, int64_t now_ms)
{
    aiq_breaker_abandon(b, probe);
    if (b->shared.force != AIQ_BREAKER_AUTO)
        return false;
    aiq_breaker_state_t st = aiq_breaker_state(b, now_ms);
    if (probe) {
        if (st != AIQ_BREAKER_HALF_OPEN)
            return false; /* someone else decided meanwhile */
        if (!success) {
            transition(b, AIQ_BREAKER_OPEN, now_ms);
            return true;
        }
        if (++b->probes_won < b->conf.half_open_probes)
            return false;
        transition(b, AIQ_BREAKER_CLOSED, now_ms);
        return true;
    }
    if (st != AIQ_BREAKER_CLOSED)
        return false; /* a call admitted before the breaker opened: no new information */
    window_roll(b, now_ms);
    b->calls[b->head]++;
    if (success) {
        b->consecutive = 0;
        return false;
    }
    b->fails[b->head]++;
    b->consecutive++;
    if (b->consecutive >= b->conf.consecutive_failures || rate_tripped(b)) {
        transition(b, AIQ_BREAKER_OPEN, now_ms);
        return true;
    }
    return false;
}

void aiq_breaker_force(aiq_breaker_t *b, aiq_breaker_force_t f, int64_t now_ms)
{
    aiq_breaker_state_t keep = b->shared.state;
    transition(b, f == AIQ_BREAKER_FORCED_OPEN ? AIQ_BREAKER_OPEN : keep, now_ms);
    if (f == AIQ_BREAKER_FORCED_CLOSED || f == AIQ_BREAKER_AUTO)
        b->shared.state = AIQ_BREAKER_CLOSED;
    b->shared.force = f;
}

bool aiq_breaker_apply(aiq_breaker_t *b, const aiq_breaker_shared_t *s)
{
    if (s->version <= b->shared.version)
        return false;
    b->shared = *s;
    b->consecutive = 0;
    b->probes_out = b->probes_won = 0;
    window_clear(b);
    return true;
}

int aiq_breaker_record_encode(const char *model, const aiq_breaker_shared_t *s, const char *origin,
                              char **out, size_t *len)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "model", model, "state",
                          aiq_breaker_state_name(s->state), "force",
                          aiq_breaker_force_name(s->force), "since_ms", (json_int_t)s->since_ms,
                          "version", (json_int_t)s->version, "origin", origin ? origin : "");
    if (!o)
        return AIQ_EINVAL;
    *out = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!*out)
        return AIQ_ENOMEM;
    *len = strlen(*out);
    return 0;
}

int aiq_breaker_record_decode(const void *buf, size_t len, aiq_breaker_shared_t *s)
{
    json_t *o = json_loadb(buf, len, 0, NULL);
    json_t *st = json_object_get(o, "state"), *fo = json_object_get(o, "force");
    json_t *since = json_object_get(o, "since_ms"), *ver = json_object_get(o, "version");
    int state = aiq_breaker_state_parse(json_string_value(st));
    int force = fo ? aiq_breaker_force_parse(json_string_value(fo)) : AIQ_BREAKER_AUTO;
    int rc = AIQ_EINVAL;
    if (json_is_object(o) && (state == AIQ_BREAKER_CLOSED || state == AIQ_BREAKER_OPEN) &&
        force >= 0 && json_is_integer(since) && json_is_integer(ver) &&
        json_integer_value(ver) > 0) {
        *s = (aiq_breaker_shared_t){(aiq_breaker_state_t)state, (aiq_breaker_force_t)force,
                                    json_integer_value(since), (uint64_t)json_integer_value(ver)};
        rc = 0;
    }
    json_decref(o);
    return rc;
}

void aiq_breaker_record_pack(const aiq_breaker_shared_t *s,
                             unsigned char out[AIQ_BREAKER_RECORD_BYTES])
{
    memset(out, 0, AIQ_BREAKER_RECORD_BYTES);
    out[0] = (unsigned char)s->state;
    out[1] = (unsigned char)s->force;
    uint64_t since = (uint64_t)s->since_ms, v = s->version;
    for (int i = 0; i < 8; i++) {
        out[8 + i] = (unsigned char)(since >> (56 - 8 * i));
        out[16 + i] = (unsigned char)(v >> (56 - 8 * i));
    }
}

int aiq_breaker_record_unpack(const void *buf, size_t len, aiq_breaker_shared_t *s)
{
    const unsigned char *p = buf;
    if (len != AIQ_BREAKER_RECORD_BYTES || p[0] > AIQ_BREAKER_OPEN ||
        p[1] > AIQ_BREAKER_FORCED_CLOSED)
        return AIQ_EINVAL;
    uint64_t since = 0, v = 0;
    for (int i = 0; i < 8; i++) {
        since = since << 8 | p[8 + i];
        v = v << 8 | p[16 + i];
    }
    *s = (aiq_breaker_shared_t){(aiq_breaker_state_t)p[0], (aiq_breaker_force_t)p[1],
                                (int64_t)since, v};
    return 0;
}

int aiq_breaker_scope_dir(const char *base, const char *prefix, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    int n = snprintf(out, cap, "%s/prefix-", base);
    if (n < 0 || (size_t)n >= cap)
        return AIQ_ETOOBIG;
    size_t pos = (size_t)n;
    for (const unsigned char *p = (const unsigned char *)prefix; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-';
        if (pos + (plain ? 1 : 3) >= cap)
            return AIQ_ETOOBIG;
        if (plain) {
            out[pos++] = (char)*p;
        } else {
            out[pos++] = '%';
            out[pos++] = hex[*p >> 4];
            out[pos++] = hex[*p & 15];
        }
    }
    out[pos] = '\0';
    return 0;
}
