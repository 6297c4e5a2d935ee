/* aiq/producer.h — submit AI jobs to aiq from a C program, and wait for their results.
 *
 * Jobs are JSON documents following schemas/job.schema.json. aiq_producer_submit checks a
 * job, fills in "id" and "created_at" when missing, and queues it on the topic of its
 * priority (<prefix>jobs.<priority>, default priority "normal"), keyed by job id, through an
 * idempotent Kafka producer. Results arrive on the job's reply_to topic (default
 * <prefix>results), keyed by job id; aiq_results_* reads them.
 *
 * Threading: a handle is used by one thread at a time; delivery callbacks run inside
 * aiq_producer_poll / aiq_producer_flush on the calling thread.
 * Errors: functions return 0 or a negative AIQ_SUBMIT_E* code and write the cause into the
 * caller's errstr buffer. */
#ifndef AIQ_PRODUCER_H
#define AIQ_PRODUCER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AIQ_SUBMIT_EINVAL    (-1) /* the job or the configuration is invalid */
#define AIQ_SUBMIT_ENOMEM    (-2)
#define AIQ_SUBMIT_ETOOBIG   (-4) /* the job is larger than max_job_bytes */
#define AIQ_SUBMIT_EKAFKA    (-5) /* Kafka refused or failed */
#define AIQ_SUBMIT_ETIMEDOUT (-7)
#define AIQ_SUBMIT_EFULL     (-11) /* local queue full: call aiq_producer_poll, then retry */

#define AIQ_JOB_ID_CAP 129 /* ids are at most 128 characters */

typedef struct aiq_producer aiq_producer_t;

/* Delivery outcome of one job: ok = 1 once Kafka acknowledged it. job_id is borrowed for
 * the duration of the call. */
typedef void (*aiq_delivery_cb)(void *opaque, const char *job_id, int ok, const char *errstr);

typedef struct aiq_producer_conf {
    const char *brokers;         /* required: "host:port[,host:port...]" */
    const char *topic_prefix;    /* NULL → "aiq." */
    const char *client_id;       /* NULL → "aiq-producer" */
    size_t max_job_bytes;        /* 0 → 524288, the worker's default */
    aiq_delivery_cb on_delivery; /* may be NULL */
    void *opaque;
    /* Extra librdkafka properties as NULL-terminated name, value pairs (e.g. SASL). */
    const char *const *kafka_props;
    /* Submissions per second at most (token bucket, 0.1 s burst); 0 = unlimited. Submit
     * calls then block, serving delivery callbacks, until the next token is due. */
    double rate_per_s;
} aiq_producer_conf_t;

/* Creates a producer. Copies everything it needs from conf. */
int aiq_producer_new(aiq_producer_t **out, const aiq_producer_conf_t *conf, char *errstr,
                     size_t errlen);

/* Checks and queues one job (len bytes of JSON; borrowed). On success the job id is copied
 * into id_out (cap >= AIQ_JOB_ID_CAP). Delivery is asynchronous: see on_delivery. */
int aiq_producer_submit(aiq_producer_t *p, const char *job_json, size_t len, char *id_out,
                        size_t id_cap, char *errstr, size_t errlen);

/* Options of one submission. Strings are borrowed for the duration of the call. */
typedef struct aiq_submit_opts {
    const char *default_id; /* the id of a job that has none; NULL → a random UUID */
    const char *priority;   /* when not NULL, replaces the job's priority */
    int64_t timeout_ms;     /* when > 0, the deadline of a job that sets none */
} aiq_submit_opts_t;

/* aiq_producer_submit with options (opts may be NULL). *prio_out (may be NULL) receives the
 * job's priority (aiq priority index: 0 critical .. 3 low). */
int aiq_producer_submit_ex(aiq_producer_t *p, const char *job_json, size_t len,
                           const aiq_submit_opts_t *opts, char *id_out, size_t id_cap,
                           int *prio_out, char *errstr, size_t errlen);

/* Completes a job as aiq_producer_submit_ex would (id, created_at, opts) and checks it,
 * including its size against max_job_bytes when not 0, without sending it. Returns 0 and
 * the id and priority it would be sent with, or AIQ_SUBMIT_EINVAL / AIQ_SUBMIT_ETOOBIG with
 * the reason in errstr. No Kafka needed. */
int aiq_job_check_ex(const char *job_json, size_t len, const aiq_submit_opts_t *opts,
                     size_t max_job_bytes, char *id_out, size_t id_cap, int *prio_out, char *errstr,
                     size_t errlen);

/* Checks a job document against the job schema without sending it (no Kafka needed).
 * Returns 0, or AIQ_SUBMIT_EINVAL with the reason (naming the field) in errstr. */
int aiq_job_check(const char *job_json, size_t len, char *errstr, size_t errlen);

/* Serves delivery callbacks, waiting up to timeout_ms for one. Returns how many were served. */
int aiq_producer_poll(aiq_producer_t *p, int timeout_ms);

/* Waits until every queued job was acknowledged or failed. Returns 0,
 * AIQ_SUBMIT_ETIMEDOUT when some are still outstanding, or AIQ_SUBMIT_EKAFKA once Kafka
 * refused the producer for good (see aiq_producer_error). */
int aiq_producer_flush(aiq_producer_t *p, int timeout_ms);

/* Waits up to timeout_ms until a Kafka broker answers. Returns 0; AIQ_SUBMIT_EKAFKA when
 * Kafka refused the client for good (wrong SASL credentials, a failed TLS handshake); or
 * AIQ_SUBMIT_ETIMEDOUT with librdkafka's latest error (e.g. a security.protocol that does
 * not match the listener). Optional: call it once after aiq_producer_new to fail fast. */
int aiq_producer_connect(aiq_producer_t *p, int timeout_ms, char *errstr, size_t errlen);

/* 0 while the producer is usable; AIQ_SUBMIT_EKAFKA with the reason once Kafka refused it
 * for good (authentication, TLS, a fatal idempotence error). From then on every queued job
 * fails at once with that reason and aiq_producer_submit / _flush return AIQ_SUBMIT_EKAFKA. */
int aiq_producer_error(const aiq_producer_t *p, char *errstr, size_t errlen);

/* Jobs whose delivery failed so far. */
uint64_t aiq_producer_failed(const aiq_producer_t *p);

/* Flushes for up to 10 s, then destroys. NULL is a no-op. */
void aiq_producer_free(aiq_producer_t *p);

/* ---- results ------------------------------------------------------------------------ */

typedef struct aiq_results aiq_results_t;

/* Opens a reader of topic starting at the current end of every partition: open it before
 * submitting, and it sees every result produced after. */
int aiq_results_open(aiq_results_t **out, const char *brokers, const char *topic,
                     const char *const *kafka_props, char *errstr, size_t errlen);

/* Like aiq_results_open, but starts at the first record with a timestamp >= since_ms
 * (epoch ms; via the broker's time index), so results produced while the reader was not
 * running are found. since_ms < 0 means the current end. */
int aiq_results_open_at(aiq_results_t **out, const char *brokers, const char *topic,
                        int64_t since_ms, const char *const *kafka_props, char *errstr,
                        size_t errlen);

/* 1 once every record that was in the topic when the reader was opened (from its start
 * offsets) has been returned by aiq_results_next, else 0. */
int aiq_results_caught_up(const aiq_results_t *r);

/* Waits up to timeout_ms for the next result (partial records of streamed jobs, header
 * aiq.status: partial, are skipped: their result follows them). Returns 1 and sets *json (malloc'd,
 * NUL-terminated, caller frees) and job_id (the record key), 0 on timeout, or a negative
 * code. */
int aiq_results_next(aiq_results_t *r, int timeout_ms, char **json, char *job_id, size_t id_cap,
                     char *errstr, size_t errlen);

void aiq_results_close(aiq_results_t *r); /* NULL is a no-op */

/* ---- collecting the answers of a batch -------------------------------------------- */

/* Tracks the ids a caller submitted and hands back exactly one result per id: the reply
 * topic is at-least-once, so duplicates and other submitters' results are skipped. */
typedef struct aiq_collector aiq_collector_t;

/* Borrows r (keep it open while the collector lives). */
int aiq_collector_new(aiq_collector_t **out, aiq_results_t *r);

/* Expects an answer for job_id (copied). Adding an id twice is a no-op. */
int aiq_collector_expect(aiq_collector_t *c, const char *job_id);

/* Waits up to timeout_ms for the first result of an expected, unanswered id. Returns 1 with
 * *json (malloc'd, caller frees) and job_id set, 0 on timeout, or a negative code. */
int aiq_collector_next(aiq_collector_t *c, int timeout_ms, char **json, char *job_id, size_t id_cap,
                       char *errstr, size_t errlen);

/* Expected ids without an answer yet; duplicates skipped so far. */
size_t aiq_collector_pending(const aiq_collector_t *c);
uint64_t aiq_collector_duplicates(const aiq_collector_t *c);

void aiq_collector_free(aiq_collector_t *c); /* NULL is a no-op */

#ifdef __cplusplus
}
#endif
#endif
