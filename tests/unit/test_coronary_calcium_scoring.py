"""The Agatston arithmetic of coronary_calcium, checked against hand-computed worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radpilot.analyses.coronary_calcium.scoring import (
    agatston_scale,
    cac_drs_category,
    cac_drs_label,
    density_weight,
    score_lesions,
    slice_lesions,
)

BACKGROUND = 40.0


def _slice(shape: tuple[int, int] = (20, 20)) -> np.ndarray:
    return np.full(shape, BACKGROUND, dtype=np.float32)


@pytest.mark.parametrize(
    ("peak_hu", "weight"),
    [(129.9, 0), (130.0, 1), (199.0, 1), (199.9, 1), (200.0, 2), (299.0, 2), (299.9, 2), (300.0, 3), (399.0, 3), (400.0, 4), (1500.0, 4)],
)
def test_density_weight_follows_the_agatston_bands_at_their_boundaries(peak_hu: float, weight: int) -> None:
    assert density_weight(peak_hu) == weight


def test_density_weight_refuses_a_non_finite_peak() -> None:
    with pytest.raises(ValueError, match="finite"):
        density_weight(float("nan"))


def test_a_lesion_of_known_area_and_peak_scores_area_times_weight() -> None:
    # 4 x 4 pixels of 0.5 x 0.5 mm = 4 mm², peak 450 HU (weight 4): 16 Agatston units on a 3 mm slice.
    image = _slice()
    image[5:9, 5:9] = 300.0
    image[6, 6] = 450.0
    _, lesions = slice_lesions(image, 0.25)
    assert len(lesions) == 1
    assert lesions[0].area_mm2 == pytest.approx(4.0)
    assert lesions[0].peak_hu == pytest.approx(450.0)
    scores = score_lesions(lesions, 3.0)
    assert scores.agatston == pytest.approx(16.0)
    assert scores.volume_mm3 == pytest.approx(12.0)


def test_worked_example_of_three_lesions_sums_their_scores() -> None:
    # Hand computation at 1 mm² pixels, 3 mm slices:
    #   10 pixels peak 250 HU -> 10 x 2 = 20;  3 pixels peak 410 HU -> 3 x 4 = 12;  5 pixels peak 150 HU -> 5 x 1 = 5.  Total 37.
    image = _slice((30, 30))
    image[2, 2:12] = 210.0
    image[2, 5] = 250.0
    image[10, 10:13] = 410.0
    image[20:25, 20] = 150.0
    _, lesions = slice_lesions(image, 1.0)
    assert sorted(round(lesion.agatston_area_weight) for lesion in lesions) == [5, 12, 20]
    assert score_lesions(lesions, 3.0).agatston == pytest.approx(37.0)


def test_a_lesion_smaller_than_one_square_millimetre_is_not_counted() -> None:
    image = _slice()
    image[3, 3:6] = 500.0  # 3 pixels of 0.25 mm² = 0.75 mm²
    image[10, 3:7] = 500.0  # 4 pixels = 1.0 mm², kept
    _, lesions = slice_lesions(image, 0.25)
    assert [lesion.n_pixels for lesion in lesions] == [4]


def test_pixels_touching_at_a_corner_form_one_lesion() -> None:
    image = _slice()
    image[4, 4] = image[5, 5] = image[6, 6] = image[7, 7] = 300.0
    _, lesions = slice_lesions(image, 0.25)
    assert len(lesions) == 1 and lesions[0].n_pixels == 4


def test_pixels_below_130_hu_are_not_calcium() -> None:
    image = _slice()
    image[4:10, 4:10] = 129.0
    assert slice_lesions(image, 1.0)[1] == []


def test_thin_slices_are_scaled_to_the_3_mm_equivalent() -> None:
    # The same 4 mm², weight-2 lesion on two 1.5 mm slices equals it on one 3 mm slice.
    image = _slice()
    image[5:7, 5:7] = 250.0
    thin = slice_lesions(image, 1.0, 0)[1] + slice_lesions(image, 1.0, 1)[1]
    thick = slice_lesions(image, 1.0, 0)[1]
    assert agatston_scale(1.5) == pytest.approx(0.5)
    assert score_lesions(thin, 1.5).agatston == pytest.approx(score_lesions(thick, 3.0).agatston) == pytest.approx(8.0)
    assert score_lesions(thin, 1.5).volume_mm3 == pytest.approx(12.0)


def test_mass_score_uses_the_configured_calibration_factor() -> None:
    # 10 mm² of 500 HU on a 3 mm slice = 0.03 cm³; 0.8 mg/cm³ per HU x 500 HU x 0.03 cm³ = 12 mg.
    image = _slice()
    image[2, 2:12] = 500.0
    lesions = slice_lesions(image, 1.0)[1]
    assert score_lesions(lesions, 3.0, 0.8).mass_mg == pytest.approx(12.0)
    assert score_lesions(lesions, 3.0).mass_mg is None
    with pytest.raises(ValueError, match="calibration"):
        score_lesions(lesions, 3.0, -1.0)


def test_a_component_mostly_inside_the_region_counts_whole_and_one_mostly_outside_not_at_all() -> None:
    image = _slice()
    image[2, 2:10] = 300.0  # 8 pixels, 5 inside the region
    image[12, 2:10] = 300.0  # 8 pixels, 2 inside
    region = np.zeros_like(image, dtype=bool)
    region[2, 2:7] = True
    region[12, 2:4] = True
    _, lesions = slice_lesions(image, 1.0, region=region)
    assert [(lesion.n_pixels, lesion.area_mm2) for lesion in lesions] == [(8, 8.0)]


def test_excluded_pixels_are_never_part_of_a_lesion() -> None:
    image = _slice()
    image[2:6, 2:6] = 700.0
    exclude = np.zeros_like(image, dtype=bool)
    exclude[2:6, 2:4] = True
    _, lesions = slice_lesions(image, 1.0, exclude=exclude)
    assert lesions[0].n_pixels == 8


@pytest.mark.parametrize(("bad", "match"), [(np.zeros((2, 2, 2)), "2-D"), (np.zeros((4, 4)), None)])
def test_slice_lesions_refuses_malformed_input(bad: np.ndarray, match: str | None) -> None:
    with pytest.raises(ValueError, match=match or "pixel area"):
        slice_lesions(bad, 1.0 if match else -1.0)


@pytest.mark.parametrize(
    ("agatston", "category"), [(0.0, 0), (0.3, 1), (1.0, 1), (99.0, 1), (100.0, 2), (299.0, 2), (300.0, 3), (4000.0, 3)]
)
def test_cac_drs_category_follows_the_agatston_ranges(agatston: float, category: int) -> None:
    assert cac_drs_category(agatston) == category


def test_cac_drs_label_carries_the_vessel_modifier_only_with_calcium() -> None:
    assert cac_drs_label(0.0, 0) == "A0"
    assert cac_drs_label(150.0, 3) == "A2/N3"
    assert cac_drs_label(15.0, 1) == "A1/N1"
    with pytest.raises(ValueError, match="0-4"):
        cac_drs_label(15.0, 5)
    with pytest.raises(ValueError, match="non-negative"):
        cac_drs_category(-1.0)


def test_the_slice_scale_is_one_at_3_mm_and_refuses_a_non_positive_increment() -> None:
    assert agatston_scale(3.0) == 1.0
    for bad in (0.0, -3.0, math.inf):
        with pytest.raises(ValueError, match="increment"):
            agatston_scale(bad)
