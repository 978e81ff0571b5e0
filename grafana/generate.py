"""Generate the Grafana dashboards of celery-jobmon with Grafana's as-code SDK.

The JSON in ``grafana/dashboards/`` is this script's output, committed; never edit it by hand.
A unit test regenerates it in memory and fails when it differs from the committed files.

Usage (from the repository root, with the dev dependencies installed)::

    python grafana/generate.py          # rewrite grafana/dashboards/*.json
    python grafana/generate.py --check  # exit 1 and name the stale files, write nothing

Every Prometheus panel reads the ``${datasource}`` variable and every SQL panel the
``${history}`` variable; no data source uid, job or instance is hard-coded. Series are selected
with ``job=~"$job", cluster=~"$cluster", instance=~"$instance"`` (multi-value variables with an
"All" of ``.*``), so one Grafana can watch several Celery clusters: one job each, or exporters
told apart by ``--const-label cluster=NAME`` (the Helm chart's default ``clusterLabel``); a
series without a ``cluster`` label matches "All" (``.*`` matches the empty value). Prometheus'
own ``up`` has no exporter label, so it is selected by job and instance only. Metric names are
the defaults of ``exporter/metrics/catalogue.py`` with the ``celery_`` prefix; ``celery:*``
series come from the recording rules in ``prometheus/rules/recording.yml``.

Replicas: the instances of one job are replicas watching the same broker, exporting the same
series. Every sum reads the series through :func:`dedup` (``max without (instance, pod)``, of
the per-instance ``rate`` for counters), so a panel shows the same number with 1 or N replicas;
the recorded series have merged them already (no instance label: ``$instance`` does not apply
to them). Picking one instance in "Exporter" shows that replica's own view.

Built-in tasks: the Task variable's "All" is :data:`ALL_BUT_BUILTIN_TASKS`, every task name but
Celery's own ``celery.*`` (``celery.chord_unlock`` retries every second while a chord waits);
pick such a task by name to see it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
OVERVIEW_UID = "celery-jobmon-overview"
TASK_UID = "celery-jobmon-task"
#: The hidden variable holding the job browser's URL (``celery_jobmon_ui_info``).
UI_VAR = "jobmon_ui"
#: Plugin id of the PostgreSQL data source in current Grafana (older releases: ``postgres``).
POSTGRES_TYPE = "grafana-postgresql-datasource"

PROM = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
HISTORY = dm.DataSourceRef(type_val=POSTGRES_TYPE, uid="${history}")
#: The series selector every Prometheus query starts from.
SEL = 'job=~"$job", cluster=~"$cluster", instance=~"$instance"'
#: The const label (``--const-label``) the Cluster variable reads.
CLUSTER_LABEL = "cluster"
RATE = "$__rate_interval"
#: Labels that tell the replicas of one exporter apart (README, "Running two replicas").
REPLICA_LABELS = "instance, pod"
#: The Task variable's "All": every task name whose first seven characters are not
#: ``celery.`` — Celery's built-in tasks left out. Prometheus (RE2) and PostgreSQL anchor it at
#: both ends and have no negative lookahead, hence the spelled-out prefixes.
ALL_BUT_BUILTIN_TASKS = ("([^c]|c[^e]|ce[^l]|cel[^e]|cele[^r]|celer[^y]|celery[^.]).*"
                         "|c?e?l?e?r?y?")
QUANTILES = (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99"))

GREEN, ORANGE, RED, BLUE = "green", "orange", "red", "blue"


def sel(*matchers: str) -> str:
    """``{job=~"$job", cluster=~"$cluster", instance=~"$instance", <matchers>}``."""
    return "{" + ", ".join((SEL, *matchers)) + "}"


def recorded_sel(*matchers: str) -> str:
    """``{job=~"$job", cluster=~"$cluster", <matchers>}``: a recorded series has merged the
    replicas (no instance) and kept the const labels.
    """
    return "{" + ", ".join(('job=~"$job"', 'cluster=~"$cluster"', *matchers)) + "}"


def dedup(expr: str) -> str:
    """``max without (instance, pod) (expr)``: each series once, whatever the number of
    replicas. Of ``rate``/``increase`` it is the largest per-replica value, so a replica whose
    counters restarted or that started late does not lower the figure.
    """
    return f"max without ({REPLICA_LABELS}) ({expr})"


QUEUE_MATCH = 'queue_name=~"$queue"'
TASK_MATCH = 'name=~"$task"'
TASK_SEL = sel(QUEUE_MATCH, TASK_MATCH)
QUEUE_SEL = sel(QUEUE_MATCH)
NAME_SEL = sel(TASK_MATCH)


# -- queries -----------------------------------------------------------------------------------

def prom(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False,
         fmt: PromQueryFormat | None = None) -> prometheus.Dataquery:
    """A Prometheus target on ``${datasource}``; ``legend`` is Grafana's legend template."""
    query = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(PROM)
    if legend:
        query = query.legend_format(legend)
    if instant:
        query = query.instant()
    if fmt is not None:
        query = query.format(fmt)
    return query


def quantile_targets(bucket: str, by: str, legend_prefix: str) -> list[prometheus.Dataquery]:
    """p50/p95/p99 of a histogram, ``rate`` (never ``irate``) inside ``histogram_quantile``."""
    group = f"{by}, le" if by else "le"
    return [
        prom(f"histogram_quantile({q}, sum by ({group}) ({dedup(f'rate({bucket}[{RATE}])')}))",
             f"{legend_prefix}{label}", chr(ord("A") + i))
        for i, (label, q) in enumerate(QUANTILES)
    ]


class SqlQuery(cogvariants.Dataquery):
    """A raw-SQL target of Grafana's PostgreSQL data source (the SDK has no builder for it)."""

    def __init__(self, raw_sql: str, ref_id: str = "A") -> None:
        self.raw_sql = raw_sql
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        """The target as Grafana stores it (code editor, table format)."""
        return {
            "datasource": HISTORY, "editorMode": "code", "format": "table", "rawQuery": True,
            "rawSql": self.raw_sql, "refId": self.ref_id,
        }


class Sql(cogbuilder.Builder[SqlQuery]):
    """Builder of :class:`SqlQuery`, so SQL targets go through ``with_target`` like the rest."""

    def __init__(self, raw_sql: str) -> None:
        self._internal = SqlQuery(raw_sql)

    def build(self) -> SqlQuery:
        """The query."""
        return self._internal


def recent_failures_sql() -> str:
    """Newest failed executions in the dashboard's time range, from ``task_execution``.

    Times are float epoch seconds, hence ``$__unixEpochFilter``. Only the task names selected
    in ``$task`` (a regex; Grafana passes the "All" value, :data:`ALL_BUT_BUILTIN_TASKS`, as
    is, and PostgreSQL's ``~`` reads it as Prometheus does).
    """
    return (
        "SELECT\n"
        '  to_timestamp(finished_at) AS "time",\n'
        '  name AS "task",\n'
        '  exception_type AS "exception",\n'
        '  left(exception_message, 300) AS "message",\n'
        '  hostname AS "worker",\n'
        '  queue AS "queue",\n'
        '  task_id AS "task id"\n'
        "FROM task_execution\n"
        "WHERE state = 'FAILURE'\n"
        "  AND $__unixEpochFilter(finished_at)\n"
        "  AND name ~ '^(${task:regex})$'\n"
        "ORDER BY finished_at DESC\n"
        "LIMIT 100"
    )


# -- panels ------------------------------------------------------------------------------------

def thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    """Absolute thresholds; the first step's value is ``None`` (the base colour)."""
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=value, color=color) for value, color in steps])


def by_threshold() -> db.FieldColor:
    """Colour from the thresholds."""
    return db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS)


def value_text(mapping: dict[str, tuple[str, str]]) -> list[dm.ValueMapping]:
    """``{"1": ("up", "green")}`` → a value-to-text mapping."""
    return [dm.ValueMap(options={
        value: dm.ValueMappingResult(text=text, color=color, index=i)
        for i, (value, (text, color)) in enumerate(mapping.items())
    })]


def stat_panel(title: str, description: str, target: prometheus.Dataquery, *, unit: str = "short",
               steps: Sequence[tuple[float | None, str]] = ((None, GREEN),),
               mappings: dict[str, tuple[str, str]] | None = None, width: int = 3,
               height: int = 4, decimals: float | None = None) -> stat.Panel:
    """A stat panel coloured by ``steps`` (background), showing the last value."""
    panel = (
        stat.Panel().title(title).description(description).datasource(PROM)
        .with_target(target).unit(unit).height(height).span(width)
        .thresholds(thresholds(*steps)).color_scheme(by_threshold())
        .color_mode(cm.BigValueColorMode.BACKGROUND).graph_mode(cm.BigValueGraphMode.AREA)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if mappings:
        panel = panel.mappings(value_text(mappings))
    if decimals is not None:
        panel = panel.decimals(decimals)
    return panel


def ts_panel(title: str, description: str, targets: Sequence[prometheus.Dataquery], *,
             unit: str = "short", width: int = 12, height: int = 8, stacked: bool = False,
             minimum: float | None = 0, maximum: float | None = None,
             steps: Sequence[tuple[float | None, str]] | None = None) -> timeseries.Panel:
    """A time series panel with a table legend (mean, max, last)."""
    panel = (
        timeseries.Panel().title(title).description(description).datasource(PROM)
        .targets(list(targets)).unit(unit).height(height).span(width)
        .legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.TABLE)
                .placement(cm.LegendPlacement.BOTTOM).show_legend(True)
                .calcs(["mean", "max", "lastNotNull"]))
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI)
                 .sort(cm.SortOrder.DESCENDING))
        .fill_opacity(10).line_width(1)
    )
    if stacked:
        panel = panel.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL)).fill_opacity(40)
    if minimum is not None:
        panel = panel.min(minimum)
    if maximum is not None:
        panel = panel.max(maximum)
    if steps:
        panel = (panel.thresholds(thresholds(*steps))
                 .thresholds_style(cb.GraphThresholdsStyleConfig()
                                   .mode(cm.GraphThresholdsStyleMode.LINE)))
    return panel


def organize(hide: Sequence[str] = ("Time",), rename: dict[str, str] | None = None,
             order: Sequence[str] = ()) -> dm.DataTransformerConfig:
    """Grafana's "organize fields" transformation."""
    return dm.DataTransformerConfig(id_val="organize", options={
        "excludeByName": dict.fromkeys(hide, True),
        "renameByName": rename or {},
        "indexByName": {name: i for i, name in enumerate(order)},
    })


def table_panel(title: str, description: str, target: prometheus.Dataquery, *,
                value_name: str, unit: str, columns: Sequence[str], width: int = 12,
                height: int = 8,
                steps: Sequence[tuple[float | None, str]] = ((None, GREEN),)) -> table.Panel:
    """A table of one instant Prometheus query: label columns, then the value, largest first."""
    return (
        table.Panel().title(title).description(description).datasource(PROM)
        .with_target(target).height(height).span(width).unit(unit)
        .thresholds(thresholds(*steps)).color_scheme(by_threshold())
        .cell_options(cm.TableColoredBackgroundCellOptions())
        .with_transformation(organize(rename={"Value": value_name},
                                      order=(*columns, value_name)))
        .with_transformation(dm.DataTransformerConfig(
            id_val="filterFieldsByName",
            options={"include": {"names": [*columns, "Value"]}}))
        .sort_by([cb.TableSortByFieldState().display_name(value_name).desc(True)])
    )


def ui_link(title: str, path: str) -> dict[str, Any]:
    """A data link to the job browser's ``path`` (filters in its query string) under
    ``${jobmon_ui}``, the URL the exporters export as ``celery_jobmon_ui_info{external_url}``
    (``serve --external-url``); opens in a new tab.
    """
    return {"title": title, "url": f"${{{UI_VAR}}}{path}", "targetBlank": True}


def links(*entries: dict[str, Any]) -> list[dm.DynamicConfigValue]:
    """A field override setting the field's data links."""
    return [dm.DynamicConfigValue(id_val="links", value=list(entries))]


#: The dashboard's time range as a job-browser list filter (epoch seconds).
UI_RANGE = "since=${__from:date:seconds}&until=${__to:date:seconds}"
#: Job-browser links of the failures table's columns: (column, link title, path).
FAILURE_LINKS = (
    ("task id", "Task in the job browser", "/tasks/${__value.raw:percentencode}"),
    ("task", "Failures of this task in the job browser",
     "/failed?name=${__value.raw:percentencode}&" + UI_RANGE),
    ("exception", "These failures in the job browser",
     "/failed?name=${__data.fields.task:percentencode}"
     "&exception=${__value.raw:percentencode}&" + UI_RANGE),
    ("queue", "Waiting in this queue (job browser)",
     "/waiting?queue=${__value.raw:percentencode}"),
)


def failures_table(title: str, description: str, *, width: int,
                   height: int = 10) -> table.Panel:
    """Recent failures from the SQL history (``${history}``); the task id, task, exception
    and queue cells link to the job browser (:data:`FAILURE_LINKS`).
    """
    panel = (
        table.Panel().title(title).description(description).datasource(HISTORY)
        .with_target(Sql(recent_failures_sql())).height(height).span(width)
        .sort_by([cb.TableSortByFieldState().display_name("time").desc(True)])
        .override_by_name("message", [dm.DynamicConfigValue(id_val="custom.width", value=420)])
    )
    for column, link_title, path in FAILURE_LINKS:
        panel = panel.override_by_name(column, links(ui_link(link_title, path)))
    return panel


def instant_table(expr: str, ref: str = "A") -> prometheus.Dataquery:
    """An instant query in table format (one row per series)."""
    return prom(expr, ref=ref, instant=True, fmt=PromQueryFormat.TABLE)


#: Columns of the task summary: (title, unit, series recorded by prometheus/rules, matchers).
SUMMARY_COLUMNS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("executions /s", "ops", "celery:task_finished:rate5m", ()),
    ("failure ratio", "percentunit", "celery:task_failure_ratio:rate5m", ()),
    ("p95 runtime", "s", "celery:task_runtime_seconds:quantile5m", ('quantile="0.95"',)),
    ("average runtime", "s", "celery:task_runtime_seconds:avg5m", ()),
)


def task_summary_table() -> table.Panel:
    """One row per task from the recording rules (cheap at any zoom): one instant query per
    column, merged on the task name.
    """
    panel = (
        table.Panel().title("Tasks (last 5 minutes)")
        .description("Per task name, all queues and replicas, from the recording rules in "
                     "prometheus/rules/recording.yml (the queue and exporter filters do not "
                     "apply).")
        .datasource(PROM).height(8).span(24)
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(organize(
            hide=("Time", "job", "instance", "quantile"),
            rename={f"Value #{chr(ord('A') + i)}": column[0]
                    for i, column in enumerate(SUMMARY_COLUMNS)},
            order=("name", *(column[0] for column in SUMMARY_COLUMNS))))
        .sort_by([cb.TableSortByFieldState().display_name("executions /s").desc(True)])
    )
    for i, (title, unit, series, matchers) in enumerate(SUMMARY_COLUMNS):
        panel = (panel.with_target(instant_table(series + recorded_sel(TASK_MATCH, *matchers),
                                                 chr(ord("A") + i)))
                 .override_by_name(title, [dm.DynamicConfigValue(id_val="unit", value=unit)]))
    return panel


# -- variables ---------------------------------------------------------------------------------

def query_var(name: str, label: str, query: str, *, multi: bool = True,
              all_value: str = ".*") -> db.QueryVariable:
    """A Prometheus ``label_values`` variable; "All" means ``all_value`` (regex matchers)."""
    return (
        db.QueryVariable(name).label(label).query(query).datasource(PROM)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(multi).include_all(True).all_value(all_value)
        .current(dm.VariableOption(selected=True, text="All", value="$__all"))
    )


def common_variables() -> list[cogbuilder.Builder[dm.VariableModel]]:
    """datasource, history, job, cluster, instance, queue, task — in dependency order."""
    task_metrics = '__name__=~"celery_task_sent_total|celery_task_received_total"'
    queue_metrics = ('__name__=~"celery_task_sent_total|celery_task_received_total'
                     '|celery_queue_length"')
    return [
        db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"),
        db.DatasourceVariable("history").label("History (PostgreSQL)").type(POSTGRES_TYPE),
        query_var("job", "Job", "label_values(celery_jobmon_build_info, job)"),
        query_var("cluster", "Cluster",
                  f'label_values(celery_jobmon_build_info{{job=~"$job"}}, {CLUSTER_LABEL})')
        .description("The exporters' --const-label cluster=NAME (the Helm chart's clusterLabel); "
                     "empty when no exporter sets it."),
        query_var("instance", "Exporter",
                  'label_values(celery_jobmon_build_info{job=~"$job", cluster=~"$cluster"}, '
                  'instance)'),
        query_var("queue", "Queue", f"label_values({sel(queue_metrics)}, queue_name)"),
        query_var("task", "Task", f"label_values({sel(task_metrics, QUEUE_MATCH)}, name)",
                  all_value=ALL_BUT_BUILTIN_TASKS)
        .description("All: every task but Celery's built-in celery.* tasks (celery.chord_unlock "
                     "retries every second while a chord waits); pick one by name to see it."),
    ]


def ui_var() -> db.QueryVariable:
    """Hidden: the job browser's URL (``--external-url``) the selected job's (and cluster's)
    exporters export, for the data links (:func:`ui_link`); empty while none does.
    """
    return (
        db.QueryVariable(UI_VAR).label("Job browser")
        .query('label_values(celery_jobmon_ui_info{job=~"$job", cluster=~"$cluster"}, '
               'external_url)')
        .datasource(PROM).refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .hide(dm.VariableHide.HIDE_VARIABLE).multi(False).include_all(False)
        .description("The URL of celery-jobmon's job browser (serve --external-url), read "
                     "from celery_jobmon_ui_info: tables link to its pages.")
    )


def ui_dashboard_link(title: str, path: str) -> db.DashboardLink:
    """A dashboard link to the job browser's ``path`` (``${jobmon_ui}``)."""
    return (db.DashboardLink(title).type(dm.DashboardLinkType.LINK)
            .url(f"${{{UI_VAR}}}{path}").target_blank(True).icon("external link"))


def slow_threshold_var() -> db.CustomVariable:
    """Seconds of average run time above which a task is listed in "Slow jobs"."""
    return (
        db.CustomVariable("slow_threshold").label("Slow above (s)")
        .values("1,5,10,30,60,300,900")
        .current(dm.VariableOption(selected=True, text="10", value="10"))
    )


def dashboard(uid: str, title: str, description: str) -> db.Dashboard:
    """Shared settings: UTC-independent browser time, last hour, 30 s auto-refresh."""
    return (
        db.Dashboard(title).uid(uid).description(description)
        .tags(["celery", "celery-jobmon"]).editable().timezone("browser")
        .time("now-1h", "now").refresh("30s")
        .timepicker(db.TimePicker().refresh_intervals(["10s", "30s", "1m", "5m", "15m"]))
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
    )


def link(title: str, uid: str) -> db.DashboardLink:
    """A link to another dashboard carrying the time range and the variables."""
    return (db.DashboardLink(title).type(dm.DashboardLinkType.LINK).url(f"/d/{uid}")
            .include_vars(True).keep_time(True).icon("dashboard"))


# -- overview ----------------------------------------------------------------------------------

def overview() -> db.Dashboard:
    """Celery / Overview: what runs, waits, fails and which workers and exporter are healthy."""
    def rate_of(counter: str) -> str:
        return dedup(f"rate(celery_task_{counter}_total{TASK_SEL}[{RATE}])")

    failed = f"sum({rate_of('failed')})"
    succeeded = f"sum({rate_of('succeeded')})"

    def by_name(counter: str) -> str:
        return f"sum by (name) ({rate_of(counter)})"

    runtime = f"celery_task_runtime_seconds_bucket{TASK_SEL}"
    window = "$__range"
    board = (
        dashboard(OVERVIEW_UID, "Celery / Overview",
                  "Celery tasks, queues and workers as seen by celery-jobmon.")
        .variables([*common_variables(), slow_threshold_var(), ui_var()])
        .link(link("Task drill-down", TASK_UID))
        .link(ui_dashboard_link("Job browser", "/"))

        .with_row(db.Row("Now"))
        .with_panel(stat_panel(
            "Running now", "Tasks started and not finished (task events).",
            prom(f"sum({dedup(f'celery_task_running{TASK_SEL}')})")))
        .with_panel(stat_panel(
            "Pending", "Messages waiting in the broker queues (all priorities).",
            prom(f"sum({dedup(f'celery_queue_length{QUEUE_SEL}')})"),
            steps=((None, GREEN), (100, ORANGE), (1000, RED))))
        .with_panel(stat_panel(
            "Reserved", "Tasks prefetched by workers, not started (inspect reserved).",
            prom(f"sum({dedup(f'celery_task_reserved{TASK_SEL}')})"), steps=((None, BLUE),)))
        .with_panel(stat_panel(
            "Scheduled (ETA)", "Tasks held by workers until their ETA/countdown.",
            prom(f"sum({dedup(f'celery_task_scheduled{TASK_SEL}')})"), steps=((None, BLUE),)))
        .with_panel(stat_panel(
            "Succeeded /s", "Successful tasks per second.", prom(succeeded), unit="ops"))
        .with_panel(stat_panel(
            "Failed /s", "Failed tasks per second.", prom(failed), unit="ops",
            steps=((None, GREEN), (0.001, ORANGE), (1, RED))))
        .with_panel(stat_panel(
            "Failure ratio", "failed / (succeeded + failed) over the rate interval.",
            prom(f"{failed} / ({succeeded} + {failed})"), unit="percentunit",
            steps=((None, GREEN), (0.05, ORANGE), (0.1, RED)), decimals=1))
        .with_panel(stat_panel(
            "Oldest waiting", "Age of the oldest message waiting in a queue (Redis).",
            prom(f"max(celery_queue_oldest_message_age_seconds{QUEUE_SEL})"), unit="s",
            steps=((None, GREEN), (60, ORANGE), (300, RED))))

        .with_row(db.Row("Throughput and failures"))
        .with_panel(ts_panel(
            "Succeeded and failed rates",
            "Finished tasks per second, retries, and executions lost with their worker.", [
                prom(succeeded, "succeeded", "A"),
                prom(failed, "failed", "B"),
                prom(f"sum({rate_of('retried')})", "retried", "C"),
                prom(f"sum({rate_of('lost')})", "lost", "D"),
            ], unit="ops"))
        .with_panel(ts_panel(
            "Failure ratio by task", "failed / (succeeded + failed) per task name.", [
                prom(f"{by_name('failed')} / ({by_name('succeeded')} + {by_name('failed')})",
                     "{{name}}"),
            ], unit="percentunit", maximum=1, steps=((None, GREEN), (0.1, RED))))
        .with_panel(table_panel(
            "Top exceptions",
            "Failures by task and exception class in the time range (10 largest).",
            instant_table(
                f"topk(10, sum by (name, exception) ("
                f"{dedup(f'increase(celery_task_exceptions_total{NAME_SEL}[{window}])')}) > 0)"),
            value_name="failures", unit="short", columns=("name", "exception"), height=10,
            steps=((None, ORANGE),))
            .override_by_name("name", links(ui_link(
                "Failures of this task in the job browser",
                "/failed?name=${__value.raw:percentencode}&" + UI_RANGE)))
            .override_by_name("exception", links(ui_link(
                "These failures in the job browser",
                "/failed?name=${__data.fields.name:percentencode}"
                "&exception=${__value.raw:percentencode}&" + UI_RANGE))))
        .with_panel(failures_table(
            "Recent failures (history)",
            "Newest failed executions of the selected tasks from the SQL history: task, "
            "exception, message, time, worker.", width=12))

        .with_row(db.Row("Queues"))
        .with_panel(ts_panel(
            "Pending by queue and priority",
            "Messages waiting per queue and priority level (Redis priority sub-queues; "
            "RabbitMQ: priority empty).", [
                prom(f"sum by (queue_name, priority) ({dedup(f'celery_queue_length{QUEUE_SEL}')})",
                     "{{queue_name}} priority {{priority}}"),
            ], stacked=True))
        .with_panel(ts_panel(
            "Queue latency (oldest waiting)",
            "Age of the oldest waiting message per queue: how late the next task starts.", [
                prom(f"max by (queue_name) (celery_queue_oldest_message_age_seconds"
                     f"{QUEUE_SEL})", "{{queue_name}}"),
            ], unit="s", steps=((None, GREEN), (300, RED))))
        .with_panel(ts_panel(
            "Queue wait p95",
            "95th percentile of the time from sent (or ETA) to started, per queue.", [
                prom(f"histogram_quantile(0.95, sum by (queue_name, le) ("
                     f"{dedup(f'rate(celery_task_queue_wait_seconds_bucket{TASK_SEL}[{RATE}])')}))",
                     "{{queue_name}}"),
            ], unit="s"))
        .with_panel(ts_panel(
            "Consumers per queue",
            "Workers consuming each queue; 0 with messages waiting means nobody takes them.", [
                prom(f"max by (queue_name) (celery_queue_consumers{QUEUE_SEL})",
                     "{{queue_name}}"),
            ]))
        .with_panel(ts_panel(
            "Running, reserved and scheduled by task",
            "Running (events), prefetched (inspect reserved) and waiting for their ETA "
            "(inspect scheduled).", [
                prom(f"sum by (name) ({dedup(f'celery_task_running{TASK_SEL}')})",
                     "{{name}} running", "A"),
                prom(f"sum by (name) ({dedup(f'celery_task_reserved{TASK_SEL}')})",
                     "{{name}} reserved", "B"),
                prom(f"sum by (name) ({dedup(f'celery_task_scheduled{TASK_SEL}')})",
                     "{{name}} scheduled (ETA)", "C"),
            ], width=24))

        .with_row(db.Row("Runtime"))
        .with_panel(ts_panel(
            "Runtime p50 / p95 / p99 by task",
            "Quantiles of the run time of finished tasks (successes and failures).",
            quantile_targets(runtime, "name", "{{name}} "), unit="s", width=24))
        .with_panel(task_summary_table())
        .with_panel(table_panel(
            "Slow jobs",
            "Tasks whose average run time over the time range is above $slow_threshold s.",
            instant_table(
                f"sum by (name) ("
                f"{dedup(f'increase(celery_task_runtime_seconds_sum{TASK_SEL}[{window}])')})"
                f" / sum by (name) ("
                f"{dedup(f'increase(celery_task_runtime_seconds_count{TASK_SEL}[{window}])')})"
                f" > $slow_threshold"),
            value_name="average runtime", unit="s", columns=("name",),
            steps=((None, ORANGE),))
            .override_by_name("name", links(ui_link(
                "Statistics of this task in the job browser",
                "/statistics?name=${__value.raw:percentencode}"))))
        .with_panel(table_panel(
            "Stuck jobs (oldest running)",
            "Age of the oldest running task per name (inspect active): long ages are stuck "
            "jobs.",
            instant_table(f"sort_desc(max by (name) (celery_task_oldest_running_seconds"
                          f"{NAME_SEL}))"),
            value_name="running for", unit="s", columns=("name",),
            steps=((None, GREEN), (600, ORANGE), (1800, RED))))

        .with_row(db.Row("Workers"))
        .with_panel(stat_panel(
            "Workers up / silent / down", "Each worker: up while heartbeats arrive, down "
            "after worker-offline or the worker timeout; silent: a solo-pool worker quiet past "
            "the worker timeout but not past --solo-busy-timeout (busy with one task or dead: "
            "a solo worker sends nothing while it runs a task).",
            prom(f"max by (hostname) (celery_worker_up{sel()}) + max by (hostname) "
                 f"(celery_worker_silent{sel()})", "{{hostname}}"),
            steps=((None, RED), (1, GREEN), (2, ORANGE)),
            mappings={"2": ("silent", ORANGE), "1": ("up", GREEN), "0": ("down", RED)},
            width=12, height=8))
        .with_panel(ts_panel(
            "Worker busy ratio",
            "Tasks running / pool size per worker (heartbeat active / inspect stats).", [
                prom(f"max by (hostname) (celery_worker_tasks_active{sel()}) / max by "
                     f"(hostname) (celery_worker_pool_size{sel()})", "{{hostname}}"),
            ], unit="percentunit", maximum=1, steps=((None, GREEN), (0.9, RED))))
        .with_panel(ts_panel(
            "Tasks processed per worker", "Tasks per second each worker processed.", [
                prom(f"sum by (hostname) "
                     f"({dedup(f'rate(celery_worker_processed_total{sel()}[{RATE}])')})",
                     "{{hostname}}"),
            ], unit="ops", width=8))
        .with_panel(ts_panel(
            "Worker CPU", "CPU seconds per second of each worker's main process (user + "
            "system).", [
                prom(f"sum by (hostname) ("
                     f"{dedup(f'rate(celery_worker_cpu_user_seconds_total{sel()}[{RATE}])')}"
                     f" + {dedup(f'rate(celery_worker_cpu_system_seconds_total{sel()}[{RATE}])')}"
                     f")", "{{hostname}}"),
            ], unit="percentunit", width=8))
        .with_panel(ts_panel(
            "Worker peak memory", "Peak resident set size of each worker's main process.", [
                prom(f"max by (hostname) (celery_worker_max_rss_bytes{sel()})", "{{hostname}}"),
            ], unit="bytes", width=8))
    )
    return exporter_health(data_quality(workflows(periodic_tasks(board))))


def periodic_tasks(board: db.Dashboard) -> db.Dashboard:
    """The row about periodic entries (README "Periodic tasks"): the ``celery_periodic_*``
    families of the periodic tracker — when each entry is due, when it last ran, how it ended,
    the runs never sent — and whether its schedule sources were read. Entries follow the Task
    variable (their ``task`` label); replicas judge the same history: merged with
    :func:`dedup`. Empty without a schedule source (``--app``, ``--redbeat-url``,
    ``--django-beat-url``, ``--expect``).
    """
    entry_sel = sel('task=~"$task"')
    failed = sel('task=~"$task"', 'state=~"FAILURE|LOST"')

    def merged(family: str, matchers: str = entry_sel) -> str:
        return dedup(f"celery_{family}{matchers}")

    missed = f"increase(celery_periodic_task_missed_runs_total{entry_sel}[$__range])"
    def per_entry(family: str) -> str:
        return f"max by (entry, task) ({merged(family)})"

    # Every column by (entry, task) alone, so that the merge lines them up.
    columns = (
        ("next run in", f"{per_entry('periodic_task_next_run_timestamp_seconds')} - time()"),
        ("since last sent",
         f"time() - {per_entry('periodic_task_last_sent_timestamp_seconds')}"),
        ("since last start",
         f"time() - {per_entry('periodic_task_last_started_timestamp_seconds')}"),
        ("since last success",
         f"time() - {per_entry('periodic_task_last_succeeded_timestamp_seconds')}"),
        ("missed in range", f"sum by (entry, task) ({dedup(missed)})"),
    )
    entries = (
        table.Panel().title("Periodic entries")
        .description("Per periodic entry: seconds until its next run is due (negative: due "
                     "and not sent yet), since its last run was sent, started and succeeded "
                     "(from the history), and the due runs never sent in the time range.")
        .datasource(PROM).height(8).span(16).unit("s")
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(organize(
            rename={f"Value #{chr(ord('A') + i)}": title for i, (title, _) in enumerate(columns)},
            order=("entry", "task", *(title for title, _ in columns))))
        .override_by_name("missed in range", [dm.DynamicConfigValue(id_val="unit",
                                                                    value="short")])
        .override_by_name("entry", links(ui_link("This entry in the job browser",
                                                 "/periodic?entry=${__value.raw:percentencode}")))
        .sort_by([cb.TableSortByFieldState().display_name("next run in")])
    )
    for i, (_, expr) in enumerate(columns):
        entries = entries.with_target(instant_table(expr, chr(ord("A") + i)))
    return (
        board.with_row(db.Row("Periodic tasks"))
        .with_panel(stat_panel(
            "Missed periodic runs", "Runs due by their entry's schedule and not sent within "
            "--periodic-grace in the time range (CeleryPeriodicTaskMissed fires on any).",
            prom(f"sum({dedup(missed)})"), steps=((None, GREEN), (1, RED)), decimals=0,
            width=6))
        .with_panel(stat_panel(
            "Last run failed", "Entries whose newest finished run ended in FAILURE or LOST "
            "(CeleryPeriodicTaskFailed).",
            prom(f"sum({merged('periodic_task_last_outcome', failed)})"),
            steps=((None, GREEN), (1, ORANGE)), decimals=0, width=6))
        .with_panel(stat_panel(
            "Schedule sources down", "Schedule sources (app, redbeat, django, expect) not "
            "read at the last check: their entries are those read last.",
            prom(f"sum({dedup(f'1 - celery_jobmon_periodic_source_up{sel()}')})"),
            steps=((None, GREEN), (1, RED)), decimals=0, width=6))
        .with_panel(stat_panel(
            "Periodic check age", "Seconds since the periodic tracker last read the schedule "
            "and the history (--periodic-interval).",
            prom(f"max(time() - celery_jobmon_periodic_last_check_timestamp_seconds{sel()})"),
            unit="s", steps=((None, GREEN), (120, ORANGE), (600, RED)), width=6))
        .with_panel(table_panel(
            "Last outcome by entry", "How each entry's newest finished run ended.",
            instant_table(f"max by (entry, task, state) "
                          f"({merged('periodic_task_last_outcome')}) == 1"),
            value_name="last", unit="short", columns=("entry", "task", "state"), width=8,
            height=8))
        .with_panel(entries)
        .with_panel(ts_panel(
            "Missed periodic runs by entry", "Due runs not sent, per entry, per rate interval.",
            [prom(f"sum by (entry) ({dedup(missed.replace('$__range', RATE))})", "{{entry}}")],
            width=24))
    )


def workflows(board: db.Dashboard) -> db.Dashboard:
    """The row about workflows (README "Workflows"): chains and chords in progress, steps
    waiting behind an ended predecessor longer than --chord-stuck-after (by the waiting task's
    name, which follows the Task variable; CeleryChordStuck), and celery.chord_unlock's polls
    of a chord's header (by the callback's name; CeleryChordHeaderWaiting). Replicas see the
    same events: merged with :func:`dedup`.
    """
    unlock = f"rate(celery_chord_unlock_retries_total{NAME_SEL}[{RATE}])"
    return (
        board.with_row(db.Row("Workflows"))
        .with_panel(stat_panel(
            "Workflows in progress", "Roots with two or more tasks in memory (chains, chords, "
            "tasks that sent others) and a task not ended.",
            prom(f"max({dedup(f'celery_workflows_in_progress{sel()}')})"), decimals=0,
            width=6))
        .with_panel(stat_panel(
            "Stuck workflow steps", "Tasks not started longer than --chord-stuck-after after "
            "the task that sent them ended: a chord's callback, a chain's next step "
            "(CeleryChordStuck).",
            prom(f"sum({dedup(f'celery_chords_stuck{NAME_SEL}')}) or vector(0)"),
            steps=((None, GREEN), (1, RED)), decimals=0, width=6))
        .with_panel(ts_panel(
            "Stuck steps by task", "Tasks waiting behind an ended predecessor for longer than "
            "--chord-stuck-after, by the waiting task's name.",
            [prom(f"sum by (name) ({dedup(f'celery_chords_stuck{NAME_SEL}')})", "{{name}}")],
            width=6))
        .with_panel(ts_panel(
            "chord_unlock polls /s by callback", "celery.chord_unlock retries per second (it "
            "polls a chord's header about once a second until ready; result backends without "
            "native chords), by the chord callback's name.",
            [prom(f"sum by (name) ({dedup(unlock)})", "{{name}}")], unit="ops", width=6))
    )


def data_quality(board: db.Dashboard) -> db.Dashboard:
    """The row that says how exact the other rows are: task events lost (per worker, from the
    heartbeats' ``processed``), consuming connections lost, what the repairer took from the
    result backend and the workers, what it could not settle, and how far behind the consumer
    is (README, "How exact are the numbers?").

    Each replica loses and repairs events on its own: counters are merged with :func:`dedup`
    (the replica with most), gauges with ``max`` (the replica worst off); pick one in
    "Exporter" to see it alone.
    """
    def in_range(counter: str) -> str:
        return f"sum({dedup(f'increase({counter}{sel()}[$__range])')})"

    def per_second(counter: str, by: str) -> str:
        return f"sum by ({by}) ({dedup(f'rate({counter}{sel()}[{RATE}])')})"

    missed = "celery_worker_missed_task_events_total"
    return (
        board.with_row(db.Row("Data quality"))
        .with_panel(stat_panel(
            "Missed task events", "task-started events the workers' heartbeats announced "
            "(processed) that never arrived, in the time range: every one is also a missed "
            "end, so the task counters are short by as much until repaired.",
            prom(in_range(missed)), steps=((None, GREEN), (1, RED)), decimals=0))
        .with_panel(stat_panel(
            "Missed ratio", "Missed task-started events / tasks the workers processed in the "
            "time range (the alert CeleryJobmonEventsMissed fires above 1 % over 15 minutes).",
            prom(f"{in_range(missed)} / clamp_min("
                 f"{in_range('celery_worker_processed_total')}, 1)"),
            unit="percentunit", steps=((None, GREEN), (0.001, ORANGE), (0.01, RED)),
            decimals=1))
        .with_panel(stat_panel(
            "Event gaps", "Consuming connections lost in the time range (the replica with most, "
            "when several): events published until the reconnect are missing from its counts "
            "until repaired.",
            prom(in_range("celery_jobmon_event_gaps_total")), steps=((None, GREEN), (1, RED)),
            decimals=0))
        .with_panel(stat_panel(
            "Event lag", "Receipt time minus event timestamp of the last event: grows when "
            "the consumer falls behind (or clocks are skewed).",
            prom(f"max(celery_jobmon_event_lag_seconds{sel()})"), unit="s",
            steps=((None, GREEN), (5, ORANGE), (30, RED))))
        .with_panel(stat_panel(
            "Repaired", "Tasks whose state a repair took from the result backend or the "
            "workers in the time range; their counters moved at repair time.",
            prom(in_range("celery_jobmon_repairs_total")), steps=((None, BLUE),), decimals=0))
        .with_panel(stat_panel(
            "Repairs pending", "Tasks the repairer still has to check, or check again.",
            prom(f"max(celery_jobmon_repair_pending_tasks{sel()})"),
            steps=((None, GREEN), (1, ORANGE)), decimals=0))
        .with_panel(stat_panel(
            "Unresolved tasks", "Tasks left in progress by lost events whose outcome no source "
            "knows (no result backend, or it stored none): their counters and rows stay as the "
            "events left them.",
            prom(f"max(celery_jobmon_repair_unresolved_tasks{sel()})"),
            steps=((None, GREEN), (1, RED)), decimals=0))
        .with_panel(stat_panel(
            "Repair source errors", "Failed calls to the result backend or the workers in the "
            "time range; the source is asked again after a backoff.",
            prom(in_range("celery_jobmon_repair_source_errors_total")),
            steps=((None, GREEN), (1, ORANGE)), decimals=0))
        .with_panel(ts_panel(
            "Missed task events per worker", "task-started events per second each worker's "
            "heartbeats announced and the exporter never received (the replica that missed "
            "most, when several).", [
                prom(per_second(missed, "hostname"), "{{hostname}}"),
            ], unit="ops", width=6))
        .with_panel(ts_panel(
            "Repairs by state and source", "Tasks repaired per second, by the state set and "
            "the source that said it (result_backend, workers).", [
                prom(per_second("celery_jobmon_repairs_total", "state, source"),
                     "{{state}} from {{source}}"),
            ], unit="ops", width=6, stacked=True))
        .with_panel(ts_panel(
            "Unresolved and pending repairs", "Tasks no source could settle (unresolved) and "
            "tasks waiting for a check (pending); the replica with most.", [
                prom(f"max(celery_jobmon_repair_unresolved_tasks{sel()})", "unresolved", "A"),
                prom(f"max(celery_jobmon_repair_pending_tasks{sel()})", "pending", "B"),
            ], width=6))
        .with_panel(ts_panel(
            "Event gaps and repair source errors", "Consuming connections lost and failed "
            "calls to a repair source, per second.", [
                prom(f"sum({dedup(f'rate(celery_jobmon_event_gaps_total{sel()}[{RATE}])')})",
                     "event gaps", "A"),
                prom(per_second("celery_jobmon_repair_source_errors_total", "source"),
                     "{{source}} errors", "B"),
            ], unit="ops", width=6))
    )


def exporter_health(
board: db.Dashboard) -> db.Dashboard:
    """The row about celery-jobmon itself: is it scraped, connected, keeping up, writing the
    history.
    """
    return (
        board.with_row(db.Row("Exporter health"))
        .with_panel(stat_panel(
            "Scrape up", "Prometheus reaches the exporter (up).",
            prom('min(up{job=~"$job", instance=~"$instance"})'),
            steps=((None, RED), (1, GREEN)), mappings={"1": ("up", GREEN), "0": ("down", RED)},
            width=4))
        .with_panel(stat_panel(
            "Broker connected", "Event consumer connected to the broker.",
            prom(f"min(celery_jobmon_broker_connected{sel()})"),
            steps=((None, RED), (1, GREEN)),
            mappings={"1": ("connected", GREEN), "0": ("disconnected", RED)}, width=4))
        .with_panel(stat_panel(
            "Last event age", "Seconds since the exporter received an event.",
            prom(f"max(time() - celery_jobmon_last_event_timestamp_seconds{sel()})"),
            unit="s", steps=((None, GREEN), (30, ORANGE), (120, RED)), width=4))
        .with_panel(stat_panel(
            "Poll age", "Seconds since the poller's last completed round (inspect + queue "
            "lengths).", prom(f"max(celery_jobmon_poll_age_seconds{sel()})"), unit="s",
            steps=((None, GREEN), (60, ORANGE), (300, RED)), width=4))
        .with_panel(stat_panel(
            "History", "SQL history written (on) or off / not opened at start.",
            prom(f"min(celery_jobmon_history_enabled{sel()})"),
            steps=((None, ORANGE), (1, GREEN)),
            mappings={"1": ("on", GREEN), "0": ("off", ORANGE)}, width=4))
        .with_panel(stat_panel(
            "History write failures", "Failed history writes since the last success (rows "
            "are kept and retried; 0 is healthy).",
            prom(f"max(celery_jobmon_history_consecutive_write_failures{sel()})"),
            steps=((None, GREEN), (1, RED)), decimals=0, width=4))
        .with_panel(ts_panel(
            "Events received /s", "Celery events the exporter received, by type (the "
            "replica receiving most, when several).", [
                prom(f"sum by (type) "
                     f"({dedup(f'rate(celery_jobmon_events_received_total{sel()}[{RATE}])')})",
                     "{{type}}"),
            ], unit="ops", width=6, stacked=True))
        .with_panel(ts_panel(
            "Consumer saturation", "Share of wall time spent applying events (1 = saturated; "
            "the busiest replica, when several).",
            [prom(f"sum("
                  f"{dedup(f'rate(celery_jobmon_event_processing_seconds_total{sel()}[{RATE}])')})",
                  "busy")], unit="percentunit", width=6, maximum=1))
        .with_panel(ts_panel(
            "Malformed events and poll errors", "Events skipped by reason; failed poller "
            "calls by call; task names folded into name=\"other\" (--max-task-names reached: "
            "each new name once).", [
                prom(f"sum by (reason) "
                     f"({dedup(f'rate(celery_jobmon_events_malformed_total{sel()}[{RATE}])')})",
                     "malformed {{reason}}", "A"),
                prom(f"sum by (call) "
                     f"({dedup(f'rate(celery_jobmon_poll_errors_total{sel()}[{RATE}])')})",
                     "poll error {{call}}", "B"),
                prom(f"sum("
                     f"{dedup(f'rate(celery_jobmon_task_names_folded_total{sel()}[{RATE}])')})",
                     "task names folded", "C"),
            ], unit="ops", width=6))
        .with_panel(ts_panel(
            "History rows written and dropped /s", "Rows the history writer wrote; events or "
            "rows it could not keep, by reason (the replica with most, when several).", [
                prom(f"sum("
                     f"{dedup(f'rate(celery_jobmon_history_rows_written_total{sel()}[{RATE}])')})",
                     "written", "A"),
                prom(f"sum by (reason) "
                     f"({dedup(f'rate(celery_jobmon_history_dropped_total{sel()}[{RATE}])')})"
                     f" > 0", "dropped {{reason}}", "B"),
            ], unit="ops", width=6))
    )


# -- task drill-down ---------------------------------------------------------------------------

LIFECYCLE = ("sent", "received", "started", "succeeded", "failed", "retried", "revoked",
             "rejected", "cancelled")


def task_drilldown() -> db.Dashboard:
    """Celery / Task: one task name (or a few) in detail."""
    def total(counter: str) -> str:
        return f"sum({dedup(f'increase(celery_task_{counter}_total{TASK_SEL}[$__range])')})"

    def now(gauge: str) -> str:
        return f"sum({dedup(f'celery_task_{gauge}{TASK_SEL}')})"

    runtime = f"celery_task_runtime_seconds_bucket{TASK_SEL}"
    wait = f"celery_task_queue_wait_seconds_bucket{TASK_SEL}"
    return (
        dashboard(TASK_UID, "Celery / Task",
                  "One Celery task in detail: lifecycle, run time, waits, failures.")
        .variables([*common_variables(), ui_var()])
        .link(link("Overview", OVERVIEW_UID))
        .link(ui_dashboard_link("Failures in the job browser", "/failed?" + UI_RANGE))

        .with_row(db.Row("Task $task"))
        .with_panel(stat_panel("Succeeded", "Successful executions in the time range.",
                               prom(total("succeeded")), decimals=0))
        .with_panel(stat_panel("Failed", "Failed executions in the time range.",
                               prom(total("failed")), decimals=0,
                               steps=((None, GREEN), (1, RED))))
        .with_panel(stat_panel(
            "Failure ratio", "failed / (succeeded + failed) in the time range.",
            prom(f"{total('failed')} / ({total('succeeded')} + {total('failed')})"),
            unit="percentunit", steps=((None, GREEN), (0.05, ORANGE), (0.1, RED)), decimals=1))
        .with_panel(stat_panel("Running now", "Started and not finished (task events).",
                               prom(now("running"))))
        .with_panel(stat_panel("Reserved", "Prefetched by workers, not started.",
                               prom(now("reserved")), steps=((None, BLUE),)))
        .with_panel(stat_panel("Scheduled (ETA)", "Held by workers until their ETA.",
                               prom(now("scheduled")),
                               steps=((None, BLUE),)))
        .with_panel(stat_panel(
            "Next ETA in", "Seconds until the earliest ETA among scheduled tasks.",
            prom(f"min(celery_task_scheduled_earliest_eta_timestamp_seconds{NAME_SEL}) - "
                 f"time()"), unit="s", steps=((None, BLUE),)))
        .with_panel(stat_panel(
            "Oldest running", "Age of the oldest running execution (inspect active).",
            prom(f"max(celery_task_oldest_running_seconds{NAME_SEL})"), unit="s",
            steps=((None, GREEN), (600, ORANGE), (1800, RED))))

        .with_row(db.Row("Lifecycle"))
        .with_panel(ts_panel(
            "Lifecycle rates", "Task events per second, by lifecycle step.", [
                prom(f"sum({dedup(f'rate(celery_task_{step}_total{TASK_SEL}[{RATE}])')})", step,
                     chr(ord("A") + i))
                for i, step in enumerate(LIFECYCLE)
            ], unit="ops", width=24))

        .with_row(db.Row("Run time and waits"))
        .with_panel(ts_panel(
            "Runtime p50 / p95 / p99", "Run time quantiles of finished executions.",
            [*quantile_targets(runtime, "", ""),
             prom(f"sum({dedup(f'rate(celery_task_runtime_seconds_sum{TASK_SEL}[{RATE}])')}) / "
                  f"sum({dedup(f'rate(celery_task_runtime_seconds_count{TASK_SEL}[{RATE}])')})",
                  "average", "D")],
            unit="s"))
        .with_panel(
            heatmap.Panel().title("Runtime distribution")
            .description("Finished executions per run-time bucket.").datasource(PROM)
            .with_target(prom(f"sum by (le) ({dedup(f'increase({runtime}[{RATE}])')})", "{{le}}",
                              fmt=PromQueryFormat.HEATMAP))
            .calculate(False).height(8).span(12)
            .color(heatmap.HeatmapColorOptions().mode(hm.HeatmapColorMode.SCHEME)
                   .scheme("Oranges").scale(hm.HeatmapColorScale.EXPONENTIAL))
            .y_axis(heatmap.YAxisConfig().unit("s")))
        .with_panel(ts_panel(
            "Queue wait p50 / p95 / p99", "Time from sent (or ETA) to started.",
            quantile_targets(wait, "", ""), unit="s"))
        .with_panel(ts_panel(
            "Running, reserved and scheduled", "In flight now.", [
                prom(now("running"), "running", "A"),
                prom(now("reserved"), "reserved", "B"),
                prom(now("scheduled"), "scheduled (ETA)", "C"),
            ]))

        .with_row(db.Row("Failures"))
        .with_panel(ts_panel(
            "Failures by exception", "Failures per second by exception class.", [
                prom(f"sum by (exception) "
                     f"({dedup(f'rate(celery_task_exceptions_total{NAME_SEL}[{RATE}])')})",
                     "{{exception}}"),
            ], unit="ops", width=8, height=10))
        .with_panel(failures_table(
            "Recent failures (history)", "Newest failed executions of the selected tasks.",
            width=16))
    )


# -- output ------------------------------------------------------------------------------------

def numbered(board: db.Dashboard) -> dict[str, Any]:
    """The dashboard as a JSON object, panels numbered 1, 2, … in layout order."""
    data: dict[str, Any] = json.loads(JSONEncoder().encode(board.build()))
    for number, panel in enumerate(data["panels"], start=1):
        panel["id"] = number
    return data


def dashboards() -> dict[str, dict[str, Any]]:
    """File name → dashboard JSON object, for every dashboard."""
    return {"celery-overview.json": numbered(overview()),
            "celery-task.json": numbered(task_drilldown())}


def render(data: dict[str, Any]) -> str:
    """The committed text of a dashboard: sorted keys, two-space indent, final newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def stale_files(directory: Path = DASHBOARDS_DIR) -> list[str]:
    """Names of the dashboard files missing or different from what the generator makes."""
    return [name for name, data in dashboards().items()
            if not (directory / name).is_file()
            or (directory / name).read_text(encoding="utf-8") != render(data)]


def main(argv: Sequence[str] | None = None) -> int:
    """Write the dashboards, or with ``--check`` report stale ones (exit status 1)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed files; write nothing")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            sys.stderr.write(f"stale: grafana/dashboards/{name} (run python grafana/generate.py)\n")
        return 1 if stale else 0
    DASHBOARDS_DIR.mkdir(exist_ok=True)
    for name, data in dashboards().items():
        (DASHBOARDS_DIR / name).write_text(render(data), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
