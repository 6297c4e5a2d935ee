"""Time sanity of created_at (issue #17): the epoch is a time like any other (the job is
long expired), a created_at beyond worker.max_clock_skew_ms in the future is rejected with
the reason, one within the skew runs."""
import json
import time

from confluent_kafka import Producer

from aiqtest import BROKERS, RESULT, rfc3339


def test_created_at_epoch_expires_and_far_future_is_rejected(aiq_env):
    sim = aiq_env.start_sim(latency_ms=1)
    aiq_env.start_worker()
    aiq_env.wait_group_stable(1)
    now = time.time()
    jobs = {
        "epoch": {"created_at": "1970-01-01T00:00:00Z", "timeout_ms": 5000},
        "year-9999": {"created_at": "9999-12-31T23:59:59.999Z", "timeout_ms": 3600000},
        "ten-minutes-ahead": {"created_at": rfc3339(now + 600), "timeout_ms": 5000},
        "within-skew": {"created_at": rfc3339(now + 60), "timeout_ms": 30000},
    }
    p = Producer({"bootstrap.servers": BROKERS})
    for jid, fields in jobs.items():
        doc = {"id": jid, "operation": "vc-analysis", "payload": {"n": jid}, **fields}
        p.produce(aiq_env.job_topic("normal"), key=jid, value=json.dumps(doc))
    assert p.flush(30) == 0
    got = {}
    for m in aiq_env.read_all(aiq_env.results_topic, len(jobs), timeout=60):
        r = json.loads(m.value())
        RESULT.validate(r)
        got[r["job_id"]] = r
    assert sorted(got) == sorted(jobs), got
    assert got["epoch"]["status"] == "expired", got["epoch"]
    for jid in ("year-9999", "ten-minutes-ahead"):
        assert got[jid]["status"] == "rejected", got[jid]
        assert got[jid]["error"]["kind"] == "invalid_job"
        assert "created_at" in got[jid]["error"]["message"]
        assert "worker.max_clock_skew_ms" in got[jid]["error"]["message"]
    assert got["within-skew"]["status"] == "succeeded", got["within-skew"]
    assert sim.stats()["requests"] == 1  # only the job within the skew called the model
