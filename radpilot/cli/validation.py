"""Command line of the validation workbench: ``datasets``, ``validate`` and ``models``.

Register in RadPilot's CLI with::

    from radpilot.cli.validation import datasets_app, models_app, validate_app
    app.add_typer(datasets_app, name="datasets")
    app.add_typer(validate_app, name="validate")
    app.add_typer(models_app, name="models")

or run standalone: ``python -m radpilot.cli.validation validate lung_ct_quant --dataset ct-lung-slices``.

Exit status: 0 done; 1 a check failed (dataset changed, gate not met, activation refused);
2 a usage error (unknown dataset, analysis or run, bad option).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from radpilot.config import Settings

# Tables stay readable when the output is a file or a pipe (rich would assume 80 columns).
console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)
out = Console() if sys.stdout.isatty() else Console(width=160)

DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="RadPilot data folder [env RADPILOT_DATA_DIR]")]
DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="Database URL, default SQLite in the data dir [env RADPILOT_DATABASE_URL]")
]
DataRootOption = Annotated[Path | None, typer.Option("--data-root", help="Shared reference data root [env RADPILOT_SHARED_DATA]")]
ModelsDirOption = Annotated[
    Path | None,
    typer.Option("--models-dir", envvar="RADPILOT_MODELS_DIR", help="Model manifests folder (default: models/ of the installation)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")]


def _settings(data_dir: Path | None, database_url: str | None) -> Settings:
    given = {k: v for k, v in {"data_dir": data_dir, "database_url": database_url}.items() if v is not None}
    try:
        return Settings(**given)
    except ValueError as exc:
        console.print(f"[red]invalid settings:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc


def _registry(settings: Settings, data_root: Path | None):  # noqa: ANN202
    from radpilot.validation.datasets import DatasetRegistry

    return DatasetRegistry(settings.data_dir, shared_root=data_root)


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]{escape(message)}[/red]", soft_wrap=True)
    return typer.Exit(code)


def _echo_json(value: Any) -> None:
    from radpilot.validation.store import json_safe

    typer.echo(json.dumps(json_safe(value), indent=2, allow_nan=False))


# ============================================================================ datasets
datasets_app = typer.Typer(help="Reference datasets: list, verify (content hash), register your own.", no_args_is_help=True)


@datasets_app.command("list")
def datasets_list(
    data_dir: DataDirOption = None, database_url: DatabaseOption = None, data_root: DataRootOption = None, json_output: JsonOption = False
) -> None:
    """List the reference datasets (shipped manifests and your own) and what they check."""
    from radpilot.validation.datasets import DatasetError

    registry = _registry(_settings(data_dir, database_url), data_root)
    try:
        manifests = registry.manifests()
    except DatasetError as exc:
        raise _fail(str(exc)) from exc
    rows = []
    for m in manifests:
        root = registry.root_of(m)
        rows.append(
            {
                "name": m.name,
                "version": m.version,
                "layout": m.layout,
                "analysis": m.analysis,
                "models": list(m.models),
                "outputs": list(m.outputs),
                "reference": m.reference_kind,
                "licence": m.licence,
                "origin": m.origin,
                "root": str(root),
                "present": root.is_dir(),
                "content_hash": m.content_hash,
                "title": m.title,
            }
        )
    if json_output:
        _echo_json(rows)
        return
    table = Table("name", "version", "layout", "checks", "reference", "licence", "origin", "folder")
    for r in rows:
        checks = ", ".join([x for x in [r["analysis"], *r["models"]] if x])
        table.add_row(
            r["name"],
            r["version"],
            r["layout"],
            checks,
            r["reference"],
            r["licence"][:48],
            r["origin"],
            ("" if r["present"] else "[red]missing[/red] ") + r["root"],
        )
    out.print(table)


@datasets_app.command("verify")
def datasets_verify(
    names: Annotated[list[str] | None, typer.Argument(help="Datasets to verify (default: all)")] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    data_root: DataRootOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check each dataset's folder, layout and content hash against its manifest (exit 1 if any differs)."""
    from radpilot.validation.datasets import DatasetError

    registry = _registry(_settings(data_dir, database_url), data_root)
    try:
        manifests = [registry.get(n) for n in names] if names else registry.manifests()
    except KeyError as exc:
        raise _fail(str(exc.args[0])) from exc
    except DatasetError as exc:
        raise _fail(str(exc)) from exc
    results = [registry.verify(m) for m in manifests]
    if json_output:
        _echo_json([r.to_dict() for r in results])
    else:
        table = Table("name", "status", "cases", "files", "content hash", "message")
        for r in results:
            colour = "green" if r.ok else "red"
            table.add_row(
                r.name,
                f"[{colour}]{r.status}[/{colour}]",
                str(r.n_cases or ""),
                str(r.file_count or ""),
                (r.actual_hash or "")[:23],
                escape(r.message),
            )
        out.print(table)
        for r in results:
            for line in r.details[:20]:
                console.print(f"  {r.name}: {escape(line)}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def _parse_options(items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _fail(f"--option expects KEY=VALUE (VALUE in YAML), got {item!r}")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise _fail(
                f"--option {key.strip()}: {value!r} is not valid YAML ({getattr(exc, 'problem', exc)}); "
                "quote a value that starts with { or [ but is text, e.g. \"series_dir='{case}/dicom'\""
            ) from exc
    return options


@datasets_app.command("add")
def datasets_add(
    path: Annotated[Path, typer.Argument(help="Your dataset folder")],
    name: Annotated[str, typer.Option("--name", help="Dataset name (lower case, digits, . _ -)")],
    layout: Annotated[str, typer.Option("--layout", help="png-slices, png-radiographs, dicom-series, volume-files or cine-volume-files")],
    analysis: Annotated[str | None, typer.Option("--analysis", help="The analysis it checks")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="A model it checks (repeatable)")] = None,
    version: Annotated[str, typer.Option("--version", help="Your version label of the dataset")] = "1",
    reference_kind: Annotated[str, typer.Option("--reference-kind", help="manual, automatic, phantom or other")] = "manual",
    reference: Annotated[str, typer.Option("--reference", help="What the reference annotations are, who made them")] = "",
    licence: Annotated[str, typer.Option("--licence", help="Licence of the data")] = "",
    terms: Annotated[str, typer.Option("--terms", help="Terms of use")] = "",
    citation: Annotated[list[str] | None, typer.Option("--citation", help="Citation (repeatable)")] = None,
    limitation: Annotated[list[str] | None, typer.Option("--limitation", help="A known limitation (repeatable)")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="Layout option KEY=VALUE (YAML value), repeatable")] = None,
    development_use: Annotated[
        list[str] | None,
        typer.Option(
            "--development-use", help="An analysis/model trained or tuned on this data (repeatable): its runs here are not independent"
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing registration")] = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    data_root: DataRootOption = None,
) -> None:
    """Register your own folder in one of the layouts: its content hash is pinned in the manifest written."""
    from radpilot.validation.datasets import DatasetError

    registry = _registry(_settings(data_dir, database_url), data_root)
    try:
        manifest = registry.add(
            path,
            name=name,
            layout=layout,
            analysis=analysis,
            models=model or [],
            version=version,
            reference_kind=reference_kind,
            reference_description=reference,
            licence=licence,
            terms=terms,
            citation=citation or [],
            limitations=limitation or [],
            options=_parse_options(option or []),
            development_use=development_use or [],
            overwrite=overwrite,
        )
    except (DatasetError, OSError) as exc:
        raise _fail(str(exc)) from exc
    console.print(f"registered {manifest.name}: {manifest.file_count} files, {manifest.content_hash} -> {manifest.source}")


@datasets_app.command("pin")
def datasets_pin(
    name: Annotated[str, typer.Argument(help="Dataset whose manifest gets the current content hash")],
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    data_root: DataRootOption = None,
) -> None:
    """Write the folder's current content hash into its manifest (after a deliberate change of the data)."""
    from radpilot.validation.datasets import pin_manifest

    registry = _registry(_settings(data_dir, database_url), data_root)
    try:
        manifest = registry.get(name)
    except KeyError as exc:
        raise _fail(str(exc.args[0])) from exc
    pinned = pin_manifest(manifest.source, registry.root_of(manifest))
    console.print(f"{name}: {manifest.content_hash} -> {pinned.content_hash} in {manifest.source}")


# ============================================================================ validate
class DefaultCommandGroup(TyperGroup):
    """``validate ANALYSIS ...`` runs the default command ``run``; ``validate compare``/``runs`` are subcommands."""

    default_command = "run"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


validate_app = typer.Typer(
    cls=DefaultCommandGroup,
    help="Validate an analysis or model on a reference dataset (`validate ANALYSIS --dataset NAME`), list and compare runs.",
    no_args_is_help=True,
)


def _print_outcome(result: dict[str, Any], report_path: Path | None) -> None:
    s, d, g = result["subject"], result["dataset"], result["gate_view"]
    console.print(
        f"[bold]{escape(s['name'])} {escape(s['version'])}[/bold] on [bold]{escape(d['name'])} {escape(d['version'])}[/bold] "
        f"(run {result.get('run_id')}): {g['n_evaluated']} of {g['n_cases']} cases, {g['n_included']} in the statistics, "
        f"{g['n_excluded']} excluded, {g['n_failed']} failed, {result['seconds']:.1f} s",
        soft_wrap=True,
    )
    console.print(f"code path: {escape(s['code_path'])}", soft_wrap=True)
    console.print(f"dataset hash: {d.get('content_hash')} ({'verified' if d.get('verified') else d.get('verification')})")
    table = Table("metric", "n", "mean", "95 % CI", "median", "min", "max")
    compared = tuple(result["summary"].get("agreement") or ())
    for name, summary in result["summary"]["per_metric"].items():
        if not summary.get("n") or name.startswith(("jaccard_", "abs_", "area_reference", "area_predicted", *compared)):
            continue
        ci = summary["mean_ci"]
        ci_text = "-" if ci["single_case"] or ci.get("too_few_cases") else f"{ci['lower']:.4f} - {ci['upper']:.4f}"
        table.add_row(
            name,
            str(summary["n"]),
            f"{summary['mean']:.4f}",
            ci_text,
            f"{summary['median']:.4f}",
            f"{summary['min']:.4f}",
            f"{summary['max']:.4f}",
        )
    out.print(table)
    for name, entry in (result["summary"].get("agreement") or {}).items():
        ba = entry.get("bland_altman") or {}
        if entry.get("n"):
            console.print(
                f"{name}: n {entry['n']}, MAE {entry.get('mae'):.4g}"
                + (f", bias {ba['bias']:.4g}, limits of agreement {ba['lower']:.4g} to {ba['upper']:.4g}" if ba else "")
            )
    for entry in (result["summary"].get("classification") or {}).values():
        if entry.get("auc") is not None:
            ci = entry["auc_ci"]
            console.print(
                f"{entry['label']}: AUC {entry['auc']:.3f} (95 % CI {ci['lower']:.3f}-{ci['upper']:.3f}), "
                f"sensitivity {entry['sensitivity']:.3f}, specificity {entry['specificity']:.3f} at {entry['operating_threshold']}"
            )
    for warning in result.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    if report_path is not None:
        console.print(f"report: {report_path}")
        console.print(f"json:   {report_path.parent / 'result.json'}")


@validate_app.command("run")
def validate_run(
    subject: Annotated[str, typer.Argument(help="Analysis name (e.g. lung_ct_quant) or model name (e.g. cxr_lung_heart_seg)")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Reference dataset (see `datasets list`)")],
    model_version: Annotated[str | None, typer.Option("--model-version", help="Model version to validate (default: newest)")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the first N cases (a partial run never counts for the gate)")
    ] = None,
    case: Annotated[list[str] | None, typer.Option("--case", help="Only this case id (repeatable; partial run)")] = None,
    allow_unverified: Annotated[
        bool, typer.Option("--allow-unverified", help="Run even if the dataset hash differs (never counts for the gate)")
    ] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also copy report.html and result.json into this folder")] = None,
    resamples: Annotated[int, typer.Option("--resamples", min=100, help="Bootstrap resamples")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed")] = 0,
    json_output: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    data_root: DataRootOption = None,
    models_dir: ModelsDirOption = None,
) -> None:
    """Run SUBJECT over every case of a dataset, store the results and write a self-contained HTML report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from radpilot.validation.datasets import DatasetError
    from radpilot.validation.runner import ValidationError, validate

    settings = _settings(data_dir, database_url)
    registry = _registry(settings, data_root)
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[case]}"),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"validating {subject} on {dataset}", total=None, case="")

        def on_progress(done: int, total: int, case_id: str) -> None:
            progress.update(task, completed=done, total=total, case=case_id)

        try:
            outcome, stored = validate(
                subject,
                dataset,
                settings=settings,
                model_version=model_version,
                models_dir=models_dir,
                registry=registry,
                limit=limit,
                case_ids=case,
                allow_unverified=allow_unverified,
                progress=on_progress,
                n_resamples=resamples,
                seed=seed,
            )
        except (ValidationError, DatasetError) as exc:
            progress.stop()
            raise _fail(str(exc)) from exc
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stored.report_path, output / "report.html")
        shutil.copyfile(stored.result_path, output / "result.json")
    if json_output:
        _echo_json({k: v for k, v in outcome.result.items() if k != "cases"} | {"report_path": str(stored.report_path)})
    else:
        _print_outcome(outcome.result, stored.report_path)


@validate_app.command("runs")
def validate_runs(
    subject: Annotated[str | None, typer.Argument(help="Only runs of this analysis or model")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Only this version")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Only this dataset")] = None,
    json_output: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """List stored validation runs, newest first (the `status` of validations per analysis and model version)."""
    from radpilot.validation.store import ValidationStore

    store = ValidationStore.open(_settings(data_dir, database_url))
    runs = store.runs(subject, version, dataset)
    if json_output:
        _echo_json([r.to_dict() for r in runs])
        return
    table = Table("run", "date", "subject", "version", "dataset", "cases", "counts for gate", "primary metrics")
    for r in runs:
        reasons = r.ineligible_reasons()
        counts = "[green]yes[/green]" if r.eligible else "[yellow]" + escape("; ".join(reasons)) + "[/yellow]"
        dice = {k: v for k, v in (r.metrics or {}).items() if k.startswith("dice_") and k.endswith("_mean")}
        table.add_row(
            str(r.id),
            r.created_at.strftime("%Y-%m-%d %H:%M") if r.created_at else "",
            r.subject,
            r.version,
            r.dataset,
            f"{r.n_evaluated}/{r.n_cases}",
            counts,
            ", ".join(f"{k} {v:.4f}" for k, v in list(dice.items())[:3]),
        )
    out.print(table)
    if not runs:
        console.print("no stored validation runs" + (f" of {subject}" if subject else ""))


@validate_app.command("compare")
def validate_compare(
    a: Annotated[str, typer.Argument(help="Run A: a run id, SUBJECT@VERSION or SUBJECT@VERSION:DATASET (newest)")],
    b: Annotated[str, typer.Argument(help="Run B, as A")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write comparison.html and comparison.json here")] = None,
    json_output: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Compare two stored validation runs side by side (e.g. two model versions on the same dataset)."""
    from radpilot.validation.report import compare_results, render_comparison
    from radpilot.validation.store import ValidationStore

    settings = _settings(data_dir, database_url)
    store = ValidationStore.open(settings)
    try:
        run_a, run_b = store.resolve(a), store.resolve(b)
        doc_a, doc_b = store.load_result(run_a), store.load_result(run_b)
    except (KeyError, FileNotFoundError) as exc:
        raise _fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc)) from exc
    comparison = compare_results(doc_a, doc_b)
    folder = output or (Path(settings.data_dir) / "validation" / "comparisons" / f"{run_a.id:06d}-vs-{run_b.id:06d}")
    folder.mkdir(parents=True, exist_ok=True)
    from radpilot.validation.store import json_safe

    (folder / "comparison.json").write_text(json.dumps(json_safe(comparison), indent=1, allow_nan=False))
    (folder / "comparison.html").write_text(render_comparison(comparison, doc_a, doc_b), encoding="utf-8")
    if json_output:
        _echo_json(comparison)
        return
    table = Table(
        "metric",
        f"A (run {run_a.id}: {run_a.subject} {run_a.version}, {run_a.dataset})",
        f"B (run {run_b.id}: {run_b.subject} {run_b.version}, {run_b.dataset})",
        "B - A",
    )
    for row in comparison["metrics"]:
        if row["metric"].endswith(("_mean", "_ci95_lower", "_mae", "_auc", "failure_rate")):
            table.add_row(row["metric"], *(f"{v:.4f}" if isinstance(v, float) else "" for v in (row["a"], row["b"], row["difference"])))
    out.print(table)
    for metric, p in comparison["paired"].items():
        if metric.startswith("_"):
            console.print(f"[yellow]warning:[/yellow] {p}")
        elif metric.startswith("dice_") and not p["single_case"]:
            console.print(
                f"paired {metric} (B - A) over {p['n']} shared cases: {p['mean_difference']:+.4f} "
                f"(95 % CI {p['ci_lower']:+.4f} to {p['ci_upper']:+.4f})"
            )
    console.print(f"comparison: {folder / 'comparison.html'}")


# ============================================================================ models
models_app = typer.Typer(help="Models and analyses: acceptance gate, activation (audited), list.", no_args_is_help=True)


def _subjects(models_dir: Path | None) -> list[tuple[str, str, str]]:
    """(kind, name, version) of every model manifest and installed analysis."""
    from radpilot.analyses import discover_analyses, model_registry

    analyses = discover_analyses()
    items = [("model", m.name, m.version) for m in model_registry(analyses, models_dir).manifests()]
    items += [("analysis", name, str(a.version)) for name, a in sorted(analyses.items())]
    return items


def _decision_table(decision: Any) -> Table:
    table = Table("criterion", "value", "result", "run", title=escape(f"{decision.kind} {decision.subject} {decision.version}"))
    for r in decision.results:
        table.add_row(
            escape(r.criterion.text),
            "" if r.value is None else f"{r.value:.4f}",
            "[green]met[/green]" if r.met else "[red]NOT MET[/red]" + (f" - {escape(r.reason)}" if r.reason else ""),
            str(r.run_id or ""),
        )
    return table


@models_app.command("list")
def models_list(
    models_dir: ModelsDirOption = None, data_dir: DataDirOption = None, database_url: DatabaseOption = None, json_output: JsonOption = False
) -> None:
    """Every model and analysis with its version, whether it passes its gate and which version is active."""
    from radpilot.validation.gate import check_activation
    from radpilot.validation.store import ValidationStore

    store = ValidationStore.open(_settings(data_dir, database_url))
    rows = []
    for kind, name, version in _subjects(models_dir):
        decision = check_activation(store, name, version, models_dir=models_dir)
        active = store.active(name)
        rows.append(
            {
                "kind": kind,
                "name": name,
                "version": version,
                "gate_passed": decision.passed,
                "active_version": active.version if active else None,
                "override": bool(active and active.override),
                "message": decision.message,
            }
        )
    if json_output:
        _echo_json(rows)
        return
    table = Table("kind", "name", "version", "gate", "active")
    for r in rows:
        gate = "[green]passes[/green]" if r["gate_passed"] else "[red]fails[/red]"
        active = (r["active_version"] or "-") + (" (override)" if r["override"] else "")
        table.add_row(r["kind"], r["name"], r["version"], gate, active)
    out.print(table)


@models_app.command("check")
def models_check(
    name: Annotated[str | None, typer.Argument(help="Model or analysis (default: all)")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Version (default: the newest / installed one)")] = None,
    models_dir: ModelsDirOption = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check stored validations against the acceptance criteria; exit 1 when any is missing or not met."""
    from radpilot.validation.gate import check_activation
    from radpilot.validation.store import ValidationStore

    store = ValidationStore.open(_settings(data_dir, database_url))
    if name is None and version is not None:
        raise _fail("--version needs a NAME")
    targets = [(name, version)] if name else [(n, v) for _, n, v in _subjects(models_dir)]
    decisions = [check_activation(store, n, v, models_dir=models_dir) for n, v in targets]
    if json_output:
        _echo_json([d.to_dict() for d in decisions])
    else:
        for d in decisions:
            if d.results:
                out.print(_decision_table(d))
            colour = "green" if d.passed else "red"
            console.print(f"[{colour}]{escape(d.message)}[/{colour}]", soft_wrap=True)
            for note in d.notes:
                console.print(f"[yellow]note:[/yellow] {escape(note)}", soft_wrap=True)
    if any(d.kind == "unknown" for d in decisions):
        raise typer.Exit(2)
    if not all(d.passed for d in decisions):
        raise typer.Exit(1)


@models_app.command("activate")
def models_activate(
    name: Annotated[str, typer.Argument(help="Model (or analysis) to activate")],
    version: Annotated[str, typer.Option("--version", help="Version to activate")],
    override: Annotated[
        bool, typer.Option("--override", help="Administrator override of a failing gate (needs --reason; audited)")
    ] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why (required with --override)")] = "",
    user: Annotated[str | None, typer.Option("--user", help="Who activates (default: the operating-system user)")] = None,
    models_dir: ModelsDirOption = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Make VERSION the active version if it passes its gate; refused otherwise unless --override --reason."""
    from radpilot.security.audit import current_user
    from radpilot.validation.gate import GateRefused, activate

    if override and not reason.strip():
        raise _fail("--override needs --reason TEXT: an override is audited with its reason")
    settings = _settings(data_dir, database_url)
    who = user or current_user()
    try:
        result = activate(settings, name, version, user=who, override=override, reason=reason, models_dir=models_dir)
    except GateRefused as exc:
        out.print(_decision_table(exc.decision))
        console.print(f"[red]activation refused:[/red] {escape(exc.decision.message)}", soft_wrap=True)
        console.print("an administrator may override with --override --reason TEXT (audited)")
        raise typer.Exit(1) from exc
    except KeyError as exc:
        raise _fail(str(exc.args[0])) from exc
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    how = "gate passed" if result.decision.passed else f"[yellow]OVERRIDE of a failing gate[/yellow] ({escape(result.decision.message)})"
    console.print(f"{name} {version} is active: {how}; by {escape(who)}; audit event {result.audit_event_id}", soft_wrap=True)
    if result.deactivated:
        console.print(f"deactivated: {', '.join(result.deactivated)}")


@models_app.command("deactivate")
def models_deactivate(
    name: Annotated[str, typer.Argument(help="Model (or analysis)")],
    reason: Annotated[str, typer.Option("--reason", help="Why")] = "",
    user: Annotated[str | None, typer.Option("--user", help="Who (default: the operating-system user)")] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Deactivate the active version (audited)."""
    from radpilot.security.audit import current_user
    from radpilot.validation.gate import deactivate

    versions = deactivate(_settings(data_dir, database_url), name, user=user or current_user(), reason=reason)
    console.print(f"deactivated: {', '.join(versions)}" if versions else f"{name} had no active version")


@models_app.command("history")
def models_history(
    name: Annotated[str | None, typer.Argument(help="Model (or analysis); default all")] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    json_output: JsonOption = False,
) -> None:
    """Activations, overrides and refusals from the audit trail, newest first."""
    from radpilot.security.audit import events
    from radpilot.validation.store import ValidationStore

    store = ValidationStore.open(_settings(data_dir, database_url))
    rows = [e for e in events(store.engine, action_prefix="model.", limit=500) if name is None or e.target.split("@")[0] == name]
    if json_output:
        _echo_json([e.to_dict() for e in rows])
        return
    table = Table("id", "when", "who", "action", "target", "reason")
    for e in rows:
        table.add_row(
            str(e.id), e.at.strftime("%Y-%m-%d %H:%M:%S") if e.at else "", escape(e.who), e.action, escape(e.target), escape(e.reason)
        )
    out.print(table)


# ============================================================================ standalone
app = typer.Typer(help="RadPilot validation workbench (datasets, validate, models).", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(validate_app, name="validate")
app.add_typer(models_app, name="models")


if __name__ == "__main__":
    app()
