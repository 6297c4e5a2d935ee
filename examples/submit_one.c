/* submit_one: submit one job with libaiq_producer and wait until Kafka has it.
 *   cc submit_one.c $(pkg-config --cflags --libs aiq-producer) -o submit_one
 *   ./submit_one 127.0.0.1:9092            (prints the job id; the result arrives on aiq.results)
 */
#include <aiq/producer.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    aiq_producer_conf_t conf = {.brokers = argc > 1 ? argv[1] : "127.0.0.1:9092",
                                .topic_prefix = argc > 2 ? argv[2] : NULL};
    const char *job = "{\"operation\": \"vc-analysis\", \"priority\": \"high\", "
                      "\"payload\": {\"company\": \"Acme\"}}";
    char id[AIQ_JOB_ID_CAP], err[512] = "not acknowledged in time";
    aiq_producer_t *p = NULL;
    int rc = aiq_producer_new(&p, &conf, err, sizeof(err));
    if (!rc)
        rc = aiq_producer_submit(p, job, strlen(job), id, sizeof(id), err, sizeof(err));
    if (!rc && (rc = aiq_producer_flush(p, 30000) || aiq_producer_failed(p)))
        aiq_producer_error(p, err, sizeof(err));
    if (!rc)
        printf("%s\n", id);
    else
        fprintf(stderr, "submit_one: %s\n", err);
    aiq_producer_free(p);
    return rc ? 1 : 0;
}
