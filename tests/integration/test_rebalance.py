"""A second worker joins while jobs flow: the cooperative hand-over waits for in-flight
jobs and commits before the partitions move, so no job is lost and none is answered
twice."""
import json
import os
import time

from aiqtest import BROKERS, binary, run

N_JOBS = 1000
PROTOCOL = os.environ.get("AIQ_KAFKA_GROUP_PROTOCOL", "classic")


def test_rebalance_join_under_load_no_loss_no_duplicates(aiq_env):
    sim = aiq_env.start_sim(latency_ms=50)
    w1 = aiq_env.start_worker(AIQ_WORKER_MAX_INFLIGHT=10)
    aiq_env.wait_group_stable(1)
    jobs = [{"id": f"rb-{aiq_env.tag}-{i}", "operation": "content-generation",
             "priority": "critical", "payload": {"i": i}} for i in range(N_JOBS)]
    r = run([binary("aiq-submit"), "-q", "-b", BROKERS, "--prefix", aiq_env.prefix, "-"],
            input="".join(json.dumps(j) + "\n" for j in jobs))
    assert r.returncode == 0, r.stderr
    # One priority, so the partitions that move have jobs running (the sticky assignor
    # moves the first half of the sorted partitions: the critical ones). 1,000 jobs at 10 in flight and 50 ms each take 5 s alone: join in the middle, so the
    # rebalance (a few seconds) moves partitions that have jobs running.
    time.sleep(1.0)
    w2 = aiq_env.start_worker(AIQ_WORKER_MAX_INFLIGHT=10)

    aiq_env.read_all(aiq_env.results_topic, N_JOBS + 50, timeout=90,
                     stop=lambda out: len({m.key() for m in out}) >= N_JOBS)
    time.sleep(2)  # give a late duplicate the chance to show up
    keys = [m.key().decode() for m in aiq_env.read_all(aiq_env.results_topic, N_JOBS + 50,
                                                       timeout=10)]
    assert set(keys) == {j["id"] for j in jobs}, "a job was lost"
    assert len(keys) == N_JOBS, f"{len(keys) - N_JOBS} duplicate result(s)"
    assert sim.stats()["requests"] == N_JOBS
    assert "handed over" in w1.output()
    if PROTOCOL == "classic":
        # The sticky assignor moves the critical partitions, which have jobs running. Under
        # consumer (KIP-848) the broker's assignor picks what moves, often idle partitions.
        assert "running job(s) of revoked partitions" in w1.output(), "the revoke did not wait"
    assert w1.stop() == 0 and w2.stop() == 0
    for t, p, committed, end in aiq_env.committed_vs_end():
        if end > 0:
            assert committed == end, (t, p, committed, end)
