#include "timeutil.h"
#include "aiq_err.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t aiq_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t aiq_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *aiq_time_format(int64_t epoch_ms, char *buf, size_t cap)
{
    time_t secs = (time_t)(epoch_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(epoch_ms % 1000));
    return buf;
}

/* Reads exactly n digits; returns -1 when they are not all digits. */
static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int parse_offset(const char *p, int64_t *offset_ms)
{
    if (*p == 'Z' || *p == 'z') {
        *offset_ms = 0;
        return p[1] == '\0' ? 0 : AIQ_EINVAL;
    }
    if ((*p != '+' && *p != '-') || strlen(p) != 6 || p[3] != ':')
        return AIQ_EINVAL;
    int hh = digits(p + 1, 2), mm = digits(p + 4, 2);
    if (hh < 0 || mm < 0 || hh > 23 || mm > 59)
        return AIQ_EINVAL;
    *offset_ms = ((int64_t)hh * 60 + mm) * 60000 * (*p == '-' ? -1 : 1);
    return 0;
}

int aiq_time_parse(const char *s, int64_t *epoch_ms)
{
    if (!s || strlen(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':')
        return AIQ_EINVAL;
    struct tm tm = {0};
    tm.tm_year = digits(s, 4) - 1900;
    tm.tm_mon = digits(s + 5, 2) - 1;
    tm.tm_mday = digits(s + 8, 2);
    tm.tm_hour = digits(s + 11, 2);
    tm.tm_min = digits(s + 14, 2);
    tm.tm_sec = digits(s + 17, 2);
    if (tm.tm_year < 0 || tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
        tm.tm_hour < 0 || tm.tm_hour > 23 || tm.tm_min < 0 || tm.tm_min > 59 || tm.tm_sec < 0 ||
        tm.tm_sec > 60)
        return AIQ_EINVAL;
    const char *p = s + 19;
    int64_t frac_ms = 0;
    if (*p == '.') {
        int n = 0;
        for (p++; isdigit((unsigned char)*p); p++, n++) {
            if (n < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
        }
        if (n == 0)
            return AIQ_EINVAL;
        for (; n < 3; n++)
            frac_ms *= 10;
    }
    int64_t offset_ms;
    if (parse_offset(p, &offset_ms))
        return AIQ_EINVAL;
    time_t secs = timegm(&tm);
    *epoch_ms = (int64_t)secs * 1000 + frac_ms - offset_ms;
    return 0;
}
