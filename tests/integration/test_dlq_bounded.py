"""Dead letters are bounded (issue #17): a record larger than the DLQ topic accepts is cut to
its cap with its size, SHA-256 and origin in headers, never retried for ever and never holding
a job slot; the job after it on the same partition is answered and the committed offset moves
past it. While the DLQ cannot be written, /readyz, a metric and an alert say so."""
import hashlib
import json
import os
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from aiqtest import BROKERS, admin_port, get, metric, schema, set_topic_config, wait_until

DLQ_MAX = 262144  # the DLQ topic's max.message.bytes in this test (broker default ~1 MB)
ALERT = schema("alert.schema.json")


def produce(topic, partition, records, **conf):
    """Produces (key, value) pairs to one partition; returns [(offset, key, value)]."""
    c = {"bootstrap.servers": BROKERS, "compression.type": "zstd",
         "message.max.bytes": 32 * 1024 * 1024}
    c.update(conf)
    p = Producer(c)
    out = []

    def on_delivery(err, msg):
        assert err is None, err
        out.append((msg.offset(), msg.key(), msg.value()))

    for key, value in records:
        p.produce(topic, value=value, key=key, partition=partition, on_delivery=on_delivery)
    assert p.flush(60) == 0
    return sorted(out)


def job(job_id, **fields):
    j = {"id": job_id, "operation": "vc-analysis", "payload": {"company": job_id}}
    j.update(fields)
    return json.dumps(j).encode()


def huge_records():
    # 10 MB whose zstd form (~5 MB) is still over the broker's default 1 MB limit: the job
    # topic's max.message.bytes is raised so that the broker takes it compressed.
    blob = os.urandom(5 * 1024 * 1024).hex()
    zstd_10mb = job("huge-zstd", payload={"blob": blob})
    many = job("many-messages", payload=None,
               messages=[{"role": "user", "content": [{"text": "hello there"}]}] * 100000)
    assert len(zstd_10mb) > 10 * 1024 * 1024 and len(many) > 4 * 1024 * 1024
    return zstd_10mb, many


def headers(m):
    return {k: (v or b"").decode() for k, v in (m.headers() or [])}


def test_oversized_records_are_cut_to_the_dlq_cap_and_the_partition_moves_on(aiq_env):
    topic = aiq_env.job_topic("normal")
    set_topic_config(topic, max_message_bytes=16 * 1024 * 1024)
    set_topic_config(aiq_env.dlq_topic, max_message_bytes=DLQ_MAX)
    aiq_env.start_sim(latency_ms=1)
    # Two slots: on main, each oversized record held one for good and the worker stopped.
    w = aiq_env.start_worker(AIQ_WORKER_MAX_INFLIGHT=2, AIQ_ADMIN_LISTEN="127.0.0.1:0")
    base = f"http://127.0.0.1:{admin_port(w)}"
    aiq_env.wait_group_stable(1)
    zstd_10mb, many = huge_records()
    placed = produce(topic, 0, [(b"huge-zstd", zstd_10mb), (b"many-messages", many),
                                (b"huge-2", zstd_10mb), (b"after-big", job("after-big"))])
    offsets = {k: o for o, k, v in placed}

    results = aiq_env.read_all(aiq_env.results_topic, 1, timeout=60)
    got = {json.loads(m.value())["job_id"]: json.loads(m.value()) for m in results}
    assert got.get("after-big", {}).get("status") == "succeeded", (got, w.output()[-3000:])

    dlq = aiq_env.read_all(aiq_env.dlq_topic, 3, timeout=60)
    assert len(dlq) == 3, w.output()[-3000:]
    for m in dlq:
        h = headers(m)
        original = zstd_10mb if m.key() in (b"huge-zstd", b"huge-2") else many
        assert h["aiq.dlq.error-kind"] == "too_large", h
        assert h["aiq.dlq.original-topic"] == topic
        assert int(h["aiq.dlq.original-partition"]) == 0
        assert int(h["aiq.dlq.original-offset"]) == offsets[m.key()]
        assert int(h["aiq.dlq.original-timestamp"]) > 0
        assert int(h["aiq.dlq.original-size"]) == len(original)
        assert h["aiq.dlq.original-sha256"] == hashlib.sha256(original).hexdigest()
        assert h["aiq.dlq.truncated"] == "true"
        assert "aiq.dlq.minimal" not in h  # the cap fitted: no fallback was needed
        # cut to what the DLQ topic accepts (read from it at start), not to a fixed size
        assert DLQ_MAX // 2 < len(m.value()) <= DLQ_MAX, len(m.value())
        assert original.startswith(m.value())
    out = w.output()
    assert "dead letter refused" not in out and "dead letter to" not in out, out[-3000:]
    assert f"{aiq_env.dlq_topic} max.message.bytes {DLQ_MAX}" in out, out[-3000:]

    # the committed offset moves past the oversized records
    def committed_past():
        rows = [r for r in aiq_env.committed_vs_end() if r[0] == topic and r[1] == 0]
        return rows and rows[0][2] == rows[0][3] == offsets[b"after-big"] + 1
    wait_until(committed_past, 60, "the commit of partition 0 to move past the records")
    # /metrics is a snapshot refreshed each second
    text = wait_until(lambda: (lambda t: metric(t, "aiq_dlq_total", kind="too_large") == 3 and t)(
        get(base + "/metrics")[1]), 10, "aiq_dlq_total to count the three")
    assert metric(text, "aiq_dlq_writable") == 1
    assert metric(text, "aiq_dlq_waiting") == 0
    assert w.stop() == 0


def test_unwritable_dlq_reports_not_ready_and_holds_no_slot(aiq_env):
    """The DLQ topic is missing: the dead letter (minimal by then) is retried with a backoff
    without its job slot, the jobs behind it are answered, /readyz, aiq_dlq_writable and a
    dlq_unwritable alert say so; once the topic exists the letter is written, all resolves,
    and the commit moves past."""
    admin = AdminClient({"bootstrap.servers": BROKERS})
    for f in admin.delete_topics([aiq_env.dlq_topic]).values():
        f.result(30)
    wait_until(lambda: aiq_env.dlq_topic not in admin.list_topics(timeout=10).topics, 30,
               "the DLQ topic to be gone")
    aiq_env.start_sim(latency_ms=1)
    w = aiq_env.start_worker(AIQ_WORKER_MAX_INFLIGHT=1, AIQ_ADMIN_LISTEN="127.0.0.1:0")
    base = f"http://127.0.0.1:{admin_port(w)}"
    aiq_env.wait_group_stable(1)
    topic = aiq_env.job_topic("normal")
    bad = b'{"not": "a job"}'
    placed = produce(topic, 0, [(b"bad", bad)] + [(f"ok-{i}".encode(), job(f"ok-{i}"))
                                                   for i in range(3)])
    results = aiq_env.read_all(aiq_env.results_topic, 3, timeout=60)
    assert sorted(json.loads(m.value())["job_id"] for m in results) == ["ok-0", "ok-1", "ok-2"]

    def not_ready():
        st, body = get(base + "/readyz")
        return st == 503 and aiq_env.dlq_topic in body and body
    # librdkafka learns that the topic is missing within topic.metadata.propagation.max.ms
    body = wait_until(not_ready, 90, "/readyz to report the DLQ")
    assert "dead letters" in body, body
    _, text = get(base + "/metrics")
    assert metric(text, "aiq_dlq_writable") == 0
    assert metric(text, "aiq_dlq_waiting") == 1
    assert metric(text, "aiq_dlq_write_failures_total") >= 1
    assert metric(text, "aiq_inflight") == 0  # the waiting dead letter holds no slot
    rows = [r for r in aiq_env.committed_vs_end() if r[0] == topic and r[1] == 0]
    assert rows[0][2] in (-1001, placed[0][0]), rows  # not past the unwritten dead letter

    for f in admin.create_topics([NewTopic(aiq_env.dlq_topic, aiq_env.partitions, 1)]).values():
        f.result(30)
    dlq = aiq_env.read_all(aiq_env.dlq_topic, 1, timeout=90)
    assert len(dlq) == 1 and dlq[0].value() == bad, dlq
    h = headers(dlq[0])
    assert h["aiq.dlq.error-kind"] == "invalid_job"
    assert h["aiq.dlq.minimal"] == "true" and h["aiq.dlq.write-error"], h
    wait_until(lambda: get(base + "/readyz")[0] == 200, 60, "/readyz to be ready again")
    end = placed[-1][0] + 1
    wait_until(lambda: [r for r in aiq_env.committed_vs_end()
                        if r[0] == topic and r[1] == 0][0][2] == end, 60, "the commit")

    def both(recs):  # other rules may raise alerts too
        return sum(b"dlq_unwritable" in m.value() for m in recs) >= 2
    alerts = [json.loads(m.value()) for m in
              aiq_env.read_all(aiq_env.prefix + "alerts", 100, timeout=60, stop=both)]
    mine = [a for a in alerts if a["alert"] == "dlq_unwritable"]
    assert [a["severity"] for a in mine] == ["critical", "resolved"], alerts
    for a in mine:
        ALERT.validate(a)
    assert w.stop() == 0
