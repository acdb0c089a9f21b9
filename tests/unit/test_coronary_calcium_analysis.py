"""coronary_calcium on digital thorax phantoms with exact truth, and its refusals.

The phantom (radpilot/analyses/coronary_calcium/phantom.py) carries calcium inserts of known
size and density in the four artery territories, and decoys that must never be counted:
continuous bone (spine, sternum, ribs) and calcium in the wall of the descending aorta beside
the heart and of the ascending aorta above it.
"""

from __future__ import annotations

import numpy as np
import pytest

from radpilot.analyses import discover_analyses
from radpilot.analyses.coronary_calcium import ANALYSIS, CoronaryCalcium
from radpilot.analyses.coronary_calcium.phantom import Phantom, analytic_truth, make_phantom, phantom_datasets
from radpilot.contract import Findings, NotApplicableError
from radpilot.dicom.volume import Volume, volume_from_datasets
from radpilot.engine.routing import SeriesFacts, default_rules
from radpilot.validation.gate import criteria_for

SHAPE = {"rows": 320, "columns": 320, "pixel_mm": 0.9}
COVERAGE_MM = 120.0
ARTERIES = ("lm", "lad", "lcx", "rca")


def _volume(phantom: Phantom, **metadata: object) -> Volume:
    return Volume(
        phantom.voxels,
        phantom.spacing_zyx,
        origin=phantom.origin_lps,
        modality="CT",
        metadata={"SliceThickness": phantom.increment_mm, **metadata},
    )


def _outputs(findings: Findings) -> dict[str, float]:
    return {
        spec.name: m.value
        for spec in ANALYSIS.outputs
        for m in findings.measurements
        if spec.matches(m.name.value, m.name.meaning, m.finding_site.value if m.finding_site else None, None)
    }


@pytest.fixture(scope="module", params=[(3.0, 10.0), (3.0, 20.0), (1.5, 10.0), (1.5, 20.0)], ids=lambda p: f"{p[0]}mm-noise{p[1]:.0f}")
def scored(request: pytest.FixtureRequest) -> tuple[Phantom, Findings]:
    increment, noise = request.param
    phantom = make_phantom(n_slices=int(COVERAGE_MM / increment), increment_mm=increment, noise_hu=noise, seed=7, **SHAPE)
    return phantom, ANALYSIS.run(_volume(phantom))


def test_agatston_and_volume_are_within_5_percent_of_the_phantom_truth(scored: tuple[Phantom, Findings]) -> None:
    phantom, findings = scored
    truth, out = phantom.truth(), _outputs(findings)
    assert out["agatston_total"] == pytest.approx(truth["agatston_total"], rel=0.05)
    assert out["volume_score_mm3"] == pytest.approx(truth["volume_score_mm3"], rel=0.05)
    for artery in ARTERIES:
        assert out[f"agatston_{artery}"] == pytest.approx(truth[f"agatston_{artery}"], rel=0.05), artery


def test_scores_are_within_5_percent_of_the_continuous_insert_sizes(scored: tuple[Phantom, Findings]) -> None:
    # pi r^2 L of the cylinders, not their rasterised pixels: includes the digitisation of 3-5 mm disks at 0.9 mm pixels.
    phantom, findings = scored
    analytic, out = analytic_truth(phantom.inserts), _outputs(findings)
    assert out["agatston_total"] == pytest.approx(analytic["agatston_total"], rel=0.05)
    assert out["volume_score_mm3"] == pytest.approx(analytic["volume_score_mm3"], rel=0.05)


def test_cac_drs_category_and_vessel_count_are_exact(scored: tuple[Phantom, Findings]) -> None:
    phantom, findings = scored
    truth, out = phantom.truth(), _outputs(findings)
    assert out["cac_drs_category"] == truth["cac_drs_category"] == 3.0
    assert out["vessels_with_calcium"] == truth["vessels_with_calcium"] == 4.0
    assert [q.value.meaning for q in findings.qualitative] == ["CAC-DRS A3/N4", "Validated on phantoms only"]


def test_no_decoy_voxel_is_counted_and_every_insert_voxel_is_labelled_with_its_artery(scored: tuple[Phantom, Findings]) -> None:
    phantom, findings = scored
    assert findings.segmentation is not None
    labels = findings.segmentation.labels
    assert not labels[phantom.decoys].any()
    assert np.array_equal(labels, phantom.labels)


def test_every_result_says_it_was_validated_on_phantoms_only(scored: tuple[Phantom, Findings]) -> None:
    _, findings = scored
    assert any(note.startswith("Validated on phantoms only") for note in findings.notes)


def test_thin_slices_are_reported_as_a_3_mm_equivalent() -> None:
    phantom = make_phantom(n_slices=80, increment_mm=1.5, noise_hu=0.0, **SHAPE)
    notes = ANALYSIS.run(_volume(phantom)).notes
    assert any("scaled by 1.5/3" in note for note in notes)


def test_a_phantom_without_inserts_scores_zero_with_no_segmentation() -> None:
    phantom = make_phantom(inserts=(), noise_hu=15.0, **SHAPE)
    findings = ANALYSIS.run(_volume(phantom))
    assert _outputs(findings)["agatston_total"] == 0.0
    assert findings.segmentation is not None and not findings.segmentation.labels.any() and findings.segmentation.segments == []
    assert findings.key_slices == []
    assert [q.value.meaning for q in findings.qualitative] == ["CAC-DRS A0", "Validated on phantoms only"]


def test_mass_score_is_reported_only_with_a_calibration_and_matches_the_inserts() -> None:
    phantom = make_phantom(noise_hu=10.0, **SHAPE)
    factor = 0.8  # mg HA per cm³ per HU
    out = _outputs(CoronaryCalcium(mass_calibration_mg_per_cm3_per_hu=factor).run(_volume(phantom)))
    voxel_cm3 = float(np.prod(phantom.spacing_zyx)) / 1000.0
    expected = sum(factor * insert.hu * n * voxel_cm3 for insert, n in zip(phantom.inserts, phantom.insert_voxels))
    assert out["mass_score_mg"] == pytest.approx(expected, rel=0.01)
    assert "mass_score_mg" not in _outputs(ANALYSIS.run(_volume(phantom)))
    with pytest.raises(ValueError, match="positive"):
        CoronaryCalcium(mass_calibration_mg_per_cm3_per_hu=0.0)


@pytest.fixture(scope="module")
def plain() -> Phantom:
    return make_phantom(noise_hu=10.0, **SHAPE)


def test_a_series_with_a_contrast_agent_in_its_header_is_refused_with_the_reason(plain: Phantom) -> None:
    with pytest.raises(NotApplicableError, match="ContrastBolusAgent 'IOHEXOL'"):
        ANALYSIS.check_input(_volume(plain, ContrastBolusAgent="IOHEXOL"))
    ANALYSIS.check_input(_volume(plain, ContrastBolusAgent="NONE"))  # "none" is no contrast


def test_a_contrast_enhanced_blood_pool_without_header_is_refused_by_its_measured_hu() -> None:
    enhanced = make_phantom(noise_hu=10.0, blood_hu=320.0, **SHAPE)
    with pytest.raises(NotApplicableError, match="blood pool measures 3[0-9][0-9] HU"):
        ANALYSIS.run(_volume(enhanced))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"modality": "MR"}, "modality is MR"),
        ({"slices": 10}, "10 slice"),
        ({"thickness": 5.0}, "5 mm thick"),
        ({"thickness": 1.0}, "gaps between them"),
        ({"scale": 0.001}, "Hounsfield"),
    ],
)
def test_unsuitable_series_are_refused_with_a_reason(plain: Phantom, change: dict, match: str) -> None:
    voxels = plain.voxels[: change.get("slices", plain.voxels.shape[0])] * change.get("scale", 1.0)
    volume = Volume(
        voxels,
        plain.spacing_zyx,
        origin=plain.origin_lps,
        modality=change.get("modality", "CT"),
        metadata={"SliceThickness": change.get("thickness", 3.0)},
    )
    with pytest.raises(NotApplicableError, match=match):
        ANALYSIS.check_input(volume)


def test_the_dicom_series_of_the_phantom_scores_as_the_array_does(plain: Phantom) -> None:
    volume = volume_from_datasets(phantom_datasets(plain))
    out = _outputs(ANALYSIS.run(volume))
    assert out["agatston_total"] == pytest.approx(plain.truth()["agatston_total"], rel=0.01)


def test_it_is_discovered_routed_to_non_contrast_ct_only_and_declares_acceptance_criteria() -> None:
    analyses = discover_analyses()
    assert analyses["coronary_calcium"].name == "coronary_calcium"
    rules = default_rules({"coronary_calcium": analyses["coronary_calcium"]})
    base = {
        "Modality": "CT",
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "SliceThickness": 3.0,
        "NumberOfSlices": 40,
    }
    assert [a for a, _ in rules.route(SeriesFacts("1.2", "1.2.3", base)).analyses] == ["coronary_calcium"]
    contrast = SeriesFacts("1.2", "1.2.4", {**base, "ContrastBolusAgent": "IOHEXOL"})
    assert rules.route(contrast).analyses == []
    thick = SeriesFacts("1.2", "1.2.5", {**base, "SliceThickness": 5.0})
    assert rules.route(thick).analyses == []
    criteria = criteria_for("coronary_calcium", analyses=analyses)
    assert {c.metric for c in criteria.criteria} >= {"agatston_total_abs_error_percent_max", "cac_drs_category_mae"}


def test_a_series_stored_head_to_feet_scores_as_feet_to_head(plain: Phantom) -> None:
    top = plain.origin_lps[2] + (plain.voxels.shape[0] - 1) * plain.increment_mm
    reversed_volume = Volume(
        plain.voxels[::-1].copy(),
        plain.spacing_zyx,
        origin=(plain.origin_lps[0], plain.origin_lps[1], top),
        direction=np.diag([1.0, 1.0, -1.0]),
        modality="CT",
        metadata={"SliceThickness": plain.increment_mm},
    )
    assert _outputs(ANALYSIS.run(reversed_volume)) == _outputs(ANALYSIS.run(_volume(plain)))
