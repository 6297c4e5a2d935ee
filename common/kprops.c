/* kprops.c — pass-through librdkafka properties from the environment and -X flags. */
#include "kprops.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

#define NAME_CAP 256

int aiq_kprops_env_to_name(const char *env, char *name, size_t cap)
{
    size_t plen = strlen(AIQ_KPROPS_ENV_PREFIX), j = 0;
    if (strncmp(env, AIQ_KPROPS_ENV_PREFIX, plen) != 0)
        return 0;
    const char *p = env + plen;
    for (; *p && *p != '=' && j + 1 < cap; p++)
        name[j++] = *p == '_' ? '.' : (char)tolower((unsigned char)*p);
    name[j] = '\0';
    /* A truncated name would set a different property: refuse it instead. */
    return j > 0 && (*p == '\0' || *p == '=');
}

int aiq_kprops_apply_env(rd_kafka_conf_t *conf, aiq_err_t *err)
{
    for (char **e = environ; e && *e; e++) {
        char name[NAME_CAP], errstr[512];
        const char *eq = strchr(*e, '=');
        if (!eq || !aiq_kprops_env_to_name(*e, name, sizeof(name)))
            continue;
        if (rd_kafka_conf_set(conf, name, eq + 1, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
            return aiq_err_set(err, AIQ_EINVAL, "environment %.*s (librdkafka %s): %s",
                               (int)(eq - *e), *e, name, errstr);
    }
    return 0;
}

int aiq_kprops_set_arg(const char *arg, aiq_err_t *err)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        return aiq_err_set(err, AIQ_EINVAL, "-X '%s': expected librdkafka name=value", arg);
    char env[NAME_CAP + sizeof(AIQ_KPROPS_ENV_PREFIX)];
    size_t j = strlen(AIQ_KPROPS_ENV_PREFIX);
    memcpy(env, AIQ_KPROPS_ENV_PREFIX, j);
    for (const char *p = arg; p < eq; p++) {
        if (j + 1 >= sizeof(env))
            return aiq_err_set(err, AIQ_EINVAL, "-X '%s': property name too long", arg);
        if (!isalnum((unsigned char)*p) && *p != '.')
            return aiq_err_set(err, AIQ_EINVAL, "-X '%s': not a librdkafka property name", arg);
        env[j++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    }
    env[j] = '\0';
    if (setenv(env, eq + 1, 1))
        return aiq_err_set(err, AIQ_ENOMEM, "-X '%s': cannot set %s", arg, env);
    return 0;
}

char **aiq_kprops_list_env(void)
{
    char **list = calloc(2 * AIQ_KPROPS_MAX + 1, sizeof(*list));
    if (!list)
        return NULL;
    int n = 0;
    for (char **e = environ; e && *e && n < 2 * AIQ_KPROPS_MAX; e++) {
        char name[NAME_CAP];
        const char *eq = strchr(*e, '=');
        if (!eq || !aiq_kprops_env_to_name(*e, name, sizeof(name)))
            continue;
        if (!(list[n] = strdup(name)) || !(list[n + 1] = strdup(eq + 1))) {
            aiq_kprops_list_free(list);
            return NULL;
        }
        n += 2;
    }
    return list;
}

void aiq_kprops_list_free(char **list)
{
    if (!list)
        return;
    for (char **p = list; *p; p++)
        free(*p);
    free(list);
}
