/* job_internal.h — shared by the files of worker/job/ only (aiq__ names): the task and
 * pipeline structs, the state move, and the steps each file offers the others. */
#ifndef AIQ_JOB_INTERNAL_H
#define AIQ_JOB_INTERNAL_H

#include "cache.h"
#include "job.h"
#include "pipeline.h"
#include "reply_policy.h"
#include "result.h"
#include "strbuf.h"

/* What task_send is sending. */
typedef enum out_kind {
    OUT_RESULT = 0, /* out_val: the result, to the reply topic */
    OUT_DLQ_RECORD, /* the original record, to the DLQ */
    OUT_DLQ_RESULT, /* out_val: a result the reply topic refused, to the DLQ */
    OUT_REQUEUE,    /* out_val: the job again, to the high topic */
} out_kind_t;

struct aiq_task {
    aiq_sched_node_t node;
    struct aiq_task *prev, *next; /* live list, for shutdown */
    aiq_pipeline_t *pl;
    rd_kafka_message_t *msg;
    aiq_consumer_ref_t ref;
    aiq_task_state_t state; /* changed by aiq__task_set_state only */
    aiq_job_t *job;
    char *id_hint;                                /* id of a rejected record, when it had one */
    int64_t received_ms, started_ms, deadline_ms; /* wall clock */
    int64_t timeout_ms;                           /* the job's, or the default */
    int64_t provider_ms;
    int attempts;
    int pending;  /* records produced and not yet acknowledged */
    int timer_on; /* timer initialised: freeing must wait for its close */
    uv_timer_t timer;
    aiq_provider_call_t *call;
    /* resolved once, when the record is fetched (aiq_task_new) */
    const aiq_op_t *op;     /* the job's operation, NULL without an operations file */
    const char *call_model; /* the model a call would go to (borrowed from job/op/conf) */
    aiq_job_reject_t why;   /* !job: why the record was refused */
    char *why_msg;          /* !job: the decoder's message (malloc'd) */
    /* cache and single-flight */
    int keyed; /* key holds the job's cache key */
    uint8_t key[AIQ_CACHE_KEY_LEN];
    aiq_cache_entry_t stale; /* an expired entry kept for the fallback chain */
    int cache_hit, cache_stale;
    int64_t cache_age_ms;
    aiq_task_t *sf_next;         /* leaders in the same single-flight bucket */
    int sf_leader;               /* registered in the single-flight table */
    aiq_task_t *leader;          /* the identical job whose call this one waits for */
    aiq_task_t *followers;       /* jobs waiting for this one's call */
    aiq_task_t *f_prev, *f_next; /* siblings among a leader's followers */
    /* outcome */
    aiq_result_status_t status;
    aiq_bedrock_reply_t reply;
    const char *model;
    char error_kind[64];
    char error_msg[512];
    int http_status;
    int64_t partial_seq;                      /* partial records published (streamed jobs) */
    aiq_strbuf_t partial;                     /* text received, not yet published */
    int partial_attempt;                      /* the call it came from */
    int64_t partial_ms;                       /* monotonic time of the last partial published */
    char request_id[AIQ_HTTP_REQUEST_ID_MAX]; /* of the last model call */
    const char *fallback;                     /* static name, NULL when the model answered */
    char *fallback_text; /* malloc'd: the canned answer, or the support text of an error */
    /* what is being published, kept for re-sending after a transient failure */
    char *out_val;
    size_t out_len;
    char out_topic[AIQ_TOPIC_MAX];
    out_kind_t out_kind;
    /* dead letter */
    int slot_freed;      /* on_slot_free ran: the job slot went back to the worker */
    int dlq_waiting;     /* counted in stats.dlq_waiting until finished */
    int dlq_failing;     /* the last write failed: counted in pl->dlq_failing */
    int dlq_minimal;     /* the fitted letter was refused for good: headers + first bytes */
    int64_t dlq_backoff; /* ms before the next write after a failure */
    char dlq_sha[65];    /* of the whole value, computed once */
    char dlq_refused[256];
};

#define SF_BUCKETS 1024

struct aiq_pipeline {
    aiq_pipeline_deps_t d;
    aiq_task_t *sf[SF_BUCKETS]; /* single-flight: leaders by cache key */
    int closing;
    char results_topic[AIQ_TOPIC_MAX];
    char dlq_topic[AIQ_TOPIC_MAX];
    aiq_task_t *live;
    aiq_pipeline_stats_t stats;
    aiq_reply_policy_t *replies; /* where reply_to may point */
    size_t dlq_cap;              /* value bytes one dead letter may carry */
    int64_t dlq_failing;         /* dead letters whose last write failed */
    char dlq_error[320];         /* the latest such failure */
};

/* Logs about a task carry its job id and, when the job has one, its trace id. */
#define TLOG(t, level, ...)                                                                        \
    aiq_logjt((t)->pl->d.log, (level), aiq__task_id(t), (t)->job ? (t)->job->traceparent : NULL,   \
              __VA_ARGS__)

/* Moves t to state s: checked against the transition table, counted, and traced with
 * the file and line of the caller (task.c). */
#define aiq__task_set_state(t, s) aiq__task_set_state_at((t), (s), __FILE__, __LINE__)

/* Counts and logs a move the table forbids (a bug); aborts in AIQ_TASK_STRICT builds. */
#define aiq__task_illegal(t, s) aiq__task_illegal_at((t), (s), __FILE__, __LINE__)

/* ---- task.c ---------------------------------------------------------------- */

/* The job id, or the id a refused record named (NULL when it had none). */
const char *aiq__task_id(const aiq_task_t *t);
/* Use aiq__task_illegal. */
void aiq__task_illegal_at(aiq_task_t *t, aiq_task_state_t s, const char *file, int line);
/* Use aiq__task_set_state. */
void aiq__task_set_state_at(aiq_task_t *t, aiq_task_state_t s, const char *file, int line);
/* Why the job was not answered by the model: the result's error kind and message. */
void aiq__task_error(aiq_task_t *t, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Decides the answer: its status and, when the model did not give it, the fallback that
 * did (static name) and its text (taken; the answer text, or the support text of an
 * error). The one place a status is set. */
void aiq__task_answer(aiq_task_t *t, aiq_result_status_t status, const char *fallback, char *text);
/* Frees a task: finished (DONE), or dropped unfinished, whose record is then redelivered
 * to whoever owns its partition next. */
void aiq__task_release(aiq_task_t *t);
/* Gives the job slot back once: when its answer goes out (task_send), when it waits on the
 * DLQ, at the latest when it finishes. */
void aiq__task_slot_free(aiq_task_t *t);
/* Every record acknowledged: metrics, DONE, on_done, then freed. */
void aiq__task_finish(aiq_task_t *t);
/* Starts (first initialising) the task's one timer. */
void aiq__task_timer_start(aiq_task_t *t, uint64_t ms, uv_timer_cb cb);

/* ---- coalesce.c ------------------------------------------------------------ */

/* Takes a leader out of the single-flight table (no-op for others). */
void aiq__sf_unregister(aiq_task_t *t);
/* Takes a follower off its leader's list (no-op for others). */
void aiq__sf_unlink(aiq_task_t *f);
/* Joins an identical job's call when one is in flight (returns 1), or becomes the one
 * others join (returns 0: go and call). */
int aiq__sf_join(aiq_task_t *t);
/* A leader that goes away without an answer (revoke) hands its followers to the first of
 * them, which calls in its place. */
void aiq__sf_promote(aiq_task_t *t);
/* The leader's answer is every follower's: each gets its own copy of the outcome. */
void aiq__sf_deliver(aiq_task_t *leader, const aiq_call_outcome_t *o);

/* ---- fallback.c ------------------------------------------------------------ */

/* "Retry requests at high priority" (the seed): a job whose in-process attempts are spent
 * goes once more through the high topic, keeping its deadline and counting its attempts;
 * its own record is then finished. Only when the deadline leaves room for another round. */
int aiq__may_requeue(const aiq_task_t *t);
/* The support information of an error answer (the operation's, persona's or generic). */
char *aiq__support_text(const aiq_task_t *t, const aiq_op_t *op);
/* The fallback chain: a stale cache entry, the operation's canned answer, a simplified
 * one, and last an error with support information. Canned answers are only for jobs that
 * name an operation and a payload; a job that brought its own prompt gets the error. */
void aiq__task_fallback(aiq_task_t *t);

/* ---- records.c ------------------------------------------------------------- */

/* A failed dead-letter write was followed by a delivered one, or the task went away. */
void aiq__dlq_unfail(aiq_task_t *t);
/* Estimated from the operations file's price table; -1 (null) for an unpriced model. */
double aiq__task_cost(aiq_pipeline_t *pl, const aiq_task_t *t);
/* Encodes the answer decided (status, text, error) and sends it to the reply topic. */
void aiq__task_publish_result(aiq_task_t *t);
/* A refused record goes to the DLQ; when it named an id, its sender also gets a
 * "rejected" result so it does not wait until its deadline. */
void aiq__task_reject(aiq_task_t *t, aiq_job_reject_t why, const char *msg);
/* Sends the job again, to the high topic, keeping its deadline and counting its attempts. */
void aiq__task_requeue(aiq_task_t *t);
/* Publishes the text gathered since the last partial to the job's reply topic, ahead of its
 * result and under the same key (so on the same partition, in order, before the result). */
void aiq__partial_flush(aiq_task_t *t);
void aiq__on_partial(void *opaque, int attempt, const char *text, size_t len);

/* ---- pipeline.c ------------------------------------------------------------ */

/* The provider's callback: what the call's end means for the job. */
void aiq__on_outcome(void *opaque, aiq_call_outcome_t *o);
/* Calls the model (or answers "expired" when the deadline passed). */
void aiq__task_call(aiq_task_t *t);

#endif
