#!/usr/bin/env python3
"""Where do aiq-worker's slots go? One littles-style run (bench/run.py's harness) of one worker
against bedrock-sim, sampling during the run:

  - the worker's /metrics gauges: jobs in slots, model calls in flight / waiting, the adaptive
    limit, the backlog;
  - `ss`: connections to the sim, how many of aiq's sockets hold an answer aiq has not read yet
    (its loop is behind) and how many of the sim's hold a request the sim has not read (the sim
    is behind), TIME-WAIT sockets (connection churn);
  - /proc/<worker>/task/<loop thread>/schedstat: time the loop thread ran and time it waited
    runnable for a CPU (a loop that is never idle is the bottleneck, whatever its CPU share).

  bench/probe_inflight.py C JOBS fixed|lognormal [ENV=VALUE ...]

ENV=VALUE pairs are worker settings (e.g. AIQ_WORKER_BACKLOG=4000 AIQ_BEDROCK_ADAPTIVE=0).
Needs what bench/run.py needs: AIQ_BUILD_DIR, AIQ_KAFKA_BROKERS, bench/setup.sh.
Prints jobs/s and % of C/L, then the medians of the samples taken in the steady state (between
the warm-up and the drain, the window jobs/s is measured over).
"""
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402

GAUGES = ("aiq_inflight", "aiq_model_calls_inflight", "aiq_model_calls_waiting",
          "aiq_model_concurrency_limit")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ss_lines(state, flt):
    out = subprocess.run(["ss", "-tanH", "state", state, flt], capture_output=True, text=True)
    return out.stdout.splitlines()


def unread(lines):
    """Sockets with bytes in their receive queue (first column of `ss -H state ...`)."""
    return sum(1 for line in lines if int(line.split()[0]) > 0)


def schedstat(pid):
    """(ns on CPU, ns waiting runnable) of the worker's main (loop) thread."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            run_ns, wait_ns, _ = (int(x) for x in f.read().split())
        return run_ns, wait_ns
    except (OSError, ValueError):
        return None


class Sampler(threading.Thread):
    def __init__(self, admin_port):
        super().__init__(daemon=True)
        self.admin_port, self.sim_port, self.samples = admin_port, None, []
        self.stop = threading.Event()

    def sample(self):
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        txt = urllib.request.urlopen(url, timeout=2).read().decode()
        g = {}
        for name in GAUGES:
            m = re.search(rf"^{name}\{{[^}}]*\}} (\S+)", txt, re.M)
            g[name] = float(m.group(1)) if m else None
        g["backlog"] = sum(float(x) for x in
                           re.findall(r"^aiq_backlog\{[^}]*\} (\S+)", txt, re.M))
        if self.sim_port:
            cli = ss_lines("established", f"( dport = :{self.sim_port} )")
            g["conns"], g["aiq_unread"] = len(cli), unread(cli)
            g["sim_unread"] = unread(ss_lines("established", f"( sport = :{self.sim_port} )"))
            g["time_wait"] = len(ss_lines("time-wait", f"( dport = :{self.sim_port} )"))
        return g

    def run(self):
        while not self.stop.is_set():
            try:
                self.samples.append((time.time(), self.sample()))
            except OSError:
                pass  # the worker is not listening yet, or already gone
            time.sleep(0.25)


def median(rows, key):
    v = sorted(r[key] for r in rows if r.get(key) is not None)
    return v[len(v) // 2] if v else None


def main():
    if len(sys.argv) < 4 or sys.argv[3] not in ("fixed", "lognormal"):
        sys.exit(__doc__)
    c, n, dist = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    settings = dict(a.split("=", 1) for a in sys.argv[4:])
    admin_port = free_port()
    settings["AIQ_ADMIN_LISTEN"] = f"127.0.0.1:{admin_port}"
    sim_args = {"latency_ms": 100}
    mean_s = 0.1
    if dist == "lognormal":
        sim_args["extra"], mean_s = R.LOGNORMAL, R.LOGNORMAL_MEAN_S
    sampler = Sampler(admin_port)
    sched = {}

    # Learn the sim's port when the harness starts it, and read the loop thread's schedstat
    # at the start and end of the steady state (the same window jobs/s is measured over).
    class Iso(R.IsolatedRun):
        def __init__(self, sa):
            super().__init__(sa)
            sampler.sim_port = int(self.sim.url.rstrip("/").rsplit(":", 1)[1])

    real_cpu = R.cpu_seconds

    def cpu_seconds(pid):
        sched.setdefault("t0" if "t0" not in sched else "t1", (time.time(), schedstat(pid)))
        return real_cpu(pid)

    R.IsolatedRun, R.cpu_seconds = Iso, cpu_seconds
    sampler.start()
    s = R.one_backlog_run("aiq", c, n, sim_args, f"probe C={c} {dist}", **settings)
    sampler.stop.set()
    lo, hi = (sched["t0"][0], sched["t1"][0]) if "t1" in sched else (0, time.time())
    mid = [g for t, g in sampler.samples if lo <= t <= hi]
    loop = ""
    if "t1" in sched and sched["t0"][1] and sched["t1"][1]:
        span = sched["t1"][0] - sched["t0"][0]
        ran = (sched["t1"][1][0] - sched["t0"][1][0]) / 1e9 / span
        waited = (sched["t1"][1][1] - sched["t0"][1][1]) / 1e9 / span
        loop = f"; loop thread ran {100 * ran:.0f} % and waited for a CPU {100 * waited:.0f} %"
    print(f"C={c} {dist} {' '.join(sys.argv[4:])}: {s['jobs_per_s']:.0f} jobs/s = "
          f"{100 * s['jobs_per_s'] * mean_s / c:.0f} % of C/L; worker CPU {s['cpu_util']:.2f} "
          f"cores{loop}; provider_ms p50/p99 {s.get('provider_p50_ms')}/"
          f"{s.get('provider_p99_ms')}; sim max in flight {s.get('sim_max_inflight')}")
    print("  medians: " + ", ".join(
        f"{key} {median(mid, key)}" for key in (*GAUGES, "backlog", "conns", "aiq_unread",
                                                 "sim_unread", "time_wait")))


if __name__ == "__main__":
    main()
