"""Tasks lost with their worker, without services: the model's rule (worker down past the
grace period → its running tasks are LOST, counted once) and the history's merge of the
synthetic ``task-lost`` record."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.history.merge import finalize, merge, record_from_event
from exporter.state.model import TASK_LOST, Model
from tests.support.clock import T0, FakeClock
from tests.support.events import task_event, worker_event

W1, W2 = "celery@w1", "celery@w2"
ADD = ("app.add", "default")
TIMEOUT = 30.0


def started(uuid: str, t: float, hostname: str = W1) -> list[dict]:
    return [task_event("task-sent", uuid=uuid, timestamp=t, hostname="web", name="app.add",
                       queue="default"),
            task_event("task-received", uuid=uuid, timestamp=t + 0.0625, hostname=hostname,
                       name="app.add"),
            task_event("task-started", uuid=uuid, timestamp=t + 0.125, hostname=hostname)]


@pytest.fixture
def sink() -> list[dict]:
    return []


def make(clock: FakeClock, sink: list[dict], **kwargs: Any) -> Model:
    return Model(runtime_buckets=(1.0,), queue_wait_buckets=(1.0,), max_tasks=100,
                 max_task_names=10, worker_timeout=TIMEOUT, worker_retention=86400.0,
                 clock=clock, history=sink.append, **kwargs)


def lost(sink: list[dict]) -> list[dict]:
    return [e for e in sink if e["type"] == TASK_LOST]


def test_running_tasks_of_a_silent_worker_are_lost_after_timeout_and_grace(clock, sink):
    model = make(clock, sink)
    model.process_many([worker_event("worker-online", timestamp=T0, hostname=W1),
                        worker_event("worker-online", timestamp=T0, hostname=W2),
                        *started("a", T0), *started("b", T0), *started("c", T0, W2)])
    model.process_many([task_event("task-succeeded", uuid="b", timestamp=T0 + 1, hostname=W1,
                                   runtime=0.875)])
    clock.now = T0 + 50
    # w2 stays alive
    model.process_many([worker_event("worker-heartbeat", timestamp=T0 + 50, hostname=W2)])
    clock.now = T0 + 2 * TIMEOUT  # w1: down at +30, grace 30 s (the timeout) not over yet
    snap = model.snapshot()
    assert [w.up for w in snap.workers] == [False, True]
    assert snap.running == {ADD: 2} and snap.lost == {ADD: 0}  # 0 from the first sighting
    clock.now = T0 + 2 * TIMEOUT + 0.5
    model.tick()
    snap = model.snapshot()
    assert snap.running == {ADD: 1}  # c, on w2
    assert snap.lost == {ADD: 1}
    assert model.index.peek("a").state == "LOST"
    assert lost(sink) == [{"type": TASK_LOST, "uuid": "a", "timestamp": T0 + 0.125,
                           "hostname": W1, "local_received": T0 + 2 * TIMEOUT + 0.5}]
    clock.now += 3600  # each worker's tasks are reported once; w2 has gone silent meanwhile
    model.tick()
    assert model.snapshot().lost == {ADD: 2}
    assert [e["uuid"] for e in lost(sink)] == ["a", "c"]


def test_offline_worker_loses_its_running_tasks_after_the_grace_only(clock, sink):
    model = make(clock, sink, task_lost_grace=5.0)
    model.process_many([worker_event("worker-online", timestamp=T0, hostname=W1),
                        *started("a", T0)])
    clock.now = T0 + 1
    # a cold shutdown
    model.process_many([worker_event("worker-offline", timestamp=T0 + 1, hostname=W1)])
    clock.now = T0 + 6
    assert model.snapshot().lost == {ADD: 0}
    clock.now = T0 + 6.5
    assert model.snapshot().lost == {ADD: 1}
    assert lost(sink)[0]["timestamp"] == T0 + 1  # the worker's last sign of life


def test_worker_back_within_the_grace_loses_nothing(clock, sink):
    model = make(clock, sink)
    model.process_many([worker_event("worker-online", timestamp=T0, hostname=W1),
                        *started("a", T0)])
    clock.now = T0 + 50  # down since +30
    model.process_many([worker_event("worker-heartbeat", timestamp=T0 + 50, hostname=W1)])
    clock.now = T0 + 70
    assert model.snapshot().lost == {ADD: 0} and model.snapshot().running == {ADD: 1}


def warmed(model: Model, task_id: str = "w") -> None:
    from exporter.history import UnfinishedTask

    model.warm([UnfinishedTask(task_id, "app.add", "default", None, W1, "STARTED", T0 - 5,
                               T0 - 5, T0 - 4, None, 0)])


def test_a_task_warmed_as_started_runs_while_its_worker_speaks(clock, sink):
    # Before: warmed tasks never counted as running ("Running now" read 0 after a restart).
    model = make(clock, sink)
    warmed(model)
    assert model.snapshot().running == {ADD: 1}
    for second in range(0, 4 * int(TIMEOUT), 10):
        clock.now = T0 + second
        model.process_many([worker_event("worker-heartbeat", timestamp=T0 + second,
                                          hostname=W1)])
    snap = model.snapshot()
    assert (snap.running, snap.lost, lost(sink)) == ({ADD: 1}, {ADD: 0}, [])
    model.process_many([task_event("task-succeeded", uuid="w", timestamp=T0 + 120,
                                   hostname=W1, runtime=124.0)])
    assert model.snapshot().running == {ADD: 0}


def test_a_task_warmed_as_started_is_lost_when_its_worker_never_speaks(clock, sink):
    model = make(clock, sink)
    warmed(model)
    assert model.snapshot().workers == ()  # expected, not rendered: nothing heard from it
    clock.now = T0 + 2 * TIMEOUT  # down at +30 (never heard), grace 30 s not over yet
    assert model.snapshot().lost == {ADD: 0}  # 0 from the warm-up, its first sighting
    clock.now = T0 + 2 * TIMEOUT + 0.5
    snap = model.snapshot()
    assert (snap.running, snap.lost) == ({ADD: 0}, {ADD: 1})
    # Stamped with the task's own last state change, not the exporter's start.
    assert [(e["uuid"], e["timestamp"]) for e in lost(sink)] == [("w", T0 - 4)]


def test_a_late_end_of_a_lost_task_still_counts_and_wins_in_the_history(clock, sink):
    model = make(clock, sink)
    model.process_many([worker_event("worker-online", timestamp=T0, hostname=W1),
                        *started("a", T0)])
    clock.now = T0 + 61
    assert model.snapshot().lost == {ADD: 1}
    # The worker was only cut off from the broker: its success arrives afterwards.
    model.process_many([task_event("task-succeeded", uuid="a", timestamp=T0 + 58, hostname=W1,
                                   runtime=57.875)])
    snap = model.snapshot()
    assert snap.lifecycle["task-succeeded"] == {ADD: 1} and snap.lost == {ADD: 1}
    assert snap.running == {ADD: 0}
    rows = [record_from_event(e) for e in sink]
    row = merge(*(r[1] for r in rows if r is not None))
    finalize(row)
    assert (row["state"], row["runtime"]) == ("SUCCESS", 57.875)


def test_lost_row_beats_started_and_loses_to_every_real_end():
    started_row = record_from_event(task_event("task-started", uuid="a", timestamp=T0,
                                               hostname=W1))[1]
    lost_row = record_from_event({"type": TASK_LOST, "uuid": "a", "timestamp": T0,
                                  "hostname": W1})[1]
    for order in ((started_row, lost_row), (lost_row, started_row)):
        row = merge(*order)
        finalize(row)
        assert (row["state"], row["finished_at"], row["runtime"]) == ("LOST", T0, None)
    for end in ("task-failed", "task-succeeded", "task-revoked"):
        real = record_from_event(task_event(end, uuid="a", timestamp=T0, hostname=W1))[1]
        assert merge(lost_row, real)["state"] == merge(real, lost_row)["state"] != "LOST"


def test_a_worker_back_as_a_new_process_loses_the_tasks_of_the_old_one_at_once(clock, sink):
    # Before: killed and started again under the same name within the timeout, the worker
    # never looked down, and the two tasks its old process ran stayed running for ever.
    model = make(clock, sink)
    model.process_many([worker_event("worker-online", timestamp=T0, hostname=W1, processed=0),
                        *started("a", T0), *started("b", T0),
                        worker_event("worker-heartbeat", timestamp=T0 + 2, hostname=W1,
                                     processed=2, active=2)])
    clock.now = T0 + 3
    # A broker reconnection: the same process says online again, having started 2 tasks.
    model.process_many([worker_event("worker-online", timestamp=T0 + 3, hostname=W1,
                                     processed=2)])
    assert model.snapshot().running == {ADD: 2} and lost(sink) == []
    clock.now = T0 + 4
    model.process_many([worker_event("worker-online", timestamp=T0 + 4, hostname=W1,
                                     processed=0), *started("c", T0 + 5)])
    snap = model.snapshot()
    assert (snap.running, snap.lost) == ({ADD: 1}, {ADD: 2})  # c runs on the new process
    assert [(e["uuid"], e["timestamp"]) for e in lost(sink)] == [("a", T0 + 3), ("b", T0 + 3)]
    assert [w.up for w in snap.workers] == [True]


def test_tasks_warmed_as_running_are_lost_when_their_worker_comes_back_anew(clock, sink):
    model = make(clock, sink)
    warmed(model, "a")  # STARTED on W1 at T0 - 4
    clock.now = T0 + 1
    model.process_many([worker_event("worker-online", timestamp=T0 + 1, hostname=W1,
                                     processed=0)])
    assert [(e["uuid"], e["timestamp"]) for e in lost(sink)] == [("a", T0 - 4)]
