#include "jsonw.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put(aiq_jw_t *w, const void *s, size_t n)
{
    if (!w->err && aiq_strbuf_add(&w->b, s, n))
        w->err = AIQ_ENOMEM;
}

/* What comes before a value: a comma between members, nothing right after a key. */
static void before_value(aiq_jw_t *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (w->depth > 0 && w->members[w->depth])
        put(w, ",", 1);
    if (w->depth > 0)
        w->members[w->depth] = true;
}

/* Length of the UTF-8 sequence at s (n bytes left), or 0 when it is not one: no overlong
 * forms, no surrogates, nothing past U+10FFFF. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || len > n)
        return 0;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < least[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static void put_escaped(aiq_jw_t *w, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    put(w, "\"", 1);
    size_t run = 0; /* bytes that need no escape, written in one piece */
    for (size_t i = 0; i < n && !w->err;) {
        unsigned c = p[i];
        if (c >= 0x80) {
            size_t l = utf8_len(p + i, n - i);
            if (!l) {
                w->err = AIQ_EINVAL;
                return;
            }
            i += l;
            run += l;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\') {
            i++;
            run++;
            continue;
        }
        put(w, p + i - run, run);
        run = 0;
        char esc[8];
        const char *e = c == '"'    ? "\\\""
                        : c == '\\' ? "\\\\"
                        : c == '\n' ? "\\n"
                        : c == '\r' ? "\\r"
                        : c == '\t' ? "\\t"
                        : c == '\b' ? "\\b"
                        : c == '\f' ? "\\f"
                                    : NULL;
        if (!e) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            e = esc;
        }
        put(w, e, strlen(e));
        i++;
    }
    put(w, p + n - run, run);
    put(w, "\"", 1);
}

void aiq_jw_obj_begin(aiq_jw_t *w)
{
    before_value(w);
    if (w->depth >= AIQ_JSONW_DEPTH) {
        w->err = w->err ? w->err : AIQ_EINVAL;
        return;
    }
    w->members[++w->depth] = false;
    put(w, "{", 1);
}

void aiq_jw_obj_end(aiq_jw_t *w)
{
    if (w->depth > 0)
        w->depth--;
    put(w, "}", 1);
}

void aiq_jw_key(aiq_jw_t *w, const char *key)
{
    before_value(w);
    put_escaped(w, key, strlen(key));
    put(w, ":", 1);
    w->after_key = true;
}

void aiq_jw_strn(aiq_jw_t *w, const char *s, size_t n)
{
    before_value(w);
    put_escaped(w, s, n);
}

void aiq_jw_str(aiq_jw_t *w, const char *s)
{
    if (!s) {
        aiq_jw_null(w);
        return;
    }
    aiq_jw_strn(w, s, strlen(s));
}

void aiq_jw_int(aiq_jw_t *w, int64_t v)
{
    char buf[24];
    before_value(w);
    int n = snprintf(buf, sizeof(buf), "%" PRId64, v);
    put(w, buf, (size_t)n);
}

void aiq_jw_real(aiq_jw_t *w, double v)
{
    if (!isfinite(v)) {
        aiq_jw_null(w);
        return;
    }
    char buf[40];
    int n = 0;
    for (int prec = 1; prec <= 17; prec++) {
        n = snprintf(buf, sizeof(buf), "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    /* A real stays a real when read back: 2 is written 2.0, as jansson does. */
    if (!strpbrk(buf, ".eEn") && n + 2 < (int)sizeof(buf)) {
        memcpy(buf + n, ".0", 3);
        n += 2;
    }
    before_value(w);
    put(w, buf, (size_t)n);
}

void aiq_jw_bool(aiq_jw_t *w, bool v)
{
    before_value(w);
    put(w, v ? "true" : "false", v ? 4 : 5);
}

void aiq_jw_null(aiq_jw_t *w)
{
    before_value(w);
    put(w, "null", 4);
}

void aiq_jw_json(aiq_jw_t *w, const json_t *v)
{
    if (!v) {
        aiq_jw_null(w);
        return;
    }
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    if (!s) {
        w->err = w->err ? w->err : AIQ_ENOMEM;
        return;
    }
    before_value(w);
    put(w, s, strlen(s));
    free(s);
}

int aiq_jw_finish(aiq_jw_t *w, char **out, size_t *len)
{
    if (!w->err && !w->b.p)
        put(w, "", 0);
    if (w->err) {
        free(w->b.p);
        w->b.p = NULL;
        return w->err;
    }
    *out = w->b.p;
    *len = w->b.len;
    w->b.p = NULL;
    return 0;
}
