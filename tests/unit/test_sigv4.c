/* test_sigv4.c — SigV4 signing against AWS's published test-suite vectors, the double-encoded
 * Bedrock path against botocore, and verification round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "sigv4.h"

/* The AWS SigV4 test suite's fixed inputs. */
#define SUITE_AKID   "AKIDEXAMPLE"
#define SUITE_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SUITE_HOST   "example.amazonaws.com"
#define SUITE_NOW    ((time_t)1440938160) /* 20150830T123600Z */
#define SUITE_SCOPE                                                                                \
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
#define SUITE_TOKEN                                                                                \
    "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpS"  \
    "PfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYw" \
    "T7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKml" \
    "zm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="

static const aiq_sigv4_creds_t suite_creds = {SUITE_AKID, SUITE_SECRET, NULL, NULL};

static aiq_sigv4_req_t suite_req(const char *method, const char *path, const char *query)
{
    return (aiq_sigv4_req_t){.method = method,
                             .host = SUITE_HOST,
                             .path = path,
                             .query = query,
                             .region = "us-east-1",
                             .service = "service",
                             .now = SUITE_NOW};
}

static void expect_authz(const aiq_sigv4_req_t *req, const aiq_sigv4_creds_t *creds,
                         const char *want)
{
    aiq_sigv4_out_t out;
    aiq_err_t err = {0};

    int rc = aiq_sigv4_sign(req, creds, &out, &err);
    if (rc)
        print_error("sign failed: %s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_string_equal(out.authorization, want);
    assert_string_equal(out.amz_date, "20150830T123600Z");
}

static void sigv4_get_vanilla(void **state)
{
    (void)state;
    aiq_sigv4_req_t req = suite_req("GET", "/", NULL);
    expect_authz(&req, &suite_creds,
                 SUITE_SCOPE
                 "SignedHeaders=host;x-amz-date, "
                 "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

static void sigv4_post_vanilla(void **state)
{
    (void)state;
    aiq_sigv4_req_t req = suite_req("POST", "/", NULL);
    expect_authz(&req, &suite_creds,
                 SUITE_SCOPE
                 "SignedHeaders=host;x-amz-date, "
                 "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
}

static void sigv4_post_x_www_form_urlencoded(void **state)
{
    (void)state;
    aiq_sigv4_req_t req = suite_req("POST", "/", NULL);
    req.content_type = "application/x-www-form-urlencoded";
    req.body = "Param1=value1";
    req.body_len = 13;
    expect_authz(&req, &suite_creds,
                 SUITE_SCOPE
                 "SignedHeaders=content-type;host;x-amz-date, "
                 "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a");

    char creq[1024];
    assert_true(aiq_sigv4_canonical_request(&req, NULL, creq, sizeof(creq), NULL) > 0);
    assert_string_equal(creq, "POST\n/\n\n"
                              "content-type:application/x-www-form-urlencoded\n"
                              "host:example.amazonaws.com\n"
                              "x-amz-date:20150830T123600Z\n\n"
                              "content-type;host;x-amz-date\n"
                              "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e");
}

static void sigv4_post_sts_header_before(void **state)
{
    (void)state;
    aiq_sigv4_creds_t creds = {SUITE_AKID, SUITE_SECRET, SUITE_TOKEN, NULL};
    aiq_sigv4_req_t req = suite_req("POST", "/", NULL);
    expect_authz(&req, &creds,
                 SUITE_SCOPE
                 "SignedHeaders=host;x-amz-date;x-amz-security-token, "
                 "Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead");
}

static void sigv4_query_sorted_and_encoded(void **state)
{
    (void)state;
    /* get-vanilla-query-order-key-case */
    aiq_sigv4_req_t req = suite_req("GET", "/", "Param2=value2&Param1=value1");
    expect_authz(&req, &suite_creds,
                 SUITE_SCOPE
                 "SignedHeaders=host;x-amz-date, "
                 "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
    /* get-vanilla-utf8-query: the raw key U+1234 is encoded as UTF-8 bytes */
    req = suite_req("GET", "/", "\xe1\x88\xb4=bar");
    expect_authz(&req, &suite_creds,
                 SUITE_SCOPE
                 "SignedHeaders=host;x-amz-date, "
                 "Signature=2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04");
    /* the same key arriving percent-encoded canonicalises identically */
    req = suite_req("GET", "/", "%e1%88%B4=bar");
    expect_authz(&req, &suite_creds,
                 SUITE_SCOPE
                 "SignedHeaders=host;x-amz-date, "
                 "Signature=2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04");
}

/* The suite's normalize-path cases. Their paths are raw (unencoded), so the one encoding we add
 * on top of the "wire" path is exactly the suite's single encoding. */
static void sigv4_path_normalised_like_the_suite(void **state)
{
    (void)state;
    static const struct {
        const char *path, *sig;
    } cases[] = {
        {"/example1/example2/../..",
         "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
        {"/./", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
        {"//example//", "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84"},
        {"/./example", "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5"},
        {"/example space/", "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741"},
        {"/\xe1\x88\xb4", "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"},
        {"/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
         "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char want[256];
        aiq_sigv4_req_t req = suite_req("GET", cases[i].path, NULL);
        snprintf(want, sizeof(want), SUITE_SCOPE "SignedHeaders=host;x-amz-date, Signature=%s",
                 cases[i].sig);
        expect_authz(&req, &suite_creds, want);
    }
}

#define CONVERSE_BODY "{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"hi\"}]}]}"

static aiq_sigv4_req_t bedrock_req(void)
{
    return (aiq_sigv4_req_t){.method = "POST",
                             .host = "bedrock-runtime.us-east-1.amazonaws.com",
                             .path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
                             .content_type = "application/json",
                             .body = CONVERSE_BODY,
                             .body_len = sizeof(CONVERSE_BODY) - 1,
                             .region = "us-east-1",
                             .service = "bedrock",
                             .now = 1714557600}; /* 20240501T100000Z */
}

/* Non-S3 services sign the wire path encoded a second time ("%3A" -> "%253A"); the signatures
 * below come from botocore's SigV4Auth for the same requests. */
static void sigv4_double_encodes_wire_path(void **state)
{
    (void)state;
    aiq_sigv4_req_t req = bedrock_req();
    aiq_sigv4_out_t out;
    char creq[1024];

    assert_true(aiq_sigv4_canonical_request(&req, NULL, creq, sizeof(creq), NULL) > 0);
    assert_non_null(strstr(creq, "\n/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse\n"));
    assert_int_equal(aiq_sigv4_sign(&req, &suite_creds, &out, NULL), 0);
    assert_string_equal(
        out.authorization,
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240501/us-east-1/bedrock/"
        "aws4_request, SignedHeaders=content-type;host;x-amz-date, "
        "Signature=9c6502078e992fb2b22550b4b3906d18ec7440067342930349fec464e69693b4");
    assert_string_equal(out.content_sha256,
                        "c3335e07d6e89650bf94cb98664be69f8774dbc3198df221f113db0a59ea14f0");

    static const char arn_body[] =
        "{\"anthropic_version\":\"bedrock-2023-05-31\",\"max_tokens\":10,\"messages\":[]}";
    req.host = "bedrock-runtime.us-west-2.amazonaws.com";
    req.region = "us-west-2";
    req.path = "/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Ainference-profile%2Fus."
               "anthropic.claude-3-haiku-20240307-v1%3A0/invoke";
    req.body = arn_body;
    req.body_len = sizeof(arn_body) - 1;
    assert_int_equal(aiq_sigv4_sign(&req, &suite_creds, &out, NULL), 0);
    assert_string_equal(
        out.authorization,
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240501/us-west-2/bedrock/"
        "aws4_request, SignedHeaders=content-type;host;x-amz-date, "
        "Signature=56ced8bc8ae8bbffa0ab09b565033df5c7fd2bce4e5bf9453bc42721c92df1e7");
}

static void sigv4_encode_segment_model_ids(void **state)
{
    (void)state;
    char out[256];

    assert_int_equal(
        aiq_sigv4_encode_segment("anthropic.claude-3-haiku-20240307-v1:0", out, sizeof(out)), 40);
    assert_string_equal(out, "anthropic.claude-3-haiku-20240307-v1%3A0");
    int n = aiq_sigv4_encode_segment("arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
                                     "us.anthropic.claude-3-haiku-20240307-v1:0",
                                     out, sizeof(out));
    assert_string_equal(out, "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile"
                             "%2Fus.anthropic.claude-3-haiku-20240307-v1%3A0");
    assert_int_equal(n, (int)strlen(out));
    assert_int_equal(aiq_sigv4_encode_segment("a b%", out, sizeof(out)), 8);
    assert_string_equal(out, "a%20b%25");
    /* 40 bytes plus NUL do not fit in 40 */
    assert_int_equal(aiq_sigv4_encode_segment("anthropic.claude-3-haiku-20240307-v1:0", out, 40),
                     AIQ_ETOOBIG);
    assert_string_equal(out, "");
}

static void sigv4_rejects_bad_input(void **state)
{
    (void)state;
    aiq_sigv4_req_t req = bedrock_req();
    aiq_sigv4_out_t out;
    aiq_err_t err = {0};
    static char long_path[AIQ_SIGV4_PATH_MAX + 2];

    req.content_type = "application/json\r\nX-Evil: 1";
    assert_int_equal(aiq_sigv4_sign(&req, &suite_creds, &out, &err), AIQ_EINVAL);
    assert_int_equal(err.code, AIQ_EINVAL);
    req = bedrock_req();
    req.path = "model/x";
    assert_int_equal(aiq_sigv4_sign(&req, &suite_creds, &out, &err), AIQ_EINVAL);
    memset(long_path, 'a', sizeof(long_path) - 1);
    long_path[0] = '/';
    req.path = long_path;
    assert_int_equal(aiq_sigv4_sign(&req, &suite_creds, &out, &err), AIQ_ETOOBIG);
    req = bedrock_req();
    req.region = "us/east";
    assert_int_equal(aiq_sigv4_sign(&req, &suite_creds, &out, &err), AIQ_EINVAL);
    req = bedrock_req();
    aiq_sigv4_creds_t no_secret = {"AKID", NULL, NULL, NULL};
    assert_int_equal(aiq_sigv4_sign(&req, &no_secret, &out, &err), AIQ_EINVAL);
}

/* ---- verification ------------------------------------------------------------------------ */

#define MAX_TEST_HEADERS 8

typedef struct test_headers {
    const char *name[MAX_TEST_HEADERS];
    const char *value[MAX_TEST_HEADERS];
    int n;
} test_headers_t;

static const char *on_header(void *ctx, const char *name)
{
    test_headers_t *h = ctx;
    for (int i = 0; i < h->n; i++)
        if (!strcasecmp(h->name[i], name))
            return h->value[i];
    return NULL;
}

static void add_header(test_headers_t *h, const char *name, const char *value)
{
    assert_true(h->n < MAX_TEST_HEADERS);
    h->name[h->n] = name;
    h->value[h->n++] = value;
}

/* A signed Bedrock request, as a server would receive it. */
typedef struct fixture {
    aiq_sigv4_out_t out;
    test_headers_t headers;
    aiq_sigv4_verify_req_t vreq;
} fixture_t;

static void make_fixture(fixture_t *f, const aiq_sigv4_creds_t *creds)
{
    aiq_sigv4_req_t req = bedrock_req();

    memset(f, 0, sizeof(*f));
    assert_int_equal(aiq_sigv4_sign(&req, creds, &f->out, NULL), 0);
    add_header(&f->headers, "Host", req.host);
    add_header(&f->headers, "Content-Type", req.content_type);
    add_header(&f->headers, "X-Amz-Date", f->out.amz_date);
    add_header(&f->headers, "Authorization", f->out.authorization);
    if (creds->session_token)
        add_header(&f->headers, "X-Amz-Security-Token", creds->session_token);
    f->vreq = (aiq_sigv4_verify_req_t){.method = "POST",
                                       .path = req.path,
                                       .body = req.body,
                                       .body_len = req.body_len,
                                       .header = on_header,
                                       .header_ctx = &f->headers,
                                       .region = "us-east-1",
                                       .service = "bedrock",
                                       .now = req.now + 30,
                                       .creds = creds};
}

static void expect_rejected(const aiq_sigv4_verify_req_t *vreq, const char *reason)
{
    aiq_err_t err = {0};
    assert_int_equal(aiq_sigv4_verify(vreq, &err), AIQ_EINVAL);
    if (!strstr(err.msg, reason))
        print_error("reason '%s' lacks '%s'\n", err.msg, reason);
    assert_non_null(strstr(err.msg, reason));
}

static void sigv4_verify_round_trip(void **state)
{
    (void)state;
    fixture_t f;
    aiq_err_t err = {0};

    make_fixture(&f, &suite_creds);
    int rc = aiq_sigv4_verify(&f.vreq, &err);
    if (rc)
        print_error("verify: %s\n", err.msg);
    assert_int_equal(rc, 0);
    /* a correct x-amz-content-sha256 is fine too */
    add_header(&f.headers, "X-Amz-Content-Sha256", f.out.content_sha256);
    assert_int_equal(aiq_sigv4_verify(&f.vreq, &err), 0);
}

static void sigv4_verify_accepts_suite_signature(void **state)
{
    (void)state;
    /* post-x-www-form-urlencoded exactly as the suite publishes it: an independent signer. */
    test_headers_t h = {0};
    add_header(&h, "Content-Type", "application/x-www-form-urlencoded");
    add_header(&h, "Host", SUITE_HOST);
    add_header(&h, "X-Amz-Date", "20150830T123600Z");
    add_header(&h, "Authorization",
               SUITE_SCOPE
               "SignedHeaders=content-type;host;x-amz-date, "
               "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a");
    aiq_sigv4_verify_req_t v = {.method = "POST",
                                .path = "/",
                                .body = "Param1=value1",
                                .body_len = 13,
                                .header = on_header,
                                .header_ctx = &h,
                                .region = "us-east-1",
                                .service = "service",
                                .now = SUITE_NOW,
                                .creds = &suite_creds};
    assert_int_equal(aiq_sigv4_verify(&v, NULL), 0);
}

static void sigv4_verify_rejects_tampered_body(void **state)
{
    (void)state;
    fixture_t f;
    static const char tampered[] =
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"HI\"}]}]}";

    make_fixture(&f, &suite_creds);
    f.vreq.body = tampered;
    f.vreq.body_len = sizeof(tampered) - 1;
    expect_rejected(&f.vreq, "signature does not match");
    /* a content hash header that does not match the body is caught before the signature */
    make_fixture(&f, &suite_creds);
    add_header(&f.headers, "X-Amz-Content-Sha256",
               "0000000000000000000000000000000000000000000000000000000000000000");
    expect_rejected(&f.vreq, "X-Amz-Content-Sha256");
}

static void sigv4_verify_rejects_wrong_secret(void **state)
{
    (void)state;
    fixture_t f;
    aiq_sigv4_creds_t server = {SUITE_AKID, "not-the-secret", NULL, NULL};

    make_fixture(&f, &suite_creds);
    f.vreq.creds = &server;
    expect_rejected(&f.vreq, "signature does not match");
}

static void sigv4_verify_rejects_stale_date(void **state)
{
    (void)state;
    fixture_t f;
    aiq_err_t err = {0};

    make_fixture(&f, &suite_creds);
    f.vreq.now = bedrock_req().now + 14 * 60;
    assert_int_equal(aiq_sigv4_verify(&f.vreq, &err), 0);
    f.vreq.now = bedrock_req().now + 16 * 60;
    expect_rejected(&f.vreq, "expired");
    f.vreq.now = bedrock_req().now - 16 * 60;
    expect_rejected(&f.vreq, "expired");
    f.vreq.now = bedrock_req().now + 90;
    f.vreq.max_skew_s = 60;
    expect_rejected(&f.vreq, "expired");
}

static void sigv4_verify_rejects_missing_or_malformed(void **state)
{
    (void)state;
    fixture_t f;

    make_fixture(&f, &suite_creds);
    f.headers.name[3] = "X-Not-Authorization";
    expect_rejected(&f.vreq, "missing Authorization");

    make_fixture(&f, &suite_creds);
    f.headers.value[3] = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240501/us-east-1/bedrock";
    expect_rejected(&f.vreq, "malformed Credential");

    make_fixture(&f, &suite_creds);
    f.headers.value[3] = "Basic dXNlcjpwYXNz";
    expect_rejected(&f.vreq, "not AWS4-HMAC-SHA256");

    make_fixture(&f, &suite_creds);
    f.headers.name[2] = "X-Other-Date";
    expect_rejected(&f.vreq, "missing X-Amz-Date");

    make_fixture(&f, &suite_creds);
    f.headers.name[1] = "X-Other";
    expect_rejected(&f.vreq, "signed header content-type is missing");

    make_fixture(&f, &suite_creds);
    f.vreq.region = "eu-west-1";
    expect_rejected(&f.vreq, "credential scope");
}

static void sigv4_verify_rejects_unknown_key(void **state)
{
    (void)state;
    fixture_t f;
    aiq_sigv4_creds_t server = {"AKIDOTHER", SUITE_SECRET, NULL, NULL};

    make_fixture(&f, &suite_creds);
    f.vreq.creds = &server;
    expect_rejected(&f.vreq, "unknown access key");
}

static const aiq_sigv4_creds_t *on_lookup(void *ctx, const char *access_key)
{
    const aiq_sigv4_creds_t *keys = ctx;
    for (int i = 0; keys[i].access_key; i++)
        if (!strcmp(keys[i].access_key, access_key))
            return &keys[i];
    return NULL;
}

static void sigv4_verify_session_token_and_lookup(void **state)
{
    (void)state;
    aiq_sigv4_creds_t temp = {"ASIATEMP", "temp-secret", "token-123", NULL};
    aiq_sigv4_creds_t keys[] = {{"AKIDOTHER", "x", NULL, NULL}, temp, {NULL, NULL, NULL, NULL}};
    fixture_t f;

    make_fixture(&f, &temp);
    f.vreq.creds = NULL;
    f.vreq.lookup = on_lookup;
    f.vreq.lookup_ctx = keys;
    assert_int_equal(aiq_sigv4_verify(&f.vreq, NULL), 0);
    f.headers.value[4] = "token-456";
    expect_rejected(&f.vreq, "X-Amz-Security-Token");
}

/* Signs req with creds both without and with cache; the two must agree byte for byte. */
static void expect_same_with_cache(aiq_sigv4_req_t req, aiq_sigv4_creds_t creds,
                                   aiq_sigv4_cache_t *cache, aiq_sigv4_out_t *out)
{
    aiq_sigv4_out_t plain;
    aiq_err_t err = {0};

    creds.cache = NULL;
    assert_int_equal(aiq_sigv4_sign(&req, &creds, &plain, &err), 0);
    creds.cache = cache;
    assert_int_equal(aiq_sigv4_sign(&req, &creds, out, &err), 0);
    assert_string_equal(out->authorization, plain.authorization);
    assert_string_equal(out->amz_date, plain.amz_date);
}

/* The cached signing key must give the published signatures, and change with the day. */
static void sigv4_cache_same_signatures_across_a_date_change(void **state)
{
    (void)state;
    aiq_sigv4_cache_t *cache = aiq_sigv4_cache_new();
    aiq_sigv4_creds_t creds = suite_creds;
    aiq_sigv4_out_t out, day1;
    unsigned long long hits, misses;

    assert_non_null(cache);
    creds.cache = cache;
    aiq_sigv4_req_t vanilla = suite_req("POST", "/", NULL);
    expect_authz(&vanilla, &creds,
                 SUITE_SCOPE
                 "SignedHeaders=host;x-amz-date, "
                 "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
    expect_authz(&vanilla, &creds, /* now from the cache */
                 SUITE_SCOPE
                 "SignedHeaders=host;x-amz-date, "
                 "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
    aiq_sigv4_cache_stats(cache, &hits, &misses);
    assert_int_equal(misses, 1);
    assert_int_equal(hits, 1);

    /* 23:59:59 on one day, then the next second: a new scope date and a new key. */
    aiq_sigv4_req_t req = bedrock_req();
    req.now = 1714607999; /* 20240501T235959Z */
    expect_same_with_cache(req, creds, cache, &day1);
    assert_non_null(strstr(day1.authorization, "/20240501/us-east-1/bedrock/"));
    req.now++;
    expect_same_with_cache(req, creds, cache, &out);
    assert_non_null(strstr(out.authorization, "/20240502/us-east-1/bedrock/"));
    assert_string_not_equal(out.authorization, day1.authorization);
    req.now--; /* a late request of the old day still finds its own key */
    expect_same_with_cache(req, creds, cache, &out);
    assert_string_equal(out.authorization, day1.authorization);
    aiq_sigv4_cache_stats(cache, &hits, &misses);
    assert_int_equal(misses, 3);
    assert_int_equal(hits, 2);

    /* The botocore signature of the Bedrock request, through the cache. */
    req.now = 1714557600;
    expect_same_with_cache(req, creds, cache, &out);
    assert_string_equal(
        out.authorization,
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240501/us-east-1/bedrock/"
        "aws4_request, SignedHeaders=content-type;host;x-amz-date, "
        "Signature=9c6502078e992fb2b22550b4b3906d18ec7440067342930349fec464e69693b4");

    /* Temporary credentials on both sides of midnight; signatures from botocore 1.43
     * SigV4Auth with Credentials("ASIAEXAMPLE", "temp/secret+key", "session-token-example"). */
    aiq_sigv4_creds_t temp = {"ASIAEXAMPLE", "temp/secret+key", "session-token-example", cache};
    req.now = 1714607999; /* 20240501T235959Z */
    expect_same_with_cache(req, temp, cache, &out);
    assert_string_equal(
        out.authorization,
        "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20240501/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, "
        "Signature=fc17e794fd972b7ea1179e95199cefb2d984f2806190bfad34911424e36358fb");
    req.now++;
    expect_same_with_cache(req, temp, cache, &out);
    assert_string_equal(
        out.authorization,
        "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20240502/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, "
        "Signature=664fb61e450c566fe1720702197681bb7a8aaf54c5a22efceefd57bfd60d0aad");
    aiq_sigv4_cache_free(cache);
}

/* One cache serves several credentials and scopes: a key is never used for another secret,
 * region or service, and more scopes than slots only cost re-derivation. */
static void sigv4_cache_keeps_credentials_and_scopes_apart(void **state)
{
    (void)state;
    aiq_sigv4_cache_t *cache = aiq_sigv4_cache_new();
    aiq_sigv4_creds_t a = {"AKIDA", "secret-a", NULL, NULL};
    aiq_sigv4_creds_t b = {"AKIDB", "secret-a-but-longer", "token-b", NULL};
    aiq_sigv4_creds_t c = {"AKIDC", "secret-c", NULL, NULL}; /* same length as a's */
    static const char *const regions[] = {"us-east-1", "us-west-2", "eu-central-1",
                                          "ap-southeast-2", "us-east-2"};
    aiq_sigv4_out_t out;

    for (int round = 0; round < 3; round++) {
        for (size_t r = 0; r < sizeof(regions) / sizeof(regions[0]); r++) {
            aiq_sigv4_req_t req = bedrock_req();
            req.region = regions[r];
            expect_same_with_cache(req, a, cache, &out);
            expect_same_with_cache(req, b, cache, &out);
            expect_same_with_cache(req, c, cache, &out);
            req.service = "sts";
            expect_same_with_cache(req, a, cache, &out);
        }
    }
    unsigned long long hits, misses;
    aiq_sigv4_cache_stats(cache, &hits, &misses);
    assert_int_equal(hits + misses, 3 * 5 * 4);
    aiq_sigv4_cache_free(cache);
    aiq_sigv4_cache_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sigv4_get_vanilla),
        cmocka_unit_test(sigv4_post_vanilla),
        cmocka_unit_test(sigv4_post_x_www_form_urlencoded),
        cmocka_unit_test(sigv4_post_sts_header_before),
        cmocka_unit_test(sigv4_query_sorted_and_encoded),
        cmocka_unit_test(sigv4_path_normalised_like_the_suite),
        cmocka_unit_test(sigv4_double_encodes_wire_path),
        cmocka_unit_test(sigv4_encode_segment_model_ids),
        cmocka_unit_test(sigv4_rejects_bad_input),
        cmocka_unit_test(sigv4_verify_round_trip),
        cmocka_unit_test(sigv4_verify_accepts_suite_signature),
        cmocka_unit_test(sigv4_verify_rejects_tampered_body),
        cmocka_unit_test(sigv4_verify_rejects_wrong_secret),
        cmocka_unit_test(sigv4_verify_rejects_stale_date),
        cmocka_unit_test(sigv4_verify_rejects_missing_or_malformed),
        cmocka_unit_test(sigv4_verify_rejects_unknown_key),
        cmocka_unit_test(sigv4_verify_session_token_and_lookup),
        cmocka_unit_test(sigv4_cache_same_signatures_across_a_date_change),
        cmocka_unit_test(sigv4_cache_keeps_credentials_and_scopes_apart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
