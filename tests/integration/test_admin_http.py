"""Ops endpoints of a real worker: /healthz, /readyz and /metrics agree with what it did."""
import json
import time

from confluent_kafka import Producer

from aiqtest import BROKERS, PRIORITIES, admin_port, binary, get, metric, run, schema

METRICS = schema("metrics.schema.json")


def test_admin_http_health_ready_and_metrics(aiq_env):
    sim = aiq_env.start_sim(latency_ms=2)
    w = aiq_env.start_worker(AIQ_ADMIN_LISTEN="127.0.0.1:0", AIQ_METRICS_INTERVAL_MS=300)
    base = f"http://127.0.0.1:{admin_port(w)}"
    assert get(base + "/healthz")[0] == 200
    deadline = time.time() + 30
    while get(base + "/readyz")[0] != 200 and time.time() < deadline:
        time.sleep(0.2)
    assert get(base + "/readyz") == (200, "ready\n")
    assert get(base + "/nope")[0] == 404

    jobs = "".join(json.dumps({"operation": "vc-analysis", "priority": p, "payload": {"i": i, "p": p}})
                   + "\n" for i in range(3) for p in PRIORITIES)
    r = run([binary("aiq-submit"), "-q", "--wait", "-b", BROKERS, "--prefix", aiq_env.prefix,
             "-"], input=jobs)
    assert r.returncode == 0, r.stderr
    p = Producer({"bootstrap.servers": BROKERS})
    p.produce(aiq_env.job_topic("low"), value=b"\x00 not json")
    assert p.flush(10) == 0

    deadline = time.time() + 15
    while time.time() < deadline:  # snapshots are published every second
        status, text = get(base + "/metrics")
        assert status == 200
        try:
            # the DLQ record counts when sent; the job leaves in-flight once it is acked
            if metric(text, "aiq_dlq_total", kind="not_json") == 1 and metric(
                    text, "aiq_inflight") == 0:
                break
        except AssertionError:
            pass
        time.sleep(0.3)
    for prio in PRIORITIES:
        assert metric(text, "aiq_jobs_finished_total", priority=prio, status="succeeded") == 3
        assert metric(text, "aiq_job_seconds_count", priority=prio) == 3
        assert metric(text, "aiq_job_seconds_bucket", priority=prio, le="+Inf") == 3
    assert metric(text, "aiq_jobs_received_total", priority="low") == 4
    assert metric(text, "aiq_model_calls_total", code="2xx") == 12 == sim.stats()["requests"]
    assert metric(text, "aiq_dlq_total", kind="not_json") == 1
    assert metric(text, "aiq_tokens_total", priority="high", direction="output") > 0
    assert metric(text, "aiq_inflight") == 0
    assert metric(text, "aiq_inflight_limit") == 10
    assert metric(text, "aiq_assigned_partitions") == 24

    # The same numbers arrive as JSON snapshots on the metrics topic, keyed by worker id.
    def settled(out):
        return any(json.loads(m.value())["finished"]["low"]["succeeded"] == 3
                   and json.loads(m.value())["dlq"]["not_json"] == 1 for m in out)
    snaps = aiq_env.read_all(aiq_env.prefix + "metrics", 10000, timeout=20, stop=settled)
    assert settled(snaps)
    last = json.loads(snaps[-1].value())
    METRICS.validate(last)
    assert snaps[-1].key().decode() == last["worker"]
    for prio in PRIORITIES:
        assert last["finished"][prio]["succeeded"] == 3
        assert last["latency_ms"][prio]["count"] == 3
    assert last["model_calls"]["2xx"] == 12
    assert last["received"]["low"] == 4
    assert w.stop() == 0
