"""Host-shared breaker state is scoped by deployment (topic prefix): on one cache.path, a
worker of another prefix pointed at a dead endpoint opens its own breaker only; the other
deployment's jobs still succeed and `aiq-admin breaker show` of each prefix shows what that
prefix's workers act on. Two workers of one prefix still share the host state (tested with
the prefix's breaker topic deleted, so the host store is the only link), and an old unscoped
store is ignored with a log line."""
import os

from confluent_kafka.admin import AdminClient

from aiqtest import BROKERS, Env, Results, binary, jobs, run, submit

FAST_FAIL = dict(AIQ_BREAKER_FAILURES=3, AIQ_BREAKER_FAILURE_RATE_PCT=0,
                 AIQ_BREAKER_COOLDOWN_MS=120000, AIQ_WORKER_RETRY_BASE_MS=10,
                 AIQ_WORKER_RETRY_MAX_MS=20, AIQ_WORKER_REQUEUE=0, AIQ_WORKER_MAX_INFLIGHT=2)
DEAD = "http://127.0.0.1:9"  # discard port: connection refused, a breaker failure


def breaker_show(prefix, cache):
    r = run([binary("aiq-admin"), "-b", BROKERS, "--prefix", prefix, "breaker", "show",
             "--cache-path", cache])
    return r.returncode, r.stdout, r.stderr


def test_breakers_scoped_by_prefix_and_shared_within_it(aiq_env, tmp_path):
    sim = aiq_env.start_sim(latency_ms=2)
    cache = str(tmp_path / "host")
    os.makedirs(os.path.join(cache, "breakers"))
    with open(os.path.join(cache, "breakers", "data.mdb"), "wb") as f:
        f.write(b"an unscoped store of an older aiq")
    (tmp_path / "other").mkdir()
    other = Env(tmp_path / "other")
    other.sim = sim  # the same sim; aiq_env stops it
    admin = AdminClient({"bootstrap.servers": BROKERS})
    for fut in admin.delete_topics([other.prefix + "breaker"]).values():
        fut.result(30)
    res_a, res_b = Results(aiq_env), Results(other)
    try:
        prod = aiq_env.start_worker(AIQ_CACHE_PATH=cache)
        dead = other.start_worker(AIQ_CACHE_PATH=cache, AIQ_BEDROCK_ENDPOINT=DEAD, **FAST_FAIL)
        aiq_env.wait_group_stable(1)
        other.wait_group_stable(1)

        # The test deployment's breaker opens against the dead endpoint.
        bad = jobs(other.tag, "dead", 10)
        submit(other, bad)
        got = res_b.wait([j["id"] for j in bad])
        assert any(r["error"]["kind"] == "breaker_open" for r in got.values()), got
        rc, out, err = breaker_show(other.prefix, cache)
        assert rc == 0 and " open " in out and "this host" in out, (out, err)

        # Production on the same cache.path: its breaker stays closed, its jobs succeed.
        good = jobs(aiq_env.tag, "prod", 20)
        submit(aiq_env, good)
        got = res_a.wait([j["id"] for j in good])
        assert all(r["status"] == "succeeded" for r in got.values()), \
            [r for r in got.values() if r["status"] != "succeeded"][:3]
        rc, out, err = breaker_show(aiq_env.prefix, cache)
        assert rc == 0 and "no breaker has changed state yet" in out, (out, err)

        # A second worker of the test prefix, healthy endpoint, shares the open breaker
        # through the host store alone (the prefix has no breaker topic): no model call.
        calls = sim.stats()["requests"]
        other.start_worker(AIQ_CACHE_PATH=cache, **FAST_FAIL)
        dead.stop()
        other.wait_group_stable(1)
        more = jobs(other.tag, "shared", 10)
        submit(other, more)
        got = res_b.wait([j["id"] for j in more])
        assert all(r["error"]["kind"] == "breaker_open" for r in got.values()), got
        assert sim.stats()["requests"] == calls

        for w in (prod, other.workers[-1]):
            assert "unscoped store of an older aiq" in w.output()
            assert "ignored" in w.output()
    finally:
        res_a.close()
        res_b.close()
        other.sim = None
        other.close()
