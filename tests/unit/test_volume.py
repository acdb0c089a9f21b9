"""Unit tests for radpilot.dicom.volume: building a Volume from DICOM instances, and its validation."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from radpilot.dicom.volume import Volume, volume_from_datasets, volume_from_files
from tests.factories import make_ct_dataset, make_ct_series, write_part10


def _stored(ds: Dataset) -> np.ndarray:
    return np.frombuffer(ds.PixelData, dtype=np.int16).reshape(ds.Rows, ds.Columns)


# ----------------------------------------------------------------------------- Volume itself
def test_volume_validates_and_freezes_voxels() -> None:
    voxels = np.zeros((2, 3, 4), dtype=np.int16)
    vol = Volume(voxels=voxels, spacing_zyx=(2.0, 0.5, 0.5))
    assert vol.voxels.dtype == np.float32
    assert vol.shape == (2, 3, 4)
    assert vol.mm3_per_voxel == pytest.approx(0.5)
    assert vol.ml_per_voxel == pytest.approx(0.0005)
    assert vol.extent_mm == pytest.approx((4.0, 1.5, 2.0))
    with pytest.raises(ValueError):
        vol.voxels[0, 0, 0] = 1.0
    own = np.zeros((2, 3, 4), dtype=np.float32)
    Volume(voxels=own, spacing_zyx=(1, 1, 1))
    own[0, 0, 0] = 5.0  # the caller's array stays writeable


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"voxels": np.zeros((3, 3))}, ValueError, "3-D"),
        ({"voxels": [[[0.0]]]}, TypeError, "numpy array"),
        ({"voxels": np.zeros((1, 2, 2), dtype=bool)}, TypeError, "numeric"),
        ({"spacing_zyx": (1.0, 0.0, 1.0)}, ValueError, "positive"),
        ({"spacing_zyx": (1.0, 1.0)}, ValueError, "3 values"),
        ({"spacing_zyx": (1.0, float("nan"), 1.0)}, ValueError, "finite"),
        ({"direction": np.ones((3, 3))}, ValueError, "orthonormal"),
        ({"direction": np.eye(2)}, ValueError, "3x3"),
        ({"sop_instance_uids": ("1.2", "1.3", "1.4")}, ValueError, "2 slices"),
        ({"modality": 5}, TypeError, "modality"),
        ({"metadata": [1, 2]}, TypeError, "mapping"),
    ],
)
def test_volume_rejects_bad_input(kwargs: dict, error: type, fragment: str) -> None:
    args = {"voxels": np.zeros((2, 4, 4)), "spacing_zyx": (1.0, 1.0, 1.0)}
    args.update(kwargs)
    with pytest.raises(error, match=fragment):
        Volume(**args)


def test_index_to_patient_uses_origin_spacing_and_direction() -> None:
    direction = np.array([[-1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0]])
    vol = Volume(voxels=np.zeros((3, 4, 5)), spacing_zyx=(5.0, 2.0, 0.5), origin=(10.0, 20.0, 30.0), direction=direction)
    assert vol.index_to_patient((0, 0, 0)) == pytest.approx([10, 20, 30])
    assert vol.index_to_patient((1, 2, 4)) == pytest.approx([10 - 2.0, 20 + 4.0, 30 - 5.0])
    assert vol.affine_lps @ np.array([4, 2, 1, 1.0]) == pytest.approx([8.0, 24.0, 25.0, 1.0])
    assert vol.is_axial()


# ----------------------------------------------------------------------------- from datasets
def test_series_is_sorted_rescaled_and_described() -> None:
    series = make_ct_series(6, rows=8, columns=10)
    shuffled = [series[i] for i in (3, 0, 5, 1, 4, 2)]
    vol = volume_from_datasets(shuffled)
    assert vol.shape == (6, 8, 10)
    assert vol.spacing_zyx == pytest.approx((1.0, 0.7, 0.7))
    assert vol.origin == pytest.approx((0.0, 0.0, 0.0))
    assert vol.direction == pytest.approx(np.eye(3))
    assert vol.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in series)
    for k, ds in enumerate(series):
        np.testing.assert_array_equal(vol.voxels[k], _stored(ds).astype(np.float32) - 1024)
    assert vol.modality == "CT"
    assert vol.series_uid == series[0].SeriesInstanceUID
    assert vol.study_uid == series[0].StudyInstanceUID
    assert vol.frame_of_reference_uid == series[0].FrameOfReferenceUID
    assert vol.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert vol.metadata["BodyPartExamined"] == "CHEST"
    assert vol.metadata["SliceThickness"] == pytest.approx(1.0)
    assert vol.metadata["PatientID"] == "PAT001"


def test_rescale_slope_is_applied() -> None:
    series = make_ct_series(3, rows=4, columns=4)
    for ds in series:
        ds.RescaleSlope = 2
        ds.RescaleIntercept = -1000
    vol = volume_from_datasets(series)
    np.testing.assert_allclose(vol.voxels[1], _stored(series[1]) * 2.0 - 1000)


def test_slices_sorted_along_the_normal_not_by_instance_number() -> None:
    series = make_ct_series(4, rows=4, columns=4)
    for ds, z in zip(series, (30.0, 10.0, 20.0, 0.0)):
        ds.ImagePositionPatient = [0.0, 0.0, z]
    vol = volume_from_datasets(series)
    assert vol.origin[2] == pytest.approx(0.0)
    assert vol.spacing_zyx[0] == pytest.approx(10.0)
    assert vol.sop_instance_uids[0] == series[3].SOPInstanceUID


def test_missing_slice_is_reported_with_its_position() -> None:
    series = make_ct_series(6, rows=4, columns=4)
    del series[3]
    with pytest.raises(ValueError, match=r"slice spacing is not uniform: gaps at 2\.00\.\.4\.00 mm"):
        volume_from_datasets(series)


def test_duplicate_positions_are_rejected() -> None:
    series = make_ct_series(3, rows=4, columns=4)
    series[2].ImagePositionPatient = [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="duplicate slice positions"):
        volume_from_datasets(series)


def test_two_series_are_rejected() -> None:
    series = make_ct_series(3, rows=4, columns=4)
    series[1].SeriesInstanceUID = generate_uid()
    with pytest.raises(ValueError, match="2 different series"):
        volume_from_datasets(series)


def test_mixed_orientation_is_rejected() -> None:
    series = make_ct_series(3, rows=4, columns=4)
    series[2].ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    with pytest.raises(ValueError, match="different orientations"):
        volume_from_datasets(series)


def test_mixed_matrix_size_is_rejected() -> None:
    series = make_ct_series(2, rows=4, columns=4)
    series.append(make_ct_dataset(study_uid=series[0].StudyInstanceUID, series_uid=series[0].SeriesInstanceUID, rows=6, columns=4, z=2.0))
    with pytest.raises(ValueError, match="different matrix sizes"):
        volume_from_datasets(series)


def test_mixed_pixel_spacing_is_rejected() -> None:
    series = make_ct_series(3, rows=4, columns=4)
    series[1].PixelSpacing = [0.8, 0.8]
    with pytest.raises(ValueError, match="different pixel spacings"):
        volume_from_datasets(series)


def test_sheared_stack_is_rejected() -> None:
    series = make_ct_series(3, rows=4, columns=4)
    for k, ds in enumerate(series):
        ds.ImagePositionPatient = [0.0, 3.0 * k, float(k)]  # gantry tilt: y drifts with z
    with pytest.raises(ValueError, match="not stacked along their normal"):
        volume_from_datasets(series)


def test_repeated_instance_and_empty_input_and_wrong_type() -> None:
    series = make_ct_series(2, rows=4, columns=4)
    with pytest.raises(ValueError, match="more than once"):
        volume_from_datasets([series[0], series[1], series[0]])
    with pytest.raises(ValueError, match="no instances"):
        volume_from_datasets([])
    with pytest.raises(TypeError, match="not a pydicom Dataset"):
        volume_from_datasets([series[0], "file.dcm"])


def test_missing_pixel_data_is_reported() -> None:
    series = make_ct_series(2, rows=4, columns=4)
    del series[1].PixelData
    with pytest.raises(ValueError, match="no pixel data"):
        volume_from_datasets(series)


def test_undecodable_pixel_data_is_reported() -> None:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    series = make_ct_series(2, rows=4, columns=4)
    for ds in series:
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 20])  # a broken codestream
    with pytest.raises(ValueError, match=r"cannot decode the pixel data \(transfer syntax 1\.2\.840\.10008\.1\.2\.4\.90\)"):
        volume_from_datasets(series)


def test_oblique_and_sagittal_geometry() -> None:
    series = make_ct_series(3, rows=4, columns=4)
    for k, ds in enumerate(series):
        ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # sagittal; normal = row x column = -x
        ds.ImagePositionPatient = [10.0 - 2.0 * k, 0.0, 0.0]
    vol = volume_from_datasets(series)
    assert vol.direction[2] == pytest.approx([-1.0, 0.0, 0.0])
    assert vol.spacing_zyx[0] == pytest.approx(2.0)
    assert vol.origin == pytest.approx((10.0, 0.0, 0.0))
    assert not vol.is_axial()


def test_single_projection_image_becomes_one_slice() -> None:
    ds = make_ct_dataset(rows=6, columns=5, modality="DX")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    del ds.ImagePositionPatient
    del ds.ImageOrientationPatient
    del ds.PixelSpacing
    del ds.SliceThickness
    ds.ImagerPixelSpacing = [0.15, 0.2]
    ds.RescaleIntercept = 0
    vol = volume_from_datasets([ds])
    assert vol.shape == (1, 6, 5)
    assert vol.spacing_zyx == pytest.approx((1.0, 0.15, 0.2))
    assert vol.modality == "DX"
    np.testing.assert_array_equal(vol.voxels[0], _stored(ds))


def test_colour_image_is_rejected() -> None:
    ds = make_ct_dataset(rows=4, columns=4, modality="SC")
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    with pytest.raises(ValueError, match="colour images"):
        volume_from_datasets([ds])


def _enhanced_ct(positions_z: list[float]) -> Dataset:
    base = make_ct_dataset(rows=4, columns=5)
    ds = copy.deepcopy(base)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    for keyword in (
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "SliceThickness",
        "RescaleSlope",
        "RescaleIntercept",
    ):
        delattr(ds, keyword)
    n = len(positions_z)
    ds.NumberOfFrames = n
    frames = np.stack([np.full((4, 5), 100 * (i + 1), dtype=np.int16) for i in range(n)])
    ds.PixelData = frames.tobytes()

    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures = Dataset()
    measures.PixelSpacing = [0.5, 0.6]
    measures.SliceThickness = 2.0
    transform = Dataset()
    transform.RescaleSlope = 1
    transform.RescaleIntercept = -1024
    transform.RescaleType = "HU"
    recon = Dataset()
    recon.ConvolutionKernel = "B30f"
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([transform])
    shared.CTReconstructionSequence = Sequence([recon])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for z in positions_z:
        item = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [0.0, 0.0, z]
        item.PlanePositionSequence = Sequence([position])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    return ds


def test_enhanced_multiframe_ct() -> None:
    ds = _enhanced_ct([4.0, 0.0, 2.0])
    vol = volume_from_datasets([ds])
    assert vol.shape == (3, 4, 5)
    assert vol.spacing_zyx == pytest.approx((2.0, 0.5, 0.6))
    # frames sorted by z: frame 2 (z=0, value 200), frame 3 (z=2, 300), frame 1 (z=4, 100)
    assert vol.voxels[:, 0, 0] == pytest.approx([200 - 1024, 300 - 1024, 100 - 1024])
    assert vol.sop_instance_uids == (ds.SOPInstanceUID,) * 3
    assert vol.metadata["ConvolutionKernel"] == "B30f"


def test_enhanced_multiframe_without_geometry_is_rejected() -> None:
    ds = _enhanced_ct([0.0, 2.0])
    del ds.PerFrameFunctionalGroupsSequence
    with pytest.raises(ValueError, match="PerFrameFunctionalGroupsSequence"):
        volume_from_datasets([ds])


def test_volume_from_files_reads_a_folder(tmp_path) -> None:  # noqa: ANN001
    series = make_ct_series(4, rows=4, columns=4)
    write_part10(reversed(series), tmp_path)
    vol = volume_from_files(tmp_path)
    assert vol.shape == (4, 4, 4)
    assert vol.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in series)
    vol2 = volume_from_files(sorted(tmp_path.iterdir()))
    np.testing.assert_array_equal(vol.voxels, vol2.voxels)
    (tmp_path / "notes.txt").write_text("not dicom")
    with pytest.raises(ValueError, match="not a DICOM file"):
        volume_from_files(tmp_path)


def test_volume_from_files_deflated_round_trip(tmp_path) -> None:  # noqa: ANN001
    series = make_ct_series(3, rows=4, columns=4)
    for ds in series:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    paths = write_part10(series, tmp_path)
    vol = volume_from_files(paths)
    np.testing.assert_array_equal(vol.voxels[2], _stored(series[2]) - 1024.0)
