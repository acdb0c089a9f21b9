"""Alembic environment: runs migrations on the connection RadPilot hands over."""

from alembic import context

from radpilot.archive.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("RadPilot migrations run through radpilot.archive.database.migrate()")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
