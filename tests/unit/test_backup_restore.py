"""Backup and restore without a network: manifest, verification, refusals and the Alembic upgrade on restore."""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
from collections import namedtuple
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import select
from typer.testing import CliRunner

from radpilot.archive import Archive
from radpilot.archive.backup import MANIFEST, BackupError, Manifest, create_backup, restore_backup, verify_backup
from radpilot.cli import app
from radpilot.config import Settings
from radpilot.db import make_engine
from radpilot.db.schema import alembic_config
from radpilot.security.audit import AuditEvent, verify_chain
from tests.factories import make_ct_series, to_part10_bytes


def _node(tmp_path: Path, count: int = 4) -> tuple[Settings, dict[str, bytes]]:
    """A data folder with ``count`` stored instances, a pseudonym key and a validation run file; the stored bytes by SOP UID."""
    settings = Settings(data_dir=tmp_path / "data")
    archive = Archive.from_settings(settings)
    stored = {}
    for ds in make_ct_series(count, rows=8, columns=8):
        data = to_part10_bytes(ds)
        assert archive.store_file_bytes(data).outcome.accepted
        stored[str(ds.SOPInstanceUID)] = data
    archive.close()
    (settings.data_dir / "pseudonym.key").write_bytes(b"pseudonym-secret")
    (settings.data_dir / "pseudonym.key").chmod(0o600)
    run = settings.data_dir / "validation" / "runs" / "lung" / "1.0" / "report.json"
    run.parent.mkdir(parents=True)
    run.write_text('{"dice": 0.98}')
    (settings.data_dir / "dicom" / ".incoming" / "leftover.part").write_bytes(b"half a file")
    return settings, stored


def _instance_files(data_dir: Path) -> dict[str, bytes]:
    archive = Archive(data_dir / "dicom", f"sqlite:///{data_dir / 'index.sqlite3'}")
    try:
        with archive.session() as session:
            from radpilot.archive.models import Instance

            return {i.sop_instance_uid: archive.read_bytes(i) for i in session.scalars(select(Instance))}
    finally:
        archive.close()


def test_backup_then_restore_gives_every_file_back_byte_identical(tmp_path: Path) -> None:
    settings, stored = _node(tmp_path)
    manifest = create_backup(settings, tmp_path / "backup")
    assert manifest.counts["instances"] == 4 and manifest.alembic_revision
    assert manifest.secrets == ["pseudonym.key"]
    paths = {f.path for f in manifest.files}
    assert "validation/runs/lung/1.0/report.json" in paths
    assert not any(".incoming" in p or "index.sqlite3" in p for p in paths), "temporaries and the live database stay out"

    report, engine = restore_backup(tmp_path / "backup", tmp_path / "restored")
    engine.dispose()
    assert report.revision_after == manifest.alembic_revision
    assert _instance_files(tmp_path / "restored") == stored
    assert (tmp_path / "restored" / "pseudonym.key").read_bytes() == b"pseudonym-secret"
    for key in (tmp_path / "backup" / "files" / "pseudonym.key", tmp_path / "restored" / "pseudonym.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, f"{key} is readable by others"
    assert stat.S_IMODE((tmp_path / "backup").stat().st_mode) == 0o700
    assert (tmp_path / "restored" / "validation" / "runs" / "lung" / "1.0" / "report.json").read_text() == '{"dice": 0.98}'
    assert not any(p.name.startswith(".restored.restoring") for p in tmp_path.iterdir())


def test_hard_linked_backup_shares_the_instance_files(tmp_path: Path) -> None:
    settings, _ = _node(tmp_path, count=2)
    manifest = create_backup(settings, tmp_path / "backup", link=True)
    instance = next(f for f in manifest.files if f.kind == "instance")
    assert (tmp_path / "backup" / "files" / instance.path).stat().st_ino == (settings.data_dir / instance.path).stat().st_ino
    verify_backup(tmp_path / "backup")


def test_restore_refuses_an_altered_file_naming_it_and_leaves_nothing(tmp_path: Path) -> None:
    settings, _ = _node(tmp_path)
    manifest = create_backup(settings, tmp_path / "backup")
    victim = next(f for f in manifest.files if f.kind == "instance")
    path = tmp_path / "backup" / "files" / victim.path
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, one pixel changed
    path.write_bytes(bytes(data))
    with pytest.raises(BackupError, match=rf"{victim.path} is altered"):
        restore_backup(tmp_path / "backup", tmp_path / "restored")
    assert not (tmp_path / "restored").exists()
    assert [p.name for p in tmp_path.iterdir() if "restoring" in p.name] == []
    with pytest.raises(BackupError, match="is altered"):
        verify_backup(tmp_path / "backup")


def test_restore_refuses_a_missing_file_naming_it(tmp_path: Path) -> None:
    settings, _ = _node(tmp_path)
    manifest = create_backup(settings, tmp_path / "backup")
    (tmp_path / "backup" / "files" / "pseudonym.key").unlink()
    with pytest.raises(BackupError, match="pseudonym.key is listed in the manifest but missing"):
        restore_backup(tmp_path / "backup", tmp_path / "restored")
    assert manifest.counts["files"] == len(manifest.files)


def test_restore_refuses_a_backup_without_a_finished_manifest(tmp_path: Path) -> None:
    settings, _ = _node(tmp_path, count=1)
    create_backup(settings, tmp_path / "backup")
    (tmp_path / "backup" / MANIFEST).unlink()
    with pytest.raises(BackupError, match="incomplete"):
        restore_backup(tmp_path / "backup", tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text[: len(text) // 2], "not JSON"),
        (lambda text: text.replace('"format": "radpilot-backup"', '"format": "other"'), "not a RadPilot backup manifest"),
        (lambda text: text.replace('"format_version": 1', '"format_version": 99'), "format version 99"),
        (lambda text: text.replace('"path": "pseudonym.key"', '"path": "../../etc/passwd"'), "leaves the backup"),
        (lambda text: text.replace('"kind": "sqlite"', '"kind": "oracle"'), "unknown database kind"),
        (lambda text: json.dumps({**json.loads(text), "files": "none"}), "corrupt"),
    ],
)
def test_restore_refuses_a_corrupt_manifest(tmp_path: Path, edit, message: str) -> None:  # noqa: ANN001 - a str -> str edit
    settings, _ = _node(tmp_path, count=1)
    create_backup(settings, tmp_path / "backup")
    path = tmp_path / "backup" / MANIFEST
    path.write_text(edit(path.read_text()))
    with pytest.raises(BackupError, match=message):
        restore_backup(tmp_path / "backup", tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_backup_refuses_a_destination_inside_the_data_folder(tmp_path: Path) -> None:
    settings, _ = _node(tmp_path, count=1)
    with pytest.raises(BackupError, match="inside the data folder"):
        create_backup(settings, settings.data_dir / "backups" / "today")
    assert not (settings.data_dir / "backups").exists()


def test_backup_refuses_a_destination_that_is_not_empty(tmp_path: Path) -> None:
    settings, _ = _node(tmp_path, count=1)
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "older-backup.txt").write_text("keep me")
    with pytest.raises(BackupError, match="not an empty folder"):
        create_backup(settings, tmp_path / "backup")
    assert (tmp_path / "backup" / "older-backup.txt").read_text() == "keep me"


def test_backup_without_enough_space_says_so_and_removes_its_partial_output(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    settings, _ = _node(tmp_path, count=2)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("radpilot.archive.backup.shutil.disk_usage", lambda _path: usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(BackupError, match="not enough space .* MB are free"):
        create_backup(settings, tmp_path / "backup")
    assert not (tmp_path / "backup").exists()


def test_backup_refuses_a_damaged_stored_instance_naming_it(tmp_path: Path) -> None:
    settings, _ = _node(tmp_path, count=2)
    victim = sorted((settings.data_dir / "dicom").rglob("*.dcm"))[0]
    data = bytearray(victim.read_bytes())
    data[-2] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(BackupError, match=rf"{victim.name} does not match the content hash in the index"):
        create_backup(settings, tmp_path / "backup")
    assert not (tmp_path / "backup").exists()


def test_restore_refuses_a_non_empty_folder_unless_forced_and_then_sets_it_aside(tmp_path: Path) -> None:
    settings, stored = _node(tmp_path, count=2)
    create_backup(settings, tmp_path / "backup")
    target = tmp_path / "target"
    target.mkdir()
    (target / "notes.txt").write_text("someone's file")
    with pytest.raises(BackupError, match="not empty"):
        restore_backup(tmp_path / "backup", target)
    report, engine = restore_backup(tmp_path / "backup", target, force=True)
    engine.dispose()
    assert report.set_aside is not None and (report.set_aside / "notes.txt").read_text() == "someone's file"
    assert _instance_files(target) == stored


def test_restore_never_overwrites_a_running_nodes_data_even_when_forced(tmp_path: Path) -> None:
    settings, _ = _node(tmp_path, count=1)
    create_backup(settings, tmp_path / "backup")
    (settings.data_dir / "dicom" / ".open").write_text(str(os.getpid()))  # what a running server leaves there
    with pytest.raises(BackupError, match="running RadPilot"):
        restore_backup(tmp_path / "backup", settings.data_dir, force=True)
    assert (settings.data_dir / "index.sqlite3").is_file()


def test_restore_refuses_a_backup_from_a_newer_schema(tmp_path: Path) -> None:
    settings, _ = _node(tmp_path, count=1)
    create_backup(settings, tmp_path / "backup")
    path = tmp_path / "backup" / MANIFEST
    raw = json.loads(path.read_text())
    raw["alembic_revision"] = "9999"
    path.write_text(json.dumps(raw))
    with pytest.raises(BackupError, match="revision '9999'"):
        restore_backup(tmp_path / "backup", tmp_path / "restored")


def test_restore_of_a_backup_from_an_older_revision_upgrades_the_schema(tmp_path: Path) -> None:
    data_dir = tmp_path / "old"
    (data_dir / "dicom").mkdir(parents=True)
    engine = make_engine(f"sqlite:///{data_dir / 'index.sqlite3'}")
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0010")
    engine.dispose()
    manifest = create_backup(Settings(data_dir=data_dir), tmp_path / "backup")
    assert manifest.alembic_revision == "0010"
    report, restored = restore_backup(tmp_path / "backup", tmp_path / "restored")
    restored.dispose()
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None and head > "0010"
    assert (report.revision_before, report.revision_after) == ("0010", head)


def test_manifest_names_key_files_kept_outside_the_data_folder(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    Archive.from_settings(Settings(data_dir=data_dir)).close()
    settings = Settings(data_dir=data_dir, deid_key_file=tmp_path / "keys" / "deid.key")
    manifest = create_backup(settings, tmp_path / "backup")
    assert any(line.startswith("deid_key_file:") and "back it up separately" in line for line in manifest.not_included)
    assert Manifest.read(tmp_path / "backup").not_included == manifest.not_included


def test_cli_backup_and_restore_are_audited_and_say_why_they_refuse(tmp_path: Path) -> None:
    settings, stored = _node(tmp_path, count=2)
    runner = CliRunner()
    result = runner.invoke(app, ["backup", str(tmp_path / "backup"), "--data-dir", str(settings.data_dir)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["instances"] == 2

    result = runner.invoke(app, ["verify-backup", str(tmp_path / "backup")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["restore", str(tmp_path / "backup"), "--data-dir", str(tmp_path / "restored")])
    assert result.exit_code == 0, result.output
    assert _instance_files(tmp_path / "restored") == stored

    shutil.rmtree(tmp_path / "backup" / "files" / "validation")
    result = runner.invoke(app, ["restore", str(tmp_path / "backup"), "--data-dir", str(tmp_path / "again")])
    assert result.exit_code == 1
    assert "report.json is listed in the manifest but missing" in result.output

    for data_dir, action in ((settings.data_dir, "backup.create"), (tmp_path / "restored", "backup.restore")):
        engine = make_engine(f"sqlite:///{data_dir / 'index.sqlite3'}")
        with engine.connect() as connection:
            rows = connection.execute(select(AuditEvent.action, AuditEvent.outcome).where(AuditEvent.action.like("backup.%"))).all()
        assert verify_chain(engine).ok
        engine.dispose()
        assert (action, "success") in rows


def test_mutated_manifests_are_refused_with_a_backup_error_never_a_crash(tmp_path: Path) -> None:
    settings, _ = _node(tmp_path, count=1)
    create_backup(settings, tmp_path / "backup")
    path = tmp_path / "backup" / MANIFEST
    original = path.read_bytes()
    rng = random.Random(21)
    outcomes = {"refused": 0, "accepted": 0}
    for _ in range(150):
        data = bytearray(original)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        else:
            for _flip in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            verify_backup(tmp_path / "backup")
            outcomes["accepted"] += 1  # a flip in whitespace or in a field nothing checks
        except BackupError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100


def test_a_disk_error_during_backup_is_named_and_the_partial_backup_removed(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    settings, _ = _node(tmp_path, count=2)

    def disk_full(*_args, **_kwargs) -> None:  # noqa: ANN002, ANN003
        raise OSError(28, "No space left on device", str(tmp_path / "backup" / "files" / "pseudonym.key"))

    monkeypatch.setattr("radpilot.archive.backup._copy_verified", disk_full)
    with pytest.raises(BackupError, match=r"failed and was removed: No space left on device \(.*pseudonym.key\)"):
        create_backup(settings, tmp_path / "backup")
    assert not (tmp_path / "backup").exists()
