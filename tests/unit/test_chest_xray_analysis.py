"""The chest_xray analysis on real JSRT radiographs wrapped as DICOM (research use only; never copied into the repo).

The helpers at the top (``jsrt_case``, ``radiograph_dataset``, ``cr_monochrome1``, ``jpeg_compress``)
are shared with ``tests/integration/test_chest_xray_end_to_end.py`` and the benchmarks.
Each model run takes tens of milliseconds on one core; the module keeps them few.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGLosslessSV1, generate_uid

from radpilot.analyses.chest_xray import ANALYSIS, ChestXray
from radpilot.analyses.chest_xray import analysis as cxr
from radpilot.analyses.chest_xray.image import (
    CR_IMAGE_STORAGE,
    DX_FOR_PRESENTATION,
    DX_FOR_PROCESSING,
    apply_voi,
    display_image,
    orientation_flips,
)
from radpilot.analyses.chest_xray.measurements import ctr_geometry, cut_off_structures, pixel_spacing
from radpilot.analyses.chest_xray.preprocess import cardiothoracic_ratio
from radpilot.analyses.chest_xray.view import View, frontal_plausibility, view_from_header
from radpilot.contract import Findings, NotApplicableError
from radpilot.dicom.encoders import render_key_image
from radpilot.dicom.grayscale import is_inverted
from radpilot.dicom.volume import volume_from_datasets
from radpilot.engine.routing import SeriesFacts, load_rules
from radpilot.modelhub.registry import DEFAULT_MODELS_DIR, ModelIntegrityError, ModelRegistry
from radpilot.validation.metrics import dice
from tests.helpers import require_or_skip, shared_data_path

JSRT_DIR = shared_data_path() / "cxr-jsrt"
#: A PA film with an enlarged heart (reference CTR 0.612) and one with a normal heart (0.411).
CARDIOMEGALY_CASE, NORMAL_CASE = "JPCNN029", "JPCLN107"
NODULE_MANIFEST = DEFAULT_MODELS_DIR / "cxr_nodule_det" / "manifest.json"


# ------------------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class JsrtCase:
    case_id: str
    pixels: np.ndarray  # uint16 (512, 512), display convention (MONOCHROME2), values 0..4080
    labels: np.ndarray  # uint8 (512, 512): 1 right lung, 2 left lung, 3 heart (SCR reference)
    spacing_mm: float
    ctr: float
    heart_width_mm: float
    thorax_width_mm: float


def jsrt_case(case_id: str) -> JsrtCase:
    """One developer case of shared/data/cxr-jsrt (skips when the data is absent)."""
    import csv

    from PIL import Image

    if not (JSRT_DIR / "metadata.csv").is_file():
        require_or_skip(f"JSRT data folder {JSRT_DIR} is absent")
    with open(JSRT_DIR / "metadata.csv", newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["case_id"] == case_id)
    pixels = np.array(Image.open(JSRT_DIR / row["image_file"])).astype(np.uint16)
    labels = np.zeros(pixels.shape, dtype=np.uint8)
    for value, structure in ((1, "right_lung"), (2, "left_lung"), (3, "heart")):
        labels[np.array(Image.open(JSRT_DIR / "masks" / structure / f"{case_id}.png")) > 0] = value
    return JsrtCase(
        case_id,
        pixels,
        labels,
        float(row["pixel_spacing_mm"]),
        float(row["ctr"]),
        float(row["heart_width_mm"]),
        float(row["thorax_width_mm"]),
    )


def radiograph_dataset(
    pixels: np.ndarray,
    *,
    modality: str = "DX",
    sop_class_uid: str = DX_FOR_PRESENTATION,
    photometric: str = "MONOCHROME2",
    view_position: str | None = "PA",
    imager_spacing_mm: float | None = 0.7,
    pixel_spacing_mm: float | None = None,
    bits_stored: int = 12,
    patient_orientation: tuple[str, str] | None = ("L", "F"),
    study_uid: str | None = None,
    patient_id: str = "CXR001",
    series_number: int = 1,
    description: str = "CHEST PA",
) -> Dataset:
    """A CR or DX chest radiograph (single frame, uncompressed) holding ``pixels`` as stored values."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "JSRT^DEV"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20240105"
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"A{patient_id}"[:16]
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.SeriesDescription = description
    ds.BodyPartExamined = "CHEST"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if modality == "DX":
        ds.PresentationIntentType = "FOR PROCESSING" if sop_class_uid == DX_FOR_PROCESSING else "FOR PRESENTATION"
    if view_position is not None:
        ds.ViewPosition = view_position
    if patient_orientation is not None:
        ds.PatientOrientation = list(patient_orientation)
    if imager_spacing_mm is not None:
        ds.ImagerPixelSpacing = [imager_spacing_mm, imager_spacing_mm]
    if pixel_spacing_mm is not None:
        ds.PixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint8 if bits_stored <= 8 else np.uint16).tobytes()
    return ds


def cr_monochrome1(pixels_512: np.ndarray, size: int = 1024, **kwargs) -> Dataset:
    """The 512 film resampled to ``size`` (bilinear), inverted into MONOCHROME1, as a CR with PixelSpacing 358/size mm."""
    from scipy import ndimage

    resampled = ndimage.zoom(pixels_512.astype(np.float64), size / pixels_512.shape[0], order=1, mode="nearest")
    stored = np.clip(np.rint(4095.0 - resampled), 0, 4095).astype(np.uint16)
    spacing = round(512 * 0.7 / size, 4)
    defaults = dict(
        modality="CR",
        sop_class_uid=CR_IMAGE_STORAGE,
        photometric="MONOCHROME1",
        imager_spacing_mm=None,
        pixel_spacing_mm=spacing,
        description="CHEST PA CR",
    )
    defaults.update(kwargs)
    return radiograph_dataset(stored, **defaults)


def jpeg_compress(ds: Dataset, transfer_syntax: str = JPEGLosslessSV1) -> Dataset:
    """``ds`` re-encoded with dcmtk's dcmcjpeg: JPEG Lossless SV1 (any bit depth) or JPEG Baseline (8-bit data)."""
    tool = shutil.which("dcmcjpeg")
    if tool is None:
        require_or_skip("dcmcjpeg (dcmtk) is not installed")
    option = {JPEGLosslessSV1: "+e1", JPEGBaseline8Bit: "+eb"}[transfer_syntax]
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.dcm", Path(folder) / "out.dcm"
        ds.save_as(source, enforce_file_format=True)
        subprocess.run([tool, option, str(source), str(target)], check=True, capture_output=True, timeout=60)
        out = pydicom.dcmread(target)
    assert out.file_meta.TransferSyntaxUID == transfer_syntax
    return out


def run_analysis(ds: Dataset, analysis: ChestXray = ANALYSIS) -> tuple[Findings, object]:
    volume = volume_from_datasets([ds])
    analysis.check_input(volume)
    return analysis.run(volume), volume


def labels_of(findings: Findings) -> np.ndarray:
    return findings.segmentation.labels[0]


def measurement(findings: Findings, name: str, site: str | None = None) -> float:
    [value] = [
        m.value
        for m in findings.measurements
        if m.name.meaning == name and (site is None or (m.finding_site is not None and m.finding_site.meaning == site))
    ]
    return value


def _round_trip(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _dice_per_structure(labels: np.ndarray, reference: np.ndarray) -> dict[int, float]:
    return {v: dice(labels == v, reference == v) for v in (1, 2, 3)}


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def big_heart() -> JsrtCase:
    return jsrt_case(CARDIOMEGALY_CASE)


@pytest.fixture(scope="module")
def normal() -> JsrtCase:
    return jsrt_case(NORMAL_CASE)


@pytest.fixture(scope="module")
def dx_result(big_heart: JsrtCase) -> tuple[Findings, object, Dataset]:
    ds = radiograph_dataset(big_heart.pixels)
    findings, volume = run_analysis(ds)
    return findings, volume, ds


# ------------------------------------------------------------------------------ routing, catalog
def test_discovered_and_routed_by_the_default_rules() -> None:
    from radpilot.analyses import discover_analyses

    assert isinstance(discover_analyses()["chest_xray"], ChestXray)
    rules = load_rules()
    for modality in ("CR", "DX"):
        decision = rules.route(SeriesFacts("1", "2", {"Modality": modality, "NumberOfSlices": 1}))
        assert [a for a, _ in decision.analyses] == ["chest_xray"]
    assert not rules.route(SeriesFacts("1", "2", {"Modality": "SR", "NumberOfSlices": 1})).matched


# ------------------------------------------------------------------------------- the DX PA film
def test_dx_pa_film_masks_ctr_widths_areas_and_cardiomegaly(dx_result, big_heart: JsrtCase) -> None:
    findings, volume, _ = dx_result
    assert findings.analysis == "chest_xray" and findings.segmentation.labels.shape == (1, 512, 512)
    assert [s.label for s in findings.segmentation.segments] == ["Right lung", "Left lung", "Heart"]
    scores = _dice_per_structure(labels_of(findings), big_heart.labels)
    assert min(scores.values()) > 0.9, scores
    # the patient's right lung lies on the image left
    assert np.nonzero(labels_of(findings) == 1)[1].mean() < 256 < np.nonzero(labels_of(findings) == 2)[1].mean()

    ctr = measurement(findings, "Cardiothoracic ratio")
    assert ctr == pytest.approx(big_heart.ctr, abs=0.03)
    assert measurement(findings, "Width", "Heart") == pytest.approx(big_heart.heart_width_mm, abs=6 * 0.7)
    assert measurement(findings, "Width", "Thoracic cavity") == pytest.approx(big_heart.thorax_width_mm, abs=6 * 0.7)
    assert measurement(findings, "Width", "Heart") / measurement(findings, "Width", "Thoracic cavity") == pytest.approx(ctr, abs=0.002)
    for site, value in (("Right lung", 1), ("Left lung", 2)):
        reference_cm2 = float((big_heart.labels == value).sum()) * 0.49 / 100
        assert measurement(findings, "Area", site) == pytest.approx(reference_cm2, rel=0.06)
    assert measurement(findings, "Area", "Both lungs") == pytest.approx(
        measurement(findings, "Area", "Right lung") + measurement(findings, "Area", "Left lung"), abs=0.11
    )
    units = {(m.name.value, m.finding_site.value if m.finding_site else None): m.unit.value for m in findings.measurements}
    assert units[("RP-CTR", None)] == "1" and units[("103355008", "80891009")] == "mm"
    assert units[("42798000", "3341006")] == "cm2"
    [cardiomegaly] = findings.qualitative
    assert (cardiomegaly.name.value, cardiomegaly.value.meaning) == ("8186001", "Present")
    assert "ImagerPixelSpacing" in " ".join(findings.notes) and findings.key_slices == [0]
    assert 0.9 < findings.confidence <= 1.0


def _line_crosses(line, labels: np.ndarray, value: int) -> float:  # noqa: ANN001
    """The fraction of the line's columns whose pixel on the line's row has label ``value``."""
    (_, y0, x0), (_, _, x1) = line.start_zyx, line.end_zyx
    row = int(round(y0))
    columns = np.arange(int(np.ceil(x0)), int(np.floor(x1)) + 1)
    return float((labels[row, columns] == value).mean())


def test_dx_pa_film_yields_the_two_ctr_widths_as_lines(dx_result) -> None:
    findings, volume, _ = dx_result
    heart_line, thorax_line = findings.lines
    spacing = 0.7  # ImagerPixelSpacing of radiograph_dataset's JSRT films
    heart_mm, thorax_mm = measurement(findings, "Width", "Heart"), measurement(findings, "Width", "Thoracic cavity")
    for line, width in ((heart_line, heart_mm), (thorax_line, thorax_mm)):
        assert line.name.value == "103355008" and line.name.scheme == "SCT"
        assert line.start_zyx[0] == line.end_zyx[0] == 0.0
        assert line.length_mm == pytest.approx(width, rel=0.01)
        drawn = np.hypot(line.end_zyx[1] - line.start_zyx[1], line.end_zyx[2] - line.start_zyx[2]) * spacing
        assert drawn == pytest.approx(width, rel=0.01)
    labels = labels_of(findings)
    assert _line_crosses(heart_line, labels, 3) > 0.9  # across the heart
    assert heart_line.start_zyx[2] > thorax_line.start_zyx[2] and heart_line.end_zyx[2] < thorax_line.end_zyx[2]
    columns = np.nonzero(np.isin(labels, (1, 2)).any(axis=0))[0]
    assert thorax_line.start_zyx[2] == columns[0] - 0.5 and thorax_line.end_zyx[2] == columns[-1] + 0.5
    assert "cardiac width" in heart_line.description and "thoracic width" in thorax_line.description


def test_ctr_below_threshold_is_absent_and_pixel_spacing_preferred(normal: JsrtCase) -> None:
    findings, _ = run_analysis(radiograph_dataset(normal.pixels, imager_spacing_mm=0.8, pixel_spacing_mm=0.7))
    assert measurement(findings, "Cardiothoracic ratio") == pytest.approx(normal.ctr, abs=0.03)
    assert measurement(findings, "Width", "Heart") == pytest.approx(normal.heart_width_mm, abs=6 * 0.7)
    assert findings.qualitative[0].value.meaning == "Absent"
    assert not any("detector plane" in n for n in findings.notes)


# ------------------------------------------------------------- any size, polarity, compression
def test_monochrome1_cr_1024_jpeg_lossless(normal: JsrtCase, dx_result) -> None:
    compressed = jpeg_compress(cr_monochrome1(normal.pixels))
    assert compressed.Rows == 1024 and compressed.PhotometricInterpretation == "MONOCHROME1"
    findings, volume = run_analysis(compressed)
    assert volume.spacing_zyx[1:] == (0.35, 0.35)
    labels = labels_of(findings)
    assert labels.shape == (1024, 1024)
    reference = np.kron(normal.labels, np.ones((2, 2), dtype=np.uint8))
    scores = _dice_per_structure(labels, reference)
    assert min(scores.values()) > 0.9, scores
    assert measurement(findings, "Cardiothoracic ratio") == pytest.approx(normal.ctr, abs=0.03)
    assert measurement(findings, "Width", "Heart") == pytest.approx(normal.heart_width_mm, abs=6 * 0.7)
    assert any("inverted (MONOCHROME1)" in n for n in findings.notes)


def test_jpeg_baseline_8bit_dx(normal: JsrtCase) -> None:
    eight_bit = (normal.pixels // 16).astype(np.uint8)
    compressed = jpeg_compress(radiograph_dataset(eight_bit, bits_stored=8), JPEGBaseline8Bit)
    findings, _ = run_analysis(compressed)
    assert min(_dice_per_structure(labels_of(findings), normal.labels).values()) > 0.9


def test_voi_lut_window_and_inverse_presentation(normal: JsrtCase) -> None:
    # A gamma VOI LUT, then a LINEAR window, then MONOCHROME2 with an INVERSE presentation LUT of inverted data.
    ds = radiograph_dataset(normal.pixels)
    item = Dataset()
    gamma = np.rint(65535 * (np.arange(4096) / 4095.0) ** 0.6).astype(np.uint16)
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new("LUTData", "US", gamma.tolist())
    ds.VOILUTSequence = [item]
    findings, volume = run_analysis(_round_trip(ds))  # LUT Data as stored in a file
    as_ow = radiograph_dataset(normal.pixels)
    ow_item = Dataset()
    ow_item.LUTDescriptor = [4096, 0, 16]
    ow_item.add_new("LUTData", "OW", gamma.astype("<u2").tobytes())
    as_ow.VOILUTSequence = [ow_item]
    np.testing.assert_array_equal(volume_from_datasets([_round_trip(as_ow)]).metadata["VOILUTSequence"]["data"], gamma)
    assert display_image(volume).voi == "VOI LUT"
    assert min(_dice_per_structure(labels_of(findings), normal.labels).values()) > 0.9

    windowed = radiograph_dataset(normal.pixels)
    windowed.WindowCenter, windowed.WindowWidth = 2048, 4096
    inverse = radiograph_dataset((4095 - normal.pixels).astype(np.uint16))
    inverse.PresentationLUTShape = "INVERSE"
    for ds in (windowed, inverse):
        findings, _ = run_analysis(ds)
        assert min(_dice_per_structure(labels_of(findings), normal.labels).values()) > 0.9


def test_dx_monochrome1_with_inverse_presentation_lut_is_one_inversion(normal: JsrtCase) -> None:
    # As DX modalities write MONOCHROME1 (PS3.3 C.8.11.6.1): inverted stored values AND Presentation LUT Shape INVERSE.
    reference, _ = run_analysis(radiograph_dataset(normal.pixels))
    vendor = radiograph_dataset((4095 - normal.pixels).astype(np.uint16), photometric="MONOCHROME1")
    vendor.PresentationLUTShape = "INVERSE"
    findings, volume = run_analysis(_round_trip(vendor))
    assert min(_dice_per_structure(labels_of(findings), normal.labels).values()) > 0.9
    assert measurement(findings, "Cardiothoracic ratio") == pytest.approx(measurement(reference, "Cardiothoracic ratio"), abs=0.01)
    # The key image shows it as a viewer does: the same greys as the MONOCHROME2 film (bone bright, lungs dark).
    mono2 = render_key_image(reference, volume_from_datasets([radiograph_dataset(normal.pixels)]), min_size=0)
    mono1 = render_key_image(findings, volume, min_size=0)
    rows = mono2.image_rows
    grey2, grey1 = mono2.rgb[:rows].astype(int).mean(axis=2), mono1.rgb[:rows].astype(int).mean(axis=2)
    lungs = normal.labels > 0
    assert abs(float(np.median(grey1[lungs])) - float(np.median(grey2[lungs]))) < 10
    assert float(np.median(grey1[lungs])) < float(np.median(grey1[~lungs]))


def test_a_film_cut_off_below_the_heart_has_areas_but_no_ctr(normal: JsrtCase) -> None:
    findings, _ = run_analysis(radiograph_dataset(np.ascontiguousarray(normal.pixels[:300])))
    names = [m.name.meaning for m in findings.measurements]
    assert "Cardiothoracic ratio" not in names and "Width" not in names and "Area" in names
    assert not findings.qualitative and not findings.lines
    assert any(n.startswith("The cardiothoracic ratio is not reported: the heart") for n in findings.notes)


def test_mirrored_image_without_orientation_draws_a_caution(normal: JsrtCase) -> None:
    findings, _ = run_analysis(radiograph_dataset(np.ascontiguousarray(normal.pixels[:, ::-1]), patient_orientation=None))
    assert any(n.startswith("Caution: the heart's centre lies on the image left") for n in findings.notes)


def test_mirrored_image_is_analysed_in_standard_orientation_and_mapped_back(normal: JsrtCase) -> None:
    mirrored = np.ascontiguousarray(normal.pixels[:, ::-1])
    findings, volume = run_analysis(radiograph_dataset(mirrored, patient_orientation=("R", "F")))
    labels = labels_of(findings)
    assert min(_dice_per_structure(labels, normal.labels[:, ::-1]).values()) > 0.9
    assert np.nonzero(labels == 1)[1].mean() > 256  # the patient's right lung is now on the image right
    assert measurement(findings, "Cardiothoracic ratio") == pytest.approx(normal.ctr, abs=0.03)
    assert any("mirrored left-right" in n for n in findings.notes)
    # the width lines are on the source (mirrored) grid: the heart line still crosses the heart there
    heart_line, thorax_line = findings.lines
    assert _line_crosses(heart_line, labels, 3) > 0.9
    assert heart_line.length_mm == pytest.approx(measurement(findings, "Width", "Heart"), rel=0.01)
    columns = np.nonzero(np.isin(labels, (1, 2)).any(axis=0))[0]
    assert thorax_line.start_zyx[2] == columns[0] - 0.5 and thorax_line.end_zyx[2] == columns[-1] + 0.5


# ------------------------------------------------------------------------- views and refusals
def test_lateral_and_oblique_views_are_refused_with_the_reason(normal: JsrtCase) -> None:
    for view, kind in (("LL", "lateral"), ("RL", "lateral"), ("LLO", "oblique")):
        volume = volume_from_datasets([radiograph_dataset(normal.pixels, view_position=view)])
        with pytest.raises(NotApplicableError) as caught:
            ANALYSIS.check_input(volume)
        assert str(caught.value) == f"{kind} view (ViewPosition {view}): chest_xray analyses frontal (PA/AP) radiographs only"


def test_ap_view_reports_ctr_but_cardiomegaly_not_reliable(big_heart: JsrtCase) -> None:
    findings, _ = run_analysis(radiograph_dataset(big_heart.pixels, view_position="AP"))
    assert measurement(findings, "Cardiothoracic ratio") > 0.5
    [q] = findings.qualitative
    assert (q.value.value, q.value.scheme, q.value.meaning) == ("RP-NR-AP", "99RADPILOT", "Not reliable on AP view")
    assert any(n.startswith("AP view: the heart is magnified") for n in findings.notes)


def test_missing_view_position_is_judged_by_the_model(normal: JsrtCase) -> None:
    findings, _ = run_analysis(radiograph_dataset(normal.pixels, view_position=None))
    assert findings.qualitative[0].value.value == "RP-NR-VIEW"
    assert any("ViewPosition is not recorded" in n for n in findings.notes)


def test_images_that_do_not_look_like_a_frontal_chest_film_are_refused(normal: JsrtCase) -> None:
    rng = np.random.default_rng(0)
    for pixels in (np.ascontiguousarray(np.rot90(normal.pixels)), rng.integers(0, 4096, (512, 512)).astype(np.uint16)):
        volume = volume_from_datasets([radiograph_dataset(pixels, view_position=None)])
        with pytest.raises(NotApplicableError, match="^image does not look like a frontal chest radiograph: "):
            ANALYSIS.check_input(volume)


def test_header_refusals(normal: JsrtCase) -> None:
    from tests.factories import make_ct_series

    cases = [
        (volume_from_datasets(make_ct_series(3, rows=32, columns=32)), "series modality is CT; chest_xray analyses CR and DX"),
        (volume_from_datasets([radiograph_dataset(normal.pixels[:100, :100].copy())]), "image is only 100 x 100 pixels"),
        (
            volume_from_datasets([radiograph_dataset(normal.pixels, sop_class_uid=DX_FOR_PROCESSING)]),
            "a DX 'for processing' image with raw detector values",
        ),
        (volume_from_datasets([radiograph_dataset(np.full((256, 256), 7, np.uint16))]), "the image is blank"),
    ]
    for volume, reason in cases:
        with pytest.raises(NotApplicableError, match=reason.replace("(", r"\(").replace(")", r"\)")):
            ANALYSIS.check_input(volume)


def test_without_pixel_spacing_only_the_ctr_is_reported(normal: JsrtCase) -> None:
    findings, _ = run_analysis(radiograph_dataset(normal.pixels, imager_spacing_mm=None))
    assert [m.name.meaning for m in findings.measurements] == ["Cardiothoracic ratio"]
    assert any("no pixel spacing" in n for n in findings.notes)
    assert not findings.points
    assert len(findings.lines) == 2 and all(line.length_mm is None for line in findings.lines)  # drawn, not measured


# ------------------------------------------------------------------------------ model integrity
def test_a_model_file_with_a_changed_byte_is_refused(tmp_path: Path, normal: JsrtCase) -> None:
    shutil.copytree(DEFAULT_MODELS_DIR / "cxr_lung_heart_seg", tmp_path / "cxr_lung_heart_seg")
    [onnx] = (tmp_path / "cxr_lung_heart_seg").glob("*.onnx")
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    analysis = ChestXray(registry=ModelRegistry(tmp_path, providers=["CPUExecutionProvider"], intra_op_threads=1))
    volume = volume_from_datasets([radiograph_dataset(normal.pixels)])
    with pytest.raises(ModelIntegrityError, match=r"cxr_lung_heart_seg 1\.0\.0: .*has sha256 .* will not be run"):
        analysis.check_input(volume)


# ------------------------------------------------------------------------------ nodule candidates
def test_nodule_candidates_come_from_the_installed_detector(normal: JsrtCase) -> None:
    """Plumbing, not accuracy: JPCLN107's 9 mm nodule is in the detector's training data (all dev films), so a
    candidate must sit on its JSRT centre, on the source grid of every variant (size, polarity, orientation)."""
    centre = (289.38, 421.62)  # metadata.csv nodule_y, nodule_x on the 512 grid
    variants = [
        (radiograph_dataset(normal.pixels), centre, 0.7),
        (cr_monochrome1(normal.pixels), (2 * centre[0] + 0.5, 2 * centre[1] + 0.5), 0.35),
        (
            radiograph_dataset(np.ascontiguousarray(normal.pixels[:, ::-1]), patient_orientation=("R", "F")),
            (centre[0], 511 - centre[1]),
            0.7,
        ),
    ]
    for ds, (row, col), spacing in variants:
        findings, _ = run_analysis(ds)
        text = " ".join(findings.notes)
        if not NODULE_MANIFEST.is_file():
            assert "nodule detector not installed" in text and not findings.points
            pytest.skip("the nodule detector model (models/cxr_nodule_det) is not installed")
        assert "Nodule candidates:" in text and "at the operating point score >= " in text
        rows, cols = labels_of(findings).shape
        for point in findings.points:
            z, y, x = point.center_zyx
            assert z == 0.0 and 0 <= y < rows and 0 <= x < cols
            assert point.name.meaning == "Nodule" and 0.0 <= point.score <= 1.0 and point.diameter_mm > 0
        distances_mm = [np.hypot(p.center_zyx[1] - row, p.center_zyx[2] - col) * spacing for p in findings.points]
        assert distances_mm and min(distances_mm) < 10.0, distances_mm


def test_nodule_detection_absent_is_said_plainly(normal: JsrtCase, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_nodules(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: ANN001, ANN202, A002
        if name == "radpilot.analyses.chest_xray" and fromlist and "nodules" in fromlist:
            raise ImportError("no nodules module")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_nodules)
    findings, _ = run_analysis(radiograph_dataset(normal.pixels), ChestXray(registry=ANALYSIS.registry))
    assert any("nodule detector not installed" in n for n in findings.notes) and not findings.points


# ------------------------------------------------------------------------ DICOM results (AIR)
def test_seg_sr_and_key_image_of_a_radiograph(dx_result) -> None:
    import highdicom as hd

    from radpilot.engine.pipeline import encode_results

    findings, volume, ds = dx_result
    seg, sr, key = encode_results(ANALYSIS, findings, volume, [ds], uid_seed="chest-xray-unit")
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(buffer.getvalue())))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Right lung", "Left lung", "Heart"]
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence] == ["3341006", "44029006", "80891009"]
    decoded = seg.get_pixels_by_source_instance([ds.SOPInstanceUID], combine_segments=True).squeeze()
    np.testing.assert_array_equal(decoded, labels_of(findings))

    def items(node):  # noqa: ANN001, ANN202
        for item in node.get("ContentSequence", []):
            yield item
            yield from items(item)

    names = [str(i.ConceptNameCodeSequence[0].CodeMeaning) for i in items(sr) if "ConceptNameCodeSequence" in i]
    assert {"Cardiothoracic ratio", "Width", "Area", "Cardiomegaly"} <= set(names)
    assert any(str(item.CodingSchemeDesignator) == "99RADPILOT" for item in sr.CodingSchemeIdentificationSequence)
    polylines = [i for i in items(sr) if i.ValueType == "SCOORD" and i.GraphicType == "POLYLINE"]
    assert len(polylines) == 2 and all(len(p.GraphicData) == 4 for p in polylines)
    lengths = [
        float(i.MeasuredValueSequence[0].NumericValue)
        for i in items(sr)
        if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "410668003"
    ]
    assert lengths == [line.length_mm for line in findings.lines]
    assert key.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and key.BurnedInAnnotation == "YES"
    assert key.SourceImageSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID


# ----------------------------------------------------------------------------- building blocks
def test_voi_functions_and_polarity() -> None:
    values = np.array([0.0, 1000.0, 2000.0, 3000.0, 4000.0])
    linear, what = apply_voi(values, {"WindowCenter": "2000", "WindowWidth": "2001"})
    assert what == "window LINEAR" and linear[0] == 0.0 and linear[-1] == 1.0 and linear[2] == pytest.approx(0.5, abs=1e-3)
    sigmoid, what = apply_voi(values, {"WindowCenter": ["2000", "1000"], "WindowWidth": ["1000", "500"], "VOILUTFunction": "SIGMOID"})
    assert what == "window SIGMOID" and sigmoid[2] == pytest.approx(0.5) and np.all(np.diff(sigmoid) > 0)
    lut = {"first_mapped": 1000, "bits": 8, "data": np.array([0, 100, 255], dtype=np.uint16)}
    mapped, what = apply_voi(np.array([0.0, 1001.0, 5000.0]), {"VOILUTSequence": lut})
    assert what == "VOI LUT" and mapped.tolist() == [0.0, 100 / 255, 1.0]
    assert apply_voi(values, {})[1] == "none"
    assert is_inverted({"PhotometricInterpretation": "MONOCHROME1"})
    # PS3.3 DX Image Module: MONOCHROME1 goes with INVERSE; the pair is ONE inversion, not two that cancel.
    assert is_inverted({"PhotometricInterpretation": "MONOCHROME1", "PresentationLUTShape": "INVERSE"})
    assert is_inverted({"PhotometricInterpretation": "MONOCHROME2", "PresentationLUTShape": "INVERSE"})
    assert not is_inverted({"PhotometricInterpretation": "MONOCHROME2", "PresentationLUTShape": "IDENTITY"})
    assert not is_inverted({"PhotometricInterpretation": "MONOCHROME2"})
    assert orientation_flips({"PatientOrientation": ["L", "F"]}) == (False, False)
    assert orientation_flips({"PatientOrientation": ["R", "H"]}) == (True, True)
    assert orientation_flips({}) == (False, False)


def test_spacing_choice() -> None:
    assert pixel_spacing({"PixelSpacing": ["0.2", "0.2"], "ImagerPixelSpacing": ["0.3", "0.3"]}).source == "PixelSpacing"
    corrected = pixel_spacing({"ImagerPixelSpacing": ["0.22", "0.22"], "EstimatedRadiographicMagnificationFactor": "1.1"})
    assert corrected.row_mm == pytest.approx(0.2) and "magnification factor" in corrected.note
    assert "detector plane" in pixel_spacing({"ImagerPixelSpacing": ["0.2", "0.2"]}).note
    assert pixel_spacing({}) is None and pixel_spacing({"PixelSpacing": ["0", "1"]}) is None


def test_ctr_geometry_matches_the_shared_definition_and_cut_off_widths() -> None:
    labels = np.zeros((100, 120), dtype=np.uint8)
    labels[10:80, 10:50] = 1
    labels[20:85, 70:112] = 2
    labels[50:90, 40:85] = 3
    labels[60, 30] = 3  # an isolated heart pixel further left widens the cardiac width (all rows count)
    geometry = ctr_geometry(labels)
    reference = cardiothoracic_ratio(labels)
    assert (geometry.cardiac.width_px, geometry.thoracic.width_px) == (reference.heart_width_px, reference.thorax_width_px)
    assert geometry.cardiac.start == (60, 30) and geometry.thoracic.start[1] == 10 and geometry.thoracic.end[1] == 111
    mirrored = ctr_geometry(labels[:, ::-1])
    assert mirrored.ratio == pytest.approx(geometry.ratio)
    assert cut_off_structures(labels) == []
    labels[30:32, 0:10] = 1  # grazes the edge over 2 of 70 rows: a tangent, not a cut
    assert cut_off_structures(labels) == []
    labels[30:40, 0:10] = 1
    assert cut_off_structures(labels) == ["the right lung field"]
    labels[88:100, 50:60] = 3
    assert cut_off_structures(labels) == ["the heart", "the right lung field"]


def test_view_positions_and_plausibility_rules() -> None:
    assert view_from_header("PA").view is View.PA and view_from_header(["AP"]).view is View.AP
    assert view_from_header("ll").view is View.LATERAL and view_from_header("RLD").view is View.DECUBITUS
    assert view_from_header(None).view is View.UNKNOWN
    labels = np.zeros((100, 100), dtype=np.uint8)
    labels[10:80, 10:40] = 1
    labels[10:80, 60:90] = 2
    labels[50:85, 35:65] = 3
    assert frontal_plausibility(labels, 0.97) == []
    swapped = np.where(labels == 1, 2, np.where(labels == 2, 1, labels))
    assert "the heart does not lie between the two lung fields" in frontal_plausibility(swapped)
    assert "unsure of the anatomy" in " ".join(frontal_plausibility(labels, 0.5))
    assert frontal_plausibility(np.where(labels == 3, 0, labels)) == ["no heart found"]


def test_constants_documented() -> None:
    assert cxr.CTR_THRESHOLD == 0.5 and ChestXray.required_models == ("cxr_lung_heart_seg", "cxr_nodule_det")
