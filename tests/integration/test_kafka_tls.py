"""Kafka over TLS on a real broker with SSL and SASL_SSL listeners (tools/kafka/kafka.sh
with AIQ_KAFKA_SSL_PORT and AIQ_KAFKA_SASL_SSL_PORT, its CA and certificate made by openssl
at start): the worker, aiq-submit and aiq-admin answer a job end to end over SSL and over
SASL_SSL with SCRAM-SHA-512, trusting the broker's CA (ssl.ca.location); with another CA
each of them exits non-zero within seconds and says the TLS handshake failed."""
import json
import os
import subprocess
import time
import uuid

import pytest

from aiqtest import (ROOT, SIM_KEY, SIM_SECRET, Sim, Worker, binary, free_port, run,
                     scram_refused, timed)

SCRAM_REFUSED = scram_refused()

USER, PASSWORD = "aiq", "tls-test-secret"
FAIL_WITHIN_S = 30
KAFKA_SH = os.path.join(ROOT, "tools", "kafka", "kafka.sh")


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    """A broker of its own: PLAINTEXT, SSL and SASL_SSL listeners."""
    data = tmp_path_factory.mktemp("kafka-tls")
    env = dict(os.environ, AIQ_KAFKA_PORT=str(free_port()),
               AIQ_KAFKA_CONTROLLER_PORT=str(free_port()), AIQ_KAFKA_SSL_PORT=str(free_port()),
               AIQ_KAFKA_SASL_SSL_PORT=str(free_port()), AIQ_KAFKA_DIR=str(data),
               AIQ_KAFKA_SASL_USER=USER, AIQ_KAFKA_SASL_PASSWORD=PASSWORD,
               AIQ_KAFKA_HEAP_OPTS="-Xms128m -Xmx512m")
    r = run([KAFKA_SH, "start"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    ca = os.path.join(str(data), "tls", "ca.pem")
    assert f"SSL listener on 127.0.0.1:{env['AIQ_KAFKA_SSL_PORT']} (CA {ca})" in r.stdout
    assert "SASL_SSL listener on" in r.stdout
    try:
        yield {"ssl": "127.0.0.1:" + env["AIQ_KAFKA_SSL_PORT"],
               "sasl_ssl": "127.0.0.1:" + env["AIQ_KAFKA_SASL_SSL_PORT"], "ca": ca}
    finally:
        run([KAFKA_SH, "stop"], env=env)


def tls_env(protocol, ca):
    """Security settings in the environment form every aiq binary reads."""
    env = {"AIQ_KAFKA_RDKAFKA_SECURITY_PROTOCOL": protocol,
           "AIQ_KAFKA_RDKAFKA_SSL_CA_LOCATION": ca}
    if protocol == "SASL_SSL":
        env.update(AIQ_KAFKA_RDKAFKA_SASL_MECHANISMS="SCRAM-SHA-512",
                   AIQ_KAFKA_RDKAFKA_SASL_USERNAME=USER, AIQ_KAFKA_RDKAFKA_SASL_PASSWORD=PASSWORD)
    return env


def other_ca(tmp_path):
    """A CA that signed nothing the broker has."""
    key, pem = tmp_path / "other-ca.key", tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=not the broker's CA", "-keyout", str(key), "-out", str(pem)],
                   check=True, capture_output=True)
    return str(pem)


def worker_env(brokers, prefix, sim_url, tmp_path, security):
    return dict(os.environ, **security, AIQ_KAFKA_BROKERS=brokers, AIQ_KAFKA_TOPIC_PREFIX=prefix,
                AIQ_KAFKA_GROUP_ID=f"g-{prefix}", AIQ_BEDROCK_ENDPOINT=sim_url,
                AWS_ACCESS_KEY_ID=SIM_KEY, AWS_SECRET_ACCESS_KEY=SIM_SECRET,
                AWS_REGION="us-east-1", AIQ_CACHE_PATH=str(tmp_path / "cache"))


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_tls_job_answered_end_to_end(tls_broker, protocol, tmp_path):
    brokers = tls_broker["ssl" if protocol == "SSL" else "sasl_ssl"]
    security = tls_env(protocol, tls_broker["ca"])
    prefix = f"tls{uuid.uuid4().hex[:8]}."
    if protocol == "SASL_SSL" and SCRAM_REFUSED:
        pytest.skip("librdkafka < 2.6.1 cannot log in with SCRAM to Kafka 4.x (test_kafka_sasl)")
    # aiq-admin with -X flags for the TLS settings.
    r = run([binary("aiq-admin"), "-b", brokers, "--prefix", prefix, "--partitions", "2",
             "-X", f"security.protocol={protocol.lower()}",
             "-X", f"ssl.ca.location={tls_broker['ca']}", "topics", "create"],
            env=dict(os.environ, **{k: v for k, v in security.items() if "SASL" in k}))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("created ") == 9, r.stdout
    sim = Sim()
    worker = Worker(worker_env(brokers, prefix, sim.url, tmp_path, security),
                    str(tmp_path / "worker.log"))
    try:
        r, _ = timed([binary("aiq-submit"), "-b", brokers, "--prefix", prefix,
                      "-o", "vc-analysis", "-p", "high", "--payload", '{"company": "Acme"}',
                      "--id", f"tls-{protocol}", "--wait", "--wait-timeout-ms", "60000"],
                     security)
        assert r.returncode == 0, r.stderr + worker.output()
        result = json.loads(r.stdout.strip().splitlines()[-1])
        assert result["job_id"] == f"tls-{protocol}"
        assert result["status"] == "succeeded", result
        assert sim.stats()["requests"] >= 1
    finally:
        code = worker.stop()
        sim.stop()
    assert code == 0, worker.output()


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_wrong_ca_fails_fast_and_says_why(tls_broker, protocol, tmp_path):
    brokers = tls_broker["ssl" if protocol == "SSL" else "sasl_ssl"]
    bad = tls_env(protocol, other_ca(tmp_path))
    base = ["-b", brokers, "--prefix", "tlsbad."]

    def says_tls(stderr):
        return "Kafka TLS failed" in stderr and "certificate verify failed" in stderr

    r, took = timed([binary("aiq-admin"), *base, "topics", "list"], bad)
    assert r.returncode == 1 and took < FAIL_WITHIN_S, (r.returncode, took)
    assert says_tls(r.stderr), r.stderr
    for wait in ([], ["--wait"]):
        r, took = timed([binary("aiq-submit"), *base, "-o", "vc-analysis", "--payload", "{}",
                         *wait], bad)
        assert r.returncode == 1 and took < FAIL_WITHIN_S, (wait, r.returncode, took)
        assert says_tls(r.stderr), r.stderr
    wenv = worker_env(brokers, "tlsbad.", "http://127.0.0.1:9", tmp_path, bad)
    t0 = time.monotonic()
    proc = subprocess.run([binary("aiq-worker")], env=wenv, capture_output=True, text=True,
                          timeout=FAIL_WITHIN_S + 30)
    took = time.monotonic() - t0
    assert proc.returncode != 0 and took < FAIL_WITHIN_S, (proc.returncode, took)
    assert says_tls(proc.stderr), proc.stderr[-2000:]
