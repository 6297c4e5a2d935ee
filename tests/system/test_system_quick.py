"""Runs the fault-injection suite at --quick sizes (tests/system/run.py all --quick) and
checks every scenario's verdict: PASS, lost=0, and as many answers as submissions.

run.py starts (and stops) its own broker on AIQ_SYSTEM_KAFKA_PORT (default 19092), since one
scenario restarts it; binaries come from AIQ_BUILD_DIR. About 3-4 minutes on 2 cores."""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "run.py")
SCENARIOS = ["sigkill", "broker-restart", "bedrock-outage", "throttle-storm",
             "latency-spike", "scale", "cache-full", "oversized-record", "internal-topic",
             "hung-provider"]
VERDICT = re.compile(
    r"^verdict: (?P<name>\S+) submitted=(?P<submitted>\d+) answered=(?P<answered>\d+) "
    r"dlq=(?P<dlq>\d+) lost=(?P<lost>\d+) duplicated=(?P<duplicated>\d+) "
    r"statuses=(?P<statuses>\S+) result=(?P<result>PASS|FAIL)$", re.M)


def test_all_scenarios_quick(tmp_path):
    p = subprocess.run([sys.executable, RUN, "all", "--quick", "--workdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    out = p.stdout
    verdicts = {m["name"]: m for m in VERDICT.finditer(out)}
    assert sorted(verdicts) == sorted(SCENARIOS), out[-4000:] + p.stderr[-2000:]
    lines = "\n".join(v.group(0) for v in verdicts.values())
    checks = "\n".join(l for l in out.splitlines() if "check: FAILED" in l)
    for name, v in verdicts.items():
        submitted, answered, dlq = int(v["submitted"]), int(v["answered"]), int(v["dlq"])
        assert submitted > 0, (name, out[-4000:])
        assert int(v["lost"]) == 0, (name, v.group(0))
        assert answered + dlq == submitted, (name, v.group(0))
        counted = sum(int(kv.split(":")[1]) for kv in v["statuses"].split(","))
        assert counted == answered, (name, v.group(0))
    failed = [n for n, v in verdicts.items() if v["result"] != "PASS"]
    assert not failed, f"FAIL: {failed}\n{lines}\n{checks}"
    assert p.returncode == 0, out[-4000:] + p.stderr[-2000:]
