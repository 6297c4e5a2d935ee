"""kafka.group_protocol on a real broker, for the librdkafka the binaries load.

- librdkafka < 2.12 (Debian 12's 2.0.2): a worker asked for consumer (KIP-848) refuses to
  start, exit 2, naming the version it needs; a classic worker is unaffected (the rest of
  the compatibility subset).
- librdkafka >= 2.12 with the suite run under consumer (AIQ_KAFKA_GROUP_PROTOCOL=consumer,
  tools/test.sh's KIP-848 run): a pass-through option the protocol forbids is refused at
  start; and static membership behaves as KIP-848 says: a process restarted with the
  kafka.group_instance_id of one that was SIGKILLed is refused by the broker until the dead
  one's session (group.consumer.session.timeout.ms) ends, and the worker exits 70 saying
  so instead of idling; started again after that, it takes partitions.
"""
import os
import re
import signal
import subprocess
import time

import pytest

from aiqtest import binary, run

PROTOCOL = os.environ.get("AIQ_KAFKA_GROUP_PROTOCOL", "classic")
# The broker's consumer-group session (tools/test.sh starts its brokers with 10 s).
CONSUMER_SESSION_S = int(os.environ.get("AIQ_KAFKA_CONSUMER_SESSION_MS", "45000")) / 1000


def rdkafka_version():
    out = run([binary("aiq-worker"), "--version"]).stdout
    return tuple(int(x) for x in re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", out).groups())


HAS_KIP848 = rdkafka_version() >= (2, 12, 0)


def run_worker(env, timeout=30):
    t0 = time.monotonic()
    p = subprocess.run([binary("aiq-worker")], env=env, capture_output=True, text=True,
                       timeout=timeout)
    return p, time.monotonic() - t0


@pytest.mark.skipif(HAS_KIP848, reason="this librdkafka has KIP-848")
def test_consumer_protocol_refused_on_old_librdkafka(aiq_env):
    aiq_env.start_sim()
    env = aiq_env.worker_env(AIQ_KAFKA_GROUP_PROTOCOL="consumer")
    p, took = run_worker(env)
    assert p.returncode == 2 and took < 10, (p.returncode, took, p.stderr[-1000:])
    assert "kafka.group_protocol=consumer needs librdkafka >= 2.12.0" in p.stderr, p.stderr
    assert "has %d.%d.%d" % rdkafka_version() in p.stderr


@pytest.mark.skipif(not HAS_KIP848 or PROTOCOL != "consumer",
                    reason="the KIP-848 run (AIQ_KAFKA_GROUP_PROTOCOL=consumer) only")
def test_consumer_protocol_refuses_classic_session_option(aiq_env):
    aiq_env.start_sim()
    env = aiq_env.worker_env(AIQ_KAFKA_RDKAFKA_SESSION_TIMEOUT_MS="30000")
    p, took = run_worker(env)
    assert p.returncode == 2 and took < 10, (p.returncode, took, p.stderr[-1000:])
    assert "kafka.rdkafka.session.timeout.ms: not allowed with kafka.group_protocol=consumer" \
        in p.stderr, p.stderr


@pytest.mark.skipif(not HAS_KIP848 or PROTOCOL != "consumer",
                    reason="the KIP-848 run (AIQ_KAFKA_GROUP_PROTOCOL=consumer) only")
@pytest.mark.skipif(CONSUMER_SESSION_S > 20, reason="needs a broker with a short consumer "
                    "session (AIQ_KAFKA_CONSUMER_SESSION_MS, as tools/test.sh starts it)")
def test_consumer_protocol_static_member_restarted_after_sigkill(aiq_env):
    env = aiq_env
    env.start_sim(latency_ms=5)
    other = env.start_worker()
    victim = env.start_worker(AIQ_KAFKA_GROUP_INSTANCE_ID="slot0")
    env.wait_group_stable(2)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    t_kill = time.monotonic()
    # At once, with the same instance id: the broker still holds it for the dead process.
    wenv = env.worker_env(AIQ_WORKER_ID=f"again-{env.tag}", AIQ_KAFKA_GROUP_INSTANCE_ID="slot0")
    p, took = run_worker(wenv, timeout=CONSUMER_SESSION_S + 30)
    assert time.monotonic() - t_kill < CONSUMER_SESSION_S, "refused only within the session"
    assert p.returncode == 70 and took < 15, (p.returncode, took, p.stderr[-2000:])
    assert "consumer fatal error" in p.stderr and "instance ID is still used" in p.stderr
    assert "group.consumer.session.timeout.ms" in p.stderr, p.stderr[-2000:]
    # After the session the id is free: the same id joins and gets partitions.
    time.sleep(max(0.0, t_kill + CONSUMER_SESSION_S + 2 - time.monotonic()))
    again = env.start_worker(AIQ_KAFKA_GROUP_INSTANCE_ID="slot0")
    env.wait_group_stable(2, timeout=60)
    assert again.proc.poll() is None and other.proc.poll() is None
    assert again.stop() == 0 and other.stop() == 0
