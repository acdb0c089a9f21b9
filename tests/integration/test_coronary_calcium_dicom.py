"""coronary_calcium's SEG (lesions by artery), SR (scores, CAC-DRS) and key image, from a phantom DICOM series, checked with dciodvfy.

The series goes the production path (Part-10 datasets -> Volume -> check_input -> run ->
encoders); every object must pass ``dciodvfy -new`` with no error (the SR may only draw
dciodvfy's warning for a private coding scheme).
"""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from radpilot.analyses.coronary_calcium import ANALYSIS
from radpilot.analyses.coronary_calcium.analysis import ARTERY_CODES
from radpilot.analyses.coronary_calcium.phantom import make_phantom, phantom_datasets
from radpilot.contract import Code
from radpilot.dicom.encoders import encode_key_image, encode_measurement_report, encode_segmentation
from radpilot.dicom.volume import volume_from_datasets
from tests.integration.test_encoders_dciodvfy import _verify

pytestmark = pytest.mark.integration

CALCIUM_SCORING = Code("426005005", "SCT", "Cardiac CT for calcium scoring")


@pytest.fixture(scope="module")
def objects() -> dict[str, Dataset]:
    phantom = make_phantom(rows=256, columns=256, pixel_mm=1.0, noise_hu=10.0)
    sources = phantom_datasets(phantom)
    volume = volume_from_datasets(sources)
    ANALYSIS.check_input(volume)
    findings = ANALYSIS.run(volume)
    seg = encode_segmentation(findings, sources, series_number=900)
    sr = encode_measurement_report(findings, sources, seg, series_number=901, procedure_code=CALCIUM_SCORING)
    key = encode_key_image(findings, volume, sources, series_number=902, window=ANALYSIS.display_window("CT"))
    return {"seg": seg, "sr": sr, "key_image": key}


def test_the_seg_holds_one_segment_per_artery_with_its_anatomic_region(objects: dict[str, Dataset]) -> None:
    seg = objects["seg"]
    regions = [item.AnatomicRegionSequence[0].CodeValue for item in seg.SegmentSequence]
    assert regions == [ARTERY_CODES[a].value for a in ("LM", "LAD", "LCX", "RCA")]
    assert [item.SegmentedPropertyTypeCodeSequence[0].CodeValue for item in seg.SegmentSequence] == ["29483008"] * 4


def test_the_sr_reports_the_agatston_score_the_cac_drs_and_the_phantom_caveat(objects: dict[str, Dataset]) -> None:
    text = str(objects["sr"])
    assert "Coronary artery calcium score" in text
    assert "CAC-DRS A3/N4" in text
    assert "Validated on phantoms only" in text


def test_the_key_image_colours_the_lesions(objects: dict[str, Dataset]) -> None:
    key = objects["key_image"]
    pixels = key.pixel_array.reshape(-1, 3).astype(int)
    coloured = np.abs(pixels[:, 0] - pixels[:, 1]) + np.abs(pixels[:, 1] - pixels[:, 2]) > 60
    assert coloured.any()


@pytest.mark.parametrize("name", ["seg", "sr", "key_image"])
def test_dciodvfy_reports_no_error(name: str, objects: dict[str, Dataset], tmp_path) -> None:  # noqa: ANN001 - pytest's Path
    lines = _verify(objects[name], tmp_path / f"{name}.dcm")
    if name != "sr":
        assert not [line for line in lines if line.startswith("Warning")], "\n".join(lines)
