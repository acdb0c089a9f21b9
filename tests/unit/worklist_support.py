"""Building worklist states for tests: studies with a priority, jobs in a state, flags raised."""

from __future__ import annotations

from pydicom.dataset import Dataset

from radpilot.archive import Archive
from radpilot.engine.flags import record_flags
from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs import ErrorKind, JobOutput, JobSpec
from tests.factories import make_ct_series, to_part10_bytes


def store_study(
    archive: Archive,
    *,
    patient_id: str,
    patient_name: str = "DOE^JANE",
    study_date: str = "20240102",
    study_time: str = "101500",
    modality: str = "CT",
    priority: str = "",
    accession: str = "ACC001",
    description: str = "CT CHEST",
    count: int = 1,
) -> tuple[str, str]:
    """Store a small study; returns (study UID, series UID)."""
    series = make_ct_series(
        count,
        rows=4,
        columns=4,
        patient_id=patient_id,
        patient_name=patient_name,
        study_date=study_date,
        study_time=study_time,
        modality=modality,
        accession=accession,
    )
    for ds in series:
        ds.StudyDescription = description
        if priority:
            item = Dataset()
            item.RequestedProcedurePriority = priority
            ds.RequestAttributesSequence = [item]
        assert archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted
    return str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)


def add_job(
    archive: Archive,
    study_uid: str,
    series_uid: str,
    analysis: str,
    *,
    state: str,
    flags: list[dict] | None = None,
    error_kind: ErrorKind = ErrorKind.PERMANENT,
) -> int:
    """A job of ``analysis`` on the series, taken to ``state`` (queued, running, done, failed); done jobs raise ``flags``."""
    store = JobStore(archive.engine)
    spec = JobSpec(analysis, "1.0.0", study_uid, series_uid, [(f"{series_uid}.{analysis}", "0" * 64)])
    job = store.submit(spec).job
    if state == "queued":
        return job.id
    claimed = store.claim(job.id, "worker-1", 60.0)
    assert claimed.job is not None
    if state == "done":
        raised = [
            {"analysis": analysis, "name": name, "label": name.title(), "critical": critical, "value": 1.0, "threshold": 0.5}
            for name, critical in (flags or [])
        ]

        def hook(session, job_record, output):  # noqa: ANN001
            record_flags(session, job_record.id, job_record.study_instance_uid, raised, job_record.supersedes_job_id)

        assert store.complete(job.id, "worker-1", JobOutput((), {"flags": raised}), on_record=hook)
    elif state == "failed":
        assert store.fail(job.id, "worker-1", "the series is not a chest CT", error_kind) is not None
    return job.id
