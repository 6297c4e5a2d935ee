/* admin_dlq.c — aiq-admin dlq list|replay: read <prefix>dlq without committing anything, and
 * re-produce chosen dead letters to their original job topic with an idempotent producer. */
#include "admin_dlq.h"
#include "timeutil.h"
#include "topics.h"
#include "kafka.h"
#include "kprops.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DLQ_TIMEOUT_MS 30000
#define HDR_MAX        512 /* header values longer than this are cut when shown */
#define MAX_PARTS      10000

/* One dead letter as read: its place in the DLQ and its aiq.dlq.* headers. */
typedef struct dlq_rec {
    const rd_kafka_message_t *msg;
    int64_t ts_ms; /* when it was dead-lettered (the DLQ record's timestamp) */
    char topic[AIQ_TOPIC_MAX], kind[64], job_id[HDR_MAX], message[HDR_MAX];
    char orig_part[24], orig_off[24];
} dlq_rec_t;

typedef struct dlq_run {
    const aiq_admin_dlq_opts_t *o;
    char dlq[AIQ_TOPIC_MAX];
    int64_t since_ms;
    long matched, replayed, skipped, failed;
    rd_kafka_t *producer; /* replay without --dry-run only */
    json_t *list;         /* list --json only */
} dlq_run_t;

void aiq_admin_dlq_usage(FILE *out)
{
    fprintf(out,
            "Usage: aiq-admin [options] dlq list [--limit N] [--kind K] [--job-id ID]\n"
            "                                    [--since RFC3339] [--json]\n"
            "       aiq-admin [options] dlq replay [--kind K] [--job-id ID] [--since T]\n"
            "                                    [--limit N] [--dry-run] [--to TOPIC]\n"
            "                                    [--refresh-deadline] [--json]\n\n"
            "list    every dead letter of <prefix>dlq from its beginning to its current end\n"
            "        (nothing is committed): partition and offset, when it was dead-lettered,\n"
            "        the original topic/partition/offset, error kind, job id and message.\n"
            "replay  re-produces the value of each chosen dead letter to its original job\n"
            "        topic (header aiq.dlq.original-topic) or to --to TOPIC, with the header\n"
            "        aiq.replayed-from: <dlq>/<partition>/<offset>, and waits for every\n"
            "        delivery. Skipped unless --to is given: records whose original topic\n"
            "        is not one of the four job topics, and reply_failed records (their\n"
            "        value is a result, not a job). Replay does NOT remove anything from the\n"
            "        DLQ (Kafka cannot delete single records): a second replay replays again.\n"
            "        A replayed job keeps its created_at and timeout_ms, so an old one may be\n"
            "        answered 'expired'; --refresh-deadline rewrites created_at to now.\n"
            "        A record that failed for a reason that still holds (e.g. not_json) is\n"
            "        simply dead-lettered again: choose with --kind.\n\n"
            "Filters: --kind K (not_json, invalid_job, too_large, reply_failed), --job-id ID,\n"
            "         --since T (dead-lettered at or after T), --limit N (at most N records).\n"
            "--dry-run prints what would be replayed and produces nothing.\n"
            "--json: list prints a JSON array; replay prints a JSON summary on stdout and\n"
            "its per-record lines on stderr.\n"
            "Exit codes: 0 done, 1 failure (missing topic, broker, undelivered record),\n"
            "2 usage error.\n");
}

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    dlq_run_t *run = opaque;
    if (m->err) {
        run->failed++;
        fprintf(stderr, "aiq-admin: replay to %s failed: %s\n", rd_kafka_topic_name(m->rkt),
                rd_kafka_err2str(m->err));
    } else
        run->replayed++;
}

static rd_kafka_t *client(const char *brokers, rd_kafka_type_t type, dlq_run_t *run)
{
    int producer = type == RD_KAFKA_PRODUCER;
    aiq_kafka_params_t params = {
        .brokers = brokers, .group_id = producer ? NULL : "aiq-admin-dlq", .env_props = 1};
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk = NULL;
    aiq_err_t err = {0};
    if (aiq_kafka_conf_new(&conf, producer ? AIQ_KAFKA_CLI_PRODUCER : AIQ_KAFKA_READER, &params,
                           &err)) {
        fprintf(stderr, "aiq-admin: %s\n", err.msg);
        return NULL;
    }
    if (producer) {
        rd_kafka_conf_set_dr_msg_cb(conf, on_dr);
        rd_kafka_conf_set_opaque(conf, run);
    }
    if (aiq_kafka_connect(&rk, type, conf, AIQ_KPROPS_CONNECT_MS, &err))
        fprintf(stderr, "aiq-admin: %s\n", err.msg);
    return rk;
}

/* Copies header `name` as a C string ("" when absent; cut to cap - 1 bytes). */
static void header(const rd_kafka_message_t *m, const char *name, char *buf, size_t cap)
{
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t n = 0;
    buf[0] = '\0';
    if (rd_kafka_message_headers(m, &h) || rd_kafka_header_get_last(h, name, &v, &n) || !v)
        return;
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, v, n);
    buf[n] = '\0';
}

static void decode(const rd_kafka_message_t *m, dlq_rec_t *r)
{
    r->msg = m;
    r->ts_ms = rd_kafka_message_timestamp(m, NULL);
    header(m, "aiq.dlq.original-topic", r->topic, sizeof(r->topic));
    header(m, "aiq.dlq.original-partition", r->orig_part, sizeof(r->orig_part));
    header(m, "aiq.dlq.original-offset", r->orig_off, sizeof(r->orig_off));
    header(m, "aiq.dlq.error-kind", r->kind, sizeof(r->kind));
    header(m, "aiq.dlq.error-message", r->message, sizeof(r->message));
    header(m, "aiq.job-id", r->job_id, sizeof(r->job_id));
    if (!r->job_id[0] && m->key && m->key_len) {
        size_t n = m->key_len < sizeof(r->job_id) - 1 ? m->key_len : sizeof(r->job_id) - 1;
        memcpy(r->job_id, m->key, n);
        r->job_id[n] = '\0';
    }
}

static int wanted(const dlq_run_t *run, const dlq_rec_t *r)
{
    const aiq_admin_dlq_opts_t *o = run->o;
    return (!o->kind || !strcmp(o->kind, r->kind)) &&
           (!o->job_id || !strcmp(o->job_id, r->job_id)) &&
           (!run->since_ms || r->ts_ms >= run->since_ms);
}

static const char *or_dash(const char *s)
{
    return *s ? s : "-";
}

static json_t *str_or_null(const char *s)
{
    return *s ? json_string(s) : json_null();
}

/* A header that holds a number, as a JSON integer (null when absent or not a number). */
static json_t *int_or_null(const char *s)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    return *s && !*end ? json_integer((json_int_t)v) : json_null();
}

static void list_one(dlq_run_t *run, const dlq_rec_t *r)
{
    char ts[40];
    aiq_time_format(r->ts_ms, ts, sizeof(ts));
    if (run->list) {
        json_t *j =
            json_pack("{s:i,s:I,s:s,s:o,s:o,s:o,s:s,s:s,s:s}", "partition", (int)r->msg->partition,
                      "offset", (json_int_t)r->msg->offset, "timestamp", ts, "original_topic",
                      str_or_null(r->topic), "original_partition", int_or_null(r->orig_part),
                      "original_offset", int_or_null(r->orig_off), "error_kind", r->kind, "job_id",
                      r->job_id, "error_message", r->message);
        if (j)
            json_array_append_new(run->list, j);
        return;
    }
    char origin[AIQ_TOPIC_MAX + 60];
    snprintf(origin, sizeof(origin), "%s/%s/%s", or_dash(r->topic), or_dash(r->orig_part),
             or_dash(r->orig_off));
    printf("%4d %10lld  %-24s  %-40s %-12s %-24s %s\n", (int)r->msg->partition,
           (long long)r->msg->offset, ts, origin, or_dash(r->kind), or_dash(r->job_id), r->message);
}

/* The value to replay: the original bytes, or the job with created_at set to now. The
 * caller frees *owned (NULL when the original bytes are used). */
static void replay_value(const dlq_run_t *run, const rd_kafka_message_t *m, const void **val,
                         size_t *len, char **owned)
{
    *val = m->payload;
    *len = m->len;
    *owned = NULL;
    if (!run->o->refresh_deadline)
        return;
    json_t *doc = json_loadb(m->payload, m->len, 0, NULL);
    char now[40];
    if (json_is_object(doc) &&
        json_object_set_new(doc, "created_at",
                            json_string(aiq_time_format(aiq_now_ms(), now, sizeof(now)))) == 0 &&
        (*owned = json_dumps(doc, JSON_COMPACT)) != NULL) {
        *val = *owned;
        *len = strlen(*owned);
    }
    json_decref(doc);
}

/* Why r is not replayed, or NULL when it is. */
static const char *skip_reason(const dlq_run_t *run, const dlq_rec_t *r)
{
    if (run->o->to)
        return NULL;
    if (!strcmp(r->kind, "reply_failed"))
        return "reply_failed holds a result, not a job (use --to to send it anyway)";
    if (aiq_topic_priority(run->o->prefix, r->topic) < 0)
        return "original topic is not a job topic (use --to)";
    return NULL;
}

static int replay_one(dlq_run_t *run, const dlq_rec_t *r)
{
    const rd_kafka_message_t *m = r->msg;
    const char *why = skip_reason(run, r), *to = run->o->to ? run->o->to : r->topic;
    /* With --json stdout holds only the summary document; the per-record lines go to stderr. */
    FILE *out = run->o->json ? stderr : stdout;
    if (why) {
        run->skipped++;
        fprintf(out, "skip   %s/%d/%lld: %s\n", run->dlq, (int)m->partition, (long long)m->offset,
                why);
        return 0;
    }
    fprintf(out, "%s %s/%d/%lld -> %s (%s, job %s)\n", run->o->dry_run ? "would replay" : "replay",
            run->dlq, (int)m->partition, (long long)m->offset, to, or_dash(r->kind),
            or_dash(r->job_id));
    if (run->o->dry_run)
        return 0;
    char from[AIQ_TOPIC_MAX + 48];
    snprintf(from, sizeof(from), "%s/%d/%lld", run->dlq, (int)m->partition, (long long)m->offset);
    rd_kafka_headers_t *h = rd_kafka_headers_new(1);
    rd_kafka_header_add(h, "aiq.replayed-from", -1, from, -1);
    const void *val;
    size_t len;
    char *owned;
    replay_value(run, m, &val, &len, &owned);
    rd_kafka_resp_err_t e = rd_kafka_producev(
        run->producer, RD_KAFKA_V_TOPIC(to), RD_KAFKA_V_KEY(m->key, m->key_len),
        RD_KAFKA_V_VALUE((void *)val, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    free(owned);
    if (e) {
        rd_kafka_headers_destroy(h); /* producev took it over only on success */
        run->failed++;
        fprintf(stderr, "aiq-admin: replay of %s: %s\n", from, rd_kafka_err2str(e));
        return 1;
    }
    rd_kafka_poll(run->producer, 0);
    return 0;
}

/* Handles one DLQ record. Returns 1 when --limit is reached. */
static int on_record(dlq_run_t *run, const rd_kafka_message_t *m, int replay)
{
    dlq_rec_t r;
    decode(m, &r);
    if (!wanted(run, &r))
        return 0;
    run->matched++;
    if (replay)
        replay_one(run, &r);
    else
        list_one(run, &r);
    return run->o->limit > 0 && run->matched >= run->o->limit;
}

/* Assigns every non-empty partition from its beginning; end[p] is its end now. Returns
 * the number of partitions to read, or -1 (printed). */
static int assign_all(rd_kafka_t *rk, const char *topic, int64_t *end, int n)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(n);
    int open = 0;
    for (int p = 0; p < n; p++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, DLQ_TIMEOUT_MS);
        if (e) {
            fprintf(stderr, "aiq-admin: %s/%d: %s\n", topic, p, rd_kafka_err2str(e));
            rd_kafka_topic_partition_list_destroy(parts);
            return -1;
        }
        end[p] = hi;
        if (hi > lo) {
            rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
            open++;
        }
    }
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    return open;
}

/* Marks partition p read to its end; returns 1 the first time. */
static int finish(char *fin, int n, int32_t p)
{
    if (p < 0 || p >= n || fin[p])
        return 0;
    fin[p] = 1;
    return 1;
}

/* Polls until every assigned partition reached end[] (or --limit, or the timeout). */
static int drain(dlq_run_t *run, rd_kafka_t *rk, const int64_t *end, char *fin, int n, int open,
                 int replay)
{
    int64_t until = aiq_mono_ms() + DLQ_TIMEOUT_MS;
    while (open > 0 && aiq_mono_ms() < until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        int32_t p = m->partition;
        /* Stop at the end seen at the start: records added meanwhile (e.g. replays that
         * were dead-lettered again) are not handled twice. */
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            open -= finish(fin, n, p);
        else if (!m->err && p >= 0 && p < n && !fin[p] && m->offset < end[p]) {
            int limit_hit = on_record(run, m, replay);
            if (m->offset + 1 >= end[p])
                open -= finish(fin, n, p);
            if (limit_hit)
                open = 0;
        }
        rd_kafka_message_destroy(m);
    }
    if (open > 0)
        fprintf(stderr, "aiq-admin: %s not read to its end within %d s\n", run->dlq,
                DLQ_TIMEOUT_MS / 1000);
    return open > 0 ? 1 : 0;
}

/* Reads the DLQ from its beginning to the end it has now, handing each record to
 * on_record. Returns 0 or 1 (printed). */
static int read_dlq(dlq_run_t *run, int replay)
{
    rd_kafka_t *rk = client(run->o->brokers, RD_KAFKA_CONSUMER, run);
    if (!rk)
        return 1;
    int n = 0, rc = 1;
    if (aiq_kafka_partition_count(rk, run->dlq, DLQ_TIMEOUT_MS, &n, NULL))
        n = 0;
    n = n > MAX_PARTS ? MAX_PARTS : n;
    int64_t *end = n > 0 ? calloc((size_t)n, sizeof(*end)) : NULL;
    char *fin = n > 0 ? calloc((size_t)n, 1) : NULL;
    if (n <= 0)
        fprintf(stderr, "aiq-admin: topic %s does not exist (aiq-admin topics create makes it)\n",
                run->dlq);
    else if (!end || !fin)
        fprintf(stderr, "aiq-admin: out of memory\n");
    else {
        rd_kafka_poll_set_consumer(rk);
        int open = assign_all(rk, run->dlq, end, n);
        if (open >= 0)
            rc = drain(run, rk, end, fin, n, open, replay);
    }
    free(end);
    free(fin);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return rc;
}

static int dlq_list(dlq_run_t *run)
{
    if (run->o->json && !(run->list = json_array())) {
        fprintf(stderr, "aiq-admin: out of memory\n");
        return 1;
    }
    if (!run->list)
        printf("%4s %10s  %-24s  %-40s %-12s %-24s %s\n", "PART", "OFFSET", "DEAD-LETTERED",
               "ORIGIN (TOPIC/PART/OFFSET)", "KIND", "JOB-ID", "MESSAGE");
    int rc = read_dlq(run, 0);
    if (rc == 0 && run->list) {
        rc = json_dumpf(run->list, stdout, JSON_INDENT(2)) ? 1 : 0;
        printf("\n");
    } else if (rc == 0)
        printf("(%ld record%s)\n", run->matched, run->matched == 1 ? "" : "s");
    json_decref(run->list);
    return rc;
}

static int dlq_replay(dlq_run_t *run)
{
    if (!run->o->dry_run && !(run->producer = client(run->o->brokers, RD_KAFKA_PRODUCER, run)))
        return 1;
    int rc = read_dlq(run, 1);
    if (run->producer) {
        /* Every produced record must be acknowledged before we report it replayed. */
        if (rd_kafka_flush(run->producer, DLQ_TIMEOUT_MS))
            fprintf(stderr, "aiq-admin: not every replayed record was acknowledged\n");
        rd_kafka_poll(run->producer, 0);
        long pending = run->matched - run->skipped - run->replayed - run->failed;
        if (pending > 0)
            run->failed += pending;
        rd_kafka_destroy(run->producer);
        run->producer = NULL;
    }
    long would = run->matched - run->skipped;
    if (run->o->json)
        printf("{\"dry_run\": %s, \"matched\": %ld, \"replayed\": %ld, \"would_replay\": %ld, "
               "\"skipped\": %ld, \"failed\": %ld}\n",
               run->o->dry_run ? "true" : "false", run->matched, run->replayed,
               run->o->dry_run ? would : 0, run->skipped, run->failed);
    else if (run->o->dry_run)
        printf("dry run: would replay %ld, skip %ld; nothing produced\n", would, run->skipped);
    else
        printf("replayed %ld, skipped %ld, failed %ld (the DLQ keeps its records)\n", run->replayed,
               run->skipped, run->failed);
    return rc || run->failed ? 1 : 0;
}

int aiq_admin_dlq(const aiq_admin_dlq_opts_t *o, const char *verb)
{
    dlq_run_t run = {.o = o};
    int is_list = !strcmp(verb, "list"), is_replay = !strcmp(verb, "replay");
    if (!is_list && !is_replay) {
        fprintf(stderr,
                "aiq-admin: usage: dlq list|replay [filters]; see 'aiq-admin dlq --help'\n");
        return 2;
    }
    if (is_list && (o->dry_run || o->to || o->refresh_deadline)) {
        fprintf(stderr, "aiq-admin: --dry-run, --to and --refresh-deadline are for dlq replay\n");
        return 2;
    }
    if (o->since && aiq_time_parse(o->since, &run.since_ms)) {
        fprintf(stderr, "aiq-admin: --since '%s' is not an RFC 3339 time\n", o->since);
        return 2;
    }
    if (o->to && !aiq_topic_name_valid(o->to)) {
        fprintf(stderr, "aiq-admin: --to '%s' is not a valid topic name\n", o->to);
        return 2;
    }
    if (aiq_topic_dlq(o->prefix, run.dlq, sizeof(run.dlq)) || !aiq_topic_name_valid(run.dlq)) {
        fprintf(stderr, "aiq-admin: --prefix '%s' makes an invalid topic name\n", o->prefix);
        return 2;
    }
    return is_list ? dlq_list(&run) : dlq_replay(&run);
}
