/* timeutil.h — wall and monotonic clocks in milliseconds, RFC 3339 text.
 * Pure functions, safe on any thread. */
#ifndef AIQ_TIMEUTIL_H
#define AIQ_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t aiq_now_ms(void);

/* Milliseconds from an arbitrary origin (CLOCK_MONOTONIC); for durations only. */
int64_t aiq_mono_ms(void);

/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 chars + NUL) into buf; returns buf. cap >= 25. */
char *aiq_time_format(int64_t epoch_ms, char *buf, size_t cap);

/* Parses RFC 3339 ("2026-11-28T02:08:43Z", optional fraction, "Z" or "+hh:mm").
 * Returns 0 and sets *epoch_ms, or AIQ_EINVAL. */
int aiq_time_parse(const char *s, int64_t *epoch_ms);

#endif
