"""Workflows (issue 18): the group id a ``celery.chord_unlock`` waits for, and an index on
``root_id`` for a workflow's tree (every execution of one root).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``group_id`` and the ``root_id`` index."""
    with op.batch_alter_table("task_execution") as batch:
        batch.add_column(sa.Column("group_id", sa.String(255), nullable=True))
    op.create_index("ix_task_execution_root_id", "task_execution", ["root_id"])


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_task_execution_root_id", table_name="task_execution")
    with op.batch_alter_table("task_execution") as batch:
        batch.drop_column("group_id")
