"""Radiographs written the way modalities write them: every grayscale-pipeline combination of PS3.3 C.11.

One real JSRT film (research use only; read from shared data, never copied) is stored in each
vendor-style encoding below, written through pydicom's writer and read back with dcmread, so what
is analysed is what a modality sends.  Each must be accepted as a frontal film, segmented as the
plain MONOCHROME2 file is, give the same CTR, and give a key image that shows it as a viewer
does: lungs darker than the mediastinum.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from radpilot.analyses.chest_xray.image import CR_IMAGE_STORAGE, DX_FOR_PROCESSING, display_image
from radpilot.contract import Findings
from radpilot.dicom.encoders import render_key_image
from radpilot.dicom.grayscale import Lut, apply_voi, read_lut
from radpilot.dicom.volume import volume_from_datasets
from radpilot.validation.metrics import dice
from tests.unit.test_chest_xray_analysis import NORMAL_CASE, JsrtCase, jsrt_case, measurement, radiograph_dataset, run_analysis


def _written_and_read(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _lut_item(data: np.ndarray, first: int, bits: int, *, vr: str = "OW", packed: bool = False) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [int(data.size) % 2**16, first, bits]  # a negative first value is written as SS (Pixel Representation 1)
    if vr == "OW":
        raw = data.astype("<u1").tobytes() if packed else data.astype("<u2").tobytes()
        item.add_new("LUTData", "OW", raw)
    else:
        item.add_new("LUTData", "US", [int(v) for v in data])
    return item


# ------------------------------------------------------------------ vendor-style encodings of one film
def _mono2(p: np.ndarray) -> Dataset:
    return radiograph_dataset(p)


def _mono2_identity_window(p: np.ndarray) -> Dataset:
    ds = radiograph_dataset(p)
    ds.PresentationLUTShape = "IDENTITY"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    return ds


def _dx_mono1_inverse(p: np.ndarray) -> Dataset:
    ds = radiograph_dataset((4095 - p).astype(np.uint16), photometric="MONOCHROME1")
    ds.PresentationLUTShape = "INVERSE"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    return ds


def _cr_mono1_no_shape(p: np.ndarray) -> Dataset:
    return radiograph_dataset(
        (4095 - p).astype(np.uint16), modality="CR", sop_class_uid=CR_IMAGE_STORAGE, photometric="MONOCHROME1", imager_spacing_mm=None
    )


def _mono2_inverse_of_inverted_data(p: np.ndarray) -> Dataset:
    ds = radiograph_dataset((4095 - p).astype(np.uint16))
    ds.PresentationLUTShape = "INVERSE"
    return ds


def _modality_lut_sequence(p: np.ndarray) -> Dataset:
    # 10-bit square-root companded storage, expanded by a 16-bit Modality LUT (no Rescale Slope/Intercept).
    stored = np.rint(1023.0 * np.sqrt(p / 4095.0)).astype(np.uint16)
    ds = radiograph_dataset(stored, bits_stored=10)
    table = np.rint(4095.0 * (np.arange(1024) / 1023.0) ** 2).astype(np.uint16)
    item = _lut_item(table, 0, 16)
    item.ModalityLUTType = "US"
    ds.ModalityLUTSequence = [item]
    return ds


def _signed_12_in_16(p: np.ndarray) -> Dataset:
    # Two's complement in 12 bits stored, the 4 unused high bits zero: the reader must sign-extend.
    signed = p.astype(np.int32) - 2048
    ds = radiograph_dataset((signed & 0x0FFF).astype(np.uint16))
    ds.PixelRepresentation = 1
    ds.WindowCenter, ds.WindowWidth = 0, 4096
    return ds


def _signed_with_voi_lut(p: np.ndarray) -> Dataset:
    signed = p.astype(np.int32) - 2048
    ds = radiograph_dataset((signed & 0xFFFF).astype(np.uint16), bits_stored=16)
    ds.PixelRepresentation = 1
    gamma = np.rint(65535 * (np.arange(4096) / 4095.0) ** 0.7).astype(np.uint16)
    ds.VOILUTSequence = [_lut_item(gamma, -2048, 16)]
    return ds


def _rescaled(p: np.ndarray) -> Dataset:
    ds = radiograph_dataset((p * 2 + 100).astype(np.uint16), bits_stored=14)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 0.5, -50, "US"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    return ds


def _eight_bit(p: np.ndarray) -> Dataset:
    ds = radiograph_dataset((p // 16).astype(np.uint8), bits_stored=8)
    ds.WindowCenter, ds.WindowWidth = 128, 256
    return ds


def _sixteen_bit_linear_exact(p: np.ndarray) -> Dataset:
    ds = radiograph_dataset((p * 16).astype(np.uint16), bits_stored=16)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 32768, 65536, "LINEAR_EXACT"
    return ds


def _sigmoid_first_of_two_windows(p: np.ndarray) -> Dataset:
    # The first window is the modality's default; the second, far narrower, would wash the film out.
    ds = radiograph_dataset(p)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = [2048, 40], [3000, 10], "SIGMOID"
    ds.WindowCenterWidthExplanation = ["NORMAL", "HARD"]
    return ds


def _for_processing_voi_lut_8bit_packed(p: np.ndarray) -> Dataset:
    # 'For processing' values shown only through an 8-bit VOI LUT, two entries per 16-bit word.
    ds = radiograph_dataset(p, sop_class_uid=DX_FOR_PROCESSING)
    table = np.rint(255 * (np.arange(4096) / 4095.0) ** 0.8).astype(np.uint8)
    ds.VOILUTSequence = [_lut_item(table, 0, 8, packed=True)]
    return ds


def _for_processing_voi_lut_8bit_in_words(p: np.ndarray) -> Dataset:
    # The same table as some writers pad it: each 8-bit entry in its own 16-bit word (US).
    ds = radiograph_dataset(p, sop_class_uid=DX_FOR_PROCESSING)
    table = np.rint(255 * (np.arange(4096) / 4095.0) ** 0.8).astype(np.uint16)
    ds.VOILUTSequence = [_lut_item(table, 0, 8, vr="US")]
    return ds


def _for_processing_with_window(p: np.ndarray) -> Dataset:
    ds = radiograph_dataset(p, sop_class_uid=DX_FOR_PROCESSING)
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    return ds


def _for_processing_log_without_window(p: np.ndarray) -> Dataset:
    ds = radiograph_dataset(p, sop_class_uid=DX_FOR_PROCESSING)
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LOG", 1
    return ds


ENCODINGS: dict[str, Callable[[np.ndarray], Dataset]] = {
    f.__name__.lstrip("_"): f
    for f in (
        _mono2_identity_window,
        _dx_mono1_inverse,
        _cr_mono1_no_shape,
        _mono2_inverse_of_inverted_data,
        _modality_lut_sequence,
        _signed_12_in_16,
        _signed_with_voi_lut,
        _rescaled,
        _eight_bit,
        _sixteen_bit_linear_exact,
        _sigmoid_first_of_two_windows,
        _for_processing_voi_lut_8bit_packed,
        _for_processing_voi_lut_8bit_in_words,
        _for_processing_with_window,
        _for_processing_log_without_window,
    )
}


@pytest.fixture(scope="module")
def film() -> JsrtCase:
    return jsrt_case(NORMAL_CASE)


@pytest.fixture(scope="module")
def plain(film: JsrtCase) -> Findings:
    findings, _ = run_analysis(_written_and_read(_mono2(film.pixels)))
    return findings


def _key_image_greys(findings: Findings, volume: object) -> np.ndarray:
    key = render_key_image(findings, volume, min_size=0)  # type: ignore[arg-type]
    return key.rgb[: key.image_rows].astype(int).mean(axis=2)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_every_vendor_encoding_is_read_as_the_same_film(encoding: str, film: JsrtCase, plain: Findings) -> None:
    ds = _written_and_read(ENCODINGS[encoding](film.pixels))
    findings, volume = run_analysis(ds)  # check_input accepts it as a frontal film
    labels = findings.segmentation.labels[0]
    scores = {v: dice(labels == v, film.labels == v) for v in (1, 2, 3)}
    assert min(scores.values()) > 0.9, scores
    assert measurement(findings, "Cardiothoracic ratio") == pytest.approx(measurement(plain, "Cardiothoracic ratio"), abs=0.02)
    grey = _key_image_greys(findings, volume)
    lungs, heart = np.isin(film.labels, (1, 2)), film.labels == 3
    assert float(np.median(grey[lungs])) + 20 < float(np.median(grey[heart]))


def test_the_key_image_applies_the_images_own_window(film: JsrtCase) -> None:
    # A narrow window on the lungs: a viewer shows the mediastinum white; a percentile stretch would not.
    ds = radiograph_dataset(film.pixels)
    lung_values = film.pixels[np.isin(film.labels, (1, 2))]
    low, high = np.percentile(lung_values, [5, 95])
    ds.WindowCenter, ds.WindowWidth = float((low + high) / 2), float(high - low)
    findings, volume = run_analysis(_written_and_read(ds))
    grey = _key_image_greys(findings, volume)
    assert float(np.median(grey[film.labels == 3])) >= 250


# ------------------------------------------------------------------------ LUT Data as stored, and malformed
def test_read_lut_decodes_packed_and_padded_8_bit_entries_and_signed_first_values() -> None:
    table = np.array([0, 10, 200, 255], dtype=np.uint8)
    packed = read_lut(_lut_item(table, 0, 8, packed=True), signed_input=False)
    padded = read_lut(_lut_item(table, 0, 8, vr="US"), signed_input=False)
    assert packed.data.tolist() == padded.data.tolist() == [0, 10, 200, 255]
    signed = read_lut(_lut_item(np.array([1, 2, 3], dtype=np.uint16), -2, 16), signed_input=True)
    assert signed.first_mapped == -2 and signed.apply(np.array([-5, -2, 0, 9])).tolist() == [1.0, 1.0, 3.0, 3.0]
    assert read_lut(_lut_item(np.array([1, 2], dtype=np.uint16), 40000, 16), signed_input=False).first_mapped == 40000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda item: delattr(item, "LUTData"), "LUT Descriptor or LUT Data is missing"),
        (lambda item: setattr(item, "LUTDescriptor", [4, 0]), "LUT Descriptor must hold 3 values"),
        (lambda item: setattr(item, "LUTDescriptor", [4, 0, 20]), "20 bits per LUT entry; the standard allows 8 to 16"),
        (lambda item: setattr(item, "LUTDescriptor", [400, 0, 16]), "LUT Data holds 4 entries but the LUT Descriptor announces 400"),
    ],
)
def test_read_lut_names_what_is_malformed(change: Callable[[Dataset], None], message: str) -> None:
    item = _lut_item(np.array([0, 1, 2, 3], dtype=np.uint16), 0, 16)
    change(item)
    with pytest.raises(ValueError, match=message):
        read_lut(item, signed_input=False, what="VOI LUT Sequence")


def test_a_malformed_modality_lut_refuses_the_image_with_the_reason(film: JsrtCase) -> None:
    ds = _modality_lut_sequence(film.pixels)
    ds.ModalityLUTSequence[0].LUTDescriptor = [2048, 0, 16]  # announces more entries than it holds
    with pytest.raises(ValueError, match="Modality LUT Sequence: LUT Data holds 1024 entries but the LUT Descriptor announces 2048"):
        volume_from_datasets([_written_and_read(ds)])


def test_a_malformed_voi_lut_is_ignored_with_a_warning_and_the_window_used(film: JsrtCase, caplog: pytest.LogCaptureFixture) -> None:
    ds = radiograph_dataset(film.pixels)
    ds.VOILUTSequence = [_lut_item(np.arange(16, dtype=np.uint16), 0, 4)]
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    with caplog.at_level(logging.WARNING):
        volume = volume_from_datasets([_written_and_read(ds)])
    assert "VOI LUT Sequence ignored: VOI LUT Sequence: 4 bits per LUT entry" in caplog.text
    assert display_image(volume).voi == "window LINEAR"


def test_voi_lut_bits_scale_the_output_to_one() -> None:
    lut = Lut(first_mapped=0, bits=10, data=np.array([0, 512, 1023]))
    values, what = apply_voi(np.array([0.0, 1.0, 2.0]), {"VOILUTSequence": lut})
    assert what == "VOI LUT" and values.tolist() == pytest.approx([0.0, 512 / 1023, 1.0])
