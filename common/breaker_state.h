/* breaker.h — one circuit breaker's state machine (closed → open → half-open → closed),
 * pure: callers pass the time and persist or publish the transitions it reports. */
#ifndef AIQ_BREAKER_H
#define AIQ_BREAKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum aiq_breaker_state {
    AIQ_BREAKER_CLOSED = 0,
    AIQ_BREAKER_OPEN,
    AIQ_BREAKER_HALF_OPEN,
} aiq_breaker_state_t;

/* A manual override beats every observation until it is lifted. */
typedef enum aiq_breaker_force {
    AIQ_BREAKER_AUTO = 0,
    AIQ_BREAKER_FORCED_OPEN,
    AIQ_BREAKER_FORCED_CLOSED,
} aiq_breaker_force_t;

const char *aiq_breaker_state_name(aiq_breaker_state_t s);
const char *aiq_breaker_force_name(aiq_breaker_force_t f);
/* Parses the names above; -1 when unknown. */
int aiq_breaker_state_parse(const char *s);
int aiq_breaker_force_parse(const char *s);

#define AIQ_BREAKER_BUCKETS 10

typedef struct aiq_breaker_conf {
    int consecutive_failures; /* open after this many failures in a row (default 5) */
    double failure_rate;      /* ... or this share of failures in the window (0 = off) */
    int min_calls;            /* the rate needs at least this many calls in the window */
    int64_t window_ms;        /* rate window, kept in AIQ_BREAKER_BUCKETS buckets */
    int64_t cooldown_ms;      /* open → half-open after this long */
    int half_open_probes;     /* calls let through while half-open */
} aiq_breaker_conf_t;

/* The part every process and host agrees on: what aiq.breaker records and LMDB hold.
 * version orders transitions: a hybrid logical clock (wall ms, bumped past anything seen). */
typedef struct aiq_breaker_shared {
    aiq_breaker_state_t state; /* CLOSED or OPEN; half-open is derived from the time */
    aiq_breaker_force_t force;
    int64_t since_ms; /* when state began (open: cooldown counts from here) */
    uint64_t version;
} aiq_breaker_shared_t;

typedef struct aiq_breaker {
    aiq_breaker_conf_t conf;
    aiq_breaker_shared_t shared;
    int consecutive;
    int probes_out;    /* half-open calls admitted and not yet reported */
    int probes_won;    /* of those, succeeded */
    int64_t bucket_ms; /* start of the newest bucket */
    int head;
    uint32_t calls[AIQ_BREAKER_BUCKETS], fails[AIQ_BREAKER_BUCKETS];
} aiq_breaker_t;

void aiq_breaker_conf_default(aiq_breaker_conf_t *c);
void aiq_breaker_init(aiq_breaker_t *b, const aiq_breaker_conf_t *c);

/* The state at now (open turns half-open once the cooldown has passed). */
aiq_breaker_state_t aiq_breaker_state(const aiq_breaker_t *b, int64_t now_ms);

/* May a call go ahead at now? When half-open it counts as one of the probes (*probe set);
 * report its outcome with aiq_breaker_report, or aiq_breaker_abandon if it never ran. */
bool aiq_breaker_allow(aiq_breaker_t *b, int64_t now_ms, bool *probe);

/* Reports the outcome of an admitted call. Returns true when the shared state changed
 * (b->shared then holds the transition to persist and publish). */
bool aiq_breaker_report(aiq_breaker_t *b, bool success, bool probe, int64_t now_ms);
void aiq_breaker_abandon(aiq_breaker_t *b, bool probe);

/* Sets a manual override (AUTO lifts it). Always a transition. */
void aiq_breaker_force(aiq_breaker_t *b, aiq_breaker_force_t f, int64_t now_ms);

/* Applies a transition seen elsewhere (another process or host). Returns true when it was
 * newer than what b had; older or equal versions are ignored. */
bool aiq_breaker_apply(aiq_breaker_t *b, const aiq_breaker_shared_t *s);

/* The JSON value of a breaker record on the <prefix>breaker topic (key = model):
 * {"model","state","force","since_ms","version","origin"}. *out is malloc'd. */
int aiq_breaker_record_encode(const char *model, const aiq_breaker_shared_t *s, const char *origin,
                              char **out, size_t *len);
/* Fails (AIQ_EINVAL) on anything but a well-formed record. */
int aiq_breaker_record_decode(const void *buf, size_t len, aiq_breaker_shared_t *s);

/* ---- the host-shared store (LMDB: key = model, value = AIQ_BREAKER_RECORD_BYTES) ---- */

#define AIQ_BREAKER_RECORD_BYTES 24 /* state, force, 6 spare, since_ms, version (big endian) */

void aiq_breaker_record_pack(const aiq_breaker_shared_t *s,
                             unsigned char out[AIQ_BREAKER_RECORD_BYTES]);
/* Fails (AIQ_EINVAL) on a value of another size or with unknown state or force. */
int aiq_breaker_record_unpack(const void *buf, size_t len, aiq_breaker_shared_t *s);

/* The directory of one deployment's host-shared breaker state under base (breaker.path, or
 * <cache.path>/breakers): base/prefix-<topic prefix>, bytes other than [A-Za-z0-9._-] as
 * %XX. The topic prefix is the scope because it is the scope of <prefix>breaker, the topic
 * that shares the same state across hosts: workers of one prefix share, whatever their
 * group, and workers of another prefix never see it. Returns 0, or AIQ_ETOOBIG when it
 * does not fit cap. */
int aiq_breaker_scope_dir(const char *base, const char *prefix, char *out, size_t cap);

#endif
