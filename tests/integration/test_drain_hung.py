"""SIGTERM while model calls hang: the worker exits once worker.drain_timeout_ms has passed,
leaving the hung jobs uncommitted for redelivery. It used to hang for ever in
rd_kafka_destroy, which waits for every record the application still holds, and the
running jobs held theirs (found with a provider that never answers)."""
import json
import signal
import subprocess
import time

from confluent_kafka import Producer

from aiqtest import BROKERS


def test_sigterm_with_hung_calls_exits_after_the_drain_timeout(aiq_env):
    aiq_env.start_sim(latency_ms=120000)
    w = aiq_env.start_worker(AIQ_WORKER_DRAIN_TIMEOUT_MS=1000)
    aiq_env.wait_group_stable(1)
    p = Producer({"bootstrap.servers": BROKERS})
    ids = [f"hung-{aiq_env.tag}-{i}" for i in range(5)]
    for i, jid in enumerate(ids):
        p.produce(aiq_env.job_topic("normal"), key=jid, value=json.dumps(
            {"id": jid, "operation": "vc-analysis", "payload": {"company": f"hung {i}"}}))
    assert p.flush(10) == 0
    time.sleep(3)  # the calls are on the wire and will not come back
    w.proc.send_signal(signal.SIGTERM)
    try:
        code = w.proc.wait(30)  # drain timeout 1 s, producer flush and close: a few seconds
    except subprocess.TimeoutExpired:
        w.proc.kill()
        raise AssertionError("the worker did not exit after SIGTERM with hung model calls")
    assert code == 0, w.output()[-2000:]
    out = w.output()
    assert "drain timeout: 5 job(s) still in flight" in out, out[-2000:]
    # None of the hung jobs was committed: their new owner runs them.
    assert all(c <= 0 for _, _, c, e in aiq_env.committed_vs_end() if e > 0)
