"""audit chain: outcome, source, sequence and hash chain on audit_event, and the chain's head row

Rows written before this revision are chained here, in id order, with the same canonical
form as radpilot.security.audit.chain_hash (kept in step by tests/unit/test_audit_chain.py),
so `radpilot audit verify` covers them too.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 12:20:00.000000
"""

import hashlib
import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def _at(value):  # noqa: ANN001, ANN202 - datetime or SQLite's text
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds")


def _hash(row, seq: int, prev: str) -> str:  # noqa: ANN001
    details = row.details if isinstance(row.details, dict) else json.loads(row.details or "{}")
    content = {
        "seq": seq,
        "at": _at(row.at),
        "who": row.who,
        "action": row.action,
        "target": row.target,
        "reason": row.reason or "",
        "details": details,
        "outcome": "success",
        "source": "",
        "prev": prev,
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("outcome", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("source", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("forwarded_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    bind = op.get_bind()
    table = sa.table(
        "audit_event",
        sa.column("id", sa.Integer),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("who", sa.String),
        sa.column("action", sa.String),
        sa.column("target", sa.String),
        sa.column("reason", sa.Text),
        sa.column("details", sa.JSON),
        sa.column("seq", sa.Integer),
        sa.column("outcome", sa.String),
        sa.column("source", sa.String),
        sa.column("prev_hash", sa.String),
        sa.column("hash", sa.String),
    )
    prev, seq = GENESIS, 0
    for row in bind.execute(sa.select(table).order_by(table.c.id)).fetchall():
        seq += 1
        digest = _hash(row, seq, prev)
        bind.execute(table.update().where(table.c.id == row.id).values(seq=seq, outcome="success", source="", prev_hash=prev, hash=digest))
        prev = digest
    bind.execute(
        sa.text("INSERT INTO audit_chain_head (id, seq, hash, forwarded_seq) VALUES (1, :seq, :hash, 0)"), {"seq": seq, "hash": prev}
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        for name, kind in (("seq", sa.Integer()), ("outcome", sa.String(length=16)), ("source", sa.String(length=255))):
            batch_op.alter_column(name, existing_type=kind, nullable=False)
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_index(batch_op.f("ix_audit_event_seq"), ["seq"], unique=True)


def downgrade() -> None:
    op.drop_table("audit_chain_head")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_event_seq"))
        for name in ("hash", "prev_hash", "source", "outcome", "seq"):
            batch_op.drop_column(name)
