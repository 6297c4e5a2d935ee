"""The helm chart's output as the worker sees it, with no cluster.

test_helm.py proves the rendered objects are valid Kubernetes and spot-checks the worker's
view of the config. This file plays the kubelet for one pod of the rendered workload (the
ConfigMap and Secret files where the container mounts them; the env list with the downward
API, Secret references and $(VAR) expansion resolved the way Kubernetes does) and runs the
real aiq-worker binary with the container's args:
  * `--print-config`: every line of the chart's config file is accepted and kept, each path
    it names exists in the pod's mounts, Deployment mode means dynamic membership, and a
    misspelt `config` key (which helm cannot know) is refused by the worker;
  * the worker started from the default render serves the probes the chart points at
    (alive, not ready without a broker) and on SIGTERM exits within the grace period.
It also ties the chart's defaults to the Dockerfile (user, port, cache volume, entrypoint).
Needs tools/bin/helm (tools/deploy-tools.sh) and aiq-worker (AIQ_BUILD_DIR); no Kafka.
"""
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import yaml

from aiqtest import ROOT, binary, free_port

HELM = os.path.join(ROOT, "tools", "bin", "helm")
CHART = os.path.join(ROOT, "helm", "aiq-worker")
VALUES_ALL = os.path.join(CHART, "ci", "values-all.yaml")
# What the pod's secretKeyRefs resolve to (ci/values-all.yaml names these Secrets).
SECRETS = {
    ("aiq-kafka-credentials", "username"): "svc-aiq",
    ("aiq-kafka-credentials", "password"): "s3cret-pw",
    ("aiq-aws-keys", "AWS_ACCESS_KEY_ID"): "AKIDEXAMPLE",
    ("aiq-aws-keys", "AWS_SECRET_ACCESS_KEY"): "example-secret-key",
    ("aiq-aws-keys", "AWS_SESSION_TOKEN"): "example-session-token",
}


def kube_version():
    with open(os.path.join(ROOT, "tools", "deploy-tools.sh"), encoding="utf-8") as f:
        m = re.search(r"^KUBE_VERSION=(\S+)", f.read(), re.M)
    assert m, "KUBE_VERSION= not found in tools/deploy-tools.sh"
    return m.group(1)


def render(tmp_path, *values, sets=()):
    if not os.access(HELM, os.X_OK):
        pytest.fail(f"{HELM} missing: run tools/deploy-tools.sh (tools/bootstrap.sh does)")
    args = [HELM, "template", "aiq", CHART, "--kube-version", kube_version()]
    for v in values:
        args += ["-f", v]
    for s in sets:
        args += ["--set", s]
    env = dict(os.environ)
    for var in ("HELM_CONFIG_HOME", "HELM_CACHE_HOME", "HELM_DATA_HOME"):
        env[var] = str(tmp_path / "helm-home" / var.lower())
    r = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


class Pod:
    """One pod of the rendered workload, laid out under a scratch root as the kubelet would."""

    def __init__(self, objs, root):
        self.objs = objs
        (self.workload,) = [o for o in objs if o["kind"] in ("StatefulSet", "Deployment")]
        name = self.workload["metadata"]["name"]
        # StatefulSet pods are <name>-<ordinal>; Deployment pods get a random suffix.
        sts = self.workload["kind"] == "StatefulSet"
        self.name = f"{name}-0" if sts else f"{name}-7d4b9c6f5-x2k8q"
        self.spec = self.workload["spec"]["template"]["spec"]
        (self.container,) = self.spec["containers"]
        self.root = root
        self.mounts = {}  # mountPath -> host directory
        self._mount_volumes()
        self.env = self._resolve_env()

    def _config_map(self, name):
        (cm,) = [o for o in self.objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name]
        return cm

    def _mount_volumes(self):
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in self.workload["spec"].get("volumeClaimTemplates", [])}
        for m in self.container["volumeMounts"]:
            host = os.path.join(self.root, m["mountPath"].lstrip("/"))
            os.makedirs(host, exist_ok=True)
            self.mounts[m["mountPath"]] = host
            vol = volumes.get(m["name"])
            assert vol or m["name"] in claims, f"volumeMount {m['name']} has no volume or claim"
            if vol and "configMap" in vol:
                for key, text in self._config_map(vol["configMap"]["name"])["data"].items():
                    with open(os.path.join(host, key), "w", encoding="utf-8") as f:
                        f.write(text)
            elif vol and "secret" in vol:
                for item in vol["secret"]["items"]:
                    with open(os.path.join(host, item["path"]), "w", encoding="utf-8") as f:
                        f.write("-----BEGIN CERTIFICATE-----\n")

    def _resolve_env(self):
        """The container's environment: downward API, Secrets, $(VAR) of earlier entries."""
        env = {}
        for e in self.container.get("env", []):
            if "value" in e:
                # Kubernetes expands $(VAR) only for variables defined before; $$ escapes.
                value = re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                               lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
                               e["value"])
            elif "fieldRef" in e.get("valueFrom", {}):
                path = e["valueFrom"]["fieldRef"]["fieldPath"]
                assert path == "metadata.name", f"unexpected downward API field {path}"
                value = self.name
            elif "secretKeyRef" in e.get("valueFrom", {}):
                ref = e["valueFrom"]["secretKeyRef"]
                value = SECRETS[(ref["name"], ref["key"])]
            else:
                raise AssertionError(f"env {e['name']}: unhandled source {e}")
            env[e["name"]] = value
        return env

    def host_path(self, path):
        """Where a path inside the container lives on this machine."""
        for mount, host in sorted(self.mounts.items(), key=lambda kv: -len(kv[0])):
            if path == mount or path.startswith(mount + "/"):
                return host + path[len(mount):]
        return path

    def command(self, *extra):
        """aiq-worker (the image's ENTRYPOINT) with the container's args, paths mapped."""
        args = [self.host_path(a) if a.startswith("/") else a for a in self.container["args"]]
        return [binary("aiq-worker"), *args, *extra]

    def process_env(self, **overrides):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIQ_", "AWS_"))}
        env.update(self.env)
        env.update(overrides)
        return env


def conf_file(pod):
    args = pod.container["args"]
    return pod.host_path(args[args.index("-c") + 1])


def read_conf(path):
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                out[key.strip()] = value.strip()
    return out


def print_config(pod, **env):
    r = subprocess.run(pod.command("--print-config"), capture_output=True, text=True, timeout=30,
                       env=pod.process_env(**env))
    assert r.returncode == 0, f"aiq-worker refused the chart's config: {r.stderr}"
    return {k.strip(): v.strip() for k, _, v in
            (line.partition("=") for line in r.stdout.splitlines() if "=" in line)}


def test_all_on_config_lines_kept_and_files_mounted(tmp_path):
    """test_helm.py spot-checks the worker's view of the all-on render; this checks every
    line of the file, and that each path the config names exists in the pod's mounts."""
    pod = Pod(render(tmp_path, VALUES_ALL), str(tmp_path / "pod"))
    conf = read_conf(conf_file(pod))
    eff = print_config(pod)

    # Every line of the chart's file is a setting the worker knows and keeps as written
    # (the chart turns YAML true into 1 and 1073741824.0 into 1073741824 for it).
    assert len(conf) >= 15
    for key, value in conf.items():
        assert key in eff, f"{key} from the chart is not a worker setting"
        assert eff[key] == value, f"{key}: chart wrote {value!r}, worker has {eff[key]!r}"
    assert eff["kafka.rdkafka.client.rack"] == "use1-az1"
    # SASL login from the Secret through the environment, mechanism from the file.
    assert eff["kafka.rdkafka.sasl.mechanisms"] == "SCRAM-SHA-512"
    assert eff["kafka.rdkafka.sasl.password"] == "(hidden)"

    # The files the config names are where the container mounts them: the CA from its
    # Secret, the operations file from the ConfigMap; the cache is a volume (the PVC), not
    # the read-only root filesystem.
    assert os.path.isfile(pod.host_path(eff["kafka.rdkafka.ssl.ca.location"]))
    with open(pod.host_path(eff["worker.operations_file"]), encoding="utf-8") as f:
        assert '"operations"' in f.read()
    assert eff["cache.path"] in pod.mounts
    assert pod.container["securityContext"]["readOnlyRootFilesystem"] is True

    # The drain the worker will do fits in what Kubernetes grants after the preStop sleep.
    grace_ms = pod.spec["terminationGracePeriodSeconds"] * 1000
    pre_stop = pod.container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
    sleep_ms = 0
    if pre_stop:
        assert pre_stop["command"][0] == "sleep", pre_stop
        sleep_ms = int(pre_stop["command"][1]) * 1000
    assert grace_ms > int(eff["worker.drain_timeout_ms"]) + sleep_ms


def test_deployment_mode_is_dynamic_membership(tmp_path):
    pod = Pod(render(tmp_path, sets=["workload.kind=Deployment"]), str(tmp_path / "pod"))
    eff = print_config(pod)
    assert eff["kafka.group_instance_id"] == ""
    assert eff["worker.id"] == pod.name


def test_unknown_setting_renders_but_the_worker_refuses_it(tmp_path):
    """The chart passes `config` keys through; the worker is the judge of their names."""
    values = tmp_path / "typo.yaml"
    values.write_text("config:\n  worker.max_inflite: 5\n")
    pod = Pod(render(tmp_path, str(values)), str(tmp_path / "pod"))
    r = subprocess.run(pod.command("--print-config"), capture_output=True, text=True, timeout=30,
                       env=pod.process_env())
    assert r.returncode == 2
    assert "worker.max_inflite" in r.stderr


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_default_pod_serves_its_probes_and_stops_within_grace(tmp_path):
    # Defaults, plus AWS keys from a Secret: the worker refuses to start without credentials
    # (on EKS they come from IRSA's AWS_ROLE_ARN or Pod Identity's container endpoint).
    pod = Pod(render(tmp_path, sets=["aws.existingSecret=aiq-aws-keys"]), str(tmp_path / "pod"))
    port = free_port()
    # No broker here: a closed port. The worker must still come up, be alive, not be ready.
    dead = free_port()
    env = pod.process_env(AIQ_ADMIN_LISTEN=f"127.0.0.1:{port}",
                          AIQ_KAFKA_BROKERS=f"127.0.0.1:{dead}")
    proc = subprocess.Popen(pod.command(), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        probes = {name: pod.container[name]["httpGet"] for name in
                  ("livenessProbe", "readinessProbe", "startupProbe")}
        for p in probes.values():
            assert p["port"] == "admin"
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = http_status(base + probes["livenessProbe"]["path"])
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert proc.poll() is None, f"worker exited: {proc.stderr.read()}"
        assert status == 200  # liveness and startup: the event loop turns
        assert http_status(base + probes["startupProbe"]["path"]) == 200
        # Readiness: not joined to a group (no broker), so out of the Service's endpoints.
        assert http_status(base + probes["readinessProbe"]["path"]) == 503

        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=pod.spec["terminationGracePeriodSeconds"])
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, proc.stderr.read()
    assert took < pod.spec["terminationGracePeriodSeconds"], f"stopped in {took:.1f} s"


def test_chart_matches_the_image():
    """The Dockerfile and the chart's defaults agree on user, port and cache directory."""
    with open(os.path.join(ROOT, "Dockerfile"), encoding="utf-8") as f:
        docker = f.read()
    with open(os.path.join(CHART, "values.yaml"), encoding="utf-8") as f:
        values = yaml.safe_load(f)
    user, group = re.search(r"^USER (\d+):(\d+)$", docker, re.M).groups()
    assert (values["podSecurityContext"]["runAsUser"], values["podSecurityContext"]["runAsGroup"]) \
        == (int(user), int(group))
    assert re.search(rf"^EXPOSE {values['admin']['port']}$", docker, re.M)
    assert re.search(r'^VOLUME \["%s"\]$' % re.escape(values["cache"]["path"]), docker, re.M)
    assert re.search(r'^ENTRYPOINT \["aiq-worker"\]$', docker, re.M)
