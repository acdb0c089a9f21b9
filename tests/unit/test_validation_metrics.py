"""Clinical metrics of radpilot.validation.metrics against hand-computed values.

Every expected number below is derived by hand in the comment next to it; the
code under test is never used to produce its own expectation.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from radpilot.validation import metrics as m

# ---------------------------------------------------------------------------
# Overlap
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected_dice", "expected_jaccard"),
    [
        # |A|=2, |B|=2, |A∩B|=1, |A∪B|=3 -> Dice 2*1/4 = 0.5, Jaccard 1/3
        ([1, 1, 0, 0], [1, 0, 1, 0], 0.5, 1 / 3),
        # identical -> 1, 1
        ([0, 1, 1, 0], [0, 1, 1, 0], 1.0, 1.0),
        # disjoint -> 0, 0
        ([1, 0, 0, 0], [0, 0, 0, 1], 0.0, 0.0),
        # |A|=3, |B|=1 (inside A): Dice 2/4 = 0.5, Jaccard 1/3
        ([1, 1, 1, 0], [0, 1, 0, 0], 0.5, 1 / 3),
        # both empty -> 1.0 by convention
        ([0, 0, 0, 0], [0, 0, 0, 0], 1.0, 1.0),
        # one empty -> 0.0
        ([0, 0, 0, 0], [0, 1, 0, 0], 0.0, 0.0),
    ],
)
def test_overlap_matches_hand_computed_dice_and_jaccard(a, b, expected_dice, expected_jaccard):
    a, b = np.array(a, dtype=bool), np.array(b, dtype=bool)
    assert m.dice(a, b) == pytest.approx(expected_dice)
    assert m.jaccard(a, b) == pytest.approx(expected_jaccard)


def test_overlap_accepts_zero_one_integer_masks_in_3d():
    a = np.zeros((2, 3, 3), dtype=np.uint8)
    b = np.zeros((2, 3, 3), dtype=np.int64)
    a[0, :, :] = 1  # 9 voxels
    b[:, 0, 0] = 1  # 2 voxels, 1 of them in a
    # Dice = 2*1/(9+2) = 2/11
    assert m.dice(a, b) == pytest.approx(2 / 11)


@pytest.mark.parametrize("fn", [m.dice, m.jaccard])
def test_overlap_rejects_shape_mismatch(fn):
    with pytest.raises(ValueError, match="shape mismatch"):
        fn(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


@pytest.mark.parametrize("fn", [m.dice, m.jaccard])
def test_overlap_rejects_probability_maps_and_label_maps(fn):
    with pytest.raises(TypeError, match="threshold"):
        fn(np.full((2, 2), 0.7), np.zeros((2, 2), bool))
    with pytest.raises(TypeError, match="labels == 1"):
        fn(np.array([0, 1, 2]), np.array([0, 1, 1]))


def test_overlap_rejects_zero_size_masks():
    with pytest.raises(ValueError, match="empty"):
        m.dice(np.zeros((0, 3), bool), np.zeros((0, 3), bool))


# ---------------------------------------------------------------------------
# Surface distances
# ---------------------------------------------------------------------------


def _squares(shift: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """3x3 squares in a 5x7 image, B shifted right by ``shift`` columns."""
    a = np.zeros((5, 7), bool)
    b = np.zeros((5, 7), bool)
    a[1:4, 1:4] = True
    b[1:4, 1 + shift : 4 + shift] = True
    return a, b


def test_surface_distances_isotropic_shifted_squares():
    # Surfaces (face connectivity) = each 3x3 square minus its centre: 8 voxels each.
    # A ring: rows 1-3, cols 1-3 minus (2,2); B ring: rows 1-3, cols 2-4 minus (2,3).
    # A->B: (1,1),(2,1),(3,1) are 1 column from B's left edge -> 1; (2,3) is B's centre,
    # its nearest B-ring voxels (1,3),(3,3),(2,2),(2,4) are 1 away -> 1; the other four
    # A-ring voxels lie on B's ring -> 0.  So four 0s and four 1s; B->A symmetric.
    a, b = _squares()
    d = m.surface_distances(a, b, (1.0, 1.0))
    assert sorted(d.a_to_b) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert sorted(d.b_to_a) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert m.hausdorff(a, b, (1, 1)) == 1.0
    # union: 8 zeros + 8 ones -> mean 0.5
    assert m.average_surface_distance(a, b, (1, 1)) == pytest.approx(0.5)
    # P95 of 16 sorted values: position 0.95*15 = 14.25 -> between two 1s -> 1
    assert m.hausdorff_95(a, b, (1, 1)) == pytest.approx(1.0)


def test_surface_distances_anisotropic_spacing_weights_each_axis():
    # Same squares, rows 1 mm, columns 2 mm.
    # A->B: (1,1),(2,1),(3,1) -> one column = 2 mm; (2,3) -> nearest B ring voxel is
    # one ROW away ((1,3) or (3,3)) = 1 mm, not one column (2 mm); others 0.
    #   A->B = {2,2,2,1,0,0,0,0}.  B->A: (1,4),(2,4),(3,4) -> 2 mm; (2,2) -> 1 mm.
    # union: 8 zeros, 2 ones, 6 twos -> HD 2, ASSD = (2*1 + 6*2)/16 = 14/16 = 0.875,
    # P95 position 14.25 among sorted -> twos -> 2.
    a, b = _squares()
    d = m.surface_distances(a, b, (1.0, 2.0))
    assert sorted(d.a_to_b) == [0, 0, 0, 0, 1, 2, 2, 2]
    assert sorted(d.b_to_a) == [0, 0, 0, 0, 1, 2, 2, 2]
    assert m.hausdorff(a, b, (1.0, 2.0)) == pytest.approx(2.0)
    assert m.average_surface_distance(a, b, (1.0, 2.0)) == pytest.approx(0.875)
    assert m.hausdorff_95(a, b, (1.0, 2.0)) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("offset", "spacing", "expected_mm"),
    [
        # two single voxels 2 slices apart, 5 mm slices: 2*5 = 10 mm
        ((2, 0, 0), (5.0, 0.7, 0.7), 10.0),
        # 3 columns apart, 0.7 mm columns: 2.1 mm (slice thickness irrelevant)
        ((0, 0, 3), (5.0, 0.7, 0.7), 2.1),
        # diagonal: 1 slice (3 mm) and 1 row (4 mm): sqrt(9+16) = 5 mm
        ((1, 1, 0), (3.0, 4.0, 1.0), 5.0),
    ],
)
def test_known_distance_on_anisotropic_3d_grid(offset, spacing, expected_mm):
    a = np.zeros((6, 6, 6), bool)
    b = np.zeros((6, 6, 6), bool)
    a[1, 1, 1] = True
    b[1 + offset[0], 1 + offset[1], 1 + offset[2]] = True
    for fn in (m.hausdorff, m.hausdorff_95, m.average_surface_distance):
        assert fn(a, b, spacing) == pytest.approx(expected_mm)


def test_hausdorff_95_union_differs_from_max_of_directed_percentiles():
    # A = voxel at column 0; B = voxels at columns 0 and 10 (1x11 image, 1 mm).
    # A->B = [0]; B->A = [0, 10].
    # union [0, 0, 10]: P95 position 0.95*2 = 1.9 -> 0 + 0.9*(10-0) = 9.0
    # max_directed: P95([0]) = 0; P95([0,10]) = 0.95*10 = 9.5 -> 9.5
    a = np.zeros((1, 11), bool)
    b = np.zeros((1, 11), bool)
    a[0, 0] = True
    b[0, [0, 10]] = True
    assert m.hausdorff_95(a, b, (1, 1)) == pytest.approx(9.0)
    assert m.hausdorff_95(a, b, (1, 1), method="max_directed") == pytest.approx(9.5)
    assert m.hausdorff(a, b, (1, 1)) == pytest.approx(10.0)


def test_surface_counts_foreground_on_the_image_border():
    # A full 3x3 image: every voxel except the centre touches the (background) outside.
    a = np.ones((3, 3), bool)
    d = m.surface_distances(a, a, (1, 1))
    assert d.a_to_b.size == 8 and np.all(d.a_to_b == 0)


def test_surface_distances_are_unchanged_by_cropping_far_from_the_mask():
    a, b = _squares()
    big_a = np.zeros((40, 50), bool)
    big_b = np.zeros((40, 50), bool)
    big_a[20:25, 30:37] = a
    big_b[20:25, 30:37] = b
    small = m.surface_distances(a, b, (1.0, 2.0))
    big = m.surface_distances(big_a, big_b, (1.0, 2.0))
    assert sorted(small.a_to_b) == sorted(big.a_to_b)
    assert sorted(small.b_to_a) == sorted(big.b_to_a)


@pytest.mark.parametrize(
    ("a_empty", "b_empty", "expected"),
    [(True, True, 0.0), (True, False, math.inf), (False, True, math.inf)],
)
@pytest.mark.parametrize("fn", [m.hausdorff, m.hausdorff_95, m.average_surface_distance])
def test_surface_metrics_empty_mask_conventions(fn, a_empty, b_empty, expected):
    a, b = _squares()
    if a_empty:
        a[:] = False
    if b_empty:
        b[:] = False
    assert fn(a, b, (1, 1)) == expected


def test_surface_distances_with_one_empty_mask_are_infinite_one_way():
    a, b = _squares()
    b[:] = False
    d = m.surface_distances(a, b, (1, 1))
    assert d.a_to_b.size == 8 and np.all(np.isinf(d.a_to_b))
    assert d.b_to_a.size == 0


@pytest.mark.parametrize(
    ("spacing", "error", "match"),
    [
        ((1.0,), ValueError, "length 1 but the array has 2"),
        ((1.0, 1.0, 1.0), ValueError, "length 3"),
        ((1.0, 0.0), ValueError, "> 0"),
        ((1.0, float("nan")), ValueError, "finite"),
        (1.0, TypeError, "sequence of 2"),
        (None, TypeError, "sequence of 2"),
    ],
)
def test_surface_metrics_reject_bad_spacing(spacing, error, match):
    a, b = _squares()
    with pytest.raises(error, match=match):
        m.hausdorff(a, b, spacing)


def test_surface_metrics_reject_shape_mismatch_and_wrong_dimension():
    with pytest.raises(ValueError, match="shape mismatch"):
        m.hausdorff(np.ones((3, 3), bool), np.ones((3, 4), bool), (1, 1))
    with pytest.raises(ValueError, match="2-D or 3-D"):
        m.hausdorff(np.ones(5, bool), np.ones(5, bool), (1,))


def test_hausdorff_95_rejects_unknown_method_and_percentile():
    a, b = _squares()
    with pytest.raises(ValueError, match="method"):
        m.hausdorff_95(a, b, (1, 1), method="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="percentile"):
        m.hausdorff_95(a, b, (1, 1), percentile=120)


# ---------------------------------------------------------------------------
# Volumes
# ---------------------------------------------------------------------------


def test_volume_difference_in_mm3_ml_and_percent():
    # spacing 2 x 0.5 x 0.5 mm -> voxel volume 0.5 mm3
    # a: 12 voxels -> 6 mm3; b: 10 voxels -> 5 mm3
    # difference +1 mm3 = 0.001 mL; relative 100 * 1/5 = +20 %
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a.flat[:12] = True
    b.flat[:10] = True
    vd = m.volume_difference(a, b, (2.0, 0.5, 0.5))
    assert vd.volume_a_mm3 == pytest.approx(6.0)
    assert vd.volume_b_mm3 == pytest.approx(5.0)
    assert vd.difference_mm3 == pytest.approx(1.0)
    assert vd.absolute_difference_mm3 == pytest.approx(1.0)
    assert vd.relative_difference_percent == pytest.approx(20.0)
    assert vd.difference_ml == pytest.approx(0.001)
    # under-segmentation is negative: (5-6)/6 = -16.67 %, absolute stays positive
    vd2 = m.volume_difference(b, a, (2.0, 0.5, 0.5))
    assert vd2.relative_difference_percent == pytest.approx(-100 / 6)
    assert vd2.absolute_difference_mm3 == pytest.approx(1.0)


def test_mm3_to_ml_and_mask_volume():
    assert m.mm3_to_ml(1500.0) == pytest.approx(1.5)
    # 1000 voxels of 1 mm3 = 1 mL
    assert m.mm3_to_ml(m.mask_volume_mm3(np.ones((10, 10, 10), bool), (1, 1, 1))) == 1.0


@pytest.mark.parametrize(("a_voxels", "b_voxels", "expected_percent"), [(0, 0, 0.0), (3, 0, math.inf)])
def test_volume_difference_empty_reference_convention(a_voxels, b_voxels, expected_percent):
    a = np.zeros((2, 2, 2), bool)
    b = np.zeros((2, 2, 2), bool)
    a.flat[:a_voxels] = True
    b.flat[:b_voxels] = True
    assert m.volume_difference(a, b, (1, 1, 1)).relative_difference_percent == expected_percent


def test_volume_difference_rejects_2d_masks_and_bad_spacing():
    with pytest.raises(ValueError, match="3-D"):
        m.volume_difference(np.ones((2, 2), bool), np.ones((2, 2), bool), (1, 1))
    with pytest.raises(ValueError, match="length 2"):
        m.volume_difference(np.ones((2, 2, 2), bool), np.ones((2, 2, 2), bool), (1, 1))


# ---------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------

SPACING_3D = (2.0, 1.0, 1.0)  # 2 mm slices


@pytest.mark.parametrize(
    ("candidate", "margin", "hit"),
    [
        # 1 slice away = 2 mm <= radius 3 mm -> hit
        ((11, 10, 10), 0.0, True),
        # 2 slices away = 4 mm > 3 mm -> miss (would be a hit with isotropic 1 mm voxels)
        ((12, 10, 10), 0.0, False),
        # same, with 1 mm margin: 4 <= 3 + 1 -> hit
        ((12, 10, 10), 1.0, True),
        # exactly on the sphere: 3 columns = 3 mm <= 3 mm -> hit
        ((10, 10, 13), 0.0, True),
        # diagonal: 1 slice (2 mm) and 3 columns (3 mm): sqrt(4+9) = 3.606 > 3 -> miss
        ((11, 10, 13), 0.0, False),
    ],
)
def test_detection_hit_uses_radius_plus_margin_in_mm(candidate, margin, hit):
    res = m.detection_hits([candidate], [0.9], [(10, 10, 10)], 3.0, SPACING_3D, margin_mm=margin)
    assert res.candidate_outcome.tolist() == (["tp"] if hit else ["fp"])
    assert res.n_references == 1
    assert (not math.isnan(res.reference_scores[0])) == hit


def test_each_reference_counts_once_by_its_highest_scoring_hit():
    # Two candidates inside the same nodule (scores .4, .8) and one far away (.6).
    # -> the .8 candidate is the TP, the .4 is ignored (neither TP nor FP), .6 is FP.
    res = m.detection_hits(
        [(10, 10, 10), (10, 10, 11), (30, 30, 30)],
        [0.4, 0.8, 0.6],
        [(10, 10, 10)],
        [5.0],
        SPACING_3D,
    )
    assert res.candidate_outcome.tolist() == ["ignored", "tp", "fp"]
    assert res.reference_scores.tolist() == [0.8]
    assert res.matched_candidate.tolist() == [1]
    assert res.fp_scores.tolist() == [0.6]


def test_one_candidate_can_be_the_best_hit_of_two_overlapping_references():
    # LUNA16 behaviour: a candidate inside two references counts for both.
    res = m.detection_hits([(10, 10, 10)], [0.7], [(10, 10, 9), (10, 10, 11)], 2.0, SPACING_3D)
    assert res.reference_scores.tolist() == [0.7, 0.7]
    assert res.candidate_outcome.tolist() == ["tp"]
    assert res.fp_scores.size == 0


def test_case_without_lesions_counts_false_positives_and_has_undefined_sensitivity():
    res = m.detection_hits([(1, 1, 1), (5, 5, 5)], [0.3, 0.9], [], [], SPACING_3D)
    assert res.n_references == 0
    assert res.fp_scores.tolist() == [0.3, 0.9]
    assert math.isnan(m.sensitivity_per_case([res])[0])
    assert m.false_positives_per_case([res]).tolist() == [2]
    assert m.false_positives_per_case([res], threshold=0.5).tolist() == [1]


def test_case_without_candidates_misses_every_reference():
    res = m.detection_hits([], [], [(1, 1, 1)], 3.0, SPACING_3D)
    assert np.isnan(res.reference_scores).all()
    assert res.matched_candidate.tolist() == [-1]
    assert m.sensitivity_per_case([res]).tolist() == [0.0]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"pred_points": [(1, 1)]}, ValueError, r"shape \(n, 3\)"),
        ({"pred_scores": [0.1, 0.2]}, ValueError, "length mismatch"),
        ({"ref_radii_mm": [1.0, 2.0]}, ValueError, "one radius per reference"),
        ({"ref_radii_mm": -1.0}, ValueError, ">= 0"),
        ({"margin_mm": -0.5}, ValueError, "margin_mm"),
        ({"spacing": (1.0, 1.0)}, ValueError, r"shape \(n, 2\)"),
        ({"pred_scores": [float("nan")]}, ValueError, "NaN"),
    ],
)
def test_detection_hits_rejects_invalid_input(kwargs, error, match):
    args = dict(
        pred_points=[(1, 1, 1)],
        pred_scores=[0.5],
        ref_points=[(1, 1, 1)],
        ref_radii_mm=2.0,
        spacing=SPACING_3D,
    )
    args.update(kwargs)
    with pytest.raises(error, match=match):
        m.detection_hits(**args)


def _two_case_example() -> list[m.DetectionResult]:
    """Hand-built example (hits given directly as matrices).

    case 1: refs R1, R2; candidates .9 (hits R1), .8 (hits R1: ignored), .7 (FP), .4 (hits R2)
    case 2: ref R3;      candidates .6 (FP), .5 (hits R3)
    -> TP scores {.9, .4, .5}, FP scores {.7, .6}; 3 references, 2 cases.
    """
    case1 = m.match_detections(
        [0.9, 0.8, 0.7, 0.4],
        np.array([[True, False], [True, False], [False, False], [False, True]]),
    )
    case2 = m.match_detections([0.6, 0.5], np.array([[False], [True]]))
    return [case1, case2]


def test_froc_curve_matches_hand_computed_operating_points():
    # threshold: (FP total -> FP/case, detected -> sensitivity)
    #   inf : 0 -> 0.0, 0 -> 0
    #   .9  : 0 -> 0.0, 1 -> 1/3
    #   .7  : 1 -> 0.5, 1 -> 1/3
    #   .6  : 2 -> 1.0, 1 -> 1/3
    #   .5  : 2 -> 1.0, 2 -> 2/3
    #   .4  : 2 -> 1.0, 3 -> 1
    # (.8 is an ignored extra hit: not an operating point)
    curve = m.froc(_two_case_example())
    assert curve.thresholds.tolist() == [math.inf, 0.9, 0.7, 0.6, 0.5, 0.4]
    assert curve.fps_per_case.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    np.testing.assert_allclose(curve.sensitivity, [0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    assert (curve.n_cases, curve.n_references) == (2, 3)


def test_sensitivity_at_fp_is_a_step_function_and_cpm_is_its_mean():
    # From the curve above, step rule = best sensitivity with FP/case <= rate:
    #   1/8, 1/4, 1/2 -> 1/3 (FP/case 0.5 is reached at threshold .7, still 1/3)
    #   1, 2, 4, 8   -> 1
    # CPM = (3 * 1/3 + 4 * 1) / 7 = 5/7
    curve = m.froc(_two_case_example())
    sens = m.sensitivity_at_fp(curve)
    np.testing.assert_allclose(sens, [1 / 3, 1 / 3, 1 / 3, 1, 1, 1, 1])
    assert m.cpm(curve) == pytest.approx(5 / 7)
    assert m.cpm(_two_case_example()) == pytest.approx(5 / 7)


def test_linear_interpolation_differs_from_step_only_on_tied_tp_and_fp():
    # One case: the reference's hit and a false positive both score 0.5.
    # Curve: inf -> (0 FP, sens 0); 0.5 -> (1 FP, sens 1): a diagonal segment.
    # At 0.5 FP/case: step -> 0 (only the inf point has FP <= 0.5);
    #                 linear -> 0 + 0.5 * (1 - 0) / 1 = 0.5 (as np.interp in LUNA16's script)
    case = m.match_detections([0.5, 0.5], np.array([[True], [False]]))
    curve = m.froc([case])
    assert m.sensitivity_at_fp(curve, [0.5]).tolist() == [0.0]
    assert m.sensitivity_at_fp(curve, [0.5], interpolation="linear").tolist() == [0.5]
    # without ties the two rules agree on the hand example
    c2 = m.froc(_two_case_example())
    np.testing.assert_allclose(m.sensitivity_at_fp(c2, interpolation="linear"), m.sensitivity_at_fp(c2))


def test_froc_with_explicit_thresholds_always_starts_at_infinity():
    # At >= 0.65: FP {.7} -> 1/2 per case; detected {.9} -> 1/3
    curve = m.froc(_two_case_example(), thresholds=[0.65])
    assert curve.thresholds.tolist() == [math.inf, 0.65]
    assert curve.fps_per_case.tolist() == [0.0, 0.5]
    np.testing.assert_allclose(curve.sensitivity, [0.0, 1 / 3])


def test_froc_without_any_reference_has_nan_sensitivity_but_counts_fps():
    case = m.match_detections([0.2, 0.9], np.zeros((2, 0), bool))
    curve = m.froc([case, case])
    # two identical cases, FPs {.2, .9} each: >= .9 -> 2 FPs / 2 cases = 1; >= .2 -> 4/2 = 2
    assert curve.fps_per_case.tolist() == [0.0, 1.0, 2.0]
    assert np.isnan(curve.sensitivity).all()
    assert math.isnan(m.cpm(curve))


def test_per_case_sensitivity_and_false_positives_at_threshold():
    cases = _two_case_example()
    # all candidates: case1 2/2 refs, case2 1/1; FPs 1 and 1
    assert m.sensitivity_per_case(cases).tolist() == [1.0, 1.0]
    assert m.false_positives_per_case(cases).tolist() == [1, 1]
    # at >= .55: case1 R1 (.9) yes, R2 (.4) no -> 1/2; case2 R3 (.5) no -> 0; FPs .7 | .6
    assert m.sensitivity_per_case(cases, threshold=0.55).tolist() == [0.5, 0.0]
    assert m.false_positives_per_case(cases, threshold=0.55).tolist() == [1, 1]


def test_single_case_froc():
    curve = m.froc(_two_case_example()[:1])
    # case 1 alone: FP .7; TPs .9, .4; 2 refs -> at 1 FP/case everything -> 1.0
    assert curve.n_cases == 1
    assert m.sensitivity_at_fp(curve, [0.0, 1.0]).tolist() == [0.5, 1.0]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: m.froc([]), ValueError),
        (lambda: m.froc([1, 2]), TypeError),
        (lambda: m.froc(_two_case_example()[0]), TypeError),
        (lambda: m.sensitivity_at_fp(m.froc(_two_case_example()), [-1.0]), ValueError),
        (lambda: m.sensitivity_at_fp("curve", [1.0]), TypeError),
        (lambda: m.sensitivity_at_fp(m.froc(_two_case_example()), interpolation="cubic"), ValueError),
        (lambda: m.match_detections([0.1], np.array([[1]])), TypeError),
        (lambda: m.match_detections([0.1, 0.2], np.array([[True]])), ValueError),
    ],
)
def test_detection_metrics_reject_invalid_input(call, error):
    with pytest.raises(error):
        call()


# ---------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------


def test_confusion_counts_and_sensitivity_specificity():
    y_true = [1, 1, 1, 0, 0, 0, 0, 1]
    y_pred = [1, 0, 1, 0, 1, 0, 0, 1]
    # TP: idx 0,2,7 = 3; FN: idx 1 = 1; FP: idx 4 = 1; TN: idx 3,5,6 = 3
    assert m.confusion_counts(y_true, y_pred) == (3, 1, 3, 1)
    sens, spec = m.sensitivity_specificity(y_true, y_pred)
    assert sens == pytest.approx(3 / 4)
    assert spec == pytest.approx(3 / 4)


def test_sensitivity_is_nan_without_positives():
    sens, spec = m.sensitivity_specificity([0, 0, 0], [0, 1, 0])
    assert math.isnan(sens)
    assert spec == pytest.approx(2 / 3)


def _mann_whitney_auc(y, s):
    """Brute force: P(score_pos > score_neg) + 0.5 P(tie)."""
    pos = [si for yi, si in zip(y, s) if yi]
    neg = [si for yi, si in zip(y, s) if not yi]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize(
    ("y", "s", "expected"),
    [
        # perfect separation
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),
        # reversed
        ([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9], 0.0),
        # all tied -> every pair is a tie -> 0.5
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),
        # pairs (pos, neg): pos {0.8, 0.4}, neg {0.4, 0.2}:
        # (.8,.4)=1, (.8,.2)=1, (.4,.4)=0.5, (.4,.2)=1 -> 3.5/4 = 0.875
        ([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.2], 0.875),
    ],
)
def test_roc_auc_hand_computed_with_ties(y, s, expected):
    assert m.roc_auc(y, s) == pytest.approx(expected)


def test_roc_auc_with_many_ties_equals_mann_whitney_u():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, size=60)
    s = rng.integers(0, 5, size=60).astype(float)  # heavy ties
    u = stats.mannwhitneyu(s[y == 1], s[y == 0]).statistic
    expected = u / (np.sum(y == 1) * np.sum(y == 0))
    assert m.roc_auc(y, s) == pytest.approx(expected)
    assert m.roc_auc(y, s) == pytest.approx(_mann_whitney_auc(y, s))


def test_roc_curve_points_with_a_tie():
    # y = [1, 0, 1, 0], s = [.9, .6, .6, .1]; thresholds inf, .9, .6, .1
    #   .9 : TP 1, FP 0 -> (0, .5); .6 : TP 2, FP 1 -> (.5, 1) (diagonal tie step)
    #   .1 : TP 2, FP 2 -> (1, 1)
    fpr, tpr, thr = m.roc_curve([1, 0, 1, 0], [0.9, 0.6, 0.6, 0.1])
    assert thr.tolist() == [math.inf, 0.9, 0.6, 0.1]
    assert fpr.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 1.0, 1.0]


@pytest.mark.parametrize(
    ("y", "s", "match"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "both classes"),
        ([0, 1], [0.1], "length mismatch"),
        ([0, 1], [0.1, float("nan")], "NaN"),
        ([0, 2], [0.1, 0.2], "0/1"),
        ([], [], "empty"),
    ],
)
def test_roc_rejects_invalid_input(y, s, match):
    with pytest.raises(ValueError, match=match):
        m.roc_auc(y, s)


# ---------------------------------------------------------------------------
# Measurement agreement
# ---------------------------------------------------------------------------


def test_bland_altman_hand_computed():
    # d = a - b = [1, 2, 3, 2]; bias = 2; deviations [-1, 0, 1, 0] -> SS = 2,
    # sd = sqrt(2/3) = 0.8165; limits 2 -/+ 1.96 * 0.8165 = 0.4996, 3.5004
    ba = m.bland_altman([11, 12, 13, 14], [10, 10, 10, 12])
    assert ba.bias == pytest.approx(2.0)
    assert ba.sd == pytest.approx(math.sqrt(2 / 3))
    assert ba.lower == pytest.approx(2 - 1.96 * math.sqrt(2 / 3))
    assert ba.upper == pytest.approx(2 + 1.96 * math.sqrt(2 / 3))
    assert ba.n == 4


def test_bland_altman_needs_two_pairs_and_equal_lengths():
    with pytest.raises(ValueError, match="at least 2"):
        m.bland_altman([1.0], [2.0])
    with pytest.raises(ValueError, match="length mismatch"):
        m.bland_altman([1.0, 2.0], [2.0])


def test_mean_absolute_error_hand_computed():
    # |1-2| + |5-3| + |4-4| = 3 over 3 -> 1.0
    assert m.mean_absolute_error([1, 5, 4], [2, 3, 4]) == pytest.approx(1.0)


def test_icc_2_1_reproduces_shrout_fleiss_1979_example():
    # Shrout & Fleiss 1979, Table 2 (6 targets x 4 judges). Their Table 3 ANOVA:
    # BMS = 11.24, JMS = 32.49, EMS = 1.02, n = 6, k = 4:
    # ICC(2,1) = (11.24 - 1.02) / (11.24 + 3*1.02 + 4*(32.49 - 1.02)/6)
    #          = 10.22 / (11.24 + 3.06 + 20.98) = 10.22 / 35.28 = 0.29 (reported .29)
    ratings = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
    assert round(m.icc_2_1(ratings), 2) == 0.29


def test_icc_2_1_perfect_agreement_is_one_and_constant_table_is_nan():
    assert m.icc_2_1([[1, 1], [2, 2], [5, 5]]) == pytest.approx(1.0)
    assert math.isnan(m.icc_2_1([[3, 3], [3, 3]]))


@pytest.mark.parametrize(
    ("ratings", "error"),
    [([1, 2, 3], ValueError), ([[1, 2]], ValueError), ([[1, np.nan], [2, 3]], ValueError), ([["a", "b"], ["c", "d"]], TypeError)],
)
def test_icc_2_1_rejects_invalid_tables(ratings, error):
    with pytest.raises(error):
        m.icc_2_1(ratings)


# ---------------------------------------------------------------------------
# Ordinal agreement
# ---------------------------------------------------------------------------


def _labels_from_table(table):
    a, b = [], []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            a += [i] * count
            b += [j] * count
    return a, b


def test_cohen_kappa_two_by_two_textbook_value():
    # [[20, 5], [10, 15]], N = 50: po = 35/50 = 0.7; rows 25/25, cols 30/20:
    # pe = (25*30 + 25*20)/2500 = 0.5; kappa = (0.7 - 0.5)/(1 - 0.5) = 0.4
    table = [[20, 5], [10, 15]]
    assert m.cohen_kappa_from_table(table) == pytest.approx(0.4)
    assert m.cohen_kappa(*_labels_from_table(table)) == pytest.approx(0.4)


# a = [0,0,1,1,2,2], b = [0,1,1,1,2,0] -> table rows a, cols b:
#   [[1,1,0],[0,2,0],[1,0,1]], N = 6, row margins 2,2,2, col margins 2,3,1.
# Expected counts/N^2 per row i: [2*2, 2*3, 2*1]/36 = [4, 6, 2]/36.
# unweighted: po = 4/6, pe = (4+6+2)/36 = 1/3 -> (2/3 - 1/3)/(2/3) = 0.5
# linear w = |i-j|/2: observed disagreement (1*0.5 + 1*1)/6 = 0.25;
#   expected: row0 0*4+.5*6+1*2 = 5, row1 .5*4+0+.5*2 = 3, row2 1*4+.5*6+0 = 7 -> 15/36
#   kappa = 1 - 0.25/(15/36) = 1 - 9/15 = 0.4
# quadratic w = ((i-j)/2)^2: observed (1*.25 + 1*1)/6 = 1.25/6;
#   expected: row0 .25*6+1*2 = 3.5, row1 .25*4+.25*2 = 1.5, row2 1*4+.25*6 = 5.5 -> 10.5/36
#   kappa = 1 - (1.25/6)/(10.5/36) = 1 - 7.5/10.5 = 2/7
KAPPA_A = [0, 0, 1, 1, 2, 2]
KAPPA_B = [0, 1, 1, 1, 2, 0]


@pytest.mark.parametrize(("weights", "expected"), [(None, 0.5), ("linear", 0.4), ("quadratic", 2 / 7)])
def test_cohen_kappa_hand_computed_three_categories(weights, expected):
    assert m.cohen_kappa(KAPPA_A, KAPPA_B, weights=weights) == pytest.approx(expected)


def test_cohen_kappa_string_labels_with_explicit_ordinal_categories():
    names = {0: "benign", 1: "probably benign", 2: "suspicious"}
    a = [names[x] for x in KAPPA_A]
    b = [names[x] for x in KAPPA_B]
    cats = ["benign", "probably benign", "suspicious"]
    assert m.cohen_kappa(a, b, categories=cats, weights="linear") == pytest.approx(0.4)


def test_unused_categories_change_only_weighted_kappa_and_only_in_the_middle():
    # An unused category at the end: unweighted 0.5 unchanged; linear weights become
    # |i-j|/3 = (2/3)*|i-j|/2, scaling observed and expected alike -> still 0.4.
    assert m.cohen_kappa(KAPPA_A, KAPPA_B, categories=[0, 1, 2, 3]) == pytest.approx(0.5)
    assert m.cohen_kappa(KAPPA_A, KAPPA_B, categories=[0, 1, 2, 3], weights="linear") == pytest.approx(0.4)
    # An unused category 0.5 between 0 and 1 moves labels to indices 0->0, 1->2, 2->3 (K=4,
    # w = |i-j|/3). Observed: (0,1)->(0,2) w 2/3, (2,0)->(3,0) w 1 -> (5/3)/6 = 5/18.
    # Margins: a idx {0:2, 2:2, 3:2}, b idx {0:2, 2:3, 3:1}; sum w r_i c_j:
    #   i=0: 2/3*2*3 + 1*2*1 = 6; i=2: 2/3*2*2 + 1/3*2*1 = 10/3; i=3: 1*2*2 + 1/3*2*3 = 6
    #   -> 46/3 / 36 = 23/54.  kappa = 1 - (5/18)/(23/54) = 1 - 15/23 = 8/23
    assert m.cohen_kappa(KAPPA_A, KAPPA_B, categories=[0, 0.5, 1, 2], weights="linear") == pytest.approx(8 / 23)
    assert m.cohen_kappa(KAPPA_A, KAPPA_B, categories=[0, 0.5, 1, 2]) == pytest.approx(0.5)


def test_cohen_kappa_perfect_and_undefined():
    assert m.cohen_kappa([1, 2, 3, 1], [1, 2, 3, 1]) == pytest.approx(1.0)
    assert math.isnan(m.cohen_kappa([1, 1, 1], [1, 1, 1]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"a": [0, 1], "b": [0]}, "length mismatch"),
        ({"a": [], "b": []}, "empty"),
        ({"a": [0, 5], "b": [0, 1], "categories": [0, 1]}, "not in categories"),
        ({"a": [0, 1], "b": [0, 1], "weights": "cubic"}, "weights"),
        ({"a": [0, 1], "b": [0, 1], "categories": [0, 1, 1]}, "duplicates"),
    ],
)
def test_cohen_kappa_rejects_invalid_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        m.cohen_kappa(**kwargs)


# ---------------------------------------------------------------------------
# Bootstrap and summaries
# ---------------------------------------------------------------------------


def test_bootstrap_is_deterministic_for_a_seed():
    values = np.random.default_rng(1).normal(0.8, 0.1, size=40)
    first = m.bootstrap_ci(values, n_resamples=500, seed=3)
    again = m.bootstrap_ci(values, n_resamples=500, seed=3)
    other = m.bootstrap_ci(values, n_resamples=500, seed=4)
    assert first == again
    assert (first.lower, first.upper) != (other.lower, other.upper)
    assert first.method == "percentile" and first.seed == 3 and first.n_resamples == 500


def test_bootstrap_interval_contains_the_estimate_and_is_plausible():
    values = np.random.default_rng(2).normal(10.0, 2.0, size=100)
    ci = m.bootstrap_ci(values, confidence=0.95, seed=0)
    assert ci.estimate == pytest.approx(values.mean())
    assert ci.lower < ci.estimate < ci.upper
    # width ~ 2 * 1.96 * sd / sqrt(n) = 2 * 1.96 * 2 / 10 = 0.78; allow generous slack
    assert 0.5 < ci.upper - ci.lower < 1.1
    assert ci.n_valid == 2000 and ci.n_skipped == 0


def test_bootstrap_constant_values_give_a_zero_width_interval():
    ci = m.bootstrap_ci([0.9, 0.9, 0.9], n_resamples=100)
    assert (ci.lower, ci.estimate, ci.upper) == pytest.approx((0.9, 0.9, 0.9))


def test_bootstrap_single_case_returns_estimate_with_flag():
    ci = m.bootstrap_ci([0.73])
    assert ci.single_case
    assert ci.lower == ci.estimate == ci.upper == pytest.approx(0.73)
    assert ci.n_valid == 0


def test_bootstrap_resamples_aligned_arrays_with_the_same_indices():
    x = np.arange(20.0)

    def aligned_difference(a, b):
        return float(np.mean(a - b))  # 0 in every resample only if rows stay aligned

    ci = m.bootstrap_ci((x, x.copy()), statistic=aligned_difference, n_resamples=200)
    assert (ci.lower, ci.upper) == (0.0, 0.0)

    bias_ci = m.bootstrap_ci((x + 1.0, x), statistic=lambda a, b: m.bland_altman(a, b).bias, n_resamples=200)
    assert bias_ci.estimate == pytest.approx(1.0)
    assert bias_ci.lower == pytest.approx(1.0) and bias_ci.upper == pytest.approx(1.0)


def test_bootstrap_auc_skips_and_counts_single_class_resamples():
    # 6 cases, 1 positive: P(resample has no positive) = (5/6)^6 = 0.33 -> many skipped
    y = np.array([1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.95])
    ci = m.bootstrap_ci((y, s), statistic=m.roc_auc, n_resamples=300, seed=0)
    assert ci.estimate == pytest.approx(0.8)  # pos 0.9 beats 4 of 5 negatives
    assert ci.n_skipped > 0
    assert ci.n_valid + ci.n_skipped == 300
    assert ci.lower <= ci.estimate <= ci.upper


def test_bootstrap_cpm_over_detection_cases():
    cases = _two_case_example() * 3  # 6 cases
    ci = m.bootstrap_ci(cases, statistic=m.cpm, n_resamples=100)
    assert ci.estimate == pytest.approx(m.cpm(cases))
    assert ci.lower <= ci.estimate <= ci.upper


def test_bootstrap_resamples_rows_of_a_ratings_table():
    ratings = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    ci = m.bootstrap_ci(ratings, statistic=m.icc_2_1, n_resamples=200)
    assert round(ci.estimate, 2) == 0.29
    assert ci.n_valid + ci.n_skipped == 200


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"data": []}, ValueError),
        ({"data": (np.arange(3), np.arange(4))}, ValueError),
        ({"data": (1.0, 2.0)}, TypeError),
        ({"data": [1.0, 2.0], "n_resamples": 0}, ValueError),
        ({"data": [1.0, 2.0], "confidence": 1.5}, ValueError),
        ({"data": [1.0, 2.0], "seed": None}, TypeError),
        ({"data": [1.0, 2.0], "statistic": lambda v: v}, TypeError),
        ({"data": [1.0, 2.0], "statistic": "mean"}, TypeError),
    ],
)
def test_bootstrap_rejects_invalid_input(kwargs, error):
    with pytest.raises(error):
        m.bootstrap_ci(**kwargs)


def test_summarize_is_json_serialisable_with_plain_python_types():
    # [1, 2, 3, 4]: mean 2.5, median 2.5, sd sqrt(5/3) = 1.291, min 1, max 4
    s = m.summarize(np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32), seed=0)
    assert s["n"] == 4
    assert s["mean"] == pytest.approx(2.5) and s["median"] == pytest.approx(2.5)
    assert s["sd"] == pytest.approx(math.sqrt(5 / 3))
    assert (s["min"], s["max"]) == (1.0, 4.0)
    assert s["mean_ci"]["lower"] <= 2.5 <= s["mean_ci"]["upper"]
    json.dumps(s, allow_nan=False)

    def plain(obj):
        if isinstance(obj, dict):
            return all(plain(v) for v in obj.values())
        return obj is None or type(obj) in (int, float, str, bool)

    assert plain(s)
    assert m.summarize([1.0, 2.0, 3.0, 4.0], seed=0) == m.summarize([1.0, 2.0, 3.0, 4.0], seed=0)


def test_summarize_single_value_has_no_sd_and_flags_the_interval():
    s = m.summarize([0.81])
    assert s["sd"] is None
    assert s["mean_ci"]["single_case"] is True
    assert s["mean_ci"]["lower"] == s["mean_ci"]["upper"] == pytest.approx(0.81)
    json.dumps(s, allow_nan=False)


@pytest.mark.parametrize("values", [[], [1.0, float("nan")], [1.0, float("inf")], [[1.0, 2.0]]])
def test_summarize_rejects_empty_undefined_or_non_1d_values(values):
    with pytest.raises(ValueError):
        m.summarize(values)
