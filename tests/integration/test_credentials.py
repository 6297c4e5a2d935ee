"""AWS credentials without AWS_ACCESS_KEY_ID: the worker fetches temporary credentials from a
container endpoint or from STS (web identity), refreshes them before they expire while jobs
keep succeeding against bedrock-sim, never logs a secret, and refuses to start when no source
is configured."""
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiqtest import BROKERS, SIM_KEY, SIM_SECRET, binary, run

LIFETIME_S = 70  # every fetch hands out credentials expiring this far ahead
REFRESH_S = 65   # so the worker refreshes 5 s after each fetch
NO_AWS_ENV = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
              "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None, "AWS_ROLE_ARN": None,
              "AWS_WEB_IDENTITY_TOKEN_FILE": None, "AWS_SHARED_CREDENTIALS_FILE": None,
              "AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
              "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None,
              "AWS_CONTAINER_AUTHORIZATION_TOKEN": None,
              "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": None, "AWS_ENDPOINT_URL_STS": None}


def expiration():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + LIFETIME_S))


class CredServer:
    """A container-credentials endpoint or an STS stand-in on 127.0.0.1, on its own thread.
    `check(handler, body)` returns None to answer with credentials, or an error string."""

    def __init__(self, kind, check):
        self.kind, self.check = kind, check
        self.fetches, self.rejected, self.tokens = 0, [], []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.handle(self, b"")

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                server.handle(self, self.rfile.read(n))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, h, body):
        why = self.check(h, body)
        with self.lock:
            if why:
                self.rejected.append(why)
            else:
                self.fetches += 1
                token = f"session-token-{self.kind}-{self.fetches}"
                self.tokens.append(token)
        if why:
            h.send_response(403)
            payload = why.encode()
        elif self.kind == "container":
            h.send_response(200)
            payload = json.dumps({"AccessKeyId": SIM_KEY, "SecretAccessKey": SIM_SECRET,
                                  "Token": token, "Expiration": expiration()}).encode()
        else:
            h.send_response(200)
            payload = (
                "<AssumeRoleWithWebIdentityResponse "
                "xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
                "<AssumeRoleWithWebIdentityResult><Credentials>"
                f"<AccessKeyId>{SIM_KEY}</AccessKeyId>"
                f"<SecretAccessKey>{SIM_SECRET}</SecretAccessKey>"
                f"<SessionToken>{token}</SessionToken>"
                f"<Expiration>{expiration()}</Expiration>"
                "</Credentials></AssumeRoleWithWebIdentityResult>"
                "</AssumeRoleWithWebIdentityResponse>").encode()
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def count(self):
        with self.lock:
            return self.fetches

    def wait_fetches(self, n, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline and self.count() < n:
            time.sleep(0.2)
        return self.count()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def submit_and_check(aiq_env, tag, n):
    jobs = [{"id": f"cred-{aiq_env.tag}-{tag}-{i}", "operation": "vc-analysis",
             "priority": "high", "payload": {"n": i}} for i in range(n)]
    r = run([binary("aiq-submit"), "-b", BROKERS, "--prefix", aiq_env.prefix, "-"],
            input="".join(json.dumps(j) + "\n" for j in jobs))
    assert r.returncode == 0, r.stderr
    want = {j["id"] for j in jobs}
    records = aiq_env.read_all(aiq_env.results_topic, 10**6, timeout=60,
                               stop=lambda got: want <= {json.loads(m.value())["job_id"]
                                                         for m in got})
    results = {json.loads(m.value())["job_id"]: json.loads(m.value()) for m in records}
    missing = want - set(results)
    assert not missing, f"no result for {sorted(missing)[:3]}"
    for jid in want:
        assert results[jid]["status"] == "succeeded", results[jid]


def worker_environ(w):
    with open(f"/proc/{w.proc.pid}/environ", "rb") as f:
        return dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)


def assert_no_secrets(output, server):
    assert SIM_SECRET not in output
    for token in server.tokens:
        assert token not in output


def test_container_credentials_refreshed_while_jobs_succeed(aiq_env, tmp_path):
    sim = aiq_env.start_sim(latency_ms=0)
    auth_file = tmp_path / "container-auth-token"
    auth_file.write_text("container-auth-1\n")
    seen_auth = []

    def check(h, body):
        auth = h.headers.get("Authorization")
        if h.command != "GET" or h.path != "/v1/credentials":
            return f"unexpected {h.command} {h.path}"
        # The file may rotate while a fetch is on its way: either value is fine then.
        if auth not in ("container-auth-1", "container-auth-2"):
            return f"Authorization {auth!r}"
        seen_auth.append(auth)
        return None

    server = CredServer("container", check)
    try:
        w = aiq_env.start_worker(
            AIQ_BEDROCK_CREDENTIALS_REFRESH_S=REFRESH_S,
            env={**NO_AWS_ENV, "HOME": str(tmp_path),
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI": server.url + "/v1/credentials",
                 "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(auth_file)})
        assert w.proc.poll() is None, w.output()
        assert not any(k.startswith(b"AWS_ACCESS") or k.startswith(b"AWS_SECRET")
                       for k in worker_environ(w))
        aiq_env.wait_group_stable(1)
        submit_and_check(aiq_env, "a", 20)
        # The token file rotates; the next refresh must send the new one.
        auth_file.write_text("container-auth-2")
        before = server.count()
        assert server.wait_fetches(before + 2, timeout=30) >= before + 2, server.rejected
        submit_and_check(aiq_env, "b", 20)
        assert server.count() >= 3
        assert server.rejected == [], server.rejected
        assert seen_auth[0] == "container-auth-1" and seen_auth[-1] == "container-auth-2"
        assert sim.stats()["auth_failures"] == 0
        assert w.stop() == 0
        out = w.output()
        assert "source=container" in out and "AWS credentials refreshed" in out
        assert_no_secrets(out, server)
        assert "container-auth-" not in out
    finally:
        server.stop()


def test_web_identity_through_sts_refreshes(aiq_env, tmp_path):
    aiq_env.start_sim(latency_ms=0)
    token_file = tmp_path / "web-identity-token"
    token_file.write_text("eyJhbGciOi.first.jwt\n")
    role = "arn:aws:iam::123456789012:role/aiq-worker"
    seen_tokens = []

    def check(h, body):
        form = urllib.parse.parse_qs(body.decode(), strict_parsing=True)
        got = {k: v[0] for k, v in form.items()}
        if h.command != "POST":
            return f"method {h.command}"
        for k, v in (("Action", "AssumeRoleWithWebIdentity"), ("Version", "2011-06-15"),
                     ("RoleArn", role)):
            if got.get(k) != v:
                return f"{k}={got.get(k)!r}, want {v!r}"
        if got.get("WebIdentityToken") not in ("eyJhbGciOi.first.jwt", "eyJhbGciOi.second.jwt"):
            return f"WebIdentityToken={got.get('WebIdentityToken')!r}"
        if not got.get("RoleSessionName", "").startswith("aiq-"):
            return f"RoleSessionName={got.get('RoleSessionName')!r}"
        seen_tokens.append(got["WebIdentityToken"])
        return None

    server = CredServer("sts", check)
    try:
        w = aiq_env.start_worker(
            AIQ_BEDROCK_CREDENTIALS_REFRESH_S=REFRESH_S,
            AIQ_BEDROCK_STS_ENDPOINT=server.url + "/",
            env={**NO_AWS_ENV, "HOME": str(tmp_path), "AWS_ROLE_ARN": role,
                 "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file)})
        aiq_env.wait_group_stable(1)
        submit_and_check(aiq_env, "a", 20)
        token_file.write_text("eyJhbGciOi.second.jwt")
        before = server.count()
        assert server.wait_fetches(before + 2, timeout=30) >= before + 2, server.rejected
        submit_and_check(aiq_env, "b", 20)
        assert server.rejected == [], server.rejected
        assert seen_tokens[0] == "eyJhbGciOi.first.jwt"
        assert seen_tokens[-1] == "eyJhbGciOi.second.jwt"
        assert w.stop() == 0
        out = w.output()
        assert "source=web_identity" in out and "AWS credentials refreshed" in out
        assert_no_secrets(out, server)
        assert "eyJhbGciOi" not in out
    finally:
        server.stop()


def test_no_credentials_anywhere_fails_start(aiq_env, tmp_path):
    aiq_env.start_sim(latency_ms=0)
    w = aiq_env.start_worker(env={**NO_AWS_ENV, "HOME": str(tmp_path)})
    code = w.proc.wait(30)
    out = w.output()
    assert code != 0, out
    assert "no AWS credentials found" in out, out
    for source in ("environment (AWS_ACCESS_KEY_ID unset)", "web identity (AWS_ROLE_ARN unset)",
                   "container (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/_FULL_URI unset)",
                   f"shared credentials file ({tmp_path}/.aws/credentials not found)"):
        assert source in out, out


def test_print_config_shows_no_secret(aiq_env, tmp_path):
    aiq_env.start_sim(latency_ms=0)
    env = aiq_env.worker_env(AWS_SESSION_TOKEN="print-config-session-token")
    r = run([binary("aiq-worker"), "--print-config"], env=env)
    assert r.returncode == 0, r.stderr
    assert "bedrock.credentials_refresh_s = 300" in r.stdout
    assert "bedrock.sts_endpoint = " in r.stdout
    for secret in (SIM_SECRET, "print-config-session-token"):
        assert secret not in r.stdout + r.stderr
