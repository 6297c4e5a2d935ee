"""Consumer-core behaviour on the real broker: priority under overload, deadlines, SIGTERM
drain, SIGKILL redelivery and the second-signal exit. Every test drives real aiq-worker and
bedrock-sim processes; counts are exact where the design makes them exact, and bounded
(with the bound derived next to the assertion) where timing makes them vary."""
import json
import re
import signal
import time

from aiqtest import (PRIORITIES, RESULT, Results, all_committed, commit_interval_s, committed_map,
                     log_text, produce_raw, produce_raw_ts, read_to_end, rfc3339, sim_config,
                     submit, wait_until)


# ---- 1. priority under overload ------------------------------------------------------

N_LOW, N_CRIT = 3000, 20
SLOTS, LATENCY_MS, BACKLOG = 10, 50, 500  # BACKLOG: the default, spelled out


def test_consumer_priority_under_overload(aiq_env):
    sim = aiq_env.start_sim(latency_ms=LATENCY_MS)
    w = aiq_env.start_worker(AIQ_WORKER_MAX_INFLIGHT=SLOTS, AIQ_WORKER_BACKLOG=BACKLOG)
    aiq_env.wait_group_stable(1)
    results = Results(aiq_env)
    try:
        tag = aiq_env.tag
        submit(aiq_env, [{"id": f"low-{tag}-{i}", "operation": "content-generation",
                          "priority": "low", "payload": {"i": i}} for i in range(N_LOW)])
        is_low = lambda v: v["priority"] == "low"
        is_crit = lambda v: v["priority"] == "critical"
        # Saturated: low results flowing and every slot busy at the model.
        wait_until(lambda: results.count(is_low) >= 100 and sim.stats()["inflight"] == SLOTS,
                   30, "the worker to be saturated with low jobs")
        # Low throughput over the last second, to size the remaining low work.
        t_rate = time.time()
        n_rate0 = results.count(is_low)
        time.sleep(1.0)  # a measurement window, not a synchronisation
        low_rate = (results.count(is_low) - n_rate0) / (time.time() - t_rate)

        t0 = time.time()
        submit(aiq_env, [{"id": f"crit-{tag}-{i}", "operation": "content-generation",
                          "priority": "critical", "payload": {"i": i}} for i in range(N_CRIT)])
        t1 = time.time()  # every critical record is in the broker from here on
        low_done_at_submit = results.count(is_low)
        wait_until(lambda: results.count(is_crit) >= N_CRIT, 30, "the critical results")
        snap = results.snapshot()
    finally:
        results.close()

    crit = [(arr, m, v) for arr, m, v in snap if is_crit(v)]
    assert len(crit) == N_CRIT and len({v["job_id"] for _, _, v in crit}) == N_CRIT
    for _, _, v in crit:
        RESULT.validate(v)
        assert v["status"] == "succeeded", v
    latencies = sorted(arr - t0 for arr, _, _ in crit)
    p100 = latencies[-1]
    last_crit_ts = max(m.timestamp()[1] for _, m, _ in crit)  # worker's produce time, ms

    # Low results the worker produced after every critical was in the broker (t1) and
    # before it produced the last critical result. Bound: the criticals reach the
    # scheduler d after t1 (broker -> worker fetch; the worker long-polls, so d is well
    # under 0.4 s); until then low keeps finishing at its rate, 10 slots / 50 ms = 200/s,
    # so <= 200/s * 0.4 s = 80. After the criticals are queued every freed slot goes to a
    # critical, so only the <= 10 lows already in flight finish, plus at most 9 lows that
    # take the slots freed after the last critical started and finish at about the same
    # time as it. 80 + 10 + 9 < 100.
    low_between = sum(1 for _, m, v in snap if is_low(v)
                      and t1 * 1000 < m.timestamp()[1] <= last_crit_ts)
    # The same count measured from before aiq-submit started (includes its start-up).
    low_between_t0 = sum(1 for _, m, v in snap if is_low(v)
                         and t0 * 1000 < m.timestamp()[1] <= last_crit_ts)
    remaining_low_s = (N_LOW - low_done_at_submit) / low_rate
    print(f"\npriority: low rate {low_rate:.0f}/s; critical latency p50 "
          f"{latencies[len(latencies) // 2] * 1000:.0f} ms p100 {p100 * 1000:.0f} ms (submit "
          f"took {(t1 - t0) * 1000:.0f} ms); lows finished in between: {low_between} after "
          f"the submit returned, {low_between_t0} after it started; remaining low work "
          f"{remaining_low_s:.1f} s")
    assert low_between < 100, low_between
    # The remaining low backlog needs ~(3000 - done) / 200/s ~ 10+ s; the criticals need a
    # few 50 ms rounds plus delivery. "Far below": under a tenth of it, and under 2 s.
    assert p100 < min(2.0, remaining_low_s / 10), (p100, remaining_low_s)
    # Critical results reflect a short wait for a slot, not the low backlog's.
    assert max(v["timings"]["queued_ms"] for _, _, v in crit) < 1000

    # Bounded memory: on SIGTERM the worker reports how many queued (not started) jobs it
    # held; with low still flowing that backlog is full, and never above worker.backlog.
    assert w.stop() == 0, w.output()[-3000:]
    m = re.search(r"draining (\d+) in-flight job\(s\) .*; (\d+) queued job\(s\)", log_text(w))
    assert m, log_text(w)[-2000:]
    inflight_at_stop, queued_at_stop = int(m.group(1)), int(m.group(2))
    progress = [int(x) for x in re.findall(r"progress: .* backlog=(\d+)", log_text(w))]
    print(f"priority: at SIGTERM {inflight_at_stop} in flight, {queued_at_stop} queued "
          f"(backlog {BACKLOG}, low share {BACKLOG // 4}); progress backlog samples {progress}")
    assert 0 < queued_at_stop <= BACKLOG
    assert inflight_at_stop <= SLOTS
    assert all(b <= BACKLOG for b in progress), progress
    assert sim.stats()["max_inflight"] <= SLOTS


# ---- 2. deadline ---------------------------------------------------------------------

N_EXPIRED, N_FRESH, N_EXPIRED_TS = 40, 15, 5


def test_consumer_deadline_expired_without_model_call(aiq_env):
    sim = aiq_env.start_sim(latency_ms=5)  # a fresh sim: its request count is this test's
    aiq_env.start_worker(AIQ_WORKER_MAX_INFLIGHT=10)
    aiq_env.wait_group_stable(1)
    tag, old = aiq_env.tag, rfc3339(time.time() - 60)
    expired = [{"id": f"exp-{tag}-{i}", "operation": "vc-analysis",
                "priority": PRIORITIES[i % 4], "created_at": old, "timeout_ms": 1000,
                "payload": {"i": i}} for i in range(N_EXPIRED)]
    fresh = [{"id": f"fresh-{tag}-{i}", "operation": "vc-analysis",
              "priority": PRIORITIES[i % 4], "payload": {"i": i}} for i in range(N_FRESH)]
    mixed = [j for pair in zip(expired, fresh) for j in pair] + expired[N_FRESH:]
    submit(aiq_env, mixed)
    # Without created_at the deadline counts from the record timestamp: 60 s old records.
    ts_expired = [{"id": f"expts-{tag}-{i}", "operation": "vc-analysis", "priority": "normal",
                   "timeout_ms": 1000, "payload": {"i": i}} for i in range(N_EXPIRED_TS)]
    produce_raw_ts(aiq_env.job_topic("normal"), ts_expired, int((time.time() - 60) * 1000))

    n = N_EXPIRED + N_FRESH + N_EXPIRED_TS
    records = aiq_env.read_all(aiq_env.results_topic, n, timeout=60)
    results = {}
    for m in records:
        v = json.loads(m.value())
        assert v["job_id"] not in results, f"answered twice: {v['job_id']}"
        results[v["job_id"]] = v
    assert len(results) == n, f"got {len(results)} of {n} results"
    for j in expired + ts_expired:
        r = results[j["id"]]
        RESULT.validate(r)
        assert r["status"] == "expired", r
        assert r["error"]["kind"] == "deadline_exceeded", r
        assert r["attempts"] == 0, r
        assert r["output"] is None and r["timings"]["provider_ms"] == 0, r
    for j in fresh:
        r = results[j["id"]]
        RESULT.validate(r)
        assert r["status"] == "succeeded" and r["attempts"] == 1, r
    stats = sim.stats()
    assert stats["requests"] == N_FRESH, stats  # not one model call for an expired job
    assert aiq_env.workers[0].stop() == 0
    assert len(read_to_end(aiq_env, aiq_env.results_topic)) == n  # and no late duplicate


# ---- 3. graceful drain ---------------------------------------------------------------

DRAIN_SLOTS, DRAIN_JOBS, DRAIN_LATENCY_MS, DRAIN_TIMEOUT_MS = 5, 30, 2000, 10000


def test_consumer_graceful_drain_commits_exactly_the_answered(aiq_env):
    sim = aiq_env.start_sim(latency_ms=DRAIN_LATENCY_MS)
    w1 = aiq_env.start_worker(AIQ_WORKER_MAX_INFLIGHT=DRAIN_SLOTS,
                              AIQ_WORKER_DRAIN_TIMEOUT_MS=DRAIN_TIMEOUT_MS)
    aiq_env.wait_group_stable(1)
    topic = aiq_env.job_topic("normal")
    jobs = [{"id": f"drain-{aiq_env.tag}-{i}", "operation": "vc-analysis", "priority": "normal",
             "created_at": rfc3339(time.time()), "payload": {"i": i}} for i in range(DRAIN_JOBS)]
    where_by_value = produce_raw(topic, [(j["id"].encode(), json.dumps(j).encode())
                                         for j in jobs])
    where = {json.loads(v)["id"]: pos for v, pos in where_by_value.items()}  # id -> (part, off)
    assert len(where) == DRAIN_JOBS

    wait_until(lambda: sim.stats()["inflight"] == DRAIN_SLOTS, 30, "5 jobs in flight")
    t_sig = time.time()
    w1.proc.send_signal(signal.SIGTERM)
    rc = w1.proc.wait(DRAIN_TIMEOUT_MS / 1000 + 15)
    drain_s = time.time() - t_sig
    out = log_text(w1)
    print(f"\ndrain: exit {rc} after {drain_s:.2f} s (model latency "
          f"{DRAIN_LATENCY_MS} ms, drain timeout {DRAIN_TIMEOUT_MS} ms)")
    assert rc == 0, out[-3000:]
    # The in-flight jobs needed at most the model latency; no drain timeout was hit.
    assert drain_s < DRAIN_TIMEOUT_MS / 1000, drain_s
    assert "drain timeout" not in out and "drain complete" in out, out[-3000:]
    m = re.search(r"draining (\d+) in-flight job\(s\).*; (\d+) queued job\(s\)", out)
    assert m and int(m.group(1)) == DRAIN_SLOTS, out[-3000:]
    assert int(m.group(1)) + int(m.group(2)) <= DRAIN_JOBS

    first = [json.loads(m.value()) for m in read_to_end(aiq_env, aiq_env.results_topic)]
    assert len(first) == DRAIN_SLOTS, [r["job_id"] for r in first]
    assert all(r["status"] == "succeeded" for r in first), first
    answered = {r["job_id"] for r in first}
    assert len(answered) == DRAIN_SLOTS
    assert sim.stats()["requests"] == DRAIN_SLOTS  # the queued ones were never started

    # Committed offsets cover exactly the answered records, partition by partition.
    cm = committed_map(aiq_env)
    for jid, (part, off) in where.items():
        committed = cm[(topic, part)][0] or 0  # nothing committed yet: the start, 0
        if jid in answered:
            assert off < committed, (jid, part, off, committed)
        else:
            assert off >= committed, (jid, part, off, committed)
    assert sum(c or 0 for (t, _), (c, _) in cm.items() if t == topic) == DRAIN_SLOTS

    # A second worker answers the other 25, and nobody answers anything twice.
    sim_config(sim, latency_ms=20)
    w2 = aiq_env.start_worker(AIQ_WORKER_MAX_INFLIGHT=10)
    wait_until(lambda: all_committed(aiq_env), 60, "the second worker to commit everything",
               interval=0.5)
    assert w2.stop() == 0, w2.output()[-3000:]
    records = read_to_end(aiq_env, aiq_env.results_topic)
    ids = [m.key().decode() for m in records]
    assert len(ids) == DRAIN_JOBS, f"{len(ids) - DRAIN_JOBS} extra result(s)"
    assert set(ids) == set(where)
    assert all(json.loads(m.value())["status"] == "succeeded" for m in records)
    assert sim.stats()["requests"] == DRAIN_JOBS
    for (t, p), (c, end) in committed_map(aiq_env).items():
        assert end == 0 or c == end, (t, p, c, end)


# ---- 4. kill -9 ----------------------------------------------------------------------

KILL_JOBS, KILL_SLOTS, KILL_LATENCY_MS = 2000, 10, 20


def test_consumer_kill9_loses_nothing(aiq_env):
    sim = aiq_env.start_sim(latency_ms=KILL_LATENCY_MS)
    settings = dict(AIQ_WORKER_MAX_INFLIGHT=KILL_SLOTS, AIQ_KAFKA_SESSION_TIMEOUT_MS=6000)
    victim = aiq_env.start_worker(**settings)
    aiq_env.start_worker(**settings)
    aiq_env.wait_group_stable(2)
    victim_id = f"w0-{aiq_env.tag}"
    interval_s = commit_interval_s()
    jobs = [{"id": f"k9-{aiq_env.tag}-{i:05d}", "operation": "vc-analysis",
             "priority": PRIORITIES[i % 4], "payload": {"i": i}} for i in range(KILL_JOBS)]
    results = Results(aiq_env)
    try:
        submit(aiq_env, jobs)
        wait_until(lambda: len(results.ids()) >= KILL_JOBS // 3, 60, "a third of the results")
        victim.proc.send_signal(signal.SIGKILL)
        t_kill = time.time()
        victim.proc.wait(10)
        n_at_kill = len(results.ids())
        aiq_env.start_worker(**settings)  # the replacement
        want = {j["id"] for j in jobs}
        wait_until(lambda: results.ids() >= want, 90, "a result for every job", interval=0.2)
        t_all = time.time()
        # Redone work is committed once every partition's committed offset is its end;
        # only then is the duplicate count final.
        wait_until(lambda: all_committed(aiq_env), 60, "every partition committed",
                   interval=0.5)
    finally:
        results.close()
    # Results are acknowledged before their offsets are committed: the topic's end now
    # holds every result there will be.
    snap = [(None, m, json.loads(m.value())) for m in read_to_end(aiq_env, aiq_env.results_topic)]

    ids = [v["job_id"] for _, _, v in snap]
    assert set(ids) == want, f"lost: {sorted(want - set(ids))[:10]}"
    per_id = {}
    for _, m, v in snap:
        per_id.setdefault(v["job_id"], []).append((m.timestamp()[1], v["worker"]))
    dups = {i: rs for i, rs in per_id.items() if len(rs) > 1}
    n_dup = len(ids) - len(want)
    # Only the killed worker's work may be redone: the survivor keeps its partitions or
    # hands them over after committing (cooperative revoke), so a duplicated id always has
    # a result by the victim.
    not_victims = {i: rs for i, rs in dups.items() if all(wk != victim_id for _, wk in rs)}
    # Bound: the killed worker redoes only what it finished after its last commit plus
    # what it had in flight. Commits run every interval_s, so everything it finished more
    # than the interval + 0.5 s (commit round trip, offset store lag) before the kill was
    # committed: duplicates <= its results of that last window + its 10 slots.
    window_s = interval_s + 0.5
    victim_recent = sum(1 for _, m, v in snap if v["worker"] == victim_id
                        and m.timestamp()[1] > (t_kill - window_s) * 1000)
    # And its throughput cannot exceed 10 slots / 20 ms = 500/s, so whatever the machine
    # does: <= 500/s * window + 10 in flight = 760 with a 1 s auto-commit, 270 with a
    # 20 ms commit interval.
    rate_ceiling = KILL_SLOTS / (KILL_LATENCY_MS / 1000)
    static_bound = int(rate_ceiling * window_s) + KILL_SLOTS
    victim_total = sum(1 for _, _, v in snap if v["worker"] == victim_id)
    print(f"\nkill -9 (commit interval {interval_s * 1000:.0f} ms): {n_at_kill} ids answered "
          f"at the kill, all {len(want)} answered "
          f"{t_all - t_kill:.1f} s after it; {n_dup} duplicate result(s) ({len(dups)} ids); "
          f"victim answered {victim_total}, {victim_recent} in its last {window_s} s; static bound "
          f"{static_bound}; {len(not_victims)} duplicated id(s) never answered by the victim")
    assert not not_victims, (f"{len(not_victims)} job(s) answered by a surviving worker were "
                             f"redone: {sorted(not_victims.items())[:5]}")
    # (Answers waiting for their ack count like jobs in flight: at most 4 x the slots more.)
    assert n_dup <= min(victim_recent + 5 * KILL_SLOTS, static_bound + 4 * KILL_SLOTS), \
        (n_dup, victim_recent)
    # Every model call produced a result except those the killed worker had in flight or
    # had answered without the broker's ack yet (a slot frees when the answer goes out;
    # worker.max_unacked, default 4 x its slots, bounds those); a redone job whose answer
    # was cached before the kill costs no call.
    stats = sim.stats()
    called = sum(1 for _, _, v in snap if not v["cache"]["hit"])
    lost_calls = stats["requests"] - called
    assert 0 <= lost_calls <= KILL_SLOTS + 4 * KILL_SLOTS, (stats["requests"], called, len(ids))

    for w in aiq_env.workers[1:]:
        assert w.stop() == 0, w.output()[-3000:]
    rows = aiq_env.committed_vs_end()
    assert sum(end for _, _, _, end in rows) == KILL_JOBS
    for t, p, c, end in rows:
        assert end == 0 or c == end, (t, p, c, end)


# ---- 5. second signal ----------------------------------------------------------------


def test_consumer_second_signal_exits_at_once(aiq_env):
    sim = aiq_env.start_sim(latency_ms=10000)
    settings = dict(AIQ_KAFKA_SESSION_TIMEOUT_MS=6000)
    w1 = aiq_env.start_worker(**settings)
    aiq_env.wait_group_stable(1)
    jid = f"sig2-{aiq_env.tag}"
    submit(aiq_env, [{"id": jid, "operation": "vc-analysis", "priority": "high",
                      "payload": {"company": "Acme"}}])
    wait_until(lambda: sim.stats()["inflight"] == 1, 30, "the job in flight")
    w1.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the brief's spacing between the two signals
    assert w1.proc.poll() is None, "the first signal must drain, not exit"
    t_sig2 = time.time()
    w1.proc.send_signal(signal.SIGTERM)
    rc = w1.proc.wait(10)
    exit_s = time.time() - t_sig2
    print(f"\nsecond signal: exit {rc} after {exit_s * 1000:.0f} ms")
    assert exit_s < 3.0, exit_s
    assert rc == 128 + signal.SIGTERM, (rc, w1.output()[-2000:])
    assert "second signal" in log_text(w1)
    assert read_to_end(aiq_env, aiq_env.results_topic) == []

    sim_config(sim, latency_ms=20)
    aiq_env.start_worker(**settings)
    records = aiq_env.read_all(aiq_env.results_topic, 2, timeout=40,
                               stop=lambda out: len(out) >= 1)
    assert [m.key().decode() for m in records] == [jid]
    res = json.loads(records[0].value())
    assert res["status"] == "succeeded", res
    wait_until(lambda: all_committed(aiq_env), 30, "the job committed", interval=0.5)
    assert len(read_to_end(aiq_env, aiq_env.results_topic)) == 1
    assert sim.stats()["requests"] == 2  # the abandoned call and the redo
