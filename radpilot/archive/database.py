"""Compatibility names: the database plumbing moved to :mod:`radpilot.db` (engines, sessions, migrations)."""

from radpilot.db import make_engine, make_session_factory, migrate

__all__ = ["make_engine", "make_session_factory", "migrate"]
