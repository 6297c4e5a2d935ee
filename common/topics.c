#include "topics.h"
#include "aiq_err.h"

#include <stdio.h>
#include <string.h>

static const char *const prio_names[AIQ_PRIO_COUNT] = {"critical", "high", "normal", "low"};

const char *aiq_priority_name(aiq_priority_t p)
{
    return (unsigned)p < AIQ_PRIO_COUNT ? prio_names[p] : "unknown";
}

int aiq_priority_parse(const char *name)
{
    for (int i = 0; name && i < AIQ_PRIO_COUNT; i++) {
        if (strcmp(name, prio_names[i]) == 0)
            return i;
    }
    return -1;
}

static int topic_fmt(char *buf, size_t cap, const char *prefix, const char *suffix)
{
    int n = snprintf(buf, cap, "%s%s", prefix, suffix);
    return (n < 0 || (size_t)n >= cap) ? AIQ_ETOOBIG : 0;
}

int aiq_topic_jobs(const char *prefix, aiq_priority_t p, char *buf, size_t cap)
{
    char suffix[32];
    snprintf(suffix, sizeof(suffix), "jobs.%s", aiq_priority_name(p));
    return topic_fmt(buf, cap, prefix, suffix);
}

int aiq_topic_results(const char *prefix, char *buf, size_t cap)
{
    return topic_fmt(buf, cap, prefix, "results");
}

int aiq_topic_dlq(const char *prefix, char *buf, size_t cap)
{
    return topic_fmt(buf, cap, prefix, "dlq");
}

int aiq_topic_metrics(const char *prefix, char *buf, size_t cap)
{
    return topic_fmt(buf, cap, prefix, "metrics");
}

int aiq_topic_breaker(const char *prefix, char *buf, size_t cap)
{
    return topic_fmt(buf, cap, prefix, "breaker");
}

int aiq_topic_alerts(const char *prefix, char *buf, size_t cap)
{
    return topic_fmt(buf, cap, prefix, "alerts");
}

int aiq_topic_priority(const char *prefix, const char *topic)
{
    char name[AIQ_TOPIC_MAX];
    for (int p = 0; p < AIQ_PRIO_COUNT; p++) {
        if (aiq_topic_jobs(prefix, (aiq_priority_t)p, name, sizeof(name)) == 0 &&
            strcmp(name, topic) == 0)
            return p;
    }
    return -1;
}

bool aiq_topic_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 249 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}
