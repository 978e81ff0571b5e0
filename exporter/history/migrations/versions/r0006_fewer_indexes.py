"""Fewer indexes on ``task_execution`` (issue 17, history nearly free): every index is paid on
every row the history writer inserts or changes.

- ``(state, finished_at)`` and ``(name, finished_at)`` are dropped: a finished execution's
  ``finished_at`` is its ``state_ts`` (:func:`exporter.history.merge.finalize`), so the reads
  that used them (failures, retention, rare end states, a periodic entry's recent runs) read
  the ``(state, state_ts, task_id)`` and ``(name, state, state_ts, task_id)`` indexes instead.
- The ``root_id`` index keeps only the executions another task sent (``root_id`` other than
  their own id): Celery makes a task sent by no task its own root, so on most clusters nearly
  every row was in it for nothing. A workflow's root is read by its primary key.

Measured with the burst of ``benchmarks/history_cost.py`` (realistic ``root_id``), the
writer's SQL cost 14-24 % less CPU per event.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The condition of the partial ``root_id`` index (the ORM's index says the same).
CHILD = sa.text("root_id <> task_id")


def upgrade() -> None:
    """Drop the two ``finished_at`` indexes; make the ``root_id`` index partial."""
    op.drop_index("ix_task_execution_state_finished_at", table_name="task_execution")
    op.drop_index("ix_task_execution_name_finished_at", table_name="task_execution")
    op.drop_index("ix_task_execution_root_id", table_name="task_execution")
    op.create_index("ix_task_execution_child_root_id", "task_execution", ["root_id"],
                    sqlite_where=CHILD, postgresql_where=CHILD)


def downgrade() -> None:
    """Put the three indexes of revision 0005 back."""
    op.drop_index("ix_task_execution_child_root_id", table_name="task_execution")
    op.create_index("ix_task_execution_root_id", "task_execution", ["root_id"])
    op.create_index("ix_task_execution_name_finished_at", "task_execution",
                    ["name", "finished_at"])
    op.create_index("ix_task_execution_state_finished_at", "task_execution",
                    ["state", "finished_at"])
