/* fuzz_result.c — how aiq-submit reads result records (producer/result_read.c): a record from
 * the reply topic (NUL-terminated text, as aiq_results_next hands it over), the summary it
 * takes from it, the per-status tally, and a line of an earlier run's --results file.
 * Properties checked besides memory safety:
 *  - a status is always there ("unknown" at worst) and the tally stays within its bounds, with
 *    NUL-terminated names and one count per result while it has room;
 *  - a results line is taken only when it ends in '\n'; its id and result are what it says. */
#include "fuzz.h"
#include "result_read.h"

#include <jansson.h>
#include <string.h>

static void check_tally(aiq__status_tally_t *t, const char *status)
{
    uint64_t before = 0, after = 0;
    int n = t->n;

    for (int i = 0; i < t->n; i++)
        before += t->counts[i];
    aiq__status_tally_add(t, status);
    for (int i = 0; i < t->n; i++) {
        after += t->counts[i];
        FUZZ_CHECK(memchr(t->names[i], '\0', sizeof(t->names[i])), "name %d not terminated", i);
    }
    FUZZ_CHECK(t->n >= 0 && t->n <= AIQ__STATUS_KINDS, "tally holds %d kinds", t->n);
    FUZZ_CHECK(after == before + 1 || n == AIQ__STATUS_KINDS, "count lost with room left");
}

static void check_record(const uint8_t *data, size_t size, aiq__status_tally_t *t)
{
    char *text = malloc(size + 1);
    aiq__result_info_t info;

    if (!text)
        return;
    memcpy(text, data, size);
    text[size] = '\0';
    json_t *doc = aiq__result_parse(text);
    aiq__result_info(doc, &info);
    FUZZ_CHECK(info.status, "no status");
    if (!json_is_string(json_object_get(doc, "status")))
        FUZZ_CHECK(!strcmp(info.status, "unknown"), "status %s from nowhere", info.status);
    check_tally(t, info.status);
    json_decref(doc);
    free(text);
}

static void check_line(const uint8_t *data, size_t size)
{
    const char *id = NULL;
    json_t *result = NULL;
    json_t *doc = aiq__results_line_parse((const char *)data, size, &id, &result);

    if (size == 0 || data[size - 1] != '\n')
        FUZZ_CHECK(!doc && !id && !result, "a line cut short was taken");
    if (id)
        FUZZ_CHECK(json_is_string(json_object_get(doc, "job_id")), "id from nowhere");
    if (result)
        FUZZ_CHECK(json_is_object(result) && json_object_get(doc, "result") == result,
                   "result from nowhere");
    json_decref(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aiq__status_tally_t tally = {0};
    const uint8_t *p = data, *end = data + size;

    /* Every '\n'-separated piece is one record for the tally (a stream of results); the whole
     * input is one results-file line and one record as well. */
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        check_record(p, n, &tally);
        p += n + (nl ? 1 : 0);
    }
    check_record(data, size, &tally);
    check_line(data, size);
    return 0;
}
