/* kprops.h — librdkafka properties a user passes through verbatim (SASL, TLS, ...) to every
 * Kafka client of a process: AIQ_KAFKA_RDKAFKA_<NAME> environment variables and -X flags. */
#ifndef AIQ_KPROPS_H
#define AIQ_KPROPS_H

#include "aiq_err.h"

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#define AIQ_KPROPS_ENV_PREFIX "AIQ_KAFKA_RDKAFKA_"
#define AIQ_KPROPS_MAX        64 /* properties taken from the environment at most */
#define AIQ_KPROPS_CONNECT_MS                                                                      \
    20000 /* CLI tools: a cluster silent this long is an error                                     \
           * (aiq_kafka_connect) */

/* Maps an environment variable name to its librdkafka property: AIQ_KAFKA_RDKAFKA_SASL_USERNAME
 * → "sasl.username" (lower case, '_' → '.'; every librdkafka property that can be set from
 * text is spelt that way). Returns 1 and fills name, or 0 when env is not such a variable. */
int aiq_kprops_env_to_name(const char *env, char *name, size_t cap);

/* Applies every AIQ_KAFKA_RDKAFKA_* variable of the environment to conf (borrowed).
 * Returns 0, or AIQ_EINVAL with the variable and librdkafka's reason in err. */
int aiq_kprops_apply_env(rd_kafka_conf_t *conf, aiq_err_t *err);

/* Takes "name=value" (a -X flag of the CLI tools) and sets the matching environment
 * variable, so every Kafka client the process creates afterwards gets the property.
 * Returns 0, or AIQ_EINVAL for a malformed argument. */
int aiq_kprops_set_arg(const char *arg, aiq_err_t *err);

/* The environment's properties as a NULL-terminated name, value, name, value... array (the
 * form of aiq_producer_conf_t.kafka_props). Returns NULL only when out of memory; free with
 * aiq_kprops_list_free. */
char **aiq_kprops_list_env(void);
void aiq_kprops_list_free(char **list); /* NULL is a no-op */

#endif
