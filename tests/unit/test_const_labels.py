"""``serve --const-label KEY=VALUE``: parsed from flags and the environment, bad keys refused
with the reason before anything starts, and every series of every ``/metrics`` source (model,
health, poll, history, scrape report) carries the labels."""

from __future__ import annotations

import os
from typing import Any

import click
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from exporter import config as c
from exporter.cli import options
from exporter.cli.commands import main
from exporter.history.writer import DROP_REASONS, HistoryStats
from exporter.metrics.scrape import Scrape, exporter_sources
from exporter.poll.snapshot import PollSnapshot, QueueState
from exporter.state.health import Health
from exporter.state.model import Model
from tests.support.events import task_event, worker_event

T0 = 1_700_000_000.0
CONST = (("cluster", "eu-1"), ("zone", 'a"b'))


@pytest.fixture(autouse=True)
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server is replaced and the developer's JOBMON_* variables are left out."""
    import exporter.app

    monkeypatch.setattr(exporter.app, "serve", lambda *args: None)
    for name in list(os.environ):
        if name.startswith("JOBMON_") or name == "CELERY_BROKER_URL":
            monkeypatch.delenv(name)


def settings(args: list[str]) -> c.Settings:
    """The settings ``serve ARGS`` would run with (parsed only: nothing starts)."""
    ctx = main.commands["serve"].make_context("serve", args)
    return options.settings_from(dict(ctx.params))


def error(args: list[str]) -> click.testing.Result:
    return CliRunner().invoke(main, ["serve", *args])


def test_repeated_flags_give_the_pairs_in_order():
    assert settings(["--const-label", "cluster=eu-1", "--const-label", "zone=a=b "]
                    ).const_labels == (("cluster", "eu-1"), ("zone", "a=b "))


def test_the_environment_takes_several_separated_by_spaces(monkeypatch):
    monkeypatch.setenv("JOBMON_CONST_LABEL", "cluster=eu-1  zone=b")
    assert settings([]).const_labels == (("cluster", "eu-1"), ("zone", "b"))


@pytest.mark.parametrize(("label", "message"), [
    ("cluster", "--const-label: invalid const label 'cluster': KEY=VALUE expected"),
    ("9x=1", "--const-label: '9x' is no label name (letters, digits, underscores; no leading "
             "digit, no leading __)"),
    ("__name__=x", "--const-label: '__name__' is no label name"),
    ("cluster-name=x", "--const-label: 'cluster-name' is no label name"),
    ("cluster=", "--const-label: 'cluster' has an empty value"),
    *((f"{name}=x", f"--const-label: '{name}' is a label the exporter or Prometheus already "
                    "uses") for name in ("name", "queue_name", "hostname", "state", "le",
                                         "exception", "reason", "job", "instance", "pod")),
])
def test_a_bad_const_label_exits_2_with_the_reason(label, message):
    result = error(["--const-label", label])
    assert result.exit_code == 2
    assert message in result.output


def test_every_bad_const_label_is_reported_at_once():
    result = error(["--const-label", "a=1", "--const-label", "a=2", "--const-label", "le=3"])
    assert result.exit_code == 2
    assert "'a' given twice" in result.output
    assert "'le' is a label the exporter" in result.output


def test_no_reserved_name_is_missing_a_family_label():
    from exporter.metrics.catalogue import CATALOGUE

    assert {label for spec in CATALOGUE for label in spec.labels} <= c.RESERVED_LABEL_NAMES


def _model() -> Model:
    model = Model(runtime_buckets=(0.5, 5.0), queue_wait_buckets=(1.0,), max_tasks=10,
                  max_task_names=10, worker_timeout=30.0, worker_retention=60.0,
                  clock=lambda: T0 + 5, hostname_label=True)
    model.process_many([
        task_event("task-sent", uuid="u1", timestamp=T0, hostname="web-1", name="app.add",
                   queue="a", routing_key="a", exchange=""),
        task_event("task-received", uuid="u1", timestamp=T0 + 0.1, name="app.add"),
        task_event("task-started", uuid="u1", timestamp=T0 + 0.2),
        task_event("task-succeeded", uuid="u1", timestamp=T0 + 0.7, runtime=0.5),
        worker_event("worker-heartbeat", timestamp=T0 + 1, active=0, processed=1),
    ])
    return model


def _stats() -> HistoryStats:
    return HistoryStats(events_accepted=4, rows_written=1, write_errors=0, queue_depth=0,
                        pending_rows=0, dropped=dict.fromkeys(DROP_REASONS, 0),
                        last_write_ts=T0, consecutive_failures=0, rows_pruned=0,
                        prune_errors=0)


def test_every_series_of_every_source_carries_the_const_labels():
    poll = PollSnapshot(taken_at=T0, duration=0.25, queues=(QueueState("a", {"": 3}),))
    sources = exporter_sources("celery_", _model(), Health(), lambda: poll, _stats,
                               hostname_label=True, const_labels=CONST)
    text = Scrape(sources, "celery_", const_labels=CONST).render().decode()
    families: dict[str, list[dict[str, Any]]] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = [sample.labels for sample in family.samples]
    for name in ("celery_task_succeeded", "celery_task_runtime_seconds", "celery_worker_up",
                 "celery_jobmon_build_info", "celery_queue_length",
                 "celery_jobmon_poll_age_seconds", "celery_jobmon_history_rows_written",
                 "celery_jobmon_scrape_collector_success"):
        assert families.get(name), name  # each source is there, with series
    samples = [labels for found in families.values() for labels in found]
    assert [s for s in samples if (s["cluster"], s["zone"]) != ("eu-1", 'a"b')] == []
    assert ('celery_task_runtime_seconds_bucket{cluster="eu-1",hostname="celery@w1",'
            'le="0.5",name="app.add",queue_name="a",state="SUCCESS",zone="a\\"b"} 1.0') in text
