#include "strbuf.h"
#include "aiq_err.h"

#include <stdlib.h>
#include <string.h>

int aiq_strbuf_add(aiq_strbuf_t *b, const void *s, size_t n)
{
    if (b->max && n > b->max - b->len)
        return AIQ_ETOOBIG;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return AIQ_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}
