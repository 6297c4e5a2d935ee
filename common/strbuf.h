/* strbuf.h — a growable NUL-terminated byte string with an optional size limit, for code that
 * builds text piece by piece (canonical JSON, rendered templates). */
#ifndef AIQ_STRBUF_H
#define AIQ_STRBUF_H

#include <stddef.h>

/* Zero-initialise, set max (0 = no limit), append, then take p (malloc'd; caller frees) or
 * free it. p stays NULL until the first append. */
typedef struct aiq_strbuf {
    char *p;
    size_t len, cap;
    size_t max; /* appends that would pass this length fail with AIQ_ETOOBIG */
} aiq_strbuf_t;

/* Appends n bytes of s. Returns 0, AIQ_ETOOBIG (nothing appended) or AIQ_ENOMEM. */
int aiq_strbuf_add(aiq_strbuf_t *b, const void *s, size_t n);

#endif
