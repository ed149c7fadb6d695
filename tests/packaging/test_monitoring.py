"""Recording rules, alerts and the Grafana dashboard: promtool unit tests, every PromQL expression
parses, every metric name is one the operator or vLLM exports, and the chart ships them verbatim."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from specops.controller import metrics as operator_metrics
from tests.support.paths import CHART, ROOT
from tests.support.tools import run, tool

RULES = CHART / "files" / "rules.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
RULES_TEST = Path(__file__).parent / "rules_test.yaml"
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "${namespace}": "serving",
    "$namespace": "serving",
    "${name}": "chat",
    "$name": "chat",
}
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>[a-zA-Z_]\w*)\)$")
METRIC_NAME = re.compile(r"\b((?:vllm:|specops_)[a-zA-Z_:][a-zA-Z0-9_:]*)")
SERIES_LABELS = {"specops_name", "specops_pool"}  # labels the PodMonitor gives vLLM series


def promtool() -> str:
    return tool("promtool", "apt-get install prometheus (Debian's package ships promtool)")


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target, annotation and variable query, variables substituted."""
    doc = dashboard()
    found: list[tuple[str, str]] = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} target {target['refId']}", target["expr"]))
    for ann in doc["annotations"]["list"]:
        if "expr" in ann:
            found.append((f"annotation {ann['name']!r}", ann["expr"]))
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            match = LABEL_VALUES.match(var["definition"])
            assert match, f"variable {var['name']}: expected label_values(<selector>, <label>)"
            found.append((f"variable {var['name']!r}", match["selector"]))
    out = []
    for where, expr in found:
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"{where}: unknown Grafana variable in {expr!r}"
        out.append((where, expr))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(r.get("record") or r["alert"], r["expr"]) for g in groups for r in g["rules"]]


# -------------------------------------------------------------------------------------- promtool


def test_promtool_check_rules() -> None:
    out = run([promtool(), "check", "rules", str(RULES)])
    assert "SUCCESS: 7 rules found" in out.stdout, out.stdout


def test_promtool_unit_tests() -> None:
    out = run([promtool(), "test", "rules", str(RULES_TEST)], cwd=RULES_TEST.parent)
    assert "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_every_alert_is_unit_tested() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    tested = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case["exp_alerts"]}
    alerts = {name for name, _ in rule_exprs() if not name.startswith("specops:")}
    assert alerts == tested
    recorded = {name for name, _ in rule_exprs() if name.startswith("specops:")}
    assert recorded == {c["expr"] for t in tests for c in t.get("promql_expr_test", [])}


def test_alerts_are_labelled_and_explained() -> None:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
                assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_dashboard_exprs_parse(tmp_path: Path) -> None:
    """Each expression becomes a recording rule; promtool parses them all (and names the bad one)."""
    exprs = dashboard_exprs()
    rules = [{"record": f"dashboard:expr_{i}", "expr": expr} for i, (_, expr) in enumerate(exprs)]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run([promtool(), "check", "rules", str(path)], check=False)
    where = "\n".join(f"expr_{i}: {w}" for i, (w, _) in enumerate(exprs))
    assert out.returncode == 0, f"{out.stdout}{out.stderr}\n{where}"
    assert f"SUCCESS: {len(exprs)} rules found" in out.stdout


# ------------------------------------------------------------------------------------ metric names


def operator_metric_names() -> set[str]:
    names: set[str] = set()
    for value in vars(operator_metrics).values():
        if isinstance(value, Counter):
            names.add(f"{value._name}_total")
        elif isinstance(value, Gauge):
            names.add(value._name)
        elif isinstance(value, Histogram):
            names |= {f"{value._name}_{s}" for s in ("bucket", "sum", "count")}
    return names


def vllm_metric_names() -> set[str]:
    """Every vLLM series the emulator and the operator's queries know, with exposition suffixes."""
    sources = [
        ROOT / "testkit/specops_testkit/emulator/metrics.py",
        ROOT / "operator/specops/metrics/promql.py",
    ]
    bases = {m for p in sources for m in re.findall(r'"(vllm:[a-z_]+)', p.read_text())}
    return {f"{b}{suffix}" for b in bases for suffix in ("", "_total", "_bucket", "_sum", "_count")}


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_metric_names_exist(source: str) -> None:
    known = operator_metric_names() | vllm_metric_names() | SERIES_LABELS
    recorded = {name for name, _ in rule_exprs() if name.startswith("specops:")}
    exprs = rule_exprs() if source == "rules" else dashboard_exprs()
    unknown = {
        (where, name)
        for where, expr in exprs
        for name in METRIC_NAME.findall(expr)
        if name not in known | recorded
    }
    assert not unknown, sorted(unknown)


def test_operator_metric_names_used_by_the_alerts() -> None:
    names = operator_metric_names()
    assert {"specops_mode", "specops_prometheus_errors_total", "specops_decisions_total"} <= names


# ------------------------------------------------------------------------------------- dashboard


def test_dashboard_json() -> None:
    doc = dashboard()
    assert doc["uid"] == "specops-overview"
    titles = {p["title"] for p in doc["panels"]}
    assert {
        "Mode",
        "Acceptance rate per pool",
        "Acceptance per draft position",
        "Time per output token P50 / P99",
        "Time to first token P50 / P99",
        "Request rate",
        "KV cache usage",
    } <= titles
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    annotations = {a["name"]: a for a in doc["annotations"]["list"]}
    assert "specops_decisions_total" in annotations["Decisions (all resources)"]["expr"]


# ------------------------------------------------------------------------------ shipped by the chart


def test_prometheus_rule_is_the_rules_file(render: Any) -> None:
    docs = render({"prometheusRule": {"enabled": True, "labels": {"release": "prom"}}})
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    assert rule["metadata"]["labels"]["release"] == "prom"


def test_dashboard_configmap_is_the_dashboard_file(render: Any) -> None:
    docs = render({"dashboard": {"enabled": True}})
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["specops.json"]) == dashboard()
