/* admin_breaker.c — aiq-admin breaker show|open|close|auto|force: read and override the
 * shared circuit breakers through the compacted <prefix>breaker topic every worker follows. */
#include "admin_breaker.h"
#include "breaker_state.h"
#include "timeutil.h"
#include "topics.h"
#include "kafka.h"
#include "kprops.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_TIMEOUT_MS 15000

typedef struct seen {
    struct seen *next;
    aiq_breaker_shared_t s;
    char *origin;
    int host; /* the newest state came from this host's store, not the topic */
    char model[];
} seen_t;

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    *(rd_kafka_resp_err_t *)m->_private = m->err;
}

static rd_kafka_t *client(const char *brokers, rd_kafka_type_t type)
{
    int producer = type == RD_KAFKA_PRODUCER;
    aiq_kafka_params_t params = {
        .brokers = brokers, .group_id = producer ? NULL : "aiq-admin-breaker", .env_props = 1};
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk = NULL;
    aiq_err_t err = {0};
    if (aiq_kafka_conf_new(&conf, producer ? AIQ_KAFKA_CLI_PRODUCER : AIQ_KAFKA_READER, &params,
                           &err)) {
        fprintf(stderr, "aiq-admin: %s\n", err.msg);
        return NULL;
    }
    if (producer)
        rd_kafka_conf_set_dr_msg_cb(conf, on_dr);
    if (aiq_kafka_connect(&rk, type, conf, AIQ_KPROPS_CONNECT_MS, &err))
        fprintf(stderr, "aiq-admin: %s\n", err.msg);
    return rk;
}

/* The entry of model in list, added when missing; NULL when out of memory. */
static seen_t *seen_get(seen_t **list, const void *model, size_t len)
{
    seen_t *e;
    for (e = *list; e; e = e->next)
        if (strlen(e->model) == len && !memcmp(e->model, model, len))
            return e;
    if (!(e = calloc(1, sizeof(*e) + len + 1)))
        return NULL;
    memcpy(e->model, model, len);
    e->next = *list;
    *list = e;
    return e;
}

static void remember(seen_t **list, const rd_kafka_message_t *m)
{
    aiq_breaker_shared_t s;
    if (!m->key || !m->key_len || !m->payload || aiq_breaker_record_decode(m->payload, m->len, &s))
        return;
    seen_t *e = seen_get(list, m->key, m->key_len);
    if (!e || s.version < e->s.version)
        return;
    e->s = s;
    e->host = 0;
    free(e->origin);
    e->origin = NULL;
    json_t *doc = json_loadb(m->payload, m->len, 0, NULL);
    const char *origin = json_string_value(json_object_get(doc, "origin"));
    if (origin)
        e->origin = strdup(origin);
    json_decref(doc);
}

static void visit_store(MDB_env *env, seen_t **list)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_dbi dbi;
    MDB_val k, v;
    if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) || mdb_dbi_open(txn, NULL, 0, &dbi) ||
        mdb_cursor_open(txn, dbi, &cur)) {
        if (txn)
            mdb_txn_abort(txn);
        return;
    }
    while (mdb_cursor_get(cur, &k, &v, MDB_NEXT) == 0) {
        aiq_breaker_shared_t s;
        seen_t *e;
        if (!k.mv_size || aiq_breaker_record_unpack(v.mv_data, v.mv_size, &s) ||
            !(e = seen_get(list, k.mv_data, k.mv_size)) || s.version <= e->s.version)
            continue;
        e->s = s;
        e->host = 1;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
}

/* Merges this host's store of prefix's scope under base into list, newest version winning:
 * what the host's workers act on, also before (or without) the topic. Returns 0, or 1 with
 * the reason printed. */
static int read_host(const char *base, const char *prefix, seen_t **list)
{
    char dir[4096], file[4200];
    if (aiq_breaker_scope_dir(base, prefix, dir, sizeof(dir))) {
        fprintf(stderr, "aiq-admin: breaker state path under %s is too long\n", base);
        return 1;
    }
    snprintf(file, sizeof(file), "%s/data.mdb", base);
    if (access(file, F_OK) == 0)
        fprintf(stderr,
                "aiq-admin: %s is an unscoped breaker store of an older aiq; workers ignore "
                "it\n",
                file);
    snprintf(file, sizeof(file), "%s/data.mdb", dir);
    if (access(file, F_OK)) {
        fprintf(stderr, "aiq-admin: no worker of prefix '%s' keeps breaker state in %s\n", prefix,
                dir);
        return 0;
    }
    MDB_env *env = NULL;
    int rc;
    if ((rc = mdb_env_create(&env)) || (rc = mdb_env_set_mapsize(env, 16u << 20)) ||
        (rc = mdb_env_set_maxreaders(env, 1024)) ||
        (rc = mdb_env_open(env, dir, MDB_RDONLY, 0600))) {
        fprintf(stderr, "aiq-admin: breaker state %s: %s\n", dir, mdb_strerror(rc));
        mdb_env_close(env);
        return 1;
    }
    visit_store(env, list);
    mdb_env_close(env);
    return 0;
}

/* Reads the whole topic up to its end. Returns 0, or 1 with the reason printed (2: the
 * topic does not exist). */
static int read_all(const char *brokers, const char *topic, seen_t **out)
{
    rd_kafka_t *rk = client(brokers, RD_KAFKA_CONSUMER);
    if (!rk)
        return 1;
    int n = 0;
    if (aiq_kafka_partition_count(rk, topic, READ_TIMEOUT_MS, &n, NULL)) {
        fprintf(stderr, "aiq-admin: topic %s does not exist (aiq-admin topics create makes it)\n",
                topic);
        rd_kafka_destroy(rk);
        return 2;
    }
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(n);
    int open = 0;
    for (int p = 0; p < n; p++) {
        int64_t lo, hi;
        if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, READ_TIMEOUT_MS) || hi <= lo)
            continue; /* empty partition: nothing to wait for */
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        open++;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    int64_t until = aiq_mono_ms() + READ_TIMEOUT_MS;
    while (open > 0 && aiq_mono_ms() < until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            open--;
        else if (!m->err)
            remember(out, m);
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    if (open > 0) {
        fprintf(stderr, "aiq-admin: %s not read to its end within %d s\n", topic,
                READ_TIMEOUT_MS / 1000);
        return 1;
    }
    return 0;
}

static void free_seen(seen_t *l)
{
    while (l) {
        seen_t *n = l->next;
        free(l->origin);
        free(l);
        l = n;
    }
}

static json_t *seen_json(const seen_t *e)
{
    char since[40];
    return json_pack("{s:s,s:s,s:s,s:s,s:I,s:o}", "model", e->model, "state",
                     aiq_breaker_state_name(e->s.state), "override",
                     aiq_breaker_force_name(e->s.force), "since",
                     aiq_time_format(e->s.since_ms, since, sizeof(since)), "version",
                     (json_int_t)e->s.version, "by",
                     e->host     ? json_string("this host")
                     : e->origin ? json_string(e->origin)
                                 : json_null());
}

/* model NULL: every breaker; else only that one, and exit 1 when it has no record. With
 * state_base, this host's state of prefix counts too. */
static int breaker_show(const char *brokers, const char *topic, const char *prefix,
                        const char *state_base, const char *model, bool json)
{
    seen_t *all = NULL;
    int rc = read_all(brokers, topic, &all);
    /* Without the topic, workers share breakers on their host only: that state is all. */
    if ((rc && !(rc == 2 && state_base)) || (state_base && read_host(state_base, prefix, &all))) {
        free_seen(all);
        return 1;
    }
    json_t *arr = json ? json_array() : NULL;
    int shown = 0;
    char since[40];
    if (!json)
        printf("%-50s %-7s %-13s %-24s %s\n", "MODEL", "STATE", "OVERRIDE", "SINCE", "BY");
    for (seen_t *e = all; e; e = e->next) {
        if (model && strcmp(model, e->model))
            continue;
        shown++;
        if (json)
            json_array_append_new(arr, seen_json(e));
        else
            printf("%-50s %-7s %-13s %-24s %s\n", e->model, aiq_breaker_state_name(e->s.state),
                   aiq_breaker_force_name(e->s.force),
                   aiq_time_format(e->s.since_ms, since, sizeof(since)),
                   e->host     ? "this host"
                   : e->origin ? e->origin
                               : "-");
    }
    if (json) {
        json_dumpf(arr, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        json_decref(arr);
    } else if (!shown && model)
        printf("(breaker %s has never changed state: closed, automatic)\n", model);
    else if (!shown)
        printf("(no breaker has changed state yet)\n");
    free_seen(all);
    return model && !shown ? 1 : 0;
}

static int breaker_force(const char *brokers, const char *topic, const char *model, const char *how)
{
    aiq_breaker_force_t f = !strcmp(how, "open")     ? AIQ_BREAKER_FORCED_OPEN
                            : !strcmp(how, "closed") ? AIQ_BREAKER_FORCED_CLOSED
                            : !strcmp(how, "auto")   ? AIQ_BREAKER_AUTO
                                                     : (aiq_breaker_force_t)-1;
    if ((int)f < 0 || !*model) {
        fprintf(stderr, "aiq-admin: usage: breaker force MODEL open|closed|auto\n");
        return 2;
    }
    seen_t *all = NULL;
    if (read_all(brokers, topic, &all))
        return 1;
    uint64_t last = 0;
    for (seen_t *e = all; e; e = e->next)
        if (!strcmp(e->model, model))
            last = e->s.version;
    free_seen(all);
    int64_t now = aiq_now_ms();
    aiq_breaker_shared_t s = {
        .state = f == AIQ_BREAKER_FORCED_OPEN ? AIQ_BREAKER_OPEN : AIQ_BREAKER_CLOSED,
        .force = f,
        .since_ms = now,
        .version = (uint64_t)now > last ? (uint64_t)now : last + 1,
    };
    char *val;
    size_t len;
    if (aiq_breaker_record_encode(model, &s, "aiq-admin", &val, &len)) {
        fprintf(stderr, "aiq-admin: cannot encode the record\n");
        return 1;
    }
    rd_kafka_resp_err_t dr = RD_KAFKA_RESP_ERR__IN_PROGRESS;
    rd_kafka_t *rk = client(brokers, RD_KAFKA_PRODUCER);
    if (!rk) {
        free(val);
        return 1;
    }
    rd_kafka_resp_err_t e =
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(model, strlen(model)),
                          RD_KAFKA_V_VALUE(val, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_OPAQUE(&dr), RD_KAFKA_V_END);
    free(val);
    if (!e && rd_kafka_flush(rk, READ_TIMEOUT_MS) == RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_poll(rk, 0);
    if (e || dr) {
        fprintf(stderr, "aiq-admin: breaker record not written: %s\n",
                rd_kafka_err2str(e ? e : dr));
        rd_kafka_destroy(rk);
        return 1;
    }
    rd_kafka_destroy(rk);
    printf("breaker %s: %s (workers apply it within about a second)\n", model,
           aiq_breaker_force_name(f));
    return 0;
}

void aiq_admin_breaker_usage(FILE *out)
{
    fprintf(out,
            "Usage: aiq-admin [options] breaker COMMAND\n\n"
            "The circuit breakers (one per model) are shared by every worker through the\n"
            "compacted <prefix>breaker topic; workers apply a change within about a second.\n\n"
            "  show [MODEL]      state, manual override, since when and which worker changed\n"
            "                    it, of every breaker (or of MODEL: exit 1 when it has no\n"
            "                    record yet); 'list' is the same. --json for one JSON array.\n"
            "                    --cache-path DIR (or --breaker-path DIR): also this host's\n"
            "                    state of the prefix, what its workers act on; the newest\n"
            "                    version wins, shown BY 'this host' when it came from there\n"
            "  open MODEL        force MODEL's breaker open: its jobs get breaker_open results\n"
            "                    (or go to the fallback model) without a call\n"
            "  close MODEL       force it closed: calls go through whatever the errors\n"
            "  auto MODEL        lift the override; the breaker follows the errors again\n"
            "  force MODEL open|closed|auto   the same three as one command\n\n"
            "Exit codes: 0 done, 1 failure, 2 usage error.\n");
}

int aiq_admin_breaker(const char *brokers, const char *prefix, const char *state_base, bool json,
                      int argc, char **argv)
{
    char topic[AIQ_TOPIC_MAX];
    if (aiq_topic_breaker(prefix, topic, sizeof(topic))) {
        fprintf(stderr, "aiq-admin: --prefix is too long\n");
        return 2;
    }
    const char *verb = argc > 0 ? argv[0] : "";
    if ((!strcmp(verb, "list") || !strcmp(verb, "show")) && argc <= 2)
        return breaker_show(brokers, topic, prefix, state_base, argc == 2 ? argv[1] : NULL, json);
    if (!strcmp(verb, "force") && argc == 3)
        return breaker_force(brokers, topic, argv[1], argv[2]);
    /* short forms: open|close|auto MODEL */
    if (argc == 2 && (!strcmp(verb, "open") || !strcmp(verb, "auto")))
        return breaker_force(brokers, topic, argv[1], verb);
    if (argc == 2 && !strcmp(verb, "close"))
        return breaker_force(brokers, topic, argv[1], "closed");
    fprintf(stderr, "aiq-admin: usage: breaker show [MODEL] | breaker open|close|auto MODEL | "
                    "breaker force MODEL open|closed|auto\n");
    return 2;
}
