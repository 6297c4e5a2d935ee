"""Kafka security pass-through on a real broker with a SASL_PLAINTEXT listener
(tools/kafka/kafka.sh with AIQ_KAFKA_SASL_PORT): with the right credentials a worker,
aiq-submit and aiq-admin work end to end (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN); with wrong,
missing or no credentials each exits non-zero, quickly, saying why.

librdkafka before 2.6.1 computes a SCRAM proof Kafka 4.x refuses (librdkafka #4895: the
client nonce went into the client-final message twice; 4.x checks it as RFC 5802 says):
with such a librdkafka against a 4.x broker the SCRAM cases assert that refusal, clearly and
quickly, instead of a job answered; PLAIN works with every version."""
import json
import os
import re
import subprocess
import time
import uuid

import pytest

from aiqtest import (SIM_KEY, SIM_SECRET, Broker, Sim, Worker, binary, free_port, run,
                     scram_refused, timed)

USER, PASSWORD = "aiq", "sasl-test-secret"
FAIL_WITHIN_S = 30
SCRAM_REFUSED = scram_refused()


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    """A broker of its own (PLAINTEXT + SASL_PLAINTEXT), so the suite's broker stays as it is."""
    sasl_port = free_port()
    broker = Broker(free_port(), free_port(), tmp_path_factory.mktemp("kafka-sasl"),
                    AIQ_KAFKA_SASL_PORT=sasl_port, AIQ_KAFKA_SASL_USER=USER,
                    AIQ_KAFKA_SASL_PASSWORD=PASSWORD, AIQ_KAFKA_HEAP_OPTS="-Xms128m -Xmx512m")
    assert "SASL_PLAINTEXT listener on" in broker.start()
    try:
        yield f"127.0.0.1:{sasl_port}"
    finally:
        broker.sh("stop")


def sasl_env(mechanism, password=PASSWORD, user=USER):
    """Credentials in the environment form every aiq binary reads."""
    env = {"AIQ_KAFKA_RDKAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "AIQ_KAFKA_RDKAFKA_SASL_MECHANISMS": mechanism}
    if user is not None:
        env.update(AIQ_KAFKA_RDKAFKA_SASL_USERNAME=user, AIQ_KAFKA_RDKAFKA_SASL_PASSWORD=password)
    return env


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_sasl_job_answered_end_to_end(sasl_broker, mechanism, tmp_path):
    prefix = f"sasl{uuid.uuid4().hex[:8]}."
    if mechanism.startswith("SCRAM") and SCRAM_REFUSED:
        # The known incompatibility: the right password, refused, and said so at once.
        r, took = timed([binary("aiq-admin"), "-b", sasl_broker, "--prefix", prefix,
                         "topics", "create"], sasl_env(mechanism))
        assert r.returncode == 1 and took < FAIL_WITHIN_S, (r.returncode, took, r.stderr)
        assert "Kafka authentication failed" in r.stderr and mechanism in r.stderr, r.stderr
        return
    # aiq-admin with -X flags (the password from the environment, as for a secret).
    r = run([binary("aiq-admin"), "-b", sasl_broker, "--prefix", prefix, "--partitions", "2",
             "-X", "security.protocol=sasl_plaintext", "-X", f"sasl.mechanisms={mechanism}",
             "-X", f"sasl.username={USER}", "topics", "create"],
            env=dict(os.environ, AIQ_KAFKA_RDKAFKA_SASL_PASSWORD=PASSWORD))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("created ") == 9, r.stdout
    sim = Sim()
    wenv = dict(os.environ, **sasl_env(mechanism), AIQ_KAFKA_BROKERS=sasl_broker,
                AIQ_KAFKA_TOPIC_PREFIX=prefix, AIQ_KAFKA_GROUP_ID=f"g-{prefix}",
                AIQ_BEDROCK_ENDPOINT=sim.url, AWS_ACCESS_KEY_ID=SIM_KEY,
                AWS_SECRET_ACCESS_KEY=SIM_SECRET, AWS_REGION="us-east-1",
                AIQ_CACHE_PATH=str(tmp_path / "cache"))
    worker = Worker(wenv, str(tmp_path / "worker.log"))
    try:
        r, _ = timed([binary("aiq-submit"), "-b", sasl_broker, "--prefix", prefix,
                      "-o", "vc-analysis", "-p", "high", "--payload", '{"company": "Acme"}',
                      "--id", f"sasl-{mechanism}", "--wait", "--wait-timeout-ms", "60000"],
                     sasl_env(mechanism))
        assert r.returncode == 0, r.stderr + worker.output()
        result = json.loads(r.stdout.strip().splitlines()[-1])
        assert result["job_id"] == f"sasl-{mechanism}"
        assert result["status"] == "succeeded", result
        assert sim.stats()["requests"] >= 1
    finally:
        code = worker.stop()
        sim.stop()
    assert code == 0, worker.output()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_wrong_password_fails_fast_and_says_why(sasl_broker, mechanism, tmp_path):
    bad = sasl_env(mechanism, password="not-the-password")
    base = ["-b", sasl_broker, "--prefix", "saslbad."]
    r, took = timed([binary("aiq-admin"), *base, "topics", "create"], bad)
    assert r.returncode == 1 and took < FAIL_WITHIN_S, (r.returncode, took)
    assert "Kafka authentication failed" in r.stderr and mechanism in r.stderr, r.stderr
    for wait in ([], ["--wait"]):
        r, took = timed([binary("aiq-submit"), *base, "-o", "vc-analysis", "--payload", "{}",
                         *wait], bad)
        assert r.returncode == 1 and took < FAIL_WITHIN_S, (wait, r.returncode, took)
        assert "Kafka authentication failed" in r.stderr, r.stderr
    wenv = dict(os.environ, **bad, AIQ_KAFKA_BROKERS=sasl_broker,
                AIQ_KAFKA_TOPIC_PREFIX="saslbad.", AIQ_BEDROCK_ENDPOINT="http://127.0.0.1:9",
                AWS_ACCESS_KEY_ID=SIM_KEY, AWS_SECRET_ACCESS_KEY=SIM_SECRET,
                AIQ_CACHE_PATH=str(tmp_path / "cache"))
    t0 = time.monotonic()
    proc = subprocess.run([binary("aiq-worker")], env=wenv, capture_output=True, text=True,
                          timeout=FAIL_WITHIN_S + 30)
    took = time.monotonic() - t0
    assert proc.returncode != 0 and took < FAIL_WITHIN_S, (proc.returncode, took)
    assert "Kafka authentication failed" in proc.stderr, proc.stderr[-2000:]


def test_missing_credentials_are_refused_at_start(sasl_broker, tmp_path):
    none = sasl_env("SCRAM-SHA-256", user=None)
    base = ["-b", sasl_broker, "--prefix", "saslnone."]
    for args in ([binary("aiq-admin"), *base, "topics", "list"],
                 [binary("aiq-submit"), *base, "-o", "vc-analysis", "--payload", "{}"]):
        r, took = timed(args, none)
        assert r.returncode != 0 and took < 5, (args[0], r.returncode, took)
        assert "sasl.username and sasl.password must be set" in r.stderr, r.stderr
    wenv = dict(os.environ, **none, AIQ_KAFKA_BROKERS=sasl_broker,
                AIQ_BEDROCK_ENDPOINT="http://127.0.0.1:9", AWS_ACCESS_KEY_ID=SIM_KEY,
                AWS_SECRET_ACCESS_KEY=SIM_SECRET, AIQ_CACHE_PATH=str(tmp_path / "cache"))
    proc = subprocess.run([binary("aiq-worker")], env=wenv, capture_output=True, text=True,
                          timeout=FAIL_WITHIN_S)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "sasl.username and sasl.password must be set" in proc.stderr


def test_plaintext_client_on_sasl_listener_gives_up_with_a_hint(sasl_broker):
    """No security settings at all against a SASL listener: the CLI tools stop after their
    connect bound (20 s) and pass on librdkafka's hint instead of waiting for ever."""
    base = ["-b", sasl_broker, "--prefix", "saslplain."]
    for args in ([binary("aiq-admin"), *base, "topics", "list"],
                 [binary("aiq-submit"), *base, "-o", "vc-analysis", "--payload", "{}"]):
        r, took = timed(args, {})
        assert r.returncode == 1 and took < FAIL_WITHIN_S, (args[0], r.returncode, took)
        assert "no answer from Kafka" in r.stderr and "security.protocol" in r.stderr, r.stderr
