#include "log.h"
#include "timeutil.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOG_LINE_MAX 8192
/* Longest PII a scanner can match (an e-mail address); what a truncated message loses. */
#define LOG_PII_TAIL (RED_LOCAL_MAX + 1 + RED_DOMAIN_MAX)

/* Repeated warnings and errors (not about one job) collapse: the first of a cause is
 * written, the next ones in the interval are counted, and one line per interval says how
 * many there were. Causes beyond LOG_CAUSES share the least recently used slot. */
#define LOG_CAUSES      64
#define LOG_CAUSE_MAX   64
#define LOG_COLLAPSE_MS 10000

typedef struct log_cause {
    uint64_t key;              /* hash of the caller's cause, or of the message, numbers masked */
    char label[LOG_CAUSE_MAX]; /* what the summary line calls it */
    int64_t since_ms;          /* start of the current interval; 0 = free slot */
    uint64_t suppressed;       /* lines not written in it */
    aiq_log_level_t level;
    char last[LOG_LINE_MAX / 4]; /* the latest suppressed message, redacted */
} log_cause_t;

struct aiq_log {
    char component[32];
    char instance[128];
    aiq_log_level_t level;
    pthread_mutex_t mu; /* the causes: librdkafka's threads log too */
    int64_t collapse_ms;
    aiq_log_clock_fn clock;
    void *clock_ctx;
    log_cause_t causes[LOG_CAUSES];
};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

aiq_log_t *aiq_log_new(const char *component, const char *instance, aiq_log_level_t level)
{
    aiq_log_t *log = calloc(1, sizeof(*log));
    if (!log)
        return NULL;
    snprintf(log->component, sizeof(log->component), "%s", component ? component : "aiq");
    snprintf(log->instance, sizeof(log->instance), "%s", instance ? instance : "");
    log->level = level;
    log->collapse_ms = LOG_COLLAPSE_MS;
    pthread_mutex_init(&log->mu, NULL);
    return log;
}

static void flush_causes(aiq_log_t *log, int64_t now, int all);

void aiq_log_free(aiq_log_t *log)
{
    if (!log)
        return;
    pthread_mutex_lock(&log->mu);
    flush_causes(log, log->clock ? log->clock(log->clock_ctx) : aiq_mono_ms(), 1);
    pthread_mutex_unlock(&log->mu);
    pthread_mutex_destroy(&log->mu);
    free(log);
}

void aiq_log_set_collapse(aiq_log_t *log, int64_t interval_ms, aiq_log_clock_fn clock, void *ctx)
{
    pthread_mutex_lock(&log->mu);
    log->collapse_ms = interval_ms;
    log->clock = clock;
    log->clock_ctx = ctx;
    pthread_mutex_unlock(&log->mu);
}

int aiq_log_level_parse(const char *name)
{
    for (int i = 0; name && i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0)
            return i;
    }
    return -1;
}

int aiq_log_enabled(const aiq_log_t *log, aiq_log_level_t level)
{
    return level >= (log ? log->level : AIQ_LOG_INFO);
}

/* ---- PII redaction ----
 * Hand-written scanners, tried at each input position in the order e-mail, IBAN, number.
 * Each scanner starts only at a token boundary and looks ahead a bounded distance, so a
 * redaction pass is O(n) with a constant of at most a few hundred bytes. Bytes >= 0x80 are
 * never part of a match, so UTF-8 text passes through untouched. */

#define RED_LOCAL_MAX  64  /* RFC 5321 local part */
#define RED_DOMAIN_MAX 253 /* RFC 1035 domain name */
#define RED_LABEL_MAX  63
#define RED_NUM_MAX    40 /* longest number-like token (digits + separators) considered */
#define RED_GROUPS_MAX 20
#define RED_IBAN_MAX   34 /* ISO 13616: 2 letters, 2 check digits, up to 30 alphanumerics */
#define RED_IBAN_MIN   15 /* ... at least 11 alphanumerics */

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int is_upper(int c)
{
    return c >= 'A' && c <= 'Z';
}

static int is_alpha(int c)
{
    return is_upper(c) || (c >= 'a' && c <= 'z');
}

static int is_alnum(int c)
{
    return is_alpha(c) || is_digit(c);
}

static int in_set(int c, const char *set)
{
    return c != '\0' && strchr(set, c) != NULL;
}

static int is_local_char(int c)
{
    return is_alnum(c) || in_set(c, "._%+-");
}

/* Returns the length of the domain part of an address starting at s (0 when none): labels of
 * letters, digits and inner hyphens, at least two, the last one alphabetic (a TLD). The match
 * ends after the last label that can end a domain, so "a@x.com." leaves the full stop. */
static size_t email_domain(const char *s)
{
    size_t k = 0, end = 0;
    for (int labels = 1;; labels++) {
        size_t ls = k;
        int alpha = 1;
        while (k - ls < RED_LABEL_MAX && (is_alnum(s[k]) || s[k] == '-')) {
            alpha &= is_alpha(s[k]);
            k++;
        }
        if (k == ls || s[ls] == '-' || s[k - 1] == '-' || k > RED_DOMAIN_MAX)
            break;
        if (labels >= 2 && alpha && k - ls >= 2)
            end = k;
        if (s[k] != '.' || !is_alnum(s[k + 1]))
            break;
        k++;
    }
    if (end && (is_alnum(s[end]) || in_set(s[end], "_@")))
        return 0;
    return end;
}

static size_t match_email(const char *s, size_t i)
{
    if (!is_alnum(s[i]) && s[i] != '_')
        return 0;
    /* Start after a boundary; also after . + - so that "...john@x.io" is still found. */
    if (i > 0 && is_local_char(s[i - 1]) && !in_set(s[i - 1], ".+-"))
        return 0;
    size_t j = i;
    while (j - i < RED_LOCAL_MAX && is_local_char(s[j]))
        j++;
    if (s[j] != '@' || s[j - 1] == '.')
        return 0;
    size_t d = email_domain(s + j + 1);
    return d ? j + 1 + d - i : 0;
}

/* ISO 7064 mod 97-10 over the IBAN with its first four characters moved to the end. */
static int iban_checksum_ok(const char *b, size_t n)
{
    unsigned r = 0;
    for (size_t k = 0; k < n; k++) {
        char c = b[(k + 4) % n];
        if (is_digit(c))
            r = (r * 10 + (unsigned)(c - '0')) % 97;
        else
            r = (r * 100 + (unsigned)(c - 'A' + 10)) % 97;
    }
    return r == 1;
}

/* Either compact ("DE89370400440532013000") or printed in groups of four separated by single
 * spaces; in the printed form a shorter match ending at a group is also tried, so a following
 * upper-case word ("... 00 EUR") does not hide the IBAN. Returns the match length, or 0 with
 * *skip set to the length of an IBAN-shaped token whose checksum fails (so that its digits are
 * not then taken for a card or phone number). */
static size_t match_iban(const char *s, size_t i, size_t *skip)
{
    *skip = 0;
    if (i > 0 && (is_alnum(s[i - 1]) || in_set(s[i - 1], "_-.@/")))
        return 0;
    if (!is_upper(s[i]) || !is_upper(s[i + 1]) || !is_digit(s[i + 2]) || !is_digit(s[i + 3]))
        return 0;
    char b[RED_IBAN_MAX];
    size_t end_at[RED_IBAN_MAX + 1] = {0}; /* input offset after the n-th character */
    size_t n = 0, j = i;
    int grouped = s[i + 4] == ' ';
    while (n < RED_IBAN_MAX) {
        char c = s[j];
        if (is_upper(c) || is_digit(c)) {
            if (grouped && n > 0 && n % 4 == 0 && s[j - 1] != ' ')
                break; /* a group longer than four */
            b[n++] = c;
            end_at[n] = ++j;
        } else if (grouped && c == ' ' && n % 4 == 0 &&
                   (is_upper(s[j + 1]) || is_digit(s[j + 1]))) {
            j++;
        } else {
            break;
        }
    }
    for (size_t m = n; m >= RED_IBAN_MIN; m--) {
        char after = s[end_at[m]];
        int boundary = !is_alnum(after) && !in_set(after, "_@");
        if (!boundary || (m != n && !(grouped && m % 4 == 0)))
            continue;
        if (iban_checksum_ok(b, m))
            return end_at[m] - i;
        if (!*skip)
            *skip = end_at[m] - i;
        if (!grouped)
            break;
    }
    return 0;
}

enum { SEP_SPACE = 1, SEP_DASH = 2, SEP_DOT = 4, SEP_PAREN = 8 };

typedef struct num_tok {
    size_t len;     /* input bytes from start to the last digit */
    int plus;       /* began with '+' */
    int joined;     /* continues into a larger non-numeric token */
    unsigned seps;  /* SEP_* seen */
    size_t ndig;    /* digits, in dig[] */
    size_t ngroups; /* digit groups, lengths in glen[] (first RED_GROUPS_MAX) */
    unsigned char dig[RED_NUM_MAX];
    unsigned char glen[RED_GROUPS_MAX];
} num_tok_t;

/* Consumes a separator run between two digit groups: one of space - . at most, plus at most
 * one parenthesis (the depth stays 0 or 1). Returns its length, 0 when s is not one. */
static size_t num_sep(const char *s, int *depth, unsigned *seps)
{
    size_t k = 0;
    int plain = 0, d = *depth;
    unsigned kinds = 0;
    for (; k < 3; k++) {
        char c = s[k];
        if (c == ' ' || c == '-' || c == '.') {
            plain++;
            kinds |= c == ' ' ? SEP_SPACE : c == '-' ? SEP_DASH : SEP_DOT;
        } else if ((c == '(' && !d) || (c == ')' && d)) {
            d = !d;
            kinds |= SEP_PAREN;
        } else {
            break;
        }
    }
    if (k == 0 || plain > 1 || !is_digit(s[k]))
        return 0;
    *depth = d;
    *seps |= kinds;
    return k;
}

static void num_close_group(num_tok_t *t, size_t glen)
{
    if (t->ngroups < RED_GROUPS_MAX)
        t->glen[t->ngroups] = (unsigned char)glen;
    t->ngroups++;
}

/* Scans a number-like token: [+][(]digits{sep digits}. 0 when s+i does not start one at a
 * boundary, is too long, has an unclosed parenthesis or is followed by "@". t->joined is set
 * when it runs into something that makes it part of a larger token (a letter, "_", or one of
 * : . - / followed by a letter or digit): that keeps times, IP:port and identifiers out. */
static size_t scan_number(const char *s, size_t i, num_tok_t *t)
{
    if (!is_digit(s[i]) && s[i] != '+' && s[i] != '(')
        return 0;
    memset(t, 0, sizeof(*t));
    /* ':' is a boundary before "+CC" (tel:+1...) but not before digits (host:port, times). */
    const char *bad = s[i] == '+' ? "._@/+-\\#$%&*[" : "._@:/+-\\#$%&*[";
    if (i > 0 && (is_alnum(s[i - 1]) || in_set(s[i - 1], bad)))
        return 0;
    size_t j = i, end = 0, glen = 0;
    int depth = 0;
    if (s[j] == '(' && s[j + 1] == '+') { /* "(+49) 30 1234567" */
        depth = 1;
        t->seps |= SEP_PAREN;
        j++;
    }
    if (s[j] == '+') {
        t->plus = 1;
        j++;
    }
    if (s[j] == '(' && !depth) {
        depth = 1;
        t->seps |= SEP_PAREN;
        j++;
    }
    while (j - i < RED_NUM_MAX) {
        if (is_digit(s[j])) {
            t->dig[t->ndig++] = (unsigned char)(s[j] - '0');
            glen++;
            end = ++j;
            continue;
        }
        size_t k = glen ? num_sep(s + j, &depth, &t->seps) : 0;
        if (k == 0)
            break;
        num_close_group(t, glen);
        glen = 0;
        j += k;
    }
    if (!end || j - i >= RED_NUM_MAX || depth)
        return 0;
    num_close_group(t, glen);
    if (s[end] == '@')
        return 0; /* maybe the local part of an address starting later */
    t->len = end - i;
    char a = s[end];
    t->joined = is_alnum(a) || a == '_' || (in_set(a, ":.-/") && is_alnum(s[end + 1]));
    return t->len;
}

static int luhn_ok(const unsigned char *d, size_t n)
{
    unsigned sum = 0;
    for (size_t k = 0; k < n; k++) {
        unsigned v = d[n - 1 - k];
        if (k % 2 == 1)
            v = v * 2 > 9 ? v * 2 - 9 : v * 2;
        sum += v;
    }
    return sum % 10 == 0;
}

/* Card issuer numbers start with 2–6 (Mastercard 2/5, Amex/Diners/JCB 3, Visa 4, Discover/
 * UnionPay 6); requiring that keeps 13-digit epoch milliseconds ("1764300523123") out. */
static int is_card(const num_tok_t *t)
{
    return !t->plus && !(t->seps & (SEP_DOT | SEP_PAREN)) && t->ndig >= 13 && t->ndig <= 19 &&
           t->dig[0] >= 2 && t->dig[0] <= 6 && luhn_ok(t->dig, t->ndig);
}

/* Dotted national forms ("415.555.2671") need three groups of two or more digits, and dotted
 * quads of 1–3 digits are IPv4 addresses; dates ("2026-11-28 …") are never phones. */
static int is_national_phone(const num_tok_t *t)
{
    if (t->ndig < 9 || t->ndig > 15 || t->ngroups < 2 || t->ngroups > RED_GROUPS_MAX)
        return 0;
    if (t->ngroups >= 3 && t->glen[0] == 4 && t->glen[1] == 2 && t->glen[2] == 2)
        return 0;
    if (t->seps & SEP_DOT) {
        int quad = t->ngroups == 4;
        for (size_t g = 0; g < t->ngroups; g++) {
            if (g > 0 && t->glen[g] < 2)
                return 0;
            quad &= t->glen[g] <= 3;
        }
        if (t->ngroups < 3 || quad)
            return 0;
    }
    return 1;
}

/* A number-like token that is not PII is skipped whole (*len set, NULL returned), so that its
 * tail is not matched on its own: "4111 1111 1111 1113" must not become "4111 [phone]". */
static const char *match_number(const char *s, size_t i, size_t *len)
{
    num_tok_t t;
    if (!scan_number(s, i, &t))
        return NULL;
    *len = t.len;
    if (t.joined)
        return NULL;
    if (is_card(&t))
        return "[card]";
    if (t.plus)
        return t.ndig >= 8 && t.ndig <= 15 ? "[phone]" : NULL;
    return is_national_phone(&t) ? "[phone]" : NULL;
}

/* Returns the marker for PII starting at s+i and its length in *len; or NULL with *len the
 * number of bytes to copy unchanged (at least 1). */
static const char *match_pii(const char *s, size_t i, size_t *len)
{
    size_t skip = 0;
    if ((*len = match_email(s, i)) != 0)
        return "[email]";
    if ((*len = match_iban(s, i, &skip)) != 0)
        return "[iban]";
    *len = skip;
    const char *mark = skip ? NULL : match_number(s, i, len);
    if (*len == 0)
        *len = 1;
    return mark;
}

/* Length of out[0..n) without a trailing incomplete UTF-8 sequence. */
static size_t utf8_trim(const char *out, size_t n)
{
    size_t k = n, back = 0;
    while (k > 0 && back < 4 && ((unsigned char)out[k - 1] & 0xC0) == 0x80) {
        k--;
        back++;
    }
    if (k == 0)
        return n;
    unsigned char lead = (unsigned char)out[k - 1];
    size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    return (lead >= 0xC0 && n - (k - 1) < want) ? k - 1 : n;
}

size_t aiq_log_redact(const char *in, char *out, size_t cap)
{
    if (!out || cap == 0)
        return 0;
    if (!in)
        in = "";
    size_t i = 0, n = 0;
    int cut = 0;
    while (in[i] && !cut) {
        size_t mlen = 0;
        const char *mark = match_pii(in, i, &mlen);
        const char *src = mark ? mark : in + i;
        size_t slen = mark ? strlen(mark) : mlen;
        if (n + slen >= cap) {
            /* Plain text is cut where the buffer ends; a marker is written whole or not at all. */
            if (!mark) {
                memcpy(out + n, src, cap - 1 - n);
                n = cap - 1;
            }
            cut = 1;
            break;
        }
        memcpy(out + n, src, slen);
        n += slen;
        i += mlen;
    }
    if (cut)
        n = utf8_trim(out, n);
    out[n] = '\0';
    return n;
}

/* vsnprintf cut the message, possibly inside an address or number that the redactor then could
 * not recognise; drop the tail that may hold such a fragment and say so. */
static void truncated_tail(char *red, size_t n, size_t cap)
{
    static const char note[] = " ...[truncated]";
    size_t keep = n > LOG_PII_TAIL ? utf8_trim(red, n - LOG_PII_TAIL) : 0;
    if (keep + sizeof(note) > cap)
        keep = cap - sizeof(note);
    memcpy(red + keep, note, sizeof(note));
}

/* The trace id of a W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>"), or 0 when malformed. */
static int trace_id(const char *tp, char out[33])
{
    if (!tp || strlen(tp) != 55 || tp[2] != '-' || tp[35] != '-')
        return 0;
    for (int i = 0; i < 32; i++) {
        char c = tp[3 + i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
        out[i] = c;
    }
    out[32] = '\0';
    return 1;
}

/* Copies src into dst (cap bytes), cut at a UTF-8 character boundary. */
static void copy_text(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = utf8_trim(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Writes one line with an already redacted message; repeated > 0 marks a summary line. */
static void emit(const aiq_log_t *log, aiq_log_level_t level, const char *job, const char *trace,
                 const char *red, uint64_t repeated)
{
    char ts[32];
    aiq_time_format(aiq_now_ms(), ts, sizeof(ts));
    json_t *o = json_object();
    if (!o)
        return;
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "level", json_string(level_names[level]));
    json_object_set_new(o, "component", json_string(log ? log->component : "aiq"));
    if (log && log->instance[0])
        json_object_set_new(o, "instance", json_string(log->instance));
    if (job)
        json_object_set_new(o, "job", json_string(job));
    char tid[33];
    if (trace_id(trace, tid))
        json_object_set_new(o, "trace", json_string(tid));
    /* json_string rejects invalid UTF-8; a log line must never be dropped for that. */
    json_t *m = json_string(red);
    json_object_set_new(o, "msg", m ? m : json_string("(message was not valid UTF-8)"));
    if (repeated)
        json_object_set_new(o, "repeated", json_integer((json_int_t)repeated));
    char line[LOG_LINE_MAX];
    size_t n = json_dumpb(o, line, sizeof(line) - 1, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (n == 0 || n >= sizeof(line) - 1)
        return;
    line[n++] = '\n';
    /* One write(2) per line keeps lines whole when several threads log. */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

/* "<label> ×N in S s: <last message>" for a cause's interval. */
static void emit_summary(const aiq_log_t *log, const log_cause_t *c, uint64_t count, int64_t now)
{
    char msg[LOG_LINE_MAX / 2];
    long long secs = (long long)((now - c->since_ms) / 1000);
    snprintf(msg, sizeof(msg), "%s%s\u00d7%llu in %lld s: %s", c->label, c->label[0] ? " " : "",
             (unsigned long long)count, secs, c->last);
    emit(log, c->level, NULL, NULL, msg, count);
}

/* Writes the summary of every interval that ended (all: of every cause with lines counted).
 * log->mu held. */
static void flush_causes(aiq_log_t *log, int64_t now, int all)
{
    for (int i = 0; i < LOG_CAUSES; i++) {
        log_cause_t *c = &log->causes[i];
        if (!c->since_ms || !c->suppressed || (!all && now - c->since_ms < log->collapse_ms))
            continue;
        emit_summary(log, c, c->suppressed, now);
        c->suppressed = 0;
        c->since_ms = now;
    }
}

/* FNV-1a of s with every run of digits taken as one '#': "failed for 2/4 partitions" and
 * "failed for 1/4 partitions" are one cause, "breaker m1 open" and "breaker m2 open" too
 * (a number is rarely what tells causes apart; names are). */
static uint64_t cause_key(const char *s)
{
    uint64_t h = UINT64_C(1469598103934665603);
    for (int in_num = 0; *s; s++) {
        int d = *s >= '0' && *s <= '9';
        if (d && in_num)
            continue;
        in_num = d;
        h = (h ^ (unsigned char)(d ? '#' : *s)) * UINT64_C(1099511628211);
    }
    return h ? h : 1;
}

static log_cause_t *find_cause(aiq_log_t *log, uint64_t key)
{
    log_cause_t *lru = &log->causes[0];
    for (int i = 0; i < LOG_CAUSES; i++) {
        log_cause_t *c = &log->causes[i];
        if (c->since_ms && c->key == key)
            return c;
        if (!c->since_ms || (lru->since_ms && c->since_ms < lru->since_ms))
            lru = c;
    }
    memset(lru, 0, sizeof(*lru));
    lru->key = key;
    return lru;
}

/* Whether the line (cause key, redacted message red) is to be written now; counts it when
 * not. A line ending an interval in which others were counted is written as their summary. */
static int collapse(aiq_log_t *log, aiq_log_level_t level, uint64_t key, const char *label,
                    const char *red)
{
    pthread_mutex_lock(&log->mu);
    int64_t now = log->clock ? log->clock(log->clock_ctx) : aiq_mono_ms();
    if (now <= 0)
        now = 1; /* 0 marks a free slot */
    log_cause_t *c = find_cause(log, key);
    int write_it = 1;
    if (!c->since_ms) {
        c->since_ms = now;
        c->level = level;
        copy_text(c->label, sizeof(c->label), label);
    } else if (now - c->since_ms < log->collapse_ms) {
        c->suppressed++;
        c->level = level > c->level ? level : c->level;
        copy_text(c->last, sizeof(c->last), red);
        write_it = 0;
    } else if (c->suppressed) {
        copy_text(c->last, sizeof(c->last), red);
        emit_summary(log, c, c->suppressed + 1, now);
        c->suppressed = 0;
        c->since_ms = now;
        write_it = 0;
    } else {
        c->since_ms = now;
    }
    flush_causes(log, now, 0);
    pthread_mutex_unlock(&log->mu);
    return write_it;
}

__attribute__((format(printf, 6, 0))) static void vlog(aiq_log_t *log, aiq_log_level_t level,
                                                       const char *job, const char *trace,
                                                       const char *cause, const char *fmt,
                                                       va_list ap)
{
    char msg[LOG_LINE_MAX / 2];
    int r = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (r < 0)
        msg[0] = '\0';
    char red[LOG_LINE_MAX / 2];
    size_t rn = aiq_log_redact(msg, red, sizeof(red));
    if (r >= (int)sizeof(msg))
        truncated_tail(red, rn, sizeof(red));
    /* Lines about one job are that job's story; the rest may repeat for as long as a
     * broker is down, once per commit interval. */
    if (log && log->collapse_ms > 0 && level >= AIQ_LOG_WARN && !job) {
        if (!collapse(log, level, cause_key(cause ? cause : red), cause ? cause : "", red))
            return;
    } else if (log && log->collapse_ms > 0) {
        /* Any line may end an interval whose counted lines are still to be reported. */
        pthread_mutex_lock(&log->mu);
        flush_causes(log, log->clock ? log->clock(log->clock_ctx) : aiq_mono_ms(), 0);
        pthread_mutex_unlock(&log->mu);
    }
    emit(log, level, job, trace, red, 0);
}

void aiq_logj(aiq_log_t *log, aiq_log_level_t level, const char *job, const char *fmt, ...)
{
    if (!aiq_log_enabled(log, level))
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(log, level, job, NULL, NULL, fmt, ap);
    va_end(ap);
}

void aiq_logc(aiq_log_t *log, aiq_log_level_t level, const char *cause, const char *fmt, ...)
{
    if (!aiq_log_enabled(log, level))
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(log, level, NULL, NULL, cause, fmt, ap);
    va_end(ap);
}

void aiq_logjt(aiq_log_t *log, aiq_log_level_t level, const char *job, const char *traceparent,
               const char *fmt, ...)
{
    if (!aiq_log_enabled(log, level))
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(log, level, job, traceparent, NULL, fmt, ap);
    va_end(ap);
}
