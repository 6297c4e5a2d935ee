#!/usr/bin/env python3
"""aiq benchmark harness: one command per scenario, a table on stdout, JSON + CSV + Markdown
+ PNG under bench/results/.

  bench/run.py littles|cpu|relay|peers|extras|all [--quick] [--out DIR]

  littles  jobs/s of one aiq worker against Little's bound C / L, C in {10, 100, 1000},
           provider latency fixed 100 ms and log-normal (p50 100 ms, p99 1 s)
  cpu      CPU per job (user+sys of the worker ÷ jobs) on the miss and the 100 %-hit path,
           RSS at C = 1000, added latency (total - provider) p50/p99 at half saturation
  relay    bench/kafka_relay (consume -> produce, no work, same librdkafka settings) vs
           aiq's 100 %-hit throughput: the physical limit of the Kafka path
  peers    aiq, the Python asyncio peer, the Java Parallel Consumer peer and the relay doing
           the same jobs at the same concurrency (bench/peers/README.md)
  extras   reruns bench/priority_isolation.py, bench/cache_hit_e2e.py, bench/cache_bench.sh
  all      all of the above, in that order

Every contender gets fresh topics (6 partitions) and a fresh consumer group, a pre-loaded
backlog of N jobs, and the same bedrock-sim; the first 10 % of results (warm-up) and the
last 10 % (drain) are excluded: with W = N / 10, jobs/s = (N - 2W) / (time of result N - W
minus time of result W), from the results' Kafka timestamps; CPU per job = CPU (user+sys,
/proc/PID/stat, process tree) spent between those two results, divided by N - 2W; RSS is the
maximum sampled in that window. Needs a build (AIQ_BUILD_DIR, default build/),
a broker (AIQ_KAFKA_BROKERS) and bench/setup.sh. --quick is a 1-2 minute smoke version.
"""
import argparse
import csv
import json
import os
import pathlib
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))
from aiqtest import BROKERS, BUILD, SIM_KEY, SIM_SECRET, Env, Sim, binary, run  # noqa: E402
from confluent_kafka import TopicPartition  # noqa: E402

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"  # aiq's bedrock.default_model
CLK_TCK = os.sysconf("SC_CLK_TCK")
T0 = time.time()


def say(msg):
    print(f"[{time.time() - T0:6.1f}s] {msg}", flush=True)


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))] if v else None


# --- process accounting ---------------------------------------------------------------
def proc_tree(pid):
    """pid and all its live descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid):
    """user+sys seconds of pid and its descendants (fields 14 and 15 of /proc/PID/stat)."""
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def rss_bytes(pid):
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


# --- contenders -------------------------------------------------------------------------
class Contender:
    """One running worker implementation; pid is what CPU and RSS are read from."""

    def __init__(self, name, proc, stop_fn, log_path):
        self.name, self.proc, self.stop_fn, self.log_path = name, proc, stop_fn, log_path

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        code = self.stop_fn()
        if code != 0:
            say(f"warning: {self.name} exited {code} (log {self.log_path})")
        return code


def peer_env(env, sim, inflight):
    e = dict(os.environ)
    e.update({"PEER_BROKERS": BROKERS, "PEER_PREFIX": env.prefix, "PEER_GROUP": env.group,
              "PEER_ENDPOINT": sim.url, "PEER_MAX_INFLIGHT": str(inflight),
              "PEER_MODEL": MODEL, "AWS_ACCESS_KEY_ID": SIM_KEY,
              "AWS_SECRET_ACCESS_KEY": SIM_SECRET, "AWS_REGION": "us-east-1"})
    e.pop("AWS_SESSION_TOKEN", None)
    return e


def start_peer(name, argv, env, sim, inflight, ready_timeout):
    log_path = env.tmp / f"{name}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(argv, env=peer_env(env, sim, inflight), stdout=subprocess.PIPE,
                            stderr=log, text=True, start_new_session=True)
    deadline = time.time() + ready_timeout
    line = ""
    while time.time() < deadline and proc.poll() is None:
        r, _, _ = select.select([proc.stdout], [], [], 1)
        if r:
            line = proc.stdout.readline()
            if line.strip() == "peer ready" or not line:
                break
    if line.strip() != "peer ready":
        proc.kill()
        raise RuntimeError(f"{name} did not print 'peer ready' within {ready_timeout} s "
                           f"(exit {proc.poll()}, log {log_path})")
    # Keep reading stdout so a chatty peer never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()

    def stop():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        return proc.returncode

    return Contender(name, proc, stop, log_path)


def start_aiq(env, sim, inflight, **settings):
    env.sim = sim
    w = env.start_worker(AIQ_WORKER_MAX_INFLIGHT=inflight, AIQ_LOG_LEVEL="warn", **settings)
    env.wait_group_stable(1)
    env.workers.remove(w)  # stopped here, not by Env.close
    return Contender("aiq", w.proc, w.stop, w.log_path)


PEERS = {
    "aiq": None,
    "python": [sys.executable, str(HERE / "peers" / "python" / "peer.py")],
    "java": [str(HERE / "peers" / "java" / "run.sh")],
    "relay": None,
}


def available(name):
    if name in ("aiq", "aiq-backlog"):
        return True
    if name == "relay":
        try:
            binary_relay()
            return True
        except FileNotFoundError:
            return False
    if name == "java":
        return os.access(PEERS["java"][0], os.X_OK)
    if name == "python":
        try:
            import aiohttp, aiokafka, botocore  # noqa: F401
            return True
        except ImportError:
            return False
    return False


def binary_relay():
    path = os.path.join(BUILD, "bench", "kafka_relay")
    if not os.path.exists(path):
        raise FileNotFoundError(f"kafka_relay not built under {BUILD}")
    return path


def start(name, env, sim, inflight, **aiq_settings):
    if name == "aiq":
        return start_aiq(env, sim, inflight, **aiq_settings)
    if name == "aiq-backlog":
        return start_aiq(env, sim, inflight, AIQ_WORKER_BACKLOG=4 * inflight, **aiq_settings)
    argv = [binary_relay()] if name == "relay" else PEERS[name]
    return start_peer(name, argv, env, sim, inflight, 900 if name == "java" else 120)


# --- jobs and results -------------------------------------------------------------------
def make_jobs(tag, n, start=0):
    return [{"id": f"{tag}-{i}", "operation": "vc-analysis", "priority": "normal",
             "payload": {"company": f"Company {i}", "i": i, "run": tag}}
            for i in range(start, start + n)]


def preload(env, jobs):
    r = run([binary("aiq-submit"), "-q", "-b", BROKERS, "--prefix", env.prefix, "-"],
            input="".join(json.dumps(j) + "\n" for j in jobs), timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"aiq-submit failed: {r.stderr}")


class Collector(threading.Thread):
    """Reads <prefix>results from the current end; notes when the warm-up count and the
    total count of distinct expected results are reached, with the contender's CPU then."""

    def __init__(self, env, want_ids, warm, pid_fn, parse=True):
        super().__init__(daemon=True)
        self.want, self.warm, self.pid_fn, self.parse = set(want_ids), warm, pid_fn, parse
        self.c = env.consumer()
        tps = [TopicPartition(env.results_topic, p) for p in range(env.partitions)]
        for tp in tps:
            tp.offset = self.c.get_watermark_offsets(tp, timeout=30)[1]
        self.c.assign(tps)
        self.first_ts = {}  # job id -> result record timestamp (ms)
        self.timings, self.statuses = [], {}
        self.total = 0
        self.cpu_warm = self.cpu_end = None
        self.rss_max = 0
        self.done = threading.Event()
        self.halt = threading.Event()
        self.last_progress = time.time()

    def run(self):
        next_rss = 0
        while not self.halt.is_set() and not self.done.is_set():
            msgs = self.c.consume(num_messages=2000, timeout=0.2)
            for m in msgs:
                if m.error():
                    continue
                jid = (m.key() or b"").decode()
                self.total += 1
                if jid not in self.want or jid in self.first_ts:
                    continue
                self.first_ts[jid] = m.timestamp()[1]
                self.last_progress = time.time()
                if self.parse:
                    res = json.loads(m.value())
                    t = res.get("timings") or {}
                    self.timings.append((t.get("total_ms", 0), t.get("provider_ms", 0)))
                    st = res.get("status")
                    self.statuses[st] = self.statuses.get(st, 0) + 1
                n = len(self.first_ts)
                if n == self.warm:
                    self.cpu_warm = cpu_seconds(self.pid_fn())
                if n == len(self.want) - self.warm:
                    self.cpu_end = cpu_seconds(self.pid_fn())
                if n == len(self.want):
                    self.done.set()
            if time.time() >= next_rss and self.cpu_warm is not None and self.cpu_end is None:
                self.rss_max = max(self.rss_max, rss_bytes(self.pid_fn()))
                next_rss = time.time() + 0.25
        self.c.close()


def wait_collect(col, label, stall_s=90):
    n_want = len(col.want)
    next_report = time.time() + 5
    while not col.done.wait(0.5):
        if time.time() - col.last_progress > stall_s:
            col.halt.set()
            raise RuntimeError(f"{label}: stalled at {len(col.first_ts)}/{n_want} results")
        if time.time() >= next_report:
            say(f"  {label}: {len(col.first_ts)}/{n_want} results")
            next_report = time.time() + 5
    col.join(10)


def summarize(col, warm):
    ts = sorted(col.first_ts.values())
    n = len(ts)
    # Steady state only: results warm..n-warm; the first are start-up, the last the drain
    # (in-flight falls below C while the backlog empties).
    span = (ts[n - warm - 1] - ts[warm - 1]) / 1000.0
    measured = n - 2 * warm
    added = [t - p for t, p in col.timings[warm:n - warm]]
    out = {"jobs": n, "warmup": warm,
           "jobs_per_s": measured / span if span > 0 else float("inf"),
           "cpu_us_per_job": (col.cpu_end - col.cpu_warm) * 1e6 / measured,
           "cpu_util": (col.cpu_end - col.cpu_warm) / span if span > 0 else None,
           "rss_mib": col.rss_max / 2**20, "duplicates": col.total - n,
           "statuses": col.statuses}
    if added:
        provider = [p for _, p in col.timings[warm:n - warm]]
        out.update(added_p50_ms=pct(added, 0.5), added_p99_ms=pct(added, 0.99),
                   provider_p50_ms=pct(provider, 0.5), provider_p99_ms=pct(provider, 0.99))
    return out


def measure_backlog(env, contender_fn, jobs, label, parse=True):
    """Pre-loads jobs, starts the contender (contender_fn() -> Contender), returns (summary,
    contender). The contender is left running."""
    warm = max(1, len(jobs) // 10)
    holder = {}
    col = Collector(env, [j["id"] for j in jobs], warm, lambda: holder["c"].pid, parse)
    say(f"  {label}: pre-loading {len(jobs)} jobs")
    preload(env, jobs)
    holder["c"] = contender_fn()
    try:
        col.start()
        wait_collect(col, label)
    except BaseException:
        holder["c"].stop()  # a failed run must not leave its contender running
        raise
    return summarize(col, warm), holder["c"]


class IsolatedRun:
    """Fresh topics + group (Env) and a bedrock-sim; closed with the contender."""

    def __init__(self, sim_args):
        self.env = Env(pathlib.Path(tempfile.mkdtemp(prefix="aiq-bench-")))
        # No --record: a benchmark measures, the integration tests judge the requests.
        self.sim = Sim(latency_ms=sim_args.get("latency_ms", 100), extra=sim_args.get("extra", ()),
                       contract=False)
        self.env.sim = self.sim

    def close(self):
        self.env.close()


def one_backlog_run(name, inflight, n, sim_args, label, **aiq_settings):
    iso = IsolatedRun(sim_args)
    contender = None
    try:
        jobs = make_jobs(iso.env.tag, n)
        summary, contender = measure_backlog(
            iso.env, lambda: start(name, iso.env, iso.sim, inflight, **aiq_settings), jobs,
            label)
        stats = iso.sim.stats()
        summary["model_calls"] = stats.get("requests")
        summary["sim_max_inflight"] = stats.get("max_inflight")
        return summary
    finally:
        if contender:
            summary_exit = contender.stop()
            if summary_exit != 0:
                say(f"  {label}: exit code {summary_exit}")
        iso.close()


# --- scenarios ----------------------------------------------------------------------------
LOGNORMAL = ["--latency-dist", "lognormal", "--latency-p50-ms", "100", "--latency-p99-ms", "1000"]
LOGNORMAL_MEAN_S = 0.1 * 2.718281828 ** (((2.302585 / 2.326) ** 2) / 2)  # exp(mu + s^2/2)


def jobs_for(bound, quick, seconds=8, lo=500, hi=40000):
    if quick:
        seconds, hi = 2, 3000
    return int(min(hi, max(lo if not quick else 200, bound * seconds)))


def scenario_littles(a):
    rows = []
    cs = [10, 100] if a.quick else [10, 100, 1000]
    lognormal = {"latency_ms": 100, "extra": LOGNORMAL}
    for dist, sim_args, mean_s, settings in (
            ("fixed 100 ms", {"latency_ms": 100}, 0.1, {}),
            ("log-normal p50 100 ms / p99 1 s", lognormal, LOGNORMAL_MEAN_S, {}),
            # The adaptive limit reads a heavy tail as overload; this row shows its price.
            ("log-normal, bedrock.adaptive=0", lognormal, LOGNORMAL_MEAN_S,
             {"AIQ_BEDROCK_ADAPTIVE": 0}),
            # The default backlog (500, a quarter per priority) refills too slowly for a
            # large C; this row gives each priority a share of C.
            ("fixed 100 ms, worker.backlog=4×C", {"latency_ms": 100}, 0.1, "backlog")):
        for c in cs:
            st = settings
            if settings == "backlog":
                if 4 * c <= 500:
                    continue  # the default already
                st = {"AIQ_WORKER_BACKLOG": 4 * c}
            bound = c / mean_s
            n = jobs_for(bound, a.quick)
            label = f"littles {dist} C={c}"
            say(f"{label}: bound {bound:.0f} jobs/s, {n} jobs")
            s = one_backlog_run("aiq", c, n, sim_args, label, **st)
            s.update(latency=dist, max_inflight=c, bound_jobs_per_s=bound,
                     efficiency=s["jobs_per_s"] / bound)
            say(f"  -> {s['jobs_per_s']:.0f} jobs/s = {100 * s['efficiency']:.0f} % of bound, "
                f"CPU {s['cpu_util'] * 100:.0f} % of a core")
            rows.append(s)
    table = md_table(["latency", "C", "bound C/L (jobs/s)", "aiq jobs/s", "efficiency",
                      "worker CPU (cores)", "CPU/job (µs)", "provider_ms p50 / p99",
                      "sim max in flight"],
                     [[r["latency"], r["max_inflight"], f"{r['bound_jobs_per_s']:.0f}",
                       f"{r['jobs_per_s']:.0f}", f"{100 * r['efficiency']:.0f} %",
                       f"{r['cpu_util']:.2f}", f"{r['cpu_us_per_job']:.0f}",
                       f"{r.get('provider_p50_ms')} / {r.get('provider_p99_ms')}",
                       r.get("sim_max_inflight")] for r in rows])
    note = (f"L for the log-normal case is its mean, {1000 * LOGNORMAL_MEAN_S:.0f} ms "
            "(Little's law holds for the mean).")
    save("littles", rows, table, note)
    plot_littles(rows)
    return rows


def cache_round(iso, contender, jobs, label):
    warm = max(1, len(jobs) // 10)
    col = Collector(iso.env, [j["id"] for j in jobs], warm, lambda: contender.pid)
    col.start()
    say(f"  {label}: submitting {len(jobs)} jobs")
    preload(iso.env, jobs)
    wait_collect(col, label)
    return summarize(col, warm)


def paced_latency(iso, contender, rate, seconds, tag):
    """Offers jobs at `rate`/s for `seconds`; returns added-latency percentiles."""
    from confluent_kafka import Producer
    n = int(rate * seconds)
    jobs = make_jobs(tag, n)
    col = Collector(iso.env, [j["id"] for j in jobs], max(1, n // 10), lambda: contender.pid)
    col.start()
    prod = Producer({"bootstrap.servers": BROKERS, "linger.ms": 1})
    topic = iso.env.job_topic("normal")
    t0 = time.time()
    for i, j in enumerate(jobs):
        due = t0 + i / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        prod.produce(topic, key=j["id"], value=json.dumps(j))
        prod.poll(0)
    prod.flush(30)
    wait_collect(col, f"paced {rate:.0f}/s")
    added = [t - p for t, p in col.timings[n // 10:]]
    total = [t for t, _ in col.timings[n // 10:]]
    return {"rate": rate, "jobs": n, "added_p50_ms": pct(added, 0.5),
            "added_p99_ms": pct(added, 0.99), "total_p50_ms": pct(total, 0.5),
            "total_p99_ms": pct(total, 0.99)}


def cpu_variant(c, n, quick, settings, config):
    say(f"cpu: aiq ({config}), C={c}, provider 100 ms, {n} jobs miss, then the same "
        "payloads as hits, then half of the miss rate paced")
    iso = IsolatedRun({"latency_ms": 100})
    contender = None
    try:
        cold = make_jobs(iso.env.tag, n)
        miss, contender = measure_backlog(
            iso.env, lambda: start("aiq", iso.env, iso.sim, c, **settings), cold, "miss path")
        calls = iso.sim.stats()["requests"]
        warm_jobs = [dict(j, id=j["id"] + "-again") for j in cold]
        hit = cache_round(iso, contender, warm_jobs, "100 % hit path")
        hit_calls = iso.sim.stats()["requests"] - calls
        rate = miss["jobs_per_s"] / 2
        say(f"  half saturation: offering {rate:.0f} jobs/s")
        lat = paced_latency(iso, contender, rate, 4 if quick else 15, iso.env.tag + "p")
    finally:
        if contender:
            contender.stop()
        iso.close()
    rows = [dict(miss, path="miss (model call)", model_calls=calls, config=config),
            dict(hit, path="100 % hit (cache)", model_calls=hit_calls, config=config)]
    return rows, dict(lat, config=config)


def scenario_cpu(a):
    c = 100 if a.quick else 1000
    n = 1500 if a.quick else 20000
    variants = [("defaults", {})]
    if 4 * c > 500:
        variants.append((f"worker.backlog={4 * c}", {"AIQ_WORKER_BACKLOG": 4 * c}))
    rows, lats = [], []
    for config, settings in variants:
        r, lat = cpu_variant(c, n, a.quick, settings, config)
        rows += r
        lats.append(lat)
    table = md_table(["config", "path", "jobs/s", "CPU/job (µs)", "worker CPU (cores)",
                      "RSS max (MiB)", "model calls"],
                     [[r["config"], r["path"], f"{r['jobs_per_s']:.0f}",
                       f"{r['cpu_us_per_job']:.0f}", f"{r['cpu_util']:.2f}",
                       f"{r['rss_mib']:.1f}", r["model_calls"]] for r in rows])
    table += "\n\n" + md_table(
        ["config", "offered (half of miss saturation)",
         "added latency p50 / p99 (total - provider)", "total p50 / p99"],
        [[lat["config"], f"{lat['rate']:.0f} jobs/s",
          f"{lat['added_p50_ms']} ms / {lat['added_p99_ms']} ms",
          f"{lat['total_p50_ms']} ms / {lat['total_p99_ms']} ms"] for lat in lats])
    save("cpu", {"paths": rows, "half_saturation": lats, "max_inflight": c}, table,
         f"One aiq worker, max_inflight {c}, provider latency 100 ms, {n} jobs per path.")
    return rows, lats


def aiq_hit_run(c, n, settings, label):
    """aiq's 100 %-hit throughput: n jobs fill the cache, the same payloads again are hits."""
    iso = IsolatedRun({"latency_ms": 5})
    contender = None
    try:
        cold = make_jobs(iso.env.tag, n)
        _, contender = measure_backlog(
            iso.env, lambda: start("aiq", iso.env, iso.sim, c, **settings), cold,
            f"{label}: cache fill", parse=False)
        return cache_round(iso, contender, [dict(j, id=j["id"] + "-hit") for j in cold], label)
    finally:
        if contender:
            contender.stop()
        iso.close()


def scenario_relay(a):
    c = 100 if a.quick else 1000
    n = 3000 if a.quick else 40000
    rows = []
    say(f"relay: kafka_relay vs aiq 100 % hit, C={c}, {n} jobs each")
    # The relay is fast: a larger backlog keeps its measured window long enough to matter.
    s = one_backlog_run("relay", c, n if a.quick else 5 * n, {"latency_ms": 100}, "relay")
    rows.append(dict(s, contender="kafka_relay (no work)"))
    say(f"  -> relay {s['jobs_per_s']:.0f} jobs/s, {s['cpu_us_per_job']:.0f} µs CPU/job")
    variants = [("aiq, 100 % cache hit", {})]
    if 4 * c > 500:
        variants.append((f"aiq, 100 % cache hit, worker.backlog={4 * c}",
                         {"AIQ_WORKER_BACKLOG": 4 * c}))
    for label, settings in variants:
        hit = aiq_hit_run(c, n, settings, label)
        rows.append(dict(hit, contender=label))
        frac = hit["jobs_per_s"] / s["jobs_per_s"]
        say(f"  -> {label}: {hit['jobs_per_s']:.0f} jobs/s = {100 * frac:.0f} % of the relay")
    table = md_table(["contender", "jobs/s", "share of relay", "CPU/job (µs)", "CPU (cores)",
                      "RSS max (MiB)"],
                     [[r["contender"], f"{r['jobs_per_s']:.0f}",
                       f"{100 * r['jobs_per_s'] / s['jobs_per_s']:.0f} %",
                       f"{r['cpu_us_per_job']:.0f}", f"{r['cpu_util']:.2f}",
                       f"{r['rss_mib']:.1f}"] for r in rows])
    save("relay", rows, table, f"max_inflight {c}, same broker; {n if a.quick else 5 * n} "
         f"jobs for the relay, {n} for aiq (after as many filled the cache).")
    return rows


def scenario_peers(a):
    configs = [(100, 100)] if a.quick else [(100, 100), (1000, 100)]
    rows = []
    for c, lat in configs:
        bound = c / (lat / 1000)
        n = 800 if a.quick else jobs_for(bound, False, seconds=10, hi=20000)
        names = ["aiq", "python", "java", "relay"]
        if 4 * c > 500:
            names.insert(1, "aiq-backlog")  # aiq with worker.backlog = 4 × C
        for name in names:
            label = f"peers C={c} {name}"
            if not available(name):
                say(f"{label}: SKIPPED ({name} peer not present: "
                    f"{'bench/peers/java/run.sh missing' if name == 'java' else 'not built/installed'})")
                rows.append({"contender": name, "max_inflight": c, "skipped": True})
                continue
            say(f"{label}: {n} jobs, provider {lat} ms, bound {bound:.0f} jobs/s")
            try:
                s = one_backlog_run(name, c, n, {"latency_ms": lat}, label)
            except RuntimeError as e:
                say(f"{label}: FAILED: {e}")
                rows.append({"contender": name, "max_inflight": c, "failed": str(e)})
                continue
            s.update(contender=name, max_inflight=c, bound_jobs_per_s=bound)
            say(f"  -> {s['jobs_per_s']:.0f} jobs/s, {s['cpu_us_per_job']:.0f} µs CPU/job, "
                f"RSS {s['rss_mib']:.1f} MiB, {s['duplicates']} duplicates")
            rows.append(s)
    table_rows = []
    for r in rows:
        if r.get("skipped") or r.get("failed"):
            table_rows.append([r["contender"], r["max_inflight"],
                               "skipped" if r.get("skipped") else "failed", "", "", "", "", "",
                               "", ""])
            continue
        base = next((b for b in rows if b["contender"] == "aiq" and
                     b["max_inflight"] == r["max_inflight"] and "jobs_per_s" in b), None)
        ratio = (lambda k: f"{r[k] / base[k]:.2f}×" if base and base.get(k) else "")
        table_rows.append([r["contender"], r["max_inflight"], f"{r['jobs_per_s']:.0f}",
                           ratio("jobs_per_s"), f"{r['cpu_us_per_job']:.0f}",
                           ratio("cpu_us_per_job"), f"{r['rss_mib']:.1f}", ratio("rss_mib"),
                           r.get("provider_p50_ms"), r["duplicates"]])
    table = md_table(["contender", "C", "jobs/s", "vs aiq", "CPU/job (µs)", "vs aiq",
                      "RSS max (MiB)", "vs aiq", "provider_ms p50", "duplicates"], table_rows)
    save("peers", rows, table, "Provider latency 100 ms; bound C / 0.1 s. The relay does no "
         "model call: it is the Kafka path's ceiling, not a peer. Ratios are peer ÷ aiq.")
    plot_peers(rows)
    return rows


def scenario_extras(a):
    env = dict(os.environ, AIQ_BUILD_DIR=BUILD, AIQ_KAFKA_BROKERS=BROKERS)
    cmds = [
        ("priority isolation", [sys.executable, str(HERE / "priority_isolation.py"),
                                "--low", "5000" if a.quick else "50000",
                                "--seconds", "5" if a.quick else "20"]),
        ("cache hits end to end", [sys.executable, str(HERE / "cache_hit_e2e.py"),
                                   "--jobs", "500" if a.quick else "3000",
                                   "--runs", "1" if a.quick else "3"]),
        ("cache alone", [str(HERE / "cache_bench.sh"), BUILD, "--entries",
                         "5000" if a.quick else "20000"]),
    ]
    out = []
    for name, argv in cmds:
        shown = ["python3" if x == sys.executable else os.path.relpath(x) if x.startswith("/")
                 else x for x in argv]
        say(f"extras: {name}: {' '.join(shown)}")
        t = time.time()
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
        say(f"  {name}: exit {r.returncode} after {time.time() - t:.0f} s")
        out.append({"name": name, "argv": argv, "exit": r.returncode, "stdout": r.stdout,
                    "stderr": r.stderr[-2000:]})
    md = "\n\n".join(f"### {o['name']} (exit {o['exit']})\n\n```\n{o['stdout'].strip()}\n```"
                     for o in out)
    save("extras", out, md, "Output of the earlier issues' benchmarks, rerun by bench/run.py.")
    return out


# --- output -----------------------------------------------------------------------------
def md_table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


OUT = HERE / "results"
META = {}


def save(name, data, table, note):
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / f"{name}.json", "w") as f:
        json.dump({"meta": META, "data": data}, f, indent=1, default=str)
    rows = data if isinstance(data, list) else data.get("paths", [])
    flat = [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in rows]
    if flat:
        keys = sorted({k for r in flat for k in r})
        with open(OUT / f"{name}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(flat)
    with open(OUT / f"{name}.md", "w") as f:
        f.write(f"# bench/run.py {name}{' --quick' if META.get('quick') else ''}\n\n"
                f"{META.get('when')} on {META.get('host')}, {META.get('cpus')} CPUs. {note}\n\n"
                f"{table}\n")
    print(f"\n{table}\n\n({note} Saved bench/results/{name}.{{json,csv,md}})\n", flush=True)


def plot_littles(rows):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib missing (run bench/setup.sh): no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for dist, marker in (("fixed 100 ms", "o"), ("log-normal p50 100 ms / p99 1 s", "s"),
                         ("log-normal, bedrock.adaptive=0", "^"),
                         ("fixed 100 ms, worker.backlog=4×C", "D")):
        rs = [r for r in rows if r["latency"] == dist]
        if not rs:
            continue
        ax.plot([r["max_inflight"] for r in rs], [r["jobs_per_s"] for r in rs], marker=marker,
                label=f"aiq, {dist}")
        if "adaptive" not in dist and "backlog" not in dist:  # bounds drawn already
            ax.plot([r["max_inflight"] for r in rs], [r["bound_jobs_per_s"] for r in rs], "--",
                    alpha=0.6, label=f"bound C / L ({dist})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("max_inflight C")
    ax.set_ylabel("jobs/s")
    ax.set_title("aiq vs Little's law (one worker)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "littles.png", dpi=110)
    plt.close(fig)
    say("plot: bench/results/littles.png")


def plot_peers(rows):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib missing (run bench/setup.sh): no plot")
        return
    # The relay (no model call) runs 10-100× faster and would flatten every bar: its
    # figures are in the table and in relay.md.
    ok = [r for r in rows if "jobs_per_s" in r and r["contender"] != "relay"]
    if not ok:
        return
    cs = sorted({r["max_inflight"] for r in ok})
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, key, title in zip(axes, ("jobs_per_s", "cpu_us_per_job", "rss_mib"),
                              ("jobs/s (higher is better)", "CPU µs per job (lower is better)",
                               "RSS MiB (lower is better)")):
        names = [n for n in ("aiq", "aiq-backlog", "python", "java")
                 if any(r["contender"] == n for r in ok)]
        width = 0.8 / len(cs)
        for k, c in enumerate(cs):
            vals = [next((r[key] for r in ok if r["contender"] == n and r["max_inflight"] == c), 0)
                    for n in names]
            ax.bar([i + k * width for i in range(len(names))], vals, width, label=f"C={c}")
        if key == "jobs_per_s":
            for c in cs:
                ax.axhline(c / 0.1, linestyle="--", alpha=0.5, color="grey")
                ax.annotate(f"bound C={c}", (0, c / 0.1), fontsize=7, va="bottom")
        ax.set_xticks([i + width * (len(cs) - 1) / 2 for i in range(len(names))])
        ax.set_xticklabels(names)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle("Same jobs, same broker and sim, provider latency 100 ms", fontsize=10)
    fig.tight_layout()
    fig.savefig(OUT / "peers.png", dpi=110)
    plt.close(fig)
    say("plot: bench/results/peers.png")


SCENARIOS = {"littles": scenario_littles, "cpu": scenario_cpu, "relay": scenario_relay,
             "peers": scenario_peers, "extras": scenario_extras}


def main():
    global OUT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("scenario", choices=[*SCENARIOS, "all"])
    ap.add_argument("--quick", action="store_true", help="1-2 minute smoke version")
    ap.add_argument("--out", default=str(OUT), help="results directory (default bench/results)")
    a = ap.parse_args()
    OUT = pathlib.Path(a.out)
    META.update(quick=a.quick, when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                host=os.uname().nodename, cpus=os.cpu_count(), brokers=BROKERS, build=BUILD)
    names = list(SCENARIOS) if a.scenario == "all" else [a.scenario]
    if a.quick and a.scenario == "all":
        names.remove("extras")  # the earlier benches have their own short forms
    for name in names:
        say(f"=== {name}{' (quick)' if a.quick else ''}")
        SCENARIOS[name](a)
    say(f"done: {', '.join(names)} in {time.time() - T0:.0f} s; results in {OUT}")


if __name__ == "__main__":
    main()
