"""Acceptance scenarios of the consumer core on the real broker: repeated SIGKILL with
static and dynamic membership, joins and a leave while work flows, SIGTERM drain against
a slow model, and critical jobs overtaking a 50,000-job low backlog. Each test drives real
aiq-worker and bedrock-sim processes, asserts measured counts (exact where the design
makes them exact, bounded by a number derived from measurements where timing makes them
vary) and prints its key numbers (run pytest with -s to see them)."""
import datetime
import json
import math
import re
import signal
import time

import pytest

from aiqtest import (PRIORITIES, Results, all_committed, commit_interval_s, log_lines, log_text,
                     read_to_end, sim_config, submit, wait_until)

# Jobs carry a deadline far beyond any run here: an expired job is answered without a
# model call, which would make a backlog drain faster than the model allows.
NO_DEADLINE_MS = 3_600_000


# ---- helpers ---------------------------------------------------------------------------


def make_jobs(tag, name, n, prio=lambda i: PRIORITIES[i % 4]):
    return [{"id": f"{name}-{tag}-{i:05d}", "operation": "content-generation",
             "priority": prio(i), "timeout_ms": NO_DEADLINE_MS, "payload": {"i": i}}
            for i in range(n)]


def worker_id(env, w):
    """The worker.id Env.start_worker gave w (it appears in every result w publishes)."""
    return f"w{env.workers.index(w)}-{env.tag}"


def epoch_ms(rfc3339):
    """'2025-01-02T03:04:05.678Z' -> epoch milliseconds."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z$", rfc3339)
    assert m, rfc3339
    base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc)
    frac = (m.group(2) or "0")[:3].ljust(3, "0")
    return int(base.timestamp()) * 1000 + int(frac)


def job_times(v):
    """(received, started, completed) of a result in the worker's wall-clock ms: received
    is when the record entered the worker's backlog, started when it took a slot."""
    done = epoch_ms(v["completed_at"])
    received = done - v["timings"]["total_ms"]
    return received, received + v["timings"]["queued_ms"], done


def hand_overs(w):
    """[(epoch ms, partition count)] of the worker's 'handed over N partition(s)' lines."""
    out = []
    for line in log_lines(w):
        m = re.match(r"handed over (\d+) partition", str(line.get("msg", "")))
        if m and int(m.group(1)) > 0:
            out.append((epoch_ms(line["ts"]), int(m.group(1))))
    return out


def committed_rows_ok(env):
    """Asserts committed == end for every job partition that has records; returns the
    total end offset (records in every job topic)."""
    rows = env.committed_vs_end()
    for t, p, c, end in rows:
        assert end == 0 or c == end, (t, p, c, end)
    return sum(end for _, _, _, end in rows)


# ---- 1. crash: repeated SIGKILL of one slot ------------------------------------------

CRASH_JOBS, CRASH_SLOTS, CRASH_KILLS = 20000, 10, 3
CRASH_LATENCY_MS, CRASH_JITTER_MS = 10, 10  # model latency 10-20 ms
KILL_SPACING_S = 1.5       # at least this long between a (re)start or kill and the next kill
VICTIM_BUSY_RESULTS = 100  # and the victim process has answered this many (it is at speed)
SESSION_TIMEOUT_MS = 6000  # the broker's minimum; a dead dynamic member is expelled after it


@pytest.mark.parametrize("membership", ["static", "dynamic"])
def test_scenario_crash(aiq_env, membership):
    env = aiq_env
    sim = env.start_sim(latency_ms=CRASH_LATENCY_MS,
                        extra=("--latency-jitter-ms", str(CRASH_JITTER_MS)))

    def start_slot(i):
        s = dict(AIQ_WORKER_MAX_INFLIGHT=CRASH_SLOTS,
                 AIQ_KAFKA_SESSION_TIMEOUT_MS=SESSION_TIMEOUT_MS)
        if membership == "static":
            # One instance id per slot, reused by the restarted process (a StatefulSet
            # pod name): it takes the killed process's partitions back without a rebalance.
            s["AIQ_KAFKA_GROUP_INSTANCE_ID"] = f"slot{i}"
        return env.start_worker(**s)

    slots = [start_slot(i) for i in range(3)]
    env.wait_group_stable(3)
    interval_s = commit_interval_s()
    jobs = make_jobs(env.tag, "crash", CRASH_JOBS)
    want = {j["id"] for j in jobs}
    res = Results(env)
    kills = []  # (victim worker id, kill time, distinct ids answered at the kill)
    try:
        t0 = time.time()
        submit(env, jobs)
        last_event = t0
        for _ in range(CRASH_KILLS):
            victim = slots[0]
            vid = worker_id(env, victim)
            # Kill while the victim is working: it has answered VICTIM_BUSY_RESULTS (so it
            # owns partitions and runs at speed), ~1-2 s after the previous event. With
            # dynamic membership a restarted process first waits for the dead member's
            # session (6 s) to expire, so its kills are further apart.
            wait_until(lambda: res.of_worker(vid) >= VICTIM_BUSY_RESULTS
                       and time.time() - last_event >= KILL_SPACING_S,
                       60, f"{vid} to be working")
            victim.proc.send_signal(signal.SIGKILL)
            t_kill = time.time()
            victim.proc.wait(10)
            n = res.answered()
            kills.append((vid, t_kill, n))
            assert n < CRASH_JOBS, "every job was answered before the kill: no work flowed"
            slots[0] = start_slot(0)
            last_event = time.time()
        wait_until(lambda: res.answered() >= CRASH_JOBS, 180, "a result for every job",
                   interval=0.2)
        t_all = time.time()
        # Redone work is committed once every partition's committed offset is its end.
        wait_until(lambda: all_committed(env), 60, "every partition committed", interval=0.5)
    finally:
        res.close()

    # Drain the remaining workers cleanly: only then is the results topic final.
    for w in slots:
        assert w.stop() == 0, w.output()[-3000:]
    assert committed_rows_ok(env) == CRASH_JOBS

    records = read_to_end(env, env.results_topic, timeout=60)
    per_id = {}
    for m in records:
        v = json.loads(m.value())
        per_id.setdefault(v["job_id"], []).append((m.timestamp()[1], v["worker"]))
    assert set(per_id) == want, f"lost: {sorted(want - set(per_id))[:10]}"
    n_dup = len(records) - len(want)
    victims = {vid for vid, _, _ in kills}
    dup_ids = {i: sorted(rs) for i, rs in per_id.items() if len(rs) > 1}
    # Only a killed process's work can be redone: the others hand partitions over after
    # committing, and a dead process's uncommitted tail is what the new owner redoes. So
    # the first result of every duplicated id is by a killed process.
    not_victim = {i: rs for i, rs in dup_ids.items() if rs[0][1] not in victims}

    # Per-worker throughput: each process's results over its active span (first to last
    # result it produced); the fastest process over >= 1 s sets the bound.
    spans = {}
    for rs in per_id.values():
        for ts, w in rs:
            lo, hi, n = spans.get(w, (ts, ts, 0))
            spans[w] = (min(lo, ts), max(hi, ts), n + 1)
    rates = {w: n / ((hi - lo) / 1000) for w, (lo, hi, n) in spans.items() if hi - lo >= 1000}
    per_worker_rate = max(rates.values())
    # The victim's own rate in the second before each kill, for the record.
    before_kill = [sum(1 for rs in per_id.values() for ts, w in rs
                       if w == vid and (t_kill - 1) * 1000 < ts <= t_kill * 1000)
                   for vid, t_kill, _ in kills]
    # A SIGKILL redoes what the process had running (<= max_inflight) plus what it
    # finished since its last commit (one commit interval of its throughput).
    # Redone per kill: the jobs in flight, the answers not yet acknowledged (at most
    # worker.max_unacked = 4 x the slots) and one commit interval of finished ones.
    per_kill = 5 * CRASH_SLOTS + math.ceil(per_worker_rate * interval_s)
    bound = len(kills) * per_kill
    stats = sim.stats()
    # Per kill: how many of the killed process's results were redone (every result of an
    # id but its last one), and how long before the kill the newest and oldest of them
    # was published (ms): a commit every interval_s keeps these within about one interval.
    kill_at = {vid: t for vid, t, _ in kills}
    redone = {vid: [] for vid in kill_at}
    redone_other = []
    for rs in dup_ids.values():
        for ts, w in rs[:-1]:
            if w in kill_at:
                redone[w].append(round(kill_at[w] * 1000 - ts))
            else:
                redone_other.append((w, ts))
    redone_txt = {w: (len(a), min(a), max(a)) if a else (0,) for w, a in redone.items()}
    multi = sorted((i, [(w, round(ts - t0 * 1000)) for ts, w in rs])
                   for i, rs in dup_ids.items() if len(rs) > 2)
    print(f"\ncrash[{membership}]: {len(kills)} SIGKILLs at "
          f"{[round(t - t0, 1) for _, t, _ in kills]} s after submit, with "
          f"{[n for _, _, n in kills]} of {CRASH_JOBS} answered; all answered "
          f"{t_all - t0:.1f} s after submit; {n_dup} duplicate result(s) ({len(dup_ids)} ids); "
          f"per-worker throughput {per_worker_rate:.0f}/s (by process: "
          f"{ {w: round(r) for w, r in sorted(rates.items())} }), victim results in the "
          f"second before each kill {before_kill}; commit interval {interval_s * 1000:.0f} ms; "
          f"bound {len(kills)} x ({CRASH_SLOTS} + {per_kill - CRASH_SLOTS}) = {bound}; "
          f"model calls {stats['requests']}; redone per killed process (count, newest and "
          f"oldest result before the kill in ms): {redone_txt}; ids answered 3+ times "
          f"(worker, ms after submit): {len(multi)} {multi[:5]}")
    assert len(kills) >= 3
    assert not not_victim, (f"{len(not_victim)} job(s) first answered by a process that was "
                            f"not killed were redone: {sorted(not_victim.items())[:5]}")
    assert not redone_other, redone_other[:5]
    assert n_dup <= bound, (n_dup, bound)
    # Every model call produced a result, except the calls the killed processes had open
    # and the answers they had sent without the broker's ack yet (a slot frees when its
    # answer goes out; worker.max_unacked, default 4 x the slots, bounds those); a redone
    # job whose answer was cached before the kill costs no call.
    called = sum(1 for m in records if not json.loads(m.value())["cache"]["hit"])
    assert 0 <= stats["requests"] - called <= len(kills) * 5 * CRASH_SLOTS, (
        stats["requests"], called, len(records))


# ---- 2. rebalance: two joins and a leave under load ----------------------------------

REB_JOBS, REB_SLOTS, REB_LATENCY_MS = 20000, 10, 25
# 3 workers x 10 slots / 25 ms = 1,200 jobs/s at most: 20,000 jobs take >= 16.7 s even
# with all three, longer with one or two, so every join and the leave land mid-flow.
REB_MIN_LEFT = 2000  # unanswered jobs required when the SIGTERM is sent


def test_scenario_rebalance(aiq_env):
    env = aiq_env
    sim = env.start_sim(latency_ms=REB_LATENCY_MS)
    settings = dict(AIQ_WORKER_MAX_INFLIGHT=REB_SLOTS)
    w1 = env.start_worker(**settings)
    env.wait_group_stable(1)
    jobs = make_jobs(env.tag, "reb", REB_JOBS)
    want = {j["id"] for j in jobs}
    res = Results(env)
    events = []  # (what, time, ids answered then)
    try:
        t0 = time.time()
        submit(env, jobs)
        wait_until(lambda: res.answered() >= 500, 60, "w1 to be working")
        w2 = env.start_worker(**settings)
        events.append(("join w2", time.time(), res.answered()))
        env.wait_group_stable(2)
        wait_until(lambda: res.of_worker(worker_id(env, w2)) >= 200, 60, "w2 to be working")
        w3 = env.start_worker(**settings)
        events.append(("join w3", time.time(), res.answered()))
        env.wait_group_stable(3)
        wait_until(lambda: res.of_worker(worker_id(env, w3)) >= 200, 60, "w3 to be working")
        # Best effort: stop w1 in a moment it is publishing results, so that it has jobs
        # running. (Not guaranteed: a worker whose every partition is paused idles until
        # librdkafka's next fetch, up to ~1 s; the report of this test prints how many
        # jobs w1 drained.)
        w1_id, seen = worker_id(env, w1), [res.of_worker(worker_id(env, w1))]

        def w1_busy():
            n = res.of_worker(w1_id)
            busy = n > seen[0]
            seen[0] = n
            return busy

        try:
            wait_until(w1_busy, 5, "w1 to publish", interval=0.03)
        except AssertionError:
            pass  # it is stopped anyway; the drain is still clean
        t_stop = time.time()
        n_stop = res.answered()
        events.append(("SIGTERM w1", t_stop, n_stop))
        t_joins_done = t_stop
        w1.proc.send_signal(signal.SIGTERM)
        rc1 = w1.proc.wait(60)
        drain1_s = time.time() - t_stop
        wait_until(lambda: res.answered() >= REB_JOBS, 120, "a result for every job",
                   interval=0.2)
        t_all = time.time()
        wait_until(lambda: all_committed(env), 60, "every partition committed", interval=0.5)
    finally:
        res.close()
    rc2, rc3 = w2.stop(), w3.stop()
    w1.stop()  # closes its log file; it has exited already

    records = read_to_end(env, env.results_topic, timeout=60)
    ids = [m.key().decode() for m in records]
    by_worker = {}
    for m in records:
        wk = json.loads(m.value())["worker"]
        by_worker[wk] = by_worker.get(wk, 0) + 1
    handed = {worker_id(env, w): hand_overs(w) for w in (w1, w2, w3)}
    during_joins = sum(1 for hs in handed.values() for ts, _ in hs if ts <= t_joins_done * 1000)
    total_handed = sum(len(hs) for hs in handed.values())
    m = re.search(r"draining (\d+) in-flight job\(s\)", log_text(w1))
    w1_inflight = int(m.group(1)) if m else None
    waits = [int(x) for w in (w1, w2, w3)
             for x in re.findall(r"waiting for (\d+) running job", log_text(w))]
    stats = sim.stats()
    print(f"\nrebalance: events {[(e, round(t - t0, 1), n) for e, t, n in events]} "
          f"(s after submit, ids answered); w1 drained {w1_inflight} in-flight job(s) in "
          f"{drain1_s:.2f} s; all {REB_JOBS} answered {t_all - t0:.1f} s after submit; "
          f"hand-overs {sum(1 for hs in handed.values() for _ in hs)} "
          f"({during_joins} during the joins): "
          f"{ {w: [n for _, n in hs] for w, hs in handed.items()} }; revokes waited for "
          f"running jobs {waits}; results by worker {by_worker}; {len(ids) - len(want)} "
          f"duplicate(s); model calls {stats['requests']}")

    assert rc1 == 0, w1.output()[-3000:]
    assert w1_inflight is not None, log_text(w1)[-3000:]
    assert rc2 == 0 and rc3 == 0, (rc2, rc3)
    # Work flowed through every event: each happened with jobs left, and the leave with
    # at least REB_MIN_LEFT of them still to do.
    assert all(n < REB_JOBS for _, _, n in events), events
    assert n_stop <= REB_JOBS - REB_MIN_LEFT, (n_stop, REB_JOBS)
    assert t_all - t0 >= 10, t_all - t0
    assert all(by_worker.get(worker_id(env, w), 0) > 0 for w in (w1, w2, w3)), by_worker
    # Both joins moved partitions: at least two hand-overs before the leave (the leave
    # itself hands over once more, at close).
    assert during_joins >= 2, handed
    assert total_handed >= 3, handed
    # Clean rebalances and a clean drain: every job answered exactly once.
    assert set(ids) == want, f"lost: {sorted(want - set(ids))[:10]}"
    assert len(ids) == REB_JOBS, f"{len(ids) - REB_JOBS} duplicate result(s)"
    assert stats["requests"] == REB_JOBS
    assert committed_rows_ok(env) == REB_JOBS


# ---- 3. drain: SIGTERM with 10 jobs in flight against a slow model -------------------

DRAIN_JOBS, DRAIN_SLOTS, DRAIN_LATENCY_MS = 40, 10, 3000


def test_scenario_drain(aiq_env):
    env = aiq_env
    sim = env.start_sim(latency_ms=DRAIN_LATENCY_MS)
    w1 = env.start_worker(AIQ_WORKER_MAX_INFLIGHT=DRAIN_SLOTS)
    env.wait_group_stable(1)
    jobs = make_jobs(env.tag, "drain", DRAIN_JOBS)
    want = {j["id"] for j in jobs}
    submit(env, jobs)
    # Exactly ten calls open at the model and the other 30 queued or not yet fetched.
    wait_until(lambda: sim.stats()["inflight"] == DRAIN_SLOTS, 30, "10 jobs in flight")
    at_signal = sim.stats()
    t_sig = time.time()
    w1.proc.send_signal(signal.SIGTERM)
    rc = w1.proc.wait(DRAIN_LATENCY_MS / 1000 + 30)
    drain_s = time.time() - t_sig
    # Right after the exit: the results topic already holds the ten.
    first = [json.loads(m.value()) for m in read_to_end(env, env.results_topic)]
    out = log_text(w1)
    m = re.search(r"draining (\d+) in-flight job\(s\).*; (\d+) queued job\(s\)", out)
    print(f"\ndrain: SIGTERM with {at_signal['inflight']} calls open "
          f"({at_signal['requests']} made); exit {rc} after {drain_s:.2f} s (model latency "
          f"{DRAIN_LATENCY_MS} ms); log: {m.group(0) if m else None}; {len(first)} result(s) "
          f"published at exit")
    assert at_signal["inflight"] == DRAIN_SLOTS and at_signal["requests"] == DRAIN_SLOTS
    assert rc == 0, out[-3000:]
    assert m and int(m.group(1)) == DRAIN_SLOTS, out[-3000:]
    assert "drain complete" in out and "drain timeout" not in out, out[-3000:]
    # The ten were started before the signal, so the drain needs at most one model call.
    assert drain_s < DRAIN_LATENCY_MS / 1000 + 2, drain_s
    assert len(first) == DRAIN_SLOTS, [r["job_id"] for r in first]
    assert len({r["job_id"] for r in first}) == DRAIN_SLOTS
    assert all(r["status"] == "succeeded" for r in first), first
    assert sim.stats()["requests"] == DRAIN_SLOTS  # nothing queued was started

    # A restarted worker answers the other 30; nothing is answered twice.
    sim_config(sim, latency_ms=20)
    w2 = env.start_worker(AIQ_WORKER_MAX_INFLIGHT=DRAIN_SLOTS)
    wait_until(lambda: all_committed(env), 60, "the restarted worker to commit everything",
               interval=0.5)
    assert w2.stop() == 0, w2.output()[-3000:]
    records = read_to_end(env, env.results_topic)
    ids = [m.key().decode() for m in records]
    print(f"drain: after the restart {len(ids)} result(s) for {len(set(ids))} job(s); "
          f"model calls {sim.stats()['requests']}")
    assert set(ids) == want
    assert len(ids) == DRAIN_JOBS, f"{len(ids) - DRAIN_JOBS} duplicate result(s)"
    assert sim.stats()["requests"] == DRAIN_JOBS
    assert committed_rows_ok(env) == DRAIN_JOBS


# ---- 4. priority: 500 critical jobs against 50,000 waiting low jobs -------------------

PRIO_LOW, PRIO_CRIT, PRIO_SLOTS, PRIO_LATENCY_MS = 50000, 500, 10, 50
# The aging rule gives a waiting low queue a slot about every 4 x aging_ms. The default
# (5 s) would show it only in a burst longer than 20 s; 200 ms makes it observable within
# the ~2.5 s the 500 criticals take (10 slots / 50 ms = 200 jobs/s): a low job every ~0.8 s.
PRIO_AGING_MS = 200
PRIO_MIN_LOW_LEFT = 40000


def test_scenario_priority(aiq_env):
    env = aiq_env
    sim = env.start_sim(latency_ms=PRIO_LATENCY_MS)
    w = env.start_worker(AIQ_WORKER_MAX_INFLIGHT=PRIO_SLOTS, AIQ_WORKER_AGING_MS=PRIO_AGING_MS)
    env.wait_group_stable(1)
    res = Results(env)
    try:
        submit(env, make_jobs(env.tag, "low", PRIO_LOW, prio=lambda i: "low"))
        wait_until(lambda: res.of_prio("low") >= 100 and sim.stats()["inflight"] == PRIO_SLOTS,
                   30, "the worker to be saturated with low jobs")
        low_before = res.of_prio("low")
        t0 = time.time()
        submit(env, make_jobs(env.tag, "crit", PRIO_CRIT, prio=lambda i: "critical"))
        wait_until(lambda: res.of_prio("critical") >= PRIO_CRIT, 60, "every critical result")
        t_crit = time.time()
        low_at_crit = res.of_prio("low")
        snap = res.snapshot()
    finally:
        res.close()
    assert w.stop() == 0, w.output()[-3000:]  # not the other ~48,000 low jobs

    crit = [v for _, _, v in snap if v["priority"] == "critical"]
    low = [v for _, _, v in snap if v["priority"] == "low"]
    assert len(crit) == PRIO_CRIT and len({v["job_id"] for v in crit}) == PRIO_CRIT
    assert all(v["status"] == "succeeded" for v in crit + low)
    ct = [job_times(v) for v in crit]
    lt = [job_times(v) for v in low]
    crit_last_done = max(d for _, _, d in ct)
    crit_first_recv = min(r for r, _, _ in ct)
    # Low jobs started while a critical job sat in the worker's queue (received, not yet
    # started): only aging gives a low job a slot then. They must also have finished
    # before the last critical did, i.e. while criticals were still pending.
    aged = sorted(s for _, s, d in lt
                  if d <= crit_last_done and any(r < s < cs for r, cs, _ in ct))
    low_in_burst = sum(1 for _, _, d in lt if crit_first_recv < d <= crit_last_done)
    # For the record: stretches of the burst in which the worker's critical queue was
    # empty (every critical received so far had started) although criticals were still
    # waiting in Kafka; free slots go to low then, without any aging.
    crit_last_start = max(s for _, s, _ in ct)
    empty, queued_now, prev = [], 0, crit_first_recv
    for t, delta in sorted([(r, 1) for r, _, _ in ct] + [(s, -1) for _, s, _ in ct]):
        if queued_now == 0 and t > prev and prev < crit_last_start:
            empty.append((prev - crit_first_recv, t - prev))
        queued_now += delta
        prev = t
    empty = [(at, ms) for at, ms in empty if ms >= 5]
    not_aged = sorted(s - crit_first_recv for _, s, _ in lt
                      if crit_first_recv <= s <= crit_last_start and s not in aged)
    gaps = [b - a for a, b in zip(aged, aged[1:])]
    queued = sorted(v["timings"]["queued_ms"] for v in crit)
    print(f"\npriority: {low_before} low answered when the criticals were submitted; all "
          f"{PRIO_CRIT} critical answered {t_crit - t0:.2f} s later with {low_at_crit} low "
          f"answered ({PRIO_LOW - low_at_crit} low unanswered); critical queued_ms p50 "
          f"{queued[len(queued) // 2]} p100 {queued[-1]}; burst in the worker "
          f"{(crit_last_done - crit_first_recv) / 1000:.2f} s; {low_in_burst} low job(s) "
          f"finished during it, {len(aged)} of them started by aging (while criticals were "
          f"queued) at +{[a - crit_first_recv for a in aged]} ms, gaps {gaps} ms "
          f"(4 x aging_ms = {4 * PRIO_AGING_MS} ms); critical queue empty mid-burst "
          f"(starting ms, for ms): {empty}; other low starts in the burst at +{not_aged} ms")
    # Every critical job started (and finished) while the low backlog was far from drained.
    assert PRIO_LOW - low_at_crit >= PRIO_MIN_LOW_LEFT, low_at_crit
    # Anti-starvation: low still got slots while criticals were waiting.
    assert len(aged) >= 1, "no low job was started while critical jobs were queued"
