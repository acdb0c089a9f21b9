"""The chest_xray segmentation quality check: its rules on drawn label maps, and what the result says on a real bad film."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pydicom
import pytest

from radpilot.analyses.chest_xray import ANALYSIS
from radpilot.analyses.chest_xray.quality import LIMITS, segmentation_quality
from radpilot.dicom.encoders import render_key_image
from tests.unit.test_chest_xray_analysis import NORMAL_CASE, jsrt_case, radiograph_dataset, run_analysis


def _thorax() -> np.ndarray:
    """A drawn frontal chest label map (standard orientation): two lung fields and a heart low between them."""
    labels = np.zeros((200, 200), dtype=np.uint8)
    labels[30:170, 30:90] = 1
    labels[35:170, 110:170] = 2
    labels[110:160, 75:130] = 3
    return labels


def test_a_frontal_thorax_is_plausible_and_every_measure_is_reported() -> None:
    report = segmentation_quality(_thorax(), 0.97)
    assert report.plausible, report.problems
    assert set(report.measures) == set(LIMITS)
    assert report.measures["ctr"] == pytest.approx(55 / 140, abs=1e-3)
    assert report.measures["fragmentation"] == 0.0 and report.measures["solidity"] > 0.85


def _heart_at_the_apices(labels: np.ndarray) -> None:
    labels[labels == 3] = 0
    labels[30:80, 75:130] = 3


def _a_lung_in_pieces(labels: np.ndarray) -> None:
    labels[180:200, 0:60] = 1  # a separate piece below the diaphragm, 12 % of the lung field


def _a_ragged_lung(labels: np.ndarray) -> None:
    labels[30:170:2, 30:90] = 0  # every other row missing: a comb, not a field (each row still touches the others at the edge)
    labels[30:170, 30] = 1


def _a_shrunken_lung(labels: np.ndarray) -> None:
    labels[35:120, 110:170] = 0


def _a_heart_wider_than_the_thorax_allows(labels: np.ndarray) -> None:
    labels[110:160, 40:160] = 3


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (_heart_at_the_apices, "heart_level"),
        (_a_lung_in_pieces, "fragmentation"),
        (_a_ragged_lung, "solidity"),
        (_a_shrunken_lung, "lung_area_ratio"),
        (_a_heart_wider_than_the_thorax_allows, "ctr"),
    ],
)
def test_each_implausible_shape_is_named(change: Callable[[np.ndarray], None], rule: str) -> None:
    labels = _thorax()
    change(labels)
    report = segmentation_quality(labels, 0.97)
    low, high, what = LIMITS[rule]
    assert not (low <= report.measures[rule] <= high)
    assert any(p.startswith(f"{what} is ") and f"outside the plausible {low:.2f}-{high:.2f}" in p for p in report.problems), report.problems


def test_an_unsure_model_and_a_missing_heart_are_implausible() -> None:
    assert "the segmentation model's mean confidence is 0.80" in " ".join(segmentation_quality(_thorax(), 0.80).problems)
    no_heart = np.where(_thorax() == 3, 0, _thorax())
    assert segmentation_quality(no_heart).problems == ("a lung field or the heart is missing from the label map",)


# ------------------------------------------------------------------------------ a real bad film
@pytest.fixture(scope="module")
def cropped():
    """A JSRT film cut to its central quarter: the lung fields' outer parts are gone but the frontal check passes."""
    film = jsrt_case(NORMAL_CASE)
    ds = radiograph_dataset(np.ascontiguousarray(film.pixels[128:384, 128:384]))
    findings, volume = run_analysis(ds)
    return findings, volume, ds


def test_an_implausible_segmentation_withholds_the_ctr_and_says_why(cropped) -> None:
    findings, _, _ = cropped
    [quality] = findings.qualitative
    assert (quality.name.value, quality.value.value, quality.value.meaning) == ("RP-SEGQ", "RP-SEGQ-IMPL", "Implausible: CTR withheld")
    assert quality.description.startswith("segmentation implausible: ")
    assert not findings.measurements and not findings.lines
    [note] = [n for n in findings.notes if n.startswith("Segmentation implausible: ")]
    assert "outside the plausible" in note and "withheld" in note
    assert findings.segmentation is not None  # the outlines stay, for review


def test_the_sr_and_the_key_image_carry_the_implausible_segmentation(cropped) -> None:
    from radpilot.engine.pipeline import encode_results

    findings, volume, ds = cropped
    _, sr, _ = encode_results(ANALYSIS, findings, volume, [ds], uid_seed="chest-xray-quality")
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    sr = pydicom.dcmread(io.BytesIO(buffer.getvalue()))

    def items(node):  # noqa: ANN001, ANN202
        for item in node.get("ContentSequence", []):
            yield item
            yield from items(item)

    coded = [(i.ConceptNameCodeSequence[0].CodeValue, i.ConceptCodeSequence[0].CodeValue) for i in items(sr) if i.ValueType == "CODE"]
    assert ("RP-SEGQ", "RP-SEGQ-IMPL") in coded
    assert "RP-CTR" not in {i.ConceptNameCodeSequence[0].CodeValue for i in items(sr) if i.ValueType == "NUM"}
    key = render_key_image(findings, volume)
    assert "Segmentation quality: Implausible: CTR withheld" in key.legend
    assert not any("Cardiothoracic ratio" in line for line in key.legend)
