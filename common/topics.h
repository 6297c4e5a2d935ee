/* topics.h — priorities and the Kafka topic names derived from a prefix.
 * Pure functions; every name fits AIQ_TOPIC_MAX. */
#ifndef AIQ_TOPICS_H
#define AIQ_TOPICS_H

#include <stdbool.h>
#include <stddef.h>

#define AIQ_TOPIC_MAX 250 /* Kafka's limit is 249 characters */

typedef enum aiq_priority {
    AIQ_PRIO_CRITICAL = 0,
    AIQ_PRIO_HIGH = 1,
    AIQ_PRIO_NORMAL = 2,
    AIQ_PRIO_LOW = 3,
    AIQ_PRIO_COUNT = 4,
} aiq_priority_t;

/* "critical", "high", "normal", "low". */
const char *aiq_priority_name(aiq_priority_t p);

/* Returns the priority for a name, or -1 when the name is not one of the four. */
int aiq_priority_parse(const char *name);

/* Topic names: "<prefix>jobs.<priority>", "<prefix>results", "<prefix>dlq".
 * Return 0, or AIQ_ETOOBIG when cap is too small. */
int aiq_topic_jobs(const char *prefix, aiq_priority_t p, char *buf, size_t cap);
int aiq_topic_results(const char *prefix, char *buf, size_t cap);
int aiq_topic_dlq(const char *prefix, char *buf, size_t cap);
int aiq_topic_metrics(const char *prefix, char *buf, size_t cap); /* "<prefix>metrics" */
/* "<prefix>breaker": compacted, keyed by breaker name, one partition. */
int aiq_topic_breaker(const char *prefix, char *buf, size_t cap);
/* "<prefix>alerts": alert raise/resolve events, keyed by "<worker>/<rule>". */
int aiq_topic_alerts(const char *prefix, char *buf, size_t cap);

/* The priority a job topic stands for, or -1 when topic is not one of prefix's job topics. */
int aiq_topic_priority(const char *prefix, const char *topic);

/* Kafka's rule: 1..249 chars of [A-Za-z0-9._-], and not "." or "..". */
bool aiq_topic_name_valid(const char *name);

#endif
