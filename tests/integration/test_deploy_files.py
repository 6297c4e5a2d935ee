"""Static checks of the monitoring files under deploy/ (no Kafka, no worker process): the
Prometheus rules carry the seed document's alert thresholds with the right severities, every
aiq_* metric they and the Grafana dashboard query is one worker/ops/metrics.c renders (or one of
the documented future cache metrics), and the dashboard has the expected panels."""
import json
import os
import re

import pytest

yaml = pytest.importorskip("yaml")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(ROOT, "deploy", "prometheus", "aiq-rules.yml")
PROM_CONFIG = os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "aiq-dashboard.json")
METRICS_C = os.path.join(ROOT, "worker", "ops", "metrics.c")

# Not exported yet: the cache module will add them; rules and dashboard already use them.
FUTURE_METRICS = set()  # every metric the deploy files use is rendered today

DASHBOARD_PANELS = [
    "Response time p50/p95/p99 by priority",
    "Success / failure rate by status",
    "Jobs/s by priority",
    "Token usage (input/output)",
    "Model calls by code",
    "Queue wait p95 by priority",
    "In-flight vs limit",
    "Backlog per priority",
    "Consumer lag per priority topic",
    "DLQ records by kind",
    "Cache hit rate",
]

METRIC_RE = re.compile(r"\b(aiq_[a-zA-Z0-9_]+)")
# The comparison that makes an alert fire, at the very end of its expression.
TRAILING_CMP_RE = re.compile(r"(>=|<=|==|!=|>|<)\s*([0-9]+(?:\.[0-9]+)?)\s*$")


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def alerts():
    doc = load_yaml(RULES)
    out = []
    for group in doc["groups"]:
        out.extend(r for r in group["rules"] if "alert" in r)
    return out


def exported_metrics():
    """Series names worker/ops/metrics.c renders: literal "aiq_..." names, and for histograms
    (names passed to render_histo) the _bucket/_sum/_count series."""
    with open(METRICS_C, encoding="utf-8") as f:
        src = f.read()
    names = set(re.findall(r'"(?:# HELP |# TYPE )?(aiq_[a-z0-9_]+)', src))
    histos = set(re.findall(r'render_histo\(\s*&?\w+\s*,\s*"(aiq_[a-z0-9_]+)"', src))
    assert histos, "no render_histo calls found in worker/ops/metrics.c"
    for h in histos:
        names |= {h, h + "_bucket", h + "_sum", h + "_count"}
    return names


def dashboard():
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def dashboard_panels(d):
    """All non-row panels, including those nested inside collapsed rows."""
    out = []
    for p in d["panels"]:
        if p.get("type") == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def dashboard_exprs(d):
    return [t["expr"] for p in dashboard_panels(d) for t in p.get("targets", [])]


def test_rules_file_shape():
    doc = load_yaml(RULES)
    assert isinstance(doc.get("groups"), list) and doc["groups"]
    names = set()
    for group in doc["groups"]:
        assert group.get("name") and isinstance(group.get("rules"), list) and group["rules"]
        for rule in group["rules"]:
            assert "alert" in rule, f"unexpected non-alert rule {rule}"
            assert rule["alert"] not in names, f"duplicate alert {rule['alert']}"
            names.add(rule["alert"])
            assert isinstance(rule.get("expr"), str) and rule["expr"].strip()
            assert rule.get("labels", {}).get("severity") in ("warning", "critical"), rule["alert"]
            ann = rule.get("annotations", {})
            assert ann.get("summary") and ann.get("description"), rule["alert"]
            if "for" in rule:
                assert re.fullmatch(r"[0-9]+[smh]", str(rule["for"])), rule["alert"]
            # balanced brackets: a cheap syntax guard (promtool is not required by the tests)
            expr = rule["expr"]
            for o, c in ("()", "[]", "{}"):
                assert expr.count(o) == expr.count(c), f"{rule['alert']}: unbalanced {o}{c}"


# (substring identifying the signal, comparison, threshold, severity, needs `for:`)
SEED_THRESHOLDS = [
    ("aiq_job_seconds_bucket", ">", 25, "warning", True),
    ("aiq_job_seconds_bucket", ">", 30, "critical", True),
    ("aiq_jobs_finished_total", ">", 0.05, "warning", True),
    ("aiq_jobs_finished_total", ">", 0.10, "critical", True),
    ("kafka_consumergroup_lag", ">", 50, "warning", True),
    ("kafka_consumergroup_lag", ">", 100, "critical", True),
    ("aiq_cache_hits_total", "<", 0.3, "warning", True),
    ("aiq_dlq_total", ">", 0, "warning", False),
    ("up{", "==", 0, "critical", True),
]


@pytest.mark.parametrize("signal,op,value,severity,needs_for", SEED_THRESHOLDS,
                         ids=[f"{s[0]}{s[1]}{s[2]}" for s in SEED_THRESHOLDS])
def test_seed_threshold_alert(signal, op, value, severity, needs_for):
    matches = []
    for rule in alerts():
        expr = " ".join(rule["expr"].split())
        m = TRAILING_CMP_RE.search(expr)
        if signal in expr and m and m.group(1) == op and float(m.group(2)) == value:
            matches.append(rule)
    assert len(matches) == 1, f"want exactly one alert on {signal} {op} {value}, got {matches}"
    rule = matches[0]
    assert rule["labels"]["severity"] == severity, rule["alert"]
    if needs_for:
        assert rule.get("for"), f"{rule['alert']} has no for: (hysteresis)"


def test_rule_windows_and_quantile():
    exprs = [" ".join(rule["expr"].split()) for rule in alerts()]
    latency = [e for e in exprs if "aiq_job_seconds_bucket" in e]
    assert len(latency) == 2
    for e in latency:
        assert re.search(r"histogram_quantile\(\s*0\.95\s*,", e), e
        assert "[5m]" in e and re.search(r"\ble\b", e), e
    errors = [e for e in exprs if "aiq_jobs_finished_total" in e]
    assert len(errors) == 2
    for e in errors:
        assert "[5m]" in e and "failed" in e and "expired" in e, e
    lag = [e for e in exprs if "kafka_consumergroup_lag" in e]
    for e in lag:
        assert 'consumergroup="aiq-workers"' in e and "aiq.jobs." in e and "by (topic)" in e, e
    dlq = [e for e in exprs if "aiq_dlq_total" in e]
    assert dlq and all("increase(aiq_dlq_total[10m])" in e for e in dlq)


def test_rule_status_values_exist():
    """Status values the rules select on are ones metrics.c renders."""
    with open(METRICS_C, encoding="utf-8") as f:
        src = f.read()
    statuses = set(re.findall(r'"(succeeded|failed|degraded|expired|rejected)"', src))
    for rule in alerts():
        for sel in re.findall(r'status=~?"([^"]+)"', rule["expr"]):
            for s in sel.split("|"):
                assert s in statuses, f"{rule['alert']}: unknown status {s!r}"


def test_metric_names_exist_in_worker():
    exported = exported_metrics()
    used = set()
    for rule in alerts():
        used |= set(METRIC_RE.findall(rule["expr"]))
    for expr in dashboard_exprs(dashboard()):
        used |= set(METRIC_RE.findall(expr))
    assert used, "no aiq_* metrics used at all"
    unknown = used - exported - FUTURE_METRICS
    assert not unknown, f"metrics not rendered by worker/ops/metrics.c: {sorted(unknown)}"


def test_up_rule_matches_scrape_job():
    cfg = load_yaml(PROM_CONFIG)
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    for rule in alerts():
        for job in re.findall(r'up\{[^}]*job="([^"]+)"', rule["expr"]):
            assert job in jobs, f"{rule['alert']}: scrape job {job!r} not in prometheus.yml"


def test_prometheus_config():
    cfg = load_yaml(PROM_CONFIG)
    rule_files = cfg.get("rule_files") or []
    assert any(os.path.basename(r) == "aiq-rules.yml" for r in rule_files)
    for r in rule_files:
        assert os.path.exists(os.path.join(os.path.dirname(PROM_CONFIG), r)), r
    targets = [t for j in cfg["scrape_configs"] for sc in j.get("static_configs", [])
               for t in sc.get("targets", [])]
    assert "localhost:9464" in targets


def test_dashboard_loads_and_has_panels():
    d = dashboard()
    assert 36 <= d["schemaVersion"] <= 41
    assert any(i.get("name") == "DS_PROMETHEUS" and i.get("pluginId") == "prometheus"
               for i in d.get("__inputs", []))
    panels = dashboard_panels(d)
    titles = [p["title"] for p in panels]
    missing = [t for t in DASHBOARD_PANELS if t not in titles]
    assert not missing, f"dashboard lacks panels {missing}"
    ids = [p["id"] for p in d["panels"]] + [p["id"] for p in panels if p not in d["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for p in panels:
        assert p.get("gridPos"), p["title"]
        assert p.get("datasource", {}).get("uid") == "${DS_PROMETHEUS}", p["title"]
        targets = p.get("targets") or []
        assert targets, f"panel {p['title']!r} has no targets"
        for t in targets:
            assert isinstance(t.get("expr"), str) and t["expr"].strip(), p["title"]
            assert t.get("refId"), p["title"]


def test_dashboard_worker_variable():
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert "worker" in variables
    # every worker metric (all carry a worker label) is filtered by the variable; the future
    # cache metrics have no agreed labels yet and kafka-exporter metrics have no worker label
    for expr in dashboard_exprs(d):
        for sel in re.findall(r"\b(aiq_[a-zA-Z0-9_]+)(\{[^}]*\})?", expr):
            name, labels = sel
            if name in FUTURE_METRICS:
                continue
            assert '$worker' in labels, f"{name} not filtered by $worker in {expr!r}"


TASK_C = os.path.join(ROOT, "worker", "job", "task.c")  # aiq_task_summary
ERROR_STATUSES = {"failed", "expired", "degraded"}  # README "Alerts": error_rate


def error_rate_statuses(expr):
    """The statuses the numerator of an error-rate expression selects on, as a set."""
    sels = re.findall(r'aiq_jobs_finished_total\{[^}]*status=~"([^"]+)"', expr.replace('\\"', '"'))
    assert len(sels) == 1, f"one status selector expected in {expr!r}"
    return set(sels[0].split("|"))


def test_error_rate_has_one_definition():
    """The dashboard, the Prometheus rules and the worker's own alerter count the same statuses
    as errors (the dashboard showed 0 % while the rule fired when they did not)."""
    rules = [r for r in alerts() if r["alert"].startswith("AiqErrorRate")]
    assert len(rules) == 2
    for r in rules:
        assert error_rate_statuses(r["expr"]) == ERROR_STATUSES, r["alert"]
    panels = [p for p in dashboard_panels(dashboard()) if p["title"].startswith("Error rate")]
    assert len(panels) == 1
    for t in panels[0]["targets"]:
        assert error_rate_statuses(t["expr"]) == ERROR_STATUSES, t["expr"]
    # The in-worker alerter counts what aiq_task_summary() calls an error.
    with open(TASK_C, encoding="utf-8") as f:
        src = f.read()
    m = re.search(r"s\.error\s*=([^;]+);", src)
    assert m, "aiq_task_summary no longer sets s.error"
    worker = {s.lower() for s in re.findall(r"AIQ_RESULT_([A-Z]+)", m.group(1))}
    assert worker == ERROR_STATUSES, worker
