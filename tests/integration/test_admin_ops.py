"""aiq-admin for operators against the real broker: group describe shows who owns every job
partition, dlq list shows the dead letters with why and from where, and dlq replay sends the
chosen ones back to their job topic (nothing on a dry run) where a worker answers them."""
import json
import time

from confluent_kafka import Producer, TopicPartition

from aiqtest import BROKERS, PRIORITIES, binary, run

MAX_JOB_BYTES = 4096


def admin(env, *args):
    return run([binary("aiq-admin"), "-b", BROKERS, "--prefix", env.prefix, "--group", env.group,
                *args], timeout=90)


def end_offsets(env, topic):
    c = env.consumer()
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                for p in range(env.partitions)]
    finally:
        c.close()


def test_group_describe_shows_every_partition_assigned(aiq_env):
    aiq_env.start_sim(latency_ms=1)
    aiq_env.start_worker()
    aiq_env.start_worker()
    aiq_env.wait_group_stable(2)

    r = admin(aiq_env, "group", "describe", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["group"] == aiq_env.group
    assert doc["state"] == "Stable"
    members = {m["member_id"]: m for m in doc["members"]}
    assert len(members) == 2
    every = {(aiq_env.job_topic(p), i) for p in PRIORITIES for i in range(aiq_env.partitions)}
    rows = {(row["topic"], row["partition"]): row for row in doc["partitions"]}
    assert set(rows) == every
    for key, row in rows.items():
        assert row["owner"] in members, row
        if row["committed"] >= 0:
            assert row["lag"] == row["end"] - row["committed"], row
    assigned = [(a["topic"], a["partition"]) for m in members.values() for a in m["assignment"]]
    assert sorted(assigned) == sorted(every)  # each partition exactly once
    for m in members.values():
        assert m["assignment"], m  # both workers own something
        assert rows[(m["assignment"][0]["topic"], m["assignment"][0]["partition"])][
            "owner"] == m["member_id"]
    assert set(doc["lag_per_priority"]) == set(PRIORITIES)

    r = admin(aiq_env, "group", "describe")
    assert r.returncode == 0, r.stderr
    assert "state Stable" in r.stdout and "members 2" in r.stdout
    assert "(unassigned)" not in r.stdout
    for member_id, m in members.items():  # its row, then once per partition it owns
        assert r.stdout.count(member_id) == 1 + len(m["assignment"]), (member_id, r.stdout)

    r = run([binary("aiq-admin"), "-b", BROKERS, "--prefix", aiq_env.prefix, "--group",
             "no-such-group-" + aiq_env.tag, "group", "describe"], timeout=90)
    assert r.returncode == 1
    assert "does not exist" in r.stderr
    r = run([binary("aiq-admin"), "group", "--help"])
    assert r.returncode == 0 and "describe" in r.stdout


def produce(topic, records):
    """Produces (key, value) pairs; returns {key: (partition, offset)}."""
    p = Producer({"bootstrap.servers": BROKERS})
    where = {}

    def on_delivery(err, msg):
        assert err is None, err
        where[msg.key()] = (msg.partition(), msg.offset())

    for key, value in records:
        p.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert p.flush(30) == 0
    return where


def dlq_list(env, *args):
    r = admin(env, "dlq", "list", "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_dlq_list_and_replay(aiq_env):
    aiq_env.start_sim(latency_ms=1)
    worker = aiq_env.start_worker(AIQ_WORKER_MAX_JOB_BYTES=MAX_JOB_BYTES)
    topic = aiq_env.job_topic("normal")
    big = json.dumps({"id": "big-1", "operation": "vc-analysis",
                      "payload": {"company": "Acme", "notes": "x" * (MAX_JOB_BYTES + 100)}})
    where = produce(topic, [(b"junk-1", b"\x00 not json"), (b"big-1", big.encode())])
    dead = aiq_env.read_all(aiq_env.dlq_topic, 2, timeout=60)
    assert len(dead) == 2
    assert worker.stop() == 0

    listed = dlq_list(aiq_env)
    assert len(listed) == 2
    by_kind = {rec["error_kind"]: rec for rec in listed}
    assert set(by_kind) == {"not_json", "too_large"}
    assert by_kind["too_large"]["job_id"] == "big-1"
    assert by_kind["too_large"]["original_topic"] == topic
    for kind, key in (("too_large", b"big-1"), ("not_json", b"junk-1")):
        rec = by_kind[kind]
        assert (rec["original_partition"], rec["original_offset"]) == where[key], rec
    assert by_kind["too_large"]["timestamp"].endswith("Z")
    assert "limit" in by_kind["too_large"]["error_message"]
    assert [r["error_kind"] for r in dlq_list(aiq_env, "--kind", "not_json")] == ["not_json"]
    assert [r["job_id"] for r in dlq_list(aiq_env, "--job-id", "big-1")] == ["big-1"]
    assert len(dlq_list(aiq_env, "--limit", "1")) == 1
    assert dlq_list(aiq_env, "--since", "2999-01-01T00:00:00Z") == []
    r = admin(aiq_env, "dlq", "list")
    assert r.returncode == 0 and "big-1" in r.stdout and "(2 records)" in r.stdout

    before = end_offsets(aiq_env, topic)
    dlq_end = end_offsets(aiq_env, aiq_env.dlq_topic)
    r = admin(aiq_env, "dlq", "replay", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)  # with --json, stdout is the summary alone
    assert r.stderr.count("would replay") == 2, r.stderr
    assert summary["would_replay"] == 2 and summary["replayed"] == 0, summary
    r = admin(aiq_env, "dlq", "replay", "--dry-run", "--kind", "not_json")
    assert r.returncode == 0 and "would replay 1," in r.stdout, r.stdout
    assert end_offsets(aiq_env, topic) == before  # a dry run produces nothing

    r = admin(aiq_env, "dlq", "replay", "--kind", "too_large")
    assert r.returncode == 0, r.stderr
    assert "replayed 1, skipped 0, failed 0" in r.stdout, r.stdout
    after = end_offsets(aiq_env, topic)
    assert sum(after) - sum(before) == 1
    assert end_offsets(aiq_env, aiq_env.dlq_topic) == dlq_end  # replay leaves the DLQ as is
    replayed = aiq_env.read_all(topic, 3, timeout=30)
    heads = [dict(m.headers() or []) for m in replayed if m.key() == b"big-1"]
    assert any(h.get("aiq.replayed-from", b"").decode().startswith(aiq_env.dlq_topic + "/")
               for h in heads), heads

    aiq_env.start_worker()  # default max job size: the replayed job now fits
    results = aiq_env.read_all(
        aiq_env.results_topic, 100, timeout=90,
        stop=lambda out: any(json.loads(m.value()).get("job_id") == "big-1"
                             and json.loads(m.value()).get("status") == "succeeded"
                             for m in out))
    answers = [json.loads(m.value()) for m in results]
    assert any(a["job_id"] == "big-1" and a["status"] == "succeeded" for a in answers), answers


def test_dlq_usage_errors(aiq_env):
    assert admin(aiq_env, "dlq", "frob").returncode == 2
    assert admin(aiq_env, "dlq", "list", "--dry-run").returncode == 2
    assert admin(aiq_env, "dlq", "replay", "--since", "yesterday").returncode == 2
    assert admin(aiq_env, "dlq", "replay", "--limit", "-3").returncode == 2
    r = run([binary("aiq-admin"), "dlq", "--help"])
    assert r.returncode == 0 and "--dry-run" in r.stdout and "does NOT remove" in r.stdout
    r = run([binary("aiq-admin"), "-b", BROKERS, "--prefix", "nope" + aiq_env.tag + ".",
             "dlq", "list"], timeout=90)
    assert r.returncode == 1 and "does not exist" in r.stderr


# ---- topics describe, breaker show|open|close|auto, --help (the admin.c side) ----

def test_topics_describe_shows_the_compacted_breaker_topic(aiq_env):
    r = admin(aiq_env, "topics", "describe", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    topics = {t["topic"]: t for t in doc["topics"]}
    assert doc["missing"] == 0
    breaker = topics[aiq_env.prefix + "breaker"]
    assert breaker["exists"] and breaker["partition_count"] == 1
    assert breaker["configs"]["cleanup.policy"] == "compact"
    assert [p["partition"] for p in breaker["partitions"]] == [0]
    assert breaker["partitions"][0]["leader"] >= 0
    for prio in PRIORITIES:
        t = topics[aiq_env.job_topic(prio)]
        assert t["partition_count"] == aiq_env.partitions and t["replication"] == 1
        assert t["configs"]["cleanup.policy"] == "delete"
        assert sorted(p["partition"] for p in t["partitions"]) == list(range(aiq_env.partitions))
    assert topics[aiq_env.dlq_topic]["configs"]["retention.ms"] == "604800000"

    r = admin(aiq_env, "topics", "describe")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith(aiq_env.prefix + "breaker "))
    assert line.split()[1:4] == ["1", "1", "compact"], line

    # A prefix without topics: every one is reported missing, exit 1.
    other = [binary("aiq-admin"), "-b", BROKERS, "--prefix", "none" + aiq_env.tag + "."]
    r = run(other + ["topics", "describe"], timeout=90)
    assert r.returncode == 1 and r.stdout.count(" missing") == 9, r.stdout
    r = run(other + ["--json", "topics", "list"], timeout=90)
    assert r.returncode == 1 and not any(t["exists"] for t in json.loads(r.stdout))


def test_breaker_show_open_close_auto_from_the_cli(aiq_env):
    model = "anthropic.claude-3-haiku-20240307-v1:0"
    r = admin(aiq_env, "breaker", "show", model)
    assert r.returncode == 1 and "never changed state" in r.stdout  # no record yet
    assert json.loads(admin(aiq_env, "--json", "breaker", "show").stdout) == []

    assert admin(aiq_env, "breaker", "open", model).returncode == 0
    shown = json.loads(admin(aiq_env, "--json", "breaker", "show", model).stdout)
    assert [(b["model"], b["state"], b["override"], b["by"]) for b in shown] == [
        (model, "open", "forced_open", "aiq-admin")]
    v_open = shown[0]["version"]

    assert admin(aiq_env, "breaker", "close", model).returncode == 0
    shown = json.loads(admin(aiq_env, "--json", "breaker", "show").stdout)
    assert [(b["state"], b["override"]) for b in shown] == [("closed", "forced_closed")]
    assert shown[0]["version"] > v_open  # the newest record wins on every worker

    assert admin(aiq_env, "breaker", "auto", model).returncode == 0
    r = admin(aiq_env, "breaker", "list")
    assert r.returncode == 0 and model in r.stdout and "auto" in r.stdout, r.stdout

    assert admin(aiq_env, "breaker", "open").returncode == 2
    assert admin(aiq_env, "breaker", "force", model, "ajar").returncode == 2
    r = run([binary("aiq-admin"), "breaker", "--help"])
    assert r.returncode == 0 and "close MODEL" in r.stdout


def test_help_and_usage_exit_codes():
    for cmd in (["--help"], ["topics", "--help"], ["group", "--help"], ["dlq", "--help"],
                ["breaker", "--help"], ["dlq", "replay", "--help"]):
        r = run([binary("aiq-admin"), *cmd])
        assert r.returncode == 0 and r.stdout.startswith("Usage:"), (cmd, r.stdout[:80])
    assert run([binary("aiq-admin"), "frob"]).returncode == 2
    assert run([binary("aiq-admin"), "topics", "list", "--kind", "x"]).returncode == 2
    assert run([binary("aiq-admin"), "--no-such-option", "topics", "list"]).returncode == 2
