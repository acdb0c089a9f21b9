"""A report quotes the radiologist's review: accepted and edited findings as verified, rejected ones never."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from sqlalchemy import update
from sqlalchemy.orm import Session

from radpilot.contract import Analysis, Code, OutputSpec
from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs_models import Job
from radpilot.engine.review import ReviewService
from radpilot.reports.findings import FindingState, study_findings
from tests.review_support import RADIOLOGIST, add_ai_result, build_ct_case, make_archive

EMPHYSEMA = Code("RP-EI-950", "99RADPILOT", "Emphysema index LAA-950")
VOLUME = Code("118565006", "SCT", "Volume")
LUNG = Code("39607008", "SCT", "Lung")


class LungReviewed(Analysis):
    name: ClassVar[str] = "lung_ct"
    version: ClassVar[str] = "1.2.0"
    outputs = (
        OutputSpec.of("emphysema_index", "Emphysema (LAA-950)", "%", EMPHYSEMA),
        OutputSpec.of("lung_volume_ml", "Lung volume", "mL", VOLUME, LUNG),
    )

    def check_input(self, volume: object) -> None:  # only the declarations are read here
        raise NotImplementedError

    def run(self, volume: object) -> object:
        raise NotImplementedError


def test_review_decisions_set_the_state_and_value_a_report_quotes(tmp_path: Path) -> None:
    archive = make_archive(tmp_path)
    case = add_ai_result(archive)
    measurements = [
        {"name": m.name.meaning, "value": m.value, "unit": m.unit.value, "site": m.finding_site.meaning if m.finding_site else ""}
        for m in build_ct_case().findings.measurements
    ]
    with Session(archive.engine) as session, session.begin():
        result = {"sop_instance_uids": [case.seg_uid, case.sr_uid, case.key_image_uid], "details": {"measurements": measurements}}
        session.execute(update(Job).where(Job.id == case.job_id).values(result=result))
    review = ReviewService(archive)
    items = {(i.finding.name, i.finding.value): i.finding.id for i in review.study(case.study_uid).items}
    review.decide(RADIOLOGIST, case.study_uid, items[("Emphysema index LAA-950", 4.2)], "edit", reason="re-measured", value=9.5)
    review.decide(RADIOLOGIST, case.study_uid, items[("Volume", 0.147)], "reject", reason="wrong structure")

    pending = {f.output: f for f in study_findings(JobStore(archive.engine), {"lung_ct": LungReviewed()}, case.study_uid)}
    reviewed = {f.output: f for f in study_findings(JobStore(archive.engine), {"lung_ct": LungReviewed()}, case.study_uid, review)}
    archive.close()

    assert {f.state for f in pending.values()} == {FindingState.PENDING}
    assert reviewed["emphysema_index"].state is FindingState.EDITED and reviewed["emphysema_index"].shown_value == 9.5
    assert reviewed["lung_volume_ml"].state is FindingState.REJECTED
