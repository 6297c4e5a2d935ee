#!/usr/bin/env python3
"""End-to-end jobs/s with a 0 % and a 100 % cache-hit workload at the same provider latency.

One worker, the same N jobs twice: first with payloads nobody asked before (every job a
model call), then the same payloads under new ids (every job a cache hit). Reports results
per second for both rounds, side by side, and the model calls the sim counted. Needs a
build and a running broker (tools/kafka/kafka.sh start).

  bench/cache_hit_e2e.py [--jobs 5000] [--latency-ms 50] [--inflight 50] [--runs 3]
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
from aiqtest import BROKERS, Env, binary, run  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402


def round_rate(env, jobs, consumer):
    """Submits jobs and returns results/s from submit start to the last result."""
    want = {j["id"] for j in jobs}
    t0 = time.time()
    r = run([binary("aiq-submit"), "-q", "-b", BROKERS, "--prefix", env.prefix, "-"],
            input="".join(json.dumps(j) + "\n" for j in jobs))
    assert r.returncode == 0, r.stderr
    seen, hits = set(), 0
    deadline = t0 + 600
    while seen != want and time.time() < deadline:
        m = consumer.poll(0.2)
        if m is None or m.error():
            continue
        res = json.loads(m.value())
        if res["job_id"] in want and res["job_id"] not in seen:
            seen.add(res["job_id"])
            hits += res["cache"]["hit"]
    elapsed = time.time() - t0
    assert seen == want, f"{len(want - seen)} results missing"
    return len(jobs) / elapsed, hits


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--latency-ms", type=int, default=50)
    ap.add_argument("--inflight", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    miss_rates, hit_rates = [], []
    for run_no in range(a.runs):
        env = Env(pathlib.Path(tempfile.mkdtemp()))
        try:
            sim = env.start_sim(latency_ms=a.latency_ms)
            env.start_worker(AIQ_WORKER_MAX_INFLIGHT=a.inflight, AIQ_LOG_LEVEL="warn")
            env.wait_group_stable(1)
            c = env.consumer()
            c.assign([TopicPartition(env.results_topic, p, 0) for p in range(env.partitions)])
            cold = [{"id": f"cold-{i}", "operation": "vc-analysis",
                     "payload": {"company": f"Company {i}", "run": run_no}}
                    for i in range(a.jobs)]
            warm = [dict(j, id=j["id"].replace("cold", "warm")) for j in cold]
            miss, miss_hits = round_rate(env, cold, c)
            calls = sim.stats()["requests"]
            hit, hits = round_rate(env, warm, c)
            calls_after = sim.stats()["requests"]
            c.close()
            print(f"run {run_no + 1}: 0 % hit {miss:.0f} jobs/s ({calls} model calls, "
                  f"{miss_hits} hits); 100 % hit {hit:.0f} jobs/s ({calls_after - calls} "
                  f"model calls, {hits} hits)", flush=True)
            miss_rates.append(miss)
            hit_rates.append(hit)
        finally:
            env.close()
    m, h = statistics.median(miss_rates), statistics.median(hit_rates)
    print(f"\n| workload | jobs/s (median of {a.runs}) |\n| --- | --- |\n"
          f"| 0 % hit, provider {a.latency_ms} ms, {a.inflight} in flight | {m:.0f} |\n"
          f"| 100 % hit | {h:.0f} |\n| ratio | {h / m:.1f}x |")


if __name__ == "__main__":
    main()
