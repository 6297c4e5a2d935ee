#include "breaker_share.h"
#include "bridge.h"
#include "kafka.h"
#include "topics.h"

#include <errno.h>
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MODEL_MAX        2048
#define STORE_BYTES      (16u << 20) /* thousands of models fit many times over */
#define STORE_READER     1024        /* one slot per process on the host, and then some */
#define RECORDS_PER_TURN 256         /* breaker records applied per loop turn at most */

typedef struct entry {
    struct entry *next;
    aiq_breaker_t b;
    char model[];
} entry_t;

struct aiq_breakers {
    aiq_log_t *log;
    aiq_kafka_ctx_t kctx; /* the follower's opaque: log context, owner = this */
    uv_loop_t *loop;
    const aiq_config_t *cfg;
    aiq_publisher_t *pub;
    aiq_breaker_conf_t conf;
    entry_t *entries;
    char topic[AIQ_TOPIC_MAX];
    MDB_env *env;
    MDB_dbi dbi;
    rd_kafka_t *rk; /* NULL when the topic is missing: host-local sharing only */
    rd_kafka_queue_t *q;
    aiq_bridge_t *bridge;
    aiq_breaker_share_stats_t stats;
};

/* ---- the host-shared store ----------------------------------------------------------- */

/* Takes whatever newer transition another process on the host wrote. */
static void store_pull(aiq_breaker_share_t *bs, entry_t *e)
{
    MDB_txn *txn;
    if (mdb_txn_begin(bs->env, NULL, MDB_RDONLY, &txn))
        return;
    MDB_val k = {strlen(e->model), e->model}, v;
    aiq_breaker_shared_t s;
    if (mdb_get(txn, bs->dbi, &k, &v) == 0 &&
        aiq_breaker_record_unpack(v.mv_data, v.mv_size, &s) == 0)
        aiq_breaker_apply(&e->b, &s);
    mdb_txn_abort(txn);
}

/* Writes e's state unless the store already holds a newer one (which e then adopts).
 * Returns 1 when e's state was written. */
static int store_push(aiq_breaker_share_t *bs, entry_t *e)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(bs->env, NULL, 0, &txn);
    if (rc) {
        aiq_logj(bs->log, AIQ_LOG_WARN, NULL, "breaker store: %s", mdb_strerror(rc));
        return 1; /* still publish: other hosts must hear of it */
    }
    MDB_val k = {strlen(e->model), e->model}, v;
    aiq_breaker_shared_t cur;
    if (mdb_get(txn, bs->dbi, &k, &v) == 0 &&
        aiq_breaker_record_unpack(v.mv_data, v.mv_size, &cur) == 0 &&
        cur.version >= e->b.shared.version) {
        mdb_txn_abort(txn);
        aiq_breaker_apply(&e->b, &cur);
        return 0;
    }
    unsigned char rec[AIQ_BREAKER_RECORD_BYTES];
    aiq_breaker_record_pack(&e->b.shared, rec);
    v = (MDB_val){sizeof(rec), rec};
    rc = mdb_put(txn, bs->dbi, &k, &v, 0);
    rc = rc ? (mdb_txn_abort(txn), rc) : mdb_txn_commit(txn);
    if (rc)
        aiq_logj(bs->log, AIQ_LOG_WARN, NULL, "breaker store: %s", mdb_strerror(rc));
    return 1;
}

/* Creates dir and its parents (0700). Returns 0, AIQ_ETOOBIG for a path over PATH_MAX-ish,
 * or AIQ_EIO naming the directory that could not be made. */
static int mkdir_p(const char *path, aiq_err_t *err)
{
    char buf[4096];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return aiq_err_set(err, AIQ_ETOOBIG, "breaker.path %.64s...: longer than %zu bytes", path,
                           sizeof(buf) - 1);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, 0700) && errno != EEXIST)
            return aiq_err_set(err, AIQ_EIO, "breaker.path %s: %s", buf, strerror(errno));
        *p = c;
        if (!c)
            return 0;
    }
}

static int store_open(aiq_breaker_share_t *bs, const char *dir, aiq_err_t *err)
{
    int rc = mkdir_p(dir, err);
    if (rc)
        return rc;
    MDB_txn *txn = NULL;
    int dead = 0;
    if ((rc = mdb_env_create(&bs->env)) || (rc = mdb_env_set_mapsize(bs->env, STORE_BYTES)) ||
        (rc = mdb_env_set_maxreaders(bs->env, STORE_READER)) ||
        (rc = mdb_env_open(bs->env, dir, MDB_NOSYNC, 0600)) ||
        (rc = mdb_reader_check(bs->env, &dead)) || (rc = mdb_txn_begin(bs->env, NULL, 0, &txn)) ||
        (rc = mdb_dbi_open(txn, NULL, 0, &bs->dbi)) || (rc = mdb_txn_commit(txn))) {
        if (txn && rc)
            mdb_txn_abort(txn);
        return aiq_err_set(err, AIQ_EIO, "breaker state %s: %s", dir, mdb_strerror(rc));
    }
    if (dead)
        aiq_logj(bs->log, AIQ_LOG_INFO, NULL, "breaker state: cleared %d stale reader slot(s)",
                 dead);
    return 0;
}

/* ---- breakers ------------------------------------------------------------------------ */

static entry_t *entry_get(aiq_breaker_share_t *bs, const char *model)
{
    for (entry_t *e = bs->entries; e; e = e->next)
        if (strcmp(e->model, model) == 0)
            return e;
    size_t n = strlen(model);
    if (n > MODEL_MAX)
        return NULL;
    entry_t *e = calloc(1, sizeof(*e) + n + 1);
    if (!e)
        return NULL;
    memcpy(e->model, model, n + 1);
    aiq_breaker_init(&e->b, &bs->conf);
    e->next = bs->entries;
    bs->entries = e;
    return e;
}

static void publish_done(void *opaque, rd_kafka_resp_err_t err, int permanent, const char *errstr)
{
    (void)permanent;
    aiq_breaker_share_t *bs = opaque;
    if (err) {
        bs->stats.publish_failures++;
        aiq_logj(bs->log, AIQ_LOG_WARN, NULL, "breaker transition not published to %s: %s",
                 bs->topic, errstr);
    }
}

static void announce(aiq_breaker_share_t *bs, entry_t *e, const char *origin)
{
    const aiq_breaker_shared_t *s = &e->b.shared;
    aiq_logj(bs->log, s->state == AIQ_BREAKER_OPEN ? AIQ_LOG_WARN : AIQ_LOG_INFO, NULL,
             "breaker %s: %s%s%s (version %llu, from %s)", e->model,
             aiq_breaker_state_name(s->state), s->force ? ", " : "",
             s->force ? aiq_breaker_force_name(s->force) : "", (unsigned long long)s->version,
             origin);
}

static void transitioned(aiq_breaker_share_t *bs, entry_t *e, bool was_probe)
{
    if (e->b.shared.state == AIQ_BREAKER_OPEN)
        was_probe ? bs->stats.reopened++ : bs->stats.opened++;
    else
        bs->stats.closed++;
    if (!store_push(bs, e))
        return; /* another process on the host got there first; it publishes */
    announce(bs, e, "this worker");
    if (!bs->rk)
        return;
    char *val;
    size_t len;
    aiq_err_t err = {0};
    if (aiq_breaker_record_encode(e->model, &e->b.shared, bs->cfg->worker_id, &val, &len))
        return;
    if (aiq_publisher_send(bs->pub, bs->topic, e->model, strlen(e->model), val, len, NULL,
                           publish_done, bs, &err)) {
        bs->stats.publish_failures++;
        aiq_logj(bs->log, AIQ_LOG_WARN, NULL, "breaker transition not published: %s", err.msg);
    }
    free(val);
}

bool aiq_breaker_share_allow(aiq_breaker_share_t *bs, const char *model, int64_t now_ms,
                             bool *probe)
{
    *probe = false;
    entry_t *e = entry_get(bs, model);
    if (!e)
        return true; /* no breaker without memory: calling is the safe default */
    store_pull(bs, e);
    if (aiq_breaker_allow(&e->b, now_ms, probe))
        return true;
    bs->stats.rejected_calls++;
    return false;
}

void aiq_breaker_share_report(aiq_breaker_share_t *bs, const char *model, bool success, bool probe,
                              int64_t now_ms)
{
    entry_t *e = entry_get(bs, model);
    if (e && aiq_breaker_report(&e->b, success, probe, now_ms))
        transitioned(bs, e, probe);
}

void aiq_breaker_share_abandon(aiq_breaker_share_t *bs, const char *model, bool probe)
{
    entry_t *e = entry_get(bs, model);
    if (e)
        aiq_breaker_abandon(&e->b, probe);
}

aiq_breaker_state_t aiq_breaker_share_state(aiq_breaker_share_t *bs, const char *model,
                                            int64_t now_ms)
{
    entry_t *e = entry_get(bs, model);
    if (!e)
        return AIQ_BREAKER_CLOSED;
    store_pull(bs, e);
    return aiq_breaker_state(&e->b, now_ms);
}

void aiq_breaker_share_each(aiq_breaker_share_t *bs, int64_t now_ms, aiq_breaker_share_visit_fn fn,
                            void *ctx)
{
    for (entry_t *e = bs->entries; e; e = e->next) {
        store_pull(bs, e);
        fn(ctx, e->model, aiq_breaker_state(&e->b, now_ms), e->b.shared.force);
    }
}

const aiq_breaker_share_stats_t *aiq_breaker_share_stats(const aiq_breaker_share_t *bs)
{
    return &bs->stats;
}

/* ---- other hosts: the compacted topic ------------------------------------------------ */

static void on_record(aiq_breaker_share_t *bs, const rd_kafka_message_t *m)
{
    char model[MODEL_MAX + 1];
    aiq_breaker_shared_t s;
    if (!m->key || m->key_len == 0 || m->key_len > MODEL_MAX || !m->payload)
        return; /* a tombstone or junk: nothing to apply */
    memcpy(model, m->key, m->key_len);
    model[m->key_len] = '\0';
    if (aiq_breaker_record_decode(m->payload, m->len, &s)) {
        aiq_logj(bs->log, AIQ_LOG_WARN, NULL, "%s[%d]@%lld: not a breaker record, ignored",
                 bs->topic, m->partition, (long long)m->offset);
        return;
    }
    entry_t *e = entry_get(bs, model);
    if (!e)
        return;
    store_pull(bs, e);
    if (!aiq_breaker_apply(&e->b, &s))
        return;
    bs->stats.applied_remote++;
    store_push(bs, e);
    announce(bs, e, rd_kafka_topic_name(m->rkt));
}

/* Applies one record of the topic; the bridge calls it at most RECORDS_PER_TURN times per
 * loop turn, so a long compacted topic read at start-up never stalls the loop. */
static int serve_one(void *opaque)
{
    aiq_breaker_share_t *bs = opaque;
    rd_kafka_message_t *m = rd_kafka_consume_queue(bs->q, 0);
    if (!m)
        return 0;
    if (!m->err)
        on_record(bs, m);
    else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
        aiq_logj(bs->log, AIQ_LOG_WARN, NULL, "breaker topic: %s", rd_kafka_message_errstr(m));
    rd_kafka_message_destroy(m);
    return 1;
}

static int follow_topic(aiq_breaker_share_t *bs, aiq_err_t *err)
{
    bs->kctx = (aiq_kafka_ctx_t){.log = bs->log, .owner = bs};
    aiq_kafka_params_t params = {.brokers = bs->cfg->brokers, .cfg = bs->cfg, .ctx = &bs->kctx};
    rd_kafka_conf_t *conf;
    char errstr[512];
    int rc = aiq_kafka_conf_new(&conf, AIQ_KAFKA_BREAKER_FOLLOWER, &params, err);
    if (rc)
        return rc;
    bs->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!bs->rk) {
        rd_kafka_conf_destroy(conf);
        return aiq_err_set(err, AIQ_EKAFKA, "breaker consumer: %s", errstr);
    }
    int n = 0;
    aiq_err_t perr = {0};
    if ((rc = aiq_kafka_partition_count(bs->rk, bs->topic, 5000, &n, &perr))) {
        aiq_logj(bs->log, AIQ_LOG_WARN, NULL,
                 "topic %s is missing%s%s: breaker transitions are shared on this host only "
                 "(aiq-admin topics create makes it)",
                 bs->topic, rc == AIQ_ENOTFOUND ? "" : ": ", rc == AIQ_ENOTFOUND ? "" : perr.msg);
        rd_kafka_destroy(bs->rk);
        bs->rk = NULL;
        return 0;
    }
    rd_kafka_poll_set_consumer(bs->rk);
    /* Wake-ups first: records that arrive before the fd is set would never signal it. */
    bs->q = rd_kafka_queue_get_consumer(bs->rk);
    aiq_bridge_conf_t bc = {
        .queue = bs->q, .budget = RECORDS_PER_TURN, .serve = serve_one, .opaque = bs};
    if ((rc = aiq_bridge_new(&bs->bridge, bs->loop, &bc, err)))
        return rc;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++)
        rd_kafka_topic_partition_list_add(parts, bs->topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t e = rd_kafka_assign(bs->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (e)
        return aiq_err_set(err, AIQ_EKAFKA, "breaker consumer: %s", rd_kafka_err2str(e));
    return 0;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

int aiq_breaker_share_new(aiq_breaker_share_t **out, uv_loop_t *loop, const aiq_config_t *cfg,
                          const char *state_dir, aiq_log_t *log, aiq_publisher_t *pub,
                          aiq_err_t *err)
{
    aiq_breaker_share_t *bs = calloc(1, sizeof(*bs));
    if (!bs)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    bs->log = log;
    bs->loop = loop;
    bs->cfg = cfg;
    bs->pub = pub;
    aiq_breaker_conf_default(&bs->conf);
    bs->conf.consecutive_failures = (int)cfg->breaker_failures;
    bs->conf.failure_rate = (double)cfg->breaker_failure_rate_pct / 100.0;
    bs->conf.min_calls = (int)cfg->breaker_min_calls;
    bs->conf.window_ms = cfg->breaker_window_ms;
    bs->conf.cooldown_ms = cfg->breaker_cooldown_ms;
    bs->conf.half_open_probes = (int)cfg->breaker_probes;
    int rc = aiq_topic_breaker(cfg->topic_prefix, bs->topic, sizeof(bs->topic));
    if (rc)
        aiq_err_set(err, AIQ_EINVAL, "kafka.topic_prefix is too long");
    if (!rc)
        rc = store_open(bs, state_dir, err);
    if (!rc)
        rc = follow_topic(bs, err);
    if (rc) {
        aiq_breaker_share_free(bs);
        return rc;
    }
    *out = bs;
    return 0;
}

void aiq_breaker_share_free(aiq_breaker_share_t *bs)
{
    if (!bs)
        return;
    while (bs->entries) {
        entry_t *e = bs->entries;
        bs->entries = e->next;
        free(e);
    }
    aiq_bridge_free(bs->bridge);
    if (bs->q)
        rd_kafka_queue_destroy(bs->q);
    if (bs->rk) {
        rd_kafka_consumer_close(bs->rk);
        rd_kafka_destroy(bs->rk);
    }
    if (bs->env)
        mdb_env_close(bs->env);
    free(bs);
}
