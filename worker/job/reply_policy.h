/* reply_policy.h — where a job's result may go: only to topics the operator allows
 * (worker.reply_topics), and never into aiq's own topics, whatever that allows. Pure; any
 * thread once built. */
#ifndef AIQ_REPLY_POLICY_H
#define AIQ_REPLY_POLICY_H

#include "aiq_err.h"

typedef struct aiq_reply_policy aiq_reply_policy_t;

/* Builds the policy of topic_prefix (copied) from patterns: comma-separated topic names,
 * each may end in '*' (any rest) and contain "{prefix}" (replaced by topic_prefix); spaces
 * around names are ignored; "" allows no topic. Returns 0, AIQ_EINVAL (err names the bad
 * pattern) or AIQ_ENOMEM. Free with aiq_reply_policy_free (NULL is a no-op). */
int aiq_reply_policy_new(aiq_reply_policy_t **out, const char *topic_prefix, const char *patterns,
                         aiq_err_t *err);
void aiq_reply_policy_free(aiq_reply_policy_t *p);

/* 0 when results may be written to topic; AIQ_EINVAL when not, err saying why: one of aiq's
 * own topics (the four job topics, the DLQ, breaker, metrics and alerts topics, compared
 * with '.' and '_' alike as Kafka does), a name starting with "__" (Kafka's internal
 * topics), or no pattern matches. */
int aiq_reply_policy_check(const aiq_reply_policy_t *p, const char *topic, aiq_err_t *err);

#endif
