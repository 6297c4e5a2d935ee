/* aiq-admin: operations on aiq's Kafka side — create and describe the topics, the worker
 * group, the dead letters and the shared breakers. */
#include "admin_breaker.h"
#include "admin_cache.h"
#include "admin_dlq.h"
#include "admin_group.h"
#include "config.h"
#include "topics.h"
#include "kafka.h"
#include "kprops.h"

#include <getopt.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_TIMEOUT_MS 30000
#define N_TOPICS         9 /* four job topics, results, dlq, metrics, breaker, alerts */

typedef struct admin_opts {
    const char *brokers, *prefix, *group;
    const char *breaker_base; /* --cache-path DIR/breakers or --breaker-path; NULL: none */
    char breaker_buf[4096];
    int partitions, replication, yes, json, help;
    aiq_admin_dlq_opts_t dlq;
    const char *dlq_flag; /* the first dlq-only option given, to refuse it elsewhere */
} admin_opts_t;

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: aiq-admin [options] COMMAND\n\n"
            "Commands:\n"
            "  topics create   create <prefix>jobs.{critical,high,normal,low}, <prefix>results,\n"
            "                  <prefix>dlq, <prefix>metrics, <prefix>breaker (compacted) and "
            "<prefix>alerts;\n"
            "                  topics that exist are left as they are\n"
            "  topics list     show aiq's topics with partition counts\n"
            "  topics describe partitions, replication, leader per partition and the configs\n"
            "                  that matter (cleanup.policy, retention.ms, min.insync.replicas)\n"
            "                  of every aiq topic; exit 1 when one is missing\n"
            "  topics delete   delete aiq's topics (needs --yes)\n"
            "  group lag       committed offset, end offset and lag per job partition of\n"
            "                  the worker group, and the total per priority\n"
            "  group describe  state, members and the partitions each owns, lag and owner per\n"
            "                  partition; exit 1 when the group does not exist\n"
            "  dlq list|replay the dead letters; replay sends them back to their job topic\n"
            "                  (filters, --dry-run: see 'aiq-admin dlq --help')\n"
            "  breaker list|show  the shared circuit breakers (one per model): state,\n"
            "                  manual override, since when, and which worker changed it\n"
            "                  (with --cache-path or --breaker-path: and this host's state of\n"
            "                  the prefix, which its workers act on)\n"
            "  breaker open|close|auto MODEL  (= breaker force MODEL open|closed|auto)\n"
            "  breaker force MODEL open|closed|auto\n"
            "                  override MODEL's breaker on every worker (auto lifts it)\n"
            "  cache stats|get|list|invalidate|purge|sweep|warm\n"
            "                  the host's response cache; see 'aiq-admin cache --help'\n\n"
            "Options:\n"
            "  -b, --brokers LIST        bootstrap servers (env AIQ_KAFKA_BROKERS,\n"
            "                            default 127.0.0.1:9092)\n"
            "      --prefix PREFIX       topic prefix (env AIQ_KAFKA_TOPIC_PREFIX, default aiq.)\n"
            "      --partitions N        partitions per topic for create (default 6)\n"
            "      --replication-factor R  (default 1; use 3 in production)\n"
            "      --group ID            consumer group (env AIQ_KAFKA_GROUP_ID,\n"
            "                            default aiq-workers)\n"
            "      --yes                 confirm delete\n"
            "      --json                read commands print one JSON document\n"
            "      --cache-path DIR      breaker show: the workers' cache.path on this host\n"
            "      --breaker-path DIR    breaker show: their breaker.path, when set\n"
            "  -X NAME=VALUE             librdkafka property for every Kafka client (SASL, TLS),\n"
            "                            e.g. -X security.protocol=SASL_SSL; same as env\n"
            "                            AIQ_KAFKA_RDKAFKA_<NAME> ('.' -> '_'), e.g.\n"
            "                            AIQ_KAFKA_RDKAFKA_SASL_PASSWORD (prefer it for secrets)\n"
            "  -h, --help, -V, --version  (COMMAND --help: that command's help)\n\n"
            "Exit codes: 0 done, 1 failure, 2 usage error.\n");
}

static rd_kafka_t *connect_kafka(const admin_opts_t *o, rd_kafka_type_t type, const char *group)
{
    aiq_kafka_params_t params = {.brokers = o->brokers, .group_id = group, .env_props = 1};
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk = NULL;
    aiq_err_t err = {0};
    if (aiq_kafka_conf_new(&conf, AIQ_KAFKA_CLI_ADMIN, &params, &err) ||
        aiq_kafka_connect(&rk, type, conf, AIQ_KPROPS_CONNECT_MS, &err))
        fprintf(stderr, "aiq-admin: %s\n", err.msg);
    return rk;
}

static int topic_names(const admin_opts_t *o, char names[N_TOPICS][AIQ_TOPIC_MAX])
{
    for (int p = 0; p < AIQ_PRIO_COUNT; p++)
        if (aiq_topic_jobs(o->prefix, (aiq_priority_t)p, names[p], AIQ_TOPIC_MAX))
            return -1;
    if (aiq_topic_results(o->prefix, names[4], AIQ_TOPIC_MAX) ||
        aiq_topic_dlq(o->prefix, names[5], AIQ_TOPIC_MAX) ||
        aiq_topic_metrics(o->prefix, names[6], AIQ_TOPIC_MAX) ||
        aiq_topic_breaker(o->prefix, names[7], AIQ_TOPIC_MAX) ||
        aiq_topic_alerts(o->prefix, names[8], AIQ_TOPIC_MAX))
        return -1;
    for (int i = 0; i < N_TOPICS; i++)
        if (!aiq_topic_name_valid(names[i]))
            return -1;
    return 0;
}

static rd_kafka_event_t *admin_wait(rd_kafka_queue_t *q)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, ADMIN_TIMEOUT_MS + 5000);
    if (!ev)
        fprintf(stderr, "aiq-admin: no answer from the broker within %d s\n",
                ADMIN_TIMEOUT_MS / 1000);
    return ev;
}

static int report_topic_results(const rd_kafka_topic_result_t **res, size_t n, const char *verb)
{
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
        const char *name = rd_kafka_topic_result_name(res[i]);
        if (!e)
            printf("%s %s\n", verb, name);
        else if (e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
            printf("exists %s\n", name);
        else if (e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART && strcmp(verb, "deleted") == 0)
            printf("absent %s\n", name);
        else {
            fprintf(stderr, "aiq-admin: %s: %s\n", name,
                    rd_kafka_topic_result_error_string(res[i]));
            failed = 1;
        }
    }
    return failed;
}

/* Returns 1 when every topic has all its partitions with a leader in the metadata. */
static int all_topics_ready(rd_kafka_t *rk, char names[N_TOPICS][AIQ_TOPIC_MAX])
{
    const struct rd_kafka_metadata *md;
    if (rd_kafka_metadata(rk, 1, NULL, &md, 5000))
        return 0;
    int ready = 0;
    for (int i = 0; i < N_TOPICS; i++) {
        for (int t = 0; t < md->topic_cnt; t++) {
            const struct rd_kafka_metadata_topic *mt = &md->topics[t];
            if (strcmp(mt->topic, names[i]) || mt->err || mt->partition_cnt == 0)
                continue;
            /* A leader in the metadata is not yet a leader serving the partition: ask it
             * for the watermarks, as the first producer or consumer will. */
            int led = 1;
            for (int p = 0; p < mt->partition_cnt && led; p++) {
                int64_t lo, hi;
                led = mt->partitions[p].leader >= 0 &&
                      rd_kafka_query_watermark_offsets(rk, names[i], p, &lo, &hi, 2000) ==
                          RD_KAFKA_RESP_ERR_NO_ERROR;
            }
            ready += led;
        }
    }
    rd_kafka_metadata_destroy(md);
    return ready == N_TOPICS;
}

/* "created" should mean "usable": wait until the broker serves every partition. */
static int wait_ready(rd_kafka_t *rk, char names[N_TOPICS][AIQ_TOPIC_MAX])
{
    for (int i = 0; i < ADMIN_TIMEOUT_MS / 250; i++) {
        if (all_topics_ready(rk, names))
            return 0;
        rd_kafka_poll(rk, 250);
    }
    fprintf(stderr,
            "aiq-admin: topics were created but not all partitions have a leader "
            "after %d s\n",
            ADMIN_TIMEOUT_MS / 1000);
    return 1;
}

static int topics_create(const admin_opts_t *o)
{
    char names[N_TOPICS][AIQ_TOPIC_MAX], errstr[512];
    if (topic_names(o, names)) {
        fprintf(stderr, "aiq-admin: --prefix '%s' makes invalid topic names\n", o->prefix);
        return 2;
    }
    rd_kafka_t *rk = connect_kafka(o, RD_KAFKA_PRODUCER, NULL);
    if (!rk)
        return 1;
    rd_kafka_NewTopic_t *nt[N_TOPICS];
    for (int i = 0; i < N_TOPICS; i++) {
        /* Breaker state is tiny and read whole by every worker: one partition, compacted
         * so a new worker reads only the latest state of each breaker. */
        nt[i] = rd_kafka_NewTopic_new(names[i], i == 7 ? 1 : o->partitions, o->replication, errstr,
                                      sizeof(errstr));
        if (i == 7)
            rd_kafka_NewTopic_set_config(nt[i], "cleanup.policy", "compact");
        /* Results and dead letters are the audit trail: keep them a week by default;
         * metrics snapshots a day. */
        if (i == 4 || i == 5)
            rd_kafka_NewTopic_set_config(nt[i], "retention.ms", "604800000");
        if (i == 6)
            rd_kafka_NewTopic_set_config(nt[i], "retention.ms", "86400000");
        if (i == 8)
            rd_kafka_NewTopic_set_config(nt[i], "retention.ms", "604800000");
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *ao = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(ao, ADMIN_TIMEOUT_MS, errstr, sizeof(errstr));
    rd_kafka_CreateTopics(rk, nt, N_TOPICS, ao, q);
    rd_kafka_event_t *ev = admin_wait(q);
    int rc = 1;
    if (ev && rd_kafka_event_error(ev))
        fprintf(stderr, "aiq-admin: %s\n", rd_kafka_event_error_string(ev));
    else if (ev) {
        size_t n;
        const rd_kafka_topic_result_t **res =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
        rc = report_topic_results(res, n, "created");
        if (rc == 0)
            rc = wait_ready(rk, names);
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_NewTopic_destroy_array(nt, N_TOPICS);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return rc;
}

static int topics_delete(const admin_opts_t *o)
{
    char names[N_TOPICS][AIQ_TOPIC_MAX], errstr[512];
    if (!o->yes) {
        fprintf(stderr, "aiq-admin: topics delete removes every job, result and dead letter; "
                        "add --yes to confirm\n");
        return 2;
    }
    if (topic_names(o, names))
        return 2;
    rd_kafka_t *rk = connect_kafka(o, RD_KAFKA_PRODUCER, NULL);
    if (!rk)
        return 1;
    rd_kafka_DeleteTopic_t *dt[N_TOPICS];
    for (int i = 0; i < N_TOPICS; i++)
        dt[i] = rd_kafka_DeleteTopic_new(names[i]);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *ao = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DELETETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(ao, ADMIN_TIMEOUT_MS, errstr, sizeof(errstr));
    rd_kafka_DeleteTopics(rk, dt, N_TOPICS, ao, q);
    rd_kafka_event_t *ev = admin_wait(q);
    int rc = 1;
    if (ev) {
        size_t n;
        const rd_kafka_topic_result_t **res =
            rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &n);
        rc = report_topic_results(res, n, "deleted");
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_DeleteTopic_destroy_array(dt, N_TOPICS);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return rc;
}

static int topics_list(const admin_opts_t *o)
{
    char names[N_TOPICS][AIQ_TOPIC_MAX];
    if (topic_names(o, names))
        return 2;
    rd_kafka_t *rk = connect_kafka(o, RD_KAFKA_PRODUCER, NULL);
    if (!rk)
        return 1;
    const struct rd_kafka_metadata *md;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, ADMIN_TIMEOUT_MS);
    if (e) {
        fprintf(stderr, "aiq-admin: metadata: %s\n", rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return 1;
    }
    int missing = 0;
    json_t *arr = o->json ? json_array() : NULL;
    for (int i = 0; i < N_TOPICS; i++) {
        int found = -1;
        for (int t = 0; t < md->topic_cnt; t++)
            if (strcmp(md->topics[t].topic, names[i]) == 0)
                found = md->topics[t].partition_cnt;
        if (found < 0)
            missing++;
        if (arr)
            json_array_append_new(arr, json_pack("{s:s,s:b,s:i}", "topic", names[i], "exists",
                                                 found >= 0, "partitions", found < 0 ? 0 : found));
        else if (found < 0)
            printf("%-40s missing\n", names[i]);
        else
            printf("%-40s %d partitions\n", names[i], found);
    }
    if (arr) {
        json_dumpf(arr, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        json_decref(arr);
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return missing ? 1 : 0;
}

static const char *const described_configs[] = {"cleanup.policy", "retention.ms",
                                                "min.insync.replicas"};
#define N_DESCRIBED 3

typedef struct topic_view {
    const struct rd_kafka_metadata_topic *md; /* NULL when the topic is missing */
    const char *configs[N_DESCRIBED];         /* borrowed from the DescribeConfigs event */
} topic_view_t;

/* Fills views[i].configs from one DescribeConfigs call over the existing topics. Returns
 * the result event (the values live in it; caller destroys it), or NULL (reason printed). */
static rd_kafka_event_t *describe_configs(rd_kafka_t *rk, char names[N_TOPICS][AIQ_TOPIC_MAX],
                                          topic_view_t *views)
{
    rd_kafka_ConfigResource_t *res[N_TOPICS];
    size_t n = 0;
    for (int i = 0; i < N_TOPICS; i++)
        if (views[i].md)
            res[n++] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, names[i]);
    if (n == 0)
        return NULL;
    char errstr[256];
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *ao = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    rd_kafka_AdminOptions_set_request_timeout(ao, ADMIN_TIMEOUT_MS, errstr, sizeof(errstr));
    rd_kafka_DescribeConfigs(rk, res, n, ao, q);
    rd_kafka_event_t *ev = admin_wait(q);
    if (ev && rd_kafka_event_error(ev)) {
        fprintf(stderr, "aiq-admin: describe configs: %s\n", rd_kafka_event_error_string(ev));
        rd_kafka_event_destroy(ev);
        ev = NULL;
    }
    size_t rn = 0;
    const rd_kafka_ConfigResource_t **rr = ev ? rd_kafka_DescribeConfigs_result_resources(
                                                    rd_kafka_event_DescribeConfigs_result(ev), &rn)
                                              : NULL;
    for (size_t r = 0; r < rn; r++) {
        int i = 0;
        while (i < N_TOPICS && strcmp(names[i], rd_kafka_ConfigResource_name(rr[r])))
            i++;
        size_t cn = 0;
        const rd_kafka_ConfigEntry_t **ce = rd_kafka_ConfigResource_configs(rr[r], &cn);
        for (size_t c = 0; i < N_TOPICS && c < cn; c++)
            for (int k = 0; k < N_DESCRIBED; k++)
                if (!strcmp(rd_kafka_ConfigEntry_name(ce[c]), described_configs[k]))
                    views[i].configs[k] = rd_kafka_ConfigEntry_value(ce[c]);
    }
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_ConfigResource_destroy_array(res, n);
    rd_kafka_queue_destroy(q);
    return ev;
}

static json_t *topic_json(const char *name, const topic_view_t *v)
{
    json_t *j = json_pack("{s:s,s:b}", "topic", name, "exists", v->md != NULL);
    if (!v->md)
        return j;
    json_t *parts = json_array(), *cfg = json_object();
    for (int p = 0; p < v->md->partition_cnt; p++) {
        const struct rd_kafka_metadata_partition *mp = &v->md->partitions[p];
        json_t *isr = json_array(), *rep = json_array();
        for (int r = 0; r < mp->isr_cnt; r++)
            json_array_append_new(isr, json_integer(mp->isrs[r]));
        for (int r = 0; r < mp->replica_cnt; r++)
            json_array_append_new(rep, json_integer(mp->replicas[r]));
        json_array_append_new(parts, json_pack("{s:i,s:i,s:o,s:o}", "partition", mp->id, "leader",
                                               mp->leader, "replicas", rep, "isr", isr));
    }
    for (int k = 0; k < N_DESCRIBED; k++)
        json_object_set_new(cfg, described_configs[k],
                            v->configs[k] ? json_string(v->configs[k]) : json_null());
    json_object_set_new(j, "partition_count", json_integer(v->md->partition_cnt));
    json_object_set_new(j, "replication",
                        json_integer(v->md->partition_cnt ? v->md->partitions[0].replica_cnt : 0));
    json_object_set_new(j, "partitions", parts);
    json_object_set_new(j, "configs", cfg);
    return j;
}

static void topic_print(const char *name, const topic_view_t *v)
{
    if (!v->md) {
        printf("%-36s missing\n", name);
        return;
    }
    char leaders[512] = "";
    size_t used = 0;
    /* Leader broker per partition in partition order: metadata lists them in any order. */
    for (int p = 0; p < v->md->partition_cnt && used < sizeof(leaders) - 16; p++)
        for (int k = 0; k < v->md->partition_cnt; k++)
            if (v->md->partitions[k].id == p)
                used += (size_t)snprintf(leaders + used, sizeof(leaders) - used, "%s%d",
                                         p ? "," : "", v->md->partitions[k].leader);
    printf("%-36s %5d %4d %-14s %13s %7s %s\n", name, v->md->partition_cnt,
           v->md->partition_cnt ? v->md->partitions[0].replica_cnt : 0,
           v->configs[0] ? v->configs[0] : "?", v->configs[1] ? v->configs[1] : "?",
           v->configs[2] ? v->configs[2] : "?", leaders);
}

/* Partitions, replication, leaders and the configs that matter of every aiq topic. */
static int topics_describe(const admin_opts_t *o)
{
    char names[N_TOPICS][AIQ_TOPIC_MAX];
    if (topic_names(o, names))
        return 2;
    rd_kafka_t *rk = connect_kafka(o, RD_KAFKA_PRODUCER, NULL);
    if (!rk)
        return 1;
    const struct rd_kafka_metadata *md;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, ADMIN_TIMEOUT_MS);
    if (e) {
        fprintf(stderr, "aiq-admin: metadata: %s\n", rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return 1;
    }
    topic_view_t views[N_TOPICS] = {0};
    int missing = 0;
    for (int i = 0; i < N_TOPICS; i++) {
        for (int t = 0; t < md->topic_cnt; t++)
            if (!strcmp(md->topics[t].topic, names[i]) && !md->topics[t].err)
                views[i].md = &md->topics[t];
        missing += !views[i].md;
    }
    rd_kafka_event_t *ev = describe_configs(rk, names, views);
    json_t *arr = o->json ? json_array() : NULL;
    if (!o->json)
        printf("%-36s %5s %4s %-14s %13s %7s %s\n", "TOPIC", "PARTS", "REPL", "CLEANUP",
               "RETENTION.MS", "MIN.ISR", "LEADERS");
    for (int i = 0; i < N_TOPICS; i++) {
        if (arr)
            json_array_append_new(arr, topic_json(names[i], &views[i]));
        else
            topic_print(names[i], &views[i]);
    }
    if (arr) {
        json_t *doc = json_pack("{s:o,s:i}", "topics", arr, "missing", missing);
        json_dumpf(doc, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        json_decref(doc);
    }
    /* Configs that could not be read are a failure too: the table shows "?". */
    int rc = missing || (!ev && missing < N_TOPICS) ? 1 : 0;
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return rc;
}

/* Committed offset, end offset and lag per job partition from the group's own view (a
 * consumer with its group.id that never joins): works while no worker runs. */
static int group_lag(const admin_opts_t *o)
{
    char names[N_TOPICS][AIQ_TOPIC_MAX];
    if (topic_names(o, names))
        return 2;
    rd_kafka_t *rk = connect_kafka(o, RD_KAFKA_CONSUMER, o->group);
    if (!rk)
        return 1;
    int rc = 0;
    json_t *rows = o->json ? json_array() : NULL;
    if (!rows)
        printf("%-32s %5s %12s %12s %10s\n", "topic", "part", "committed", "end", "lag");
    for (int p = 0; p < AIQ_PRIO_COUNT && rc == 0; p++) {
        int n = 0;
        aiq_err_t err = {0};
        if (aiq_kafka_partition_count(rk, names[p], ADMIN_TIMEOUT_MS, &n, &err)) {
            fprintf(stderr, "aiq-admin: no metadata for %s (%s)\n", names[p], err.msg);
            rc = 1;
            break;
        }
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
        for (int i = 0; i < n; i++)
            rd_kafka_topic_partition_list_add(l, names[p], i);
        if (rd_kafka_committed(rk, l, ADMIN_TIMEOUT_MS)) {
            fprintf(stderr, "aiq-admin: committed offsets of %s: no answer\n", o->group);
            rc = 1;
        }
        long long total = 0;
        for (int i = 0; i < n && rc == 0; i++) {
            int64_t lo = 0, hi = 0;
            if (rd_kafka_query_watermark_offsets(rk, names[p], i, &lo, &hi, ADMIN_TIMEOUT_MS)) {
                fprintf(stderr, "aiq-admin: no end offset for %s [%d]\n", names[p], i);
                rc = 1;
            }
            int64_t c = l->elems[i].offset;
            long long lag = c >= 0 ? (long long)(hi - c) : (long long)(hi - lo);
            total += lag;
            if (rows)
                json_array_append_new(
                    rows, json_pack("{s:s,s:s,s:i,s:o,s:I,s:I}", "topic", names[p], "priority",
                                    aiq_priority_name((aiq_priority_t)p), "partition", i,
                                    "committed", c >= 0 ? json_integer(c) : json_null(), "end",
                                    (json_int_t)hi, "lag", (json_int_t)lag));
            else
                printf("%-32s %5d %12lld %12lld %10lld\n", names[p], i, (long long)c, (long long)hi,
                       lag);
        }
        if (!rows)
            printf("%-32s %5s %12s %12s %10lld\n", names[p], "all", "", "", total);
        rd_kafka_topic_partition_list_destroy(l);
    }
    if (rows && rc == 0) {
        json_t *doc = json_pack("{s:s,s:o}", "group", o->group, "partitions", rows);
        rows = NULL;
        json_dumpf(doc, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        json_decref(doc);
    }
    json_decref(rows);
    rd_kafka_destroy(rk);
    return rc;
}

/* Options of "dlq list|replay" (codes 10..16). Returns 0, or 2 for a bad value. */
static int parse_dlq_opt(admin_opts_t *o, int c, const char *arg)
{
    static const char *const names[] = {"--kind",    "--job-id", "--since",           "--limit",
                                        "--dry-run", "--to",     "--refresh-deadline"};
    char *end;
    if (!o->dlq_flag)
        o->dlq_flag = names[c - 10];
    switch (c) {
    case 10:
        o->dlq.kind = arg;
        return 0;
    case 11:
        o->dlq.job_id = arg;
        return 0;
    case 12:
        o->dlq.since = arg; /* aiq_admin_dlq validates it */
        return 0;
    case 13:
        o->dlq.limit = strtol(arg, &end, 10);
        if (!*end && *arg && o->dlq.limit >= 0 && o->dlq.limit <= 100000000)
            return 0;
        fprintf(stderr, "aiq-admin: --limit '%s' is not a count (0 = all)\n", arg);
        return 2;
    case 14:
        o->dlq.dry_run = true;
        return 0;
    case 15:
        if (aiq_topic_name_valid(arg)) {
            o->dlq.to = arg;
            return 0;
        }
        fprintf(stderr, "aiq-admin: --to '%s' is not a valid topic name\n", arg);
        return 2;
    default:
        o->dlq.refresh_deadline = true;
        return 0;
    }
}

/* "aiq-admin COMMAND --help": the command's own help where it has one. */
static int help(const char *command)
{
    if (!strcmp(command, "group"))
        aiq_admin_group_usage(stdout);
    else if (!strcmp(command, "dlq"))
        aiq_admin_dlq_usage(stdout);
    else if (!strcmp(command, "breaker"))
        aiq_admin_breaker_usage(stdout);
    else
        usage(stdout);
    return 0;
}

static int dispatch(admin_opts_t *o, const char *a, const char *b, int rest, char **restv)
{
    if (o->dlq_flag && strcmp(a, "dlq")) {
        fprintf(stderr, "aiq-admin: %s is an option of 'dlq list|replay'\n", o->dlq_flag);
        return 2;
    }
    o->dlq.json = o->json;
    if (!strcmp(a, "topics") && !strcmp(b, "create"))
        return topics_create(o);
    if (!strcmp(a, "topics") && !strcmp(b, "list"))
        return topics_list(o);
    if (!strcmp(a, "topics") && !strcmp(b, "describe"))
        return topics_describe(o);
    if (!strcmp(a, "topics") && !strcmp(b, "delete"))
        return topics_delete(o);
    if (!strcmp(a, "group") && !strcmp(b, "lag"))
        return group_lag(o);
    if (!strcmp(a, "group") && !strcmp(b, "describe"))
        return aiq_admin_group_describe(o->brokers, o->prefix, o->group, o->json);
    if (!strcmp(a, "dlq") && *b) {
        o->dlq.brokers = o->brokers;
        o->dlq.prefix = o->prefix;
        return aiq_admin_dlq(&o->dlq, b);
    }
    if (!strcmp(a, "breaker"))
        return aiq_admin_breaker(o->brokers, o->prefix, o->breaker_base, o->json, rest, restv);
    fprintf(stderr, "aiq-admin: unknown command '%s %s'; see --help\n", a, b);
    return 2;
}

/* --cache-path DIR (the workers' cache.path: their breakers are in DIR/breakers) or
 * --breaker-path DIR (their breaker.path). */
static void set_breaker_base(admin_opts_t *o, int cache_path, const char *dir)
{
    snprintf(o->breaker_buf, sizeof(o->breaker_buf), cache_path ? "%s/breakers" : "%s", dir);
    o->breaker_base = o->breaker_buf;
}

int main(int argc, char **argv)
{
    /* "cache" has options of its own (--cache-path, --file, ...): it parses argv itself. */
    if (aiq_admin_cache_wanted(argc, argv))
        return aiq_admin_cache(argc, argv);
    static const struct option lo[] = {{"brokers", 1, 0, 'b'},
                                       {"prefix", 1, 0, 1},
                                       {"partitions", 1, 0, 2},
                                       {"replication-factor", 1, 0, 3},
                                       {"group", 1, 0, 4},
                                       {"yes", 0, 0, 5},
                                       {"json", 0, 0, 6},
                                       {"kind", 1, 0, 10},
                                       {"job-id", 1, 0, 11},
                                       {"since", 1, 0, 12},
                                       {"limit", 1, 0, 13},
                                       {"dry-run", 0, 0, 14},
                                       {"to", 1, 0, 15},
                                       {"refresh-deadline", 0, 0, 16},
                                       {"cache-path", 1, 0, 17},
                                       {"breaker-path", 1, 0, 18},
                                       {"help", 0, 0, 'h'},
                                       {"version", 0, 0, 'V'},
                                       {0, 0, 0, 0}};
    admin_opts_t o = {.brokers = "127.0.0.1:9092",
                      .prefix = "aiq.",
                      .group = "aiq-workers",
                      .partitions = 6,
                      .replication = 1};
    const char *env;
    if ((env = getenv("AIQ_KAFKA_BROKERS")) && *env)
        o.brokers = env;
    if ((env = getenv("AIQ_KAFKA_TOPIC_PREFIX")))
        o.prefix = env;
    if ((env = getenv("AIQ_KAFKA_GROUP_ID")) && *env)
        o.group = env;
    int c;
    while ((c = getopt_long(argc, argv, "b:hVX:", lo, NULL)) != -1) {
        char *end;
        aiq_err_t kerr = {0};
        switch (c) {
        case 'X':
            if (aiq_kprops_set_arg(optarg, &kerr)) {
                fprintf(stderr, "aiq-admin: %s\n", kerr.msg);
                return 2;
            }
            break;
        case 'b':
            o.brokers = optarg;
            break;
        case 1:
            o.prefix = optarg;
            break;
        case 2:
        case 3: {
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 10000) {
                fprintf(stderr, "aiq-admin: '%s' is not a count in 1..10000\n", optarg);
                return 2;
            }
            *(c == 2 ? &o.partitions : &o.replication) = (int)v;
            break;
        }
        case 4:
            o.group = optarg;
            break;
        case 5:
            o.yes = 1;
            break;
        case 6:
            o.json = 1;
            break;
        case 10:
        case 11:
        case 12:
        case 13:
        case 14:
        case 15:
        case 16:
            if (parse_dlq_opt(&o, c, optarg))
                return 2;
            break;
        case 17:
        case 18:
            set_breaker_base(&o, c == 17, optarg);
            break;
        case 'h':
            o.help = 1; /* after the loop: the help of the command, if one is named */
            break;
        case 'V':
            printf("aiq-admin %s (librdkafka %s)\n", AIQ_VERSION, rd_kafka_version_str());
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    const char *a = optind < argc ? argv[optind] : "",
               *b = optind + 1 < argc ? argv[optind + 1] : "";
    if (o.help)
        return help(a);
    return dispatch(&o, a, b, argc - optind - 1, argv + optind + 1);
}
