"""Database engines for SQLite and PostgreSQL, and session factories on them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import sessionmaker

SQLITE_SYNCHRONOUS_MODES = ("FULL", "NORMAL", "OFF")


def _sqlite_configurator(synchronous: str):  # noqa: ANN202
    def configure(dbapi_connection, record) -> None:  # noqa: ANN001 - DB-API connection
        _configure_sqlite(dbapi_connection, record, synchronous)

    return configure


def _configure_sqlite(dbapi_connection, _record, synchronous: str = "FULL") -> None:  # noqa: ANN001 - DB-API connection
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit survives a power loss. NORMAL (WAL): it survives a process crash; after a
    # power loss the archive's start-up recovery re-indexes files whose rows were lost.
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.execute("PRAGMA foreign_keys=ON")
    # DICOM matching is case-sensitive except for person names, which archive/query.py lowers itself.
    cursor.execute("PRAGMA case_sensitive_like=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
    # SQLite's own lower() folds ASCII only; person-name matching must fold "MÜLLER" too.
    dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)


def _unicode_lower(text: object) -> object:
    return text.lower() if isinstance(text, str) else text


def make_engine(url: str, *, sqlite_synchronous: str = "FULL") -> Engine:
    """Create an engine for ``url`` (``sqlite:///...`` or ``postgresql://...``)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite"):
        if sqlite_synchronous not in SQLITE_SYNCHRONOUS_MODES:
            raise ValueError(f"sqlite_synchronous must be FULL, NORMAL or OFF, got {sqlite_synchronous!r}")
        database = url.split("///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_configurator(sqlite_synchronous))
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def make_session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(bind=engine, expire_on_commit=False)
