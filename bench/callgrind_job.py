#!/usr/bin/env python3
"""Instructions per job of aiq-worker, counted by valgrind's callgrind: repeatable on a busy
machine (it counts instructions, not seconds), so two builds compare side by side.

  bench/callgrind_job.py [--jobs N] [--top K] [--build-dir DIR ...]

For each build: bedrock-sim (5 ms), one aiq-worker under callgrind (max_inflight 50), a
warm-up of 100 jobs, then the counters are zeroed (callgrind_control -z) and N jobs run
on the miss path (every job a model call), a dump is taken, N more jobs with the same
payloads run on the hit path (every job a cache hit), and a second dump is taken.
Prints instructions per job (all threads: the loop and librdkafka's) and the functions
with the most self instructions on the miss path. Needs a broker (AIQ_KAFKA_BROKERS) and
valgrind; takes a few minutes per build."""
import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))


def say(msg):
    print(f"callgrind: {msg}", file=sys.stderr, flush=True)


def total_ir(path):
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def top_functions(path, k):
    out = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100", path], capture_output=True,
                         text=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(\S.*)", line)
        # Frames that only hold the call tree open (main, thread starts) are not work.
        if m and "PROGRAM TOTALS" not in line and not re.search(
                r":(main|\(below main\)|start_thread|clone|__libc_start_main\S*) |ld-linux", m.group(3)):
            rows.append((int(m.group(1).replace(",", "")), float(m.group(2)), m.group(3)))
    return rows[:k]


def run_build(build, jobs, top):
    os.environ["AIQ_BUILD_DIR"] = build
    import importlib
    import aiqtest
    importlib.reload(aiqtest)  # it reads AIQ_BUILD_DIR when imported
    from aiqtest import BROKERS, Env, binary
    from confluent_kafka import Producer
    env = Env(pathlib.Path(tempfile.mkdtemp(prefix="aiq-cg-")))
    sim = env.start_sim(latency_ms=5, contract=False)
    out = pathlib.Path(tempfile.mkdtemp(prefix="aiq-cg-out-"))
    wenv = env.worker_env(AIQ_WORKER_MAX_INFLIGHT=50)
    log = open(out / "worker.log", "w")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p",
                             binary("aiq-worker")], env=wenv, stdout=log, stderr=subprocess.STDOUT)
    try:
        env.wait_group_stable(1, timeout=120)
        results = env.consumer()
        from confluent_kafka import TopicPartition
        results.assign([TopicPartition(env.results_topic, p, 0) for p in range(env.partitions)])
        p = Producer({"bootstrap.servers": BROKERS, "linger.ms": 5})
        seen = [0]

        def send_and_wait(tag, n, payload_tag):
            for i in range(n):
                j = {"id": f"cg-{tag}-{i}", "operation": "vc-analysis",
                     "payload": {"company": f"cg {payload_tag} {i}"}}
                p.produce(env.job_topic("normal"), key=j["id"], value=json.dumps(j))
            p.flush(30)
            want = seen[0] + n
            deadline = time.time() + 600
            while seen[0] < want and time.time() < deadline:
                m = results.poll(0.5)
                if m is not None and not m.error():
                    seen[0] += 1
            if seen[0] < want:
                raise RuntimeError(f"{tag}: {want - seen[0]} results missing")

        def control(flag):
            subprocess.run(["callgrind_control", flag, str(proc.pid)], check=True,
                           capture_output=True)

        say(f"{build}: warm-up")
        send_and_wait("warm", 100, "warm")
        control("-z")
        say(f"{build}: {jobs} jobs, miss path")
        send_and_wait("miss", jobs, "run")
        control("-d")
        say(f"{build}: {jobs} jobs, hit path")
        send_and_wait("hit", jobs, "run")
        control("-d")
        time.sleep(1)
        results.close()
    finally:
        proc.send_signal(15)
        proc.wait(120)
        sim.stop()
        log.close()
    dumps = sorted(out.glob("cg.*.*"), key=lambda q: int(q.name.rsplit(".", 1)[1]))
    if len(dumps) < 2:
        raise RuntimeError(f"expected two dumps in {out}, got {dumps}")
    miss, hit = total_ir(dumps[0]), total_ir(dumps[1])
    return {"build": build, "jobs": jobs, "miss_ir_per_job": miss // jobs,
            "hit_ir_per_job": hit // jobs, "top_miss": top_functions(str(dumps[0]), top),
            "out": str(out)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--build-dir", action="append",
                    default=None, help="build to measure (repeat for side by side)")
    a = ap.parse_args()
    builds = a.build_dir or [os.environ.get("AIQ_BUILD_DIR", str(HERE.parent / "build"))]
    rows = [run_build(b, a.jobs, a.top) for b in builds]
    print("| build | instructions/job, miss path | instructions/job, hit path |")
    print("| --- | --- | --- |")
    for r in rows:
        print(f"| {r['build']} | {r['miss_ir_per_job']:,} | {r['hit_ir_per_job']:,} |")
    for r in rows:
        print(f"\nTop self instructions on the miss path, {r['build']}:")
        for ir, pct, fn in r["top_miss"]:
            print(f"  {pct:5.1f} %  {fn}")


if __name__ == "__main__":
    main()
