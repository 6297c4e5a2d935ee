"""The JSON Schemas and the C validator agree: every example is valid for both, and every
document of a corpus of invalid jobs is refused by both (no Kafka needed)."""
import glob
import json
import os

import pytest

from aiqtest import JOB, RESULT, SCHEMAS, binary, run

VALID = {"id": "j1", "operation": "vc-analysis", "payload": {}}
INVALID = [
    {"operation": "vc-analysis", "payload": {}},                      # no id
    {"id": "", "operation": "x", "payload": {}},                      # empty id
    {"id": "has space", "operation": "x", "payload": {}},
    {"id": "x" * 129, "operation": "x", "payload": {}},
    {"id": "j1", "payload": {}},                                      # no operation
    {"id": "j1", "operation": "a/b", "payload": {}},
    {"id": "j1", "operation": "x"},                                   # nothing to ask
    {"id": "j1", "operation": "x", "priority": "urgent", "payload": {}},
    {"id": "j1", "operation": "x", "payload": []},
    {"id": "j1", "operation": "x", "messages": []},
    {"id": "j1", "operation": "x", "messages": [{"role": "system", "content": [{"text": "a"}]}]},
    {"id": "j1", "operation": "x", "messages": [{"role": "user", "content": []}]},
    {"id": "j1", "operation": "x", "messages": [{"role": "user", "content": [{"img": 1}]}]},
    {"id": "j1", "operation": "x", "payload": {}, "inference": {"temperature": 1.5}},
    {"id": "j1", "operation": "x", "payload": {}, "inference": {"max_tokens": 0}},
    {"id": "j1", "operation": "x", "payload": {}, "inference": {"stop_sequences": ["a"] * 5}},
    {"id": "j1", "operation": "x", "payload": {}, "timeout_ms": 0},
    {"id": "j1", "operation": "x", "payload": {}, "attempt": -1},
    {"id": "j1", "operation": "x", "payload": {}, "cache": {"bypass": "yes"}},
    {"id": "j1", "operation": "x", "payload": {}, "cache": {"ttl_s": -5}},
    {"id": "j1", "operation": "x", "payload": {}, "reply_to": "bad topic!"},
    {"id": "j1", "operation": "x", "payload": {}, "created_at": "yesterday"},
    {"id": "j1", "operation": "x", "payload": {}, "traceparent": "00-abc"},
    {"id": "j1", "operation": "x", "body": {"a": 1}},                 # body without invoke
    {"id": "j1", "operation": "x", "payload": {}, "api": "chat"},
    {"id": "j1", "operation": "x", "payload": {}, "persona": ""},
    {"id": 7, "operation": "x", "payload": {}},
    # Converse content blocks: exactly one member, no stray keys, botocore's shapes
    {"id": "j1", "operation": "x", "messages": [{"role": "user", "content": [
        {"text": "hi", "cachePoint": {"type": "default"}}]}]},
    {"id": "j1", "operation": "x", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}]}]},
    {"id": "j1", "operation": "x", "messages": [{"role": "user", "content": [
        {"image": {"format": "bmp", "source": {"bytes": "AAAA"}}}]}]},
    {"id": "j1", "operation": "x", "messages": [{"role": "user", "content": [
        {"image": {"format": "png", "source": {"bytes": "AAAA", "s3Location": {"uri": "s3://b/k"}}}}]}]},
    {"id": "j1", "operation": "x", "messages": [{"role": "user", "content": [
        {"cachePoint": {"type": "ephemeral"}}]}]},
    {"id": "j1", "operation": "x", "messages": [{"role": "user", "content": [
        {"toolUse": {"toolUseId": "t 1", "name": "n", "input": {}}}]}]},
    {"id": "j1", "operation": "x", "messages": [{"role": "user", "content": [
        {"document": {"format": "pdf", "source": {"bytes": "AAAA"}}}]}]},
    {"id": "j1", "operation": "x", "messages": [{"role": "user", "content": [
        {"video": {"format": "mp4", "source": {"s3Location": {"uri": "http://x"}}}}]}]},
    {"id": "j1", "operation": "x", "messages": [{"role": "user", "content": [{"text": "a"}],
                                                  "extra": 1}]},
    {"id": "j1", "operation": "x", "payload": {}, "system": []},
    {"id": "j1", "operation": "x", "payload": {}, "system": [{"text": "a", "cachePoint": {"type": "default"}}]},
    {"id": "j1", "operation": "x", "payload": {}, "toolConfig": {"tools": []}},
    {"id": "j1", "operation": "x", "payload": {}, "toolConfig": {"tools": [{"toolSpec": {"name": "a b", "inputSchema": {"json": {}}}}]}},
    {"id": "j1", "operation": "x", "payload": {}, "guardrailConfig": {"trace": "verbose"}},
    {"id": "j1", "operation": "x", "payload": {}, "guardrailConfig": {"guardrailId": "g"}},
    {"id": "j1", "operation": "x", "payload": {}, "performanceConfig": {"latency": "fast"}},
    {"id": "j1", "operation": "x", "payload": {}, "serviceTier": {"type": "gold"}},
    {"id": "j1", "operation": "x", "payload": {}, "additionalModelResponseFieldPaths": ["a"] * 11},
    {"id": "j1", "operation": "x", "payload": {}, "requestMetadata": {}},
    {"id": "j1", "operation": "x", "payload": {}, "requestMetadata": {"k": "v\u00e9"}},
    {"id": "j1", "operation": "x", "payload": {}, "promptVariables": {"v": {"json": 1}}},
    {"id": "j1", "operation": "x", "payload": {}, "tenant": "ac\u00e9"},
    {"id": "j1", "operation": "x", "payload": {}, "stream": "yes"},
    # model ids: botocore's modelId pattern; "." and ".." are path segments
    {"id": "j1", "operation": "x", "payload": {}, "model": "."},
    {"id": "j1", "operation": "x", "payload": {}, "model": ".."},
    {"id": "j1", "operation": "x", "payload": {}, "model": "a/b"},
    {"id": "j1", "operation": "x", "payload": {}, "model": "has space"},
]


def c_check(doc):
    r = run([binary("aiq-submit"), "--check", "--json", json.dumps(doc)])
    return r.returncode, r.stdout


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(SCHEMAS, "examples", "job-*.json"))))
def test_schemas_job_examples_valid_in_both(path):
    with open(path) as f:
        doc = json.load(f)
    JOB.validate(doc)
    rc, out = c_check(doc)
    assert rc == 0 and out.strip().endswith("ok"), out


@pytest.mark.parametrize("doc", INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_schemas_invalid_jobs_refused_by_both(doc):
    assert not JOB.is_valid(doc), "the schema accepts it"
    rc, out = c_check(doc)
    assert rc == 1, f"the C validator accepts it: {out}"


def test_schemas_minimal_job_valid_in_both():
    JOB.validate(VALID)
    assert c_check(VALID)[0] == 0


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(SCHEMAS, "examples",
                                                                 "result-*.json"))))
def test_schemas_result_examples_valid(path):
    with open(path) as f:
        RESULT.validate(json.load(f))
