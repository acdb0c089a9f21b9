"""instance_metadata: the WADO-RS metadata of each instance, kept from ingest on

Instances stored before this revision get their row the first time their metadata is served.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instance_metadata",
        sa.Column("instance_fk", sa.Integer(), nullable=False),
        sa.Column("bulk_data_threshold", sa.Integer(), nullable=False),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["instance_fk"], ["instance.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("instance_fk"),
    )


def downgrade() -> None:
    op.drop_table("instance_metadata")
