#include "publish.h"
#include "timeutil.h"
#include "bridge.h"
#include "kafka.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EVENTS_PER_TURN 256

struct aiq_publisher {
    aiq_log_t *log;
    aiq_kafka_ctx_t kctx; /* the handle's opaque: log context, owner = this */
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq;
    aiq_bridge_t *bridge;
    aiq_publish_fatal_cb on_fatal;
    void *fatal_opaque;
    int fatal_reported;
};

typedef struct pending {
    aiq_publish_cb cb;
    void *opaque;
} pending_t;

static int permanent_error(rd_kafka_resp_err_t e)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
        return 1;
    default:
        return 0;
    }
}

static void handle_dr(aiq_publisher_t *p, rd_kafka_event_t *ev)
{
    (void)p;
    const rd_kafka_message_t *msgs[64];
    size_t n;
    while ((n = rd_kafka_event_message_array(ev, msgs, 64)) > 0) {
        for (size_t i = 0; i < n; i++) {
            pending_t *pd = msgs[i]->_private;
            rd_kafka_resp_err_t e = msgs[i]->err;
            pd->cb(pd->opaque, e, permanent_error(e), e ? rd_kafka_err2str(e) : "");
            free(pd);
        }
    }
}

static void handle_error(aiq_publisher_t *p, rd_kafka_event_t *ev)
{
    rd_kafka_resp_err_t e = rd_kafka_event_error(ev);
    if (rd_kafka_event_error_is_fatal(ev) || e == RD_KAFKA_RESP_ERR__FATAL) {
        char buf[512];
        rd_kafka_fatal_error(p->rk, buf, sizeof(buf));
        aiq_log_error(p->log, "producer fatal error: %s", buf);
        if (!p->fatal_reported && p->on_fatal) {
            p->fatal_reported = 1;
            p->on_fatal(p->fatal_opaque, buf);
        }
        return;
    }
    if (e == RD_KAFKA_RESP_ERR__AUTHENTICATION || e == RD_KAFKA_RESP_ERR__SSL) {
        /* librdkafka retries a refused login or TLS handshake for ever, but wrong
         * credentials or certificates never heal: stop with the reason instead of idling. */
        char buf[768];
        snprintf(buf, sizeof(buf),
                 "Kafka %s failed: %s (check the kafka.rdkafka.security.protocol, sasl.* and "
                 "ssl.* settings)",
                 e == RD_KAFKA_RESP_ERR__SSL ? "TLS" : "authentication",
                 rd_kafka_event_error_string(ev));
        aiq_log_error(p->log, "%s", buf);
        if (!p->fatal_reported && p->on_fatal) {
            p->fatal_reported = 1;
            p->on_fatal(p->fatal_opaque, buf);
        }
        return;
    }
    /* Transient: librdkafka retries on its own; say so once per event. */
    aiq_log_warn(p->log, "producer: %s", rd_kafka_event_error_string(ev));
}

/* Serves one event of the main queue; the bridge calls it at most EVENTS_PER_TURN times
 * per loop turn. */
static int serve_one(void *opaque)
{
    aiq_publisher_t *p = opaque;
    rd_kafka_event_t *ev = rd_kafka_queue_poll(p->mainq, 0);
    if (!ev)
        return 0;
    switch (rd_kafka_event_type(ev)) {
    case RD_KAFKA_EVENT_DR:
        handle_dr(p, ev);
        break;
    case RD_KAFKA_EVENT_ERROR:
        handle_error(p, ev);
        break;
    default:
        break;
    }
    rd_kafka_event_destroy(ev);
    return 1;
}

static rd_kafka_t *create_producer(aiq_publisher_t *p, const aiq_config_t *cfg, aiq_err_t *err)
{
    p->kctx = (aiq_kafka_ctx_t){.log = p->log, .owner = p};
    aiq_kafka_params_t params = {.brokers = cfg->brokers, .cfg = cfg, .ctx = &p->kctx};
    rd_kafka_conf_t *conf;
    if (aiq_kafka_conf_new(&conf, AIQ_KAFKA_WORKER_PRODUCER, &params, err))
        return NULL;
    rd_kafka_conf_set_events(conf, RD_KAFKA_EVENT_DR | RD_KAFKA_EVENT_ERROR);
    char errstr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        aiq_err_set(err, AIQ_EKAFKA, "cannot create producer: %s", errstr);
    }
    return rk;
}

int aiq_publisher_new(aiq_publisher_t **out, uv_loop_t *loop, const aiq_config_t *cfg,
                      aiq_log_t *log, aiq_publish_fatal_cb on_fatal, void *fatal_opaque,
                      aiq_err_t *err)
{
    aiq_publisher_t *p = calloc(1, sizeof(*p));
    if (!p)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    p->log = log;
    p->on_fatal = on_fatal;
    p->fatal_opaque = fatal_opaque;
    p->rk = create_producer(p, cfg, err);
    if (!p->rk)
        goto fail_rk;
    p->mainq = rd_kafka_queue_get_main(p->rk);
    aiq_bridge_conf_t bc = {
        .queue = p->mainq, .budget = EVENTS_PER_TURN, .serve = serve_one, .opaque = p};
    if (aiq_bridge_new(&p->bridge, loop, &bc, err))
        goto fail_bridge;
    *out = p;
    return 0;
fail_bridge:
    rd_kafka_queue_destroy(p->mainq);
    rd_kafka_destroy(p->rk);
fail_rk:
    free(p);
    return err ? err->code : AIQ_EKAFKA;
}

int aiq_publisher_send(aiq_publisher_t *p, const char *topic, const void *key, size_t klen,
                       const void *val, size_t vlen, rd_kafka_headers_t *hdrs, aiq_publish_cb cb,
                       void *opaque, aiq_err_t *err)
{
    pending_t *pd = malloc(sizeof(*pd));
    if (!pd) {
        if (hdrs) /* librdkafka's destroy does not take NULL */
            rd_kafka_headers_destroy(hdrs);
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    }
    pd->cb = cb;
    pd->opaque = opaque;
    rd_kafka_resp_err_t e;
    if (hdrs)
        e = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, klen),
                              RD_KAFKA_V_VALUE((void *)val, vlen),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
                              RD_KAFKA_V_OPAQUE(pd), RD_KAFKA_V_END);
    else
        e = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, klen),
                              RD_KAFKA_V_VALUE((void *)val, vlen),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(pd),
                              RD_KAFKA_V_END);
    if (e) {
        /* On failure the headers stay ours (and NULL would crash librdkafka's destroy). */
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        free(pd);
        /* Refused before it left: too large for message.max.bytes or a topic known to be
         * missing never succeeds on a retry; a full queue does. */
        int code = e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? AIQ_ETOOBIG
                   : permanent_error(e)                      ? AIQ_ENOTFOUND
                                                             : AIQ_EKAFKA;
        return aiq_err_set(err, code, "produce to %s: %s", topic, rd_kafka_err2str(e));
    }
    return 0;
}

int64_t aiq_publisher_max_message_bytes(const aiq_publisher_t *p)
{
    char buf[32];
    size_t n = sizeof(buf);
    const rd_kafka_conf_t *conf = rd_kafka_conf(p->rk);
    if (rd_kafka_conf_get(conf, "message.max.bytes", buf, &n) != RD_KAFKA_CONF_OK)
        return 1000000; /* librdkafka's default */
    return strtoll(buf, NULL, 10);
}

/* The value of max.message.bytes in one DescribeConfigs result, or -1. */
static int64_t max_bytes_of(rd_kafka_event_t *ev, aiq_err_t *err)
{
    size_t rn = 0;
    const rd_kafka_ConfigResource_t **rr =
        rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &rn);
    if (rn < 1)
        return aiq_err_set(err, AIQ_EKAFKA, "no result");
    if (rd_kafka_ConfigResource_error(rr[0]))
        return aiq_err_set(err,
                           rd_kafka_ConfigResource_error(rr[0]) ==
                                   RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART
                               ? AIQ_ENOTFOUND
                               : AIQ_EKAFKA,
                           "%s", rd_kafka_ConfigResource_error_string(rr[0]));
    size_t cn = 0;
    const rd_kafka_ConfigEntry_t **ce = rd_kafka_ConfigResource_configs(rr[0], &cn);
    for (size_t c = 0; c < cn; c++) {
        const char *v = rd_kafka_ConfigEntry_value(ce[c]);
        if (strcmp(rd_kafka_ConfigEntry_name(ce[c]), "max.message.bytes") == 0 && v)
            return strtoll(v, NULL, 10);
    }
    return aiq_err_set(err, AIQ_ENOTFOUND, "max.message.bytes not reported");
}

int aiq_publisher_topic_max_bytes(aiq_publisher_t *p, const char *topic, int timeout_ms,
                                  int64_t *out, aiq_err_t *err)
{
    char errstr[256];
    rd_kafka_queue_t *q = rd_kafka_queue_new(p->rk);
    rd_kafka_AdminOptions_t *ao =
        rd_kafka_AdminOptions_new(p->rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    rd_kafka_AdminOptions_set_request_timeout(ao, timeout_ms, errstr, sizeof(errstr));
    rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
    rd_kafka_DescribeConfigs(p->rk, &res, 1, ao, q);
    /* The request timeout ends the wait; the margin covers the result's hand-over. */
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms + 1000);
    int rc;
    if (!ev)
        rc = aiq_err_set(err, AIQ_ETIMEDOUT, "describe %s: no answer in %d ms", topic, timeout_ms);
    else if (rd_kafka_event_error(ev))
        rc =
            aiq_err_set(err, AIQ_EKAFKA, "describe %s: %s", topic, rd_kafka_event_error_string(ev));
    else {
        int64_t v = max_bytes_of(ev, err);
        rc = v < 0 ? (int)v : 0;
        if (v > 0)
            *out = v;
    }
    rd_kafka_event_destroy(ev);
    rd_kafka_ConfigResource_destroy(res);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_queue_destroy(q);
    return rc;
}

int aiq_publisher_warm(aiq_publisher_t *p, const char *const *topics, int n, int timeout_ms)
{
    int learned = 0;
    int64_t end = aiq_mono_ms() + timeout_ms;
    for (int i = 0; i < n; i++) {
        int64_t left = end - aiq_mono_ms();
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(p->rk, topics[i], NULL);
        const struct rd_kafka_metadata *md = NULL;
        if (rkt && left > 0 &&
            rd_kafka_metadata(p->rk, 0, rkt, &md, (int)left) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            learned += md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR;
            rd_kafka_metadata_destroy(md);
        }
        if (rkt)
            rd_kafka_topic_destroy(rkt);
    }
    return learned;
}

int aiq_publisher_outq(const aiq_publisher_t *p)
{
    return rd_kafka_outq_len(p->rk);
}

int aiq_publisher_flush(aiq_publisher_t *p, int timeout_ms)
{
    rd_kafka_resp_err_t e = rd_kafka_flush(p->rk, timeout_ms);
    /* With the event API rd_kafka_flush does not serve delivery reports; do it here. */
    while (serve_one(p))
        ;
    return e ? AIQ_ETIMEDOUT : 0;
}

void aiq_publisher_free(aiq_publisher_t *p)
{
    if (!p)
        return;
    aiq_bridge_free(p->bridge);
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    /* Drop the purged records' reports without calling back into freed owners. */
    rd_kafka_event_t *ev;
    while ((ev = rd_kafka_queue_poll(p->mainq, 0))) {
        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_DR) {
            const rd_kafka_message_t *m;
            while ((m = rd_kafka_event_message_next(ev)))
                free(m->_private);
        }
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_queue_destroy(p->mainq);
    rd_kafka_destroy(p->rk);
    free(p);
}
