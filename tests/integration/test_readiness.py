"""/readyz tells the truth through a broker outage: a worker on its own broker (never the
shared one, which must not be stopped) goes not ready with the reason when the broker stops,
within 2x the session timeout, is ready again when it is back and answers jobs then, and goes
not ready at once when it drains."""
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

import conftest
from conftest import ROOT, Env, binary, run
from test_admin_http import admin_port, get, metric

KAFKA_SH = os.path.join(ROOT, "tools", "kafka", "kafka.sh")
SESSION_MS = 6000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnBroker:
    """tools/kafka/kafka.sh on free ports and a data dir of the test's own."""

    def __init__(self, data_dir):
        self.port = free_port()
        self.env = dict(os.environ, AIQ_KAFKA_PORT=str(self.port),
                        AIQ_KAFKA_CONTROLLER_PORT=str(free_port()), AIQ_KAFKA_DIR=data_dir)
        self.brokers = f"127.0.0.1:{self.port}"

    def sh(self, cmd):
        r = subprocess.run([KAFKA_SH, cmd], env=self.env, capture_output=True, text=True,
                           timeout=240)
        assert r.returncode == 0, f"kafka.sh {cmd}:\n{r.stdout}{r.stderr}"


@pytest.fixture
def own_broker(tmp_path_factory, monkeypatch):
    data = str(tmp_path_factory.mktemp("kafka"))
    b = OwnBroker(data)
    b.sh("start")
    monkeypatch.setattr(conftest, "BROKERS", b.brokers)
    try:
        yield b
    finally:
        b.sh("stop")
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
    return run([binary("aiq-submit"), "-q", "--wait", "--wait-timeout-ms", "60000", "-b", b.brokers,
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

        own_broker.sh("stop")
        t0 = time.time()
        took, body = wait_status(base, 503, 2 * SESSION_MS / 1000 + 5)
        # kafka.sh stop returns once the broker exited, so the outage began before t0.
        assert time.time() - t0 <= 2 * SESSION_MS / 1000, (took, body)
        assert "Kafka unreachable" in body or "lost" in body, body
        time.sleep(3)  # stays not ready while the broker is down
        st, body = get(base + "/readyz")
        assert st == 503, body

        own_broker.sh("start")
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
        p = subprocess.Popen([binary("aiq-submit"), "-q", "-b", own_broker.brokers, "--prefix",
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
