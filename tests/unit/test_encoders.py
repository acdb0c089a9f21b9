"""Unit tests of the DICOM encoders (SEG, TID 1500 SR, key image) over small synthetic inputs.

The builders ``build_ct_case`` and ``build_dx_case`` are shared with
``tests/integration/test_encoders_dciodvfy.py``.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
from dataclasses import dataclass, replace

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

from radpilot.analyses.lung_ct import LungCTQuant
from radpilot.contract import (
    Code,
    Findings,
    LineFinding,
    Measurement,
    PointFinding,
    QualitativeFinding,
    Segment,
    Segmentation,
)
from radpilot.dicom.encoders import (
    SEGMENT_COLORS_RGB,
    encode_key_image,
    encode_measurement_report,
    encode_segmentation,
    make_uid_seed,
    render_key_image,
)
from radpilot.dicom.encoders.common import (
    POINT_COLOR_RGB,
    UidFactory,
    patient_orientation_from_iop,
    to_coded_concept,
)
from radpilot.dicom.encoders.key_image import LINE_COLORS_RGB, SOFT_TISSUE_WINDOW, default_display_window

LUNG_WINDOW = LungCTQuant.display_windows["CT"]
from radpilot.dicom.volume import Volume, volume_from_datasets
from tests.factories import IMPLEMENTATION_UID, make_ct_series, to_part10_bytes

WHEN = dt.datetime(2024, 1, 2, 12, 30, 0)
ML = Code("mL", "UCUM", "milliliter")
MM2 = Code("mm2", "UCUM", "square millimeter")
VOLUME = Code("118565006", "SCT", "Volume")
AREA = Code("42798000", "SCT", "Area")
LUNG = Code("39607008", "SCT", "Lung")
HEART = Code("80891009", "SCT", "Heart")
ALTERED = Code("49755003", "SCT", "Morphologically Altered Structure")
TISSUE = Code("85756007", "SCT", "Tissue")
NODULE = Code("27925004", "SCT", "Nodule")
WIDTH = Code("103355008", "SCT", "Width")
EMPHYSEMA = Code("87433001", "SCT", "Pulmonary emphysema")
PRESENT = Code("52101004", "SCT", "Present")
#: A private code, as an analysis may use one (declared in the Coding Scheme Identification Sequence).
EMPHYSEMA_INDEX = Code("RP-EI-950", "99RADPILOT", "Emphysema index LAA-950")


@dataclass
class Case:
    """Inputs of one encoder run."""

    sources: list[Dataset]
    volume: Volume
    findings: Findings
    expected_labels: np.ndarray  # label volume with SEG segment numbers


def build_ct_case(seed: int = 0) -> Case:
    """8 CT slices of 64x64 with two segments (analysis numbers 1 and 3), measurements and a nodule."""
    sources = make_ct_series(8, rows=64, columns=64)
    labels = np.zeros((8, 64, 64), dtype=np.uint8)
    labels[2:5, 10:20, 10:20] = 1  # nodule segment on slices 2..4
    labels[4:6, 30:44, 30:40] = 3  # emphysema segment on slices 4..5
    segments = [
        Segment(1, "Nodule 1", ALTERED, NODULE, LUNG, algorithm_name="nodule-seg"),
        Segment(3, "Emphysema", ALTERED, EMPHYSEMA, LUNG),
    ]
    findings = Findings(
        analysis="lung_ct",
        version="1.2.0",
        measurements=[
            Measurement(VOLUME, 0.147, ML, finding_site=LUNG, segment_number=1),
            Measurement(VOLUME, 0.274, ML, segment_number=3),
            Measurement(EMPHYSEMA_INDEX, 4.2, Code("%", "UCUM", "percent")),
        ],
        segmentation=Segmentation(labels, segments),
        qualitative=[QualitativeFinding(EMPHYSEMA, PRESENT)],
        points=[PointFinding(NODULE, (3.0, 15.0, 15.0), diameter_mm=6.0, score=0.91)],
        key_slices=[3],
        confidence=0.9,
    )
    expected = np.where(labels == 3, 2, labels).astype(np.uint8)
    return Case(sources, volume_from_datasets(sources), findings, expected)


def make_dx_dataset(*, rows: int = 256, columns: int = 256, with_orientation: bool = True) -> Dataset:
    """A Digital X-Ray (for presentation) chest PA image, MONOCHROME2, no patient frame of reference."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = IMPLEMENTATION_UID
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "PAT002"
    ds.PatientName = "ROE^RICHARD"
    ds.PatientBirthDate = "19700505"
    ds.PatientSex = "M"
    ds.StudyDate = "20240103"
    ds.StudyTime = "090000"
    ds.AccessionNumber = "ACC002"
    ds.StudyID = "2"
    ds.ReferringPhysicianName = "WHO^DR"
    ds.Modality = "DX"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if with_orientation:
        ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = [0.5, 0.5]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    yy, xx = np.mgrid[0:rows, 0:columns]
    ds.PixelData = ((xx + yy) * 4095 // (rows + columns)).astype(np.uint16).tobytes()
    return ds


def build_dx_case(*, with_orientation: bool = True) -> Case:
    """One 256x256 chest radiograph with a heart segment, a segmented and an unsegmented measurement, a point, a line."""
    sources = [make_dx_dataset(with_orientation=with_orientation)]
    labels = np.zeros((1, 256, 256), dtype=np.uint8)
    labels[0, 120:200, 90:180] = 1
    findings = Findings(
        analysis="chest_xray",
        version="0.3.1",
        measurements=[
            Measurement(AREA, 1800.0, MM2, finding_site=HEART, segment_number=1),
            Measurement(Code("RP-CTR", "99RADPILOT", "Cardiothoracic ratio"), 0.48, Code("1", "UCUM", "no units")),
        ],
        segmentation=Segmentation(labels, [Segment(1, "Heart", TISSUE, HEART)]),
        points=[PointFinding(NODULE, (0.0, 60.0, 70.0), score=0.77)],
        # the heart width: columns 90..179 at row 160, from the left edge of the first to the right edge of the last
        lines=[LineFinding(WIDTH, (0.0, 160.0, 89.5), (0.0, 160.0, 179.5), length_mm=45.0, description="heart width, columns 90-179")],
    )
    return Case(sources, volume_from_datasets(sources), findings, labels)


def _round_trip(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _content_items(ds: Dataset) -> list[Dataset]:
    items: list[Dataset] = []
    for item in ds.get("ContentSequence", []):
        items.append(item)
        items.extend(_content_items(item))
    return items


def _name(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeMeaning) if "ConceptNameCodeSequence" in item else ""


@pytest.fixture(scope="module")
def ct() -> Case:
    return build_ct_case()


@pytest.fixture(scope="module")
def ct_seg(ct: Case) -> Dataset:
    return encode_segmentation(ct.findings, ct.sources, series_number=900, content_datetime=WHEN)


@pytest.fixture(scope="module")
def ct_sr(ct: Case, ct_seg: Dataset) -> Dataset:
    return encode_measurement_report(ct.findings, ct.sources, ct_seg, series_number=901, content_datetime=WHEN)


@pytest.fixture(scope="module")
def dx() -> Case:
    return build_dx_case()


@pytest.fixture(scope="module")
def dx_seg(dx: Case) -> Dataset:
    return encode_segmentation(dx.findings, dx.sources, series_number=900)


# ------------------------------------------------------------------------------------ SEG
def test_ct_seg_round_trip_maps_labels_back_to_the_same_voxels(ct: Case, ct_seg: Dataset) -> None:
    seg = hd.seg.Segmentation.from_dataset(_round_trip(ct_seg))
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.SegmentationType == "BINARY"
    assert seg.get_segment_numbers() == [1, 2]
    # empty frames omitted: segment 1 on 3 slices, segment 2 on 2 slices
    assert int(seg.NumberOfFrames) == 5
    labels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[d.SOPInstanceUID for d in ct.sources],
        combine_segments=True,
        skip_overlap_checks=True,
    )
    np.testing.assert_array_equal(labels, ct.expected_labels)


def test_ct_seg_segment_descriptions(ct_seg: Dataset) -> None:
    first, second = ct_seg.SegmentSequence
    assert first.SegmentLabel == "Nodule 1" and second.SegmentLabel == "Emphysema"
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == "27925004"
    assert first.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert first.AnatomicRegionSequence[0].CodeValue == "39607008"
    assert first.SegmentAlgorithmType == "AUTOMATIC"
    assert first.SegmentAlgorithmName == "nodule-seg"  # the segment's own algorithm name
    assert second.SegmentAlgorithmName == "lung_ct"
    algorithm = second.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "lung_ct" and algorithm.AlgorithmVersion == "1.2.0"
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"  # Artificial Intelligence
    assert len(first.RecommendedDisplayCIELabValue) == 3  # same colour as the key image outline


def test_ct_seg_same_study_new_series_and_identity(ct: Case, ct_seg: Dataset) -> None:
    source = ct.sources[0]
    assert ct_seg.StudyInstanceUID == source.StudyInstanceUID
    assert ct_seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert ct_seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyID",
    ):
        assert ct_seg[keyword].value == source[keyword].value, keyword
    assert ct_seg.Manufacturer == "RadPilot"
    assert ct_seg.ManufacturerModelName == "lung_ct"
    assert list(ct_seg.SoftwareVersions)[1] == "lung_ct 1.2.0"
    assert ct_seg.SeriesNumber == 900
    assert (ct_seg.ContentDate, ct_seg.ContentTime) == ("20240102", "123000")


def test_dx_seg_one_frame_with_patient_orientation(dx: Case, dx_seg: Dataset) -> None:
    assert int(dx_seg.NumberOfFrames) == 1
    assert list(dx_seg.PatientOrientation) == ["L", "F"]
    seg = hd.seg.Segmentation.from_dataset(_round_trip(dx_seg))
    labels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[dx.sources[0].SOPInstanceUID], combine_segments=True)
    np.testing.assert_array_equal(labels, dx.expected_labels)


def test_dx_seg_without_source_orientation_still_has_patient_orientation() -> None:
    case = build_dx_case(with_orientation=False)
    seg = encode_segmentation(case.findings, case.sources, series_number=900)
    assert "PatientOrientation" in seg  # type 2C: present (empty = unknown), never missing


def test_patient_orientation_from_iop() -> None:
    assert patient_orientation_from_iop([1, 0, 0, 0, 1, 0]) == ["L", "P"]
    assert patient_orientation_from_iop([0, 1, 0, 0, 0, -1]) == ["P", "F"]
    assert patient_orientation_from_iop([0.8, 0.6, 0, 0, 0, -1]) == ["LP", "F"]


# ------------------------------------------------------------------------------------- SR
def test_ct_sr_measurements_units_and_references(ct: Case, ct_seg: Dataset, ct_sr: Dataset) -> None:
    sr = _round_trip(ct_sr)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
    items = _content_items(sr)
    numbers = {
        (round(float(i.MeasuredValueSequence[0].NumericValue), 3), i.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue)
        for i in items
        if i.ValueType == "NUM"
    }
    assert {(0.147, "mL"), (0.274, "mL"), (4.2, "%"), (0.91, "1"), (6.0, "mm")} <= numbers

    segments = [i for i in items if i.ValueType == "IMAGE" and _name(i) == "Referenced Segment"]
    assert len(segments) == 2
    for reference, expected_number in zip(segments, (1, 2)):
        ref = reference.ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == ct_seg.SOPInstanceUID
        assert ref.ReferencedSOPClassUID == ct_seg.SOPClassUID
        assert int(ref.ReferencedSegmentNumber) == expected_number
    series_refs = [i.UID for i in items if i.ValueType == "UIDREF" and _name(i) == "Source Series for Segmentation"]
    assert series_refs == [ct.sources[0].SeriesInstanceUID] * 2

    # the private code is declared; standard codes elsewhere
    assert [i.CodingSchemeDesignator for i in sr.CodingSchemeIdentificationSequence] == ["99RADPILOT"]
    evidence = {
        ref.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert ct_seg.SOPInstanceUID in evidence and ct.sources[0].SOPInstanceUID in evidence


def test_ct_sr_observer_procedure_qualitative_and_point(ct: Case, ct_sr: Dataset) -> None:
    items = _content_items(ct_sr)
    texts = {_name(i): i.TextValue for i in items if i.ValueType == "TEXT"}
    assert texts["Device Observer Name"] == "lung_ct"
    assert texts["Device Observer Manufacturer"] == "RadPilot"
    codes_ = {_name(i): i.ConceptCodeSequence[0].CodeValue for i in items if i.ValueType == "CODE"}
    assert codes_["Observer Type"] == "121007"  # Device
    assert codes_["Procedure reported"] == "25045-6"  # CT unspecified body region (default for CT)
    assert codes_["Pulmonary emphysema"] == "52101004"  # qualitative: present
    (circle,) = [i for i in items if i.ValueType == "SCOORD"]
    assert circle.GraphicType == "CIRCLE"
    np.testing.assert_allclose(circle.GraphicData, [15.5, 15.5, 15.5 + 3.0 / 0.7, 15.5], rtol=1e-5)
    assert circle.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ct.sources[3].SOPInstanceUID
    score = [i for i in items if i.ValueType == "NUM" and _name(i) == "Certainty of Finding"]
    assert score and score[0].ConceptNameCodeSequence[0].CodingSchemeDesignator == "DCM"
    assert ct_sr.CompletionFlag == "COMPLETE" and ct_sr.VerificationFlag == "UNVERIFIED"
    assert ct_sr.StudyInstanceUID == ct.sources[0].StudyInstanceUID
    assert ct_sr.PatientID == ct.sources[0].PatientID


def test_ct_sr_procedure_code_and_patient_coordinates(ct: Case, ct_seg: Dataset) -> None:
    chest = Code("24627-2", "LN", "CT Chest")
    sr = encode_measurement_report(ct.findings, ct.sources, ct_seg, series_number=901, procedure_code=chest, point_coordinates="patient")
    items = _content_items(sr)
    assert [i.ConceptCodeSequence[0].CodeValue for i in items if _name(i) == "Procedure reported"] == ["24627-2"]
    (point,) = [i for i in items if i.ValueType == "SCOORD3D"]
    assert point.GraphicType == "POINT"
    assert point.ReferencedFrameOfReferenceUID == ct.sources[0].FrameOfReferenceUID
    np.testing.assert_allclose(point.GraphicData, ct.volume.index_to_patient((3.0, 15.0, 15.0)), atol=1e-4)


def test_dx_sr_planar_segment_frame_and_point(dx: Case, dx_seg: Dataset) -> None:
    sr = encode_measurement_report(dx.findings, dx.sources, dx_seg, series_number=901)
    items = _content_items(sr)
    (frame_ref,) = [i for i in items if _name(i) == "Referenced Segmentation Frame"]
    ref = frame_ref.ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == dx_seg.SOPInstanceUID and int(ref.ReferencedFrameNumber) == 1
    assert "ReferencedSegmentNumber" not in ref  # PS3.3: not with a frame number (dciodvfy error otherwise)
    (source,) = [i for i in items if _name(i) == "Source Image for Segmentation"]
    assert source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == dx.sources[0].SOPInstanceUID
    (point,) = [i for i in items if i.ValueType == "SCOORD" and i.GraphicType == "POINT"]
    np.testing.assert_allclose(point.GraphicData, [70.5, 60.5])
    assert point.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == dx.sources[0].SOPInstanceUID
    procedure = [i.ConceptCodeSequence[0].CodeValue for i in items if _name(i) == "Procedure reported"]
    assert procedure == ["43468-8"]  # XR unspecified body region
    values = {round(float(i.MeasuredValueSequence[0].NumericValue), 3) for i in items if i.ValueType == "NUM"}
    assert {1800.0, 0.48, 0.77} <= values


def test_dx_sr_line_is_a_two_point_polyline_with_its_length(dx: Case, dx_seg: Dataset) -> None:
    sr = _round_trip(encode_measurement_report(dx.findings, dx.sources, dx_seg, series_number=901))
    items = _content_items(sr)
    (polyline,) = [i for i in items if i.ValueType == "SCOORD" and i.GraphicType == "POLYLINE"]
    np.testing.assert_allclose(np.reshape(polyline.GraphicData, (-1, 2)), [[90.0, 160.5], [180.0, 160.5]])  # (column, row)
    assert polyline.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == dx.sources[0].SOPInstanceUID
    lengths = [i for i in items if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "410668003"]
    (length,) = lengths
    assert float(length.MeasuredValueSequence[0].NumericValue) == 45.0
    assert length.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "mm"
    trackers = [str(i.TextValue) for i in items if _name(i) == "Tracking Identifier"]
    assert "heart width 1" in trackers
    # without length_mm the length comes from the pixel spacing (0.5 mm): 90 px -> 45 mm
    unmeasured = replace(dx.findings, lines=[replace(dx.findings.lines[0], length_mm=None)])
    items = _content_items(encode_measurement_report(unmeasured, dx.sources, dx_seg, series_number=901))
    (length,) = [i for i in items if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "410668003"]
    assert float(length.MeasuredValueSequence[0].NumericValue) == pytest.approx(45.0)
    across = replace(dx.findings, lines=[LineFinding(WIDTH, (0.0, 10.0, 10.0), (0.0, 10.0, 300.0))])
    with pytest.raises(ValueError, match="outside"):
        encode_measurement_report(across, dx.sources, dx_seg, series_number=901)


def test_line_finding_is_validated() -> None:
    line = LineFinding(WIDTH, (0, 1, 2), [0, 3, 4])
    assert line.start_zyx == (0.0, 1.0, 2.0) and line.end_zyx == (0.0, 3.0, 4.0) and line.length_mm is None
    for start in ((0.0, float("nan"), 1.0), (0.0, 1.0), (0.0, float("inf"), 1.0, 2.0), "abc"):
        with pytest.raises(ValueError, match="start_zyx"):
            LineFinding(WIDTH, start, (0.0, 1.0, 1.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="length_mm"):
        LineFinding(WIDTH, (0.0, 1.0, 1.0), (0.0, 2.0, 2.0), length_mm=float("nan"))
    assert Findings("x", "1").lines == []


def test_sr_without_seg_reports_segment_measurements_without_region(ct: Case) -> None:
    sr = encode_measurement_report(ct.findings, ct.sources, None, series_number=901)
    items = _content_items(sr)
    assert not [i for i in items if _name(i) == "Referenced Segment"]
    values = {round(float(i.MeasuredValueSequence[0].NumericValue), 3) for i in items if i.ValueType == "NUM"}
    assert {0.147, 0.274, 4.2} <= values


# ------------------------------------------------------------------------------ key image
def test_ct_key_image_rgb_size_outline_and_point(ct: Case) -> None:
    image = encode_key_image(ct.findings, ct.volume, ct.sources, series_number=902, content_datetime=WHEN)
    pixels = _round_trip(image).pixel_array
    assert image.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert image.PhotometricInterpretation == "RGB" and image.SamplesPerPixel == 3 and image.BitsAllocated == 8
    assert image.Columns == 512 and image.Rows > 512  # 64 px x 8, legend band below
    assert pixels.shape == (image.Rows, 512, 3)
    red = np.array(SEGMENT_COLORS_RGB[0])
    assert (pixels[80, 85] == red).all()  # top edge of segment 1 (rows 10..19 -> 80..159)
    assert (pixels[100, 80] == red).all()  # left edge
    assert not (pixels[120, 100] == red).all()  # interior keeps the image
    assert (pixels[:512] == np.array(POINT_COLOR_RGB)).all(axis=-1).sum() > 50  # nodule circle
    assert image.ConversionType == "WSD" and image.BurnedInAnnotation == "YES"
    assert image.SourceImageSequence[0].ReferencedSOPInstanceUID == ct.sources[3].SOPInstanceUID
    assert image.ReferencedImageSequence[0].ReferencedSOPInstanceUID == ct.sources[3].SOPInstanceUID
    assert image.StudyInstanceUID == ct.sources[0].StudyInstanceUID
    assert image.PatientName == ct.sources[0].PatientName
    assert list(image.PatientOrientation) == ["L", "P"]


def test_key_image_legend_and_native_size(ct: Case) -> None:
    key = render_key_image(ct.findings, ct.volume, min_size=0)
    assert key.slice_index == 3 and key.scale == 1.0 and key.image_rows == 64
    assert key.rgb.shape[1] == 64 and key.rgb.dtype == np.uint8
    full = render_key_image(ct.findings, ct.volume, window=LUNG_WINDOW)
    assert any("Volume 0.147 mL" in line for line in full.legend)
    assert any("Nodule 1: score 0.91" in line for line in full.legend)
    assert full.window == LUNG_WINDOW
    middle = render_key_image(replace(ct.findings, key_slices=[]), ct.volume)
    assert middle.slice_index == 4


def test_display_window_is_the_analysis_declaration_else_a_modality_default(ct: Case, dx: Case) -> None:
    assert LUNG_WINDOW == (-600.0, 1500.0)
    assert render_key_image(ct.findings, ct.volume).window == SOFT_TISSUE_WINDOW  # no declared window: soft tissue
    assert default_display_window(ct.volume) == SOFT_TISSUE_WINDOW
    assert default_display_window(dx.volume) is None
    assert render_key_image(dx.findings, dx.volume).window is None


def test_dx_key_image_legend_and_monochrome1() -> None:
    case = build_dx_case()
    key = render_key_image(case.findings, case.volume)
    assert key.window is None and key.scale == 2.0
    assert "Heart: Area 1800 mm2" in key.legend and "Cardiothoracic ratio 0.48" in key.legend
    assert "Nodule 1: score 0.77" in key.legend
    inverted = build_dx_case()
    inverted.sources[0].PhotometricInterpretation = "MONOCHROME1"
    inverted_key = render_key_image(inverted.findings, volume_from_datasets(inverted.sources))
    # top-left is the darkest pixel value: black in MONOCHROME2, white in MONOCHROME1
    assert key.rgb[0, 0].tolist() == [0, 0, 0] and inverted_key.rgb[0, 0].tolist() == [255, 255, 255]


def test_dx_key_image_draws_the_line_on_its_slice_only(dx: Case) -> None:
    key = render_key_image(dx.findings, dx.volume)
    assert key.scale == 2.0
    magenta = np.array(LINE_COLORS_RGB[0])
    is_line = (key.rgb[: key.image_rows] == magenta).all(axis=-1)
    # the segment: row 160 -> pixel rows 321..322 at scale 2, columns 90..179 -> 180..359
    y = int((160 + 0.5) * 2)
    along = is_line[y - 1 : y + 2, 182:358].any(axis=0)
    assert along.all()
    assert is_line[y - 6 : y + 7, 180].sum() >= 10  # the tick at the start
    assert not is_line[: y - 10].any() and not is_line[y + 10 :].any()
    assert "Heart width 45.0 mm (line)" in key.legend
    other = replace(dx.findings, lines=[replace(dx.findings.lines[0], start_zyx=(1.0, 160.0, 89.5), end_zyx=(1.0, 160.0, 179.5))])
    off = render_key_image(other, dx.volume)
    assert not (off.rgb[: off.image_rows] == magenta).all(axis=-1).any()
    assert not any("(line)" in line for line in off.legend)


def test_dx_key_image(dx: Case) -> None:
    image = encode_key_image(dx.findings, dx.volume, dx.sources, series_number=902)
    assert image.Columns == 512  # 256 x 2
    pixels = image.pixel_array
    red = np.array(SEGMENT_COLORS_RGB[0])
    assert (pixels[240, 200] == red).all()  # top edge of the heart (row 120 -> 240)
    assert image.SourceImageSequence[0].ReferencedSOPInstanceUID == dx.sources[0].SOPInstanceUID
    assert list(image.PatientOrientation) == ["L", "F"]


# ------------------------------------------------------------------------------ UIDs
def test_uids_are_deterministic_per_seed(ct: Case, ct_seg: Dataset, ct_sr: Dataset) -> None:
    seg_again = encode_segmentation(ct.findings, ct.sources, series_number=900)
    sr_again = encode_measurement_report(ct.findings, ct.sources, seg_again, series_number=901)
    assert (seg_again.SOPInstanceUID, seg_again.SeriesInstanceUID) == (ct_seg.SOPInstanceUID, ct_seg.SeriesInstanceUID)
    assert (sr_again.SOPInstanceUID, sr_again.SeriesInstanceUID) == (ct_sr.SOPInstanceUID, ct_sr.SeriesInstanceUID)
    assert seg_again.DimensionOrganizationSequence[0].DimensionOrganizationUID == (
        ct_seg.DimensionOrganizationSequence[0].DimensionOrganizationUID
    )
    key1 = encode_key_image(ct.findings, ct.volume, ct.sources, series_number=902, uid_seed="job-42")
    key2 = encode_key_image(ct.findings, ct.volume, ct.sources, series_number=902, uid_seed="job-42")
    assert key1.SOPInstanceUID == key2.SOPInstanceUID
    other = encode_segmentation(ct.findings, ct.sources, series_number=900, uid_seed="job-43")
    assert other.SOPInstanceUID != ct_seg.SOPInstanceUID
    series = {ct_seg.SeriesInstanceUID, ct_sr.SeriesInstanceUID, key1.SeriesInstanceUID}
    assert len(series) == 3
    seed = make_uid_seed("lung_ct", "1.2.0", [d.SOPInstanceUID for d in reversed(ct.sources)])
    assert seed == make_uid_seed("lung_ct", "1.2.0", [d.SOPInstanceUID for d in ct.sources])
    assert ct_seg.SOPInstanceUID == UidFactory(seed).instance("seg")
    assert all(len(uid) <= 64 and uid.startswith("2.25.") for uid in (ct_seg.SOPInstanceUID, *series))


def test_sources_are_used_in_slice_order(ct: Case, ct_seg: Dataset) -> None:
    shuffled = [ct.sources[i] for i in (5, 2, 7, 0, 1, 6, 4, 3)]
    seg = encode_segmentation(ct.findings, shuffled, series_number=900)
    assert seg.SOPInstanceUID == ct_seg.SOPInstanceUID
    labels = hd.seg.Segmentation.from_dataset(seg).get_pixels_by_source_instance(
        source_sop_instance_uids=[d.SOPInstanceUID for d in ct.sources], combine_segments=True
    )
    np.testing.assert_array_equal(labels, ct.expected_labels)


# --------------------------------------------------------------------------- invalid input
def test_segmentation_shape_mismatch_is_refused(ct: Case) -> None:
    bad = replace(ct.findings, segmentation=Segmentation(np.zeros((7, 64, 64), np.uint8), ct.findings.segmentation.segments))
    with pytest.raises(ValueError, match=r"shape \(7, 64, 64\).*expected shape \(8, 64, 64\)"):
        encode_segmentation(bad, ct.sources, series_number=900)
    with pytest.raises(ValueError, match="shape"):
        render_key_image(bad, ct.volume)


def test_empty_inputs_are_refused(ct: Case) -> None:
    with pytest.raises(ValueError, match="empty"):
        encode_measurement_report(Findings("lung_ct", "1.2.0"), ct.sources, None, series_number=901)
    with pytest.raises(ValueError, match="no segmentation"):
        encode_segmentation(Findings("lung_ct", "1.2.0"), ct.sources, series_number=900)
    empty = replace(ct.findings, segmentation=Segmentation(np.zeros((8, 64, 64), np.uint8), ct.findings.segmentation.segments))
    with pytest.raises(ValueError, match="empty"):
        encode_segmentation(empty, ct.sources, series_number=900)
    with pytest.raises(ValueError, match="source_datasets is empty"):
        encode_segmentation(ct.findings, [], series_number=900)


def test_invalid_arguments_are_refused(ct: Case, ct_seg: Dataset, dx_seg: Dataset) -> None:
    with pytest.raises(TypeError, match="series_number must be an int"):
        encode_segmentation(ct.findings, ct.sources, series_number="900")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="findings must be"):
        encode_segmentation({"analysis": "x"}, ct.sources, series_number=900)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="source_datasets must be a list"):
        encode_segmentation(ct.findings, ct.sources[0], series_number=900)  # type: ignore[arg-type]
    not_ucum = replace(ct.findings, measurements=[Measurement(VOLUME, 1.0, Code("ml", "SCT", "millilitre"))])
    with pytest.raises(ValueError, match="UCUM"):
        encode_measurement_report(not_ucum, ct.sources, None, series_number=901)
    outside = replace(ct.findings, points=[PointFinding(NODULE, (3.0, 80.0, 10.0))])
    with pytest.raises(ValueError, match="outside"):
        encode_measurement_report(outside, ct.sources, ct_seg, series_number=901)
    with pytest.raises(ValueError, match="reference the source series|another study"):
        encode_measurement_report(ct.findings, ct.sources, dx_seg, series_number=901)
    renamed = replace(
        ct.findings,
        segmentation=Segmentation(
            ct.findings.segmentation.labels,
            [replace(s, label=s.label + " x") for s in ct.findings.segmentation.segments],
        ),
    )
    with pytest.raises(ValueError, match="does not match the findings"):
        encode_measurement_report(renamed, ct.sources, ct_seg, series_number=901)
    with pytest.raises(ValueError, match="key slice 8 is outside"):
        render_key_image(ct.findings, ct.volume, 8)
    other_series = make_ct_series(8, rows=64, columns=64)
    with pytest.raises(ValueError, match="another series"):
        encode_key_image(ct.findings, ct.volume, other_series, series_number=902)
    with pytest.raises(TypeError, match="radpilot Code"):
        to_coded_concept("SCT:123")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most 64"):
        encode_segmentation(ct.findings, ct.sources, series_number=900, algorithm_name="x" * 65)


def test_sr_reads_back_with_highdicom(ct: Case, ct_sr: Dataset, dx: Case, dx_seg: Dataset) -> None:
    buffer = io.BytesIO()
    ct_sr.save_as(buffer, enforce_file_format=True)
    report = hd.sr.srread(io.BytesIO(buffer.getvalue())).content
    volumetric = report.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in volumetric] == ["Nodule 1", "Emphysema"]
    assert len(report.get_planar_roi_measurement_groups()) == 1  # the nodule point
    (series_level,) = report.get_image_measurement_groups()
    assert [m.name.value for m in series_level.get_measurements()] == ["RP-EI-950"]
    dx_sr = encode_measurement_report(dx.findings, dx.sources, dx_seg, series_number=901)
    buffer = io.BytesIO()
    dx_sr.save_as(buffer, enforce_file_format=True)
    planar = hd.sr.srread(io.BytesIO(buffer.getvalue())).content.get_planar_roi_measurement_groups()
    assert [g.reference_type.value for g in planar] == ["121214", "111030", "111030"]  # segmentation frame, point, line
    line_group = planar[2]
    assert line_group.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    (length,) = line_group.get_measurements()
    assert length.name.value == "410668003" and length.value == 45.0 and length.unit.value == "mm"


def test_seg_of_a_positioned_series_without_frame_of_reference_gets_one_derived_from_the_series() -> None:
    # Research exports such as 3D-IRCADb carry positions but no Frame of Reference UID, which the SEG IOD requires.
    case = build_ct_case()
    sources = [copy.deepcopy(ds) for ds in case.sources]
    for ds in sources:
        del ds.FrameOfReferenceUID
    seg = encode_segmentation(case.findings, sources, series_number=900, content_datetime=WHEN)
    again = encode_segmentation(case.findings, sources, series_number=900, content_datetime=WHEN)
    assert seg.FrameOfReferenceUID == again.FrameOfReferenceUID  # deterministic
    assert all("FrameOfReferenceUID" not in ds for ds in sources)  # the caller's datasets are left as they were
    referenced = {str(item.ReferencedSOPInstanceUID) for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {str(ds.SOPInstanceUID) for ds in sources}


def test_seg_sr_and_key_image_metadata_come_from_the_fast_path_and_match_pydicom(ct: Case, ct_seg: Dataset, ct_sr: Dataset) -> None:
    # RadPilot's own results are stored on every analysis: they must take the fast path, and give pydicom's document.
    from tests.unit.test_fast_metadata import by_pydicom, fast

    key_image = encode_key_image(ct.findings, ct.volume, ct.sources, series_number=902, content_datetime=WHEN)
    for ds in (ct_seg, ct_sr, key_image):
        data = to_part10_bytes(ds)
        document = fast(data)
        assert document is not None, ds.Modality
        assert document == by_pydicom(data)
