"""The one migration chain in radpilot/db: it creates exactly the tables the packages declare, knowing none."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from radpilot.archive import Archive
from radpilot.db import Base, make_engine, migrate
from radpilot.db.schema import alembic_config
from tests.helpers import REPO_ROOT, subprocess_env

# Every module that declares tables on radpilot.db.Base.
MODEL_MODULES = (
    "radpilot.archive.models",
    "radpilot.engine.jobs_models",
    "radpilot.engine.outbox_models",
    "radpilot.engine.review_models",
    "radpilot.engine.research_export_models",
    "radpilot.validation.store",
    "radpilot.security.audit",
    "radpilot.modelhub.activation",
    "radpilot.worklist.models",
    "radpilot.security.models",
    "radpilot.reports.models",
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
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, env=subprocess_env(), timeout=120
    )
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert loaded and all(m == "radpilot" or m.startswith("radpilot.db") for m in loaded), loaded


def test_an_archive_written_before_derived_objects_opens_and_knows_its_results(tmp_path: Path) -> None:
    """An index at revision 0004 (what RadPilot wrote before 0005): the engine's results become derived."""
    url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    engine = make_engine(url)
    with engine.begin() as connection:
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")
        connection.execute(
            text("INSERT INTO patient (id, patient_id, patient_name, patient_birth_date, patient_sex) VALUES (1, 'P1', 'DOE^JANE', '', '')")
        )
        connection.execute(
            text(
                "INSERT INTO study (id, study_instance_uid, patient_fk, study_date, study_time, accession_number, "
                "study_id, study_description, referring_physician_name, created_at, updated_at) "
                "VALUES (1, '2.25.1', 1, '20240102', '', '', '', '', '', :at, :at)"
            ),
            {"at": "2026-11-30 10:00:00"},
        )
        for series_id, series_uid, number in ((1, "2.25.1.1", 1), (2, "2.25.1.2", 9901)):
            connection.execute(
                text(
                    "INSERT INTO series (id, series_instance_uid, study_fk, modality, series_number, "
                    "series_description, body_part_examined, series_date, series_time, created_at, updated_at) "
                    "VALUES (:id, :uid, 1, 'CT', :number, '', '', '', '', :at, :at)"
                ),
                {"id": series_id, "uid": series_uid, "number": number, "at": "2026-11-30 10:00:00"},
            )
        for series_id, sop_uid, source in ((1, "2.25.1.1.1", "CT1"), (2, "2.25.1.2.1", "RADPILOT-AI")):
            connection.execute(
                text(
                    "INSERT INTO instance (sop_instance_uid, series_fk, sop_class_uid, transfer_syntax_uid, file_path, "
                    "file_size, content_sha256, source_ae_title, received_at) "
                    "VALUES (:uid, :series, '1.2.840.10008.5.1.4.1.1.2', '1.2.840.10008.1.2.1', :path, 1, :sha, "
                    ":source, :at)"
                ),
                {
                    "uid": sop_uid,
                    "series": series_id,
                    "path": f"{sop_uid}.dcm",
                    "sha": "0" * 64,
                    "source": source,
                    "at": "2026-11-30 10:00:00",
                },
            )
    engine.dispose()

    archive = Archive(tmp_path / "dicom", url, durability="none")
    try:
        assert not archive.series_is_derived("2.25.1.1")
        assert archive.series_is_derived("2.25.1.2")
        assert archive.series_of_study("2.25.1") == ["2.25.1.1", "2.25.1.2"]
        assert archive.counts().instances == 2
    finally:
        archive.close()
