"""Initial history schema: task_execution and action_audit.

Revision ID: 0001
Revises:
Create Date: 2024-06-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.String(255)
_FALSE = sa.text("false")


def upgrade() -> None:
    """Create both tables and their indexes."""
    op.create_table(
        "task_execution",
        sa.Column("task_id", _ID, nullable=False),
        sa.Column("name", _ID, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_ts", sa.Double(), nullable=False),
        sa.Column("queue", _ID, nullable=True),
        sa.Column("routing_key", _ID, nullable=True),
        sa.Column("exchange", _ID, nullable=True),
        sa.Column("hostname", _ID, nullable=True),
        sa.Column("worker_seen_at", sa.Double(), nullable=True),
        sa.Column("args", sa.Text(), nullable=True),
        sa.Column("args_truncated", sa.Boolean(), server_default=_FALSE, nullable=False),
        sa.Column("kwargs", sa.Text(), nullable=True),
        sa.Column("kwargs_truncated", sa.Boolean(), server_default=_FALSE, nullable=False),
        sa.Column("eta", sa.Double(), nullable=True),
        sa.Column("expires", sa.Double(), nullable=True),
        sa.Column("retries", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("parent_id", _ID, nullable=True),
        sa.Column("root_id", _ID, nullable=True),
        sa.Column("sent_at", sa.Double(), nullable=True),
        sa.Column("received_at", sa.Double(), nullable=True),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("runtime", sa.Double(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("result_truncated", sa.Boolean(), server_default=_FALSE, nullable=False),
        sa.Column("exception_type", _ID, nullable=True),
        sa.Column("exception_message", sa.Text(), nullable=True),
        sa.Column("exception_message_truncated", sa.Boolean(), server_default=_FALSE,
                  nullable=False),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("traceback_truncated", sa.Boolean(), server_default=_FALSE, nullable=False),
        sa.Column("exception_at", sa.Double(), nullable=True),
        sa.Column("revoke_reason", sa.String(16), nullable=True),
        sa.Column("revoke_signal", sa.Integer(), nullable=True),
        sa.Column("manual_retry_count", sa.Integer(), server_default=sa.text("0"),
                  nullable=False),
        sa.Column("retry_of", _ID, nullable=True),
        sa.Column("created_by_action", _ID, nullable=True),
        sa.Column("updated_by_action", _ID, nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_execution")),
    )
    op.create_index("ix_task_execution_state_finished_at", "task_execution",
                    ["state", "finished_at"])
    op.create_index("ix_task_execution_name_finished_at", "task_execution",
                    ["name", "finished_at"])
    op.create_index("ix_task_execution_queue_state_ts", "task_execution", ["queue", "state_ts"])
    op.create_index("ix_task_execution_state_ts_task_id", "task_execution",
                    ["state_ts", "task_id"])
    op.create_table(
        "action_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("actor", _ID, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("task_id", _ID, nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_action_audit")),
    )
    op.create_index("ix_action_audit_task_id", "action_audit", ["task_id"])
    op.create_index("ix_action_audit_at", "action_audit", ["at"])


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("action_audit")
    op.drop_table("task_execution")
