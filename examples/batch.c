/* examples/batch.c — submit a batch of jobs with libaiq_producer and collect one answer
 * per job. The build makes it as build/examples/example-batch; outside the tree:
 *     cc batch.c -I<aiq>/producer/include -L<build>/producer -laiq_producer -o batch
 * Run:  ./batch BROKERS PREFIX RATE < jobs.ndjson > results.ndjson
 * Each input line is a job (schemas/job.schema.json); each output line is its result. */
#include <aiq/producer.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s BROKERS PREFIX RATE_PER_S < jobs.ndjson\n", argv[0]);
        return 2;
    }
    char err[512], reply[256], id[AIQ_JOB_ID_CAP];
    snprintf(reply, sizeof(reply), "%sresults", argv[2]);

    /* Open the results reader before submitting, so no answer can slip past it. */
    aiq_results_t *results = NULL;
    aiq_collector_t *answers = NULL;
    if (aiq_results_open(&results, argv[1], reply, NULL, err, sizeof(err)) ||
        aiq_collector_new(&answers, results)) {
        fprintf(stderr, "results: %s\n", err);
        return 1;
    }
    aiq_producer_conf_t conf = {
        .brokers = argv[1], .topic_prefix = argv[2], .rate_per_s = strtod(argv[3], NULL)};
    aiq_producer_t *p = NULL;
    if (aiq_producer_new(&p, &conf, err, sizeof(err))) {
        fprintf(stderr, "producer: %s\n", err);
        return 1;
    }

    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0, invalid = 0;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        lineno++;
        int rc;
        /* A full local queue is waited out, never dropped. */
        while ((rc = aiq_producer_submit(p, line, (size_t)n, id, sizeof(id), err, sizeof(err))) ==
               AIQ_SUBMIT_EFULL)
            aiq_producer_poll(p, 100);
        if (rc) {
            fprintf(stderr, "line %ld: %s\n", lineno, err);
            invalid++;
            continue;
        }
        aiq_collector_expect(answers, id);
    }
    free(line);
    aiq_producer_flush(p, 30000);

    /* Collect until every job has its one answer, or a minute passes without any. */
    char *json;
    while (aiq_collector_pending(answers) > 0) {
        int rc = aiq_collector_next(answers, 60000, &json, id, sizeof(id), err, sizeof(err));
        if (rc <= 0) {
            fprintf(stderr, "%zu job(s) unanswered%s%s\n", aiq_collector_pending(answers),
                    rc < 0 ? ": " : "", rc < 0 ? err : "");
            break;
        }
        printf("%s\n", json);
        free(json);
    }
    int code = (invalid || aiq_collector_pending(answers) || aiq_producer_failed(p)) ? 1 : 0;
    fprintf(stderr, "submitted %ld line(s), %ld invalid, %llu duplicate answer(s) skipped\n",
            lineno, invalid, (unsigned long long)aiq_collector_duplicates(answers));
    aiq_producer_free(p);
    aiq_collector_free(answers);
    aiq_results_close(results);
    return code;
}
