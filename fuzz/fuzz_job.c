/* fuzz_job.c — the worker's first step on every Kafka record: aiq_job_decode (JSON parse and
 * schema validation), then what the pipeline does with a decoded job: its cache key, and the
 * result record that carries its fields back. Properties checked besides memory safety:
 *  - decode's outcome is consistent: 0 with a job and AIQ_JOB_OK, else a reason and a message;
 *  - an id hint is a valid id; a decoded job has a valid id and passes aiq_job_validate;
 *  - a decoded job, written out again by jansson, decodes again (the DLQ replay path);
 *  - the result encoder accepts the job's strings and produces JSON. */
#include "cache_key.h"
#include "canon.h"
#include "fuzz.h"
#include "job.h"
#include "result.h"

#include <jansson.h>
#include <string.h>

#define FUZZ_MAX_JOB (512u * 1024) /* worker.max_job_bytes default */

static const char *const drop[] = {"request_id", "meta.ts", "a.b.c"};

static void check_result_encode(const aiq_job_t *job)
{
    aiq_result_t r = {.job_id = job->id,
                      .correlation_id = job->correlation_id,
                      .operation = job->operation,
                      .priority = "normal",
                      .status = AIQ_RESULT_SUCCEEDED,
                      .output_text = job->system,
                      .model = job->model,
                      .cost_usd = -1,
                      .worker = "fuzz",
                      .traceparent = job->traceparent};
    char *out = NULL;
    size_t len = 0;
    aiq_err_t err = {0};

    /* Every string of a decoded job came from jansson, so it is UTF-8 and must encode. */
    FUZZ_CHECK(aiq_result_encode(&r, &out, &len, &err) == 0, "result encode: %s", err.msg);
    json_t *back = json_loadb(out, len, 0, NULL);
    FUZZ_CHECK(back && !strcmp(json_string_value(json_object_get(back, "job_id")), job->id),
               "encoded result does not read back: %s", out);
    json_decref(back);
    free(out);
}

static void check_job(const aiq_job_t *job)
{
    aiq_err_t err = {0};
    uint8_t key[AIQ_CACHE_KEY_LEN];

    FUZZ_CHECK(aiq_job_id_valid(job->id), "decoded job with invalid id");
    FUZZ_CHECK(job->priority >= -1 && job->priority <= 3, "priority %d", job->priority);
    FUZZ_CHECK(aiq_job_validate(job->root, &err) == 0, "decoded job fails validate: %s", err.msg);

    char *text = json_dumps(job->root, JSON_COMPACT | JSON_ENCODE_ANY);
    FUZZ_CHECK(text, "json_dumps of a decoded job failed");
    aiq_job_t *again = NULL;
    aiq_job_reject_t rej;
    FUZZ_CHECK(aiq_job_decode(text, strlen(text), SIZE_MAX, &again, &rej, NULL, &err) == 0,
               "re-encoded job does not decode: %s: %s", err.msg, text);
    FUZZ_CHECK(!strcmp(again->id, job->id), "id changed over a round trip");
    aiq_job_free(again);
    free(text);

    int rc = aiq_cache_key_job(job, NULL, drop, 3, key, &err);
    FUZZ_CHECK(rc == 0 || rc == AIQ_ETOOBIG || rc == AIQ_EINVAL, "cache key rc %d", rc);
    check_result_encode(job);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aiq_job_t *job = NULL;
    aiq_job_reject_t rej = AIQ_JOB_OK;
    char *hint = NULL;
    aiq_err_t err = {0};

    int rc = aiq_job_decode(data, size, FUZZ_MAX_JOB, &job, &rej, &hint, &err);
    if (rc == 0) {
        FUZZ_CHECK(job && rej == AIQ_JOB_OK && !hint, "success without a job");
        check_job(job);
    } else {
        FUZZ_CHECK(!job && rej != AIQ_JOB_OK && err.msg[0], "failure %d without a reason", rc);
        FUZZ_CHECK(rc == AIQ_EINVAL || rc == AIQ_ETOOBIG || rc == AIQ_ENOMEM, "rc %d", rc);
        FUZZ_CHECK(!hint || aiq_job_id_valid(hint), "invalid id hint");
    }
    aiq_job_free(job);
    free(hint);
    return 0;
}
