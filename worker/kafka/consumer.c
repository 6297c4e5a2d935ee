#include "consumer.h"
#include "bridge.h"
#include "kafka.h"
#include "offsets.h"
#include "timeutil.h"
#include "topics.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define RECORDS_PER_TURN 128
#define TICK_MS          100
#define MAX_PARTITIONS   4096
/* Kafka's UNRELEASED_INSTANCE_ID (KIP-848 static membership); librdkafka 2.0's header, which
 * predates the consumer protocol, does not name it. */
#define ERR_UNRELEASED_INSTANCE_ID 111
/* While Kafka is believed down, a metadata request (on a libuv pool thread: it blocks) asks
 * whether a broker answers again, one at a time, each waiting at most this long. */
#define PROBE_TIMEOUT_MS 1000

typedef struct part {
    aiq_offsets_t *tracker; /* NULL when not assigned */
    uint32_t generation;
    size_t dropped; /* tracked records given up unstarted (revoke): never finish */
    int revoking;   /* revoked, waiting for its in-flight jobs before hand-over */
    /* Every record below this offset was answered by this worker (or committed before it
     * started). Kept when the partition is lost or revoked: if the group hands it back
     * before the commit went through, those records are not run a second time. */
    int64_t answered_below;
    uint64_t skipped; /* records skipped that way in the current assignment */
} part_t;

struct aiq_consumer {
    aiq_log_t *log;
    aiq_kafka_ctx_t kctx; /* the handle's opaque: log context, owner = this */
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    uv_loop_t *loop;
    aiq_bridge_t *bridge; /* NULL until started */
    uv_timer_t revoke_timer;
    uv_timer_t commit_timer; /* manual_commit only */
    int manual_commit;       /* aiq_kafka_worker_commits(): the worker commits, not librdkafka */
    int64_t commit_interval_ms;
    char protocol[16]; /* kafka.group_protocol */
    int fatal_reported;
    int open_handles;                          /* uv handles to close before the struct goes */
    rd_kafka_topic_partition_list_t *revoking; /* handed over once their jobs finished */
    int64_t revoke_timeout_ms;
    int closing;
    aiq_consumer_hooks_t hooks;
    char topics[AIQ_PRIO_COUNT][AIQ_TOPIC_MAX];
    char prefix[AIQ_TOPIC_MAX];
    part_t *parts[AIQ_PRIO_COUNT]; /* indexed by partition id */
    int32_t nparts[AIQ_PRIO_COUNT];
    int fetching[AIQ_PRIO_COUNT];
    int joined; /* a member now: assigned (possibly nothing) and not lost since */
    int ever_joined;
    int assigned;
    uint64_t rebalances; /* assign and revoke callbacks served */
    /* Kafka reachability. librdkafka reports all brokers going down (an error event) but
     * no event says one is back: a probe asks. */
    int64_t down_since_ms; /* 0: reachable as far as we know */
    struct probe *probe;   /* the probe in flight, NULL when none */
    char down_why[256];
    int lost_count; /* partitions in the last lost callback */
};

static part_t *part_get(aiq_consumer_t *c, int prio, int32_t partition, int create)
{
    if (prio < 0 || prio >= AIQ_PRIO_COUNT || partition < 0 || partition >= MAX_PARTITIONS)
        return NULL;
    if (partition >= c->nparts[prio]) {
        if (!create)
            return NULL;
        int32_t n = partition + 1;
        part_t *np = realloc(c->parts[prio], (size_t)n * sizeof(*np));
        if (!np)
            return NULL;
        memset(np + c->nparts[prio], 0, (size_t)(n - c->nparts[prio]) * sizeof(*np));
        c->parts[prio] = np;
        c->nparts[prio] = n;
    }
    return &c->parts[prio][partition];
}

static void log_partitions(aiq_consumer_t *c, const char *what,
                           const rd_kafka_topic_partition_list_t *parts)
{
    char buf[2048];
    size_t pos = 0;
    for (int i = 0; i < parts->cnt && pos < sizeof(buf) - 64; i++)
        pos += (size_t)snprintf(buf + pos, sizeof(buf) - pos, "%s%s[%d]", i ? " " : "",
                                parts->elems[i].topic, parts->elems[i].partition);
    buf[pos < sizeof(buf) ? pos : sizeof(buf) - 1] = '\0';
    aiq_log_info(c->log, "%s %d partition(s): %s", what, parts->cnt, parts->cnt ? buf : "-");
}

static void track_assigned(aiq_consumer_t *c, const rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; i < parts->cnt; i++) {
        int prio = aiq_topic_priority(c->prefix, parts->elems[i].topic);
        part_t *p = part_get(c, prio, parts->elems[i].partition, 1);
        if (!p)
            continue;
        aiq_offsets_free(p->tracker);
        p->tracker = aiq_offsets_new();
        p->generation++;
        p->skipped = 0;
    }
}

/* Forgets revoked partitions: late finishes of their records are ignored from now on. */
static void untrack(aiq_consumer_t *c, const rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; i < parts->cnt; i++) {
        int prio = aiq_topic_priority(c->prefix, parts->elems[i].topic);
        part_t *p = part_get(c, prio, parts->elems[i].partition, 0);
        if (!p)
            continue;
        aiq_offsets_free(p->tracker);
        p->tracker = NULL;
        p->generation++;
        p->dropped = 0;
        p->revoking = 0;
    }
}

/* Jobs of partition p that started and have not finished. */
static size_t part_inflight(const part_t *p)
{
    size_t pending = p->tracker ? aiq_offsets_pending(p->tracker) : 0;
    return pending > p->dropped ? pending - p->dropped : 0;
}

static void unassign(aiq_consumer_t *c, rd_kafka_topic_partition_list_t *parts)
{
    if (strcmp(rd_kafka_rebalance_protocol(c->rk), "COOPERATIVE") == 0) {
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(c->rk, parts);
        if (e) {
            aiq_log_error(c->log, "incremental unassign: %s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
    } else {
        rd_kafka_assign(c->rk, NULL);
    }
}

/* Commits what the revoked partitions finished, then lets the group move them: the new
 * owner starts at the lowest record we did not finish, so nothing we answered is redone. */
static void finish_revoke(aiq_consumer_t *c)
{
    rd_kafka_topic_partition_list_t *parts = c->revoking;
    c->revoking = NULL;
    uv_timer_stop(&c->revoke_timer);
    size_t left = 0;
    for (int i = 0; i < parts->cnt; i++) {
        part_t *p = part_get(c, aiq_topic_priority(c->prefix, parts->elems[i].topic),
                             parts->elems[i].partition, 0);
        left += p ? part_inflight(p) : 0;
    }
    if (left)
        aiq_log_warn(c->log,
                     "revoke timeout: %zu job(s) still running on revoked partitions; "
                     "their new owner will run them again",
                     left);
    /* Synchronous on purpose: the hand-over must not overtake the commit. */
    rd_kafka_resp_err_t e = rd_kafka_commit(c->rk, NULL, 0);
    if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
        aiq_log_warn(c->log, "commit before hand-over: %s", rd_kafka_err2str(e));
    untrack(c, parts);
    unassign(c, parts);
    c->assigned -= parts->cnt;
    log_partitions(c, "handed over", parts);
    rd_kafka_topic_partition_list_destroy(parts);
}

static void check_revoke_done(aiq_consumer_t *c)
{
    if (!c->revoking)
        return;
    for (int i = 0; i < c->revoking->cnt; i++) {
        part_t *p = part_get(c, aiq_topic_priority(c->prefix, c->revoking->elems[i].topic),
                             c->revoking->elems[i].partition, 0);
        if (p && part_inflight(p) > 0)
            return;
    }
    finish_revoke(c);
}

static void on_revoke_timeout(uv_timer_t *t)
{
    aiq_consumer_t *c = t->data;
    if (c->revoking)
        finish_revoke(c);
}

/* Revoked (not lost) partitions: stop starting their jobs now, let running ones finish
 * within revoke_timeout_ms, then commit and hand over. */
static void begin_revoke(aiq_consumer_t *c, const rd_kafka_topic_partition_list_t *parts)
{
    if (!c->revoking)
        c->revoking = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++) {
        int prio = aiq_topic_priority(c->prefix, parts->elems[i].topic);
        part_t *p = part_get(c, prio, parts->elems[i].partition, 0);
        rd_kafka_topic_partition_list_add(c->revoking, parts->elems[i].topic,
                                          parts->elems[i].partition);
        if (!p)
            continue;
        p->revoking = 1;
        if (c->hooks.on_revoked)
            c->hooks.on_revoked(c->hooks.opaque, prio, parts->elems[i].partition);
    }
    if (c->closing || c->revoke_timeout_ms == 0) {
        finish_revoke(c);
        return;
    }
    size_t running = 0;
    for (int i = 0; i < c->revoking->cnt; i++) {
        part_t *p = part_get(c, aiq_topic_priority(c->prefix, c->revoking->elems[i].topic),
                             c->revoking->elems[i].partition, 0);
        running += p ? part_inflight(p) : 0;
    }
    if (running)
        aiq_log_info(c->log,
                     "waiting for %zu running job(s) of revoked partitions before "
                     "handing them over",
                     running);
    uv_timer_start(&c->revoke_timer, on_revoke_timeout, (uint64_t)c->revoke_timeout_ms, 0);
    check_revoke_done(c);
}

/* Newly assigned partitions of a paused priority start paused too. */
static void store_offset(aiq_consumer_t *c, part_t *p, int prio, int32_t partition, int64_t next);

static void apply_pause(aiq_consumer_t *c, rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *paused = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++) {
        int prio = aiq_topic_priority(c->prefix, parts->elems[i].topic);
        if (prio >= 0 && !c->fetching[prio])
            rd_kafka_topic_partition_list_add(paused, parts->elems[i].topic,
                                              parts->elems[i].partition);
    }
    if (paused->cnt)
        rd_kafka_pause_partitions(c->rk, paused);
    rd_kafka_topic_partition_list_destroy(paused);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    aiq_consumer_t *c = aiq_kafka_owner(opaque);
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    c->rebalances++;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        c->joined = c->ever_joined = 1;
        c->down_since_ms = 0; /* the coordinator just answered */
        c->assigned += parts->cnt;
        log_partitions(c, "assigned", parts);
        track_assigned(c, parts);
        rd_kafka_error_t *e = NULL;
        if (cooperative)
            e = rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
        if (e) {
            aiq_log_error(c->log, "incremental assign: %s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
        apply_pause(c, parts);
        return;
    }
    int lost = err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS || rd_kafka_assignment_lost(rk);
    log_partitions(c, lost ? "lost" : "revoked", parts);
    if (!lost) {
        begin_revoke(c, parts);
        return;
    }
    /* Lost: another member may own them already; committing now could move its offsets.
     * This member is out of the group until its next assignment. */
    c->joined = 0;
    c->lost_count = parts->cnt;
    for (int i = 0; i < parts->cnt; i++) {
        int prio = aiq_topic_priority(c->prefix, parts->elems[i].topic);
        if (c->hooks.on_revoked && prio >= 0)
            c->hooks.on_revoked(c->hooks.opaque, prio, parts->elems[i].partition);
    }
    untrack(c, parts);
    unassign(c, parts);
    c->assigned -= parts->cnt;
}

static void deliver(aiq_consumer_t *c, rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    int prio = aiq_topic_priority(c->prefix, topic);
    part_t *p = part_get(c, prio, m->partition, 0);
    if (!p || !p->tracker || p->revoking ||
        aiq_offsets_track_at(p->tracker, m->offset, aiq_mono_ms())) {
        /* A record from a partition we no longer own (or a replay below what we track):
         * dropping it is safe, the partition's owner processes it. */
        aiq_log_debug(c->log, "dropping %s[%d]@%lld: not tracked", topic, m->partition,
                      (long long)m->offset);
        rd_kafka_message_destroy(m);
        return;
    }
    if (m->offset < p->answered_below) {
        if (p->skipped++ == 0)
            aiq_log_info(c->log,
                         "%s[%d] came back from offset %lld: skipping records below "
                         "%lld, which this worker already answered",
                         topic, m->partition, (long long)m->offset, (long long)p->answered_below);
        int64_t next;
        if (aiq_offsets_done(p->tracker, m->offset, &next) == 0 && next != AIQ_OFFSET_NONE)
            store_offset(c, p, prio, m->partition, next);
        rd_kafka_message_destroy(m);
        return;
    }
    c->down_since_ms = 0; /* a fetch just answered */
    aiq_consumer_ref_t ref = {prio, m->partition, m->offset, p->generation};
    c->hooks.on_record(c->hooks.opaque, m, &ref);
}

/* librdkafka's client-wide errors, served inside the consumer poll (loop thread). Without
 * this callback librdkafka would log them itself; they are logged the same way here. */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    aiq_consumer_t *c = aiq_kafka_owner(opaque);
    aiq_logc(c->log, AIQ_LOG_ERROR, "ERROR", "librdkafka ERROR: %s: %s",
             rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN && !c->down_since_ms) {
        c->down_since_ms = aiq_mono_ms();
        snprintf(c->down_why, sizeof(c->down_why), "%s", reason);
    }
}

typedef struct probe {
    uv_work_t req;
    aiq_consumer_t *c; /* NULL once the consumer closed: the probe only frees itself */
    rd_kafka_t *rk;
    rd_kafka_resp_err_t err;
    atomic_int done; /* the pool thread left librdkafka */
} probe_t;

/* Pool thread: rd_kafka_metadata is thread-safe and blocks up to PROBE_TIMEOUT_MS. */
static void probe_work(uv_work_t *req)
{
    probe_t *p = req->data;
    const struct rd_kafka_metadata *md = NULL;
    p->err = rd_kafka_metadata(p->rk, 0, NULL, &md, PROBE_TIMEOUT_MS);
    if (md)
        rd_kafka_metadata_destroy(md);
    atomic_store(&p->done, 1);
}

static void probe_after(uv_work_t *req, int status)
{
    (void)status;
    probe_t *p = req->data;
    aiq_consumer_t *c = p->c;
    if (c) {
        c->probe = NULL;
        if (p->err == RD_KAFKA_RESP_ERR_NO_ERROR && c->down_since_ms) {
            aiq_log_info(c->log, "Kafka reachable again after %lld ms",
                         (long long)(aiq_mono_ms() - c->down_since_ms));
            c->down_since_ms = 0;
        }
    }
    free(p);
}

static void probe_send(aiq_consumer_t *c)
{
    probe_t *p = calloc(1, sizeof(*p));
    if (!p)
        return;
    p->c = c;
    p->rk = c->rk;
    p->req.data = p;
    if (uv_queue_work(c->loop, &p->req, probe_work, probe_after)) {
        free(p);
        return;
    }
    c->probe = p;
}

/* librdkafka stops consuming after a fatal error: tell the owner once, with a hint for the
 * one a restart under KIP-848 runs into. */
static void report_fatal(aiq_consumer_t *c)
{
    char why[512], msg[900];
    rd_kafka_resp_err_t e = rd_kafka_fatal_error(c->rk, why, sizeof(why));
    if (c->fatal_reported)
        return;
    c->fatal_reported = 1;
    snprintf(msg, sizeof(msg), "consumer fatal error: %s%s", why,
             (int)e == ERR_UNRELEASED_INSTANCE_ID
                 ? " (kafka.group_protocol=consumer: a process with this kafka.group_instance_id "
                   "died without leaving; the broker frees the id after "
                   "group.consumer.session.timeout.ms, so restart after that)"
                 : "");
    aiq_log_error(c->log, "%s", msg);
    if (c->hooks.on_fatal)
        c->hooks.on_fatal(c->hooks.opaque, msg);
}

static void consume_error(aiq_consumer_t *c, rd_kafka_message_t *m)
{
    if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
        report_fatal(c);
        rd_kafka_message_destroy(m);
        return;
    }
    if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
        aiq_log_warn(c->log, "consumer: %s%s%s", m->rkt ? rd_kafka_topic_name(m->rkt) : "",
                     m->rkt ? ": " : "", rd_kafka_message_errstr(m));
    rd_kafka_message_destroy(m);
}

/* Serves one record or error of the consumer queue (and, inside the poll, rebalances);
 * the bridge calls it at most RECORDS_PER_TURN times per loop turn. */
static int serve_one(void *opaque)
{
    aiq_consumer_t *c = opaque;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 0);
    if (!m)
        return 0;
    if (m->err)
        consume_error(c, m);
    else
        deliver(c, m);
    return 1;
}

/* Async commits of the manual timer: a failure is retried by the next tick, so it is only
 * worth a debug line (a rebalance in flight answers REBALANCE_IN_PROGRESS for a moment). */
static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    (void)rk;
    (void)offsets;
    aiq_consumer_t *c = aiq_kafka_owner(opaque);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        aiq_log_debug(c->log, "commit: %s (retried next tick)", rd_kafka_err2str(err));
}

static void on_commit_tick(uv_timer_t *t)
{
    aiq_consumer_t *c = t->data;
    if (c->assigned > 0 && !c->fatal_reported)
        rd_kafka_commit(c->rk, NULL, 1);
}

int aiq_consumer_new(aiq_consumer_t **out, uv_loop_t *loop, const aiq_config_t *cfg, aiq_log_t *log,
                     const aiq_consumer_hooks_t *hooks, aiq_err_t *err)
{
    aiq_consumer_t *c = calloc(1, sizeof(*c));
    if (!c)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    c->loop = loop;
    c->log = log;
    c->hooks = *hooks;
    for (int p = 0; p < AIQ_PRIO_COUNT; p++)
        c->fetching[p] = 1;
    c->revoke_timeout_ms = cfg->revoke_timeout_ms;
    c->commit_interval_ms = cfg->commit_interval_ms;
    c->manual_commit = aiq_kafka_worker_commits(0);
    snprintf(c->protocol, sizeof(c->protocol), "%s", cfg->group_protocol);
    snprintf(c->prefix, sizeof(c->prefix), "%s", cfg->topic_prefix);
    for (int p = 0; p < AIQ_PRIO_COUNT; p++) {
        if (aiq_topic_jobs(cfg->topic_prefix, (aiq_priority_t)p, c->topics[p], AIQ_TOPIC_MAX)) {
            free(c);
            return aiq_err_set(err, AIQ_EINVAL, "kafka.topic_prefix is too long");
        }
    }
    c->kctx = (aiq_kafka_ctx_t){.log = log, .owner = c};
    aiq_kafka_params_t params = {.brokers = cfg->brokers, .cfg = cfg, .ctx = &c->kctx};
    rd_kafka_conf_t *conf;
    int rc = aiq_kafka_conf_new(&conf, AIQ_KAFKA_WORKER_CONSUMER, &params, err);
    if (rc) {
        free(c);
        return rc;
    }
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    if (c->manual_commit)
        rd_kafka_conf_set_offset_commit_cb(conf, on_commit);
    rd_kafka_conf_set_error_cb(conf, on_error);
    char errstr[512];
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!c->rk) {
        rd_kafka_conf_destroy(conf);
        free(c);
        return aiq_err_set(err, AIQ_EKAFKA, "cannot create consumer: %s", errstr);
    }
    rd_kafka_poll_set_consumer(c->rk);
    c->q = rd_kafka_queue_get_consumer(c->rk);
    *out = c;
    return 0;
}

int aiq_consumer_start(aiq_consumer_t *c, aiq_err_t *err)
{
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(AIQ_PRIO_COUNT);
    for (int p = 0; p < AIQ_PRIO_COUNT; p++)
        rd_kafka_topic_partition_list_add(topics, c->topics[p], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(c->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e)
        return aiq_err_set(err, AIQ_EKAFKA, "subscribe: %s", rd_kafka_err2str(e));
    /* The fd only signals a queue going non-empty; the tick catches anything left behind
     * (records that arrived while a serve pass was in progress) and keeps the group alive
     * when no fd event comes. */
    aiq_bridge_conf_t bc = {.queue = c->q,
                            .budget = RECORDS_PER_TURN,
                            .tick_ms = TICK_MS,
                            .serve = serve_one,
                            .opaque = c};
    int rc = aiq_bridge_new(&c->bridge, c->loop, &bc, err);
    if (rc)
        return rc;
    uv_timer_init(c->loop, &c->revoke_timer);
    uv_timer_init(c->loop, &c->commit_timer);
    c->revoke_timer.data = c->commit_timer.data = c;
    c->open_handles = 2;
    if (c->manual_commit)
        uv_timer_start(&c->commit_timer, on_commit_tick, (uint64_t)c->commit_interval_ms,
                       (uint64_t)c->commit_interval_ms);
    aiq_log_info(c->log, "subscribed to %s, %s, %s, %s (group protocol %s, %s)", c->topics[0],
                 c->topics[1], c->topics[2], c->topics[3], c->protocol,
                 c->manual_commit ? "the worker commits, also during rebalances"
                                  : "librdkafka auto-commits between rebalances");
    return 0;
}

static void store_offset(aiq_consumer_t *c, part_t *p, int prio, int32_t partition, int64_t next)
{
    if (next > p->answered_below)
        p->answered_below = next;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, c->topics[prio], partition)->offset = next;
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(c->rk, l);
    if (e)
        aiq_log_warn(c->log, "store offset %s[%d]@%lld: %s", c->topics[prio], partition,
                     (long long)next, rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
}

void aiq_consumer_done(aiq_consumer_t *c, const aiq_consumer_ref_t *ref)
{
    part_t *p = part_get(c, ref->prio, ref->partition, 0);
    if (!p || !p->tracker || p->generation != ref->generation)
        return;
    int64_t next;
    if (aiq_offsets_done(p->tracker, ref->offset, &next) == 0 && next != AIQ_OFFSET_NONE)
        store_offset(c, p, ref->prio, ref->partition, next);
    if (p->revoking)
        check_revoke_done(c);
}

void aiq_consumer_drop(aiq_consumer_t *c, const aiq_consumer_ref_t *ref)
{
    part_t *p = part_get(c, ref->prio, ref->partition, 0);
    if (!p || !p->tracker || p->generation != ref->generation)
        return;
    p->dropped++;
}

void aiq_consumer_set_fetching(aiq_consumer_t *c, int prio, int want)
{
    int lo = prio < 0 ? 0 : prio, hi = prio < 0 ? AIQ_PRIO_COUNT - 1 : prio, changed = 0;
    for (int p = lo; p <= hi; p++) {
        changed |= c->fetching[p] != want;
        c->fetching[p] = want;
    }
    rd_kafka_topic_partition_list_t *all = NULL;
    if (!changed || rd_kafka_assignment(c->rk, &all) || !all)
        return;
    rd_kafka_topic_partition_list_t *sel = rd_kafka_topic_partition_list_new(all->cnt);
    for (int i = 0; i < all->cnt; i++) {
        int tp = aiq_topic_priority(c->prefix, all->elems[i].topic);
        if (tp >= lo && tp <= hi)
            rd_kafka_topic_partition_list_add(sel, all->elems[i].topic, all->elems[i].partition);
    }
    /* Pausing drops what librdkafka prefetched for these partitions; it is fetched again
     * from the consumed position on resume, so nothing is skipped. */
    if (want)
        rd_kafka_resume_partitions(c->rk, sel);
    else
        rd_kafka_pause_partitions(c->rk, sel);
    aiq_log_debug(c->log, "%s fetching on %d partition(s) of %s", want ? "resumed" : "paused",
                  sel->cnt, prio < 0 ? "every priority" : aiq_priority_name((aiq_priority_t)prio));
    rd_kafka_topic_partition_list_destroy(sel);
    rd_kafka_topic_partition_list_destroy(all);
}

int aiq_consumer_joined(const aiq_consumer_t *c)
{
    return c->joined;
}

int aiq_consumer_unready(aiq_consumer_t *c, char *why, size_t cap)
{
    if (c->down_since_ms && !c->probe)
        probe_send(c);
    if (c->down_since_ms) {
        snprintf(why, cap, "Kafka unreachable for %lld ms: %s",
                 (long long)(aiq_mono_ms() - c->down_since_ms), c->down_why);
        return 1;
    }
    if (!c->ever_joined) {
        snprintf(why, cap, "not yet joined the consumer group");
        return 1;
    }
    if (!c->joined) {
        snprintf(why, cap, "lost its %d partition(s); rejoining the consumer group", c->lost_count);
        return 1;
    }
    return 0;
}

int aiq_consumer_assigned(const aiq_consumer_t *c)
{
    return c->assigned;
}

size_t aiq_consumer_pending(const aiq_consumer_t *c)
{
    size_t n = 0;
    for (int p = 0; p < AIQ_PRIO_COUNT; p++)
        for (int32_t i = 0; i < c->nparts[p]; i++)
            if (c->parts[p][i].tracker)
                n += aiq_offsets_pending(c->parts[p][i].tracker);
    return n;
}

static void on_closed(uv_handle_t *h)
{
    aiq_consumer_t *c = h->data;
    if (--c->open_handles == 0)
        free(c);
}

void aiq_consumer_close(aiq_consumer_t *c)
{
    if (!c)
        return;
    /* The final revoke inside close runs without the loop: hand over at once. */
    c->closing = 1;
    if (c->revoking)
        finish_revoke(c);
    /* Before the queue goes: librdkafka must stop writing to the bridge's pipe. */
    aiq_bridge_free(c->bridge);
    rd_kafka_resp_err_t e = rd_kafka_consumer_close(c->rk);
    if (e)
        aiq_log_warn(c->log, "consumer close: %s", rd_kafka_err2str(e));
    rd_kafka_queue_destroy(c->q);
    if (c->probe) {
        /* The handle must outlive the probe's call: wait for it (bounded by its timeout). */
        while (!atomic_load(&c->probe->done))
            uv_sleep(10);
        c->probe->c = NULL;
    }
    rd_kafka_destroy(c->rk);
    for (int p = 0; p < AIQ_PRIO_COUNT; p++) {
        for (int32_t i = 0; i < c->nparts[p]; i++)
            aiq_offsets_free(c->parts[p][i].tracker);
        free(c->parts[p]);
    }
    if (c->bridge) {
        uv_close((uv_handle_t *)&c->revoke_timer, on_closed);
        uv_close((uv_handle_t *)&c->commit_timer, on_closed);
    } else {
        free(c);
    }
}

void aiq_consumer_lag(aiq_consumer_t *c, aiq_consumer_lag_t *out)
{
    memset(out, 0, sizeof(*out));
    out->rebalances = c->rebalances;
    int64_t now = aiq_mono_ms();
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(c->assigned + 1);
    for (int q = 0; q < AIQ_PRIO_COUNT; q++)
        for (int32_t i = 0; i < c->nparts[q]; i++) {
            part_t *p = &c->parts[q][i];
            if (!p->tracker)
                continue;
            rd_kafka_topic_partition_list_add(list, c->topics[q], i);
            int64_t since = aiq_offsets_lowest_since(p->tracker);
            if (since > 0 && out->n_oldest < AIQ_CONSUMER_OLDEST_MAX) {
                out->oldest[out->n_oldest].prio = q;
                out->oldest[out->n_oldest].partition = i;
                out->oldest[out->n_oldest].age_ms = now - since;
                out->n_oldest++;
            }
        }
    /* Both are local: the fetch position, and the end offset the last fetch reported. */
    if (rd_kafka_position(c->rk, list) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int k = 0; k < list->cnt; k++) {
            rd_kafka_topic_partition_t *tp = &list->elems[k];
            int64_t lo, hi;
            int q = aiq_topic_priority(c->prefix, tp->topic);
            if (q < 0 || tp->offset < 0 ||
                rd_kafka_get_watermark_offsets(c->rk, tp->topic, tp->partition, &lo, &hi) || hi < 0)
                continue;
            out->lag[q] += hi > tp->offset ? hi - tp->offset : 0;
        }
    }
    rd_kafka_topic_partition_list_destroy(list);
}
