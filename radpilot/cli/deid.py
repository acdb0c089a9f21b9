"""``radpilot deid``: PS3.15 Annex E de-identification of files and folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

from radpilot.config import Settings

console = Console(stderr=True)


def _parse_region(text: str) -> tuple[int, int, int, int]:
    try:
        r0, c0, r1, c1 = (int(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"mask region {text!r} must be four integers: first row,first column,last row,last column") from None
    return r0, c0, r1, c1


def _safe_private(path: Path):  # noqa: ANN202 - tuple[SafePrivate, ...]
    from radpilot.dicom.deid import SafePrivate

    try:
        content = yaml.safe_load(path.read_text()) or []
        return tuple(SafePrivate(int(str(e["group"]), 16), str(e["creator"]), int(str(e["element"]), 16)) for e in content)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise typer.BadParameter(
            f"safe private list {path}: {exc}; expected a YAML list of {{group: '0019', creator: 'NAME', element: '10'}}"
        ) from None


def deid(
    inputs: Annotated[list[Path], typer.Argument(help="Input files or folders, then the output folder (last)", metavar="IN... OUT")],
    profile: Annotated[str, typer.Option("--profile", help="Confidentiality profile (PS3.15 E.1-1)")] = "basic",
    retain_longitudinal_dates: Annotated[
        bool,
        typer.Option("--retain-longitudinal-dates", help="Retain Longitudinal Temporal Information, Modified Dates (shifted per patient)"),
    ] = False,
    retain_full_dates: Annotated[
        bool, typer.Option("--retain-full-dates", help="Retain Longitudinal Temporal Information, Full Dates")
    ] = False,
    retain_uids: Annotated[bool, typer.Option("--retain-uids", help="Retain UIDs Option")] = False,
    retain_patient_characteristics: Annotated[bool, typer.Option("--retain-patient-characteristics")] = False,
    retain_device_identity: Annotated[bool, typer.Option("--retain-device-identity")] = False,
    retain_institution_identity: Annotated[bool, typer.Option("--retain-institution-identity")] = False,
    clean_descriptors: Annotated[bool, typer.Option("--clean-descriptors")] = False,
    clean_structured_content: Annotated[bool, typer.Option("--clean-structured-content")] = False,
    clean_graphics: Annotated[bool, typer.Option("--clean-graphics")] = False,
    safe_private: Annotated[
        Path | None, typer.Option("--retain-safe-private", help="Retain Safe Private Option with this YAML safe list")
    ] = None,
    burned_in: Annotated[str, typer.Option("--burned-in", help="refuse (default) or mask images that may show burned-in text")] = "refuse",
    mask_region: Annotated[list[str] | None, typer.Option("--mask-region", help="row0,col0,row1,col1 to blank (repeatable)")] = None,
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="Fernet key file [env RADPILOT_DEID_KEY_FILE, or RADPILOT_DEID_KEY]")
    ] = None,
    mapping_file: Annotated[
        Path | None, typer.Option("--mapping", help="Encrypted re-identification mapping [env RADPILOT_DEID_MAPPING_FILE]")
    ] = None,
) -> None:
    """De-identify DICOM files with the PS3.15 Basic Profile and the options given; print a JSON summary."""
    from radpilot.dicom.deid import DeidConfig, Deidentifier, DeidKey, MappingStore, Option, deidentify_files, load_table
    from radpilot.dicom.deid.mapping import DeidKeyError

    if profile != "basic":
        raise typer.BadParameter(f"unknown profile {profile!r}: only 'basic' (PS3.15 E.1-1 Basic Profile with its options)")
    if len(inputs) < 2:
        raise typer.BadParameter("give at least one input and the output folder")
    *sources, out_dir = inputs
    settings = Settings(**{k: v for k, v in {"deid_key_file": key_file, "deid_mapping_file": mapping_file}.items() if v is not None})
    chosen = {
        Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: retain_longitudinal_dates,
        Option.RETAIN_LONGITUDINAL_FULL_DATES: retain_full_dates,
        Option.RETAIN_UIDS: retain_uids,
        Option.RETAIN_PATIENT_CHARACTERISTICS: retain_patient_characteristics,
        Option.RETAIN_DEVICE_IDENTITY: retain_device_identity,
        Option.RETAIN_INSTITUTION_IDENTITY: retain_institution_identity,
        Option.CLEAN_DESCRIPTORS: clean_descriptors,
        Option.CLEAN_STRUCTURED_CONTENT: clean_structured_content,
        Option.CLEAN_GRAPHICS: clean_graphics,
        Option.RETAIN_SAFE_PRIVATE: safe_private is not None,
    }
    try:
        config = DeidConfig(
            options=frozenset(o for o, on in chosen.items() if on),
            burned_in=burned_in,  # type: ignore[arg-type]  # checked by DeidConfig
            mask_regions=tuple(_parse_region(r) for r in mask_region or []),
            safe_private=_safe_private(safe_private) if safe_private is not None else (),
        )
        key = DeidKey.from_settings(settings.deid_key_file)
        store = MappingStore(settings.resolved_deid_mapping_file, key)
        store.check_outside(out_dir)
        existing = store.load()  # fail now, before writing anything, if the key does not open it
    except (ValueError, DeidKeyError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    deidentifier = Deidentifier(key, config, load_table())
    try:
        report = deidentify_files(sources, out_dir, deidentifier)
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    existing.merge(deidentifier.mapping)
    store.save(existing)
    summary = {"table_edition": deidentifier.table.edition, "mapping": str(store.path), **report.to_json()}
    typer.echo(json.dumps(summary, indent=2))
    for path, reason in report.refused + report.failed:
        console.print(f"[yellow]not written:[/yellow] {path}: {reason}")
    if report.refused or report.failed:
        raise typer.Exit(3)


def deid_keygen(path: Annotated[Path, typer.Argument(help="Where to write the new key (refuses to overwrite)")]) -> None:
    """Write a new de-identification key (Fernet) readable by its owner only."""
    from radpilot.dicom.deid import write_new_key

    try:
        write_new_key(path)
    except FileExistsError:
        console.print(f"[red]{path} exists: a key is never overwritten (its mapping could not be read again)[/red]")
        raise typer.Exit(2) from None
    console.print(f"key written to {path}; keep it apart from the de-identified output")


def research_export(
    out: Annotated[Path, typer.Argument(help="Output folder for the de-identified studies, manifest.json and labels.json")],
    user: Annotated[str, typer.Option("--user", help="Who runs the export (audited)")],
    role: Annotated[str, typer.Option("--role", help="researcher or administrator")],
    patient_id: Annotated[str | None, typer.Option("--patient-id")] = None,
    study_uid: Annotated[str | None, typer.Option("--study-uid", help="a UID, or * for every study")] = None,
    study_date: Annotated[str | None, typer.Option("--study-date", help="YYYYMMDD or a range YYYYMMDD-YYYYMMDD")] = None,
    modality: Annotated[str | None, typer.Option("--modality")] = None,
    accession: Annotated[str | None, typer.Option("--accession")] = None,
    retain_longitudinal_dates: Annotated[bool, typer.Option("--retain-longitudinal-dates")] = False,
    clean_descriptors: Annotated[bool, typer.Option("--clean-descriptors")] = False,
    key_file: Annotated[Path | None, typer.Option("--key-file", help="Fernet key file [env RADPILOT_DEID_KEY_FILE]")] = None,
    mapping_file: Annotated[Path | None, typer.Option("--mapping", help="Encrypted mapping [env RADPILOT_DEID_MAPPING_FILE]")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Archive folder [env RADPILOT_DATA_DIR]")] = None,
    database_url: Annotated[str | None, typer.Option("--database-url", help="SQLAlchemy URL [env RADPILOT_DATABASE_URL]")] = None,
    to_dicomweb: Annotated[
        str | None, typer.Option("--to-dicomweb", help="Also send the instances by STOW-RS to this DICOMweb base URL")
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="File holding the bearer token for --to-dicomweb (never given on the command line)")
    ] = None,
    dicomweb_only: Annotated[
        bool, typer.Option("--dicomweb-only", help="Send the instances, keep only manifest.json and labels.json in OUT")
    ] = False,
) -> None:
    """De-identify the studies a query selects, with RadPilot's results and review labels, into a folder and/or a DICOMweb server.

    Researcher or administrator only; audited. Exits 3 when an instance was refused or not sent.
    """
    from radpilot.archive import Archive
    from radpilot.archive.query import QueryError
    from radpilot.dicom.deid import DeidConfig, Deidentifier, DeidKey, MappingStore, Option
    from radpilot.dicom.deid.mapping import DeidKeyError
    from radpilot.engine.research_exports import read_token
    from radpilot.engine.review import ReviewService
    from radpilot.pacs.research_export import DicomwebTarget
    from radpilot.pacs.research_export import research_export as run_export
    from radpilot.pacs.stow_client import redact_url
    from radpilot.security.principal import Principal, Role

    overrides = {"deid_key_file": key_file, "deid_mapping_file": mapping_file, "data_dir": data_dir, "database_url": database_url}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    keys = {
        k: v
        for k, v in {
            "PatientID": patient_id,
            "StudyInstanceUID": study_uid,
            "StudyDate": study_date,
            "Modality": modality,
            "AccessionNumber": accession,
        }.items()
        if v
    }
    options = {Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: retain_longitudinal_dates, Option.CLEAN_DESCRIPTORS: clean_descriptors}
    if (token_file is not None or dicomweb_only) and not to_dicomweb:
        console.print("[red]--token-file and --dicomweb-only go with --to-dicomweb URL[/red]")
        raise typer.Exit(2)
    try:
        target = None
        if to_dicomweb:
            if not to_dicomweb.startswith(("http://", "https://")):
                raise ValueError(f"--to-dicomweb {to_dicomweb!r} is not an http(s) URL")
            token = read_token(token_file) if token_file is not None else None
            target = DicomwebTarget(to_dicomweb, token, name=redact_url(to_dicomweb))
        principal = Principal(user, Role.parse(role))
        key = DeidKey.from_settings(settings.deid_key_file)
        deidentifier = Deidentifier(key, DeidConfig(options=frozenset(o for o, on in options.items() if on)))
        store = MappingStore(settings.resolved_deid_mapping_file, key)
        archive = Archive.from_settings(settings)
    except (ValueError, DeidKeyError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    try:
        labels = ReviewService(archive, organisation=settings.organisation).labels
        result = run_export(
            archive, principal, keys, out, deidentifier, store, labels=labels, dicomweb=target, write_instances=not dicomweb_only
        )
    except PermissionError as exc:
        console.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from exc
    except (ValueError, QueryError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    finally:
        archive.close()
    typer.echo(json.dumps(result.to_json()))
    for item in result.failed:
        console.print(f"[yellow]not sent:[/yellow] {item['instance']}: {item['reason']}")
    if result.refused or result.failed:
        raise typer.Exit(3)
