"""Report commands: ``radpilot report export STUDY_UID --format sr|fhir|hl7|pdf``, ``radpilot report templates``.

They read the archive database directly, so they need no running server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from radpilot.config import Settings

report_app = typer.Typer(help="Radiology reports: export a signed report, list the templates in force.", no_args_is_help=True)
errors = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Archive folder [env RADPILOT_DATA_DIR]")]
DatabaseUrl = Annotated[str | None, typer.Option("--database-url", help="[env RADPILOT_DATABASE_URL]")]
TemplatesDir = Annotated[
    Path | None, typer.Option("--templates-dir", help="Department report templates [env RADPILOT_REPORT_TEMPLATES_DIR]")
]


def _settings(**overrides: object) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        errors.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def _service(settings: Settings):  # noqa: ANN202 - ReportService, imported when the command runs
    from radpilot.archive import Archive
    from radpilot.reports.service import ReportService
    from radpilot.reports.templates import TemplateError

    try:
        return ReportService(settings, Archive.from_settings(settings))
    except TemplateError as exc:
        errors.print(f"[red]report templates:[/red] {exc}")
        raise typer.Exit(2) from exc


@report_app.command("export")
def export(
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID of the signed report")],
    fmt: Annotated[str, typer.Option("--format", help="sr (DICOM), fhir (JSON Bundle), hl7 (ORU^R01), pdf")] = "pdf",
    out: Annotated[Path | None, typer.Option("--out", help="File to write (default: standard output)")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    templates_dir: TemplatesDir = None,
) -> None:
    """Write the study's signed report in one output format."""
    from radpilot.reports.outputs import OutputError
    from radpilot.reports.store import ReportError

    settings = _settings(data_dir=data_dir, database_url=database_url, report_templates_dir=templates_dir)
    service = _service(settings)
    try:
        data = service.export(study_uid, fmt)
    except (OutputError, ReportError) as exc:
        errors.print(f"[red]cannot export:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        service.archive.close()
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    out.write_bytes(data)
    errors.print(f"wrote {len(data)} bytes to {out}")


@report_app.command("templates")
def templates(templates_dir: TemplatesDir = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The report templates in force, with fields no installed analysis declares yet."""
    from radpilot.analyses import discover_analyses
    from radpilot.reports.templates import TemplateError, TemplateLibrary

    settings = _settings(report_templates_dir=templates_dir)
    try:
        library = TemplateLibrary(discover_analyses(), settings.report_templates_dir)
    except TemplateError as exc:
        errors.print(f"[red]report templates:[/red] {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        print(json.dumps([t.to_json() for t in library.templates.values()], indent=2))
        return
    for template in library.templates.values():
        fields = ", ".join(f.output for f in template.fields)
        inactive = f" (not declared by any installed analysis: {', '.join(template.inactive_outputs)})" if template.inactive_outputs else ""
        print(f"{template.name}: {template.title} [{'/'.join(template.modalities)}] fields: {fields}{inactive}  <- {template.source}")
