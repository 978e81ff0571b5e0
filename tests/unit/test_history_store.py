"""The upsert's statements: what an INSERT leaves to the database, what an UPDATE sets."""

from __future__ import annotations

from sqlalchemy import event, select

from exporter.history import create_history_engine, upgrade
from exporter.history.merge import FIELD_DEFAULTS, record_from_event
from exporter.history.orm import TASK_EXECUTION
from exporter.history.store import LEFT_OUT, _one_group, upsert_rows

T0 = 1_700_000_000.0


def test_an_insert_leaves_out_only_columns_the_database_fills_with_that_value():
    for key, value in LEFT_OUT.items():
        column = TASK_EXECUTION.c[key]
        if value is None:
            assert column.nullable and column.default is None and column.server_default is None
        else:
            literal = (("true" if value else "false") if isinstance(value, bool)
                       else f"'{value}'" if isinstance(value, str) else str(value))
            assert not column.nullable and str(column.server_default.arg) == literal, key
    assert {key for key, value in LEFT_OUT.items() if value is not None} == set(FIELD_DEFAULTS)


def test_an_insert_names_what_is_set_and_an_update_sets_what_changed(tmp_path):
    engine = create_history_engine(f"sqlite:///{tmp_path / 'h.sqlite3'}")
    upgrade(engine)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, sql, *args: statements.append(sql))
    started = {"type": "task-started", "uuid": "t1", "timestamp": T0, "hostname": "celery@w1"}
    succeeded = {"type": "task-succeeded", "uuid": "t1", "timestamp": T0 + 2, "runtime": 1.5,
                 "hostname": "celery@w1", "result": "3"}
    for one_event, expected in ((started, (1, 0)), (succeeded, (0, 1)), (succeeded, (0, 0))):
        record = record_from_event(one_event)
        assert record is not None
        with engine.begin() as connection:
            assert upsert_rows(connection, dict([record]), T0) == expected
    writes = [sql.split(" WHERE")[0] for sql in statements
              if not sql.startswith(("SELECT", "BEGIN"))]
    assert writes == [
        "INSERT INTO task_execution (task_id, state, state_ts, hostname, worker_seen_at, "
        "started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id) DO NOTHING",
        "UPDATE task_execution SET state=?, state_ts=?, worker_seen_at=?, finished_at=?, "
        "runtime=?, result=?, updated_at=?",
        # The batch finished an execution: its hour's statistics are forgotten (rollup.py).
        "DELETE FROM task_stats_built",
    ]
    with engine.connect() as connection:
        row = connection.execute(select(TASK_EXECUTION)).one()._asdict()
    assert {k: v for k, v in row.items() if v not in (None, False, 0)} == {
        "task_id": "t1", "state": "SUCCESS", "state_ts": T0 + 2, "hostname": "celery@w1",
        "worker_seen_at": T0 + 2, "started_at": T0, "finished_at": T0 + 2, "runtime": 1.5,
        "result": "3", "updated_at": T0, "state_source": "events"}
    engine.dispose()


def test_new_rows_of_several_column_sets_are_one_insert_in_task_id_order_on_postgresql():
    # Two writers inserting the same new tasks take their locks in one order (no deadlock):
    # one statement, rows sorted, a column a row lacks at the value the database would store.
    groups = {frozenset({"task_id", "state", "result"}): [{"task_id": "b", "state": "SUCCESS",
                                                           "result": "3"}],
              frozenset({"task_id", "state", "args_truncated"}): [
                  {"task_id": "a", "state": "PENDING", "args_truncated": True},
                  {"task_id": "c", "state": "PENDING", "args_truncated": True}]}
    assert _one_group(groups) == {
        frozenset({"task_id", "state", "result", "args_truncated"}): [
            {"task_id": "a", "state": "PENDING", "args_truncated": True, "result": None},
            {"task_id": "b", "state": "SUCCESS", "result": "3", "args_truncated": False},
            {"task_id": "c", "state": "PENDING", "args_truncated": True, "result": None}]}
