"""``radpilot backup``, ``radpilot restore`` and ``radpilot verify-backup``: online backups of a node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID

from radpilot.cli.progress import progress_bar
from radpilot.config import Settings

console = Console(stderr=True)

DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="Archive folder [env RADPILOT_DATA_DIR]")]
DatabaseOption = Annotated[str | None, typer.Option("--database-url", help="SQLAlchemy URL [env RADPILOT_DATABASE_URL]")]


class _Bar:
    """A rich progress bar with one task per phase, fed by the backup module's (phase, done, total) callback."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        task = self.tasks.get(phase)
        if task is None:
            task = self.tasks[phase] = self.progress.add_task(phase, total=total)
        self.progress.update(task, completed=done, total=total)


def _settings(data_dir: Path | None, database_url: str | None) -> Settings:
    try:
        return Settings(**{k: v for k, v in {"data_dir": data_dir, "database_url": database_url}.items() if v is not None})
    except ValueError as exc:
        console.print(f"[red]invalid settings:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc


def _audit(engine, *, action: str, target: str, outcome: str, reason: str = "", details: dict | None = None) -> None:  # noqa: ANN001 - Engine
    from radpilot.security.audit import current_user, record

    try:
        record(
            engine, who=current_user(), action=action, target=target, reason=reason, details=details or {}, outcome=outcome, source="cli"
        )
    except Exception as exc:  # noqa: BLE001 - the backup itself stands; say that its audit row is missing
        console.print(f"[yellow]the audit record of {action} could not be written:[/yellow] {escape(str(exc))}")


def backup(
    dest: Annotated[Path, typer.Argument(help="New (or empty) folder for the backup, outside the data folder")],
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    link: Annotated[bool, typer.Option("--link", help="Hard-link instance files instead of copying them (same file system only)")] = False,
) -> None:
    """Take a consistent backup of a node while it runs: a database snapshot, then every file it names, then the manifest."""
    from radpilot.archive.backup import BackupError, create_backup
    from radpilot.db import make_engine
    from radpilot.logging_setup import configure_logging

    settings = _settings(data_dir, database_url)
    configure_logging("WARNING")
    source_engine = make_engine(settings.resolved_database_url) if (Path(settings.data_dir) / "dicom").is_dir() else None
    try:
        with progress_bar(console) as progress:
            manifest = create_backup(settings, dest, link=link, progress=_Bar(progress))
    except BackupError as exc:
        console.print(f"[red]backup failed:[/red] {escape(str(exc))}", soft_wrap=True)
        if source_engine is not None:
            _audit(source_engine, action="backup.create", target=str(dest), outcome="failure", reason=str(exc))
            source_engine.dispose()
        raise typer.Exit(1) from exc
    summary = {
        "dest": str(Path(dest).resolve()),
        "snapshot_at": manifest.snapshot_at.isoformat(),
        "alembic_revision": manifest.alembic_revision,
        **manifest.counts,
        "secrets": manifest.secrets,
        "not_included": manifest.not_included,
    }
    assert source_engine is not None
    _audit(source_engine, action="backup.create", target=str(Path(dest).resolve()), outcome="success", details=summary)
    source_engine.dispose()
    typer.echo(json.dumps(summary))


def restore(
    src: Annotated[Path, typer.Argument(help="A finished backup folder (with manifest.json)")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="New or empty data folder to restore into")],
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="PostgreSQL backups: URL of a new, empty database to restore into")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Restore into a non-empty folder; its content is set aside, not deleted")] = False,
) -> None:
    """Restore a backup into a new data folder, checking every file against the manifest; the schema is brought up to date."""
    from radpilot.archive.backup import BackupError, restore_backup
    from radpilot.logging_setup import configure_logging

    configure_logging("WARNING")
    try:
        with progress_bar(console) as progress:
            report, engine = restore_backup(src, data_dir, database_url=database_url, force=force, progress=_Bar(progress))
    except BackupError as exc:
        console.print(f"[red]restore refused:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    summary = {
        "data_dir": str(report.data_dir),
        "database": report.database_url,
        "snapshot_at": report.manifest.snapshot_at.isoformat(),
        "revision": {"backup": report.revision_before, "now": report.revision_after},
        **report.manifest.counts,
        "set_aside": str(report.set_aside) if report.set_aside else None,
        "not_included": report.manifest.not_included,
    }
    _audit(engine, action="backup.restore", target=str(Path(src).resolve()), outcome="success", details=summary)
    engine.dispose()
    typer.echo(json.dumps(summary))


def verify_backup(src: Annotated[Path, typer.Argument(help="A backup folder")]) -> None:
    """Check a backup without restoring it: its manifest and every file's size and sha256."""
    from radpilot.archive.backup import BackupError
    from radpilot.archive.backup import verify_backup as verify

    try:
        with progress_bar(console) as progress:
            manifest = verify(src, progress=_Bar(progress))
    except BackupError as exc:
        console.print(f"[red]backup not intact:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps({"ok": True, "snapshot_at": manifest.snapshot_at.isoformat(), **manifest.counts}))
