"""A job whose deadline passes while it waits for a slot is answered at its deadline, not when
the slot frees up: here a slow model call holds the only slot for 10 s while jobs with a 2 s
deadline wait behind it, either in the worker's backlog (job slots full) or started and
waiting for a model-call slot (found by tests/system latency-spike)."""
import json
import time

from confluent_kafka import TopicPartition

from aiqtest import rfc3339, submit, wait_until

SLOW_MS = 10000
SHORT_MS = 2000


def test_queued_job_expires_at_its_deadline(aiq_env):
    got, short, blocker, sim = run_blocked(aiq_env, AIQ_WORKER_MAX_INFLIGHT=1)
    for j in short:
        assert got[j["id"]][1]["status"] == "expired", got[j["id"]][1]


def test_job_waiting_for_a_call_slot_ends_at_its_deadline(aiq_env):
    # Job slots to spare, one model-call slot (fixed): the short jobs start and wait in the
    # provider's queue; they end through the fallback chain with deadline_exceeded.
    got, short, blocker, sim = run_blocked(
        aiq_env, AIQ_WORKER_MAX_INFLIGHT=10, AIQ_BEDROCK_MAX_CONCURRENCY=1,
        AIQ_BEDROCK_ADAPTIVE=0)
    for j in short:
        r = got[j["id"]][1]
        assert r["status"] in ("degraded", "failed"), r
        assert (r.get("error") or {}).get("kind") == "deadline_exceeded", r


def run_blocked(env, **settings):
    """One slow job holds the slot, then five 2 s jobs arrive; checks every short job was
    answered within 1.5 s of its deadline and the slow one succeeded with the only model
    request; returns ({id: (arrival, result)}, short jobs, slow job, sim)."""
    sim = env.start_sim(latency_ms=SLOW_MS)
    env.start_worker(**settings)
    env.wait_group_stable(1)
    c = env.consumer()
    c.assign([TopicPartition(env.results_topic, p, 0) for p in range(env.partitions)])
    try:
        blocker = {"id": f"slow-{env.tag}", "operation": "vc-analysis",
                   "payload": {"company": "slow"}, "timeout_ms": 30000,
                   "created_at": rfc3339(time.time())}
        submit(env, [blocker])
        wait_until(lambda: sim.stats().get("inflight") == 1, 30, "the slow call to start")
        t0 = time.time()
        short = [{"id": f"short-{env.tag}-{i}", "operation": "vc-analysis",
                  "payload": {"company": f"short {i}"}, "timeout_ms": SHORT_MS,
                  "created_at": rfc3339(t0)} for i in range(5)]
        submit(env, short)
        got = {}
        deadline = time.time() + 60
        while time.time() < deadline and len(got) < 6:
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            r = json.loads(m.value())
            got.setdefault(r["job_id"], (time.time(), r))
    finally:
        c.close()
    assert len(got) == 6, sorted(got)
    for j in short:
        at, r = got[j["id"]]
        # answered within ~1 s of the deadline (sweep every 0.5 s), long before the slow
        # call frees the slot at SLOW_MS
        late = at - (t0 + SHORT_MS / 1000)
        assert late < 1.5, f"{j['id']} answered {late:.1f} s after its deadline"
    at, r = got[blocker["id"]]
    assert r["status"] == "succeeded", r
    assert sim.stats()["requests"] == 1  # the expired jobs never called the model
    return got, short, blocker, sim
