"""Operations as configuration, on the real broker: a worker given its own operations file
sends each job to the operation's model (or the job's, or the default) with the operation's
rendered prompt and API; reject mode sends unlisted operations to the DLQ; and a bad file
stops the worker at start with the file, the line and the problem."""
import json
import time

from aiqtest import RESULT, submit

OP_MODEL = "custom.model-it-v1:0"
JOB_MODEL = "job.model-it-v1:0"
DEFAULT_MODEL = "default.model-it-v1:0"
INV_MODEL = "anthropic.claude-it-v1:0"  # InvokeModel bodies are per family: a known one

OPERATIONS = {
    "description": "integration test operations",
    "operations": {
        "*": {"template": "STAR {{operation}}: {{payload}}"},
        "it-op": {
            "model": OP_MODEL,
            "system": "You are the test system prompt for {{who.name}}.",
            "template": "ITOPS {{greeting}} {{who.name}} #{{n}} {{tags.1}}",
            "max_tokens": 64,
            "personas": {"terse": {"template": "TERSE {{who.name}}"}},
        },
        "it-inv": {"api": "invoke", "model": INV_MODEL, "template": "INVOKED {{greeting}}"},
    },
    "models": {OP_MODEL: {"usd_per_1k_input": 0.001, "usd_per_1k_output": 0.002}},
}


def write_ops(tmp_path, doc, name="ops.json"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=2))
    return str(path)


def test_operations_file_sets_model_prompt_and_api(aiq_env, tmp_path):
    sim = aiq_env.start_sim(latency_ms=2)
    path = write_ops(tmp_path, OPERATIONS)
    worker = aiq_env.start_worker(AIQ_WORKER_OPERATIONS_FILE=path,
                                  AIQ_BEDROCK_DEFAULT_MODEL=DEFAULT_MODEL)
    aiq_env.wait_group_stable(1)
    t = aiq_env.tag
    jobs = [{"id": f"op-{t}-{i}", "operation": "it-op",
             "payload": {"greeting": "hello", "who": {"name": f"user{i}"}, "n": i,
                         "tags": ["a", f"b{i}"]}} for i in range(3)]
    jobs.append({"id": f"op-{t}-persona", "operation": "it-op", "persona": "terse",
                 "payload": {"who": {"name": "zed"}}})
    jobs.append({"id": f"op-{t}-jobmodel", "operation": "it-op", "model": JOB_MODEL,
                 "payload": {"greeting": "hi", "who": {"name": "jo"}, "n": 7}})
    jobs.append({"id": f"op-{t}-star", "operation": "not-listed", "payload": {"b": 1, "a": 2}})
    jobs.append({"id": f"op-{t}-inv", "operation": "it-inv", "payload": {"greeting": "yo"}})
    # A model whose InvokeModel body aiq does not know is refused by name, never sent an
    # Anthropic body (it once was).
    jobs.append({"id": f"op-{t}-invbad", "operation": "it-inv", "model": DEFAULT_MODEL,
                 "payload": {"greeting": "no"}})
    submit(aiq_env, jobs, acked=True)

    records = aiq_env.read_all(aiq_env.results_topic, len(jobs), timeout=90)
    results = {json.loads(m.value())["job_id"]: json.loads(m.value()) for m in records}
    assert set(results) == {j["id"] for j in jobs}, results.keys()
    bad = results.pop(f"op-{t}-invbad")
    RESULT.validate(bad)
    assert bad["status"] == "rejected", bad
    assert bad["error"]["kind"] == "unsupported_request", bad
    assert "model" in bad["error"]["message"] and "bring a body" in bad["error"]["message"], bad
    for res in results.values():
        RESULT.validate(res)
        assert res["status"] == "succeeded", res
        assert res["usage"]["input_tokens"] > 0, res

    # The sim answers "sim reply to: <first 60 chars of the user text> [<model>]".
    for i in range(3):
        res = results[f"op-{t}-{i}"]
        assert res["model"] == OP_MODEL
        assert res["output"]["text"].startswith(
            f"sim reply to: ITOPS hello user{i} #{i} b{i} [{OP_MODEL}]"), res["output"]
    assert results[f"op-{t}-persona"]["output"]["text"].startswith(
        f"sim reply to: TERSE zed [{OP_MODEL}]")
    res = results[f"op-{t}-jobmodel"]
    assert res["model"] == JOB_MODEL
    assert res["output"]["text"].startswith(f"sim reply to: ITOPS hi jo #7  [{JOB_MODEL}]")
    res = results[f"op-{t}-star"]
    assert res["model"] == DEFAULT_MODEL
    assert res["output"]["text"].startswith(
        'sim reply to: STAR not-listed: {"a":2,"b":1} [' + DEFAULT_MODEL + "]")
    res = results[f"op-{t}-inv"]
    assert res["model"] == INV_MODEL
    assert res["output"]["text"].startswith(f"sim reply to: INVOKED yo [{INV_MODEL}]")

    stats = sim.stats()
    assert stats["by_model"] == {OP_MODEL: 4, JOB_MODEL: 1, DEFAULT_MODEL: 1, INV_MODEL: 1}, stats
    assert stats["by_kind"]["converse"] == 6, stats
    assert stats["by_kind"]["invoke"] == 1, stats
    assert worker.stop() == 0, worker.output()[-2000:]
    assert f"operations: 2 from {path}" in worker.output()


def test_operations_reject_mode_sends_unlisted_to_dlq(aiq_env, tmp_path):
    sim = aiq_env.start_sim(latency_ms=2)
    path = write_ops(tmp_path, OPERATIONS)
    worker = aiq_env.start_worker(AIQ_WORKER_OPERATIONS_FILE=path,
                                  AIQ_WORKER_UNKNOWN_OPERATIONS="reject")
    t = aiq_env.tag
    submit(aiq_env, [{"id": f"rej-{t}", "operation": "not-listed", "payload": {}},
                     {"id": f"ok-{t}", "operation": "it-op", "payload": {"greeting": "x"}}],
           acked=True)
    records = aiq_env.read_all(aiq_env.results_topic, 2, timeout=90)
    results = {json.loads(m.value())["job_id"]: json.loads(m.value()) for m in records}
    assert results[f"ok-{t}"]["status"] == "succeeded", results
    assert results[f"rej-{t}"]["status"] == "rejected", results
    assert results[f"rej-{t}"]["error"]["kind"] == "invalid_job"
    dlq = aiq_env.read_all(aiq_env.dlq_topic, 1, timeout=30)
    assert len(dlq) == 1
    h = {k: v.decode() for k, v in dlq[0].headers()}
    assert h["aiq.dlq.error-kind"] == "invalid_job", h
    assert "not-listed" in h["aiq.dlq.error-message"], h
    assert sim.stats()["requests"] == 1
    assert worker.stop() == 0, worker.output()[-2000:]


BAD_FILES = [
    # (file text, what the error must say besides the file name)
    ('{"operations": {\n  "it-op": {\n    "tempalte": "x"\n  }\n}}\n',
     [":3:", "operations.it-op", "unknown key 'tempalte'"]),
    ('{"operations": {\n  "it-op": {\n    "template": "Hello {{name"\n  }\n}}\n',
     [":3:", "operations.it-op.template", "no closing '}}'"]),
    ('{"operations": {\n  "it-op": {"template": "x",}\n}}\n', [":2:"]),
    ('{"operations": {"it-op": {"api": "grpc"}}}', ["operations.it-op.api", "converse|invoke"]),
]


def wait_exit(worker, timeout=30):
    deadline = time.time() + timeout
    while worker.proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    return worker.proc.poll()


def test_operations_bad_file_stops_the_worker(aiq_env, tmp_path):
    aiq_env.start_sim(latency_ms=1)
    for i, (text, needles) in enumerate(BAD_FILES):
        path = write_ops(tmp_path, text, f"bad{i}.json")
        w = aiq_env.start_worker(AIQ_WORKER_OPERATIONS_FILE=path)
        code = wait_exit(w)
        out = w.output()
        assert code == 2, (code, out[-2000:])
        assert "worker.operations_file" in out and path in out, out[-2000:]
        for n in needles:
            assert n in out, (n, out[-2000:])
        assert "worker started" not in out
    missing = str(tmp_path / "missing.json")
    w = aiq_env.start_worker(AIQ_WORKER_OPERATIONS_FILE=missing)
    assert wait_exit(w) == 2
    assert missing in w.output() and "cannot open" in w.output()
    w = aiq_env.start_worker(AIQ_WORKER_UNKNOWN_OPERATIONS="sometimes")
    assert wait_exit(w) == 2
    assert "worker.unknown_operations" in w.output()
