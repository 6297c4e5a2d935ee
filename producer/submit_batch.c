/* aiq-submit batch mode: NDJSON jobs in, one result line per input line out.
 *
 * A job without an id gets "<batch-id>-<line>", so a rerun names every job the same way.
 * <results>.state (rewritten atomically every second and at exit) holds the batch id, the
 * time of its first submission and the acknowledged lines as ranges. On --resume the job
 * topics are also read from that time, so jobs the broker took after the last state write
 * (a SIGKILL) are not produced again, and the reply topic is read from that time, so results
 * produced while no submitter ran are collected. */
#include "batch_cli.h"

#include "aiq/producer.h"
#include "idmap.h"
#include "result_read.h"
#include "timeutil.h"
#include "topics.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LINE_MAX_BYTES        (16u << 20)
#define MAX_LINES             100000000ull /* a batch's bound: 100 M lines */
#define RESULTS_PER_TURN      2000         /* results handled per loop turn */
#define CLOCK_MARGIN_MS       5000         /* read topics from a bit before the first submission */
#define BATCH_ID_CAP          80           /* leaves room for "-<line>" within 128 characters */
#define AIQ_BATCH_ID_CAP_LINE (BATCH_ID_CAP + 24)

enum { J_ACKED = 1, J_ANSWERED = 2, J_FAILED = 4 };

typedef struct bjob {
    char *id;
    uint64_t line;
    int64_t sent_ms; /* monotonic, 0 when not sent by this run */
    int32_t latency_ms;
    uint8_t prio, flags;
} bjob_t;

/* Jobs in line order, with an open-addressing index by id. */
typedef struct btable {
    bjob_t *v;
    size_t n, cap;
    aiq_idmap_t *index; /* id -> position in v */
} btable_t;

typedef struct batch {
    const aiq__batch_opts_t *o;
    char batch_id[BATCH_ID_CAP + 1];
    char state_path[4096], reply[AIQ_TOPIC_MAX], name[1024];
    FILE *in, *res;
    aiq_producer_t *p;
    aiq_results_t *rr;
    btable_t t;
    int64_t first_submit_ms, t0, t_sub_end, last_state, last_progress, tb_last;
    double tokens;
    uint64_t lines, invalid, submitted, acked, failed, answered, duplicates, prev_answered;
    uint64_t base_acked; /* acked by earlier runs */
    uint64_t in_tokens, out_tokens;
    aiq__status_tally_t by_status;
    int tty, progress_shown;
} batch_t;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* ---- job table ------------------------------------------------------------------------ */

static bjob_t *table_find(const btable_t *t, const char *id)
{
    uint64_t i;
    return t->index && aiq_idmap_get(t->index, id, &i) == 0 ? &t->v[i] : NULL;
}

static bjob_t *table_add(btable_t *t, const char *id, uint64_t line, int prio)
{
    if (!t->index && !(t->index = aiq_idmap_new()))
        return NULL;
    if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 4096;
        bjob_t *nv = realloc(t->v, ncap * sizeof(*nv));
        if (!nv)
            return NULL;
        t->v = nv;
        t->cap = ncap;
    }
    bjob_t *j = &t->v[t->n];
    memset(j, 0, sizeof(*j));
    if (!(j->id = strdup(id)))
        return NULL;
    j->line = line;
    j->prio = (uint8_t)prio;
    j->latency_ms = -1;
    if (aiq_idmap_put(t->index, id, t->n) < 0) {
        free(j->id);
        return NULL;
    }
    t->n++;
    return j;
}

static void table_free(btable_t *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].id);
    free(t->v);
    aiq_idmap_free(t->index);
}

/* ---- input ---------------------------------------------------------------------------- */

/* Reads the next line into *line (without its end); skips nothing. Returns its length or
 * -1 at the end. */
static ssize_t next_line(FILE *in, char **line, size_t *cap)
{
    ssize_t n = getline(line, cap, in);
    while (n > 0 && ((*line)[n - 1] == '\n' || (*line)[n - 1] == '\r'))
        (*line)[--n] = '\0';
    return n;
}

/* Stdin is copied to a temporary file: --strict and --resume read the input twice. */
static FILE *spool_stdin(void)
{
    FILE *f = tmpfile();
    char buf[65536];
    size_t n;
    while (f && (n = fread(buf, 1, sizeof(buf), stdin)) > 0)
        if (fwrite(buf, 1, n, f) != n) {
            fclose(f);
            return NULL;
        }
    if (f)
        rewind(f);
    return f;
}

static int id_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '-';
}

/* "<file name>-<hash of path, size, mtime>", in the job id alphabet. */
static int derive_batch_id(batch_t *b)
{
    struct stat st;
    if (stat(b->o->file, &st)) {
        fprintf(stderr, "aiq-submit: %s: %s\n", b->o->file, strerror(errno));
        return -1;
    }
    const char *base = strrchr(b->o->file, '/');
    base = base ? base + 1 : b->o->file;
    char key[4200];
    snprintf(key, sizeof(key), "%s|%lld|%lld.%09ld", b->o->file, (long long)st.st_size,
             (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec);
    size_t k = 0;
    for (; base[k] && k < 40; k++)
        b->batch_id[k] = id_char_ok(base[k]) ? base[k] : '_';
    snprintf(b->batch_id + k, sizeof(b->batch_id) - k, "-%016llx",
             (unsigned long long)aiq_idmap_hash(key));
    return 0;
}

static int check_batch_id(const char *id)
{
    size_t n = strlen(id);
    for (size_t i = 0; i < n; i++)
        if (!id_char_ok(id[i]))
            return -1;
    return n >= 1 && n <= BATCH_ID_CAP ? 0 : -1;
}

/* ---- state file ----------------------------------------------------------------------- */

/* [[first, last], ...] of the lines whose jobs have all of `flag`. */
static json_t *line_ranges(const btable_t *t, int flag)
{
    json_t *a = json_array();
    uint64_t lo = 0, hi = 0;
    for (size_t i = 0; i <= t->n; i++) {
        int in = i < t->n && (t->v[i].flags & flag);
        if (in && lo && t->v[i].line == hi + 1) {
            hi = t->v[i].line;
            continue;
        }
        if (lo)
            json_array_append_new(a, json_pack("[I,I]", (json_int_t)lo, (json_int_t)hi));
        lo = hi = in ? t->v[i].line : 0;
    }
    return a;
}

/* Writes the state to a temporary file and renames it over the old one, so a crash leaves
 * either the old or the new state. The results file is flushed first: the state never
 * claims an answer the results file does not hold. */
static int save_state(batch_t *b, int complete)
{
    if (b->res)
        fflush(b->res);
    json_t *st = json_pack(
        "{s:i,s:s,s:s,s:I,s:I,s:I,s:I,s:b,s:o,s:o}", "version", 1, "batch_id", b->batch_id, "input",
        b->name, "first_submit_ms", (json_int_t)b->first_submit_ms, "lines", (json_int_t)b->lines,
        "acked_count", (json_int_t)b->acked, "answered_count", (json_int_t)b->answered, "complete",
        complete, "acked", line_ranges(&b->t, J_ACKED), "answered", line_ranges(&b->t, J_ANSWERED));
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", b->state_path);
    int rc = st ? json_dump_file(st, tmp, JSON_COMPACT) : -1;
    json_decref(st);
    if (rc == 0)
        rc = rename(tmp, b->state_path);
    if (rc)
        fprintf(stderr, "aiq-submit: cannot write %s: %s\n", b->state_path, strerror(errno));
    b->last_state = aiq_mono_ms();
    return rc;
}

/* Marks the jobs of the acked line ranges of a saved state. */
static void mark_ranges(btable_t *t, json_t *ranges)
{
    size_t i = 0, k;
    json_t *r;
    json_array_foreach(ranges, k, r)
    {
        uint64_t lo = (uint64_t)json_integer_value(json_array_get(r, 0));
        uint64_t hi = (uint64_t)json_integer_value(json_array_get(r, 1));
        for (; i < t->n && t->v[i].line < lo; i++)
            ;
        for (; i < t->n && t->v[i].line <= hi; i++)
            t->v[i].flags |= J_ACKED;
    }
}

static int load_state(batch_t *b, json_t **acked)
{
    json_error_t je;
    json_t *st = json_load_file(b->state_path, 0, &je);
    if (!st) {
        fprintf(stderr, "aiq-submit: %s: %s\n", b->state_path, je.text);
        return -1;
    }
    const char *id = json_string_value(json_object_get(st, "batch_id"));
    if (!id || strcmp(id, b->batch_id) != 0) {
        fprintf(stderr,
                "aiq-submit: %s belongs to batch '%s', not '%s' (input changed? give "
                "--batch-id)\n",
                b->state_path, id ? id : "?", b->batch_id);
        json_decref(st);
        return -1;
    }
    b->first_submit_ms = json_integer_value(json_object_get(st, "first_submit_ms"));
    *acked = json_incref(json_object_get(st, "acked"));
    json_decref(st);
    return 0;
}

/* ---- results -------------------------------------------------------------------------- */

static void account(batch_t *b, bjob_t *j, json_t *result)
{
    j->flags |= J_ANSWERED;
    b->answered++;
    aiq__result_info_t info;
    aiq__result_info(result, &info);
    aiq__status_tally_add(&b->by_status, info.status);
    b->in_tokens += info.input_tokens;
    b->out_tokens += info.output_tokens;
}

static int write_line(FILE *f, uint64_t line, const char *id, json_t *result, const char *error)
{
    json_t *o = json_pack("{s:I,s:s,s:O,s:s?}", "line", (json_int_t)line, "job_id", id, "result",
                          result ? result : json_null(), "error", error);
    int rc = o ? json_dumpf(o, f, JSON_COMPACT | JSON_PRESERVE_ORDER) : -1;
    json_decref(o);
    return rc || fputc('\n', f) == EOF ? -1 : 0;
}

static void on_result(batch_t *b, const char *json, const char *key)
{
    bjob_t *j = table_find(&b->t, key);
    if (!j)
        return; /* another producer's result on a shared topic */
    if (j->flags & J_ANSWERED) {
        b->duplicates++; /* at-least-once: the same job answered twice */
        return;
    }
    json_t *doc = aiq__result_parse(json);
    if (j->sent_ms)
        j->latency_ms = (int32_t)(aiq_mono_ms() - j->sent_ms);
    account(b, j, doc);
    if (write_line(b->res, j->line, j->id, doc, doc ? NULL : "result is not JSON"))
        fprintf(stderr, "aiq-submit: writing %s: %s\n", b->o->results, strerror(errno));
    json_decref(doc);
}

/* Handles the results that are already here, at most RESULTS_PER_TURN. */
static int drain_results(batch_t *b, int timeout_ms)
{
    for (int i = 0; b->rr && i < RESULTS_PER_TURN; i++) {
        char *json = NULL, key[AIQ_JOB_ID_CAP], err[512];
        int rc =
            aiq_results_next(b->rr, i ? 0 : timeout_ms, &json, key, sizeof(key), err, sizeof(err));
        if (rc < 0) {
            fprintf(stderr, "aiq-submit: reading results: %s\n", err);
            return rc;
        }
        if (rc == 0)
            break;
        on_result(b, json, key);
        free(json);
    }
    return 0;
}

/* Keeps the answered lines of an earlier run's results file (dropping "no result" lines and a
 * line cut short by a crash), rewritten atomically, and counts them. */
static int load_results(batch_t *b)
{
    FILE *f = fopen(b->o->results, "r");
    if (!f)
        return errno == ENOENT ? 0 : -1;
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", b->o->results);
    FILE *out = fopen(tmp, "w");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while (out && (n = getline(&line, &cap, f)) > 0) {
        const char *id;
        json_t *result;
        json_t *doc = aiq__results_line_parse(line, (size_t)n, &id, &result);
        bjob_t *j = id ? table_find(&b->t, id) : NULL;
        if (j && result && !(j->flags & J_ANSWERED)) {
            account(b, j, result);
            fwrite(line, 1, (size_t)n, out);
        }
        json_decref(doc);
    }
    free(line);
    fclose(f);
    int rc = out && fclose(out) == 0 ? rename(tmp, b->o->results) : -1;
    b->prev_answered = b->answered;
    return rc;
}

/* Marks acked every job of this batch found in the job topics since the first submission:
 * the broker may have taken jobs after the last state write. */
static int scan_job_topics(batch_t *b)
{
    for (int p = 0; p < AIQ_PRIO_COUNT; p++) {
        char topic[AIQ_TOPIC_MAX], err[512];
        aiq_topic_jobs(b->o->prefix, (aiq_priority_t)p, topic, sizeof(topic));
        aiq_results_t *r = NULL;
        if (aiq_results_open_at(&r, b->o->brokers, topic, b->first_submit_ms - CLOCK_MARGIN_MS,
                                b->o->kafka_props, err, sizeof(err))) {
            fprintf(stderr, "aiq-submit: reading %s: %s\n", topic, err);
            return -1;
        }
        int64_t until = aiq_mono_ms() + 120000;
        while (!aiq_results_caught_up(r) && aiq_mono_ms() < until) {
            char *json = NULL, key[AIQ_JOB_ID_CAP];
            if (aiq_results_next(r, 200, &json, key, sizeof(key), err, sizeof(err)) == 1) {
                bjob_t *j = table_find(&b->t, key);
                if (j)
                    j->flags |= J_ACKED;
                free(json);
            }
        }
        int ok = aiq_results_caught_up(r);
        aiq_results_close(r);
        if (!ok) {
            fprintf(stderr, "aiq-submit: could not read %s to its end\n", topic);
            return -1;
        }
    }
    return 0;
}

/* ---- progress ------------------------------------------------------------------------- */

static void progress(batch_t *b, int final)
{
    int64_t now = aiq_mono_ms();
    if (!final && now - b->last_progress < (b->tty ? 250 : 5000))
        return;
    b->last_progress = now;
    double secs = (double)(now - b->t0) / 1000.0;
    uint64_t done_now = b->answered - b->prev_answered;
    double rate = secs > 0 ? (double)done_now / secs : 0;
    uint64_t left = b->lines - b->invalid - b->answered;
    char eta[32] = "-";
    if (rate > 0 && left)
        snprintf(eta, sizeof(eta), "%.0fs", (double)left / rate);
    fprintf(stderr,
            "%saiq-submit: %llu lines  submitted %llu  acked %llu  answered %llu  failed %llu  "
            "invalid %llu  %.0f answers/s  ETA %s%s",
            b->tty ? "\r" : "", (unsigned long long)b->lines, (unsigned long long)b->submitted,
            (unsigned long long)b->acked, (unsigned long long)b->answered,
            (unsigned long long)b->failed, (unsigned long long)b->invalid, rate, eta,
            b->tty ? "\033[K" : "\n");
    b->progress_shown = 1;
}

/* One loop turn's housekeeping: delivery reports, results, progress, state. */
static int tick(batch_t *b, int timeout_ms)
{
    aiq_producer_poll(b->p, b->rr ? 0 : timeout_ms);
    int rc = drain_results(b, timeout_ms);
    if (b->o->progress)
        progress(b, 0);
    if (aiq_mono_ms() - b->last_state >= 1000)
        save_state(b, 0);
    return rc;
}

static void on_delivery(void *opaque, const char *job_id, int ok, const char *errstr)
{
    batch_t *b = opaque;
    bjob_t *j = table_find(&b->t, job_id);
    if (ok) {
        b->acked++;
        if (j)
            j->flags |= J_ACKED;
        return;
    }
    b->failed++;
    if (j)
        j->flags |= J_FAILED;
    fprintf(stderr, "\naiq-submit: job %s was not accepted by Kafka: %s\n", job_id, errstr);
}

/* ---- submission ----------------------------------------------------------------------- */

/* Token bucket for --rate (burst of a tenth of a second) and the --max-lag gate. */
static int throttle(batch_t *b)
{
    while (!g_stop && b->o->max_lag > 0 &&
           (long long)(b->base_acked + b->submitted - b->answered) > b->o->max_lag)
        if (tick(b, 100))
            return -1;
    if (b->o->rate <= 0)
        return 0;
    for (;;) {
        int64_t now = aiq_mono_ms();
        double burst = b->o->rate / 10 > 1 ? b->o->rate / 10 : 1;
        b->tokens += (double)(now - b->tb_last) * b->o->rate / 1000.0;
        b->tokens = b->tokens > burst ? burst : b->tokens;
        b->tb_last = now;
        if (b->tokens >= 1 || g_stop) {
            b->tokens -= 1;
            return 0;
        }
        int wait = (int)((1 - b->tokens) * 1000.0 / b->o->rate) + 1;
        if (tick(b, wait > 100 ? 100 : wait))
            return -1;
    }
}

static void report_invalid(batch_t *b, uint64_t line, const char *why)
{
    b->invalid++;
    fprintf(stderr, "%saiq-submit: %s:%llu: %s\n", b->progress_shown && b->tty ? "\n" : "", b->name,
            (unsigned long long)line, why);
}

/* Submits one input line; a full local queue is waited out, never dropped. */
static int submit_line(batch_t *b, const char *text, size_t len, uint64_t line)
{
    char id[AIQ_BATCH_ID_CAP_LINE], jid[AIQ_JOB_ID_CAP], err[512];
    snprintf(id, sizeof(id), "%s-%llu", b->batch_id, (unsigned long long)line);
    aiq_submit_opts_t so = {
        .default_id = id, .priority = b->o->priority, .timeout_ms = b->o->timeout_ms};
    int rc, prio = 0;
    while ((rc = aiq_producer_submit_ex(b->p, text, len, &so, jid, sizeof(jid), &prio, err,
                                        sizeof(err))) == AIQ_SUBMIT_EFULL)
        aiq_producer_poll(b->p, 100);
    if (rc == AIQ_SUBMIT_EINVAL || rc == AIQ_SUBMIT_ETOOBIG) {
        report_invalid(b, line, err);
        return 0;
    }
    if (rc) {
        fprintf(stderr, "aiq-submit: %s:%llu: %s\n", b->name, (unsigned long long)line, err);
        return rc;
    }
    bjob_t *j = table_find(&b->t, jid);
    if (!j && !(j = table_add(&b->t, jid, line, prio)))
        return AIQ_SUBMIT_ENOMEM;
    j->sent_ms = aiq_mono_ms();
    b->submitted++;
    return 0;
}

/* Produces every line not acknowledged yet. On --resume the table already holds every valid
 * line (in line order) and a line without an entry was reported invalid by the pre-pass. */
static int submit_pass(batch_t *b, int resumed)
{
    char *line = NULL;
    size_t cap = 0, cur = 0;
    ssize_t n;
    uint64_t lineno = 0;
    int rc = 0;
    rewind(b->in);
    while (!rc && !g_stop && (n = next_line(b->in, &line, &cap)) != -1) {
        lineno++;
        if (n == 0)
            continue;
        if (resumed) {
            for (; cur < b->t.n && b->t.v[cur].line < lineno; cur++)
                ;
            if (cur == b->t.n || b->t.v[cur].line != lineno || (b->t.v[cur].flags & J_ACKED))
                continue;
        } else if ((size_t)n > LINE_MAX_BYTES) {
            report_invalid(b, lineno, "line too long");
            continue;
        }
        rc = throttle(b);
        if (!rc)
            rc = submit_line(b, line, (size_t)n, lineno);
        if (!rc && (lineno & 255) == 0)
            rc = tick(b, 0);
    }
    free(line);
    return rc;
}

/* Counts the lines; with --strict or --resume also checks every line and (resume) builds the
 * job table. Nothing is sent. Returns 0, or -1 on a fatal error. */
static int pre_pass(batch_t *b, int check)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    uint64_t lineno = 0;
    int rc = 0;
    while (!rc && (n = next_line(b->in, &line, &cap)) != -1) {
        lineno++;
        if (n == 0)
            continue;
        if (++b->lines > MAX_LINES) {
            fprintf(stderr, "aiq-submit: more than %llu lines\n", MAX_LINES);
            rc = -1;
        }
        if (!check || rc)
            continue;
        char id[AIQ_BATCH_ID_CAP_LINE], jid[AIQ_JOB_ID_CAP], err[512];
        snprintf(id, sizeof(id), "%s-%llu", b->batch_id, (unsigned long long)lineno);
        aiq_submit_opts_t so = {
            .default_id = id, .priority = b->o->priority, .timeout_ms = b->o->timeout_ms};
        int prio = 0;
        if ((size_t)n > LINE_MAX_BYTES)
            report_invalid(b, lineno, "line too long");
        else if (aiq_job_check_ex(line, (size_t)n, &so, 524288, jid, sizeof(jid), &prio, err,
                                  sizeof(err)))
            report_invalid(b, lineno, err);
        else if (table_find(&b->t, jid))
            report_invalid(b, lineno, "duplicate job id");
        else if (!table_add(&b->t, jid, lineno, prio))
            rc = -1;
    }
    free(line);
    rewind(b->in);
    return rc;
}

/* ---- waiting and the end -------------------------------------------------------------- */

static int all_answered(const batch_t *b)
{
    return b->answered >= b->base_acked + b->submitted - b->failed;
}

static int wait_results(batch_t *b)
{
    int64_t until = aiq_mono_ms() + b->o->wait_timeout_ms;
    while (!g_stop && !all_answered(b) && aiq_mono_ms() < until)
        if (tick(b, 100))
            return -1;
    return 0;
}

/* Every acknowledged job without an answer gets a "no result" line; the first 20 are also
 * named on stderr. Returns how many there were. */
static uint64_t write_unanswered(batch_t *b)
{
    uint64_t n = 0;
    for (size_t i = 0; i < b->t.n; i++) {
        bjob_t *j = &b->t.v[i];
        if ((j->flags & (J_ACKED | J_ANSWERED)) != J_ACKED)
            continue;
        write_line(b->res, j->line, j->id, NULL, "no result before the deadline");
        if (n++ < 20)
            fprintf(stderr, "aiq-submit: %s:%llu: no result for %s\n", b->name,
                    (unsigned long long)j->line, j->id);
    }
    if (n > 20)
        fprintf(stderr, "aiq-submit: ... and %llu more without a result\n",
                (unsigned long long)(n - 20));
    return n;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static void print_summary(batch_t *b, uint64_t unanswered)
{
    double secs = (double)(aiq_mono_ms() - b->t0) / 1000.0;
    fprintf(stderr, "\n== aiq-submit batch %s ==\n", b->batch_id);
    fprintf(stderr,
            "lines: %llu   invalid: %llu   submitted now: %llu   acked (all runs): %llu   "
            "failed: %llu   answered: %llu (%llu earlier)   duplicates: %llu   unanswered: %llu\n",
            (unsigned long long)b->lines, (unsigned long long)b->invalid,
            (unsigned long long)b->submitted, (unsigned long long)(b->base_acked + b->acked),
            (unsigned long long)b->failed, (unsigned long long)b->answered,
            (unsigned long long)b->prev_answered, (unsigned long long)b->duplicates,
            (unsigned long long)unanswered);
    fprintf(stderr, "by status:");
    for (int i = 0; i < b->by_status.n; i++)
        fprintf(stderr, " %s=%llu", b->by_status.names[i],
                (unsigned long long)b->by_status.counts[i]);
    fprintf(stderr, "\ntokens: input %llu   output %llu\n", (unsigned long long)b->in_tokens,
            (unsigned long long)b->out_tokens);
    double sub = (double)(b->t_sub_end - b->t0) / 1000.0;
    fprintf(stderr, "wall time: %.2f s   submission %.0f jobs/s   results %.0f/s\n", secs,
            sub > 0 ? (double)b->submitted / sub : 0.0,
            secs > 0 ? (double)(b->answered - b->prev_answered) / secs : 0.0);
    int32_t *lat = malloc((b->t.n + 1) * sizeof(*lat));
    size_t n = 0;
    for (size_t i = 0; lat && i < b->t.n; i++)
        if (b->t.v[i].latency_ms >= 0)
            lat[n++] = b->t.v[i].latency_ms;
    if (lat && n) {
        qsort(lat, n, sizeof(*lat), cmp_i32);
        fprintf(stderr,
                "latency (submit to result, %zu jobs of this run): p50 %d ms  p95 %d ms  "
                "p99 %d ms\n",
                n, lat[(size_t)(0.50 * (double)(n - 1))], lat[(size_t)(0.95 * (double)(n - 1))],
                lat[(size_t)(0.99 * (double)(n - 1))]);
    }
    free(lat);
}

/* Resume: what earlier runs did — acked lines (state file and job topics) and answers kept
 * in the results file. */
static int restore(batch_t *b)
{
    json_t *acked = NULL;
    if (load_state(b, &acked))
        return -1;
    mark_ranges(&b->t, acked);
    json_decref(acked);
    if (load_results(b)) {
        fprintf(stderr, "aiq-submit: cannot rewrite %s: %s\n", b->o->results, strerror(errno));
        return -1;
    }
    if (b->first_submit_ms > 0 && scan_job_topics(b))
        return -1;
    for (size_t i = 0; i < b->t.n; i++)
        if (b->t.v[i].flags & J_ACKED)
            b->base_acked++;
    fprintf(stderr, "aiq-submit: resuming batch %s: %llu of %llu jobs acked, %llu answered\n",
            b->batch_id, (unsigned long long)b->base_acked, (unsigned long long)b->t.n,
            (unsigned long long)b->answered);
    return 0;
}

static int open_input(batch_t *b)
{
    int is_stdin = strcmp(b->o->file, "-") == 0;
    snprintf(b->name, sizeof(b->name), "%s", is_stdin ? "stdin" : b->o->file);
    if (b->o->batch_id) {
        if (check_batch_id(b->o->batch_id)) {
            fprintf(stderr, "aiq-submit: --batch-id: 1..%d characters of [A-Za-z0-9._:-]\n",
                    BATCH_ID_CAP);
            return -1;
        }
        snprintf(b->batch_id, sizeof(b->batch_id), "%s", b->o->batch_id);
    } else if (is_stdin) {
        fprintf(stderr, "aiq-submit: a batch from stdin needs --batch-id\n");
        return -1;
    } else if (derive_batch_id(b)) {
        return -1;
    }
    b->in = is_stdin ? spool_stdin() : fopen(b->o->file, "r");
    if (!b->in)
        fprintf(stderr, "aiq-submit: cannot open %s: %s\n", b->name, strerror(errno));
    return b->in ? 0 : -1;
}

/* Everything up to the first produce: input, state, results file, Kafka clients. */
static int setup(batch_t *b)
{
    const aiq__batch_opts_t *o = b->o;
    snprintf(b->state_path, sizeof(b->state_path), "%s.state", o->results);
    if (open_input(b))
        return 2;
    int have_state = access(b->state_path, F_OK) == 0;
    if (have_state && !o->resume) {
        fprintf(stderr,
                "aiq-submit: %s exists: add --resume to continue that batch, or remove "
                "it and the results file to start again\n",
                b->state_path);
        return 2;
    }
    int check = o->strict || o->resume;
    if (pre_pass(b, check))
        return 2;
    if (o->strict && b->invalid) {
        fprintf(stderr, "aiq-submit: --strict: %llu invalid lines, nothing was sent\n",
                (unsigned long long)b->invalid);
        return 1;
    }
    if (o->resume && have_state && restore(b))
        return 2;
    char err[512];
    int64_t since = o->resume && b->first_submit_ms > 0 ? b->first_submit_ms - CLOCK_MARGIN_MS : -1;
    if (aiq_results_open_at(&b->rr, o->brokers, b->reply, since, o->kafka_props, err,
                            sizeof(err))) {
        fprintf(stderr, "aiq-submit: cannot read results from %s: %s\n", b->reply, err);
        return 2;
    }
    b->res = fopen(o->results, o->resume ? "a" : "w");
    if (!b->res) {
        fprintf(stderr, "aiq-submit: cannot open %s: %s\n", o->results, strerror(errno));
        return 2;
    }
    aiq_producer_conf_t pc = {.brokers = o->brokers,
                              .topic_prefix = o->prefix,
                              .client_id = "aiq-submit",
                              .on_delivery = on_delivery,
                              .opaque = b,
                              .kafka_props = o->kafka_props};
    if (aiq_producer_new(&b->p, &pc, err, sizeof(err))) {
        fprintf(stderr, "aiq-submit: %s\n", err);
        return 2;
    }
    if (b->first_submit_ms <= 0)
        b->first_submit_ms = aiq_now_ms();
    /* The first submission time must be on disk before anything is produced. */
    return save_state(b, 0) ? 2 : 0;
}

static int run_batch(batch_t *b)
{
    int rc = setup(b);
    if (rc)
        return rc;
    b->t0 = b->tb_last = b->last_progress = aiq_mono_ms();
    rc = submit_pass(b, b->o->strict || b->o->resume) ? 2 : 0;
    int64_t until = aiq_mono_ms() + 60000;
    b->t_sub_end = aiq_mono_ms();
    while (aiq_producer_flush(b->p, 0) == AIQ_SUBMIT_ETIMEDOUT && aiq_mono_ms() < until && !g_stop)
        tick(b, 50);
    if (!rc && !g_stop)
        rc = wait_results(b) ? 2 : 0;
    if (b->o->progress && b->progress_shown)
        progress(b, 1);
    if (g_stop) {
        save_state(b, 0);
        fprintf(stderr, "\naiq-submit: interrupted; state saved in %s, rerun with --resume\n",
                b->state_path);
        return 130;
    }
    uint64_t unanswered = write_unanswered(b);
    save_state(b, unanswered == 0 && !b->failed);
    print_summary(b, unanswered);
    if (rc)
        return rc;
    return b->invalid || b->failed || unanswered ? 1 : 0;
}

int aiq__batch_run(const aiq__batch_opts_t *o)
{
    batch_t b;
    memset(&b, 0, sizeof(b));
    b.o = o;
    b.tty = isatty(STDERR_FILENO);
    if (o->reply_to)
        snprintf(b.reply, sizeof(b.reply), "%s", o->reply_to);
    else
        aiq_topic_results(o->prefix, b.reply, sizeof(b.reply));
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = run_batch(&b);
    aiq_producer_free(b.p);
    aiq_results_close(b.rr);
    if (b.res && fclose(b.res))
        rc = rc ? rc : 1;
    if (b.in)
        fclose(b.in);
    table_free(&b.t);
    return rc;
}
