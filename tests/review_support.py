"""An archive holding one study with a finished AI job (SEG, TID 1500 SR, key image), for the review tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from radpilot.archive import Archive
from radpilot.dicom.encoders import encode_key_image, encode_measurement_report, encode_segmentation
from radpilot.dicom.encoders.verified_sr import report_findings
from radpilot.engine.jobs_models import Job
from radpilot.security.principal import Principal, Role
from tests.factories import to_part10_bytes
from tests.unit.test_encoders import LUNG_WINDOW, WHEN, build_ct_case

RADIOLOGIST = Principal("jdoe", Role.RADIOLOGIST)
TECHNOLOGIST = Principal("tech1", Role.TECHNOLOGIST)
ADMINISTRATOR = Principal("admin1", Role.ADMINISTRATOR)


@dataclass
class ReviewCase:
    archive: Archive
    study_uid: str
    job_id: int
    sr_uid: str
    seg_uid: str
    key_image_uid: str
    findings: dict[str, str]  # finding name (first of that name) -> id


def add_ai_result(
    archive: Archive, *, destinations: tuple[str, ...] = ("pacs",), analysis: str = "lung_ct", version: str = "1.2.0"
) -> ReviewCase:
    """Store a synthetic CT series and the AI objects of one finished job on it; record the job as done."""
    case = build_ct_case()
    case.findings.analysis, case.findings.version = analysis, version
    for ds in case.sources:
        archive.store_file_bytes(to_part10_bytes(ds))
    seed = f"{analysis}-{version}-{case.sources[0].SeriesInstanceUID}"
    seg = encode_segmentation(case.findings, case.sources, series_number=9901, content_datetime=WHEN, uid_seed=seed)
    sr = encode_measurement_report(case.findings, case.sources, seg, series_number=9902, content_datetime=WHEN, uid_seed=seed)
    key = encode_key_image(case.findings, case.volume, case.sources, series_number=9903, window=LUNG_WINDOW, uid_seed=seed)
    uids = []
    for ds in (seg, sr, key):
        result = archive.store_file_bytes(to_part10_bytes(ds), source_ae_title="RADPILOT-AI", derived=True)
        assert result.outcome.accepted, result.message
        uids.append(str(ds.SOPInstanceUID))
    study_uid = str(case.sources[0].StudyInstanceUID)
    with Session(archive.engine) as session, session.begin():
        job = Job(
            idempotency_key=seed[:64],
            analysis=analysis,
            analysis_version=version,
            study_instance_uid=study_uid,
            series_instance_uid=str(case.sources[0].SeriesInstanceUID),
            input_sop_uids=[str(d.SOPInstanceUID) for d in case.sources],
            destinations=list(destinations),
            priority=2,
            state="done",
            max_attempts=3,
            timeout_s=60.0,
            result={"sop_instance_uids": uids},
        )
        session.add(job)
        session.flush()
        job_id = job.id
    names: dict[str, str] = {}
    for finding in report_findings(sr):
        names.setdefault(finding.name, finding.id)
    return ReviewCase(archive, study_uid, job_id, uids[1], uids[0], uids[2], names)


def make_archive(tmp_path: Path) -> Archive:
    return Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.sqlite3'}", durability="none")
