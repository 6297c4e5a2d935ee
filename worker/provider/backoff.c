#include "backoff.h"

#include <stddef.h>
#include <string.h>

#define SATURATE_S INT32_MAX /* a delta-seconds above this is read as this */

static int64_t nonneg(int64_t v)
{
    return v < 0 ? 0 : v;
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* min(cap, base * 2^(retry-1)) without overflow: the doubling stops as soon as it passes cap. */
static int64_t ceiling_of(int64_t base, int64_t cap, int retry)
{
    int64_t c = base;

    for (int i = 1; i < retry && c < cap; i++)
        c = c > cap / 2 ? cap : c * 2;
    return min64(c, cap);
}

/* Uniform in [lo, hi]; the modulo bias is below (hi - lo) / 2^64, far under a millisecond. */
static int64_t uniform(int64_t lo, int64_t hi, uint64_t rnd)
{
    if (hi <= lo)
        return lo;
    return lo + (int64_t)(rnd % ((uint64_t)(hi - lo) + 1));
}

int64_t aiq_backoff_delay(const aiq_backoff_conf_t *c, int retry, bool throttled,
                          int64_t retry_after_ms, uint64_t rnd)
{
    int64_t cap = nonneg(c->cap_ms), base = min64(nonneg(c->base_ms), cap);
    int64_t top = ceiling_of(base, cap, retry < 1 ? 1 : retry), d;

    if (throttled) {
        int64_t lo = min64(nonneg(c->throttle_floor_ms), cap);
        d = uniform(lo, min64(max64(top, lo > cap / 2 ? cap : 2 * lo), cap), rnd);
    } else {
        d = uniform(0, top, rnd);
    }
    if (retry_after_ms >= 0)
        d = max64(d, min64(retry_after_ms, AIQ_BACKOFF_HINT_MAX_MS));
    return d;
}

/* ---- header parsing ------------------------------------------------------------------------ */

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static bool is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* 1*DIGIT surrounded by optional whitespace, saturating at max; -1 when not that. */
static int64_t parse_uint(const char *s, int64_t max)
{
    int64_t v = 0;
    const char *p = s;

    while (is_ows(*p))
        p++;
    if (!is_digit(*p))
        return -1;
    for (; is_digit(*p); p++)
        v = v > (max - (*p - '0')) / 10 ? max : v * 10 + (*p - '0');
    while (is_ows(*p))
        p++;
    return *p ? -1 : v;
}

/* Exactly n digits at s; -1 otherwise. */
static int fixed_digits(const char *s, int n)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Index of the 3-letter name at s in names (case-sensitive, as RFC 9110 says), or -1. */
static int name_index(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!strncmp(s, names[i], 3))
            return i;
    return -1;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days in the years [1, y): 365 each plus the leap days among them. */
static int64_t days_before_year(int y)
{
    int64_t p = y - 1;
    return 365 * p + p / 4 - p / 100 + p / 400;
}

/* Days from 1970-01-01 to y-m-d (m 1..12) in the proleptic Gregorian calendar. */
static int64_t days_since_epoch(int y, int m, int d)
{
    static const int before_month[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};

    return days_before_year(y) - days_before_year(1970) + before_month[m - 1] +
           (m > 2 && is_leap(y)) + d - 1;
}

/* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" (29 characters). -1 when not one. */
static int parse_imf_fixdate(const char *s, int64_t *epoch_ms)
{
    static const char *const days[7] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const char *const months[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    while (is_ows(*s))
        s++;
    if (strlen(s) < 29 || name_index(s, days, 7) < 0 || strncmp(s + 3, ", ", 2) || s[7] != ' ' ||
        s[11] != ' ' || s[16] != ' ' || s[19] != ':' || s[22] != ':' || strncmp(s + 25, " GMT", 4))
        return -1;
    for (const char *p = s + 29; *p; p++)
        if (!is_ows(*p))
            return -1;
    int day = fixed_digits(s + 5, 2), mon = name_index(s + 8, months, 12);
    int year = fixed_digits(s + 12, 4), hh = fixed_digits(s + 17, 2);
    int mm = fixed_digits(s + 20, 2), ss = fixed_digits(s + 23, 2);
    if (day < 1 || mon < 0 || year < 1900 || hh < 0 || hh > 23 || mm < 0 || mm > 59 || ss < 0 ||
        ss > 60 || day > mdays[mon] || (mon == 1 && day == 29 && !is_leap(year)))
        return -1;
    *epoch_ms =
        ((days_since_epoch(year, mon + 1, day) * 24 + hh) * 60 + mm) * 60000LL + ss * 1000LL;
    return 0;
}

int64_t aiq_backoff_retry_after_ms(const char *retry_after, const char *amz_retry_after_ms,
                                   int64_t now_ms)
{
    int64_t v, when;

    if (amz_retry_after_ms && (v = parse_uint(amz_retry_after_ms, SATURATE_S * 1000LL)) >= 0)
        return v;
    if (!retry_after)
        return -1;
    if ((v = parse_uint(retry_after, SATURATE_S)) >= 0)
        return v * 1000;
    if (parse_imf_fixdate(retry_after, &when) == 0)
        return when > now_ms ? min64(when - now_ms, SATURATE_S * 1000LL) : 0;
    return -1;
}

/* ---- retry budget -------------------------------------------------------------------------- */

void aiq_retry_budget_init(aiq_retry_budget_t *b, int capacity, int retry_cost, int timeout_cost)
{
    b->capacity = capacity > 0 ? capacity : AIQ_RETRY_BUDGET_CAPACITY;
    b->retry_cost = retry_cost > 0 ? retry_cost : AIQ_RETRY_BUDGET_RETRY_COST;
    b->timeout_cost = timeout_cost > 0 ? timeout_cost : AIQ_RETRY_BUDGET_TIMEOUT_COST;
    b->tokens = b->capacity;
}

bool aiq_retry_budget_take(aiq_retry_budget_t *b, bool timeout_like, int *cost_out)
{
    int cost = timeout_like ? b->timeout_cost : b->retry_cost;

    if (cost_out)
        *cost_out = 0;
    if (b->tokens < cost)
        return false;
    b->tokens -= cost;
    if (cost_out)
        *cost_out = cost;
    return true;
}

void aiq_retry_budget_success(aiq_retry_budget_t *b, int refund_cost)
{
    int add = refund_cost > 0 ? refund_cost : 1;

    b->tokens = add > b->capacity - b->tokens ? b->capacity : b->tokens + add;
}

int aiq_retry_budget_tokens(const aiq_retry_budget_t *b)
{
    return b->tokens;
}
