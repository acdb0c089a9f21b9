"""De-identify files: read each input, write its de-identified copy under the output folder.

Inputs are never modified. Output paths are built from the new (remapped) identifiers
only, ``OUT/<pseudonym>/<study UID>/<series UID>/<SOP instance UID>.dcm``, because input
folder and file names often carry a patient's name or ID.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from radpilot.dicom.deid.engine import BurnedInAnnotationRefused, Deidentifier
from radpilot.dicom.paths import inside, safe_name

logger = logging.getLogger(__name__)


@dataclass
class DeidReport:
    """What one run wrote and what it refused, with the reason for each refusal."""

    written: list[Path] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "written": len(self.written),
            "refused": [{"file": str(p), "reason": r} for p, r in self.refused],
            "failed": [{"file": str(p), "reason": r} for p, r in self.failed],
        }


def iter_input_files(paths: Iterable[Path]) -> list[Path]:
    """Every file under the given files and folders, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"input {path} does not exist")
    return found


def deidentify_files(inputs: Iterable[Path], out_dir: Path, deidentifier: Deidentifier) -> DeidReport:
    """De-identify every DICOM file among ``inputs`` into ``out_dir``; a file that is not DICOM is reported, not fatal."""
    report = DeidReport()
    out_dir = out_dir.resolve()
    for path in iter_input_files(inputs):
        try:
            source = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError) as exc:
            report.failed.append((path, f"not readable as DICOM: {exc}"))
            continue
        if "SOPInstanceUID" not in source:
            report.failed.append((path, "no SOP Instance UID: not a composite instance"))
            continue
        try:
            result = deidentifier.deidentify(source)
        except BurnedInAnnotationRefused as exc:
            report.refused.append((path, str(exc)))
            logger.warning("refused for burned-in text", extra={"file": str(path), "reason": str(exc)})
            continue
        # Names from the output's values: with retain_uids those are the input file's, which may hold anything.
        target = inside(
            out_dir,
            (result.get("PatientID"), "patient"),
            (result.get("StudyInstanceUID"), "study"),
            (result.get("SeriesInstanceUID"), "series"),
        )
        target.mkdir(parents=True, exist_ok=True)
        destination = target / f"{safe_name(result.SOPInstanceUID, 'instance')}.dcm"
        result.save_as(destination, enforce_file_format=True)
        report.written.append(destination)
    logger.info(
        "de-identification run", extra={"written": len(report.written), "refused": len(report.refused), "failed": len(report.failed)}
    )
    return report
