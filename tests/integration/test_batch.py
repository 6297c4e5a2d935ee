"""Batch mode of aiq-submit on the real broker: NDJSON in, one result per input line out,
resume after SIGKILL without submitting a job twice, invalid lines reported (or, with
--strict, nothing sent), and interactive critical jobs stay fast while a big batch runs."""
import json
import os
import signal
import subprocess
import time
from collections import Counter

from confluent_kafka import TopicPartition

from aiqtest import BROKERS, PRIORITIES, binary, run


def write_batch(path, n, bad=()):
    with open(path, "w") as f:
        for i in range(1, n + 1):
            if i in bad:
                f.write(bad[i] + "\n")
            else:
                f.write(json.dumps({"operation": "vc-analysis", "payload": {"row": i}}) + "\n")


def submit_cmd(env, *args):
    return [binary("aiq-submit"), "-b", BROKERS, "--prefix", env.prefix, "--no-progress", *args]


def read_results(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def start_pool(env, latency_ms=2, workers=2, inflight=50):
    env.start_sim(latency_ms=latency_ms)
    for _ in range(workers):
        env.start_worker(AIQ_WORKER_MAX_INFLIGHT=inflight)
    env.wait_group_stable(workers)


def job_keys(env):
    """Every key in the four job topics, read by an independent client."""
    c = env.consumer()
    tps = [TopicPartition(env.job_topic(p), i) for p in PRIORITIES for i in range(env.partitions)]
    ends = {}
    for tp in tps:
        lo, hi = c.get_watermark_offsets(tp, timeout=30)
        if hi > lo:
            ends[(tp.topic, tp.partition)] = hi
    c.assign([TopicPartition(t, p, 0) for (t, p) in ends])
    keys, seen, deadline = [], {}, time.time() + 120
    try:
        while time.time() < deadline and any(seen.get(k, 0) < v for k, v in ends.items()):
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            keys.append(m.key().decode())
            seen[(m.topic(), m.partition())] = m.offset() + 1
    finally:
        c.close()
    return keys


def assert_complete(results, n):
    lines = [r["line"] for r in results]
    assert len(lines) == n, f"{len(lines)} result lines for {n} jobs"
    assert sorted(lines) == list(range(1, n + 1))
    assert len({r["job_id"] for r in results}) == n
    for r in results:
        assert r["result"] is not None, r
        assert r["result"]["job_id"] == r["job_id"]
        assert r["result"]["status"] == "succeeded", r


def test_batch_20k_one_answer_per_line(aiq_env, tmp_path):
    start_pool(aiq_env)
    src, out = tmp_path / "jobs.ndjson", tmp_path / "out.ndjson"
    write_batch(src, 20000)
    r = run(submit_cmd(aiq_env, "-p", "low", "--results", str(out), str(src)))
    assert r.returncode == 0, r.stderr[-3000:]
    results = read_results(out)
    assert_complete(results, 20000)
    assert {r["result"]["priority"] for r in results} == {"low"}
    assert "p99" in r.stderr and "tokens: input" in r.stderr
    state = json.load(open(str(out) + ".state"))
    assert state["complete"] and state["acked"] == [[1, 20000]]


def test_batch_sigkill_then_resume_submits_nothing_twice(aiq_env, tmp_path):
    n = 10000
    start_pool(aiq_env)
    src, out = tmp_path / "jobs.ndjson", tmp_path / "out.ndjson"
    write_batch(src, n)
    state_path = str(out) + ".state"
    p = subprocess.Popen(submit_cmd(aiq_env, "--rate", "2500", "--results", str(out), str(src)),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, acked = time.time() + 30, 0
    while time.time() < deadline and acked < n // 2:
        time.sleep(0.1)
        try:
            acked = json.load(open(state_path))["acked_count"]
        except (OSError, ValueError):
            pass
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert n // 2 <= acked < n, acked

    r = run(submit_cmd(aiq_env, "--resume", "--results", str(out), str(src)))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming batch" in r.stderr
    assert_complete(read_results(out), n)

    keys = job_keys(aiq_env)
    dup = [k for k, c in Counter(keys).items() if c > 1]
    assert not dup, f"{len(dup)} job ids submitted twice, e.g. {dup[:5]}"
    assert len(keys) == n


def test_batch_invalid_lines_reported_and_strict_sends_nothing(aiq_env, tmp_path):
    start_pool(aiq_env, workers=1)
    src = tmp_path / "jobs.ndjson"
    bad = {5: "not json", 17: '{"payload": {}}',
           40: '{"operation": "vc-analysis", "priority": "urgent", "payload": {}}'}
    write_batch(src, 50, bad)

    strict_out = tmp_path / "strict.ndjson"
    r = run(submit_cmd(aiq_env, "--strict", "--results", str(strict_out), str(src)))
    assert r.returncode != 0
    for line in bad:
        assert f"jobs.ndjson:{line}:" in r.stderr, r.stderr
    assert "nothing was sent" in r.stderr
    assert job_keys(aiq_env) == []

    out = tmp_path / "out.ndjson"
    r = run(submit_cmd(aiq_env, "--results", str(out), str(src)))
    assert r.returncode == 1, r.stderr  # some input was invalid
    for line in bad:
        assert f"jobs.ndjson:{line}:" in r.stderr, r.stderr
    results = read_results(out)
    assert sorted(x["line"] for x in results) == [i for i in range(1, 51) if i not in bad]
    assert all(x["result"]["status"] == "succeeded" for x in results)
    assert len(job_keys(aiq_env)) == 47


def test_batch_leaves_room_for_interactive_critical(aiq_env, tmp_path):
    start_pool(aiq_env, latency_ms=50, inflight=20)
    src, out = tmp_path / "big.ndjson", tmp_path / "out.ndjson"
    write_batch(src, 100000)
    batch = subprocess.Popen(submit_cmd(aiq_env, "-p", "low", "--results", str(out), str(src)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, acked = time.time() + 60, 0
        while time.time() < deadline and acked < 50000:
            time.sleep(0.2)
            try:
                acked = json.load(open(str(out) + ".state"))["acked_count"]
            except (OSError, ValueError):
                pass
        assert acked >= 50000
        times = []
        for i in range(3):
            t = time.time()
            r = run([binary("aiq-submit"), "-b", BROKERS, "--prefix", aiq_env.prefix, "--wait",
                     "--wait-timeout-ms", "20000", "-p", "critical", "-o", "vc-analysis",
                     "--id", f"interactive-{i}", "--payload", "{}"])
            times.append(time.time() - t)
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout.strip().splitlines()[-1])["status"] == "succeeded"
        print(f"interactive critical latency with a 100k low batch running: "
              f"{', '.join(f'{x * 1000:.0f} ms' for x in times)}")
        assert batch.poll() is None, "the batch should still be running"
        assert max(times) < 2.0, times
    finally:
        batch.send_signal(signal.SIGTERM)
        try:
            assert batch.wait(30) == 130
        finally:
            if batch.poll() is None:
                batch.kill()
    assert os.path.exists(str(out) + ".state")


def test_batch_library_example_rate_limited_one_answer_each(aiq_env):
    """examples/batch.c: the library's rate limit and de-duplicating collector."""
    start_pool(aiq_env, workers=1, inflight=20)
    n, rate = 300, 600.0
    jobs = "".join(json.dumps({"id": f"lib-{aiq_env.tag}-{i}", "operation": "x",
                               "priority": PRIORITIES[i % 4], "payload": {"i": i}}) + "\n"
                   for i in range(n)) + "not a job\n"
    t0 = time.time()
    r = run([binary("example-batch"), BROKERS, aiq_env.prefix, str(rate)], input=jobs)
    took = time.time() - t0
    assert r.returncode == 1, r.stderr  # one invalid line
    assert f"line {n + 1}:" in r.stderr
    results = [json.loads(x) for x in r.stdout.splitlines()]
    assert sorted(x["job_id"] for x in results) == sorted(f"lib-{aiq_env.tag}-{i}"
                                                          for i in range(n))
    assert all(x["status"] == "succeeded" for x in results)
    # The library stamps created_at at submission: their spread is the submission time,
    # which the rate limit stretches to (n - 1) / rate minus the 0.1 s burst.
    from datetime import datetime
    stamps = []
    for prio in PRIORITIES:
        for m in aiq_env.read_all(aiq_env.job_topic(prio), n // 4, timeout=20):
            ts = json.loads(m.value())["created_at"].replace("Z", "+00:00")
            stamps.append(datetime.fromisoformat(ts).timestamp())
    assert len(stamps) == n
    spread = max(stamps) - min(stamps)
    assert spread >= (n - 1) / rate - 0.1 - 0.02, spread
    assert spread <= took


def test_batch_max_lag_bounds_unanswered_jobs(aiq_env, tmp_path):
    """--max-lag: the batch never has more than N submitted-but-unanswered jobs (plus the
    jobs acknowledged in one poll), measured from record timestamps and result times."""
    from datetime import datetime
    start_pool(aiq_env, latency_ms=20, workers=1, inflight=10)
    n, max_lag = 400, 30
    src, out = tmp_path / "jobs.ndjson", tmp_path / "out.ndjson"
    write_batch(src, n)
    r = run(submit_cmd(aiq_env, "-p", "low", "--max-lag", str(max_lag), "--results", str(out),
                       str(src)))
    assert r.returncode == 0, r.stderr
    assert_complete(read_results(out), n)
    events = [(m.timestamp()[1] / 1000.0, +1)
              for m in aiq_env.read_all(aiq_env.job_topic("low"), n, timeout=20)]
    for m in aiq_env.read_all(aiq_env.results_topic, n, timeout=20):
        done = json.loads(m.value())["completed_at"].replace("Z", "+00:00")
        events.append((datetime.fromisoformat(done).timestamp(), -1))
    assert len(events) == 2 * n
    lag = worst = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        lag += step
        worst = max(worst, lag)
    print(f"max-lag {max_lag}: worst unanswered {worst}")
    assert worst <= max_lag + 15, worst  # without --max-lag it reaches ~n
