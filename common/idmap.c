#include "idmap.h"
#include "aiq_err.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *id; /* NULL = empty */
    uint64_t value;
} entry_t;

struct aiq_idmap {
    entry_t *e;
    size_t cap, n; /* cap is a power of two, at least twice n */
};

/* FNV-1a: ids are short and already well spread (UUIDs, batch-line). */
uint64_t aiq_idmap_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static entry_t *slot(entry_t *e, size_t cap, const char *id)
{
    size_t i = aiq_idmap_hash(id) & (cap - 1);
    while (e[i].id && strcmp(e[i].id, id) != 0)
        i = (i + 1) & (cap - 1);
    return &e[i];
}

static int grow(aiq_idmap_t *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 1024;
    entry_t *ne = calloc(ncap, sizeof(*ne));
    if (!ne)
        return AIQ_ENOMEM;
    for (size_t i = 0; i < m->cap; i++)
        if (m->e[i].id)
            *slot(ne, ncap, m->e[i].id) = m->e[i];
    free(m->e);
    m->e = ne;
    m->cap = ncap;
    return 0;
}

aiq_idmap_t *aiq_idmap_new(void)
{
    aiq_idmap_t *m = calloc(1, sizeof(*m));
    if (m && grow(m)) {
        free(m);
        return NULL;
    }
    return m;
}

void aiq_idmap_free(aiq_idmap_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->cap; i++)
        free(m->e[i].id);
    free(m->e);
    free(m);
}

int aiq_idmap_put(aiq_idmap_t *m, const char *id, uint64_t value)
{
    entry_t *s = slot(m->e, m->cap, id);
    if (s->id) {
        s->value = value;
        return 0;
    }
    if ((m->n + 1) * 2 > m->cap) {
        if (grow(m))
            return AIQ_ENOMEM;
        s = slot(m->e, m->cap, id);
    }
    if (!(s->id = strdup(id)))
        return AIQ_ENOMEM;
    s->value = value;
    m->n++;
    return 1;
}

int aiq_idmap_get(const aiq_idmap_t *m, const char *id, uint64_t *value)
{
    const entry_t *s = slot(m->e, m->cap, id);
    if (!s->id)
        return AIQ_ENOTFOUND;
    *value = s->value;
    return 0;
}

size_t aiq_idmap_len(const aiq_idmap_t *m)
{
    return m->n;
}
