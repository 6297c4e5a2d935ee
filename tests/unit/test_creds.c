/* test_creds.c — the AWS credentials chain: each source, the STS / container / INI parsers, the
 * refresh schedule with an injected clock against a local HTTP server, and no secret in logs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "creds.h"
#include "timeutil.h"

/* ---- fakes: environment, clock, log capture ------------------------------------------------ */

typedef struct fake_env {
    const char *kv[32]; /* name, value, name, value, ..., NULL */
} fake_env_t;

static const char *on_getenv(void *ctx, const char *name)
{
    const fake_env_t *e = ctx;
    for (int i = 0; e->kv[i]; i += 2)
        if (!strcmp(e->kv[i], name))
            return e->kv[i + 1];
    return NULL;
}

static int64_t on_clock(void *ctx)
{
    return *(int64_t *)ctx;
}

/* Redirects stderr (where aiq_log writes) into a temporary file. */
typedef struct capture {
    int saved;
    char path[64];
} capture_t;

/* The capture in progress: a failing assertion leaves its test early, and the teardown then
 * puts stderr back and shows what was logged, so the failure message is not swallowed. */
static capture_t *active_capture;

static void capture_begin(capture_t *c)
{
    active_capture = c;
    snprintf(c->path, sizeof(c->path), "/tmp/test_creds_log.XXXXXX");
    int fd = mkstemp(c->path);
    assert_true(fd >= 0);
    fflush(stderr);
    c->saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
}

/* Returns what was logged (caller frees). */
static char *capture_end(capture_t *c)
{
    active_capture = NULL;
    fflush(stderr);
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    FILE *f = fopen(c->path, "r");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(c->path);
    return buf;
}

static void assert_absent(const char *log, const char *secret)
{
    if (strstr(log, secret))
        fail_msg("secret '%s' appears in the log:\n%s", secret, log);
}

static aiq_creds_conf_t conf_with(fake_env_t *env)
{
    return (aiq_creds_conf_t){.region = "us-east-1", .getenv = on_getenv, .env_ctx = env};
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* ---- a tiny HTTP server on its own thread --------------------------------------------------- */

typedef struct srv {
    int fd, port;
    pthread_t th;
    pthread_mutex_t mu;
    int stop;
    int status;        /* next answer */
    char answer[8192]; /* next body */
    int hits;          /* requests served */
    char method[8];    /* of the last request */
    char auth[256];    /* its Authorization header, "" when none */
    char body[8192];   /* its body */
} srv_t;

static void srv_answer(srv_t *s, int status, const char *body)
{
    pthread_mutex_lock(&s->mu);
    s->status = status;
    snprintf(s->answer, sizeof(s->answer), "%s", body);
    pthread_mutex_unlock(&s->mu);
}

static int srv_hits(srv_t *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->hits;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void srv_header(const char *req, const char *name, char *out, size_t cap)
{
    const char *p = strstr(req, name);
    out[0] = '\0';
    if (!p)
        return;
    p += strlen(name);
    size_t n = strcspn(p, "\r\n");
    snprintf(out, cap, "%.*s", (int)n, p);
}

static void srv_serve(srv_t *s, int cfd)
{
    char req[16384];
    size_t n = 0;
    char *eoh = NULL;
    long clen = 0;
    for (;;) {
        ssize_t r = read(cfd, req + n, sizeof(req) - 1 - n);
        if (r <= 0)
            return;
        n += (size_t)r;
        req[n] = '\0';
        if (!eoh && (eoh = strstr(req, "\r\n\r\n"))) {
            char cl[32];
            srv_header(req, "\r\nContent-Length: ", cl, sizeof(cl));
            clen = strtol(cl, NULL, 10);
        }
        if (eoh && (long)(n - (size_t)(eoh + 4 - req)) >= clen)
            break;
    }
    char out[9000];
    pthread_mutex_lock(&s->mu);
    s->hits++;
    snprintf(s->method, sizeof(s->method), "%.*s", (int)strcspn(req, " "), req);
    srv_header(req, "\r\nAuthorization: ", s->auth, sizeof(s->auth));
    snprintf(s->body, sizeof(s->body), "%s", eoh + 4);
    int len = snprintf(out, sizeof(out),
                       "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                       s->status, strlen(s->answer), s->answer);
    pthread_mutex_unlock(&s->mu);
    assert_true(write(cfd, out, (size_t)len) == len);
}

static void *srv_main(void *arg)
{
    srv_t *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            return NULL;
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 20) != 1)
            continue;
        int cfd = accept(s->fd, NULL, NULL);
        if (cfd < 0)
            continue;
        srv_serve(s, cfd);
        close(cfd);
    }
}

static void srv_start(srv_t *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->fd, 16), 0);
    getsockname(s->fd, (struct sockaddr *)&a, &alen);
    s->port = ntohs(a.sin_port);
    pthread_create(&s->th, NULL, srv_main, s);
}

static void srv_stop(srv_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    close(s->fd);
    pthread_mutex_destroy(&s->mu);
}

/* ---- running the loop until something happened ---------------------------------------------- */

typedef struct wait_ctx {
    bool (*done)(void *arg);
    void *arg;
    int64_t deadline;
} wait_ctx_t;

static void on_wait_tick(uv_timer_t *t)
{
    wait_ctx_t *w = t->data;
    if (w->done(w->arg) || aiq_mono_ms() > w->deadline)
        uv_stop(t->loop);
}

static void run_until(uv_loop_t *loop, bool (*done)(void *), void *arg)
{
    wait_ctx_t w = {done, arg, aiq_mono_ms() + 10000};
    uv_timer_t t;
    uv_timer_init(loop, &t);
    t.data = &w;
    uv_timer_start(&t, on_wait_tick, 5, 5);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    assert_true(done(arg));
}

static bool refreshes_at_least_1(void *arg)
{
    aiq_creds_stats_t st;
    aiq_creds_stats(arg, &st);
    return st.refreshes >= 1;
}

static bool failures_at_least_1(void *arg)
{
    aiq_creds_stats_t st;
    aiq_creds_stats(arg, &st);
    return st.failures >= 1;
}

static void close_all(uv_loop_t *loop, aiq_creds_t *c, aiq_http_t *http)
{
    aiq_creds_free(c);
    aiq_http_close(http);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* ---- environment ------------------------------------------------------------------------------
 */

static void creds_env_source(void **state)
{
    (void)state;
    fake_env_t env = {{"AWS_ACCESS_KEY_ID", "AKIDENVIRONMENT1", "AWS_SECRET_ACCESS_KEY",
                       "env-secret-value", "AWS_SESSION_TOKEN", "env-session-token", NULL}};
    aiq_creds_conf_t conf = conf_with(&env);
    aiq_creds_t *c = NULL;
    aiq_err_t err = {0};
    capture_t cap;

    capture_begin(&cap);
    int rc = aiq_creds_new(&c, NULL, NULL, NULL, &conf, &err);
    char *log = capture_end(&cap);
    assert_int_equal(rc, 0);
    assert_string_equal(aiq_creds_source(c), "environment");
    aiq_sigv4_creds_t sc;
    assert_int_equal(aiq_creds_get(c, &sc, &err), 0);
    assert_string_equal(sc.access_key, "AKIDENVIRONMENT1");
    assert_string_equal(sc.secret_key, "env-secret-value");
    assert_string_equal(sc.session_token, "env-session-token");
    assert_non_null(sc.cache);
    aiq_creds_stats_t st;
    aiq_creds_stats(c, &st);
    assert_int_equal(st.expires_ms, 0);
    assert_int_equal(st.next_refresh_ms, 0);
    assert_non_null(strstr(log, "source=environment"));
    assert_non_null(strstr(log, "key_id=AKID..."));
    assert_absent(log, "AKIDENVIRONMENT1");
    assert_absent(log, "env-secret-value");
    assert_absent(log, "env-session-token");
    free(log);
    aiq_creds_free(c);

    /* Half a pair is a broken configuration, not a reason to look further. */
    fake_env_t half = {{"AWS_SECRET_ACCESS_KEY", "lonely-secret", "HOME", "/nonexistent", NULL}};
    conf = conf_with(&half);
    assert_int_equal(aiq_creds_new(&c, NULL, NULL, NULL, &conf, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "AWS_ACCESS_KEY_ID"));
    assert_null(strstr(err.msg, "lonely-secret"));
}

static void creds_nothing_found_lists_sources(void **state)
{
    (void)state;
    fake_env_t env = {{"HOME", "/nonexistent-home", NULL}};
    aiq_creds_conf_t conf = conf_with(&env);
    aiq_creds_t *c = NULL;
    aiq_err_t err = {0};

    assert_int_equal(aiq_creds_new(&c, NULL, NULL, NULL, &conf, &err), AIQ_ENOTFOUND);
    assert_null(c);
    assert_non_null(strstr(err.msg, "no AWS credentials"));
    assert_non_null(strstr(err.msg, "environment (AWS_ACCESS_KEY_ID unset)"));
    assert_non_null(strstr(err.msg, "web identity (AWS_ROLE_ARN unset)"));
    assert_non_null(strstr(err.msg, "container ("));
    assert_non_null(strstr(err.msg, "/nonexistent-home/.aws/credentials not found"));
}

/* ---- shared credentials file ------------------------------------------------------------------
 */

static const char shared_text[] = "# a comment\n"
                                  "; another comment\n"
                                  "\n"
                                  "[default]\n"
                                  "aws_access_key_id = AKIDDEFAULT\n"
                                  "aws_secret_access_key=secret/default+x   \r\n"
                                  "   aws_session_token =  token-default\n"
                                  "\n"
                                  "[ named ]\n"
                                  "AWS_ACCESS_KEY_ID = AKIDNAMED\n"
                                  "\taws_secret_access_key = secret-named\n"
                                  "[role]\n"
                                  "role_arn = arn:aws:iam::123456789012:role/x\n"
                                  "source_profile = default\n"
                                  "[broken]\n"
                                  "aws_access_key_id AKIDBROKEN\n";

static void creds_shared_file_profiles(void **state)
{
    (void)state;
    aiq_creds_value_t v;
    aiq_err_t err = {0};
    size_t len = sizeof(shared_text) - 1;

    assert_int_equal(aiq_creds_parse_shared(shared_text, len, "default", &v, &err), 0);
    assert_string_equal(v.access_key, "AKIDDEFAULT");
    assert_string_equal(v.secret_key, "secret/default+x");
    assert_string_equal(v.session_token, "token-default");
    assert_int_equal(v.expires_ms, 0);

    assert_int_equal(aiq_creds_parse_shared(shared_text, len, "named", &v, &err), 0);
    assert_string_equal(v.access_key, "AKIDNAMED");
    assert_string_equal(v.secret_key, "secret-named");
    assert_string_equal(v.session_token, "");

    assert_int_equal(aiq_creds_parse_shared(shared_text, len, "missing", &v, &err), AIQ_ENOTFOUND);
    assert_non_null(strstr(err.msg, "[missing]"));

    assert_int_equal(aiq_creds_parse_shared(shared_text, len, "role", &v, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "does not support"));
    assert_non_null(strstr(err.msg, "aws_access_key_id"));

    assert_int_equal(aiq_creds_parse_shared(shared_text, len, "broken", &v, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "line 16"));

    static const char bad_header[] = "[default\naws_access_key_id = A\n";
    assert_int_equal(
        aiq_creds_parse_shared(bad_header, sizeof(bad_header) - 1, "default", &v, &err),
        AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "line 1"));
}

static void creds_shared_file_through_the_chain(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_creds_home.XXXXXX", aws[128], path[160];
    assert_non_null(mkdtemp(dir));
    snprintf(aws, sizeof(aws), "%s/.aws", dir);
    mkdir(aws, 0700);
    snprintf(path, sizeof(path), "%s/credentials", aws);
    write_file(path, shared_text);
    aiq_creds_t *c = NULL;
    aiq_err_t err = {0};
    aiq_sigv4_creds_t sc;

    fake_env_t home = {{"HOME", dir, NULL}};
    aiq_creds_conf_t conf = conf_with(&home);
    assert_int_equal(aiq_creds_new(&c, NULL, NULL, NULL, &conf, &err), 0);
    assert_string_equal(aiq_creds_source(c), "shared_file");
    assert_int_equal(aiq_creds_get(c, &sc, &err), 0);
    assert_string_equal(sc.access_key, "AKIDDEFAULT");
    assert_string_equal(sc.session_token, "token-default");
    aiq_creds_free(c);

    fake_env_t named = {{"AWS_SHARED_CREDENTIALS_FILE", path, "AWS_PROFILE", "named", NULL}};
    conf = conf_with(&named);
    assert_int_equal(aiq_creds_new(&c, NULL, NULL, NULL, &conf, &err), 0);
    assert_int_equal(aiq_creds_get(c, &sc, &err), 0);
    assert_string_equal(sc.access_key, "AKIDNAMED");
    assert_null(sc.session_token);
    aiq_creds_free(c);

    /* A profile asked for by name must exist. */
    fake_env_t missing = {{"HOME", dir, "AWS_PROFILE", "nope", NULL}};
    conf = conf_with(&missing);
    assert_int_equal(aiq_creds_new(&c, NULL, NULL, NULL, &conf, &err), AIQ_ENOTFOUND);
    assert_non_null(strstr(err.msg, "[nope]"));
    assert_non_null(strstr(err.msg, "AWS_PROFILE"));

    /* So must a file named explicitly. */
    fake_env_t nofile = {{"AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/creds", NULL}};
    conf = conf_with(&nofile);
    assert_int_equal(aiq_creds_new(&c, NULL, NULL, NULL, &conf, &err), AIQ_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent/creds"));

    unlink(path);
    rmdir(aws);
    rmdir(dir);
}

/* ---- STS XML ----------------------------------------------------------------------------------
 */

#define STS_OK(key, secret, token, exp)                                                            \
    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"    \
    "  <AssumeRoleWithWebIdentityResult>\n"                                                        \
    "    <SubjectFromWebIdentityToken>system:serviceaccount:aiq:worker</"                          \
    "SubjectFromWebIdentityToken>\n"                                                               \
    "    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/aiq/s</Arn>"                 \
    "<AssumedRoleId>AROAEXAMPLE:s</AssumedRoleId></AssumedRoleUser>\n"                             \
    "    <Credentials>\n"                                                                          \
    "      <SessionToken>" token "</SessionToken>\n"                                               \
    "      <SecretAccessKey>" secret "</SecretAccessKey>\n"                                        \
    "      <Expiration>" exp "</Expiration>\n"                                                     \
    "      <AccessKeyId>" key "</AccessKeyId>\n"                                                   \
    "    </Credentials>\n"                                                                         \
    "  </AssumeRoleWithWebIdentityResult>\n"                                                       \
    "  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>"              \
    "</ResponseMetadata>\n"                                                                        \
    "</AssumeRoleWithWebIdentityResponse>\n"

static int parse_sts(const char *doc, aiq_creds_value_t *v, aiq_err_t *err)
{
    return aiq_creds_parse_sts(doc, strlen(doc), v, err);
}

static void creds_sts_parse(void **state)
{
    (void)state;
    aiq_creds_value_t v;
    aiq_err_t err = {0};

    assert_int_equal(parse_sts(STS_OK("ASIASTS", "sts/secret+1", "tok&amp;en&#61;&#x3D;",
                                      "2024-05-01T12:00:00Z"),
                               &v, &err),
                     0);
    assert_string_equal(v.access_key, "ASIASTS");
    assert_string_equal(v.secret_key, "sts/secret+1");
    assert_string_equal(v.session_token, "tok&en==");
    int64_t want;
    assert_int_equal(aiq_time_parse("2024-05-01T12:00:00Z", &want), 0);
    assert_int_equal(v.expires_ms, want);

    static const char error_doc[] =
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
        "  <Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>\n"
        "    <Message>Couldn&apos;t retrieve verification key from your identity provider"
        "</Message></Error>\n"
        "  <RequestId>x</RequestId>\n</ErrorResponse>\n";
    assert_int_equal(parse_sts(error_doc, &v, &err), AIQ_EINVAL);
    assert_string_equal(err.msg, "STS error InvalidIdentityToken: Couldn't retrieve "
                                 "verification key from your identity provider");

    assert_int_equal(parse_sts(STS_OK("ASIA", "s", "", "2024-05-01T12:00:00Z"), &v, &err),
                     AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "<SessionToken> is empty"));
    static const char no_token[] =
        "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>"
        "<AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey>"
        "<Expiration>2024-05-01T12:00:00Z</Expiration></Credentials>"
        "</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
    assert_int_equal(parse_sts(no_token, &v, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "<SessionToken> missing"));
    assert_string_equal(v.access_key, ""); /* nothing half-filled is left behind */

    assert_int_equal(
        parse_sts(STS_OK("A</AccessKeyId><AccessKeyId>B", "s", "t", "2024-05-01T12:00:00Z"), &v,
                  &err),
        AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "<AccessKeyId> repeated"));
    assert_int_equal(parse_sts(STS_OK("A", "s", "t", "tomorrow"), &v, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "Expiration"));
    assert_int_equal(parse_sts(STS_OK("A", "s<x/>", "t", "2024-05-01T12:00:00Z"), &v, &err),
                     AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "markup in <SecretAccessKey>"));
    assert_int_equal(parse_sts("<html>Service Unavailable</html>", &v, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "not an AssumeRoleWithWebIdentityResponse"));
}

/* ---- container JSON ---------------------------------------------------------------------------
 */

static int parse_container(const char *doc, aiq_creds_value_t *v, aiq_err_t *err)
{
    return aiq_creds_parse_container(doc, strlen(doc), v, err);
}

static void creds_container_parse(void **state)
{
    (void)state;
    aiq_creds_value_t v;
    aiq_err_t err = {0};

    assert_int_equal(parse_container("{\"AccessKeyId\":\"ASIAC\",\"SecretAccessKey\":\"c/s\","
                                     "\"Token\":\"ctok\",\"Expiration\":\"2024-05-01T12:00:00Z\","
                                     "\"RoleArn\":\"arn:aws:iam::1:role/x\"}",
                                     &v, &err),
                     0);
    assert_string_equal(v.access_key, "ASIAC");
    assert_string_equal(v.secret_key, "c/s");
    assert_string_equal(v.session_token, "ctok");
    assert_true(v.expires_ms > 0);

    assert_int_equal(parse_container("{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\","
                                     "\"Expiration\":\"2024-05-01T12:00:00.5+02:00\"}",
                                     &v, &err),
                     0);
    assert_string_equal(v.session_token, "");

    assert_int_equal(
        parse_container("{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"T\"}", &v,
                        &err),
        AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "Expiration missing"));
    assert_int_equal(parse_container("{\"AccessKeyId\":7,\"SecretAccessKey\":\"S\"}", &v, &err),
                     AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "AccessKeyId is not a string"));
    assert_int_equal(
        parse_container("{\"code\":\"AccessDenied\",\"message\":\"token rejected\"}", &v, &err),
        AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "AccessDenied: token rejected"));
    assert_int_equal(parse_container("not json", &v, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "not a JSON object"));
    assert_int_equal(parse_container("{\"AccessKeyId\":\"A\",\"AccessKeyId\":\"B\"}", &v, &err),
                     AIQ_EINVAL);
}

/* ---- refresh schedule -------------------------------------------------------------------------
 */

static void creds_refresh_delay(void **state)
{
    (void)state;
    const int64_t now = 1714557600000, min = 5000, margin = 300000;
    /* An hour left: half-life (30 min) comes before 5 minutes ahead (55 min). */
    assert_int_equal(aiq_creds_refresh_delay_ms(now, now + 3600000, margin, min), 1800000);
    /* Eight minutes left: 5 minutes ahead (in 3 min) is sooner than half-life (4 min). */
    assert_int_equal(aiq_creds_refresh_delay_ms(now, now + 480000, margin, min), 180000);
    /* 70 s left with a 65 s margin: in 5 s. */
    assert_int_equal(aiq_creds_refresh_delay_ms(now, now + 70000, 65000, 1000), 5000);
    /* Already inside the margin: not sooner than the minimum spacing. */
    assert_int_equal(aiq_creds_refresh_delay_ms(now, now + 60000, margin, min), min);
    assert_int_equal(aiq_creds_refresh_delay_ms(now, now - 1, margin, min), min);
    assert_int_equal(aiq_creds_refresh_delay_ms(now, 0, margin, min), -1);
}

/* ---- container source, refreshed on the loop with an injected clock ---------------------------
 */

static void container_json(char *out, size_t cap, const char *key, int64_t expires_ms)
{
    char ts[32];
    aiq_time_format(expires_ms, ts, sizeof(ts));
    snprintf(out, cap,
             "{\"AccessKeyId\":\"%s\",\"SecretAccessKey\":\"container-secret-%s\","
             "\"Token\":\"container-token-%s\",\"Expiration\":\"%s\"}",
             key, key, key, ts);
}

static void creds_container_refresh_with_injected_clock(void **state)
{
    (void)state;
    srv_t srv;
    srv_start(&srv);
    char url[128], tokfile[] = "/tmp/test_creds_auth.XXXXXX", body[1024];
    int tfd = mkstemp(tokfile);
    assert_true(tfd >= 0);
    close(tfd);
    write_file(tokfile, "auth-token-one\n");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/credentials", srv.port);
    int64_t now = 1714557600000; /* the fake wall clock */
    container_json(body, sizeof(body), "ASIAFIRST", now + 70000);
    srv_answer(&srv, 200, body);

    fake_env_t env = {{"AWS_CONTAINER_CREDENTIALS_FULL_URI", url,
                       "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tokfile,
                       "AWS_CONTAINER_AUTHORIZATION_TOKEN", "ignored-token", NULL}};
    aiq_creds_conf_t conf = conf_with(&env);
    conf.refresh_margin_ms = 69900; /* 70 s left → refresh in 100 ms */
    conf.min_refresh_ms = 50;
    conf.retry_base_ms = 50;
    conf.now_ms = on_clock;
    conf.clock_ctx = &now;

    uv_loop_t loop;
    uv_loop_init(&loop);
    aiq_http_t *http = NULL;
    aiq_creds_t *c = NULL;
    aiq_err_t err = {0};
    aiq_sigv4_creds_t sc;
    aiq_creds_stats_t st;
    capture_t cap;
    capture_begin(&cap);
    assert_int_equal(aiq_http_new(&http, &loop, NULL, &err), 0);
    assert_int_equal(aiq_creds_new(&c, &loop, http, NULL, &conf, &err), 0);

    /* Start-up fetched once, blocking, with the token from the file. */
    assert_int_equal(srv_hits(&srv), 1);
    assert_string_equal(srv.method, "GET");
    assert_string_equal(srv.auth, "auth-token-one");
    assert_string_equal(aiq_creds_source(c), "container");
    assert_int_equal(aiq_creds_get(c, &sc, &err), 0);
    assert_string_equal(sc.access_key, "ASIAFIRST");
    assert_string_equal(sc.session_token, "container-token-ASIAFIRST");
    aiq_creds_stats(c, &st);
    assert_int_equal(st.expires_ms, now + 70000);
    assert_int_equal(st.next_refresh_ms, now + 100);

    /* The endpoint fails: the old credentials stay in use until they expire. */
    srv_answer(&srv, 500, "{\"code\":\"InternalError\",\"message\":\"agent restarting\"}");
    run_until(&loop, failures_at_least_1, c);
    assert_int_equal(aiq_creds_get(c, &sc, &err), 0);
    assert_string_equal(sc.access_key, "ASIAFIRST");
    now += 70000 - AIQ_CREDS_EXPIRY_SLACK_MS; /* now within the slack of expiry */
    assert_int_equal(aiq_creds_get(c, &sc, &err), AIQ_ETIMEDOUT);
    assert_non_null(strstr(err.msg, "expired"));
    assert_non_null(strstr(err.msg, "HTTP 500"));
    assert_non_null(strstr(err.msg, "agent restarting"));

    /* The endpoint recovers, with a rotated authorization token. */
    write_file(tokfile, "auth-token-two");
    container_json(body, sizeof(body), "ASIASECOND", now + 3600000);
    srv_answer(&srv, 200, body);
    run_until(&loop, refreshes_at_least_1, c);
    assert_string_equal(srv.auth, "auth-token-two");
    assert_int_equal(aiq_creds_get(c, &sc, &err), 0);
    assert_string_equal(sc.access_key, "ASIASECOND");
    assert_string_equal(sc.secret_key, "container-secret-ASIASECOND");
    aiq_creds_stats(c, &st);
    assert_true(st.failures >= 1);
    assert_int_equal(st.refreshes, 1);
    assert_int_equal(st.expires_ms, now + 3600000);
    assert_int_equal(st.next_refresh_ms, now + 1800000); /* half of the hour left */

    close_all(&loop, c, http);
    char *log = capture_end(&cap);
    assert_non_null(strstr(log, "refresh from container failed"));
    assert_non_null(strstr(log, "key_id=ASIA..."));
    assert_absent(log, "ASIAFIRST");
    assert_absent(log, "ASIASECOND");
    assert_absent(log, "container-secret");
    assert_absent(log, "container-token");
    assert_absent(log, "auth-token");
    free(log);
    srv_stop(&srv);
    unlink(tokfile);
}

/* ---- web identity through a local STS ---------------------------------------------------------
 */

static void sts_doc(char *out, size_t cap, const char *key, int64_t expires_ms)
{
    char ts[32];
    aiq_time_format(expires_ms, ts, sizeof(ts));
    /* The document's order: token, secret, expiration, key. */
    snprintf(out, cap, STS_OK("%s", "sts-secret-%s", "sts-token-%s", "%s"), key, key, ts, key);
}

static void creds_web_identity_through_sts(void **state)
{
    (void)state;
    srv_t srv;
    srv_start(&srv);
    char url[128], tokfile[] = "/tmp/test_creds_jwt.XXXXXX", body[4096];
    int tfd = mkstemp(tokfile);
    assert_true(tfd >= 0);
    close(tfd);
    write_file(tokfile, "eyJ.first.jwt\n");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", srv.port);
    int64_t now = aiq_now_ms();
    sts_doc(body, sizeof(body), "ASIAWEBONE", now + 70000);
    srv_answer(&srv, 200, body);

    fake_env_t env = {{"AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/aiq",
                       "AWS_WEB_IDENTITY_TOKEN_FILE", tokfile, "AWS_ENDPOINT_URL_STS", url, NULL}};
    aiq_creds_conf_t conf = conf_with(&env);
    conf.session_name = "aiq-w1 pod/7"; /* sanitised to STS's character set */
    conf.refresh_margin_ms = 69950;
    conf.min_refresh_ms = 50;
    conf.now_ms = on_clock;
    conf.clock_ctx = &now;

    uv_loop_t loop;
    uv_loop_init(&loop);
    aiq_http_t *http = NULL;
    aiq_creds_t *c = NULL;
    aiq_err_t err = {0};
    aiq_sigv4_creds_t sc;
    capture_t cap;
    capture_begin(&cap);
    assert_int_equal(aiq_http_new(&http, &loop, NULL, &err), 0);
    int rc = aiq_creds_new(&c, &loop, http, NULL, &conf, &err);
    if (rc)
        fail_msg("aiq_creds_new: %s", err.msg);
    assert_string_equal(aiq_creds_source(c), "web_identity");
    assert_string_equal(srv.method, "POST");
    assert_string_equal(srv.body, "Action=AssumeRoleWithWebIdentity&Version=2011-06-15"
                                  "&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Faiq"
                                  "&RoleSessionName=aiq-w1-pod-7&WebIdentityToken=eyJ.first.jwt");
    assert_int_equal(aiq_creds_get(c, &sc, &err), 0);
    assert_string_equal(sc.access_key, "ASIAWEBONE");
    assert_string_equal(sc.session_token, "sts-token-ASIAWEBONE");

    /* The token file rotates; the refresh sends the new one. */
    write_file(tokfile, "eyJ.second.jwt");
    sts_doc(body, sizeof(body), "ASIAWEBTWO", now + 3600000);
    srv_answer(&srv, 200, body);
    run_until(&loop, refreshes_at_least_1, c);
    assert_non_null(strstr(srv.body, "&WebIdentityToken=eyJ.second.jwt"));
    assert_int_equal(aiq_creds_get(c, &sc, &err), 0);
    assert_string_equal(sc.access_key, "ASIAWEBTWO");
    assert_int_equal(srv_hits(&srv), 2);

    close_all(&loop, c, http);
    char *log = capture_end(&cap);
    assert_non_null(strstr(log, "source=web_identity"));
    assert_absent(log, "sts-secret");
    assert_absent(log, "sts-token");
    assert_absent(log, "eyJ.");
    free(log);

    /* An STS refusal at start-up fails the start with STS's own words. */
    srv_answer(&srv, 400,
               "<ErrorResponse><Error><Code>AccessDenied</Code><Message>Not authorized to "
               "perform sts:AssumeRoleWithWebIdentity</Message></Error></ErrorResponse>");
    uv_loop_init(&loop);
    assert_int_equal(aiq_http_new(&http, &loop, NULL, &err), 0);
    assert_int_equal(aiq_creds_new(&c, &loop, http, NULL, &conf, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "HTTP 400: STS error AccessDenied: Not authorized"));
    assert_int_equal(srv_hits(&srv), 3); /* a 4xx is not retried */

    /* A configured source that is broken is an error naming it, not a fall-through. */
    fake_env_t no_file = {{"AWS_ROLE_ARN", "arn:aws:iam::1:role/r", "AWS_WEB_IDENTITY_TOKEN_FILE",
                           "/nonexistent/token", NULL}};
    conf = conf_with(&no_file);
    assert_int_equal(aiq_creds_new(&c, &loop, http, NULL, &conf, &err), AIQ_EIO);
    assert_non_null(strstr(err.msg, "AWS_WEB_IDENTITY_TOKEN_FILE=/nonexistent/token"));
    fake_env_t half = {{"AWS_ROLE_ARN", "arn:aws:iam::1:role/r", NULL}};
    conf = conf_with(&half);
    assert_int_equal(aiq_creds_new(&c, &loop, http, NULL, &conf, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "AWS_WEB_IDENTITY_TOKEN_FILE is not"));
    fake_env_t remote = {
        {"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://creds.example.com/x", NULL}};
    conf = conf_with(&remote);
    assert_int_equal(aiq_creds_new(&c, &loop, http, NULL, &conf, &err), AIQ_EINVAL);
    assert_non_null(strstr(err.msg, "must be https"));
    aiq_http_close(http);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);

    srv_stop(&srv);
    unlink(tokfile);
}

static int restore_stderr(void **state)
{
    (void)state;
    if (active_capture) {
        char *log = capture_end(active_capture);
        fprintf(stderr, "--- captured while the test failed:\n%s", log);
        free(log);
    }
    return 0;
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(creds_env_source, restore_stderr),
        cmocka_unit_test_teardown(creds_nothing_found_lists_sources, restore_stderr),
        cmocka_unit_test_teardown(creds_shared_file_profiles, restore_stderr),
        cmocka_unit_test_teardown(creds_shared_file_through_the_chain, restore_stderr),
        cmocka_unit_test_teardown(creds_sts_parse, restore_stderr),
        cmocka_unit_test_teardown(creds_container_parse, restore_stderr),
        cmocka_unit_test_teardown(creds_refresh_delay, restore_stderr),
        cmocka_unit_test_teardown(creds_container_refresh_with_injected_clock, restore_stderr),
        cmocka_unit_test_teardown(creds_web_identity_through_sts, restore_stderr),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
