"""The Bedrock contract in Python: botocore's own `bedrock-runtime` service model (the pinned
botocore of tests/requirements.txt) judging a request, for the integration tests.

The model is read from tools/bedrock-sim/bedrock-runtime.model.json, the same pinned input
shapes bedrock-sim enforces, through botocore's own ServiceModel and validator: a botocore of
another version installed next to the tests changes neither side of the contract
(test_bedrock_contract checks that the file is what the pinned botocore makes).

botocore's validator (`botocore.validate.validate_parameters`) checks required members,
unknown members, types, unions (exactly one member) and `min` (length and value). It skips
what only the service enforces: `max` (length and value), `enum` and `pattern`. `violations`
runs both, so a request passes only when the model as a whole accepts it.

    import bedrock_model
    errs = bedrock_model.violations("Converse", params)       # boto3-style params
    errs = bedrock_model.record_violations(line)               # one bedrock-sim --record line
    bad = bedrock_model.check_record_file(path)                # [(line no, operation, errs)]
"""
import base64
import binascii
import functools
import json
import re

import os

import botocore.session
from botocore.exceptions import ParamValidationError
from botocore.model import ServiceModel
from botocore.validate import validate_parameters

SERVICE = "bedrock-runtime"
DEPTH_MAX = 64  # as bedrock-sim's SIM_MODEL_DEPTH_MAX
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_FILE = os.path.join(ROOT, "tools", "bedrock-sim", "bedrock-runtime.model.json")
REQUIREMENTS = os.path.join(ROOT, "tests", "requirements.txt")


def pinned_botocore():
    """The botocore version tests/requirements.txt pins."""
    with open(REQUIREMENTS, encoding="utf-8") as f:
        for line in f:
            if line.strip().startswith("botocore=="):
                return line.strip().split("==", 1)[1]
    raise LookupError("tests/requirements.txt pins no botocore")


@functools.lru_cache(maxsize=1)
def service_model():
    """botocore's ServiceModel over the pinned input shapes (the file bedrock-sim uses)."""
    with open(MODEL_FILE, encoding="utf-8") as f:
        doc = json.load(f)
    ops = {name: {"name": name, "http": {"method": op["method"], "requestUri": op["requestUri"]},
                  "input": {"shape": op["input"]}} for name, op in doc["operations"].items()}
    meta = {"apiVersion": doc["source"]["apiVersion"], "protocol": "rest-json",
            "endpointPrefix": SERVICE, "serviceId": "Bedrock Runtime",
            "signatureVersion": "v4", "signingName": "bedrock"}
    return ServiceModel({"metadata": meta, "operations": ops, "shapes": doc["shapes"]},
                        service_name=SERVICE)


def installed_service_model():
    """The bedrock-runtime model of whatever botocore is installed (may differ from the pin)."""
    return botocore.session.get_session().get_service_model(SERVICE)


def operation_model(operation):
    return service_model().operation_model(operation)


@functools.lru_cache(maxsize=None)
def _regex(pattern):
    return re.compile(pattern)


def _blob_len(value):
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    try:  # on the wire (a recorded JSON body) a blob is base64 text
        return len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError, TypeError):
        return None


def _bounds(shape, value, size, path, errs):
    lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
    what = "length" if size is not None else "value"
    n = size if size is not None else value
    if lo is not None and n < lo:
        errs.append(f"{path}: {what} {n} below min {lo}")
    if hi is not None and n > hi:
        errs.append(f"{path}: {what} {n} above max {hi}")


def _string(shape, value, path, errs):
    if not isinstance(value, str):
        return  # botocore's validator reports the type
    _bounds(shape, value, len(value), path, errs)
    if shape.enum and value not in shape.enum:
        errs.append(f"{path}: {value[:60]!r} is not one of {shape.enum}")
    pattern = shape.metadata.get("pattern")
    # Smithy patterns are ECMA-262 regexes matched anywhere in the value (not anchored).
    if pattern is not None and not _regex(pattern).search(value):
        errs.append(f"{path}: {value[:60]!r} does not match pattern {pattern}")


def _walk(shape, value, path, errs, depth=0, wire=False):
    """The constraints botocore's validator skips: max, enum, pattern (and min again). wire:
    value is a JSON body as sent, where a blob must be base64 text."""
    if depth > DEPTH_MAX:
        errs.append(f"{path}: nested deeper than {DEPTH_MAX}")
        return
    t = shape.type_name
    if t == "structure":
        if shape.metadata.get("document") or not isinstance(value, dict):
            return
        for name, v in value.items():
            if name in shape.members:
                _walk(shape.members[name], v, f"{path}.{name}" if path else name, errs,
                      depth + 1, wire)
    elif t == "list" and isinstance(value, list):
        _bounds(shape, value, len(value), path, errs)
        for i, v in enumerate(value):
            _walk(shape.member, v, f"{path}[{i}]", errs, depth + 1, wire)
    elif t == "map" and isinstance(value, dict):
        _bounds(shape, value, len(value), path, errs)
        for k, v in value.items():
            _string(shape.key, k, f"{path} key {k!r}", errs)
            _walk(shape.value, v, f"{path}[{k!r}]", errs, depth + 1, wire)
    elif t == "string":
        _string(shape, value, path, errs)
    elif t == "blob":
        n = _blob_len(value)
        if n is not None:
            _bounds(shape, value, n, path, errs)
        elif wire and isinstance(value, str):
            errs.append(f"{path}: blob is not base64")
    elif t in ("integer", "long", "float", "double") and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        _bounds(shape, value, None, path, errs)
        if t == "integer" and isinstance(value, int) and not -2**31 <= value < 2**31:
            errs.append(f"{path}: {value} is not a 32-bit integer")


def violations(operation, params, wire=False):
    """Every way params (boto3-style: members by name, blobs as bytes) break the operation's
    input shape; [] when the model accepts them. wire: params came off the wire (a recorded
    or raw JSON body), so a blob given as text must be base64 (boto3 would encode it)."""
    shape = operation_model(operation).input_shape
    errs = []
    try:
        validate_parameters(params, shape)
    except ParamValidationError as e:
        errs.extend(line.strip() for line in str(e).splitlines()[1:] if line.strip())
    _walk(shape, params, "", errs, wire=wire)
    return errs


def record_params(rec):
    """The boto3-style params of one bedrock-sim --record line: body members, modelId from
    the path, header members by their locationName; InvokeModel's body as bytes."""
    op = operation_model(rec["operation"])
    shape = op.input_shape
    payload = shape.serialization.get("payload")
    headers = {k.lower(): v for k, v in rec.get("headers", {}).items()}
    params = {}
    if payload:
        params[payload] = json.dumps(rec["body"]).encode()
    else:
        params.update(rec["body"])
    for name, member in shape.members.items():
        loc = member.serialization.get("location")
        if loc == "uri":
            params[name] = rec["modelId"]
        elif loc == "header":
            v = headers.get(member.serialization["name"].lower())
            if v is not None and not (name == "contentType" and payload is None):
                params[name] = v
    return params


def record_violations(rec):
    return violations(rec["operation"], record_params(rec), wire=True)


def check_record_file(path):
    """[(line number, operation, [violations])] for every line of a bedrock-sim --record file
    that the model refuses, or that the sim refused (its reason is listed then). Identical
    lines are judged once."""
    bad, seen = [], set()
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        return bad
    with f:
        for no, line in enumerate(f, 1):
            if not line.strip() or line in seen:
                continue
            seen.add(line)
            rec = json.loads(line)
            errs = record_violations(rec)
            if rec.get("refused"):
                errs.append(f"bedrock-sim refused it: {rec['refused']}")
            if errs:
                bad.append((no, rec["operation"], errs))
    return bad


# ---- talking to bedrock-sim as AWS's own client does -----------------------------------------

REGION = "us-east-1"
OPERATION_PATH = {"Converse": "converse", "ConverseStream": "converse-stream",
                  "InvokeModel": "invoke", "InvokeModelWithResponseStream":
                  "invoke-with-response-stream", "CountTokens": "count-tokens"}


def client(endpoint_url, access_key, secret_key, max_attempts=1, **config):
    """A real boto3 bedrock-runtime client pointed at endpoint_url, standard retry mode with
    max_attempts attempts in all (1: no retry)."""
    import boto3
    from botocore.config import Config
    return boto3.client("bedrock-runtime", endpoint_url=endpoint_url, region_name=REGION,
                        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        config=Config(retries={"mode": "standard",
                                               "total_max_attempts": max_attempts}, **config))


def raw_request(endpoint_url, access_key, secret_key, operation, model_id, body, headers=None):
    """POSTs body (bytes, or an object sent as JSON) to operation's path for model_id,
    signed with botocore's SigV4Auth but never through its validator: how an invalid request
    reaches the server. Returns (status, lower-case headers, body bytes)."""
    import http.client
    import urllib.parse
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    path = f"/model/{urllib.parse.quote(model_id, safe='')}/{OPERATION_PATH[operation]}"
    req = AWSRequest(method="POST", url=endpoint_url + path, data=data,
                     headers={"Content-Type": "application/json", **(headers or {})})
    SigV4Auth(Credentials(access_key, secret_key), "bedrock", REGION).add_auth(req)
    u = urllib.parse.urlparse(endpoint_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("POST", path, body=data, headers=dict(req.headers.items()))
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()
