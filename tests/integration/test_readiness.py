"""/readyz tells the truth through a broker outage: a worker on its own broker (never the
shared one, which must not be stopped) goes not ready with the reason when the broker stops,
within 2x the session timeout, is ready again when it is back and answers jobs then, and goes
not ready at once when it drains."""
import json
import shutil
import subprocess
import time

import pytest

import aiqtest
from aiqtest import Broker, Env, admin_port, binary, free_port, get, metric, run

SESSION_MS = 6000


@pytest.fixture
def own_broker(tmp_path_factory, monkeypatch):
    """tools/kafka/kafka.sh on free ports and a data dir of the test's own; Env uses it."""
    data = str(tmp_path_factory.mktemp("kafka"))
    b = Broker(free_port(), free_port(), data)
    b.start(timeout=240)
    monkeypatch.setattr(aiqtest, "BROKERS", b.address)
    try:
        yield b
    finally:
        b.stop(timeout=240)
        shutil.rmtree(data, ignore_errors=True)


def wait_status(base, want, timeout):
    """Polls /readyz until it answers `want`; returns (seconds it took, body)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        st, body = get(base + "/readyz")
        if st == want:
            return time.time() - t0, body
        time.sleep(0.2)
    raise AssertionError(f"/readyz not {want} within {timeout} s: {get(base + '/readyz')}")


def inflight(base):
    return metric(get(base + "/metrics")[1], "aiq_inflight")


def submit(b, prefix, n, tag):
    jobs = "".join(json.dumps({"operation": "vc-analysis", "priority": "normal",
                               "payload": {"i": i, "t": tag}}) + "\n" for i in range(n))
    return run([binary("aiq-submit"), "-q", "--wait", "--wait-timeout-ms", "60000", "-b", b.address,
                "--prefix", prefix, "-"], input=jobs)


def test_readyz_through_broker_outage_and_drain(tmp_path, own_broker):
    env = Env(tmp_path, partitions=2)
    try:
        env.start_sim(latency_ms=2)
        w = env.start_worker(AIQ_ADMIN_LISTEN="127.0.0.1:0",
                             AIQ_KAFKA_SESSION_TIMEOUT_MS=SESSION_MS)
        base = f"http://127.0.0.1:{admin_port(w)}"
        wait_status(base, 200, 60)
        r = submit(own_broker, env.prefix, 3, "before")
        assert r.returncode == 0, r.stderr

        own_broker.stop(timeout=240)
        t0 = time.time()
        took, body = wait_status(base, 503, 2 * SESSION_MS / 1000 + 5)
        # kafka.sh stop returns once the broker exited, so the outage began before t0.
        assert time.time() - t0 <= 2 * SESSION_MS / 1000, (took, body)
        assert "Kafka unreachable" in body or "lost" in body, body
        time.sleep(3)  # stays not ready while the broker is down
        st, body = get(base + "/readyz")
        assert st == 503, body

        own_broker.start(timeout=240)
        wait_status(base, 200, 120)
        r = submit(own_broker, env.prefix, 3, "after")
        assert r.returncode == 0, r.stderr  # ready meant it: jobs are answered again
        out = w.output()
        assert "/readyz: Kafka unreachable" in out or "/readyz: lost" in out, out[-3000:]

        # Draining: not ready at once, while the job it drains still runs.
        env.sim.stop(check=False)
        env.start_sim(latency_ms=4000)
        w.stop()
        w = env.start_worker(AIQ_ADMIN_LISTEN="127.0.0.1:0")
        base = f"http://127.0.0.1:{admin_port(w)}"
        wait_status(base, 200, 60)
        p = subprocess.Popen([binary("aiq-submit"), "-q", "-b", own_broker.address, "--prefix",
                              env.prefix, "-"], stdin=subprocess.PIPE, text=True)
        p.communicate(json.dumps({"operation": "vc-analysis", "payload": {"d": 1}}) + "\n",
                      timeout=60)
        deadline = time.time() + 30
        while inflight(base) != 1 and time.time() < deadline:
            time.sleep(0.1)
        assert inflight(base) == 1
        w.proc.send_signal(15)
        st, body = get(base + "/readyz")
        deadline = time.time() + 1.0
        while st != 503 and time.time() < deadline:
            time.sleep(0.05)
            st, body = get(base + "/readyz")
        assert (st, body) == (503, "draining\n")
        assert w.proc.poll() is None  # still draining its job
    finally:
        env.close()
