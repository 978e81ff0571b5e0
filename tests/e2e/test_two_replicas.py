"""End to end, two replicas: a real Prometheus with the project's rules scrapes TWO real
``celery-jobmon serve`` processes (one job, two instances) watching one real worker, both
writing the same PostgreSQL history. The recorded series, the alerts and the dashboards must
give what one exporter alone gives, and the shared history one row per task.

Scenario (Redis db 15, this module's own; queues ``a``/``b`` consumed by a worker with two pool
processes, ``c`` not; results in a PostgreSQL result backend, so that a chord waits through
Celery's built-in ``celery.chord_unlock``, which retries every second): first one task of each
counted name with a countdown, so that both replicas' first samples of its series are 0; then
more of each — in all 10 successes of ``add``, 3 failures of ``fail_value``, 4 of ``charge``,
``flaky`` retrying 26 times (6 successes, 1 failure) — 3 messages on ``c``, and a chord whose
20 s header keeps ``celery.chord_unlock`` retrying. (The retried counter is born at a task's
first retry, so the warm-up's ``flaky`` retries once and its series is scraped before the 25
retries that follow.)

Where a figure depends on when each replica was scraped (a ``rate`` extrapolated to its
window), the check is that the two-replica figure is the larger single-replica one, never
their sum; counts, ratios, averages, queue lengths and alerts are exact.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import redis
import yaml
from celery import Celery, chord
from sqlalchemy import Engine, text

from tests.support.binaries import require_binary
from tests.support.exporter import Exporter, run_cli
from tests.support.paths import ROOT
from tests.support.prometheus import Prometheus, e2e_config
from tests.support.waiting import wait_for
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

#: This module's Redis database (others: 1-8 the shared fixtures, 9 the Prometheus end-to-end
#: test, 10 loadgen, 13 and 14 integration tests).
REDIS_DB = 15
BROKER_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/{db}"
RULES = {rule.get("record") or rule["alert"]: rule
         for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
         for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]}
DASHBOARDS = {path.name: json.loads(path.read_text())
              for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json"))}

T = "examples.tasks."
ADD, FAIL_VALUE, CHARGE, FLAKY, SLEEP = (T + n for n in ("add", "fail_value", "charge", "flaky",
                                                         "sleep"))
CHORD_UNLOCK = "celery.chord_unlock"
#: What one exporter counts at the end: (succeeded, failed) per task name.
FINISHED = {ADD: (10, 0), FAIL_VALUE: (0, 3), CHARGE: (0, 4), FLAKY: (6, 1), SLEEP: (1, 0),
            CHORD_UNLOCK: (1, 0)}
FLAKY_RETRIES = 26
WAITING_ON_C = 3


@dataclass
class Replicas:
    prometheus: Prometheus
    exporters: list[Exporter]
    worker: Worker
    history: Engine
    task_states: dict[str, str]
    #: A time (Prometheus clock, epoch seconds) after the last scrape that changed anything:
    #: every instant comparison is evaluated there, on the same samples.
    at: float

    @property
    def instances(self) -> list[str]:
        return [f"127.0.0.1:{exporter.port}" for exporter in self.exporters]

    def values(self, expr: str) -> dict[frozenset[tuple[str, str]], float]:
        """Labels → value of each series ``expr`` returns at :attr:`at`."""
        body = self.prometheus.api("query", query=expr, time=f"{self.at:.3f}")
        assert body["status"] == "success", (expr, body)
        return {frozenset(series["metric"].items()): float(series["value"][1])
                for series in body["data"]["result"]}


def by_name(values: dict[frozenset[tuple[str, str]], float]) -> dict[str, float]:
    """``{name: value}`` of series told apart by their ``name`` label alone (fails otherwise)."""
    named = {dict(labels)["name"]: value for labels, value in values.items()}
    assert len(named) == len(values), values
    return named


@pytest.fixture(scope="module")
def results_url() -> Iterator[str]:
    """A Celery database result backend on a new PostgreSQL database (dropped afterwards):
    no native chord join, so chords wait through ``celery.chord_unlock``."""
    name = f"jobmon_e2e_results_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES.format(db="postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield "db+" + POSTGRES.format(db=name).replace("postgresql://", "postgresql+psycopg://")
    with psycopg.connect(POSTGRES.format(db="postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _finished(exporter: Exporter) -> dict[str, tuple[float, float]]:
    metrics = exporter.metrics()
    return {name: (metrics.total("celery_task_succeeded_total", name=name),
                   metrics.total("celery_task_failed_total", name=name)) for name in FINISHED}


def _first_samples_scraped(prometheus: Prometheus, names: list[str]) -> bool:
    """Both replicas' succeeded and failed series of every name were scraped at 0, and their
    retried series of flaky after its warm-up retry (at 0 from its first sighting before)."""
    match = "|".join(names)  # a dot matching any character is close enough here
    series = [f'min_over_time(celery_task_{c}_total{{name=~"{match}"}}[5m]) == 0'
              for c in ("succeeded", "failed")]
    retried = f'max_over_time(celery_task_retried_total{{name="{FLAKY}"}}[5m]) >= 1'
    return (all(len(prometheus.values(expr)) == 2 * len(names) for expr in series)
            and len(prometheus.values(retried)) == 2)


def _now(prometheus: Prometheus) -> float:
    """Prometheus' clock, epoch seconds."""
    return float(prometheus.query("time()")["data"]["result"][1])


def _last_scrapes(prometheus: Prometheus) -> list[float]:
    """When Prometheus last scraped each replica (its ``up`` sample's timestamp)."""
    return [value for _, value in prometheus.values('timestamp(up{job="celery-jobmon"})')]


@pytest.fixture(scope="module")
def replicas(postgres_url: str, history_engine: Engine, results_url: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    binary = require_binary("prometheus", "prometheus")
    broker = redis.Redis("127.0.0.1", 6379, db=REDIS_DB)
    broker.flushdb()
    # The schema first, once: two processes creating it at the same moment collide.
    upgraded = run_cli("db", "upgrade", "--history-url", postgres_url)
    assert upgraded.returncode == 0, upgraded.stderr
    exporters = [Exporter(BROKER_URL, "--queue", "c", "--history-required",
                          "--no-history-upgrade", history_url=postgres_url) for _ in range(2)]
    config = e2e_config(f"127.0.0.1:{exporters[0].port}")
    config["scrape_configs"][0]["static_configs"] = [
        {"targets": [f"127.0.0.1:{exporter.port}" for exporter in exporters]}]
    prometheus = Prometheus(binary, config, tmp_path_factory.mktemp("prometheus"))
    producer = Celery("e2e-replicas", broker=BROKER_URL, backend=results_url,
                      set_as_current=False)
    producer.conf.update(task_send_sent_event=True, task_default_queue="a",
                         broker_connection_retry_on_startup=True)
    producer.backend.ResultSession().close()  # creates the result tables before the worker
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CELERY_RESULT_BACKEND", results_url)
        worker = Worker(BROKER_URL, "a,b")
    try:
        for exporter in exporters:
            exporter.wait_ready()
        prometheus.wait_ready()
        wait_for(lambda: len(prometheus.values('up{job="celery-jobmon"} == 1')) == 2, 20,
                 message=lambda: f"first scrape of both replicas\n{prometheus.output()}")
        for exporter in exporters:
            wait_for(lambda e=exporter: e.metrics().value("celery_worker_up",
                                                          hostname=worker.hostname) == 1,
                     40, message=lambda: f"worker up\n{worker.output()}")

        sent: dict[str, str] = {}  # task id → the state its history row must end in

        def send(name: str, args: tuple[Any, ...], state: str, **options: Any) -> None:
            sent[producer.send_task(name, args, **options).id] = state

        # One of each counted name with a countdown: both replicas scrape its 0 first.
        send(ADD, (0, 0), "SUCCESS", countdown=5)
        send(FAIL_VALUE, ("warm-up",), "FAILURE", queue="b", countdown=5)
        send(CHARGE, (1,), "FAILURE", countdown=5)
        send(FLAKY, (1,), "SUCCESS", countdown=5)  # 1 retry, then a success
        wait_for(lambda: _first_samples_scraped(prometheus, [ADD, FAIL_VALUE, CHARGE, FLAKY]),
                 15, message="both replicas scraping 0 for every counted task")

        header = [producer.signature(SLEEP, (20,)), producer.signature(ADD, (1, 1))]
        # The body gets the header's results first: add([20, 2], [1]).
        waiting = chord(header, app=producer)(producer.signature(ADD, ([1],)))
        for i in range(7):
            send(ADD, (i, i), "SUCCESS")
        for i in range(2):
            send(FAIL_VALUE, (f"bad value {i}",), "FAILURE", queue="b")
        for i in range(3):
            send(CHARGE, (100 * i,), "FAILURE")
        for _ in range(5):
            send(FLAKY, (4,), "SUCCESS")  # 4 retries, then a success
        send(FLAKY, (9,), "FAILURE")  # 5 retries (max_retries), then ConnectionError
        for priority in (0, 9, 9):
            send(ADD, (0, 2), "PENDING", queue="c", priority=priority)

        done = {name: (float(s), float(f)) for name, (s, f) in FINISHED.items()}
        for exporter in exporters:
            wait_for(lambda e=exporter: _finished(e) == done, 90,
                     message=lambda e=exporter: f"every task finished: {_finished(e)}")
            wait_for(lambda e=exporter: e.metrics().total("celery_task_retried_total",
                                                          name=FLAKY) == FLAKY_RETRIES, 10,
                     message="flaky's retries")
        assert waiting.get(timeout=10) == [20, 2, 1]
        for result in [waiting, *waiting.parent.results]:
            sent[result.id] = "SUCCESS"
        # Each replica scraped after the last change (its first scrape starting after it may
        # already read the end), then a rule evaluation that started once those samples were
        # in: the recorded series hold the final figures.
        changed = _now(prometheus)
        wait_for(lambda: min(_last_scrapes(prometheus)) > changed + 1, 10,
                 message="a scrape of each replica after the last change")
        appended = _now(prometheus)
        wait_for(lambda: min(value for _, value in prometheus.values(
            "timestamp(celery:task_failed_total:sum)")) > appended, 10,
            message="a rule evaluation after those scrapes")
        at = _now(prometheus)
        yield Replicas(prometheus, exporters, worker, history_engine, sent, at)
    finally:
        producer.close()
        worker.quit()
        for exporter in exporters:
            exporter.stop()
        prometheus.stop()
        broker.flushdb()


def test_each_recorded_series_is_there_once_without_instance(replicas):
    for name in sorted(rule for rule in RULES if ":" in rule):
        values = replicas.values(name)
        assert values, name
        keys = [dict(labels) for labels in values]
        assert [k for k in keys if "instance" in k or "pod" in k] == [], name


def test_failures_so_far_are_one_exporters_counts(replicas):
    recorded = by_name(replicas.values("celery:task_failed_total:sum"))
    assert {name: recorded[name] for name in FINISHED} == {
        ADD: 0, FAIL_VALUE: 3, CHARGE: 4, FLAKY: 1, SLEEP: 0, CHORD_UNLOCK: 0}
    for exporter in replicas.exporters:  # what each exporter alone says
        assert {name: f for name, (_, f) in _finished(exporter).items()} == {
            name: recorded[name] for name in FINISHED}
    # What the rules summed before: each replica's count, added up.
    summed = by_name(replicas.values("sum by (name) (celery_task_failed_total)"))
    assert {name: summed[name] for name in (FAIL_VALUE, CHARGE, FLAKY)} == {
        FAIL_VALUE: 6, CHARGE: 8, FLAKY: 2}


def test_failure_ratio_and_average_runtime_are_one_exporters(replicas):
    ratio = by_name(replicas.values("celery:task_failure_ratio:rate5m"))
    assert {name: ratio[name] for name in (ADD, FAIL_VALUE, CHARGE)} == {
        ADD: 0, FAIL_VALUE: 1, CHARGE: 1}
    assert ratio[FLAKY] == pytest.approx(1 / 7, rel=1e-12)
    metrics = [exporter.metrics() for exporter in replicas.exporters]
    sums = {m.total("celery_task_runtime_seconds_sum", name=ADD) for m in metrics}
    counts = {m.total("celery_task_runtime_seconds_count", name=ADD) for m in metrics}
    assert len(sums) == 1 and counts == {10}
    average = by_name(replicas.values("celery:task_runtime_seconds:avg5m"))[ADD]
    assert average == pytest.approx(sums.pop() / 10, rel=1e-12)


def test_rates_are_the_larger_single_exporter_rate_never_the_sum(replicas):
    single = "sum by (job, name) (rate(celery_task_{}_total[5m]))"
    for counter in ("succeeded", "failed", "retried"):
        rule = RULES[f"celery:task_{counter}:rate5m"]["expr"]
        two = by_name(replicas.values(rule))
        alone = [by_name(replicas.values(single.format(counter).replace(
            "_total[", f'_total{{instance="{instance}"}}[')))
            for instance in replicas.instances]
        summed = by_name(replicas.values(single.format(counter)))
        for name in (ADD, FAIL_VALUE, CHARGE, FLAKY):
            if name not in two:  # never retried
                assert counter == "retried" and all(name not in a for a in alone)
                continue
            assert two[name] == max(a[name] for a in alone), (counter, name)
            assert summed[name] == pytest.approx(sum(a[name] for a in alone), rel=1e-12)
    assert min(by_name(replicas.values(RULES["celery:task_succeeded:rate5m"]["expr"]))[n]
               for n in (ADD, FLAKY)) > 0


def test_queue_length_is_one_exporters(replicas):
    recorded = replicas.values('celery:queue_length:sum{queue_name="c"}')
    assert list(recorded.values()) == [WAITING_ON_C]
    for exporter in replicas.exporters:
        assert exporter.metrics().total("celery_queue_length", queue_name="c") == WAITING_ON_C


def _alerts(replicas: Replicas, state: str) -> list[dict[str, str]]:
    return [dict(labels) for labels in replicas.values(f'ALERTS{{alertstate="{state}"}}')]


def test_each_alert_fires_once_without_instance(replicas):
    firing = _alerts(replicas, "firing")
    assert sorted((a["alertname"], a.get("name")) for a in firing) == [
        ("CeleryTaskFirstFailure", CHARGE), ("CeleryTaskFirstFailure", FAIL_VALUE),
        ("CeleryTaskFirstFailure", FLAKY)]
    pending = _alerts(replicas, "pending")
    # The chord whose 20 s header keeps celery.chord_unlock polling: CeleryChordHeaderWaiting
    # waits its hour, once for both replicas, under the callback's name.
    assert sorted((a["alertname"], a.get("name") or a.get("queue_name")) for a in pending) == [
        ("CeleryChordHeaderWaiting", ADD), ("CeleryQueueNoConsumers", "c"),
        ("CeleryTaskRetryRatioHigh", FLAKY)]
    assert [alert for alert in firing + pending if "instance" in alert] == []


def test_chord_unlock_retries_are_left_out_of_the_retry_alert(replicas):
    expr = RULES["CeleryTaskRetryRatioHigh"]["expr"]
    assert sorted(by_name(replicas.values(expr))) == [FLAKY]
    # Without the built-in task matcher, chord_unlock's retries would have tripped it.
    unfiltered = expr.replace('{name!~"celery\\\\..*"}', "")
    assert unfiltered != expr
    assert sorted(by_name(replicas.values(unfiltered))) == [CHORD_UNLOCK, FLAKY]
    for exporter in replicas.exporters:
        assert exporter.metrics().total("celery_task_retried_total", name=CHORD_UNLOCK) >= 10


def _dashboard_targets() -> list[tuple[str, str, str]]:
    return [(board["uid"], panel["title"], target["expr"]) for board in DASHBOARDS.values()
            for panel in board["panels"] for target in panel.get("targets", [])
            if target["datasource"]["type"] == "prometheus" and "celery:" not in target["expr"]]


def _substitute(expr: str, instance: str, task: str) -> str:
    values = {"job": ".*", "cluster": ".*", "instance": instance, "queue": ".*", "task": task,
              "slow_threshold": "1", "__rate_interval": "5m", "__range": "5m"}
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)",
                  lambda m: values[m.group(1) or m.group(2)], expr)


def test_dashboards_show_one_exporters_numbers_with_the_default_selection(replicas):
    # Every panel with "All" exporters against the same panel with one exporter alone. Gauges
    # are equal; a rate is extrapolated over each replica's own scrape times (up to a second
    # apart), so the two-replica figure is within 2 % of the single ones (0.03 % measured),
    # where a plain sum showed their total (twice as much).
    task = _load_generator().ALL_BUT_BUILTIN_TASKS
    compared = 0
    for uid, title, expr in _dashboard_targets():
        two = replicas.values(_substitute(expr, ".*", task))
        alone = [replicas.values(_substitute(expr, i, task)) for i in replicas.instances]
        for labels, value in two.items():
            singles = [a[labels] for a in alone if labels in a]
            assert singles, (uid, title, dict(labels))
            if math.isnan(value):  # e.g. no queue wait on c: nothing started there
                assert all(math.isnan(s) for s in singles), (uid, title, dict(labels))
                continue
            assert 0.98 * min(singles) <= value <= 1.02 * max(singles), (
                uid, title, dict(labels), value, singles)
            compared += 1
    assert compared > 50

    def panel(title: str) -> list[float]:
        expr = next(e for _, t, e in _dashboard_targets() if t == title)
        return list(replicas.values(_substitute(expr, ".*", task)).values())

    assert panel("Pending") == [WAITING_ON_C]
    assert panel("Workers up / silent / down") == [1]


def test_the_task_variables_all_leaves_chord_unlock_out_of_the_dashboards(replicas):
    task = _load_generator().ALL_BUT_BUILTIN_TASKS
    retried = next(expr for uid, title, expr in _dashboard_targets()
                   if title == "Lifecycle rates" and "retried" in expr)
    # Every task has a retried series (0 from its first sighting): the ones that retried.
    names = "sum by (name) (max without (instance, pod) (rate(celery_task_retried_total{{" \
            'name=~"{}"}}[5m]))) > 0'
    assert sorted(by_name(replicas.values(names.format(task)))) == [FLAKY]
    assert sorted(by_name(replicas.values(names.format(".*")))) == [CHORD_UNLOCK, FLAKY]
    everything = replicas.values(_substitute(retried, ".*", ".*"))
    default = replicas.values(_substitute(retried, ".*", task))
    assert list(default.values())[0] < list(everything.values())[0]


def test_both_replicas_keep_one_row_per_task_in_the_shared_history(replicas):
    def rows() -> dict[str, tuple[str, str]]:
        with replicas.history.connect() as connection:
            return {row.task_id: (row.name, row.state) for row in connection.execute(
                text("SELECT task_id, name, state FROM task_execution"))}

    expected = len(replicas.task_states) + 1  # and chord_unlock's row
    wait_for(lambda: len(rows()) == expected and all(
        rows()[task_id][1] == state for task_id, state in replicas.task_states.items()), 15,
        message=lambda: f"{expected} rows in their final state: {rows()}")
    found = rows()
    assert {task_id: found[task_id][1] for task_id in replicas.task_states} == (
        replicas.task_states)
    assert [state for name, state in found.values() if name == CHORD_UNLOCK] == ["SUCCESS"]
    for exporter in replicas.exporters:
        metrics = exporter.metrics()
        assert metrics.total("celery_jobmon_history_dropped_total") == 0, exporter.output()
        assert metrics.total("celery_jobmon_history_consecutive_write_failures") == 0


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("grafana_generate",
                                                  ROOT / "grafana" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

