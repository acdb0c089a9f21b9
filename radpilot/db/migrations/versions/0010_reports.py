"""reports: report, report_version, report_event; outbox deliveries of HL7 and FHIR messages

The delivery table gains a kind ("dicom" for the existing rows), a payload for message
deliveries, an optional attempt limit after which a delivery is marked failed, and a
reference naming what it delivers (e.g. "report:12:v1").

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 12:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sections", sa.JSON(), nullable=False),
        sa.Column("ai_phrases", sa.JSON(), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signed_by", sa.String(length=128), nullable=True),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("amend_reason", sa.Text(), nullable=False),
        sa.Column("sr_sop_instance_uid", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("report", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_report_study_instance_uid"), ["study_instance_uid"], unique=False)
        batch_op.create_index(batch_op.f("ix_report_status"), ["status"], unique=False)

    op.create_table(
        "report_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sections", sa.JSON(), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("signed_by", sa.String(length=128), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sr_sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("kept_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["report_id"], ["report.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("report_id", "version", name="uq_report_version"),
    )
    with op.batch_alter_table("report_version", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_report_version_report_id"), ["report_id"], unique=False)

    op.create_table(
        "report_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("who", sa.String(length=128), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=False),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["report_id"], ["report.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("report_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_report_event_report_id"), ["report_id"], unique=False)

    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="dicom"))
        batch_op.add_column(sa.Column("payload", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("max_attempts", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("reference", sa.String(length=128), nullable=False, server_default=""))
        batch_op.create_index(batch_op.f("ix_delivery_reference"), ["reference"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_reference"))
        batch_op.drop_column("reference")
        batch_op.drop_column("max_attempts")
        batch_op.drop_column("payload")
        batch_op.drop_column("kind")
    with op.batch_alter_table("report_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_report_event_report_id"))
    op.drop_table("report_event")
    with op.batch_alter_table("report_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_report_version_report_id"))
    op.drop_table("report_version")
    with op.batch_alter_table("report", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_report_status"))
        batch_op.drop_index(batch_op.f("ix_report_study_instance_uid"))
    op.drop_table("report")
