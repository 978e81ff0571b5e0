from __future__ import annotations

from typing import Any

import pytest

from exporter.events.parse import MalformedEvent, check_event, exception_class, parse_eta
from tests.support.clock import T0
from tests.support.events import task_event, without, worker_event


def task(type_: str = "task-succeeded", **fields: Any) -> dict:
    """A good task event of ``type_``, ``fields`` replacing any of its keys."""
    return task_event(type_, **{"uuid": "u-1", "timestamp": T0, "pid": 7, "clock": 3, **fields})


def worker(type_: str = "worker-heartbeat", **fields: Any) -> dict:
    """A good worker event of ``type_``, ``fields`` replacing any of its keys."""
    return worker_event(type_, **{"timestamp": T0, "pid": 7, "clock": 3, "freq": 2.0,
                                  "active": 1, "processed": 9, **fields})


def reason_of(body: Any) -> str:
    with pytest.raises(MalformedEvent) as info:
        check_event(body)
    return info.value.reason


# -- check_event: good events -----------------------------------------------------------------


@pytest.mark.parametrize("type_", [
    "task-sent", "task-received", "task-started", "task-succeeded", "task-failed",
    "task-retried", "task-revoked", "task-rejected", "task-cancelled",
])
def test_task_event_returns_its_type(type_: str) -> None:
    assert check_event(task(type_)) == type_


@pytest.mark.parametrize("type_", ["worker-online", "worker-heartbeat", "worker-offline"])
def test_worker_event_returns_its_type(type_: str) -> None:
    assert check_event(worker(type_)) == type_


def test_full_celery_task_sent_event_is_accepted() -> None:
    event = task("task-sent", name="app.add", args="(1, 2)", kwargs="{}", retries=0, eta=None,
                 expires=None, queue="default", exchange="", routing_key="default",
                 root_id="u-1", parent_id=None)
    assert check_event(event) == "task-sent"


def test_integer_timestamp_is_accepted() -> None:
    assert check_event(task(timestamp=1_700_000_000)) == "task-succeeded"


def test_optional_fields_set_to_none_are_accepted() -> None:
    assert check_event(task("task-sent", name=None, queue=None, routing_key=None, retries=None,
                            runtime=None)) == "task-sent"


def test_worker_event_needs_no_uuid() -> None:
    assert check_event(without(worker(), "uuid")) == "worker-heartbeat"


def test_task_event_needs_no_hostname() -> None:
    assert check_event(without(task(), "hostname")) == "task-succeeded"


# -- check_event: malformed events ------------------------------------------------------------


@pytest.mark.parametrize("body", [None, [], "task-sent", b"{}", 3, ("type", "task-sent")])
def test_non_dict_is_not_a_dict(body: Any) -> None:
    assert reason_of(body) == "not_a_dict"


@pytest.mark.parametrize("body", [{}, without(task(), "type"), task(type=""), task(type=5),
                                  task(type=None)])
def test_absent_or_non_string_type_is_missing_type(body: dict) -> None:
    assert reason_of(body) == "missing_type"


@pytest.mark.parametrize("type_", ["task-exploded", "worker-online2", "TASK-SENT", "heartbeat"])
def test_unknown_type_is_unknown_type(type_: str) -> None:
    assert reason_of(task(type_)) == "unknown_type"


@pytest.mark.parametrize("timestamp", [None, "1700000000", float("nan"), float("inf"),
                                       -float("inf"), True, False, [T0]])
def test_bad_timestamp_is_bad_timestamp(timestamp: Any) -> None:
    assert reason_of(task(timestamp=timestamp)) == "bad_timestamp"


def test_missing_timestamp_is_bad_timestamp() -> None:
    assert reason_of(without(task(), "timestamp")) == "bad_timestamp"


@pytest.mark.parametrize("body", [without(task("task-started"), "uuid"),
                                  task("task-failed", uuid=""), task("task-sent", uuid=5),
                                  task("task-received", uuid=None)])
def test_task_event_without_uuid_is_missing_uuid(body: dict) -> None:
    assert reason_of(body) == "missing_uuid"


@pytest.mark.parametrize("body", [without(worker("worker-online"), "hostname"),
                                  worker(hostname=""), worker("worker-offline", hostname=None),
                                  worker(hostname=["celery@w1"])])
def test_worker_event_without_hostname_is_missing_hostname(body: dict) -> None:
    assert reason_of(body) == "missing_hostname"


@pytest.mark.parametrize(("body", "field"), [
    (task(runtime="fast"), "runtime"),
    (task(runtime=True), "runtime"),
    (task(runtime=float("inf")), "runtime"),
    (task(runtime=float("nan")), "runtime"),
    (task("task-sent", retries="2"), "retries"),
    (task("task-sent", retries=1.0), "retries"),
    (task("task-sent", name=5), "name"),
    (task("task-sent", queue=["default"]), "queue"),
    (task("task-sent", routing_key=b"default"), "routing_key"),
    (worker(active="3"), "active"),
    (worker(processed=1.5), "processed"),
    (worker(freq="2"), "freq"),
])
def test_wrong_optional_field_type_is_bad_field_naming_the_field(body: dict, field: str) -> None:
    with pytest.raises(MalformedEvent) as info:
        check_event(body)
    assert info.value.reason == "bad_field"
    assert str(info.value) == f"bad_field: {field}"


def test_malformed_event_is_a_value_error_with_reason_and_detail() -> None:
    with pytest.raises(ValueError) as info:
        check_event(task("task-exploded"))
    assert str(info.value) == "unknown_type: task-exploded"


def test_malformed_event_without_detail_is_just_the_reason() -> None:
    assert str(MalformedEvent("missing_type")) == "missing_type"


# -- exception_class --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "name"), [
    ("ValueError('x')", "ValueError"),
    ("billing.errors.CardDeclined('x')", "billing.errors.CardDeclined"),
    ("KeyError: 'k'", "KeyError"),
    ("TimeLimitExceeded(60,)", "TimeLimitExceeded"),
    ("  RuntimeError ()", "RuntimeError"),
    ("WorkerLostError", "WorkerLostError"),
    ("<object object at 0x7f>", "unknown"),
    ("something went wrong", "unknown"),
    ("('tuple',)", "unknown"),
    ("", "unknown"),
    (None, "unknown"),
    (42, "unknown"),
    (b"ValueError('x')", "unknown"),
])
def test_exception_class_from_the_failed_event(text: Any, name: str) -> None:
    assert exception_class(text) == name


# -- parse_eta --------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "timestamp"), [
    ("2024-01-01T00:00:00", 1704067200.0),
    ("2024-01-01T00:00:00.250000", 1704067200.25),
    ("2024-01-01T00:00:00+00:00", 1704067200.0),
    ("2024-01-01T02:00:00+02:00", 1704067200.0),
    ("2024-01-01T00:00:00+02:00", 1704060000.0),
])
def test_eta_is_seconds_since_epoch_and_naive_means_utc(value: str, timestamp: float) -> None:
    assert parse_eta(value) == timestamp


@pytest.mark.parametrize("value", ["tomorrow", "2024-13-01T00:00:00", "", None, 1704067200.0,
                                   ["2024-01-01"]])
def test_unusable_eta_is_none(value: Any) -> None:
    assert parse_eta(value) is None
