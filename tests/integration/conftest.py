"""Fixtures for integration tests: the real local Kafka broker, bedrock-sim and aiq-worker
processes over real sockets. Each test gets its own topic prefix and consumer group, so
tests never see each other's records."""
import json
import os
import select
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid

import bedrock_model
import pytest
from confluent_kafka import Consumer, ConsumerGroupState, TopicPartition
from confluent_kafka.admin import AdminClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("AIQ_BUILD_DIR", os.path.join(ROOT, "build"))
BROKERS = os.environ.get("AIQ_KAFKA_BROKERS", "127.0.0.1:9092")
PRIORITIES = ["critical", "high", "normal", "low"]
SIM_KEY, SIM_SECRET = "AKIDSIMULATOR", "simulator-secret"
# botocore's bedrock-runtime input shapes, compacted by tools/bedrock-sim/gen_model.py.
SIM_MODEL_FILE = os.path.join(ROOT, "tools", "bedrock-sim", "bedrock-runtime.model.json")


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


@pytest.fixture
def aiq_env(tmp_path):
    env = Env(tmp_path)
    try:
        yield env
    finally:
        env.close()
