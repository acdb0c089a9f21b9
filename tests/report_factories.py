"""Helpers of the report tests: a study in an archive with a finished AI job, and principals."""

from __future__ import annotations

from collections.abc import Sequence

from radpilot.archive import Archive
from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs import JobOutput, JobSpec, Priority
from radpilot.security.principal import Principal, Role
from tests.factories import make_ct_series, to_part10_bytes

RADIOLOGIST = Principal("dr.grey", Role.RADIOLOGIST)
TECHNOLOGIST = Principal("tech.tom", Role.TECHNOLOGIST)


def store_study(archive: Archive, count: int = 3, **kwargs) -> tuple[str, str, list[str]]:
    """A small CT study stored in ``archive``: (study UID, series UID, SOP Instance UIDs)."""
    datasets = make_ct_series(count, **kwargs)
    uids = [archive.store_file_bytes(to_part10_bytes(ds)).sop_instance_uid for ds in datasets]
    return str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID), uids


def record_finished_job(
    archive: Archive, study_uid: str, series_uid: str, measurements: Sequence[dict], *, analysis: str = "lung_ct_quant", destinations=()
) -> int:
    """A finished job of ``analysis`` on the series whose stored result holds ``measurements`` (as the pipeline writes them)."""
    jobs = JobStore(archive.engine)
    spec = JobSpec(
        analysis=analysis,
        analysis_version="1.0.0",
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        instances=[(f"{series_uid}.1", "0" * 64)],
        rule="test",
        destinations=tuple(destinations),
        priority=Priority.ROUTINE,
    )
    job = jobs.submit(spec).job
    claimed = jobs.claim_next("test-worker", 60.0)
    assert claimed is not None and claimed.id == job.id
    assert jobs.complete(job.id, "test-worker", JobOutput((), {"measurements": list(measurements), "notes": []}))
    return job.id


LUNG_MEASUREMENTS = [
    {"name": "Lung low attenuation area below -950 HU", "value": 12.3456, "unit": "%", "site": "Both lungs"},
    {"name": "Volume", "value": 5123.4, "unit": "mL", "site": "Both lungs"},
]
