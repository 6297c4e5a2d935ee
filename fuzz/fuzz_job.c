/* fuzz_job.c — the worker's first step on every Kafka record: aiq_job_decode (JSON parse and
 * schema validation), then what the pipeline does with a decoded job: its cache key, and the
 * result record that carries its fields back; with a refused one: its dead letter.
 *
 * An input is a record value as it is, or, starting with "AIQR", a whole record as the worker
 * receives it: [flags u8][header count u8]{[name len u8][name][value len u16 BE, 0xffff =
 * null][value]}*[value]. Flag 1: the value is a zstd frame, decompressed here (up to 16 MiB)
 * as librdkafka does for a batch produced compressed: a few bytes then become a record far
 * over worker.max_job_bytes (issue #17: a 10 MB zstd value, a job of 100,000 messages).
 * The headers go through librdkafka's header list, and onto the dead letter with the
 * aiq.dlq.* size headers.
 *
 * Properties checked besides memory safety:
 *  - decode's outcome is consistent: 0 with a job and AIQ_JOB_OK, else a reason and a message;
 *  - an id hint is a valid id; a decoded job has a valid id and passes aiq_job_validate;
 *  - a decoded job, written out again by jansson, decodes again (the DLQ replay path);
 *  - the result encoder accepts the job's strings and produces JSON;
 *  - a refused record's dead letter keeps at most the cap (at least AIQ_DLQ_MINIMAL_BYTES)
 *    of a prefix of the value, and its headers give the full size and the SHA-256 of it all. */
#include "cache_key.h"
#include "canon.h"
#include "dlq.h"
#include "fuzz.h"
#include "job.h"
#include "result.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <string.h>
#include <zstd.h>

#define FUZZ_MAX_JOB   (512u * 1024)       /* worker.max_job_bytes default */
#define FUZZ_MAX_VALUE (16u * 1024 * 1024) /* what a decompressed record may grow to here */
#define RECORD_MAGIC   "AIQR"
#define FLAG_ZSTD      1

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

typedef struct record {
    rd_kafka_headers_t *hdrs; /* NULL: a bare value */
    const uint8_t *value;
    size_t len;
    uint8_t *owned; /* the decompressed value */
} record_t;

/* Parses the "AIQR" framing; returns 0 when the input is not a well-formed record (then it
 * is fuzzed as a bare value). */
static int parse_record(const uint8_t *d, size_t n, record_t *r)
{
    size_t m = sizeof(RECORD_MAGIC) - 1;
    if (n < m + 2 || memcmp(d, RECORD_MAGIC, m) != 0)
        return 0;
    size_t i = m;
    int flags = d[i++], count = d[i++];
    r->hdrs = rd_kafka_headers_new((size_t)count);
    for (int h = 0; h < count; h++) {
        if (i + 1 > n || i + 1 + d[i] + 2 > n)
            return 0;
        char name[256];
        size_t nl = d[i++];
        memcpy(name, d + i, nl);
        name[nl] = '\0'; /* librdkafka takes a name up to its first NUL */
        i += nl;
        size_t vl = (size_t)d[i] << 8 | d[i + 1];
        i += 2;
        if (vl != 0xffff && i + vl > n)
            return 0;
        rd_kafka_header_add(r->hdrs, name, -1, vl == 0xffff ? NULL : d + i,
                            vl == 0xffff ? 0 : (ssize_t)vl);
        i += vl == 0xffff ? 0 : vl;
    }
    r->value = d + i;
    r->len = n - i;
    if (!(flags & FLAG_ZSTD))
        return 1;
    unsigned long long want = ZSTD_getFrameContentSize(r->value, r->len);
    size_t cap = want <= FUZZ_MAX_VALUE ? (size_t)want : FUZZ_MAX_VALUE;
    r->owned = malloc(cap ? cap : 1);
    FUZZ_CHECK(r->owned, "out of memory");
    size_t got = ZSTD_decompress(r->owned, cap, r->value, r->len);
    if (ZSTD_isError(got))
        return 0; /* not a frame (or larger than we let it grow): fuzzed as bytes */
    r->value = r->owned;
    r->len = got;
    return 1;
}

/* The dead letter the pipeline builds for a refused record (worker/job/pipeline.c,
 * dlq_letter): a prefix within the cap, and headers to find and check the original. */
static void check_dead_letter(const record_t *r, const uint8_t *data, size_t size)
{
    int64_t topic_max = size ? (int64_t)data[size - 1] << 14 : -1; /* fuzzed: 0..4 MB */
    size_t cap = aiq_dlq_value_cap(topic_max, 1000000, 1000000);
    FUZZ_CHECK(cap >= AIQ_DLQ_MINIMAL_BYTES && cap <= 1000000, "cap %zu", cap);
    for (int minimal = 0; minimal < 2; minimal++) {
        size_t keep = aiq_dlq_keep(r->len, cap, minimal);
        FUZZ_CHECK(keep <= r->len && keep <= cap, "keeps %zu of %zu (cap %zu)", keep, r->len, cap);
        FUZZ_CHECK(!minimal || keep <= AIQ_DLQ_MINIMAL_BYTES, "minimal keeps %zu", keep);
        char sha[65];
        FUZZ_CHECK(aiq_dlq_sha256_hex(r->value, r->len, sha) == 0 && strlen(sha) == 64, "sha256");
        rd_kafka_headers_t *h = r->hdrs ? rd_kafka_headers_copy(r->hdrs) : rd_kafka_headers_new(4);
        aiq_dlq_add_size_headers(h, r->len, keep, sha, minimal, "fuzz");
        const void *v;
        size_t vn;
        FUZZ_CHECK(rd_kafka_header_get_last(h, "aiq.dlq.original-size", &v, &vn) == 0 &&
                       (size_t)strtoull(v, NULL, 10) == r->len,
                   "original-size header");
        FUZZ_CHECK(rd_kafka_header_get_last(h, "aiq.dlq.original-sha256", &v, &vn) == 0 &&
                       vn == 64 && memcmp(v, sha, 64) == 0,
                   "sha256 header");
        FUZZ_CHECK(rd_kafka_header_get_last(h, "aiq.dlq.truncated", &v, &vn) == 0 &&
                       (keep < r->len) == (vn == 4),
                   "truncated header");
        rd_kafka_headers_destroy(h);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aiq_job_t *job = NULL;
    aiq_job_reject_t rej = AIQ_JOB_OK;
    char *hint = NULL;
    aiq_err_t err = {0};
    record_t r = {NULL, data, size, NULL};
    if (!parse_record(data, size, &r)) {
        if (r.hdrs) /* librdkafka's destroy does not take NULL */
            rd_kafka_headers_destroy(r.hdrs);
        free(r.owned);
        r = (record_t){NULL, data, size, NULL};
    }

    int rc = aiq_job_decode(r.value, r.len, FUZZ_MAX_JOB, &job, &rej, &hint, &err);
    if (rc == 0) {
        FUZZ_CHECK(job && rej == AIQ_JOB_OK && !hint, "success without a job");
        check_job(job);
    } else {
        FUZZ_CHECK(!job && rej != AIQ_JOB_OK && err.msg[0], "failure %d without a reason", rc);
        FUZZ_CHECK(rc == AIQ_EINVAL || rc == AIQ_ETOOBIG || rc == AIQ_ENOMEM, "rc %d", rc);
        FUZZ_CHECK(!hint || aiq_job_id_valid(hint), "invalid id hint");
        FUZZ_CHECK(rej != AIQ_JOB_TOO_LARGE || r.len > FUZZ_MAX_JOB, "too_large at %zu", r.len);
        check_dead_letter(&r, data, size);
    }
    aiq_job_free(job);
    free(hint);
    if (r.hdrs)
        rd_kafka_headers_destroy(r.hdrs);
    free(r.owned);
    return 0;
}
