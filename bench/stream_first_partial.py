#!/usr/bin/env python3
"""Time to first partial: jobs with "stream": true, one at a time, from submit to the first
partial record on the reply topic and to the result, against bedrock-sim's ConverseStream.
Also the same jobs without streaming, to show what streaming costs the result.

By default bedrock-sim answers a stream in one piece after its latency (every event at
once), so the first partial and the result both wait for the whole answer; the gap between
them is what the worker adds between the stream's first event and its result. With
--stream-gap-ms N the sim sends the first event after its latency and each next one N ms
later, as a model streams tokens: the first partial then comes after the first event, the
result after the last. Needs a build with the bedrock-sim that speaks ConverseStream, and a
running broker.

  bench/stream_first_partial.py [--jobs 200] [--latency-ms 50] [--stream-gap-ms 0]
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
from aiqtest import BROKERS, Env, binary  # noqa: E402
from confluent_kafka import Producer, TopicPartition  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def measure(env, consumer, producer, n, stream):
    first, final = [], []
    for i in range(n):
        jid = f"{'s' if stream else 'n'}-{i}"
        job = {"id": jid, "operation": "x", "stream": stream, "cache": {"bypass": True},
               "messages": [{"role": "user", "content": [{"text": f"tell me about {i} " * 20}]}]}
        t0 = time.perf_counter()
        producer.produce(env.job_topic("normal"), key=jid, value=json.dumps(job))
        producer.flush(10)
        got_first = None
        while True:
            m = consumer.poll(1.0)
            if m is None or m.error():
                continue
            rec = json.loads(m.value())
            if rec["job_id"] != jid:
                continue
            now = time.perf_counter()
            if rec["status"] == "partial":
                got_first = got_first or now
                continue
            assert rec["status"] == "succeeded", rec
            final.append((now - t0) * 1000)
            if stream:
                assert got_first, rec
                first.append((got_first - t0) * 1000)
            break
    return first, final


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--latency-ms", type=int, default=50)
    ap.add_argument("--stream-gap-ms", type=int, default=0,
                    help="bedrock-sim's gap between stream events (0: all at once)")
    a = ap.parse_args()
    env = Env(pathlib.Path(tempfile.mkdtemp()))
    try:
        env.start_sim(latency_ms=a.latency_ms,
                      extra=("--stream-gap-ms", str(a.stream_gap_ms)))
        env.start_worker(AIQ_LOG_LEVEL="warn")
        env.wait_group_stable(1)
        c = env.consumer()
        c.assign([TopicPartition(env.results_topic, p, 0) for p in range(env.partitions)])
        p = Producer({"bootstrap.servers": BROKERS, "linger.ms": 0})
        measure(env, c, p, 10, True)  # warm-up: connections, metadata
        first, final_s = measure(env, c, p, a.jobs, True)
        _, final_n = measure(env, c, p, a.jobs, False)
        c.close()
        print(f"{a.jobs} jobs one at a time, sim latency {a.latency_ms} ms, "
              f"stream gap {a.stream_gap_ms} ms")
        print("| measure | p50 | p90 | p99 |")
        print("| --- | --- | --- | --- |")
        for label, xs in (("stream: submit → first partial", first),
                          ("stream: submit → result", final_s),
                          ("no stream: submit → result", final_n)):
            print(f"| {label} | {statistics.median(xs):.1f} ms | {pct(xs, 90):.1f} ms | "
                  f"{pct(xs, 99):.1f} ms |")
        gap = [f - s for f, s in zip(final_s, first)]
        print(f"| stream: first partial → result | {statistics.median(gap):.1f} ms | "
              f"{pct(gap, 90):.1f} ms | {pct(gap, 99):.1f} ms |")
    finally:
        env.close()


if __name__ == "__main__":
    main()
