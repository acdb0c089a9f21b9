"""A signed report reaches real peers through the outbox: Orthanc as SR (dciodvfy clean), an MLLP listener as
ORU^R01 (AA), a FHIR endpoint as a valid DiagnosticReport; an AE answer is retried and reported as failed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from hl7apy.parser import parse_message

from radpilot.archive import Archive
from radpilot.config import Hl7Destination
from radpilot.db import utcnow
from radpilot.engine.jobs import RetryPolicy
from radpilot.engine.outbox import Outbox, make_message_senders, make_sender
from radpilot.reports.service import ReportService
from tests.fixtures.radpilot import make_settings, orthanc_node
from tests.helpers import dciodvfy_errors, wait_for
from tests.report_factories import LUNG_MEASUREMENTS, RADIOLOGIST, record_finished_job, store_study

pytestmark = pytest.mark.integration


def _sign_report(service: ReportService, destinations=()) -> tuple[str, object]:
    study_uid, series_uid, _ = store_study(service.archive)
    record_finished_job(service.archive, study_uid, series_uid, LUNG_MEASUREMENTS, destinations=destinations)
    report = service.create(study_uid, "chest_ct", RADIOLOGIST)
    service.store.accept_phrases(report.id, None, RADIOLOGIST)
    service.store.edit_section(report.id, "impression", "Mild emphysema.", RADIOLOGIST)
    return study_uid, service.sign(report.id, RADIOLOGIST, confirm=True)


def test_signed_report_arrives_in_orthanc_as_sr_at_the_mllp_listener_as_oru_and_as_fhir(
    tmp_path: Path, orthanc, clean_orthanc, mllp_listener, fhir_server
) -> None:
    settings = make_settings(
        tmp_path,
        nodes=[orthanc_node(orthanc)],
        hl7_destinations=[Hl7Destination(name="ris", host=mllp_listener.host, port=mllp_listener.port, receiving_application="TESTRIS")],
        fhir_base_url=fhir_server.base_url,
    )
    archive = Archive.from_settings(settings)
    try:
        service = ReportService(settings, archive)
        study_uid, report = _sign_report(service, destinations=["orthanc"])
        outbox = Outbox(archive, make_sender(settings), message_senders=make_message_senders(settings))
        assert outbox.run_due() == 3
        deliveries = service.deliveries(report)
        assert {(d["kind"], d["destination"], d["state"]) for d in deliveries} == {
            ("dicom", "orthanc", "done"),
            ("hl7", "ris", "done"),
            ("fhir", "fhir", "done"),
        }

        sr_file = tmp_path / "sr-from-orthanc.dcm"
        sr_file.write_bytes(orthanc.instance_file(orthanc.resource_id(report.sr_sop_instance_uid)))
        sr = pydicom.dcmread(sr_file)
        assert (sr.StudyInstanceUID, sr.VerificationFlag, sr.Modality) == (study_uid, "VERIFIED", "SR")
        assert dciodvfy_errors(sr_file) == []

        [oru_text] = mllp_listener.received
        oru = parse_message(oru_text, find_groups=False)
        assert oru.msh.msh_9.value == "ORU^R01^ORU_R01" and oru.msh.msh_5.value == "TESTRIS"
        assert any(s.name == "OBX" and s.obx_5.value == "Mild emphysema." for s in oru.children)

        [bundle] = fhir_server.received
        [diagnostic_report] = [e.resource for e in bundle.entry if e.resource.get_resource_type() == "DiagnosticReport"]
        assert diagnostic_report.status == "final" and diagnostic_report.conclusion == "Mild emphysema."
        assert diagnostic_report.imagingStudy[0].identifier.value == f"urn:oid:{study_uid}"
        assert fhir_server.rejected == []
    finally:
        archive.close()


def test_an_ae_answer_is_retried_then_reported_as_failed(tmp_path: Path, mllp_listener) -> None:
    mllp_listener.answers = ["AE"]
    settings = make_settings(
        tmp_path,
        hl7_destinations=[Hl7Destination(name="ris", host=mllp_listener.host, port=mllp_listener.port)],
        report_delivery_max_attempts=3,
    )
    archive = Archive.from_settings(settings)
    try:
        service = ReportService(settings, archive)
        _, report = _sign_report(service)
        outbox = Outbox(
            archive,
            make_sender(settings),
            message_senders=make_message_senders(settings),
            backoff=RetryPolicy(base_s=5, factor=2, cap_s=60),
        )
        now = utcnow()
        for attempt in range(1, 4):
            assert outbox.run_due(now) == 0
            [delivery] = service.deliveries(report)
            assert delivery["attempts"] == attempt
            now += timedelta(minutes=2)
        assert len(mllp_listener.received) == 3
        assert delivery["state"] == "failed"
        assert "answered AE" in delivery["last_error"] and "refuses this message" in delivery["last_error"]
        assert outbox.run_due(now + timedelta(hours=1)) == 0 and len(mllp_listener.received) == 3
    finally:
        archive.close()


def test_an_ae_then_aa_is_delivered_on_the_retry(tmp_path: Path, mllp_listener) -> None:
    mllp_listener.answers = ["AE", "AA"]
    settings = make_settings(tmp_path, hl7_destinations=[Hl7Destination(name="ris", host=mllp_listener.host, port=mllp_listener.port)])
    archive = Archive.from_settings(settings)
    try:
        service = ReportService(settings, archive)
        _, report = _sign_report(service)
        outbox = Outbox(archive, make_sender(settings), message_senders=make_message_senders(settings))
        assert outbox.run_due() == 0
        assert outbox.run_due(utcnow() + timedelta(minutes=10)) == 1
        [delivery] = service.deliveries(report)
        assert (delivery["state"], delivery["attempts"]) == ("done", 2)
    finally:
        archive.close()


def test_radpilot_serve_delivers_a_signed_report_with_its_own_outbox(radpilot_factory, mllp_listener) -> None:
    node = radpilot_factory(hl7_destinations=[Hl7Destination(name="ris", host=mllp_listener.host, port=mllp_listener.port)])
    service = ReportService(node.settings, node.archive)
    _, report = _sign_report(service)
    wait_for(lambda: mllp_listener.received, timeout_s=30, what="the ORU at the MLLP listener")
    wait_for(lambda: service.deliveries(report)[0]["state"] == "done", timeout_s=10, what="the delivery marked done")
