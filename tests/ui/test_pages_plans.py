"""Query plans of the Completed, Failed, Running and Statistics pages on SQLite: each reads its
rows off an index in order (migration 0003), never sorting every row of a state. Without the
indexes SQLite sorted all SUCCESS rows for each Completed page (6.5 s at 1,000,000 rows) and
scanned the whole name index for an hour of statistics (1 s); these tests failed then.

Migration 0006 dropped the two ``finished_at`` indexes and made the ``root_id`` index partial:
the reads that used them (failures, retention, a periodic entry's recent runs, a workflow's
tree) are ranges of the indexes left, never a scan of the table.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import event

from exporter.history import failure_groups, list_executions, prune, task_stats
from exporter.history.workflow import workflow_of
from exporter.periodic.runs import runs
from tests.ui.conftest import T0


def plans(engine, call: Callable[[], object]) -> list[str]:
    """The SQLite query plan of each SELECT and DELETE ``call`` runs, one string per statement."""
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "DELETE")):
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
        # REVOKED, REJECTED and LOST of the window, off the (state, state_ts, task_id) index
        "SEARCH task_execution USING INDEX ix_task_execution_state_state_ts_task_id "
        "(state=? AND state_ts>? AND state_ts<?) | USE TEMP B-TREE FOR GROUP BY"]


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
        # REVOKED, REJECTED and LOST of the window, off the (state, state_ts, task_id) index
        "SEARCH task_execution USING INDEX ix_task_execution_state_state_ts_task_id "
        "(state=? AND state_ts>? AND state_ts<?) | USE TEMP B-TREE FOR GROUP BY"]


def searches(found: list[str]) -> list[str]:
    """The SEARCH and SCAN steps of the plans, in order."""
    return [step for plan in found for step in plan.split(" | ")
            if step.startswith(("SEARCH", "SCAN"))]


def test_failure_groups_read_the_failure_range_of_the_state_index(engine):
    found = plans(engine, lambda: failure_groups(engine, since=T0, until=T0 + 3600))
    # The groups off the FAILURE range, then each group's newest failure: the row by its key,
    # found among the rows that ended at that time.
    assert searches(found) == [
        "SEARCH task_execution USING INDEX ix_task_execution_state_state_ts_task_id "
        "(state=? AND state_ts>? AND state_ts<?)",
        "SCAN anon_1",
        "SEARCH task_execution USING INDEX sqlite_autoindex_task_execution_1 (task_id=?)",
        "SEARCH sample USING INDEX ix_task_execution_state_ts_task_id (state_ts=?)"]


def test_a_workflow_reads_its_root_by_key_and_its_steps_off_the_partial_root_index(engine):
    from tests.ui.conftest import add_row

    add_row(engine, "root", root_id="root")
    found = plans(engine, lambda: workflow_of(engine, "root"))
    assert searches(found) == [
        "SEARCH task_execution USING INDEX sqlite_autoindex_task_execution_1 (task_id=?)",
        "SEARCH task_execution USING INDEX sqlite_autoindex_task_execution_1 (task_id=?)",
        "SEARCH task_execution USING INDEX ix_task_execution_child_root_id (root_id=?)",
        "SCAN anon_1",
        "SEARCH action_audit USING INDEX ix_action_audit_task_id (task_id=?)"]


def test_a_periodic_entrys_recent_runs_are_ranges_of_the_name_state_index(engine):
    found = plans(engine, lambda: runs(engine, "app.tick", since=T0, finished_after=T0))
    assert set(searches(found)) == {
        "SEARCH task_execution USING INDEX ix_task_execution_name_state_state_ts_task_id "
        "(name=? AND state=? AND state_ts>?)",
        "SEARCH task_execution USING INDEX ix_task_execution_name_state_state_ts_task_id "
        "(name=? AND state=?)",
        "SCAN anon_1"}  # the union of both ranges


def test_retention_finds_old_rows_by_state_ranges(engine):
    found = plans(engine, lambda: prune(engine, 86400, now=T0))
    assert searches(found) == [
        "SEARCH task_execution USING COVERING INDEX sqlite_autoindex_task_execution_1 "
        "(task_id=?)",
        # finished rows by their end, unfinished ones by state (then their updated_at)
        "SEARCH task_execution USING INDEX ix_task_execution_state_state_ts_task_id "
        "(state=? AND state_ts<?)",
        "SEARCH task_execution USING INDEX ix_task_execution_state_state_ts_task_id (state=?)"]
