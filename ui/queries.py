"""History reads only the pages need (the rest go through :mod:`actions.reads` and
:mod:`exporter.history`, like the API). Nothing here writes.
"""

from __future__ import annotations

from sqlalchemy import Engine, Table, func, select

from actions.errors import history_errors
from exporter.history.orm import TASK_EXECUTION

_TABLE: Table = TASK_EXECUTION  # type: ignore[assignment]
_C = _TABLE.c


def state_counts(engine: Engine, since: float) -> dict[str, int]:
    """Executions whose current state was set at or after ``since`` (epoch seconds), by
    Celery state: ``{"SUCCESS": 120, "FAILURE": 3}`` (states with none are absent). Served
    by the ``(state_ts, task_id)`` index.

    Raises:
        HistoryUnavailable: the database did not answer.

    """
    query = (select(_C.state, func.count()).where(_C.state_ts >= since)
             .group_by(_C.state))
    with history_errors(), engine.connect() as connection:
        return {state: int(count) for state, count in connection.execute(query).all()}
