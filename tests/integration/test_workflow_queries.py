"""The workflow reads on SQLite and PostgreSQL (issue 18): a workflow's rows with their
truncation, and the waiting steps the tracker is warmed with, from rows the writer's merge
rules would leave.
"""

from __future__ import annotations

from typing import Any

import pytest

from exporter.history import create_history_engine, upgrade
from exporter.history.orm import TASK_EXECUTION
from exporter.history.workflow import WaitingStep, waiting_steps, workflow_of
from tests.support.clock import T0

pytestmark = pytest.mark.integration


def _row(task_id: str, state: str, ts: float, **fields: Any) -> dict[str, Any]:
    """A row with every column the rows below set (one executemany needs the same keys)."""
    return {"task_id": task_id, "name": "app.add", "state": state, "state_ts": ts,
            "updated_at": ts, "retries": 0, "finished_at": ts if state == "SUCCESS" else None,
            "root_id": None, "parent_id": None, "sent_at": None, "group_id": None, **fields}


@pytest.fixture
def engine(history_url):
    engine = create_history_engine(history_url)
    upgrade(engine)
    rows = [
        _row("r", "SUCCESS", T0 + 1, root_id="r", sent_at=T0),
        _row("a", "SUCCESS", T0 + 2, root_id="r", parent_id="r", sent_at=T0 + 1),
        _row("b", "STARTED", T0 + 3, root_id="r", parent_id="r", sent_at=T0 + 1.5),
        _row("cb", "PENDING", T0 + 4, root_id="r", parent_id="a", sent_at=T0 + 4,
             name="app.total"),
        _row("next", "RECEIVED", T0 + 5, root_id="r", parent_id="b", sent_at=T0 + 5),
        _row("orphan", "PENDING", T0 + 6, root_id="gone", parent_id="gone", sent_at=None),
        _row("u", "RETRY", T0 + 7, root_id="u", parent_id="u", name="celery.chord_unlock",
             group_id="g1"),
        _row("alone", "PENDING", T0 + 8, root_id="alone"),
    ]
    with engine.begin() as connection:
        connection.execute(TASK_EXECUTION.insert(), rows)
    yield engine
    engine.dispose()


def test_a_workflow_is_every_row_of_its_root_nested_and_bounded(engine):
    found = workflow_of(engine, "cb")
    assert found is not None
    assert (found.root_id, found.count, found.truncated) == ("r", 5, False)
    (root,) = found.nodes
    assert [(n.task_id, [c.task_id for c in n.children]) for n in root.children] == [
        ("a", ["cb"]), ("b", ["next"])]
    cut = workflow_of(engine, "next", limit=3)  # the first sent three, and the one asked for
    assert cut is not None and (cut.count, cut.truncated) == (3, True)
    assert workflow_of(engine, "nope") is None
    unlock = workflow_of(engine, "u")
    assert unlock is not None and unlock.nodes[0].group_id == "g1"


def test_waiting_steps_carry_their_parents_state(engine):
    steps = sorted(waiting_steps(engine, 3600, 100, now=T0 + 60), key=lambda s: s.task_id)
    assert steps == [
        WaitingStep("cb", "app.total", "r", "a", T0 + 4, T0 + 4, None, "SUCCESS", T0 + 2),
        WaitingStep("next", "app.add", "r", "b", T0 + 5, T0 + 5, None, "STARTED", None),
        WaitingStep("orphan", "app.add", "gone", "gone", None, T0 + 6, None, None, None),
    ]
    assert [s.task_id for s in waiting_steps(engine, 3600, 2, now=T0 + 60)] == [
        "orphan", "next"]
    assert waiting_steps(engine, 10, 100, now=T0 + 60) == []
