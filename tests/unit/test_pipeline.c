/* test_pipeline.c — the job state machine (worker/job/: task, coalesce, fallback, records,
 * pipeline) driven through every transition on a real uv loop, with a real LMDB cache and the
 * shipped operations file, and fakes for what lies outside: the provider
 * (aiq_provider_request/cancel/model are defined here, so provider.o is not linked), the publisher
 * (aiq_publisher_send records every record and answers it as the case plans: acknowledged, a
 * retriable or a permanent error, or not queued), and consumed records (rd_kafka_message_t built
 * here; rd_kafka_message_destroy, rd_kafka_topic_name and rd_kafka_message_timestamp are interposed
 * over librdkafka's). Every case checks the states entered, the records published and zero illegal
 * moves; the last case checks that the cases together made every move the table allows. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cache.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "ops.h"
#include "pipeline.h"
#include "provider.h"
#include "result.h"
#include "publish.h"
#include "timeutil.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <uv.h>

#ifndef AIQ_OPS_FILE
#error "AIQ_OPS_FILE (path of config/operations.json) must be defined by the build"
#endif

#define MAX_SENT  32
#define MAX_CALLS 16
#define MAX_PLAN  8
#define MODEL     "anthropic.claude-3-haiku-20240307-v1:0"

/* ---- consumed records: the public struct, three functions interposed ------------------ */

struct rd_kafka_topic_s {
    char name[64];
};

typedef struct fake_msg {
    rd_kafka_message_t m; /* first: the pipeline holds &m */
    int64_t ts;
    rd_kafka_timestamp_type_t ts_type;
} fake_msg_t;

static struct rd_kafka_topic_s topic_normal = {"t.jobs.normal"};
static int msgs_live; /* records created and not yet destroyed */

void rd_kafka_message_destroy(rd_kafka_message_t *m)
{
    if (!m)
        return;
    msgs_live--;
    free(m->payload);
    free(m->key);
    free(m);
}

const char *rd_kafka_topic_name(const rd_kafka_topic_t *rkt)
{
    return rkt->name;
}

int64_t rd_kafka_message_timestamp(const rd_kafka_message_t *m, rd_kafka_timestamp_type_t *type)
{
    const fake_msg_t *f = (const fake_msg_t *)m;
    if (type)
        *type = f->ts_type;
    return f->ts;
}

static rd_kafka_message_t *make_msg(const char *value, int64_t ts)
{
    fake_msg_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    static int64_t offset = 100;
    f->m.rkt = &topic_normal;
    f->m.partition = 3;
    f->m.offset = offset++;
    f->m.payload = strdup(value);
    f->m.len = strlen(value);
    f->m.key = strdup("record-key");
    f->m.key_len = strlen("record-key");
    f->ts = ts;
    f->ts_type = ts ? RD_KAFKA_TIMESTAMP_CREATE_TIME : RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
    msgs_live++;
    return &f->m;
}

/* ---- the fakes' shared state ----------------------------------------------------------- */

typedef enum pub_plan {
    PUB_OK = 0,     /* acknowledged */
    PUB_RETRIABLE,  /* a transient error: the same record may succeed later */
    PUB_PERMANENT,  /* refused for good (unknown topic, too large) */
    PUB_NOT_QUEUED, /* aiq_publisher_send fails: no callback */
} pub_plan_t;

typedef struct sent {
    char topic[128];
    char key[160];
    char *val;
    json_t *json;       /* val parsed, when it is JSON */
    char headers[2048]; /* "name=value\n" per header */
    aiq_publish_cb cb;
    void *opaque;
    pub_plan_t plan;
    int answered;
} sent_t;

typedef enum call_plan {
    CALL_ANSWER = 0, /* the outcome is delivered from the loop */
    CALL_HOLD,       /* kept until the case delivers it (call_deliver) */
    CALL_NO_MEMORY,  /* aiq_provider_request returns NULL */
} call_plan_t;

typedef struct planned_call {
    call_plan_t plan;
    aiq_call_end_t end;
    const char *kind; /* error kind for ends other than OK */
} planned_call_t;

struct aiq_provider_call {
    char job_id[AIQ_JOB_ID_MAX + 1];
    int prio;
    int64_t deadline_ms;
    aiq_provider_cb cb;
    aiq_provider_partial_cb on_partial;
    void *opaque;
    planned_call_t plan;
    int cancelled, delivered;
};

struct aiq_provider {
    int unused;
};

struct aiq_publisher {
    int unused;
};

typedef struct fixture {
    uv_loop_t loop;
    uv_timer_t tick; /* delivers planned outcomes and acknowledgements, as fds would */
    aiq_config_t cfg;
    aiq_log_t *log;
    aiq_metrics_t *metrics;
    aiq_ops_t *ops;
    aiq_cache_t *cache;
    char cache_dir[64];
    int64_t clock_ms; /* the cache's clock */
    aiq_pipeline_t *pl;
    struct aiq_provider provider;
    struct aiq_publisher pub;
    sent_t sent[MAX_SENT];
    int nsent;
    pub_plan_t pub_plan[MAX_PLAN];
    int npub_plan;
    struct aiq_provider_call calls[MAX_CALLS];
    int ncalls;
    planned_call_t call_plan[MAX_PLAN];
    int ncall_plan;
    aiq_task_t *done[MAX_SENT];
    int ndone;
    int slots_freed;
    aiq_task_t *start_on_slot_free; /* started from inside the next slot-free hook */
    aiq_task_summary_t summary[MAX_SENT];
} fixture_t;

static fixture_t *F; /* the case running: the fakes are plain functions */

/* Moves made by all cases so far, for the coverage case. */
static uint64_t covered[AIQ_TASK_NSTATES][AIQ_TASK_NSTATES];

static void tick_soon(void);

/* ---- the provider fake ------------------------------------------------------------------ */

aiq_provider_call_t *aiq_provider_request(aiq_provider_t *p, const aiq_job_t *job, int prio,
                                          int64_t deadline_ms, aiq_provider_cb cb, void *opaque)
{
    assert_ptr_equal(p, &F->provider);
    planned_call_t plan = {CALL_ANSWER, AIQ_CALL_OK, NULL};
    if (F->ncall_plan) {
        plan = F->call_plan[0];
        memmove(F->call_plan, F->call_plan + 1, --F->ncall_plan * sizeof(F->call_plan[0]));
    }
    if (plan.plan == CALL_NO_MEMORY)
        return NULL;
    assert_true(F->ncalls < MAX_CALLS);
    aiq_provider_call_t *c = &F->calls[F->ncalls++];
    snprintf(c->job_id, sizeof(c->job_id), "%s", job->id);
    c->prio = prio;
    c->deadline_ms = deadline_ms;
    c->cb = cb;
    c->opaque = opaque;
    c->plan = plan;
    if (plan.plan == CALL_ANSWER)
        tick_soon();
    return c;
}

void aiq_provider_cancel(aiq_provider_t *p, aiq_provider_call_t *call)
{
    assert_ptr_equal(p, &F->provider);
    assert_false(call->delivered);
    call->cancelled = 1;
}

void aiq_provider_on_partial(aiq_provider_call_t *c, aiq_provider_partial_cb cb)
{
    c->on_partial = cb;
}

const char *aiq_provider_model(const aiq_provider_t *p, const aiq_job_t *job)
{
    (void)p;
    return job->model ? job->model : MODEL;
}

static void call_deliver(aiq_provider_call_t *c)
{
    assert_false(c->cancelled);
    assert_false(c->delivered);
    c->delivered = 1;
    aiq_call_outcome_t o = {0};
    o.end = c->plan.end;
    o.model = MODEL;
    o.attempts = 1;
    o.provider_ms = 7;
    if (o.end == AIQ_CALL_OK) {
        char text[200];
        snprintf(text, sizeof(text), "answer from the call for %s", c->job_id);
        o.reply.text = strdup(text);
        snprintf(o.reply.stop_reason, sizeof(o.reply.stop_reason), "end_turn");
        o.reply.input_tokens = 11;
        o.reply.output_tokens = 22;
        o.http_status = 200;
    } else {
        o.attempts = 3;
        o.http_status = o.end == AIQ_CALL_FINAL ? 400 : 503;
        snprintf(o.error_kind, sizeof(o.error_kind), "%s", c->plan.kind ? c->plan.kind : "x");
        snprintf(o.error_msg, sizeof(o.error_msg), "planned end %d", (int)o.end);
    }
    c->cb(c->opaque, &o);
    aiq_bedrock_reply_free(&o.reply);
}

/* ---- the publisher fake ----------------------------------------------------------------- */

int aiq_publisher_send(aiq_publisher_t *p, const char *topic, const void *key, size_t klen,
                       const void *val, size_t vlen, rd_kafka_headers_t *hdrs, aiq_publish_cb cb,
                       void *opaque, aiq_err_t *err)
{
    assert_ptr_equal(p, &F->pub);
    pub_plan_t plan = PUB_OK;
    if (F->npub_plan) {
        plan = F->pub_plan[0];
        memmove(F->pub_plan, F->pub_plan + 1, --F->npub_plan * sizeof(F->pub_plan[0]));
    }
    assert_true(F->nsent < MAX_SENT);
    sent_t *s = &F->sent[F->nsent++];
    memset(s, 0, sizeof(*s));
    snprintf(s->topic, sizeof(s->topic), "%s", topic);
    snprintf(s->key, sizeof(s->key), "%.*s", (int)klen, (const char *)key);
    s->val = malloc(vlen + 1);
    assert_non_null(s->val);
    memcpy(s->val, val, vlen);
    s->val[vlen] = '\0';
    s->json = json_loadb(val, vlen, 0, NULL);
    size_t off = 0;
    const char *name;
    const void *hv;
    size_t hlen;
    for (size_t i = 0; hdrs && !rd_kafka_header_get_all(hdrs, i, &name, &hv, &hlen); i++)
        off += (size_t)snprintf(s->headers + off, sizeof(s->headers) - off, "%s=%.*s\n", name,
                                (int)hlen, (const char *)hv);
    if (hdrs)
        rd_kafka_headers_destroy(hdrs);
    s->cb = cb;
    s->opaque = opaque;
    s->plan = plan;
    if (plan == PUB_NOT_QUEUED) {
        s->answered = 1;
        return aiq_err_set(err, AIQ_EKAFKA, "planned: local queue full");
    }
    tick_soon();
    return 0;
}

int64_t aiq_publisher_max_message_bytes(const aiq_publisher_t *p)
{
    assert_ptr_equal(p, &F->pub);
    return 1000000;
}

int aiq_publisher_topic_max_bytes(aiq_publisher_t *p, const char *topic, int timeout_ms,
                                  int64_t *out, aiq_err_t *err)
{
    (void)timeout_ms;
    (void)err;
    assert_ptr_equal(p, &F->pub);
    assert_string_equal(topic, "t.dlq");
    *out = 1000000;
    return 0;
}

static void sent_answer(sent_t *s)
{
    s->answered = 1;
    switch (s->plan) {
    case PUB_OK:
        s->cb(s->opaque, RD_KAFKA_RESP_ERR_NO_ERROR, 0, NULL);
        break;
    case PUB_RETRIABLE:
        s->cb(s->opaque, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, 0, "planned: timed out");
        break;
    default:
        s->cb(s->opaque, RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC, 1, "planned: unknown topic");
        break;
    }
}

/* ---- the loop ----------------------------------------------------------------------------- */

/* Answers what was planned, in the order it was asked, like delivery reports arriving. */
static void on_tick(uv_timer_t *timer)
{
    (void)timer;
    int ncalls = F->ncalls, nsent = F->nsent;
    for (int i = 0; i < ncalls; i++) {
        aiq_provider_call_t *c = &F->calls[i];
        if (c->plan.plan == CALL_ANSWER && !c->cancelled && !c->delivered)
            call_deliver(c);
    }
    for (int i = 0; i < nsent; i++)
        if (!F->sent[i].answered)
            sent_answer(&F->sent[i]);
}

static void tick_soon(void)
{
    uv_timer_start(&F->tick, on_tick, 0, 0);
}

/* Runs the loop until n tasks are done; fails after 10 s of loop time. */
static void run_until_done(int n)
{
    int64_t until = aiq_now_ms() + 10000;
    while (F->ndone < n && aiq_now_ms() < until)
        uv_run(&F->loop, UV_RUN_ONCE);
    if (F->ndone != n)
        print_error("done %d, want %d\n", F->ndone, n);
    assert_int_equal(F->ndone, n);
}

/* Runs what is due now without blocking. */
static void run_now(void)
{
    for (int i = 0; i < 4; i++)
        uv_run(&F->loop, UV_RUN_NOWAIT);
}

static void on_done(void *opaque, aiq_task_t *t)
{
    fixture_t *f = opaque;
    assert_int_equal(aiq_task_state(t), AIQ_TASK_DONE);
    assert_true(f->ndone < MAX_SENT);
    f->summary[f->ndone] = aiq_task_summary(t);
    f->done[f->ndone++] = t;
}

/* The worker starts the next job from here (admission); so does a case that sets
 * start_on_slot_free. */
static void on_slot_free(void *opaque, aiq_task_t *t)
{
    fixture_t *f = opaque;
    (void)t;
    f->slots_freed++;
    aiq_task_t *next = f->start_on_slot_free;
    f->start_on_slot_free = NULL;
    if (next)
        aiq_pipeline_start(f->pl, next);
}

/* ---- setup ---------------------------------------------------------------------------------- */

static int64_t on_cache_clock(void *ctx)
{
    return ((fixture_t *)ctx)->clock_ms;
}

static void open_cache(fixture_t *f)
{
    snprintf(f->cache_dir, sizeof(f->cache_dir), "/tmp/aiq-pipeline-test-XXXXXX");
    assert_non_null(mkdtemp(f->cache_dir));
    aiq_cache_opts_t o;
    aiq_cache_opts_init(&o);
    o.path = f->cache_dir;
    o.max_bytes = 1 << 20;
    o.clock = on_cache_clock;
    o.clock_ctx = f;
    f->clock_ms = aiq_now_ms();
    aiq_err_t err = {0};
    assert_int_equal(aiq_cache_open(&f->cache, &o, &err), 0);
}

static void new_pipeline(fixture_t *f)
{
    aiq_pipeline_deps_t d = {
        .loop = &f->loop,
        .cfg = &f->cfg,
        .log = f->log,
        .pub = &f->pub,
        .metrics = f->metrics,
        .provider = &f->provider,
        .ops = f->ops,
        .cache = f->cache,
        .on_done = on_done,
        .on_slot_free = on_slot_free,
        .opaque = f,
    };
    aiq_err_t err = {0};
    assert_int_equal(aiq_pipeline_new(&f->pl, &d, &err), 0);
}

static int setup_with(void **state, const char *ops_file, int cache, aiq_log_level_t level)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    F = f;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->tick);
    assert_int_equal(aiq_config_init(&f->cfg), 0);
    aiq_err_t err = {0};
    assert_int_equal(aiq_config_set(&f->cfg, "kafka.topic_prefix", "t.", &err), 0);
    assert_int_equal(aiq_config_set(&f->cfg, "worker.id", "w-test", &err), 0);
    f->log = aiq_log_new("worker", "test", level);
    f->metrics = aiq_metrics_new();
    assert_non_null(f->metrics);
    if (ops_file && aiq_ops_load(&f->ops, ops_file, AIQ_OPS_UNKNOWN_ALLOW, &err))
        fail_msg("ops: %s", err.msg);
    if (cache)
        open_cache(f);
    new_pipeline(f);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, AIQ_OPS_FILE, 1, AIQ_LOG_ERROR);
}

static void rm_cache(const char *dir)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/data.mdb", dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/lock.mdb", dir);
    unlink(p);
    rmdir(dir);
}

/* Every case ends here: nothing illegal, the moves recorded, everything freed. */
static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f->pl) {
        const aiq_pipeline_stats_t *st = aiq_pipeline_stats(f->pl);
        assert_int_equal(st->illegal_moves, 0);
        for (int a = 0; a < AIQ_TASK_NSTATES; a++)
            for (int b = 0; b < AIQ_TASK_NSTATES; b++)
                covered[a][b] += st->moves[a][b];
        aiq_pipeline_free(f->pl);
    }
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* every timer closed */
    assert_int_equal(msgs_live, 0);               /* every record destroyed */
    for (int i = 0; i < f->nsent; i++) {
        free(f->sent[i].val);
        json_decref(f->sent[i].json);
    }
    aiq_cache_close(f->cache);
    if (f->cache_dir[0])
        rm_cache(f->cache_dir);
    aiq_ops_free(f->ops);
    aiq_metrics_free(f->metrics);
    aiq_log_free(f->log);
    aiq_config_free(&f->cfg);
    free(f);
    F = NULL;
    return 0;
}

/* ---- helpers for the cases ------------------------------------------------------------------ */

static aiq_task_t *submit(fixture_t *f, const char *value, int64_t ts)
{
    aiq_consumer_ref_t ref = {AIQ_PRIO_NORMAL, 3, 0, 1};
    aiq_task_t *t = aiq_task_new(f->pl, make_msg(value, ts), &ref);
    assert_non_null(t);
    assert_int_equal(aiq_task_state(t), AIQ_TASK_QUEUED);
    return t;
}

static aiq_task_t *start(fixture_t *f, const char *value)
{
    aiq_task_t *t = submit(f, value, aiq_now_ms());
    aiq_pipeline_start(f->pl, t);
    return t;
}

static void plan_pub(fixture_t *f, pub_plan_t p)
{
    assert_true(f->npub_plan < MAX_PLAN);
    f->pub_plan[f->npub_plan++] = p;
}

static void plan_call(fixture_t *f, call_plan_t p, aiq_call_end_t end, const char *kind)
{
    assert_true(f->ncall_plan < MAX_PLAN);
    f->call_plan[f->ncall_plan++] = (planned_call_t){p, end, kind};
}

/* Entries per state, in enum order: queued started coalesced calling publishing done
 * dropped. */
static void expect_entered(fixture_t *f, const int want[AIQ_TASK_NSTATES])
{
    const aiq_pipeline_stats_t *st = aiq_pipeline_stats(f->pl);
    int bad = 0;
    for (int s = 0; s < AIQ_TASK_NSTATES; s++) {
        if (st->entered[s] != (uint64_t)want[s]) {
            print_error("entered %s: %llu, want %d\n", aiq_task_state_name(s),
                        (unsigned long long)st->entered[s], want[s]);
            bad = 1;
        }
    }
    assert_false(bad);
    assert_int_equal(st->illegal_moves, 0);
}

#define ENTERED(f, q, s, co, ca, p, d, x)                                                          \
    do {                                                                                           \
        const int want_[AIQ_TASK_NSTATES] = {q, s, co, ca, p, d, x};                               \
        expect_entered((f), want_);                                                                \
    } while (0)

static const char *jstr(const json_t *o, const char *path)
{
    /* "a.b": nested object members */
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    const json_t *v = o;
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok && v;
         tok = strtok_r(NULL, ".", &save))
        v = json_object_get(v, tok);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Record i went to topic with the given result status (NULL: not a result). */
static const sent_t *expect_sent(fixture_t *f, int i, const char *topic, const char *status)
{
    assert_true(i < f->nsent);
    const sent_t *s = &f->sent[i];
    if (strcmp(s->topic, topic) != 0)
        print_error("record %d went to %s, want %s\n", i, s->topic, topic);
    assert_string_equal(s->topic, topic);
    if (status) {
        assert_non_null(s->json);
        assert_string_equal(jstr(s->json, "status"), status);
        char h[64];
        snprintf(h, sizeof(h), "aiq.status=%s\n", status);
        if (strcmp(topic, "t.dlq") != 0)
            assert_non_null(strstr(s->headers, h));
    }
    return s;
}

static void expect_header(const sent_t *s, const char *line)
{
    if (!strstr(s->headers, line))
        print_error("headers lack '%s':\n%s", line, s->headers);
    assert_non_null(strstr(s->headers, line));
}

#define JOB(id, extra)                                                                             \
    "{\"id\":\"" id "\",\"operation\":\"vc-analysis\",\"payload\":{\"businessName\":\"Cafe "       \
    "Rosa\"}" extra "}"

/* ---- the cases ---------------------------------------------------------------------------- */

static void pipeline_valid_job_called_published_done(void **state)
{
    fixture_t *f = *state;
    start(f, JOB("job-1", ",\"correlation_id\":\"c-1\""));
    assert_int_equal(f->ncalls, 1);
    assert_string_equal(f->calls[0].job_id, "job-1");
    assert_int_equal(f->calls[0].prio, AIQ_PRIO_NORMAL);
    run_until_done(1);
    assert_int_equal(f->nsent, 1);
    const sent_t *s = expect_sent(f, 0, "t.results", "succeeded");
    assert_string_equal(s->key, "job-1");
    assert_string_equal(jstr(s->json, "output.text"), "answer from the call for job-1");
    assert_string_equal(jstr(s->json, "correlation_id"), "c-1");
    assert_null(jstr(s->json, "fallback"));
    expect_header(s, "aiq.correlation-id=c-1\n");
    expect_header(s, "aiq.worker=w-test\n");
    ENTERED(f, 1, 1, 0, 1, 1, 1, 0);
    assert_int_equal(aiq_pipeline_stats(f->pl)->moves[AIQ_TASK_CALLING][AIQ_TASK_PUBLISHING], 1);
    assert_true(f->summary[0].answered);
    assert_false(f->summary[0].error);
    assert_true(f->summary[0].lookup);
    assert_false(f->summary[0].hit);
    aiq_metrics_totals_t m = aiq_metrics_totals(f->metrics);
    assert_int_equal(m.finished[AIQ_RESULT_SUCCEEDED], 1);
    assert_int_equal(m.dlq, 0);
}

static void pipeline_undecodable_record_to_dlq(void **state)
{
    fixture_t *f = *state;
    start(f, "this is {not json");
    assert_int_equal(f->ncalls, 0);
    run_until_done(1);
    assert_int_equal(f->nsent, 1); /* no id: no result, the DLQ record answers */
    const sent_t *s = expect_sent(f, 0, "t.dlq", NULL);
    assert_string_equal(s->val, "this is {not json"); /* the record as it came */
    assert_string_equal(s->key, "record-key");
    expect_header(s, "aiq.dlq.original-topic=t.jobs.normal\n");
    expect_header(s, "aiq.dlq.original-partition=3\n");
    expect_header(s, "aiq.dlq.error-kind=not_json\n");
    expect_header(s, "aiq.dlq.original-timestamp-type=CreateTime\n");
    ENTERED(f, 1, 1, 0, 0, 1, 1, 0);
    assert_int_equal(aiq_metrics_totals(f->metrics).dlq, 1);
    assert_false(f->summary[0].answered);
    aiq_metrics_totals_t m = aiq_metrics_totals(f->metrics);
    assert_int_equal(m.dlq, 1);
    assert_int_equal(m.finished[AIQ_RESULT_REJECTED], 0); /* no id: not a job */
}

static void pipeline_invalid_job_with_id_to_dlq_and_rejected(void **state)
{
    fixture_t *f = *state;
    start(f, "{\"id\":\"job-bad\",\"operation\":\"vc-analysis\",\"priority\":\"urgent\"}");
    run_until_done(1);
    assert_int_equal(f->nsent, 2);
    const sent_t *dlq = expect_sent(f, 0, "t.dlq", NULL);
    expect_header(dlq, "aiq.dlq.error-kind=invalid_job\n");
    expect_header(dlq, "aiq.job-id=job-bad\n");
    assert_string_equal(dlq->key, "job-bad");
    const sent_t *r = expect_sent(f, 1, "t.results", "rejected");
    assert_string_equal(jstr(r->json, "job_id"), "job-bad");
    assert_string_equal(jstr(r->json, "error.kind"), "invalid_job");
    assert_non_null(strstr(jstr(r->json, "error.message"), "priority"));
    ENTERED(f, 1, 1, 0, 0, 1, 1, 0);
    aiq_metrics_totals_t m = aiq_metrics_totals(f->metrics);
    assert_int_equal(m.dlq, 1);
    assert_int_equal(m.finished[AIQ_RESULT_REJECTED], 1);
}

static void pipeline_reply_to_job_topic_refused(void **state)
{
    fixture_t *f = *state;
    start(f, JOB("job-loop", ",\"reply_to\":\"t.jobs.high\""));
    assert_int_equal(f->ncalls, 0);
    run_until_done(1);
    assert_int_equal(f->nsent, 2);
    expect_header(expect_sent(f, 0, "t.dlq", NULL), "aiq.dlq.error-kind=invalid_job\n");
    const sent_t *r = expect_sent(f, 1, "t.results", "rejected"); /* not to t.jobs.high */
    assert_non_null(strstr(jstr(r->json, "error.message"), "reply_to"));
    ENTERED(f, 1, 1, 0, 0, 1, 1, 0);
}

static void pipeline_expired_before_start(void **state)
{
    fixture_t *f = *state;
    /* No created_at: the deadline counts from the record's timestamp, a minute ago. */
    aiq_task_t *t = submit(f, JOB("job-late", ",\"timeout_ms\":1000"), aiq_now_ms() - 60000);
    assert_true(aiq_task_expired(t, aiq_now_ms()));
    assert_false(aiq_task_expired(t, aiq_now_ms() - 60000));
    aiq_pipeline_start(f->pl, t);
    assert_int_equal(f->ncalls, 0);
    run_until_done(1);
    const sent_t *s = expect_sent(f, 0, "t.results", "expired");
    assert_string_equal(jstr(s->json, "error.kind"), "deadline_exceeded");
    ENTERED(f, 1, 1, 0, 0, 1, 1, 0);
    assert_int_equal(aiq_metrics_totals(f->metrics).finished[AIQ_RESULT_EXPIRED], 1);
    assert_true(f->summary[0].error);
}

static void pipeline_cache_hit_and_stale_fallback(void **state)
{
    fixture_t *f = *state;
    start(f, JOB("job-c1", ""));
    run_until_done(1); /* called, stored */
    start(f, JOB("job-c2", ""));
    assert_int_equal(f->ncalls, 1); /* answered from the cache: no call */
    run_until_done(2);
    const sent_t *hit = expect_sent(f, 1, "t.results", "succeeded");
    assert_string_equal(jstr(hit->json, "output.text"), "answer from the call for job-c1");
    assert_true(json_is_true(json_object_get(json_object_get(hit->json, "cache"), "hit")));
    assert_true(f->summary[1].hit);
    ENTERED(f, 2, 2, 0, 1, 2, 2, 0);
    assert_int_equal(aiq_pipeline_stats(f->pl)->moves[AIQ_TASK_STARTED][AIQ_TASK_PUBLISHING], 1);
    assert_int_equal(aiq_pipeline_stats(f->pl)->cache_hits, 1);

    /* A day and a minute later the entry is stale: the call is made, fails with no room for a
     * re-enqueue, and the stale answer is the fallback. */
    f->clock_ms += 86460 * 1000LL;
    plan_call(f, CALL_ANSWER, AIQ_CALL_BREAKER_OPEN, "breaker_open");
    start(f, JOB("job-c3", ""));
    assert_int_equal(f->ncalls, 2);
    run_until_done(3);
    const sent_t *st = expect_sent(f, 2, "t.results", "degraded");
    assert_string_equal(jstr(st->json, "fallback"), "stale_cache");
    assert_string_equal(jstr(st->json, "output.text"), "answer from the call for job-c1");
    assert_true(json_is_true(json_object_get(json_object_get(st->json, "cache"), "stale")));
    assert_false(f->summary[2].hit);
    ENTERED(f, 3, 3, 0, 2, 3, 3, 0);
}

static void pipeline_identical_jobs_share_one_call(void **state)
{
    fixture_t *f = *state;
    plan_call(f, CALL_HOLD, AIQ_CALL_OK, NULL);
    start(f, JOB("job-a", ""));
    start(f, JOB("job-b", ""));
    start(f, JOB("job-c", ""));
    assert_int_equal(f->ncalls, 1);
    ENTERED(f, 3, 3, 2, 1, 0, 0, 0);
    assert_int_equal(aiq_metrics_event_count(f->metrics, AIQ_METRICS_COALESCED), 2);
    call_deliver(&f->calls[0]);
    run_until_done(3);
    assert_int_equal(f->nsent, 3);
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        const sent_t *s = expect_sent(f, i, "t.results", "succeeded");
        assert_string_equal(jstr(s->json, "output.text"), "answer from the call for job-a");
        seen |= 1 << (s->key[4] - 'a');
    }
    assert_int_equal(seen, 7); /* one result per job */
    ENTERED(f, 3, 3, 2, 1, 3, 3, 0);
    assert_int_equal(aiq_pipeline_stats(f->pl)->moves[AIQ_TASK_COALESCED][AIQ_TASK_PUBLISHING], 2);
}

/* Regression: a follower's answer frees its job slot, and the job started in that slot
 * (identical, say) no longer finds the leader's call: it must find the leader's answer in
 * the cache, not call the model again. */
static void pipeline_job_started_in_a_followers_slot_hits_cache(void **state)
{
    fixture_t *f = *state;
    plan_call(f, CALL_HOLD, AIQ_CALL_OK, NULL);
    start(f, JOB("job-k1", ""));
    start(f, JOB("job-k2", ""));
    f->start_on_slot_free = submit(f, JOB("job-k3", ""), aiq_now_ms());
    call_deliver(&f->calls[0]);
    assert_null(f->start_on_slot_free); /* started, from inside the delivery */
    run_until_done(3);
    assert_int_equal(f->ncalls, 1);
    assert_int_equal(aiq_pipeline_stats(f->pl)->cache_hits, 1);
    int hits = 0;
    for (int i = 0; i < 3; i++) {
        const sent_t *s = expect_sent(f, i, "t.results", "succeeded");
        assert_string_equal(jstr(s->json, "output.text"), "answer from the call for job-k1");
        if (strcmp(s->key, "job-k3") == 0) {
            assert_true(json_is_true(json_object_get(json_object_get(s->json, "cache"), "hit")));
            hits++;
        }
    }
    assert_int_equal(hits, 1);
    assert_int_equal(f->slots_freed, 3);
    ENTERED(f, 3, 3, 1, 1, 3, 3, 0);
}

static void pipeline_leader_dropped_follower_promoted(void **state)
{
    fixture_t *f = *state;
    plan_call(f, CALL_HOLD, AIQ_CALL_OK, NULL);
    aiq_task_t *leader = start(f, JOB("job-l", ""));
    aiq_task_t *follower = start(f, JOB("job-f", ""));
    aiq_task_t *other = start(f, JOB("job-o", ""));
    assert_int_equal(aiq_task_state(follower), AIQ_TASK_COALESCED);
    /* A follower that goes away leaves the others waiting. */
    aiq_task_drop(other);
    assert_int_equal(f->ncalls, 1);
    aiq_task_drop(leader); /* its partition was revoked */
    assert_true(f->calls[0].cancelled);
    assert_int_equal(f->ncalls, 2); /* the follower calls in its place */
    assert_string_equal(f->calls[1].job_id, "job-f");
    assert_int_equal(aiq_task_state(follower), AIQ_TASK_CALLING);
    run_until_done(1);
    assert_int_equal(f->nsent, 1);
    const sent_t *s = expect_sent(f, 0, "t.results", "succeeded");
    assert_string_equal(s->key, "job-f");
    assert_string_equal(jstr(s->json, "output.text"), "answer from the call for job-f");
    ENTERED(f, 3, 3, 2, 2, 1, 1, 2);
    const aiq_pipeline_stats_t *st = aiq_pipeline_stats(f->pl);
    assert_int_equal(st->moves[AIQ_TASK_COALESCED][AIQ_TASK_CALLING], 1);
    assert_int_equal(st->moves[AIQ_TASK_COALESCED][AIQ_TASK_DROPPED], 1);
    assert_int_equal(st->moves[AIQ_TASK_CALLING][AIQ_TASK_DROPPED], 1);
}

/* A leader that could not call answers by its fallback; its follower is promoted when the
 * leader's record is acknowledged, and calls. A follower promoted after its deadline answers
 * "expired" without calling. */
static void pipeline_leader_without_call_promotes(void **state)
{
    fixture_t *f = *state;
    plan_call(f, CALL_NO_MEMORY, AIQ_CALL_OK, NULL);
    start(f, JOB("job-n1", ""));
    start(f, JOB("job-n2", ""));
    assert_int_equal(f->ncalls, 0);
    run_until_done(2);
    const sent_t *l = expect_sent(f, 0, "t.results", "degraded");
    assert_string_equal(l->key, "job-n1");
    assert_string_equal(jstr(l->json, "fallback"), "template");
    assert_string_equal(jstr(l->json, "error.kind"), "out_of_memory");
    assert_int_equal(f->ncalls, 1);
    assert_string_equal(f->calls[0].job_id, "job-n2");
    expect_sent(f, 1, "t.results", "succeeded");
    ENTERED(f, 2, 2, 1, 2, 2, 2, 0);

    plan_call(f, CALL_HOLD, AIQ_CALL_OK, NULL);
    /* Another payload: the first pair's answer is in the cache. */
#define SHORT(id)                                                                                  \
    "{\"id\":\"" id "\",\"operation\":\"vc-analysis\",\"timeout_ms\":500,\"payload\":{}}"
    aiq_task_t *leader = start(f, SHORT("job-e1"));
    aiq_task_t *follower = start(f, SHORT("job-e2"));
    assert_int_equal(aiq_task_state(leader), AIQ_TASK_CALLING);
    assert_int_equal(aiq_task_state(follower), AIQ_TASK_COALESCED);
    usleep(600 * 1000); /* past both deadlines; 0.5 s leaves a slow start room */
    aiq_task_drop(leader);
    assert_int_equal(f->ncalls, 2); /* no call for the promoted follower */
    run_until_done(3);
    const sent_t *e = expect_sent(f, 2, "t.results", "expired");
    assert_string_equal(e->key, "job-e2");
    ENTERED(f, 4, 4, 2, 3, 3, 3, 1);
    assert_int_equal(aiq_pipeline_stats(f->pl)->moves[AIQ_TASK_COALESCED][AIQ_TASK_PUBLISHING], 1);
}

static void pipeline_final_error_fails_with_support(void **state)
{
    fixture_t *f = *state;
    plan_call(f, CALL_ANSWER, AIQ_CALL_FINAL, "ValidationException");
    start(f, JOB("job-v", ""));
    run_until_done(1);
    const sent_t *s = expect_sent(f, 0, "t.results", "failed");
    assert_string_equal(jstr(s->json, "fallback"), "error");
    assert_string_equal(jstr(s->json, "error.kind"), "ValidationException");
    const char *support = jstr(s->json, "error.support");
    assert_non_null(support);
    assert_non_null(strstr(support, "support@example.com"));
    assert_null(jstr(s->json, "output.text")); /* no canned answer for a wrong request */
    ENTERED(f, 1, 1, 0, 1, 1, 1, 0);
    assert_true(f->summary[0].error);
}

static void pipeline_exhausted_requeued_to_high(void **state)
{
    fixture_t *f = *state;
    plan_call(f, CALL_ANSWER, AIQ_CALL_EXHAUSTED, "ThrottlingException");
    start(f, JOB("job-r", ""));
    run_until_done(1);
    assert_int_equal(f->nsent, 1);
    const sent_t *s = expect_sent(f, 0, "t.jobs.high", NULL);
    assert_string_equal(s->key, "job-r");
    assert_string_equal(jstr(s->json, "id"), "job-r");
    assert_int_equal(json_integer_value(json_object_get(s->json, "attempt")), 3);
    assert_non_null(jstr(s->json, "created_at")); /* the deadline is pinned */
    expect_header(s, "aiq.requeued-from=t.jobs.normal\n");
    expect_header(s, "aiq.requeue-reason=ThrottlingException\n");
    ENTERED(f, 1, 1, 0, 1, 1, 1, 0);
    assert_int_equal(aiq_metrics_event_count(f->metrics, AIQ_METRICS_REQUEUED), 1);
    assert_false(f->summary[0].answered); /* its second round answers */
    aiq_metrics_totals_t m = aiq_metrics_totals(f->metrics);
    for (int i = 0; i < AIQ_METRICS_STATUSES; i++)
        assert_int_equal(m.finished[i], 0); /* not finished yet: no status counted */
}

static void pipeline_exhausted_without_room_falls_back(void **state)
{
    fixture_t *f = *state;
    /* 8 s left is less than twice worker.retry_max_ms (5 s): no room for a second round. */
    plan_call(f, CALL_ANSWER, AIQ_CALL_EXHAUSTED, "ThrottlingException");
    start(f, JOB("job-t", ",\"timeout_ms\":8000"));
    /* A job that was re-enqueued once is not re-enqueued again. */
    plan_call(f, CALL_ANSWER, AIQ_CALL_EXHAUSTED, "ThrottlingException");
    start(f, "{\"id\":\"job-own\",\"operation\":\"vc-analysis\",\"attempt\":3,"
             "\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"hi\"}]}]}");
    run_until_done(2);
    assert_int_equal(f->nsent, 2);
    for (int i = 0; i < 2; i++) {
        const sent_t *s = &f->sent[i];
        assert_string_equal(s->topic, "t.results");
        if (strcmp(s->key, "job-t") == 0) {
            expect_sent(f, i, "t.results", "degraded");
            assert_string_equal(jstr(s->json, "fallback"), "template");
            assert_non_null(strstr(jstr(s->json, "output.text"), "Cafe Rosa"));
            assert_string_equal(jstr(s->json, "error.kind"), "ThrottlingException");
        } else {
            /* It brought its own prompt: a canned answer would not fit; an error does. */
            expect_sent(f, i, "t.results", "failed");
            assert_string_equal(jstr(s->json, "fallback"), "error");
            assert_non_null(strstr(jstr(s->json, "error.support"), "support@example.com"));
            assert_int_equal(json_integer_value(json_object_get(s->json, "attempts")), 6);
        }
    }
    ENTERED(f, 2, 2, 0, 2, 2, 2, 0);
    assert_int_equal(aiq_metrics_event_count(f->metrics, AIQ_METRICS_FALLBACK), 2);
    assert_int_equal(aiq_metrics_event_count(f->metrics, AIQ_METRICS_REQUEUED), 0);
}

/* An operation whose template cannot render (a field it requires is missing) falls back to
 * the simplified answer. */
static void pipeline_simplified_fallback(void **state)
{
    char path[] = "/tmp/aiq-pipeline-ops-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *doc = "{\"operations\":{\"*\":{\"system\":\"s\",\"template\":\"{{payload}}\","
                      "\"fallback\":{\"simplified\":\"Limited service.\",\"support\":\"Call "
                      "us.\"}},\"strict-op\":{\"on_missing\":\"error\",\"fallback\":"
                      "{\"template\":\"For {{businessName}}.\"}}}}";
    assert_int_equal(write(fd, doc, strlen(doc)), (ssize_t)strlen(doc));
    close(fd);
    teardown(state);
    setup_with(state, path, 0, AIQ_LOG_ERROR);
    unlink(path);
    fixture_t *f = *state;
    plan_call(f, CALL_ANSWER, AIQ_CALL_DEADLINE, "deadline");
    start(f, "{\"id\":\"job-s\",\"operation\":\"strict-op\",\"timeout_ms\":8000,"
             "\"payload\":{\"other\":1}}");
    run_until_done(1);
    const sent_t *s = expect_sent(f, 0, "t.results", "degraded");
    assert_string_equal(jstr(s->json, "fallback"), "simplified");
    assert_string_equal(jstr(s->json, "output.text"), "Limited service.");
    ENTERED(f, 1, 1, 0, 1, 1, 1, 0);
}

static void pipeline_reply_topic_refuses_result_to_dlq(void **state)
{
    fixture_t *f = *state;
    plan_pub(f, PUB_PERMANENT);
    start(f, JOB("job-rt", ",\"reply_to\":\"t.reply.mine\""));
    run_until_done(1);
    assert_int_equal(f->nsent, 2);
    expect_sent(f, 0, "t.reply.mine", "succeeded");
    const sent_t *d = expect_sent(f, 1, "t.dlq", "succeeded"); /* the result itself */
    expect_header(d, "aiq.dlq.error-kind=reply_failed\n");
    expect_header(d, "aiq.job-id=job-rt\n");
    assert_string_equal(jstr(d->json, "output.text"), "answer from the call for job-rt");
    ENTERED(f, 1, 1, 0, 1, 1, 1, 0);
    assert_int_equal(aiq_pipeline_stats(f->pl)->moves[AIQ_TASK_PUBLISHING][AIQ_TASK_PUBLISHING], 1);
}

static void pipeline_retriable_publish_error_resent(void **state)
{
    fixture_t *f = *state;
    plan_pub(f, PUB_NOT_QUEUED); /* retried after 0.5 s */
    plan_pub(f, PUB_RETRIABLE);  /* retried after 1 s */
    start(f, JOB("job-p", ""));
    run_until_done(1);
    assert_int_equal(f->nsent, 3);
    for (int i = 0; i < 3; i++) {
        const sent_t *s = expect_sent(f, i, "t.results", "succeeded");
        assert_string_equal(s->key, "job-p");
        assert_string_equal(s->val, f->sent[0].val); /* the same record each time */
    }
    ENTERED(f, 1, 1, 0, 1, 1, 1, 0);
    assert_int_equal(aiq_pipeline_stats(f->pl)->publish_retries, 2);
}

static void pipeline_requeue_refused_falls_back(void **state)
{
    fixture_t *f = *state;
    plan_call(f, CALL_ANSWER, AIQ_CALL_EXHAUSTED, "ThrottlingException");
    plan_pub(f, PUB_PERMANENT);
    start(f, JOB("job-rq", ""));
    run_until_done(1);
    assert_int_equal(f->nsent, 2);
    expect_sent(f, 0, "t.jobs.high", NULL);
    const sent_t *s = expect_sent(f, 1, "t.results", "degraded");
    assert_string_equal(jstr(s->json, "fallback"), "template");
    ENTERED(f, 1, 1, 0, 1, 1, 1, 0);
    assert_true(f->summary[0].answered);
}

/* A streamed job's pieces go to its reply topic while it is still calling (they move no
 * state): the first at once, the rest gathered and sent before its result. Identical
 * streamed jobs do not share a call. */
static void pipeline_streamed_job_partials_then_result(void **state)
{
    fixture_t *f = *state;
    plan_call(f, CALL_HOLD, AIQ_CALL_OK, NULL);
    plan_call(f, CALL_HOLD, AIQ_CALL_OK, NULL);
    aiq_task_t *t = start(f, JOB("job-s1", ",\"stream\":true"));
    aiq_task_t *twin = start(f, JOB("job-s2", ",\"stream\":true"));
    assert_int_equal(f->ncalls, 2);
    assert_int_equal(aiq_task_state(twin), AIQ_TASK_CALLING);
    assert_non_null(f->calls[0].on_partial);
    f->calls[0].on_partial(f->calls[0].opaque, 1, "Hel", 3);
    f->calls[0].on_partial(f->calls[0].opaque, 1, "lo", 2);
    run_now();
    assert_int_equal(f->nsent, 1);
    const sent_t *p = expect_sent(f, 0, "t.results", "partial");
    assert_string_equal(p->key, "job-s1");
    assert_int_equal(json_integer_value(json_object_get(p->json, "seq")), 1);
    assert_int_equal(aiq_task_state(t), AIQ_TASK_CALLING);
    ENTERED(f, 2, 2, 0, 2, 0, 0, 0);
    call_deliver(&f->calls[0]);
    call_deliver(&f->calls[1]);
    run_until_done(2);
    assert_int_equal(f->nsent, 4);
    p = expect_sent(f, 1, "t.results", "partial"); /* the rest, before the result */
    assert_string_equal(p->key, "job-s1");
    assert_int_equal(json_integer_value(json_object_get(p->json, "seq")), 2);
    assert_string_equal(expect_sent(f, 2, "t.results", "succeeded")->key, "job-s1");
    assert_string_equal(expect_sent(f, 3, "t.results", "succeeded")->key, "job-s2");
    ENTERED(f, 2, 2, 0, 2, 2, 2, 0);
}

/* Dropping a queued task frees it unfinished; starting a task twice, or dropping one that
 * is publishing, is refused and counted. */
static void pipeline_queued_dropped_and_double_start(void **state)
{
    fixture_t *f = *state;
    aiq_task_t *t = submit(f, JOB("job-q", ""), 0);
    aiq_task_drop(t);
    ENTERED(f, 1, 0, 0, 0, 0, 0, 1);
    assert_int_equal(aiq_pipeline_stats(f->pl)->moves[AIQ_TASK_QUEUED][AIQ_TASK_DROPPED], 1);
#if AIQ_TASK_STRICT
    skip(); /* the illegal move would abort */
#else
    plan_call(f, CALL_HOLD, AIQ_CALL_OK, NULL);
    aiq_task_t *twice = start(f, JOB("job-2x", ""));
    aiq_pipeline_start(f->pl, twice);
    assert_int_equal(aiq_pipeline_stats(f->pl)->illegal_moves, 1);
    assert_int_equal(f->ncalls, 1); /* not called again */
    assert_int_equal(aiq_task_state(twice), AIQ_TASK_CALLING);
    aiq_task_drop(twice);
    /* A task whose record is out cannot be dropped: its delivery report is still to come. */
    aiq_task_t *out = start(f, "junk");
    assert_int_equal(aiq_task_state(out), AIQ_TASK_PUBLISHING);
    aiq_task_drop(out);
    assert_int_equal(aiq_pipeline_stats(f->pl)->illegal_moves, 2);
    assert_int_equal(aiq_task_state(out), AIQ_TASK_PUBLISHING);
    run_until_done(1);
    expect_sent(f, 0, "t.dlq", NULL);
    aiq_pipeline_free(f->pl); /* teardown insists on zero illegal moves */
    new_pipeline(f);
#endif
}

/* Shutdown frees tasks in every state; the debug trace shows each move with its line. */
static void pipeline_shutdown_drops_all_traced(void **state)
{
    teardown(state);
    setup_with(state, AIQ_OPS_FILE, 0, AIQ_LOG_DEBUG);
    fixture_t *f = *state;
    char path[] = "/tmp/aiq-pipeline-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);

    submit(f, JOB("job-sq", ""), 0);            /* queued */
    plan_call(f, CALL_HOLD, AIQ_CALL_OK, NULL); /* calling */
    start(f, JOB("job-sc", ""));                /* coalesced */
    start(f, JOB("job-sc2", ""));
    plan_pub(f, PUB_RETRIABLE); /* publishing: waits to resend */
    start(f, "{\"id\":\"job-sp\",\"operation\":\"persona-detection\",\"payload\":{}}");
    run_now();
    assert_int_equal(f->nsent, 1);
    const aiq_pipeline_stats_t *st = aiq_pipeline_stats(f->pl);
    assert_int_equal(st->illegal_moves, 0);
    for (int a = 0; a < AIQ_TASK_NSTATES; a++)
        for (int b = 0; b < AIQ_TASK_NSTATES; b++)
            covered[a][b] += st->moves[a][b];
    aiq_pipeline_free(f->pl);
    f->pl = NULL;
    assert_int_equal(f->ndone, 0);

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char log[65536];
    ssize_t n = pread(fd, log, sizeof(log) - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    log[n] = '\0';
    static const char *const want[] = {
        "state queued -> started (",    "state started -> calling (",
        "state started -> coalesced (", "state calling -> publishing (",
        "state queued -> dropped (",    "state calling -> dropped (",
        "state coalesced -> dropped (", "state publishing -> dropped (",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (!strstr(log, want[i]))
            print_error("trace lacks '%s'\n", want[i]);
        assert_non_null(strstr(log, want[i]));
    }
    /* Each move names the file and line that made it. */
    const char *at = strstr(log, "state queued -> started (pipeline.c:");
    assert_non_null(at);
    at += strlen("state queued -> started (pipeline.c:");
    assert_true(*at >= '1' && *at <= '9');
    /* Shutdown's moves, seen in the trace, count as covered. */
    for (int a = 0; a < AIQ_TASK_NSTATES; a++)
        covered[a][AIQ_TASK_DROPPED] += aiq_task_move_legal(a, AIQ_TASK_DROPPED) ? 1 : 0;
}

/* The cases above, together, made every move the table allows, and the table allows what a
 * job's life needs (and not a move back to queued or out of a final state). */
static void pipeline_every_legal_move_covered(void **state)
{
    (void)state;
    int missing = 0;
    for (int a = 0; a < AIQ_TASK_NSTATES; a++) {
        for (int b = 0; b < AIQ_TASK_NSTATES; b++) {
            if (aiq_task_move_legal(a, b) && !covered[a][b]) {
                print_error("move %s -> %s never made\n", aiq_task_state_name(a),
                            aiq_task_state_name(b));
                missing++;
            }
            if (!aiq_task_move_legal(a, b) && a != b)
                assert_int_equal(covered[a][b], 0);
        }
        assert_false(aiq_task_move_legal(a, AIQ_TASK_QUEUED));
        assert_false(aiq_task_move_legal(AIQ_TASK_DONE, a));
        assert_false(aiq_task_move_legal(AIQ_TASK_DROPPED, a));
    }
    assert_int_equal(missing, 0);
    assert_string_equal(aiq_task_state_name(AIQ_TASK_COALESCED), "coalesced");
    assert_string_equal(aiq_task_state_name(AIQ_TASK_NSTATES), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(pipeline_valid_job_called_published_done, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_undecodable_record_to_dlq, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_invalid_job_with_id_to_dlq_and_rejected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(pipeline_reply_to_job_topic_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_expired_before_start, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_cache_hit_and_stale_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_identical_jobs_share_one_call, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_job_started_in_a_followers_slot_hits_cache, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(pipeline_leader_dropped_follower_promoted, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_leader_without_call_promotes, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_final_error_fails_with_support, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_exhausted_requeued_to_high, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_exhausted_without_room_falls_back, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(pipeline_simplified_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_reply_topic_refuses_result_to_dlq, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(pipeline_retriable_publish_error_resent, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_requeue_refused_falls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_streamed_job_partials_then_result, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(pipeline_queued_dropped_and_double_start, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_shutdown_drops_all_traced, setup, teardown),
        cmocka_unit_test(pipeline_every_legal_move_covered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
