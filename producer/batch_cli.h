/* Batch mode of aiq-submit: NDJSON in, one result per input line out, resumable after a
 * crash through deterministic job ids and a small state file next to the results file. */
#ifndef AIQ_BATCH_CLI_H
#define AIQ_BATCH_CLI_H

typedef struct aiq__batch_opts {
    const char *brokers, *prefix, *reply_to;
    const char *const *kafka_props; /* librdkafka name, value pairs (-X, AIQ_KAFKA_RDKAFKA_*) */
    const char *file;               /* NDJSON input, "-" for stdin */
    const char *results;            /* results NDJSON; the state file is <results>.state */
    const char *batch_id;           /* NULL: derived from the input file's name, size and mtime */
    const char *priority;           /* NULL: keep each job's own priority */
    long long wait_timeout_ms;
    long long timeout_ms; /* deadline of lines that set none; 0 = the worker's default */
    double rate;          /* jobs per second, 0 = unlimited */
    long long max_lag;    /* pause while submitted - answered > max_lag; 0 = off */
    int strict, resume;   /* --strict, --resume */
    int progress;         /* -1 auto (a terminal), 0 off, 1 on */
} aiq__batch_opts_t;

/* Runs a whole batch; reports on stderr. Returns the process exit status (0 all answered,
 * 1 some input invalid, undeliverable or unanswered, 2 usage / setup errors, 130 when
 * interrupted by SIGINT/SIGTERM after saving the state). Runs on the main thread. */
int aiq__batch_run(const aiq__batch_opts_t *o);

#endif
