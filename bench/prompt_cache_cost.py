#!/usr/bin/env python3
"""Cost of N jobs of one operation with and without a cachePoint after its static system
prompt ("cache_point": true in the operations file), on bedrock-sim's prompt cache.

One worker per round, the same N jobs (distinct payloads, the result cache bypassed so every
job is a model call) against the operation as shipped (vc-analysis's system prompt) and
against one with a long static system prompt (a rubric of ~2,200 tokens by the sim's count, past the 2,048-token
minimum Claude 3.5 Haiku needs before Bedrock caches a prefix; bedrock-sim has no minimum).
Costs are the results' usage.cost_usd, summed: the operations file's prices for Claude 3.5
Haiku (input 0.0008, output 0.004, cache read 0.00008, cache write 0.001 USD per 1k tokens).
Needs a build with the bedrock-sim that models the prompt cache, and a running broker.

  bench/prompt_cache_cost.py [--jobs 1000] [--latency-ms 20] [--inflight 50]
"""
import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
from aiqtest import BROKERS, ROOT, Env, binary, run  # noqa: E402
from confluent_kafka import TopicPartition  # noqa: E402

MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
PRICES = {"anthropic.claude-3-5-haiku-20241022-v1:0": {
    "usd_per_1k_input": 0.0008, "usd_per_1k_output": 0.004,
    "usd_per_1k_cache_read": 0.00008, "usd_per_1k_cache_write": 0.001}}
RUBRIC = ("Score each channel from 0 to 100. For the Google Business Profile weigh completeness "
          "(hours, photos, menu, attributes), review volume, average rating, answer rate and "
          "answer speed. For social media weigh posting frequency, engagement per post and "
          "follower growth. For the website weigh mobile speed, local keywords, structured "
          "data and a visible booking path. ")


def ops_file(tmp, system, cache_point):
    shipped = json.load(open(os.path.join(ROOT, "config", "operations.json")))
    op = dict(shipped["operations"]["vc-analysis"])
    op.pop("personas", None)
    op.update(model=MODEL, system=system, cache_point=cache_point, max_tokens=300)
    doc = {"operations": {"*": shipped["operations"]["*"], "vc-analysis": op}, "models": PRICES}
    path = tmp / f"ops-{int(cache_point)}-{len(system)}.json"
    path.write_text(json.dumps(doc))
    return str(path)


def one_round(n, latency_ms, inflight, system, cache_point):
    env = Env(pathlib.Path(tempfile.mkdtemp()))
    try:
        sim = env.start_sim(latency_ms=latency_ms)
        env.start_worker(AIQ_WORKER_MAX_INFLIGHT=inflight, AIQ_LOG_LEVEL="warn",
                         AIQ_WORKER_OPERATIONS_FILE=ops_file(env.tmp, system, cache_point))
        env.wait_group_stable(1)
        c = env.consumer()
        c.assign([TopicPartition(env.results_topic, p, 0) for p in range(env.partitions)])
        example = json.load(open(os.path.join(ROOT, "config", "operations.json")))[
            "operations"]["vc-analysis"]["example"]
        jobs = [{"id": f"pc-{i}", "operation": "vc-analysis", "cache": {"bypass": True},
                 "payload": dict(example, businessName=f"Business {i}", requestId=f"r{i}")}
                for i in range(n)]
        t0 = time.time()
        r = run([binary("aiq-submit"), "-q", "-b", BROKERS, "--prefix", env.prefix, "-"],
                input="".join(json.dumps(j) + "\n" for j in jobs))
        assert r.returncode == 0, r.stderr
        seen, sums = set(), {"cost": 0.0, "input": 0, "output": 0, "read": 0, "write": 0}
        while len(seen) < n and time.time() < t0 + 600:
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            res = json.loads(m.value())
            if res["job_id"] in seen:
                continue
            seen.add(res["job_id"])
            assert res["status"] == "succeeded", res
            u = res["usage"]
            assert u["cost_usd"] is not None, res
            sums["cost"] += u["cost_usd"]
            sums["input"] += u["input_tokens"]
            sums["output"] += u["output_tokens"]
            sums["read"] += u["cache_read_input_tokens"]
            sums["write"] += u["cache_write_input_tokens"]
        c.close()
        assert len(seen) == n, f"{n - len(seen)} results missing"
        sums["sim_cache"] = sim.stats().get("prompt_cache", {})
        return sums
    finally:
        env.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--latency-ms", type=int, default=20)
    ap.add_argument("--inflight", type=int, default=50)
    a = ap.parse_args()
    shipped = json.load(open(os.path.join(ROOT, "config", "operations.json")))[
        "operations"]["vc-analysis"]["system"]
    long_system = shipped + "\n\n" + RUBRIC * 24
    print(f"| system prompt | cachePoint | cost of {a.jobs} jobs (USD) | input tokens | "
          "cache read | cache write | output tokens |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, system in (("shipped vc-analysis (%d chars)" % len(shipped), shipped),
                          ("long static rubric (%d chars)" % len(long_system), long_system)):
        base = None
        for cp in (False, True):
            s = one_round(a.jobs, a.latency_ms, a.inflight, system, cp)
            saved = "" if base is None else f" ({100 * (1 - s['cost'] / base):.0f} % less)"
            base = s["cost"] if base is None else base
            print(f"| {label} | {'yes' if cp else 'no'} | {s['cost']:.4f}{saved} | "
                  f"{s['input']:,} | {s['read']:,} | {s['write']:,} | {s['output']:,} |",
                  flush=True)


if __name__ == "__main__":
    main()
