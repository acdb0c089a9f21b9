"""Matching of C-FIND and QIDO-RS queries against the archive index (PS3.4 C.2.2.2).

One engine serves both services: single value, wildcard (``*`` and ``?``),
UID list, date and time range and universal matching, at patient, study,
series and image level, with the computed return keys
(NumberOfStudyRelatedInstances, ModalitiesInStudy, ...).
"""

from __future__ import annotations

import enum
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, distinct, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from radpilot.archive.models import Instance, Patient, Series, Study


class QueryLevel(enum.IntEnum):
    PATIENT = 0
    STUDY = 1
    SERIES = 2
    IMAGE = 3

    @classmethod
    def parse(cls, text: str) -> QueryLevel:
        normalized = (text or "").strip().upper()
        if normalized == "INSTANCE":
            normalized = "IMAGE"
        try:
            return cls[normalized]
        except KeyError:
            raise ValueError(f"unknown QueryRetrieveLevel {text!r}; expected PATIENT, STUDY, SERIES or IMAGE") from None


class MatchKind(enum.Enum):
    TEXT = "text"
    PERSON_NAME = "pn"  # matched case-insensitively, as most PACS do
    UID = "uid"
    DATE = "date"
    TIME = "time"
    INTEGER = "int"


@dataclass(frozen=True)
class IndexedAttribute:
    keyword: str
    level: QueryLevel
    column: InstrumentedAttribute
    kind: MatchKind
    vr: str


INDEXED_ATTRIBUTES: dict[str, IndexedAttribute] = {
    a.keyword: a
    for a in (
        IndexedAttribute("PatientID", QueryLevel.PATIENT, Patient.patient_id, MatchKind.TEXT, "LO"),
        IndexedAttribute("PatientName", QueryLevel.PATIENT, Patient.patient_name, MatchKind.PERSON_NAME, "PN"),
        IndexedAttribute("PatientBirthDate", QueryLevel.PATIENT, Patient.patient_birth_date, MatchKind.DATE, "DA"),
        IndexedAttribute("PatientSex", QueryLevel.PATIENT, Patient.patient_sex, MatchKind.TEXT, "CS"),
        IndexedAttribute("StudyInstanceUID", QueryLevel.STUDY, Study.study_instance_uid, MatchKind.UID, "UI"),
        IndexedAttribute("StudyDate", QueryLevel.STUDY, Study.study_date, MatchKind.DATE, "DA"),
        IndexedAttribute("StudyTime", QueryLevel.STUDY, Study.study_time, MatchKind.TIME, "TM"),
        IndexedAttribute("AccessionNumber", QueryLevel.STUDY, Study.accession_number, MatchKind.TEXT, "SH"),
        IndexedAttribute("StudyID", QueryLevel.STUDY, Study.study_id, MatchKind.TEXT, "SH"),
        IndexedAttribute("StudyDescription", QueryLevel.STUDY, Study.study_description, MatchKind.TEXT, "LO"),
        IndexedAttribute("ReferringPhysicianName", QueryLevel.STUDY, Study.referring_physician_name, MatchKind.PERSON_NAME, "PN"),
        IndexedAttribute("SeriesInstanceUID", QueryLevel.SERIES, Series.series_instance_uid, MatchKind.UID, "UI"),
        IndexedAttribute("Modality", QueryLevel.SERIES, Series.modality, MatchKind.TEXT, "CS"),
        IndexedAttribute("SeriesNumber", QueryLevel.SERIES, Series.series_number, MatchKind.INTEGER, "IS"),
        IndexedAttribute("SeriesDescription", QueryLevel.SERIES, Series.series_description, MatchKind.TEXT, "LO"),
        IndexedAttribute("BodyPartExamined", QueryLevel.SERIES, Series.body_part_examined, MatchKind.TEXT, "CS"),
        IndexedAttribute("SeriesDate", QueryLevel.SERIES, Series.series_date, MatchKind.DATE, "DA"),
        IndexedAttribute("SeriesTime", QueryLevel.SERIES, Series.series_time, MatchKind.TIME, "TM"),
        IndexedAttribute("SOPInstanceUID", QueryLevel.IMAGE, Instance.sop_instance_uid, MatchKind.UID, "UI"),
        IndexedAttribute("SOPClassUID", QueryLevel.IMAGE, Instance.sop_class_uid, MatchKind.UID, "UI"),
        IndexedAttribute("InstanceNumber", QueryLevel.IMAGE, Instance.instance_number, MatchKind.INTEGER, "IS"),
        IndexedAttribute("Rows", QueryLevel.IMAGE, Instance.rows, MatchKind.INTEGER, "US"),
        IndexedAttribute("Columns", QueryLevel.IMAGE, Instance.columns, MatchKind.INTEGER, "US"),
        IndexedAttribute("NumberOfFrames", QueryLevel.IMAGE, Instance.number_of_frames, MatchKind.INTEGER, "IS"),
    )
}

# Computed return keys: keyword -> (level at which it is returned, VR).
COMPUTED_ATTRIBUTES: dict[str, tuple[QueryLevel, str]] = {
    "NumberOfPatientRelatedStudies": (QueryLevel.PATIENT, "IS"),
    "NumberOfPatientRelatedSeries": (QueryLevel.PATIENT, "IS"),
    "NumberOfPatientRelatedInstances": (QueryLevel.PATIENT, "IS"),
    "ModalitiesInStudy": (QueryLevel.STUDY, "CS"),
    "NumberOfStudyRelatedSeries": (QueryLevel.STUDY, "IS"),
    "NumberOfStudyRelatedInstances": (QueryLevel.STUDY, "IS"),
    "NumberOfSeriesRelatedInstances": (QueryLevel.SERIES, "IS"),
}

# Keys a query may carry that only describe the query itself.
NON_MATCHING_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC"}


class QueryError(ValueError):
    """A query that cannot be answered as asked; the message says which key and why."""


def vr_of(keyword: str) -> str | None:
    if keyword in INDEXED_ATTRIBUTES:
        return INDEXED_ATTRIBUTES[keyword].vr
    if keyword in COMPUTED_ATTRIBUTES:
        return COMPUTED_ATTRIBUTES[keyword][1]
    return None


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _range_clause(column: InstrumentedAttribute, value: str, keyword: str):
    low, _, high = value.partition("-")
    low, high = low.strip(), high.strip()
    if not low and not high:
        raise QueryError(f"{keyword} range {value!r} has neither a start nor an end")
    clauses = [column != ""]
    if low:
        clauses.append(column >= low)
    if high:
        # A time range end of "1200" must include "120059.123": compare on the same prefix length.
        clauses.append(func.substr(column, 1, len(high)) <= high)
    return clauses


def _check_date(value: str, keyword: str) -> None:
    for part in value.split("-"):
        part = part.strip()
        if part and not (part.isdigit() and len(part) == 8):
            raise QueryError(f"{keyword} value {value!r} is not a date (YYYYMMDD) or date range (A-B)")


def _check_time(value: str, keyword: str) -> None:
    for part in value.split("-"):
        part = part.strip()
        if part and not part.replace(".", "").isdigit():
            raise QueryError(f"{keyword} value {value!r} is not a time (HHMMSS.FFFFFF) or time range")


def match_clauses(keyword: str, value: str) -> list:
    """SQL clauses for one matching key; an empty list means universal matching."""
    attribute = INDEXED_ATTRIBUTES[keyword]
    column, kind = attribute.column, attribute.kind
    value = value.strip() if kind is not MatchKind.PERSON_NAME else value.strip().rstrip("^= ")
    if value in ("", "*"):
        return []
    if kind is MatchKind.UID:
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        return [column.in_(uids)] if len(uids) > 1 else [column == uids[0]]
    if kind is MatchKind.INTEGER:
        try:
            return [column.in_([int(v) for v in value.split("\\")])]
        except ValueError:
            raise QueryError(f"{keyword} value {value!r} is not an integer") from None
    if kind in (MatchKind.DATE, MatchKind.TIME) and any(ch in value for ch in "*?"):
        # PS3.4 excludes wildcards for DA/TM, but PACS users type "2024*": honour it as a pattern.
        return [column.like(_like_pattern(value), escape="\\")]
    if kind is MatchKind.DATE:
        _check_date(value, keyword)
        return _range_clause(column, value, keyword) if "-" in value else [column == value]
    if kind is MatchKind.TIME:
        _check_time(value, keyword)
        return _range_clause(column, value, keyword) if "-" in value else [column.like(value.split(".")[0] + "%")]
    values = [v for v in value.split("\\")] if "\\" in value else [value]
    conditions = []
    for single in values:
        if kind is MatchKind.PERSON_NAME:
            target = func.lower(column)
            single = single.lower()
            if not any(ch in single for ch in "*?"):
                # "DOE" matches "DOE^JOHN": PN components are compared as a prefix up to '^'.
                conditions.append((target == single) | target.like(_like_pattern(single) + "^%", escape="\\"))
                continue
        else:
            target = column
        if any(ch in single for ch in "*?"):
            conditions.append(target.like(_like_pattern(single), escape="\\"))
        else:
            conditions.append(target == single)
    if len(conditions) == 1:
        return conditions

    return [or_(*conditions)]


@dataclass
class Query:
    """A parsed query: level, matching keys (keyword -> value) and paging."""

    level: QueryLevel
    keys: dict[str, str]
    limit: int | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise QueryError("limit must not be negative")
        if self.offset < 0:
            raise QueryError("offset must not be negative")
        for keyword in self.keys:
            if keyword in INDEXED_ATTRIBUTES and INDEXED_ATTRIBUTES[keyword].level > self.level:
                raise QueryError(
                    f"{keyword} is a {INDEXED_ATTRIBUTES[keyword].level.name.lower()}-level key and cannot be "
                    f"matched in a {self.level.name.lower()}-level query"
                )


def _base_select(level: QueryLevel) -> Select:
    entities = [Patient, Study, Series, Instance][: level + 1]
    query = select(*entities)
    if level >= QueryLevel.STUDY:
        query = query.join(Study, Study.patient_fk == Patient.id)
    if level >= QueryLevel.SERIES:
        query = query.join(Series, Series.study_fk == Study.id)
    if level >= QueryLevel.IMAGE:
        query = query.join(Instance, Instance.series_fk == Series.id)
    return query


def _order(query: Select, level: QueryLevel) -> Select:
    if level is QueryLevel.PATIENT:
        return query.order_by(Patient.id)
    if level is QueryLevel.STUDY:
        return query.order_by(Study.study_date.desc(), Study.study_time.desc(), Study.id)
    if level is QueryLevel.SERIES:
        return query.order_by(Study.id, Series.series_number, Series.id)
    return query.order_by(Series.id, Instance.instance_number, Instance.id)


def run_query(session: Session, query: Query) -> list[dict[str, Any]]:
    """Run ``query`` and return one dict per match: every indexed and computed attribute at its level or above."""
    statement = _base_select(query.level)
    modality_filter: list[str] | None = None
    for keyword, value in query.keys.items():
        if keyword in NON_MATCHING_KEYS or value is None:
            continue
        if keyword == "ModalitiesInStudy" and query.level == QueryLevel.STUDY:
            wanted = [m.strip() for m in str(value).split("\\") if m.strip() and m.strip() != "*"]
            modality_filter = wanted or None
            continue
        if keyword not in INDEXED_ATTRIBUTES:
            continue  # not indexed: returned empty, never used to exclude a match
        statement = statement.where(*match_clauses(keyword, str(value)))
    if modality_filter:
        statement = statement.where(Study.id.in_(select(Series.study_fk).where(Series.modality.in_(modality_filter))))
    statement = _order(statement, query.level)
    if query.offset:
        statement = statement.offset(query.offset)
    if query.limit is not None:
        statement = statement.limit(query.limit)
    rows = session.execute(statement).all()
    results = [_row_to_dict(row, query.level) for row in rows]
    _add_computed(session, query.level, rows, results)
    return results


def _row_to_dict(row, level: QueryLevel) -> dict[str, Any]:
    entities = {QueryLevel.PATIENT: row[0]}
    for lvl in (QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE):
        if level >= lvl:
            entities[lvl] = row[lvl]
    result: dict[str, Any] = {"QueryRetrieveLevel": level.name}
    for keyword, attribute in INDEXED_ATTRIBUTES.items():
        if attribute.level <= level:
            result[keyword] = getattr(entities[attribute.level], attribute.column.key)
    if level is QueryLevel.IMAGE:
        result["_transfer_syntax_uid"] = row[3].transfer_syntax_uid
        result["_file_path"] = row[3].file_path
    return result


def _add_computed(session: Session, level: QueryLevel, rows, results: list[dict[str, Any]]) -> None:
    if not rows:
        return
    if level is QueryLevel.PATIENT:
        ids = [row[0].id for row in rows]
        counts = session.execute(
            select(
                Study.patient_fk,
                func.count(distinct(Study.id)),
                func.count(distinct(Series.id)),
                func.count(Instance.id),
            )
            .join(Series, Series.study_fk == Study.id)
            .join(Instance, Instance.series_fk == Series.id)
            .where(Study.patient_fk.in_(ids))
            .group_by(Study.patient_fk)
        ).all()
        by_id = {c[0]: c[1:] for c in counts}
        for row, result in zip(rows, results):
            studies, series, instances = by_id.get(row[0].id, (0, 0, 0))
            result.update(
                NumberOfPatientRelatedStudies=studies,
                NumberOfPatientRelatedSeries=series,
                NumberOfPatientRelatedInstances=instances,
            )
    if level is QueryLevel.STUDY:
        ids = [row[1].id for row in rows]
        series_rows = session.execute(
            select(Series.study_fk, Series.modality, func.count(Instance.id))
            .join(Instance, Instance.series_fk == Series.id)
            .where(Series.study_fk.in_(ids))
            .group_by(Series.id, Series.study_fk, Series.modality)
        ).all()
        modalities: dict[int, set[str]] = defaultdict(set)
        series_count: dict[int, int] = defaultdict(int)
        instance_count: dict[int, int] = defaultdict(int)
        for study_fk, modality, count in series_rows:
            if modality:
                modalities[study_fk].add(modality)
            series_count[study_fk] += 1
            instance_count[study_fk] += count
        for row, result in zip(rows, results):
            study_id = row[1].id
            result.update(
                ModalitiesInStudy=sorted(modalities[study_id]),
                NumberOfStudyRelatedSeries=series_count[study_id],
                NumberOfStudyRelatedInstances=instance_count[study_id],
            )
    if level is QueryLevel.SERIES:
        ids = [row[2].id for row in rows]
        counts = dict(
            session.execute(
                select(Instance.series_fk, func.count(Instance.id)).where(Instance.series_fk.in_(ids)).group_by(Instance.series_fk)
            ).all()
        )
        for row, result in zip(rows, results):
            result["NumberOfSeriesRelatedInstances"] = counts.get(row[2].id, 0)
