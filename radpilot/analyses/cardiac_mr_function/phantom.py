"""A synthetic beating heart as a short-axis cine, with exactly known volumes, and the DICOM writer for cines.

The phantom (:func:`make_phantom`) is a thorax cross-section (body ellipse, two lungs, a liver
dome, spine) seen in an oblique short-axis plane, with a left ventricle made of a
half-ellipsoid cavity (bright blood) inside a myocardial shell (dark) whose thickness grows as
the cavity shrinks (constant myocardial volume, as in life), and a crescent right ventricle
wrapped around the septum on the image left. Over ``phases`` phases the cavities contract
with ``f(t) = sin^2(pi t / T)``: end-diastole at phase 0, end-systole at phase ``T / 2``.

Truth is exact for the image written: the labels are rasterised on the DICOM grid from the
same geometry that drew the image (pixel-centre inside the shape), so
``truth.lv_edv_ml`` etc. are the voxel counts x voxel volume of those labels; the continuous
(analytic) volumes are given too, for reference.

:func:`cine_datasets` writes any (phases, slices, rows, columns) array as an MR Image Storage
cine, one single-frame instance per slice and phase, in the attributes scanners write
(TriggerTime, CardiacNumberOfImages, InstanceNumber, ImagePositionPatient/ImageOrientationPatient,
HeartRate, PatientSize, PatientWeight). It serves the phantom and the ACDC volumes written as DICOM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from radpilot.analyses.cardiac_mr_function.function import MYOCARDIAL_DENSITY_G_PER_ML

#: A short-axis plane: the slice normal runs base -> apex (patient left, anterior, inferior), as planned on a scanner.
SAX_NORMAL_LPS = (0.58, -0.50, -0.64)


def sax_orientation(normal: tuple[float, float, float] = SAX_NORMAL_LPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row direction, column direction, normal) of a short-axis plane with ``normal``, row direction near the patient's left."""
    n = np.asarray(normal, dtype=np.float64)
    n /= np.linalg.norm(n)
    up = np.array([0.0, 0.0, 1.0])
    row = np.cross(up, n)
    if np.linalg.norm(row) < 1e-6:  # an axial plane: rows run to the patient's left
        row = np.array([1.0, 0.0, 0.0])
    row /= np.linalg.norm(row)
    if row[0] < 0:
        row = -row
    col = np.cross(n, row)
    return row, col, n


@dataclass(frozen=True)
class PhantomTruth:
    lv_ml: np.ndarray  # rasterised, per phase
    rv_ml: np.ndarray
    myo_ml: np.ndarray
    ed_phase: int
    es_phase: int
    lv_edv_ml: float
    lv_esv_ml: float
    lv_ef_percent: float
    lv_mass_g: float
    rv_edv_ml: float
    rv_esv_ml: float
    rv_ef_percent: float
    analytic_lv_edv_ml: float
    analytic_lv_esv_ml: float


@dataclass(frozen=True)
class Phantom:
    images: np.ndarray  # (phases, slices, rows, cols) float32, arbitrary MR units (0..~1000)
    labels: np.ndarray  # (phases, slices, rows, cols) uint8: 1 RV, 2 myocardium, 3 LV cavity
    pixel_mm: float
    slice_spacing_mm: float
    slice_thickness_mm: float
    trigger_times_ms: tuple[float, ...]
    heart_rate_bpm: float
    truth: PhantomTruth


def _half_ellipsoid(u: np.ndarray, v: np.ndarray, w: float, a: float, c: float) -> np.ndarray:
    """Inside the half-ellipsoid of in-plane radius ``a`` and depth ``c`` below the base plane (w in [0, c])."""
    if w < 0 or w > c:
        return np.zeros(u.shape, dtype=bool)
    r2 = a * a * (1.0 - (w / c) ** 2)
    return u * u + v * v <= r2


def _myo_thickness(a: float, c: float, myo_ml: float) -> float:
    """Wall thickness T with half-ellipsoid(a+T, c+T) - half-ellipsoid(a, c) = myo_ml (bisection)."""
    cavity = 2.0 / 3.0 * math.pi * a * a * c / 1000.0
    lo, hi = 0.0, 40.0
    for _ in range(60):
        mid = (lo + hi) / 2
        shell = 2.0 / 3.0 * math.pi * (a + mid) ** 2 * (c + mid) / 1000.0 - cavity
        lo, hi = (mid, hi) if shell < myo_ml else (lo, mid)
    return (lo + hi) / 2


def make_phantom(
    *,
    phases: int = 25,
    slices: int = 10,
    rows: int = 224,
    columns: int = 256,
    pixel_mm: float = 1.5,
    slice_spacing_mm: float = 10.0,
    slice_thickness_mm: float = 8.0,
    lv_radius_ed_mm: float = 26.0,
    lv_depth_ed_mm: float = 80.0,
    lv_radius_es_mm: float = 18.0,
    lv_depth_es_mm: float = 70.0,
    myo_ml: float = 110.0,
    rv_scale_es: float = 0.8,
    heart_rate_bpm: float = 70.0,
    noise: float = 15.0,
    seed: int = 0,
) -> Phantom:
    """The beating-heart phantom; the defaults give an LV EF of about 55 % and an RV EF of about 45 %."""
    rng = np.random.default_rng(seed)
    rr, cc = np.meshgrid(np.arange(rows, dtype=np.float64) * pixel_mm, np.arange(columns, dtype=np.float64) * pixel_mm, indexing="ij")
    # The heart sits off-centre (patient's left of the thorax, as in life), so the analysis has to find it.
    lv_centre = (rows * pixel_mm * 0.46, columns * pixel_mm * 0.58)
    u, v = rr - lv_centre[0], cc - lv_centre[1]
    body = ((rr - rows * pixel_mm / 2) / (rows * pixel_mm * 0.46)) ** 2 + (
        (cc - columns * pixel_mm / 2) / (columns * pixel_mm * 0.47)
    ) ** 2 <= 1
    lung_r = ((rr - rows * pixel_mm * 0.45) / 55.0) ** 2 + ((cc - columns * pixel_mm * 0.25) / 40.0) ** 2 <= 1
    lung_l = ((rr - rows * pixel_mm * 0.40) / 45.0) ** 2 + ((cc - columns * pixel_mm * 0.83) / 28.0) ** 2 <= 1
    spine = ((rr - rows * pixel_mm * 0.85) / 14.0) ** 2 + ((cc - columns * pixel_mm * 0.50) / 14.0) ** 2 <= 1
    mediastinum = (u / 75.0) ** 2 + ((v + 10.0) / 85.0) ** 2 <= 1

    times = np.arange(phases) / phases
    f = np.sin(math.pi * times) ** 2
    images = np.zeros((phases, slices, rows, columns), dtype=np.float32)
    labels = np.zeros((phases, slices, rows, columns), dtype=np.uint8)
    analytic_lv = np.zeros(phases)
    for p in range(phases):
        a = lv_radius_ed_mm + (lv_radius_es_mm - lv_radius_ed_mm) * f[p]
        c = lv_depth_ed_mm + (lv_depth_es_mm - lv_depth_ed_mm) * f[p]
        analytic_lv[p] = 2.0 / 3.0 * math.pi * a * a * c / 1000.0
        t = _myo_thickness(a, c, myo_ml)
        rv_s = 1.0 + (rv_scale_es - 1.0) * f[p]
        for z in range(slices):
            # Slice z lies (z + 0.5) spacings below the base plane (the basal slice just inside the base).
            w = (z + 0.25) * slice_spacing_mm
            cavity = _half_ellipsoid(u, v, w, a, c)
            outer = _half_ellipsoid(u, v, w, a + t, c + t)
            # RV: a crescent on the image left of the septum, shorter than the LV, shrinking in systole.
            rv_depth = 0.75 * (c + t)
            rv_outer = np.zeros_like(cavity)
            rv_wall = np.zeros_like(cavity)
            if w <= rv_depth:
                k = math.sqrt(max(0.0, 1.0 - (w / rv_depth) ** 2))
                ru, rv_ = (a + t + 6.0) * 1.05 * rv_s * k, (a + t + 22.0) * rv_s * k
                du, dv = u + 0.15 * (a + t), v + 0.55 * (a + t)
                rv_outer = (du / max(ru, 1e-6)) ** 2 + (dv / max(rv_, 1e-6)) ** 2 <= 1
                rv_wall = (du / (ru + 3.0)) ** 2 + (dv / (rv_ + 3.0)) ** 2 <= 1  # the thin RV free wall
            septum_side = v < 0.2 * (a + t)
            rv = rv_outer & ~_half_ellipsoid(u, v, w, a + t + 2.5, c + t + 2.5) & septum_side
            heart = outer | (rv_wall & septum_side)
            rim = ndimage_dilate(heart, max(1, int(round(4.0 / pixel_mm))))
            img = np.full((rows, columns), 0.0, dtype=np.float32)
            img[body] = 380.0  # chest wall muscle / soft tissue
            img[mediastinum] = 220.0
            img[lung_r | lung_l] = 40.0
            img[spine] = 250.0
            img[rim & ~heart] = 700.0  # epicardial fat
            img[heart] = 300.0  # myocardium (LV wall, septum, RV free wall)
            img[rv] = 930.0  # blood (bright in SSFP)
            img[cavity] = 950.0
            img = ndimage_blur(img, 0.6)
            images[p, z] = img + rng.normal(0.0, noise, img.shape).astype(np.float32)
            lab = np.zeros((rows, columns), dtype=np.uint8)
            lab[rv] = 1
            lab[outer & ~cavity] = 2
            lab[cavity] = 3
            labels[p, z] = lab
    images = np.clip(images, 0.0, None)
    ml = pixel_mm * pixel_mm * slice_spacing_mm / 1000.0
    lv = (labels == 3).sum(axis=(1, 2, 3)) * ml
    rv = (labels == 1).sum(axis=(1, 2, 3)) * ml
    myo = (labels == 2).sum(axis=(1, 2, 3)) * ml
    ed, es = int(np.argmax(lv)), int(np.argmin(lv))
    truth = PhantomTruth(
        lv_ml=lv,
        rv_ml=rv,
        myo_ml=myo,
        ed_phase=ed,
        es_phase=es,
        lv_edv_ml=float(lv[ed]),
        lv_esv_ml=float(lv[es]),
        lv_ef_percent=float(100 * (lv[ed] - lv[es]) / lv[ed]),
        lv_mass_g=float(myo[ed] * MYOCARDIAL_DENSITY_G_PER_ML),
        rv_edv_ml=float(rv[ed]),
        rv_esv_ml=float(rv[es]),
        rv_ef_percent=float(100 * (rv[ed] - rv[es]) / rv[ed]),
        analytic_lv_edv_ml=float(analytic_lv[0]),
        analytic_lv_esv_ml=float(analytic_lv.min()),
    )
    rr_ms = 60000.0 / heart_rate_bpm
    return Phantom(
        images, labels, pixel_mm, slice_spacing_mm, slice_thickness_mm, tuple(float(rr_ms * x) for x in times), heart_rate_bpm, truth
    )


def ndimage_dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    from scipy import ndimage  # noqa: PLC0415 - scipy is needed only to draw phantoms

    return ndimage.binary_dilation(mask, iterations=iterations)


def ndimage_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """A light Gaussian blur (the scanner's point spread), so edges are not perfectly sharp."""
    from scipy import ndimage  # noqa: PLC0415 - scipy is needed only to draw phantoms

    return ndimage.gaussian_filter(image, sigma).astype(np.float32)


def cine_datasets(
    images: np.ndarray,
    *,
    pixel_mm: float | tuple[float, float],
    slice_spacing_mm: float,
    slice_thickness_mm: float,
    trigger_times_ms: tuple[float, ...] | None = None,
    heart_rate_bpm: float | None = None,
    patient_height_m: float | None = None,
    patient_weight_kg: float | None = None,
    normal_lps: tuple[float, float, float] = SAX_NORMAL_LPS,
    origin_lps: tuple[float, float, float] = (-80.0, -120.0, 60.0),
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str = "CMRPHANTOM",
    series_description: str = "SA CINE",
    scale: float = 1.0,
    series_per_slice: bool = False,
) -> list[Dataset]:
    """(phases, slices, rows, cols) -> MR Image Storage instances, one per slice and phase, unsigned 16-bit ``round(x * scale)``.

    ``series_per_slice``: each slice position its own series (numbered 5, 6, ...; instances 1..phases), as some
    scanners write a cine acquired one breath-hold per slice.
    """
    n_phases, n_slices, rows, columns = images.shape
    spacing = (float(pixel_mm), float(pixel_mm)) if isinstance(pixel_mm, (int, float)) else (float(pixel_mm[0]), float(pixel_mm[1]))
    row_dir, col_dir, normal = sax_orientation(normal_lps)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    slice_series_uids = [generate_uid() for _ in range(n_slices)] if series_per_slice else [series_uid] * n_slices
    frame_uid = generate_uid()
    pixels = np.clip(np.rint(images * scale), 0, 65535).astype(np.uint16)
    rr = 60000.0 / heart_rate_bpm if heart_rate_bpm else 1000.0
    triggers = trigger_times_ms or tuple(rr * p / n_phases for p in range(n_phases))
    out = []
    for z in range(n_slices):
        position = np.asarray(origin_lps) + normal * z * slice_spacing_mm
        for p in range(n_phases):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID = MRImageStorage
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, slice_series_uids[z], frame_uid
            ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = patient_id, "PHANTOM^CINE", "19700101", "O"
            if patient_height_m:
                ds.PatientSize = f"{patient_height_m:.2f}"
            if patient_weight_kg:
                ds.PatientWeight = f"{patient_weight_kg:.1f}"
            ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "100000", "CMR1", "1"
            ds.ReferringPhysicianName, ds.StudyDescription = "", "CARDIAC MR"
            ds.Modality, ds.SeriesDescription, ds.BodyPartExamined = "MR", series_description, "HEART"
            ds.SeriesNumber = 5 + z if series_per_slice else 5
            ds.Manufacturer = "RadPilot digital phantom"
            ds.InstanceNumber = p + 1 if series_per_slice else z * n_phases + p + 1
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
            ds.PatientPosition = "HFS"
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SS", "CG", "2D"
            ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength, ds.MagneticFieldStrength = 3.0, 1.5, 1, 1.5
            ds.ImagedNucleus, ds.FlipAngle = "1H", 60
            ds.TriggerTime = round(float(triggers[p]), 2)
            ds.CardiacNumberOfImages = n_phases
            if heart_rate_bpm:
                ds.HeartRate = int(round(heart_rate_bpm))
            ds.ImagePositionPatient = [round(float(x), 4) for x in position]
            ds.ImageOrientationPatient = [round(float(x), 6) for x in (*row_dir, *col_dir)]
            ds.PixelSpacing = list(spacing)
            ds.SliceThickness = slice_thickness_mm
            ds.SpacingBetweenSlices = slice_spacing_mm
            ds.SliceLocation = round(float(z * slice_spacing_mm), 3)
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows, ds.Columns = rows, columns
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.PixelData = pixels[p, z].tobytes()
            out.append(ds)
    return out


def phantom_datasets(phantom: Phantom, **kwargs: object) -> list[Dataset]:
    """The phantom as an MR cine series (see :func:`cine_datasets`)."""
    return cine_datasets(
        phantom.images,
        pixel_mm=phantom.pixel_mm,
        slice_spacing_mm=phantom.slice_spacing_mm,
        slice_thickness_mm=phantom.slice_thickness_mm,
        trigger_times_ms=phantom.trigger_times_ms,
        heart_rate_bpm=phantom.heart_rate_bpm,
        **kwargs,  # type: ignore[arg-type]
    )
