/* aiq-submit: submit jobs from flags, a JSON document or NDJSON, optionally wait for the
 * results and print a latency summary. */
#include "aiq/producer.h"
#include "batch_cli.h"
#include "config.h"
#include "idmap.h"
#include "kprops.h"
#include "result_read.h"
#include "timeutil.h"
#include "topics.h"

#include <librdkafka/rdkafka.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_BYTES     (16u << 20)
#define CONNECT_TIMEOUT_MS 20000 /* a cluster that does not answer this long is an error */

typedef struct pending_job {
    char id[AIQ_JOB_ID_CAP];
    int prio;
    int64_t sent_ms;
    int64_t latency_ms; /* -1 until answered */
    int answered;
} pending_job_t;

/* Submitted jobs in order, and an index by id so each result finds its job in O(1). */
typedef struct job_table {
    pending_job_t *jobs;
    size_t n, cap;
    aiq_idmap_t *index; /* id -> position in jobs */
} job_table_t;

typedef struct opts {
    const char *brokers, *prefix, *operation, *payload, *text, *persona, *model, *priority;
    const char *reply_to, *system, *id, *correlation_id, *json_doc, *file;
    long long timeout_ms, wait_timeout_ms;
    int wait, summary, quiet, check;
    aiq__batch_opts_t batch; /* used when --results is given */
} opts_t;

typedef struct run {
    opts_t o;
    aiq_producer_t *p;
    job_table_t table;
    uint64_t submitted, acked, delivery_failed, invalid, answered, duplicates;
    aiq__status_tally_t by_status;
    int64_t t0;
} run_t;

static pending_job_t *table_find(job_table_t *t, const char *id)
{
    uint64_t i;
    return t->index && aiq_idmap_get(t->index, id, &i) == 0 ? &t->jobs[i] : NULL;
}

static pending_job_t *table_add(job_table_t *t, const char *id, int prio)
{
    if (!t->index && !(t->index = aiq_idmap_new()))
        return NULL;
    if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 1024;
        pending_job_t *nj = realloc(t->jobs, ncap * sizeof(*nj));
        if (!nj)
            return NULL;
        t->jobs = nj;
        t->cap = ncap;
    }
    if (aiq_idmap_put(t->index, id, t->n) < 0)
        return NULL;
    pending_job_t *j = &t->jobs[t->n++];
    memset(j, 0, sizeof(*j));
    snprintf(j->id, sizeof(j->id), "%s", id);
    j->prio = prio;
    j->sent_ms = aiq_mono_ms();
    j->latency_ms = -1;
    return j;
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "Usage: aiq-submit [options] [FILE]\n\n"
        "Submits AI jobs to aiq. The job comes from flags (--operation ...), from --json, or\n"
        "as NDJSON (one job per line) from FILE or '-' (stdin). Missing ids and created_at\n"
        "are filled in; each job goes to <prefix>jobs.<priority>. Without --wait the id of\n"
        "every job Kafka acknowledged is printed; with --wait each result is printed as one\n"
        "JSON line when it arrives.\n\n"
        "Job from flags:\n"
        "  -o, --operation OP      operation name (e.g. vc-analysis)\n"
        "  -p, --priority P        critical | high | normal (default) | low\n"
        "      --payload JSON      operation input object\n"
        "  -t, --text TEXT         a user message (Converse messages) instead of a payload\n"
        "      --system TEXT       system prompt\n"
        "      --persona NAME      persona\n"
        "  -m, --model ID          model id (default: the worker's)\n"
        "      --id ID             job id (default: a random UUID)\n"
        "      --correlation-id X  echoed in the result\n"
        "      --reply-to TOPIC    result topic (default <prefix>results)\n"
        "      --timeout-ms N      deadline from now (default: the worker's, 45000); for\n"
        "                          a --results batch, the deadline of lines setting none\n"
        "  -j, --json DOC          one job document\n\n"
        "Waiting:\n"
        "  -w, --wait              wait for every job's result and print it\n"
        "      --wait-timeout-ms N give up waiting after N ms (default 120000)\n"
        "      --summary           print counts, throughput and latency percentiles per\n"
        "                          priority to stderr at the end (implies --wait)\n\n"
        "Batch (NDJSON FILE or '-' in, one result per line out):\n"
        "      --results OUT       write {\"line\":N,\"job_id\":..,\"result\":{..}} per input\n"
        "                          line to OUT (implies --wait); the batch's progress is\n"
        "                          kept in OUT.state. -p overrides each job's priority.\n"
        "      --batch-id ID       a job without id gets id ID-<line> (default: from the\n"
        "                          file's name, size and mtime; required for stdin)\n"
        "      --resume            continue the batch of OUT.state: acknowledged lines are\n"
        "                          not sent again, earlier results are kept and collected\n"
        "      --strict            check every line first; send nothing if one is invalid\n"
        "                          (default: report invalid lines and skip them)\n"
        "      --rate N            submit at most N jobs per second\n"
        "      --max-lag N         pause while more than N jobs are unanswered\n"
        "      --no-progress       no progress line (default: live on a terminal, else\n"
        "                          every 5 s)\n\n"
        "Connection:\n"
        "  -b, --brokers LIST      Kafka bootstrap servers (env AIQ_KAFKA_BROKERS,\n"
        "                          default 127.0.0.1:9092)\n"
        "      --prefix PREFIX     topic prefix (env AIQ_KAFKA_TOPIC_PREFIX, default aiq.)\n"
        "  -X NAME=VALUE           librdkafka property for every Kafka client, e.g.\n"
        "                          -X security.protocol=SASL_SSL -X sasl.mechanisms=SCRAM-SHA-512\n"
        "                          (same as env AIQ_KAFKA_RDKAFKA_<NAME>, '.' -> '_',\n"
        "                          e.g. AIQ_KAFKA_RDKAFKA_SASL_PASSWORD; prefer the env\n"
        "                          for secrets)\n"
        "  -q, --quiet             print nothing per job\n"
        "      --check             only check the jobs against the schema (no Kafka);\n"
        "                          prints 'ok' or the reason per job\n"
        "  -h, --help, -V, --version\n\n"
        "Exit status: 0 when every job was accepted (and, with --wait, answered); 1 when\n"
        "some input was invalid, undeliverable or unanswered; 2 on usage errors.\n");
}

/* The batch flags; returns 0 or 2 (usage error, reported). */
static int batch_opt(aiq__batch_opts_t *b, int c, const char *arg)
{
    char *end;
    double v = 0;
    if (c == 24 || c == 25) {
        v = strtod(arg, &end);
        if (*end || !(v > 0) || v > 1e9) {
            fprintf(stderr, "aiq-submit: %s: '%s' is not a positive number\n",
                    c == 24 ? "--rate" : "--max-lag", arg);
            return 2;
        }
    }
    switch (c) {
    case 20:
        b->results = arg;
        break;
    case 21:
        b->batch_id = arg;
        break;
    case 22:
        b->resume = 1;
        break;
    case 23:
        b->strict = 1;
        break;
    case 24:
        b->rate = v;
        break;
    case 25:
        b->max_lag = (long long)v;
        break;
    default:
        b->progress = 0;
        break;
    }
    return 0;
}

static int parse_opts(opts_t *o, int argc, char **argv)
{
    static const struct option lo[] = {{"operation", 1, 0, 'o'},
                                       {"priority", 1, 0, 'p'},
                                       {"payload", 1, 0, 1},
                                       {"text", 1, 0, 't'},
                                       {"system", 1, 0, 2},
                                       {"persona", 1, 0, 3},
                                       {"model", 1, 0, 'm'},
                                       {"id", 1, 0, 4},
                                       {"correlation-id", 1, 0, 5},
                                       {"reply-to", 1, 0, 6},
                                       {"timeout-ms", 1, 0, 7},
                                       {"json", 1, 0, 'j'},
                                       {"wait", 0, 0, 'w'},
                                       {"wait-timeout-ms", 1, 0, 8},
                                       {"summary", 0, 0, 9},
                                       {"brokers", 1, 0, 'b'},
                                       {"prefix", 1, 0, 10},
                                       {"quiet", 0, 0, 'q'},
                                       {"check", 0, 0, 11},
                                       {"help", 0, 0, 'h'},
                                       {"version", 0, 0, 'V'},
                                       {"results", 1, 0, 20},
                                       {"batch-id", 1, 0, 21},
                                       {"resume", 0, 0, 22},
                                       {"strict", 0, 0, 23},
                                       {"rate", 1, 0, 24},
                                       {"max-lag", 1, 0, 25},
                                       {"no-progress", 0, 0, 26},
                                       {0, 0, 0, 0}};
    const char *env_b = getenv("AIQ_KAFKA_BROKERS"), *env_p = getenv("AIQ_KAFKA_TOPIC_PREFIX");
    o->brokers = env_b && *env_b ? env_b : "127.0.0.1:9092";
    o->prefix = env_p ? env_p : "aiq.";
    o->wait_timeout_ms = 120000;
    o->batch.progress = -1;
    int c;
    while ((c = getopt_long(argc, argv, "o:p:t:m:j:wb:qhVX:", lo, NULL)) != -1) {
        char *end;
        aiq_err_t kerr = {0};
        switch (c) {
        case 'X':
            if (aiq_kprops_set_arg(optarg, &kerr)) {
                fprintf(stderr, "aiq-submit: %s\n", kerr.msg);
                return 2;
            }
            break;
        case 'o':
            o->operation = optarg;
            break;
        case 'p':
            o->priority = optarg;
            break;
        case 1:
            o->payload = optarg;
            break;
        case 't':
            o->text = optarg;
            break;
        case 2:
            o->system = optarg;
            break;
        case 3:
            o->persona = optarg;
            break;
        case 'm':
            o->model = optarg;
            break;
        case 4:
            o->id = optarg;
            break;
        case 5:
            o->correlation_id = optarg;
            break;
        case 6:
            o->reply_to = optarg;
            break;
        case 7:
        case 8: {
            long long v = strtoll(optarg, &end, 10);
            if (*end || v <= 0) {
                fprintf(stderr, "aiq-submit: %s: '%s' is not a positive number\n",
                        c == 7 ? "--timeout-ms" : "--wait-timeout-ms", optarg);
                return 2;
            }
            *(c == 7 ? &o->timeout_ms : &o->wait_timeout_ms) = v;
            break;
        }
        case 'j':
            o->json_doc = optarg;
            break;
        case 'w':
            o->wait = 1;
            break;
        case 9:
            o->summary = o->wait = 1;
            break;
        case 'b':
            o->brokers = optarg;
            break;
        case 10:
            o->prefix = optarg;
            break;
        case 'q':
            o->quiet = 1;
            break;
        case 11:
            o->check = 1;
            break;
        case 20:
        case 21:
        case 22:
        case 23:
        case 24:
        case 25:
        case 26:
            if (batch_opt(&o->batch, c, optarg))
                return 2;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case 'V':
            printf("aiq-submit %s (librdkafka %s)\n", AIQ_VERSION, rd_kafka_version_str());
            exit(0);
        default:
            fprintf(stderr, "aiq-submit: see --help\n");
            return 2;
        }
    }
    if (optind < argc)
        o->file = argv[optind++];
    if (optind < argc || (!!o->file + !!o->json_doc + !!o->operation) != 1) {
        fprintf(stderr, "aiq-submit: give exactly one of --operation, --json or FILE ('-' for "
                        "stdin); see --help\n");
        return 2;
    }
    aiq__batch_opts_t *b = &o->batch;
    if (!b->results && (b->batch_id || b->resume || b->strict || b->rate > 0 || b->max_lag)) {
        fprintf(stderr, "aiq-submit: --batch-id, --resume, --strict, --rate and --max-lag "
                        "need --results\n");
        return 2;
    }
    if (b->results && !o->file) {
        fprintf(stderr, "aiq-submit: --results needs an NDJSON FILE or '-'\n");
        return 2;
    }
    b->brokers = o->brokers;
    b->prefix = o->prefix;
    b->reply_to = o->reply_to;
    b->file = o->file;
    b->priority = o->priority;
    b->wait_timeout_ms = o->wait_timeout_ms;
    b->timeout_ms = o->timeout_ms;
    return 0;
}

/* Builds a job document from the flags. */
static char *job_from_flags(const opts_t *o, char *err, size_t errlen)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "operation", json_string(o->operation));
    if (o->payload) {
        json_error_t je;
        json_t *pl = json_loads(o->payload, 0, &je);
        if (!pl) {
            snprintf(err, errlen, "--payload: not JSON: %s", je.text);
            json_decref(doc);
            return NULL;
        }
        json_object_set_new(doc, "payload", pl);
    }
    if (o->text)
        json_object_set_new(
            doc, "messages",
            json_pack("[{s:s,s:[{s:s}]}]", "role", "user", "content", "text", o->text));
    if (!o->payload && !o->text)
        json_object_set_new(doc, "payload", json_object());
    const char *keys[] = {"priority", "system",         "persona", "model",
                          "id",       "correlation_id", "reply_to"};
    const char *vals[] = {o->priority, o->system,         o->persona, o->model,
                          o->id,       o->correlation_id, o->reply_to};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (vals[i])
            json_object_set_new(doc, keys[i], json_string(vals[i]));
    if (o->timeout_ms)
        json_object_set_new(doc, "timeout_ms", json_integer(o->timeout_ms));
    char *s = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    return s;
}

static void on_delivery(void *opaque, const char *job_id, int ok, const char *errstr)
{
    run_t *r = opaque;
    if (ok) {
        r->acked++;
        if (!r->o.wait && !r->o.quiet)
            printf("%s\n", job_id);
    } else {
        r->delivery_failed++;
        fprintf(stderr, "aiq-submit: job %s was not accepted by Kafka: %s\n", job_id, errstr);
    }
}

/* Submits one document; a full local queue is waited out, never dropped. */
static int submit_one(run_t *r, const char *doc, size_t len, const char *where)
{
    char id[AIQ_JOB_ID_CAP], err[512];
    int rc, prio = AIQ_PRIO_NORMAL;
    if (r->o.check) {
        rc = aiq_job_check(doc, len, err, sizeof(err));
        if (rc)
            r->invalid++;
        else
            r->submitted++;
        printf("%s: %s\n", where, rc ? err : "ok");
        return rc;
    }
    /* The library reports the priority it used: no second parse of the job here. */
    while ((rc = aiq_producer_submit_ex(r->p, doc, len, NULL, id, sizeof(id), &prio, err,
                                        sizeof(err))) == AIQ_SUBMIT_EFULL)
        aiq_producer_poll(r->p, 100);
    if (rc) {
        r->invalid++;
        fprintf(stderr, "aiq-submit: %s: %s\n", where, err);
        return rc;
    }
    r->submitted++;
    if (r->o.wait && !table_add(&r->table, id, prio)) {
        fprintf(stderr, "aiq-submit: out of memory\n");
        return AIQ_SUBMIT_ENOMEM;
    }
    aiq_producer_poll(r->p, 0);
    return 0;
}

static int submit_stream(run_t *r, FILE *in, const char *name)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    while ((n = getline(&line, &cap, in)) != -1) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0)
            continue;
        char where[300];
        snprintf(where, sizeof(where), "%s:%ld", name, lineno);
        if ((size_t)n > LINE_MAX_BYTES) {
            r->invalid++;
            fprintf(stderr, "aiq-submit: %s: line longer than %u bytes\n", where, LINE_MAX_BYTES);
            continue;
        }
        if (submit_one(r, line, (size_t)n, where) == AIQ_SUBMIT_ENOMEM)
            break;
    }
    free(line);
    return 0;
}

static void handle_result(run_t *r, char *json, const char *key)
{
    pending_job_t *j = table_find(&r->table, key);
    if (!j)
        return; /* someone else's result on a shared topic */
    if (j->answered) {
        r->duplicates++; /* at-least-once: the same job answered twice */
        return;
    }
    j->answered = 1;
    j->latency_ms = aiq_mono_ms() - j->sent_ms;
    r->answered++;
    json_t *doc = aiq__result_parse(json);
    aiq__result_info_t info;
    aiq__result_info(doc, &info);
    aiq__status_tally_add(&r->by_status, info.status);
    json_decref(doc);
    if (!r->o.quiet)
        printf("%s\n", json);
}

static int wait_results(run_t *r, aiq_results_t *res)
{
    int64_t until = aiq_mono_ms() + r->o.wait_timeout_ms, last_note = aiq_mono_ms();
    while (r->answered < r->submitted && aiq_mono_ms() < until) {
        char *json = NULL, key[AIQ_JOB_ID_CAP], err[512];
        aiq_producer_poll(r->p, 0);
        int rc = aiq_results_next(res, 200, &json, key, sizeof(key), err, sizeof(err));
        if (rc < 0) {
            fprintf(stderr, "aiq-submit: reading results: %s\n", err);
            return rc;
        }
        if (rc == 1) {
            handle_result(r, json, key);
            free(json);
        }
        if (aiq_mono_ms() - last_note > 5000) {
            last_note = aiq_mono_ms();
            fprintf(stderr, "aiq-submit: %llu/%llu answered\n", (unsigned long long)r->answered,
                    (unsigned long long)r->submitted);
        }
    }
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t pct(const int64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static void print_summary(run_t *r)
{
    double secs = (double)(aiq_mono_ms() - r->t0) / 1000.0;
    fprintf(stderr, "\n== aiq-submit summary ==\n");
    fprintf(stderr,
            "jobs submitted: %llu   accepted by Kafka: %llu   invalid: %llu   "
            "results: %llu   duplicates: %llu   unanswered: %llu\n",
            (unsigned long long)r->submitted, (unsigned long long)r->acked,
            (unsigned long long)r->invalid, (unsigned long long)r->answered,
            (unsigned long long)r->duplicates, (unsigned long long)(r->submitted - r->answered));
    fprintf(stderr, "by status:");
    for (int i = 0; i < r->by_status.n; i++)
        fprintf(stderr, " %s=%llu", r->by_status.names[i],
                (unsigned long long)r->by_status.counts[i]);
    fprintf(stderr, "\nwall time: %.2f s   throughput: %.1f results/s\n", secs,
            secs > 0 ? (double)r->answered / secs : 0.0);
    fprintf(stderr, "%-9s %7s %9s %9s %9s   (end-to-end latency, submit to result)\n", "priority",
            "results", "p50 ms", "p95 ms", "p99 ms");
    int64_t *lat = malloc((r->table.n + 1) * sizeof(*lat));
    for (int p = 0; lat && p < AIQ_PRIO_COUNT; p++) {
        size_t n = 0;
        for (size_t i = 0; i < r->table.n; i++)
            if (r->table.jobs[i].prio == p && r->table.jobs[i].answered)
                lat[n++] = r->table.jobs[i].latency_ms;
        qsort(lat, n, sizeof(*lat), cmp_i64);
        fprintf(stderr, "%-9s %7zu %9lld %9lld %9lld\n", aiq_priority_name((aiq_priority_t)p), n,
                (long long)pct(lat, n, 0.50), (long long)pct(lat, n, 0.95),
                (long long)pct(lat, n, 0.99));
    }
    free(lat);
}

static void list_unanswered(run_t *r)
{
    size_t shown = 0;
    for (size_t i = 0; i < r->table.n && shown < 20; i++) {
        if (!r->table.jobs[i].answered) {
            fprintf(stderr, "aiq-submit: no result for %s\n", r->table.jobs[i].id);
            shown++;
        }
    }
}

static int submit_all(run_t *r)
{
    if (r->o.operation || r->o.json_doc) {
        char err[512];
        char *doc = r->o.json_doc ? strdup(r->o.json_doc) : job_from_flags(&r->o, err, sizeof(err));
        if (!doc) {
            fprintf(stderr, "aiq-submit: %s\n", err);
            return 2;
        }
        submit_one(r, doc, strlen(doc), r->o.json_doc ? "--json" : "flags");
        free(doc);
        return 0;
    }
    FILE *in = strcmp(r->o.file, "-") == 0 ? stdin : fopen(r->o.file, "r");
    if (!in) {
        fprintf(stderr, "aiq-submit: cannot open %s\n", r->o.file);
        return 2;
    }
    submit_stream(r, in, strcmp(r->o.file, "-") == 0 ? "stdin" : r->o.file);
    if (in != stdin)
        fclose(in);
    return 0;
}

int main(int argc, char **argv)
{
    run_t r;
    memset(&r, 0, sizeof(r));
    int rc = parse_opts(&r.o, argc, argv);
    if (rc)
        return rc;
    char **props = aiq_kprops_list_env();
    if (!props) {
        fprintf(stderr, "aiq-submit: out of memory\n");
        return 2;
    }
    if (r.o.batch.results && !r.o.check) {
        r.o.batch.kafka_props = (const char *const *)props;
        rc = aiq__batch_run(&r.o.batch);
        aiq_kprops_list_free(props);
        return rc;
    }
    char err[512], reply[AIQ_TOPIC_MAX];
    if (r.o.reply_to)
        snprintf(reply, sizeof(reply), "%s", r.o.reply_to);
    else
        aiq_topic_results(r.o.prefix, reply, sizeof(reply));
    aiq_results_t *res = NULL;
    if (r.o.check) {
        rc = submit_all(&r);
        aiq_kprops_list_free(props);
        return rc ? rc : (r.invalid ? 1 : 0);
    }
    aiq_producer_conf_t pc = {.brokers = r.o.brokers,
                              .topic_prefix = r.o.prefix,
                              .client_id = "aiq-submit",
                              .on_delivery = on_delivery,
                              .opaque = &r,
                              .kafka_props = (const char *const *)props};
    if (r.o.wait && aiq_results_open(&res, r.o.brokers, reply, pc.kafka_props, err, sizeof(err))) {
        fprintf(stderr, "aiq-submit: cannot read results from %s: %s\n", reply, err);
        aiq_kprops_list_free(props);
        return 1;
    }
    /* Fail fast, with the reason, on wrong credentials or an unreachable cluster. */
    if (aiq_producer_new(&r.p, &pc, err, sizeof(err)) ||
        aiq_producer_connect(r.p, CONNECT_TIMEOUT_MS, err, sizeof(err))) {
        fprintf(stderr, "aiq-submit: %s\n", err);
        aiq_producer_free(r.p);
        aiq_results_close(res);
        aiq_kprops_list_free(props);
        return r.p ? 1 : 2;
    }
    r.t0 = aiq_mono_ms();
    rc = submit_all(&r);
    int frc = aiq_producer_flush(r.p, 60000);
    if (frc == AIQ_SUBMIT_EKAFKA && aiq_producer_error(r.p, err, sizeof(err)))
        fprintf(stderr, "aiq-submit: %s\n", err);
    else if (frc)
        fprintf(stderr, "aiq-submit: some jobs were not acknowledged within 60 s\n");
    if (rc == 0 && r.o.wait)
        wait_results(&r, res);
    if (r.o.summary)
        print_summary(&r);
    if (r.o.wait)
        list_unanswered(&r);
    fflush(stdout);
    aiq_results_close(res);
    aiq_producer_free(r.p);
    aiq_kprops_list_free(props);
    free(r.table.jobs);
    aiq_idmap_free(r.table.index);
    if (rc)
        return rc;
    int bad = r.invalid || r.delivery_failed || (r.o.wait && r.answered < r.submitted);
    return bad ? 1 : 0;
}
