"""Reading a cine series as slices x phases (radpilot.dicom.cine), and refusing what is not one."""

from __future__ import annotations

import random

import numpy as np
import pytest

from radpilot.analyses.cardiac_mr_function.phantom import cine_datasets
from radpilot.dicom.cine import CineVolume, cine_from_datasets

PHASES, SLICES, ROWS, COLS = 6, 4, 24, 20


def _frames() -> np.ndarray:
    # Each image encodes its phase and slice, so the test can check where it ended up.
    out = np.zeros((PHASES, SLICES, ROWS, COLS), dtype=np.float32)
    for p in range(PHASES):
        for z in range(SLICES):
            out[p, z] = 100 * z + p
    return out


def _datasets(**kwargs: object) -> list:
    return cine_datasets(_frames(), pixel_mm=1.4, slice_spacing_mm=8.0, slice_thickness_mm=6.0, heart_rate_bpm=60.0, **kwargs)  # type: ignore[arg-type]


def test_shuffled_single_frame_instances_are_sorted_by_position_and_trigger_time() -> None:
    datasets = _datasets()
    random.Random(3).shuffle(datasets)
    cine = cine_from_datasets(datasets)
    assert isinstance(cine, CineVolume)
    assert cine.frames.shape == (PHASES, SLICES, ROWS, COLS)
    assert cine.spacing_zyx == pytest.approx((8.0, 1.4, 1.4), abs=1e-4)
    for p in range(PHASES):
        for z in range(SLICES):
            assert float(cine.frames[p, z, 0, 0]) == 100 * z + p
    assert np.array_equal(cine.voxels, cine.frames[0])
    assert cine.trigger_times_ms == pytest.approx([1000.0 * p / PHASES for p in range(PHASES)], abs=0.01)
    assert cine.metadata["HeartRate"] == 60.0
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    assert float(by_uid[cine.frame_sop_instance_uids[2][3]].TriggerTime) == pytest.approx(1000.0 * 2 / PHASES, abs=0.01)
    assert cine.phase_volume(2).sop_instance_uids == cine.frame_sop_instance_uids[2]


def test_instance_number_orders_phases_when_no_trigger_time_is_written() -> None:
    datasets = _datasets()
    for ds in datasets:
        del ds.TriggerTime
    random.Random(1).shuffle(datasets)
    cine = cine_from_datasets(datasets)
    assert float(cine.frames[4, 1, 0, 0]) == 104
    assert cine.trigger_times_ms == (None,) * PHASES


def test_a_missing_phase_is_refused_with_the_slice_that_lacks_it() -> None:
    datasets = _datasets()
    del datasets[SLICES * PHASES // 2]
    with pytest.raises(ValueError, match="missing phases: slice positions hold different numbers of phases"):
        cine_from_datasets(datasets)


def test_fewer_phases_than_cardiac_number_of_images_is_refused() -> None:
    datasets = [ds for ds in _datasets() if float(ds.TriggerTime) < 800.0]  # the last phase of every slice is gone
    with pytest.raises(ValueError, match="missing phases: CardiacNumberOfImages is 6 but each slice position holds 5"):
        cine_from_datasets(datasets)


def test_a_missing_slice_position_is_refused_as_inconsistent_geometry() -> None:
    datasets = [ds for i, ds in enumerate(_datasets()) if i // PHASES != 1]
    with pytest.raises(ValueError, match="inconsistent geometry: slice positions are not evenly spaced"):
        cine_from_datasets(datasets)


def test_an_instance_in_another_plane_is_refused_as_inconsistent_geometry() -> None:
    datasets = _datasets()
    datasets[5].ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="inconsistent geometry: .* the cine mixes planes"):
        cine_from_datasets(datasets)


def test_another_matrix_size_or_pixel_spacing_is_refused() -> None:
    datasets = _datasets()
    datasets[3].PixelSpacing = [1.5, 1.5]
    with pytest.raises(ValueError, match="inconsistent geometry: pixel spacing"):
        cine_from_datasets(datasets)


def test_an_instance_without_position_is_refused_naming_it() -> None:
    datasets = _datasets()
    del datasets[7].ImagePositionPatient
    with pytest.raises(ValueError, match=f"instance {datasets[7].SOPInstanceUID} lacks ImagePositionPatient"):
        cine_from_datasets(datasets)


@pytest.mark.parametrize(
    ("items", "error", "message"),
    [
        ([], ValueError, "no instances given"),
        (["not a dataset"], TypeError, "not a pydicom Dataset"),
    ],
)
def test_malformed_input_gets_a_clear_error(items: list, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        cine_from_datasets(items)


def test_two_series_or_a_repeated_instance_are_refused() -> None:
    datasets = _datasets()
    with pytest.raises(ValueError, match="different studies"):
        cine_from_datasets(datasets + _datasets()[:1])
    # another series of the same study (its own frame of reference) cannot join the stack
    other = _datasets(study_uid=str(datasets[0].StudyInstanceUID))
    with pytest.raises(ValueError, match="2 series of this cine have 2 frames of reference"):
        cine_from_datasets(datasets + other[:1])
    with pytest.raises(ValueError, match="more than once"):
        cine_from_datasets(datasets + datasets[:1])


def test_garbage_pixel_data_is_refused_not_crashed() -> None:
    datasets = _datasets()
    datasets[0].PixelData = b"\x00\x01"
    with pytest.raises(ValueError):
        cine_from_datasets(datasets)
