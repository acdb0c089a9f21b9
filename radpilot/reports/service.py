"""The reports of a running RadPilot: create from a template and the study's AI findings, sign and deliver, export.

Signing stores the report's DICOM SR in the archive (as a derived object of the study) and, in
the transaction that signs the report, queues its deliveries in the engine's outbox: the SR to
the study's destinations (those of the rules that routed its series), the ORU^R01 to every
configured HL7 destination and the FHIR Bundle to the configured FHIR server. Signed and
queued happen together or not at all; the outbox retries each delivery until it is taken (HL7
and FHIR up to ``report_delivery_max_attempts``, then marked failed with the peer's answer).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from radpilot.analyses import discover_analyses
from radpilot.archive import Archive, StoreOutcome
from radpilot.config import Settings
from radpilot.contract import Analysis
from radpilot.db import utcnow
from radpilot.engine.job_store import JobStore
from radpilot.engine.outbox import add_delivery, add_message_delivery
from radpilot.engine.outbox_models import Delivery
from radpilot.engine.review import ReviewService
from radpilot.reports.findings import ReportFinding, study_findings
from radpilot.reports.outputs import OutputError, StudyContext, build_fhir, build_oru, build_pdf, build_sr
from radpilot.reports.store import ReportError, ReportNotFound, ReportStore, ReportView
from radpilot.reports.templates import ReportTemplate, TemplateError, TemplateLibrary
from radpilot.security.principal import Principal

logger = logging.getLogger(__name__)

REPORT_SOURCE_AE = "RADPILOT-RPT"
FORMATS = ("sr", "fhir", "hl7", "pdf")
MEDIA_TYPES = {"sr": "application/dicom", "fhir": "application/fhir+json", "hl7": "x-application/hl7-v2+er7", "pdf": "application/pdf"}


class StudyNotFound(ReportError):
    pass


def _to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class ReportService:
    """Reports over one archive, with the settings that name where signed reports go."""

    def __init__(self, settings: Settings, archive: Archive, analyses: Mapping[str, Analysis] | None = None) -> None:
        self.settings = settings
        self.archive = archive
        self.analyses = dict(analyses) if analyses is not None else discover_analyses()
        self.library = TemplateLibrary(self.analyses, settings.report_templates_dir)
        self.store = ReportStore(archive.engine)
        self.jobs = JobStore(archive.engine)

    # ---- the study -----------------------------------------------------------------------
    def _source_instances(self, study_uid: str) -> list:
        instances = [i for i in self.archive.instances_of(study_uid) if not getattr(i, "derived", False)]
        if not instances:
            raise StudyNotFound(f"study {study_uid} is not in the archive")
        return instances

    def study_context(self, study_uid: str) -> StudyContext:
        first = self._source_instances(study_uid)[0]
        return StudyContext.from_dataset(pydicom.dcmread(self.archive.path_of(first), stop_before_pixels=True))

    def evidence(self, study_uid: str) -> list[Dataset]:
        return [pydicom.dcmread(self.archive.path_of(i), stop_before_pixels=True) for i in self._source_instances(study_uid)]

    def findings(self, study_uid: str) -> list[ReportFinding]:
        return study_findings(self.jobs, self.analyses, study_uid, ReviewService(self.archive, organisation=self.settings.organisation))

    def destinations(self, study_uid: str) -> list[str]:
        """The DICOM destinations of the study: those of the rules that routed its series (in order, once each)."""
        seen: dict[str, None] = {}
        for job in self.jobs.done_jobs_of_study(study_uid):
            for destination in job.destinations:
                seen.setdefault(destination, None)
        return list(seen)

    # ---- reports -------------------------------------------------------------------------
    def template_for(self, study_uid: str, name: str | None) -> ReportTemplate:
        context = self.study_context(study_uid)  # StudyNotFound for a study the archive does not hold
        if name:
            return self.library.get(name)
        template = self.library.suggest([context.modality], f"{context.study_description} {context.body_part}")
        if template is None:
            raise TemplateError(f"no report template is for modality {context.modality!r}; name one ({', '.join(self.library.templates)})")
        return template

    def create(self, study_uid: str, template_name: str | None, who: Principal) -> ReportView:
        template = self.template_for(study_uid, template_name)
        return self.store.create(study_uid, template, self.findings(study_uid), who)

    def sign(self, report_id: int, who: Principal, *, confirm: bool) -> ReportView:
        """Sign the report: its SR is stored first, then signing and the queued deliveries commit together.

        An SR stored for a signing that then fails stays in the archive unreferenced (its UID is
        the report version's own); the next signing of that version stores its own content.
        """
        current = self.store.get(report_id)
        template = self.library.get(current.template)
        evidence = self.evidence(current.study_instance_uid)
        context = StudyContext.from_dataset(evidence[0])
        predecessor = self._previous_sr(current)
        destinations = self.destinations(current.study_instance_uid)
        signed_at = utcnow()
        prospective = self.store.as_signed(report_id, who, confirm=confirm, signed_at=signed_at)
        sr = build_sr(prospective, template, evidence, organization=self.settings.organisation, predecessor=predecessor)
        result = self.archive.store_file_bytes(_to_bytes(sr), source_ae_title=REPORT_SOURCE_AE, derived=True)
        if not (result.outcome.accepted or result.outcome is StoreOutcome.CONFLICT):
            raise ReportError(f"the report's SR could not be stored: {result.message}")

        def on_sign(session: Session, report: ReportView) -> str | None:
            reference = f"report:{report.id}:v{report.version}"
            limit = self.settings.report_delivery_max_attempts
            for destination in destinations:
                add_delivery(session, destination, [result.sop_instance_uid], reference=reference)
            for peer in self.settings.hl7_destinations:
                oru = build_oru(
                    report,
                    template,
                    context,
                    sending_application=self.settings.hl7_sending_application,
                    sending_facility=self.settings.hl7_sending_facility,
                    receiving_application=peer.receiving_application,
                    receiving_facility=peer.receiving_facility,
                )
                add_message_delivery(session, "hl7", peer.name, oru, reference=reference, max_attempts=limit)
            if self.settings.fhir_base_url:
                add_message_delivery(
                    session, "fhir", "fhir", build_fhir(report, template, context), reference=reference, max_attempts=limit
                )
            return result.sop_instance_uid

        return self.store.sign(report_id, who, confirm=confirm, on_sign=on_sign, signed_at=signed_at)

    def _previous_sr(self, report: ReportView) -> Dataset | None:
        if report.version <= 1:
            return None
        versions = self.store.versions(report.id)
        uid = versions[-1]["sr_sop_instance_uid"] if versions else None
        if not uid:
            return None
        instances = self.archive.instances_by_uid([uid])
        return pydicom.dcmread(self.archive.path_of(instances[0]), stop_before_pixels=True) if instances else None

    def deliveries(self, report: ReportView) -> list[dict[str, Any]]:
        """The outbox deliveries of every signed version of the report, newest first."""
        with Session(self.archive.engine) as session:
            rows = session.scalars(
                select(Delivery).where(Delivery.reference.like(f"report:{report.id}:v%")).order_by(Delivery.id.desc())
            ).all()
            return [
                {
                    "id": d.id,
                    "reference": d.reference,
                    "kind": d.kind,
                    "destination": d.destination,
                    "state": d.state,
                    "attempts": d.attempts,
                    "max_attempts": d.max_attempts,
                    "last_error": d.last_error,
                }
                for d in rows
            ]

    # ---- export --------------------------------------------------------------------------
    def signed_report_of_study(self, study_uid: str) -> ReportView:
        report = self.store.for_study(study_uid)
        if report is None:
            raise ReportNotFound(f"study {study_uid} has no report")
        if not report.signed:
            raise OutputError(f"the report of study {study_uid} is {report.status}: only a signed report is exported")
        return report

    def export(self, study_uid: str, fmt: str) -> bytes:
        """The study's signed report as ``sr``, ``fhir``, ``hl7`` or ``pdf`` bytes."""
        if fmt not in FORMATS:
            raise OutputError(f"unknown format {fmt!r}; the formats are {', '.join(FORMATS)}")
        report = self.signed_report_of_study(study_uid)
        template = self.library.get(report.template)
        if fmt == "sr":
            if report.sr_sop_instance_uid:
                instances = self.archive.instances_by_uid([report.sr_sop_instance_uid])
                if instances:
                    return self.archive.read_bytes(instances[0])
            return _to_bytes(
                build_sr(
                    report,
                    template,
                    self.evidence(study_uid),
                    organization=self.settings.organisation,
                    predecessor=self._previous_sr(report),
                )
            )
        context = self.study_context(study_uid)
        if fmt == "fhir":
            return build_fhir(report, template, context)
        if fmt == "hl7":
            return build_oru(
                report,
                template,
                context,
                sending_application=self.settings.hl7_sending_application,
                sending_facility=self.settings.hl7_sending_facility,
            )
        return build_pdf(report, template, context)
