"""task_execution.state_source: where a row's state came from (events, result_backend, workers).

Existing rows get ``events``: every state they hold came from the tasks' own events (or the
exporter's LOST), the only source before repairs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``state_source`` (NOT NULL, default ``events``: existing rows take it)."""
    with op.batch_alter_table("task_execution") as batch:
        batch.add_column(sa.Column("state_source", sa.String(16),
                                   server_default=sa.text("'events'"), nullable=False))


def downgrade() -> None:
    """Drop ``state_source``."""
    with op.batch_alter_table("task_execution") as batch:
        batch.drop_column("state_source")
