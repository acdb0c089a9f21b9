"""Study-complete detection and routing never loop on RadPilot's own results.

The engine stores its results (SEG, SR, key image) in the study it analysed.
They are stored as derived objects: that is no change to the study (the
detector does not route it again) and their series are never routed.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.db import utcnow
from radpilot.engine.detector import StudyCompleteDetector
from radpilot.engine.pipeline import PipelineRunner, plan_study
from radpilot.engine.routing import parse_rules
from tests.factories import make_ct_series, to_part10_bytes

QUIET_S = 30.0
RULES = """
rules:
  - name: any-ct
    match:
      Modality: CT
    analyses: [lung_ct_quant]
    destinations: [pacs]
"""


@pytest.fixture
def archive(tmp_path: Path):  # noqa: ANN201 - Archive generator
    store = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.sqlite3'}", durability="none")
    yield store
    store.close()


def store_source(archive: Archive, study_uid: str | None = None) -> list:
    series = make_ct_series(3, study_uid=study_uid)
    for ds in series:
        archive.store_file_bytes(to_part10_bytes(ds), source_ae_title="CT1")
    return series


def store_results_as_the_pipeline_does(archive: Archive, study_uid: str, tmp_path: Path) -> list:
    """Store result objects through the pipeline's own store step (whatever flags it passes)."""
    runner = PipelineRunner(Settings(data_dir=tmp_path / "unused"), archive=archive, analyses={})
    results = make_ct_series(2, study_uid=study_uid, series_number=9901, series_description="RESULT")
    for ds in results:
        runner._store(ds)
    return results


def poll(detector: StudyCompleteDetector, quiet_for_s: float = QUIET_S) -> list[str]:
    """One pass of the detector as if nothing had arrived for ``quiet_for_s`` after what is stored now."""
    return detector.poll_once(now=utcnow() + timedelta(seconds=quiet_for_s))


def test_a_study_is_routed_once_and_not_again_when_its_results_arrive(archive: Archive, tmp_path: Path) -> None:
    routed: list[str] = []
    detector = StudyCompleteDetector(archive, routed.append, quiet_period_s=QUIET_S)
    source = store_source(archive)
    study_uid = str(source[0].StudyInstanceUID)

    assert poll(detector, quiet_for_s=QUIET_S / 2) == []
    assert poll(detector) == [study_uid]

    # The watermark is now: whatever changes the study from here on makes it due again.
    store_results_as_the_pipeline_does(archive, study_uid, tmp_path)
    assert poll(detector) == []
    assert routed == [study_uid]

    store_source(archive, study_uid)  # a genuinely new series: routed again
    assert poll(detector) == [study_uid]


def test_a_result_series_is_never_routed_and_routing_says_why(archive: Archive, tmp_path: Path) -> None:
    source = store_source(archive)
    study_uid = str(source[0].StudyInstanceUID)
    results = store_results_as_the_pipeline_does(archive, study_uid, tmp_path)

    plans = {plan.series_instance_uid: plan for plan in plan_study(archive, parse_rules(RULES), {}, study_uid)}

    source_plan, result_plan = plans[str(source[0].SeriesInstanceUID)], plans[str(results[0].SeriesInstanceUID)]
    assert source_plan.decision is not None and source_plan.decision.matched
    assert result_plan.decision is None and result_plan.skipped_reason == "RadPilot's own result series"


def test_status_says_nothing_is_routed_before_the_first_pass_then_reports_the_watermark(archive: Archive) -> None:
    detector = StudyCompleteDetector(archive, lambda uid: None, quiet_period_s=QUIET_S)
    before = detector.status()
    assert (before.routed_up_to, before.last_pass_at, before.last_pass_studies, before.running) == (None, None, 0, False)
    assert before.quiet_period_s == QUIET_S

    store_source(archive)
    now = utcnow() + timedelta(seconds=QUIET_S + 1)
    detector.poll_once(now=now)
    after = detector.status()
    assert after.routed_up_to == now - timedelta(seconds=QUIET_S)
    assert (after.last_pass_at, after.last_pass_studies) == (now, 1)
