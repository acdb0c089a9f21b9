"""A signed radiology report as DICOM Enhanced SR, TID 2000 Basic Diagnostic Imaging Report.

The document tree (PS3.16 TID 2000):

* root CONTAINER (LN 18748-4 "Diagnostic imaging report"), template 2000;
* language (TID 1204), the radiologist as person observer (TID 1002), procedure reported;
* one CONTAINER per non-empty section (TID 2001), each holding its narrative as TEXT (TID
  2002): History (clinical information), Current Procedure Descriptions (technique), Prior
  Procedure Descriptions (comparison), Findings, Impressions; the verified measurements the
  report quotes follow in Findings as NUM items.

A signed report is COMPLETE and VERIFIED, the radiologist as Verifying Observer; an
amendment references the document it replaces in the Predecessor Documents Sequence.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from radpilot.contract import Code
from radpilot.dicom.encoders.common import (
    DEFAULT_MANUFACTURER,
    RADPILOT_VERSION,
    UidFactory,
    check_positive_int,
    declare_private_coding_schemes,
    set_content_datetime,
    to_coded_concept,
)

REPORT_TITLE = Code("18748-4", "LN", "Diagnostic imaging report")
LANGUAGE = hd.sr.CodedConcept("121049", "DCM", "Language of Content Item and Descendants")
ENGLISH = hd.sr.CodedConcept("en-US", "RFC5646", "English (United States)")
PROCEDURE_REPORTED = hd.sr.CodedConcept("121058", "DCM", "Procedure reported")

#: Section heading (CID 7001) and narrative concept (TID 2002) of each report section.
SECTION_CODES: dict[str, tuple[Code, Code]] = {
    "clinical_information": (Code("121060", "DCM", "History"), Code("121060", "DCM", "History")),
    "technique": (Code("121064", "DCM", "Current Procedure Descriptions"), Code("121065", "DCM", "Procedure Description")),
    "comparison": (Code("121066", "DCM", "Prior Procedure Descriptions"), Code("121065", "DCM", "Procedure Description")),
    "findings": (Code("121070", "DCM", "Findings"), Code("121071", "DCM", "Finding")),
    "impression": (Code("121072", "DCM", "Impressions"), Code("121073", "DCM", "Impression")),
}

#: Units of the analyses' declared outputs as UCUM.
UCUM_UNITS = {
    "": Code("1", "UCUM", "no units"),
    "1": Code("1", "UCUM", "no units"),
    "%": Code("%", "UCUM", "percent"),
    "mL": Code("mL", "UCUM", "milliliter"),
    "HU": Code("[hnsf'U]", "UCUM", "Hounsfield unit"),
    "mm": Code("mm", "UCUM", "millimeter"),
    "mm3": Code("mm3", "UCUM", "cubic millimeter"),
    "mg": Code("mg", "UCUM", "milligram"),
    "g": Code("g", "UCUM", "gram"),
    "cm2": Code("cm2", "UCUM", "square centimeter"),
}


def ucum_unit(unit: str) -> Code:
    """The UCUM code of an output's unit; ValueError naming the unit when it has none here."""
    try:
        return UCUM_UNITS[unit]
    except KeyError:
        if unit and unit.isascii() and " " not in unit:
            return Code(unit, "UCUM", unit)
        raise ValueError(f"unit {unit!r} has no UCUM code") from None


@dataclass(frozen=True)
class ReportMeasurement:
    """A verified value the report quotes: its concept, value and unit (as the analysis declares it)."""

    concept: Code
    value: float
    unit: str


def encode_report_sr(
    evidence: Sequence[Dataset],
    sections: dict[str, str],
    *,
    observer_name: str,
    organization: str,
    signed_at: _dt.datetime,
    procedure: Code,
    uid_seed: str,
    measurements: Sequence[ReportMeasurement] = (),
    predecessor: Dataset | None = None,
    series_number: int = 9905,  # 9901-9903 AI results, 9904 the review's verified SR
    instance_number: int = 1,
    series_description: str = "RadPilot report",
) -> hd.sr.EnhancedSR:
    """The signed report as an Enhanced SR in the study of ``evidence`` (headers of the study's images).

    Raises
    ------
    ValueError
        When there is no evidence, no section has text, a section name is unknown or the
        observer name is empty.
    """
    if not evidence:
        raise ValueError("a report SR needs at least one image of the study as evidence")
    unknown = set(sections) - set(SECTION_CODES)
    if unknown:
        raise ValueError(f"unknown report sections {sorted(unknown)}; known: {', '.join(SECTION_CODES)}")
    if not any(text.strip() for text in sections.values()):
        raise ValueError("a report SR needs at least one section with text")
    if not observer_name.strip():
        raise ValueError("a signed report SR needs the name of the radiologist who signed it")
    series_number = check_positive_int(series_number, "series_number")
    instance_number = check_positive_int(instance_number, "instance_number")
    # A user name without components ("dr.grey") is a family name only, written with its caret (PS3.5 6.2.1.2).
    observer_name = observer_name.strip() if "^" in observer_name else observer_name.strip()[:60] + "^"
    uids = UidFactory(uid_seed)

    items: list[hd.sr.ContentItem] = [
        hd.sr.CodeContentItem(LANGUAGE, ENGLISH, relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD),
    ]
    observer = hd.sr.ObserverContext(
        observer_type=codes.cid270.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=observer_name, login_name=observer_name[:64]),
    )
    items.extend(observer)
    items.append(
        hd.sr.CodeContentItem(
            PROCEDURE_REPORTED, to_coded_concept(procedure), relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD
        )
    )
    for key, (heading, narrative) in SECTION_CODES.items():
        text = (sections.get(key) or "").strip()
        numbers = measurements if key == "findings" else ()
        if not text and not numbers:
            continue
        container = hd.sr.ContainerContentItem(to_coded_concept(heading), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        children: list[hd.sr.ContentItem] = []
        if text:
            children.append(
                hd.sr.TextContentItem(to_coded_concept(narrative), text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
            )
        for m in numbers:
            children.append(
                hd.sr.NumContentItem(
                    to_coded_concept(m.concept),
                    float(m.value),
                    to_coded_concept(ucum_unit(m.unit)),
                    relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
                )
            )
        container.ContentSequence = hd.sr.ContentSequence(children)
        items.append(container)

    root = hd.sr.ContainerContentItem(to_coded_concept(REPORT_TITLE), template_id="2000")
    root.ContentSequence = hd.sr.ContentSequence(items)

    first = evidence[0]
    sr = hd.sr.EnhancedSR(
        evidence=list(evidence),
        content=root,
        series_instance_uid=uids.series("report-sr"),
        series_number=series_number,
        sop_instance_uid=uids.instance("report-sr", instance_number),
        instance_number=instance_number,
        manufacturer=DEFAULT_MANUFACTURER,
        is_complete=True,
        is_final=True,
        is_verified=True,
        verifying_observer_name=observer_name,
        verifying_organization=organization[:64] or DEFAULT_MANUFACTURER,
        previous_versions=[predecessor] if predecessor is not None else None,
        institution_name=str(first.get("InstitutionName", "") or "") or None,
    )
    sr.SeriesDescription = series_description[:64]
    sr.ManufacturerModelName = "RadPilot report"
    sr.SoftwareVersions = [f"RadPilot {RADPILOT_VERSION}"[:64]]
    set_content_datetime(sr, signed_at)
    verified = sr.VerifyingObserverSequence[0]
    verified.VerificationDateTime = signed_at.astimezone(_dt.UTC).strftime("%Y%m%d%H%M%S")
    declare_private_coding_schemes(sr)
    return sr
