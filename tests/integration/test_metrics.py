"""/metrics read by an independent parser (prometheus_client's) after a known workload, and
the metrics snapshot on <prefix>metrics validated against its schema."""
import json
import os
import subprocess
import time


from aiqtest import PRIORITIES, admin_port, binary, schema, scrape, submit, total, wait_until


def test_metrics_parse_and_count_a_known_workload(aiq_env):
    aiq_env.start_sim(latency_ms=2)
    w = aiq_env.start_worker(AIQ_ADMIN_LISTEN="127.0.0.1:0", AIQ_METRICS_INTERVAL_MS=500)
    port = admin_port(w)
    aiq_env.wait_group_stable(1)
    ops = ["vc-analysis", "content-generation", "made-up-operation", "persona-detection"]
    jobs = [{"id": f"m-{aiq_env.tag}-{i}", "operation": ops[i % 4],
             "priority": PRIORITIES[i % 4], "payload": {"i": i}} for i in range(200)]
    submit(aiq_env, jobs)
    samples = wait_until(
        lambda: (lambda s: s if total(s, "aiq_jobs_finished_total") == 200 and
                 total(s, "aiq_inflight") == 0 else None)(scrape(port)),
        60, "200 finished jobs in /metrics", interval=0.3)
    assert total(samples, "aiq_jobs_finished_total", status="succeeded") == 200
    for p in PRIORITIES:
        assert total(samples, "aiq_jobs_finished_total", priority=p) == 50
        assert total(samples, "aiq_job_seconds_count", priority=p) == 50
    # by operation: the unknown one folds into "other"
    for op in ("vc-analysis", "content-generation", "persona-detection", "other"):
        assert total(samples, "aiq_operation_jobs_total", operation=op) == 50, op
    assert total(samples, "aiq_operation_jobs_total", operation="made-up-operation") == 0
    model = "anthropic.claude-3-haiku-20240307-v1:0"
    assert total(samples, "aiq_model_tokens_total", model=model, direction="output") > 0
    assert total(samples, "aiq_cost_usd_total", model=model) > 0  # priced in operations.json
    assert total(samples, "aiq_operation_job_seconds_count") == 200
    assert total(samples, "aiq_model_calls_total", code="2xx") == 200
    # the consumer, the provider, the breaker
    assert {lbl["priority"] for lbl, _ in samples["aiq_consumer_lag"]} == set(PRIORITIES)
    assert total(samples, "aiq_consumer_lag") == 0
    assert total(samples, "aiq_rebalances_total") >= 1
    assert total(samples, "aiq_breaker_state", model=model) == 0  # closed
    assert total(samples, "aiq_model_concurrency_limit") >= 1
    assert total(samples, "aiq_cache_hits_total") == 0
    assert total(samples, "aiq_cache_misses_total") == 200

    # the snapshot on the metrics topic says the same and matches its schema
    metrics_schema = schema("metrics.schema.json")
    snaps = aiq_env.read_all(aiq_env.prefix + "metrics", 1000, timeout=15,
                             stop=lambda recs: any(
                                 sum(sum(v.values()) for v in json.loads(m.value())["finished"]
                                     .values()) == 200 for m in recs))
    last = json.loads(snaps[-1].value())
    metrics_schema.validate(last)
    assert sum(u["finished"]["succeeded"] for u in last["usage"]) == 200
    assert {u["operation"] for u in last["usage"]} == {
        "vc-analysis", "content-generation", "persona-detection", "other"}
    assert last["rebalances"] >= 1
    assert w.stop() == 0, w.output()[-3000:]


def test_process_and_build_info_metrics(aiq_env):
    """process_* as Prometheus' own process collector names them, and aiq_build_info, parsed
    by prometheus_client with the values the process and the binary really have."""
    aiq_env.start_sim(latency_ms=2)
    w = aiq_env.start_worker(AIQ_ADMIN_LISTEN="127.0.0.1:0")
    port = admin_port(w)
    aiq_env.wait_group_stable(1)
    submit(aiq_env, [{"operation": "vc-analysis", "payload": {"p": i}} for i in range(300)])
    samples = wait_until(lambda: (lambda s: s if total(s, "aiq_jobs_finished_total") == 300
                                  else None)(scrape(port)), 60, "300 jobs", interval=0.3)
    pid = w.proc.pid
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    rss = total(samples, "process_resident_memory_bytes")
    assert 0.5 * rss_kb * 1024 < rss < 2 * rss_kb * 1024, (rss, rss_kb)
    assert total(samples, "process_virtual_memory_bytes") >= rss
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    assert abs(total(samples, "process_open_fds") - fds) <= 5, fds  # sockets come and go
    assert total(samples, "process_max_fds") >= fds
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu_now = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    assert 0 < total(samples, "process_cpu_seconds_total") <= cpu_now + 0.011, cpu_now
    started = os.stat(f"/proc/{pid}").st_ctime
    assert abs(total(samples, "process_start_time_seconds") - started) < 5, started
    assert time.time() - 120 < total(samples, "process_start_time_seconds") <= time.time()
    [(labels, value)] = samples["aiq_build_info"]
    assert value == 1
    version = subprocess.run([binary("aiq-worker"), "--version"], capture_output=True,
                             text=True).stdout.split()[1]  # "aiq-worker V (librdkafka L)"
    assert labels["version"] == version and labels["worker"] == f"w0-{aiq_env.tag}"
    # the librdkafka the worker loaded (the system's; confluent_kafka may bundle another)
    assert labels["librdkafka"] and labels["librdkafka"][0].isdigit(), labels
    loaded = subprocess.run([binary("aiq-worker"), "--version"], capture_output=True,
                            text=True).stdout.split("librdkafka ")[-1].rstrip(")\n")
    assert labels["librdkafka"] == loaded, (labels, loaded)
    assert all(labels[k] for k in ("libuv", "libcurl", "lmdb", "jansson")), labels
    assert w.stop() == 0, w.output()[-3000:]
