"""The committed dashboards are the generator's output, and follow the dashboard rules.

Rules: uid and title set; 30 s auto-refresh; every panel reads its data source from a
variable; every Prometheus query selects by ``$job`` and ``$instance`` (recorded ``celery:``
series, which merge the replicas, by ``$job`` only); no query sums the replicas of a series
without deduplicating them first; ``histogram_quantile`` over ``rate`` (never ``irate``); stat
panels coloured by thresholds; every metric a query names exists in the exporter's catalogue
or in the recording rules; the Task variable's "All" leaves Celery's built-in tasks out.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard as DashboardModel

from exporter.metrics import catalogue as metrics
from tests.unit.test_prometheus_rules import undeduplicated_sums

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"
PROVISIONING = ROOT / "grafana" / "provisioning"


def _load_generator() -> ModuleType:
    path = ROOT / "grafana" / "generate.py"
    spec = importlib.util.spec_from_file_location("grafana_generate", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generator()
COMMITTED = {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in board["panels"] if panel["type"] != "row"]


def _prom_targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(panel["title"], target) for panel in _panels(board) for target in panel["targets"]
            if target["datasource"]["type"] == "prometheus"]


def _exposed_names() -> set[str]:
    """Every sample name /metrics can carry with the default prefix."""
    names = set()
    for spec in metrics.CATALOGUE:
        base = "celery_" + spec.name
        if spec.kind == "histogram":
            names |= {base + "_bucket", base + "_sum", base + "_count"}
        elif spec.kind == "info":
            names.add(base + "_info")
        else:
            names.add(base)
    return names


def _recorded_names() -> set[str]:
    rules = yaml.safe_load((ROOT / "prometheus" / "rules" / "recording.yml").read_text())
    return {rule["record"] for group in rules["groups"] for rule in group["rules"]}


def test_committed_json_is_exactly_the_generator_output():
    generated = generate.dashboards()
    assert sorted(generated) == sorted(COMMITTED)
    for name, data in generated.items():
        committed_text = (DASHBOARDS / name).read_text(encoding="utf-8")
        assert committed_text == generate.render(data), (
            f"grafana/dashboards/{name} is stale: run python grafana/generate.py")


def test_check_mode_reports_nothing_stale():
    assert generate.stale_files() == []


def test_check_mode_names_a_changed_file(tmp_path):
    for name, data in generate.dashboards().items():
        (tmp_path / name).write_text(generate.render(data), encoding="utf-8")
    (tmp_path / "celery-task.json").write_text("{}\n", encoding="utf-8")
    assert generate.stale_files(tmp_path) == ["celery-task.json"]


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_json_loads_into_the_sdk_dashboard_model(name):
    register_default_plugins()
    model = DashboardModel.from_json(COMMITTED[name])
    assert model.uid == COMMITTED[name]["uid"]
    assert model.panels is not None
    assert [p.title for p in model.panels] == [p["title"] for p in COMMITTED[name]["panels"]]


def test_dashboards_have_uid_title_and_30s_refresh():
    summary = {name: (board["uid"], board["title"], board["refresh"])
               for name, board in COMMITTED.items()}
    assert summary == {
        "celery-overview.json": ("celery-jobmon-overview", "Celery / Overview", "30s"),
        "celery-task.json": ("celery-jobmon-task", "Celery / Task", "30s"),
    }


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_variables_are_datasource_history_job_cluster_instance_queue_task(name):
    variables = {v["name"]: v for v in COMMITTED[name]["templating"]["list"]}
    assert [v for v in variables if v != "slow_threshold"] == [
        "datasource", "history", "job", "cluster", "instance", "queue", "task", "jobmon_ui"]
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["history"]["query"] == "grafana-postgresql-datasource"
    assert variables["cluster"]["query"] == (
        'label_values(celery_jobmon_build_info{job=~"$job"}, cluster)')
    for label in ("job", "cluster", "instance", "queue", "task"):
        assert variables[label]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variables[label]["includeAll"] is True
    assert [variables[label]["allValue"] for label in ("job", "instance", "queue", "task")] == [
        ".*", ".*", ".*", generate.ALL_BUT_BUILTIN_TASKS]


@pytest.mark.parametrize(("task", "listed"), [
    ("celery.chord_unlock", False), ("celery.backend_cleanup", False), ("celery.", False),
    ("examples.tasks.add", True), ("app.celery.sync", True), ("celery_tasks.send", True),
    ("celeryx.run", True), ("celery", True), ("cel", True), ("c", True), ("cele.ry", True),
    ("Celery.chord_unlock", True),
])
def test_all_tasks_means_every_task_but_the_builtin_ones(task, listed):
    # Prometheus (RE2) and PostgreSQL anchor a regex matcher at both ends, as fullmatch does.
    assert bool(re.fullmatch(generate.ALL_BUT_BUILTIN_TASKS, task)) is listed


def test_the_task_variable_says_what_all_leaves_out():
    for board in COMMITTED.values():
        task = next(v for v in board["templating"]["list"] if v["name"] == "task")
        assert "celery." in task["description"], task


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_every_panel_reads_its_data_source_from_a_variable(name):
    allowed = [{"type": "prometheus", "uid": "${datasource}"},
               {"type": "grafana-postgresql-datasource", "uid": "${history}"}]
    for panel in _panels(COMMITTED[name]):
        assert panel["datasource"] in allowed, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_panel_ids_are_unique_and_titles_set(name):
    panels = COMMITTED[name]["panels"]
    assert [p["id"] for p in panels] == list(range(1, len(panels) + 1))
    assert all(p.get("title") for p in panels)


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_every_prometheus_query_selects_job_and_instance(name):
    for title, target in _prom_targets(COMMITTED[name]):
        expr = target["expr"]
        selectors = re.findall(r"([a-zA-Z0-9_:]*)(\{[^}]*\})",
                               expr.replace("{{", "").replace("}}", ""))
        assert selectors, (title, expr)
        for metric, selector in selectors:
            assert 'job=~"$job"' in selector, (title, selector)
            # The const label the Cluster variable reads; Prometheus' own `up` has none.
            assert ('cluster=~"$cluster"' in selector) is (metric != "up"), (title, selector)
            # Recorded series have merged the replicas: they carry no instance to select.
            assert ('instance=~"$instance"' in selector) is (":" not in metric), (
                title, metric, selector)
        assert ":9808" not in expr and "localhost" not in expr, (title, expr)


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_no_query_sums_the_replicas_of_a_series(name):
    # With two exporters of one job (replicas), a sum over raw series would double every
    # number: each series is merged across replicas (max without (instance, pod)) first.
    for title, target in _prom_targets(COMMITTED[name]):
        assert undeduplicated_sums(target["expr"]) == [], (title, target["expr"])


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_quantiles_use_rate_never_irate(name):
    exprs = [target["expr"] for _, target in _prom_targets(COMMITTED[name])]
    assert not [e for e in exprs if "irate(" in e]
    quantiles = [e for e in exprs if "histogram_quantile(" in e]
    assert quantiles
    for expr in quantiles:
        assert re.search(r"histogram_quantile\(0\.\d+, sum by \([a-z_, ]*le\) "
                         r"\(max without \(instance, pod\) \(rate\(", expr), expr


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_every_metric_named_exists(name):
    known = _exposed_names() | _recorded_names() | {"up"}
    for title, target in _prom_targets(COMMITTED[name]):
        names = set(re.findall(r"\b(celery[a-z0-9_:]*|up)(?=\{)", target["expr"]))
        assert names, (title, target["expr"])
        assert names <= known, (title, names - known)
    variable_queries = [v["query"] for v in COMMITTED[name]["templating"]["list"]
                        if v["type"] == "query"]
    for query in variable_queries:
        for metric in re.findall(r"celery_[a-z_]+", query):
            assert metric in known, (query, metric)


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_stat_panels_colour_by_thresholds(name):
    stats = [p for p in _panels(COMMITTED[name]) if p["type"] == "stat"]
    assert len(stats) >= 8
    for panel in stats:
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["color"] == {"mode": "thresholds"}, panel["title"]
        assert defaults["thresholds"]["steps"][0]["value"] is None, panel["title"]
        assert panel["options"]["colorMode"] == "background", panel["title"]


def test_overview_has_the_required_panels():
    titles = [p["title"] for p in _panels(COMMITTED["celery-overview.json"])]
    assert titles == [
        "Running now", "Pending", "Reserved", "Scheduled (ETA)", "Succeeded /s", "Failed /s",
        "Failure ratio", "Oldest waiting",
        "Succeeded and failed rates", "Failure ratio by task", "Top exceptions",
        "Recent failures (history)",
        "Pending by queue and priority", "Queue latency (oldest waiting)", "Queue wait p95",
        "Consumers per queue", "Running, reserved and scheduled by task",
        "Runtime p50 / p95 / p99 by task", "Tasks (last 5 minutes)", "Slow jobs",
        "Stuck jobs (oldest running)",
        "Workers up / silent / down", "Worker busy ratio", "Tasks processed per worker",
        "Worker CPU", "Worker peak memory",
        "Missed periodic runs", "Last run failed", "Schedule sources down", "Periodic check age",
        "Last outcome by entry", "Periodic entries", "Missed periodic runs by entry",
        "Workflows in progress", "Stuck workflow steps", "Stuck steps by task",
        "chord_unlock polls /s by callback",
        "Missed task events", "Missed ratio", "Event gaps", "Event lag", "Repaired",
        "Repairs pending", "Unresolved tasks", "Repair source errors",
        "Missed task events per worker", "Repairs by state and source",
        "Unresolved and pending repairs", "Event gaps and repair source errors",
        "Scrape up", "Broker connected", "Last event age", "Poll age", "History",
        "History write failures",
        "Events received /s", "Consumer saturation", "Malformed events and poll errors",
        "History rows written and dropped /s",
    ]


def test_the_data_quality_row_shows_every_exactness_family_of_the_catalogue():
    # README "How exact are the numbers?": lost events, gaps, repairs, what is left, the lag.
    board = COMMITTED["celery-overview.json"]
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows[-2:] == ["Data quality", "Exporter health"]
    start = next(i for i, p in enumerate(board["panels"]) if p["title"] == "Data quality")
    end = next(i for i, p in enumerate(board["panels"]) if p["title"] == "Exporter health")
    exprs = " ".join(target["expr"] for panel in board["panels"][start + 1:end]
                     for target in panel["targets"])
    named = set(re.findall(r"\b(celery_[a-z0-9_]+)(?=\{)", exprs))
    exactness = {"celery_" + spec.name for spec in (
        metrics.WORKER_MISSED_TASK_EVENTS, metrics.EVENT_GAPS, metrics.EVENT_LAG,
        metrics.REPAIRS, metrics.REPAIR_UNRESOLVED, metrics.REPAIR_PENDING,
        metrics.REPAIR_SOURCE_ERRORS)}
    assert named == exactness | {"celery_worker_processed_total"}


def test_the_periodic_row_shows_every_periodic_family_of_the_catalogue():
    board = COMMITTED["celery-overview.json"]
    titles = [p["title"] for p in board["panels"]]
    start, end = titles.index("Periodic tasks"), titles.index("Workflows")
    exprs = " ".join(target["expr"] for panel in board["panels"][start + 1:end]
                     for target in panel["targets"])
    named = set(re.findall(r"\b(celery_[a-z0-9_]+)(?=\{)", exprs))
    assert named == {"celery_" + spec.name for spec in metrics.PERIODIC}
    # Entries follow the Task variable through their task label.
    assert exprs.count('task=~"$task"') == 9


def test_the_workflows_row_shows_the_workflow_families_and_follows_the_task_variable():
    board = COMMITTED["celery-overview.json"]
    titles = [p["title"] for p in board["panels"]]
    start, end = titles.index("Workflows"), titles.index("Data quality")
    exprs = [target["expr"] for panel in board["panels"][start + 1:end]
             for target in panel["targets"]]
    named = set(re.findall(r"\b(celery_[a-z0-9_]+)(?=\{)", " ".join(exprs)))
    assert named == {"celery_" + spec.name for spec in (
        metrics.WORKFLOWS_IN_PROGRESS, metrics.CHORDS_STUCK, metrics.CHORD_UNLOCK_RETRIES)}
    assert sum('name=~"$task"' in expr for expr in exprs) == 3


def test_periodic_entries_line_up_by_entry_and_task_and_link_to_the_job_browser():
    panel = next(p for p in _panels(COMMITTED["celery-overview.json"])
                 if p["title"] == "Periodic entries")
    assert [t["expr"].split(" (", 1)[0] for t in panel["targets"]] == [
        "max by", "time() - max by", "time() - max by", "time() - max by", "sum by"]
    assert all("(entry, task)" in t["expr"] for t in panel["targets"])
    assert _links("celery-overview.json", "Periodic entries") == {
        "entry": ["${jobmon_ui}/periodic?entry=${__value.raw:percentencode}"]}


def test_missed_events_per_worker_and_repairs_keep_their_labels():
    assert _target("celery-overview.json", "Missed task events per worker")["expr"] == (
        "sum by (hostname) (max without (instance, pod) (rate("
        'celery_worker_missed_task_events_total{job=~"$job", cluster=~"$cluster", '
        'instance=~"$instance"}[$__rate_interval])))')
    assert _target("celery-overview.json", "Repairs by state and source")["expr"] == (
        "sum by (state, source) (max without (instance, pod) (rate("
        'celery_jobmon_repairs_total{job=~"$job", cluster=~"$cluster", instance=~"$instance"}'
        "[$__rate_interval])))")
    ratio = _target("celery-overview.json", "Missed ratio")["expr"]
    assert re.fullmatch(
        r"sum\(max without \(instance, pod\) \(increase\("
        r"celery_worker_missed_task_events_total\{[^}]*\}\[\$__range\]\)\)\) / clamp_min\("
        r"sum\(max without \(instance, pod\) \(increase\("
        r"celery_worker_processed_total\{[^}]*\}\[\$__range\]\)\)\), 1\)", ratio), ratio


def _target(board: str, title: str, ref: str = "A") -> dict[str, Any]:
    panel = next(p for p in _panels(COMMITTED[board]) if p["title"] == title)
    return next(t for t in panel["targets"] if t["refId"] == ref)


def test_pending_shows_each_priority_level():
    target = _target("celery-overview.json", "Pending by queue and priority")
    assert target["expr"].startswith(
        "sum by (queue_name, priority) (max without (instance, pod) (celery_queue_length{")
    assert target["legendFormat"] == "{{queue_name}} priority {{priority}}"


def test_busy_ratio_is_active_tasks_over_pool_size():
    expr = _target("celery-overview.json", "Worker busy ratio")["expr"]
    assert re.fullmatch(r"max by \(hostname\) \(celery_worker_tasks_active\{[^}]*\}\) / "
                        r"max by \(hostname\) \(celery_worker_pool_size\{[^}]*\}\)", expr)


def test_a_silent_solo_worker_has_its_own_tile_colour():
    # celery_worker_silent is 1 only while celery_worker_up is 1: the sum is 0, 1 or 2.
    panel = next(p for p in _panels(COMMITTED["celery-overview.json"])
                 if p["title"] == "Workers up / silent / down")
    (target,) = panel["targets"]
    assert re.fullmatch(r"max by \(hostname\) \(celery_worker_up\{[^}]*\}\) \+ "
                        r"max by \(hostname\) \(celery_worker_silent\{[^}]*\}\)",
                        target["expr"])
    (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
    assert {value: (text["text"], text["color"]) for value, text in mapping["options"].items()
            } == {"0": ("down", "red"), "1": ("up", "green"), "2": ("silent", "orange")}
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [(s["value"], s["color"]) for s in steps] == [
        (None, "red"), (1, "green"), (2, "orange")]


def test_slow_jobs_compare_average_runtime_with_the_threshold_variable():
    target = _target("celery-overview.json", "Slow jobs")
    assert target["instant"] is True and target["format"] == "table"
    assert re.fullmatch(
        r"sum by \(name\) \(max without \(instance, pod\) \(increase\("
        r"celery_task_runtime_seconds_sum\{[^}]*\}\[\$__range\]\)\)\) "
        r"/ sum by \(name\) \(max without \(instance, pod\) \(increase\("
        r"celery_task_runtime_seconds_count\{[^}]*\}\[\$__range\]\)\)\) > \$slow_threshold",
        target["expr"])


@pytest.mark.parametrize("board", ["celery-overview.json", "celery-task.json"])
def test_recent_failures_query_the_history_table(board):
    target = _target(board, "Recent failures (history)")
    assert target["format"] == "table" and target["rawQuery"] is True
    sql = target["rawSql"]
    for column in ("finished_at", "name", "exception_type", "exception_message", "hostname",
                   "queue", "task_id"):
        assert column in sql
    assert "FROM task_execution\nWHERE state = 'FAILURE'\n" in sql
    assert "$__unixEpochFilter(finished_at)" in sql
    # The Task variable filters it too: "All" leaves the built-in celery.* tasks out.
    assert "\n  AND name ~ '^(${task:regex})$'\n" in sql


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_the_job_browser_url_comes_from_the_ui_info_of_the_selected_job(name):
    variable = next(v for v in COMMITTED[name]["templating"]["list"] if v["name"] == "jobmon_ui")
    assert (variable["query"], variable["hide"], variable["multi"], variable["includeAll"]) == (
        'label_values(celery_jobmon_ui_info{job=~"$job", cluster=~"$cluster"}, external_url)',
        2, False, False)


def _links(board: str, title: str) -> dict[str, list[str]]:
    """Column → URLs of its data links, in the panel ``title`` of ``board``."""
    panel = next(p for p in _panels(COMMITTED[board]) if p["title"] == title)
    return {override["matcher"]["options"]: [link["url"] for link in prop["value"]]
            for override in panel.get("fieldConfig", {}).get("overrides", [])
            for prop in override["properties"] if prop["id"] == "links"}


RANGE = "since=${__from:date:seconds}&until=${__to:date:seconds}"


@pytest.mark.parametrize("board", ["celery-overview.json", "celery-task.json"])
def test_recent_failures_link_to_the_job_browser_with_their_filters(board):
    assert _links(board, "Recent failures (history)") == {
        "task id": ["${jobmon_ui}/tasks/${__value.raw:percentencode}"],
        "task": ["${jobmon_ui}/failed?name=${__value.raw:percentencode}&" + RANGE],
        "exception": ["${jobmon_ui}/failed?name=${__data.fields.task:percentencode}"
                      "&exception=${__value.raw:percentencode}&" + RANGE],
        "queue": ["${jobmon_ui}/waiting?queue=${__value.raw:percentencode}"],
    }


def test_overview_tables_link_to_the_job_browser():
    assert _links("celery-overview.json", "Top exceptions") == {
        "name": ["${jobmon_ui}/failed?name=${__value.raw:percentencode}&" + RANGE],
        "exception": ["${jobmon_ui}/failed?name=${__data.fields.name:percentencode}"
                      "&exception=${__value.raw:percentencode}&" + RANGE],
    }
    assert _links("celery-overview.json", "Slow jobs") == {
        "name": ["${jobmon_ui}/statistics?name=${__value.raw:percentencode}"]}
    assert [(link["title"], link["url"]) for link in COMMITTED["celery-overview.json"]["links"]
            if link["url"].startswith("${jobmon_ui}")] == [("Job browser", "${jobmon_ui}/")]
    assert [(link["title"], link["url"]) for link in COMMITTED["celery-task.json"]["links"]
            if link["url"].startswith("${jobmon_ui}")] == [
        ("Failures in the job browser", "${jobmon_ui}/failed?" + RANGE)]


def test_the_ui_links_name_pages_the_job_browser_has():
    from ui.app import page_modules
    paths = {route.path for module in page_modules() for route in module.router.routes}
    urls = [link["url"] for board in COMMITTED.values() for link in board["links"]] + [
        url for board in COMMITTED for panel in _panels(COMMITTED[board])
        for urls in _links(board, panel["title"]).values() for url in urls]
    used = {re.sub(r"\?.*", "", url.removeprefix("${jobmon_ui}")).replace(
        "${__value.raw:percentencode}", "{task_id:path}")
        for url in urls if url.startswith("${jobmon_ui}")}
    assert used == {"/", "/failed", "/statistics", "/waiting", "/periodic",
                    "/tasks/{task_id:path}"}
    assert used <= paths


def test_provisioning_declares_both_datasource_types_and_the_dashboard_folder():
    sources = yaml.safe_load((PROVISIONING / "datasources" / "datasources.yml").read_text())
    assert {(s["type"], s["uid"]) for s in sources["datasources"]} == {
        ("prometheus", "prometheus"), ("grafana-postgresql-datasource", "jobmon-history")}
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "celery-jobmon.yml").read_text())
    assert [(p["type"], p["folder"], p["options"]["path"]) for p in providers["providers"]] == [
        ("file", "Celery", "/etc/grafana/dashboards")]
