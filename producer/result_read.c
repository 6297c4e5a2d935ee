/* result_read.c — reading result records in aiq-submit; see result_read.h. */
#include "result_read.h"

#include <stdio.h>
#include <string.h>

void aiq__status_tally_add(aiq__status_tally_t *t, const char *status)
{
    for (int i = 0; i < t->n; i++) {
        if (strcmp(t->names[i], status) == 0) {
            t->counts[i]++;
            return;
        }
    }
    if (t->n < AIQ__STATUS_KINDS) {
        snprintf(t->names[t->n], sizeof(t->names[0]), "%s", status);
        t->counts[t->n++] = 1;
    }
}

void aiq__result_info(const json_t *result, aiq__result_info_t *out)
{
    /* jansson's getters take non-const pointers but only read. */
    json_t *r = (json_t *)result;
    const char *st = json_string_value(json_object_get(r, "status"));
    json_t *u = json_object_get(r, "usage");

    out->status = st ? st : "unknown";
    /* A negative count is not valid schema; it wraps like any other bad total would. */
    out->input_tokens = (uint64_t)json_integer_value(json_object_get(u, "input_tokens"));
    out->output_tokens = (uint64_t)json_integer_value(json_object_get(u, "output_tokens"));
}

json_t *aiq__result_parse(const char *json)
{
    return json_loads(json, 0, NULL);
}

json_t *aiq__results_line_parse(const char *line, size_t n, const char **id, json_t **result)
{
    json_t *doc = n > 0 && line[n - 1] == '\n' ? json_loadb(line, n, 0, NULL) : NULL;
    json_t *r = json_object_get(doc, "result");

    *id = json_string_value(json_object_get(doc, "job_id"));
    *result = json_is_object(r) ? r : NULL;
    return doc;
}
