"""What routing sees of a stored series: header attributes of its first instance plus counts."""

from __future__ import annotations

import pydicom

from radpilot.archive import Archive
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
    summary = archive.series_summary(series_uid)
    first = summary.first_instance
    header = pydicom.dcmread(archive.path_of(first), stop_before_pixels=True)
    attributes = {keyword: _plain(header.get(keyword)) for keyword in HEADER_KEYWORDS}
    attributes["NumberOfSlices"] = summary.frame_count if summary.instance_count == 1 else summary.instance_count
    attributes["CallingAETitle"] = first.source_ae_title
    return SeriesFacts(study_instance_uid=summary.study_instance_uid, series_instance_uid=series_uid, attributes=attributes)


def series_of_study(archive: Archive, study_uid: str) -> list[str]:
    """The series of a stored study, in series number order."""
    return archive.series_of_study(study_uid)
