"""reply_to never writes into aiq's own topics (issue #17: a reply_to of aiq.breaker put the
result under the job id into the compacted breaker topic): each internal topic is refused with
a `rejected` result on the default results topic saying why, and nothing reaches the topic;
allowed reply topics (worker.reply_topics, default <prefix>results and <prefix>reply.*) get
their results. One worker serves every case; one test per internal topic."""
import json

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from aiqtest import BROKERS, Env, RESULT

INTERNAL = {  # suffix after the prefix (or the full name) -> words in the reason
    "jobs.critical": "job topic", "jobs.high": "job topic", "jobs.normal": "job topic",
    "jobs.low": "job topic", "dlq": "dead-letter topic", "breaker": "breaker topic",
    "metrics": "metrics topic", "alerts": "alerts topic", "__consumer_offsets": "Kafka internal",
}


def full(env, name):
    return name if name.startswith("__") else env.prefix + name


def result_id(m):
    """The job_id of a result record (the DLQ holds refused job records: those are fine)."""
    try:
        return json.loads(m.value()).get("job_id")
    except (ValueError, AttributeError, TypeError):
        return None


@pytest.fixture(scope="module")
def policy_run(tmp_path_factory):
    env = Env(tmp_path_factory.mktemp("reply-policy"))
    try:
        admin = AdminClient({"bootstrap.servers": BROKERS})
        reply_topic = env.prefix + "reply.billing"
        for f in admin.create_topics([NewTopic(reply_topic, 1, 1)]).values():
            f.result(30)
        env.start_sim(latency_ms=1)
        w = env.start_worker(AIQ_METRICS_INTERVAL_MS=0)
        env.wait_group_stable(1)
        jobs = {f"to-{name.strip('_').replace('.', '-')}": full(env, name) for name in INTERNAL}
        jobs["to-reply"] = reply_topic
        jobs["to-results"] = env.results_topic
        jobs["to-elsewhere"] = "orders"
        p = Producer({"bootstrap.servers": BROKERS})
        for jid, topic in jobs.items():
            p.produce(env.job_topic("normal"), key=jid, value=json.dumps(
                {"id": jid, "operation": "vc-analysis", "payload": {"n": jid},
                 "reply_to": topic}))
        assert p.flush(30) == 0
        expect_default = len(jobs) - 1  # all but to-reply answer on the default topic
        results = env.read_all(env.results_topic, expect_default, timeout=60)
        by_id = {}
        for m in results:
            r = json.loads(m.value())
            by_id.setdefault(r["job_id"], []).append(r)
        replied = env.read_all(reply_topic, 1, timeout=30)
        # what reached each internal topic under these job ids (metrics snapshots are off)
        leaked = {}
        for name in INTERNAL:
            if name.startswith("__") or name.startswith("jobs."):
                continue
            recs = env.read_all(full(env, name), 100, timeout=5)
            leaked[name] = [result_id(m) for m in recs if result_id(m)]
        yield env, jobs, by_id, replied, leaked, w
    finally:
        env.close()


@pytest.mark.parametrize("name", list(INTERNAL))
def test_reply_to_internal_topic_is_rejected(policy_run, name):
    env, jobs, by_id, replied, leaked, w = policy_run
    jid = f"to-{name.strip('_').replace('.', '-')}"
    got = by_id.get(jid)
    assert got and len(got) == 1, (jid, sorted(by_id), w.output()[-2000:])
    r = got[0]
    RESULT.validate(r)
    assert r["status"] == "rejected", r
    assert r["error"]["kind"] == "invalid_job", r
    assert full(env, name) in r["error"]["message"] and INTERNAL[name] in r["error"]["message"], r
    if name in leaked:
        assert jid not in leaked[name], leaked[name]


def test_reply_to_allowed_topics_get_results(policy_run):
    env, jobs, by_id, replied, leaked, w = policy_run
    assert [json.loads(m.value())["job_id"] for m in replied] == ["to-reply"]
    assert json.loads(replied[0].value())["status"] == "succeeded"
    assert "to-reply" not in by_id
    assert by_id["to-results"][0]["status"] == "succeeded"
    other = by_id["to-elsewhere"][0]
    assert other["status"] == "rejected"
    assert "worker.reply_topics" in other["error"]["message"], other
