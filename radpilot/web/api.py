"""RadPilot's JSON API for the reading room: studies, one study's series, node status.

* ``GET /api/studies``: search (patient name or ID, date range, modality,
  accession number, description) with paging (``limit``, ``offset``);
* ``GET /api/studies/{uid}``: one study and its series;
* ``GET /api/status``: instance and study counts and the store conflicts.

Text searches match anywhere in the value, case-insensitively for names, unless
the value holds DICOM wildcards (``*``, ``?``), which are then used as given.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi import Query as QueryParam

from radpilot import __version__
from radpilot.archive import Archive
from radpilot.archive.query import Query, QueryError, QueryLevel
from radpilot.security.principal import Role
from radpilot.web.auth import require_roles

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_DATE_FORMATS = (re.compile(r"^(\d{4})-(\d{2})-(\d{2})$"), re.compile(r"^(\d{4})(\d{2})(\d{2})$"))


class SearchError(ValueError):
    """A search parameter that cannot be used; the message names it."""


@dataclass(frozen=True)
class StudySearch:
    """A study search as a user states it (all fields optional)."""

    patient_name: str = ""
    patient_id: str = ""
    accession_number: str = ""
    study_description: str = ""
    modality: str = ""
    date_from: str = ""
    date_to: str = ""
    limit: int = DEFAULT_PAGE_SIZE
    offset: int = 0

    def query_string(self, **changes: Any) -> str:
        """URL query string for this search, with ``changes`` applied; empty fields left out."""
        values = {**self.__dict__, **changes}
        if values.get("limit") == DEFAULT_PAGE_SIZE:
            values.pop("limit")
        if not values.get("offset"):
            values.pop("offset", None)
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


@dataclass
class StudyPage:
    """One page of search results."""

    search: StudySearch
    studies: list[dict[str, Any]] = field(default_factory=list)
    has_more: bool = False

    @property
    def next_offset(self) -> int | None:
        return self.search.offset + self.search.limit if self.has_more else None

    @property
    def previous_offset(self) -> int | None:
        return max(0, self.search.offset - self.search.limit) if self.search.offset > 0 else None


def parse_date(value: str, name: str) -> str:
    """``YYYY-MM-DD`` or ``YYYYMMDD`` as a DICOM date (``YYYYMMDD``); empty stays empty."""
    value = (value or "").strip()
    if not value:
        return ""
    for pattern in _DATE_FORMATS:
        match = pattern.match(value)
        if match:
            year, month, day = (int(g) for g in match.groups())
            try:
                date(year, month, day)
            except ValueError:
                break
            return f"{year:04d}{month:02d}{day:02d}"
    raise SearchError(f"{name} {value!r} is not a date (YYYY-MM-DD)")


def _contains(value: str) -> str:
    """A DICOM wildcard pattern matching ``value`` anywhere, unless it already holds wildcards."""
    value = value.strip()
    if not value or any(ch in value for ch in "*?"):
        return value
    return f"*{value}*"


def to_query_keys(search: StudySearch) -> dict[str, str]:
    """The C-FIND/QIDO matching keys for a user search."""
    keys: dict[str, str] = {}
    if search.patient_name.strip():
        keys["PatientName"] = _contains(search.patient_name)
    if search.patient_id.strip():
        keys["PatientID"] = _contains(search.patient_id)
    if search.accession_number.strip():
        keys["AccessionNumber"] = _contains(search.accession_number)
    if search.study_description.strip():
        keys["StudyDescription"] = _contains(search.study_description)
    if search.modality.strip():
        keys["ModalitiesInStudy"] = search.modality.strip().upper()
    low, high = parse_date(search.date_from, "date_from"), parse_date(search.date_to, "date_to")
    if low and high and low > high:
        raise SearchError(f"date_from {search.date_from!r} is after date_to {search.date_to!r}")
    if low or high:
        keys["StudyDate"] = low if low == high else f"{low}-{high}"
    return keys


def format_person_name(value: Any) -> str:
    """A DICOM PN (``FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX``) as ``FAMILY, GIVEN MIDDLE``."""
    text = str(value or "").split("=", 1)[0]
    parts = [p.strip() for p in text.split("^")]
    family = parts[0] if parts else ""
    given = " ".join(p for p in parts[1:3] if p)
    if family and given:
        return f"{family}, {given}"
    return family or given


def format_date(value: Any) -> str:
    """A DICOM date ``YYYYMMDD`` as ``YYYY-MM-DD``; anything else unchanged."""
    text = str(value or "")
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def viewer_url(study_instance_uid: str) -> str:
    """The OHIF viewer URL that opens one study."""
    return "/viewer?" + urlencode({"StudyInstanceUIDs": study_instance_uid})


def study_summary(row: dict[str, Any]) -> dict[str, Any]:
    """A study-level query result as the API's JSON object."""
    uid = row.get("StudyInstanceUID") or ""
    return {
        "study_instance_uid": uid,
        "patient_name": str(row.get("PatientName") or ""),
        "patient_name_display": format_person_name(row.get("PatientName")),
        "patient_id": row.get("PatientID") or "",
        "patient_birth_date": format_date(row.get("PatientBirthDate")),
        "patient_sex": row.get("PatientSex") or "",
        "study_date": format_date(row.get("StudyDate")),
        "study_time": row.get("StudyTime") or "",
        "accession_number": row.get("AccessionNumber") or "",
        "study_id": row.get("StudyID") or "",
        "study_description": row.get("StudyDescription") or "",
        "referring_physician_name": str(row.get("ReferringPhysicianName") or ""),
        "modalities": list(row.get("ModalitiesInStudy") or []),
        "series_count": int(row.get("NumberOfStudyRelatedSeries") or 0),
        "instance_count": int(row.get("NumberOfStudyRelatedInstances") or 0),
        "viewer_url": viewer_url(uid),
    }


def series_summary(row: dict[str, Any]) -> dict[str, Any]:
    """A series-level query result as the API's JSON object."""
    return {
        "series_instance_uid": row.get("SeriesInstanceUID") or "",
        "series_number": row.get("SeriesNumber"),
        "modality": row.get("Modality") or "",
        "series_description": row.get("SeriesDescription") or "",
        "body_part_examined": row.get("BodyPartExamined") or "",
        "series_date": format_date(row.get("SeriesDate")),
        "instance_count": int(row.get("NumberOfSeriesRelatedInstances") or 0),
    }


def search_studies(archive: Archive, search: StudySearch) -> StudyPage:
    """Run a study search; one extra row is fetched to know whether another page follows."""
    try:
        query = Query(QueryLevel.STUDY, to_query_keys(search), limit=search.limit + 1, offset=search.offset)
        rows = archive.find(query)
    except QueryError as exc:
        raise SearchError(str(exc)) from exc
    return StudyPage(
        search=search,
        studies=[study_summary(r) for r in rows[: search.limit]],
        has_more=len(rows) > search.limit,
    )


def study_detail(archive: Archive, study_instance_uid: str) -> dict[str, Any] | None:
    """One study with its series, or None when the archive does not hold it."""
    studies = archive.find(Query(QueryLevel.STUDY, {"StudyInstanceUID": study_instance_uid}, limit=1))
    if not studies:
        return None
    series = archive.find(Query(QueryLevel.SERIES, {"StudyInstanceUID": study_instance_uid}))
    detail = study_summary(studies[0])
    detail["series"] = [series_summary(s) for s in series]
    return detail


def archive_status(archive: Archive) -> dict[str, Any]:
    """Counts of what the archive holds and the store conflicts it has recorded."""
    counts = archive.counts()
    conflicts = archive.conflicts()
    return {
        "version": __version__,
        "studies": counts.studies,
        "series": counts.series,
        "instances": counts.instances,
        "conflict_count": len(conflicts),
        "conflicts": [
            {
                "sop_instance_uid": c.sop_instance_uid,
                "stored_sha256": c.stored_sha256,
                "received_sha256": c.received_sha256,
                "source_ae_title": c.source_ae_title,
                "count": c.count,
                "first_seen_at": c.first_seen_at.isoformat() if c.first_seen_at else None,
                "last_seen_at": c.last_seen_at.isoformat() if c.last_seen_at else None,
            }
            for c in conflicts
        ],
    }


def page_json(page: StudyPage) -> dict[str, Any]:
    """A page of studies as the JSON body of ``GET /api/studies``."""
    return {
        "studies": page.studies,
        "limit": page.search.limit,
        "offset": page.search.offset,
        "count": len(page.studies),
        "has_more": page.has_more,
        "next_offset": page.next_offset,
    }


def make_api_router(archive: Archive) -> APIRouter:
    """The ``/api`` routes (mounted with prefix ``/api``)."""
    router = APIRouter(tags=["reading room"])

    @router.get("/studies")
    def list_studies(
        patient_name: str = "",
        patient_id: str = "",
        accession_number: str = "",
        study_description: str = "",
        modality: str = "",
        date_from: str = "",
        date_to: str = "",
        limit: int = QueryParam(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
        offset: int = QueryParam(0, ge=0),
    ) -> dict[str, Any]:
        """Search studies; results are newest first."""
        search = StudySearch(patient_name, patient_id, accession_number, study_description, modality, date_from, date_to, limit, offset)
        try:
            return page_json(search_studies(archive, search))
        except SearchError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc

    @router.get("/studies/{study_instance_uid}")
    def get_study(study_instance_uid: str) -> dict[str, Any]:
        """One study with its series."""
        detail = study_detail(archive, study_instance_uid)
        if detail is None:
            raise HTTPException(status_code=404, detail=f"study {study_instance_uid} is not in the archive")
        return detail

    @router.get("/status", dependencies=[require_roles(Role.ADMINISTRATOR)])
    def status(request: Request) -> dict[str, Any]:
        """What the archive holds, its store conflicts, and whether the viewer is installed."""
        result = archive_status(archive)
        result["viewer_installed"] = getattr(request.app.state, "ohif_dir", None) is not None
        return result

    return router
