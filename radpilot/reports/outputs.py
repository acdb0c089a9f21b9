"""The outputs of a signed report: DICOM Enhanced SR (TID 2000), FHIR R4 DiagnosticReport, HL7 v2.5.1 ORU^R01, PDF.

Each builder takes the signed :class:`~radpilot.reports.store.ReportView`, its template and the
study's context (patient and study attributes read from one stored image of the study) and
returns bytes (or a pydicom Dataset for the SR). None of them sends anything: delivery is the
outbox's (:mod:`radpilot.reports.publish`).

FHIR: built and validated with ``fhir.resources.R4B`` (4.3.0, the R4 technical correction;
DiagnosticReport and Observation are R4-compatible) as a transaction Bundle holding one
Observation per quoted verified measurement and the DiagnosticReport that references them and
the ImagingStudy (by its DICOM Study Instance UID identifier).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from fhir.resources.R4B.bundle import Bundle
from fpdf import FPDF
from hl7apy.core import Message
from pydicom.dataset import Dataset

from radpilot import __version__
from radpilot.contract import Code
from radpilot.dicom.encoders.report_sr import ReportMeasurement, encode_report_sr
from radpilot.reports.store import ReportView
from radpilot.reports.templates import SECTION_TITLES, SECTIONS, ReportTemplate

PRIVATE_SCHEME = "99RADPILOT"
FHIR_UNITS = {"": "1", "1": "1", "HU": "[hnsf'U]"}
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
DEJAVU_BOLD = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
#: LOINC codes of the report's sections, for the OBX of the ORU.
SECTION_LOINC = {
    "clinical_information": ("55752-0", "Clinical information"),
    "technique": ("55111-9", "Current imaging procedure description"),
    "comparison": ("18834-2", "Radiology Comparison study"),
    "findings": ("59776-5", "Procedure Findings"),
    "impression": ("19005-8", "Radiology Imaging study [Impression]"),
}


class OutputError(ValueError):
    """A report cannot be exported as asked; the message says why."""


@dataclass(frozen=True)
class StudyContext:
    """The patient and study attributes the outputs carry, read from a stored image of the study."""

    study_instance_uid: str
    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    accession_number: str
    study_date: str
    study_time: str
    study_description: str
    referring_physician: str
    modality: str
    body_part: str = ""

    @classmethod
    def from_dataset(cls, ds: Dataset) -> StudyContext:
        def text(keyword: str) -> str:
            return str(ds.get(keyword, "") or "").strip()

        return cls(
            study_instance_uid=text("StudyInstanceUID"),
            patient_name=text("PatientName"),
            patient_id=text("PatientID"),
            birth_date=text("PatientBirthDate"),
            sex=text("PatientSex"),
            accession_number=text("AccessionNumber"),
            study_date=text("StudyDate"),
            study_time=text("StudyTime"),
            study_description=text("StudyDescription"),
            referring_physician=text("ReferringPhysicianName"),
            modality=text("Modality"),
            body_part=text("BodyPartExamined"),
        )


def _require_signed(report: ReportView) -> None:
    if not report.signed or report.signed_by is None or report.signed_at is None:
        raise OutputError(f"report {report.id} is {report.status}: only a signed report (final or amended) is exported")


def verified_measurements(report: ReportView) -> list:
    """The quoted findings the radiologist verified (accepted or edited; the edited value wins)."""
    accepted_outputs = {p["output"] for p in report.ai_phrases if p["state"] == "accepted"}
    return [f for f in report.findings if f.verified or f.output in accepted_outputs]


def uid_seed(report: ReportView) -> str:
    return f"radpilot-report:{report.study_instance_uid}:{report.id}:v{report.version}"


# ------------------------------------------------------------------------------------- SR
def build_sr(
    report: ReportView, template: ReportTemplate, evidence: list[Dataset], *, organization: str, predecessor: Dataset | None = None
) -> Dataset:
    """The signed report as a DICOM Enhanced SR (TID 2000) in its study."""
    _require_signed(report)
    measurements = [
        ReportMeasurement(Code(f.output[:16], PRIVATE_SCHEME, (f.label or f.output)[:64]), f.shown_value, f.unit)
        for f in verified_measurements(report)
    ]
    return encode_report_sr(
        evidence,
        {s: report.sections.get(s, "") for s in SECTIONS},
        observer_name=report.signed_by or "",
        organization=organization,
        signed_at=report.signed_at,  # type: ignore[arg-type]
        procedure=template.procedure,
        uid_seed=uid_seed(report),
        measurements=measurements,
        predecessor=predecessor,
        instance_number=report.version,
        series_description=f"Report {template.title}"[:64],
    )


# ----------------------------------------------------------------------------------- FHIR
def _fhir_date(value: str) -> str | None:
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return None


def _fhir_status(report: ReportView) -> str:
    return "amended" if report.status == "amended" else "final"


def build_fhir(report: ReportView, template: ReportTemplate, study: StudyContext) -> bytes:
    """A FHIR transaction Bundle: the DiagnosticReport and one Observation per verified measurement, validated."""
    _require_signed(report)
    issued = report.signed_at.isoformat()  # type: ignore[union-attr]
    status = _fhir_status(report)
    subject = {"identifier": {"value": study.patient_id or "unknown"}, "display": study.patient_name.replace("^", " ").strip() or None}
    subject = {k: v for k, v in subject.items() if v}
    study_identifier = {"system": "urn:dicom:uid", "value": f"urn:oid:{report.study_instance_uid}"}
    imaging_study = {"identifier": study_identifier, "type": "ImagingStudy"}
    entries = []
    result_refs = []
    for finding in verified_measurements(report):
        full_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, uid_seed(report) + ':' + finding.finding_id)}"
        unit = FHIR_UNITS.get(finding.unit, finding.unit)
        observation = {
            "resourceType": "Observation",
            "status": status,
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging"}]}],
            "code": {"coding": [{"system": "urn:radpilot:output", "code": finding.output, "display": finding.label or finding.output}]},
            "subject": subject,
            "issued": issued,
            "valueQuantity": {
                "value": round(finding.shown_value, 6),
                "unit": finding.unit or "1",
                "system": "http://unitsofmeasure.org",
                "code": unit,
            },
            "derivedFrom": [imaging_study],
            "method": {"text": f"{finding.analysis} (AI), verified by {report.signed_by}"},
        }
        entries.append({"fullUrl": full_url, "resource": observation, "request": {"method": "POST", "url": "Observation"}})
        result_refs.append({"reference": full_url})
    text = "\n\n".join(f"{SECTION_TITLES[s]}:\n{report.sections[s].strip()}" for s in SECTIONS if report.sections.get(s, "").strip())
    diagnostic_report = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": "urn:radpilot:report", "value": f"{report.id}-v{report.version}"}],
        "status": status,
        "category": [{"coding": [{"system": "http://loinc.org", "code": "LP29684-5", "display": "Radiology"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": template.procedure.value, "display": template.procedure.meaning}]}
        if template.procedure.scheme == "LN"
        else {"text": template.title},
        "subject": subject,
        "effectiveDateTime": _fhir_date(study.study_date),
        "issued": issued,
        "resultsInterpreter": [{"display": report.signed_by}],
        "imagingStudy": [imaging_study],
        "result": result_refs or None,
        "conclusion": report.sections.get("impression", "").strip() or None,
        "presentedForm": [{"contentType": "text/plain; charset=utf-8", "title": template.title, "data": _b64(text)}],
    }
    diagnostic_report = {k: v for k, v in diagnostic_report.items() if v is not None}
    entries.append(
        {
            "fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, uid_seed(report))}",
            "resource": diagnostic_report,
            "request": {"method": "POST", "url": "DiagnosticReport"},
        }
    )
    bundle = Bundle.model_validate({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    return bundle.model_dump_json(exclude_none=True).encode("utf-8")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def parse_fhir_bundle(data: bytes) -> Bundle:
    """A FHIR Bundle read back and validated (what a receiving server does first)."""
    return Bundle.model_validate(json.loads(data))


# ------------------------------------------------------------------------------------ HL7
def hl7_escape(text: str) -> str:
    """Text with the HL7 v2 delimiters escaped (\\E\\ first, then \\F\\ \\S\\ \\T\\ \\R\\)."""
    return (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
        .replace("\r", " ")
    )


def build_oru(
    report: ReportView,
    template: ReportTemplate,
    study: StudyContext,
    *,
    sending_application: str,
    sending_facility: str,
    receiving_application: str = "",
    receiving_facility: str = "",
    control_id: str | None = None,
) -> bytes:
    """An HL7 v2.5.1 ORU^R01: PID, one OBR (the procedure, result status F or C), one OBX per report line and measurement."""
    _require_signed(report)
    signed_at = report.signed_at.astimezone(_dt.UTC)  # type: ignore[union-attr]
    message = Message("ORU_R01", version="2.5.1")
    message.msh.msh_3 = hl7_escape(sending_application)
    message.msh.msh_4 = hl7_escape(sending_facility)
    if receiving_application:
        message.msh.msh_5 = hl7_escape(receiving_application)
    if receiving_facility:
        message.msh.msh_6 = hl7_escape(receiving_facility)
    message.msh.msh_7 = signed_at.strftime("%Y%m%d%H%M%S")
    message.msh.msh_9 = "ORU^R01^ORU_R01"
    message.msh.msh_10 = control_id or f"RP{report.id}V{report.version}"
    message.msh.msh_11 = "P"
    result = message.add_group("ORU_R01_PATIENT_RESULT")
    patient = result.add_group("ORU_R01_PATIENT")
    patient.pid.pid_1 = "1"
    patient.pid.pid_3 = f"{hl7_escape(study.patient_id or 'UNKNOWN')}^^^^MR"
    names = (study.patient_name or "UNKNOWN").split("^")
    patient.pid.pid_5 = "^".join(hl7_escape(n) for n in names[:5])
    if study.birth_date:
        patient.pid.pid_7 = hl7_escape(study.birth_date)
    if study.sex in ("M", "F", "O", "U"):
        patient.pid.pid_8 = study.sex
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    order.obr.obr_1 = "1"
    order.obr.obr_2 = hl7_escape(study.accession_number) if study.accession_number else f"RP{report.id}"
    order.obr.obr_3 = f"{hl7_escape(report.study_instance_uid)}^RADPILOT"
    procedure = template.procedure
    order.obr.obr_4 = f"{hl7_escape(procedure.value)}^{hl7_escape(procedure.meaning)}^{hl7_escape(procedure.scheme)}"
    if study.study_date:
        order.obr.obr_7 = hl7_escape(study.study_date + study.study_time.split(".")[0])
    order.obr.obr_22 = signed_at.strftime("%Y%m%d%H%M%S")
    order.obr.obr_24 = {"CT": "CT", "MR": "MR", "CR": "RAD", "DX": "RAD"}.get(study.modality, "RAD")
    result_status = "C" if report.status == "amended" else "F"
    order.obr.obr_25 = result_status
    order.obr.obr_32 = hl7_escape(report.signed_by or "")
    set_id = 0
    for section in SECTIONS:
        text = report.sections.get(section, "").strip()
        if not text:
            continue
        code, meaning = SECTION_LOINC[section]
        for line in text.splitlines() or [""]:
            set_id += 1
            observation = order.add_group("ORU_R01_OBSERVATION")
            observation.obx.obx_1 = str(set_id)
            observation.obx.obx_2 = "TX"
            observation.obx.obx_3 = f"{code}^{hl7_escape(meaning)}^LN"
            observation.obx.obx_5 = hl7_escape(line) if line else " "
            observation.obx.obx_11 = result_status
    for finding in verified_measurements(report):
        set_id += 1
        observation = order.add_group("ORU_R01_OBSERVATION")
        observation.obx.obx_1 = str(set_id)
        observation.obx.obx_2 = "NM"
        observation.obx.obx_3 = f"{hl7_escape(finding.output)}^{hl7_escape(finding.label or finding.output)}^{PRIVATE_SCHEME}"
        observation.obx.obx_5 = f"{finding.shown_value:.6g}"
        observation.obx.obx_6 = f"{hl7_escape(FHIR_UNITS.get(finding.unit, finding.unit))}^^UCUM"
        observation.obx.obx_11 = result_status
    return message.to_er7().encode("utf-8")


# ------------------------------------------------------------------------------------ PDF
class _ReportPdf(FPDF):
    _family = "Helvetica"  # the font family the page uses (DejaVu when installed, for text beyond Latin-1)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(self._family, size=8)
        self.cell(0, 8, f"RadPilot {__version__} - page {self.page_no()}", align="C")


def build_pdf(report: ReportView, template: ReportTemplate, study: StudyContext) -> bytes:
    """The signed report as a PDF for referring physicians."""
    _require_signed(report)
    pdf = _ReportPdf(format="A4")
    if DEJAVU.is_file() and DEJAVU_BOLD.is_file():
        pdf.add_font("DejaVu", "", str(DEJAVU))
        pdf.add_font("DejaVu", "B", str(DEJAVU_BOLD))
        family = "DejaVu"
    else:
        family = "Helvetica"
    pdf._family = family

    def safe(text: str) -> str:
        return text if family == "DejaVu" else text.encode("latin-1", "replace").decode("latin-1")

    pdf.set_auto_page_break(True, margin=18)
    pdf.add_page()
    pdf.set_font(family, "B", 15)
    pdf.multi_cell(0, 8, safe(template.title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, size=9)
    header = [
        ("Patient", f"{study.patient_name.replace('^', ' ').strip()} (ID {study.patient_id})"),
        ("Born / sex", f"{_fhir_date(study.birth_date) or '-'} / {study.sex or '-'}"),
        ("Study", f"{_fhir_date(study.study_date) or '-'} {study.study_description}  Accession {study.accession_number or '-'}"),
        ("Referring", study.referring_physician.replace("^", " ").strip() or "-"),
        ("Status", f"{report.status} (version {report.version}), signed by {report.signed_by} at {report.signed_at:%Y-%m-%d %H:%M} UTC"),
    ]
    for label, value in header:
        pdf.multi_cell(0, 5, safe(f"{label}: {value}"), new_x="LMARGIN", new_y="NEXT")
    if report.status == "amended" and report.amend_reason:
        pdf.multi_cell(0, 5, safe(f"Amended: {report.amend_reason}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    for section in SECTIONS:
        text = report.sections.get(section, "").strip()
        if not text:
            continue
        pdf.set_font(family, "B", 11)
        pdf.multi_cell(0, 7, safe(SECTION_TITLES[section]), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(family, size=10)
        pdf.multi_cell(0, 5, safe(text), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)
    pdf.set_font(family, size=8)
    pdf.multi_cell(
        0, 4, safe("Values marked as measured by AI were reviewed and accepted by the signing radiologist."), new_x="LMARGIN", new_y="NEXT"
    )
    return bytes(pdf.output())
