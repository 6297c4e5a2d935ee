"""bedrock-sim on its own (no Kafka, no worker): fault profiles over real HTTP with SigV4-signed
requests. Error mix shares, outages, quotas, latency distributions, per-model profiles, reset,
determinism, and that a bad config is refused with 400 and changes nothing."""
import datetime
import hashlib
import hmac
import http.client
import json
import math
import subprocess
import threading
import time
import urllib.parse

import pytest

from aiqtest import SIM_KEY, SIM_SECRET, Sim, binary, percentile

REGION = "us-east-1"
ERROR_NS = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
CONVERSE = {"messages": [{"role": "user", "content": [{"text": "hello"}]}],
            "inferenceConfig": {"maxTokens": 64}}


def _hmac(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign_headers(host, path, body):
    """SigV4 headers for POST path (a model id of unreserved characters only, so the double
    URI-encoding of the canonical path changes nothing)."""
    amz_date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    payload = hashlib.sha256(body).hexdigest()
    signed = "content-type;host;x-amz-date"
    canonical = "\n".join(["POST", path, "", f"content-type:application/json\nhost:{host}\n"
                           f"x-amz-date:{amz_date}\n", signed, payload])
    scope = f"{day}/{REGION}/bedrock/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + SIM_SECRET).encode(), day)
    for part in (REGION, "bedrock", "aws4_request"):
        key = _hmac(key, part)
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Amz-Date": amz_date,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={SIM_KEY}/{scope}, "
                             f"SignedHeaders={signed}, Signature={sig}"}


class Client:
    """One keep-alive connection to the sim; not shared between threads."""

    def __init__(self, sim):
        u = urllib.parse.urlparse(sim.url)
        self.host = u.netloc
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)

    def converse(self, model="sim-a"):
        """Returns (status, headers dict with lower-case names, JSON body, elapsed ms)."""
        path = f"/model/{model}/converse"
        body = json.dumps(CONVERSE).encode()
        t0 = time.monotonic()
        self.conn.request("POST", path, body=body, headers=sign_headers(self.host, path, body))
        r = self.conn.getresponse()
        data = r.read()
        ms = (time.monotonic() - t0) * 1000
        return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(data), ms

    def control(self, method, path, obj=None):
        body = None if obj is None else (obj if isinstance(obj, bytes) else json.dumps(obj).encode())
        self.conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        return r.status, json.loads(r.read())

    def close(self):
        self.conn.close()


def parallel(sim, n, threads=8, model="sim-a"):
    """n converse calls spread over threads; returns the list of results."""
    out, lock = [], threading.Lock()
    counter = iter(range(n))

    def work():
        c = Client(sim)
        try:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                r = c.converse(model)
                with lock:
                    out.append(r)
        finally:
            c.close()

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(out) == n
    return out


@pytest.fixture
def sim():
    s = Sim(latency_ms=0)
    yield s
    s.stop()


@pytest.fixture
def client(sim):
    c = Client(sim)
    yield c
    c.close()


def configure(client, obj):
    status, body = client.control("POST", "/_sim/config", obj)
    assert status == 200, body
    return body


def test_sim_help_documents_every_knob():
    out = subprocess.run([binary("bedrock-sim"), "--help"], capture_output=True, text=True,
                         timeout=10).stdout
    for word in ["--latency-dist", "lognormal", "--latency-p99-ms", "--latency-cap-ms",
                 "--quota-rps", "--quota-rpm", "--errors JSON", "--outage JSON", "--models JSON",
                 "retry_after_s", "/_sim/outage", "/_sim/reset", "by_error_type", "in_outage",
                 "sliding"]:
        assert word in out, word


def test_sim_bad_config_is_refused_and_changes_nothing(sim, client):
    before = configure(client, {"quota_rps": 7})
    bad = [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"latency_ms": "20"}, "latency_ms: must be an integer"),
        ({"fail_rate": 1.5}, "fail_rate"),
        ({"quota_rps": -5}, "quota_rps"),
        ({"latency_dist": "gaussian"}, "fixed|uniform|lognormal"),
        ({"latency_dist": "lognormal", "latency_p50_ms": 100, "latency_p99_ms": 50},
         "latency_p99_ms"),
        ({"latency_dist": "uniform", "latency_min_ms": 30, "latency_max_ms": 10},
         "latency_min_ms"),
        ({"no_such_knob": 1}, "no_such_knob"),
        ({"threads": 8}, "threads: not a runtime setting"),
        ({"errors": {"status": 503}}, "errors: must be an array"),
        ({"errors": [{"status": 200, "rate": 0.1}]}, "errors[0].status"),
        ({"errors": [{"status": 503}]}, "needs status and rate"),
        ({"errors": [{"status": 503, "rate": 0.7}, {"status": 429, "rate": 0.6}]}, "add up"),
        ({"errors": [{"status": 503, "rate": 0.1, "type": "Bad Type:x"}]}, "errors[0].type"),
        ({"errors": [{"status": 503, "rate": 0.1, "retry_after_s": -1}]}, "retry_after_s"),
        ({"errors": [{"status": 503, "rate": 0.1, "colour": "red"}]}, "colour"),
        ({"outage": {"duration_ms": 0}}, "outage.duration_ms"),
        ({"outage": [{"start_ms": -1}]}, "outage[0].start_ms"),
        ({"outage": "now"}, "outage: must be"),
        ({"models": []}, "models: must be"),
        ({"models": {"m1": {"seed": 3}}}, "models.m1.seed: not a per-model knob"),
        ({"models": {"m1": {"fail_rate": 2}}}, "models.m1.fail_rate"),
        ({"models": {"m1": {"latency_dist": "uniform", "latency_min_ms": 9}}},
         "models.m1: latency_min_ms"),
        ({"models": {f"m{i}": {} for i in range(17)}}, "at most 16 models"),
        # One good key and one bad: all or nothing.
        ({"fail_rate": 0.5, "latency_ms": 10 ** 9}, "latency_ms"),
    ]
    for body, want in bad:
        status, reply = client.control("POST", "/_sim/config", body)
        assert status == 400, (body, reply)
        assert want in reply["message"], (body, reply)
    for body, want in [({"on": "yes"}, "outage.on"), ({}, "needs \"on\""),
                       ({"on": False, "duration_ms": 5}, "need \"on\": true"),
                       ({"on": True, "duration_ms": -4}, "duration_ms")]:
        status, reply = client.control("POST", "/_sim/outage", body)
        assert status == 400, (body, reply)
        assert want in reply["message"], (body, reply)
    status, after = client.control("GET", "/_sim/config")
    assert status == 200 and after == before
    assert after["quota_rps"] == 7 and after["fail_rate"] == 0 and after["models"] == {}
    assert client.converse()[0] == 200  # still serving
    # The same validation for flags: exit 2 with the reason, before listening.
    r = subprocess.run([binary("bedrock-sim"), "--port", "0", "--errors",
                        '[{"status": 503, "rate": 2}]'], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2 and "errors[0].rate" in r.stderr


MIX = [
    {"status": 429, "type": "ThrottlingException", "rate": 0.10, "retry_after_s": 2},
    {"status": 503, "type": "ServiceUnavailableException", "rate": 0.05},
    {"status": 400, "type": "ValidationException", "rate": 0.01},
    {"status": 403, "type": "AccessDeniedException", "rate": 0.02},
    {"status": 424, "type": "ModelErrorException", "rate": 0.02},
    {"status": 408, "type": "ModelTimeoutException", "rate": 0.02},
    {"status": 529, "rate": 0.02, "message": "Overloaded"},
    {"status": 500, "type": "InternalServerException", "rate": 0.03},
]


def test_sim_error_mix_shares_headers_and_stats(sim, client):
    n = 2000
    cfg = configure(client, {"errors": MIX, "seed": 42})
    assert cfg["errors"][6]["type"] == "ServiceUnavailableException"  # default for 529
    results = parallel(sim, n)
    by_status = {}
    for status, headers, body, _ in results:
        by_status[status] = by_status.get(status, 0) + 1
        if status == 200:
            assert "x-amzn-errortype" not in headers
            continue
        entry = next(e for e in cfg["errors"] if e["status"] == status)
        assert headers["x-amzn-errortype"] == entry["type"] + ERROR_NS
        assert body["message"]
        if status == 429:
            assert headers["retry-after"] == "2"
            assert body["message"] == "Too many requests, please wait before trying again."
        else:
            assert "retry-after" not in headers
        if status == 529:
            assert body["message"] == "Overloaded"
    for e in MIX:
        got, want = by_status.get(e["status"], 0), e["rate"] * n
        assert abs(got - want) <= 4 * math.sqrt(want * (1 - e["rate"])) + 2, (e, got)
    assert abs(by_status[200] - 0.73 * n) <= 4 * math.sqrt(n * 0.73 * 0.27)
    st = sim.stats()
    assert st["requests"] == n and st["ok"] == by_status[200]
    assert st["by_status"] == {str(k): v for k, v in by_status.items()}
    assert st["throttled"] == by_status[429] and st["quota_throttled"] == 0
    want_types = {}
    for e in cfg["errors"]:
        want_types[e["type"]] = want_types.get(e["type"], 0) + by_status.get(e["status"], 0)
    assert st["by_error_type"] == {k: v for k, v in want_types.items() if v}


def test_sim_legacy_fail_and_throttle_rates_still_work(sim, client):
    configure(client, {"fail_rate": 0.2, "fail_status": 500, "throttle_rate": 0.1})
    results = parallel(sim, 1000)
    n429 = sum(r[0] == 429 for r in results)
    n500 = sum(r[0] == 500 for r in results)
    assert 60 <= n429 <= 140  # 10 %
    assert 130 <= n500 <= 230  # 20 % of the other 90 %
    assert all(r[1]["x-amzn-errortype"].startswith("InternalServerException:")
               for r in results if r[0] == 500)


def test_sim_same_seed_same_faults_after_reset(sim, client):
    configure(client, {"errors": MIX, "seed": 7})
    first = [client.converse()[0] for _ in range(300)]
    assert client.control("POST", "/_sim/reset")[0] == 200
    again = [client.converse()[0] for _ in range(300)]
    assert first == again and len(set(first)) >= 5


def test_sim_outage_on_off_and_windows(sim, client):
    assert client.converse()[0] == 200
    status, st = client.control("POST", "/_sim/outage", {"on": True})
    assert status == 200 and st["in_outage"] is True and st["outage"] == [{"start_ms": 0}]
    for _ in range(5):
        status, headers, body, _ = client.converse()
        assert status == 503
        assert headers["x-amzn-errortype"].startswith("ServiceUnavailableException:")
    stats = sim.stats()
    assert stats["in_outage"] is True and stats["outage_rejected"] == 5
    status, st = client.control("POST", "/_sim/outage", {"on": False})
    assert status == 200 and st["in_outage"] is False and st["outage"] == []
    assert client.converse()[0] == 200
    assert sim.stats()["in_outage"] is False

    # "All 503 from now for N ms" through /_sim/config.
    t0 = time.monotonic()
    configure(client, {"outage": {"duration_ms": 800}})
    assert client.converse()[0] == 503
    while client.converse()[0] == 503:
        assert time.monotonic() - t0 < 5
        time.sleep(0.02)
    assert 0.75 <= time.monotonic() - t0 <= 3

    # A scheduled window: healthy, then 503 from +1 s for 1 s, then healthy again.
    t0 = time.monotonic()
    status, st = client.control("POST", "/_sim/outage",
                                {"on": True, "start_ms": 1000, "duration_ms": 1000})
    assert status == 200 and st["in_outage"] is False and len(st["outage"]) == 1
    assert client.converse()[0] == 200
    while client.converse()[0] == 200:
        assert time.monotonic() - t0 < 5
        time.sleep(0.02)
    began = time.monotonic() - t0
    while client.converse()[0] == 503:
        assert time.monotonic() - t0 < 8
        time.sleep(0.02)
    ended = time.monotonic() - t0
    assert 0.95 <= began <= 2.5 and 1.95 <= ended <= 4, (began, ended)


def test_sim_quota_rps_admits_the_rate(sim, client):
    """quota_rps=50 under ~200 requests/s for 6 s: 50 admitted per second, the rest 429."""
    configure(client, {"quota_rps": 50})
    seconds, threads, per_thread_rps = 6.0, 4, 50
    counts, lock = {}, threading.Lock()

    def work(t_end):
        c = Client(sim)
        k = 0
        try:
            while True:
                due = t_start + k / per_thread_rps
                now = time.monotonic()
                if due >= t_end:
                    return
                if due > now:
                    time.sleep(due - now)
                status, headers, _, _ = c.converse()
                if status == 429:
                    assert headers["x-amzn-errortype"].startswith("ThrottlingException:")
                with lock:
                    counts[status] = counts.get(status, 0) + 1
                k += 1
        finally:
            c.close()

    t_start = time.monotonic()
    ts = [threading.Thread(target=work, args=(t_start + seconds,)) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ok, throttled = counts.get(200, 0), counts.get(429, 0)
    assert set(counts) <= {200, 429}, counts
    assert 0.9 * 300 <= ok <= 1.1 * 300, counts
    assert throttled > 2 * ok, counts  # the load really was ~4x the quota
    st = sim.stats()
    assert st["ok"] == ok and st["quota_throttled"] == throttled == st["throttled"]


def test_sim_latency_lognormal_uniform_and_cap(sim, client):
    configure(client, {"latency_dist": "lognormal", "latency_p50_ms": 40,
                       "latency_p99_ms": 300, "seed": 3})
    results = parallel(sim, 800, threads=32)
    drawn = [r[2]["metrics"]["latencyMs"] for r in results]
    assert all(r[0] == 200 for r in results)
    p50, p99 = percentile(drawn, 0.5), percentile(drawn, 0.99)
    assert 34 <= p50 <= 46, p50
    assert 210 <= p99 <= 400, p99
    # The reply really waits the drawn latency.
    assert all(r[3] >= r[2]["metrics"]["latencyMs"] - 2 for r in results)
    assert sum(r[3] for r in results) / len(results) >= 0.9 * sum(drawn) / len(drawn)

    configure(client, {"latency_cap_ms": 100})
    capped = [r[2]["metrics"]["latencyMs"] for r in parallel(sim, 300, threads=32)]
    assert max(capped) == 100 and min(capped) >= 1

    configure(client, {"latency_dist": "uniform", "latency_min_ms": 10, "latency_max_ms": 30,
                       "latency_cap_ms": 120000})
    drawn = [r[2]["metrics"]["latencyMs"] for r in parallel(sim, 400, threads=16)]
    assert min(drawn) >= 10 and max(drawn) <= 30
    assert min(drawn) <= 11 and max(drawn) >= 29
    assert 18 <= sum(drawn) / len(drawn) <= 22


def test_sim_per_model_profiles(sim, client):
    cfg = configure(client, {"models": {"m-bad": {"fail_rate": 1, "fail_status": 500},
                                        "m-q": {"quota_rps": 5}}})
    assert cfg["models"]["m-bad"] == {"fail_rate": 1.0, "fail_status": 500, "outage": []}
    for _ in range(5):
        assert client.converse("m-bad")[0] == 500
        assert client.converse("m-good")[0] == 200
    # m-q has a quota window of its own; the other models have none.
    q = [client.converse("m-q")[0] for _ in range(12)]
    assert q.count(200) == 5 and q.count(429) == 7
    assert all(client.converse("m-good")[0] == 200 for _ in range(20))

    # An outage of one model only.
    status, st = client.control("POST", "/_sim/outage", {"on": True, "model": "m-good"})
    assert status == 200 and st["in_outage"] is False and st["models"]["m-good"]["in_outage"]
    assert client.converse("m-good")[0] == 503
    assert client.converse("m-other")[0] == 200
    stats = sim.stats()
    assert stats["in_outage"] is False and stats["outage_models"] == ["m-good"]
    assert stats["by_model"]["m-bad"] == 5 and stats["by_model"]["m-q"] == 12
    client.control("POST", "/_sim/outage", {"on": False, "model": "m-good"})
    assert client.converse("m-good")[0] == 200

    # A global knob reaches the models that do not override it; null removes a profile.
    configure(client, {"throttle_rate": 1.0})
    assert client.converse("m-bad")[0] == 429
    configure(client, {"throttle_rate": 0, "models": {"m-bad": None}})
    assert client.converse("m-bad")[0] == 200
    status, cfg = client.control("GET", "/_sim/config")
    assert sorted(cfg["models"]) == ["m-good", "m-q"]
    # GET /_sim/config can be posted back as is.
    assert configure(client, cfg) == cfg


def test_sim_reset_clears_counters_quota_and_outage(sim, client):
    configure(client, {"quota_rps": 3})
    assert [client.converse()[0] for _ in range(5)] == [200, 200, 200, 429, 429]
    client.control("POST", "/_sim/outage", {"on": True})
    assert client.converse()[0] == 503
    status, _ = client.control("POST", "/_sim/reset")
    assert status == 200
    st = sim.stats()
    assert st["requests"] == 0 and st["ok"] == 0 and st["by_error_type"] == {}
    assert st["in_outage"] is False
    # The quota window is empty again; the knob itself stays.
    assert [client.converse()[0] for _ in range(4)] == [200, 200, 200, 429]
    assert client.control("GET", "/_sim/config")[1]["quota_rps"] == 3


def test_sim_flags_set_the_same_knobs():
    s = Sim(latency_ms=0, extra=["--quota-rps", "2", "--latency-dist", "uniform",
                                 "--latency-min-ms", "3", "--latency-max-ms", "3",
                                 "--models", '{"m-x": {"fail_rate": 1, "fail_status": 424}}',
                                 "--errors", '[{"status": 503, "rate": 0}]'])
    c = Client(s)
    try:
        status, cfg = c.control("GET", "/_sim/config")
        assert cfg["quota_rps"] == 2 and cfg["latency_dist"] == "uniform"
        assert cfg["errors"] == [{"status": 503, "type": "ServiceUnavailableException",
                                  "rate": 0.0}]
        r = c.converse("m-x")
        assert r[0] == 424 and r[1]["x-amzn-errortype"].startswith("ModelErrorException:")
        r = c.converse("m-y")
        assert r[0] == 200 and r[2]["metrics"]["latencyMs"] == 3
        assert c.converse("m-y")[0] == 429  # the global quota of 2 counts m-x too
    finally:
        c.close()
        s.stop()
