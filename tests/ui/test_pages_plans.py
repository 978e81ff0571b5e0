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
    # Nothing built: the built periods of the window (none), then the rows of the window.
    found = plans(engine, lambda: task_stats(engine, since=T0, until=T0 + 3600))
    assert found == [
        "SEARCH task_stats_built USING COVERING INDEX sqlite_autoindex_task_stats_built_1 "
        "(hour>?)",
        "SEARCH task_execution USING COVERING INDEX "
        "ix_task_execution_finished_at_name_state_runtime (finished_at>? AND finished_at<?)",
        # REVOKED, REJECTED and LOST of the window, off the (state, finished_at) index
        "SEARCH task_execution USING INDEX ix_task_execution_state_finished_at "
        "(state=? AND finished_at>? AND finished_at<?) | USE TEMP B-TREE FOR GROUP BY"]


def test_statistics_of_built_periods_read_them_by_index_and_the_rest_of_the_window(engine):
    from exporter.history.rollup import build
    from tests.ui.conftest import add_row

    add_row(engine, "f1", ts=T0)
    build(engine, now=T0 + 3 * 86400, budget=60.0)  # 3 days of hours, 2 whole UTC days
    found = plans(engine, lambda: task_stats(engine, since=T0 + 100, until=T0 + 2 * 86400))
    assert found == [
        "SEARCH task_stats_built USING COVERING INDEX sqlite_autoindex_task_stats_built_1 "
        "(hour>?)",
        # the whole day, and the runs of built hours before and after it
        "MULTI-INDEX OR | INDEX 1 | SEARCH task_stats_period USING INDEX "
        "ix_task_stats_period_hours_hour_name (hours=? AND hour=?) | INDEX 2 | "
        "SEARCH task_stats_period USING INDEX ix_task_stats_period_hours_hour_name "
        "(hours=? AND hour>? AND hour<?) | INDEX 3 | SEARCH task_stats_period USING INDEX "
        "ix_task_stats_period_hours_hour_name (hours=? AND hour>? AND hour<?)",
        # the rows of the window's first and last part hours
        "MULTI-INDEX OR | INDEX 1 | SEARCH task_execution USING COVERING INDEX "
        "ix_task_execution_finished_at_name_state_runtime (finished_at>? AND finished_at<?) | "
        "INDEX 2 | SEARCH task_execution USING COVERING INDEX "
        "ix_task_execution_finished_at_name_state_runtime (finished_at>? AND finished_at<?)",
        # REVOKED, REJECTED and LOST of the window, off the (state, finished_at) index
        "SEARCH task_execution USING INDEX ix_task_execution_state_finished_at "
        "(state=? AND finished_at>? AND finished_at<?) | USE TEMP B-TREE FOR GROUP BY"]
