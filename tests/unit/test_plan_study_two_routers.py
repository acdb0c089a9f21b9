"""Two routers (the detectors of two front ends) planning one growing series at the same moment.

Each reads the newest job of the series, then its images, then submits. When the other
router submits in between, the queue refuses the stale supersede and the router reads
again, so the series ends with one current job, on every image it has.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from radpilot.archive import Archive
from radpilot.engine import pipeline
from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs import JobSpec, JobState, SubmitResult, SupersedeConflictError
from radpilot.engine.pipeline import plan_study
from radpilot.engine.queue_embedded import EmbeddedJobQueue
from radpilot.engine.routing import parse_rules
from tests.factories import make_ct_dataset, to_part10_bytes
from tests.unit.test_detector import RULES as DETECTOR_RULES

STUDY = "1.2.826.0.1.3680043.8.498.77"
SERIES = "1.2.826.0.1.3680043.8.498.77.1"
RULES = parse_rules(DETECTOR_RULES)  # every CT to lung_ct_quant
# plan_study reads only an analysis's name, version and time limit
ANALYSES = {"lung_ct_quant": SimpleNamespace(name="lung_ct_quant", version="1.0.0", timeout_s=600.0)}


@pytest.fixture
def archive(tmp_path: Path):  # noqa: ANN201 - Archive generator
    store = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.sqlite3'}", durability="none")
    yield store
    store.close()


@pytest.fixture
def queue(archive: Archive) -> EmbeddedJobQueue:
    return EmbeddedJobQueue(JobStore(archive.engine))


def store_slices(archive: Archive, first: int, count: int) -> None:
    for number in range(first, first + count):
        ds = make_ct_dataset(study_uid=STUDY, series_uid=SERIES, instance_number=number, z=float(number), seed=number)
        assert archive.store_file_bytes(to_part10_bytes(ds), source_ae_title="CT1").outcome.accepted


class OtherRouterCutsIn:
    """The queue as router A sees it: before A's next submit lands, a slice arrives and router B plans the study.

    With ``still_arriving`` one more slice arrives after B's plan, so A's next read differs from B's job.
    """

    def __init__(self, queue: EmbeddedJobQueue, archive: Archive, *, times: int = 1, still_arriving: bool = False) -> None:
        self.queue, self.archive, self.times, self.still_arriving = queue, archive, times, still_arriving
        self.refused = 0

    def job_to_supersede(self, analysis: str, series_instance_uid: str):  # noqa: ANN201 - JobRecord | None
        return self.queue.job_to_supersede(analysis, series_instance_uid)

    def submit(self, spec: JobSpec) -> SubmitResult:
        if self.times > 0:
            self.times -= 1
            store_slices(self.archive, len(self.archive.instance_inputs(SERIES)) + 1, 1)
            plan_study(self.archive, RULES, ANALYSES, STUDY, self.queue)
            if self.still_arriving:
                store_slices(self.archive, len(self.archive.instance_inputs(SERIES)) + 1, 1)
        try:
            return self.queue.submit(spec)
        except SupersedeConflictError:
            self.refused += 1
            raise


def current_jobs(queue: EmbeddedJobQueue) -> list:
    return [job for job in queue.list() if job.state is not JobState.CANCELLED]


def test_a_router_whose_series_read_is_overtaken_reads_again_and_keeps_the_larger_job(archive: Archive, queue: EmbeddedJobQueue) -> None:
    store_slices(archive, 1, 3)
    plan_study(archive, RULES, ANALYSES, STUDY, queue)
    store_slices(archive, 4, 1)
    router_a = OtherRouterCutsIn(queue, archive)

    [plan] = plan_study(archive, RULES, ANALYSES, STUDY, router_a)

    assert router_a.refused == 1, "A's submit on 4 slices, superseding the 3-slice job B already replaced, must be refused"
    [current] = current_jobs(queue)
    assert len(current.input_sop_uids) == 5
    assert plan.jobs == [(current.id, False)], "A, reading again, finds B's job on all five slices"


def test_two_first_plans_of_a_new_series_leave_one_current_job(archive: Archive, queue: EmbeddedJobQueue) -> None:
    store_slices(archive, 1, 3)
    router_a = OtherRouterCutsIn(queue, archive)

    plan_study(archive, RULES, ANALYSES, STUDY, router_a)

    assert router_a.refused == 1
    [current] = current_jobs(queue)
    assert len(current.input_sop_uids) == 4


def test_a_router_overtaken_at_every_try_gives_up_with_the_conflict(
    archive: Archive, queue: EmbeddedJobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "SUBMIT_ATTEMPTS", 2)
    store_slices(archive, 1, 3)
    router_a = OtherRouterCutsIn(queue, archive, times=2, still_arriving=True)

    with pytest.raises(SupersedeConflictError, match="newest job there is"):
        plan_study(archive, RULES, ANALYSES, STUDY, router_a)

    assert router_a.refused == 2
    [current] = current_jobs(queue)
    assert len(current.input_sop_uids) == 6, "what the other router submitted stands"
