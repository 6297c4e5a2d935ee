#!/usr/bin/env python3
"""Classic against consumer (KIP-848) group protocol, side by side, on real workers.

For each protocol (kafka.group_protocol) it measures:
  kill-recovery  2 workers under a steady flow; one is SIGKILLed (dynamic membership) and not
                 replaced. Recovery = the longest wait of a job submitted in the second after
                 the kill (those on the dead worker's partitions wait until the survivor
                 owns them); the baseline is the same figure before the kill.
  scale-up       2 workers under a steady flow, a third joins. Time from its start until
                 its first result, and the longest gap between results of each of the two
                 old workers in the 30 s after the join (their pause), against the longest
                 gap before it.
  storm          3 workers, a SIGKILL every 60/KILLS s (the victim replaced 0.5 s later,
                 dynamic membership), N jobs submitted evenly over those 60 s:
                 duplicate results per kill, and whether any job was lost.

The broker is tests/system's own one (tools/kafka/kafka.sh on AIQ_SYSTEM_KAFKA_PORT, data in
AIQ_SYSTEM_KAFKA_DIR). Its consumer-group session (KIP-848: the broker's
group.consumer.session.timeout.ms) is AIQ_KAFKA_CONSUMER_SESSION_MS when set, else Kafka's
45 s; the classic session is the worker's kafka.session_timeout_ms (default 10 s).

  bench/group_protocol.py [--protocols classic,consumer] [--storm-jobs 30000] [--kills 16]
Prints one `result:` line per protocol and measurement, and a JSON summary at the end.
"""
import argparse
import json
import os
import pathlib
import signal
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "system"))
import run as system  # noqa: E402  (sets AIQ_KAFKA_BROKERS for conftest)

from confluent_kafka import TopicPartition  # noqa: E402

RATE = 200  # jobs/s of the steady flow
LATENCY_MS = 10


class Answers:
    """Every result on the results topic with its arrival time, from the start."""

    def __init__(self, env):
        self.lock = threading.Lock()
        self.first = {}  # job id -> (arrival, worker)
        self.by = {}  # job id -> [worker, ...] of every result, in arrival order
        self.per_worker = {}  # worker -> [arrival, ...]
        self.total = 0
        self.stopping = threading.Event()
        self.c = env.consumer(**{"fetch.wait.max.ms": 20})
        self.c.assign([TopicPartition(env.results_topic, p, 0) for p in range(env.partitions)])
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stopping.is_set():
            for m in self.c.consume(1000, 0.1):
                if m.error():
                    continue
                now = time.time()
                r = json.loads(m.value())
                with self.lock:
                    self.total += 1
                    self.first.setdefault(r["job_id"], (now, r["worker"]))
                    self.by.setdefault(r["job_id"], []).append(r["worker"])
                    self.per_worker.setdefault(r["worker"], []).append(now)
        self.c.close()

    def stop(self):
        self.stopping.set()
        self.t.join(10)


def steady_submit(env, n, tag, rate=RATE):
    """aiq-submit at `rate` jobs/s over all four priorities; returns the Submitter, whose
    deadlines map id -> submit time + far timeout (so the submit time is recoverable)."""
    return system.Submitter(env, n, lambda i, now: system.plain_job("gp", tag, i), rate)


def submit_times(sub):
    return {i: dl - system.FAR_TIMEOUT_MS / 1000 for i, dl in sub.deadlines.items()}


def max_wait(answers, times, lo, hi):
    """Longest submit-to-answer wait of jobs submitted in [lo, hi)."""
    worst = 0.0
    with answers.lock:
        for i, t in times.items():
            if lo <= t < hi and i in answers.first:
                worst = max(worst, answers.first[i][0] - t)
    return worst


def longest_gap(ts, lo, hi):
    ts = [t for t in ts if lo <= t <= hi]
    if len(ts) < 2:
        return hi - lo
    return max(b - a for a, b in zip(ts, ts[1:]))


def wait_answered(answers, sub, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if sub.done.is_set() and all(i in answers.first for i in sub.acked):
            return True
        time.sleep(0.2)
    return False


def settings(protocol):
    return {"AIQ_WORKER_MAX_INFLIGHT": 20, "AIQ_KAFKA_GROUP_PROTOCOL": protocol}


def kill_recovery(protocol, wd):
    env = system.Env(wd)
    env.start_sim(latency_ms=LATENCY_MS)
    a, b = (env.start_worker(**settings(protocol)) for _ in range(2))
    env.wait_group_stable(2, timeout=120)
    answers = Answers(env)
    n = RATE * 100
    sub = steady_submit(env, n, env.tag)
    try:
        time.sleep(15)
        t_kill = time.time()
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(10)
        time.sleep(70)  # longer than a 45 s broker session plus the hand-over
        times = submit_times(sub)
        before = max_wait(answers, times, t_kill - 5, t_kill - 1)
        after = max_wait(answers, times, t_kill, t_kill + 1)
        sub.kill()
    finally:
        answers.stop()
        env.close()
    return {"recovery_s": round(after, 2), "baseline_wait_s": round(before, 2)}


def scale_up(protocol, wd):
    env = system.Env(wd)
    env.start_sim(latency_ms=LATENCY_MS)
    old = [env.start_worker(**settings(protocol)) for _ in range(2)]
    env.wait_group_stable(2, timeout=120)
    old_ids = [f"w{k}-{env.tag}" for k in range(2)]
    answers = Answers(env)
    sub = steady_submit(env, RATE * 100, env.tag)
    try:
        time.sleep(15)
        t_join = time.time()
        env.start_worker(**settings(protocol))
        new_id = f"w2-{env.tag}"
        first = None
        deadline = t_join + 90
        while time.time() < deadline and first is None:
            with answers.lock:
                ts = answers.per_worker.get(new_id)
                first = ts[0] if ts else None
            time.sleep(0.1)
        time.sleep(max(0.0, t_join + 30 - time.time()))
        with answers.lock:
            gaps = {w: (round(longest_gap(answers.per_worker.get(w, []), t_join - 10, t_join), 2),
                        round(longest_gap(answers.per_worker.get(w, []), t_join, t_join + 30), 2))
                    for w in old_ids}
        sub.kill()
    finally:
        answers.stop()
        env.close()
    return {"new_worker_first_result_s": round(first - t_join, 2) if first else None,
            "old_workers_longest_gap_before_after_s": gaps}


def storm(protocol, wd, n, kills, span_s=60.0):
    env = system.Env(wd)
    env.start_sim(latency_ms=LATENCY_MS)
    slots = [env.start_worker(**settings(protocol)) for _ in range(3)]
    slot_ids = [f"w{k}-{env.tag}" for k in range(3)]
    env.wait_group_stable(3, timeout=120)
    answers = Answers(env)
    # Spread over the kills' span, so every kill lands on workers with work running.
    sub = system.Submitter(env, n, lambda i, now: system.plain_job("storm", env.tag, i),
                           rate=n / span_s)
    done = 0
    killed = set()  # worker ids SIGKILLed
    t0 = time.time()
    try:
        every = span_s / kills
        import random
        rnd = random.Random(848)
        while done < kills:
            time.sleep(every)
            k = rnd.randrange(3)
            killed.add(slot_ids[k])
            slots[k].proc.send_signal(signal.SIGKILL)
            slots[k].proc.wait(10)
            done += 1
            time.sleep(0.5)
            slots[k] = env.start_worker(**settings(protocol))
            slot_ids[k] = f"w{len(env.workers) - 1}-{env.tag}"
        complete = wait_answered(answers, sub, 600)
        took = time.time() - t0
        time.sleep(3)
        with answers.lock:
            total = answers.total
            lost = sum(1 for i in sub.acked if i not in answers.first)
            # A redone job first answered by a worker that was never killed was redone
            # because of a hand-over, not a crash.
            by_survivor = sum(len(w) - 1 for w in answers.by.values()
                              if len(w) > 1 and w[0] not in killed)
            # Kills of a worker that had answered nothing yet (it owned no partitions).
            idle = sum(1 for w in killed if w not in answers.per_worker)
    finally:
        answers.stop()
        env.close()
    dup = total - (len(sub.acked) - lost)
    return {"kills": done, "jobs": len(sub.acked), "lost": lost, "complete": complete,
            "duplicates": dup, "duplicates_per_kill": round(dup / max(1, done), 1),
            "duplicates_first_answered_by_a_survivor": by_survivor,
            "kills_of_workers_that_had_answered_nothing": idle,
            "all_answered_after_s": round(took, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--protocols", default="classic,consumer")
    ap.add_argument("--only", default="kill-recovery,scale-up,storm")
    ap.add_argument("--storm-jobs", type=int, default=30000)
    ap.add_argument("--kills", type=int, default=16)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    wd = pathlib.Path(a.workdir or tempfile.mkdtemp(prefix="aiq-gp-"))
    broker = system.Broker()
    started = broker.status() is None
    if started:
        broker.start()
    summary = {"consumer_session_ms": int(os.environ.get("AIQ_KAFKA_CONSUMER_SESSION_MS",
                                                         "45000"))}
    try:
        for proto in a.protocols.split(","):
            for what in a.only.split(","):
                d = wd / f"{proto}-{what}"
                d.mkdir(parents=True, exist_ok=True)
                t = time.time()
                if what == "kill-recovery":
                    r = kill_recovery(proto, d)
                elif what == "scale-up":
                    r = scale_up(proto, d)
                else:
                    r = storm(proto, d, a.storm_jobs, a.kills)
                print(f"result: {proto} {what} {json.dumps(r)} ({time.time() - t:.0f} s)",
                      flush=True)
                summary[f"{proto}/{what}"] = r
    finally:
        if started:
            broker.stop()
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
