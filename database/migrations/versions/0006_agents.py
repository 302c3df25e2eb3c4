"""agents, runs, threads; usage rows name their run

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "agent_run_events",
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("run_id", "seq", name=op.f("pk_agent_run_events")),
    )
    op.create_table(
        "agent_runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("api_key_id", sa.String(length=64), nullable=True),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("agent_version", sa.Integer(), nullable=False),
        sa.Column("agent", sa.JSON(), nullable=False),
        sa.Column("thread_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("stop_reason", sa.String(length=32), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("usage", sa.JSON(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("required_action", sa.JSON(), nullable=True),
        sa.Column("tool_outputs", sa.JSON(), nullable=True),
        sa.Column("cancel_mode", sa.String(length=16), nullable=True),
        sa.Column("idempotency_key", sa.String(length=256), nullable=True),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("last_seq", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_runs")),
    )
    with op.batch_alter_table("agent_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_agent_runs_active",
            ["status"],
            unique=False,
            postgresql_where=sa.text("status IN ('queued', 'in_progress', 'requires_action')"),
            sqlite_where=sa.text("status IN ('queued', 'in_progress', 'requires_action')"),
        )
        batch_op.create_index(
            "ix_agent_runs_tenant_created_at", ["tenant", "created_at"], unique=False
        )
        batch_op.create_index(
            "uq_agent_runs_idempotency_key", ["tenant", "idempotency_key"], unique=True
        )

    op.create_table(
        "agent_thread_messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("thread_id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("message", sa.JSON(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_thread_messages")),
    )
    with op.batch_alter_table("agent_thread_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_agent_thread_messages_thread_id_id", ["thread_id", "id"], unique=False
        )

    op.create_table(
        "agent_threads",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_threads")),
    )
    with op.batch_alter_table("agent_threads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_threads_tenant"), ["tenant"], unique=False)

    op.create_table(
        "agent_versions",
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("retired", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("tenant", "agent_id", "version", name=op.f("pk_agent_versions")),
    )
    with op.batch_alter_table("agent_versions", schema=None) as batch_op:
        batch_op.create_index(
            "uq_agent_versions_current",
            ["tenant", "agent_id"],
            unique=True,
            postgresql_where=sa.text("retired = false"),
            sqlite_where=sa.text("retired = false"),
        )

    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("run_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("turn", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_usage_records_run_id"), ["run_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_records_run_id"))
        batch_op.drop_column("turn")
        batch_op.drop_column("run_id")
        batch_op.drop_column("agent_id")

    with op.batch_alter_table("agent_versions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_agent_versions_current",
            postgresql_where=sa.text("retired = false"),
            sqlite_where=sa.text("retired = false"),
        )

    op.drop_table("agent_versions")
    with op.batch_alter_table("agent_threads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_threads_tenant"))

    op.drop_table("agent_threads")
    with op.batch_alter_table("agent_thread_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_agent_thread_messages_thread_id_id")

    op.drop_table("agent_thread_messages")
    with op.batch_alter_table("agent_runs", schema=None) as batch_op:
        batch_op.drop_index("uq_agent_runs_idempotency_key")
        batch_op.drop_index("ix_agent_runs_tenant_created_at")
        batch_op.drop_index(
            "ix_agent_runs_active",
            postgresql_where=sa.text("status IN ('queued', 'in_progress', 'requires_action')"),
            sqlite_where=sa.text("status IN ('queued', 'in_progress', 'requires_action')"),
        )

    op.drop_table("agent_runs")
    op.drop_table("agent_run_events")
