"""Inputs for the de-identification tests: real CT, X-ray and MR images with every table attribute filled in.

The shared CT series were de-identified by their publishers, so a check on them alone
would pass with little to remove. :func:`fill_every_table_attribute` therefore puts an
identifying value into every attribute of PS3.15 Table E.1-1 that pydicom's dictionary
knows, and a private block, before the de-identifier runs; the checks then compare the
output with the table, attribute by attribute.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radpilot.dicom.deid import load_table
from tests.helpers import require_or_skip, shared_data_path

SECRET_ID = "SECRET-ID-4711"
SECRET_NAME = "DOE^JANE^Q"

# Attributes the tests fill only through the real object (they define its identity or structure).
STRUCTURAL = {"SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName"}


def value_for(vr: str, tag: int) -> object:
    """An identifying-looking value for one VR."""
    return {
        "PN": "SMITH^JOHN",
        "DA": "20240315",
        "TM": "101500",
        "DT": "20240315101500",
        "UI": f"1.2.3.4.{tag}",
        "AS": "042Y",
        "CS": "SECRET",
        "AE": "SECRETAE",
        "IS": "4711",
        "DS": "47.11",
        "US": 4711,
        "SS": 4711,
        "UL": 4711,
        "SL": 4711,
        "FL": 47.11,
        "FD": 47.11,
        "SQ": None,
        "OB": b"SECRET",
        "OW": b"SECRET",
        "UN": b"SECRET",
        "AT": 0x00100010,
        "UV": 4711,
        "SV": 4711,
        "UR": "http://example.org/SECRET",
    }.get(vr, f"SECRET {tag:08X}")


def filled_tags() -> dict[int, str]:
    """Every exact tag of the table that pydicom can write, with its VR."""
    tags: dict[int, str] = {}
    for tag in load_table().rules:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        keyword = keyword_for_tag(tag)
        if keyword in STRUCTURAL or tag >> 16 in (0x0000, 0x0002) or vr in ("OF", "OD", "OL", "OV") or " or " in vr:
            continue
        tags[tag] = vr
    return tags


def fill_every_table_attribute(ds: Dataset) -> Dataset:
    """Add (or overwrite) every table attribute with an identifying value, plus a private block."""
    for tag, vr in filled_tags().items():
        if vr == "SQ":
            item = Dataset()
            item.PatientName = "NESTED^NAME"
            item.ReferencedSOPInstanceUID = "1.2.3.4.99"
            item.PersonName = "NESTED^PERSON"
            ds.add_new(tag, "SQ", Sequence([item]))
        else:
            ds.add_new(tag, vr, value_for(vr, tag))
    ds.PatientID = SECRET_ID
    ds.PatientName = SECRET_NAME
    block = ds.private_block(0x0019, "ACME SECRET", create=True)
    block.add_new(0x10, "LO", "PRIVATE SECRET")
    block.add_new(0x11, "DS", "1.5")  # the one the safe-list test keeps
    return ds


def real_ct_files(limit_per_series: int = 12) -> list[Path]:
    """Real CT slices from the shared data (two patients' lung CT and one abdominal CT), spread over each series."""
    root = shared_data_path()
    files: list[Path] = []
    for folder in (
        root / "ct-lung" / "LUNGCT-001" / "dicom",
        root / "ct-lung" / "LUNGCT-002" / "dicom",
        root / "liver-ct-ircad" / "IRCADB1-17" / "dicom",
    ):
        if not folder.is_dir():
            require_or_skip(f"shared CT data missing: {folder}")
        series = sorted(folder.rglob("*.dcm")) or sorted(p for p in folder.rglob("*") if p.is_file())
        step = max(1, len(series) // limit_per_series)
        files.extend(series[::step][:limit_per_series])
    return files


def _base_image(sop_class: str, modality: str, pixels: np.ndarray) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def real_xray() -> Dataset:
    """A DX for presentation whose pixels are a real JSRT chest radiograph."""
    png = shared_data_path() / "cxr-jsrt" / "images" / "JPCLN001.png"
    if not png.is_file():
        require_or_skip(f"shared X-ray data missing: {png}")
    ds = _base_image("1.2.840.10008.5.1.4.1.1.1.1", "DX", np.asarray(Image.open(png)))
    ds.ImagerPixelSpacing = [0.7, 0.7]
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    return ds


def real_mr() -> Dataset:
    """An MR image whose pixels are one real cine short-axis slice (ACDC)."""
    nifti = shared_data_path() / "cmr-acdc" / "images" / "patient001_ED.nii.gz"
    if not nifti.is_file():
        require_or_skip(f"shared MR data missing: {nifti}")
    volume = np.asarray(nib.load(str(nifti)).dataobj, dtype=np.float32)
    plane = volume[:, :, volume.shape[2] // 2]
    plane = (plane - plane.min()) / max(float(np.ptp(plane)), 1e-6) * 4000
    ds = _base_image("1.2.840.10008.5.1.4.1.1.4", "MR", plane.T)
    ds.FrameOfReferenceUID = generate_uid()
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.5, 1.5]
    ds.SliceThickness = 8.0
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTime = 1.5
    ds.RepetitionTime = 3.0
    ds.EchoTrainLength = 1
    return ds


def read(path: Path) -> Dataset:
    return pydicom.dcmread(path)
