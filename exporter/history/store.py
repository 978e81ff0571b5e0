"""Write merged partial rows into ``task_execution``: one transaction per batch.

Select-then-write, the same on every database: the batch's existing rows are read (``SELECT …
FOR UPDATE`` in task-id order where the dialect has it; SQLite's ``BEGIN IMMEDIATE`` serialises
writers), each is merged with its partial row by :func:`exporter.history.merge.merge_into` — the
very rules the writer applies in memory — and then new rows are inserted and changed rows updated
with ``executemany``. Rows that did not change are not written. Only the event columns
(:data:`~exporter.history.merge.EVENT_FIELDS`, ``finished_at``, ``updated_at``) are written;
the action columns stay as the action API left them.

Two writers, one database (two exporters replicating each other, or the action API inserting
a retry's row): a task's row may be inserted by another transaction between this batch's
``SELECT`` and its ``INSERT``. The INSERT is ``INSERT … ON CONFLICT (task_id) DO NOTHING``
(PostgreSQL and SQLite; SQLAlchemy's dialect ``insert``), so it never fails on the primary
key: it waits for the other transaction and skips the row if that one committed. Its row count
then says some rows were not inserted, and :func:`upsert_rows` raises :class:`InsertRaced`: the
caller rolls the transaction back and runs the batch again, whose ``SELECT`` now finds those
rows and merges into them by the same rules — the row is what one writer alone makes of all
the events, never a second row nor one writer's partial view. Why not merge in
``ON CONFLICT DO UPDATE``: the rules (state order by stage, first/min/max, derived runtime)
would exist twice, once in SQL; and locking the raced rows inside the same transaction would
take row locks out of task-id order, which two writers can deadlock on. Rolling back keeps the
lock order: existing rows in task-id order, then new rows in task-id order (one INSERT
statement on databases with concurrent writers), so two batches never wait on each other in
a cycle.

Cost: a row is bound as a plain tuple (positional drivers such as sqlite3) or dict (named ones
such as psycopg) to an INSERT or UPDATE that SQLAlchemy compiled once for that set of columns
(:class:`_Statement`), and run with the driver's ``executemany`` through
:meth:`~sqlalchemy.engine.Connection.exec_driver_sql` (so driver errors still arrive as
SQLAlchemy's ``DBAPIError`` subclasses). An INSERT names only the columns whose value the
database would not put there itself (:data:`LEFT_OUT`: NULL, the server defaults; binding
``None`` costs sqlite3 an adapter lookup per parameter, a ``bool`` a call of SQLAlchemy's
processor) — on SQLite per set of columns, elsewhere the union of the batch's columns in one
statement (task-id order, see above) — an UPDATE sets only the columns that changed. Per row
that is a fraction of what ``Connection.execute(insert(table), list_of_dicts)`` spends building
parameters; the statements are the same SQL.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    Connection,
    Dialect,
    Table,
    UpdateBase,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from exporter.history.merge import (
    DERIVED_FIELDS,
    EVENT_FIELDS,
    FIELD_DEFAULTS,
    finalize,
    merge_into,
)
from exporter.history.orm import TASK_EXECUTION
from exporter.history.rollup import STATS_FIELDS, forget

_TABLE: Table = TASK_EXECUTION  # type: ignore[assignment]
#: Columns the writer reads and writes (besides ``task_id``).
WRITTEN_FIELDS: tuple[str, ...] = (*EVENT_FIELDS, *DERIVED_FIELDS)
_SELECT_COLUMNS = [_TABLE.c.task_id, *(_TABLE.c[f] for f in WRITTEN_FIELDS)]
_KEY = "b_task_id"


#: The stored rows of the ids ``ids``. The ids are rendered as literals (escaped by
#: SQLAlchemy's literal renderer): PostgreSQL then hashes the IN list. As 500 bound parameters,
#: a sequential scan (chosen while the table is young and unanalysed) compares every row with
#: every parameter: 50x slower.
_SELECT = (select(*_SELECT_COLUMNS)
           .where(_TABLE.c.task_id.in_(bindparam("ids", expanding=True, literal_execute=True)))
           .order_by(_TABLE.c.task_id)
           .with_for_update())
#: The same on SQLite, whose planner looks each bound id up in the primary key: rendering
#: thousands of literals cost more than the lookups (about 1 µs a row).
_SELECT_BOUND = (select(*_SELECT_COLUMNS)
                 .where(_TABLE.c.task_id.in_(bindparam("ids", expanding=True)))
                 .order_by(_TABLE.c.task_id))
#: The INSERT per dialect: skipping a row another transaction inserted meanwhile where the
#: dialect can say so (see the module docs); a plain INSERT elsewhere.
_INSERTS: Mapping[str, UpdateBase] = {
    "postgresql": postgresql.insert(_TABLE).on_conflict_do_nothing(index_elements=["task_id"]),
    "sqlite": sqlite.insert(_TABLE).on_conflict_do_nothing(index_elements=["task_id"]),
}
_INSERT = insert(_TABLE)
#: The SET clause comes from the compiled column keys (the columns that changed).
_UPDATE = update(_TABLE).where(_TABLE.c.task_id == bindparam(_KEY))
#: Columns an INSERT leaves out when the row's value is the one given here, which the database
#: then stores itself: NULL in the nullable columns without a default, and in the NOT NULL ones
#: their server default (:data:`~exporter.history.merge.FIELD_DEFAULTS`: ``false``, ``0``; a
#: test compares them with the schema).
LEFT_OUT: Mapping[str, Any] = {
    **{c.key: None for c in _TABLE.columns
       if c.nullable and c.default is None and c.server_default is None},
    **{key: value for key, value in FIELD_DEFAULTS.items()
       if _TABLE.c[key].server_default is not None},
}
#: Compiled statements kept per dialect; the cache starts afresh beyond this many column sets
#: (a handful occur: one per combination of events seen, e.g. success, failure, retry).
MAX_STATEMENTS = 256


class InsertRaced(Exception):
    """Another transaction inserted some of the batch's new tasks between its ``SELECT`` and
    its ``INSERT`` (``ON CONFLICT DO NOTHING`` skipped them): roll back and run the batch again
    (its ``SELECT`` then finds them and merges). ``count``: rows skipped.
    """

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} new rows were inserted by another writer meanwhile")
        self.count = count


class _Statement:
    """An INSERT or UPDATE compiled once for one dialect and one set of column keys.

    ``sql``: the statement as the driver takes it; :meth:`parameters` turns rows (dicts
    ``column key → value``, every key of the set present) into the driver's parameter rows:
    tuples in the compiled order for positional paramstyles, dicts keyed by bind name for
    named ones, values passed through the dialect's bind processors (e.g. ``bool`` → ``int``
    on SQLite).
    """

    __slots__ = ("_getter", "_names", "_processors", "sql")

    def __init__(self, statement: UpdateBase, dialect: Dialect, keys: Iterable[str]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        self.sql = compiled.string
        binds = compiled.binds
        if compiled.positional:
            assert compiled.positiontup is not None
            order = [binds[name].key for name in compiled.positiontup]
            self._names: tuple[str, ...] | None = None
        else:
            order = [binds[name].key for name in compiled.bind_names.values()]
            escaped = compiled.escaped_bind_names
            self._names = tuple(escaped.get(name, name) for name in compiled.bind_names.values())
        # Every statement binds two values at least (the id, updated_at): tuples, not a value.
        self._getter = itemgetter(*order)
        processors = []
        for key in order:
            column = _TABLE.c.get(key)
            process = (column.type.dialect_impl(dialect).bind_processor(dialect)
                       if column is not None else None)
            if process is not None:
                processors.append((key, process))
        self._processors: tuple[tuple[str, Callable[[Any], Any]], ...] = tuple(processors)

    def parameters(self, rows: list[dict[str, Any]]) -> list[Any]:
        """The driver's parameter rows for ``rows``; ``rows`` get the bind processors' values."""
        for key, process in self._processors:
            for row in rows:
                row[key] = process(row[key])
        getter = self._getter
        if self._names is None:
            return [getter(row) for row in rows]
        names = self._names
        return [dict(zip(names, getter(row), strict=True)) for row in rows]


_statements: weakref.WeakKeyDictionary[Dialect, dict[tuple[bool, frozenset[str]], _Statement]] \
    = weakref.WeakKeyDictionary()


def _statement(dialect: Dialect, is_insert: bool, keys: frozenset[str]) -> _Statement:
    """The compiled INSERT (``is_insert``) or UPDATE of the columns ``keys`` (cached)."""
    cache = _statements.get(dialect)
    if cache is None:
        cache = _statements[dialect] = {}
    found = cache.get((is_insert, keys))
    if found is None:
        if len(cache) >= MAX_STATEMENTS:
            cache.clear()
        statement = _INSERTS.get(dialect.name, _INSERT) if is_insert else _UPDATE
        found = cache[(is_insert, keys)] = _Statement(statement, dialect, keys)
    return found


def _execute_grouped(connection: Connection, is_insert: bool,
                     groups: Mapping[frozenset[str], list[dict[str, Any]]]) -> int:
    """Run each group's statement over its rows; returns the rows the database changed."""
    changed = 0
    for keys, group in groups.items():
        statement = _statement(connection.dialect, is_insert, keys)
        changed += connection.exec_driver_sql(statement.sql, statement.parameters(group)).rowcount
    return changed


def _one_group(groups: Mapping[frozenset[str], list[dict[str, Any]]]
               ) -> dict[frozenset[str], list[dict[str, Any]]]:
    """The rows of every group as one group in task-id order, each row given the union of the
    groups' columns (a column a row lacks gets its :data:`LEFT_OUT` value: what the database
    would have stored without it).
    """
    if len(groups) <= 1:
        return dict(groups)
    keys = frozenset().union(*groups)
    rows = sorted((row for group in groups.values() for row in group),
                  key=lambda row: row["task_id"])
    for row in rows:
        for key in keys - row.keys():
            row[key] = LEFT_OUT[key]
    return {keys: rows}


def upsert_rows(connection: Connection, rows: Mapping[str, Mapping[str, Any]], now: float
                ) -> tuple[int, int]:
    """Merge ``rows`` (task id → partial row, as :func:`~exporter.history.merge.record_from_event`
    and :func:`~exporter.history.merge.merge_into` make them) into the table inside the caller's
    transaction.

    ``now`` (seconds since the epoch, exporter clock) becomes ``updated_at`` of every row
    written. Returns ``(inserted, updated)``; unchanged rows count in neither. ``rows`` is not
    changed.

    Raises:
        InsertRaced: another transaction inserted some of the new tasks meanwhile (the caller
            rolls back and calls again; see the module docs).
        sqlalchemy.exc.SQLAlchemyError: as the database reports it (the caller rolls back).
        KeyError: a partial row without ``state``/``state_ts`` for a task with no stored row.

    """
    if not rows:
        return 0, 0
    ids = sorted(rows)
    select_ = _SELECT_BOUND if connection.dialect.name == "sqlite" else _SELECT
    stored = {row.task_id: row._asdict() for row in connection.execute(select_, {"ids": ids})}
    inserts: dict[frozenset[str], list[dict[str, Any]]] = {}
    updates: dict[frozenset[str], list[dict[str, Any]]] = {}
    inserted = updated = 0
    finished: list[float] = []  # finish times whose hourly statistics this batch changes
    for task_id in ids:
        old = stored.get(task_id)
        if old is None:
            new = dict(rows[task_id])
            finalize(new)
            new["task_id"] = task_id
            new["updated_at"] = now
            keys = frozenset([key for key, value in new.items()
                              if key not in LEFT_OUT or LEFT_OUT[key] != value])
            inserts.setdefault(keys, []).append(new)
            inserted += 1
            if new.get("finished_at") is not None:
                finished.append(new["finished_at"])
            continue
        before = dict(old)
        merge_into(old, rows[task_id])
        finalize(old)
        changed = {key: value for key, value in old.items() if value != before[key]}
        if changed:
            if not STATS_FIELDS.isdisjoint(changed):
                finished += [t for t in (before["finished_at"], old["finished_at"])
                             if t is not None]
            changed[_KEY] = task_id
            changed["updated_at"] = now
            updates.setdefault(frozenset(changed), []).append(changed)
            updated += 1
    if connection.dialect.name != "sqlite":  # concurrent writers: inserts in task-id order
        inserts = _one_group(inserts)
    skipped = inserted - _execute_grouped(connection, True, inserts)
    if skipped and connection.dialect.name in _INSERTS:  # other drivers: no ON CONFLICT
        raise InsertRaced(skipped)
    _execute_grouped(connection, False, updates)
    forget(connection, finished)
    return inserted, updated
