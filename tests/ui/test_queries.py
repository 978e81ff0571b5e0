"""The history reads of the pages (ui/queries.py): exact answers, and query plans that read
only the rows of the window."""

from __future__ import annotations

from sqlalchemy import text

from tests.ui.conftest import T0, add_row
from ui.queries import audit_trail, state_counts, state_counts_query


def test_state_counts_count_the_executions_of_the_window_by_state(engine):
    add_row(engine, "old", ts=T0 - 10)
    add_row(engine, "f1", ts=T0)
    add_row(engine, "f2", ts=T0 + 5)
    add_row(engine, "s1", state="SUCCESS", ts=T0 + 1)
    add_row(engine, "p1", state="PENDING", ts=T0 + 2)
    assert state_counts(engine, T0) == {"FAILURE": 2, "SUCCESS": 1, "PENDING": 1}
    assert state_counts(engine, T0 + 6) == {}


def test_state_counts_read_the_state_index_alone(engine):
    # Grouping by the bare column made SQLite scan the whole (state, finished_at) index:
    # 8.8 s on 1,000,000 rows; grouping the state_ts range by state looked each row up (28 ms
    # for a day). Each state is now a range of the covering (state, state_ts, task_id) index.
    from sqlalchemy.dialects import sqlite

    sql = str(state_counts_query(T0).compile(dialect=sqlite.dialect(),
                                             compile_kwargs={"literal_binds": True}))
    with engine.connect() as connection:
        plan = [row[3] for row in connection.execute(text("EXPLAIN QUERY PLAN " + sql))]
    searches = [step for step in plan if step.startswith("SEARCH")]
    assert searches == ["SEARCH task_execution USING COVERING INDEX "
                        "ix_task_execution_state_state_ts_task_id (state=? AND state_ts>?)"] * 10


def test_the_audit_trail_is_oldest_first_and_only_of_its_task(engine):
    from exporter.history import record_action

    record_action(engine, actor="ui:alice", action="cancel", task_id="t1", at=T0 + 2)
    record_action(engine, actor="api", action="retry", task_id="t1", at=T0 + 1,
                  detail={"new_task_id": "n1"})
    record_action(engine, actor="api", action="retry", task_id="t2", at=T0)
    trail = audit_trail(engine, "t1")
    assert [(e.at, e.actor, e.action, e.detail) for e in trail] == [
        (T0 + 1, "api", "retry", {"new_task_id": "n1"}), (T0 + 2, "ui:alice", "cancel", None)]


def test_slow_tasks_average_the_ended_executions_of_the_window_and_read_only_it(engine):
    from sqlalchemy.dialects import sqlite

    from ui.queries import slow_tasks, slow_tasks_query

    add_row(engine, "s1", state="SUCCESS", ts=T0, runtime=100.0, name="app.slow")
    add_row(engine, "s2", state="FAILURE", ts=T0 + 1, runtime=40.0, name="app.slow")
    add_row(engine, "s3", state="SUCCESS", ts=T0 - 10, runtime=1000.0, name="app.slow")
    add_row(engine, "n1", state="SUCCESS", ts=T0, runtime=90.0, name=None)
    add_row(engine, "f1", state="SUCCESS", ts=T0, runtime=1.0, name="app.fast")
    assert [(s.name, s.count, s.avg_runtime, s.max_runtime)
            for s in slow_tasks(engine, T0, 60.0)] == [
        (None, 1, 90.0, 90.0), ("app.slow", 2, 70.0, 100.0)]
    sql = str(slow_tasks_query(T0, 60.0, 10).compile(
        dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with engine.connect() as connection:
        plan = " ".join(row[3] for row in connection.execute(text("EXPLAIN QUERY PLAN " + sql)))
    assert "USING INDEX ix_task_execution_state_ts_task_id (state_ts>?)" in plan, plan
