"""The metric catalogue against Prometheus naming rules (base units, ``_total``, ``_seconds``)."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from exporter.config import DEFAULT_METRIC_PREFIX
from exporter.metrics import catalogue as m
from exporter.metrics.catalogue import CATALOGUE, MetricSpec

NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Label names Prometheus or the exposition format give a meaning of their own.
RESERVED_LABELS = {"le", "quantile"}
#: Non-base units: Prometheus wants seconds, bytes and ratios.
NON_BASE_UNITS = {"milliseconds", "ms", "minutes", "hours", "days", "kilobytes", "kb",
                  "megabytes", "mb", "percent"}

specs = pytest.mark.parametrize("spec", CATALOGUE, ids=lambda spec: spec.name)


def sample_names(spec: MetricSpec) -> set[str]:
    """Names of the samples the exposition writes for a family."""
    if spec.kind == "histogram":
        return {f"{spec.name}_bucket", f"{spec.name}_count", f"{spec.name}_sum"}
    if spec.kind == "info":
        return {f"{spec.name}_info"}
    return {spec.name}


@specs
def test_name_is_snake_case(spec: MetricSpec) -> None:
    assert NAME_RE.match(spec.name), spec.name
    assert NAME_RE.match(DEFAULT_METRIC_PREFIX + spec.name)


@specs
def test_kind_is_a_prometheus_type(spec: MetricSpec) -> None:
    assert spec.kind in ("counter", "gauge", "histogram", "info")


@specs
def test_counters_and_only_counters_end_in_total(spec: MetricSpec) -> None:
    assert spec.name.endswith("_total") == (spec.kind == "counter")


@specs
def test_unit_appears_in_the_name(spec: MetricSpec) -> None:
    assert spec.unit in ("", "seconds", "bytes")
    base = spec.name.removesuffix("_total")
    if spec.unit:
        assert base.endswith(f"_{spec.unit}")


@specs
def test_a_name_in_seconds_or_bytes_declares_that_unit(spec: MetricSpec) -> None:
    base = spec.name.removesuffix("_total")
    for unit in ("seconds", "bytes"):
        if base.endswith(f"_{unit}"):
            assert spec.unit == unit


@specs
def test_names_use_base_units_only(spec: MetricSpec) -> None:
    assert set(spec.name.split("_")) & NON_BASE_UNITS == set()


@specs
def test_histograms_measure_seconds(spec: MetricSpec) -> None:
    if spec.kind == "histogram":
        assert spec.unit == "seconds"
        assert spec.name.endswith("_seconds")


@specs
def test_info_name_does_not_repeat_the_info_suffix(spec: MetricSpec) -> None:
    if spec.kind == "info":
        assert not spec.name.endswith("_info")


@specs
def test_label_names_are_valid_unique_and_not_reserved(spec: MetricSpec) -> None:
    for label in spec.labels:
        assert LABEL_RE.match(label), label
        assert not label.startswith("__"), label
        assert label not in RESERVED_LABELS, label
    assert len(set(spec.labels)) == len(spec.labels)


@specs
def test_help_and_source_are_given(spec: MetricSpec) -> None:
    assert spec.help.strip() == spec.help
    assert spec.help
    assert spec.source.strip()


def test_family_names_are_unique() -> None:
    counts = Counter(spec.name.removesuffix("_total") for spec in CATALOGUE)
    assert [name for name, n in counts.items() if n > 1] == []


def test_no_two_families_write_the_same_sample_name() -> None:
    counts = Counter(name for spec in CATALOGUE for name in sample_names(spec))
    assert [name for name, n in counts.items() if n > 1] == []


def test_task_series_use_the_celery_exporter_label_names() -> None:
    for spec in (*m.LIFECYCLE.values(), m.TASK_QUEUE_WAIT, m.TASK_RUNNING):
        assert spec.labels == ("name", "queue_name")
    assert m.TASK_RUNTIME.labels == ("name", "queue_name", "state")
    assert m.TASK_EXCEPTIONS.labels == ("name", "exception")
    assert m.WORKER_UP.labels == ("hostname",)


def test_every_lifecycle_event_has_its_counter() -> None:
    assert {event: spec.name for event, spec in m.LIFECYCLE.items()} == {
        "task-sent": "task_sent_total",
        "task-received": "task_received_total",
        "task-started": "task_started_total",
        "task-succeeded": "task_succeeded_total",
        "task-failed": "task_failed_total",
        "task-retried": "task_retried_total",
        "task-revoked": "task_revoked_total",
        "task-rejected": "task_rejected_total",
        "task-cancelled": "task_cancelled_total",
    }


def test_every_family_belongs_to_exactly_one_source() -> None:
    groups = (m.MODEL, m.HEALTH, m.POLL, m.HISTORY, m.PERIODIC, m.WORKFLOWS, m.SCRAPE)
    names = Counter(spec.name for group in groups for spec in group)
    assert {name for name, n in names.items() if n != 1} == set()
    assert set(names) == {spec.name for spec in CATALOGUE}

