#include "log.h"
#include "timeutil.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOG_LINE_MAX 8192

struct aiq_log {
    char component[32];
    char instance[128];
    aiq_log_level_t level;
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
    return log;
}

void aiq_log_free(aiq_log_t *log)
{
    free(log);
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

void aiq_logj(aiq_log_t *log, aiq_log_level_t level, const char *job, const char *fmt, ...)
{
    if (!aiq_log_enabled(log, level))
        return;
    char msg[LOG_LINE_MAX / 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

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
    /* json_string rejects invalid UTF-8; a log line must never be dropped for that. */
    json_t *m = json_string(msg);
    json_object_set_new(o, "msg", m ? m : json_string("(message was not valid UTF-8)"));
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
