"""Hourly and daily statistics (issue 15, Statistics over days): ``task_stats_period`` (per
hour or day and task name: counts, run time sum/min/max and a log-bucket histogram),
``task_stats_built`` (periods whose figures are current) and the trigger on
``task_execution`` that forgets the periods of a finished execution written or deleted
(:mod:`exporter.history.rollup`). Nothing is built here: the history writer builds the closed
periods after the upgrade, and until then they are read from the rows as before.

The trigger's DDL is the rollup module's (one source; it also recreates a trigger that a later
SQLite batch migration of ``task_execution`` would drop).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from exporter.history.rollup import TRIGGER_NAMES, supported, trigger_ddl

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the two tables, the index and, on SQLite and PostgreSQL, the trigger."""
    op.create_table(
        "task_stats_period",
        sa.Column("hours", sa.Integer(), nullable=False),
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(255)),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("succeeded", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("runtime_count", sa.Integer(), nullable=False),
        sa.Column("runtime_sum", sa.Double()),
        sa.Column("runtime_min", sa.Double()),
        sa.Column("runtime_max", sa.Double()),
        sa.Column("histogram_offset", sa.Integer()),
        sa.Column("histogram", sa.LargeBinary()),
    )
    op.create_index("ix_task_stats_period_hours_hour_name", "task_stats_period",
                    ["hours", "hour", "name"])
    op.create_table(
        "task_stats_built",
        sa.Column("hour", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hours", sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("hour", "hours", name="pk_task_stats_built"),
    )
    dialect = op.get_bind().dialect.name
    if supported(dialect):
        for statement in trigger_ddl(dialect):
            op.execute(statement)


def downgrade() -> None:
    """Drop the trigger, then the tables."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS task_stats_stale() CASCADE")
    elif dialect == "sqlite":
        for name in TRIGGER_NAMES["sqlite"]:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("task_stats_built")
    op.drop_index("ix_task_stats_period_hours_hour_name", table_name="task_stats_period")
    op.drop_table("task_stats_period")
