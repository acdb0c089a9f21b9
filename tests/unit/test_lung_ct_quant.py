"""Unit tests for the lung CT quantification on a synthetic phantom with exact truth.

The phantom has a body (elliptic cylinder, 40 HU), two lung ellipsoids (-850 HU),
an emphysema sphere (-980 HU) of known size in the left lung, and a trachea
(an air tube, -1000 HU) on the midline above the carina level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from radpilot.analyses.lung_ct import (
    LEFT_LUNG_LABEL,
    RIGHT_LUNG_LABEL,
    LungCTQuant,
    SegmentationParams,
    Thresholds,
    classify_kernel,
    estimate_thresholds,
    kernel_note,
    lung_density_stats,
    segment_lungs,
    segment_lungs_slice,
)
from radpilot.contract import NotApplicableError
from radpilot.dicom.volume import Volume

SPACING = (5.0, 2.0, 2.0)  # z, y, x in mm
SHAPE = (40, 170, 170)  # 200 mm coverage, 340 mm field of view


@dataclass(frozen=True)
class Phantom:
    volume: Volume
    right: np.ndarray  # truth masks
    left: np.ndarray
    emphysema: np.ndarray
    trachea: np.ndarray


def make_phantom(*, kernel: str = "B", noise_hu: float = 10.0, seed: int = 0, flip: bool = False) -> Phantom:
    """Synthetic chest; patient x (LPS) grows with the column index, z with the slice index (head up)."""
    nz, ny, nx = SHAPE
    sz, sy, sx = SPACING
    z = (np.arange(nz) - (nz - 1) / 2) * sz
    y = (np.arange(ny) - (ny - 1) / 2) * sy
    x = (np.arange(nx) - (nx - 1) / 2) * sx
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    body = (xx / 150.0) ** 2 + (yy / 110.0) ** 2 <= 1.0
    right = ((xx + 70.0) / 50.0) ** 2 + (yy / 70.0) ** 2 + (zz / 80.0) ** 2 <= 1.0
    left = ((xx - 70.0) / 50.0) ** 2 + (yy / 70.0) ** 2 + (zz / 80.0) ** 2 <= 1.0
    emphysema = ((xx - 70.0) ** 2 + (yy - 10.0) ** 2 + (zz - 10.0) ** 2) <= 25.0**2
    trachea = (xx**2 + (yy + 30.0) ** 2 <= 9.0**2) & (zz >= 20.0)
    hu = np.full(SHAPE, -1000.0)
    hu[body] = 40.0
    hu[right | left] = -850.0
    hu[emphysema] = -980.0
    hu[trachea] = -1000.0
    hu += np.random.default_rng(seed).normal(0.0, noise_hu, SHAPE)
    direction = np.eye(3)
    if flip:  # same anatomy stored feet-first and mirrored: x and z index run the other way
        hu, right, left, emphysema, trachea = (a[::-1, :, ::-1] for a in (hu, right, left, emphysema, trachea))
        direction = np.diag([-1.0, 1.0, -1.0])
    volume = Volume(
        voxels=hu.astype(np.float32),
        spacing_zyx=SPACING,
        origin=(0.0, 0.0, 0.0),
        direction=direction,
        series_uid="2.25.1",
        modality="CT",
        metadata={"ConvolutionKernel": kernel, "Manufacturer": "Phantom"},
    )
    return Phantom(volume, right, left, emphysema, trachea)


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom()


@pytest.fixture(scope="module")
def findings(phantom: Phantom):  # noqa: ANN201
    return LungCTQuant().run(phantom.volume)


def _measurement(findings, name_value: str, site: str) -> float:  # noqa: ANN001
    matches = [m for m in findings.measurements if m.name.value == name_value and m.finding_site.meaning == site]
    assert len(matches) == 1, f"expected one {name_value} for {site}"
    return matches[0].value


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_identity_and_segments(findings) -> None:  # noqa: ANN001
    assert findings.analysis == "lung_ct_quant"
    assert findings.version == "1.0.0"
    segments = {s.number: s for s in findings.segmentation.segments}
    assert segments[1].type.value == "3341006" and segments[1].type.meaning == "Right lung"
    assert segments[2].type.value == "44029006" and segments[2].type.meaning == "Left lung"
    assert all(s.category.value == "123037004" for s in segments.values())
    assert findings.segmentation.labels.dtype == np.uint8


def test_left_right_and_trachea(phantom: Phantom, findings) -> None:  # noqa: ANN001
    labels = findings.segmentation.labels
    assert _dice(labels == RIGHT_LUNG_LABEL, phantom.right) > 0.97
    assert _dice(labels == LEFT_LUNG_LABEL, phantom.left) > 0.97
    assert not np.any(labels[phantom.trachea]), "the trachea must not be part of the lungs"


def test_volumes_match_truth(phantom: Phantom, findings) -> None:  # noqa: ANN001
    ml = phantom.volume.ml_per_voxel
    analytic = 4.0 / 3.0 * np.pi * 50 * 70 * 80 / 1000.0  # mL of each ellipsoid
    for site, truth in (("Right lung", phantom.right), ("Left lung", phantom.left)):
        measured = _measurement(findings, "118565006", site)
        assert measured == pytest.approx(truth.sum() * ml, rel=0.02)
        assert measured == pytest.approx(analytic, rel=0.05)
    total = _measurement(findings, "118565006", "Both lungs")
    assert total == pytest.approx((phantom.right.sum() + phantom.left.sum()) * ml, rel=0.02)


def test_laa950_matches_the_emphysema_fraction(phantom: Phantom, findings) -> None:  # noqa: ANN001
    expected_left = 100.0 * phantom.emphysema.sum() / phantom.left.sum()
    expected_total = 100.0 * phantom.emphysema.sum() / (phantom.left.sum() + phantom.right.sum())
    assert _measurement(findings, "LAA950", "Left lung") == pytest.approx(expected_left, rel=0.03)
    assert _measurement(findings, "LAA950", "Right lung") < 0.05
    assert _measurement(findings, "LAA950", "Both lungs") == pytest.approx(expected_total, rel=0.03)
    # Perc15 of the left lung: about 15 % of it is emphysema (-980), so it sits near -850 or below
    assert _measurement(findings, "PERC15", "Right lung") == pytest.approx(-850 - 10.4, abs=3.0)
    assert _measurement(findings, "112031", "Right lung") == pytest.approx(-850, abs=3.0)


def test_units_codes_and_segments_of_measurements(findings) -> None:  # noqa: ANN001
    units = {m.name.value: m.unit.value for m in findings.measurements}
    assert units == {"118565006": "mL", "LAA950": "%", "PERC15": "[hnsf'U]", "112031": "[hnsf'U]"}
    for m in findings.measurements:
        expected = {"Right lung": 1, "Left lung": 2, "Both lungs": None}[m.finding_site.meaning]
        assert m.segment_number == expected
    assert len(findings.measurements) == 12


def test_kernel_note_and_key_slice(phantom: Phantom, findings) -> None:  # noqa: ANN001
    assert any("Reconstruction kernel: B" in n and "LAA-950" in n for n in findings.notes)
    areas = (phantom.right | phantom.left).sum(axis=(1, 2))
    assert abs(findings.key_slices[0] - int(np.argmax(areas))) <= 1


def test_sharp_kernel_note() -> None:
    assert classify_kernel("L") == "sharp" and classify_kernel("B70f") == "sharp"
    assert classify_kernel("B") == "soft" and classify_kernel("STANDARD") == "soft"
    assert classify_kernel(None) == "unknown"
    assert "inflates" in kernel_note("L")
    assert "not recorded" in kernel_note(None)


def test_orientation_is_followed_for_left_and_right() -> None:
    flipped = make_phantom(flip=True)
    findings = LungCTQuant().run(flipped.volume)
    labels = findings.segmentation.labels
    assert _dice(labels == RIGHT_LUNG_LABEL, flipped.right) > 0.97
    assert _dice(labels == LEFT_LUNG_LABEL, flipped.left) > 0.97


def test_joined_lungs_are_separated() -> None:
    phantom = make_phantom()
    hu = np.array(phantom.volume.voxels)
    # an anterior junction: a 6 mm thick band of lung joining both lungs over 10 slices
    hu[10:20, 62:65, 60:110] = -850.0
    volume = Volume(voxels=hu, spacing_zyx=SPACING, direction=np.eye(3), modality="CT")
    result = segment_lungs(volume.voxels, volume.spacing_zyx, volume.direction)
    assert result.split_method == "erosion"
    assert _dice(result.labels == RIGHT_LUNG_LABEL, phantom.right) > 0.95
    assert _dice(result.labels == LEFT_LUNG_LABEL, phantom.left) > 0.95


def test_deterministic(phantom: Phantom, findings) -> None:  # noqa: ANN001
    again = LungCTQuant().run(phantom.volume)
    np.testing.assert_array_equal(again.segmentation.labels, findings.segmentation.labels)
    assert [m.value for m in again.measurements] == [m.value for m in findings.measurements]


# ----------------------------------------------------------------------------- check_input
def test_three_slices_are_not_applicable(phantom: Phantom) -> None:
    short = Volume(voxels=phantom.volume.voxels[18:21], spacing_zyx=SPACING, modality="CT")
    with pytest.raises(NotApplicableError) as info:
        LungCTQuant().check_input(short)
    message = str(info.value)
    assert message.startswith("series has 3 slices covering 15 mm; lung_ct_quant needs")
    assert "at least 20 slices" in message and "150 mm" in message


def test_mr_is_not_applicable(phantom: Phantom) -> None:
    mr = Volume(voxels=phantom.volume.voxels, spacing_zyx=SPACING, modality="MR")
    with pytest.raises(NotApplicableError, match="series modality is MR; lung_ct_quant analyses CT only"):
        LungCTQuant().run(mr)


def test_sagittal_and_small_field_and_non_hu_are_not_applicable(phantom: Phantom) -> None:
    sagittal = np.array([[0, 1.0, 0], [0, 0, -1.0], [-1.0, 0, 0]])
    vol = Volume(voxels=phantom.volume.voxels, spacing_zyx=SPACING, direction=sagittal, modality="CT")
    with pytest.raises(NotApplicableError, match="not axial"):
        LungCTQuant().check_input(vol)
    small = Volume(voxels=phantom.volume.voxels[:, :50, :50], spacing_zyx=SPACING, modality="CT")
    with pytest.raises(NotApplicableError, match="field of view is 100 x 100 mm"):
        LungCTQuant().check_input(small)
    shifted = Volume(voxels=phantom.volume.voxels + 1024.0, spacing_zyx=SPACING, modality="CT")
    with pytest.raises(NotApplicableError, match="Hounsfield"):
        LungCTQuant().check_input(shifted)


def test_no_lungs_is_not_applicable() -> None:
    solid = np.full(SHAPE, -1000.0, dtype=np.float32)
    solid[:, 20:150, 20:150] = 40.0
    vol = Volume(voxels=solid, spacing_zyx=SPACING, modality="CT")
    with pytest.raises(NotApplicableError, match="no aerated lung"):
        LungCTQuant().run(vol)


def test_check_input_needs_a_volume() -> None:
    with pytest.raises(TypeError, match="Volume"):
        LungCTQuant().check_input(np.zeros((3, 3, 3)))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- building blocks
def test_slice_core_on_an_uncalibrated_scale(phantom: Phantom) -> None:
    """The 2-D core with adaptive thresholds works when air is about -810 and lung about -650 (no HU)."""
    k = 20
    image = np.array(phantom.volume.voxels[k])
    uncalibrated = np.where(image < -900, -810.0, np.where(image < -500, -650.0, image)) + np.random.default_rng(1).normal(
        0, 20, image.shape
    )
    mask = segment_lungs_slice(uncalibrated, pixel_spacing_mm=SPACING[1:])
    truth = phantom.right[k] | phantom.left[k]
    assert _dice(mask, truth) > 0.97
    assert not np.any(mask[phantom.trachea[k]])


def test_fixed_thresholds_and_estimates(phantom: Phantom) -> None:
    thresholds = estimate_thresholds(phantom.volume.voxels)
    # lung -850 and tissue 40 are well separated: the body threshold falls in the middle of the gap
    assert thresholds.body == pytest.approx(-405, abs=30)
    assert thresholds.lung == pytest.approx(thresholds.body + 0.1 * 890, abs=10)
    mask = segment_lungs_slice(np.array(phantom.volume.voxels[20]), Thresholds(body=-500, lung=-400), pixel_spacing_mm=(2.0, 2.0))
    assert _dice(mask, phantom.right[20] | phantom.left[20]) > 0.97


def test_input_validation_of_building_blocks() -> None:
    with pytest.raises(ValueError, match="2-D"):
        segment_lungs_slice(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="pixel_spacing_mm"):
        segment_lungs_slice(np.zeros((8, 8)), pixel_spacing_mm=(0.0, 1.0))
    with pytest.raises(ValueError, match="3-D"):
        segment_lungs(np.zeros((8, 8)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="min_lung_volume_ml"):
        SegmentationParams(min_lung_volume_ml=-1)
    with pytest.raises(ValueError, match="finite"):
        Thresholds(body=float("nan"), lung=0.0)
    with pytest.raises(ValueError, match="empty"):
        lung_density_stats(np.zeros((2, 2)), np.zeros((2, 2), dtype=bool), 1.0)
    with pytest.raises(TypeError, match="params"):
        LungCTQuant(params={})  # type: ignore[arg-type]


def test_density_stats_definitions() -> None:
    values = np.array([-1000.0, -960.0, -940.0, -900.0, -800.0, -700.0, -600.0, -500.0, -400.0, -300.0])
    stats = lung_density_stats(values, np.ones(10, dtype=bool), 0.5)
    assert stats.voxel_count == 10
    assert stats.volume_ml == pytest.approx(5.0)
    assert stats.laa950_percent == pytest.approx(20.0)
    assert stats.perc15_hu == pytest.approx(np.percentile(values, 15))
    assert stats.mean_hu == pytest.approx(values.mean())
