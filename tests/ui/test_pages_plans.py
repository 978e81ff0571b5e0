"""Query plans of the Completed, Failed, Running and Statistics pages on SQLite: each reads its
rows off an index in order (migration 0003), never sorting every row of a state. Without the
indexes SQLite sorted all SUCCESS rows for each Completed page (6.5 s at 1,000,000 rows) and
scanned the whole name index for an hour of statistics (1 s); these tests failed then.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import event

from exporter.history import list_executions, task_stats
from tests.ui.conftest import T0


def plans(engine, call: Callable[[], object]) -> list[str]:
    """The SQLite query plan of each SELECT ``call`` runs, one string per statement."""
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    with engine.connect() as connection:
        return [" | ".join(row[3] for row in connection.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + statement, parameters))  # type: ignore[arg-type]
            for statement, parameters in statements]


@pytest.mark.parametrize(("filters", "index"), [
    ({"states": ["SUCCESS"]}, "ix_task_execution_state_state_ts_task_id (state=?)"),
    ({"states": ["FAILURE"], "since": T0, "until": T0 + 60},
     "ix_task_execution_state_state_ts_task_id (state=? AND state_ts>? AND state_ts<?)"),
    ({"states": ["SUCCESS"], "name": "app.add"},
     "ix_task_execution_name_state_state_ts_task_id (name=? AND state=?)"),
])
def test_a_list_of_one_state_reads_its_page_off_the_index_in_order(engine, filters, index):
    [plan] = plans(engine, lambda: list_executions(engine, limit=50, **filters))
    assert plan == f"SEARCH task_execution USING INDEX {index}"


def test_statistics_read_the_window_from_a_covering_index(engine):
    found = plans(engine, lambda: task_stats(engine, since=T0, until=T0 + 3600))
    assert len(found) == 2
    for plan in found:
        assert ("SEARCH task_execution USING COVERING INDEX "
                "ix_task_execution_finished_at_name_state_runtime (finished_at>? AND "
                "finished_at<?)") in plan, plan
