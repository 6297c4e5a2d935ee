/* log.h — structured logs: one JSON object per line on stderr.
 * A logger is owned by main and borrowed by every module; writes are line-atomic. */
#ifndef AIQ_LOG_H
#define AIQ_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum aiq_log_level {
    AIQ_LOG_DEBUG = 0,
    AIQ_LOG_INFO = 1,
    AIQ_LOG_WARN = 2,
    AIQ_LOG_ERROR = 3,
} aiq_log_level_t;

typedef struct aiq_log aiq_log_t;

/* Creates a logger tagged with component (e.g. "worker") and instance id (copied).
 * Returns NULL only on allocation failure. Free with aiq_log_free (NULL is a no-op). */
aiq_log_t *aiq_log_new(const char *component, const char *instance, aiq_log_level_t level);
void aiq_log_free(aiq_log_t *log);

/* A clock in ms (monotonic), for tests; ctx is passed through. */
typedef int64_t (*aiq_log_clock_fn)(void *ctx);

/* Warnings and errors without a job id collapse: the first line of a cause (the caller's
 * cause for aiq_logc, else the message with its numbers masked) is written, the next ones within
 * interval_ms are counted, and one line per interval then says "<cause> ×N in S s: <latest
 * message>" (field "repeated": N). Counted lines not yet summarised are summarised by the next line
 * logged after their interval, or by aiq_log_free. interval_ms 0 turns collapsing off;
 * the default is 10 s on aiq_mono_ms. clock NULL = aiq_mono_ms. */
void aiq_log_set_collapse(aiq_log_t *log, int64_t interval_ms, aiq_log_clock_fn clock, void *ctx);

/* "debug"|"info"|"warn"|"error" → level; -1 when unknown. */
int aiq_log_level_parse(const char *name);

/* Writes one line {"ts","level","component","instance","job"?,"msg"} when level is enabled.
 * msg is passed through aiq_log_redact first; job is not (job ids are not personal data).
 * job may be NULL. log may be NULL (then a default logger at info writes). Any thread. */
void aiq_logj(aiq_log_t *log, aiq_log_level_t level, const char *job, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The same with the job's W3C traceparent (may be NULL): its trace id goes into "trace". */
void aiq_logjt(aiq_log_t *log, aiq_log_level_t level, const char *job, const char *traceparent,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The same as aiq_logj without a job, collapsing by cause (e.g. librdkafka's facility,
 * "COMMITFAIL") rather than by format string. */
void aiq_logc(aiq_log_t *log, aiq_log_level_t level, const char *cause, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define aiq_log_debug(log, ...) aiq_logj((log), AIQ_LOG_DEBUG, NULL, __VA_ARGS__)
#define aiq_log_info(log, ...)  aiq_logj((log), AIQ_LOG_INFO, NULL, __VA_ARGS__)
#define aiq_log_warn(log, ...)  aiq_logj((log), AIQ_LOG_WARN, NULL, __VA_ARGS__)
#define aiq_log_error(log, ...) aiq_logj((log), AIQ_LOG_ERROR, NULL, __VA_ARGS__)

/* Copies in to out with personal data replaced by fixed markers: e-mail addresses → "[email]",
 * phone numbers (+CC with 8–15 digits, or national forms of 9–15 digits in separated groups)
 * → "[phone]", Luhn-valid 13–19 digit card numbers starting 2–6 → "[card]", mod-97-valid IBANs
 * → "[iban]". Pure: no allocation, no locale, O(strlen(in)) with bounded lookahead.
 * out (caller-owned, cap bytes) is always NUL-terminated when cap > 0; on truncation a marker is
 * never cut and no partial UTF-8 sequence is left at the end. in == NULL is treated as "".
 * Returns the number of bytes written before the NUL (always < cap; 0 when cap == 0). Any thread.
 */
size_t aiq_log_redact(const char *in, char *out, size_t cap);

/* True when level would be written (to skip building expensive messages). */
int aiq_log_enabled(const aiq_log_t *log, aiq_log_level_t level);

#endif
