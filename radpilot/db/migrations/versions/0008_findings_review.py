"""finding_decision and review_completion: the radiologist's review of AI findings

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 12:20:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "finding_decision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("analysis", sa.String(length=64), nullable=False),
        sa.Column("analysis_version", sa.String(length=32), nullable=False),
        sa.Column("ai_sr_uid", sa.String(length=64), nullable=False),
        sa.Column("finding_id", sa.String(length=32), nullable=False),
        sa.Column("finding_name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("original", sa.JSON(), nullable=False),
        sa.Column("edited", sa.JSON(), nullable=True),
        sa.Column("decided_by", sa.String(length=128), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("study_instance_uid", "job_id", "analysis", "finding_id", "decided_at"):
        op.create_index(f"ix_finding_decision_{column}", "finding_decision", [column])
    op.create_table(
        "review_completion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("ai_sr_uid", sa.String(length=64), nullable=False),
        sa.Column("verified_sr_uid", sa.String(length=64), nullable=False),
        sa.Column("instance_number", sa.Integer(), nullable=False),
        sa.Column("destinations", sa.JSON(), nullable=False),
        sa.Column("completed_by", sa.String(length=128), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("study_instance_uid", "job_id", "ai_sr_uid"):
        op.create_index(f"ix_review_completion_{column}", "review_completion", [column])


def downgrade() -> None:
    op.drop_table("review_completion")
    op.drop_table("finding_decision")
