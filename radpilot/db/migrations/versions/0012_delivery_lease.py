"""delivery lease: one front end at a time attempts a delivery

Several ``radpilot serve`` front ends share one database; each runs an outbox. A front end
takes a pending delivery by setting ``claimed_by`` and ``claimed_until`` in one conditional
UPDATE, so no two send the same result set at once; a front end that dies mid-delivery
leaves a lease that simply runs out.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 12:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
