"""instance.derived: RadPilot's own result objects are known as such at store time

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# What the engine recorded as the source AE title of its result objects before this revision.
RESULT_SOURCE_AE = "RADPILOT-AI"


def upgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("derived", sa.Boolean(), server_default=sa.false(), nullable=False))
    instance = sa.table("instance", sa.column("derived", sa.Boolean()), sa.column("source_ae_title", sa.String()))
    op.execute(instance.update().where(instance.c.source_ae_title == RESULT_SOURCE_AE).values(derived=True))


def downgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_column("derived")
