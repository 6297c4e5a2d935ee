"""Malformed records: each lands in the DLQ with a reason and where it came from, the
worker keeps going, and a valid job submitted after them is still answered."""
import json

from aiqtest import BROKERS, RESULT, binary, produce_raw, run

MAX_JOB_BYTES = 4096


def test_dlq_malformed_records_then_valid_job(aiq_env):
    sim = aiq_env.start_sim(latency_ms=1)
    worker = aiq_env.start_worker(AIQ_WORKER_MAX_JOB_BYTES=MAX_JOB_BYTES)
    topic = aiq_env.job_topic("normal")
    garbage = b"\xff\xfe\x00garbage\x01 not json at all"
    not_a_job = b'{"hello": "world"}'
    invalid_with_id = b'{"id": "bad-1", "operation": "vc-analysis", "priority": "urgent", "payload": {}}'
    too_big = json.dumps({"id": "big-1", "operation": "vc-analysis",
                          "payload": {"blob": "x" * (MAX_JOB_BYTES + 100)}}).encode()
    where = produce_raw(topic, [(b"k1", garbage), (b"k2", not_a_job),
                                (b"bad-1", invalid_with_id), (b"big-1", too_big)])

    r = run([binary("aiq-submit"), "-b", BROKERS, "--prefix", aiq_env.prefix, "--wait",
             "--wait-timeout-ms", "60000", "-o", "vc-analysis", "--id", "good-after-bad",
             "--payload", '{"company": "Acme"}'])
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["job_id"] == "good-after-bad"
    assert result["status"] == "succeeded"

    dlq = aiq_env.read_all(aiq_env.dlq_topic, 4, timeout=60)
    assert len(dlq) == 4
    by_value = {m.value(): m for m in dlq}
    expect_kind = {garbage: "not_json", not_a_job: "invalid_job", invalid_with_id: "invalid_job",
                   too_big: "too_large"}
    for value, kind in expect_kind.items():
        m = by_value[value]  # the original bytes, unchanged
        h = {k: v.decode() for k, v in m.headers()}
        part, off = where[value]
        assert h["aiq.dlq.error-kind"] == kind, h
        assert h["aiq.dlq.error-message"], h
        assert h["aiq.dlq.original-topic"] == topic
        assert int(h["aiq.dlq.original-partition"]) == part
        assert int(h["aiq.dlq.original-offset"]) == off
        assert int(h["aiq.dlq.original-timestamp"]) > 0
        assert h["aiq.dlq.original-consumer-group"] == aiq_env.group
        assert h["aiq.dlq.worker"].startswith("w0-")
        assert h["aiq.dlq.attempt"] == "0"
        assert h["aiq.dlq.failed-at"].endswith("Z")
    assert "priority" in {k: v.decode() for k, v in by_value[invalid_with_id].headers()}[
        "aiq.dlq.error-message"]
    assert "limit" in {k: v.decode() for k, v in by_value[too_big].headers()}[
        "aiq.dlq.error-message"]

    # The refused job that named an id also got a "rejected" result.
    results = aiq_env.read_all(aiq_env.results_topic, 2, timeout=30)
    by_id = {json.loads(m.value())["job_id"]: json.loads(m.value()) for m in results}
    RESULT.validate(by_id["bad-1"])
    assert by_id["bad-1"]["status"] == "rejected"
    assert by_id["bad-1"]["error"]["kind"] == "invalid_job"
    # Only the valid job reached the model.
    assert sim.stats()["requests"] == 1

    assert worker.stop() == 0
    for t, p, committed, end in aiq_env.committed_vs_end():
        if end > 0:
            assert committed == end, (t, p, committed, end)


def test_dlq_bad_signature_fails_without_retry(aiq_env):
    """A wrong secret is a final error: one model call, a failed result saying why."""
    sim = aiq_env.start_sim(latency_ms=1)
    aiq_env.start_worker(AWS_SECRET_ACCESS_KEY="wrong-secret")
    r = run([binary("aiq-submit"), "-b", BROKERS, "--prefix", aiq_env.prefix, "--wait",
             "--wait-timeout-ms", "60000", "-o", "vc-analysis", "--payload", "{}"])
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    RESULT.validate(result)
    assert result["status"] == "failed"
    assert result["error"]["kind"] == "AccessDeniedException"
    assert result["error"]["http_status"] == 403
    assert result["attempts"] == 1
    stats = sim.stats()
    assert stats["requests"] == 1, stats
    assert stats["auth_failures"] == 1, stats
