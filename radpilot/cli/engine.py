"""Engine commands: ``radpilot analyze``, ``radpilot route``, ``radpilot jobs``.

They work on the archive database directly, so they need no running server:
a job submitted here is picked up by the workers of ``radpilot serve`` (or by
``radpilot worker`` with the Celery backend).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from radpilot.config import Settings

console = Console()
errors = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Archive folder [env RADPILOT_DATA_DIR]")]
DatabaseUrl = Annotated[str | None, typer.Option("--database-url", help="[env RADPILOT_DATABASE_URL]")]
RulesFile = Annotated[Path | None, typer.Option("--rules-file", help="Routing rules YAML [env RADPILOT_RULES_FILE]")]


def _settings(**overrides: object) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        errors.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def _context(settings: Settings):  # noqa: ANN202
    from radpilot.analyses import discover_analyses
    from radpilot.archive import Archive
    from radpilot.engine.routing import RulesError, load_rules

    analyses = discover_analyses()
    try:
        rules = load_rules(settings.rules_file, analyses)
    except RulesError as exc:
        errors.print(f"[red]rules file rejected:[/red] {exc}")
        raise typer.Exit(2) from exc
    return Archive.from_settings(settings), rules, analyses


def _print_plans(plans, dry_run: bool) -> None:  # noqa: ANN001
    for plan in plans:
        console.print(f"[bold]series {plan.series_instance_uid}[/bold]")
        if plan.decision is None:
            console.print(f"  skipped: {plan.skipped_reason}")
            continue
        for explanation in plan.decision.explanations:
            mark = "[green]matched[/green]" if explanation.matched else "[yellow]no match[/yellow]"
            console.print(f"  rule {explanation.rule}: {mark}")
            for ok, reason in explanation.reasons:
                console.print(f"    {'✓' if ok else '✗'} {reason}")
        if not plan.decision.matched:
            console.print("  → no analysis (no rule matches this series; recorded, not an error)")
        for analysis, rule in plan.decision.analyses:
            where = ", ".join(rule.destinations) or "RadPilot's archive only"
            console.print(f"  → {analysis} (rule {rule.name}, results to {where})")
        for job_id, created in plan.jobs:
            console.print(f"  job {job_id} {'queued' if created else 'already exists (same inputs and version)'}")


def route(
    study_uid: Annotated[str, typer.Argument(help="StudyInstanceUID")],
    dry_run: Annotated[bool, typer.Option("--dry-run/--submit", help="Only explain (default) or also queue the jobs")] = True,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    rules_file: RulesFile = None,
) -> None:
    """Explain which rule matched which series of a study and why the others did not."""
    settings = _settings(data_dir=data_dir, database_url=database_url, rules_file=rules_file)
    archive, rules, analyses = _context(settings)
    if not archive.instances_of(study_uid):
        errors.print(f"[red]study {study_uid} is not in the archive[/red]")
        raise typer.Exit(1)
    from radpilot.engine.pipeline import plan_study
    from radpilot.engine.service import make_queue

    queue = None if dry_run else make_queue(settings)
    _print_plans(plan_study(archive, rules, analyses, study_uid, queue), dry_run)


def analyze(
    study_uid: Annotated[str, typer.Argument(help="StudyInstanceUID")],
    priority: Annotated[str, typer.Option(help="stat or routine")] = "routine",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    rules_file: RulesFile = None,
) -> None:
    """Route a study now (without waiting for the quiet period) and queue its analyses."""
    from radpilot.engine.jobs import Priority
    from radpilot.engine.pipeline import plan_study
    from radpilot.engine.service import make_queue

    settings = _settings(data_dir=data_dir, database_url=database_url, rules_file=rules_file)
    try:
        chosen = Priority.parse(priority)
    except ValueError as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    archive, rules, analyses = _context(settings)
    if not archive.instances_of(study_uid):
        errors.print(f"[red]study {study_uid} is not in the archive[/red]")
        raise typer.Exit(1)
    plans = plan_study(archive, rules, analyses, study_uid, make_queue(settings), priority_override=chosen)
    _print_plans(plans, dry_run=False)


def jobs(
    state: Annotated[str | None, typer.Option(help="queued, running, done, failed or cancelled")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List jobs with their state, timing and, for failures, the reason in plain words."""
    from radpilot.engine.job_store import JobStore
    from radpilot.engine.jobs import JobState
    from radpilot.web.engine_api import job_json

    settings = _settings(data_dir=data_dir, database_url=database_url)
    if state is not None and state not in {s.value for s in JobState}:
        errors.print(f"[red]unknown state {state!r}; use one of {[s.value for s in JobState]}[/red]")
        raise typer.Exit(2)
    store = JobStore.from_url(settings.resolved_database_url, migrate=True)
    rows = [job_json(job) for job in store.list(state=state, limit=limit)]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("id", "analysis", "state", "priority", "series", "attempts", "duration (s)", "error")
    for row in rows:
        table.add_row(
            str(row["id"]),
            f"{row['analysis']} {row['version']}",
            row["state"],
            row["priority"],
            row["series_instance_uid"][-16:],
            str(row["attempts"]),
            "" if row["duration_s"] is None else f"{row['duration_s']:.1f}",
            row["error"] or "",
        )
    console.print(table)


def analyses(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """The installed analyses and what each declares: inputs, outputs, structures, models and its folder."""
    from radpilot.analyses import discover_analyses

    rows = [
        {
            "name": name,
            "version": a.version,
            "description": a.description,
            "inputs": {"modalities": list(a.inputs.modalities), "summary": a.inputs.summary} if a.inputs else None,
            "outputs": [{"name": o.name, "label": o.label, "unit": o.unit, "key": o.key} for o in a.outputs],
            "structures": [{"name": s.name, "codes": list(s.codes)} for s in a.structures],
            "models": list(a.required_models),
            "default_routing": a.routing_file().is_file(),
            "acceptance_criteria": a.acceptance_file().is_file(),
            "folder": str(a.folder()),
        }
        for name, a in sorted(discover_analyses().items())
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("analysis", "version", "inputs", "outputs", "models", "folder")
    for row in rows:
        inputs = ", ".join(row["inputs"]["modalities"]) if row["inputs"] else "-"
        table.add_row(
            row["name"],
            row["version"],
            inputs,
            ", ".join(o["name"] for o in row["outputs"]) or "-",
            ", ".join(row["models"]) or "-",
            row["folder"],
        )
    console.print(table)


def rules(rules_file: RulesFile = None) -> None:
    """Print the routing rules in force: the site's rules file, or the analyses' default rules as one file to start from."""
    from radpilot.analyses import discover_analyses
    from radpilot.engine.routing import RulesError, default_rules_text, load_rules

    settings = _settings(rules_file=rules_file)
    found = discover_analyses()
    try:
        load_rules(settings.rules_file, found)
    except RulesError as exc:
        errors.print(f"[red]rules file rejected:[/red] {exc}")
        raise typer.Exit(2) from exc
    text = settings.rules_file.read_text() if settings.rules_file else default_rules_text(found)
    typer.echo(text, nl=False)
