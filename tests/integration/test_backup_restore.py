"""`radpilot backup` while a node goes on storing over C-STORE, then `radpilot restore` into a fresh folder and a node on it.

Every instance acknowledged before the manifest's snapshot time must come back byte-identical
and be served by the restored node; instances the snapshot holds must be whole; those stored
after it are simply absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from typer.testing import CliRunner

from radpilot.archive import Archive
from radpilot.archive.backup import BackupError, create_backup, restore_backup
from radpilot.archive.models import Instance
from radpilot.cli import app
from radpilot.config import Settings
from tests.factories import make_ct_series, to_part10_bytes
from tests.fixtures.postgres import drop_database

pytestmark = pytest.mark.integration

STUDIES = 5
# Stored before the backup starts; the sender then pauses at half its instances until the backup has begun
# its snapshot, so stores surely go on during the backup.
START_BACKUP_AFTER = 40
CLI = [sys.executable, "-c", "from radpilot.cli import app; app()"]


class _Sender(threading.Thread):
    """Sends the instances over one association, noting when each was acknowledged."""

    def __init__(self, node, datasets, backup_started: threading.Event) -> None:  # noqa: ANN001 - RunningNode, Datasets
        super().__init__(daemon=True)
        self.hold_at = len(datasets) // 2
        self.node, self.datasets, self.backup_started = node, datasets, backup_started
        self.acknowledged: list[tuple[str, float]] = []
        self.failures: list[str] = []

    def run(self) -> None:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate(self.node.host, self.node.dicom_port, ae_title=self.node.ae_title)
        assert assoc.is_established
        try:
            for index, ds in enumerate(self.datasets):
                if index == self.hold_at:
                    self.backup_started.wait(60)
                status = assoc.send_c_store(ds)
                if getattr(status, "Status", None) == 0x0000:
                    self.acknowledged.append((str(ds.SOPInstanceUID), time.time()))
                else:
                    self.failures.append(f"{ds.SOPInstanceUID}: {status}")
        finally:
            assoc.release()


def _datasets(count: int) -> list:
    per_study = count // STUDIES
    return [ds for study in range(STUDIES) for ds in make_ct_series(per_study, rows=16, columns=16, patient_id=f"BK-{study}")]


def _stored_bytes(archive) -> dict[str, bytes]:  # noqa: ANN001 - Archive
    with archive.session() as session:
        instances = list(session.query(Instance))
    return {i.sop_instance_uid: archive.read_bytes(i) for i in instances}


@pytest.fixture
def target_postgres_url(postgres_server) -> object:  # noqa: ANN001 - PostgresServer
    """A second new, empty database to restore a PostgreSQL backup into."""
    name = f"radpilot_restore_{uuid.uuid4().hex[:12]}"
    admin_url = postgres_server.url("postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.url(name)
    drop_database(admin_url, name)


def _backup_during_stores(node, tmp_path: Path, count: int) -> tuple[dict, list[tuple[str, float]]]:  # noqa: ANN001
    """Run `radpilot backup` as a process of its own while a thread stores ``count`` instances into ``node``."""
    backup_dir = tmp_path / "backup"
    backup_started = threading.Event()
    sender = _Sender(node, _datasets(count), backup_started)
    sender.start()
    while len(sender.acknowledged) < START_BACKUP_AFTER and sender.is_alive():
        time.sleep(0.01)
    args = ["backup", str(backup_dir), "--data-dir", str(node.settings.data_dir)]
    if node.settings.database_url:
        args += ["--database-url", node.settings.database_url]
    process = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while process.poll() is None and not (backup_dir / "database").exists():
        time.sleep(0.005)
    backup_started.set()
    _, stderr = process.communicate(timeout=120)
    sender.join(timeout=120)
    assert process.returncode == 0, stderr
    assert not sender.failures, sender.failures[:3]
    assert len(sender.acknowledged) == count
    return json.loads((backup_dir / "manifest.json").read_text()), sender.acknowledged


# The test is 500 instances (SQLite, the default); PostgreSQL checks the pg_dump snapshot with fewer to keep CI short.
@pytest.mark.parametrize(("backend", "count"), [("sqlite", 500), ("postgresql", 150)])
def test_backup_while_storing_restores_every_instance_acknowledged_before_the_snapshot(
    backend: str, count: int, radpilot_factory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:  # noqa: ANN001 - fixtures
    source_url = request.getfixturevalue("fresh_postgres_url") if backend == "postgresql" else None
    # No fsync per instance: what is tested is the backup's consistency, not the disk's (CI time).
    node = radpilot_factory(database_url=source_url, durability="none")
    manifest, acknowledged = _backup_during_stores(node, tmp_path, count)

    snapshot_at = datetime.fromisoformat(manifest["snapshot_at"]).timestamp()
    before = {uid for uid, at in acknowledged if at < snapshot_at}
    after = {uid for uid, at in acknowledged if at > snapshot_at}
    assert len(before) >= START_BACKUP_AFTER, "the backup began after some instances were stored"
    assert after, "instances were still being stored during the backup"
    assert manifest["database"]["kind"] == backend
    in_snapshot = manifest["counts"]["instances"]
    assert len(before) <= in_snapshot < count

    restore_args = ["restore", str(tmp_path / "backup"), "--data-dir", str(tmp_path / "restored")]
    if backend == "postgresql":
        restore_args += ["--database-url", request.getfixturevalue("target_postgres_url")]
    restored_run = CliRunner().invoke(app, restore_args)  # in this process: a second interpreter's start-up is CI time
    assert restored_run.exit_code == 0, restored_run.output
    restored_url = json.loads(restored_run.stdout.strip().splitlines()[-1])["database"]
    assert restored_url.startswith("sqlite" if backend == "sqlite" else "postgresql")

    source = _stored_bytes(node.archive)
    restored_node = radpilot_factory(
        data_dir=tmp_path / "restored",
        database_url=request.getfixturevalue("target_postgres_url") if backend == "postgresql" else None,
    )
    restored = _stored_bytes(restored_node.archive)
    assert len(restored) == in_snapshot
    assert before <= set(restored), f"{len(before - set(restored))} acknowledged instances are missing after restore"
    assert all(restored[uid] == source[uid] for uid in restored), "a restored instance differs from the stored one"

    # The restored node serves what it holds: QIDO-RS counts per study, and one instance over WADO-RS.
    studies = httpx.get(f"{restored_node.dicomweb_url}/studies", headers=restored_node.headers, timeout=30).json()
    assert sum(s["00201208"]["Value"][0] for s in studies) == in_snapshot
    any_uid = next(iter(before))
    with restored_node.archive.session() as session:
        instance = session.query(Instance).filter(Instance.sop_instance_uid == any_uid).one()
        study_uid = instance.series.study.study_instance_uid
        series_uid = instance.series.series_instance_uid
    response = httpx.get(
        f"{restored_node.dicomweb_url}/studies/{study_uid}/series/{series_uid}/instances/{any_uid}",
        headers={**restored_node.headers, "Accept": 'multipart/related; type="application/dicom"'},
        timeout=30,
    )
    assert response.status_code == 200 and source[any_uid] in response.content


def test_restore_refuses_a_tampered_backup_of_a_running_node_naming_the_file(radpilot, tmp_path: Path) -> None:  # noqa: ANN001
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(radpilot.host, radpilot.dicom_port, ae_title=radpilot.ae_title)
    assert all(assoc.send_c_store(ds).Status == 0 for ds in make_ct_series(3, rows=16, columns=16))
    assoc.release()
    create_backup(radpilot.settings, tmp_path / "backup")
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    victim = next(f["path"] for f in manifest["files"] if f["kind"] == "instance")
    path = tmp_path / "backup" / "files" / victim
    path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 0x55]))

    refused = CliRunner().invoke(app, ["restore", str(tmp_path / "backup"), "--data-dir", str(tmp_path / "restored")])
    assert refused.exit_code == 1
    assert f"{victim} is altered" in refused.output.replace("\n", "")
    assert not (tmp_path / "restored").exists()

    # Restoring over the running node's own folder is refused even with --force.
    refused = CliRunner().invoke(app, ["restore", str(tmp_path / "backup"), "--data-dir", str(radpilot.settings.data_dir), "--force"])
    assert refused.exit_code == 1 and "running RadPilot" in refused.output.replace("\n", " ")


def test_postgresql_backup_is_restored_only_into_an_empty_postgresql_database(
    fresh_postgres_url: str, target_postgres_url: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=fresh_postgres_url)
    archive = Archive.from_settings(settings)
    assert all(archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted for ds in make_ct_series(3, rows=8, columns=8))
    archive.close()
    manifest = create_backup(settings, tmp_path / "backup")
    assert manifest.database["kind"] == "postgresql" and manifest.counts["instances"] == 3

    with pytest.raises(BackupError, match="holds a PostgreSQL database: give --database-url"):
        restore_backup(tmp_path / "backup", tmp_path / "restored")
    with pytest.raises(BackupError, match=r"is not empty \(\d+ tables\)"):
        restore_backup(tmp_path / "backup", tmp_path / "restored", database_url=fresh_postgres_url)
    assert not (tmp_path / "restored").exists()

    report, engine = restore_backup(tmp_path / "backup", tmp_path / "restored", database_url=target_postgres_url)
    engine.dispose()
    restored = Archive(tmp_path / "restored" / "dicom", target_postgres_url)
    try:
        assert restored.instance_count() == 3 and report.revision_after == manifest.alembic_revision
    finally:
        restored.close()
