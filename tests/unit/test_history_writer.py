"""The writer's queue policy: submit never blocks or raises, drops go by importance and count.

The writer thread is not started here, so nothing leaves the queue and no database is touched.
"""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from exporter.history.writer import DROP_REASONS, HistoryWriter
from tests.support.clock import T0
from tests.support.events import task_event


def event(type_: str, uuid: str) -> dict:
    return task_event(type_, uuid=uuid, timestamp=T0)


@pytest.fixture
def writer():
    engine = create_engine("sqlite://")
    yield HistoryWriter(engine, capacity=4, batch_size=2)
    engine.dispose()


def dropped(writer: HistoryWriter) -> dict:
    return {k: v for k, v in writer.stats().dropped.items() if v}


def test_full_queue_drops_the_oldest_success_first(writer):
    for i, type_ in enumerate(["task-succeeded", "task-failed", "task-succeeded", "task-sent"]):
        writer.submit(event(type_, f"t{i}"))
    writer.submit(event("task-failed", "t4"))
    writer.submit(event("task-failed", "t5"))
    assert dropped(writer) == {"queue_full_success": 2}
    writer.submit(event("task-failed", "t6"))  # no success left: the oldest progress event goes
    assert dropped(writer) == {"queue_full_success": 2, "queue_full_progress": 1}
    writer.submit(event("task-revoked", "t7"))  # only failures left: the oldest failure goes
    assert dropped(writer) == {"queue_full_success": 2, "queue_full_progress": 1,
                               "queue_full_failure": 1}
    stats = writer.stats()
    assert (stats.queue_depth, stats.events_accepted) == (4, 8)
    assert [e["uuid"] for e in writer._queues[2]] == ["t4", "t5", "t6", "t7"]


def test_an_incoming_success_is_dropped_when_only_failures_are_queued(writer):
    for i in range(4):
        writer.submit(event("task-failed", f"f{i}"))
    writer.submit(event("task-succeeded", "s"))
    writer.submit(event("task-started", "p"))
    assert dropped(writer) == {"queue_full_success": 1, "queue_full_progress": 1}
    assert writer.stats().queue_depth == 4


class _Hostile(dict):
    def get(self, *args, **kwargs):
        raise RuntimeError("no")


@pytest.mark.parametrize("bad", [
    None, "task-sent", 42, {"type": "task-unknown", "uuid": "t"},
    {"type": "task-sent"}, {"type": "task-sent", "uuid": ""}, {"type": ["x"], "uuid": "t"},
    _Hostile(type="task-sent", uuid="t"),
])
def test_submit_never_raises_and_counts_unusable_events(writer, bad):
    writer.submit(bad)
    assert dropped(writer) == {"invalid": 1}
    assert writer.stats().queue_depth == 0


def test_worker_events_are_ignored_without_counting(writer):
    writer.submit({"type": "worker-heartbeat", "hostname": "w", "timestamp": T0})
    stats = writer.stats()
    assert (stats.queue_depth, stats.events_accepted, dropped(writer)) == (0, 0, {})


def test_submit_after_stop_is_counted_and_stop_reports_what_was_lost(writer):
    writer.submit(event("task-sent", "t1"))
    assert writer.stop(timeout=0.1) is False
    writer.submit(event("task-sent", "t2"))
    assert dropped(writer) == {"stop_timeout": 1, "stopped": 1}


def test_every_reason_is_reported_from_the_start(writer):
    assert tuple(writer.stats().dropped) == DROP_REASONS
    assert set(writer.stats().dropped.values()) == {0}


def test_submit_copies_the_event(writer):
    original = event("task-sent", "t1")
    writer.submit(original)
    original["uuid"] = "changed"
    assert writer._queues[1][0]["uuid"] == "t1"


@pytest.mark.parametrize("kwargs", [
    {"capacity": 0}, {"batch_size": 0}, {"max_delay": 0}, {"retry_max": -1},
    {"max_field_bytes": 0},
])
def test_invalid_settings_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        HistoryWriter(create_engine("sqlite://"), **kwargs)
