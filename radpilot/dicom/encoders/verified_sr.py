"""The radiologist-verified version of an AI TID 1500 measurement report.

:func:`report_findings` lists the findings of an AI SR written by
:func:`~radpilot.dicom.encoders.sr.encode_measurement_report`: every numeric
measurement and qualitative evaluation a measurement group CONTAINS (the detection
score, DCM 111012 "Certainty of Finding", is the group's confidence, not a finding),
and a measurement group with nothing else as one located finding. Each finding gets an
identity that is stable for the SR, which RadPilot derives from the job's analysis,
version and inputs: the same study analysed by the same version gives the same ids.

:func:`encode_verified_report` writes a new SR SOP Instance from the AI SR and the
radiologist's decisions (PS3.3 C.17.2 SR Document General Module):

* Verification Flag VERIFIED with the radiologist as Verifying Observer (name,
  organisation, date and time), Preliminary Flag FINAL;
* accepted findings are kept as they are; rejected findings are left out (a measurement
  group left with no finding goes with them);
* an edited finding carries the radiologist's value (or category) in place of the AI's,
  a HAS PROPERTIES Comment naming the AI's original value and the reason, and an
  INFERRED FROM reference to the AI SR, which stays in the archive unchanged;
* the AI SR is named in the Predecessor Documents Sequence and in the evidence.

The verified report keeps the AI SR's study and goes into a series of its own
(``verified_series_uid``), one instance per completed review (instance number 1, 2, ...).
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from radpilot.contract import Code
from radpilot.dicom.encoders.common import UidFactory, check_positive_int

__all__ = [
    "Decision",
    "ReportFinding",
    "Verdict",
    "VerifyingObserver",
    "encode_verified_report",
    "report_findings",
    "verified_series_uid",
]

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
_IMAGING_MEASUREMENTS = "126010"  # DCM "Imaging Measurements"
_MEASUREMENT_GROUP = "125007"  # DCM "Measurement Group"
_TRACKING_ID = "112039"
_TRACKING_UID = "112040"
_FINDING_TYPE = "121071"
_FINDING_SITE = "363698007"  # SCT "Finding Site"
_CERTAINTY = "111012"  # DCM "Certainty of Finding"
_FINDING_CATEGORY = "276214006"  # SCT "Finding category"
#: Items a measurement group CONTAINS that describe the group rather than report a finding.
_NOT_FINDINGS = frozenset({_CERTAINTY, _FINDING_TYPE, _FINDING_CATEGORY})
_VERIFIED_KIND = "verified-sr"
_SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"


class Decision:
    """The three decisions a radiologist makes on a finding."""

    ACCEPT = "accept"
    EDIT = "edit"
    REJECT = "reject"
    ALL = (ACCEPT, EDIT, REJECT)


@dataclass(frozen=True)
class ReportFinding:
    """One finding of an AI measurement report, as the review shows it."""

    id: str
    kind: str  # "measurement" | "qualitative" | "region"
    name: str
    value: float | None
    unit: str  # UCUM code ("" for qualitative and region findings)
    unit_meaning: str
    category: str  # code meaning of a qualitative finding's value
    location: str  # finding site, else the measurement group's label
    confidence: float | None
    group: str  # the measurement group's tracking identifier
    group_uid: str
    image_sop_instance_uid: str  # an image the finding lies on or was measured on ("" if none is named)


@dataclass(frozen=True)
class Verdict:
    """The radiologist's decision on one finding."""

    decision: str
    reason: str = ""
    value: float | None = None
    category: Code | None = None

    def __post_init__(self) -> None:
        if self.decision not in Decision.ALL:
            raise ValueError(f"unknown decision {self.decision!r}: expected one of {', '.join(Decision.ALL)}")


@dataclass(frozen=True)
class VerifyingObserver:
    """Who verified the report (PS3.3 C.17.2 Verifying Observer Sequence)."""

    name: str  # a person name, e.g. "Doe^Jane"
    organisation: str
    when: _dt.datetime = field(default_factory=_dt.datetime.now)

    def __post_init__(self) -> None:
        for attr in ("name", "organisation"):
            if not str(getattr(self, attr)).strip():
                raise ValueError(f"the verifying observer needs a {attr}")


def _code(item: Dataset, keyword: str = "ConceptNameCodeSequence") -> tuple[str, str, str]:
    if keyword not in item or not item[keyword].value:
        return "", "", ""
    code = item[keyword].value[0]
    return str(code.get("CodeValue", "")), str(code.get("CodingSchemeDesignator", "")), str(code.get("CodeMeaning", ""))


def _children(item: Dataset) -> list[Dataset]:
    return list(item.get("ContentSequence", []))


def _measurement_groups(sr: Dataset) -> list[Dataset]:
    for item in _children(sr):
        if _code(item)[0] == _IMAGING_MEASUREMENTS and item.get("ValueType") == "CONTAINER":
            return [g for g in _children(item) if _code(g)[0] == _MEASUREMENT_GROUP]
    return []


def _text(group: Dataset, concept: str) -> str:
    for item in _children(group):
        if _code(item)[0] == concept:
            return str(item.get("TextValue", "") or item.get("UID", ""))
    return ""


def _site(item: Dataset) -> str:
    for child in _children(item):
        if _code(child)[0] == _FINDING_SITE:
            return _code(child, "ConceptCodeSequence")[2]
    return ""


def _image_uid(group: Dataset) -> str:
    """The first image (not a SEG) the group names: its region's source image or its source images."""
    for item in _children(group):
        for nested in (item, *_children(item)):
            if nested.get("ValueType") == "IMAGE" and "ReferencedSOPSequence" in nested:
                reference = nested.ReferencedSOPSequence[0]
                if str(reference.ReferencedSOPClassUID) != _SEGMENTATION:
                    return str(reference.ReferencedSOPInstanceUID)
    return ""


def _numeric(item: Dataset) -> tuple[float | None, str, str]:
    values = item.get("MeasuredValueSequence", [])
    if not values:
        return None, "", ""
    unit = _code(values[0], "MeasurementUnitsCodeSequence")
    return float(values[0].NumericValue), unit[0], unit[2]


def _finding_items(group: Dataset) -> list[tuple[int, Dataset]]:
    """(index in the group's content, item) of every finding the group contains, certainty excluded."""
    return [
        (index, item)
        for index, item in enumerate(_children(group))
        if item.get("RelationshipType") == "CONTAINS" and item.get("ValueType") in ("NUM", "CODE") and _code(item)[0] not in _NOT_FINDINGS
    ]


def _finding_id(study_uid: str, group_uid: str, concept: tuple[str, str, str], ordinal: int) -> str:
    digest = hashlib.sha256("\x00".join((study_uid, group_uid, concept[1], concept[0], str(ordinal))).encode("utf-8"))
    return digest.hexdigest()[:20]


def _walk(sr: Dataset) -> list[tuple[ReportFinding, Dataset, Dataset | None]]:
    """Every finding with its measurement group and its content item (None for a region finding)."""
    study_uid = str(sr.get("StudyInstanceUID", ""))
    found: list[tuple[ReportFinding, Dataset, Dataset | None]] = []
    for group in _measurement_groups(sr):
        group_uid = _text(group, _TRACKING_UID)
        label = _text(group, _TRACKING_ID)
        group_site = _site(group)
        finding_type = next((_code(i, "ConceptCodeSequence")[2] for i in _children(group) if _code(i)[0] == _FINDING_TYPE), "")
        confidence = next((_numeric(i)[0] for i in _children(group) if _code(i)[0] == _CERTAINTY and i.get("ValueType") == "NUM"), None)
        image = _image_uid(group)
        items = _finding_items(group)
        seen: dict[tuple[str, str, str], int] = {}
        for _, item in items:
            concept = _code(item)
            ordinal = seen.get(concept[:2] + ("",), 0)
            seen[concept[:2] + ("",)] = ordinal + 1
            value, unit, unit_meaning = _numeric(item) if item.ValueType == "NUM" else (None, "", "")
            finding = ReportFinding(
                id=_finding_id(study_uid, group_uid, concept, ordinal),
                kind="measurement" if item.ValueType == "NUM" else "qualitative",
                name=concept[2],
                value=value,
                unit=unit,
                unit_meaning=unit_meaning,
                category=_code(item, "ConceptCodeSequence")[2] if item.ValueType == "CODE" else "",
                location=_site(item) or group_site or label,
                confidence=confidence,
                group=label,
                group_uid=group_uid,
                image_sop_instance_uid=image,
            )
            found.append((finding, group, item))
        if not items:
            concept = ("region", "", finding_type or label)
            found.append(
                (
                    ReportFinding(
                        id=_finding_id(study_uid, group_uid, concept, 0),
                        kind="region",
                        name=finding_type or label,
                        value=None,
                        unit="",
                        unit_meaning="",
                        category="",
                        location=group_site or label,
                        confidence=confidence,
                        group=label,
                        group_uid=group_uid,
                        image_sop_instance_uid=image,
                    ),
                    group,
                    None,
                )
            )
    return found


def report_findings(sr: Dataset) -> list[ReportFinding]:
    """The findings of a TID 1500 measurement report, in document order.

    Raises
    ------
    ValueError
        When ``sr`` is not a Comprehensive 3D SR measurement report with measurement groups.
    """
    if str(sr.get("SOPClassUID", "")) != COMPREHENSIVE_3D_SR:
        raise ValueError(f"not a Comprehensive 3D SR (SOP Class {sr.get('SOPClassUID')!r})")
    if _code(sr)[0] != "126000":
        raise ValueError("not a TID 1500 Imaging Measurement Report (document title is not DCM 126000)")
    return [finding for finding, _, _ in _walk(sr)]


def verified_series_uid(ai_sr: Dataset) -> str:
    """The series of every verified version of ``ai_sr`` (same study, its own series)."""
    return UidFactory(str(ai_sr.SOPInstanceUID)).series(_VERIFIED_KIND)


def _format_value(value: float | None, unit: str) -> str:
    return "" if value is None else f"{value:g} {unit}".strip()


def _comment(text: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "HAS PROPERTIES"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = DicomSequence([_code_item(Code("121106", "DCM", "Comment"))])
    item.TextValue = text[:1024]
    return item


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme
    item.CodeMeaning = code.meaning[:64]
    return item


def _source_reference(ai_sr: Dataset) -> Dataset:
    item = Dataset()
    item.RelationshipType = "INFERRED FROM"
    item.ValueType = "COMPOSITE"
    item.ConceptNameCodeSequence = DicomSequence([_code_item(Code("121112", "DCM", "Source of Measurement"))])
    reference = Dataset()
    reference.ReferencedSOPClassUID = ai_sr.SOPClassUID
    reference.ReferencedSOPInstanceUID = ai_sr.SOPInstanceUID
    item.ReferencedSOPSequence = DicomSequence([reference])
    return item


def _apply_edit(item: Dataset, verdict: Verdict, finding: ReportFinding, ai_sr: Dataset, observer: VerifyingObserver) -> None:
    if finding.kind == "measurement":
        if verdict.value is None:
            raise ValueError(f"the edit of {finding.name!r} ({finding.id}) gives no new value")
        item.MeasuredValueSequence[0].NumericValue = verdict.value
        original = _format_value(finding.value, finding.unit)
    elif finding.kind == "qualitative":
        if verdict.category is None:
            raise ValueError(f"the edit of {finding.name!r} ({finding.id}) gives no new category")
        item.ConceptCodeSequence = DicomSequence([_code_item(verdict.category)])
        original = finding.category
    else:
        raise ValueError(f"{finding.name!r} ({finding.id}) is a located finding without a value or category to edit")
    comment = f"Edited by {observer.name}: AI value {original}; reason: {verdict.reason}"
    item.ContentSequence = DicomSequence([*_children(item), _comment(comment), _source_reference(ai_sr)])


def _add_evidence(target: Dataset, ai_sr: Dataset, keyword: str) -> None:
    """Name ``ai_sr`` in the Predecessor Documents or Current Requested Procedure Evidence Sequence."""
    reference = Dataset()
    reference.ReferencedSOPClassUID = ai_sr.SOPClassUID
    reference.ReferencedSOPInstanceUID = ai_sr.SOPInstanceUID
    studies = list(target.get(keyword, []))
    study = next((s for s in studies if s.StudyInstanceUID == ai_sr.StudyInstanceUID), None)
    if study is None:
        study = Dataset()
        study.StudyInstanceUID = ai_sr.StudyInstanceUID
        study.ReferencedSeriesSequence = DicomSequence([])
        studies.append(study)
    series = next((s for s in study.ReferencedSeriesSequence if s.SeriesInstanceUID == ai_sr.SeriesInstanceUID), None)
    if series is None:
        series = Dataset()
        series.SeriesInstanceUID = ai_sr.SeriesInstanceUID
        series.ReferencedSOPSequence = DicomSequence([])
        study.ReferencedSeriesSequence.append(series)
    series.ReferencedSOPSequence.append(reference)
    setattr(target, keyword, DicomSequence(studies))


def encode_verified_report(
    ai_sr: Dataset,
    verdicts: Mapping[str, Verdict],
    observer: VerifyingObserver,
    *,
    instance_number: int = 1,
    series_number: int = 9904,
) -> Dataset:
    """The verified SR: accepted and edited findings of ``ai_sr`` kept (edits applied), rejected ones left out.

    ``verdicts`` maps finding ids (:func:`report_findings`) to decisions; every finding needs one.

    Raises
    ------
    ValueError
        When a finding has no verdict, a verdict names an unknown finding, an edit gives no new
        value (measurement) or category (qualitative), or every finding was rejected.
    """
    report_findings(ai_sr)  # refuses what is not a measurement report
    walked = _walk(ai_sr)
    ids = {finding.id for finding, _, _ in walked}
    unknown = sorted(set(verdicts) - ids)
    if unknown:
        raise ValueError(f"decisions name findings that are not in SR {ai_sr.SOPInstanceUID}: {unknown}")
    undecided = [finding.name for finding, _, _ in walked if finding.id not in verdicts]
    if undecided:
        raise ValueError(f"{len(undecided)} finding(s) have no decision yet: {', '.join(undecided)}")
    instance_number = check_positive_int(instance_number, "instance_number")
    series_number = check_positive_int(series_number, "series_number")

    verified = copy.deepcopy(ai_sr)
    # Walk the copy: its content items are at the same positions as the original's.
    copied = {finding.id: (group, item) for finding, group, item in _walk(verified)}
    kept_groups: set[int] = set()
    drop_items: dict[int, list[Dataset]] = {}
    for finding, _, _ in walked:
        verdict = verdicts[finding.id]
        group, item = copied[finding.id]
        if verdict.decision == Decision.REJECT:
            if item is not None:
                drop_items.setdefault(id(group), []).append(item)
            continue
        kept_groups.add(id(group))
        if verdict.decision == Decision.EDIT:
            if item is None:
                raise ValueError(f"{finding.name!r} ({finding.id}) is a located finding without a value or category to edit")
            _apply_edit(item, verdict, finding, ai_sr, observer)
    if not kept_groups:
        raise ValueError("every finding was rejected: there is nothing to verify (the AI SR stays as it is)")
    for container in _children(verified):
        if _code(container)[0] != _IMAGING_MEASUREMENTS:
            continue
        groups = []
        for group in _children(container):
            if _code(group)[0] == _MEASUREMENT_GROUP and id(group) not in kept_groups:
                continue
            dropped = drop_items.get(id(group), [])
            if dropped:
                group.ContentSequence = DicomSequence([c for c in _children(group) if not any(c is d for d in dropped)])
            groups.append(group)
        container.ContentSequence = DicomSequence(groups)

    uids = UidFactory(str(ai_sr.SOPInstanceUID))
    verified.SOPInstanceUID = uids.instance(_VERIFIED_KIND, instance_number)
    verified.SeriesInstanceUID = verified_series_uid(ai_sr)
    verified.SeriesNumber = series_number
    verified.InstanceNumber = instance_number
    verified.SeriesDescription = f"{str(ai_sr.get('SeriesDescription', 'AI measurements'))[:50]} verified"
    if hasattr(verified, "file_meta"):
        verified.file_meta.MediaStorageSOPInstanceUID = verified.SOPInstanceUID
    when = observer.when
    verified.ContentDate = verified.SeriesDate = verified.InstanceCreationDate = when.strftime("%Y%m%d")
    verified.ContentTime = verified.SeriesTime = verified.InstanceCreationTime = when.strftime("%H%M%S")
    verified.CompletionFlag = "COMPLETE"
    verified.PreliminaryFlag = "FINAL"
    verified.VerificationFlag = "VERIFIED"
    observer_item = Dataset()
    observer_item.VerifyingObserverName = observer.name[:64]
    observer_item.VerifyingOrganization = observer.organisation[:64]
    observer_item.VerificationDateTime = when.strftime("%Y%m%d%H%M%S")
    observer_item.VerifyingObserverIdentificationCodeSequence = DicomSequence([])
    verified.VerifyingObserverSequence = DicomSequence([observer_item])
    _add_evidence(verified, ai_sr, "PredecessorDocumentsSequence")
    _add_evidence(verified, ai_sr, "CurrentRequestedProcedureEvidenceSequence")
    return verified
