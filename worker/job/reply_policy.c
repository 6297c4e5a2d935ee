#include "reply_policy.h"
#include "topics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATTERNS_MAX 32
#define INTERNAL_MAX 8
#define TOPIC_CHARS  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"

typedef struct pattern {
    char text[AIQ_TOPIC_MAX];
    int prefix; /* ended in '*': text is a prefix */
} pattern_t;

struct aiq_reply_policy {
    pattern_t allow[PATTERNS_MAX];
    int n_allow;
    char internal[INTERNAL_MAX][AIQ_TOPIC_MAX];
    const char *internal_what[INTERNAL_MAX];
    int n_internal;
};

/* Kafka refuses a topic whose name differs from an existing one only in '.' against '_'
 * (their metric names collide), so for what may be written they are the same name. */
static int same_topic(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = *a == '_' ? '.' : *a, y = *b == '_' ? '.' : *b;
        if (x != y)
            return 0;
    }
    return *a == *b;
}

/* One pattern (len bytes at s) into p, "{prefix}" expanded. */
static int parse_pattern(const char *s, size_t len, const char *prefix, pattern_t *p,
                         aiq_err_t *err)
{
    char buf[AIQ_TOPIC_MAX];
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        const char *ins = strncmp(s + i, "{prefix}", 8) == 0 && len - i >= 8 ? prefix : NULL;
        size_t add = ins ? strlen(ins) : 1;
        if (n + add >= sizeof(buf))
            return aiq_err_set(err, AIQ_EINVAL, "worker.reply_topics: '%.*s' is too long", (int)len,
                               s);
        memcpy(buf + n, ins ? ins : s + i, add);
        n += add;
        i += ins ? 8 : 1;
    }
    buf[n] = '\0';
    p->prefix = n > 0 && buf[n - 1] == '*';
    if (p->prefix)
        buf[--n] = '\0';
    /* A prefix may be empty ("*": every topic but aiq's own) or end in '.'. */
    int ok = p->prefix ? strspn(buf, TOPIC_CHARS) == n : aiq_topic_name_valid(buf);
    if (!ok)
        return aiq_err_set(err, AIQ_EINVAL,
                           "worker.reply_topics: '%.*s' is not a topic name (A-Za-z0-9._-, "
                           "optionally ending in *)",
                           (int)len, s);
    snprintf(p->text, sizeof(p->text), "%s", buf);
    return 0;
}

static int parse_patterns(aiq_reply_policy_t *p, const char *prefix, const char *patterns,
                          aiq_err_t *err)
{
    const char *s = patterns ? patterns : "";
    while (*s) {
        while (*s == ' ' || *s == ',')
            s++;
        size_t len = strcspn(s, ",");
        while (len > 0 && s[len - 1] == ' ')
            len--;
        if (len == 0)
            break;
        if (p->n_allow == PATTERNS_MAX)
            return aiq_err_set(err, AIQ_EINVAL, "worker.reply_topics: more than %d patterns",
                               PATTERNS_MAX);
        if (parse_pattern(s, len, prefix, &p->allow[p->n_allow], err))
            return AIQ_EINVAL;
        p->n_allow++;
        s += strcspn(s, ",");
    }
    return 0;
}

static int add_internal(aiq_reply_policy_t *p, const char *what, int rc)
{
    if (rc)
        return rc;
    p->internal_what[p->n_internal++] = what;
    return 0;
}

static int internal_topics(aiq_reply_policy_t *p, const char *prefix, aiq_err_t *err)
{
    int rc = 0;
    for (int i = 0; i < AIQ_PRIO_COUNT && !rc; i++)
        rc = add_internal(
            p, "job topic",
            aiq_topic_jobs(prefix, (aiq_priority_t)i, p->internal[p->n_internal], AIQ_TOPIC_MAX));
    rc = rc ? rc
            : add_internal(p, "dead-letter topic",
                           aiq_topic_dlq(prefix, p->internal[p->n_internal], AIQ_TOPIC_MAX));
    rc = rc ? rc
            : add_internal(p, "breaker topic",
                           aiq_topic_breaker(prefix, p->internal[p->n_internal], AIQ_TOPIC_MAX));
    rc = rc ? rc
            : add_internal(p, "metrics topic",
                           aiq_topic_metrics(prefix, p->internal[p->n_internal], AIQ_TOPIC_MAX));
    rc = rc ? rc
            : add_internal(p, "alerts topic",
                           aiq_topic_alerts(prefix, p->internal[p->n_internal], AIQ_TOPIC_MAX));
    return rc ? aiq_err_set(err, AIQ_EINVAL, "kafka.topic_prefix is too long") : 0;
}

int aiq_reply_policy_new(aiq_reply_policy_t **out, const char *topic_prefix, const char *patterns,
                         aiq_err_t *err)
{
    aiq_reply_policy_t *p = calloc(1, sizeof(*p));
    if (!p)
        return aiq_err_set(err, AIQ_ENOMEM, "out of memory");
    const char *prefix = topic_prefix ? topic_prefix : "";
    if (internal_topics(p, prefix, err) || parse_patterns(p, prefix, patterns, err)) {
        free(p);
        return AIQ_EINVAL;
    }
    *out = p;
    return 0;
}

void aiq_reply_policy_free(aiq_reply_policy_t *p)
{
    free(p);
}

static int matches(const pattern_t *pat, const char *topic)
{
    return pat->prefix ? strncmp(topic, pat->text, strlen(pat->text)) == 0
                       : strcmp(topic, pat->text) == 0;
}

int aiq_reply_policy_check(const aiq_reply_policy_t *p, const char *topic, aiq_err_t *err)
{
    for (int i = 0; i < p->n_internal; i++)
        if (same_topic(topic, p->internal[i]))
            return aiq_err_set(err, AIQ_EINVAL, "reply_to: '%s' is aiq's %s", topic,
                               p->internal_what[i]);
    if (strncmp(topic, "__", 2) == 0)
        return aiq_err_set(err, AIQ_EINVAL, "reply_to: '%s' is a Kafka internal topic", topic);
    for (int i = 0; i < p->n_allow; i++)
        if (matches(&p->allow[i], topic))
            return 0;
    return aiq_err_set(err, AIQ_EINVAL, "reply_to: '%s' is not allowed by worker.reply_topics",
                       topic);
}
