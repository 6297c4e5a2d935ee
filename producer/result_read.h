/* result_read.h — how aiq-submit reads the result records it collects (schemas/result.schema.json):
 * from the reply topic, or from the --results file of an earlier run, and the per-status tally
 * it prints. Internal to aiq-submit; kept apart so that fuzz/fuzz_result.c can drive it. */
#ifndef AIQ_RESULT_READ_H
#define AIQ_RESULT_READ_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define AIQ__STATUS_KINDS    8  /* distinct statuses counted; later new ones are not */
#define AIQ__STATUS_NAME_CAP 16 /* a status name longer than 15 bytes is counted cut */

/* Results per status, in the order the statuses were first seen. */
typedef struct aiq__status_tally {
    char names[AIQ__STATUS_KINDS][AIQ__STATUS_NAME_CAP];
    uint64_t counts[AIQ__STATUS_KINDS];
    int n;
} aiq__status_tally_t;

/* Counts one result of status (borrowed, NUL-terminated). */
void aiq__status_tally_add(aiq__status_tally_t *t, const char *status);

/* What aiq-submit takes from one result record. */
typedef struct aiq__result_info {
    const char *status; /* borrowed from the record; "unknown" when absent or not a string */
    uint64_t input_tokens, output_tokens; /* usage.*; 0 when absent or not integers */
} aiq__result_info_t;

/* Reads status and usage of result (borrowed; NULL or any JSON value is fine). */
void aiq__result_info(const json_t *result, aiq__result_info_t *out);

/* Parses one record as aiq_results_next hands it over: NUL-terminated text (a record with a
 * NUL byte is read up to it). Returns a new reference, or NULL when the text is not JSON. */
json_t *aiq__result_parse(const char *json);

/* Parses line[0..n), one line of an earlier run's --results file. Returns the parsed line (a
 * new reference the caller releases) with *id its "job_id" and *result its "result" (both
 * borrowed from it, NULL when absent or of the wrong type), or NULL when the line was cut
 * short (no final '\n', as after a crash) or is not JSON. */
json_t *aiq__results_line_parse(const char *line, size_t n, const char **id, json_t **result);

#endif
