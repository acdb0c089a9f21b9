"""Alembic environment: runs migrations on the connection RadPilot hands over.

No package's models are imported here: every revision states its tables with
explicit ``op.*`` statements, so the chain does not depend on (and cannot be
changed by) today's models, and the database layer stays below the packages
that own the tables. To draft a new revision with ``alembic revision
--autogenerate``, import the model modules (``radpilot.archive.models``,
``radpilot.engine.jobs_models``, ``radpilot.engine.outbox_models``,
``radpilot.validation.store``, ``radpilot.security.audit``) in a throwaway copy
of this file, pass ``target_metadata=radpilot.db.Base.metadata``, then review the
generated script; tests/unit/test_db_migrations.py checks that the chain and the
models agree.
"""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("RadPilot migrations run through radpilot.db.migrate()")
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
