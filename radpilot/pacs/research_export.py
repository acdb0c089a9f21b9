"""Research export: the studies a query selects, with RadPilot's AI results and the radiologists' labels, de-identified.

Only a researcher or an administrator may run it; every run, and every refused attempt,
is audited (action ``export.research``). The instances go into a folder, to a DICOMweb
server by STOW-RS, or both; the folder always receives ``manifest.json`` (pseudonymised
study UIDs, counts, profile and options, what was refused or not sent and why) and
``labels.json`` (the review decisions on each AI finding and the radiologist-verified
reports, keyed by the pseudonymised UIDs so they resolve among the exported instances).
The re-identification mapping goes to its own encrypted file, never the output.

The labels are read by a :data:`LabelSource` that a higher layer (the engine's review)
passes in: this module only de-identifies them.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from radpilot.archive.query import Query, QueryLevel
from radpilot.archive.store import Archive
from radpilot.dicom.deid import BurnedInAnnotationRefused, Deidentifier, MappingStore, Option
from radpilot.dicom.paths import inside, safe_name
from radpilot.pacs.stow_client import StowError, redact_url, stow_with_retries
from radpilot.security import audit
from radpilot.security.principal import Principal, Role

logger = logging.getLogger(__name__)

ALLOWED_ROLES = (Role.RESEARCHER, Role.ADMINISTRATOR)
LABELS_FORMAT = "radpilot-research-labels/1"
DECISION_WORDS = {"accept": "accepted", "edit": "edited", "reject": "rejected"}
# Instances per STOW-RS request: one series at a time, split when it is longer.
STOW_BATCH = 50


@dataclass(frozen=True)
class FindingLabel:
    """One AI finding of a study and the latest radiologist decision on it (None: not reviewed yet)."""

    ai_sr_uid: str
    seg_uid: str
    key_image_uid: str
    analysis: str
    version: str
    finding_id: str
    name: str
    kind: str
    value: float | None
    unit: str
    category: str
    location: str
    confidence: float | None
    decision: str | None = None  # accept | edit | reject
    edited: dict[str, Any] | None = None
    reason: str = ""
    decided_by: str = ""
    decided_at: datetime | None = None


@dataclass(frozen=True)
class VerifiedReportLabel:
    """A finished review: the verified SR the radiologist's decisions produced (the reference label RadPilot keeps)."""

    ai_sr_uid: str
    verified_sr_uid: str  # "" when every finding was rejected (no SR was written)
    completed_by: str
    completed_at: datetime | None


@dataclass
class StudyLabels:
    findings: list[FindingLabel] = field(default_factory=list)
    verified_reports: list[VerifiedReportLabel] = field(default_factory=list)


#: Reads the labels of one study by its original Study Instance UID.
LabelSource = Callable[[str], StudyLabels]


@dataclass(frozen=True)
class DicomwebTarget:
    """Where STOW-RS sends the de-identified instances; the token is sent as ``Authorization: Bearer`` and never logged."""

    url: str
    token: str | None = field(default=None, repr=False)
    name: str = ""
    attempts: int = 3
    backoff_s: float = 0.5

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def display(self) -> str:
        """The name, or the URL without any ``user:password@``: what manifests, audit records and logs show."""
        return self.name or redact_url(self.url)


@dataclass
class ExportResult:
    """What one export wrote."""

    studies: list[str] = field(default_factory=list)  # pseudonymised Study Instance UIDs
    written: int = 0  # instances de-identified (into the folder, or staged for sending)
    sent: int = 0  # instances the DICOMweb target stored
    refused: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)  # instances the DICOMweb target did not store
    labelled_findings: int = 0
    manifest: Path | None = None
    labels: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "studies": len(self.studies),
            "instances": self.written,
            "sent": self.sent,
            "refused": self.refused,
            "failed": self.failed,
            "labelled_findings": self.labelled_findings,
            "manifest": str(self.manifest) if self.manifest else None,
            "labels": str(self.labels) if self.labels else None,
        }


def _new_uid(deidentifier: Deidentifier, uid: str) -> str:
    """The UID an exported object carries: remapped, unless the Retain UIDs option keeps it."""
    if not uid:
        return ""
    return uid if Option.RETAIN_UIDS in deidentifier.config.options else deidentifier.new_uid(uid)


def research_export(
    archive: Archive,
    principal: Principal,
    keys: dict[str, str],
    out_dir: Path,
    deidentifier: Deidentifier,
    mapping: MappingStore,
    *,
    source: str = "cli",
    labels: LabelSource | None = None,
    dicomweb: DicomwebTarget | None = None,
    write_instances: bool = True,
    progress: Callable[[ExportResult], None] | None = None,
) -> ExportResult:
    """De-identify every instance of the studies matching ``keys`` (patient, study or series query keys).

    The instances go into ``out_dir`` (unless ``write_instances`` is false) and to ``dicomweb`` when given;
    ``manifest.json`` and, with a ``labels`` source, ``labels.json`` always go into ``out_dir``.

    Raises
    ------
    RoleRefused
        When the principal is neither researcher nor administrator (the attempt is audited).
    QueryError
        When a query key is not one RadPilot indexes, or its value is malformed.
    ValueError
        When the query is empty (an export of everything must be asked for explicitly), the mapping lies inside
        the output, or the export would write its instances nowhere.
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
    if not write_instances and dicomweb is None:
        raise ValueError("the instances must go somewhere: to the folder, to a DICOMweb target, or both")
    mapping.check_outside(out_dir)
    query_keys = {k: v for k, v in keys.items() if not (k == "StudyInstanceUID" and v == "*")}
    # A series-level query: patient, study and series keys (Modality, BodyPartExamined ...) may all select.
    study_uids = list(dict.fromkeys(str(m["StudyInstanceUID"]) for m in archive.find(Query(QueryLevel.SERIES, query_keys))))
    result = ExportResult()
    out_dir.mkdir(parents=True, exist_ok=True)
    # Instances only sent, not kept, are staged in a temporary folder beside nothing the researcher receives.
    staging = out_dir if write_instances else Path(tempfile.mkdtemp(prefix="radpilot-export-"))
    study_labels: dict[str, Any] = {}
    try:
        for study_uid in study_uids:
            new_study = _new_uid(deidentifier, study_uid)
            result.studies.append(new_study)
            exported: set[str] = set()
            batches: dict[str, list[tuple[Path, str]]] = {}
            header: Dataset | None = None
            for match in archive.find(Query(QueryLevel.IMAGE, {"StudyInstanceUID": study_uid})):
                path = archive.storage_dir / match["_file_path"]
                pseudo_sop = _new_uid(deidentifier, str(match["SOPInstanceUID"]))
                try:
                    original = pydicom.dcmread(path)
                    if header is None:
                        header = original
                    output = deidentifier.deidentify(original)
                except BurnedInAnnotationRefused as exc:
                    result.refused.append({"instance": pseudo_sop, "reason": str(exc).split(": ", 1)[-1]})
                    continue
                except (InvalidDicomError, OSError, ValueError) as exc:
                    result.refused.append({"instance": pseudo_sop, "reason": f"unreadable: {exc}"})
                    continue
                folder = inside(
                    staging, (output.get("PatientID"), "patient"), (new_study, "study"), (output.get("SeriesInstanceUID"), "series")
                )
                folder.mkdir(parents=True, exist_ok=True)
                written = folder / f"{safe_name(output.SOPInstanceUID, 'instance')}.dcm"
                output.save_as(written, enforce_file_format=True)
                exported.add(str(output.SOPInstanceUID))
                batches.setdefault(str(output.SeriesInstanceUID), []).append((written, str(output.SOPInstanceUID)))
                result.written += 1
            if dicomweb is not None:
                for series_files in batches.values():
                    for start in range(0, len(series_files), STOW_BATCH):
                        _send(dicomweb, series_files[start : start + STOW_BATCH], result)
            if labels is not None and header is not None:
                study_labels[new_study] = _deidentify_labels(labels(study_uid), header, deidentifier, exported)
                result.labelled_findings += len(study_labels[new_study]["findings"])
            if progress is not None:
                progress(result)
    finally:
        if not write_instances:
            shutil.rmtree(staging, ignore_errors=True)
    mapping.save(deidentifier.mapping)
    options = deidentifier.config.options
    dates = (
        "shifted per patient"
        if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in options
        else "kept"
        if Option.RETAIN_LONGITUDINAL_FULL_DATES in options
        else "dropped"
    )
    if labels is not None:
        result.labels = out_dir / "labels.json"
        document = {
            "format": LABELS_FORMAT,
            "about": (
                "Per exported study (pseudonymised Study Instance UID): each AI result (its SR, SEG and key image by their "
                "pseudonymised SOP Instance UIDs; null where that object was not exported), each AI finding with the latest "
                "radiologist decision on it (accepted / edited with the edited value / rejected, or null when not reviewed) "
                "by a pseudonymised reviewer, and the verified SRs of finished reviews as reference labels."
            ),
            "review_times": dates,
            "studies": study_labels,
        }
        result.labels.write_text(json.dumps(document, indent=2), encoding="utf-8")
    manifest: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "exported_by": {"name": principal.name, "role": principal.role.value},
        "profile": "PS3.15 E.1-1 Basic Application Level Confidentiality Profile",
        "table_edition": deidentifier.table.edition,
        "options": sorted(o.value for o in options),
        "studies": result.studies,
        "instances_written": result.written,
        "destination": {
            "folder": write_instances,
            "dicomweb": dicomweb.display if dicomweb is not None else None,
        },
        "instances_sent": result.sent,
        "refused": result.refused,
        "not_sent": result.failed,
        "labels": "labels.json" if labels is not None else None,
        "labelled_findings": result.labelled_findings,
    }
    result.manifest = out_dir / "manifest.json"
    result.manifest.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    audit.record(
        archive.engine,
        who=principal.name,
        action="export.research",
        target=target,
        source=source,
        outcome="success" if not result.refused and not result.failed else "failure",
        details={
            "studies": result.studies,
            "instances": result.written,
            "refused": len(result.refused),
            "out": str(out_dir),
            "dicomweb": manifest["destination"]["dicomweb"],
            "sent": result.sent,
            "not_sent": len(result.failed),
        },
    )
    logger.info(
        "research export",
        extra={
            "studies": len(result.studies),
            "instances": result.written,
            "sent": result.sent,
            "refused": len(result.refused),
            "not_sent": len(result.failed),
        },
    )
    return result


def _send(target: DicomwebTarget, batch: list[tuple[Path, str]], result: ExportResult) -> None:
    """STOW-RS one batch; when the server refuses it without naming instances, send them one by one to name the failing one."""
    try:
        stow_with_retries(target.url, [p for p, _ in batch], attempts=target.attempts, backoff_s=target.backoff_s, headers=target.headers)
        result.sent += len(batch)
        return
    except StowError as exc:
        if exc.failed:
            for _, uid in batch:
                if uid in exc.failed:
                    result.failed.append({"instance": uid, "reason": f"STOW-RS failure reason {exc.failed[uid]}"})
                else:
                    result.sent += 1
            return
        if len(batch) == 1 or exc.transient:
            for _, uid in batch:
                result.failed.append({"instance": uid, "reason": str(exc)})
            logger.warning("research export: STOW-RS failed", extra={"url": target.display, "instances": len(batch), "error": str(exc)})
            return
    for item in batch:
        _send(target, [item], result)


def _deidentify_labels(labels: StudyLabels, header: Dataset, deidentifier: Deidentifier, exported: set[str]) -> dict[str, Any]:
    """The study's labels with every UID remapped like the instances, reviewers pseudonymised, times shifted or dropped."""

    def uid(original: str) -> str | None:
        new = _new_uid(deidentifier, original)
        return new if new in exported else None

    results: dict[str, dict[str, Any]] = {}
    findings = []
    for f in labels.findings:
        sr_uid = _new_uid(deidentifier, f.ai_sr_uid)
        results.setdefault(
            sr_uid,
            {
                "analysis": f.analysis,
                "version": f.version,
                "sr_uid": uid(f.ai_sr_uid),
                "seg_uid": uid(f.seg_uid),
                "key_image_uid": uid(f.key_image_uid),
            },
        )
        findings.append(
            {
                "finding_id": f.finding_id,
                "ai_sr_uid": sr_uid,
                "analysis": f.analysis,
                "version": f.version,
                "name": f.name,
                "kind": f.kind,
                "value": f.value,
                "unit": f.unit,
                "category": f.category,
                "location": f.location,
                "confidence": f.confidence,
                "decision": DECISION_WORDS.get(f.decision or "", f.decision),
                "edited": f.edited,
                "reason": deidentifier.clean_free_text(f.reason, header) if f.reason else "",
                "reviewer": deidentifier.person_pseudonym(f.decided_by) if f.decided_by else None,
                "decided_at": deidentifier.export_datetime(f.decided_at, header),
            }
        )
    references = [
        {
            "kind": "verified_sr",
            "sop_instance_uid": uid(r.verified_sr_uid) if r.verified_sr_uid else None,
            "ai_sr_uid": _new_uid(deidentifier, r.ai_sr_uid),
            "note": "" if r.verified_sr_uid else "every finding was rejected: no verified SR was written",
            "reviewer": deidentifier.person_pseudonym(r.completed_by) if r.completed_by else None,
            "completed_at": deidentifier.export_datetime(r.completed_at, header),
        }
        for r in labels.verified_reports
    ]
    return {
        "patient": deidentifier.patient_pseudonym(header),
        "ai_results": list(results.values()),
        "findings": findings,
        "reference_labels": references,
    }
