#include "provider.h"
#include "aimd.h"
#include "backoff.h"
#include "retry.h"
#include "timeutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per-model state: a sick model (throttled, slow, hung) shrinks only its own limit and spends
 * only its own retry budget. Lane 0 is shared by models past the first PROVIDER_LANES - 1. */
#define PROVIDER_LANES     32
#define PROVIDER_MODEL_MAX 256

typedef struct lane {
    char model[PROVIDER_MODEL_MAX];
    aiq_aimd_t aimd;
    aiq_retry_budget_t budget;
    int inflight; /* calls on the wire or holding a slot while backing off */
    int used;     /* has had a call: counts in the gauges */
    /* calls of this model waiting for a slot, oldest first: a model at its limit is skipped
     * in one step, however many of its calls wait */
    struct aiq_provider_call *wait_head, *wait_tail;
} lane_t;

struct aiq_provider_call {
    aiq_provider_call_t *prev, *next; /* the waiting list, or the live list */
    aiq_provider_t *p;
    const aiq_job_t *job;
    const char *model;
    aiq_bedrock_wire_t wire; /* what the request sent: the reply is read as this */
    int lane;
    uint64_t seq; /* when it last started waiting */
    int64_t deadline_ms;
    aiq_provider_cb cb;
    void *opaque;
    int waiting;      /* on a waiting list */
    int probe;        /* this attempt is a half-open probe */
    int retry_cost;   /* budget tokens the pending retry spent, refunded on success */
    int model_errors; /* 408/424 answers so far */
    int throttles;    /* 429 answers so far */
    int holds_slot;   /* backing off after a throttle: counts as in flight */
    int timer_on;     /* timer initialised: freeing waits for its close */
    int64_t sent_ms;  /* monotonic, for the latency signal */
    aiq_http_req_t *req;
    aiq_bedrock_stream_t *stream;       /* ConverseStream reader of the attempt in flight */
    int stream_broken;                  /* its framing broke: the transfer was stopped */
    aiq_provider_partial_cb on_partial; /* text deltas of a stream, or NULL */
    uv_timer_t timer;
    aiq_call_outcome_t out;
};

struct aiq_provider {
    aiq_provider_deps_t d;
    /* Calls waiting for a slot wait on their model's lane, in the order admission started
     * their jobs (which already applied priority and aging): one decision, not a second
     * priority queue here. seq orders the heads of different lanes. */
    uint64_t seq;
    aiq_provider_call_t *live; /* in flight or backing off */
    int inflight;              /* all lanes: at most bedrock.max_concurrency */
    int cap;
    aiq_aimd_conf_t aimd_conf;
    lane_t lanes[PROVIDER_LANES];
    int nlanes;
    aiq_retry_policy_t retry;
    uint64_t rng;
    aiq_provider_stats_t stats;
    uv_idle_t pump; /* callbacks never run inside aiq_provider_request */
};

static const char *const end_names[] = {"ok",           "final",    "exhausted", "retry_budget",
                                        "breaker_open", "deadline", "rejected"};

const char *aiq_call_end_name(aiq_call_end_t e)
{
    return (unsigned)e < sizeof(end_names) / sizeof(end_names[0]) ? end_names[e] : "unknown";
}

static void dispatch(aiq_provider_t *p);
static void attempt(aiq_provider_call_t *c);

/* ---- lists ------------------------------------------------------------------------- */

static void live_add(aiq_provider_t *p, aiq_provider_call_t *c)
{
    c->prev = NULL;
    c->next = p->live;
    if (p->live)
        p->live->prev = c;
    p->live = c;
}

static void live_del(aiq_provider_t *p, aiq_provider_call_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (p->live == c)
        p->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void wait_push(aiq_provider_t *p, aiq_provider_call_t *c)
{
    live_del(p, c);
    lane_t *l = &p->lanes[c->lane];
    c->waiting = 1;
    c->seq = ++p->seq;
    c->next = NULL;
    c->prev = l->wait_tail;
    if (l->wait_tail)
        l->wait_tail->next = c;
    else
        l->wait_head = c;
    l->wait_tail = c;
    p->stats.waiting++;
}

static void wait_del(aiq_provider_t *p, aiq_provider_call_t *c)
{
    lane_t *l = &p->lanes[c->lane];
    if (c->prev)
        c->prev->next = c->next;
    else
        l->wait_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->wait_tail = c->prev;
    c->prev = c->next = NULL;
    c->waiting = 0;
    p->stats.waiting--;
}

/* ---- ending a request ---------------------------------------------------------------- */

static void call_free(aiq_provider_call_t *c)
{
    aiq_bedrock_reply_free(&c->out.reply);
    aiq_bedrock_stream_free(c->stream);
    free(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    call_free(h->data);
}

static void slot_take(aiq_provider_call_t *c)
{
    c->p->inflight++;
    c->p->lanes[c->lane].inflight++;
}

static void slot_give(aiq_provider_call_t *c)
{
    c->p->inflight--;
    c->p->lanes[c->lane].inflight--;
}

static void slot_release(aiq_provider_call_t *c)
{
    if (c->holds_slot) {
        c->holds_slot = 0;
        slot_give(c);
    }
}

/* Unlinks c and releases it; the callback (if any) has run already. */
static void call_release(aiq_provider_call_t *c)
{
    aiq_provider_t *p = c->p;
    if (c->waiting)
        wait_del(p, c);
    else
        live_del(p, c);
    if (c->req) {
        aiq_http_cancel(p->d.http, c->req);
        c->req = NULL;
        slot_give(c);
    }
    slot_release(c);
    if (c->probe) {
        aiq_breaker_share_abandon(p->d.breakers, c->model, true);
        c->probe = 0;
    }
    if (c->timer_on)
        uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    else
        call_free(c);
}

static void finish(aiq_provider_call_t *c, aiq_call_end_t end)
{
    c->out.end = end;
    c->out.model = c->model;
    if (end == AIQ_CALL_OK)
        c->out.error_kind[0] = c->out.error_msg[0] = '\0';
    else if (end == AIQ_CALL_BREAKER_OPEN && !c->out.error_kind[0])
        snprintf(c->out.error_kind, sizeof(c->out.error_kind), "breaker_open");
    if (end == AIQ_CALL_BREAKER_OPEN)
        snprintf(c->out.error_msg, sizeof(c->out.error_msg), "circuit breaker for %s is open%s%s",
                 c->model, c->out.attempts ? "; last: " : "",
                 c->out.attempts ? c->out.error_kind : "");
    c->cb(c->opaque, &c->out);
    call_release(c);
}

/* ---- admission ----------------------------------------------------------------------- */

static int lane_limit(const aiq_provider_t *p, const lane_t *l)
{
    return p->d.cfg->adaptive ? aiq_aimd_limit(&l->aimd) : l->aimd.conf.max;
}

/* The oldest waiting call of a model under its limit, or NULL. */
static aiq_provider_call_t *next_waiting(const aiq_provider_t *p)
{
    aiq_provider_call_t *best = NULL;
    for (int i = 0; i < p->nlanes; i++) {
        const lane_t *l = &p->lanes[i];
        if (l->wait_head && l->inflight < lane_limit(p, l) &&
            (!best || l->wait_head->seq < best->seq))
            best = l->wait_head;
    }
    return best;
}

/* Starts waiting calls, oldest first, while the global cap allows; a call whose model is
 * at its own limit waits without holding back the calls of other models. */
static void dispatch(aiq_provider_t *p)
{
    aiq_provider_call_t *c;
    while (p->inflight < p->cap && (c = next_waiting(p)) != NULL) {
        wait_del(p, c);
        live_add(p, c);
        attempt(c);
    }
}

static void on_pump(uv_idle_t *h)
{
    aiq_provider_t *p = h->data;
    uv_idle_stop(h);
    dispatch(p);
}

static void pump_later(aiq_provider_t *p)
{
    uv_idle_start(&p->pump, on_pump);
}

/* ---- one attempt ----------------------------------------------------------------------- */

static uint64_t next_rand(aiq_provider_t *p)
{
    /* xorshift64*: plenty for jitter, and per provider instead of global. */
    p->rng ^= p->rng >> 12;
    p->rng ^= p->rng << 25;
    p->rng ^= p->rng >> 27;
    return p->rng * 2685821657736338717ULL;
}

static void on_backoff_done(uv_timer_t *timer)
{
    aiq_provider_call_t *c = timer->data;
    slot_release(c);
    wait_push(c->p, c);
    dispatch(c->p);
}

/* Acts on the retry decision for a failed attempt of class cls (retry.c decides). */
static void failed(aiq_provider_call_t *c, aiq_bedrock_class_t cls, const aiq_http_response_t *r)
{
    aiq_provider_t *p = c->p;
    int64_t now = aiq_now_ms();
    bool throttled = cls == AIQ_BEDROCK_THROTTLED;
    if (throttled)
        c->throttles++;
    if (cls == AIQ_BEDROCK_MODEL_ERROR)
        c->model_errors++;
    aiq_retry_input_t in = {
        .cls = cls,
        .attempts = c->out.attempts,
        .throttles = c->throttles,
        .model_errors = c->model_errors,
        .timeout_like = cls == AIQ_BEDROCK_RETRY && (!r || r->curl_code != CURLE_OK),
        .hint_ms = r ? aiq_backoff_retry_after_ms(r->retry_after, r->amz_retry_after, now) : -1,
        .now_ms = now,
        .deadline_ms = c->deadline_ms,
        .rnd = next_rand(p),
    };
    aiq_retry_decision_t d = aiq_retry_decide(&p->retry, &p->lanes[c->lane].budget, &in);
    if (!d.retry) {
        if (d.end == AIQ_CALL_NO_BUDGET)
            aiq_metrics_count(p->d.metrics, AIQ_METRICS_BUDGET_DENIED);
        else if (d.end == AIQ_CALL_DEADLINE)
            p->stats.deadline_cut++;
        finish(c, d.end);
        return;
    }
    c->retry_cost += d.cost;
    aiq_metrics_retry(p->d.metrics);
    aiq_logjt(p->d.log, throttled ? AIQ_LOG_DEBUG : AIQ_LOG_INFO, c->job->id, c->job->traceparent,
              "attempt %d failed (%s%s%s), retrying in %lld ms", c->out.attempts, c->out.error_kind,
              c->out.request_id[0] ? ", request id " : "", c->out.request_id, (long long)d.wait_ms);
    /* A throttled call holds its slot while it waits, so the adaptive limit (which
     * throttling shrinks) bounds the request rate. */
    if (throttled) {
        c->holds_slot = 1;
        slot_take(c);
    }
    if (!c->timer_on) {
        uv_timer_init(p->d.loop, &c->timer);
        c->timer.data = c;
        c->timer_on = 1;
    }
    uv_timer_start(&c->timer, on_backoff_done, (uint64_t)d.wait_ms, 0);
}

/* The answer of a 2xx exchange, into c->out.reply: true when there is one. A 200 is the
 * model's answer, read or not (then raw and marked): never a failure. A stream is the
 * exception: one that ends in an exception answers that error (*cls from its type, as the
 * call would have), one that ends early is retried; and running out of memory. */
static bool take_answer(aiq_provider_call_t *c, const aiq_http_response_t *resp,
                        aiq_bedrock_class_t *cls)
{
    aiq_err_t err = {0};
    int rc;
    if (c->wire.stream) {
        rc = aiq_bedrock_stream_finish(c->stream, &c->out.reply, &err);
        const char *msg = NULL, *exc = aiq_bedrock_stream_exception(c->stream, &msg);
        if (!rc)
            return true;
        *cls = AIQ_BEDROCK_RETRY;
        if (exc) {
            *cls = aiq_bedrock_classify(500, exc, 0, c->out.error_kind, sizeof(c->out.error_kind));
            snprintf(c->out.error_msg, sizeof(c->out.error_msg), "%s", msg);
            return false;
        }
    } else {
        aiq_bedrock_resp_t br = {
            resp->body,          resp->body_len,          resp->input_tokens,
            resp->output_tokens, resp->cache_read_tokens, resp->cache_write_tokens};
        rc = aiq_bedrock_parse(&c->wire, &br, &c->out.reply, &err);
        if (!rc)
            return true;
        *cls = AIQ_BEDROCK_RETRY;
    }
    snprintf(c->out.error_kind, sizeof(c->out.error_kind), "%s",
             rc == AIQ_ENOMEM ? "out_of_memory" : "bad_stream");
    snprintf(c->out.error_msg, sizeof(c->out.error_msg), "%s", err.msg);
    return false;
}

static void on_stream_text(void *opaque, const char *text, size_t len)
{
    aiq_provider_call_t *c = opaque;
    if (c->on_partial)
        c->on_partial(c->opaque, c->out.attempts, text, len);
}

static int on_stream_data(void *opaque, const char *data, size_t len)
{
    aiq_provider_call_t *c = opaque;
    aiq_err_t err = {0};
    int rc = aiq_bedrock_stream_feed(c->stream, data, len, &err);
    if (rc >= 0)
        return 0; /* an exception (1) is read to the end of the body, then answered */
    c->stream_broken = 1;
    snprintf(c->out.error_msg, sizeof(c->out.error_msg), "%s", err.msg);
    return 1;
}

/* What a failed exchange says went wrong, into the outcome. */
static void error_of(aiq_provider_call_t *c, const aiq_http_response_t *resp)
{
    if (resp->curl_code != CURLE_OK && c->stream_broken)
        snprintf(c->out.error_kind, sizeof(c->out.error_kind), "bad_stream");
    else if (resp->curl_code != CURLE_OK)
        snprintf(c->out.error_msg, sizeof(c->out.error_msg), "%s", resp->curl_error);
    else
        aiq_bedrock_error_message(resp->body, resp->body_len, c->out.error_msg,
                                  sizeof(c->out.error_msg));
}

static void on_reply(void *opaque, const aiq_http_response_t *resp)
{
    aiq_provider_call_t *c = opaque;
    aiq_provider_t *p = c->p;
    int64_t now = aiq_now_ms();
    bool probe = c->probe;
    lane_t *l = &p->lanes[c->lane];
    c->req = NULL;
    c->probe = 0;
    slot_give(c);
    c->out.provider_ms += resp->elapsed_ms;
    c->out.http_status = (int)resp->status;
    snprintf(c->out.request_id, sizeof(c->out.request_id), "%s",
             resp->request_id ? resp->request_id : "");
    aiq_metrics_model_call(p->d.metrics, resp->curl_code == CURLE_OK ? resp->status : 0);
    aiq_bedrock_class_t cls =
        aiq_bedrock_classify(resp->status, resp->error_type, resp->curl_code != CURLE_OK,
                             c->out.error_kind, sizeof(c->out.error_kind));
    if (resp->curl_code == CURLE_OPERATION_TIMEDOUT)
        snprintf(c->out.error_kind, sizeof(c->out.error_kind), "timeout");
    if (cls == AIQ_BEDROCK_OK) {
        if (take_answer(c, resp, &cls)) {
            aiq_breaker_share_report(p->d.breakers, c->model, true, probe, now);
            aiq_aimd_on_success(&l->aimd, aiq_mono_ms() - c->sent_ms, l->inflight + 1, now);
            aiq_retry_budget_success(&l->budget, c->retry_cost);
            finish(c, AIQ_CALL_OK);
            dispatch(p);
            return;
        }
    } else {
        error_of(c, resp);
    }
    switch (cls) {
    case AIQ_BEDROCK_THROTTLED:
        /* A throttled service is up: no breaker failure, but call less. */
        aiq_metrics_count(p->d.metrics, AIQ_METRICS_THROTTLED);
        aiq_breaker_share_abandon(p->d.breakers, c->model, probe);
        aiq_aimd_on_throttle(&l->aimd, now);
        break;
    case AIQ_BEDROCK_NOT_READY:
        /* botocore's transient error: this model is loading. It is no back-pressure, so the
         * model's adaptive limit stays; its breaker hears of it, like any unavailable model. */
        aiq_breaker_share_report(p->d.breakers, c->model, false, probe, now);
        break;
    case AIQ_BEDROCK_CREDS:
        /* Our credentials, not the model: retried once they are refreshed. */
        aiq_breaker_share_abandon(p->d.breakers, c->model, probe);
        break;
    case AIQ_BEDROCK_FINAL:
        /* The service answered; the request is what is wrong. */
        aiq_breaker_share_report(p->d.breakers, c->model, true, probe, now);
        break;
    default:
        aiq_breaker_share_report(p->d.breakers, c->model, false, probe, now);
        aiq_aimd_on_failure(&l->aimd, now);
        break;
    }
    failed(c, cls, cls == AIQ_BEDROCK_FINAL ? NULL : resp);
    dispatch(p);
}

/* A request that could not be built. Something the job asks for that the request cannot
 * carry (AIQ_EINVAL) is refused by name, never sent without it. */
static void build_failed(aiq_provider_call_t *c, int rc, const aiq_err_t *err)
{
    snprintf(c->out.error_kind, sizeof(c->out.error_kind), "%s",
             rc == AIQ_EINVAL ? "unsupported_request" : "request_build");
    snprintf(c->out.error_msg, sizeof(c->out.error_msg), "%s", err->msg);
    finish(c, rc == AIQ_EINVAL ? AIQ_CALL_REJECTED : AIQ_CALL_FINAL);
}

/* A ConverseStream reply is read as it arrives, by a reader of this attempt's own. */
static int stream_start(aiq_provider_call_t *c, aiq_err_t *err)
{
    aiq_bedrock_stream_free(c->stream);
    c->stream_broken = 0;
    c->stream = aiq_bedrock_stream_new(on_stream_text, c);
    if (c->stream) {
        aiq_http_stream_body(c->req, on_stream_data);
        return 0;
    }
    aiq_http_cancel(c->p->d.http, c->req);
    return aiq_err_set(err, AIQ_ENOMEM, "out of memory for the stream reader");
}

static void attempt(aiq_provider_call_t *c)
{
    aiq_provider_t *p = c->p;
    int64_t now = aiq_now_ms(), left = c->deadline_ms - now;
    if (left <= 0) {
        if (!c->out.error_kind[0])
            snprintf(c->out.error_kind, sizeof(c->out.error_kind), "deadline_exceeded");
        snprintf(c->out.error_msg, sizeof(c->out.error_msg),
                 "deadline passed before the model answered");
        finish(c, AIQ_CALL_DEADLINE);
        return;
    }
    bool probe;
    if (!aiq_breaker_share_allow(p->d.breakers, c->model, now, &probe)) {
        aiq_metrics_count(p->d.metrics, AIQ_METRICS_BREAKER_REJECTED);
        finish(c, AIQ_CALL_BREAKER_OPEN);
        return;
    }
    aiq_bedrock_call_t call;
    aiq_sigv4_creds_t creds;
    aiq_err_t err = {0};
    int rc = aiq_creds_get(p->d.creds, &creds, &err);
    if (rc) {
        aiq_breaker_share_abandon(p->d.breakers, c->model, probe);
        snprintf(c->out.error_kind, sizeof(c->out.error_kind), "credentials_unavailable");
        snprintf(c->out.error_msg, sizeof(c->out.error_msg), "%s", err.msg);
        failed(c, AIQ_BEDROCK_RETRY, NULL);
        return;
    }
    rc = aiq_bedrock_build(&p->d.bedrock, &creds, c->job, (time_t)(now / 1000), &call, &err);
    if (rc) {
        aiq_breaker_share_abandon(p->d.breakers, c->model, probe);
        build_failed(c, rc, &err);
        return;
    }
    c->probe = probe;
    c->wire = call.wire;
    c->out.attempts++;
    p->stats.calls++;
    long timeout =
        (long)(left < p->d.cfg->request_timeout_ms ? left : p->d.cfg->request_timeout_ms);
    c->sent_ms = aiq_mono_ms();
    rc = aiq_http_post(p->d.http, call.url, call.headers, call.body, call.body_len, timeout,
                       on_reply, c, &c->req, &err);
    call.headers = NULL; /* taken by aiq_http_post */
    aiq_bedrock_call_free(&call);
    if (!rc && c->wire.stream)
        rc = stream_start(c, &err);
    if (rc) {
        c->req = NULL;
        c->probe = 0;
        aiq_breaker_share_abandon(p->d.breakers, c->model, probe);
        snprintf(c->out.error_kind, sizeof(c->out.error_kind), "transport");
        snprintf(c->out.error_msg, sizeof(c->out.error_msg), "%s", err.msg);
        failed(c, AIQ_BEDROCK_RETRY, NULL);
        return;
    }
    slot_take(c);
}

/* ---- lanes ------------------------------------------------------------------------- */

static void lane_init(aiq_provider_t *p, lane_t *l, const char *model)
{
    snprintf(l->model, sizeof(l->model), "%s", model);
    aiq_aimd_init(&l->aimd, &p->aimd_conf);
    aiq_retry_budget_init(&l->budget, (int)p->d.cfg->retry_budget, 5, 10);
    l->inflight = 0;
    l->used = 0;
    l->wait_head = l->wait_tail = NULL;
}

/* The lane of model, made on first use; lane 0 when the table is full. */
static int lane_of(aiq_provider_t *p, const char *model)
{
    int i = 1;
    if (!model || !model[0] || strlen(model) >= PROVIDER_MODEL_MAX)
        i = 0;
    while (i > 0 && i < p->nlanes && strcmp(p->lanes[i].model, model) != 0)
        i++;
    if (i == PROVIDER_LANES)
        i = 0;
    else if (i > 0 && i == p->nlanes)
        lane_init(p, &p->lanes[p->nlanes++], model);
    p->lanes[i].used = 1;
    return i;
}

/* ---- public ------------------------------------------------------------------------ */

const char *aiq_provider_model(const aiq_provider_t *p, const aiq_job_t *job)
{
    return aiq_bedrock_model(&p->d.bedrock, job);
}

void aiq_provider_on_partial(aiq_provider_call_t *c, aiq_provider_partial_cb cb)
{
    c->on_partial = cb;
}

aiq_provider_call_t *aiq_provider_request(aiq_provider_t *p, const aiq_job_t *job, int prio,
                                          int64_t deadline_ms, aiq_provider_cb cb, void *opaque)
{
    aiq_provider_call_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->p = p;
    c->job = job;
    c->model = aiq_provider_model(p, job);
    (void)prio; /* unused: admission ordered the jobs, calls wait in that order */
    c->lane = lane_of(p, c->model);
    c->deadline_ms = deadline_ms;
    c->cb = cb;
    c->opaque = opaque;
    wait_push(p, c);
    pump_later(p);
    return c;
}

void aiq_provider_cancel(aiq_provider_t *p, aiq_provider_call_t *c)
{
    (void)p;
    call_release(c);
    pump_later(p);
}

/* The first waiting call whose deadline has passed, or NULL. */
static aiq_provider_call_t *first_expired(aiq_provider_t *p, int64_t now_ms)
{
    for (int i = 0; i < p->nlanes; i++)
        for (aiq_provider_call_t *c = p->lanes[i].wait_head; c; c = c->next)
            if (c->deadline_ms <= now_ms)
                return c;
    return NULL;
}

void aiq_provider_expire(aiq_provider_t *p, int64_t now_ms)
{
    /* One at a time from the heads: a callback may request or cancel calls, changing the
     * lists under a saved pointer. */
    aiq_provider_call_t *c;
    while ((c = first_expired(p, now_ms)) != NULL) {
        if (!c->out.error_kind[0])
            snprintf(c->out.error_kind, sizeof(c->out.error_kind), "deadline_exceeded");
        snprintf(c->out.error_msg, sizeof(c->out.error_msg),
                 "deadline passed before the model answered");
        finish(c, AIQ_CALL_DEADLINE); /* unlinks it from its waiting list */
    }
}

aiq_provider_stats_t aiq_provider_stats(const aiq_provider_t *p)
{
    aiq_provider_stats_t s = p->stats;
    s.inflight = p->inflight;
    /* One number for the gauges: what the lanes in use allow together, within the cap. */
    int limit = 0, tokens = 0;
    for (int i = 0; i < p->nlanes; i++) {
        if (!p->lanes[i].used)
            continue;
        limit += lane_limit(p, &p->lanes[i]);
        tokens += aiq_retry_budget_tokens(&p->lanes[i].budget);
    }
    s.limit = limit && limit < p->cap ? limit : p->cap;
    s.budget_tokens = tokens;
    return s;
}

int aiq_provider_new(aiq_provider_t **out, const aiq_provider_deps_t *deps, aiq_err_t *err)
{
    aiq_provider_t *p = calloc(1, sizeof(*p));
    if (!p)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    p->d = *deps;
    const aiq_config_t *cfg = deps->cfg;
    int max = (int)(cfg->max_concurrency ? cfg->max_concurrency : cfg->max_inflight);
    int min = (int)(cfg->min_concurrency < max ? cfg->min_concurrency : max);
    aiq_aimd_conf_t ac = {
        .min = min,
        .max = max,
        .initial = max,
        .decrease = 0.7,
        .latency_tolerance = 2.0,
        .cooldown_ms = 1, /* one decrease per round trip (the median latency) at most */
    };
    p->aimd_conf = ac;
    p->cap = max;
    lane_init(p, &p->lanes[0], "");
    p->nlanes = 1;
    p->retry = (aiq_retry_policy_t){
        .max_attempts = (int)cfg->max_attempts,
        .model_error_retries = (int)cfg->model_error_retries,
        .backoff = {cfg->retry_base_ms, cfg->retry_max_ms, cfg->retry_throttle_floor_ms},
    };
    p->rng = (uint64_t)aiq_now_ms() ^ ((uint64_t)(uintptr_t)p << 16) ^ 0x9E3779B97F4A7C15ULL;
    uv_idle_init(deps->loop, &p->pump);
    p->pump.data = p;
    *out = p;
    return 0;
}

static void on_pump_closed(uv_handle_t *h)
{
    free(h->data);
}

void aiq_provider_free(aiq_provider_t *p)
{
    if (!p)
        return;
    while (p->live)
        call_release(p->live);
    for (int i = 0; i < p->nlanes; i++)
        while (p->lanes[i].wait_head)
            call_release(p->lanes[i].wait_head);
    uv_close((uv_handle_t *)&p->pump, on_pump_closed);
}
