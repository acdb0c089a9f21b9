"""``radpilot audit``: verify the hash-chained audit trail, export it, forward it to syslog over TLS."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from radpilot.config import Settings

console = Console(stderr=True)
audit_app = typer.Typer(help="The audit trail: verify, export, forward.", no_args_is_help=True)

DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="Archive folder [env RADPILOT_DATA_DIR]")]
DatabaseOption = Annotated[str | None, typer.Option("--database-url", help="SQLAlchemy URL [env RADPILOT_DATABASE_URL]")]


def _engine(data_dir: Path | None, database_url: str | None):  # noqa: ANN202 - (Settings, Engine)
    from radpilot.db import make_engine, migrate

    try:
        settings = Settings(**{k: v for k, v in {"data_dir": data_dir, "database_url": database_url}.items() if v is not None})
    except ValueError as exc:
        console.print(f"[red]invalid settings:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    return settings, engine


@audit_app.command("verify")
def verify(data_dir: DataDirOption = None, database_url: DatabaseOption = None) -> None:
    """Recompute the hash chain; exit 1 naming every edited, inserted or deleted record."""
    from radpilot.security.audit import verify_chain

    _, engine = _engine(data_dir, database_url)
    report = verify_chain(engine)
    for problem in report.problems:
        console.print(f"[red]{escape(problem)}[/red]", soft_wrap=True)
    typer.echo(json.dumps({"checked": report.checked, "ok": report.ok, "problems": len(report.problems)}))
    if not report.ok:
        raise typer.Exit(1)


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"--since {value!r} is not an ISO date or date-time (e.g. 2026-12-01 or 2026-12-01T08:00)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@audit_app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", help="Folder for audit.jsonl and audit.xml")],
    since: Annotated[str | None, typer.Option("--since", help="ISO date or date-time (UTC when no zone)")] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Write the events since a time as JSON lines and as DICOM audit messages (PS3.15 A.5), one per line of audit.xml."""
    from radpilot.security.atna import audit_xml
    from radpilot.security.audit import events_since

    settings, engine = _engine(data_dir, database_url)
    rows = events_since(engine, _since(since))
    out.mkdir(parents=True, exist_ok=True)
    with (out / "audit.jsonl").open("w", encoding="utf-8") as jsonl, (out / "audit.xml").open("w", encoding="utf-8") as xml:
        for row in rows:
            jsonl.write(json.dumps(row.to_dict(), sort_keys=True, default=str) + "\n")
            xml.write(audit_xml(row, settings.audit_source_id) + "\n")
    typer.echo(json.dumps({"events": len(rows), "jsonl": str(out / "audit.jsonl"), "xml": str(out / "audit.xml")}))


@audit_app.command("forward")
def forward(data_dir: DataDirOption = None, database_url: DatabaseOption = None) -> None:
    """Send the events not yet forwarded to the syslog collector (RADPILOT_AUDIT_SYSLOG_HOST, TLS)."""
    from radpilot.security.syslog_forward import SyslogTlsForwarder, forward_pending

    settings, engine = _engine(data_dir, database_url)
    if not settings.audit_syslog_host or settings.audit_syslog_ca_file is None:
        console.print("[red]set RADPILOT_AUDIT_SYSLOG_HOST and RADPILOT_AUDIT_SYSLOG_CA_FILE to forward the audit trail[/red]")
        raise typer.Exit(2)
    forwarder = SyslogTlsForwarder(
        settings.audit_syslog_host,
        settings.audit_syslog_port,
        settings.audit_syslog_ca_file,
        settings.audit_syslog_cert_file,
        settings.audit_syslog_key_file,
    )
    try:
        sent = forward_pending(engine, forwarder, settings.audit_source_id)
    except OSError as exc:
        console.print(f"[red]syslog collector {forwarder.host}:{forwarder.port} not reached: {escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    typer.echo(json.dumps({"forwarded": sent}))
