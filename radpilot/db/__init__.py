"""The database layer under every package that keeps rows: one declarative base, engines, one migration chain.

Each package declares its own tables on :class:`Base` (``archive.models``,
``engine.jobs_models``, ``engine.outbox_models``, ``validation.store``, ``modelhub.activation``,
``security.audit``, ``reports.models``, ``worklist.models``); this package knows none of them. The one Alembic chain in
``radpilot/db/migrations`` creates them all with explicit ``op.*`` statements.
"""

from radpilot.db.base import Base, utcnow
from radpilot.db.connection import make_engine, make_session_factory
from radpilot.db.schema import migrate

__all__ = ["Base", "make_engine", "make_session_factory", "migrate", "utcnow"]
