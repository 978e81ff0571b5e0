"""The Prometheus rules: every alert labelled and annotated, linked to its README runbook,
covered by promtool tests that fire it and keep it quiet, and reading real metric names; the
same figures and one notification with 1 or N replicas (the instances of a job); Celery's
built-in tasks left out of the task alerts.
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
#: Alert name → its group's name.
GROUP_OF = {rule["alert"]: group["name"]
            for path in sorted((PROMETHEUS / "rules").glob("*.yml"))
            for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule}
#: The group of the alerts about one celery-jobmon process: the only ones kept per instance.
PER_EXPORTER_GROUP = "celery-jobmon-exporter"
#: How rules and dashboards merge the replicas of one series before any sum.
DEDUP = "max without (instance, pod) ("
#: The matcher that leaves Celery's built-in tasks (celery.chord_unlock, ...) out of alerts.
NOT_BUILTIN = 'name!~"celery\\\\..*"'
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
        "CeleryChordHeaderWaiting", "CeleryChordStuck",
        "CeleryJobmonBrokerDisconnected", "CeleryJobmonEventsMissed",
        "CeleryJobmonExporterDown", "CeleryJobmonHistoryFailing", "CeleryJobmonNoEvents",
        "CeleryJobmonTaskNamesFolded", "CeleryPeriodicTaskFailed", "CeleryPeriodicTaskLate",
        "CeleryPeriodicTaskMissed",
        "CeleryQueueBacklogHigh", "CeleryQueueLatencyHigh", "CeleryQueueNoConsumers",
        "CeleryQueueNotDraining",
        "CeleryTaskCancelled", "CeleryTaskFailureRatioHigh", "CeleryTaskFirstFailure",
        "CeleryTaskLost",
        "CeleryTaskRetryRatioHigh", "CeleryTaskSlow", "CeleryTaskStuck", "CeleryWorkerDown",
    ]


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_has_severity_and_the_four_annotations(name):
    rule = ALERTS[name]
    assert rule["labels"]["severity"] in {"critical", "warning"}
    four = ["dashboard", "description", "runbook_url", "summary"]
    assert sorted(rule["annotations"]) == sorted(four + ["job_browser"] * (name in JOB_BROWSER))
    assert rule["annotations"]["runbook_url"] == RUNBOOK_BASE + name.lower()
    assert rule["annotations"]["dashboard"].startswith("http://localhost:3000/d/celery-jobmon-")


#: Alerts linking to a page of the job browser (annotation job_browser) → the page and filter.
JOB_BROWSER = {
    "CeleryTaskFailureRatioHigh": "/failed?name={{ $labels.name | urlquery }}",
    "CeleryTaskRetryRatioHigh": "/statistics?name={{ $labels.name | urlquery }}",
    "CeleryTaskFirstFailure": "/failed?name={{ $labels.name | urlquery }}",
    "CeleryTaskStuck": "/running",
    "CeleryTaskSlow": "/statistics?name={{ $labels.name | urlquery }}",
    "CeleryQueueBacklogHigh": "/waiting?queue={{ $labels.queue_name | urlquery }}",
    "CeleryQueueLatencyHigh": "/waiting?queue={{ $labels.queue_name | urlquery }}",
    "CeleryQueueNoConsumers": "/waiting?queue={{ $labels.queue_name | urlquery }}",
    "CeleryQueueNotDraining": "/waiting?queue={{ $labels.queue_name | urlquery }}",
    "CeleryWorkerDown": "/workers",
    "CeleryPeriodicTaskMissed": "/periodic?entry={{ $labels.entry | urlquery }}",
    "CeleryPeriodicTaskLate": "/periodic?entry={{ $labels.entry | urlquery }}",
    "CeleryPeriodicTaskFailed": "/failed?name={{ $labels.task | urlquery }}",
}


@pytest.mark.parametrize("name", sorted(JOB_BROWSER))
def test_job_browser_link_reads_the_external_url_of_the_alerts_job(name):
    # promtool (prometheus/tests/job_browser_test.yml) shows the expanded link.
    assert ALERTS[name]["annotations"]["job_browser"] == (
        '{{ with printf "celery_jobmon_ui_info{job=%q, cluster=%q}" $labels.job '
        "$labels.cluster | query }}"
        '{{ . | first | label "external_url" }}' + JOB_BROWSER[name] + "{{ end }}")


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


_AGGREGATION = re.compile(r"\b(sum|count|avg)\s*(?:(by|without)\s*\(([^)]*)\)\s*)?\(")


def undeduplicated_sums(expr: str) -> list[str]:
    """The aggregations of ``expr`` that add up the replicas of a series: ``sum``, ``count`` or
    ``avg`` whose argument is neither deduplicated (:data:`DEDUP`) nor a recorded ``celery:``
    series (deduplicated by its rule), and that do not keep ``instance`` apart. Each is given
    with the start of its argument.
    """
    found = []
    for match in _AGGREGATION.finditer(expr):
        clause, labels = match.group(2), match.group(3) or ""
        names = {label.strip() for label in labels.split(",")}
        if (clause == "by" and "instance" in names) or (
                clause == "without" and "instance" not in names):
            continue  # the replicas stay apart
        argument = expr[match.end():].lstrip()
        if not argument.startswith((DEDUP, "celery:")):
            found.append(expr[match.start():match.end() + 40])
    return found


def test_the_dedup_check_finds_sums_over_replicas():
    assert undeduplicated_sums("sum by (job, name) (rate(celery_task_failed_total[5m]))")
    assert undeduplicated_sums("sum(celery_task_running)")
    assert undeduplicated_sums("avg without (instance) (celery_queue_length)")
    assert not undeduplicated_sums("avg without (queue_name) (celery_queue_length)")
    assert not undeduplicated_sums(
        "sum by (job, name) (max without (instance, pod) (rate(celery_task_failed_total[5m])))")
    assert not undeduplicated_sums("count by (job, instance) (celery_worker_pool_size)")
    assert not undeduplicated_sums("sum by (job) (celery:task_failed:rate5m)")
    assert not undeduplicated_sums("sum_over_time(celery_task_running[5m])")


@pytest.mark.parametrize("rule", _rules("expr"), ids=lambda r: r.get("alert") or r["record"])
def test_rules_deduplicate_replicas_before_summing(rule):
    assert undeduplicated_sums(rule["expr"]) == []


def test_recorded_series_carry_no_instance():
    for rule in _rules("record"):
        for by in re.findall(r"\bby \(([^)]*)\)", rule["expr"]):
            assert "instance" not in by, rule["record"]


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_only_the_exporter_alerts_are_per_instance(name):
    rule = ALERTS[name]
    # Replicas may be told apart inside an aggregation that then merges them: the dedup, or a
    # filter joined per instance (only the replicas connected to the broker).
    expr = rule["expr"].replace(DEDUP, "").replace("on (job, instance)", "")
    annotations = " ".join(rule["annotations"].values())
    if GROUP_OF[name] == PER_EXPORTER_GROUP:
        assert all("instance" in by for by in re.findall(r"\bby \(([^)]*)\)", expr))
        assert "$labels.instance" in annotations
    else:
        assert "instance" not in expr
        assert "$labels.instance" not in annotations


def _replica_cases() -> dict[str, list[dict[str, str]]]:
    """Alert name → the labels it fires with in promtool tests fed by two or more instances of
    one job."""
    fired: dict[str, list[dict[str, str]]] = {}
    for suite in UNIT_TESTS:
        for test in suite["tests"]:
            instances: dict[str, set[str]] = {}
            for item in test.get("input_series", []):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', item["series"]))
                if "instance" in labels:
                    instances.setdefault(labels["job"], set()).add(labels["instance"])
            if max(map(len, instances.values()), default=0) < 2:
                continue
            for case in test.get("alert_rule_test", []):
                for alert in case.get("exp_alerts") or []:
                    fired.setdefault(case["alertname"], []).append(alert["exp_labels"])
    return fired


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_promtool_tests_fire_each_alert_once_from_two_replicas(name):
    fired = _replica_cases()
    assert name in fired, f"no promtool case fed by two replicas where {name} fires"
    if GROUP_OF[name] != PER_EXPORTER_GROUP:
        assert all("instance" not in labels for labels in fired[name]), fired[name]


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_task_alerts_leave_the_builtin_tasks_out(name):
    assert (NOT_BUILTIN in ALERTS[name]["expr"]) == (GROUP_OF[name] == "celery-jobmon-tasks")


def test_readme_documents_replicas_and_the_builtin_task_selector():
    assert re.search(r"^## Running two replicas$", README, re.MULTILINE)
    assert "`name!~\"celery\\\\..*\"`" in README
