"""What routing sees of a stored series: header attributes of its first instance plus counts."""

from __future__ import annotations

import pydicom
from sqlalchemy import func, select

from radpilot.archive import Archive
from radpilot.archive.models import Instance, Series, Study
from radpilot.engine.routing import MATCHABLE_ATTRIBUTES, SeriesFacts

HEADER_KEYWORDS = sorted(MATCHABLE_ATTRIBUTES - {"NumberOfSlices", "CallingAETitle"})


def _plain(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        return [str(v) for v in value]
    return str(value)


def series_facts(archive: Archive, series_uid: str) -> SeriesFacts:
    """Facts about one stored series (raises KeyError when it is not in the archive)."""
    with archive.sessions() as session:
        row = session.execute(
            select(Series, Study.study_instance_uid)
            .join(Study, Series.study_fk == Study.id)
            .where(Series.series_instance_uid == series_uid)
        ).first()
        if row is None:
            raise KeyError(f"series {series_uid} is not in the archive")
        series, study_uid = row
        first = session.scalar(
            select(Instance).where(Instance.series_fk == series.id).order_by(Instance.instance_number, Instance.id).limit(1)
        )
        count, frames = session.execute(
            select(func.count(Instance.id), func.sum(func.coalesce(Instance.number_of_frames, 1))).where(
                Instance.series_fk == series.id
            )
        ).one()
    header = pydicom.dcmread(archive.path_of(first), stop_before_pixels=True)
    attributes = {keyword: _plain(header.get(keyword)) for keyword in HEADER_KEYWORDS}
    attributes["NumberOfSlices"] = int(frames if count == 1 else count)
    attributes["CallingAETitle"] = first.source_ae_title
    return SeriesFacts(study_instance_uid=study_uid, series_instance_uid=series_uid, attributes=attributes)


def series_of_study(archive: Archive, study_uid: str) -> list[str]:
    with archive.sessions() as session:
        return list(
            session.scalars(
                select(Series.series_instance_uid)
                .join(Study, Series.study_fk == Study.id)
                .where(Study.study_instance_uid == study_uid)
                .order_by(Series.series_number, Series.id)
            )
        )
