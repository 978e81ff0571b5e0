"""Indexes of the job browser's pages (issue 15): lists of one state newest first, of one task
name in one state, and statistics over a window of finish times.

Measured with 1,000,000 rows (benchmarks/ui_pages.py): without them SQLite sorted every row of
the state for each Completed page (6.5 s) and scanned the whole name index for the last hour's
statistics (1 s).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_task_execution_state_state_ts_task_id": ["state", "state_ts", "task_id"],
    "ix_task_execution_name_state_state_ts_task_id": ["name", "state", "state_ts", "task_id"],
    "ix_task_execution_finished_at_name_state_runtime": ["finished_at", "name", "state",
                                                         "runtime"],
}


def upgrade() -> None:
    """Create the three indexes."""
    for name, columns in INDEXES.items():
        op.create_index(name, "task_execution", columns)


def downgrade() -> None:
    """Drop them."""
    for name in INDEXES:
        op.drop_index(name, table_name="task_execution")
