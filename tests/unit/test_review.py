"""The findings review domain: decisions stored and audited, the verified SR, the feedback figures."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from radpilot.dicom.encoders.verified_sr import Verdict, VerifyingObserver, encode_verified_report, report_findings
from radpilot.engine.outbox_models import Delivery
from radpilot.engine.review import MAX_REASON_CHARS, ReviewError, ReviewService, UnknownFinding, review_feedback
from radpilot.security.audit import events
from radpilot.security.principal import RoleRefused
from tests.review_support import RADIOLOGIST, TECHNOLOGIST, ReviewCase, add_ai_result, make_archive


@pytest.fixture
def case(tmp_path: Path) -> ReviewCase:
    return add_ai_result(make_archive(tmp_path))


@pytest.fixture
def service(case: ReviewCase) -> ReviewService:
    return ReviewService(case.archive, organisation="General Hospital")


def _items(ds: Dataset) -> list[Dataset]:
    found = []
    for item in ds.get("ContentSequence", []):
        found.append(item)
        found.extend(_items(item))
    return found


def _nums(ds: Dataset) -> list[tuple[str, float]]:
    return [
        (str(i.ConceptNameCodeSequence[0].CodeMeaning), float(i.MeasuredValueSequence[0].NumericValue))
        for i in _items(ds)
        if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue != "111012"
    ]


def test_findings_of_an_ai_report_have_ids_that_stay_the_same_when_read_again(case: ReviewCase, service: ReviewService) -> None:
    first = service.study(case.study_uid)
    again = service.study(case.study_uid)
    assert [i.finding.id for i in first.items] == [i.finding.id for i in again.items]
    assert len({i.finding.id for i in first.items}) == len(first.items) == 5
    kinds = {(i.finding.name, i.finding.kind) for i in first.items}
    assert ("Diameter", "measurement") in kinds and ("Pulmonary emphysema", "qualitative") in kinds
    diameter = next(i.finding for i in first.items if i.finding.name == "Diameter")
    assert diameter.value == 6.0 and diameter.unit == "mm" and diameter.confidence == pytest.approx(0.91)
    assert first.results[0].key_image_uid == case.key_image_uid and first.results[0].seg_uid == case.seg_uid


def test_a_decision_is_stored_with_who_and_when_and_audited(case: ReviewCase, service: ReviewService) -> None:
    finding = case.findings["Diameter"]
    item = service.decide(RADIOLOGIST, case.study_uid, finding, "edit", reason="measured 7 mm on the lung window", value=7.0)
    assert item.decision.decided_by == RADIOLOGIST.name and item.decision.edited == {"value": 7.0, "unit": "mm"}
    shown = service.study(case.study_uid).item(finding)
    assert shown.decision is not None and shown.decision.decision == "edit" and shown.decision.decided_at is not None
    [event] = events(case.archive.engine, action_prefix="finding.")
    assert event.who == RADIOLOGIST.name and event.action == "finding.edit" and finding in event.target
    assert event.reason == "measured 7 mm on the lung window" and event.details["original"]["value"] == 6.0


def test_a_later_decision_replaces_the_earlier_one_and_both_stay_in_the_audit_trail(case: ReviewCase, service: ReviewService) -> None:
    finding = case.findings["Volume"]
    service.decide(RADIOLOGIST, case.study_uid, finding, "reject", reason="false positive")
    service.decide(RADIOLOGIST, case.study_uid, finding, "accept")
    assert service.study(case.study_uid).item(finding).decision.decision == "accept"
    assert [e.action for e in events(case.archive.engine, action_prefix="finding.")] == ["finding.accept", "finding.reject"]


@pytest.mark.parametrize(
    ("decision", "kwargs", "message"),
    [
        ("approve", {}, "unknown decision 'approve'"),
        (["accept"], {}, "unknown decision"),
        ("reject", {}, "a reason is required"),
        ("reject", {"reason": "   "}, "a reason is required"),
        ("edit", {"reason": "too big"}, "needs a finite number"),
        ("edit", {"reason": "too big", "value": float("nan")}, "needs a finite number"),
        ("edit", {"reason": "too big", "value": "7"}, "needs a finite number"),
        ("edit", {"reason": "too big", "value": True}, "needs a finite number"),
        ("edit", {"reason": "too big", "category": "Absent"}, "needs a finite number"),
        ("reject", {"reason": "x" * (MAX_REASON_CHARS + 1)}, "at most 500"),
        ("reject", {"reason": "bad\x00byte"}, "control characters"),
        ("reject", {"reason": 42}, "reason must be text"),
        ("accept", {"value": 3.0}, "goes with an edit"),
    ],
)
def test_bad_decisions_are_refused_with_a_reason_and_nothing_is_stored(
    case: ReviewCase, service: ReviewService, decision: object, kwargs: dict, message: str
) -> None:
    with pytest.raises(ReviewError, match=message):
        service.decide(RADIOLOGIST, case.study_uid, case.findings["Diameter"], decision, **kwargs)
    assert service.study(case.study_uid).item(case.findings["Diameter"]).decision is None
    assert events(case.archive.engine, action_prefix="finding.") == []


def test_a_category_edit_takes_one_of_the_offered_categories(case: ReviewCase, service: ReviewService) -> None:
    finding = case.findings["Pulmonary emphysema"]
    with pytest.raises(ReviewError, match="needs a category"):
        service.decide(RADIOLOGIST, case.study_uid, finding, "edit", reason="no", category="Maybe")
    with pytest.raises(ReviewError, match="needs a category"):
        service.decide(RADIOLOGIST, case.study_uid, finding, "edit", reason="no", category=["Absent"])
    item = service.decide(RADIOLOGIST, case.study_uid, finding, "edit", reason="no emphysema", category="Absent")
    assert item.decision.edited == {"category": "Absent"}


def test_unknown_findings_and_other_roles_are_refused(case: ReviewCase, service: ReviewService) -> None:
    with pytest.raises(UnknownFinding, match="no AI finding 'nope'"):
        service.decide(RADIOLOGIST, case.study_uid, "nope", "accept")
    with pytest.raises(UnknownFinding):
        service.decide(RADIOLOGIST, "1.2.3.4", case.findings["Volume"], "accept")
    with pytest.raises(RoleRefused, match="radiologist"):
        service.decide(TECHNOLOGIST, case.study_uid, case.findings["Volume"], "accept")
    with pytest.raises(RoleRefused):
        service.complete(TECHNOLOGIST, case.study_uid)


def _decide_all(case: ReviewCase, service: ReviewService) -> None:
    service.decide(RADIOLOGIST, case.study_uid, case.findings["Volume"], "reject", reason="False positive")
    service.decide(RADIOLOGIST, case.study_uid, case.findings["Diameter"], "edit", reason="re-measured", value=7.5)
    service.decide(RADIOLOGIST, case.study_uid, case.findings["Emphysema index LAA-950"], "accept")
    service.decide(RADIOLOGIST, case.study_uid, case.findings["Pulmonary emphysema"], "edit", reason="none seen", category="Absent")
    rest = [i.finding.id for i in service.study(case.study_uid).items if i.decision is None]
    for finding in rest:
        service.decide(RADIOLOGIST, case.study_uid, finding, "accept")


def test_completing_with_undecided_findings_is_refused_and_writes_nothing(case: ReviewCase, service: ReviewService) -> None:
    service.decide(RADIOLOGIST, case.study_uid, case.findings["Volume"], "accept")
    count = case.archive.instance_count()
    with pytest.raises(ReviewError, match="4 finding\\(s\\) have no decision yet"):
        service.complete(RADIOLOGIST, case.study_uid)
    assert case.archive.instance_count() == count


def test_the_verified_sr_keeps_accepted_and_edited_findings_and_is_queued_for_the_destinations(
    case: ReviewCase, service: ReviewService
) -> None:
    _decide_all(case, service)
    [done] = service.complete(RADIOLOGIST, case.study_uid)
    assert done["destinations"] == ["pacs"] and done["instance_number"] == 1
    [instance] = case.archive.instances_by_uid([done["verified_sr_uid"]])
    sr = pydicom.dcmread(case.archive.path_of(instance))
    assert sr.VerificationFlag == "VERIFIED" and sr.PreliminaryFlag == "FINAL"
    assert sr.StudyInstanceUID == case.study_uid and sr.SOPInstanceUID != case.sr_uid
    [observer] = sr.VerifyingObserverSequence
    assert str(observer.VerifyingObserverName) == RADIOLOGIST.name and observer.VerifyingOrganization == "General Hospital"
    assert sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == case.sr_uid
    values = _nums(sr)
    # the first Volume (rejected) is gone; the second segment's Volume was accepted with the rest
    assert ("Diameter", 7.5) in values and ("Emphysema index LAA-950", 4.2) in values
    assert [v for n, v in values if n == "Volume"] == [0.274]
    texts = [str(i.TextValue) for i in _items(sr) if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeValue == "121106"]
    assert any("AI value 6 mm" in t and "re-measured" in t for t in texts)
    categories = [
        str(i.ConceptCodeSequence[0].CodeMeaning)
        for i in _items(sr)
        if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeMeaning == "Pulmonary emphysema"
    ]
    assert categories == ["Absent"]
    assert {f.name for f in report_findings(sr)} == {"Diameter", "Emphysema index LAA-950", "Pulmonary emphysema", "Volume"}
    with Session(case.archive.engine) as session:
        [delivery] = session.scalars(select(Delivery)).all()
    assert delivery.destination == "pacs" and delivery.uids == [done["verified_sr_uid"]]
    assert [e.action for e in events(case.archive.engine, action_prefix="review.")] == ["review.complete"]
    shown = service.study(case.study_uid).to_dict()
    assert shown["completions"][0]["verified_sr_uid"] == done["verified_sr_uid"]


def test_a_second_review_writes_a_new_instance_in_the_same_verified_series(case: ReviewCase, service: ReviewService) -> None:
    _decide_all(case, service)
    [first] = service.complete(RADIOLOGIST, case.study_uid)
    service.decide(RADIOLOGIST, case.study_uid, case.findings["Diameter"], "accept")
    [second] = service.complete(RADIOLOGIST, case.study_uid)
    assert second["instance_number"] == 2 and second["verified_sr_uid"] != first["verified_sr_uid"]
    a, b = (
        pydicom.dcmread(case.archive.path_of(i))
        for i in case.archive.instances_by_uid([first["verified_sr_uid"], second["verified_sr_uid"]])
    )
    assert a.SeriesInstanceUID == b.SeriesInstanceUID and {a.InstanceNumber, b.InstanceNumber} == {1, 2}


def test_verified_report_refuses_decisions_on_findings_it_does_not_hold(case: ReviewCase) -> None:
    [instance] = case.archive.instances_by_uid([case.sr_uid])
    sr = pydicom.dcmread(case.archive.path_of(instance))
    verdicts = {f.id: Verdict("accept") for f in report_findings(sr)}
    observer = VerifyingObserver("Doe^Jane", "General Hospital")
    with pytest.raises(ValueError, match="not in SR"):
        encode_verified_report(sr, {**verdicts, "ffff": Verdict("accept")}, observer)
    with pytest.raises(ValueError, match="no decision yet"):
        encode_verified_report(sr, dict(list(verdicts.items())[1:]), observer)
    with pytest.raises(ValueError, match="every finding was rejected"):
        encode_verified_report(sr, {k: Verdict("reject", "no") for k in verdicts}, observer)
    buffer = io.BytesIO()
    encode_verified_report(sr, verdicts, observer).save_as(buffer, enforce_file_format=True)
    assert len(report_findings(pydicom.dcmread(io.BytesIO(buffer.getvalue())))) == len(verdicts)


def test_feedback_counts_the_latest_decision_per_finding_and_the_commonest_rejection_reasons(tmp_path: Path) -> None:
    archive = make_archive(tmp_path)
    case = add_ai_result(archive)
    service = ReviewService(archive)
    ids = [i.finding.id for i in service.study(case.study_uid).items]
    service.decide(RADIOLOGIST, case.study_uid, ids[0], "accept")
    service.decide(RADIOLOGIST, case.study_uid, ids[0], "reject", reason="False positive")  # changed mind: counted once
    service.decide(RADIOLOGIST, case.study_uid, ids[1], "reject", reason="false positive ")
    service.decide(RADIOLOGIST, case.study_uid, ids[2], "reject", reason="wrong location")
    service.decide(RADIOLOGIST, case.study_uid, ids[3], "edit", reason="x", value=1.0) if service.study(case.study_uid).items[
        3
    ].finding.kind == "measurement" else None
    service.decide(RADIOLOGIST, case.study_uid, ids[4], "accept")
    [row] = review_feedback(archive.engine)
    assert (row.analysis, row.version) == ("lung_ct", "1.2.0")
    assert row.rejected == 3 and row.accepted == 1 and row.decided == row.accepted + row.edited + row.rejected
    assert row.top_rejection_reasons[0] == ("false positive", 2)
    assert row.to_dict()["reject_rate"] == pytest.approx(3 / row.decided, abs=1e-4)
    assert review_feedback(archive.engine, analysis="other") == []
