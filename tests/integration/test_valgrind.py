"""The main path under valgrind (memcheck), with zero reports: bedrock-sim and aiq-worker run
under valgrind from start to SIGTERM, and aiq-submit (submit, then --wait reading results)
too. The worker consumes 50 jobs: fresh ones, repeats answered from the cache, one undecodable
record that goes to the DLQ, and jobs answered by the fallback chain during an outage.

Slow (valgrind runs the binaries ~20x slower), so it runs only with AIQ_VALGRIND=1; use a
build without sanitizers (tools/valgrind.sh builds one and runs this). Leaks count when they
are definite. No suppressions: librdkafka, libcurl, libcrypto, LMDB and libmicrohttpd showed
no reports on this path, so any report is taken as real."""
import json
import os
import re
import select
import shutil
import signal
import subprocess
import time

import pytest
from confluent_kafka import Producer, TopicPartition

from aiqtest import BROKERS, SIM_KEY, SIM_SECRET, binary, run, sim_config

pytestmark = pytest.mark.skipif(
    os.environ.get("AIQ_VALGRIND") != "1" or not shutil.which("valgrind"),
    reason="valgrind run: set AIQ_VALGRIND=1 (tools/valgrind.sh)")

ERROR_EXIT = 99


def valgrind(log_path):
    return ["valgrind", f"--error-exitcode={ERROR_EXIT}", "--leak-check=full",
            "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
            "--num-callers=30", f"--log-file={log_path}"]


def errors_in(log_path):
    """The whole valgrind log when it reports errors (definite leaks included) or has no
    summary (the process did not finish under valgrind); "" when it is clean."""
    with open(log_path) as f:
        text = f.read()
    m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    return "" if m and m.group(1) == "0" else text or "(empty valgrind log)"


class ValgrindSim:
    """bedrock-sim under valgrind; stands in for aiqtest's Sim (url, stop)."""

    def __init__(self, tmp_path):
        self.log = tmp_path / "sim.valgrind"
        self.proc = subprocess.Popen(
            valgrind(self.log) + [binary("bedrock-sim"), "--port", "0", "--latency-ms", "5",
                                  "--access-key", SIM_KEY, "--secret-key", SIM_SECRET],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        line = self.proc.stdout.readline() if ready else ""
        if "listening on" not in line:
            self.proc.kill()
            raise AssertionError(f"bedrock-sim under valgrind did not start: {line!r}")
        self.url = line.strip().split("listening on ")[1]

    def stop(self):
        return stop(self.proc)


def stop(proc, timeout=180):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def submit(env, tmp_path, name, jobs, wait=False):
    """aiq-submit under valgrind (NDJSON on stdin); returns the results it printed."""
    log = tmp_path / f"submit-{name}.valgrind"
    args = [binary("aiq-submit"), "-b", BROKERS, "--prefix", env.prefix, "-"]
    if wait:
        args[1:1] = ["--wait", "--wait-timeout-ms", "240000"]
    r = run(valgrind(log) + args, input="".join(json.dumps(j) + "\n" for j in jobs),
            timeout=300)
    assert r.returncode == 0, f"aiq-submit exit {r.returncode}: {r.stderr}\n{errors_in(log)}"
    assert not errors_in(log), errors_in(log)
    return [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]


def results_by_id(env, ids, timeout=240):
    """The results of the jobs ids (the topic holds earlier ones too), by job id."""
    c = env.consumer()
    c.assign([TopicPartition(env.results_topic, p, 0) for p in range(env.partitions)])
    got, deadline = {}, time.time() + timeout
    try:
        while time.time() < deadline and not set(ids) <= got.keys():
            m = c.poll(0.5)
            if m is not None and not m.error():
                r = json.loads(m.value())
                if r["job_id"] in ids:
                    got[r["job_id"]] = r
    finally:
        c.close()
    return got


def job(env, name, i):
    return {"id": f"vg-{env.tag}-{name}-{i}", "operation": "vc-analysis",
            "payload": {"company": f"Company {i}", "n": i}}


def test_valgrind_main_path_has_no_errors(aiq_env, tmp_path):
    sim = aiq_env.sim = ValgrindSim(tmp_path)
    wlog = tmp_path / "worker.valgrind"
    env = aiq_env.worker_env(AIQ_WORKER_ID=f"vg-{aiq_env.tag}", AIQ_WORKER_MAX_INFLIGHT=5,
                             AIQ_WORKER_RETRY_BASE_MS=20, AIQ_WORKER_RETRY_MAX_MS=100,
                             AIQ_WORKER_REQUEUE=0)
    with open(tmp_path / "worker.log", "w") as out:
        worker = subprocess.Popen(valgrind(wlog) + [binary("aiq-worker")], env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        # 30 fresh jobs, submitted by aiq-submit under valgrind.
        fresh = [job(aiq_env, "fresh", i) for i in range(30)]
        submit(aiq_env, tmp_path, "fresh", fresh)
        got = results_by_id(aiq_env, [j["id"] for j in fresh])
        assert len(got) == 30 and all(r["status"] == "succeeded" for r in got.values()), got

        # 10 repeats of answered questions: cache hits; aiq-submit --wait reads the results.
        repeats = [dict(job(aiq_env, "fresh", i), id=f"vg-{aiq_env.tag}-again-{i}")
                   for i in range(10)]
        printed = submit(aiq_env, tmp_path, "again", repeats, wait=True)
        assert {r["job_id"] for r in printed} == {j["id"] for j in repeats}
        assert all(r["cache"]["hit"] for r in printed), printed

        # One record that is not JSON: the DLQ.
        p = Producer({"bootstrap.servers": BROKERS})
        p.produce(aiq_env.job_topic("normal"), key=b"vg-garbage", value=b"\x00not json{")
        assert p.flush(30) == 0

        # An outage: 9 new jobs answered by the fallback chain.
        sim_config(sim, fail_rate=1, fail_status=503)
        down = [job(aiq_env, "down", 100 + i) for i in range(9)]
        submit(aiq_env, tmp_path, "down", down)
        got = results_by_id(aiq_env, [j["id"] for j in down])
        assert len(got) == 9, got
        assert all(r["status"] in ("degraded", "failed") and r["fallback"] for r in got.values())

        dlq = aiq_env.read_all(aiq_env.dlq_topic, 1, timeout=120)
        assert len(dlq) == 1 and dlq[0].value() == b"\x00not json{"
    finally:
        wrc = stop(worker)
        src = sim.stop()
    assert wrc == 0, f"aiq-worker exit {wrc}\n{errors_in(wlog)}"
    assert not errors_in(wlog), errors_in(wlog)
    assert src == 0, f"bedrock-sim exit {src}\n{errors_in(sim.log)}"
    assert not errors_in(sim.log), errors_in(sim.log)
