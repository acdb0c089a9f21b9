"""liver_ct: the model's pre/post-processing, the contrast phase, attenuation, steatosis grade, lesion candidates
and the refusals, on synthetic volumes with known answers (the real-data checks are in
tests/integration/test_liver_ct_real_data.py)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from radpilot.analyses.liver_ct import contrast
from radpilot.analyses.liver_ct.analysis import LiverCT
from radpilot.analyses.liver_ct.preprocess import (
    LIVER,
    SPLEEN,
    _axis_weights,
    _interpolate_last_axes,
    hu_to_u8,
    labels_from_logits,
    model_grid_shape,
    model_input,
    neighbour_offset,
    resize_inplane,
    u8_to_hu,
)
from radpilot.analyses.liver_ct.quantification import (
    GRADE_MILD,
    GRADE_MODERATE,
    GRADE_MODERATE_LIKELY,
    GRADE_NONE,
    lesion_candidates,
    parenchyma,
    steatosis_grade,
)
from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.contract import NotApplicableError
from radpilot.dicom.volume import Volume
from radpilot.engine.jobs import NotApplicableJobError, PermanentJobError
from radpilot.engine.pipeline import PipelineRunner
from radpilot.validation.gate import activate
from tests.factories import make_ct_series, to_part10_bytes


def _volume(voxels: np.ndarray, spacing=(2.0, 0.8, 0.8), modality: str = "CT", direction=None, **metadata) -> Volume:
    return Volume(
        voxels=voxels.astype(np.float32),
        spacing_zyx=spacing,
        direction=np.eye(3) if direction is None else direction,
        modality=modality,
        metadata=metadata,
    )


# ---------------------------------------------------------------- preprocessing = the training data's rule
def test_hu_to_u8_applies_the_training_window_and_rounds() -> None:
    hu = np.array([-1000.0, -125.0, 75.0, 274.9, 275.0, 3000.0])
    assert hu_to_u8(hu).tolist() == [0, 0, 128, 255, 255, 255]
    inside = np.linspace(-125, 275, 401)
    assert np.abs(u8_to_hu(hu_to_u8(inside)) - inside).max() <= 400 / 255 / 2 + 1e-4


def test_resize_inplane_equals_torch_bilinear_without_antialiasing() -> None:
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).random((2, 3, 37, 51), dtype=np.float32)
    for size in ((80, 23), (37, 51), (12, 100)):
        expected = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear", align_corners=False).numpy()
        assert np.abs(resize_inplane(x, size) - expected).max() < 1e-5


def test_model_input_resamples_to_2mm_pads_to_16_and_stacks_neighbours_about_3mm_away() -> None:
    vol = np.zeros((10, 100, 60), dtype=np.uint8)
    for k in range(10):
        vol[k] = k * 10
    x = model_input(vol, (1.6, 0.8, 1.0))
    assert model_grid_shape((100, 60), (0.8, 1.0)) == (40, 30)
    assert x.shape == (10, 3, 48, 32) and x.dtype == np.float32
    assert neighbour_offset(1.6) == 2 and neighbour_offset(5.0) == 1 and neighbour_offset(0.5) == 6
    # channel 0 is the slice 2 below, channel 2 the slice 2 above (edges repeat); padding is air (0)
    assert np.allclose(x[5, :, 10, 10] * 255, [30, 50, 70], atol=1e-3)
    assert np.allclose(x[0, :, 10, 10] * 255, [0, 0, 20], atol=1e-3)
    assert np.all(x[:, :, 40:, :] == 0) and np.all(x[:, :, :, 30:] == 0)


@pytest.mark.parametrize(("shape", "out_rc"), [((3, 2, 20, 30), (50, 41)), ((2, 1, 64, 48), (17, 23)), ((1, 1, 5, 5), (5, 5))])
def test_interpolating_by_gathering_two_neighbours_equals_the_matrix_product(shape, out_rc) -> None:  # noqa: ANN001
    arr = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    w_rows, w_cols = _axis_weights(out_rc[0], shape[-2]), _axis_weights(out_rc[1], shape[-1])
    expected = np.matmul(w_rows, np.matmul(arr, w_cols.T))
    np.testing.assert_allclose(_interpolate_last_axes(arr, w_rows, w_cols), expected, rtol=1e-5, atol=1e-6)


def test_labels_from_logits_maps_back_to_the_source_grid_and_keeps_the_largest_component() -> None:
    logits = np.zeros((4, 3, 32, 32), dtype=np.float32)
    logits[:, 0] = 1.0
    logits[:, 1, 4:20, 4:20] = 5.0  # liver block
    logits[:, 1, 26:28, 26:28] = 5.0  # a small island: dropped
    logits[:, 2, 4:12, 22:30] = 5.0  # spleen
    labels = labels_from_logits(logits, (30, 30), (60, 60))
    assert labels.shape == (4, 60, 60)
    assert labels[0, 20, 20] == LIVER and labels[0, 15, 50] == SPLEEN
    assert labels[0, 54, 54] == 0  # the island
    assert labels[0, 45, 45] == 0 and labels[:, 59, :].max() == 0  # padding rows never labelled
    # the liver edge at model row 20 (padded grid of 30 model rows -> 60 source rows) lands at source row ~40
    assert labels[0, 38, 20] == LIVER and labels[0, 41, 20] == 0


# ---------------------------------------------------------------- contrast phase
def test_header_phase_reads_the_agent_and_the_series_description() -> None:
    assert contrast.header_phase({"ContrastBolusAgent": "Omnipaque 350"}).contrast is True
    assert contrast.header_phase({"ContrastBolusAgent": "NONE"}).contrast is False
    assert contrast.header_phase({"SeriesDescription": "Abdomen non-contrast 5mm"}).contrast is False
    assert contrast.header_phase({"SeriesDescription": "ABD PORTAL VENOUS"}).contrast is True
    assert contrast.header_phase({"SeriesDescription": "Abdomen 5mm"}).contrast is None


def test_decide_phase_uses_the_measured_aorta_and_allows_a_fat_grade_only_on_non_contrast() -> None:
    unknown = contrast.PhaseReading(None, "nothing")
    assert contrast.decide_phase(unknown, 45.0, 55.0).phase == contrast.NON_CONTRAST
    assert contrast.decide_phase(unknown, 45.0, 55.0).non_contrast is True
    pv = contrast.decide_phase(unknown, 180.0, 105.0)
    assert pv.phase == contrast.PORTAL_VENOUS and pv.non_contrast is False
    assert contrast.decide_phase(unknown, 320.0, 60.0).phase == contrast.ARTERIAL
    assert contrast.decide_phase(unknown, 100.0, 60.0).phase == contrast.UNDETERMINED
    # the header names contrast but the aorta is unenhanced: no fat grade while they disagree
    assert contrast.decide_phase(contrast.PhaseReading(True, "agent"), 45.0, 55.0).non_contrast is False
    # no aorta found: the header decides
    assert contrast.decide_phase(contrast.PhaseReading(False, "desc"), None, 55.0).non_contrast is True
    assert contrast.decide_phase(unknown, None, 55.0).phase == contrast.UNDETERMINED


def _abdomen_slice(aorta_hu: float) -> np.ndarray:
    """Body ellipse (40 HU) in air, a vertebral body (700 HU) at the back, a round aorta in front of it, left."""
    img = np.full((256, 256), -1000.0, dtype=np.float32)
    yy, xx = np.mgrid[:256, :256]
    img[((yy - 128) / 100) ** 2 + ((xx - 128) / 120) ** 2 <= 1] = 40.0
    img[((yy - 175) / 18) ** 2 + ((xx - 128) / 20) ** 2 <= 1] = 700.0
    img[(yy - 145) ** 2 + (xx - 140) ** 2 <= 10**2] = aorta_hu
    return img


@pytest.mark.parametrize("aorta", [45.0, 190.0, 320.0])
def test_aorta_is_found_in_front_of_the_spine_and_measured(aorta: float) -> None:
    value = contrast.aorta_hu_slice(_abdomen_slice(aorta), (1.0, 1.0))
    assert value is not None and abs(value - aorta) < 8.0


# ---------------------------------------------------------------- attenuation and steatosis
def test_steatosis_grade_follows_the_published_thresholds() -> None:
    assert steatosis_grade(35.0, 0.0)[0] == GRADE_MODERATE
    assert steatosis_grade(55.0, -12.0)[0] == GRADE_MODERATE
    assert steatosis_grade(45.0, 2.0)[0] == GRADE_MODERATE_LIKELY
    assert steatosis_grade(52.0, -3.0)[0] == GRADE_MILD
    assert steatosis_grade(60.0, 8.0)[0] == GRADE_NONE
    assert "Kodama" in steatosis_grade(35.0, None)[1]


def _liver_phantom(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    hu = rng.normal(60.0, 8.0, (30, 120, 120)).astype(np.float32)
    liver = np.zeros(hu.shape, dtype=bool)
    liver[2:28, 10:110, 10:110] = True
    hu[~liver] = -100.0
    hu[:, 58:62, 10:110] = 180.0  # an enhanced vessel running through the liver
    return hu, liver


def test_parenchymal_attenuation_leaves_out_vessels_and_edges() -> None:
    hu, liver = _liver_phantom(np.random.default_rng(1))
    att = parenchyma(hu, liver, (2.0, 1.0, 1.0))
    assert att is not None
    assert abs(att.mean_hu - 60.0) < 1.0 and abs(att.median_hu - 60.0) < 1.0
    assert hu[liver].mean() > 64.0  # the plain mean is pulled up by the vessel


def test_lesion_candidates_find_a_round_hypodense_lesion_and_skip_a_tubular_vessel() -> None:
    hu, liver = _liver_phantom(np.random.default_rng(2))
    zz, yy, xx = np.mgrid[:30, :120, :120]
    lesion = ((zz - 15) * 2.0) ** 2 + (yy - 35.0) ** 2 + (xx - 40.0) ** 2 <= 8.0**2  # 16 mm sphere, 20 HU
    hu[lesion] = hu[lesion] - 40.0
    hu[:, 85:88, 20:100] = 20.0  # a dark tube (unenhanced vessel)
    att = parenchyma(hu, liver, (2.0, 1.0, 1.0))
    assert att is not None
    labels, found = lesion_candidates(hu, liver, (2.0, 1.0, 1.0), att)
    assert len(found) == 1
    c = found[0]
    assert c.kind == "hypo-attenuating"
    assert abs(c.center_zyx[0] - 15) < 1.5 and abs(c.center_zyx[1] - 35) < 2 and abs(c.center_zyx[2] - 40) < 2
    assert 13.0 <= c.diameter_mm <= 19.0
    assert abs(c.volume_ml - lesion.sum() * 2.0 / 1000) / (lesion.sum() * 2.0 / 1000) < 0.35
    assert abs(c.mean_hu - 20.0) < 8.0
    assert labels[15, 35, 40] == 1 and labels[15, 86, 60] == 0


# ---------------------------------------------------------------- refusals
def test_check_input_refuses_non_ct_too_few_slices_thick_slices_and_tilted_series() -> None:
    analysis = LiverCT(registry=object())
    with pytest.raises(NotApplicableError, match="modality is MR"):
        analysis.check_input(_volume(np.zeros((40, 32, 32)), modality="MR"))
    with pytest.raises(NotApplicableError, match="has 10 slice"):
        analysis.check_input(_volume(np.zeros((10, 32, 32))))
    with pytest.raises(NotApplicableError, match="7.5 mm apart"):
        analysis.check_input(_volume(np.zeros((40, 32, 32)), spacing=(7.5, 0.8, 0.8)))
    tilt = np.deg2rad(30)
    tilted = np.array([[1, 0, 0], [0, np.cos(tilt), np.sin(tilt)], [0, -np.sin(tilt), np.cos(tilt)]])
    with pytest.raises(NotApplicableError, match="not axial"):
        analysis.check_input(_volume(np.zeros((40, 32, 32)), direction=tilted))
    analysis.check_input(_volume(np.zeros((40, 32, 32))))  # a plain axial CT passes


def test_run_refuses_a_series_without_a_liver() -> None:
    analysis = LiverCT()
    if not any(m.name == "liver_spleen_ct_seg" for m in analysis.registry.manifests()):
        pytest.fail("the shipped model liver_spleen_ct_seg is missing from models/")
    body = np.full((24, 160, 160), -1000.0, dtype=np.float32)
    yy, xx = np.mgrid[:160, :160]
    body[:, ((yy - 80) / 60) ** 2 + ((xx - 80) / 70) ** 2 <= 1] = -850.0  # lung-like: no liver anywhere
    with pytest.raises(NotApplicableError, match="no liver in the field of view"):
        analysis.run(_volume(body, spacing=(5.0, 2.0, 2.0)))


def test_the_newest_model_version_runs_and_the_earlier_ones_stay_loadable() -> None:
    registry = LiverCT().registry
    versions = sorted(m.version for m in registry.manifests() if m.name == "liver_spleen_ct_seg")
    assert versions == ["0.1.0", "0.2.0", "0.3.0"]
    assert registry.manifest("liver_spleen_ct_seg").version == "0.3.0", "the analysis runs the newest version"
    for version in versions:
        manifest = registry.manifest("liver_spleen_ct_seg", version)
        registry.verify(manifest)  # the file is there with its manifest's sha256
        session = registry.session("liver_spleen_ct_seg", version)
        logits = session.run(None, {"image": np.zeros((1, 3, 64, 64), dtype=np.float32)})[0]
        assert logits.shape == (1, 3, 64, 64)


# ---------------------------------------------------------------- refusals through the engine, as a user meets them
def _series(count: int, *, modality: str = "CT", missing: tuple[int, ...] = (), liver_free: bool = False) -> list:
    """A CT series of ``count`` 64 x 64 slices 5 mm apart (slices at the ``missing`` indices left out); with
    ``liver_free`` a lung-like body (-850 HU in air), in which no liver can be found."""
    series = make_ct_series(count, rows=64, columns=64, modality=modality, series_description="ABDOMEN")
    yy, xx = np.mgrid[:64, :64]
    body = ((yy - 32) / 26) ** 2 + ((xx - 32) / 30) ** 2 <= 1
    for k, ds in enumerate(series):
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * k]
        ds.SliceThickness = 5.0
        ds.PixelSpacing = [5.0, 5.0]
        if liver_free:
            ds.PixelData = np.where(body, -850 + 1024, -1000 + 1024).astype(np.int16).tobytes()
    return [ds for k, ds in enumerate(series) if k not in missing]


@pytest.fixture
def liver_runner(tmp_path):  # noqa: ANN001, ANN201 - pytest's tmp_path; yields (runner, archive)
    settings = Settings(data_dir=tmp_path / "data", durability="none")
    archive = Archive.from_settings(settings)
    analysis = LiverCT()
    activate(
        archive,
        "liver_spleen_ct_seg",
        analysis.registry.manifest("liver_spleen_ct_seg").version,
        user="test",
        override=True,
        reason="refusal test: the gate has its own tests",
    )
    yield PipelineRunner(settings, archive, analyses={"liver_ct": analysis}), archive
    archive.close()


@pytest.mark.parametrize(
    ("series", "error", "reason"),
    [
        (lambda: _series(30, modality="MR"), NotApplicableJobError, "series modality is MR; liver_ct analyses CT only"),
        (
            lambda: _series(10),
            NotApplicableJobError,
            re.escape("series has 10 slice(s); liver_ct needs an abdominal CT volume of at least 20"),
        ),
        (
            lambda: _series(30, missing=(14, 15)),
            PermanentJobError,
            r"slice spacing is not uniform: gaps at 65\.00\.\.80\.00 mm \(15\.00 mm\)",
        ),
        (lambda: _series(24, liver_free=True), NotApplicableJobError, "no liver in the field of view"),
    ],
    ids=["not-ct", "too-few-slices", "gap-in-slice-positions", "no-liver-in-field-of-view"],
)
def test_the_engine_refuses_bad_input_for_liver_ct_with_its_reason(liver_runner, series, error, reason) -> None:  # noqa: ANN001
    runner, archive = liver_runner
    datasets = series()
    for ds in datasets:
        assert archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted
    job = SimpleNamespace(
        id=1,
        analysis="liver_ct",
        analysis_version=LiverCT.version,
        study_instance_uid=str(datasets[0].StudyInstanceUID),
        series_instance_uid=str(datasets[0].SeriesInstanceUID),
        input_sop_uids=(),
        idempotency_key="k" * 64,
        destinations=(),
        supersedes_job_id=None,
    )
    with pytest.raises(error, match=reason):
        runner(job)
    assert archive.instance_count() == len(datasets)  # nothing stored beside the input, nothing of it lost


# ---------------------------------------------------------------- the validation layout for 8-bit sets
def _write_volume_case(root, values: np.ndarray) -> None:  # noqa: ANN001 - a tmp_path
    nibabel = pytest.importorskip("nibabel")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    affine = np.diag([-1.2, -1.2, 3.0, 1.0])
    nibabel.save(nibabel.Nifti1Image(values, affine), str(root / "images" / "C1.nii.gz"))
    nibabel.save(nibabel.Nifti1Image((values > 100).astype(np.uint8), affine), str(root / "labels" / "C1.nii.gz"))
    (root / "cases.csv").write_text("case_id,liver_ml\nC1,1.0\n")


def test_volume_files_layout_turns_8_bit_values_back_into_hu_with_the_manifest_rescale(tmp_path) -> None:  # noqa: ANN001
    from radpilot.validation.datasets.adapters import ADAPTERS  # noqa: PLC0415 - the validation layer, only for this check

    values = np.zeros((8, 6, 4), dtype=np.uint8)
    values[2, 3, 1] = 255
    values[4, 1, 2] = 128
    _write_volume_case(tmp_path, values)
    options = {
        "cases_file": "cases.csv",
        "image_file": "images/{case}.nii.gz",
        "mask_file": "labels/{case}.nii.gz",
        "mask_labels": {1: "liver"},
        "rescale_slope": 400 / 255,
        "rescale_intercept": -125.0,
    }
    adapter = ADAPTERS["volume-files"]
    case = adapter.cases(tmp_path, options)[0]
    volume = adapter.load(tmp_path, case, options).volume
    assert volume is not None
    assert volume.voxels.max() == pytest.approx(275.0, abs=1e-3) and volume.voxels.min() == pytest.approx(-125.0, abs=1e-3)
    # and the analysis' window maps them back to the stored 8-bit values exactly
    assert np.array_equal(hu_to_u8(volume.voxels), values.transpose(2, 1, 0))


@pytest.mark.parametrize(("slope", "intercept"), [("abc", 0.0), (0.0, 0.0), (1.0, float("nan"))])
def test_volume_files_layout_refuses_a_malformed_rescale(tmp_path, slope, intercept) -> None:  # noqa: ANN001
    from radpilot.validation.datasets.adapters import ADAPTERS  # noqa: PLC0415 - the validation layer, only for this check
    from radpilot.validation.datasets.errors import DatasetError  # noqa: PLC0415

    _write_volume_case(tmp_path, np.zeros((8, 6, 4), dtype=np.uint8))
    options = {"image_file": "images/{case}.nii.gz", "mask_file": "labels/{case}.nii.gz", "mask_labels": {1: "liver"}}
    options |= {"cases_file": "cases.csv", "rescale_slope": slope, "rescale_intercept": intercept}
    adapter = ADAPTERS["volume-files"]
    with pytest.raises(DatasetError, match="rescale"):
        adapter.load(tmp_path, adapter.cases(tmp_path, options)[0], options)


def test_default_rules_route_abdominal_and_unlabelled_ct_to_liver_ct_but_not_a_chest_ct() -> None:
    from radpilot.engine.routing import SeriesFacts, load_rules  # noqa: PLC0415 - the engine layer, only for this check

    base = {
        "Modality": "CT",
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "SliceThickness": 1.6,
        "NumberOfSlices": 119,
    }
    rules = load_rules()
    assert "liver_ct" in [a for a, _ in rules.route(SeriesFacts("1", "2", {**base, "BodyPartExamined": "ABDOMEN"})).analyses]
    assert "liver_ct" in [a for a, _ in rules.route(SeriesFacts("1", "2", base)).analyses]  # no BodyPartExamined (3D-IRCADb)
    assert "liver_ct" not in [a for a, _ in rules.route(SeriesFacts("1", "2", {**base, "BodyPartExamined": "CHEST"})).analyses]
    assert "liver_ct" not in [a for a, _ in rules.route(SeriesFacts("1", "2", {**base, "SliceThickness": 8.0})).analyses]
