"""Alert rules in the worker: 20 % errors raise the error-rate critical alert on
<prefix>alerts, recovery resolves it; every event matches schemas/alert.schema.json."""
import json
import threading
import time

from confluent_kafka import TopicPartition

from test_consumer_core import sim_config, submit, wait_until
from test_schemas import schema


def test_error_rate_alert_raises_and_resolves(aiq_env):
    alert_schema = schema("alert.schema.json")
    sim = aiq_env.start_sim(latency_ms=5)
    w = aiq_env.start_worker(AIQ_ALERTS_WINDOW_MS=4000, AIQ_ALERTS_CLEAR_HOLD_MS=1000,
                             AIQ_ALERTS_MIN_JOBS=10)
    aiq_env.wait_group_stable(1)
    c = aiq_env.consumer()
    c.assign([TopicPartition(aiq_env.prefix + "alerts", p, 0) for p in range(aiq_env.partitions)])
    events = []

    def poll_events():
        m = c.poll(0.2)
        while m is not None:
            if not m.error():
                events.append(json.loads(m.value()))
            m = c.poll(0)
        return events

    stop = threading.Event()
    n = [0]

    def feed():  # a steady stream of jobs, 40 a second
        while not stop.is_set():
            submit(aiq_env, [{"id": f"a-{aiq_env.tag}-{n[0] + i}", "operation": "vc-analysis",
                              "payload": {"n": n[0] + i}} for i in range(10)])
            n[0] += 10
            time.sleep(0.25)

    t = threading.Thread(target=feed)
    t.start()
    try:
        # 20 % of calls answered 400 ValidationException: final, so the job fails
        sim_config(sim, errors=[{"status": 400, "rate": 0.2}])
        wait_until(lambda: any(e["alert"] == "error_rate" and e["severity"] == "critical"
                               for e in poll_events()), 30, "a critical error_rate alert")
        sim_config(sim, errors=None)
        wait_until(lambda: any(e["alert"] == "error_rate" and e["severity"] == "resolved"
                               for e in poll_events()), 30, "the error_rate alert to resolve")
    finally:
        stop.set()
        t.join()
        c.close()
    rate = [e for e in events if e["alert"] == "error_rate"]
    for e in events:
        alert_schema.validate(e)
    crit = next(e for e in rate if e["severity"] == "critical")
    assert crit["value"] >= 0.10 and crit["threshold"] == 0.10, crit
    resolved = next(e for e in rate if e["severity"] == "resolved")
    assert resolved["previous"] in ("critical", "warning")
    assert resolved["started_at"] <= resolved["ts"]
    assert resolved["worker"] == f"w0-{aiq_env.tag}"
    # no flapping: one raise to critical, one resolve
    assert sum(1 for e in rate if e["severity"] == "resolved") == 1, rate
    assert w.stop() == 0, w.output()[-3000:]
