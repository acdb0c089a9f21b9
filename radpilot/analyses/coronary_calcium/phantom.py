"""A digital thorax phantom with coronary calcium inserts of exactly known size and density.

No patient data with a calcium reference can be brought onto these machines, so the
analysis is validated on this phantom (modelled loosely on the QRM thorax with its
cardiac calcification insert): an elliptical body with two lungs, a vertebral body with
cortex, sternum and ribs (continuous bone, decoys), a descending aorta with wall calcium
alongside the heart and an ascending aorta with wall calcium above it (decoys), and a
heart (non-contrast blood, 40 HU) in a layer of epicardial fat carrying cylindrical
calcium inserts along z in the four artery territories.

Truth is exact.  Each insert is a cylinder along z whose ends fall on slice boundaries
of both 3 mm and 1.5 mm reconstructions; in-plane, a voxel belongs to an insert when its
centre lies inside the disk (no partial-volume blur is simulated: that is a property of
a scanner, not of the scoring method).  So the truth (area in pixels x pixel area,
length, density weight from the insert's nominal HU) is computed from the same grid
the analysis reads, and :func:`analytic_truth` gives the continuous values (pi r^2 L)
for comparison.  Noise is white Gaussian; insert HUs (210, 330, 700) sit inside their
weight bands far enough from the band edges that the peak of a noisy insert stays in
its band at the noise levels used (up to 20 HU).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from radpilot.analyses.coronary_calcium.scoring import REFERENCE_INCREMENT_MM, cac_drs_category, density_weight

AIR_HU, LUNG_HU, FAT_HU, SOFT_HU, MARROW_HU, CORTEX_HU = -1000.0, -850.0, -90.0, 40.0, 250.0, 700.0
ARTERY_LABELS = {"LM": 1, "LAD": 2, "LCX": 3, "RCA": 4}


@dataclass(frozen=True)
class Insert:
    """A calcium insert: a cylinder along z on the heart's surface in one artery territory."""

    artery: str
    angle_deg: float  # around the heart centre: 0 anterior, +90 patient left
    z_offset_mm: float  # start of the cylinder relative to the heart centre (snapped to a 3 mm slice boundary)
    diameter_mm: float
    length_mm: float
    hu: float


DEFAULT_INSERTS: tuple[Insert, ...] = (
    Insert("LM", 75.0, 33.0, 4.0, 6.0, 700.0),
    Insert("LAD", 20.0, 15.0, 5.0, 9.0, 700.0),
    Insert("LAD", 35.0, -6.0, 3.0, 6.0, 330.0),
    Insert("LCX", 120.0, 6.0, 5.0, 6.0, 330.0),
    Insert("LCX", 150.0, -15.0, 3.0, 6.0, 210.0),
    Insert("RCA", -60.0, 12.0, 5.0, 12.0, 210.0),
    Insert("RCA", -100.0, -12.0, 3.0, 9.0, 700.0),
)


@dataclass
class Phantom:
    """The phantom volume in HU (z, y, x), its geometry and its exact truth."""

    voxels: np.ndarray
    spacing_zyx: tuple[float, float, float]
    origin_lps: tuple[float, float, float]
    labels: np.ndarray  # uint8: insert voxels by artery (1 LM, 2 LAD, 3 LCX, 4 RCA)
    decoys: np.ndarray  # bool: aortic wall calcium (bone is continuous and not listed)
    inserts: tuple[Insert, ...]
    insert_voxels: list[int] = field(default_factory=list)  # voxels per insert, in the order of ``inserts``

    @property
    def increment_mm(self) -> float:
        return self.spacing_zyx[0]

    def truth(self) -> dict[str, float]:
        """Exact Agatston (3 mm equivalent), volume (mm³), per-artery Agatston and CAC-DRS of the inserts as rasterised."""
        voxel_mm3 = float(np.prod(self.spacing_zyx))
        out = {"agatston_total": 0.0, "volume_score_mm3": 0.0}
        out.update({f"agatston_{a.lower()}": 0.0 for a in ARTERY_LABELS})
        for insert, n in zip(self.inserts, self.insert_voxels):
            volume = n * voxel_mm3
            agatston = density_weight(insert.hu) * volume / REFERENCE_INCREMENT_MM
            out["agatston_total"] += agatston
            out["volume_score_mm3"] += volume
            out[f"agatston_{insert.artery.lower()}"] += agatston
        out["cac_drs_category"] = float(cac_drs_category(out["agatston_total"]))
        out["vessels_with_calcium"] = float(sum(1 for a in ARTERY_LABELS if out[f"agatston_{a.lower()}"] > 0))
        return out


def analytic_truth(inserts: Sequence[Insert]) -> dict[str, float]:
    """The continuous truth: pi r^2 L per insert, weighted by its nominal HU."""
    volume = sum(math.pi * (i.diameter_mm / 2) ** 2 * i.length_mm for i in inserts)
    agatston = sum(density_weight(i.hu) * math.pi * (i.diameter_mm / 2) ** 2 * i.length_mm / REFERENCE_INCREMENT_MM for i in inserts)
    return {"agatston_total": agatston, "volume_score_mm3": volume}


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def make_phantom(
    *,
    n_slices: int = 40,
    rows: int = 320,
    columns: int = 320,
    pixel_mm: float = 0.9,
    increment_mm: float = 3.0,
    noise_hu: float = 10.0,
    blood_hu: float = SOFT_HU,
    inserts: Sequence[Insert] = DEFAULT_INSERTS,
    seed: int = 0,
) -> Phantom:
    """Render the phantom; the heart centre sits 45 % of the way up the volume."""
    if increment_mm <= 0 or pixel_mm <= 0:
        raise ValueError("increment and pixel size must be positive")
    x = (np.arange(columns) - (columns - 1) / 2.0) * pixel_mm  # LPS x: + is the patient's left
    y = (np.arange(rows) - (rows - 1) / 2.0) * pixel_mm  # LPS y: + is posterior
    xx, yy = np.meshgrid(x, y)
    z_centres = np.arange(n_slices) * increment_mm
    # The heart centre on a 3 mm slice boundary (a multiple of 3 mm plus 1.5 mm), so insert ends are boundaries too.
    heart_z = 3.0 * round((0.45 * n_slices * increment_mm) / 3.0) + 1.5
    hx, hy, ha, hb, hc, fat = 15.0, -25.0, 55.0, 42.0, 50.0, 5.0
    aorta_desc, aorta_asc = (25.0, 45.0, 12.0), (-5.0, -20.0, 14.0)
    voxels = np.empty((n_slices, rows, columns), dtype=np.float32)
    labels = np.zeros((n_slices, rows, columns), dtype=np.uint8)
    decoys = np.zeros((n_slices, rows, columns), dtype=bool)
    insert_voxels = [0] * len(inserts)
    rib_angles = np.radians(np.arange(-150, 181, 30))
    base = np.full((rows, columns), AIR_HU, dtype=np.float32)  # what is the same on every slice
    base[_ellipse(xx, yy, 0.0, 0.0, 150.0, 110.0)] = SOFT_HU
    base[_ellipse(xx, yy, -65.0, 0.0, 50.0, 75.0)] = LUNG_HU
    base[_ellipse(xx, yy, 65.0, 0.0, 50.0, 75.0)] = LUNG_HU
    # Bone: vertebral body (marrow in a cortex), sternum, ribs: continuous in z, drawn last on every slice.
    bone = np.full((rows, columns), np.nan, dtype=np.float32)
    bone[_ellipse(xx, yy, 0.0, 72.0, 18.0, 16.0)] = CORTEX_HU
    bone[_ellipse(xx, yy, 0.0, 72.0, 15.0, 13.0)] = MARROW_HU
    bone[_ellipse(xx, yy, 0.0, -100.0, 14.0, 6.0)] = 500.0
    for angle in rib_angles:
        bone[_ellipse(xx, yy, 138.0 * math.sin(angle), -100.0 * math.cos(angle), 6.0, 6.0)] = CORTEX_HU
    is_bone = ~np.isnan(bone)
    wall_desc = _ellipse(xx, yy, *aorta_desc[:2], 12.5, 12.5) & ~_ellipse(xx, yy, *aorta_desc[:2], 10.5, 10.5)
    for k, z in enumerate(z_centres):
        image = base.copy()
        dz = (z - heart_z) / hc
        if abs(dz) < 1.0:
            s = math.sqrt(1.0 - dz * dz)
            image[_ellipse(xx, yy, hx, hy, ha * s + fat, hb * s + fat)] = FAT_HU
            image[_ellipse(xx, yy, hx, hy, ha * s, hb * s)] = blood_hu
        for cx, cy, r in (aorta_desc,) + ((aorta_asc,) if z >= heart_z + 30.0 else ()):
            image[_ellipse(xx, yy, cx, cy, r, r)] = blood_hu
        # Aortic wall calcium (decoys): the descending aorta over 9 mm at the heart's level (its anterior wall
        # faces the heart), the ascending aorta over 9 mm above the heart.
        if heart_z - 4.5 <= z < heart_z + 4.5:
            arc = wall_desc & ((yy < aorta_desc[1] - 6.0) | (xx > aorta_desc[0] + 6.0))
            image[arc] = CORTEX_HU
            decoys[k] |= arc
        if heart_z + 60.0 <= z < heart_z + 69.0:
            cx, cy, r = aorta_asc
            wall = _ellipse(xx, yy, cx, cy, r + 0.5, r + 0.5) & ~_ellipse(xx, yy, cx, cy, r - 1.5, r - 1.5) & (xx < cx)
            image[wall] = 600.0
            decoys[k] |= wall
        image[is_bone] = bone[is_bone]
        # Calcium inserts on the heart's surface, in the fat layer.
        for n, insert in enumerate(inserts):
            z0 = heart_z + insert.z_offset_mm
            if not (z0 <= z < z0 + insert.length_mm):
                continue
            dz_i = (z0 + insert.length_mm / 2.0 - heart_z) / hc
            s = math.sqrt(max(0.0, 1.0 - dz_i * dz_i))
            phi = math.radians(insert.angle_deg)
            dx, dy = math.sin(phi), -math.cos(phi)
            t = 1.0 / math.sqrt((dx / (ha * s)) ** 2 + (dy / (hb * s)) ** 2)
            cx, cy = hx + (t + 2.5) * dx, hy + (t + 2.5) * dy
            disk = _ellipse(xx, yy, cx, cy, insert.diameter_mm / 2.0, insert.diameter_mm / 2.0)
            image[disk] = insert.hu
            labels[k][disk] = ARTERY_LABELS[insert.artery]
            insert_voxels[n] += int(disk.sum())
        voxels[k] = image
    if noise_hu > 0:
        voxels += np.random.default_rng(seed).normal(0.0, noise_hu, size=voxels.shape).astype(np.float32)
    origin = (float(x[0]), float(y[0]), 0.0)
    return Phantom(voxels, (increment_mm, pixel_mm, pixel_mm), origin, labels, decoys, tuple(inserts), insert_voxels)


def phantom_datasets(
    phantom: Phantom,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str = "CACPHANTOM",
    contrast_agent: str | None = None,
    slice_thickness_mm: float | None = None,
    series_description: str = "CALCIUM SCORE PHANTOM",
) -> list[Dataset]:
    """The phantom as a CT Image Storage series (int16, rescale intercept -1024), one dataset per slice."""
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    pixels = np.clip(np.rint(phantom.voxels + 1024.0), -32768, 32767).astype(np.int16)
    n, rows, columns = pixels.shape
    datasets = []
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = patient_id, "PHANTOM^CALCIUM", "19600101", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "090000", "CAC1", "1"
        ds.ReferringPhysicianName, ds.StudyDescription = "", "CT CALCIUM SCORE"
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription, ds.BodyPartExamined = "CT", 1, series_description, "CHEST"
        ds.Manufacturer = "RadPilot digital phantom"
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientPosition = "FFS"
        if contrast_agent:
            ds.ContrastBolusAgent = contrast_agent
        ds.ImagePositionPatient = [phantom.origin_lps[0], phantom.origin_lps[1], phantom.origin_lps[2] + k * phantom.increment_mm]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [phantom.spacing_zyx[1], phantom.spacing_zyx[2]]
        ds.SliceThickness = slice_thickness_mm if slice_thickness_mm is not None else phantom.increment_mm
        ds.KVP = 120
        ds.ConvolutionKernel = "B35f"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = pixels[k].tobytes()
        datasets.append(ds)
    return datasets


# ----------------------------------------------------------------------------------------- validation set
#: Insert sets chosen so that every CAC-DRS category occurs.
INSERT_SETS: dict[str, tuple[Insert, ...]] = {
    "A0": (),
    "A1": tuple(i for i in DEFAULT_INSERTS if i.artery == "LCX" and i.hu == 210.0),  # one small low-density plaque
    "A2": tuple(i for i in DEFAULT_INSERTS if i.artery in ("LAD", "RCA") and i.diameter_mm == 3.0),
    "A3": DEFAULT_INSERTS,
}
TRUTH_FIELDS = (
    "agatston_total",
    "volume_score_mm3",
    "agatston_lm",
    "agatston_lad",
    "agatston_lcx",
    "agatston_rca",
    "cac_drs_category",
    "vessels_with_calcium",
)
#: The ``dicom-series`` layout options of a folder written by :func:`write_validation_set`.
MANIFEST_OPTIONS: dict[str, object] = {
    "cases_file": "cases.csv",
    "case_id_column": "case_id",
    "series_dir": "{case}/dicom",
    "mask_file": "{case}/calcium_mask.nii.gz",
    "mask_labels": {1: "coronary_calcium"},
    "reference_values": {name: name for name in TRUTH_FIELDS},
    "attributes": {"increment_mm": "increment_mm", "noise_hu": "noise_hu"},
}


def write_nifti_mask(path: Path, phantom: Phantom) -> None:
    """The insert voxels (1) as NIfTI: index (i, j, k) = column, row, slice, RAS affine from the phantom's LPS grid."""
    sz, sy, sx = phantom.spacing_zyx
    affine_lps = np.diag([sx, sy, sz, 1.0])
    affine_lps[:3, 3] = phantom.origin_lps
    affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    array = np.ascontiguousarray((phantom.labels > 0).astype(np.uint8).transpose(2, 1, 0))
    image = nibabel.Nifti1Image(array, affine_ras)
    image.set_qform(affine_ras, code=1)
    image.set_sform(affine_ras, code=1)
    nibabel.save(image, str(path))


def write_validation_set(
    out: Path,
    *,
    rows: int = 320,
    pixel_mm: float = 0.9,
    coverage_mm: float = 120.0,
    increments_mm: Sequence[float] = (3.0, 1.5),
    noises_hu: Sequence[float] = (10.0, 20.0),
    categories: Sequence[str] = tuple(INSERT_SETS),
) -> list[dict[str, object]]:
    """Write one phantom case per (increment, noise, CAC-DRS insert set) in the ``dicom-series`` layout; returns the truth rows."""
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, object]] = []
    seed = 0
    for increment in increments_mm:
        for noise in noises_hu:
            for category in categories:
                seed += 1
                case = f"CAC-{increment:g}mm-n{noise:.0f}-{category}".replace(".", "p")
                phantom = make_phantom(
                    n_slices=int(round(coverage_mm / increment)),
                    rows=rows,
                    columns=rows,
                    pixel_mm=pixel_mm,
                    increment_mm=increment,
                    noise_hu=noise,
                    inserts=INSERT_SETS[category],
                    seed=seed,
                )
                folder = out / case / "dicom"
                folder.mkdir(parents=True, exist_ok=True)
                for k, ds in enumerate(phantom_datasets(phantom, patient_id=case)):
                    ds.save_as(folder / f"CT{k + 1:04d}.dcm", enforce_file_format=True)
                write_nifti_mask(out / case / "calcium_mask.nii.gz", phantom)
                truth = phantom.truth()
                records.append(
                    {"case_id": case, "increment_mm": increment, "noise_hu": noise} | {f: round(truth[f], 3) for f in TRUTH_FIELDS}
                )
    with open(out / "cases.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return records
