"""The Bedrock contract: botocore's `bedrock-runtime` service model and a real boto3 client
against bedrock-sim (no Kafka, no worker unless named).

(c) boto3 calls converse, converse_stream, invoke_model (every family),
    invoke_model_with_response_stream and count_tokens and parses every answer; every error
    shape comes back as the botocore exception class, status and retry classification AWS's
    own client gives it.
(b) invalid requests, sent raw and signed (past botocore's client-side validation), get 400
    ValidationException from the sim, and botocore's model refuses each of them too.
(a) what the sim records is judged by bedrock_model (botocore's validator plus max, enum and
    pattern); aiqtest's Sim does this for every integration test at teardown."""
import base64
import json
import subprocess
import sys
import types
import urllib.request

import bedrock_model
import botocore.exceptions
import pytest
from botocore.retries import standard
from botocore.validate import validate_parameters
from aiqtest import BROKERS, ROOT, SIM_KEY, SIM_SECRET, Sim, binary, run

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
ERROR_NS = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
USER = [{"role": "user", "content": [{"text": "hello contract"}]}]


@pytest.fixture
def sim():
    s = Sim(latency_ms=0)
    yield s
    s.stop()


@pytest.fixture
def brt(sim):
    return bedrock_model.client(sim.url, SIM_KEY, SIM_SECRET)


def post(sim, path, obj):
    req = urllib.request.Request(sim.url + path, data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def set_errors(sim, errors):
    post(sim, "/_sim/config", {"errors": errors})


def assert_output_shape(brt, operation, resp):
    """The answer, as boto3 parsed it, is an instance of the operation's output shape: the
    same validator run the other way (required members, types, enums via the walk)."""
    out = {k: v for k, v in resp.items() if k != "ResponseMetadata"}
    shape = brt.meta.service_model.operation_model(operation).output_shape
    try:
        validate_parameters(out, shape)
    except botocore.exceptions.ParamValidationError as e:
        raise AssertionError(f"{operation} answer breaks {shape.name}: {e}") from None


def assert_event_shape(brt, event):
    """A ConverseStream event is an instance of its ConverseStreamOutput member's shape."""
    stream = brt.meta.service_model.operation_model("ConverseStream").output_shape
    (name, value), = event.items()
    try:
        validate_parameters(value, stream.members["stream"].members[name])
    except botocore.exceptions.ParamValidationError as e:
        raise AssertionError(f"{name} event breaks its shape: {e}") from None


# ---- (c) a real boto3 client parses every answer ---------------------------------------------

def test_converse_parses_and_every_answer_has_a_request_id(sim, brt):
    ids = set()
    for _ in range(3):
        r = brt.converse(modelId=CLAUDE, messages=USER, inferenceConfig={"maxTokens": 200})
        text = r["output"]["message"]["content"][0]["text"]
        assert text == f"sim reply to: hello contract [{CLAUDE}]"
        assert r["stopReason"] == "end_turn"
        u = r["usage"]
        assert u["totalTokens"] == u["inputTokens"] + u["outputTokens"] > 0
        assert r["metrics"]["latencyMs"] == 0
        assert_output_shape(brt, "Converse", r)
        rid = r["ResponseMetadata"]["RequestId"]
        assert rid == r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
        ids.add(rid)
    assert len(ids) == 3
    with urllib.request.urlopen(sim.url + "/_sim/stats", timeout=5) as resp:
        assert resp.headers["x-amzn-RequestId"]  # control answers carry one too


def test_converse_max_tokens_and_stop_sequence(brt):
    r = brt.converse(modelId=CLAUDE, messages=USER, inferenceConfig={"maxTokens": 3})
    assert r["stopReason"] == "max_tokens"
    assert len(r["output"]["message"]["content"][0]["text"]) <= 12
    r = brt.converse(modelId=CLAUDE, messages=USER,
                     inferenceConfig={"maxTokens": 100, "stopSequences": ["contract"]})
    assert r["stopReason"] == "stop_sequence"
    assert r["output"]["message"]["content"][0]["text"] == "sim reply to: hello "


def test_prompt_cache_repeated_prefix_is_a_read(sim, brt):
    system = [{"text": "You are a careful analyst. " * 40}, {"cachePoint": {"type": "default"}}]
    first = brt.converse(modelId=CLAUDE, messages=USER, system=system)["usage"]
    again = brt.converse(modelId=CLAUDE, messages=USER, system=system)["usage"]
    other = brt.converse(modelId="amazon.nova-lite-v1:0", messages=USER, system=system)["usage"]
    assert_output_shape(brt, "Converse", {"output": {"message": {"role": "assistant",
                                                                 "content": []}},
                                          "stopReason": "end_turn", "usage": again,
                                          "metrics": {"latencyMs": 0}})
    prefix = (len(system[0]["text"]) + 3) // 4
    assert first["cacheWriteInputTokens"] == prefix and first["cacheReadInputTokens"] == 0
    assert again["cacheReadInputTokens"] == prefix and again["cacheWriteInputTokens"] == 0
    assert other["cacheWriteInputTokens"] == prefix  # a cache is per model
    for u in (first, again):
        assert u["inputTokens"] == (len("hello contract") + 3) // 4
        assert u["totalTokens"] == (u["inputTokens"] + u["outputTokens"]
                                    + u["cacheReadInputTokens"] + u["cacheWriteInputTokens"])
    # A longer prefix that starts with the cached one reads it and writes the rest.
    longer = system + [{"text": "Extra rules. " * 20}, {"cachePoint": {"type": "default"}}]
    u = brt.converse(modelId=CLAUDE, messages=USER, system=longer)["usage"]
    assert u["cacheReadInputTokens"] == prefix
    assert u["cacheWriteInputTokens"] == (len(system[0]["text"]) + 260 + 3) // 4 - prefix
    # Lookups: miss, hit, miss (other model), then the longer prefix: miss on its last point,
    # hit on the first.
    assert sim.stats()["prompt_cache"] == {"reads": 2, "writes": 3}
    post(sim, "/_sim/reset", {})
    u = brt.converse(modelId=CLAUDE, messages=USER, system=system)["usage"]
    assert u["cacheWriteInputTokens"] == prefix  # reset empties the cache


def test_converse_tool_use_guardrail_and_response_fields(brt):
    tools = {"tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {
        "type": "object", "properties": {}}}}}], "toolChoice": {"any": {}}}
    r = brt.converse(modelId=CLAUDE, messages=USER, toolConfig=tools)
    assert r["stopReason"] == "tool_use"
    assert_output_shape(brt, "Converse", r)
    tu = r["output"]["message"]["content"][1]["toolUse"]
    assert tu["name"] == "lookup" and tu["input"] == {} and tu["toolUseId"]
    blocked = [{"role": "user", "content": [{"text": "sim:guardrail please"}]}]
    r = brt.converse(modelId=CLAUDE, messages=blocked,
                     guardrailConfig={"guardrailIdentifier": "gr1", "guardrailVersion": "1",
                                      "trace": "enabled"},
                     additionalModelResponseFieldPaths=["/stop_sequence"],
                     performanceConfig={"latency": "optimized"}, serviceTier={"type": "flex"})
    assert_output_shape(brt, "Converse", r)
    assert r["stopReason"] == "guardrail_intervened"
    assert r["trace"]["guardrail"]["inputAssessment"]["gr1"]["contentPolicy"]["filters"][0][
        "action"] == "BLOCKED"
    assert r["additionalModelResponseFields"] == {"stop_sequence": None}
    assert r["performanceConfig"] == {"latency": "optimized"}
    assert r["serviceTier"] == {"type": "flex"}


def test_converse_stream_events(brt):
    whole = brt.converse(modelId=CLAUDE, messages=USER)
    r = brt.converse_stream(modelId=CLAUDE, messages=USER)
    assert r["ResponseMetadata"]["HTTPHeaders"]["content-type"] == \
        "application/vnd.amazon.eventstream"
    events = list(r["stream"])
    for e in events:
        assert_event_shape(brt, e)
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    assert kinds.count("contentBlockDelta") == 3 and "contentBlockStop" in kinds
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events
                   if "contentBlockDelta" in e)
    assert text == whole["output"]["message"]["content"][0]["text"]
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    assert events[-1]["metadata"]["usage"] == whole["usage"]


def test_converse_stream_tool_use(brt):
    tools = {"tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {}}}}]}
    msgs = [{"role": "user", "content": [{"text": "sim:tool now"}]}]
    events = list(brt.converse_stream(modelId=CLAUDE, messages=msgs, toolConfig=tools)["stream"])
    for e in events:
        assert_event_shape(brt, e)
    start = [e["contentBlockStart"] for e in events if "contentBlockStart" in e]
    assert start[0]["start"]["toolUse"]["name"] == "lookup"
    assert start[0]["contentBlockIndex"] == 1
    assert events[-2]["messageStop"]["stopReason"] == "tool_use"


def test_streams_sent_event_by_event_are_the_same_streams(brt):
    # --stream-gap-ms sends each event on its own (the connection waits suspended between
    # them); what arrives is the same stream. Nothing here is timed.
    paced = Sim(latency_ms=0, extra=("--stream-gap-ms", "5"))
    try:
        slow = bedrock_model.client(paced.url, SIM_KEY, SIM_SECRET)
        want = list(brt.converse_stream(modelId=CLAUDE, messages=USER)["stream"])
        got = list(slow.converse_stream(modelId=CLAUDE, messages=USER)["stream"])
        assert got == want and len(got) == 7
        body = json.dumps(FAMILIES["mistral"][1])
        want = list(brt.invoke_model_with_response_stream(modelId=FAMILIES["mistral"][0],
                                                          body=body)["body"])
        got = list(slow.invoke_model_with_response_stream(modelId=FAMILIES["mistral"][0],
                                                          body=body)["body"])
        assert got == want and len(got) == 3
        assert post(paced, "/_sim/config", {"stream_gap_ms": 0})["stream_gap_ms"] == 0
    finally:
        paced.stop()


# Each family: its request body, the model id, and how its text and stop come out.
FAMILIES = {
    "anthropic": (CLAUDE, {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
                           "messages": [{"role": "user", "content": "hello contract"}]},
                  lambda b: (b["content"][0]["text"], b["stop_reason"])),
    "nova": ("us.amazon.nova-pro-v1:0", {"schemaVersion": "messages-v1", "messages": USER,
                                         "inferenceConfig": {"max_new_tokens": 100}},
             lambda b: (b["output"]["message"]["content"][0]["text"], b["stopReason"])),
    "titan": ("amazon.titan-text-express-v1", {"inputText": "hello contract",
                                               "textGenerationConfig": {"maxTokenCount": 100}},
              lambda b: (b["results"][0]["outputText"], b["results"][0]["completionReason"])),
    "llama": ("meta.llama3-8b-instruct-v1:0", {"prompt": "hello contract", "max_gen_len": 100},
              lambda b: (b["generation"], b["stop_reason"])),
    "mistral": ("mistral.mistral-7b-instruct-v0:2", {"prompt": "hello contract",
                                                     "max_tokens": 100},
                lambda b: (b["outputs"][0]["text"], b["outputs"][0]["stop_reason"])),
    "cohere": ("cohere.command-r-v1:0", {"message": "hello contract", "max_tokens": 100},
               lambda b: (b["text"], b["finish_reason"])),
}
STOP_WORD = {"anthropic": "end_turn", "nova": "end_turn", "titan": "FINISH", "llama": "stop",
             "mistral": "stop", "cohere": "COMPLETE"}


def stream_text(family, chunks):
    """The text of a family's streaming chunks, and the last chunk."""
    parts = []
    for c in chunks:
        if family == "anthropic" and c["type"] == "content_block_delta":
            parts.append(c["delta"]["text"])
        elif family == "nova" and "contentBlockDelta" in c:
            parts.append(c["contentBlockDelta"]["delta"]["text"])
        elif family == "titan":
            parts.append(c["outputText"])
        elif family == "llama":
            parts.append(c["generation"])
        elif family == "mistral":
            parts.append(c["outputs"][0]["text"])
        elif family == "cohere" and c["event_type"] == "text-generation":
            parts.append(c["text"])
    return "".join(parts)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_invoke_model_answers_in_the_family_shape(brt, family):
    model, body, read = FAMILIES[family]
    r = brt.invoke_model(modelId=model, body=json.dumps(body))
    assert r["contentType"] == "application/json"
    raw = json.loads(r["body"].read())
    text, stop = read(raw)
    assert text == f"sim reply to: hello contract [{model}]"
    assert stop == STOP_WORD[family]
    h = r["ResponseMetadata"]["HTTPHeaders"]
    assert int(h["x-amzn-bedrock-input-token-count"]) >= 1
    assert int(h["x-amzn-bedrock-output-token-count"]) == (len(text) + 3) // 4

    s = brt.invoke_model_with_response_stream(modelId=model, body=json.dumps(body))
    assert s["contentType"] == "application/json"
    chunks = [json.loads(e["chunk"]["bytes"]) for e in s["body"]]
    assert len(chunks) >= 3
    assert stream_text(family, chunks) == text
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["outputTokenCount"] == (len(text) + 3) // 4


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"anthropic"}))
def test_invoke_model_refuses_another_family_body(brt, family):
    model, _, _ = FAMILIES[family]
    with pytest.raises(brt.exceptions.ValidationException) as e:
        brt.invoke_model(modelId=model, body=json.dumps(FAMILIES["anthropic"][1]))
    assert e.value.response["Error"]["Message"].startswith("Malformed input request: ")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_invoke_model_anthropic_prompt_cache(brt):
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
            "system": [{"type": "text", "text": "policy " * 100,
                        "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "hi"}]}
    first = json.loads(brt.invoke_model(modelId=CLAUDE, body=json.dumps(body))["body"].read())
    again = brt.invoke_model(modelId=CLAUDE, body=json.dumps(body))
    usage = json.loads(again["body"].read())["usage"]
    assert first["usage"]["cache_creation_input_tokens"] == 175
    assert usage["cache_read_input_tokens"] == 175 and usage["cache_creation_input_tokens"] == 0
    h = again["ResponseMetadata"]["HTTPHeaders"]
    assert h["x-amzn-bedrock-cache-read-input-token-count"] == "175"


def test_count_tokens(brt):
    r = brt.count_tokens(modelId=CLAUDE, input={"converse": {"messages": USER}})
    assert_output_shape(brt, "CountTokens", r)
    assert r["inputTokens"] == (len("hello contract") + 3) // 4
    body = json.dumps(FAMILIES["anthropic"][1]).encode()
    r = brt.count_tokens(modelId=CLAUDE, input={"invokeModel": {"body": body}})
    assert r["inputTokens"] == (len("hello contract") + 3) // 4


# ---- (c) every error as botocore classifies it -----------------------------------------------

# type (None: no x-amzn-ErrorType), status, modelled for Converse, retryable, throttling
ERRORS = [
    ("ValidationException", 400, True, False, False),
    ("AccessDeniedException", 403, True, False, False),
    ("ResourceNotFoundException", 404, True, False, False),
    ("ModelTimeoutException", 408, True, False, False),
    ("ModelErrorException", 424, True, False, False),
    ("ThrottlingException", 429, True, True, True),
    ("ModelNotReadyException", 429, True, True, False),
    ("InternalServerException", 500, True, True, False),
    ("ServiceUnavailableException", 503, True, True, False),
    ("InvalidSignatureException", 403, False, False, False),
    ("ExpiredTokenException", 403, False, False, False),
    (None, 502, False, True, False),
    (None, 504, False, True, False),
    (None, 529, False, False, False),
]


def classify(op_model, err):
    """botocore's standard-mode verdicts on a ClientError: (retryable, throttling)."""
    http = types.SimpleNamespace(status_code=err.response["ResponseMetadata"]["HTTPStatusCode"],
                                 headers=err.response["ResponseMetadata"]["HTTPHeaders"])
    ctx = standard.RetryContext(attempt_number=1, operation_model=op_model,
                                parsed_response=err.response, http_response=http)
    retryable = standard.StandardRetryConditions(max_attempts=3).is_retryable(ctx)
    throttling = standard.ThrottlingErrorDetector(None).is_throttling_error_from_context(ctx)
    return retryable, throttling


@pytest.mark.parametrize("etype,status,modelled,retryable,throttling", ERRORS,
                         ids=[e[0] or str(e[1]) for e in ERRORS])
def test_error_shapes_as_botocore_classifies_them(sim, monkeypatch, etype, status, modelled,
                                                  retryable, throttling):
    monkeypatch.setattr(standard.RetryPolicy, "compute_retry_delay", lambda self, ctx: 0)
    brt = bedrock_model.client(sim.url, SIM_KEY, SIM_SECRET, max_attempts=3)
    set_errors(sim, [{"status": status, "type": etype, "rate": 1.0,
                      "message": f"sim says {status}"}])
    before = sim.stats()["by_kind"]["converse"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        brt.converse(modelId=CLAUDE, messages=USER)
    err = e.value
    code = err.response["Error"]["Code"]
    assert code == (etype or str(status))
    assert err.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert err.response["Error"]["Message"] == f"sim says {status}"
    assert err.response["ResponseMetadata"]["RequestId"]
    if modelled:
        assert type(err) is getattr(brt.exceptions, etype)
    else:
        assert type(err) is botocore.exceptions.ClientError
    op = brt.meta.service_model.operation_model("Converse")
    assert classify(op, err) == (retryable, throttling)
    # What the client did with it: three attempts when retryable, one otherwise.
    assert sim.stats()["by_kind"]["converse"] - before == (3 if retryable else 1)


def test_service_quota_exceeded_is_modelled_400_for_invoke(sim, brt):
    # The model gives ServiceQuotaExceededException status 400 (not 429), InvokeModel only.
    set_errors(sim, [{"status": 400, "type": "ServiceQuotaExceededException", "rate": 1.0}])
    with pytest.raises(brt.exceptions.ServiceQuotaExceededException) as e:
        brt.invoke_model(modelId=CLAUDE, body=json.dumps(FAMILIES["anthropic"][1]))
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    op = brt.meta.service_model.operation_model("InvokeModel")
    assert classify(op, e.value) == (False, False)
    assert "ServiceQuotaExceededException" not in [
        s.name for s in brt.meta.service_model.operation_model("Converse").error_shapes]


def test_in_stream_exceptions(sim, brt):
    set_errors(sim, [{"status": 424, "type": "ModelStreamErrorException", "rate": 1.0,
                      "in_stream": True, "message": "model broke mid-stream"}])
    r = brt.converse_stream(modelId=CLAUDE, messages=USER)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    seen = []
    with pytest.raises(botocore.exceptions.EventStreamError) as e:
        for ev in r["stream"]:
            seen.append(ev)
    assert seen == [{"messageStart": {"role": "assistant"}}]
    assert e.value.response["Error"] == {"Code": "modelStreamErrorException",
                                         "Message": "model broke mid-stream"}
    set_errors(sim, [{"status": 429, "type": "ThrottlingException", "rate": 1.0,
                      "in_stream": True}])
    r = brt.invoke_model_with_response_stream(modelId=CLAUDE,
                                              body=json.dumps(FAMILIES["anthropic"][1]))
    with pytest.raises(botocore.exceptions.EventStreamError) as e:
        list(r["body"])
    assert e.value.response["Error"]["Code"] == "throttlingException"
    # Without in_stream a streaming call fails before the stream, as a plain error.
    set_errors(sim, [{"status": 429, "type": "ThrottlingException", "rate": 1.0}])
    with pytest.raises(brt.exceptions.ThrottlingException):
        brt.converse_stream(modelId=CLAUDE, messages=USER)


def test_a_bad_signature_is_access_denied(sim):
    bad = bedrock_model.client(sim.url, SIM_KEY, "not-the-secret")
    with pytest.raises(bad.exceptions.AccessDeniedException) as e:
        bad.converse(modelId=CLAUDE, messages=USER)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert sim.stats()["auth_failures"] == 1


# ---- (b) what the model refuses, the sim refuses ---------------------------------------------

def converse_body(**over):
    body = {"messages": [{"role": "user", "content": [{"text": "hi"}]}],
            "inferenceConfig": {"maxTokens": 10}}
    body.update(over)
    return body


def msg(*blocks, role="user"):
    return [{"role": role, "content": list(blocks)}]


# name, operation, model id, body, extra headers
INVALID = [
    ("unknown top-level member", "Converse", CLAUDE, converse_body(foo=1), None),
    ("misnamed nested member", "Converse", CLAUDE,
     converse_body(inferenceConfig={"max_tokens": 10}), None),
    ("wrong type: string for integer", "Converse", CLAUDE,
     converse_body(inferenceConfig={"maxTokens": "10"}), None),
    ("wrong type: float for integer", "Converse", CLAUDE,
     converse_body(inferenceConfig={"maxTokens": 10.5}), None),
    ("wrong type: object for list", "Converse", CLAUDE, converse_body(messages={"a": 1}), None),
    ("wrong type: null member", "Converse", CLAUDE, converse_body(system=None), None),
    ("below min: maxTokens 0", "Converse", CLAUDE,
     converse_body(inferenceConfig={"maxTokens": 0}), None),
    ("above max: temperature 1.5", "Converse", CLAUDE,
     converse_body(inferenceConfig={"temperature": 1.5}), None),
    ("integer beyond 32 bits", "Converse", CLAUDE,
     converse_body(inferenceConfig={"maxTokens": 2**31}), None),
    ("too many items: 11 response field paths", "Converse", CLAUDE,
     converse_body(additionalModelResponseFieldPaths=["/a"] * 11), None),
    ("empty string below min", "Converse", CLAUDE, converse_body(system=[{"text": ""}]), None),
    ("map too big: 17 metadata entries", "Converse", CLAUDE,
     converse_body(requestMetadata={f"k{i}": "v" for i in range(17)}), None),
    ("map value too long", "Converse", CLAUDE,
     converse_body(requestMetadata={"tenant": "v" * 257}), None),
    ("map key breaks its pattern", "Converse", CLAUDE,
     converse_body(requestMetadata={"!!!": "v"}), None),
    ("bad enum: role system", "Converse", CLAUDE,
     converse_body(messages=msg({"text": "hi"}, role="system")), None),
    ("bad enum: cachePoint type", "Converse", CLAUDE,
     converse_body(system=[{"text": "s"}, {"cachePoint": {"type": "ephemeral"}}]), None),
    ("bad enum: image format", "Converse", CLAUDE,
     converse_body(messages=msg({"image": {"format": "bmp", "source": {"bytes": "AAAA"}}})),
     None),
    ("bad enum: guardrail trace", "Converse", CLAUDE,
     converse_body(guardrailConfig={"guardrailIdentifier": "g", "guardrailVersion": "1",
                                    "trace": "on"}), None),
    ("missing required: message content", "Converse", CLAUDE,
     converse_body(messages=[{"role": "user"}]), None),
    ("missing required: toolConfig tools", "Converse", CLAUDE,
     converse_body(toolConfig={"toolChoice": {"auto": {}}}), None),
    ("missing required: toolSpec inputSchema", "Converse", CLAUDE,
     converse_body(toolConfig={"tools": [{"toolSpec": {"name": "t"}}]}), None),
    ("two union members in one block", "Converse", CLAUDE,
     converse_body(messages=msg({"text": "hi", "cachePoint": {"type": "default"}})), None),
    ("a type field inside a block", "Converse", CLAUDE,
     converse_body(messages=msg({"type": "text", "text": "hi"})), None),
    ("empty union block", "Converse", CLAUDE, converse_body(messages=msg({})), None),
    ("union of two tool choices", "Converse", CLAUDE,
     converse_body(toolConfig={"tools": [{"toolSpec": {"name": "t", "inputSchema": {
         "json": {}}}}], "toolChoice": {"auto": {}, "any": {}}}), None),
    ("tool name breaks its pattern", "Converse", CLAUDE,
     converse_body(toolConfig={"tools": [{"toolSpec": {"name": "!!!", "inputSchema": {
         "json": {}}}}]}), None),
    ("tool name too long", "Converse", CLAUDE,
     converse_body(toolConfig={"tools": [{"toolSpec": {"name": "t" * 65, "inputSchema": {
         "json": {}}}}]}), None),
    ("blob not base64", "Converse", CLAUDE,
     converse_body(messages=msg({"image": {"format": "png", "source": {"bytes": "%%%%"}}})),
     None),
    ("invalid modelId: no allowed character", "Converse", "$$$", converse_body(), None),
    # A modelId over the model's 2048 is not here: common/sigv4 caps the signed path at 2048
    # bytes, so such a request is refused 403 before the model check (in the README).
    ("invalid modelId: underscore only", "ConverseStream", "_", converse_body(), None),
    ("ConverseStream unknown member", "ConverseStream", CLAUDE, converse_body(stream=True),
     None),
    ("InvokeModel bad trace header", "InvokeModel", CLAUDE, FAMILIES["anthropic"][1],
     {"X-Amzn-Bedrock-Trace": "verbose"}),
    ("InvokeModel bad latency header", "InvokeModelWithResponseStream", CLAUDE,
     FAMILIES["anthropic"][1], {"X-Amzn-Bedrock-PerformanceConfig-Latency": "fast"}),
    ("InvokeModel bad service tier header", "InvokeModel", CLAUDE, FAMILIES["anthropic"][1],
     {"X-Amzn-Bedrock-Service-Tier": "gold"}),
    ("CountTokens missing input", "CountTokens", CLAUDE, {}, None),
    ("CountTokens two inputs", "CountTokens", CLAUDE,
     {"input": {"converse": {"messages": USER}, "invokeModel": {"body": "e30="}}}, None),
    ("CountTokens modelId breaks its pattern", "CountTokens", "$$$",
     {"input": {"converse": {"messages": USER}}}, None),
]


# What botocore's validate_parameters lets through (it checks only min, never max, enum or
# pattern, nor the 32-bit range or a blob's base64 on the wire): here only the model's own
# constraints, which bedrock_model adds, refuse it.
SKIPPED_BY_VALIDATOR = {
    "above max: temperature 1.5", "integer beyond 32 bits",
    "too many items: 11 response field paths", "map too big: 17 metadata entries",
    "map value too long", "map key breaks its pattern", "bad enum: role system",
    "bad enum: cachePoint type", "bad enum: image format", "bad enum: guardrail trace",
    "tool name breaks its pattern", "tool name too long", "blob not base64",
    "invalid modelId: no allowed character", "invalid modelId: underscore only",
    "InvokeModel bad trace header", "InvokeModel bad latency header",
    "InvokeModel bad service tier header", "CountTokens modelId breaks its pattern",
}


def validator_refuses(operation, params):
    try:
        validate_parameters(params, bedrock_model.operation_model(operation).input_shape)
    except botocore.exceptions.ParamValidationError:
        return True
    return False


def wire_params(operation, model_id, body, headers):
    """The boto3-style params a raw request stands for, as bedrock_model reads a record."""
    return bedrock_model.record_params({"operation": operation, "modelId": model_id,
                                        "headers": headers or {}, "body": body})


@pytest.mark.parametrize("name,operation,model_id,body,headers", INVALID,
                         ids=[c[0] for c in INVALID])
def test_sim_and_model_agree_on_invalid_requests(sim, name, operation, model_id, body,
                                                 headers):
    status, h, data = bedrock_model.raw_request(sim.url, SIM_KEY, SIM_SECRET, operation,
                                                model_id, body, headers)
    assert status == 400, data
    assert h["x-amzn-errortype"] == "ValidationException" + ERROR_NS
    assert h["x-amzn-requestid"]
    message = json.loads(data)["message"]
    assert message.startswith("1 validation error detected: "), message
    params = wire_params(operation, model_id, body, headers)
    errs = bedrock_model.violations(operation, params, wire=True)
    assert errs, f"botocore's model accepts what the sim refused ({message})"
    assert validator_refuses(operation, params) == (name not in SKIPPED_BY_VALIDATOR), errs
    # Refused requests are recorded with the sim's reason: a worker's would fail its test.
    rec = sim.recorded()[-1]
    assert rec["operation"] == operation and rec["refused"] == message
    sim.stop(check=False)


FULL = converse_body(
    system=[{"text": "policy"}, {"cachePoint": {"type": "default"}}],
    messages=[{"role": "user", "content": [
        {"text": "look"},
        {"image": {"format": "png", "source": {"bytes": base64.b64encode(b"\x89PNG").decode()}}},
        {"document": {"format": "txt", "name": "notes", "source": {"bytes": "aGk="}}},
        {"cachePoint": {"type": "default"}}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "lookup",
                                                       "input": {"q": 1}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1",
                                                     "content": [{"text": "42"}]}}]}],
    inferenceConfig={"maxTokens": 50, "temperature": 0.5, "topP": 1, "stopSequences": ["##"]},
    toolConfig={"tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {}}}},
                          {"cachePoint": {"type": "default"}}],
                "toolChoice": {"auto": {}}},
    guardrailConfig={"guardrailIdentifier": "gr1", "guardrailVersion": "DRAFT",
                     "trace": "enabled"},
    additionalModelRequestFields={"top_k": 5, "nested": {"a": [1, 2, {"b": None}]}},
    additionalModelResponseFieldPaths=["/stop_sequence"],
    requestMetadata={"tenant": "acme", "user_id": "u-1"},
    performanceConfig={"latency": "standard"},
    serviceTier={"type": "default"})


@pytest.mark.parametrize("operation,model_id,body,headers", [
    ("Converse", CLAUDE, FULL, None),
    ("ConverseStream", CLAUDE, FULL, None),
    ("Converse", "arn:aws:bedrock:us-east-1::foundation-model/" + CLAUDE, converse_body(), None),
    ("Converse", "us.anthropic.claude-3-5-haiku-20241022-v1:0", converse_body(), None),
    ("Converse", "..", converse_body(), None),  # the pattern is unanchored: see README
    ("InvokeModel", CLAUDE, FAMILIES["anthropic"][1],
     {"X-Amzn-Bedrock-Trace": "ENABLED", "X-Amzn-Bedrock-PerformanceConfig-Latency": "standard",
      "X-Amzn-Bedrock-Service-Tier": "priority", "Accept": "application/json"}),
    ("CountTokens", CLAUDE, {"input": {"converse": {"messages": USER,
                                                    "system": [{"text": "s"}]}}}, None),
], ids=["converse-full", "stream-full", "arn", "profile", "dotdot", "invoke-headers", "count"])
def test_sim_and_model_agree_on_valid_requests(sim, operation, model_id, body, headers):
    status, _, data = bedrock_model.raw_request(sim.url, SIM_KEY, SIM_SECRET, operation,
                                                model_id, body, headers)
    assert bedrock_model.violations(operation, wire_params(operation, model_id, body, headers),
                                    wire=True) == []
    assert status == 200, data
    assert sim.recorded()[-1]["refused"] is None


def test_sim_bounds_nesting(sim):
    deep = {}
    node = deep
    for _ in range(80):
        node["x"] = {}
        node = node["x"]
    status, _, data = bedrock_model.raw_request(
        sim.url, SIM_KEY, SIM_SECRET, "Converse", CLAUDE,
        converse_body(additionalModelRequestFields=deep))
    assert status == 400 and b"nested deeper than 64" in data
    sim.stop(check=False)


# ---- (a) the recorded traffic is judged by the model ------------------------------------------

def test_check_record_file_reports_what_breaks_the_model(tmp_path):
    good = {"operation": "Converse", "modelId": CLAUDE, "headers": {}, "body": converse_body(),
            "refused": None}
    unknown = dict(good, body=converse_body(inferenceConfig={"maxTokens": 5, "top_k": 3}))
    enum = dict(good, body=converse_body(performanceConfig={"latency": "fast"}))
    header = {"operation": "InvokeModel", "modelId": CLAUDE,
              "headers": {"x-amzn-bedrock-trace": "LOUD"}, "body": FAMILIES["anthropic"][1],
              "refused": None}
    refused = dict(good, refused="1 validation error detected: ...")
    path = tmp_path / "rec.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in
                            (good, unknown, enum, header, refused, good)))
    bad = bedrock_model.check_record_file(str(path))
    assert [(no, op) for no, op, _ in bad] == [(2, "Converse"), (3, "Converse"),
                                               (4, "InvokeModel"), (5, "Converse")]
    assert "top_k" in " ".join(bad[0][2])
    assert "fast" in " ".join(bad[1][2])
    assert "LOUD" in " ".join(bad[2][2])
    assert "bedrock-sim refused it" in bad[3][2][0]


def test_sim_teardown_fails_on_a_request_that_breaks_the_model():
    s = Sim(latency_ms=0)
    status, _, _ = bedrock_model.raw_request(s.url, SIM_KEY, SIM_SECRET, "Converse", CLAUDE,
                                             converse_body(bogus=True))
    assert status == 400
    with pytest.raises(AssertionError, match="break botocore's bedrock-runtime model"):
        s.stop()


def test_worker_requests_are_recorded_and_obey_the_model(aiq_env):
    sim = aiq_env.start_sim(latency_ms=1)
    aiq_env.start_worker()
    aiq_env.wait_group_stable(1)
    job = {"id": f"contract-{aiq_env.tag}", "operation": "vc-analysis", "priority": "normal",
           "payload": {"company": "Acme", "n": 1}}
    r = run([binary("aiq-submit"), "-b", BROKERS, "--prefix", aiq_env.prefix, "-"],
            input=json.dumps(job) + "\n")
    assert r.returncode == 0, r.stderr
    results = aiq_env.read_all(aiq_env.results_topic, 1, timeout=60)
    assert json.loads(results[0].value())["status"] == "succeeded"
    recs = sim.recorded()
    assert len(recs) == 1 and recs[0]["operation"] == "Converse"
    assert recs[0]["refused"] is None
    assert bedrock_model.record_violations(recs[0]) == []
    # conftest's teardown judges every recorded request the same way


# ---- the shapes file is botocore's --------------------------------------------------------------

def test_model_file_is_generated_from_the_pinned_botocore():
    with open(f"{ROOT}/tools/bedrock-sim/bedrock-runtime.model.json") as f:
        doc = json.load(f)
    assert doc["source"]["botocore"] == bedrock_model.pinned_botocore()
    import botocore
    if botocore.__version__ != bedrock_model.pinned_botocore():
        # Someone installed another botocore on this machine: the file cannot be regenerated
        # here, and gen_model.py says so instead of writing a different contract.
        r = subprocess.run([sys.executable, f"{ROOT}/tools/bedrock-sim/gen_model.py",
                            "--check"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "pins" in r.stderr, r.stderr
        pytest.skip(f"installed botocore {botocore.__version__} is not the pinned "
                    f"{bedrock_model.pinned_botocore()} (tools/bootstrap.sh installs the pin)")
    r = subprocess.run([sys.executable, f"{ROOT}/tools/bedrock-sim/gen_model.py", "--check"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert set(bedrock_model.OPERATION_PATH) <= set(doc["operations"])
    # Every pattern of the model is enforced by the sim (none fell outside the translator).
    patterns = [n for n, s in doc["shapes"].items() if "pattern" in s]
    assert patterns and all("ere" in doc["shapes"][n] for n in patterns), doc["unenforced"]


def test_builtin_model_is_on_by_default_and_none_turns_it_off():
    body = converse_body(unknown_member=1)
    on = Sim(latency_ms=0, contract=False)  # no --model flag: the compiled-in copy
    off = Sim(latency_ms=0, contract=False, extra=("--model", "none"))
    try:
        status, _, data = bedrock_model.raw_request(on.url, SIM_KEY, SIM_SECRET, "Converse",
                                                    CLAUDE, body)
        assert status == 400 and b"unknown_member" in data
        assert on.stats()["validation_refused"] == 1
        status, _, _ = bedrock_model.raw_request(off.url, SIM_KEY, SIM_SECRET, "Converse",
                                                 CLAUDE, body)
        assert status == 200
    finally:
        on.stop()
        off.stop()


def test_sim_refuses_to_start_with_a_broken_model_file(tmp_path):
    bad = tmp_path / "model.json"
    bad.write_text(json.dumps({"operations": {}, "shapes": {"X": {"type": "string",
                                                                  "ere": "(["}}}))
    r = run([binary("bedrock-sim"), "--port", "0", "--model", str(bad)], timeout=20)
    assert r.returncode == 2 and "pattern does not compile" in r.stderr


# Values against the patterns the sim translated to POSIX regexes: the sim and Python's re
# (botocore's pattern, matched with search as Smithy means it) must give the same verdict.
PATTERN_CASES = {
    "ToolName": (lambda v: converse_body(toolConfig={"tools": [{"toolSpec": {
        "name": v, "inputSchema": {"json": {}}}}]}),
        ["lookup", "a-b_c", "!!!", "-", "_", "ä", "bad name!", " x ", "\t"]),
    "ToolUseId": (lambda v: converse_body(messages=[
        {"role": "user", "content": [{"text": "q"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": v, "name": "t",
                                                       "input": {}}}]}]),
        ["t1", "a.b:c-d_e", "$$", "::", "é", "%", " "]),
    "RequestMetadataKeyString": (lambda v: converse_body(requestMetadata={v: "x"}),
                                 ["tenant", "a b", "#$=/+,-.", "!", "\t", "\n", "é", "~"]),
    "RequestMetadataValueString": (lambda v: converse_body(requestMetadata={"k": v}),
                                   ["", "v", "a@b", "!", "\u00e9\u00e9", "'", "\r"]),
    "S3Uri": (lambda v: converse_body(messages=[{"role": "user", "content": [
        {"image": {"format": "png", "source": {"s3Location": {"uri": v}}}}]}]),
        ["s3://bucket/key.png", "s3://ab", "s3://a.b-c/x", "http://bucket/x", "s3://A/x",
         "xs3://abc/y", "s3://-ab"]),
    "GuardrailIdentifier": (lambda v: converse_body(guardrailConfig={
        "guardrailIdentifier": v, "guardrailVersion": "1"}), ["abc", "ABC", "", "!", "a:b"]),
    "ConversationalModelId": (None, ["m", "a.b", "x$", "$x$", "!", "~~", "arn:aws:x",
                                     "us.meta.llama3-8b-instruct-v1:0"]),
}


@pytest.mark.parametrize("shape", sorted(PATTERN_CASES))
def test_sim_patterns_agree_with_botocore(sim, shape):
    make, values = PATTERN_CASES[shape]
    for v in values:
        model_id, body = (v, converse_body()) if make is None else (CLAUDE, make(v))
        status, _, data = bedrock_model.raw_request(sim.url, SIM_KEY, SIM_SECRET, "Converse",
                                                    model_id, body)
        errs = bedrock_model.violations("Converse", wire_params("Converse", model_id, body,
                                                                None), wire=True)
        assert (status == 200) == (errs == []), (shape, v, status, data, errs)
        assert status in (200, 400), (shape, v, status, data)
    sim.stop(check=False)


def test_sim_exits_cleanly_after_every_operation():
    """Every route and the model check once, then SIGTERM: exit 0 (under an ASan build,
    AIQ_BUILD_DIR=build-asan, a leak or a memory error makes this fail)."""
    s = Sim(latency_ms=0, extra=("--stream-gap-ms", "1"))
    c = bedrock_model.client(s.url, SIM_KEY, SIM_SECRET)
    c.converse(modelId=CLAUDE, messages=USER)
    list(c.converse_stream(modelId=CLAUDE, messages=USER)["stream"])
    for family, (model, body, _) in sorted(FAMILIES.items()):
        c.invoke_model(modelId=model, body=json.dumps(body))
        list(c.invoke_model_with_response_stream(modelId=model, body=json.dumps(body))["body"])
    c.count_tokens(modelId=CLAUDE, input={"converse": {"messages": USER}})
    status, _, _ = bedrock_model.raw_request(s.url, SIM_KEY, SIM_SECRET, "Converse", CLAUDE,
                                             converse_body(bogus=1))
    assert status == 400
    s.stop(check=False)
    assert s.proc.returncode == 0
