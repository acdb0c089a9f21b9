"""Research export with validation labels and a DICOMweb target: decisions keyed by pseudonymised UIDs that resolve."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import httpx
import pydicom
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from radpilot.archive import Archive
from radpilot.dicom.deid import DeidConfig, Deidentifier, DeidKey, MappingStore, Option
from radpilot.engine.review import ReviewService
from radpilot.pacs import stow_client
from radpilot.pacs.dicomweb import make_dicomweb_router
from radpilot.pacs.research_export import DicomwebTarget, research_export
from radpilot.security.audit import events_since
from radpilot.security.principal import Principal, Role
from tests.review_support import RADIOLOGIST, ReviewCase, add_ai_result, make_archive

RESEARCHER = Principal("rita", Role.RESEARCHER)
SHIFTED = DeidConfig(options=frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}))


@pytest.fixture
def case(tmp_path: Path) -> ReviewCase:
    return add_ai_result(make_archive(tmp_path / "source"))


def _review(case: ReviewCase, patient_id: str) -> ReviewService:
    service = ReviewService(case.archive)
    service.decide(RADIOLOGIST, case.study_uid, case.findings["Diameter"], "edit", reason=f"measured 7 mm, see {patient_id}", value=7.0)
    service.decide(RADIOLOGIST, case.study_uid, case.findings["Volume"], "reject", reason="false positive")
    for finding in service.study(case.study_uid).items:
        if finding.decision is None:
            service.decide(RADIOLOGIST, case.study_uid, finding.finding.id, "accept")
    service.complete(RADIOLOGIST, case.study_uid)
    return service


def _exported(out: Path) -> dict[str, pydicom.Dataset]:
    return {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(f) for f in out.rglob("*.dcm"))}


def test_labels_carry_each_decision_keyed_by_pseudonymised_uids_that_resolve_among_the_exported_instances(
    case: ReviewCase, tmp_path: Path
) -> None:
    source = pydicom.dcmread(case.archive.path_of(case.archive.instances_of(case.study_uid)[0]))
    patient_id = str(source.PatientID)
    service = _review(case, patient_id)
    out, key = tmp_path / "export", DeidKey.generate()
    mapping = MappingStore(tmp_path / "secret" / "map.fernet", key)

    result = research_export(
        case.archive, RESEARCHER, {"PatientID": patient_id}, out, Deidentifier(key, SHIFTED), mapping, labels=service.labels
    )

    files = _exported(out)
    text = (out / "labels.json").read_text()
    labels = json.loads(text)
    assert labels["format"] == "radpilot-research-labels/1" and labels["review_times"] == "shifted per patient"
    assert list(labels["studies"]) == result.studies == json.loads((out / "manifest.json").read_text())["studies"]
    assert patient_id not in text and RADIOLOGIST.name not in text and case.study_uid not in text and case.sr_uid not in text
    study = labels["studies"][result.studies[0]]
    assert study["patient"] == next(iter(files.values())).PatientID

    [ai] = study["ai_results"]
    assert ai["sr_uid"] in files and ai["seg_uid"] in files and ai["key_image_uid"] is None  # the key image is refused (burned-in text)
    assert files[ai["sr_uid"]].Modality == "SR" and files[ai["seg_uid"]].Modality == "SEG"
    by_id = {f["finding_id"]: f for f in study["findings"]}
    by_name = {name: by_id[finding_id] for name, finding_id in case.findings.items()}
    assert by_name["Diameter"]["decision"] == "edited" and by_name["Diameter"]["edited"] == {"value": 7.0, "unit": "mm"}
    assert by_name["Diameter"]["value"] == 6.0 and by_name["Diameter"]["reason"] == "measured 7 mm, see"
    assert by_name["Volume"]["decision"] == "rejected" and by_name["Volume"]["reason"] == "false positive"
    assert {f["decision"] for f in study["findings"]} == {"accepted", "edited", "rejected"}
    assert all(f["ai_sr_uid"] == ai["sr_uid"] for f in study["findings"])
    reviewers = {f["reviewer"] for f in study["findings"]}
    assert len(reviewers) == 1 and next(iter(reviewers)).startswith("RV")
    assert mapping.load().persons[next(iter(reviewers))] == RADIOLOGIST.name  # the way back stays outside the export

    # Review times move back by the patient's own shift, like the images' dates, so intervals are kept.
    shift = datetime.strptime(str(source.StudyDate), "%Y%m%d") - datetime.strptime(str(files[ai["seg_uid"]].StudyDate), "%Y%m%d")
    decided = service.study(case.study_uid).items[0].decision
    assert decided is not None
    assert datetime.fromisoformat(study["findings"][0]["decided_at"]) == decided.decided_at - shift

    # The verified SR is the reference label: exported, and it points at the exported AI SR.
    [reference] = study["reference_labels"]
    verified = files[reference["sop_instance_uid"]]
    assert reference["ai_sr_uid"] == ai["sr_uid"] and verified.VerificationFlag == "VERIFIED"
    predecessors = {
        ref.ReferencedSOPInstanceUID
        for item in verified.PredecessorDocumentsSequence
        for series in item.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert predecessors == {ai["sr_uid"]}

    # The AI objects' own references resolve too: the SEG's source images and the SR's SEG and images.
    seg = files[ai["seg_uid"]]
    seg_refs = {r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    sr_refs = {
        r.ReferencedSOPInstanceUID
        for item in files[ai["sr_uid"]].CurrentRequestedProcedureEvidenceSequence
        for s in item.ReferencedSeriesSequence
        for r in s.ReferencedSOPSequence
    }
    assert seg_refs and seg_refs <= set(files)
    assert ai["seg_uid"] in sr_refs and sr_refs <= set(files)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["labels"] == "labels.json" and manifest["labelled_findings"] == len(study["findings"]) == 5


def test_without_a_date_option_review_times_are_dropped_and_unreviewed_findings_say_so(case: ReviewCase, tmp_path: Path) -> None:
    service = ReviewService(case.archive)
    service.decide(RADIOLOGIST, case.study_uid, case.findings["Diameter"], "accept")
    key = DeidKey.generate()
    research_export(
        case.archive,
        RESEARCHER,
        {"StudyInstanceUID": "*"},
        tmp_path / "out",
        Deidentifier(key),
        MappingStore(tmp_path / "m.fernet", key),
        labels=service.labels,
    )
    labels = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert labels["review_times"] == "dropped"
    [study] = labels["studies"].values()
    assert all(f["decided_at"] is None for f in study["findings"])
    assert sorted((f["decision"] or "none") for f in study["findings"]) == ["accepted", "none", "none", "none", "none"]
    assert study["reference_labels"] == []


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Archive, list[int]]:
    """A second RadPilot archive behind its STOW-RS route, reached in process; answers 503 to the first request."""
    receiver = Archive(tmp_path / "target" / "dicom", f"sqlite:///{tmp_path / 'target.sqlite3'}", durability="none")
    app = FastAPI()
    app.include_router(make_dicomweb_router(receiver), prefix="/dicomweb")
    client = TestClient(app)
    statuses: list[int] = []

    def post(url: str, *, content: Iterable[bytes], headers: dict[str, str], timeout: float) -> httpx.Response:
        body = b"".join(content)
        assert headers["Authorization"] == "Bearer s3cret"
        if not statuses:
            statuses.append(503)
            return httpx.Response(503, text="busy")
        response = client.post(url.removeprefix("http://target"), content=body, headers=headers)
        statuses.append(response.status_code)
        return response

    monkeypatch.setattr(stow_client.httpx, "post", post)
    return receiver, statuses


def test_dicomweb_target_receives_the_deidentified_instances_after_a_transient_error_and_the_manifest_stays_local(
    case: ReviewCase, tmp_path: Path, target: tuple[Archive, list[int]]
) -> None:
    receiver, statuses = target
    patient_id = str(pydicom.dcmread(case.archive.path_of(case.archive.instances_of(case.study_uid)[0])).PatientID)
    key, out = DeidKey.generate(), tmp_path / "out"
    result = research_export(
        case.archive,
        RESEARCHER,
        {"PatientID": patient_id},
        out,
        Deidentifier(key),
        MappingStore(tmp_path / "m.fernet", key),
        labels=ReviewService(case.archive).labels,
        dicomweb=DicomwebTarget("http://target/dicomweb", "s3cret", name="research-pacs", backoff_s=0.01),
        write_instances=False,
    )
    assert statuses[0] == 503 and set(statuses[1:]) == {200}
    assert result.sent == result.written == receiver.instance_count() > 0 and not result.failed
    assert not list(out.rglob("*.dcm")) and {p.name for p in out.iterdir()} == {"manifest.json", "labels.json"}
    assert receiver.instances_of(case.study_uid) == []  # only pseudonymised UIDs arrive
    [study_uid] = result.studies
    assert all(patient_id.encode() not in receiver.path_of(i).read_bytes() for i in receiver.instances_of(study_uid))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["destination"] == {"folder": False, "dicomweb": "research-pacs"} and manifest["instances_sent"] == result.sent
    [event] = [e for e in events_since(case.archive.engine) if e.action == "export.research"]
    assert event.details["dicomweb"] == "research-pacs" and event.details["sent"] == result.sent
    receiver.close()


def test_an_instance_the_target_refuses_is_named_and_the_others_are_sent(
    case: ReviewCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    singles: list[int] = []

    def post(url: str, *, content: Iterable[bytes], headers: dict[str, str], timeout: float) -> httpx.Response:
        parts = b"".join(content).count(b"Content-Type: application/dicom")
        if parts > 1:  # the server refuses a batch without saying which instance ...
            return httpx.Response(400, text="bad instance")
        singles.append(parts)
        if len(singles) == 3:  # ... because of one of them
            return httpx.Response(400, text="bad instance")
        return httpx.Response(200, json={})

    monkeypatch.setattr(stow_client.httpx, "post", post)
    key = DeidKey.generate()
    result = research_export(
        case.archive,
        RESEARCHER,
        {"StudyInstanceUID": "*"},
        tmp_path / "out",
        Deidentifier(key),
        MappingStore(tmp_path / "m.fernet", key),
        dicomweb=DicomwebTarget("http://target/dicomweb", backoff_s=0.01),
    )
    [failure] = result.failed
    assert failure["instance"].startswith("2.25.") and "HTTP 400: bad instance" in failure["reason"]
    assert result.sent == result.written - 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["not_sent"] == [failure]
    assert [e.outcome for e in events_since(case.archive.engine) if e.action == "export.research"] == ["failure"]


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"00081198": "x"}', b'{"00081198": {"Value": ["x", {"00081155": 5}]}}', b"[1, 2]", b"\xff\xfe"],
)
def test_malformed_stow_answers_are_stow_errors_naming_the_status(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, body: bytes) -> None:
    monkeypatch.setattr(stow_client.httpx, "post", lambda url, **kw: httpx.Response(400, content=body))
    path = tmp_path / "x.dcm"
    path.write_bytes(b"\0" * 10)
    with pytest.raises(stow_client.StowError, match="HTTP 400") as info:
        stow_client.stow("http://target/dicomweb", [path])
    assert not info.value.transient
