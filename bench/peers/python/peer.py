#!/usr/bin/env python3
"""Python asyncio peer: the job aiq does, written the way a Python team would write it.

aiokafka consumes jobs from the four job topics, aiohttp calls bedrock-sim's Converse
endpoint signed with botocore's SigV4, aiokafka publishes the result; offsets are
committed only up to the first record whose result the broker has not acknowledged
(at-least-once). Configured by environment; the contract is bench/peers/README.md.
"""
import asyncio
import collections
import json
import os
import random
import signal
import sys
import time
from datetime import datetime, timezone
from urllib.parse import quote

import aiohttp
import yarl
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.structs import OffsetAndMetadata
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

PRIORITIES = ("critical", "high", "normal", "low")
RETRIES = 3
COMMIT_INTERVAL_S = 0.5


def log(msg):
    print(f"peer.py: {msg}", file=sys.stderr, flush=True)


def env(name, default=None):
    value = os.environ.get(name, default)
    if not value:
        sys.exit(f"peer.py: {name} is not set (see bench/peers/README.md)")
    return value


class Offsets:
    """In-flight records per partition in offset order; what may be committed is the
    offset after the longest prefix whose results were acknowledged."""

    def __init__(self):
        self.pending = collections.defaultdict(collections.deque)  # tp -> deque of [off, done]
        self.ready = {}  # tp -> next offset to commit, not yet committed

    def start(self, tp, offset):
        entry = [offset, False]
        self.pending[tp].append(entry)
        return entry

    def finish(self, tp, entry):
        entry[1] = True
        q = self.pending[tp]
        while q and q[0][1]:
            self.ready[tp] = q.popleft()[0] + 1

    def take(self, tps=None):
        out = {tp: off for tp, off in self.ready.items() if tps is None or tp in tps}
        for tp in out:
            del self.ready[tp]
        return out

    def busy(self, tps):
        return any(self.pending.get(tp) for tp in tps)


class Peer:
    def __init__(self):
        self.brokers = env("PEER_BROKERS")
        self.prefix = env("PEER_PREFIX")
        self.group = env("PEER_GROUP")
        self.endpoint = env("PEER_ENDPOINT").rstrip("/")
        self.model = env("PEER_MODEL", "anthropic.claude-3-haiku-20240307-v1:0")
        self.region = env("AWS_REGION", "us-east-1")
        self.creds = Credentials(env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"),
                                 os.environ.get("AWS_SESSION_TOKEN"))
        try:
            self.max_inflight = int(env("PEER_MAX_INFLIGHT"))
            assert self.max_inflight > 0
        except (ValueError, AssertionError):
            sys.exit("peer.py: PEER_MAX_INFLIGHT must be a positive integer")
        self.slots = asyncio.Semaphore(self.max_inflight)
        self.offsets = Offsets()
        self.tasks = set()
        self.stopping = asyncio.Event()
        self.ready = False
        self.failed = False

    # --- the model call -------------------------------------------------------------
    def converse_request(self, job):
        messages = job.get("messages") or [
            {"role": "user", "content": [{"text": json.dumps(job.get("payload", {}),
                                                            separators=(",", ":"))}]}]
        req = {"messages": messages}
        if job.get("system"):
            req["system"] = [{"text": job["system"]}]
        inf = job.get("inference") or {}
        cfg = {k: inf[s] for s, k in (("max_tokens", "maxTokens"), ("temperature", "temperature"),
                                      ("top_p", "topP"), ("stop_sequences", "stopSequences"))
               if s in inf}
        if cfg:
            req["inferenceConfig"] = cfg
        return json.dumps(req).encode()

    async def converse(self, model, body):
        """Returns (status, parsed body or None, seconds spent in HTTP)."""
        url = f"{self.endpoint}/model/{quote(model, safe='')}/converse"
        spent, status, data = 0.0, 0, None
        for attempt in range(RETRIES + 1):
            aws = AWSRequest(method="POST", url=url, data=body,
                             headers={"Content-Type": "application/json"})
            SigV4Auth(self.creds, "bedrock", self.region).add_auth(aws)
            t0 = time.monotonic()
            try:
                async with self.http.post(yarl.URL(url, encoded=True), data=body,
                                          headers=dict(aws.headers.items())) as r:
                    status, data = r.status, await r.json(content_type=None)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
                status, data = 0, {"message": f"transport: {e}"}
            spent += time.monotonic() - t0
            if status == 200 or (400 <= status < 500 and status != 429):
                break
            if attempt < RETRIES:
                await asyncio.sleep(0.1 * 2 ** attempt * random.uniform(0.5, 1.0))
        return status, data, spent

    async def handle(self, msg, tp, entry):
        t0 = time.monotonic()
        model, provider_s = self.model, 0.0
        try:
            job = json.loads(msg.value)
            job_id = str(job.get("id") or (msg.key or b"").decode())
            model = job.get("model") or self.model
            status, data, provider_s = await self.converse(model, self.converse_request(job))
        except (ValueError, TypeError) as e:
            job_id, status, data = (msg.key or b"").decode(errors="replace"), 0, {
                "message": f"bad job: {e}"}
        result = {"job_id": job_id, "model": model,
                  "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}
        if status == 200:
            content = (data.get("output", {}).get("message", {}).get("content") or [{}])
            usage = data.get("usage", {})
            result.update(status="succeeded", output={"text": content[0].get("text", "")},
                          usage={"input_tokens": usage.get("inputTokens", 0),
                                 "output_tokens": usage.get("outputTokens", 0),
                                 "total_tokens": usage.get("totalTokens", 0)})
        else:
            result.update(status="failed", output=None,
                          error={"kind": "http" if status else "transport",
                                 "message": str((data or {}).get("message", status))})
        result["completed_at"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        result["timings"] = {"total_ms": int((time.monotonic() - t0) * 1000),
                             "provider_ms": int(provider_s * 1000)}
        ack = await self.producer.send(self.prefix + "results", json.dumps(result).encode(),
                                       key=job_id.encode())
        await ack  # the broker has it: only now may the offset be committed
        self.offsets.finish(tp, entry)

    async def run_one(self, msg, tp):
        entry = self.offsets.start(tp, msg.offset)
        try:
            await self.handle(msg, tp, entry)
        except Exception as e:  # a result that could not be published: stop, do not commit
            log(f"job at {tp.topic}[{tp.partition}]@{msg.offset} failed: {e!r}")
            self.failed = True
            self.stopping.set()
        finally:
            self.slots.release()

    # --- commits and rebalancing --------------------------------------------------------
    async def commit(self, tps=None):
        offsets = self.offsets.take(tps)
        if offsets:
            await self.consumer.commit({tp: OffsetAndMetadata(off, "")
                                        for tp, off in offsets.items()})

    async def commit_loop(self):
        while not self.stopping.is_set():
            await asyncio.sleep(COMMIT_INTERVAL_S)
            try:
                await self.commit()
            except Exception as e:  # e.g. a rebalance in progress; the next round retries
                log(f"commit: {e!r}")

    # --- main loop ---------------------------------------------------------------------
    async def consume(self):
        try:
            await self.consume_loop()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log(f"consumer failed: {e!r}")
            self.failed = True
            self.stopping.set()

    async def consume_loop(self):
        while not self.stopping.is_set():
            batch = await self.consumer.getmany(timeout_ms=100, max_records=self.max_inflight)
            for tp, msgs in batch.items():
                for msg in msgs:
                    await self.slots.acquire()
                    task = asyncio.create_task(self.run_one(msg, tp))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)

    async def main(self):
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_inflight),
            timeout=aiohttp.ClientTimeout(total=60))
        self.producer = AIOKafkaProducer(bootstrap_servers=self.brokers, acks="all",
                                         enable_idempotence=True, linger_ms=5,
                                         compression_type="lz4")
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.brokers, group_id=self.group,
                                         enable_auto_commit=False,
                                         auto_offset_reset="earliest")
        self.consumer.subscribe([f"{self.prefix}jobs.{p}" for p in PRIORITIES],
                                listener=Rebalance(self))
        await self.producer.start()
        await self.consumer.start()
        committer = asyncio.create_task(self.commit_loop())
        consumer = asyncio.create_task(self.consume())
        await self.stopping.wait()
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await asyncio.gather(*self.tasks, return_exceptions=True)  # drain what is in flight
        await committer
        await self.commit()
        await self.consumer.stop()
        await self.producer.stop()
        await self.http.close()


class Rebalance(ConsumerRebalanceListener):
    def __init__(self, peer):
        self.peer = peer

    async def on_partitions_revoked(self, revoked):
        # Let the jobs of revoked partitions finish and commit them, so the next owner does
        # not redo them (bounded: a job's model call is bounded by the HTTP timeout).
        deadline = time.monotonic() + 60
        while self.peer.offsets.busy(revoked) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        try:
            await self.peer.commit(set(revoked))
        except Exception as e:
            log(f"commit on revoke: {e!r}")

    async def on_partitions_assigned(self, assigned):
        if assigned and not self.peer.ready:
            self.peer.ready = True
            print("peer ready", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(__doc__)
        sys.exit(0 if sys.argv[1] in ("-h", "--help") else 2)
    peer = Peer()
    asyncio.run(peer.main())
    sys.exit(1 if peer.failed else 0)
