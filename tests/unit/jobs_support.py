"""Shared helpers of the job-queue unit tests: a fake clock, job specs, store fixtures.

The fixtures are imported by the test modules that use them (``database_url`` is
parametrised over SQLite and a fresh PostgreSQL database).
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from radpilot.db import make_engine, migrate
from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs import JobSpec, Priority, RetryPolicy
from tests.fixtures.postgres import drop_database

LEASE_S = 10.0

START = datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC)


class FakeClock:
    """A clock that moves only when told (thread-safe)."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)


def instances(series: int, count: int = 3, changed: int | None = None) -> list[tuple[str, str]]:
    """``count`` (SOP Instance UID, sha256) pairs of series number ``series``; ``changed`` alters one content."""
    pairs = []
    for i in range(count):
        content = f"series {series} image {i}" + (" v2" if i == changed else "")
        pairs.append((f"1.2.826.0.1.3680043.9.{series}.{i + 1}", hashlib.sha256(content.encode()).hexdigest()))
    return pairs


def make_spec(series: int = 1, *, analysis: str = "lung_ct_quant", priority: Priority = Priority.ROUTINE, **overrides: object) -> JobSpec:
    """A job spec on series ``series``."""
    values: dict[str, object] = dict(
        analysis=analysis,
        analysis_version="1.0.0",
        study_instance_uid=f"1.2.826.0.1.3680043.9.{series}",
        series_instance_uid=f"1.2.826.0.1.3680043.9.{series}.0",
        instances=instances(series),
        rule="chest ct",
        destinations=("pacs",),
        priority=priority,
    )
    values.update(overrides)
    return JobSpec(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def jobs_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database file, copied for each test (migrating takes longer than copying)."""
    path = tmp_path_factory.mktemp("jobs-template") / "jobs.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def jobs_postgres_url(postgres_server) -> Iterator[str]:  # noqa: ANN001 - tests.fixtures.postgres.PostgresServer
    """A migrated PostgreSQL database for the session; ``database_url`` empties it for each test."""
    import psycopg

    name = f"radpilot_jobs_{uuid.uuid4().hex[:12]}"
    admin_url = postgres_server.url("postgres")
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = postgres_server.url(name)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    yield url
    drop_database(admin_url, name)


def _empty_postgres(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("SET LOCAL lock_timeout = '10s'"))
        connection.execute(text("TRUNCATE result_set, job RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database with no job: a copy of the SQLite template, or the emptied PostgreSQL one."""
    if request.param == "sqlite":
        path = tmp_path / "jobs.sqlite3"
        shutil.copyfile(request.getfixturevalue("jobs_sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("jobs_postgres_url")
    _empty_postgres(url)
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(database_url: str, clock: FakeClock) -> Iterator[JobStore]:
    """A migrated job store on the fake clock, retry delays 2, 4, 8 ... s."""
    job_store = JobStore.from_url(database_url, retry=RetryPolicy(base_s=2, factor=2, cap_s=60), clock=clock)
    yield job_store
    job_store.close()
