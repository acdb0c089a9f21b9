"""Online backup and restore of a RadPilot node: its database and the files of its data folder.

A backup is a folder::

    manifest.json            written last, atomically: a backup without it is incomplete
    database/index.sqlite3   SQLite: the online backup API's copy (one read transaction)
    database/radpilot.pgdump PostgreSQL: pg_dump --format=custom in an exported snapshot
    files/<path>             the data folder's files, at their paths under it (dicom/... for instances)

Consistency: the database snapshot is taken first, in one transaction, while C-STOREs go on.
Every instance whose index row the snapshot holds is then copied (or hard-linked) and checked
against the size and content hash the index recorded; instances stored later are simply not
in the backup. Stored instances are written once by an atomic rename, so a file the snapshot
names is complete. An instance acknowledged before ``snapshot_at`` had committed its row
before the snapshot began, and is therefore in the backup.

Restore checks every file against the manifest's sha256 while copying into a staging folder
beside the target, restores the database, brings its schema up to date with Alembic, and only
then moves the staging folder into place; on any error the staging folder is removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import psycopg
from alembic.script import ScriptDirectory
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from radpilot import __version__
from radpilot.archive.models import Instance, Series, Study
from radpilot.config import Settings
from radpilot.db import make_engine, migrate
from radpilot.db.schema import alembic_config
from radpilot.dicom.part10 import MalformedDicomError, dataset_offset

logger = logging.getLogger(__name__)

FORMAT = "radpilot-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FILES_DIR = "files"
SQLITE_SNAPSHOT = "database/index.sqlite3"
PG_DUMP = "database/radpilot.pgdump"
CHUNK = 1024 * 1024
SYNC_THREADS = 8
# Room kept free beyond what a backup or restore writes, so neither fills a disk to the last byte.
SPACE_MARGIN_BYTES = 64 * 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Names under the data folder that are never backed up: the live database (the snapshot replaces it),
# the instance tree (copied from the snapshot's list), temporaries and caches.
_SKIPPED_DIRS = {".incoming", "__pycache__", ".cache", "cache", "tmp", "model-cache"}
_SKIPPED_SUFFIXES = (".part", ".tmp", ".swp")
_SECRET_SUFFIXES = (".key", ".pem", ".fernet", ".crt", ".p12", ".pfx")

Progress = Callable[[str, int, int], None]  # (phase, done, total)


class BackupError(Exception):
    """A backup or restore that was refused or failed; the message names the problem and the file."""


def _no_progress(_phase: str, _done: int, _total: int) -> None:
    return None


@dataclass(frozen=True)
class BackupFile:
    """One file in a backup: its path under the data folder, size, sha256 and kind (instance, secret or data)."""

    path: str
    size: int
    sha256: str
    kind: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "kind": self.kind}


@dataclass
class Manifest:
    """What a finished backup holds (``manifest.json``)."""

    radpilot_version: str
    alembic_revision: str
    snapshot_at: datetime
    finished_at: datetime
    database: dict[str, Any]
    counts: dict[str, int]
    files: list[BackupFile]
    not_included: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    @property
    def secrets(self) -> list[str]:
        return [f.path for f in self.files if f.kind == "secret"]

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "format_version": self.format_version,
                "radpilot_version": self.radpilot_version,
                "alembic_revision": self.alembic_revision,
                "snapshot_at": self.snapshot_at.isoformat(),
                "finished_at": self.finished_at.isoformat(),
                "database": self.database,
                "counts": self.counts,
                "secrets": self.secrets,
                "not_included": self.not_included,
                "files": [f.to_dict() for f in self.files],
            },
            indent=1,
        )

    @classmethod
    def read(cls, backup: Path) -> Manifest:
        """The manifest of the backup folder ``backup``, checked field by field.

        Raises
        ------
        BackupError
            When it is missing (the backup did not finish), not JSON, of another format or
            version, or a field is missing or malformed (e.g. a path leaving the backup).
        """
        path = Path(backup) / MANIFEST
        if not Path(backup).is_dir():
            raise BackupError(f"{backup} is not a folder: no backup there")
        if not path.is_file():
            raise BackupError(
                f"{backup} has no {MANIFEST}: the backup is incomplete (it did not finish) or is not a RadPilot backup; it cannot be restored"
            )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BackupError(f"{path} is corrupt (not JSON: {exc}); the backup cannot be trusted") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BackupError(f"{path} is not a RadPilot backup manifest (format {raw.get('format') if isinstance(raw, dict) else None!r})")
        if raw.get("format_version") != FORMAT_VERSION:
            raise BackupError(f"{path} has format version {raw.get('format_version')!r}; this RadPilot reads version {FORMAT_VERSION}")
        try:
            files = [_backup_file(entry) for entry in raw["files"]]
            database = raw["database"]
            if database.get("kind") not in ("sqlite", "postgresql"):
                raise ValueError(f"unknown database kind {database.get('kind')!r}")
            _backup_file({**database, "kind": "database"})
            manifest = cls(
                radpilot_version=str(raw["radpilot_version"]),
                alembic_revision=str(raw["alembic_revision"]),
                snapshot_at=datetime.fromisoformat(raw["snapshot_at"]),
                finished_at=datetime.fromisoformat(raw["finished_at"]),
                database=dict(database),
                counts={k: int(v) for k, v in dict(raw["counts"]).items()},
                files=files,
                not_included=[str(x) for x in raw.get("not_included", [])],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BackupError(f"{path} is corrupt: {exc!r}; the backup cannot be trusted") from exc
        return manifest


def _backup_file(entry: Any) -> BackupFile:
    if not isinstance(entry, dict):
        raise ValueError(f"file entry {entry!r} is not an object")
    path = str(entry["path"])
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or "\\" in path:
        raise ValueError(f"file path {path!r} leaves the backup")
    size, digest = entry["size"], str(entry["sha256"])
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"size of {path} is {size!r}")
    if not _SHA256.match(digest):
        raise ValueError(f"sha256 of {path} is {digest!r}")
    return BackupFile(path, size, digest, str(entry.get("kind", "data")))


# -- backup ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Snapshot:
    snapshot_at: datetime
    database: dict[str, Any]
    revision: str
    instances: list[tuple[str, int, str]]  # (file_path under dicom/, file_size, content_sha256)
    counts: dict[str, int]


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def create_backup(settings: Settings, dest: Path, *, link: bool = False, progress: Progress | None = None) -> Manifest:
    """Take a consistent online backup of the node described by ``settings`` into the new folder ``dest``.

    ``link`` hard-links instance files instead of copying them when ``dest`` is on the
    data folder's file system (stored instances are never modified in place, so a link is
    a safe copy there); across file systems they are copied.

    Raises
    ------
    BackupError
        ``dest`` inside the data folder or not empty, no archive at the data folder, not enough
        space, a stored file missing or not matching the index, pg_dump failing. Whatever was
        written to ``dest`` is removed.
    """
    progress = progress or _no_progress
    data_dir = Path(settings.data_dir).resolve()
    dest = Path(dest).resolve()
    if _is_within(dest, data_dir):
        raise BackupError(f"backup destination {dest} is inside the data folder {data_dir}: a backup must live outside what it backs up")
    if not (data_dir / "dicom").is_dir():
        raise BackupError(f"no RadPilot archive at {data_dir} (no dicom/ folder): check --data-dir")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"backup destination {dest} is not an empty folder: a backup never overwrites another; choose a new folder")
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    if created:
        dest.chmod(0o700)  # patient data and keys: the backup folder is its owner's alone
    try:
        return _create_backup(settings, data_dir, dest, link, progress)
    except BackupError:
        _remove_partial(dest, created)
        raise
    except (OSError, sqlite3.Error, psycopg.Error) as exc:
        _remove_partial(dest, created)
        raise BackupError(f"backup into {dest} failed and was removed: {_describe(exc)}") from exc
    except BaseException:
        _remove_partial(dest, created)
        raise


def _describe(exc: BaseException) -> str:
    """An error in words, naming the file an OSError concerns (a full disk, a permission, ...)."""
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc} ({exc.filename})"
    return f"{type(exc).__name__}: {exc}"


def _remove_partial(dest: Path, created: bool) -> None:
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _create_backup(settings: Settings, data_dir: Path, dest: Path, link: bool, progress: Progress) -> Manifest:
    started = time.monotonic()
    (dest / "database").mkdir()
    url = settings.resolved_database_url
    progress("database snapshot", 0, 1)
    if _is_sqlite(url):
        snapshot = _snapshot_sqlite(_sqlite_path(url), dest / SQLITE_SNAPSHOT)
    else:
        snapshot = _snapshot_postgres(url, dest / PG_DUMP)
    progress("database snapshot", 1, 1)
    extras = list(_extra_files(data_dir, url))
    # Hard links take no room, but only on the same file system; elsewhere they fall back to copies.
    linked = link and os.stat(data_dir).st_dev == os.stat(dest).st_dev
    needed = sum(size for _, size, _ in snapshot.instances) * (0 if linked else 1) + sum(p.stat().st_size for p in extras)
    _check_space(dest, needed, "backup")

    files: list[BackupFile] = []
    total = len(snapshot.instances) + len(extras)
    for done, (relative, size, content_sha256) in enumerate(snapshot.instances, start=1):
        files.append(_back_up_instance(data_dir, dest, relative, size, content_sha256, link))
        progress("files", done, total)
    for done, path in enumerate(extras, start=len(snapshot.instances) + 1):
        relative = path.relative_to(data_dir).as_posix()
        size, digest = _copy_verified(path, dest / FILES_DIR / relative)
        files.append(BackupFile(relative, size, digest, _kind_of(relative)))
        progress("files", done, total)
    _fsync_tree(dest)
    manifest = Manifest(
        radpilot_version=__version__,
        alembic_revision=snapshot.revision,
        snapshot_at=snapshot.snapshot_at,
        finished_at=datetime.now(UTC),
        database=snapshot.database,
        counts={**snapshot.counts, "files": len(files), "bytes": sum(f.size for f in files)},
        files=files,
        not_included=_outside_files(settings, data_dir),
    )
    _write_atomically(dest / MANIFEST, manifest.to_json().encode("utf-8"))
    logger.info(
        "backup finished",
        extra={
            "dest": str(dest),
            "snapshot_at": manifest.snapshot_at.isoformat(),
            "instances": snapshot.counts["instances"],
            "files": len(files),
            "bytes": manifest.counts["bytes"],
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    return manifest


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_path(url: str) -> Path:
    database = url.split("///", 1)[-1]
    if not database or database == ":memory:":
        raise BackupError(f"database {url} is not a file: nothing to back up")
    return Path(database)


def _libpq(url: str) -> tuple[dict[str, str], dict[str, str]]:
    """Connection parameters of a PostgreSQL URL for libpq tools (without the password) and their environment."""
    url = re.sub(r"^postgresql\+\w+://", "postgresql://", url)
    params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    env = dict(os.environ)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = password
    return params, env


def _libpq_args(params: dict[str, str]) -> list[str]:
    args = []
    for key, flag in (("host", "--host"), ("port", "--port"), ("user", "--username")):
        if key in params:
            args.append(f"{flag}={params[key]}")
    return args


def _snapshot_sqlite(path: Path, target: Path) -> _Snapshot:
    if not path.is_file():
        raise BackupError(f"no database at {path}: check --data-dir / --database-url")
    # Not mode=ro: a read-only connection cannot open a WAL database whose -shm file is absent (node stopped).
    source = sqlite3.connect(path, timeout=30)
    try:
        target.touch(mode=0o600)
        destination = sqlite3.connect(target)
        try:
            # Everything committed before this moment is in the copy: the backup reads one consistent state.
            snapshot_at = datetime.now(UTC)
            source.backup(destination)  # all pages in one step: one read transaction, writers (WAL) go on
            destination.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            check = destination.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"the database snapshot of {path} fails SQLite's check: {check}")
            revision, instances, counts = _snapshot_rows(destination.execute)
        finally:
            destination.close()
    finally:
        source.close()
    size, digest = _digest_file(target)
    return _Snapshot(snapshot_at, {"kind": "sqlite", "path": SQLITE_SNAPSHOT, "size": size, "sha256": digest}, revision, instances, counts)


def _snapshot_rows(execute: Callable[[str], Any]) -> tuple[str, list[tuple[str, int, str]], dict[str, int]]:
    revision = execute("SELECT version_num FROM alembic_version").fetchone()[0]
    instances = [
        (str(p), int(s), str(h)) for p, s, h in execute("SELECT file_path, file_size, content_sha256 FROM instance ORDER BY file_path")
    ]
    counts = {
        "studies": int(execute("SELECT count(*) FROM study").fetchone()[0]),
        "series": int(execute("SELECT count(*) FROM series").fetchone()[0]),
        "instances": len(instances),
    }
    return str(revision), instances, counts


def _snapshot_postgres(url: str, target: Path) -> _Snapshot:
    params, env = _libpq(url)
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupError("pg_dump is not installed (Debian package postgresql-client): a PostgreSQL index cannot be backed up without it")
    conninfo = re.sub(r"^postgresql\+\w+://", "postgresql://", url)
    with psycopg.connect(conninfo) as connection:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.read_only = True
        snapshot_at = datetime.now(UTC)
        # pg_dump and the file list below read this same snapshot, so the dump and the files agree.
        snapshot_id = connection.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        command = [
            pg_dump,
            *_libpq_args(params),
            f"--snapshot={snapshot_id}",
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            f"--file={target}",
            params.get("dbname", ""),
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BackupError(f"pg_dump of database {params.get('dbname')} failed: {result.stderr.strip()}")
        revision, instances, counts = _snapshot_rows(connection.execute)
    size, digest = _digest_file(target)
    database = {"kind": "postgresql", "path": PG_DUMP, "size": size, "sha256": digest, "database": params.get("dbname", "")}
    return _Snapshot(snapshot_at, database, revision, instances, counts)


def _extra_files(data_dir: Path, url: str) -> Iterable[Path]:
    """Files of the data folder a restore needs besides the instances and the database: keys, validation runs, ..."""
    live_db = _sqlite_path(url).resolve() if _is_sqlite(url) else None
    for root, dirs, names in os.walk(data_dir):
        here = Path(root)
        if here == data_dir:
            dirs[:] = [d for d in dirs if d != "dicom"]  # instances come from the snapshot's list
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        for name in sorted(names):
            path = here / name
            if name.endswith(_SKIPPED_SUFFIXES) or not path.is_file() or path.is_symlink():
                continue
            if live_db is not None and path.resolve().name.startswith(live_db.name) and path.parent.resolve() == live_db.parent:
                continue  # the live database and its -wal/-shm/-journal: the snapshot replaces them
            yield path


def _kind_of(relative: str) -> str:
    name = PurePosixPath(relative).name.lower()
    return "secret" if name.endswith(_SECRET_SUFFIXES) or "secret" in name else "data"


def _outside_files(settings: Settings, data_dir: Path) -> list[str]:
    """Configured key and certificate files that lie outside the data folder: the backup does not hold them."""
    notes = []
    for name in (
        "pseudonym_secret_file",
        "deid_key_file",
        "deid_mapping_file",
        "tls_cert_file",
        "tls_key_file",
        "tls_key_password_file",
        "tls_ca_file",
        "oidc_client_secret_file",
        "rules_file",
        "nodes_file",
    ):
        value = getattr(settings, name, None)
        if value is not None and not _is_within(Path(value).resolve(), data_dir):
            notes.append(f"{name}: {value} (outside the data folder: back it up separately)")
    return notes


def _back_up_instance(data_dir: Path, dest: Path, relative: str, size: int, content_sha256: str, link: bool) -> BackupFile:
    source = data_dir / "dicom" / relative
    target = dest / FILES_DIR / "dicom" / relative
    try:
        data = source.read_bytes()
    except FileNotFoundError as exc:
        raise BackupError(
            f"instance file dicom/{relative} is in the database snapshot but not on disk (deleted meanwhile, or lost): run the backup again"
        ) from exc
    if len(data) != size:
        raise BackupError(f"instance file dicom/{relative} holds {len(data)} bytes, the index says {size}: the stored file is damaged")
    try:
        offset = dataset_offset(data)
    except MalformedDicomError as exc:
        raise BackupError(f"instance file dicom/{relative} is no longer readable DICOM ({exc}): the stored file is damaged") from exc
    if hashlib.sha256(data[offset:]).hexdigest() != content_sha256:
        raise BackupError(f"instance file dicom/{relative} does not match the content hash in the index: the stored file is damaged")
    target.parent.mkdir(parents=True, exist_ok=True)
    linked = False
    if link:
        try:
            os.link(source, target)
            linked = True
        except OSError as exc:
            logger.info("hard link not possible, copying", extra={"file": relative, "error": str(exc)})
    if not linked:
        with open(target, "xb") as out:
            out.write(data)
            out.flush()
    return BackupFile(f"dicom/{relative}", size, hashlib.sha256(data).hexdigest(), "instance")


def _copy_verified(source: Path, target: Path) -> tuple[int, str]:
    """Copy ``source`` to the new file ``target``; the size and sha256 of the bytes read, checked against the copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    # Created owner-only, then given the source's mode: a key file never lies readable by others, even briefly.
    with open(source, "rb") as src, os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        os.chmod(out.fileno(), stat.S_IMODE(os.fstat(src.fileno()).st_mode))
        while chunk := src.read(CHUNK):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    copied_size, copied_digest = _digest_file(target)
    if (copied_size, copied_digest) != (size, digest.hexdigest()):
        raise BackupError(f"the copy of {source} differs from what was read: the disk under {target.parent} is failing")
    return size, digest.hexdigest()


def _digest_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _check_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed + SPACE_MARGIN_BYTES > free:
        raise BackupError(
            f"not enough space in {folder} for the {what}: it needs {_mb(needed)} MB (+{_mb(SPACE_MARGIN_BYTES)} MB margin), {_mb(free)} MB are free"
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def _fsync_tree(folder: Path) -> None:
    """Sync every file and folder under ``folder`` before the manifest declares the backup complete.

    Several at once: a sync waits on the disk, not the CPU, and the file system commits concurrent ones together.
    """
    paths: list[Path] = []
    for root, _dirs, names in os.walk(folder):
        paths.extend(Path(root) / name for name in names)
        paths.append(Path(root))
    with ThreadPoolExecutor(max_workers=SYNC_THREADS, thread_name_prefix="backup-sync") as pool:
        list(pool.map(_fsync_path, paths))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    _fsync_path(folder)


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    _fsync_dir(path.parent)


# -- verify and restore ----------------------------------------------------------------------------


def verify_backup(backup: Path, *, progress: Progress | None = None) -> Manifest:
    """Check a backup without restoring it: the manifest, the database file and every file's size and sha256.

    Raises
    ------
    BackupError
        Naming the first missing or altered file, or what is wrong with the manifest.
    """
    progress = progress or _no_progress
    backup = Path(backup)
    manifest = Manifest.read(backup)
    entries = [_database_entry(manifest), *manifest.files]
    for done, entry in enumerate(entries, start=1):
        _check_file(backup, entry)
        progress("verifying", done, len(entries))
    return manifest


def _database_entry(manifest: Manifest) -> BackupFile:
    db = manifest.database
    return BackupFile(str(db["path"]), int(db["size"]), str(db["sha256"]), "database")


def _stored_path(backup: Path, entry: BackupFile) -> Path:
    return backup / entry.path if entry.kind == "database" else backup / FILES_DIR / entry.path


def _check_file(backup: Path, entry: BackupFile) -> None:
    path = _stored_path(backup, entry)
    if not path.is_file():
        raise BackupError(f"{entry.path} is listed in the manifest but missing from the backup {backup}")
    size, digest = _digest_file(path)
    _compare(entry, size, digest)


def _compare(entry: BackupFile, size: int, digest: str) -> None:
    if size != entry.size:
        raise BackupError(f"{entry.path} is altered: {size} bytes in the backup, {entry.size} in the manifest")
    if digest != entry.sha256:
        raise BackupError(f"{entry.path} is altered: its sha256 differs from the manifest's")


@dataclass(frozen=True)
class RestoreReport:
    """What :func:`restore_backup` put where."""

    data_dir: Path
    database_url: str
    manifest: Manifest
    revision_before: str
    revision_after: str
    set_aside: Path | None  # the target's former content, with --force


def _node_running(data_dir: Path) -> int | None:
    """The pid of a RadPilot server that has ``data_dir`` open, if one is alive."""
    marker = data_dir / "dicom" / ".open"
    try:
        pid = int(marker.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def restore_backup(
    backup: Path, data_dir: Path, *, database_url: str | None = None, force: bool = False, progress: Progress | None = None
) -> tuple[RestoreReport, Engine]:
    """Restore ``backup`` into the data folder ``data_dir`` (new or empty; with ``force``, its content is set aside).

    A SQLite backup becomes ``data_dir/index.sqlite3``; a PostgreSQL backup is restored into the
    empty database ``database_url``. Returns the report and an engine on the restored database
    (for the caller's audit record); the caller disposes of it.

    Raises
    ------
    BackupError
        Incomplete or corrupt backup, a file missing or altered (named), a target that is not
        empty or is a running node's, not enough space, a backup from a newer RadPilot. Nothing
        restored is left behind.
    """
    progress = progress or _no_progress
    backup = Path(backup).resolve()
    manifest = Manifest.read(backup)
    data_dir = Path(data_dir).resolve()
    if _is_within(data_dir, backup) or _is_within(backup, data_dir):
        raise BackupError(f"restore target {data_dir} and backup {backup} overlap: restore into a folder of its own")
    running = _node_running(data_dir)
    if running is not None:
        raise BackupError(
            f"{data_dir} is the data folder of a running RadPilot (pid {running}): stop it first; a restore never overwrites a live node"
        )
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())) and not force:
        raise BackupError(
            f"restore target {data_dir} is not empty: restore into a new or empty folder, or give --force to set its content aside"
        )
    kind = manifest.database["kind"]
    target_url = _target_database(kind, database_url, data_dir)
    head = _known_revision(manifest.alembic_revision)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    _check_space(data_dir.parent, sum(f.size for f in manifest.files) + int(manifest.database["size"]), "restore")

    staging = data_dir.parent / f".{data_dir.name}.restoring-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    engine: Engine | None = None
    postgres_touched = False
    try:
        entries = [_database_entry(manifest), *manifest.files]
        for done, entry in enumerate(entries, start=1):
            source = _stored_path(backup, entry)
            if not source.is_file():
                raise BackupError(f"{entry.path} is listed in the manifest but missing from the backup {backup}")
            target = staging / (entry.path if entry.kind != "database" else f".restore-{PurePosixPath(entry.path).name}")
            size, digest = _copy_verified(source, target)
            _compare(entry, size, digest)
            progress("restoring files", done, len(entries))
        (staging / "dicom").mkdir(exist_ok=True)
        database_copy = staging / f".restore-{PurePosixPath(str(manifest.database['path'])).name}"
        if kind == "sqlite":
            os.replace(database_copy, staging / "index.sqlite3")
            engine = make_engine(f"sqlite:///{staging / 'index.sqlite3'}")
        else:
            postgres_touched = True
            _pg_restore(database_copy, target_url)
            database_copy.unlink()
            engine = make_engine(target_url)
        progress("database", 0, 1)
        migrate(engine)
        revision_after = _revision(engine)
        _check_restored_index(engine, manifest)
        progress("database", 1, 1)
        if kind == "sqlite":
            engine.dispose()  # the last connection checkpoints the WAL before the file moves
        _fsync_tree(staging)
        set_aside = _move_into_place(staging, data_dir)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if engine is not None:
            engine.dispose()
        if postgres_touched:
            _empty_postgres(target_url)
        if isinstance(exc, (OSError, sqlite3.Error, SQLAlchemyError, psycopg.Error)):
            raise BackupError(f"restore into {data_dir} failed and was removed: {_describe(exc)}") from exc
        raise
    if kind == "sqlite":
        target_url = f"sqlite:///{data_dir / 'index.sqlite3'}"
        engine = make_engine(target_url)
    assert engine is not None
    logger.info(
        "restore finished",
        extra={
            "backup": str(backup),
            "data_dir": str(data_dir),
            "instances": manifest.counts.get("instances"),
            "revision": f"{manifest.alembic_revision} -> {revision_after} (head {head})",
        },
    )
    report = RestoreReport(data_dir, _redacted(target_url), manifest, manifest.alembic_revision, revision_after, set_aside)
    return report, engine


def _redacted(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _target_database(kind: str, database_url: str | None, data_dir: Path) -> str:
    if kind == "sqlite":
        if database_url is not None and not _is_sqlite(database_url):
            raise BackupError("this backup holds a SQLite database: restore it without --database-url (into the data folder)")
        if database_url is not None and _sqlite_path(database_url).resolve() != (data_dir / "index.sqlite3"):
            raise BackupError(f"a SQLite backup is restored into {data_dir / 'index.sqlite3'}; leave out --database-url")
        return f"sqlite:///{data_dir / 'index.sqlite3'}"
    if database_url is None or _is_sqlite(database_url):
        raise BackupError("this backup holds a PostgreSQL database: give --database-url postgresql://... of a new, empty database")
    conninfo = re.sub(r"^postgresql\+\w+://", "postgresql://", database_url)
    try:
        with psycopg.connect(conninfo) as connection:
            tables = connection.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]  # type: ignore[index]
    except psycopg.Error as exc:
        raise BackupError(f"cannot connect to the target database {_redacted(database_url)}: {exc}") from exc
    if tables:
        raise BackupError(f"target database {_redacted(database_url)} is not empty ({tables} tables): restore into a new, empty database")
    if shutil.which("pg_restore") is None:
        raise BackupError("pg_restore is not installed (Debian package postgresql-client)")
    return database_url


def _known_revision(revision: str) -> str:
    script = ScriptDirectory.from_config(alembic_config(None))  # type: ignore[arg-type]
    head = script.get_current_head() or ""
    try:
        known = script.get_revision(revision)
    except Exception as exc:  # noqa: BLE001 - alembic raises several kinds for an unknown revision
        known = None
        logger.debug("unknown revision", extra={"revision": revision, "error": str(exc)})
    if known is None:
        raise BackupError(
            f"the backup's database is at schema revision {revision!r}, which this RadPilot ({__version__}, head {head}) does not know: "
            "restore it with the RadPilot version that made it, or a newer one"
        )
    return head


def _revision(engine: Engine) -> str:
    with engine.connect() as connection:
        return str(connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one())


def _check_restored_index(engine: Engine, manifest: Manifest) -> None:
    in_backup = {f.path for f in manifest.files if f.kind == "instance"}
    with engine.connect() as connection:
        paths = [f"dicom/{p}" for p in connection.scalars(select(Instance.file_path))]
        studies = connection.scalar(select(func.count(Study.id))) or 0
        series = connection.scalar(select(func.count(Series.id))) or 0
    missing = [p for p in paths if p not in in_backup]
    if missing:
        raise BackupError(
            f"the restored index names {len(missing)} file(s) the backup lacks, e.g. {missing[0]}: the backup is inconsistent"
        )
    expected = (manifest.counts.get("instances"), manifest.counts.get("series"), manifest.counts.get("studies"))
    if (len(paths), series, studies) != expected:
        raise BackupError(
            f"the restored index holds {len(paths)} instances, {series} series, {studies} studies; the manifest says {expected}"
        )


def _pg_restore(dump: Path, url: str) -> None:
    params, env = _libpq(url)
    command = [
        shutil.which("pg_restore") or "pg_restore",
        *_libpq_args(params),
        f"--dbname={params.get('dbname', '')}",
        "--single-transaction",
        "--exit-on-error",
        "--no-owner",
        "--no-privileges",
        str(dump),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"pg_restore into {params.get('dbname')} failed: {result.stderr.strip()}")


def _empty_postgres(url: str) -> None:
    """Drop what a failed restore created in the target database (it was checked empty before)."""
    conninfo = re.sub(r"^postgresql\+\w+://", "postgresql://", url)
    try:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            for (table,) in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall():
                connection.execute(f'DROP TABLE IF EXISTS public."{table}" CASCADE')
    except psycopg.Error as exc:
        logger.error("could not empty the target database after a failed restore", extra={"database": _redacted(url), "error": str(exc)})


def _move_into_place(staging: Path, data_dir: Path) -> Path | None:
    set_aside = None
    if data_dir.exists():
        if data_dir.is_dir() and not any(data_dir.iterdir()):
            data_dir.rmdir()
        else:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            set_aside = data_dir.with_name(f"{data_dir.name}.replaced-{stamp}")
            os.replace(data_dir, set_aside)
    os.replace(staging, data_dir)
    _fsync_dir(data_dir.parent)
    return set_aside
