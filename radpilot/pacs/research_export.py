"""Research export: the studies a query selects, with RadPilot's AI results stored beside them, de-identified into a folder.

Only a researcher or an administrator may run it; every run, and every refused attempt,
is audited (action ``export.research``). The output holds the de-identified instances and
``manifest.json`` (pseudonymised study UIDs, counts, profile and options, what was refused
and why); the re-identification mapping goes to its own encrypted file, never the output.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from radpilot.archive.query import Query, QueryLevel
from radpilot.archive.store import Archive
from radpilot.dicom.deid import BurnedInAnnotationRefused, Deidentifier, MappingStore
from radpilot.dicom.paths import inside, safe_name
from radpilot.security import audit
from radpilot.security.principal import Principal, Role

logger = logging.getLogger(__name__)

ALLOWED_ROLES = (Role.RESEARCHER, Role.ADMINISTRATOR)


@dataclass
class ExportResult:
    """What one export wrote."""

    studies: list[str] = field(default_factory=list)  # pseudonymised Study Instance UIDs
    written: int = 0
    refused: list[dict[str, str]] = field(default_factory=list)
    manifest: Path | None = None


def research_export(
    archive: Archive,
    principal: Principal,
    keys: dict[str, str],
    out_dir: Path,
    deidentifier: Deidentifier,
    mapping: MappingStore,
    *,
    source: str = "cli",
) -> ExportResult:
    """De-identify every instance of the studies matching ``keys`` (patient, study or series query keys) into ``out_dir``.

    Raises
    ------
    RoleRefused
        When the principal is neither researcher nor administrator (the attempt is audited).
    QueryError
        When a query key is not one RadPilot indexes, or its value is malformed.
    ValueError
        When the query is empty (an export of everything must be asked for explicitly) or the mapping lies inside the output.
    """
    target = json.dumps(keys, sort_keys=True)[:255] or "{}"
    try:
        principal.require(*ALLOWED_ROLES)
    except PermissionError as exc:
        audit.record(
            archive.engine, who=principal.name, action="export.research", target=target, outcome="refused", reason=str(exc), source=source
        )
        raise
    if not keys:
        raise ValueError("give at least one query key (e.g. StudyDate, Modality, PatientID); use StudyInstanceUID=* to export every study")
    mapping.check_outside(out_dir)
    query_keys = {k: v for k, v in keys.items() if not (k == "StudyInstanceUID" and v == "*")}
    # A series-level query: patient, study and series keys (Modality, BodyPartExamined ...) may all select.
    study_uids = list(dict.fromkeys(str(m["StudyInstanceUID"]) for m in archive.find(Query(QueryLevel.SERIES, query_keys))))
    result = ExportResult()
    out_dir.mkdir(parents=True, exist_ok=True)
    for study_uid in study_uids:
        new_study = deidentifier.new_uid(study_uid)
        result.studies.append(new_study)
        for match in archive.find(Query(QueryLevel.IMAGE, {"StudyInstanceUID": study_uid})):
            path = archive.storage_dir / match["_file_path"]
            try:
                output = deidentifier.deidentify(pydicom.dcmread(path))
            except BurnedInAnnotationRefused as exc:
                result.refused.append(
                    {"instance": deidentifier.new_uid(str(match["SOPInstanceUID"])), "reason": str(exc).split(": ", 1)[-1]}
                )
                continue
            except (InvalidDicomError, OSError, ValueError) as exc:
                result.refused.append({"instance": deidentifier.new_uid(str(match["SOPInstanceUID"])), "reason": f"unreadable: {exc}"})
                continue
            folder = inside(
                out_dir, (output.get("PatientID"), "patient"), (new_study, "study"), (output.get("SeriesInstanceUID"), "series")
            )
            folder.mkdir(parents=True, exist_ok=True)
            output.save_as(folder / f"{safe_name(output.SOPInstanceUID, 'instance')}.dcm", enforce_file_format=True)
            result.written += 1
    mapping.save(deidentifier.mapping)
    manifest: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "exported_by": {"name": principal.name, "role": principal.role.value},
        "profile": "PS3.15 E.1-1 Basic Application Level Confidentiality Profile",
        "table_edition": deidentifier.table.edition,
        "options": sorted(o.value for o in deidentifier.config.options),
        "studies": result.studies,
        "instances_written": result.written,
        "refused": result.refused,
    }
    result.manifest = out_dir / "manifest.json"
    result.manifest.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    audit.record(
        archive.engine,
        who=principal.name,
        action="export.research",
        target=target,
        source=source,
        outcome="success" if not result.refused else "failure",
        details={"studies": result.studies, "instances": result.written, "refused": len(result.refused), "out": str(out_dir)},
    )
    logger.info("research export", extra={"studies": len(result.studies), "instances": result.written, "refused": len(result.refused)})
    return result
