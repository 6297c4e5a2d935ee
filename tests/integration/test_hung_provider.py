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
import time

from confluent_kafka import Producer

from aiqtest import BROKERS, HungEndpoint, percentile, rfc3339

N = int(os.environ.get("AIQ_HUNG_JOBS", "10000"))
TIMEOUT_MS = 5000
ARRIVALS_PER_S = 2000
# The bound is 250 ms; the slack is for a shared 2-core machine (measured p99 0.11 s at a load
# average of 15). main's 500 ms sweep answered p99 0.5 s late.
P99_BOUND_MS = 250 + 150
MAX_BOUND_MS = 1000
# A record fetched after its deadline is answered in the callback that receives it.
RECEIPT_P99_MS = 100

def parse_ms(ts):
    return int(datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


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


def run_hung(env, backlog):
    """N jobs of TIMEOUT_MS, 2,000 a second, against a hung endpoint; returns (fetched: lateness of the
    jobs received before their deadline, after: answer minus receipt of the others, statuses,
    model connections, worker)."""
    hung = HungEndpoint()
    try:
        env.start_sim(latency_ms=1)  # for the fixture's environment; not called
        w = env.start_worker(
            AIQ_BEDROCK_ENDPOINT=f"http://127.0.0.1:{hung.port}",
            AIQ_WORKER_BACKLOG=backlog, AIQ_WORKER_MAX_INFLIGHT=10, AIQ_WORKER_REQUEUE=0,
            # the breaker would answer early with fallbacks; here every call hangs to the end
            AIQ_BREAKER_FAILURES=1000, AIQ_BREAKER_FAILURE_RATE_PCT=0, AIQ_CACHE_ENABLED=0)
        env.wait_group_stable(1)
        p = Producer({"bootstrap.servers": BROKERS, "linger.ms": 20})
        created = {}
        t0 = time.time()
        for i in range(N):
            jid = f"hung-{i:05d}"
            # 2,000 jobs/s: when the first deadline comes all 10,000 are waiting, and then
            # deadlines pass at the rate they arrived (not 10,000 in one instant, which
            # measures how fast a starved CPU answers rather than when the sweep looks)
            if i % 200 == 0:
                time.sleep(max(0.0, t0 + i / ARRIVALS_PER_S - time.time()))
            now = time.time()
            created[jid] = int(now * 1000)
            p.produce(env.job_topic("normal"), key=jid, value=json.dumps(
                {"id": jid, "operation": "vc-analysis", "payload": {"company": jid},
                 "timeout_ms": TIMEOUT_MS, "created_at": rfc3339(now)}))
            if i % 1000 == 0:
                p.poll(0)
        assert p.flush(60) == 0
        got = lateness(env, N, created)
        assert len(got) == N, (len(got), w.output()[-3000:])
        fetched = [late for late, recv, r in got.values() if recv < 0]
        after = [late - recv for late, recv, r in got.values() if recv >= 0]
        statuses = {}
        for late, recv, r in got.values():
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
            if r["status"] == "expired":  # no model call for an expired job
                assert r["attempts"] == 0 and r["timings"]["provider_ms"] == 0, r
        assert "succeeded" not in statuses, statuses
        # a job is answered expired unless its model call was running at the deadline
        assert statuses.get("expired", 0) >= N * 9 // 10, statuses
        assert w.stop() == 0
        return fetched, after, statuses, len(hung.conns)
    finally:
        hung.close()


def describe(xs):
    if not xs:
        return "-"
    return (f"p50 {percentile(xs, 0.5)} p90 {percentile(xs, 0.9)} p99 {percentile(xs, 0.99)} "
            f"max {max(xs)} ms")


def test_every_fetched_job_is_answered_at_its_deadline(aiq_env):
    """10,000 jobs waiting in the worker (the backlog holds them all)."""
    fetched, after, statuses, conns = run_hung(aiq_env, backlog=4 * N)
    summary = (f"{len(fetched)} fetched before their deadline, answered after it by "
               f"{describe(fetched)}; {len(after)} fetched after it; statuses {statuses}; "
               f"{conns} model connections")
    print(summary)
    assert len(fetched) > N * 9 // 10, summary  # the case is about fetched jobs
    assert percentile(fetched, 0.99) <= P99_BOUND_MS, summary
    assert max(fetched) <= MAX_BOUND_MS, summary


def test_jobs_expired_in_kafka_are_answered_on_receipt(aiq_env):
    """The default backlog (500): most of the 10,000 jobs are still in Kafka at their
    deadline. Each is answered as it arrives, without a slot or a model call (on main it
    waited for the next 500 ms sweep: p99 0.44 s after receipt)."""
    fetched, after, statuses, conns = run_hung(aiq_env, backlog=500)
    summary = (f"{len(after)} fetched after their deadline, answered after receipt by "
               f"{describe(after)}; {len(fetched)} fetched before it, answered after the "
               f"deadline by {describe(fetched)}; statuses {statuses}; {conns} model "
               f"connections")
    print(summary)
    assert len(after) > N // 2, summary
    assert percentile(after, 0.99) <= RECEIPT_P99_MS, summary
    assert max(after) <= MAX_BOUND_MS, summary
    if fetched:
        assert max(fetched) <= MAX_BOUND_MS, summary
