"""aiq-admin cache: warm-up from NDJSON and from the results topic, then get, stats, list,
invalidate, sweep and purge on a real LMDB directory, with exit codes and counts.

Exit codes under test: 0 done, 1 failed or (get) absent, 2 usage, 3 warm finished but bad
input was skipped (every bad line reported on stderr as FILE:LINE, the rest stored)."""
import json
import os
import stat
import time

from confluent_kafka import Producer

from aiqtest import BROKERS, binary, run


def admin(cache_dir, *args, env=None):
    e = dict(os.environ)
    e.pop("AIQ_CACHE_PATH", None)
    e.update(env or {})
    return run([binary("aiq-admin"), "cache", *args, "--cache-path", str(cache_dir)], env=e)


def result(job_id, text, status="succeeded", **extra):
    r = {"job_id": job_id, "status": status, "operation": "vc-analysis",
         "output": {"text": text} if text is not None else None, "stop_reason": "end_turn",
         "usage": {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18},
         "model": "anthropic.claude-3-haiku-20240307-v1:0", "cache": {"hit": False}}
    r.update(extra)
    return r


def job(job_id, persona=None, operation="vc-analysis", **payload):
    j = {"id": job_id, "operation": operation, "payload": payload or {"company": "Acme"}}
    if persona:
        j["persona"] = persona
    return j


def write_ndjson(path, lines):
    with open(path, "w") as f:
        for line in lines:
            f.write(line if isinstance(line, str) else json.dumps(line))
            f.write("\n")


def stats(cache_dir):
    r = admin(cache_dir, "stats", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def listing(cache_dir):
    r = admin(cache_dir, "list", "--limit", "0")
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()]
    return {row[0]: row for row in rows}


def test_warm_file_get_stats_invalidate_purge(tmp_path):
    cache = tmp_path / "cache"
    f = tmp_path / "warm.ndjson"
    write_ndjson(f, [
        {"job": job("a1", "investor", company="Acme", stage="seed"),
         "result": result("a1", "Acme: invest.")},
        # The same question: key order, whitespace and id differ. One entry, stored twice.
        '{ "result": ' + json.dumps(result("a2", "Acme: invest.")) +
        ', "job": {"payload": {"stage": "seed",  "company": "Acme"}, "persona": "investor",'
        ' "operation": "vc-analysis", "id": "a2"} }',
        {"job": job("a3", "founder", company="Acme", stage="seed"),
         "result": result("a3", "Acme: raise.")},
        {"job": job("a4", "founder", operation="content-generation", topic="AI"),
         "result": result("a4", "A post about AI.", operation="content-generation")},
        {"job": job("a5"), "result": result("a5", None, status="failed")},
    ])
    r = admin(cache, "warm", "--file", str(f))
    assert r.returncode == 0, r.stderr
    assert "read 5 lines: stored 4, skipped 1 (not succeeded), expired 0" in r.stdout
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(cache / "data.mdb").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cache / "lock.mdb").st_mode) == 0o600

    st = stats(cache)
    assert st["entries"] == 3
    assert st["map_bytes"] == 1 << 30
    rows = listing(cache)
    assert len(rows) == 3
    by_persona = {row[3]: key for key, row in rows.items()}
    assert set(by_persona) == {"investor", "founder"}

    r = admin(cache, "get", by_persona["investor"])
    assert r.returncode == 0, r.stderr
    entry = json.loads(r.stdout)
    assert entry["state"] == "hit"
    assert entry["operation"] == "vc-analysis"
    assert entry["model"] == "anthropic.claude-3-haiku-20240307-v1:0"  # bedrock.default_model
    assert entry["body"] == {"output": "Acme: invest.", "stop_reason": "end_turn",
                             "input_tokens": 11, "output_tokens": 7,
                             "model": "anthropic.claude-3-haiku-20240307-v1:0"}
    absent = "0" * 64
    r = admin(cache, "get", absent)
    assert r.returncode == 1 and "not in the cache" in r.stderr
    assert admin(cache, "get", "xyz").returncode == 2

    r = admin(cache, "invalidate", "--operation", "vc-analysis", "--persona", "founder")
    assert r.returncode == 0 and r.stdout.strip() == "removed 1", r.stdout + r.stderr
    r = admin(cache, "invalidate", "--operation", "vc-analysis")
    assert r.returncode == 0 and r.stdout.strip() == "removed 1"
    r = admin(cache, "invalidate", "--key", by_persona["investor"])
    assert r.returncode == 0 and r.stdout.strip() == "removed 0"
    assert admin(cache, "get", by_persona["investor"]).returncode == 1
    assert stats(cache)["entries"] == 1
    assert admin(cache, "invalidate").returncode == 2

    assert admin(cache, "purge").returncode == 2  # needs --yes
    assert stats(cache)["entries"] == 1
    r = admin(cache, "purge", "--yes")
    assert r.returncode == 0 and r.stdout.strip() == "purged 1"
    assert stats(cache)["entries"] == 0


def test_warm_bad_lines_are_reported_and_skipped(tmp_path):
    cache = tmp_path / "cache"
    f = tmp_path / "mixed.ndjson"
    write_ndjson(f, [
        {"job": job("g1"), "result": result("g1", "good one")},
        "this is not json",
        "",  # blank lines are not records
        {"job": {"id": "g2", "payload": {}}, "result": result("g2", "no operation")},
        {"result": result("g3", "neither key nor job")},
        {"key": "abc", "result": result("g4", "short key")},
        {"job": job("g5"), "result": result("g5", None)},  # succeeded without output
        {"key": "ab" * 32, "result": result("g6", "by key")},
        '{"job": {"id": "g7", "operation": "x", "payload": {}}, "result": ',  # truncated
    ])
    r = admin(cache, "warm", "--file", str(f))
    assert r.returncode == 3, r.stdout + r.stderr
    assert "read 8 lines: stored 2, skipped 0 (not succeeded), expired 0, " \
           "dropped 0 (cache full), bad 6" in r.stdout
    for lineno in (2, 4, 5, 6, 7, 9):
        assert f"{f}:{lineno}:" in r.stderr, r.stderr
    assert f"{f}:1:" not in r.stderr and f"{f}:8:" not in r.stderr
    assert "operation" in r.stderr.split(f"{f}:4:")[1].splitlines()[0]
    assert stats(cache)["entries"] == 2
    r = admin(cache, "get", "ab" * 32)
    assert r.returncode == 0 and json.loads(r.stdout)["body"]["output"] == "by key"
    # A missing file is a failure, not a crash.
    assert admin(cache, "warm", "--file", str(tmp_path / "nope")).returncode == 1


def test_warm_keeps_the_age_of_old_results(tmp_path):
    cache = tmp_path / "cache"
    f = tmp_path / "old.ndjson"
    day = 86400
    ago = lambda s: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - s))
    write_ndjson(f, [
        {"job": job("o1", company="Fresh"), "result": result("o1", "x", completed_at=ago(60))},
        # Expired but within the grace period: kept for the stale-if-error fallback.
        {"job": job("o2", company="Stale"),
         "result": result("o2", "y", completed_at=ago(day + 3600))},
        # Past TTL and grace: not worth storing.
        {"job": job("o3", company="Gone"),
         "result": result("o3", "z", completed_at=ago(3 * day))},
    ])
    r = admin(cache, "warm", "--file", str(f))
    assert r.returncode == 0, r.stderr
    assert "stored 2, skipped 0 (not succeeded), expired 1" in r.stdout
    states = sorted(row[1] for row in listing(cache).values())
    assert states == ["hit", "stale"]
    # A shorter grace period makes the sweep remove the stale one.
    r = admin(cache, "sweep", env={"AIQ_CACHE_STALE_GRACE_S": "60"})
    assert r.returncode == 0 and r.stdout.strip() == "swept 1", r.stdout + r.stderr
    assert stats(cache)["entries"] == 1


def test_stats_on_a_missing_cache_fails_cleanly(tmp_path):
    r = admin(tmp_path / "none", "stats")
    assert r.returncode == 1 and "no cache at" in r.stderr
    assert not (tmp_path / "none").exists()  # read commands never create a cache
    r = run([binary("aiq-admin"), "cache", "--help"])
    assert r.returncode == 0 and "warm --file F" in r.stdout


def test_warm_from_results_topic(aiq_env, tmp_path):
    cache = tmp_path / "cache"
    p = Producer({"bootstrap.servers": BROKERS})
    records = [
        result("t1", "first", cache={"hit": False, "key": "11" * 32}),
        result("t2", "second", cache={"hit": False, "key": "22" * 32, "persona": "investor"}),
        result("t3", None, status="failed", cache={"hit": False, "key": "33" * 32}),
        result("t4", "no key"),  # results of cache-less jobs are not answers to store
        result("t5", "bad key", cache={"hit": False, "key": "zz"}),
    ]
    for i, rec in enumerate(records):
        p.produce(aiq_env.results_topic, key=rec["job_id"], value=json.dumps(rec),
                  partition=i % aiq_env.partitions)
    p.produce(aiq_env.results_topic, key="t6", value=b"{not json", partition=0)
    assert p.flush(30) == 0
    r = admin(cache, "warm", "--from-topic", "--prefix", aiq_env.prefix, "-b", BROKERS)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "read 6 records: stored 2, skipped 2 (not succeeded), expired 0, " \
           "dropped 0 (cache full), bad 2" in r.stdout
    assert "offset" in r.stderr
    got = json.loads(admin(cache, "get", "22" * 32).stdout)
    assert got["persona"] == "investor" and got["body"]["output"] == "second"
    assert admin(cache, "get", "33" * 32).returncode == 1
    # Nothing new on the topic: a second warm-up reads the same records, stores the same.
    r = admin(cache, "warm", "--from-topic", "--prefix", aiq_env.prefix, "-b", BROKERS)
    assert "stored 2" in r.stdout
    assert stats(cache)["entries"] == 2
