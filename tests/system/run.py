#!/usr/bin/env python3
"""Fault-injection system suite: real aiq-worker, bedrock-sim and Kafka processes, with
faults injected while jobs flow. Every scenario ends with exactly one verdict line:

  verdict: SCENARIO submitted=N answered=N dlq=N lost=N duplicated=N statuses=... result=PASS|FAIL

submitted  = job ids the broker acknowledged to aiq-submit
answered   = submitted ids with at least one result on the results topic (any status)
dlq        = submitted ids without a result but with a dead letter (and its reason)
lost       = submitted - answered - dlq; must be 0
duplicated = results beyond the first per job id (at-least-once allows them: reported only)

A scenario also FAILs when a worker crashes on its own, a worker does not drain on SIGTERM
(exit code not 0), or a scenario-specific check fails (printed on a `check:` line).

The suite runs its OWN Kafka broker (tools/kafka/kafka.sh) on AIQ_SYSTEM_KAFKA_PORT
(default 19092), AIQ_SYSTEM_KAFKA_CONTROLLER_PORT (19093), data in AIQ_SYSTEM_KAFKA_DIR
(<repo>/.kafka-system), because the broker-restart scenario stops and starts it; it never
touches a broker other tests use. Binaries come from AIQ_BUILD_DIR (default <repo>/build).
"""
import argparse
import collections
import datetime
import json
import os
import pathlib
import random
import subprocess
import sys
import threading
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
KAFKA_PORT = os.environ.get("AIQ_SYSTEM_KAFKA_PORT", "19092")
KAFKA_CPORT = os.environ.get("AIQ_SYSTEM_KAFKA_CONTROLLER_PORT", "19093")
KAFKA_DIR = os.environ.get("AIQ_SYSTEM_KAFKA_DIR", str(ROOT / ".kafka-system"))
BROKERS = f"127.0.0.1:{KAFKA_PORT}"

# aiqtest (the tests' shared helpers) reads the broker address when it is imported.
os.environ["AIQ_KAFKA_BROKERS"] = BROKERS
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from aiqtest import (BUILD, Broker, Env, HungEndpoint, Results, binary, free_port,  # noqa: E402
                     percentile, rfc3339, run, set_topic_config, sim_post)

PROGRESS_S = 5.0
FAR_TIMEOUT_MS = 3600000  # for scenarios about throughput, not deadlines


def say(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def suite_broker():
    """The suite's own broker (kafka.sh on the suite's ports and data dir)."""
    return Broker(KAFKA_PORT, KAFKA_CPORT, KAFKA_DIR)


# ---- submitting ----------------------------------------------------------------------------


class Submitter:
    """Feeds jobs to one aiq-submit process through its stdin, at `rate` jobs/s (None = as
    fast as it reads). `make(i, now)` builds job i. The ids aiq-submit prints are the ones
    the broker acknowledged: they alone count as submitted."""

    def __init__(self, env, n, make, rate=None):
        self.n, self.make, self.rate = n, make, rate
        self.sent = 0
        self.deadlines = {}  # id -> deadline (epoch s), from created_at + timeout_ms
        self.acked = set()
        self.done = threading.Event()
        self.rc = None
        self.stderr = ""
        self.proc = subprocess.Popen(
            [binary("aiq-submit"), "-b", BROKERS, "--prefix", env.prefix, "-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._errs = threading.Thread(target=self._read_err, daemon=True)
        self._writer = threading.Thread(target=self._write, daemon=True)
        for t in (self._reader, self._errs, self._writer):
            t.start()

    def _write(self):
        t0 = time.time()
        step = 200 if self.rate is None else max(1, int(self.rate / 20))
        try:
            while self.sent < self.n:
                now = time.time()
                if self.rate is not None:
                    due = min(self.n, int((now - t0) * self.rate) + 1)
                    if due <= self.sent:
                        time.sleep(0.02)
                        continue
                    batch = due - self.sent
                else:
                    batch = min(step, self.n - self.sent)
                lines = []
                for i in range(self.sent, self.sent + batch):
                    job = self.make(i, now)
                    job.setdefault("created_at", rfc3339(now))
                    self.deadlines[job["id"]] = now + job.get("timeout_ms", 45000) / 1000
                    lines.append(json.dumps(job))
                self.proc.stdin.write("\n".join(lines) + "\n")
                self.proc.stdin.flush()
                self.sent += batch
        finally:
            self.proc.stdin.close()

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line:
                self.acked.add(line)
        self.rc = self.proc.wait()
        self.done.set()

    def _read_err(self):
        self.stderr = self.proc.stderr.read()

    def wait(self, timeout):
        self.done.wait(timeout)
        self._errs.join(5)
        return self.done.is_set()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()


# ---- collecting ----------------------------------------------------------------------------


class Collector(Results):
    """Reads the results and DLQ topics from the beginning in a background thread
    (aiqtest.Results). What it keeps differs from Results: per job id (arrival_s, status,
    result, record timestamp ms), and the dead letters by job id with their error kind."""

    def __init__(self, env):
        # id -> [(arrival_s, status, result, record timestamp ms)]
        self.results = collections.defaultdict(list)
        self.dlq = {}  # id -> error kind
        self.dlq_unknown = 0  # dead letters without a readable job id
        self.records = 0
        super().__init__(env, topics=[env.results_topic, env.dlq_topic],
                         **{"fetch.wait.max.ms": 50})

    def take(self, m, now):
        self.records += 1
        if m.topic() == self.env.results_topic:
            r = json.loads(m.value())
            self.results[r["job_id"]].append((now, r["status"], r, m.timestamp()[1]))
        else:
            self._dead_letter(m)

    def _dead_letter(self, m):
        headers = {k: (v or b"").decode(errors="replace") for k, v in (m.headers() or [])}
        try:
            job_id = json.loads(m.value())["id"]
        except (ValueError, KeyError, TypeError):
            job_id = (m.key() or b"").decode(errors="replace") or None
        if job_id:
            self.dlq[job_id] = headers.get("aiq.dlq.error-kind", "?")
        else:
            self.dlq_unknown += 1

    def answered(self, ids):
        with self.lock:
            return sum(1 for i in ids if i in self.results or i in self.dlq)


# ---- one scenario's run --------------------------------------------------------------------


class Run:
    """The processes and bookkeeping of one scenario: Env (topics, sim, workers), one
    Submitter, one Collector, a progress thread and a crash watch."""

    def __init__(self, name, workdir, settings):
        self.name = name
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = Env(workdir)
        self.settings = settings  # worker environment shared by every worker
        self.collector = Collector(self.env)
        self.sub = None
        self.killed = set()  # Worker objects this run killed or stopped on purpose
        self.crashes = []
        self.checks = []  # (ok, text): scenario-specific checks
        self.t0 = time.time()
        self._stop = threading.Event()
        self._progress = threading.Thread(target=self._report, daemon=True)
        self._progress.start()

    # -- workers
    def start_worker(self, **extra):
        s = dict(self.settings)
        s.update(extra)
        return self.env.start_worker(**s)

    def live_workers(self):
        return [w for w in self.env.workers if w not in self.killed and w.proc.poll() is None]

    def sigkill(self, w):
        self.killed.add(w)
        w.proc.kill()
        w.proc.wait()

    def sigterm(self, w, timeout=60):
        self.killed.add(w)
        t = time.time()
        rc = w.stop(timeout=timeout)
        self.check(rc == 0, f"{os.path.basename(w.log_path)} drained on SIGTERM: exit {rc} "
                            f"after {time.time() - t:.1f} s")
        return rc

    def _watch_crashes(self):
        for w in self.env.workers:
            if w in self.killed or w.proc.poll() is None:
                continue
            self.killed.add(w)
            self.crashes.append(w)
            say(f"CRASH: {w.log_path} exited with {w.proc.returncode} on its own")

    # -- jobs
    def submit(self, n, make=None, rate=None):
        tag = self.env.tag
        make = make or (lambda i, now: plain_job(self.name, tag, i))
        self.sub = Submitter(self.env, n, make, rate)
        return self.sub

    def answered(self):
        return self.collector.answered(self.sub.acked if self.sub.done.is_set()
                                       else list(self.sub.deadlines))

    def add_submitted(self, ids):
        """Counts job ids produced outside aiq-submit (raw records) as submitted."""
        for i in ids:
            self.sub.deadlines[i] = time.time() + FAR_TIMEOUT_MS / 1000
            self.sub.acked.add(i)

    def check(self, ok, text):
        self.checks.append((bool(ok), text))
        say(f"check: {'ok' if ok else 'FAILED'}: {text}")

    def _report(self):
        last_n, last_t = 0, time.time()
        while not self._stop.wait(PROGRESS_S):
            self._watch_crashes()
            if not self.sub:
                continue
            n, now = self.answered(), time.time()
            rate = (n - last_n) / (now - last_t)
            last_n, last_t = n, now
            say(f"{self.name}: t={now - self.t0:.0f}s sent={self.sub.sent}/{self.sub.n} "
                f"answered={n} rate={rate:.0f}/s workers={len(self.live_workers())}")

    def wait_answered(self, stall_s):
        """Waits for aiq-submit to finish and every acknowledged job to be answered, or
        until no new answer came for stall_s seconds."""
        last_n, last_change = -1, time.time()
        while True:
            if self.sub.done.is_set():
                if self.collector.answered(self.sub.acked) >= len(self.sub.acked):
                    return True
            n = self.answered()
            if n != last_n:
                last_n, last_change = n, time.time()
            elif time.time() - last_change > stall_s:
                say(f"{self.name}: no new answer for {stall_s} s; giving up waiting")
                return False
            time.sleep(0.2)

    def wait_until_answered(self, count, timeout):
        """Blocks until `count` jobs are answered (fault timing keyed to progress)."""
        deadline = time.time() + timeout
        while time.time() < deadline and self.answered() < count:
            time.sleep(0.1)

    # -- verdict
    def finish(self, stall_s):
        complete = self.wait_answered(stall_s)
        if not self.sub.wait(120):
            self.sub.kill()
            self.check(False, "aiq-submit did not finish")
        self._watch_crashes()
        for w in self.live_workers():
            self.sigterm(w)
        self._stop.set()
        caught_up = self.collector.catch_up()
        self.collector.close(15)
        if not caught_up:
            self.check(False, "could not read the results topic to its end")
        elapsed = time.time() - self.t0
        line, ok = self.verdict(complete)
        self.env.close()
        return line, ok, elapsed

    def verdict(self, complete):
        acked = self.sub.acked
        col = self.collector
        res = col.results
        answered = {i for i in acked if i in res}
        dlq = {i for i in acked if i not in res and i in col.dlq}
        lost = len(acked) - len(answered) - len(dlq)
        dup = sum(len(res[i]) - 1 for i in answered)
        statuses = collections.Counter(res[i][0][1] for i in answered)
        order = ["succeeded", "degraded", "failed", "expired", "rejected"]
        st = ",".join(f"{s}:{statuses[s]}" for s in order if statuses[s] or s == "succeeded")
        if dlq:
            kinds = collections.Counter(col.dlq[i] for i in dlq)
            say(f"dlq reasons: {dict(kinds)}")
        if self.sub.sent != len(acked):
            say(f"note: {self.sub.sent - len(acked)} of {self.sub.sent} jobs were not "
                f"acknowledged by the broker (aiq-submit exit {self.sub.rc}; "
                f"{self.sub.stderr.strip()[-300:]!r}); they are not counted as submitted")
        if lost:
            missing = sorted(acked - answered - dlq)
            say(f"lost job ids (first 10): {missing[:10]}")
        if self.crashes:
            self.check(False, "workers crashed: " + ", ".join(w.log_path for w in self.crashes))
        ok = (lost == 0 and len(acked) > 0 and all(c for c, _ in self.checks)
              and (complete or lost == 0))
        line = (f"verdict: {self.name} submitted={len(acked)} answered={len(answered)} "
                f"dlq={len(dlq)} lost={lost} duplicated={dup} statuses={st} "
                f"result={'PASS' if ok else 'FAIL'}")
        return line, ok


def plain_job(scenario, tag, i, **extra):
    job = {"id": f"{scenario}-{tag}-{i:07d}", "operation": "vc-analysis",
           "priority": ("normal", "low", "high", "normal")[i % 4],
           "payload": {"company": f"{scenario} company {i}", "n": i},
           "timeout_ms": FAR_TIMEOUT_MS}
    job.update(extra)
    return job


# ---- scenarios -----------------------------------------------------------------------------
# Each takes (run_dir, jobs, quick) and returns a finished Run. Sizes: `full` follows the
# issue (100,000 jobs / 3 workers for SIGKILL, 60 s outage, 40 s spike); `quick` keeps all
# scenarios together within a few minutes on a 2-core machine.

BASE = {"AIQ_WORKER_MAX_INFLIGHT": 20, "AIQ_KAFKA_SESSION_TIMEOUT_MS": 6000}


def sc_sigkill(wd, jobs, quick):
    """SIGKILL a random one of three workers every few seconds; half a second later a new
    worker replaces it (see start() for static and dynamic membership)."""
    n = jobs or (3000 if quick else 100000)
    every = 3.0 if quick else 5.0
    r = Run("sigkill", wd, dict(BASE))
    r.env.start_sim(latency_ms=10)
    slots = {}

    def start(k):
        # Slot 0 uses static membership (its replacement takes the killed process's
        # kafka.group_instance_id back at once); slots 1 and 2 are dynamic members, whose
        # death the group learns only after the session timeout, and whose replacement
        # joins as a new member: both recovery paths run in one group.
        static = {"AIQ_KAFKA_GROUP_INSTANCE_ID": f"sys-{r.env.tag}-{k}"} if k == 0 else {}
        w = r.start_worker(**static)
        slots[w] = k
    for k in range(3):
        start(k)
    r.env.wait_group_stable(3)
    r.submit(n, rate=250 if quick else None)
    kills = 0
    while not (r.sub.done.is_set() and r.answered() >= len(r.sub.acked)):
        time.sleep(every * random.uniform(0.6, 1.4))
        live = r.live_workers()
        if not live or r.sub.done.is_set() and r.answered() >= len(r.sub.acked):
            break
        victim = random.choice(live)
        r.sigkill(victim)
        kills += 1
        say(f"sigkill: killed {os.path.basename(victim.log_path)} (kill #{kills})")
        time.sleep(0.5)
        start(slots[victim])
    r.check(kills >= 3, f"{kills} workers killed during the run")
    r.stall_s = 120
    return r


def sc_broker_restart(wd, jobs, quick):
    """Stops the suite's broker (kafka.sh stop) in the middle of a run and starts it again
    with its data kept; submitting continues throughout."""
    n = jobs or (3000 if quick else 30000)
    rate = 300 if quick else 500
    down_s = 5 if quick else 20
    r = Run("broker-restart", wd, dict(BASE))
    r.env.start_sim(latency_ms=10)
    for _ in range(2):
        r.start_worker()
    r.env.wait_group_stable(2)
    r.submit(n, rate=rate)
    r.wait_until_answered(n // 3, 300)
    broker = suite_broker()
    say("broker-restart: stopping the broker")
    t = time.time()
    broker.stop()
    time.sleep(down_s)
    broker.start()
    say(f"broker-restart: broker back after {time.time() - t:.1f} s")
    r.stall_s = 120
    return r


def sc_bedrock_outage(wd, jobs, quick):
    """bedrock-sim answers every model request 503 for 60 s (quick 10 s) mid-run."""
    rate = 200
    outage_s = 10 if quick else 60
    n = jobs or (4000 if quick else 24000)
    settings = dict(BASE, AIQ_BREAKER_COOLDOWN_MS=3000 if quick else 10000)
    r = Run("bedrock-outage", wd, settings)
    sim = r.env.start_sim(latency_ms=10)
    for _ in range(2):
        r.start_worker()
    r.env.wait_group_stable(2)
    r.submit(n, make=lambda i, now: plain_job("bedrock-outage", r.env.tag, i,
                                              timeout_ms=45000), rate=rate)
    time.sleep(3 if quick else 20)
    say(f"bedrock-outage: sim outage for {outage_s} s")
    before = sim.stats()
    sim_post(sim, "/_sim/outage", {"on": True, "duration_ms": outage_s * 1000})
    time.sleep(outage_s)
    after = sim.stats()
    rejected = after.get("outage_rejected", 0) - before.get("outage_rejected", 0)
    r.check(rejected > 0, f"{rejected} model requests hit the outage")
    outage_end = time.time()
    r.stall_s = 120

    def recovered():
        # Jobs sent once the breaker's cooldown after the outage has passed (plus a margin
        # for the half-open probe) must be answered by the model again.
        since = outage_end + settings["AIQ_BREAKER_COOLDOWN_MS"] / 1000 + 2
        late = [i for i, dl in r.sub.deadlines.items() if dl - 45 >= since]
        ok = [i for i in late if (r.collector.results.get(i) or [(0, "", None)])[0][1]
              == "succeeded"]
        r.check(late and len(ok) == len(late),
                f"{len(ok)} of {len(late)} jobs sent after the outage and the breaker "
                "cooldown succeeded")
    r.post = recovered
    return r


def sc_throttle_storm(wd, jobs, quick):
    """bedrock-sim admits only 20 requests/s (429 for the rest) for 30 s (quick 8 s)."""
    n = jobs or (3000 if quick else 20000)
    rate = 300
    storm_s = 8 if quick else 30
    r = Run("throttle-storm", wd, dict(BASE, AIQ_WORKER_MAX_INFLIGHT=50))
    sim = r.env.start_sim(latency_ms=10)
    ports = [free_port(), free_port()]
    for p in ports:
        r.start_worker(AIQ_ADMIN_LISTEN=f"127.0.0.1:{p}")
    r.env.wait_group_stable(2)
    r.submit(n, make=lambda i, now: plain_job("throttle-storm", r.env.tag, i,
                                              timeout_ms=45000), rate=rate)
    time.sleep(2 if quick else 10)
    say(f"throttle-storm: quota 20 requests/s for {storm_s} s")
    before = sim.stats()
    sim_post(sim, "/_sim/config", {"quota_rps": 20})
    time.sleep(storm_s)
    sim_post(sim, "/_sim/config", {"quota_rps": 0})
    after = sim.stats()
    throttled = after.get("throttled", 0) - before.get("throttled", 0)
    r.check(throttled > 0, f"{throttled} model requests throttled (429) during the storm")
    # The adaptive limit shrank during the storm; with the quota gone and a backlog waiting
    # it must grow again (to RECOVERED_LIMIT, far above the 1-4 it falls to), else the pool
    # crawls at a few calls per worker and the backlog expires.
    deadline = time.time() + (20 if quick else 30)
    limits = []
    while time.time() < deadline:
        limits = [metric(p, "aiq_model_concurrency_limit") for p in ports]
        if all(v is not None and v >= RECOVERED_LIMIT for v in limits):
            break
        time.sleep(1)
    r.check(all(v is not None and v >= RECOVERED_LIMIT for v in limits),
            f"model concurrency limits {limits} recovered to >= {RECOVERED_LIMIT} within "
            f"{20 if quick else 30} s after the storm")
    r.stall_s = 120
    return r


RECOVERED_LIMIT = 8


def metric(port, name):
    """The first sample of metric `name` on a worker's /metrics, or None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as m:
            for line in m.read().decode().splitlines():
                if line.startswith(name + "{") or line.startswith(name + " "):
                    return float(line.split()[-1])
    except OSError:
        return None
    return None


def sc_latency_spike(wd, jobs, quick):
    """Model latency jumps to 40 s (quick 5 s) for a while; jobs carry deadlines shorter
    and longer than the spike. Every job must get an answer, and one past its deadline must
    come soon after that deadline (an error or expired answer, not silence)."""
    spike_ms = 5000 if quick else 40000
    window_s = 5 if quick else 20
    timeouts = (3000, 8000) if quick else (30000, 45000)
    rate = 100
    n = jobs or (1500 if quick else 6000)
    slack_s = 5.0 if quick else 10.0
    r = Run("latency-spike", wd, dict(BASE))
    sim = r.env.start_sim(latency_ms=10)
    for _ in range(2):
        r.start_worker()
    r.env.wait_group_stable(2)
    # Short-deadline jobs go to `high`, long ones to normal/low, as a backend service and a
    # batch pipeline would send them. AIQ_SYSTEM_SPIKE_MIXED=1 mixes both deadlines in the
    # same topics instead: then a short-deadline record can wait in Kafka behind
    # long-deadline ones that fill the backlog, and is answered up to the difference late
    # (a known limit, see RESULTS.md).
    mixed = os.environ.get("AIQ_SYSTEM_SPIKE_MIXED") == "1"

    def make(i, now):
        prio = "high" if i % 2 == 0 else ("normal", "low")[i % 4 // 2]
        extra = {} if mixed else {"priority": prio}
        return plain_job("latency-spike", r.env.tag, i, timeout_ms=timeouts[i % 2], **extra)
    r.submit(n, make=make, rate=rate)
    time.sleep(2 if quick else 10)
    say(f"latency-spike: model latency {spike_ms} ms for {window_s} s")
    sim_post(sim, "/_sim/config", {"latency_ms": spike_ms})
    time.sleep(window_s)
    sim_post(sim, "/_sim/config", {"latency_ms": 10})
    r.stall_s = spike_ms / 1000 + 120

    def late_answers():
        late, past = [], [0.0]
        for i, dl in r.sub.deadlines.items():
            got = r.collector.results.get(i)
            if got:
                past.append(got[0][0] - dl)
            if got and got[0][0] > dl + slack_s:
                late.append((got[0][0] - dl, i, got[0][2]))
        late.sort(key=lambda x: -x[0])
        for by, i, res in late[:3]:
            say(f"late by {by:.1f} s: {i} timeout {timeouts[int(i[-7:]) % 2]} ms: status "
                f"{res['status']} error {(res.get('error') or {}).get('kind')} timings "
                f"{json.dumps(res.get('timings'))}")
        r.check(not late, f"{len(late)} answers came more than {slack_s:.0f} s after their "
                          f"job's deadline (the latest {max(past):.1f} s after it)")
    r.post = late_answers
    return r


def sc_scale(wd, jobs, quick):
    """The group grows 1 -> 4 and shrinks 4 -> 1 (SIGTERM drain) while jobs flow."""
    n = jobs or (3000 if quick else 30000)
    rate = 200 if quick else 300
    r = Run("scale", wd, dict(BASE))
    r.env.start_sim(latency_ms=10)
    first = r.start_worker()
    r.env.wait_group_stable(1)
    r.submit(n, rate=rate)
    span = n / rate
    time.sleep(span / 3)
    say("scale: 1 -> 4 workers")
    extra = [r.start_worker() for _ in range(3)]
    try:
        r.env.wait_group_stable(4, timeout=60)
        r.check(True, "group stable with 4 members")
    except AssertionError as e:
        r.check(False, str(e))
    time.sleep(span / 3)
    say("scale: 4 -> 1 workers (SIGTERM)")
    for w in extra:
        r.sigterm(w)
    r.check(first.proc.poll() is None, "the first worker still runs")
    r.stall_s = 120
    return r


def sc_cache_full(wd, jobs, quick):
    """Two workers share a cache whose LMDB map is the smallest allowed (256 KiB), so it is
    full after a few hundred answers; a quarter of the jobs repeat an earlier payload."""
    n = jobs or (3000 if quick else 30000)
    cache = wd / "tiny-cache"
    ports = [free_port(), free_port()]
    map_bytes = int(os.environ.get("AIQ_SYSTEM_CACHE_BYTES", "262144"))
    r = Run("cache-full", wd, dict(BASE, AIQ_CACHE_MAX_BYTES=map_bytes, AIQ_CACHE_PATH=cache))
    r.env.start_sim(latency_ms=10)
    for p in ports:
        r.start_worker(AIQ_ADMIN_LISTEN=f"127.0.0.1:{p}")
    r.env.wait_group_stable(2)

    def make(i, now):
        # a quarter repeat the payload of the job 201 before (long answered, and itself
        # not a repeat): a hit unless evicted or dropped meanwhile
        k = i - 201 if i % 4 == 3 and i >= 201 else i
        job = plain_job("cache-full", r.env.tag, i)
        job["payload"] = {"company": f"cache-full company {k}", "notes": "x" * 200, "n": k}
        return job

    r.submit(n, make=make, rate=None if not quick else 400)
    r.stall_s = 120

    def metrics():
        evicted = entries = 0.0
        for p in ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5) as m:
                    for line in m.read().decode().splitlines():
                        if line.startswith("aiq_cache_evict"):
                            evicted += float(line.split()[-1])
                        elif line.startswith("aiq_cache_entries"):
                            entries = float(line.split()[-1])  # host-wide: same on both
            except OSError as e:
                say(f"cache-full: /metrics on {p}: {e}")
        return evicted, entries

    def before_stop():
        time.sleep(1.5)  # the metrics snapshot is refreshed each second
        r.cache_metrics = metrics()

    def post():
        evicted, entries = r.cache_metrics
        st = run([binary("aiq-admin"), "cache", "--cache-path", str(cache), "stats", "--json"])
        ver = run([binary("aiq-admin"), "cache", "--cache-path", str(cache), "verify"])
        hits = sum(1 for v in r.collector.results.values() if (v[0][2].get("cache") or {})
                   .get("hit"))
        unique = len({j for j in r.collector.results if not (r.collector.results[j][0][2]
                                                           .get("cache") or {}).get("hit")})
        # every answer that was not a hit was offered to the cache; what is neither still
        # there nor evicted was dropped because the map was full
        say(f"cache-full: map {map_bytes} bytes: {unique} answers offered, "
            f"{evicted + entries:.0f} stored ({evicted:.0f} evicted, {entries:.0f} left), "
            f"{hits} hits; stats {st.stdout.strip()[:200]}")
        r.check(evicted > 0 or evicted + entries < unique,
                f"the map filled: {evicted:.0f} entries evicted, "
                f"{max(0, unique - evicted - entries):.0f} answers not stored")
        r.check(ver.returncode == 0, f"aiq-admin cache verify: exit {ver.returncode} "
                                     f"{(ver.stdout + ver.stderr).strip()[-200:]}")
    r.before_stop = before_stop
    r.post = post
    return r


def raw_producer(**conf):
    from confluent_kafka import Producer
    c = {"bootstrap.servers": BROKERS, "compression.type": "zstd",
         "message.max.bytes": 32 * 1024 * 1024, "linger.ms": 20}
    c.update(conf)
    return Producer(c)


DLQ_MAX = 262144  # the DLQ topic's max.message.bytes in the oversized-record scenario


def sc_oversized_record(wd, jobs, quick):
    """Oversized records (issue #17) on every partition of two job topics while normal jobs
    flow: 10 MB values produced zstd-compressed (the job topics take 16 MB compressed) and
    jobs of 100,000 messages (4.6 MB); the DLQ topic takes 256 KiB. Two workers with 2 slots
    each, so on main two such records stopped a worker. Checks: every oversized record is
    dead-lettered cut to the DLQ's limit with its size and SHA-256; every normal job is
    answered; the commit of every job partition reaches its end."""
    import hashlib
    n = jobs or (1500 if quick else 6000)
    rounds = 1 if quick else 3
    r = Run("oversized-record", wd, dict(BASE, AIQ_WORKER_MAX_INFLIGHT=2))
    for prio in ("high", "normal"):
        set_topic_config(r.env.job_topic(prio), **{"max.message.bytes": 16 * 1024 * 1024})
    set_topic_config(r.env.dlq_topic, **{"max.message.bytes": DLQ_MAX})
    r.env.start_sim(latency_ms=10)
    for _ in range(2):
        r.start_worker()
    r.env.wait_group_stable(2)
    r.submit(n, rate=200 if quick else 300)
    blob = os.urandom(5 * 1024 * 1024).hex()
    many = [{"role": "user", "content": [{"text": "hello there"}]}] * 100000
    big = {}
    p = raw_producer()
    for k in range(rounds):
        time.sleep(2)
        for prio in ("high", "normal"):
            for part in range(r.env.partitions):
                for kind in ("zstd10mb", "messages100k"):
                    jid = f"oversized-{r.env.tag}-{k}-{prio}-{part}-{kind}"
                    doc = {"id": jid, "operation": "vc-analysis", "priority": prio}
                    if kind == "zstd10mb":
                        doc["payload"] = {"blob": blob}
                    else:
                        doc["messages"] = many
                    val = json.dumps(doc).encode()
                    big[jid] = hashlib.sha256(val).hexdigest(), len(val)
                    p.produce(r.env.job_topic(prio), key=jid, value=val, partition=part)
        assert p.flush(120) == 0
    r.add_submitted(big)
    say(f"oversized-record: {len(big)} oversized records produced "
        f"({min(v[1] for v in big.values())}-{max(v[1] for v in big.values())} bytes)")
    r.stall_s = 120
    letters = {}

    def before_stop():
        from confluent_kafka import TopicPartition
        c = r.env.consumer()
        c.assign([TopicPartition(r.env.dlq_topic, q, 0) for q in range(r.env.partitions)])
        deadline = time.time() + 60
        while time.time() < deadline and len(letters) < len(big):
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            h = {k: (v or b"").decode() for k, v in (m.headers() or [])}
            letters[(m.key() or b"").decode()] = (len(m.value()), h)
        c.close()

        def committed():
            return [row for row in r.env.committed_vs_end() if row[3] > 0 and row[2] != row[3]]
        behind = committed()
        deadline = time.time() + 30
        while behind and time.time() < deadline:
            time.sleep(0.5)
            behind = committed()
        r.check(not behind, f"every job partition committed to its end (behind: {behind[:3]})")

    def post():
        ok = [j for j, (sha, size) in big.items() if j in letters
              and letters[j][1].get("aiq.dlq.original-sha256") == sha
              and int(letters[j][1].get("aiq.dlq.original-size", -1)) == size
              and letters[j][1].get("aiq.dlq.truncated") == "true"
              and letters[j][0] <= DLQ_MAX]
        sizes = sorted(v[0] for v in letters.values())
        say(f"oversized-record: dead letters {len(letters)} of {len(big)}, values "
            f"{sizes[0] if sizes else '-'}-{sizes[-1] if sizes else '-'} bytes "
            f"(DLQ max.message.bytes {DLQ_MAX})")
        r.check(len(ok) == len(big), f"{len(ok)} of {len(big)} oversized records dead-lettered "
                                     f"within {DLQ_MAX} bytes with their size and SHA-256")
    r.before_stop = before_stop
    r.post = post
    return r


INTERNAL_SUFFIXES = ["breaker", "metrics", "alerts", "dlq", "jobs.high", "jobs.low"]


def sc_internal_topic(wd, jobs, quick):
    """Every tenth job names one of aiq's internal topics (or __consumer_offsets) as its
    reply_to, mixed into a normal flow. Checks: each of them is answered `rejected` on the
    default results topic with the reason; no result reaches an internal topic."""
    n = jobs or (2000 if quick else 10000)
    r = Run("internal-topic", wd, dict(BASE))
    r.env.start_sim(latency_ms=10)
    for _ in range(2):
        r.start_worker()
    r.env.wait_group_stable(2)
    targets = [r.env.prefix + s for s in INTERNAL_SUFFIXES] + ["__consumer_offsets"]
    hostile = {}

    def make(i, now):
        job = plain_job("internal-topic", r.env.tag, i)
        if i % 10 == 5:
            job["reply_to"] = targets[(i // 10) % len(targets)]
            hostile[job["id"]] = job["reply_to"]
        return job
    r.submit(n, make=make, rate=300)
    r.stall_s = 120
    leaks = []

    def before_stop():
        from confluent_kafka import TopicPartition
        for t in targets[:4]:  # the topics a result could have been written to
            c = r.env.consumer()
            parts = 1 if t.endswith("breaker") else r.env.partitions
            c.assign([TopicPartition(t, q, 0) for q in range(parts)])
            end = time.time() + 5
            while time.time() < end:
                m = c.poll(0.3)
                if m is None or m.error():
                    continue
                try:
                    jid = json.loads(m.value()).get("job_id")
                except (ValueError, AttributeError):
                    jid = None
                if jid in hostile:
                    leaks.append((t, jid))
            c.close()

    def post():
        res = r.collector.results
        rejected = [j for j, t in hostile.items() if j in res and res[j][0][1] == "rejected"
                    and t in res[j][0][2]["error"]["message"]]
        r.check(hostile and len(rejected) == len(hostile),
                f"{len(rejected)} of {len(hostile)} jobs with an internal reply_to answered "
                "rejected with the reason on the default results topic")
        r.check(not leaks, f"results written into internal topics: {leaks[:5]}")
    r.before_stop = before_stop
    r.post = post
    return r


def sc_hung_provider(wd, jobs, quick):
    """The model endpoint accepts connections and never answers (issue #17); 10,000 jobs of
    timeout_ms 5000 arrive at 2,000/s, so all are waiting when the first deadline comes.
    Check: every job fetched before its deadline is answered within 250 ms of it (p99 <= 400
    ms, max <= 1 s: slack for a shared machine; also tests/integration/test_hung_provider.py);
    one fetched after its deadline within 100 ms of its receipt (p99). worker.backlog holds
    them all (AIQ_SYSTEM_HUNG_BACKLOG=500: the default, so that most wait in Kafka instead)."""
    n = jobs or 10000
    backlog = int(os.environ.get("AIQ_SYSTEM_HUNG_BACKLOG", str(4 * n)))
    hung = HungEndpoint()
    r = Run("hung-provider", wd, dict(
        BASE, AIQ_WORKER_MAX_INFLIGHT=10, AIQ_WORKER_BACKLOG=backlog, AIQ_WORKER_REQUEUE=0,
        AIQ_BREAKER_FAILURES=1000, AIQ_BREAKER_FAILURE_RATE_PCT=0, AIQ_CACHE_ENABLED=0))
    r.env.start_sim(latency_ms=10)
    r.start_worker(AIQ_BEDROCK_ENDPOINT=f"http://127.0.0.1:{hung.port}")
    r.env.wait_group_stable(1)
    r.submit(n, make=lambda i, now: plain_job("hung-provider", r.env.tag, i, timeout_ms=5000,
                                              priority="normal",
                                              created_at=rfc3339(now)),
             rate=int(os.environ.get("AIQ_SYSTEM_HUNG_RATE", "2000")))
    r.stall_s = 60

    def post():
        hung.close()
        fetched, after = [], []
        for jid, got in r.collector.results.items():
            _, status, res, ts = got[0]
            dl = int(r.sub.deadlines[jid] * 1000)
            received = int(datetime.datetime.fromisoformat(
                res["completed_at"].replace("Z", "+00:00")).timestamp() * 1000) - \
                res["timings"]["total_ms"]
            (fetched if received < dl else after).append(
                (ts - dl) if received < dl else (ts - received))
        q = lateness_quantiles
        say(f"hung-provider: backlog {backlog}: {len(fetched)} fetched before their deadline, "
            f"answered after it by {q(fetched)} ms; {len(after)} fetched after it, answered "
            f"after receipt by {q(after)} ms; {len(hung.conns)} model connections")
        r.check(fetched and percentile(fetched, 0.99) <= 400 and max(fetched) <= 1000,
                f"fetched jobs answered within 250 ms (+slack) of the deadline: {q(fetched)}")
        r.check(not after or percentile(after, 0.99) <= 100,
                f"jobs fetched after their deadline answered on receipt: {q(after)}")
    r.post = post
    return r


def lateness_quantiles(xs):
    if not xs:
        return "-"
    return (f"min {min(xs)} p50 {percentile(xs, 0.5)} p90 {percentile(xs, 0.9)} "
            f"p99 {percentile(xs, 0.99)} max {max(xs)}")


SCENARIOS = collections.OrderedDict([
    ("sigkill", sc_sigkill),
    ("broker-restart", sc_broker_restart),
    ("bedrock-outage", sc_bedrock_outage),
    ("throttle-storm", sc_throttle_storm),
    ("latency-spike", sc_latency_spike),
    ("scale", sc_scale),
    ("cache-full", sc_cache_full),
    ("oversized-record", sc_oversized_record),
    ("internal-topic", sc_internal_topic),
    ("hung-provider", sc_hung_provider),
])


def run_scenario(name, workdir, jobs, quick):
    say(f"=== {name} ({'quick' if quick else 'full'}) in {workdir}")
    t0 = time.time()
    r = None
    try:
        r = SCENARIOS[name](workdir, jobs, quick)
        r.wait_answered(r.stall_s)
        if hasattr(r, "before_stop"):
            r.before_stop()
        line, ok, _ = r.finish(r.stall_s)
        if hasattr(r, "post"):
            r.post()
            ok = ok and all(c for c, _ in r.checks)
            line = line.rsplit("result=", 1)[0] + f"result={'PASS' if ok else 'FAIL'}"
    except Exception as e:  # a scenario that cannot run is a FAIL with the reason
        say(f"{name}: error: {e!r}")
        if r is not None:
            for w in r.env.workers:
                if w.proc.poll() is None:
                    w.proc.kill()
            r._stop.set()
            r.collector.close(15)
            if r.sub:
                r.sub.kill()
            try:
                r.env.close()
            except Exception:  # noqa: BLE001 - best effort, the verdict says FAIL anyway
                pass
        line = (f"verdict: {name} submitted=0 answered=0 dlq=0 lost=0 duplicated=0 "
                f"statuses=succeeded:0 result=FAIL")
        ok = False
    dur = time.time() - t0
    say(f"{name}: {dur:.0f} s; logs in {workdir}")
    print(line, flush=True)
    return ok, line, dur


def main():
    ap = argparse.ArgumentParser(
        description="aiq fault-injection system suite (see the module docstring).",
        epilog="scenarios: " + ", ".join(SCENARIOS) + ". Environment: AIQ_BUILD_DIR, "
               "AIQ_SYSTEM_KAFKA_PORT (19092), AIQ_SYSTEM_KAFKA_CONTROLLER_PORT (19093), "
               "AIQ_SYSTEM_KAFKA_DIR (<repo>/.kafka-system).")
    ap.add_argument("scenario", help="a scenario name, or 'all'")
    ap.add_argument("--jobs", type=int, help="jobs per scenario (default: per scenario)")
    ap.add_argument("--quick", action="store_true", help="small sizes (all in ~3-4 min)")
    ap.add_argument("--workdir", help="logs and caches (default: a new dir under /tmp)")
    ap.add_argument("--keep-broker", action="store_true",
                    help="leave the suite's broker running at the end")
    ap.add_argument("--seed", type=int, help="seed for the random choices (kill victims)")
    a = ap.parse_args()
    names = list(SCENARIOS) if a.scenario == "all" else [a.scenario]
    if any(n not in SCENARIOS for n in names):
        ap.error(f"unknown scenario '{a.scenario}' (one of: all, {', '.join(SCENARIOS)})")
    if a.jobs is not None and a.jobs < 1:
        ap.error("--jobs must be >= 1")
    try:
        binary("aiq-worker")
    except FileNotFoundError as e:
        ap.error(f"{e} (set AIQ_BUILD_DIR)")
    seed = a.seed if a.seed is not None else int(time.time())
    random.seed(seed)
    base = pathlib.Path(a.workdir or f"/tmp/aiq-system-{time.strftime('%Y%m%d-%H%M%S')}")
    say(f"broker {BROKERS} (data {KAFKA_DIR}), build {BUILD}, seed {seed}")

    broker = suite_broker()
    state = broker.status()
    if state is False:
        sys.exit(f"run.py: a broker on {BROKERS} was not started from {KAFKA_DIR}; the suite "
                 "restarts its broker, so it needs its own: set AIQ_SYSTEM_KAFKA_PORT")
    started = state is None
    if started:
        say("starting the suite's broker")
        broker.start()
    results = []
    t0 = time.time()
    try:
        for n in names:
            results.append(run_scenario(n, base / n, a.jobs, a.quick))
    finally:
        if started and not a.keep_broker:
            broker.stop()
    say(f"all done in {time.time() - t0:.0f} s")
    for ok, line, dur in results:
        print(f"summary: {line.split('verdict: ', 1)[1].split()[0]} "
              f"{'PASS' if ok else 'FAIL'} in {dur:.0f} s")
    sys.exit(0 if all(ok for ok, _, _ in results) else 1)


if __name__ == "__main__":
    main()
