"""Deadlines under a hung provider (issue #17: with 10,000 jobs of timeout_ms 5000 and an
endpoint that accepts connections and never answers, answers came a median 3.5 s and at most
5.0 s after the deadline). Every job the worker fetched before its deadline is answered within
250 ms of it (asserted with slack for a shared 2-core machine); one fetched after its deadline
is answered at once, without a model call.

Lateness is measured from the result records' Kafka timestamps against each job's deadline
(created_at + timeout_ms); when a job was received comes from the result (completed_at -
timings.total_ms)."""
import datetime
import json
import os
import socket
import threading
import time

from confluent_kafka import Producer

from conftest import BROKERS
from test_consumer_core import rfc3339

N = int(os.environ.get("AIQ_HUNG_JOBS", "10000"))
TIMEOUT_MS = 5000
# The bound is 250 ms; the slack absorbs a loaded 2-core machine (answering 10,000 jobs
# whose deadlines fall within half a second is itself CPU work), not a sweep that is late.
P99_BOUND_MS = 250 + 150
MAX_BOUND_MS = 1000


class HungEndpoint:
    """Accepts TCP connections and never answers: a provider that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(c)  # held open, never read, never answered

    def close(self):
        self.stopping = True
        self.thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


def parse_ms(ts):
    return int(datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def lateness(env, n, created):
    """{job_id: (lateness_ms, receipt_lateness_ms, result)} from the results topic."""
    out = {}
    for m in env.read_all(env.results_topic, n, timeout=120):
        r = json.loads(m.value())
        if r["job_id"] in out:
            continue
        answered = m.timestamp()[1]
        deadline = created[r["job_id"]] + TIMEOUT_MS
        received = parse_ms(r["completed_at"]) - r["timings"]["total_ms"]
        out[r["job_id"]] = (answered - deadline, received - deadline, r)
    return out


def test_every_fetched_job_is_answered_at_its_deadline(aiq_env):
    hung = HungEndpoint()
    try:
        aiq_env.start_sim(latency_ms=1)  # for the fixture's environment; not called
        w = aiq_env.start_worker(
            AIQ_BEDROCK_ENDPOINT=f"http://127.0.0.1:{hung.port}",
            AIQ_WORKER_BACKLOG=4 * N, AIQ_WORKER_MAX_INFLIGHT=10, AIQ_WORKER_REQUEUE=0,
            # the breaker would answer early with fallbacks; here every call hangs to the end
            AIQ_BREAKER_FAILURES=1000, AIQ_BREAKER_FAILURE_RATE_PCT=0, AIQ_CACHE_ENABLED=0)
        aiq_env.wait_group_stable(1)
        p = Producer({"bootstrap.servers": BROKERS, "linger.ms": 20})
        created = {}
        for i in range(N):
            jid = f"hung-{i:05d}"
            now = time.time()
            created[jid] = int(now * 1000)
            p.produce(aiq_env.job_topic("normal"), key=jid, value=json.dumps(
                {"id": jid, "operation": "vc-analysis", "payload": {"company": jid},
                 "timeout_ms": TIMEOUT_MS, "created_at": rfc3339(now)}))
            if i % 1000 == 0:
                p.poll(0)
        assert p.flush(60) == 0
        got = lateness(aiq_env, N, created)
        assert len(got) == N, (len(got), w.output()[-3000:])
        fetched = [late for late, recv, r in got.values() if recv < 0]
        after = [late - recv for late, recv, r in got.values() if recv >= 0]
        statuses = {}
        for late, recv, r in got.values():
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        summary = (f"{len(fetched)} fetched before their deadline: lateness p50 "
                   f"{percentile(fetched, 0.5)} p99 {percentile(fetched, 0.99)} max "
                   f"{max(fetched)} ms; {len(after)} fetched after it; statuses {statuses}; "
                   f"{len(hung.conns)} connections to the hung endpoint")
        print(summary)
        assert len(fetched) > N // 2, summary  # the scenario is about fetched jobs
        assert percentile(fetched, 0.99) <= P99_BOUND_MS, summary
        assert max(fetched) <= MAX_BOUND_MS, summary
        if after:  # answered at once on receipt
            assert max(after) <= MAX_BOUND_MS, summary
        assert "succeeded" not in statuses, summary
        for late, recv, r in got.values():
            if r["status"] == "expired":  # no model call for an expired job
                assert r["attempts"] == 0 and r["timings"]["provider_ms"] == 0, r
        # Model calls are bounded by the slots, not by the jobs: at most a few rounds of 10.
        assert len(hung.conns) <= 100, summary
        assert w.stop() == 0
    finally:
        hung.close()
