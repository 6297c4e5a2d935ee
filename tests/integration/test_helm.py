"""The helm chart (helm/aiq-worker), checked without a cluster.

`helm lint --strict` and `helm template` (helm built by tools/deploy-tools.sh) render the chart
with its defaults and with ci/values-all.yaml (every option on); kubeconform validates every
rendered object in strict mode against schemas generated offline from Kubernetes' OpenAPI
document and the prometheus-operator and KEDA CRDs (tools/deploy/kube-schemas.py), with no
kind skipped. The tests then read the objects: static membership from the pod name, a grace
period longer than the drain, secrets only by reference, one KEDA trigger per priority topic,
the alert rules and dashboard equal to deploy/. Broken values must be refused, by helm or by
kubeconform.
"""
import json
import os
import re
import subprocess

import pytest
import yaml

from aiqtest import ROOT, binary

BIN = os.path.join(ROOT, "tools", "bin")
HELM = os.path.join(BIN, "helm")
KUBECONFORM = os.path.join(BIN, "kubeconform")
CHART = os.path.join(ROOT, "helm", "aiq-worker")
VALUES_ALL = os.path.join(CHART, "ci", "values-all.yaml")
RULES = os.path.join(ROOT, "deploy", "prometheus", "aiq-rules.yml")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "aiq-dashboard.json")
PRIORITIES = ["critical", "high", "normal", "low"]


def pinned_kube_version():
    """The Kubernetes version the schemas were made for: one pin, in tools/deploy-tools.sh."""
    with open(os.path.join(ROOT, "tools", "deploy-tools.sh"), encoding="utf-8") as f:
        m = re.search(r"^KUBE_VERSION=(\S+)", f.read(), re.M)
    assert m, "KUBE_VERSION= not found in tools/deploy-tools.sh"
    return m.group(1)


KUBE_VERSION = pinned_kube_version()
SCHEMAS = os.environ.get("AIQ_KUBE_SCHEMAS") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "aiq", "kube-schemas")


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory):
    """helm keeps its config, cache and data in a scratch directory, not in $HOME."""
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    for var in ("HELM_CONFIG_HOME", "HELM_CACHE_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    return env


def need(path):
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} missing: run tools/deploy-tools.sh (tools/bootstrap.sh does)")


def helm(env, *args):
    need(HELM)
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120, env=env)


def template(env, *values, sets=(), check=True):
    args = ["template", "aiq", CHART, "--kube-version", KUBE_VERSION]
    for v in values:
        args += ["-f", v]
    for s in sets:
        args += ["--set", s]
    r = helm(env, *args)
    if check:
        assert r.returncode == 0, f"helm {' '.join(args)}:\n{r.stderr}"
    return r


def objects(manifest):
    return [d for d in yaml.safe_load_all(manifest) if d]


def kubeconform(manifest):
    """Runs kubeconform -strict on the manifest; returns (exit code, its JSON report)."""
    need(KUBECONFORM)
    schema_dir = os.path.join(SCHEMAS, f"v{KUBE_VERSION}-standalone-strict")
    if not os.path.isdir(schema_dir):
        pytest.fail(f"{schema_dir} missing: run tools/deploy-tools.sh")
    r = subprocess.run(
        [KUBECONFORM, "-strict", "-summary", "-output", "json", "-kubernetes-version", KUBE_VERSION,
         "-schema-location", SCHEMAS, "-"],
        input=manifest, capture_output=True, text=True, timeout=120)
    try:
        report = json.loads(r.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"kubeconform printed no JSON (exit {r.returncode}): {r.stdout}{r.stderr}")
    return r.returncode, report


def assert_valid(manifest):
    rc, report = kubeconform(manifest)
    bad = [res for res in report.get("resources", []) if res.get("status") != "statusValid"]
    assert rc == 0 and not bad, f"kubeconform: {json.dumps(bad, indent=1)}"
    summary = report["summary"]
    # Every object was checked against a schema: none skipped for want of one.
    assert summary["skipped"] == 0 and summary["invalid"] == 0 and summary["errors"] == 0, summary
    assert summary["valid"] == len(objects(manifest)), summary


def by_kind(objs):
    out = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


def one(objs, kind):
    found = by_kind(objs).get(kind, [])
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def conf_lines(configmap):
    """The worker's config file as {key: value}; each key at most once."""
    conf = {}
    for line in configmap["data"]["aiq-worker.conf"].splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a 'key = value' line: {line!r}"
        assert key.strip() not in conf, f"{key.strip()} set twice"
        conf[key.strip()] = value.strip()
    return conf


def worker_container(workload):
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["worker"]
    return containers[0]


def env_of(container):
    return {e["name"]: e for e in container["env"]}


# --- one source of truth ------------------------------------------------------------------


@pytest.mark.parametrize("src,copy", [
    (RULES, os.path.join(CHART, "files", "aiq-rules.yml")),
    (DASHBOARD, os.path.join(CHART, "files", "aiq-dashboard.json")),
])
def test_chart_files_equal_deploy_files(src, copy):
    with open(src, "rb") as a, open(copy, "rb") as b:
        assert a.read() == b.read(), (
            f"{os.path.relpath(copy, ROOT)} differs from {os.path.relpath(src, ROOT)}: "
            f"deploy/ is the source, run: cp {os.path.relpath(src, ROOT)} {os.path.relpath(copy, ROOT)}")


# --- lint ---------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[], [VALUES_ALL]], ids=["default", "all-on"])
def test_helm_lint_strict(helm_env, values):
    args = ["lint", "--strict", CHART, "--kube-version", KUBE_VERSION]
    for v in values:
        args += ["-f", v]
    r = helm(helm_env, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in r.stdout + r.stderr


# --- default values -----------------------------------------------------------------------


def test_default_render(helm_env):
    manifest = template(helm_env).stdout
    assert_valid(manifest)
    objs = objects(manifest)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["ConfigMap", "PodDisruptionBudget", "Service", "ServiceAccount", "StatefulSet"]

    sts = one(objs, "StatefulSet")
    spec = sts["spec"]
    assert spec["replicas"] == 2
    assert spec["podManagementPolicy"] == "Parallel"
    svc = one(objs, "Service")
    assert spec["serviceName"] == svc["metadata"]["name"] and svc["spec"]["clusterIP"] == "None"
    pod = spec["template"]["spec"]
    c = worker_container(sts)
    assert c["args"] == ["-c", "/etc/aiq/aiq-worker.conf"]

    # Static membership: group.instance.id is the pod name, through the downward API.
    names = [e["name"] for e in c["env"]]
    env = env_of(c)
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["AIQ_KAFKA_GROUP_INSTANCE_ID"]["value"] == "$(POD_NAME)"
    # $(VAR) only expands variables defined earlier in the list.
    assert names.index("POD_NAME") < names.index("AIQ_KAFKA_GROUP_INSTANCE_ID")
    assert env["AIQ_WORKER_ID"]["value"] == "$(POD_NAME)"
    # No secrets unless asked for.
    assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in c["env"])

    conf = conf_lines(one(objs, "ConfigMap"))
    assert conf["kafka.brokers"] == "kafka:9092"
    assert conf["kafka.group_id"] == "aiq-workers"
    assert conf["worker.drain_timeout_ms"] == "30000"
    assert conf["worker.max_inflight"] == "10"
    assert "kafka.group_instance_id" not in conf  # per pod, from the environment

    # Grace period: drain (30 s) + margin (10 s), no preStop by default.
    assert pod["terminationGracePeriodSeconds"] == 40
    assert pod["terminationGracePeriodSeconds"] * 1000 > int(conf["worker.drain_timeout_ms"])
    assert "lifecycle" not in c

    # Probes on the worker's own endpoints, on the port admin.listen opens.
    port = c["ports"][0]
    assert port["name"] == "admin" and conf["admin.listen"] == f"0.0.0.0:{port['containerPort']}"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"

    # The cache: an emptyDir at cache.path.
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["cache"] == conf["cache.path"] == "/var/lib/aiq/cache"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["cache"]
    assert "volumeClaimTemplates" not in spec

    assert c["resources"]["requests"] == {"cpu": "250m", "memory": "256Mi"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]


# --- every option on ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_on(helm_env):
    manifest = template(helm_env, VALUES_ALL).stdout
    return manifest, objects(manifest)


def test_all_on_render_is_valid(all_on):
    manifest, objs = all_on
    assert_valid(manifest)
    kinds = {k: len(v) for k, v in by_kind(objs).items()}
    assert kinds == {
        "ServiceAccount": 1, "ConfigMap": 2, "Service": 1, "StatefulSet": 1,
        "PodDisruptionBudget": 1, "ScaledObject": 1, "TriggerAuthentication": 1,
        "ServiceMonitor": 1, "PrometheusRule": 1,
    }, kinds  # no HorizontalPodAutoscaler: KEDA owns the HPA when it is on


def test_all_on_statefulset(all_on):
    _, objs = all_on
    sts = one(objs, "StatefulSet")
    spec = sts["spec"]
    assert "replicas" not in spec  # the autoscaler owns it
    pod = spec["template"]["spec"]
    c = worker_container(sts)
    env = env_of(c)
    assert env["AIQ_KAFKA_GROUP_INSTANCE_ID"]["value"] == "$(POD_NAME)"

    # 45 s drain + 5 s preStop + 10 s margin.
    assert pod["terminationGracePeriodSeconds"] == 60
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]

    # Kafka SASL and AWS keys only as references to existing Secrets.
    for name, key in (("AIQ_KAFKA_RDKAFKA_SASL_USERNAME", "username"),
                      ("AIQ_KAFKA_RDKAFKA_SASL_PASSWORD", "password")):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "aiq-kafka-credentials", "key": key}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "aiq-aws-keys", "key": name}
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert env["AWS_REGION"]["value"] == "eu-central-1"

    conf = conf_lines(by_kind(objs)["ConfigMap"][0])
    assert conf["kafka.rdkafka.security.protocol"] == "SASL_SSL"
    assert conf["kafka.rdkafka.sasl.mechanisms"] == "SCRAM-SHA-512"
    assert conf["kafka.rdkafka.ssl.ca.location"] == "/etc/aiq-kafka-ca/ca.crt"
    assert conf["worker.drain_timeout_ms"] == "45000"
    assert conf["cache.max_bytes"] == "1073741824"  # not 1.073741824e+09
    assert conf["bedrock.adaptive"] == "1"  # YAML true -> the worker's 0/1
    assert conf["worker.operations_file"] == "/etc/aiq/operations.json"
    cm = by_kind(objs)["ConfigMap"][0]
    assert json.loads(cm["data"]["operations.json"])["operations"]["*"]["template"] == "{{payload}}"
    for line in cm["data"]["aiq-worker.conf"].splitlines():
        assert not re.search(r"password|secret_access", line, re.I), line

    # The cache on a PVC per pod.
    claims = spec["volumeClaimTemplates"]
    assert [v["metadata"]["name"] for v in claims] == ["cache"]
    assert claims[0]["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert "cache" not in {v["name"] for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["cache"] == conf["cache.path"]
    assert mounts["kafka-ca"] == "/etc/aiq-kafka-ca"

    # IRSA: the role on the ServiceAccount the pods run as.
    sa = one(objs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == \
        "arn:aws:iam::123456789012:role/aiq-worker-bedrock"
    assert pod["serviceAccountName"] == sa["metadata"]["name"] == "aiq-worker"


def test_all_on_keda_triggers(all_on):
    _, objs = all_on
    so = one(objs, "ScaledObject")
    sts = one(objs, "StatefulSet")
    assert so["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts["metadata"]["name"]}
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (2, 12)
    triggers = so["spec"]["triggers"]
    kafka = [t for t in triggers if t["type"] == "kafka"]
    assert [t["metadata"]["topic"] for t in kafka] == [f"aiq.jobs.{p}" for p in PRIORITIES]
    ta = one(objs, "TriggerAuthentication")
    thresholds = {"critical": "5", "high": "20", "normal": "100", "low": "1000"}
    for p, t in zip(PRIORITIES, kafka):
        md = t["metadata"]
        assert md["consumerGroup"] == "aiq-workers"
        assert md["bootstrapServers"] == "b-1.kafka.example.com:9096,b-2.kafka.example.com:9096"
        assert md["lagThreshold"] == thresholds[p]
        assert (md["sasl"], md["tls"]) == ("scram_sha512", "enable")
        assert t["authenticationRef"]["name"] == ta["metadata"]["name"]
    # The CPU target rides along as a KEDA trigger.
    cpu = [t for t in triggers if t["type"] == "cpu"]
    assert len(cpu) == 1 and cpu[0]["metadata"]["value"] == "75"
    assert len(triggers) == 5
    refs = {r["parameter"]: (r["name"], r["key"]) for r in ta["spec"]["secretTargetRef"]}
    assert refs == {"username": ("aiq-kafka-credentials", "username"),
                    "password": ("aiq-kafka-credentials", "password"),
                    "ca": ("aiq-kafka-ca", "ca.crt")}


def test_all_on_monitoring(all_on):
    _, objs = all_on
    sm = one(objs, "ServiceMonitor")
    svc = one(objs, "Service")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "admin"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    for k, v in sm["spec"]["selector"]["matchLabels"].items():
        assert svc["spec"]["selector"][k] == v

    rule = one(objs, "PrometheusRule")
    with open(RULES, encoding="utf-8") as f:
        groups = yaml.safe_load(f)["groups"]
    assert rule["spec"]["groups"] == groups
    alerts = [r["alert"] for g in groups for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 8  # the seed's thresholds: response time, errors, queue, cache

    dash = [o for o in by_kind(objs)["ConfigMap"] if o["metadata"]["name"].endswith("-dashboard")]
    assert len(dash) == 1
    assert dash[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dash[0]["metadata"]["annotations"]["grafana_folder"] == "aiq"
    with open(DASHBOARD, encoding="utf-8") as f:
        assert json.loads(dash[0]["data"]["aiq-dashboard.json"]) == json.load(f)


def test_rendered_config_is_accepted_by_the_worker(all_on, tmp_path):
    """The real aiq-worker reads the rendered file and environment: every key exists and
    every value is in range (--print-config parses everything, then exits)."""
    _, objs = all_on
    conf = tmp_path / "aiq-worker.conf"
    conf.write_text(by_kind(objs)["ConfigMap"][0]["data"]["aiq-worker.conf"])
    sts = one(objs, "StatefulSet")
    c = worker_container(sts)
    pod_name = sts["metadata"]["name"] + "-0"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIQ_", "AWS_"))}
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = e["value"].replace("$(POD_NAME)", pod_name)
        elif "fieldRef" in e["valueFrom"]:
            env[e["name"]] = pod_name
        else:
            env[e["name"]] = "from-secret-" + e["valueFrom"]["secretKeyRef"]["key"]
    assert c["args"][:2] == ["-c", "/etc/aiq/aiq-worker.conf"]
    r = subprocess.run([binary("aiq-worker"), "-c", str(conf), "--print-config"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    eff = dict(line.split(" = ", 1) for line in r.stdout.splitlines() if " = " in line)
    assert eff["kafka.group_instance_id"] == pod_name
    assert eff["kafka.group_protocol"] == "consumer"  # static membership under KIP-848 too
    assert eff["worker.id"] == pod_name
    assert eff["worker.drain_timeout_ms"] == "45000"
    assert eff["worker.max_inflight"] == "50"
    assert eff["cache.max_bytes"] == "1073741824"
    assert eff["bedrock.region"] == "eu-central-1"
    assert eff["admin.listen"] == "0.0.0.0:9464"
    assert eff["kafka.rdkafka.sasl.username"] == "from-secret-username"
    assert "from-secret-password" not in r.stdout  # hidden by --print-config


def test_hpa_on_cpu_without_keda(helm_env):
    manifest = template(helm_env, VALUES_ALL, sets=["keda.enabled=false"]).stdout
    assert_valid(manifest)
    objs = objects(manifest)
    kinds = by_kind(objs)
    assert "ScaledObject" not in kinds and "TriggerAuthentication" not in kinds
    hpa = one(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 12)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["averageUtilization"] == 75


def test_deployment_mode(helm_env):
    manifest = template(helm_env, sets=["workload.kind=Deployment"]).stdout
    assert_valid(manifest)
    objs = objects(manifest)
    assert "StatefulSet" not in by_kind(objs)
    dep = one(objs, "Deployment")
    env = env_of(worker_container(dep))
    # Pod names of a Deployment change on every restart: dynamic membership.
    assert "AIQ_KAFKA_GROUP_INSTANCE_ID" not in env
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 40


# --- broken values are refused ------------------------------------------------------------


@pytest.mark.parametrize("broken,needle", [
    # a misspelt field in a pass-through list: strict schemas refuse unknown properties
    ({"extraEnv": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPth": "metadata.name"}}}]},
     "fieldPth"),
    # a quantity that is neither a string nor a number
    ({"resources": {"limits": {"memory": ["1Gi"]}}}, "memory"),
    # a string where Kubernetes wants an integer
    ({"podSecurityContext": {"runAsUser": "root"}}, "runAsUser"),
    # a misspelt field in the pass-through update strategy
    ({"workload": {"updateStrategy": {"type": "RollingUpdate",
                                      "rollingUpdate": {"partitoin": 0}}}}, "partitoin"),
], ids=["unknown-field", "quantity-list", "uid-string", "strategy-typo"])
def test_kubeconform_rejects_broken_values(helm_env, tmp_path, broken, needle):
    values = tmp_path / "broken.yaml"
    values.write_text(yaml.safe_dump(broken))
    manifest = template(helm_env, str(values)).stdout
    rc, report = kubeconform(manifest)
    assert rc != 0
    invalid = [r for r in report["resources"] if r["status"] == "statusInvalid"]
    assert len(invalid) == 1, report
    assert needle in json.dumps(invalid[0])
    assert report["summary"]["invalid"] == 1


@pytest.mark.parametrize("sets,needle", [
    (["config.admin\\.listen=0.0.0.0:1"], "config.admin.listen is set by the chart"),
    # values.schema.json: types, enums and no unknown keys
    (["resources=oops"], "at '/resources': got string, want object"),
    (["replica=3"], "additional properties 'replica' not allowed"),
    (["workload.kind=DaemonSet"], "at '/workload/kind': value must be one of"),
    (["kafka.sasl.mechanism=GSSAPI"], "at '/kafka/sasl/mechanism': value must be one of"),
    (["kafka.groupProtocol=eager"], "at '/kafka/groupProtocol': value must be one of"),
    (["drain.timeoutMs=-1"], "at '/drain/timeoutMs'"),
    # the templates' own checks
    (["workload.kind=Deployment", "cache.persistence.enabled=true"],
     "cache.persistence needs workload.kind StatefulSet"),
    (["kafka.sasl.enabled=true"], "kafka.sasl.existingSecret is required"),
    (["autoscaling.enabled=true", "resources.requests=null"], "needs resources.requests.cpu"),
], ids=["resources-string", "unknown-key", "bad-kind", "sasl-mechanism", "group-protocol",
         "negative-drain",
        "managed-key", "pvc-in-deployment", "sasl-no-secret", "hpa-no-cpu-request"])
def test_helm_refuses_bad_values(helm_env, sets, needle):
    r = template(helm_env, sets=sets, check=False)
    assert r.returncode != 0, f"helm template accepted {sets}"
    assert needle in r.stderr, r.stderr


def test_helm_refuses_non_integer_setting(helm_env, tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text("config:\n  worker.max_inflight: 2.5\n")
    r = template(helm_env, str(values), check=False)
    assert r.returncode != 0
    assert "config.worker.max_inflight: 2.5 is not an integer" in r.stderr


def test_chart_app_version_is_the_project_version():
    """CMakeLists.txt holds the one version; the chart's appVersion (the image tag it deploys
    by default) must follow it."""
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        want = re.search(r"project\(aiq\s+VERSION\s+([0-9.]+)", f.read()).group(1)
    with open(os.path.join(CHART, "Chart.yaml")) as f:
        chart = yaml.safe_load(f)
    assert chart["appVersion"] == want
