"""Alembic environment: runs migrations on the connection RadPilot hands over."""

from alembic import context

from radpilot.archive.models import Base
import radpilot.engine.jobs_models  # noqa: F401 - job tables share Base (revision 0002)
import radpilot.engine.outbox_models  # noqa: F401 - outbox table (revision 0003)
import radpilot.validation.store  # noqa: F401 - validation_run, model_activation, audit_event (revision 0004)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("RadPilot migrations run through radpilot.archive.database.migrate()")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
