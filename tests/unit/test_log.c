/* test_log.c — PII redaction of log messages (common/log.h): each kind in context, checksum
 * failures and aiq's own log vocabulary left alone, safe truncation, and a random-input fuzz. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

/* Redacts in and checks the exact result and returned length. */
static void expect(const char *in, const char *want)
{
    char out[512];
    size_t n = aiq_log_redact(in, out, sizeof(out));
    if (strcmp(out, want) != 0)
        print_error("in:   \"%s\"\nwant: \"%s\"\ngot:  \"%s\"\n", in, want, out);
    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));
}

static void unchanged(const char *in)
{
    expect(in, in);
}

static void log_redacts_email(void **state)
{
    (void)state;
    expect("john.doe@example.com", "[email]");
    expect("contact john.doe+tag@mail.example.co.uk now", "contact [email] now");
    expect("to <a_b%c-d@sub-domain.example.org>, cc x@y.io.", "to <[email]>, cc [email].");
    expect("\"owner\":\"Jane.Smith@Example.COM\"", "\"owner\":\"[email]\"");
    expect("mailto:user@example.net;", "mailto:[email];");
    expect("...bob@example.org", "...[email]");
    expect("a@b.co b@c.de", "[email] [email]");
}

static void log_keeps_non_email_at(void **state)
{
    (void)state;
    unchanged("aiq.jobs.low[3]@12345");
    unchanged("user@localhost");
    unchanged("retry@3 attempts");
    unchanged("x@127.0.0.1:9092");
    unchanged("@example.com");
    unchanged("name@");
}

static void log_redacts_phone(void **state)
{
    (void)state;
    expect("+1 415 555 2671", "[phone]");
    expect("call +44 (0)20 7946 0958.", "call [phone].");
    expect("tel:+14155552671", "tel:[phone]");
    expect("phone=+33-6-12-34-56-78,", "phone=[phone],");
    expect("(+49) 30 1234567", "[phone]");
    expect("write 12345 678@example.com", "write 12345 [email]");
    expect("ring (415) 555-2671 today", "ring [phone] today");
    expect("415.555.2671", "[phone]");
    expect("home: 020 7946 0958; mobile 06 12 34 56 78", "home: [phone]; mobile [phone]");
    expect("1-800-555-0199)", "[phone])");
}

static void log_keeps_short_and_long_numbers(void **state)
{
    (void)state;
    unchanged("+1234567");             /* 7 digits */
    unchanged("+1234 5678 9012 3456"); /* 16 digits */
    unchanged("555-2671");
    unchanged("call 415 555 26"); /* 8 digits, national */
}

static void log_redacts_card(void **state)
{
    (void)state;
    expect("4111111111111111", "[card]");
    expect("card 4111 1111 1111 1111 declined", "card [card] declined");
    expect("pan=5500-0000-0000-0004;", "pan=[card];");
    expect("amex 3782 822463 10005.", "amex [card].");
    expect("(6011111111111117)", "([card])");
    expect("4012888888881881,4222222222222", "[card],[card]");
}

static void log_keeps_luhn_failing_card(void **state)
{
    (void)state;
    unchanged("4111111111111112");
    unchanged("card 4111 1111 1111 1113 declined");
    unchanged("5500-0000-0000-0005");
    unchanged("1234567812345670"); /* Luhn-valid but no issuer starts with 1 */
}

static void log_redacts_iban(void **state)
{
    (void)state;
    expect("DE89370400440532013000", "[iban]");
    expect("iban DE89 3704 0044 0532 0130 00 EUR", "iban [iban] EUR");
    expect("GB82 WEST 1234 5698 7654 32.", "[iban].");
    expect("(FR1420041010050500013M02606)", "([iban])");
    expect("to NL91ABNA0417164300, from BE68539007547034", "to [iban], from [iban]");
}

static void log_keeps_iban_with_bad_check_digits(void **state)
{
    (void)state;
    unchanged("DE88370400440532013000");
    unchanged("iban DE89 3704 0044 0532 0130 01 EUR");
    unchanged("GB82WEST12345698765433");
    unchanged("HTTP2 RFC7540");
}

static void log_keeps_aiq_vocabulary(void **state)
{
    (void)state;
    static const char *const keep[] = {
        "2026-11-28T02:08:43.123Z",
        "at 2026-11-28 02:08:43.123 job done",
        "2026-11-28 12345678",
        "job 3f1c2b9e-8d4a-4c1e-9f7a-2b6d5e4c3a21 accepted",
        "12345678-1234-1234-1234-123456789012",
        "aiq.jobs.low[3]@12345",
        "committed aiq.jobs.high[11]@987654321012 lag=1234567890",
        "took 1234 ms",
        "took 1234567890123 ms",
        "epoch 1764300523123",
        "HTTP 503 Service Unavailable (status=429, retry in 2000 ms)",
        "aiq 0.1.0 librdkafka 2.3.0 curl 8.5.0.12345",
        "v10.20.30.40",
        "broker 127.0.0.1:9092",
        "broker 192.168.100.200:9092 and 10.0.0.1",
        "192.168.100.200",
        "pi=3.14159265358979",
        "bytes=1,234,567,890",
        "offsets 12 34 56 78",
        "ids 0x1f2e3d4c5b6a7988",
        "JOB 3F1C2B9E-8D4A-4C1E-9F7A-2B6D5E4C3A21",
        "GET /v1/jobs/3f1c2b9e-8d4a-4c1e-9f7a-2b6d5e4c3a21 HTTP/1.1 200 in 17 ms",
        "partition 3 offset 123456789012 lag 42",
        "aiq.jobs.low[3]@12345 -> aiq.results[0]@678",
        "sleep 250ms; backoff 1000 ms x 3",
        "status 429 after 3 retries; next at 2026-11-28T02:08:43Z",
        "",
    };
    for (size_t k = 0; k < sizeof(keep) / sizeof(keep[0]); k++)
        unchanged(keep[k]);
}

static void log_truncates_safely(void **state)
{
    (void)state;
    const char *in = "mail john.doe@example.com card 4111 1111 1111 1111 end";
    char full[128];
    size_t total = aiq_log_redact(in, full, sizeof(full));
    assert_string_equal(full, "mail [email] card [card] end");
    for (size_t cap = 1; cap <= sizeof(full); cap++) {
        char *out = malloc(cap); /* exact size so ASan sees any overflow */
        assert_non_null(out);
        size_t n = aiq_log_redact(in, out, cap);
        assert_true(n < cap);
        assert_int_equal(strlen(out), n);
        /* A prefix of the full output, ending before a marker rather than inside it. */
        assert_memory_equal(out, full, n);
        assert_true(n == total || full[n] == '[' || n + 1 == cap);
        assert_null(strstr(out, "john"));
        assert_null(strstr(out, "4111"));
        free(out);
    }
    assert_int_equal(aiq_log_redact(in, NULL, 0), 0);
    char one[1] = {'x'};
    assert_int_equal(aiq_log_redact(in, one, 1), 0);
    assert_int_equal(one[0], '\0');
    char buf[8];
    assert_int_equal(aiq_log_redact(NULL, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");
}

static void log_truncation_keeps_utf8_whole(void **state)
{
    (void)state;
    const char *in = "caf\xc3\xa9 \xe2\x82\xac"; /* "café €" */
    char out[8];
    size_t n = aiq_log_redact(in, out, 5); /* room for "caf" + 1 byte of é */
    assert_int_equal(n, 3);
    assert_string_equal(out, "caf");
    n = aiq_log_redact(in, out, 8); /* "café " + 2 of 3 bytes of € */
    assert_int_equal(n, 6);
    assert_string_equal(out, "caf\xc3\xa9 ");
}

static void log_fuzz_random_input(void **state)
{
    (void)state;
    static const char alphabet[] = "0123456789abcXYZDE@.- +()";
    srand(7);
    char in[257];
    char out[300];
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = (size_t)rand() % (sizeof(in) - 1);
        for (size_t k = 0; k < len; k++)
            in[k] = alphabet[(size_t)rand() % (sizeof(alphabet) - 1)];
        in[len] = '\0';
        size_t cap = 1 + (size_t)rand() % sizeof(out);
        char *o = malloc(cap);
        assert_non_null(o);
        size_t n = aiq_log_redact(in, o, cap);
        assert_true(n < cap);
        assert_int_equal(strlen(o), n);
        free(o);
        /* Redaction is idempotent: markers and what is left contain nothing to redact. */
        n = aiq_log_redact(in, out, sizeof(out));
        char again[300];
        aiq_log_redact(out, again, sizeof(again));
        assert_string_equal(out, again);
    }
}

static void log_long_input_is_linear(void **state)
{
    (void)state;
    size_t len = 1u << 20;
    char *in = malloc(len + 1);
    char *out = malloc(len + 1);
    assert_non_null(in);
    assert_non_null(out);
    for (size_t k = 0; k < len; k++)
        in[k] = "1 2-3.a@b+"[k % 10];
    in[len] = '\0';
    size_t n = aiq_log_redact(in, out, len + 1);
    assert_true(n <= len);
    memset(in, '7', len);
    n = aiq_log_redact(in, out, len + 1);
    assert_int_equal(n, len);
    free(in);
    free(out);
}

/* Runs one aiq_logj call with stderr sent to a temporary file; returns what was written. */
static void capture_logjt(const char *job, const char *trace, const char *msg, char *got,
                          size_t cap)
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
    aiq_log_t *log = aiq_log_new("worker", "w-1", AIQ_LOG_INFO);
    assert_non_null(log);
    aiq_logjt(log, AIQ_LOG_WARN, job, trace, "%s", msg);
    aiq_log_free(log);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    rewind(tmp);
    size_t n = fread(got, 1, cap - 1, tmp);
    got[n] = '\0';
    fclose(tmp);
}

static void capture_logj(const char *job, const char *msg, char *got, size_t cap)
{
    capture_logjt(job, NULL, msg, got, cap);
}

static void log_logjt_carries_the_trace_id(void **state)
{
    (void)state;
    char got[2000];
    capture_logjt("j1", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "m", got,
                  sizeof(got));
    assert_non_null(strstr(got, "\"job\":\"j1\",\"trace\":\"4bf92f3577b34da6a3ce929d0e0e4736\""));
    capture_logjt("j1", "00-NOT-A-TRACE", "m", got, sizeof(got));
    assert_null(strstr(got, "\"trace\""));
}

static void log_logj_redacts_message_not_job(void **state)
{
    (void)state;
    char got[9000];
    const char *job = "3f1c2b9e-8d4a-4c1e-9f7a-2b6d5e4c3a21";
    capture_logj(job, "model said: contact jane@example.com or +1 415 555 2671 re 4111111111111111",
                 got, sizeof(got));
    assert_non_null(strstr(got, "\"job\":\"3f1c2b9e-8d4a-4c1e-9f7a-2b6d5e4c3a21\""));
    assert_non_null(strstr(got, "\"msg\":\"model said: contact [email] or [phone] re [card]\""));
    assert_null(strstr(got, "jane"));
    assert_null(strstr(got, "4111"));
}

static void log_logj_truncated_message_drops_fragment(void **state)
{
    (void)state;
    /* The card straddles the 4 KiB message cap; its first digits must not reach the log. */
    static char msg[5000];
    memset(msg, 'x', sizeof(msg) - 1);
    memcpy(msg + 4087, " 4111 1111 1111 1111 ", 21); /* "4111 111" fits */
    msg[sizeof(msg) - 1] = '\0';
    char got[9000];
    capture_logj(NULL, msg, got, sizeof(got));
    assert_non_null(strstr(got, "[truncated]"));
    assert_null(strstr(got, "4111"));
}

/* ---- collapsing repeated warnings (issue #17: 190 COMMITFAIL lines in 10 s) ---- */

static int64_t fake_now;

static int64_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now;
}

typedef struct capture {
    FILE *tmp;
    int saved;
} capture_t;

static capture_t capture_start(void)
{
    capture_t c = {tmpfile(), dup(STDERR_FILENO)};
    assert_non_null(c.tmp);
    assert_true(c.saved >= 0);
    assert_true(dup2(fileno(c.tmp), STDERR_FILENO) >= 0);
    return c;
}

/* Restores stderr; returns the lines written meanwhile (count in *lines). */
static char *capture_end(capture_t *c, int *lines)
{
    assert_true(dup2(c->saved, STDERR_FILENO) >= 0);
    close(c->saved);
    long n = ftell(c->tmp);
    char *out = calloc(1, (size_t)n + 1);
    rewind(c->tmp);
    assert_int_equal(fread(out, 1, (size_t)n, c->tmp), (size_t)n);
    fclose(c->tmp);
    *lines = 0;
    for (char *p = out; *p; p++)
        *lines += *p == '\n';
    return out;
}

static aiq_log_t *collapsing_log(void)
{
    aiq_log_t *log = aiq_log_new("worker", "w-1", AIQ_LOG_INFO);
    assert_non_null(log);
    fake_now = 1000;
    aiq_log_set_collapse(log, 10000, fake_clock, NULL);
    return log;
}

static void log_collapses_repeated_cause_per_interval(void **state)
{
    (void)state;
    aiq_log_t *log = collapsing_log();
    capture_t c = capture_start();
    /* a broker down for 28 s: one COMMITFAIL per 50 ms commit interval */
    for (int i = 0; i < 190; i++) {
        aiq_logc(log, AIQ_LOG_WARN, "COMMITFAIL", "librdkafka COMMITFAIL: commit %d failed", i);
        fake_now += 52;
    }
    int lines;
    char *out = capture_end(&c, &lines);
    assert_int_equal(lines, 1); /* the first only, so far */
    assert_non_null(strstr(out, "commit 0 failed"));
    free(out);
    /* the next one after the interval writes the summary of all 190 + itself */
    fake_now = 1000 + 10000;
    c = capture_start();
    aiq_logc(log, AIQ_LOG_WARN, "COMMITFAIL", "librdkafka COMMITFAIL: commit %d failed", 190);
    out = capture_end(&c, &lines);
    assert_int_equal(lines, 1);
    assert_non_null(
        strstr(out, "COMMITFAIL \u00d7190 in 10 s: librdkafka COMMITFAIL: commit 190 failed"));
    assert_non_null(strstr(out, "\"repeated\":190"));
    assert_non_null(strstr(out, "\"level\":\"warn\""));
    free(out);
    aiq_log_free(log);
}

static void log_collapse_keeps_distinct_causes_jobs_and_info(void **state)
{
    (void)state;
    aiq_log_t *log = collapsing_log();
    capture_t c = capture_start();
    for (int i = 0; i < 5; i++) {
        aiq_log_warn(log, "producer: broker %d down", i);       /* one cause: numbers masked */
        aiq_log_warn(log, "breaker model-a open");              /* another */
        aiq_log_warn(log, "breaker model-b open");              /* and another: names differ */
        aiq_logj(log, AIQ_LOG_WARN, "job-1", "publish failed"); /* a job's story: all kept */
        aiq_log_info(log, "progress: %d", i);                   /* info: all kept */
        fake_now += 100;
    }
    int lines;
    char *out = capture_end(&c, &lines);
    assert_int_equal(lines, 3 + 5 + 5);
    free(out);
    /* freeing the log summarises what was counted and not yet reported */
    c = capture_start();
    aiq_log_free(log);
    out = capture_end(&c, &lines);
    assert_int_equal(lines, 3);
    assert_non_null(strstr(out, "\u00d74 in 0 s: producer: broker 4 down"));
    assert_non_null(strstr(out, "\u00d74 in 0 s: breaker model-a open"));
    assert_non_null(strstr(out, "\u00d74 in 0 s: breaker model-b open"));
    free(out);
}

static void log_collapse_summary_when_other_lines_follow(void **state)
{
    (void)state;
    aiq_log_t *log = collapsing_log();
    capture_t c = capture_start();
    aiq_log_error(log, "dead letters fail: %s", "topic missing");
    aiq_log_error(log, "dead letters fail: %s", "topic missing");
    aiq_log_error(log, "dead letters fail: %s", "topic missing");
    fake_now += 10001;
    aiq_log_info(log, "progress"); /* another line after the interval reports the 2 counted */
    fake_now += 1;
    aiq_log_error(log, "dead letters fail: %s", "topic missing"); /* a new interval: counted */
    int lines;
    char *out = capture_end(&c, &lines);
    assert_int_equal(lines, 3);
    /* the first error, the summary of the two counted (written before the progress line
     * that ended their interval), the progress line */
    char *sum = strstr(out, "\u00d72 in 10 s: dead letters fail: topic missing");
    assert_non_null(sum);
    assert_true(sum < strstr(out, "\"msg\":\"progress\""));
    free(out);
    /* off: every line written */
    aiq_log_set_collapse(log, 0, NULL, NULL);
    c = capture_start();
    for (int i = 0; i < 4; i++)
        aiq_log_warn(log, "same");
    out = capture_end(&c, &lines);
    assert_int_equal(lines, 4);
    free(out);
    c = capture_start();
    aiq_log_free(log);
    out = capture_end(&c, &lines);
    assert_int_equal(lines, 1); /* the error counted in the last interval */
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(log_logjt_carries_the_trace_id),
        cmocka_unit_test(log_collapses_repeated_cause_per_interval),
        cmocka_unit_test(log_collapse_keeps_distinct_causes_jobs_and_info),
        cmocka_unit_test(log_collapse_summary_when_other_lines_follow),
        cmocka_unit_test(log_redacts_email),
        cmocka_unit_test(log_keeps_non_email_at),
        cmocka_unit_test(log_redacts_phone),
        cmocka_unit_test(log_keeps_short_and_long_numbers),
        cmocka_unit_test(log_redacts_card),
        cmocka_unit_test(log_keeps_luhn_failing_card),
        cmocka_unit_test(log_redacts_iban),
        cmocka_unit_test(log_keeps_iban_with_bad_check_digits),
        cmocka_unit_test(log_keeps_aiq_vocabulary),
        cmocka_unit_test(log_truncates_safely),
        cmocka_unit_test(log_truncation_keeps_utf8_whole),
        cmocka_unit_test(log_fuzz_random_input),
        cmocka_unit_test(log_long_input_is_linear),
        cmocka_unit_test(log_logj_redacts_message_not_job),
        cmocka_unit_test(log_logj_truncated_message_drops_fragment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
