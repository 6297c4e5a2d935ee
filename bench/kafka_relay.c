/* kafka_relay: the physical limit of aiq's Kafka path. Consumes jobs from the four job
 * topics and publishes a tiny result per job, doing no other work, with the worker's
 * librdkafka settings (from common/kafka.c, the worker's own roles) and its at-least-once rule (an
 * offset is stored for auto-commit only after the results of it and of every earlier record of its
 * partition were acked).
 *
 * Follows the peer contract of bench/peers/README.md (PEER_BROKERS, PEER_PREFIX,
 * PEER_GROUP, PEER_MAX_INFLIGHT; prints "peer ready"; drains and exits 0 on SIGTERM), so
 * bench/run.py starts it like any other contender. Single-threaded: both librdkafka
 * queues signal one pipe, and the loop sleeps in poll(2) on it. */
#include "config.h"
#include "kafka.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RELAY_TOPICS         4
#define RELAY_MAX_PARTITIONS 1024 /* per topic; more is refused, not mis-tracked */
#define RELAY_MAX_INFLIGHT   100000
#define RELAY_ID_MAX         128

static const char *const prio_names[RELAY_TOPICS] = {"critical", "high", "normal", "low"};

typedef struct part part_t;

/* One record between "consumed" and "result acked"; lives in its partition's ring. */
typedef struct {
    part_t *owner;
    int64_t offset;
    bool done;
} entry_t;

/* In-flight records of one partition in offset order; the head is the oldest. */
struct part {
    int topic;
    int32_t partition;
    entry_t *ring; /* capacity = max_inflight, allocated on first use */
    int head, count;
};

typedef struct {
    rd_kafka_t *consumer, *producer;
    char topics[RELAY_TOPICS][256];
    char results[256];
    part_t *parts[RELAY_TOPICS]; /* RELAY_MAX_PARTITIONS each, lazily allocated */
    int max_inflight, inflight;
    uint64_t relayed;
    bool ready_printed, failed;
} relay_t;

static volatile sig_atomic_t stop_requested;

static void on_sigterm(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int env_str(const char *name, const char **out)
{
    *out = getenv(name);
    if (!*out || !**out) {
        fprintf(stderr, "kafka_relay: %s is not set (see bench/peers/README.md)\n", name);
        return -1;
    }
    return 0;
}

/* The worker's own client settings for role: the relay measures the same Kafka path. */
static rd_kafka_conf_t *worker_conf(aiq_kafka_role_t role, const char *brokers, const char *group)
{
    aiq_config_t cfg;
    aiq_err_t err = {0};
    rd_kafka_conf_t *conf = NULL;
    aiq_kafka_params_t params = {.brokers = brokers, .cfg = &cfg};
    if (aiq_config_init(&cfg) || aiq_config_set(&cfg, "kafka.brokers", brokers, &err) ||
        aiq_config_set(&cfg, "kafka.group_id", group, &err) ||
        aiq_config_set(&cfg, "worker.id", "kafka-relay", &err) ||
        aiq_kafka_conf_new(&conf, role, &params, &err))
        fprintf(stderr, "kafka_relay: %s\n", err.msg);
    aiq_config_free(&cfg);
    return conf;
}

static int topic_index(const relay_t *r, const char *topic)
{
    for (int i = 0; i < RELAY_TOPICS; i++) {
        if (strcmp(r->topics[i], topic) == 0)
            return i;
    }
    return -1;
}

static part_t *part_get(relay_t *r, int topic, int32_t partition)
{
    if (partition < 0 || partition >= RELAY_MAX_PARTITIONS)
        return NULL;
    if (!r->parts[topic] && !(r->parts[topic] = calloc(RELAY_MAX_PARTITIONS, sizeof(part_t))))
        return NULL;
    part_t *p = &r->parts[topic][partition];
    if (!p->ring) {
        if (!(p->ring = calloc((size_t)r->max_inflight, sizeof(entry_t))))
            return NULL;
        p->topic = topic;
        p->partition = partition;
    }
    return p;
}

/* Stores the offset after the longest acked prefix of the partition's in-flight records;
 * librdkafka's auto-commit (every 50 ms, as in the worker) commits what is stored. */
static void part_advance(relay_t *r, part_t *p)
{
    int64_t next = -1;
    while (p->count > 0 && p->ring[p->head].done) {
        next = p->ring[p->head].offset + 1;
        p->head = (p->head + 1) % r->max_inflight;
        p->count--;
        r->inflight--;
    }
    if (next < 0)
        return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, r->topics[p->topic], p->partition)->offset = next;
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(r->consumer, l);
    /* A partition revoked meanwhile cannot store; its records are redone elsewhere. */
    if (e && e != RD_KAFKA_RESP_ERR__STATE)
        fprintf(stderr, "kafka_relay: offsets_store: %s\n", rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
}

/* Producer thread of control = the loop thread (rd_kafka_poll on the producer). */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    relay_t *r = opaque;
    entry_t *e = m->_private;
    if (m->err) {
        /* No retry here: at-least-once means the record stays uncommitted; stop. */
        fprintf(stderr, "kafka_relay: delivery failed: %s\n", rd_kafka_err2str(m->err));
        r->failed = true;
        stop_requested = 1;
        return;
    }
    e->done = true;
    r->relayed++;
    part_advance(r, e->owner);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    relay_t *r = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_error_t *e = rd_kafka_incremental_assign(rk, parts);
        if (e) {
            fprintf(stderr, "kafka_relay: assign: %s\n", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
        if (parts->cnt > 0 && !r->ready_printed) {
            printf("peer ready\n");
            fflush(stdout);
            r->ready_printed = true;
        }
        return;
    }
    /* Revoked: let every result in flight be acked (and its offset stored) first, so the
     * final commit covers it. */
    rd_kafka_flush(r->producer, 30000);
    rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
    if (e) {
        fprintf(stderr, "kafka_relay: unassign: %s\n", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
}

static int relay_one(relay_t *r, rd_kafka_message_t *m)
{
    int t = topic_index(r, rd_kafka_topic_name(m->rkt));
    part_t *p = t >= 0 ? part_get(r, t, m->partition) : NULL;
    if (!p) {
        fprintf(stderr, "kafka_relay: cannot track %s[%" PRId32 "]\n", rd_kafka_topic_name(m->rkt),
                m->partition);
        return -1;
    }
    char id[RELAY_ID_MAX + 1] = "";
    size_t n = m->key_len <= RELAY_ID_MAX ? m->key_len : 0;
    memcpy(id, m->key ? m->key : "", m->key ? n : 0);
    id[m->key ? n : 0] = '\0';
    /* Job ids are [A-Za-z0-9._:-]; anything else would need JSON escaping, so drop it. */
    if (strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") !=
        strlen(id))
        id[0] = '\0';
    char value[RELAY_ID_MAX + 96];
    int len = snprintf(value, sizeof(value),
                       "{\"job_id\":\"%s\",\"status\":\"succeeded\",\"output\":null,"
                       "\"timings\":{\"total_ms\":0,\"provider_ms\":0}}",
                       id);
    entry_t *e = &p->ring[(p->head + p->count) % r->max_inflight];
    *e = (entry_t){.owner = p, .offset = m->offset, .done = false};
    p->count++;
    r->inflight++;
    rd_kafka_resp_err_t err = rd_kafka_producev(
        r->producer, RD_KAFKA_V_TOPIC(r->results), RD_KAFKA_V_KEY(id, strlen(id)),
        RD_KAFKA_V_VALUE(value, (size_t)len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE(e), RD_KAFKA_V_END);
    if (err) {
        fprintf(stderr, "kafka_relay: produce: %s\n", rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

static rd_kafka_t *make_consumer(relay_t *r, const char *brokers, const char *group)
{
    char errstr[512];
    rd_kafka_conf_t *conf = worker_conf(AIQ_KAFKA_WORKER_CONSUMER, brokers, group);
    if (!conf)
        return NULL;
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_opaque(conf, r);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "kafka_relay: consumer: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

static rd_kafka_t *make_producer(relay_t *r, const char *brokers)
{
    char errstr[512];
    rd_kafka_conf_t *conf = worker_conf(AIQ_KAFKA_WORKER_PRODUCER, brokers, "kafka-relay");
    if (!conf)
        return NULL;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, r);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "kafka_relay: producer: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

static int subscribe(relay_t *r)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(RELAY_TOPICS);
    for (int i = 0; i < RELAY_TOPICS; i++)
        rd_kafka_topic_partition_list_add(l, r->topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(r->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e)
        fprintf(stderr, "kafka_relay: subscribe: %s\n", rd_kafka_err2str(e));
    return e ? -1 : 0;
}

static void drain_pipe(int fd)
{
    char buf[64];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

/* The loop: serve acks, take records while there is room, sleep on the pipe otherwise. */
static int relay_loop(relay_t *r, int wake_fd)
{
    bool consuming = true;
    while (consuming || r->inflight > 0) {
        if (stop_requested && consuming) {
            consuming = false;
            if (r->failed)
                return -1;
        }
        int work = rd_kafka_poll(r->producer, 0);
        while (consuming && r->inflight < r->max_inflight) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(r->consumer, 0);
            if (!m)
                break;
            work++;
            int rc = m->err ? 0 : relay_one(r, m);
            if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                fprintf(stderr, "kafka_relay: consume: %s\n", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            if (rc)
                return -1;
        }
        if (work == 0) {
            struct pollfd pfd = {.fd = wake_fd, .events = POLLIN};
            if (poll(&pfd, 1, 100) > 0)
                drain_pipe(wake_fd);
        }
        if (r->failed)
            return -1;
    }
    return 0;
}

static int relay_init(relay_t *r)
{
    const char *brokers, *prefix, *group, *inflight;
    if (env_str("PEER_BROKERS", &brokers) || env_str("PEER_PREFIX", &prefix) ||
        env_str("PEER_GROUP", &group) || env_str("PEER_MAX_INFLIGHT", &inflight))
        return -1;
    char *end;
    long c = strtol(inflight, &end, 10);
    if (*end || c < 1 || c > RELAY_MAX_INFLIGHT) {
        fprintf(stderr, "kafka_relay: PEER_MAX_INFLIGHT must be 1..%d, not '%s'\n",
                RELAY_MAX_INFLIGHT, inflight);
        return -1;
    }
    r->max_inflight = (int)c;
    for (int i = 0; i < RELAY_TOPICS; i++)
        snprintf(r->topics[i], sizeof(r->topics[i]), "%sjobs.%s", prefix, prio_names[i]);
    snprintf(r->results, sizeof(r->results), "%sresults", prefix);
    if (!(r->producer = make_producer(r, brokers)) ||
        !(r->consumer = make_consumer(r, brokers, group)))
        return -1;
    rd_kafka_poll_set_consumer(r->consumer);
    return subscribe(r);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        fprintf(argc == 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr,
                "usage: kafka_relay (configured by environment, see bench/peers/README.md)\n"
                "Relays every job of <PEER_PREFIX>jobs.* to <PEER_PREFIX>results with no "
                "work,\nat most PEER_MAX_INFLIGHT unacked; SIGTERM drains and exits 0.\n");
        return argc == 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
    }
    signal(SIGTERM, on_sigterm);
    signal(SIGINT, on_sigterm);
    relay_t r = {0};
    int fds[2] = {-1, -1}, rc = 1;
    if (pipe(fds) || fcntl(fds[0], F_SETFL, O_NONBLOCK) || fcntl(fds[1], F_SETFL, O_NONBLOCK)) {
        fprintf(stderr, "kafka_relay: pipe: %s\n", strerror(errno));
        goto out;
    }
    if (relay_init(&r))
        goto out;
    rd_kafka_queue_t *cq = rd_kafka_queue_get_consumer(r.consumer);
    rd_kafka_queue_t *pq = rd_kafka_queue_get_main(r.producer);
    rd_kafka_queue_io_event_enable(cq, fds[1], "1", 1);
    rd_kafka_queue_io_event_enable(pq, fds[1], "1", 1);
    rc = relay_loop(&r, fds[0]) ? 1 : 0;
    rd_kafka_queue_io_event_enable(cq, -1, NULL, 0);
    rd_kafka_queue_io_event_enable(pq, -1, NULL, 0);
    rd_kafka_queue_destroy(cq);
    rd_kafka_queue_destroy(pq);
    fprintf(stderr, "kafka_relay: %" PRIu64 " results relayed\n", r.relayed);
out:
    if (r.consumer) {
        rd_kafka_consumer_close(r.consumer); /* commits the stored offsets */
        rd_kafka_destroy(r.consumer);
    }
    if (r.producer) {
        rd_kafka_flush(r.producer, 10000);
        rd_kafka_destroy(r.producer);
    }
    for (int t = 0; t < RELAY_TOPICS; t++) {
        for (int i = 0; r.parts[t] && i < RELAY_MAX_PARTITIONS; i++)
            free(r.parts[t][i].ring);
        free(r.parts[t]);
    }
    if (fds[0] >= 0) {
        close(fds[0]);
        close(fds[1]);
    }
    return rc;
}
