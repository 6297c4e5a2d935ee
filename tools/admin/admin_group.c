/* admin_group.c — aiq-admin group describe: who is in the worker group, what each member
 * owns, and how far the group's commits are behind the end of every job partition. */
#include "admin_group.h"
#include "topics.h"
#include "kafka.h"
#include "kprops.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>

#define GROUP_TIMEOUT_MS 30000
#define MAX_PARTS        10000 /* per job topic; aiq-admin creates at most that many */

/* One job partition: where the group stands and who owns it. */
typedef struct part_row {
    int prio, partition;
    int64_t committed, end, lag;
    const rd_kafka_MemberDescription_t *owner; /* NULL when unassigned */
} part_row_t;

typedef struct group_view {
    char topics[AIQ_PRIO_COUNT][AIQ_TOPIC_MAX];
    const rd_kafka_ConsumerGroupDescription_t *desc; /* borrowed from ev */
    rd_kafka_event_t *ev;
    part_row_t *rows;
    size_t n_rows;
    int64_t total[AIQ_PRIO_COUNT];
} group_view_t;

void aiq_admin_group_usage(FILE *out)
{
    fprintf(out,
            "Usage: aiq-admin [options] group describe [--json]\n"
            "       aiq-admin [options] group lag\n\n"
            "describe  the group's state and assignor; every member (member id, client id,\n"
            "          host, group.instance.id when static) with the partitions it owns; per\n"
            "          partition of the four job topics the committed offset, end offset, lag\n"
            "          and owner; the lag per priority. Exit 1 when the group does not exist.\n"
            "lag       committed offset, end offset and lag per job partition only.\n\n"
            "Options: --group ID (env AIQ_KAFKA_GROUP_ID, default aiq-workers), -b BROKERS,\n"
            "         --prefix PREFIX, --json (describe: one JSON object on stdout)\n");
}

static rd_kafka_t *connect_group(const char *brokers, const char *group)
{
    /* group.id lets rd_kafka_committed() ask the coordinator; without a subscribe() this
     * handle never joins the group, so describing it does not trigger a rebalance. */
    aiq_kafka_params_t params = {
        .brokers = brokers, .client_id = "aiq-admin", .group_id = group, .env_props = 1};
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk = NULL;
    aiq_err_t err = {0};
    if (aiq_kafka_conf_new(&conf, AIQ_KAFKA_CLI_ADMIN, &params, &err) ||
        aiq_kafka_connect(&rk, RD_KAFKA_CONSUMER, conf, AIQ_KPROPS_CONNECT_MS, &err))
        fprintf(stderr, "aiq-admin: %s\n", err.msg);
    return rk;
}

/* Fetches the group description into v->ev / v->desc. Returns 0 or 1 (printed). */
static int describe(rd_kafka_t *rk, const char *group, group_view_t *v)
{
    char errstr[512];
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *ao =
        rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS);
    rd_kafka_AdminOptions_set_request_timeout(ao, GROUP_TIMEOUT_MS, errstr, sizeof(errstr));
    const char *groups[1] = {group};
    rd_kafka_DescribeConsumerGroups(rk, groups, 1, ao, q);
    v->ev = rd_kafka_queue_poll(q, GROUP_TIMEOUT_MS + 5000);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_queue_destroy(q);
    if (!v->ev) {
        fprintf(stderr, "aiq-admin: no answer from the broker within %d s\n",
                GROUP_TIMEOUT_MS / 1000);
        return 1;
    }
    if (rd_kafka_event_error(v->ev)) {
        fprintf(stderr, "aiq-admin: describe group: %s\n", rd_kafka_event_error_string(v->ev));
        return 1;
    }
    size_t n = 0;
    const rd_kafka_ConsumerGroupDescription_t **d = rd_kafka_DescribeConsumerGroups_result_groups(
        rd_kafka_event_DescribeConsumerGroups_result(v->ev), &n);
    const rd_kafka_error_t *e = n == 1 ? rd_kafka_ConsumerGroupDescription_error(d[0]) : NULL;
    if (n != 1 || e) {
        fprintf(stderr, "aiq-admin: group %s: %s\n", group,
                e ? rd_kafka_error_string(e) : "no description");
        return 1;
    }
    /* The broker answers "Dead" for a group id it has never seen (or has expired). */
    rd_kafka_consumer_group_state_t st = rd_kafka_ConsumerGroupDescription_state(d[0]);
    if (st == RD_KAFKA_CONSUMER_GROUP_STATE_DEAD) {
        fprintf(stderr, "aiq-admin: group %s does not exist\n", group);
        return 1;
    }
    v->desc = d[0];
    return 0;
}

static const rd_kafka_MemberDescription_t *owner_of(const rd_kafka_ConsumerGroupDescription_t *d,
                                                    const char *topic, int partition)
{
    size_t n = rd_kafka_ConsumerGroupDescription_member_count(d);
    for (size_t i = 0; i < n; i++) {
        const rd_kafka_MemberDescription_t *m = rd_kafka_ConsumerGroupDescription_member(d, i);
        const rd_kafka_topic_partition_list_t *l =
            rd_kafka_MemberAssignment_partitions(rd_kafka_MemberDescription_assignment(m));
        for (int j = 0; l && j < l->cnt; j++)
            if (l->elems[j].partition == partition && !strcmp(l->elems[j].topic, topic))
                return m;
    }
    return NULL;
}

/* Committed and end offsets of every partition of one job topic, appended to v->rows. */
static int offsets_of(rd_kafka_t *rk, group_view_t *v, int prio)
{
    const char *topic = v->topics[prio];
    int n = 0;
    if (aiq_kafka_partition_count(rk, topic, GROUP_TIMEOUT_MS, &n, NULL)) {
        fprintf(stderr, "aiq-admin: topic %s does not exist\n", topic);
        return 1;
    }
    n = n > MAX_PARTS ? MAX_PARTS : n;
    part_row_t *rows = realloc(v->rows, (v->n_rows + (size_t)n) * sizeof(*rows));
    if (!rows) {
        fprintf(stderr, "aiq-admin: out of memory\n");
        return 1;
    }
    v->rows = rows;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, topic, i);
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, GROUP_TIMEOUT_MS);
    for (int i = 0; i < n && !e; i++) {
        int64_t lo = 0, hi = 0;
        e = rd_kafka_query_watermark_offsets(rk, topic, i, &lo, &hi, GROUP_TIMEOUT_MS);
        part_row_t *r = &v->rows[v->n_rows++];
        r->prio = prio;
        r->partition = i;
        r->committed = l->elems[i].offset;
        r->end = hi;
        /* Nothing committed yet: the group will start from the beginning (earliest). */
        r->lag = r->committed >= 0 ? hi - r->committed : hi - lo;
        r->owner = owner_of(v->desc, topic, i);
        v->total[prio] += r->lag;
    }
    rd_kafka_topic_partition_list_destroy(l);
    if (e)
        fprintf(stderr, "aiq-admin: offsets of %s: %s\n", topic, rd_kafka_err2str(e));
    return e ? 1 : 0;
}

static const char *or_dash(const char *s)
{
    return s && *s ? s : "-";
}

static void print_table(const char *group, const group_view_t *v)
{
    const rd_kafka_ConsumerGroupDescription_t *d = v->desc;
    size_t n = rd_kafka_ConsumerGroupDescription_member_count(d);
    printf("group %s  state %s  assignor %s  members %zu\n\n", group,
           rd_kafka_consumer_group_state_name(rd_kafka_ConsumerGroupDescription_state(d)),
           or_dash(rd_kafka_ConsumerGroupDescription_partition_assignor(d)), n);
    printf("%-44s %-24s %-16s %-16s %s\n", "MEMBER", "CLIENT-ID", "HOST", "INSTANCE", "ASSIGNMENT");
    for (size_t i = 0; i < n; i++) {
        const rd_kafka_MemberDescription_t *m = rd_kafka_ConsumerGroupDescription_member(d, i);
        const rd_kafka_topic_partition_list_t *l =
            rd_kafka_MemberAssignment_partitions(rd_kafka_MemberDescription_assignment(m));
        printf("%-44s %-24s %-16s %-16s", rd_kafka_MemberDescription_consumer_id(m),
               or_dash(rd_kafka_MemberDescription_client_id(m)),
               or_dash(rd_kafka_MemberDescription_host(m)),
               or_dash(rd_kafka_MemberDescription_group_instance_id(m)));
        for (int j = 0; l && j < l->cnt; j++)
            printf(" %s/%d", l->elems[j].topic, (int)l->elems[j].partition);
        printf("%s\n", l && l->cnt ? "" : " (none)");
    }
    printf("\n%-32s %5s %12s %12s %10s  %s\n", "TOPIC", "PART", "COMMITTED", "END", "LAG", "OWNER");
    for (size_t i = 0; i < v->n_rows; i++) {
        const part_row_t *r = &v->rows[i];
        printf("%-32s %5d %12lld %12lld %10lld  %s\n", v->topics[r->prio], r->partition,
               (long long)r->committed, (long long)r->end, (long long)r->lag,
               r->owner ? rd_kafka_MemberDescription_consumer_id(r->owner) : "(unassigned)");
    }
    printf("\n%-10s %10s\n", "PRIORITY", "LAG");
    for (int p = 0; p < AIQ_PRIO_COUNT; p++)
        printf("%-10s %10lld\n", aiq_priority_name((aiq_priority_t)p), (long long)v->total[p]);
}

static json_t *json_str_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

static json_t *member_json(const rd_kafka_MemberDescription_t *m)
{
    const rd_kafka_topic_partition_list_t *l =
        rd_kafka_MemberAssignment_partitions(rd_kafka_MemberDescription_assignment(m));
    json_t *a = json_array();
    for (int j = 0; l && j < l->cnt; j++)
        json_array_append_new(a, json_pack("{s:s,s:i}", "topic", l->elems[j].topic, "partition",
                                           (int)l->elems[j].partition));
    return json_pack("{s:o,s:o,s:o,s:o,s:o}", "member_id",
                     json_str_or_null(rd_kafka_MemberDescription_consumer_id(m)), "client_id",
                     json_str_or_null(rd_kafka_MemberDescription_client_id(m)), "host",
                     json_str_or_null(rd_kafka_MemberDescription_host(m)), "group_instance_id",
                     json_str_or_null(rd_kafka_MemberDescription_group_instance_id(m)),
                     "assignment", a);
}

static int print_json(const char *group, const group_view_t *v)
{
    const rd_kafka_ConsumerGroupDescription_t *d = v->desc;
    json_t *members = json_array(), *parts = json_array(), *lag = json_object();
    size_t n = rd_kafka_ConsumerGroupDescription_member_count(d);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(members, member_json(rd_kafka_ConsumerGroupDescription_member(d, i)));
    for (size_t i = 0; i < v->n_rows; i++) {
        const part_row_t *r = &v->rows[i];
        json_array_append_new(
            parts,
            json_pack("{s:s,s:s,s:i,s:I,s:I,s:I,s:o}", "topic", v->topics[r->prio], "priority",
                      aiq_priority_name((aiq_priority_t)r->prio), "partition", r->partition,
                      "committed", (json_int_t)r->committed, "end", (json_int_t)r->end, "lag",
                      (json_int_t)r->lag, "owner",
                      json_str_or_null(r->owner ? rd_kafka_MemberDescription_consumer_id(r->owner)
                                                : NULL)));
    }
    for (int p = 0; p < AIQ_PRIO_COUNT; p++)
        json_object_set_new(lag, aiq_priority_name((aiq_priority_t)p),
                            json_integer((json_int_t)v->total[p]));
    json_t *doc = json_pack(
        "{s:s,s:s,s:o,s:o,s:o,s:o}", "group", group, "state",
        rd_kafka_consumer_group_state_name(rd_kafka_ConsumerGroupDescription_state(d)), "assignor",
        json_str_or_null(rd_kafka_ConsumerGroupDescription_partition_assignor(d)), "members",
        members, "partitions", parts, "lag_per_priority", lag);
    int rc = doc && json_dumpf(doc, stdout, JSON_INDENT(2)) == 0 ? 0 : 1;
    json_decref(doc);
    if (rc == 0)
        printf("\n");
    else
        fprintf(stderr, "aiq-admin: cannot encode the JSON answer\n");
    return rc;
}

int aiq_admin_group_describe(const char *brokers, const char *prefix, const char *group, bool json)
{
    group_view_t v = {0};
    for (int p = 0; p < AIQ_PRIO_COUNT; p++)
        if (aiq_topic_jobs(prefix, (aiq_priority_t)p, v.topics[p], AIQ_TOPIC_MAX) ||
            !aiq_topic_name_valid(v.topics[p])) {
            fprintf(stderr, "aiq-admin: --prefix '%s' makes invalid topic names\n", prefix);
            return 2;
        }
    rd_kafka_t *rk = connect_group(brokers, group);
    if (!rk)
        return 1;
    int rc = describe(rk, group, &v);
    for (int p = 0; p < AIQ_PRIO_COUNT && rc == 0; p++)
        rc = offsets_of(rk, &v, p);
    if (rc == 0)
        rc = json ? print_json(group, &v) : (print_table(group, &v), 0);
    free(v.rows);
    if (v.ev)
        rd_kafka_event_destroy(v.ev);
    rd_kafka_destroy(rk);
    return rc;
}
