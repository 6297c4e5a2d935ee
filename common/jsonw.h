/* jsonw.h — a streaming JSON writer: records the worker builds per job (results, partials)
 * go straight into one growing buffer, without a jansson tree that is built, dumped and
 * freed again. Compact output; strings are checked to be UTF-8 and escaped. Any thread. */
#ifndef AIQ_JSONW_H
#define AIQ_JSONW_H

#include "aiq_err.h"
#include "strbuf.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AIQ_JSONW_DEPTH 16 /* nesting the writer tracks; deeper is refused (AIQ_EINVAL) */

/* Zero-initialise. Calls after an error do nothing; aiq_jw_finish reports the first one. */
typedef struct aiq_jw {
    aiq_strbuf_t b;
    int err;                           /* first error: AIQ_EINVAL (not UTF-8), AIQ_ENOMEM */
    int depth;                         /* open objects */
    bool members[AIQ_JSONW_DEPTH + 1]; /* the open object has a member already */
    bool after_key;                    /* a key was written: its value comes next */
} aiq_jw_t;

void aiq_jw_obj_begin(aiq_jw_t *w);
void aiq_jw_obj_end(aiq_jw_t *w);
/* The member's name; checked and escaped like a string. */
void aiq_jw_key(aiq_jw_t *w, const char *key);
/* s as a JSON string, or null when s is NULL. Refuses text that is not UTF-8. */
void aiq_jw_str(aiq_jw_t *w, const char *s);
void aiq_jw_strn(aiq_jw_t *w, const char *s, size_t n);
void aiq_jw_int(aiq_jw_t *w, int64_t v);
/* The shortest digits that read back as v; null when v is not finite. */
void aiq_jw_real(aiq_jw_t *w, double v);
void aiq_jw_bool(aiq_jw_t *w, bool v);
void aiq_jw_null(aiq_jw_t *w);
/* v (borrowed) as compact JSON, through jansson: for values the writer did not build. */
void aiq_jw_json(aiq_jw_t *w, const json_t *v);

/* Ends writing: 0 and *out (malloc'd, NUL-terminated, the caller frees) with *len, or the
 * first error (then nothing to free). */
int aiq_jw_finish(aiq_jw_t *w, char **out, size_t *len);

#endif
