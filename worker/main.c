/* aiq-worker: consumes AI jobs from the priority topics and publishes their results.
 * main only wires configuration, logger and loop; the worker owns everything else. */
#include "config.h"
#include "log.h"
#include "worker.h"

#include <librdkafka/rdkafka.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: aiq-worker [options]\n\n"
            "Consumes jobs from <prefix>jobs.{critical,high,normal,low} as consumer group\n"
            "kafka.group_id, calls Amazon Bedrock (or bedrock-sim) for each, and publishes\n"
            "one result per job to its reply_to topic (default <prefix>results). Records that\n"
            "are not valid jobs go to <prefix>dlq with the reason in headers.\n"
            "AWS credentials come from the standard chain, first match wins:\n"
            "  1. AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN)\n"
            "  2. web identity: AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE (EKS IRSA)\n"
            "  3. container: AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI with\n"
            "     AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE) (EKS Pod Identity, ECS)\n"
            "  4. AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile AWS_PROFILE\n"
            "Temporary credentials are refreshed before they expire. The region comes\n"
            "from AWS_REGION unless bedrock.region is set.\n"
            "SIGTERM/SIGINT drain (finish in-flight jobs, commit, leave); a second one exits.\n\n"
            "Options:\n"
            "  -c, --config FILE     read settings from FILE ('key = value' lines)\n"
            "  -s, --set KEY=VALUE   set one setting (repeatable; wins over file and env)\n"
            "      --print-config    print the effective settings and exit\n"
            "  -h, --help            this help\n"
            "  -V, --version         print the version\n\n");
    aiq_config_print_help(out, AIQ_CFG_WORKER);
}

static int apply_sets(aiq_config_t *cfg, int argc, char **argv, aiq_err_t *err)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-s") && strcmp(argv[i], "--set"))
            continue;
        if (i + 1 >= argc)
            return aiq_err_set(err, AIQ_EINVAL, "%s needs KEY=VALUE", argv[i]);
        char *kv = argv[++i], *eq = strchr(kv, '=');
        if (!eq)
            return aiq_err_set(err, AIQ_EINVAL, "--set %s: expected KEY=VALUE", kv);
        *eq = '\0';
        int rc = aiq_config_set(cfg, kv, eq + 1, err);
        *eq = '=';
        if (rc)
            return rc;
    }
    return 0;
}

/* Config sources in order: defaults < file < environment < --set. */
static int load_config(aiq_config_t *cfg, int argc, char **argv, int *print, aiq_err_t *err)
{
    int rc;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
            if (i + 1 >= argc)
                return aiq_err_set(err, AIQ_EINVAL, "%s needs a file name", a);
            if ((rc = aiq_config_load_file(cfg, argv[++i], err)))
                return rc;
        } else if (!strcmp(a, "-s") || !strcmp(a, "--set")) {
            i++;
        } else if (!strcmp(a, "--print-config")) {
            *print = 1;
        } else {
            return aiq_err_set(err, AIQ_EINVAL, "unknown option '%s' (see --help)", a);
        }
    }
    if ((rc = aiq_config_load_env(cfg, err)) || (rc = apply_sets(cfg, argc, argv, err)))
        return rc;
    if (!cfg->worker_id[0]) {
        char host[128] = "worker", id[192];
        gethostname(host, sizeof(host) - 1);
        snprintf(id, sizeof(id), "%s-%d", host, (int)getpid());
        return aiq_config_set(cfg, "worker.id", id, err);
    }
    return 0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "-V") || !strcmp(argv[i], "--version")) {
            printf("aiq-worker %s (librdkafka %s)\n", AIQ_VERSION, rd_kafka_version_str());
            return 0;
        }
    }
    aiq_config_t cfg;
    aiq_err_t err = {0};
    int print = 0;
    if (aiq_config_init(&cfg) || load_config(&cfg, argc, argv, &print, &err)) {
        fprintf(stderr, "aiq-worker: %s\n", err.msg[0] ? err.msg : "out of memory");
        aiq_config_free(&cfg);
        return 2;
    }
    if (print) {
        aiq_config_dump(&cfg, stdout, AIQ_CFG_WORKER);
        aiq_config_free(&cfg);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    aiq_log_t *log = aiq_log_new("worker", cfg.worker_id, aiq_log_level_parse(cfg.log_level));
    uv_loop_t loop;
    uv_loop_init(&loop);
    aiq_worker_t *w = NULL;
    int code = 1;
    if (aiq_worker_new(&w, &loop, &cfg, log, &err) || aiq_worker_start(w, &err)) {
        aiq_log_error(log, "cannot start: %s", err.msg);
        fprintf(stderr, "aiq-worker: %s\n", err.msg);
        if (w)
            aiq_worker_shutdown(w);
        code = 2;
    } else {
        uv_run(&loop, UV_RUN_DEFAULT);
        code = aiq_worker_shutdown(w);
    }
    uv_loop_close(&loop);
    aiq_log_free(log);
    curl_global_cleanup();
    aiq_config_free(&cfg);
    return code;
}
