from __future__ import annotations

import pytest

from exporter.task_index import TaskIndex, TaskRecord


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
