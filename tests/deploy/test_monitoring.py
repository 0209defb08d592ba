"""Monitoring as objects (contract §7): the PodMonitor, the PrometheusRule with the alerts, run
through promtool's checks and unit tests, and the Grafana dashboard, whose every query names
only metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import (
    DEPLOY,
    ENTRY_POINTS,
    REPO,
    Resource,
    documents,
    one,
    render,
)
from tests.support.promtool import promtool

RULE = DEPLOY / "monitoring" / "prometheusrule.yaml"
POD_MONITOR = DEPLOY / "monitoring" / "podmonitor.yaml"
DASHBOARD = DEPLOY / "grafana-dashboard" / "s3-events-handler.json"
RULE_TESTS = Path(__file__).with_name("alerts_test.yaml")
OPERATIONS = REPO / "docs" / "operations.md"

# The alerts issue 17 asks for, and the one there was before.
ALERTS = {
    "S3EventsDeadLettersWaiting",
    "S3EventsStalled",
    "S3EventsBrokerDisconnected",
    "S3EventsNotReady",
    "S3EventsDownstreamErrors",
    "S3EventsMetricsAbsent",
}
# What the service exposes: every metric adapters/metrics.py makes.
SERVICE_METRICS = set(
    re.findall(
        r"\b(?:Counter|Gauge|Histogram|Summary)\(\s*\"([a-z0-9_:]+)\"",
        (REPO / "adapters" / "metrics.py").read_text(),
    )
)
# RabbitMQ's rabbitmq_prometheus plugin, per queue (GET /metrics/per-object): ready messages,
# and all of them (ready and unacknowledged). kube-state-metrics: the pods' ready condition.
OTHER_EXPORTERS = {
    "rabbitmq_queue_messages",
    "rabbitmq_queue_messages_ready",
    "kube_pod_status_ready",
}
KNOWN_METRICS = SERVICE_METRICS | OTHER_EXPORTERS
SERIES_SUFFIXES = ("_bucket", "_count", "_sum")
# PromQL words that look like metric names, and Grafana's variables for the dashboard.
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
PROMQL_OPERATORS = {"and", "or", "unless", "bool", "offset"}
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$namespace": "s3-components",
    "$job": "s3-components/s3-events-handler",
    "$queue": "s3-events",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not its functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    grouping = "|".join(PROMQL_KEYWORDS)
    text = re.sub(rf"\b({grouping})\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for found in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = found.group()
        if text[found.end() :].lstrip().startswith("(") or word in PROMQL_OPERATORS:
            continue  # a function, or an operator
        names.add(word)
    return names


def known(name: str) -> bool:
    if name in KNOWN_METRICS:
        return True
    return any(name.endswith(s) and name.removesuffix(s) in KNOWN_METRICS for s in SERIES_SUFFIXES)


def rule() -> Resource:
    [found] = documents(RULE)
    return found


def alerts() -> list[Resource]:
    return [r for group in rule()["spec"]["groups"] for r in group["rules"]]


def dashboard() -> Resource:
    found: Resource = json.loads(DASHBOARD.read_text())
    return found


def panel_queries() -> dict[str, list[str]]:
    """Each panel's title and the PromQL of its targets."""
    return {
        panel["title"]: [target["expr"] for target in panel["targets"]]
        for panel in dashboard()["panels"]
    }


# --- the names -------------------------------------------------------------------------


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(s3_events_duration_seconds_bucket{job=~"$job",'
        ' outcome="done"}[$__rate_interval]))) and on (job) time() - max(up offset 1h) > 0.5e3'
    )
    assert metric_names(expr) == {"s3_events_duration_seconds_bucket", "up"}
    assert "s3_events_total" in SERVICE_METRICS
    assert "s3_events_duration_seconds" in SERVICE_METRICS
    assert known("s3_events_duration_seconds_bucket")
    assert not known("s3_events_duration_bucket")


def test_the_alerts_read_only_metrics_that_exist() -> None:
    unknown = {(a["alert"], n) for a in alerts() for n in metric_names(a["expr"]) if not known(n)}
    assert unknown == set()


def test_every_dashboard_query_reads_only_metrics_that_exist() -> None:
    unknown = {
        (title, name)
        for title, queries in panel_queries().items()
        for expr in queries
        for name in metric_names(expr)
        if not known(name)
    }
    assert unknown == set()


# --- the PrometheusRule -------------------------------------------------------------------


def test_the_rule_has_the_alerts_each_with_a_severity_and_a_summary() -> None:
    found = rule()
    assert found["apiVersion"] == "monitoring.coreos.com/v1"
    assert found["kind"] == "PrometheusRule"
    names = [a["alert"] for a in alerts()]
    assert sorted(names) == sorted(ALERTS)
    for alert in alerts():
        assert set(alert) == {"alert", "expr", "for", "labels", "annotations"}, alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert set(alert["annotations"]) == {"summary", "description"}


def test_the_dead_letter_alert_holds_while_they_wait() -> None:
    """Queue depth, not increase(): an increase over 15 minutes clears while they still wait."""
    [alert] = [a for a in alerts() if a["alert"] == "S3EventsDeadLettersWaiting"]
    assert metric_names(alert["expr"]) == {"rabbitmq_queue_messages"}
    assert 'queue="s3-events.dead-letter"' in alert["expr"]
    assert "increase" not in alert["expr"]


def test_the_rules_pass_promtool_and_their_unit_tests(tmp_path: Path) -> None:
    checker = promtool()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule()["spec"], sort_keys=False))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    for command in (["check", "rules", "rules.yaml"], ["test", "rules", RULE_TESTS.name]):
        done = subprocess.run(
            [checker, *command], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_unit_tests_cover_every_alert() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    covered = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert covered == ALERTS


def test_the_operations_doc_explains_every_alert_and_points_at_the_objects() -> None:
    text = OPERATIONS.read_text()
    for name in ALERTS:
        assert f"**{name}**" in text, name
    for path in (RULE, POD_MONITOR, DASHBOARD, RULE_TESTS):
        assert str(path.relative_to(REPO)) in text, path
    # The rules live in the PrometheusRule only, not in a copy in Markdown.
    assert "groups:" not in text


# --- the dashboard --------------------------------------------------------------------------


def test_the_dashboard_shows_what_an_operator_looks_at() -> None:
    """Event rate by outcome, duration and age quantiles, in progress, dead letters,
    downstream errors by system, reconnects."""
    found = dashboard()
    assert found["uid"] == "s3-events-handler"
    queries = [expr for exprs in panel_queries().values() for expr in exprs]
    assert all(queries) and all(panel["targets"] for panel in found["panels"])

    def some(pattern: str) -> bool:
        return any(re.search(pattern, expr) for expr in queries)

    assert some(r"sum by \(outcome\) \(rate\(s3_events_total\{")
    assert some(r"histogram_quantile\(0\.95, .*s3_events_duration_seconds_bucket")
    assert some(r"histogram_quantile\(0\.95, .*s3_events_event_age_seconds_bucket")
    assert some(r"s3_events_in_progress")
    assert some(r'rabbitmq_queue_messages\{queue="\$queue\.dead-letter"\}')
    assert some(r'outcome="dead_lettered"')
    assert some(r"sum by \(system\) \(rate\(s3_events_downstream_errors_total\{")
    assert some(r"s3_events_broker_reconnects_total")


def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool checks each query as a recording rule, Grafana's variables filled in."""
    checker = promtool()
    rules = []
    for n, expr in enumerate(e for exprs in panel_queries().values() for e in exprs):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    (tmp_path / "queries.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    done = subprocess.run(
        [checker, "check", "rules", "queries.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- rendered ---------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_the_pod_monitor_scrapes_the_metrics_port_of_its_own_pods(
    kustomize: list[str], tmp_path: Path, entry: str
) -> None:
    rendered = render(kustomize, tmp_path, entry, ["monitoring"])
    monitor = one(rendered, "PodMonitor")
    deployment = one(rendered, "Deployment")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    # The same pods as the Deployment's: in an overlay, that environment's only.
    assert selector == deployment["spec"]["selector"]["matchLabels"]
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    ports = {port["name"] for c in containers for port in c["ports"]}
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    rule = one(rendered, "PrometheusRule")
    assert rule["spec"] == documents(RULE)[0]["spec"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_the_queue_alerts_name_the_queues_the_service_reads(
    kustomize: list[str], tmp_path: Path, entry: str
) -> None:
    rendered = render(kustomize, tmp_path, entry, ["monitoring"])
    [settings] = [
        r["data"] for r in rendered if r["kind"] == "ConfigMap" and "S3_EVENTS_QUEUE" in r["data"]
    ]
    queue = settings["S3_EVENTS_QUEUE"]
    groups = one(rendered, "PrometheusRule")["spec"]["groups"]
    exprs = [r["expr"] for group in groups for r in group["rules"]]
    named = {q for expr in exprs for q in re.findall(r'queue="([^"]*)"', expr)}
    assert named == {queue, f"{queue}.dead-letter"}


def test_the_dashboard_is_a_configmap_grafanas_sidecar_loads(
    kustomize: list[str], tmp_path: Path
) -> None:
    rendered = render(kustomize, tmp_path, ".", ["grafana-dashboard"])
    [configmap] = [
        r for r in rendered if r["kind"] == "ConfigMap" and DASHBOARD.name in r.get("data", {})
    ]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"][DASHBOARD.name]) == dashboard()
