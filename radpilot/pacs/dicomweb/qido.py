"""QIDO-RS (PS3.18 10.6): query parameters to an archive :class:`Query`, results to DICOM JSON.

Matching keys by keyword or tag (``PatientID=X`` or ``00100020=X``), ``*``/``?``
wildcards, date and time ranges, UID lists (comma or backslash), ``includefield``
(repeated, comma separated, or ``all``), ``limit``, ``offset``; ``fuzzymatching`` is
accepted and ignored. Valid attributes the index cannot match on are ignored and
listed in :attr:`QidoRequest.ignored`. A parameter that cannot be used raises
:class:`QidoError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from radpilot.archive.query import (
    COMPUTED_ATTRIBUTES,
    INDEXED_ATTRIBUTES,
    NON_MATCHING_KEYS,
    Query,
    QueryError,
    QueryLevel,
    vr_of,
)
from radpilot.archive.store import Archive
from radpilot.dicom.json_model import DicomJsonError, attribute_json, resolve_attribute, tag_key, vr_for

STUDY_RETURN_KEYS = (
    "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName", "PatientName",
    "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances", "StudyDescription",
)  # fmt: skip
SERIES_RETURN_KEYS = (
    "StudyInstanceUID", "Modality", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID",
    "NumberOfSeriesRelatedInstances", "SeriesDate", "SeriesTime", "BodyPartExamined",
)  # fmt: skip
INSTANCE_RETURN_KEYS = (
    "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns",
    "NumberOfFrames",
)  # fmt: skip


class QidoError(ValueError):
    """A QIDO-RS query that cannot be run as asked.

    Parameters
    ----------
    message
        What is wrong, in words a user can act on.
    parameter
        The query parameter at fault, if one is.
    """

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.parameter = parameter


@dataclass
class QidoRequest:
    """A parsed QIDO-RS query string."""

    keys: dict[str, str] = field(default_factory=dict)
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    limit: int | None = None
    offset: int = 0
    ignored: list[str] = field(default_factory=list)


def _non_negative_int(name: str, text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise QidoError(f"{name} must be a non-negative integer, not {text!r}", name) from None
    if value < 0:
        raise QidoError(f"{name} must not be negative (got {value})", name)
    return value


def _attribute_keyword(name: str, parameter: str) -> str:
    try:
        tag, keyword = resolve_attribute(name)
    except DicomJsonError as exc:
        raise QidoError(f"unknown attribute in {parameter}: {exc}", parameter) from None
    return keyword or tag_key(tag)


def _add_includefields(qido: QidoRequest, value: str) -> None:
    for name in (n.strip() for n in value.split(",")):
        if not name:
            continue
        if name.lower() == "all":
            qido.include_all = True
            continue
        qido.include.add(_attribute_keyword(name, "includefield"))


def _add_match_key(qido: QidoRequest, name: str, value: str) -> None:
    if "." in name:  # a sequence path such as ReferencedSeriesSequence.SeriesInstanceUID
        for component in name.split("."):
            _attribute_keyword(component, name)
        qido.ignored.append(name)
        return
    keyword = _attribute_keyword(name, name)
    if keyword in NON_MATCHING_KEYS:
        return
    matchable = keyword in INDEXED_ATTRIBUTES or keyword == "ModalitiesInStudy"
    if not matchable:
        qido.ignored.append(keyword)
        qido.include.add(keyword)
        return
    vr = vr_of(keyword) or vr_for(resolve_attribute(keyword)[0])
    if vr == "UI":
        value = value.replace(",", "\\")
    if keyword in qido.keys:
        if vr != "UI":
            raise QidoError(f"matching key {keyword} is given more than once", name)
        value = f"{qido.keys[keyword]}\\{value}"
    qido.keys[keyword] = value
    qido.include.add(keyword)


def parse_qido_parameters(items: Iterable[tuple[str, str]]) -> QidoRequest:
    """Parse QIDO-RS query parameters (PS3.18 8.3.4).

    Raises
    ------
    QidoError
        For an unknown attribute, a malformed ``limit``/``offset``/``fuzzymatching``
        or a repeated non-UID matching key.
    """
    qido = QidoRequest()
    for raw_name, value in items:
        name = raw_name.strip()
        lower = name.lower()
        if lower == "limit":
            qido.limit = _non_negative_int("limit", value)
        elif lower == "offset":
            qido.offset = _non_negative_int("offset", value)
        elif lower == "includefield":
            _add_includefields(qido, value)
        elif lower == "fuzzymatching":
            if value.strip().lower() not in ("", "true", "false"):
                raise QidoError(f"fuzzymatching must be true or false, not {value!r}", "fuzzymatching")
        else:
            _add_match_key(qido, name, value)
    return qido


def _default_return_keys(level: QueryLevel) -> list[str]:
    """Default return attributes of a QIDO-RS level (PS3.18 Table 6.7.1-2).

    Like Orthanc and C-FIND, a series or instance result also carries the patient and
    study attributes the index holds, and an instance result the series attributes,
    whether or not the study (or series) is named in the path.
    """
    keys: list[str] = list(STUDY_RETURN_KEYS)
    if level >= QueryLevel.SERIES:
        keys += SERIES_RETURN_KEYS
    if level >= QueryLevel.IMAGE:
        keys += INSTANCE_RETURN_KEYS
    return keys


def _all_return_keys(level: QueryLevel) -> list[str]:
    keys = [k for k, a in INDEXED_ATTRIBUTES.items() if a.level <= level]
    return keys + [k for k, (lvl, _) in COMPUTED_ATTRIBUTES.items() if lvl <= level]  # absent ones are skipped


def _retrieve_url(base: str, level: QueryLevel, result: dict[str, Any]) -> str:
    url = f"{base}/studies/{result['StudyInstanceUID']}"
    if level >= QueryLevel.SERIES:
        url += f"/series/{result['SeriesInstanceUID']}"
    if level >= QueryLevel.IMAGE:
        url += f"/instances/{result['SOPInstanceUID']}"
    return url


def qido_result_json(result: dict[str, Any], return_keys: Iterable[str], level: QueryLevel, base: str) -> dict:
    """One QIDO-RS result (a dict from :meth:`Archive.find`) as a DICOM JSON object."""
    attributes: dict[str, dict] = {}
    for keyword in return_keys:
        if keyword not in result:
            continue  # not held by the index: left out rather than sent empty
        tag, _ = resolve_attribute(keyword)
        attributes[tag_key(tag)] = attribute_json(vr_of(keyword) or vr_for(tag), result[keyword])
    attributes[tag_key(0x00081190)] = attribute_json("UR", _retrieve_url(base, level, result))
    attributes[tag_key(0x00080056)] = attribute_json("CS", "ONLINE")  # InstanceAvailability
    if level == QueryLevel.IMAGE and result.get("_transfer_syntax_uid"):
        attributes[tag_key(0x00083002)] = attribute_json("UI", result["_transfer_syntax_uid"])
    return dict(sorted(attributes.items()))


def search(archive: Archive, level: QueryLevel, fixed: dict[str, str], qido: QidoRequest, base: str) -> list[dict]:
    """Run a parsed QIDO-RS query at ``level`` and answer it as DICOM JSON objects.

    Parameters
    ----------
    fixed
        Matching keys that the resource path names (e.g. the study of ``/studies/{study}/series``).
    base
        Absolute URL of the DICOMweb root, for each result's RetrieveURL.

    Raises
    ------
    QidoError
        When the archive refuses a matching key, ``limit`` or ``offset``.
    """
    keys = {**qido.keys, **fixed}
    try:
        results = archive.find(Query(level, keys, limit=qido.limit, offset=qido.offset))
    except QueryError as exc:
        raise QidoError(str(exc), _parameter_in(str(exc), keys)) from None
    return_keys = _all_return_keys(level) if qido.include_all else _default_return_keys(level)
    return_keys = list(dict.fromkeys([*return_keys, *sorted(qido.include)]))
    return [qido_result_json(r, return_keys, level, base) for r in results]


def _parameter_in(message: str, keys: dict[str, str]) -> str | None:
    """The matching key a QueryError message names, if any."""
    for keyword in keys:
        if message.startswith(keyword) or f" {keyword} " in f" {message} ":
            return keyword
    if "limit" in message:
        return "limit"
    if "offset" in message:
        return "offset"
    return None
