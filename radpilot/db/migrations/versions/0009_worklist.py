"""worklist: study priority from the DICOM header, AI flags raised by jobs, each study's reading state and claim

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 12:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("study") as batch:
        batch.add_column(sa.Column("priority", sa.String(length=16), nullable=False, server_default=""))
    op.create_table(
        "ai_flag",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("analysis", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("critical", sa.Boolean(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ai_flag_job_id", "ai_flag", ["job_id"])
    op.create_index("ix_ai_flag_study_instance_uid", "ai_flag", ["study_instance_uid"])
    op.create_table(
        "study_reading",
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("claimed_by", sa.String(length=255), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_by", sa.String(length=255), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("study_instance_uid"),
    )
    op.create_index("ix_study_reading_status", "study_reading", ["status"])
    op.create_index("ix_study_reading_updated_at", "study_reading", ["updated_at"])


def downgrade() -> None:
    op.drop_table("study_reading")
    op.drop_table("ai_flag")
    with op.batch_alter_table("study") as batch:
        batch.drop_column("priority")
