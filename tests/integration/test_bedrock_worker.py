"""The worker against Bedrock as botocore defines it, on the real broker and bedrock-sim:
every InvokeModel family built and read in its own shape, a job's own body answered raw, the
Converse surface passed through (tool use, guardrail trace), what a request cannot carry
refused by name, prompt-cache tokens and their cost, ModelNotReady retried without shrinking
the adaptive limit, and the x-amzn-RequestId of a failed call in the result and the log."""
import json
import time

from aiqtest import (BROKERS, RESULT, admin_port, binary, produce_raw, run, scrape, sim_config,
                     submit, total)

FAMILIES = {
    "anthropic.claude-3-haiku-20240307-v1:0": "anthropic",
    "us.amazon.nova-lite-v1:0": "nova",
    "amazon.titan-text-express-v1": "titan",
    "meta.llama3-8b-instruct-v1:0": "llama",
    "mistral.mistral-7b-instruct-v0:2": "mistral",
    "cohere.command-r-v1:0": "cohere",
}
STOPS = {"end_turn", "max_tokens", "stop_sequence"}


def results_of(env, n, timeout=90):
    """The first n results (partial records of streamed jobs skipped), by job id."""
    def finals(recs):
        return sum(json.loads(m.value())["status"] != "partial" for m in recs)
    records = env.read_all(env.results_topic, 10**6, timeout=timeout,
                           stop=lambda recs: finals(recs) >= n)
    out = {}
    for m in records:
        res = json.loads(m.value())
        RESULT.validate(res)
        if res["status"] != "partial":
            out[res["job_id"]] = res
    return out


def scrape_when(port, cond, timeout=20):
    """/metrics once cond(samples) holds: a job's counters reach it when its result is acked
    and the provider's every metrics interval, a little after the result is readable."""
    deadline = time.time() + timeout
    samples = scrape(port)
    while not cond(samples) and time.time() < deadline:
        time.sleep(0.2)
        samples = scrape(port)
    return samples


def convo(text):
    return [{"role": "user", "content": [{"text": text}]}]


def test_bedrock_every_family_answers(aiq_env):
    """Regression: a Titan job was sent an Anthropic body, its valid 200 read as
    bad_response, retried 5 times, and the model's breaker opened."""
    sim = aiq_env.start_sim(latency_ms=2)
    aiq_env.start_worker(AIQ_WORKER_MAX_ATTEMPTS=5)
    aiq_env.wait_group_stable(1)
    t = aiq_env.tag
    jobs = []
    for i, (model, fam) in enumerate(FAMILIES.items()):
        jobs.append({"id": f"inv-{t}-{fam}", "operation": "x", "api": "invoke", "model": model,
                     "system": "Be brief.", "messages": convo(f"hello {fam}"),
                     "inference": {"max_tokens": 50}, "cache": {"bypass": True}})
        jobs.append({"id": f"conv-{t}-{fam}", "operation": "x", "model": model,
                     "messages": convo(f"converse {fam}"), "cache": {"bypass": True}})
    # A body of the job's own, in the Llama shape: sent as is, answered byte for byte.
    jobs.append({"id": f"own-{t}", "operation": "x", "api": "invoke",
                 "model": "meta.llama3-8b-instruct-v1:0",
                 "body": {"prompt": "own body", "max_gen_len": 20}, "cache": {"bypass": True}})
    submit(aiq_env, jobs)
    res = results_of(aiq_env, len(jobs))
    assert set(res) == {j["id"] for j in jobs}, res.keys()
    for jid, r in res.items():
        assert r["status"] == "succeeded", r
        assert r["attempts"] == 1, r  # no 200 was taken for a failure
        assert r["error"] is None, r
        if jid.startswith("own-"):
            continue
        assert r["output"]["text"], r
        assert "unparsed" not in r["output"], r
        assert r["stop_reason"] in STOPS, r
        assert r["usage"]["input_tokens"] > 0 and r["usage"]["output_tokens"] > 0, r
        assert r["usage"]["total_tokens"] >= (r["usage"]["input_tokens"]
                                              + r["usage"]["output_tokens"]), r
    own = res[f"own-{t}"]
    raw = json.loads(own["output"]["raw"])
    assert "generation" in raw, own
    assert own["output"]["text"] == raw["generation"], own
    stats = sim.stats()
    assert stats["by_kind"]["invoke"] == len(FAMILIES) + 1, stats
    assert stats["by_kind"]["converse"] == len(FAMILIES), stats
    assert stats["ok"] == len(jobs), stats


def test_bedrock_converse_surface_and_refusals(aiq_env):
    sim = aiq_env.start_sim(latency_ms=2)
    aiq_env.start_worker()
    aiq_env.wait_group_stable(1)
    t = aiq_env.tag
    tools = {"tools": [{"toolSpec": {"name": "weather", "description": "Weather now",
                                     "inputSchema": {"json": {"type": "object"}}}}],
             "toolChoice": {"any": {}}}
    guard = {"guardrailIdentifier": "abc123", "guardrailVersion": "1", "trace": "enabled"}
    jobs = [
        {"id": f"tool-{t}", "operation": "x", "messages": convo("sim:tool weather in Munich"),
         "toolConfig": tools, "tenant": "acme", "user_id": "u-1",
         "requestMetadata": {"team": "growth"}, "cache": {"bypass": True}},
        {"id": f"guard-{t}", "operation": "x", "messages": convo("sim:guardrail say it"),
         "guardrailConfig": guard, "cache": {"bypass": True},
         "additionalModelResponseFieldPaths": ["/stop_sequence"]},
        {"id": f"cp-{t}", "operation": "x", "cache": {"bypass": True},
         "system": [{"text": "static"}, {"cachePoint": {"type": "default"}}],
         "messages": [{"role": "user", "content": [{"text": "a"}, {"cachePoint": {"type": "default"}}]}]},
        # refused before any call: a Converse field InvokeModel has no member for
        {"id": f"invtools-{t}", "operation": "x", "api": "invoke",
         "model": "amazon.titan-text-express-v1", "payload": {"a": 1}, "toolConfig": tools},
        # ... while the guardrail, latency and tier go as InvokeModel's headers
        {"id": f"invguard-{t}", "operation": "x", "api": "invoke", "cache": {"bypass": True},
         "model": "amazon.titan-text-express-v1", "payload": {"a": 1},
         "guardrailConfig": guard, "performanceConfig": {"latency": "optimized"},
         "serviceTier": {"type": "default"}},
    ]
    submit(aiq_env, jobs)
    # Refused at decoding (aiq-submit refuses them too, so they go in raw): a block with two
    # members, which Bedrock answers 400, and a model id that is a path segment.
    bad = [{"id": f"twoblock-{t}", "operation": "x", "messages": [
                {"role": "user", "content": [{"text": "hi", "cachePoint": {"type": "default"}}]}]},
           {"id": f"dots-{t}", "operation": "x", "model": "..", "payload": {}}]
    produce_raw(aiq_env.job_topic("normal"), [(j["id"], json.dumps(j)) for j in bad])
    jobs += bad
    res = results_of(aiq_env, len(jobs))
    assert set(res) == {j["id"] for j in jobs}, res.keys()
    tool = res[f"tool-{t}"]
    assert tool["status"] == "succeeded" and tool["stop_reason"] == "tool_use", tool
    uses = [b["toolUse"] for b in tool["output"]["content"] if "toolUse" in b]
    assert uses and uses[0]["name"] == "weather", tool
    g = res[f"guard-{t}"]
    assert g["status"] == "succeeded" and g["stop_reason"] == "guardrail_intervened", g
    assert "guardrail" in g["output"]["trace"], g
    assert res[f"cp-{t}"]["status"] == "succeeded", res[f"cp-{t}"]
    inv = res[f"invtools-{t}"]
    assert inv["status"] == "rejected", inv
    assert inv["error"]["kind"] == "unsupported_request", inv
    assert inv["error"]["message"].startswith("toolConfig:"), inv
    assert res[f"invguard-{t}"]["status"] == "succeeded", res[f"invguard-{t}"]
    sent = [r for r in sim.recorded() if r["operation"] == "InvokeModel"]
    assert len(sent) == 1, sent
    hdrs = {k.lower(): v for k, v in sent[0]["headers"].items()}
    assert hdrs["x-amzn-bedrock-guardrailidentifier"] == "abc123", hdrs
    assert hdrs["x-amzn-bedrock-trace"] == "ENABLED", hdrs
    assert hdrs["x-amzn-bedrock-performanceconfig-latency"] == "optimized", hdrs
    assert hdrs["x-amzn-bedrock-service-tier"] == "default", hdrs
    for jid in (f"twoblock-{t}", f"dots-{t}"):
        assert res[jid]["status"] == "rejected", res[jid]
        assert res[jid]["error"]["kind"] == "invalid_job", res[jid]
    assert "messages[0].content[0]" in res[f"twoblock-{t}"]["error"]["message"]
    assert "model" in res[f"dots-{t}"]["error"]["message"]
    stats = sim.stats()
    assert stats["requests"] == 4, stats  # the refused ones were never sent
    assert stats["ok"] == 4, stats


def write_ops(tmp_path):
    brief = {"model": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
             "system": "You are the static system prompt of the brief operation. " * 40,
             "template": "Brief on {{name}}", "max_tokens": 50}
    doc = {"operations": {
        "*": {"template": "{{payload}}"},
        "brief": dict(brief, cache_point=True),
        "brief-plain": brief},
        "models": {"anthropic.claude-3-5-haiku-20241022-v1:0": {
            "usd_per_1k_input": 0.0008, "usd_per_1k_output": 0.004,
            "usd_per_1k_cache_read": 0.00008, "usd_per_1k_cache_write": 0.001}}}
    path = tmp_path / "ops.json"
    path.write_text(json.dumps(doc))
    return str(path)


def cost(u):
    return (u["input_tokens"] * 0.0008 + u["output_tokens"] * 0.004
            + u["cache_read_input_tokens"] * 0.00008
            + u["cache_write_input_tokens"] * 0.001) / 1000


def test_bedrock_prompt_cache_tokens_and_cost(aiq_env, tmp_path):
    """Regression: usage {in 11, out 3, cacheRead 1500, cacheWrite 500, total 2014} became
    {11, 3, 14}; the total and the cost were wrong."""
    aiq_env.start_sim(latency_ms=2)
    aiq_env.start_worker(AIQ_WORKER_OPERATIONS_FILE=write_ops(tmp_path))
    aiq_env.wait_group_stable(1)
    t = aiq_env.tag
    first = {"id": f"c-{t}-0", "operation": "brief", "payload": {"name": "n0"}}
    submit(aiq_env, [first])
    res = results_of(aiq_env, 1)
    u0 = res[first["id"]]["usage"]
    assert u0["cache_write_input_tokens"] > 0 and u0["cache_read_input_tokens"] == 0, u0
    rest = [{"id": f"c-{t}-{i}", "operation": "brief", "payload": {"name": f"n{i}"}}
            for i in range(1, 5)]
    plain = [{"id": f"p-{t}-{i}", "operation": "brief-plain", "payload": {"name": f"n{i}"}}
             for i in range(2)]
    submit(aiq_env, rest + plain)
    res = results_of(aiq_env, 7)
    for j in rest:
        r = res[j["id"]]
        u = r["usage"]
        assert r["status"] == "succeeded", r
        assert u["cache_read_input_tokens"] == u0["cache_write_input_tokens"], u
        assert u["cache_write_input_tokens"] == 0, u
        assert u["total_tokens"] == (u["input_tokens"] + u["output_tokens"]
                                     + u["cache_read_input_tokens"]), u
        assert abs(u["cost_usd"] - cost(u)) < 1e-12, (u, cost(u))
    assert abs(res[first["id"]]["usage"]["cost_usd"] - cost(u0)) < 1e-12
    # Without the cache point the same prompts neither read nor write the cache.
    for j in plain:
        u = res[j["id"]]["usage"]
        assert u["cache_read_input_tokens"] == 0 and u["cache_write_input_tokens"] == 0, u
        assert u["input_tokens"] > u0["input_tokens"], (u, u0)  # the system prompt is input
        assert u["cost_usd"] > res[rest[0]["id"]]["usage"]["cost_usd"], (u, res[rest[0]["id"]])


def test_bedrock_model_not_ready_is_not_throttling(aiq_env):
    sim = aiq_env.start_sim(latency_ms=2)
    w = aiq_env.start_worker(AIQ_ADMIN_LISTEN="127.0.0.1:0", AIQ_METRICS_INTERVAL_MS=200,
                             AIQ_WORKER_MAX_ATTEMPTS=10,
                             AIQ_WORKER_RETRY_BASE_MS=5, AIQ_WORKER_RETRY_MAX_MS=20,
                             AIQ_WORKER_RETRY_BUDGET=1000)
    port = admin_port(w)
    aiq_env.wait_group_stable(1)
    limit0 = total(scrape(port), "aiq_model_concurrency_limit")
    sim_config(sim, errors=[{"status": 429, "type": "ModelNotReadyException", "rate": 0.3}])
    t = aiq_env.tag
    jobs = [{"id": f"nr-{t}-{i}", "operation": "x", "payload": {"i": i},
             "cache": {"bypass": True}} for i in range(40)]
    submit(aiq_env, jobs)
    res = results_of(aiq_env, len(jobs))
    assert len(res) == len(jobs)
    assert all(r["status"] == "succeeded" for r in res.values()), res
    assert sum(r["attempts"] for r in res.values()) > len(jobs)  # some were retried
    stats = sim.stats()
    assert stats["by_error_type"].get("ModelNotReadyException", 0) > 0, stats
    samples = scrape_when(port, lambda s: total(s, "aiq_jobs_finished_total") == len(jobs))
    assert total(samples, "aiq_retries_total") > 0  # the counters did see the retries
    assert total(samples, "aiq_throttled_total") == 0, samples.get("aiq_throttled_total")
    assert total(samples, "aiq_model_concurrency_limit") == limit0


def test_bedrock_request_id_in_failed_result_and_log(aiq_env):
    sim = aiq_env.start_sim(latency_ms=2)
    w = aiq_env.start_worker(AIQ_ADMIN_LISTEN="127.0.0.1:0")
    port = admin_port(w)
    aiq_env.wait_group_stable(1)
    sim_config(sim, errors=[{"status": 400, "type": "ValidationException", "rate": 1.0,
                             "message": "Malformed input request"}])
    t = aiq_env.tag
    submit(aiq_env, [{"id": f"rid-{t}", "operation": "x", "payload": {},
                      "model": "acme.unpriced-v1", "cache": {"bypass": True}}])
    r = results_of(aiq_env, 1)[f"rid-{t}"]
    assert r["status"] == "failed", r
    assert r["error"]["kind"] == "ValidationException", r
    rid = r["error"]["request_id"]
    assert len(rid) >= 8, r
    deadline = time.time() + 10
    while rid not in w.output() and time.time() < deadline:
        time.sleep(0.2)
    assert rid in w.output()
    # An answered call without a price: cost null, and counted.
    sim_config(sim, errors=None)
    submit(aiq_env, [{"id": f"unp-{t}", "operation": "x", "payload": {},
                      "model": "acme.unpriced-v1", "cache": {"bypass": True}}])
    u = results_of(aiq_env, 2)[f"unp-{t}"]
    assert u["status"] == "succeeded" and u["usage"]["cost_usd"] is None, u
    samples = scrape_when(port, lambda s: total(s, "aiq_unpriced_calls_total") >= 1)
    assert total(samples, "aiq_unpriced_calls_total") == 1


def test_bedrock_stream_partials_then_result(aiq_env):
    """A job with "stream": true goes through ConverseStream: its text arrives on the reply
    topic as partial records (seq 1, 2, ...) ahead of its result, which is as without
    streaming; aiq-submit --wait skips the partials."""
    sim = aiq_env.start_sim(latency_ms=2)
    aiq_env.start_worker()
    aiq_env.wait_group_stable(1)
    t = aiq_env.tag
    jobs = [{"id": f"st-{t}-{i}", "operation": "x", "stream": True, "cache": {"bypass": True},
             "messages": convo(f"stream number {i} please")} for i in range(5)]
    jobs.append({"id": f"st-{t}-tool", "operation": "x", "stream": True,
                 "cache": {"bypass": True}, "messages": convo("sim:tool weather"),
                 "toolConfig": {"tools": [{"toolSpec": {"name": "weather",
                                                        "inputSchema": {"json": {}}}}]}})
    submit(aiq_env, jobs)
    ids = {j["id"] for j in jobs}
    finals = {}
    records = aiq_env.read_all(aiq_env.results_topic, 10**6, timeout=60,
                               stop=lambda recs: sum(
                                   json.loads(m.value())["status"] != "partial"
                                   for m in recs) == len(jobs))
    partials = {}
    for m in records:
        rec = json.loads(m.value())
        RESULT.validate(rec)
        status = dict(m.headers() or [])["aiq.status"].decode()
        assert status == rec["status"], rec
        if rec["status"] == "partial":
            assert rec["job_id"] not in finals, "a partial after its result"
            partials.setdefault(rec["job_id"], []).append(rec)
        else:
            finals[rec["job_id"]] = rec
    assert set(finals) == ids, finals.keys()
    for jid, res in finals.items():
        assert res["status"] == "succeeded", res
        if jid.endswith("-tool"):
            assert res["stop_reason"] == "tool_use", res
            uses = [b["toolUse"] for b in res["output"]["content"] if "toolUse" in b]
            assert uses and uses[0]["name"] == "weather", res
            continue
        parts = partials[jid]
        assert [p["seq"] for p in parts] == list(range(1, len(parts) + 1)), parts
        assert len(parts) >= 2, parts
        assert "".join(p["delta"]["text"] for p in parts) == res["output"]["text"], (parts, res)
        assert res["usage"]["output_tokens"] > 0, res
    stats = sim.stats()
    assert stats["by_kind"].get("converse_stream", stats["by_kind"].get("converse-stream")) == \
        len(jobs), stats
    # The library's result reader hands out results only.
    r = run([binary("aiq-submit"), "-b", BROKERS, "--prefix", aiq_env.prefix, "--wait",
             "--json", json.dumps({"id": f"st-{t}-w", "operation": "x", "stream": True,
                                   "cache": {"bypass": True}, "messages": convo("wait")})])
    assert r.returncode == 0, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [o["status"] for o in out] == ["succeeded"], r.stdout


def test_bedrock_stream_exception_is_the_error(aiq_env):
    """A ConverseStream that starts (200) and ends in a throttlingException is throttling:
    retried, and the job still succeeds with its whole text."""
    sim = aiq_env.start_sim(latency_ms=2)
    w = aiq_env.start_worker(AIQ_ADMIN_LISTEN="127.0.0.1:0", AIQ_METRICS_INTERVAL_MS=200,
                             AIQ_WORKER_RETRY_BASE_MS=5, AIQ_WORKER_RETRY_MAX_MS=20,
                             AIQ_WORKER_RETRY_THROTTLE_FLOOR_MS=5)
    port = admin_port(w)
    aiq_env.wait_group_stable(1)
    sim_config(sim, errors=[{"status": 429, "type": "ThrottlingException", "rate": 0.4,
                             "in_stream": True}])
    t = aiq_env.tag
    jobs = [{"id": f"se-{t}-{i}", "operation": "x", "stream": True, "cache": {"bypass": True},
             "messages": convo(f"throttled stream {i}")} for i in range(20)]
    submit(aiq_env, jobs)
    res = results_of(aiq_env, len(jobs))
    finals = {k: v for k, v in res.items()}
    assert len(finals) == len(jobs)
    for r in finals.values():
        assert r["status"] == "succeeded", r
        assert r["output"]["text"], r
    assert any(r["attempts"] > 1 for r in finals.values()), finals
    samples = scrape_when(port, lambda s: total(s, "aiq_jobs_finished_total") == len(jobs) and
                          total(s, "aiq_throttled_total") > 0)
    assert total(samples, "aiq_throttled_total") > 0
    stats = sim.stats()
    assert stats["by_status"].get("200", 0) >= sum(r["attempts"] for r in finals.values()), stats
