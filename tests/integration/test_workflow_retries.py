"""A workflow step fixed by a manual retry no longer looks broken: its node lists its retries
and theirs with their states, on SQLite and PostgreSQL. The retries are recorded by the action
API's own :func:`~exporter.history.record_retry` (audit trail, ``retry_of``).
"""

from __future__ import annotations

import pytest
from sqlalchemy import update

from exporter.history import create_history_engine, record_retry, upgrade
from exporter.history.orm import TASK_EXECUTION
from exporter.history.workflow import ManualRetry, workflow_of
from tests.support.clock import T0

pytestmark = pytest.mark.integration


def _set_state(engine, task_id: str, state: str, ts: float) -> None:
    with engine.begin() as connection:
        connection.execute(update(TASK_EXECUTION).where(TASK_EXECUTION.c.task_id == task_id)
                           .values(state=state, state_ts=ts, finished_at=ts))


def test_a_chord_callback_fixed_by_a_retry_lists_its_retries(history_url):
    engine = create_history_engine(history_url)
    upgrade(engine)
    rows = [
        {"task_id": "h", "name": "app.add", "state": "SUCCESS", "state_ts": T0 + 1,
         "updated_at": T0 + 1, "root_id": "h", "parent_id": None, "sent_at": T0},
        {"task_id": "cb", "name": "app.total", "state": "FAILURE", "state_ts": T0 + 3,
         "updated_at": T0 + 3, "root_id": "h", "parent_id": "h", "sent_at": T0 + 2},
    ]
    with engine.begin() as connection:
        connection.execute(TASK_EXECUTION.insert(), rows)
    try:
        record_retry(engine, original_id="cb", new_id="cb-r1", actor="api", at=T0 + 10)
        _set_state(engine, "cb-r1", "FAILURE", T0 + 11)
        record_retry(engine, original_id="cb-r1", new_id="cb-r2", actor="api", at=T0 + 20)
        _set_state(engine, "cb-r2", "SUCCESS", T0 + 21)

        found = workflow_of(engine, "cb")
        assert found is not None and found.count == 2
        (root,) = found.nodes
        (callback,) = root.children
        assert root.manual_retries == []
        assert callback.manual_retries == [ManualRetry("cb-r1", "cb", "FAILURE", T0 + 10),
                                           ManualRetry("cb-r2", "cb-r1", "SUCCESS", T0 + 20)]
    finally:
        engine.dispose()
