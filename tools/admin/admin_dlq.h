/* admin_dlq.h — the "dlq" command of aiq-admin: list the dead letters of <prefix>dlq, and
 * replay chosen ones to the job topic they came from (or another topic). */
#ifndef AIQ_ADMIN_DLQ_H
#define AIQ_ADMIN_DLQ_H

#include <stdbool.h>
#include <stdio.h>

/* Filters and switches of "dlq list|replay". Every string is borrowed; NULL = not given. */
typedef struct aiq_admin_dlq_opts {
    const char *brokers, *prefix;
    const char *kind;      /* only records whose aiq.dlq.error-kind is this */
    const char *job_id;    /* only the records of this job id */
    const char *since;     /* RFC 3339: only records dead-lettered at or after this time */
    const char *to;        /* replay: produce to this topic instead of the original one */
    long limit;            /* at most this many records listed / replayed; 0 = no limit */
    bool dry_run;          /* replay: print what would be replayed, produce nothing */
    bool refresh_deadline; /* replay: rewrite the job's created_at to now */
    bool json;             /* list: a JSON array; replay: a JSON summary */
} aiq_admin_dlq_opts_t;

/* Runs "dlq list" or "dlq replay" (verb). The DLQ is read from its beginning to the end it
 * had when the command started, by a consumer that commits nothing. Returns the exit code:
 * 0 done, 1 the topic is missing, the broker failed or a replayed record was not
 * delivered (cause on stderr), 2 usage error. */
int aiq_admin_dlq(const aiq_admin_dlq_opts_t *o, const char *verb);

/* "aiq-admin dlq --help". */
void aiq_admin_dlq_usage(FILE *out);

#endif
