"""Conformance of every object the encoders write, checked with dicom3tools' ``dciodvfy -new``.

No line may start with ``Error``; the only warnings tolerated are dciodvfy's
"Unrecognized defined term" for a private coding scheme (``99...``), which it
reports for any scheme outside its built-in list, even when the scheme is
declared in the Coding Scheme Identification Sequence as PS3.16 asks.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from radpilot.contract import Code
from radpilot.dicom.encoders import encode_key_image, encode_measurement_report, encode_segmentation
from tests.helpers import require_or_skip
from tests.unit.test_encoders import Case, build_ct_case, build_dx_case

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)

PRIVATE_SCHEME_WARNING = re.compile(r"^Warning - .* - Unrecognized defined term = <99[A-Z0-9_]+>$")


def _dciodvfy() -> str:
    path = shutil.which("dciodvfy")
    if path is None:
        require_or_skip("dciodvfy (Debian package dicom3tools) is not installed")
    return path


def _verify(ds: Dataset, path: Path) -> list[str]:
    ds.save_as(path, enforce_file_format=True)
    result = subprocess.run([_dciodvfy(), "-new", str(path)], capture_output=True, text=True, timeout=60)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    report = "\n".join(lines)
    logger.info("dciodvfy %s:\n%s", path.name, report)
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors, f"dciodvfy reports errors for {path.name}:\n{report}"
    unexpected = [line for line in lines if line.startswith("Warning") and not PRIVATE_SCHEME_WARNING.match(line)]
    assert not unexpected, f"dciodvfy reports unexpected warnings for {path.name}:\n{report}"
    return lines


def _ct_objects(case: Case) -> dict[str, Callable[[], Dataset]]:
    seg = encode_segmentation(case.findings, case.sources, series_number=900)
    return {
        "ct_seg": lambda: seg,
        "ct_sr": lambda: encode_measurement_report(
            case.findings, case.sources, seg, series_number=901, procedure_code=Code("24627-2", "LN", "CT Chest")
        ),
        "ct_sr_patient_points": lambda: encode_measurement_report(
            case.findings, case.sources, seg, series_number=901, point_coordinates="patient"
        ),
        "ct_sr_without_seg": lambda: encode_measurement_report(case.findings, case.sources, None, series_number=901),
        "ct_key_image": lambda: encode_key_image(case.findings, case.volume, case.sources, series_number=902),
    }


def _dx_objects(case: Case, prefix: str) -> dict[str, Callable[[], Dataset]]:
    seg = encode_segmentation(case.findings, case.sources, series_number=900)
    return {
        f"{prefix}_seg": lambda: seg,
        f"{prefix}_sr": lambda: encode_measurement_report(case.findings, case.sources, seg, series_number=901),
        f"{prefix}_key_image": lambda: encode_key_image(case.findings, case.volume, case.sources, series_number=902),
    }


@pytest.fixture(scope="module")
def objects() -> dict[str, Callable[[], Dataset]]:
    _dciodvfy()
    built = _ct_objects(build_ct_case())
    built.update(_dx_objects(build_dx_case(), "dx"))
    built.update(_dx_objects(build_dx_case(with_orientation=False), "dx_no_orientation"))
    return built


NAMES = [
    "ct_seg",
    "ct_sr",
    "ct_sr_patient_points",
    "ct_sr_without_seg",
    "ct_key_image",
    "dx_seg",
    "dx_sr",
    "dx_key_image",
    "dx_no_orientation_seg",
    "dx_no_orientation_sr",
    "dx_no_orientation_key_image",
]


@pytest.mark.parametrize("name", NAMES)
def test_dciodvfy_reports_no_error(name: str, objects: dict[str, Callable[[], Dataset]], tmp_path: Path) -> None:
    lines = _verify(objects[name](), tmp_path / f"{name}.dcm")
    if "_sr" not in name:  # SEG and key images: not even a warning
        assert not [line for line in lines if line.startswith("Warning")], "\n".join(lines)
