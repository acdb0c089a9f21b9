"""jobs: the job queue (job) and recorded results (result_set)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 09:00:00

The UNIQUE constraints on result_set.job_id and result_set.idempotency_key are
what guarantee one result set per input and analysis version
(see radpilot.engine.job_store).
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("analysis", sa.String(length=64), nullable=False),
        sa.Column("analysis_version", sa.String(length=32), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("input_sop_uids", sa.JSON(), nullable=False),
        sa.Column("rule", sa.String(length=128), nullable=False),
        sa.Column("destinations", sa.JSON(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("worker_id", sa.String(length=255), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.String(length=16), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("supersedes_job_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["supersedes_job_id"],
            ["job.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index("ix_job_claim", ["state", "priority", "created_at"], unique=False)
        batch_op.create_index("ix_job_lease", ["state", "lease_expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_job_analysis"), ["analysis"], unique=False)
        batch_op.create_index(batch_op.f("ix_job_series_instance_uid"), ["series_instance_uid"], unique=False)
        batch_op.create_index(batch_op.f("ix_job_study_instance_uid"), ["study_instance_uid"], unique=False)

    op.create_table(
        "result_set",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("worker_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sop_instance_uids", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["job.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
        sa.UniqueConstraint("job_id"),
    )


def downgrade() -> None:
    op.drop_table("result_set")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_study_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_job_series_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_job_analysis"))
        batch_op.drop_index("ix_job_lease")
        batch_op.drop_index("ix_job_claim")

    op.drop_table("job")
