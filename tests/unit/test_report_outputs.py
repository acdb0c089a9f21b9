"""Outputs of a signed report: SR (TID 2000), FHIR Bundle (validated, round-trips), HL7 ORU^R01, PDF; export refuses drafts."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from hl7apy.parser import parse_message

from radpilot.archive import Archive
from radpilot.reports.outputs import OutputError, hl7_escape, parse_fhir_bundle
from radpilot.reports.service import ReportService
from tests.fixtures.radpilot import make_settings
from tests.report_factories import LUNG_MEASUREMENTS, RADIOLOGIST, record_finished_job, store_study


@pytest.fixture
def service(tmp_path: Path):
    settings = make_settings(tmp_path)
    archive = Archive.from_settings(settings)
    yield ReportService(settings, archive)
    archive.close()


@pytest.fixture
def signed(service: ReportService):
    study_uid, series_uid, _ = store_study(service.archive)
    record_finished_job(service.archive, study_uid, series_uid, LUNG_MEASUREMENTS)
    report = service.create(study_uid, "chest_ct", RADIOLOGIST)
    assert "Emphysema: LAA-950 12.3 % of lung volume." in report.sections["findings"]
    service.store.accept_phrases(report.id, None, RADIOLOGIST)
    service.store.edit_section(report.id, "impression", "Mild centrilobular emphysema | no nodule ^ ok & fine.", RADIOLOGIST)
    return service.sign(report.id, RADIOLOGIST, confirm=True)


def test_export_of_an_unsigned_report_is_refused(service: ReportService) -> None:
    study_uid, _, _ = store_study(service.archive)
    service.create(study_uid, "chest_ct", RADIOLOGIST)
    with pytest.raises(OutputError, match="only a signed report"):
        service.export(study_uid, "pdf")
    with pytest.raises(OutputError, match="unknown format"):
        service.export(study_uid, "docx")


def test_signing_stores_a_verified_tid_2000_sr_in_the_study(service: ReportService, signed) -> None:
    data = service.export(signed.study_instance_uid, "sr")
    sr = pydicom.dcmread(io.BytesIO(data))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR
    assert sr.SOPInstanceUID == signed.sr_sop_instance_uid
    assert sr.StudyInstanceUID == signed.study_instance_uid
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "VERIFIED")
    assert sr.VerifyingObserverSequence[0].VerifyingObserverName.family_name == "dr.grey"
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "2000"
    assert sr.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    texts = []
    for item in sr.ContentSequence:
        for child in item.get("ContentSequence", []):
            if child.ValueType == "TEXT":
                texts.append(child.TextValue)
    assert any("Mild centrilobular emphysema" in t for t in texts)
    assert any("LAA-950 12.3 %" in t for t in texts)


def test_sr_is_dciodvfy_clean(service: ReportService, signed, tmp_path: Path) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    path = tmp_path / "report.dcm"
    path.write_bytes(service.export(signed.study_instance_uid, "sr"))
    report = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
    assert errors == []


def test_fhir_bundle_validates_and_round_trips(service: ReportService, signed) -> None:
    data = service.export(signed.study_instance_uid, "fhir")
    bundle = parse_fhir_bundle(data)
    resources = {e.resource.get_resource_type(): e.resource for e in bundle.entry}
    report = resources["DiagnosticReport"]
    assert report.status == "final"
    assert report.imagingStudy[0].identifier.value == f"urn:oid:{signed.study_instance_uid}"
    assert report.conclusion.startswith("Mild centrilobular emphysema")
    observations = [e.resource for e in bundle.entry if e.resource.get_resource_type() == "Observation"]
    values = {o.code.coding[0].code: float(o.valueQuantity.value) for o in observations}
    assert values == {"laa950_percent": pytest.approx(12.3456), "total_lung_volume_ml": pytest.approx(5123.4)}
    assert {r.reference for r in report.result} == {e.fullUrl for e in bundle.entry if e.resource.get_resource_type() == "Observation"}
    assert json.loads(parse_fhir_bundle(data).model_dump_json(exclude_none=True)) == json.loads(data)


def test_oru_is_an_hl7_v251_message_with_the_report_and_escaped_text(service: ReportService, signed) -> None:
    data = service.export(signed.study_instance_uid, "hl7").decode()
    message = parse_message(data, find_groups=False)
    segments = [s.name for s in message.children]
    assert segments[:3] == ["MSH", "PID", "OBR"] and "OBX" in segments
    assert message.msh.msh_9.value == "ORU^R01^ORU_R01" and message.msh.msh_12.value == "2.5.1"
    assert message.pid.pid_3.value.startswith("PAT001")
    assert message.obr.obr_25.value == "F"
    obx_values = [s.obx_5.value for s in message.children if s.name == "OBX"]
    assert hl7_escape("Mild centrilobular emphysema | no nodule ^ ok & fine.") in obx_values
    assert "12.3456" in obx_values


def test_pdf_holds_the_report_text(service: ReportService, signed, tmp_path: Path) -> None:
    data = service.export(signed.study_instance_uid, "pdf")
    assert data.startswith(b"%PDF")
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    path = tmp_path / "report.pdf"
    path.write_bytes(data)
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "Mild centrilobular emphysema" in text
    assert "Emphysema: LAA-950 12.3 % of lung volume." in text
    assert "DOE JANE" in text and "dr.grey" in text


def test_an_amended_report_sr_references_the_signed_one_and_is_corrected_in_hl7(service: ReportService, signed) -> None:
    first_sr = signed.sr_sop_instance_uid
    service.store.amend(signed.id, RADIOLOGIST, reason="typo")
    service.store.edit_section(signed.id, "impression", "Moderate emphysema.", RADIOLOGIST)
    amended = service.sign(signed.id, RADIOLOGIST, confirm=True)
    assert amended.sr_sop_instance_uid != first_sr
    sr = pydicom.dcmread(io.BytesIO(service.export(signed.study_instance_uid, "sr")))
    predecessor = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == first_sr
    assert parse_message(service.export(signed.study_instance_uid, "hl7").decode(), find_groups=False).obr.obr_25.value == "C"
    assert parse_fhir_bundle(service.export(signed.study_instance_uid, "fhir")).entry[-1].resource.status == "amended"


def test_cli_exports_the_signed_report_and_refuses_an_unknown_study(service: ReportService, signed, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from radpilot.cli import app

    settings = service.settings
    out = tmp_path / "report.hl7"
    args = ["--data-dir", str(settings.data_dir)]
    result = CliRunner().invoke(app, ["report", "export", signed.study_instance_uid, "--format", "hl7", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"MSH|^~\\&|RADPILOT")
    missing = CliRunner().invoke(app, ["report", "export", "1.2.3.4", "--format", "pdf", *args])
    assert missing.exit_code == 1 and "has no report" in missing.output
