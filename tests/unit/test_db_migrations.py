"""The one migration chain in radpilot/db: it creates exactly the tables the packages declare, and knows none of them."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from radpilot.db import Base, make_engine, migrate
from radpilot.db.schema import alembic_config
from tests.helpers import REPO_ROOT, subprocess_env

# Every module that declares tables on radpilot.db.Base.
MODEL_MODULES = (
    "radpilot.archive.models",
    "radpilot.engine.jobs_models",
    "radpilot.engine.outbox_models",
    "radpilot.validation.store",
    "radpilot.security.audit",
)


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    engine = make_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()


def test_migrations_create_exactly_the_tables_the_models_declare(migrated_engine: Engine) -> None:
    for module in MODEL_MODULES:
        importlib.import_module(module)
    with migrated_engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert compare_metadata(context, Base.metadata) == []


def test_migrating_twice_changes_nothing(migrated_engine: Engine) -> None:
    migrate(migrated_engine)
    with migrated_engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    assert revision == ScriptDirectory.from_config(alembic_config(migrated_engine)).get_current_head()


def test_migrating_imports_no_package_above_the_database_layer(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from radpilot.db import make_engine, migrate\n"
        f"migrate(make_engine('sqlite:///{tmp_path / 'index.sqlite3'}'))\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('radpilot'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT,
                            env=subprocess_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert loaded and all(m == "radpilot" or m.startswith("radpilot.db") for m in loaded), loaded
