"""Alert rules in the worker: 20 % failing jobs raise the error-rate critical alert on
<prefix>alerts and recovery resolves it, once; every event, and the schema's examples, match
schemas/alert.schema.json (checked by Python jsonschema, independent of the C side)."""
import copy
import glob
import json
import os
import threading
import time

import pytest
from confluent_kafka import TopicPartition

from aiqtest import SCHEMAS, schema, sim_config, submit, wait_until

ALERT = schema("alert.schema.json")
EXAMPLES = sorted(glob.glob(os.path.join(SCHEMAS, "examples", "alert-*.json")))


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_alert_examples_valid(path):
    ALERT.validate(load(path))


def test_alert_schema_refuses_malformed():
    base = load(EXAMPLES[0])
    bad = []
    for key, value in (("severity", "info"), ("alert", "disk_full"), ("value", -1),
                       ("unit", "percent"), ("window_ms", 0), ("worker", ""), ("ts", 5)):
        doc = copy.deepcopy(base)
        doc[key] = value
        bad.append(doc)
    missing = copy.deepcopy(base)
    del missing["started_at"]
    extra = dict(base, extra=1)
    resolved_from_nothing = dict(base, severity="resolved", previous="resolved")
    rate_over_one = dict(base, value=1.5)
    raised_for_no_data = dict(base, no_data=True)
    bad += [missing, extra, resolved_from_nothing, rate_over_one, raised_for_no_data]
    for doc in bad:
        assert not ALERT.is_valid(doc), doc
    assert len(EXAMPLES) >= 2


def test_error_rate_alert_raises_and_resolves(aiq_env):
    sim = aiq_env.start_sim(latency_ms=5)
    # 4 s window (0.4 s slots), 1 s hold; 10 jobs make a judgement
    w = aiq_env.start_worker(AIQ_ALERTS_WINDOW_MS=4000, AIQ_ALERTS_CLEAR_HOLD_MS=1000,
                             AIQ_ALERTS_MIN_JOBS=10)
    aiq_env.wait_group_stable(1)
    c = aiq_env.consumer()
    c.assign([TopicPartition(aiq_env.prefix + "alerts", p, 0) for p in range(aiq_env.partitions)])
    events, raw = [], []

    def poll_events():
        m = c.poll(0.2)
        while m is not None:
            if not m.error():
                raw.append(m)
                events.append(json.loads(m.value()))
            m = c.poll(0)
        return events

    def rate_event(severity):
        return lambda: any(e["alert"] == "error_rate" and e["severity"] == severity
                           for e in poll_events())

    stop = threading.Event()
    n = [0]

    def feed():  # a steady stream of distinct jobs, 40 a second
        while not stop.is_set():
            submit(aiq_env, [{"id": f"a-{aiq_env.tag}-{n[0] + i}", "operation": "vc-analysis",
                              "payload": {"n": n[0] + i}} for i in range(10)])
            n[0] += 10
            time.sleep(0.25)

    t = threading.Thread(target=feed)
    t.start()
    try:
        time.sleep(3)  # clean traffic first: no error-rate alert
        assert not rate_event("critical")() and not rate_event("warning")(), events
        # 20 % of model calls answered 400 ValidationException: final, so the job fails
        sim_config(sim, errors=[{"status": 400, "rate": 0.2}])
        t0 = time.time()
        wait_until(rate_event("critical"), 30, "a critical error_rate alert")
        raise_s = time.time() - t0
        sim_config(sim, errors=None)
        t0 = time.time()
        wait_until(rate_event("resolved"), 30, "the error_rate alert to resolve")
        resolve_s = time.time() - t0
        time.sleep(2)  # anything flapping after the resolve would show up now
        poll_events()
    finally:
        stop.set()
        t.join()
        c.close()
    print(f"critical after {raise_s:.1f} s of errors, resolved {resolve_s:.1f} s after they "
          f"stopped; {n[0]} jobs; events: {[(e['alert'], e['severity']) for e in events]}")
    for e in events:
        ALERT.validate(e)
    for m in raw:
        assert m.key().decode() == f"w0-{aiq_env.tag}/{json.loads(m.value())['alert']}"
    rate = [e for e in events if e["alert"] == "error_rate"]
    crit = next(e for e in rate if e["severity"] == "critical")
    assert 0.10 < crit["value"] <= 0.5 and crit["threshold"] == 0.10, crit
    assert crit["window_ms"] == 4000 and crit["worker"] == f"w0-{aiq_env.tag}"
    resolved = [e for e in rate if e["severity"] == "resolved"]
    assert len(resolved) == 1, rate  # no flapping: one resolve, nothing raised after it
    assert rate[-1] is resolved[0], rate
    assert resolved[0]["previous"] in ("critical", "warning") and not resolved[0]["no_data"]
    # resolved from critical needs < 8 % for the hold; from warning < 4 %; either way <= 5 %
    thr = {"critical": 0.10, "warning": 0.05}[resolved[0]["previous"]]
    assert resolved[0]["threshold"] == thr and resolved[0]["value"] < thr * 0.8, resolved
    assert resolved[0]["value"] <= 0.05, resolved
    assert resolved[0]["started_at"] == crit["started_at"] <= resolved[0]["ts"]
    # severity only moves one way before the resolve: up to critical, then maybe a warning
    assert [e["severity"] for e in rate] in (["critical", "resolved"],
                                             ["warning", "critical", "resolved"],
                                             ["critical", "warning", "resolved"],
                                             ["warning", "critical", "warning", "resolved"])
    assert w.stop() == 0, w.output()[-3000:]
    assert "alert error_rate critical" in w.output()
