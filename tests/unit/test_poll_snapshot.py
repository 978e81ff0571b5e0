"""Building a poll snapshot from parsed replies: carry-over, task gauges, consumers."""

from __future__ import annotations

from exporter.poll import snapshot
from exporter.poll.inspect_replies import ConsumedQueue, ScheduledTask, TaskInfo, WorkerStats
from exporter.poll.snapshot import (
    Carried,
    PollSnapshot,
    carry_over,
    consumer_counts,
    remembered_pools,
    task_gauges,
)


def test_a_worker_missing_once_keeps_its_value_then_is_dropped():
    first = carry_over({}, {"w1": 1, "w2": 2})
    assert first == {"w1": Carried(1), "w2": Carried(2)}
    second = carry_over(first, {"w1": 10})
    assert second == {"w1": Carried(10), "w2": Carried(2, missed=1)}
    third = carry_over(second, {"w1": 11})
    assert third == {"w1": Carried(11)}


def test_a_worker_answering_again_is_fresh():
    state = carry_over(carry_over({}, {"w": 1}), {})
    assert carry_over(state, {"w": 5}) == {"w": Carried(5)}


def test_a_failed_call_carries_every_value_once():
    state = carry_over({}, {"w": 1})
    state = carry_over(state, None)
    assert state == {"w": Carried(1, missed=1)}
    assert carry_over(state, None) == {}


def info(task_id: str, name: str, routing_key: str = "a", start: float | None = None,
         exchange: str = "") -> TaskInfo:
    return TaskInfo(task_id, name, "w@h", start, exchange, routing_key, None)


def test_task_gauges_count_per_name_and_queue_over_workers():
    reserved = {"w1@h": [info("1", "add"), info("2", "add", "b")],
                "w2@h": [info("3", "add")]}
    scheduled = {"w1@h": [ScheduledTask(200.0, info("4", "add")),
                          ScheduledTask(150.0, info("5", "add")),
                          ScheduledTask(None, info("6", "mul"))]}
    active = {"w1@h": [info("7", "sleep", start=30.0)],
              "w2@h": [info("8", "sleep", start=10.0), info("9", "add", start=None)]}
    res, sch, eta, oldest = task_gauges(active, reserved, scheduled, {})
    assert res == {("add", "a"): 2, ("add", "b"): 1}
    assert sch == {("add", "a"): 2, ("mul", "a"): 1}
    assert eta == {"add": 150.0}
    assert oldest == {"sleep": 10.0}


def test_task_queue_comes_from_the_workers_bindings_or_is_unknown():
    queues = {"w1@h": [ConsumedQueue("high", "tasks", "high")]}
    reserved = {"w1@h": [info("1", "add", "high", exchange="tasks")],
                "w2@h": [info("2", "add", "high", exchange="tasks")]}
    res, _, _, _ = task_gauges({}, reserved, {}, queues)
    assert res == {("add", "high"): 1, ("add", "unknown"): 1}


def test_names_are_labelled_through_the_models_guard():
    from exporter.state.model import Model

    model = Model(runtime_buckets=(1.0,), queue_wait_buckets=(1.0,), max_tasks=10,
                  max_task_names=2, worker_timeout=30.0, worker_retention=60.0)
    reserved = {"w": [info("1", "a"), info("2", "b"), info("3", "c"), info("4", "d")]}
    res, _, _, _ = task_gauges({}, reserved, {}, {}, model.label_name)
    assert res == {("a", "a"): 1, ("b", "a"): 1, ("other", "a"): 2}
    assert model.label_name("a") == "a" and model.label_name("e") == "other"
    assert model.snapshot().task_names_folded == 3


def test_consumers_count_workers_per_queue_once():
    queues = {"w1": [ConsumedQueue("a", "a", "a"), ConsumedQueue("a", "x", "y")],
              "w2": [ConsumedQueue("a", "a", "a"), ConsumedQueue("b", "b", "b")]}
    assert consumer_counts(queues) == {"a": 2, "b": 1}


def stats(pool: str | None) -> WorkerStats:
    return WorkerStats(1, (), None, None, None, pool)


def test_pools_are_remembered_after_a_worker_stops_answering(monkeypatch):
    first = PollSnapshot(0.0, 0.1, pools=remembered_pools(
        None, {"solo@h": stats("solo"), "t@h": stats("threads"), "x@h": stats(None)}))
    assert first.pools == {"solo@h": "solo", "t@h": "threads"}
    # solo@h runs a task and answers nothing; t@h was restarted with -P prefork.
    second = remembered_pools(first, {"t@h": stats("prefork")})
    assert second == {"solo@h": "solo", "t@h": "prefork"}
    monkeypatch.setattr(snapshot, "MAX_REMEMBERED_POOLS", 2)
    third = remembered_pools(PollSnapshot(0.0, 0.1, pools=second), {"new@h": stats("solo")})
    assert third == {"t@h": "prefork", "new@h": "solo"}  # the oldest answer goes first


def test_a_task_id_two_workers_hold_counts_once():
    reserved = {"w1@h": [info("1", "add")], "w2@h": [info("1", "add"), info("2", "add")]}
    scheduled = {"w1@h": [ScheduledTask(200.0, info("3", "add"))],
                 "w2@h": [ScheduledTask(200.0, info("3", "add"))]}
    res, sch, eta, _ = task_gauges({}, reserved, scheduled, {})
    assert res == {("add", "a"): 2}
    assert sch == {("add", "a"): 1}
    assert eta == {"add": 200.0}
