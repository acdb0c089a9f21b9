"""Data factories for tests: small, valid DICOM instances built with pydicom."""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1234.1"


def make_ct_dataset(
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    patient_id: str = "PAT001",
    patient_name: str = "DOE^JANE",
    study_date: str = "20240102",
    study_time: str = "101500",
    accession: str = "ACC001",
    modality: str = "CT",
    series_number: int = 1,
    instance_number: int = 1,
    series_description: str = "CHEST",
    rows: int = 32,
    columns: int = 32,
    seed: int = 0,
    z: float = 0.0,
) -> Dataset:
    """A complete, valid CT Image Storage instance with random int16 pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = IMPLEMENTATION_UID
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[ds.StudyInstanceUID])
    ds.PatientID = patient_id
    if not patient_name.isascii():
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.AccessionNumber = accession
    ds.StudyID = "1"
    ds.StudyDescription = "CT CHEST"
    ds.ReferringPhysicianName = "WHO^DR"
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.BodyPartExamined = "CHEST"
    ds.InstanceNumber = instance_number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    rng = np.random.default_rng(seed)
    ds.PixelData = rng.integers(0, 2000, size=(rows, columns), dtype=np.int16).tobytes()
    return ds


def make_ct_series(count: int, **kwargs) -> list[Dataset]:
    """``count`` slices of one series (same study and series UIDs)."""
    study_uid = kwargs.pop("study_uid", None) or generate_uid()
    series_uid = kwargs.pop("series_uid", None) or generate_uid()
    return [
        make_ct_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=i + 1, z=float(i), seed=i, **kwargs)
        for i in range(count)
    ]


def to_part10_bytes(ds: Dataset) -> bytes:
    """Encode a dataset as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def as_implicit_vr(data: bytes) -> bytes:
    """The same Part 10 instance written with implicit VR little endian, as many modalities send it."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


def write_part10(datasets: Iterable[Dataset], folder) -> list:  # noqa: ANN001 - Path-like
    """Write datasets as ``<folder>/<n>.dcm`` files and return the paths."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, ds in enumerate(datasets):
        path = folder / f"{index:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def read_part10(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))
