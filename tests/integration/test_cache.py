"""The response cache on the real broker: repeated jobs cost one model call, identical jobs
in flight share one, worker processes on a host share the cache, and a stale entry answers
when the model cannot."""
import json
import random
import time

from aiqtest import RESULT, Results, sim_config, submit


def shuffled(d, rng):
    """The same JSON object with its keys (at every level) in a random order."""
    if isinstance(d, dict):
        items = list(d.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    return d


def payload(i):
    return {"company": f"Company {i}", "stage": "seed", "region": "EU",
            "details": {"employees": 10 + i, "founded": 2000 + i % 20, "tags": ["a", "b"]}}


def test_thousand_jobs_over_hundred_payloads_make_hundred_calls(aiq_env):
    sim = aiq_env.start_sim(latency_ms=30)
    w = aiq_env.start_worker(AIQ_WORKER_MAX_INFLIGHT=50)
    aiq_env.wait_group_stable(1)
    rng = random.Random(7)
    jobs = []
    for n in range(1000):
        i = n % 100
        jobs.append({"id": f"c-{aiq_env.tag}-{n:04d}", "operation": "vc-analysis",
                     "payload": shuffled(payload(i), rng)})
    rng.shuffle(jobs)
    results = Results(aiq_env)
    try:
        submit(aiq_env, jobs)
        got = results.wait([j["id"] for j in jobs], timeout=120)
    finally:
        results.close()
    assert sim.stats()["requests"] == 100, sim.stats()
    by_payload = {}
    for j in jobs:
        r = got[j["id"]]
        RESULT.validate(r)
        assert r["status"] == "succeeded", r
        assert len(r["cache"]["key"]) == 64
        by_payload.setdefault(j["payload"]["company"], set()).add(r["cache"]["key"])
        by_payload.setdefault("text:" + j["payload"]["company"], set()).add(r["output"]["text"])
    # one key and one answer per distinct payload, whatever the key order
    assert all(len(v) == 1 for v in by_payload.values())
    assert len({next(iter(v)) for k, v in by_payload.items() if not k.startswith("t")}) == 100
    hits = sum(1 for r in got.values() if r["cache"]["hit"])
    called = sum(1 for r in got.values() if r["attempts"] > 0 and not r["cache"]["hit"])
    assert called == 100
    assert hits + called <= 1000  # the rest joined a call in flight (coalesced)
    print(f"\n1000 jobs / 100 payloads: 100 model calls, {hits} cache hits, "
          f"{1000 - hits - called} coalesced onto a call in flight")
    for r in got.values():
        if r["cache"]["hit"]:
            assert r["cache"]["age_ms"] >= 0 and r["cache"]["stale"] is False
    assert w.stop() == 0, w.output()[-3000:]


def test_two_workers_share_the_cache_and_bypass_calls_again(aiq_env):
    sim = aiq_env.start_sim(latency_ms=5)
    w1 = aiq_env.start_worker()
    aiq_env.wait_group_stable(1)
    results = Results(aiq_env)
    try:
        first = [{"id": f"one-{aiq_env.tag}-{i}", "operation": "content-generation",
                  "payload": payload(i)} for i in range(20)]
        submit(aiq_env, first)
        results.wait([j["id"] for j in first])
        assert sim.stats()["requests"] == 20
        # A second process on the "host" (same cache.path); the first one leaves so the
        # second one answers everything.
        assert w1.stop() == 0, w1.output()[-3000:]
        w2 = aiq_env.start_worker()
        aiq_env.wait_group_stable(1)
        second = [dict(j, id=j["id"].replace("one-", "two-")) for j in first]
        submit(aiq_env, second)
        got = results.wait([j["id"] for j in second])
        assert all(r["cache"]["hit"] and r["worker"] != "" for r in got.values()), got
        assert {r["worker"] for r in got.values()} == {f"w1-{aiq_env.tag}"}
        assert sim.stats()["requests"] == 20  # not one more call
        # cache.bypass: called again; a different persona is a different entry
        third = [dict(first[0], id=f"bypass-{aiq_env.tag}", cache={"bypass": True}),
                 dict(first[1], id=f"persona-{aiq_env.tag}", persona="investor")]
        submit(aiq_env, third)
        got = results.wait([j["id"] for j in third])
        assert not any(r["cache"]["hit"] for r in got.values()), got
        assert "key" not in got[f"bypass-{aiq_env.tag}"]["cache"]
        assert sim.stats()["requests"] == 22
    finally:
        results.close()
    assert w2.stop() == 0, w2.output()[-3000:]


def test_stale_entry_answers_when_the_model_cannot(aiq_env):
    sim = aiq_env.start_sim(latency_ms=5)
    w = aiq_env.start_worker(AIQ_WORKER_MAX_ATTEMPTS=1, AIQ_WORKER_REQUEUE=0)
    aiq_env.wait_group_stable(1)
    results = Results(aiq_env)
    try:
        job = {"id": f"s1-{aiq_env.tag}", "operation": "vc-analysis", "payload": payload(1),
               "cache": {"ttl_s": 1}}
        submit(aiq_env, [job])
        fresh = results.wait([job["id"]])[job["id"]]
        assert fresh["status"] == "succeeded" and not fresh["cache"]["hit"]
        time.sleep(1.5)  # the entry is now expired, inside the stale grace period
        sim_config(sim, fail_rate=1, fail_status=503)
        again = dict(job, id=f"s2-{aiq_env.tag}")
        submit(aiq_env, [again])
        r = results.wait([again["id"]])[again["id"]]
        RESULT.validate(r)
        assert r["status"] == "degraded", r
        assert r["fallback"] == "stale_cache", r
        assert r["cache"]["stale"] is True and r["cache"]["hit"] is True
        assert r["cache"]["age_ms"] >= 1000
        assert r["output"]["text"] == fresh["output"]["text"]
        assert r["error"]["kind"] == "ServiceUnavailableException"
    finally:
        results.close()
    assert w.stop() == 0, w.output()[-3000:]


def test_sigkill_during_write_bursts_leaves_a_usable_cache(aiq_env, tmp_path):
    """20 workers, each killed with SIGKILL while it answers (and caches) a burst; the
    environment still opens, verifies, and serves hits to the next worker."""
    import signal
    import subprocess
    from aiqtest import BROKERS, binary, run

    sim = aiq_env.start_sim(latency_ms=1)
    cache = tmp_path / "shared-cache"
    jobs = [{"id": f"k-{aiq_env.tag}-{i:04d}", "operation": "persona-detection",
             "payload": {"text": f"burst text number {i} " * 8}} for i in range(3000)]
    submit(aiq_env, jobs)
    rng = random.Random(11)
    kills = 0
    for n in range(20):
        # Each round reads the topic afresh in its own group, so every round writes.
        w = aiq_env.start_worker(AIQ_CACHE_PATH=str(cache), AIQ_KAFKA_GROUP_ID=f"k{n}-{aiq_env.tag}",
                                 AIQ_WORKER_MAX_INFLIGHT=100)
        deadline = time.time() + 20
        while time.time() < deadline and "assigned" not in w.output():
            time.sleep(0.05)
        time.sleep(rng.uniform(0.1, 0.6))
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait(10)
        w.log.close()
        kills += 1
        assert w.proc.returncode == -signal.SIGKILL
        v = run([binary("aiq-admin"), "cache", "verify", "--cache-path", str(cache)])
        assert v.returncode == 0, (n, v.stdout, v.stderr)
    stats = run([binary("aiq-admin"), "cache", "stats", "--json", "--cache-path", str(cache)])
    assert stats.returncode == 0, stats.stderr
    entries = json.loads(stats.stdout)["entries"]
    assert entries > 0
    # The next worker is served from what the killed ones stored.
    before = sim.stats()["requests"]
    w = aiq_env.start_worker(AIQ_CACHE_PATH=str(cache), AIQ_KAFKA_GROUP_ID=f"after-{aiq_env.tag}",
                             AIQ_WORKER_MAX_INFLIGHT=100)
    results = Results(aiq_env)
    final = f"w{len(aiq_env.workers) - 1}-{aiq_env.tag}"
    try:
        # The killed rounds answered most ids already: wait for the last worker's answers.
        ids = {j["id"] for j in jobs}
        deadline = time.time() + 120
        got = {}
        while time.time() < deadline:
            with results.lock:
                got = {i: r for i, rs in results.per_id.items() for r in rs
                       if i in ids and r["worker"] == final}
            if len(got) == len(ids):
                break
            time.sleep(0.1)
        assert len(got) == len(ids), f"{len(ids) - len(got)} jobs not answered by {final}"
    finally:
        results.close()
    hits = sum(1 for r in got.values() if r["cache"]["hit"])
    assert hits >= entries, (hits, entries)
    assert sim.stats()["requests"] - before <= len(jobs) - entries
    assert w.stop() == 0, w.output()[-3000:]
    print(f"\n{kills} SIGKILLs; {entries} entries survived and verified; {hits} hits after")
