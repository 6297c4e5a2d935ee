#!/usr/bin/env python3
"""Priority isolation: a `low` backlog and a steady `critical` stream at a share of capacity.

Reports the critical jobs' queue wait (timings.queued_ms, p50/p99), their end-to-end
latency, and the low throughput while both run. Needs a build and a running broker.

  bench/priority_isolation.py [--low 100000] [--critical-share 0.1] [--seconds 30]
      [--latency-ms 50] [--inflight 10]
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
from aiqtest import BROKERS, Env, binary, run  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))] if v else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--low", type=int, default=100000)
    ap.add_argument("--critical-share", type=float, default=0.1)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--latency-ms", type=int, default=50)
    ap.add_argument("--inflight", type=int, default=10)
    a = ap.parse_args()
    import pathlib, tempfile
    env = Env(pathlib.Path(tempfile.mkdtemp()))
    try:
        env.start_sim(latency_ms=a.latency_ms)
        env.start_worker(AIQ_WORKER_MAX_INFLIGHT=a.inflight)
        env.wait_group_stable(1)
        capacity = a.inflight * 1000.0 / a.latency_ms
        print(f"priority_isolation: capacity ~{capacity:.0f} jobs/s; queueing {a.low} low jobs")
        low = "".join(json.dumps({"id": f"low-{i}", "operation": "x", "priority": "low",
                                  "payload": {"i": i}}) + "\n" for i in range(a.low))
        r = run([binary("aiq-submit"), "-q", "-b", BROKERS, "--prefix", env.prefix, "-"], input=low)
        assert r.returncode == 0, r.stderr
        rate = capacity * a.critical_share
        print(f"priority_isolation: critical stream at {rate:.1f}/s for {a.seconds} s")
        prod = Producer({"bootstrap.servers": BROKERS, "linger.ms": 0})
        sent = {}
        t0 = time.time()
        n = 0
        while time.time() - t0 < a.seconds:
            due = t0 + n / rate
            if time.time() < due:
                time.sleep(due - time.time())
            jid = f"crit-{n}"
            prod.produce(env.job_topic("critical"), key=jid, value=json.dumps(
                {"id": jid, "operation": "x", "priority": "critical", "payload": {"n": n}}))
            prod.poll(0)
            sent[jid] = time.time()
            n += 1
        prod.flush(10)
        c = Consumer({"bootstrap.servers": BROKERS, "group.id": f"bench-{env.tag}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.assign([TopicPartition(env.results_topic, p, 0) for p in range(env.partitions)])
        crit_wait, crit_e2e, low_done, low_times = [], [], 0, []
        deadline = time.time() + 60
        while time.time() < deadline and len(crit_wait) < n:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            res = json.loads(m.value())
            if res["job_id"].startswith("crit-"):
                crit_wait.append(res["timings"]["queued_ms"])
                crit_e2e.append(res["timings"]["total_ms"])
            else:
                low_done += 1
        c.close()
        low_window = low_done  # low results produced during the run (read so far)
        print(f"priority_isolation: critical jobs {len(crit_wait)}/{n}")
        print(f"  critical queue wait   p50 {pct(crit_wait, .5)} ms   p99 {pct(crit_wait, .99)} ms")
        print(f"  critical worker total p50 {pct(crit_e2e, .5)} ms   p99 {pct(crit_e2e, .99)} ms")
        print(f"  low jobs answered while the stream ran: {low_window} "
              f"(~{low_window / a.seconds:.0f}/s; capacity left for low ~{capacity - rate:.0f}/s)")
    finally:
        env.close()


if __name__ == "__main__":
    main()
