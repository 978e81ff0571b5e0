"""Write merged partial rows into ``task_execution``: one transaction per batch.

Select-then-write, the same on every database: the batch's existing rows are read (``SELECT …
FOR UPDATE`` where the dialect has it; SQLite's ``BEGIN`` serialises writers), each is merged
with its partial row by :func:`exporter.history.merge.merge_into` — the very rules the writer
applies in memory — and then new rows are inserted and changed rows updated with two
``executemany`` statements. Rows that did not change are not written. Only the event columns
(:data:`~exporter.history.merge.EVENT_FIELDS`, ``finished_at``, ``updated_at``) are written;
the action columns stay as the action API left them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import BindParameter, Connection, Table, bindparam, insert, select, update

from .merge import DERIVED_FIELDS, EVENT_FIELDS, finalize, merge_into
from .models import TASK_EXECUTION

_TABLE: Table = TASK_EXECUTION  # type: ignore[assignment]
#: Columns the writer reads and writes (besides ``task_id``).
WRITTEN_FIELDS: tuple[str, ...] = (*EVENT_FIELDS, *DERIVED_FIELDS)
_SELECT_COLUMNS = [_TABLE.c.task_id, *(_TABLE.c[f] for f in WRITTEN_FIELDS)]
#: executemany: the SET clause comes from the parameter keys (every written column).
_UPDATE = update(_TABLE).where(_TABLE.c.task_id == bindparam("b_task_id"))


def upsert_rows(connection: Connection, rows: Mapping[str, Mapping[str, Any]], now: float
                ) -> tuple[int, int]:
    """Merge ``rows`` (task id → partial row) into the table inside the caller's transaction.

    ``now`` (seconds since the epoch, exporter clock) becomes ``updated_at`` of every row
    written. Returns ``(inserted, updated)``; unchanged rows count in neither.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: as the database reports it (the caller rolls back).
        KeyError: a partial row without ``state``/``state_ts`` for a task with no stored row.

    """
    if not rows:
        return 0, 0
    ids = sorted(rows)
    # The ids are rendered as literals (escaped by SQLAlchemy's literal renderer): PostgreSQL
    # then hashes the IN list. As 500 bound parameters, a sequential scan (chosen while the
    # table is young and unanalysed) compares every row with every parameter: 50x slower.
    id_list: BindParameter[list[str]] = bindparam("ids", ids, expanding=True,
                                                  literal_execute=True)
    query = select(*_SELECT_COLUMNS).where(_TABLE.c.task_id.in_(id_list)).with_for_update()
    stored = {row.task_id: row._asdict() for row in connection.execute(query)}
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for task_id in ids:
        old = stored.get(task_id)
        if old is None:
            new: dict[str, Any] = dict.fromkeys(WRITTEN_FIELDS)
            merge_into(new, rows[task_id])
            finalize(new)
            new["task_id"] = task_id
            new["updated_at"] = now
            inserts.append(new)
            continue
        before = dict(old)
        merge_into(old, rows[task_id])
        finalize(old)
        if old != before:
            del old["task_id"]
            old["b_task_id"] = task_id
            old["updated_at"] = now
            updates.append(old)
    if inserts:
        connection.execute(insert(_TABLE), inserts)
    if updates:
        connection.execute(_UPDATE, updates)
    return len(inserts), len(updates)
