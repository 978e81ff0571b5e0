"""SQLAlchemy 2.x ORM models of the execution history: ``task_execution`` and ``action_audit``.

Times are stored as float seconds since the epoch, UTC (``DOUBLE PRECISION`` on PostgreSQL,
``REAL`` on SQLite): the same values the events carry, exact round trips, no time-zone handling
in SQL. The API renders them as ISO 8601. The schema is created and changed only by the Alembic
migrations in ``exporter/history/migrations`` (:func:`exporter.history.db.upgrade`); a test
checks the models and the migrations agree.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Constraint names stay stable across databases (Alembic needs names to alter them).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
_ID = String(255)


class HistoryBase(DeclarativeBase):
    """Declarative base of the history tables (own metadata, so the history can live in a
    database shared with other applications).
    """

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


#: The rows of the partial ``root_id`` index: executions another task sent (migration 0006).
_CHILD = text("root_id <> task_id")


class TaskExecution(HistoryBase):
    """One row per Celery task id: what the events (and actions) said about that execution.

    Columns and their source (event fields as Celery sends them; merge rules in
    :mod:`exporter.history.merge`):

    - ``task_id``: ``uuid``. ``name``, ``args``, ``kwargs``, ``parent_id``, ``root_id``,
      ``retries``, ``eta``, ``expires``: ``task-sent``/``task-received``; ``args``/``kwargs``
      are the argument reprs, capped at ``max_field_bytes`` with ``*_truncated`` set.
    - ``group_id``: the group a ``celery.chord_unlock`` task waits for (its first argument, see
      :mod:`exporter.events.canvas`); NULL on every other task: no Celery event carries the
      group id of a group's members.
    - ``queue`` (``queue``, else ``routing_key``), ``routing_key``, ``exchange``: ``task-sent``.
      ``priority``: any event carrying ``priority`` (Celery's own events do not), else NULL.
    - ``state``: Celery state (PENDING, RECEIVED, STARTED, RETRY, CANCELLED, REJECTED, LOST,
      REVOKED, FAILURE, SUCCESS); ``state_ts``: timestamp of the event that set it.
      ``state_source``: where that state came from — ``events`` (the task's own events, and
      the exporter's LOST), ``result_backend`` or ``workers`` (a repair after lost events,
      :mod:`exporter.repair`; ``state_ts`` is then the result's ``date_done`` or the running
      task's ``time_start``).
    - ``sent_at``/``received_at``/``started_at``: the event timestamps (first send, latest
      attempt); ``finished_at``: ``state_ts`` of a terminal state, else NULL.
    - ``hostname``: worker (``task-received`` and later events, never ``task-sent``'s publisher);
      ``worker_seen_at``: timestamp of the newest such event.
    - ``runtime`` seconds: ``task-succeeded``'s ``runtime``; for FAILURE finished − started.
    - ``result`` (repr, capped): ``task-succeeded``. ``exception_type`` (class name, as
      :func:`exporter.events.parse.exception_class`), ``exception_message``, ``traceback`` (capped),
      ``exception_at``: the newest ``task-failed``/``task-retried``.
    - ``revoke_reason`` (``expired``/``terminated``/``revoked``), ``revoke_signal``:
      ``task-revoked``.
    - ``manual_retry_count``, ``retry_of``, ``created_by_action``, ``updated_by_action``: set by
      the action API (:mod:`exporter.history.audit`), never by events.
    - ``updated_at``: exporter clock when the row was last written.
    """

    __tablename__ = "task_execution"

    task_id: Mapped[str] = mapped_column(_ID, primary_key=True)
    name: Mapped[str | None] = mapped_column(_ID)
    state: Mapped[str] = mapped_column(String(16))
    state_ts: Mapped[float] = mapped_column(Double)
    queue: Mapped[str | None] = mapped_column(_ID)
    routing_key: Mapped[str | None] = mapped_column(_ID)
    exchange: Mapped[str | None] = mapped_column(_ID)
    hostname: Mapped[str | None] = mapped_column(_ID)
    worker_seen_at: Mapped[float | None] = mapped_column(Double)
    args: Mapped[str | None] = mapped_column(Text)
    args_truncated: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    kwargs: Mapped[str | None] = mapped_column(Text)
    kwargs_truncated: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    eta: Mapped[float | None] = mapped_column(Double)
    expires: Mapped[float | None] = mapped_column(Double)
    retries: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    priority: Mapped[int | None] = mapped_column(Integer)
    parent_id: Mapped[str | None] = mapped_column(_ID)
    root_id: Mapped[str | None] = mapped_column(_ID)
    group_id: Mapped[str | None] = mapped_column(_ID)
    sent_at: Mapped[float | None] = mapped_column(Double)
    received_at: Mapped[float | None] = mapped_column(Double)
    started_at: Mapped[float | None] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)
    runtime: Mapped[float | None] = mapped_column(Double)
    result: Mapped[str | None] = mapped_column(Text)
    result_truncated: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    exception_type: Mapped[str | None] = mapped_column(_ID)
    exception_message: Mapped[str | None] = mapped_column(Text)
    exception_message_truncated: Mapped[bool] = mapped_column(
        Boolean, server_default=text("false"))
    traceback: Mapped[str | None] = mapped_column(Text)
    traceback_truncated: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    exception_at: Mapped[float | None] = mapped_column(Double)
    revoke_reason: Mapped[str | None] = mapped_column(String(16))
    revoke_signal: Mapped[int | None] = mapped_column(Integer)
    manual_retry_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    retry_of: Mapped[str | None] = mapped_column(_ID)
    created_by_action: Mapped[str | None] = mapped_column(_ID)
    updated_by_action: Mapped[str | None] = mapped_column(_ID)
    updated_at: Mapped[float] = mapped_column(Double)
    state_source: Mapped[str] = mapped_column(String(16), server_default=text("'events'"))

    __table_args__ = (
        # Every index is paid on every row the history writer inserts or changes (migration
        # 0006 dropped two): a finished execution's finished_at is its state_ts, so reads of
        # finished executions by state or name use the state_ts indexes below.
        # Lists filtered by queue, newest first.
        Index("ix_task_execution_queue_state_ts", "queue", "state_ts"),
        # Newest-first pagination, warm-up and prune by row count walk (state_ts, task_id).
        Index("ix_task_execution_state_ts_task_id", "state_ts", "task_id"),
        # The job browser's lists of one state (Completed, Failed, Running), newest first, and
        # of one task name in one state: each page reads its 50 rows off the index in order
        # (without them SQLite sorted every SUCCESS row: 6.5 s at 1,000,000 rows); failures,
        # retention and a periodic entry's runs read ranges of them.
        Index("ix_task_execution_state_state_ts_task_id", "state", "state_ts", "task_id"),
        Index("ix_task_execution_name_state_state_ts_task_id", "name", "state", "state_ts",
              "task_id"),
        # Statistics of a window of finish times, read from the index alone (covering).
        Index("ix_task_execution_finished_at_name_state_runtime", "finished_at", "name",
              "state", "runtime"),
        # A workflow's tree: the executions another task sent, by root (GET
        # /api/v1/tasks/{id}/workflow). A task sent by no task is its own root and left out.
        Index("ix_task_execution_child_root_id", "root_id", sqlite_where=_CHILD,
              postgresql_where=_CHILD),
    )


class ActionAudit(HistoryBase):
    """Who did what through the action API: one row per mutation.

    ``at``: float seconds since the epoch (exporter clock); ``actor``: the authenticated
    principal (token name), never a secret; ``action``: ``retry``, ``cancel``, …; ``task_id``:
    the task acted on (NULL for actions on no task); ``detail``: JSON object (new task id,
    signal, outcome, error).
    """

    __tablename__ = "action_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Double)
    actor: Mapped[str] = mapped_column(_ID)
    action: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[str | None] = mapped_column(_ID)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_action_audit_task_id", "task_id"),
        Index("ix_action_audit_at", "at"),
    )


#: ``task_execution`` as a Core table (the writer and the queries use Core statements).
TASK_EXECUTION = TaskExecution.__table__
#: ``action_audit`` as a Core table.
ACTION_AUDIT = ActionAudit.__table__

#: Per task name and period figures of the finished executions, built from ``task_execution``
#: by :mod:`exporter.history.rollup` (see there): the period is the ``hours`` (1 or 24) from
#: hour ``hour`` (``floor(finished_at / 3600)``; a day starts at an hour divisible by 24, UTC
#: midnight). ``count`` finished, ``succeeded``/``failed`` (SUCCESS/FAILURE) among them, and
#: over those with a runtime: ``runtime_count``, ``runtime_sum`` (seconds), ``runtime_min``/
#: ``runtime_max`` and the log-bucket ``histogram`` (little-endian uint32 counts from bucket
#: ``histogram_offset`` on). ``name`` NULL: rows without a name. Only read for periods listed
#: in ``task_stats_built``.
TASK_STATS_PERIOD = Table(
    "task_stats_period", HistoryBase.metadata,
    Column("hours", Integer, nullable=False),
    Column("hour", BigInteger, nullable=False),
    Column("name", _ID),
    Column("count", Integer, nullable=False),
    Column("succeeded", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("runtime_count", Integer, nullable=False),
    Column("runtime_sum", Double),
    Column("runtime_min", Double),
    Column("runtime_max", Double),
    Column("histogram_offset", Integer),
    Column("histogram", LargeBinary),
    Index("ix_task_stats_period_hours_hour_name", "hours", "hour", "name"),
)
#: The periods whose ``task_stats_period`` rows are current: a trigger on ``task_execution``
#: deletes every period holding a finished execution that is inserted, changed or deleted, in
#: the same transaction (:mod:`exporter.history.rollup`).
TASK_STATS_BUILT = Table(
    "task_stats_built", HistoryBase.metadata,
    Column("hour", BigInteger, primary_key=True, autoincrement=False),
    Column("hours", Integer, primary_key=True, autoincrement=False),
)
