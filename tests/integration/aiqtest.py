"""The one module of helpers for aiq's Python tests: tests/integration (pytest; conftest.py
holds only the fixtures, built on this), tests/system/run.py and bench/ all import from
here, never from another test file.

It lives in tests/integration, next to conftest.py, because that directory is already on
sys.path for every user: pytest puts it there (rootdir-relative conftest, no packages),
and tests/system/run.py and bench/*.py insert it themselves. A package under tests/ would
need one more sys.path entry in every one of them.

BROKERS is read from AIQ_KAFKA_BROKERS when this module is first imported (run.py sets it
to its own broker before importing).

Everything drives real processes over real sockets: the Kafka broker, bedrock-sim and
aiq-worker. Each Env gets its own topic prefix and consumer group, so tests sharing one
broker never see each other's records."""
import datetime
import json
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import bedrock_model
import jsonschema
from confluent_kafka import Consumer, ConsumerGroupState, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("AIQ_BUILD_DIR", os.path.join(ROOT, "build"))
BROKERS = os.environ.get("AIQ_KAFKA_BROKERS", "127.0.0.1:9092")
PRIORITIES = ["critical", "high", "normal", "low"]
SIM_KEY, SIM_SECRET = "AKIDSIMULATOR", "simulator-secret"
# botocore's bedrock-runtime input shapes, compacted by tools/bedrock-sim/gen_model.py.
SIM_MODEL_FILE = os.path.join(ROOT, "tools", "bedrock-sim", "bedrock-runtime.model.json")
SCHEMAS = os.path.join(ROOT, "schemas")
KAFKA_SH = os.path.join(ROOT, "tools", "kafka", "kafka.sh")


# ---- processes -------------------------------------------------------------------------


def binary(name):
    for sub in ("worker", "producer", "tools/admin", "tools/bedrock-sim", "examples"):
        path = os.path.join(BUILD, sub, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{name} not built under {BUILD}")


def run(args, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 180)
    return subprocess.run(args, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout, what, interval=0.05):
    """Polls cond() until it returns something truthy; returns it, or fails with `what`."""
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ---- a broker of one's own (tools/kafka/kafka.sh) ---------------------------------------


class Broker:
    """tools/kafka/kafka.sh on its own ports and data dir, for suites that must stop or
    reconfigure their broker (tests/system, the SASL test); the shared broker at BROKERS is
    never started or stopped by a test. env: more kafka.sh settings (AIQ_KAFKA_SASL_PORT...)."""

    def __init__(self, port, controller_port, data_dir, **env):
        self.address = f"127.0.0.1:{port}"
        self.env = dict(os.environ, AIQ_KAFKA_PORT=str(port),
                        AIQ_KAFKA_CONTROLLER_PORT=str(controller_port),
                        AIQ_KAFKA_DIR=str(data_dir), **{k: str(v) for k, v in env.items()})

    def sh(self, cmd, timeout=180):
        return run([KAFKA_SH, cmd], env=self.env, timeout=timeout)

    def status(self):
        """None when no broker answers; else whether it was started from this data dir."""
        r = self.sh("status", timeout=60)
        if r.returncode != 0:
            return None
        return "not started from" not in r.stdout

    def start(self, timeout=180):
        """Starts it; returns kafka.sh's output (it names the listeners)."""
        r = self.sh("start", timeout)
        if r.returncode != 0:
            raise RuntimeError(f"kafka.sh start failed:\n{r.stdout}{r.stderr}")
        return r.stdout

    def stop(self, timeout=180):
        r = self.sh("stop", timeout)
        if r.returncode != 0:
            raise RuntimeError(f"kafka.sh stop failed:\n{r.stdout}{r.stderr}")


# ---- bedrock-sim -----------------------------------------------------------------------


class Sim:
    """bedrock-sim on a free port. It always refuses what botocore's bedrock-runtime model
    refuses (--model, the checked-in shapes file; the sim's built-in copy otherwise). With
    contract=True (the default) it also records every model request (--record), and stop()
    fails the test when any recorded request breaks the model or was refused by the sim
    (bedrock_model.check_record_file: botocore's validator plus max/enum/pattern). A test that
    sends invalid requests on purpose passes contract=False, or calls stop(check=False)."""

    def __init__(self, latency_ms=5, extra=(), contract=True):
        self.record = None
        args = [binary("bedrock-sim"), "--port", "0", "--latency-ms", str(latency_ms),
                "--access-key", SIM_KEY, "--secret-key", SIM_SECRET]
        if contract:
            fd, self.record = tempfile.mkstemp(prefix="aiq-sim-", suffix=".ndjson")
            os.close(fd)
            args += ["--model", SIM_MODEL_FILE, "--record", self.record]
        self.proc = subprocess.Popen([*args, *extra], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self._readline(15)
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"bedrock-sim did not start: {line!r}")
        self.url = line.strip().split("listening on ")[1]

    def _readline(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else ""

    def stats(self):
        with urllib.request.urlopen(self.url + "/_sim/stats", timeout=5) as r:
            return json.load(r)

    def recorded(self):
        """The --record lines so far, as dicts."""
        if not self.record:
            return []
        with open(self.record, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def contract_violations(self):
        return bedrock_model.check_record_file(self.record) if self.record else []

    def stop(self, check=True):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if not self.record:
            return
        bad = self.contract_violations() if check else []
        os.unlink(self.record)
        self.record = None
        if bad:
            shown = "\n".join(f"  line {no} {op}: {'; '.join(errs)}" for no, op, errs in bad[:10])
            raise AssertionError(f"{len(bad)} request(s) to bedrock-sim break botocore's "
                                 f"bedrock-runtime model:\n{shown}")


def sim_post(sim, path, body):
    """POSTs body (JSON) to one of bedrock-sim's control endpoints (/_sim/config,
    /_sim/outage); returns its JSON answer, or raises on any status but 200."""
    req = urllib.request.Request(sim.url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        if r.status != 200:
            raise AssertionError(f"bedrock-sim {path}: HTTP {r.status}")
        return json.load(r)


def sim_config(sim, **conf):
    """Changes bedrock-sim's runtime settings (e.g. latency_ms) through POST /_sim/config;
    returns the settings it answers with."""
    return sim_post(sim, "/_sim/config", conf)


class HungEndpoint:
    """Accepts TCP connections and never answers: a provider that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(c)  # held open, never read, never answered

    def close(self):
        self.stopping = True
        self.thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


# ---- aiq-worker and its deployment -----------------------------------------------------


class Worker:
    def __init__(self, env, log_path, extra=()):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([binary("aiq-worker"), *extra], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self, timeout=60):
        """SIGTERM (drain) and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def output(self):
        with open(self.log_path) as f:
            return f.read()


def log_lines(worker):
    """The worker's JSON log lines (stderr and stdout share the log file)."""
    out = []
    for line in worker.output().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def log_text(worker):
    return "\n".join(str(l.get("msg", l)) for l in log_lines(worker))


def commit_interval_s():
    """How often the worker commits finished offsets: worker.commit_interval_ms when this
    build has it, else librdkafka's auto-commit interval the consumer sets (1 s)."""
    r = run([binary("aiq-worker"), "--print-config"])
    m = re.search(r"^worker\.commit_interval_ms = (\d+)$", r.stdout, re.M)
    return int(m.group(1)) / 1000 if m else 1.0


class Env:
    """One isolated aiq deployment on the shared broker."""

    def __init__(self, tmp_path, partitions=6):
        self.tag = uuid.uuid4().hex[:10]
        self.prefix = f"it{self.tag}."
        self.group = f"aiq-workers-{self.tag}"
        self.tmp = tmp_path
        self.partitions = partitions
        self.sim = None
        self.workers = []
        r = run([binary("aiq-admin"), "-b", BROKERS, "--prefix", self.prefix,
                 "--partitions", str(partitions), "topics", "create"])
        assert r.returncode == 0, r.stderr
        self.results_topic = self.prefix + "results"
        self.dlq_topic = self.prefix + "dlq"

    def job_topic(self, prio):
        return f"{self.prefix}jobs.{prio}"

    def start_sim(self, **kw):
        self.sim = Sim(**kw)
        return self.sim

    def worker_env(self, **settings):
        env = dict(os.environ)
        env.update({
            "AIQ_KAFKA_BROKERS": BROKERS,
            "AIQ_KAFKA_TOPIC_PREFIX": self.prefix,
            "AIQ_KAFKA_GROUP_ID": self.group,
            "AIQ_BEDROCK_ENDPOINT": self.sim.url,
            "AWS_ACCESS_KEY_ID": SIM_KEY,
            "AWS_SECRET_ACCESS_KEY": SIM_SECRET,
            "AWS_REGION": "us-east-1",
            # Each test its own host-shared state (cache, breakers): no answers leak
            # between tests through the cache.
            "AIQ_CACHE_PATH": str(self.tmp / "cache"),
        })
        env.pop("AWS_SESSION_TOKEN", None)
        for k, v in settings.items():
            env[k] = str(v)
        return env

    def start_worker(self, extra=(), env=None, **settings):
        """env: more environment for this worker; a None value removes the variable (e.g.
        {"AWS_ACCESS_KEY_ID": None} to start without the default credentials)."""
        n = len(self.workers)
        wenv = self.worker_env(AIQ_WORKER_ID=f"w{n}-{self.tag}", **settings)
        for k, v in (env or {}).items():
            if v is None:
                wenv.pop(k, None)
            else:
                wenv[k] = str(v)
        w = Worker(wenv, str(self.tmp / f"worker{n}.log"), extra)
        self.workers.append(w)
        return w

    def wait_group_stable(self, members, timeout=60):
        """Waits until the worker group is Stable with `members` members that all own
        partitions, so a test's jobs are not split by a rebalance still in progress."""
        admin = AdminClient({"bootstrap.servers": BROKERS})
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                desc = admin.describe_consumer_groups([self.group])[self.group].result(10)
                last = (desc.state, [len(m.assignment.topic_partitions) for m in desc.members])
                if (desc.state == ConsumerGroupState.STABLE and len(desc.members) == members
                        and all(n > 0 for n in last[1])):
                    return
            except Exception as e:  # the group may not exist yet
                last = repr(e)
            time.sleep(0.3)
        raise AssertionError(f"group {self.group} not stable with {members} members: {last}")

    def consumer(self, **conf):
        c = {"bootstrap.servers": BROKERS, "group.id": f"verify-{uuid.uuid4().hex[:8]}",
             "auto.offset.reset": "earliest", "enable.auto.commit": False}
        c.update(conf)
        return Consumer(c)

    def read_all(self, topic, expect, timeout=120, stop=None):
        """Reads topic from the beginning until `expect` records arrived (or stop(records)
        is true) or timeout; returns the records (confluent_kafka Messages)."""
        c = self.consumer()
        c.assign([TopicPartition(topic, p, 0) for p in range(self.partitions)])
        out, deadline = [], time.time() + timeout
        try:
            while time.time() < deadline and len(out) < expect and not (stop and stop(out)):
                m = c.poll(0.5)
                if m is None or m.error():
                    continue
                out.append(m)
        finally:
            c.close()
        return out

    def committed_vs_end(self):
        """[(topic, partition, committed, end)] for every job partition of the group."""
        c = self.consumer(**{"group.id": self.group})
        try:
            tps = [TopicPartition(self.job_topic(p), i) for p in PRIORITIES
                   for i in range(self.partitions)]
            committed = c.committed(tps, timeout=30)
            rows = []
            for tp in committed:
                lo, hi = c.get_watermark_offsets(TopicPartition(tp.topic, tp.partition),
                                                 timeout=30)
                rows.append((tp.topic, tp.partition, tp.offset, hi))
            return rows
        finally:
            c.close()

    def close(self):
        for w in self.workers:
            w.stop(timeout=30)
        try:
            if self.sim:
                self.sim.stop()  # fails the test on a request that breaks the Bedrock model
        finally:
            run([binary("aiq-admin"), "-b", BROKERS, "--prefix", self.prefix, "topics",
                 "delete", "--yes"])


# ---- jobs in -------------------------------------------------------------------------


def rfc3339(epoch_s):
    """epoch seconds -> '2025-01-02T03:04:05.678Z' (the form of created_at)."""
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def jobs(tag, phase, n, **extra):
    """n vc-analysis jobs with ids <phase>-<tag>-0000.. and distinct payloads; extra fields
    are added to every job."""
    return [dict({"id": f"{phase}-{tag}-{i:04d}", "operation": "vc-analysis",
                  "payload": {"company": f"{phase} company {i}", "n": i}}, **extra)
            for i in range(n)]


def submit(env, jobs, acked=False):
    """Submits jobs with aiq-submit (NDJSON on stdin); fails the test on any refusal. With
    acked=True it also checks that aiq-submit printed every job's id (the broker
    acknowledged each); otherwise it runs quiet (-q)."""
    args = [binary("aiq-submit"), "-b", BROKERS, "--prefix", env.prefix, "-"]
    r = run(args if acked else args[:1] + ["-q"] + args[1:],
            input="".join(json.dumps(j) + "\n" for j in jobs))
    assert r.returncode == 0, r.stderr
    if acked:
        assert sorted(r.stdout.split()) == sorted(j["id"] for j in jobs)


def produce_raw(topic, records):
    """Produces (key, value) pairs; returns {value: (partition, offset)} from delivery reports."""
    p = Producer({"bootstrap.servers": BROKERS})
    where = {}

    def on_delivery(err, msg):
        assert err is None, err
        where[msg.value()] = (msg.partition(), msg.offset())

    for key, value in records:
        p.produce(topic, value=value, key=key, on_delivery=on_delivery)
    assert p.flush(30) == 0
    return where


def produce_raw_ts(topic, jobs, timestamp_ms):
    """Produces jobs as they are (no created_at filled in) with an explicit record timestamp."""
    p = Producer({"bootstrap.servers": BROKERS})
    errors = []
    for j in jobs:
        p.produce(topic, key=j["id"], value=json.dumps(j), timestamp=timestamp_ms,
                  on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(30) == 0 and not errors, errors


def set_topic_config(topic, **conf):
    """Sets topic configs incrementally; a name may use _ for . (max_message_bytes)."""
    admin = AdminClient({"bootstrap.servers": BROKERS})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry(k.replace("_", "."), str(v),
                    incremental_operation=AlterConfigOpType.SET) for k, v in conf.items()])
    for f in admin.incremental_alter_configs([res]).values():
        f.result(30)


# ---- results out -----------------------------------------------------------------------


def read_to_end(env, topic, timeout=30):
    """Every record of topic up to its current end (high watermarks taken first): exact
    once the writers have flushed, with no waiting for records that may never come."""
    c = env.consumer()
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(env.partitions)}
        c.assign([TopicPartition(topic, p, 0) for p in range(env.partitions) if ends[p] > 0])
        out, todo = [], {p for p, end in ends.items() if end > 0}
        deadline = time.time() + timeout
        while todo and time.time() < deadline:
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            out.append(m)
            if m.offset() + 1 >= ends[m.partition()]:
                todo.discard(m.partition())
        assert not todo, f"could not read {topic} to its end: partitions {todo} left"
        return out
    finally:
        c.close()


def committed_map(env):
    """{(topic, partition): (committed or None, end)} for every job partition of the group."""
    return {(t, p): (c if c >= 0 else None, end) for t, p, c, end in env.committed_vs_end()}


def all_committed(env):
    return all(end == 0 or c == end for c, end in committed_map(env).values())


class Results:
    """Follows topics (default: the results topic) from the beginning in a background
    thread. Keeps, under one lock, every record as (arrival time here, Message, decoded
    value), the results per job id, and counts per worker and priority kept incrementally,
    so polling them stays cheap with tens of thousands of records.

    Reading: poll() for the first record (so its arrival time is when it came, not when a
    batch filled), then whatever else is already fetched in one consume() call. A subclass
    changes what is kept of a record by overriding take() (called with the lock held)."""

    def __init__(self, env, topics=None, partitions=None, **conf):
        self.env = env
        self.topics = topics or [env.results_topic]
        self.lock = threading.Lock()
        self.items = []
        self.per_id, self.per_worker, self.per_prio = {}, {}, {}
        self.positions = {}  # (topic, partition) -> next offset to read
        self.stopping = threading.Event()
        self.c = env.consumer(**dict({"fetch.wait.max.ms": 10}, **conf))
        self.c.assign([TopicPartition(t, p, 0) for t in self.topics
                       for p in range(partitions or env.partitions)])
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self.stopping.is_set():
                m = self.c.poll(0.05)
                if m is None:
                    continue
                batch = [m] + self.c.consume(999, 0)
                now = time.time()
                with self.lock:
                    for m in batch:
                        if m.error():
                            continue
                        self.positions[(m.topic(), m.partition())] = m.offset() + 1
                        self.take(m, now)
        finally:
            self.c.close()

    def take(self, m, now):
        v = json.loads(m.value())
        self.items.append((now, m, v))
        self.per_id.setdefault(v["job_id"], []).append(v)
        for d, k in ((self.per_worker, v["worker"]), (self.per_prio, v["priority"])):
            d[k] = d.get(k, 0) + 1

    def wait(self, ids, timeout=120):
        """Waits for a result of every id; returns {id: its latest result}."""
        ids = set(ids)
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if ids <= self.per_id.keys():
                    break
            time.sleep(0.05)
        with self.lock:
            missing = ids - self.per_id.keys()
            assert not missing, (f"{len(missing)} jobs without a result, "
                                 f"e.g. {sorted(missing)[:3]}")
            return {i: self.per_id[i][-1] for i in ids}

    def of_id(self, jid):
        """Every result of job jid so far, oldest first."""
        with self.lock:
            return list(self.per_id.get(jid, []))

    def ids(self):
        """The set of job ids answered so far."""
        with self.lock:
            return set(self.per_id)

    def answered(self):
        """How many distinct job ids are answered so far."""
        with self.lock:
            return len(self.per_id)

    def count(self, pred=lambda v: True):
        """Results so far (duplicates included) for which pred(result) is true."""
        with self.lock:
            return sum(1 for _, _, v in self.items if pred(v))

    def of_worker(self, wid):
        with self.lock:
            return self.per_worker.get(wid, 0)

    def of_prio(self, prio):
        with self.lock:
            return self.per_prio.get(prio, 0)

    def snapshot(self):
        """[(arrival time here, Message, decoded value)] of every record so far."""
        with self.lock:
            return list(self.items)

    def catch_up(self, timeout=60):
        """Waits until everything written to the followed topics so far has been read;
        returns whether it was."""
        c = self.env.consumer()
        try:
            ends = {(t, p): c.get_watermark_offsets(TopicPartition(t, p), timeout=30)[1]
                    for t in self.topics for p in range(self.env.partitions)}
        finally:
            c.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if all(self.positions.get(tp, 0) >= end for tp, end in ends.items()):
                    return True
            time.sleep(0.2)
        return False

    def close(self, timeout=10):
        self.stopping.set()
        self.thread.join(timeout)


# ---- ops endpoints ---------------------------------------------------------------------


def get(url):
    """(status, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def admin_port(worker, timeout=15):
    """The ops port a worker started with AIQ_ADMIN_LISTEN=127.0.0.1:0 reports in its log."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = re.search(r"ops endpoints on port (\d+)", worker.output())
        if m:
            return int(m.group(1))
        time.sleep(0.1)
    raise AssertionError("worker did not report its admin port:\n" + worker.output()[-2000:])


def metric(text, name, **labels):
    """Value of the sample of `name` whose labels include `labels`, in /metrics text."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        lbl = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):line.rindex("}") + 1]))
        if all(lbl.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels}")


def scrape(port):
    """/metrics of a worker parsed by prometheus_client: {name: [(labels, value)]}."""
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def total(samples, name, **labels):
    """Sum of a scrape()'s samples of `name` whose labels include `labels`."""
    return sum(v for lbl, v in samples.get(name, [])
               if all(lbl.get(k) == want for k, want in labels.items()))


# ---- schemas and numbers ---------------------------------------------------------------


def schema(name):
    """A validator for schemas/<name> (JSON Schema 2020-12, formats checked)."""
    with open(os.path.join(SCHEMAS, name)) as f:
        s = json.load(f)
    jsonschema.Draft202012Validator.check_schema(s)
    return jsonschema.Draft202012Validator(s, format_checker=jsonschema.FormatChecker())


JOB = schema("job.schema.json")
RESULT = schema("result.schema.json")


def percentile(xs, q):
    """The q-quantile (0..1) of xs, nearest rank from below; None for no values."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None


# ---- Kafka security helpers (test_kafka_sasl.py, test_kafka_tls.py) --------------------

AUTH_FAIL_WITHIN_S = 30


def rdkafka_version():
    """The librdkafka the binaries under test load (aiq-worker --version says)."""
    out = run([binary("aiq-worker"), "--version"]).stdout
    return tuple(int(x) for x in re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", out).groups())


def broker_major():
    """The Kafka major version kafka.sh runs in this environment (AIQ_KAFKA_VERSION)."""
    return int(run([KAFKA_SH, "version"]).stdout.strip().split(".")[0])


def scram_refused():
    """librdkafka before 2.6.1 computes a SCRAM proof Kafka 4.x refuses (librdkafka #4895)."""
    return rdkafka_version() < (2, 6, 1) and broker_major() >= 4


def timed(args, env):
    """Runs a CLI with env added; returns (CompletedProcess, seconds it took)."""
    t0 = time.monotonic()
    r = run(args, env=dict(os.environ, **env), timeout=AUTH_FAIL_WITHIN_S + 30)
    return r, time.monotonic() - t0
