"""RadPilot's command line (Typer): the top layer, which may call every package below it.

``radpilot.cli.engine`` holds the engine's commands (analyze, route, jobs, analyses, rules)
and ``radpilot.cli.validation`` the workbench's (datasets, validate, models).

Each command imports the layer it drives when it runs (the one place where imports inside
functions are the rule, so ruff's PLC0415 is waived for this package in pyproject.toml):
``radpilot --help`` and a quick ``radpilot jobs`` do not load the web server, pynetdicom,
matplotlib or the analyses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from radpilot.cli import audit as audit_commands
from radpilot.cli import backup as backup_commands
from radpilot.cli import deid as deid_commands
from radpilot.cli import dictation as dictation_commands
from radpilot.cli import engine as engine_commands
from radpilot.cli import report as report_commands
from radpilot.cli import security as security_commands
from radpilot.cli import validation as validation_commands
from radpilot.cli.progress import progress_bar
from radpilot.config import Settings
from radpilot.logging_setup import configure_logging

app = typer.Typer(help="RadPilot: AI reading support beside your PACS.", no_args_is_help=True)
console = Console(stderr=True)

DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="Archive folder [env RADPILOT_DATA_DIR]")]
DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="SQLAlchemy URL, default SQLite in the data dir [env RADPILOT_DATABASE_URL]")
]
NodesFileOption = Annotated[
    Path | None, typer.Option("--nodes-file", help="YAML with remote nodes and allowed peers [env RADPILOT_NODES_FILE]")
]


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with command-line options that were given taking precedence."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValueError as exc:
        console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def serve(
    data_dir: DataDirOption = None,
    ae_title: Annotated[str | None, typer.Option("--ae-title", help="Our AE title [env RADPILOT_AE_TITLE]")] = None,
    dicom_port: Annotated[int | None, typer.Option("--dicom-port", help="DICOM port [env RADPILOT_DICOM_PORT]")] = None,
    http_port: Annotated[int | None, typer.Option("--http-port", help="Web port [env RADPILOT_HTTP_PORT]")] = None,
    bind_address: Annotated[str | None, typer.Option("--bind", help="Listen address [env RADPILOT_BIND_ADDRESS]")] = None,
    database_url: DatabaseOption = None,
    nodes_file: NodesFileOption = None,
    rules_file: Annotated[Path | None, typer.Option("--rules-file", help="Routing rules YAML [env RADPILOT_RULES_FILE]")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Embedded analysis worker processes [env RADPILOT_WORKERS]")] = None,
    dicom_tls_port: Annotated[
        int | None, typer.Option("--dicom-tls-port", help="Second DICOM port, TLS only (BCP 195) [env RADPILOT_DICOM_TLS_PORT]")
    ] = None,
    dicom_store_port: Annotated[
        int | None,
        typer.Option(
            "--dicom-store-port", help="Second DICOM port, C-STORE/C-ECHO on dcmtk's network layer [env RADPILOT_DICOM_STORE_PORT]"
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate for DICOM TLS and HTTPS [env RADPILOT_TLS_CERT_FILE]")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM key of that certificate [env RADPILOT_TLS_KEY_FILE]")] = None,
    tls_ca: Annotated[Path | None, typer.Option("--tls-ca", help="CA bundle for client certificates [env RADPILOT_TLS_CA_FILE]")] = None,
    tls_require_client_cert: Annotated[
        bool | None,
        typer.Option("--tls-require-client-cert/--no-tls-require-client-cert", help="Mutual TLS [env RADPILOT_TLS_REQUIRE_CLIENT_CERT]"),
    ] = None,
) -> None:
    """Start the DICOM listener, the web server and the analysis engine (SQLite and a local data folder by default)."""
    settings = load_settings(
        dicom_tls_port=dicom_tls_port,
        dicom_store_port=dicom_store_port,
        tls_cert_file=tls_cert,
        tls_key_file=tls_key,
        tls_ca_file=tls_ca,
        tls_require_client_cert=tls_require_client_cert,
        rules_file=rules_file,
        workers=workers,
        data_dir=data_dir,
        ae_title=ae_title,
        dicom_port=dicom_port,
        http_port=http_port,
        bind_address=bind_address,
        database_url=database_url,
        nodes_file=nodes_file,
    )
    configure_logging(settings.log_level)
    from radpilot.server import RadPilotServer

    try:
        server = RadPilotServer(settings)
    except Exception as exc:  # noqa: BLE001 - report any start-up failure in words, then exit
        console.print(f"[red]cannot start:[/red] {exc}")
        raise typer.Exit(1) from exc
    if settings.create_first_users:
        show_first_users(server.archive.engine)
    server.run_until_signalled()


def show_first_users(engine) -> None:  # noqa: ANN001 - sqlalchemy Engine
    """Create an administrator and a radiologist on a node without users; their one-time passwords go to the terminal only."""
    from radpilot.security.users import create_first_users

    created = create_first_users(engine)
    if not created:
        return
    lines = "\n".join(f"  {name:<12} ({role.value}): {password}" for name, role, password in created)
    console.print(
        "[bold]First start: RadPilot created these users with one-time passwords (shown only now).[/bold]\n"
        f"{escape(lines)}\n"
        "Sign in at /ui/login; each must choose a new password at first sign-in. Add others with `radpilot users add`."
    )


def iter_files(paths: list[Path]) -> list[Path]:
    """Files named, and files under folders named (recursively, hidden files skipped), sorted."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")))
        elif path.is_file():
            files.append(path)
        else:
            console.print(f"[red]no such file or folder:[/red] {path}")
            raise typer.Exit(2)
    return files


@app.command("import")
def import_files(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders (searched recursively)")],
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Store local DICOM files straight into the archive (no network), e.g. a sample study."""
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    configure_logging("WARNING")
    from radpilot.archive import Archive, StoreOutcome

    archive = Archive.from_settings(settings)
    files = iter_files(paths)
    counts: dict[StoreOutcome, int] = {}
    with progress_bar(console) as progress:
        task = progress.add_task("importing", total=len(files))
        for path in files:
            result = archive.store_file_bytes(path.read_bytes(), source_ae_title="IMPORT")
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
            if not result.outcome.accepted:
                console.print(f"[yellow]{path}[/yellow]: {result.outcome.value}: {result.message}")
            progress.advance(task)
    archive.close()
    summary = ", ".join(f"{n} {o.value}" for o, n in counts.items()) or "nothing to import"
    console.print(summary)
    if counts.get(StoreOutcome.MALFORMED) or counts.get(StoreOutcome.FAILED) or counts.get(StoreOutcome.CONFLICT):
        raise typer.Exit(1)


# -- DICOM network commands (echo, send, find, pull, nodes) ------------------------------------

NodeArgument = Annotated[str, typer.Argument(help="Remote node: its name or AE title (see `radpilot nodes`)")]
AeTitleOption = Annotated[str | None, typer.Option("--ae-title", help="Our AE title [env RADPILOT_AE_TITLE]")]
DicomPortOption = Annotated[
    int | None, typer.Option("--dicom-port", help="Our DICOM port, where pulled instances arrive [env RADPILOT_DICOM_PORT]")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]

FIND_RETURN_KEYS: dict[str, tuple[str, ...]] = {
    "PATIENT": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "NumberOfPatientRelatedStudies"),
    "STUDY": (
        "PatientName",
        "PatientID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyDescription",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "StudyInstanceUID",
    ),
    "SERIES": (
        "PatientID",
        "StudyInstanceUID",
        "SeriesNumber",
        "Modality",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
        "SeriesInstanceUID",
    ),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "InstanceNumber", "SOPClassUID", "SOPInstanceUID"),
}


def resolve_node_or_exit(settings: Settings, name: str):  # noqa: ANN201 - RemoteNode
    """The configured node called ``name`` (name or AE title); exit 2 with the known nodes listed if none."""
    try:
        return settings.node(name)
    except KeyError as exc:
        console.print(f"[red]{escape(str(exc.args[0]))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from exc


def _node_text(node) -> str:  # noqa: ANN001 - RemoteNode
    return escape(f"{node.name} ({node.ae_title}@{node.host}:{node.port})")


def _network_error_exit(exc: Exception) -> typer.Exit:
    console.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
    return typer.Exit(1)


@app.command("nodes")
def list_nodes(
    nodes_file: NodesFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the configured remote DICOM nodes (from --nodes-file or RADPILOT_NODES)."""
    settings = load_settings(nodes_file=nodes_file)
    if json_output:
        typer.echo(json.dumps([n.model_dump() for n in settings.nodes], indent=2))
        return
    if not settings.nodes:
        console.print("no DICOM nodes configured: give --nodes-file nodes.yaml or set RADPILOT_NODES")
        return
    from rich.table import Table

    table = Table("name", "AE title", "host", "port", "DICOMweb")
    for node in settings.nodes:
        table.add_row(node.name, node.ae_title, node.host, str(node.port), node.dicomweb_url or "")
    Console().print(table)
    if settings.allowed_peers is not None:
        peers = ", ".join(f"{p.ae_title}@{p.host}" if p.host else p.ae_title for p in settings.allowed_peers)
        console.print(f"allowed calling AE titles: {peers or 'none'}")


@app.command()
def echo(node: NodeArgument, nodes_file: NodesFileOption = None, ae_title: AeTitleOption = None) -> None:
    """Check that a remote node answers (C-ECHO)."""
    settings = load_settings(nodes_file=nodes_file, ae_title=ae_title)
    configure_logging("WARNING")
    remote = resolve_node_or_exit(settings, node)
    from radpilot.pacs import scu

    started = time.monotonic()
    try:
        status = scu.echo(settings, remote)
    except scu.DicomNetworkError as exc:
        raise _network_error_exit(exc) from exc
    elapsed_ms = (time.monotonic() - started) * 1000
    if status != 0:
        console.print(f"[red]C-ECHO to {_node_text(remote)} answered 0x{status:04X}[/red]", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"C-ECHO to {_node_text(remote)}: success in {elapsed_ms:.0f} ms", soft_wrap=True)


@app.command()
def send(
    node: NodeArgument,
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders (searched recursively)")],
    nodes_file: NodesFileOption = None,
    ae_title: AeTitleOption = None,
) -> None:
    """Send DICOM files to a remote node (C-STORE), as they are stored: no re-encoding."""
    settings = load_settings(nodes_file=nodes_file, ae_title=ae_title)
    configure_logging("WARNING")
    remote = resolve_node_or_exit(settings, node)
    from radpilot.pacs import scu

    files = iter_files(paths)
    with progress_bar(console) as progress:
        task = progress.add_task(f"sending to {remote.name}", total=len(files))

        def on_result(result: scu.FileResult) -> None:
            if result.outcome == "failed":
                progress.console.print(f"[red]{escape(str(result.path))}[/red]: {escape(result.message)}", soft_wrap=True)
            elif result.outcome == "skipped":
                progress.console.print(f"[yellow]{escape(str(result.path))}[/yellow]: skipped, {escape(result.message)}", soft_wrap=True)
            progress.advance(task)

        try:
            report = scu.send(settings, remote, files, progress_callback=on_result)
        except scu.DicomNetworkError as exc:
            raise _network_error_exit(exc) from exc
    rate = report.sent / report.seconds if report.seconds > 0 else 0.0
    console.print(
        f"{report.sent} sent, {report.failed} failed, {report.skipped} skipped (not DICOM) "
        f"to {remote.name} in {report.seconds:.1f} s ({rate:.0f} instances/s)",
        soft_wrap=True,
    )
    if report.failed:
        raise typer.Exit(1)


def _find_keys(level: str, options: dict[str, str | None], extra: list[str]) -> dict[str, str]:
    keys = {keyword: "" for keyword in FIND_RETURN_KEYS[level]}
    for keyword, value in options.items():
        if value is not None:
            keys[keyword] = value
    for item in extra:
        keyword, sep, value = item.partition("=")
        if not sep or not keyword.strip():
            console.print(f"[red]--key expects KEYWORD=VALUE, got {item!r}[/red]")
            raise typer.Exit(2)
        keys[keyword.strip()] = value
    return keys


def _json_value(element) -> object:  # noqa: ANN001 - pydicom DataElement
    value = element.value
    if value is None:
        return ""
    if element.VR == "SQ":
        return [] if not value else f"{len(value)} items"
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]
    from pydicom.datadict import dictionary_VM

    if element.keyword and dictionary_VM(element.tag) not in ("1", ""):
        return [str(value)] if str(value) else []  # multi-valued attribute: always a list in JSON
    if isinstance(value, (int, float)):
        return value
    return str(value)


@app.command()
def find(
    node: NodeArgument,
    level: Annotated[str, typer.Option("--level", help="patient, study, series or image")] = "study",
    patient_id: Annotated[str | None, typer.Option("--patient-id", help="PatientID (wildcards * ?)")] = None,
    patient_name: Annotated[str | None, typer.Option("--patient-name", help="PatientName, e.g. 'DOE*'")] = None,
    study_date: Annotated[str | None, typer.Option("--study-date", help="YYYYMMDD or a range, e.g. 20200101-20201231")] = None,
    modality: Annotated[str | None, typer.Option("--modality", help="Modality (ModalitiesInStudy at study level)")] = None,
    accession: Annotated[str | None, typer.Option("--accession", help="AccessionNumber")] = None,
    study_uid: Annotated[str | None, typer.Option("--study-uid", help="StudyInstanceUID (a\\b for a list)")] = None,
    series_uid: Annotated[str | None, typer.Option("--series-uid", help="SeriesInstanceUID")] = None,
    key: Annotated[list[str] | None, typer.Option("--key", "-k", help="Any other key, KEYWORD=VALUE (empty VALUE: return it)")] = None,
    json_output: JsonOption = False,
    nodes_file: NodesFileOption = None,
    ae_title: AeTitleOption = None,
) -> None:
    """Query a remote node (C-FIND, Study Root) and print the matches."""
    settings = load_settings(nodes_file=nodes_file, ae_title=ae_title)
    configure_logging("WARNING")
    remote = resolve_node_or_exit(settings, node)
    level_name = level.strip().upper()
    if level_name == "INSTANCE":
        level_name = "IMAGE"
    if level_name not in FIND_RETURN_KEYS:
        console.print(f"[red]unknown level {level!r}; expected patient, study, series or image[/red]")
        raise typer.Exit(2)
    modality_key = "ModalitiesInStudy" if level_name in ("PATIENT", "STUDY") else "Modality"
    options = {
        "PatientID": patient_id,
        "PatientName": patient_name,
        "StudyDate": study_date,
        modality_key: modality,
        "AccessionNumber": accession,
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": series_uid,
    }
    keys = _find_keys(level_name, options, key or [])
    from radpilot.pacs import scu

    try:
        matches = scu.find(settings, remote, level_name, keys)
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from exc
    except scu.DicomNetworkError as exc:
        raise _network_error_exit(exc) from exc
    rows = [{keyword: _json_value(match[keyword]) for keyword in keys if keyword in match} for match in matches]
    if json_output:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    from rich.table import Column, Table

    table = Table(*(Column(k, overflow="fold") for k in keys))
    for row in rows:
        table.add_row(*(", ".join(v) if isinstance(v, list) else str(v) for v in (row.get(k, "") for k in keys)))
    Console().print(table)
    console.print(f"{len(rows)} match(es) on {remote.name}")


@app.command()
def pull(
    node: NodeArgument,
    study_uid: Annotated[str, typer.Argument(help="StudyInstanceUID to retrieve")],
    series: Annotated[str | None, typer.Option("--series", help="Only this SeriesInstanceUID")] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    nodes_file: NodesFileOption = None,
    ae_title: AeTitleOption = None,
    dicom_port: DicomPortOption = None,
) -> None:
    """Retrieve a study (or one series) from a remote node into RadPilot's archive (C-MOVE to our AE title).

    The node must know our AE title, host and DICOM port. When `radpilot serve`
    is not running, a listener is started on the DICOM port for the transfer.
    """
    settings = load_settings(data_dir=data_dir, database_url=database_url, nodes_file=nodes_file, ae_title=ae_title, dicom_port=dicom_port)
    configure_logging("WARNING")
    remote = resolve_node_or_exit(settings, node)
    from radpilot.pacs import scu

    try:
        with console.status(f"pulling {study_uid} from {remote.name}"):
            report = scu.pull(settings, remote, study_uid, series)
    except (scu.DicomNetworkError, ValueError, OSError) as exc:
        raise _network_error_exit(exc) from exc
    received = f", {report.received} stored here" if report.received is not None else ""
    console.print(
        f"C-MOVE from {remote.name}: status 0x{report.status:04X}, {report.completed} completed, "
        f"{report.failed} failed, {report.warning} warning{received}",
        soft_wrap=True,
    )
    for uid in report.failed_sop_instance_uids:
        console.print(f"[red]failed:[/red] {uid}", soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def worker(
    broker_url: Annotated[str, typer.Option("--broker-url", envvar="RADPILOT_BROKER_URL", help="Redis broker, e.g. redis://queue:6379/0")],
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Jobs run at once here (a process each)")] = 1,
    name: Annotated[str | None, typer.Option("--name", help="Celery node name, e.g. gpu1@%h")] = None,
    runner: Annotated[
        str, typer.Option("--runner", envvar="RADPILOT_JOB_RUNNER", help="Job runner factory, 'module:attribute'")
    ] = "radpilot.engine.pipeline:make_runner",
    lease_seconds: Annotated[float, typer.Option("--lease-seconds", help="A silent worker's job is re-queued after this")] = 30.0,
    visibility_timeout: Annotated[
        float, typer.Option("--visibility-timeout", help="Seconds before Redis redelivers a dead worker's message")
    ] = 3600.0,
    retry_base_seconds: Annotated[float, typer.Option("--retry-base-seconds", help="First retry delay (doubles)")] = 2.0,
    retry_max_seconds: Annotated[float, typer.Option("--retry-max-seconds", help="Longest retry delay")] = 300.0,
) -> None:
    """Run analysis jobs from a Redis broker (Celery); start one on every GPU machine."""
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    configure_logging(settings.log_level)
    import os

    # The runner factory reads its settings from the environment in each pool process:
    # hand it the archive named on this command line.
    os.environ["RADPILOT_DATA_DIR"] = str(settings.data_dir)
    os.environ["RADPILOT_DATABASE_URL"] = settings.resolved_database_url
    from radpilot.db import make_engine, migrate
    from radpilot.engine.jobs import RetryPolicy
    from radpilot.engine.queue_celery import make_celery_app, run_worker
    from radpilot.engine.worker import WorkerConfig, load_object

    try:
        load_object(runner)  # fail now, in words, rather than on every job
        config = WorkerConfig(lease_s=lease_seconds, retry=RetryPolicy(base_s=retry_base_seconds, cap_s=retry_max_seconds))
        celery_app = make_celery_app(
            broker_url, settings.resolved_database_url, runner_factory=runner, config=config, visibility_timeout_s=visibility_timeout
        )
        engine = make_engine(settings.resolved_database_url)
        migrate(engine)
        engine.dispose()
    except (ImportError, ValueError) as exc:
        console.print(f"[red]cannot start the worker:[/red] {exc}")
        raise typer.Exit(2) from exc
    run_worker(celery_app, concurrency=concurrency, node_name=name, loglevel=settings.log_level)


app.command("analyze")(engine_commands.analyze)
app.command("route")(engine_commands.route)
app.command("jobs")(engine_commands.jobs)
app.command("analyses")(engine_commands.analyses)
app.command("rules")(engine_commands.rules)
app.add_typer(audit_commands.audit_app, name="audit")
app.command("deid")(deid_commands.deid)
app.command("deid-keygen")(deid_commands.deid_keygen)
app.command("research-export")(deid_commands.research_export)
app.command("dictate")(dictation_commands.dictate)
app.add_typer(validation_commands.datasets_app, name="datasets")
app.add_typer(validation_commands.validate_app, name="validate")
app.add_typer(validation_commands.models_app, name="models")
app.add_typer(security_commands.users_app, name="users")
app.add_typer(security_commands.tokens_app, name="tokens")
app.add_typer(report_commands.report_app, name="report")
app.command("backup")(backup_commands.backup)
app.command("restore")(backup_commands.restore)
app.command("verify-backup")(backup_commands.verify_backup)


if __name__ == "__main__":
    app()
