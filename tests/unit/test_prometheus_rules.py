"""The Prometheus rules: every alert labelled and annotated, linked to its README runbook,
covered by promtool tests that fire it and keep it quiet, and reading real metric names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.metrics import catalogue as metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "prometheus"
README = (ROOT / "README.md").read_text(encoding="utf-8")
RUNBOOK_BASE = "https://github.com/celery-jobmon/celery-jobmon/blob/main/README.md#"


def _rules(kind: str) -> list[dict[str, Any]]:
    rules = []
    for path in sorted((PROMETHEUS / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [rule for rule in group["rules"] if kind in rule]
    return rules


ALERTS = {rule["alert"]: rule for rule in _rules("alert")}
RECORDS = {rule["record"] for rule in _rules("record")}
UNIT_TESTS = [yaml.safe_load(path.read_text())
              for path in sorted((PROMETHEUS / "tests").glob("*.yml"))]


def _exposed_names() -> set[str]:
    names = set()
    for spec in metrics.CATALOGUE:
        base = "celery_" + spec.name
        suffixes = {"histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}
        names |= {base + suffix for suffix in suffixes.get(spec.kind, ("",))}
    return names


def test_the_alert_list():
    assert sorted(ALERTS) == [
        "CeleryJobmonBrokerDisconnected", "CeleryJobmonExporterDown",
        "CeleryJobmonHistoryFailing", "CeleryJobmonNoEvents",
        "CeleryQueueBacklogHigh", "CeleryQueueLatencyHigh", "CeleryQueueNoConsumers",
        "CeleryTaskFailureRatioHigh", "CeleryTaskFirstFailure", "CeleryTaskLost", "CeleryTaskSlow",
        "CeleryTaskStuck", "CeleryWorkerDown",
    ]


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_has_severity_and_the_four_annotations(name):
    rule = ALERTS[name]
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert sorted(rule["annotations"]) == ["dashboard", "description", "runbook_url", "summary"]
    assert rule["annotations"]["runbook_url"] == RUNBOOK_BASE + name.lower()
    assert rule["annotations"]["dashboard"].startswith("http://localhost:3000/d/celery-jobmon-")


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_runbook_anchor_exists_in_the_readme(name):
    # GitHub's anchor of a heading "#### CeleryTaskStuck" is "#celerytaskstuck".
    assert re.search(rf"^#+ {name}$", README, re.MULTILINE), (
        f"README.md needs a heading '#### {name}' in its Alerts section")


def _promtool_cases() -> list[tuple[str, bool]]:
    """(alertname, expects firing alerts) for every alert_rule_test case."""
    return [(case["alertname"], bool(case.get("exp_alerts")))
            for suite in UNIT_TESTS for test in suite["tests"]
            for case in test.get("alert_rule_test", [])]


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_promtool_tests_fire_the_alert_and_keep_it_quiet(name):
    cases = _promtool_cases()
    assert (name, True) in cases, f"no promtool case where {name} fires"
    assert (name, False) in cases, f"no promtool case where {name} stays quiet"


def test_promtool_tests_load_every_rule_file():
    rule_files = {path.name for path in (PROMETHEUS / "rules").glob("*.yml")}
    for suite in UNIT_TESTS:
        loaded = {Path(f).name for f in suite["rule_files"]}
        assert loaded <= rule_files
    assert set().union(*({Path(f).name for f in s["rule_files"]} for s in UNIT_TESTS)) == (
        rule_files)


def test_rules_read_only_metrics_the_exporter_exposes_or_rules_record():
    known = _exposed_names() | RECORDS | {"up"}
    for rule in _rules("expr"):
        names = set(re.findall(r"\b(celery[a-z0-9_:]*|up)\b(?=\s*[{\[)\s]|$)", rule["expr"]))
        assert names, rule["expr"]
        assert names <= known, (rule.get("alert") or rule.get("record"), names - known)


def test_recorded_names_follow_level_metric_operations():
    for name in RECORDS:
        assert re.fullmatch(r"celery:[a-z_]+:[a-z0-9_]+", name), name


def test_prometheus_scrapes_the_exporter_as_job_celery_jobmon_and_loads_the_rules():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["celery-jobmon"]["static_configs"] == [{"targets": ["exporter:9808"]}]
    assert config["rule_files"] == ["rules/*.yml"]
    assert config["alerting"]["alertmanagers"] == [
        {"static_configs": [{"targets": ["alertmanager:9093"]}]}]


def test_alertmanager_routes_every_severity_the_rules_use():
    config = yaml.safe_load((PROMETHEUS / "alertmanager" / "alertmanager.yml").read_text())
    routed = {route["matchers"][0]: route["receiver"] for route in config["route"]["routes"]}
    severities = {rule["labels"]["severity"] for rule in ALERTS.values()}
    assert routed == {f'severity="{s}"': s for s in severities}
    receivers = {r["name"]: r for r in config["receivers"]}
    for severity in severities:
        assert receivers[severity]["webhook_configs"][0]["url"] == (
            f"http://webhook:8080/{severity}")
