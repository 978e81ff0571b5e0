from __future__ import annotations

import pytest

from exporter.state.task_index import TaskIndex, TaskRecord


def test_new_record_starts_unknown_and_pending() -> None:
    index = TaskIndex(3)
    record, evicted = index.get_or_create("a")
    assert record == TaskRecord(name="unknown", queue="unknown", state="PENDING", running=None)
    assert evicted is None
    assert len(index) == 1


def test_get_or_create_returns_the_same_record_for_the_same_id() -> None:
    index = TaskIndex(3)
    first, _ = index.get_or_create("a")
    first.name = "app.add"
    again, evicted = index.get_or_create("a")
    assert again is first
    assert evicted is None
    assert len(index) == 1


def test_iteration_goes_from_least_to_most_recently_used() -> None:
    index = TaskIndex(3)
    for task_id in ("a", "b", "c"):
        index.get_or_create(task_id)
    index.get_or_create("a")
    assert [task_id for task_id, _ in index] == ["b", "c", "a"]


def test_eviction_returns_the_least_recently_used_record() -> None:
    index = TaskIndex(2)
    a, _ = index.get_or_create("a")
    a.name = "app.a"
    index.get_or_create("b")
    c, evicted = index.get_or_create("c")
    assert evicted is a
    assert evicted.name == "app.a"
    assert c is not a
    assert [task_id for task_id, _ in index] == ["b", "c"]
    assert len(index) == 2
    assert index.get("a") is None


def test_get_marks_the_record_used_so_another_is_evicted() -> None:
    index = TaskIndex(2)
    a, _ = index.get_or_create("a")
    b, _ = index.get_or_create("b")
    assert index.get("a") is a
    _, evicted = index.get_or_create("c")
    assert evicted is b
    assert [task_id for task_id, _ in index] == ["a", "c"]


def test_get_or_create_of_an_existing_id_marks_it_used() -> None:
    index = TaskIndex(2)
    a, _ = index.get_or_create("a")
    b, _ = index.get_or_create("b")
    index.get_or_create("a")
    _, evicted = index.get_or_create("c")
    assert evicted is b


def test_get_of_an_absent_id_is_none_and_creates_nothing() -> None:
    index = TaskIndex(2)
    assert index.get("nope") is None
    assert len(index) == 0


def test_capacity_one_keeps_only_the_newest() -> None:
    index = TaskIndex(1)
    a, _ = index.get_or_create("a")
    b, evicted = index.get_or_create("b")
    assert evicted is a
    assert [(task_id, record) for task_id, record in index] == [("b", b)]


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_below_one_is_rejected(capacity: int) -> None:
    with pytest.raises(ValueError) as info:
        TaskIndex(capacity)
    assert str(info.value) == "capacity must be at least 1"


def test_finished_tasks_are_evicted_first_and_kept_up_to_their_own_limit() -> None:
    index = TaskIndex(4, finished_capacity=2)
    records = {task_id: index.get_or_create(task_id)[0] for task_id in ("a", "b", "c", "d")}
    assert index.finish("a") is None
    assert index.finish("b") is None
    evicted_finished = index.finish("c")  # a third finished task: the oldest finished goes
    assert evicted_finished is records["a"]
    assert index.get_or_create("e")[1] is None  # d, e in progress, b, c finished: 4
    # Full: a new task evicts the least recently used finished one, not d or e.
    _, evicted = index.get_or_create("f")
    assert evicted is records["b"]
    assert [task_id for task_id, _ in index] == ["d", "e", "f", "c"]


def test_finishing_marks_used_and_an_unknown_id_is_ignored() -> None:
    index = TaskIndex(10, finished_capacity=2)
    for task_id in ("a", "b", "c"):
        index.get_or_create(task_id)
        index.finish(task_id)
    assert [task_id for task_id, _ in index] == ["b", "c"]
    index.get("b")  # used: c is now the least recently used finished task
    index.get_or_create("d")
    index.finish("d")
    assert [task_id for task_id, _ in index] == ["b", "d"]
    assert index.finish("never-seen") is None
    assert len(index) == 2


def test_default_finished_capacity_is_a_quarter() -> None:
    assert (TaskIndex(100_000).finished_capacity, TaskIndex(3).finished_capacity) == (25_000, 1)
