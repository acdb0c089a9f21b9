#!/usr/bin/env python3
"""Write a small synthetic chest CT study (a phantom with exact truth) as DICOM files.

The phantom: air (-1000 HU) around a body ellipse (40 HU) that holds two lungs
(-850 HU, ellipsoids). Every slice is a valid CT Image Storage instance in Explicit
VR Little Endian with the type 1 and 2 attributes of its IOD, so it passes
``dciodvfy -new``. UIDs are derived from ``--seed``, so the same seed gives the same
study. Only DICOM files are written into the output folder (storescu +sd stops at
the first non-DICOM file), one per slice: ``CT000001.dcm`` ...

Usage: make_sample_study.py OUT_DIR [--slices 40] [--size 128] [--seed radpilot-sample]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

AIR_HU = -1000
BODY_HU = 40
LUNG_HU = -850
RESCALE_INTERCEPT = -1024
PIXEL_SPACING_MM = 2.5
SLICE_THICKNESS_MM = 5.0
STUDY_DATE = dt.date(2024, 1, 15)


@dataclass(frozen=True)
class StudySpec:
    """What to generate."""

    slices: int = 40  # 200 mm at 5 mm: enough coverage for lung_ct_quant
    size: int = 128
    seed: str = "radpilot-sample"
    patient_name: str = "Phantom^Lung"
    patient_id: str = "RP-PHANTOM-001"
    accession: str = "RPACC0001"


def _uid(spec: StudySpec, *parts: object) -> str:
    """A deterministic UID for ``parts`` under this spec's seed."""
    return generate_uid(entropy_srcs=[spec.seed, *(str(p) for p in parts)])


def phantom_hu(spec: StudySpec) -> np.ndarray:
    """The phantom in HU, shape (slices, rows, columns), int16."""
    n, size = spec.slices, spec.size
    z, y, x = np.meshgrid(np.linspace(-1.0, 1.0, n), np.linspace(-1.0, 1.0, size), np.linspace(-1.0, 1.0, size), indexing="ij")
    volume = np.full((n, size, size), AIR_HU, dtype=np.int16)
    body = (x / 0.85) ** 2 + (y / 0.62) ** 2 <= 1.0
    volume[body] = BODY_HU
    for centre_x in (-0.4, 0.4):
        lung = ((x - centre_x) / 0.3) ** 2 + ((y + 0.05) / 0.42) ** 2 + (z / 0.9) ** 2 <= 1.0
        volume[lung & body] = LUNG_HU
    return volume


def _study_level(spec: StudySpec) -> Dataset:
    """Patient, study, series, frame of reference and equipment attributes shared by all slices."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = _uid(spec, "study")
    ds.StudyDate = STUDY_DATE.strftime("%Y%m%d")
    ds.StudyTime = "101500"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = spec.accession
    ds.StudyDescription = "CT CHEST (synthetic phantom)"
    ds.Modality = "CT"
    ds.SeriesInstanceUID = _uid(spec, "series")
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Phantom 5mm"
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = ds.StudyTime
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = _uid(spec, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "RadPilot"
    ds.ManufacturerModelName = "make_sample_study"
    ds.InstitutionName = "RadPilot synthetic data"
    ds.KVP = "120"
    ds.AcquisitionNumber = 1
    ds.ConvolutionKernel = "STANDARD"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    return ds


def _image_pixel(ds: Dataset, hu_slice: np.ndarray) -> None:
    """Image Pixel and CT Image pixel attributes; stores HU - intercept as signed 16 bit."""
    stored = (hu_slice.astype(np.int32) - RESCALE_INTERCEPT).astype(np.int16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = str(RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    ds.PixelData = stored.tobytes()


def make_slice(spec: StudySpec, study: Dataset, index: int, hu_slice: np.ndarray) -> Dataset:
    """One CT Image Storage instance for slice ``index`` (0 at z = 0 mm, each next one 5 mm inferior)."""
    ds = Dataset()
    ds.update(study)
    ds.SOPInstanceUID = _uid(spec, "instance", index)
    ds.InstanceNumber = index + 1
    ds.ContentDate = study.StudyDate
    ds.ContentTime = study.StudyTime
    ds.AcquisitionDate = study.StudyDate
    ds.AcquisitionTime = study.StudyTime
    ds.InstanceCreationDate = study.StudyDate
    ds.InstanceCreationTime = study.StudyTime
    half_width = (spec.size - 1) * PIXEL_SPACING_MM / 2.0
    z_mm = -index * SLICE_THICKNESS_MM
    ds.ImagePositionPatient = [f"{-half_width:.2f}", f"{-half_width:.2f}", f"{z_mm:.2f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = [str(PIXEL_SPACING_MM), str(PIXEL_SPACING_MM)]
    ds.SliceThickness = str(SLICE_THICKNESS_MM)
    ds.SpacingBetweenSlices = str(SLICE_THICKNESS_MM)
    ds.SliceLocation = f"{z_mm:.2f}"
    _image_pixel(ds, hu_slice)
    ds.file_meta = _file_meta(ds)
    return ds


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def write_study(out_dir: Path, spec: StudySpec = StudySpec()) -> list[Path]:
    """Write the study into ``out_dir`` (created if needed); return the file paths, in slice order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    volume = phantom_hu(spec)
    study = _study_level(spec)
    paths = []
    for index in range(spec.slices):
        ds = make_slice(spec, study, index, volume[index])
        path = out_dir / f"CT{index + 1:06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("out_dir", type=Path, help="folder to write the DICOM files into")
    parser.add_argument("--slices", type=int, default=StudySpec.slices)
    parser.add_argument("--size", type=int, default=StudySpec.size, help="rows = columns")
    parser.add_argument("--seed", default=StudySpec.seed, help="UIDs derive from it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    spec = StudySpec(slices=args.slices, size=args.size, seed=args.seed)
    paths = write_study(args.out_dir, spec)
    print(f"wrote {len(paths)} CT slices ({spec.size}x{spec.size}) to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
