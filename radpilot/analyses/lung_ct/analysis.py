"""``lung_ct_quant``: lung segmentation, lung volumes and emphysema indices on chest CT.

Outputs
-------
* Segmentation: segment 1 "Right lung" (SCT 3341006) and segment 2 "Left lung"
  (SCT 44029006), category "Anatomical Structure" (SCT 123037004).  The
  patient's right lung has the lower LPS x.
* Measurements, for each lung (finding site right or left lung) and for both
  lungs together (finding site SCT 74101002 "Both lungs"):

  - volume: SCT 118565006 "Volume", unit UCUM ``mL``;
  - LAA-950: the percentage of lung voxels below -950 HU, unit UCUM ``%``.
    SNOMED CT, LOINC and DICOM have no concept for it, so it carries the
    private code ``(LAA950, 99RADPILOT, "Lung low attenuation area below -950 HU")``;
  - Perc15: the 15th percentile of lung attenuation, unit UCUM ``[hnsf'U]``,
    private code ``(PERC15, 99RADPILOT, "15th percentile of lung attenuation")``;
  - mean lung attenuation: DCM 112031 "Attenuation Coefficient" with derivation
    SCT 373098007 "Mean", unit ``[hnsf'U]``.

* Notes: the reconstruction kernel and the caveat that LAA-950 and Perc15 must
  not be compared across kernels.  Other notes appear when something is unusual
  (only one lung found, lungs separated by the midline fallback).
* Key slice: the slice with the largest lung area.

The segmentation method is described in :mod:`radpilot.analyses.lung_ct.segmentation`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np

from radpilot.analyses.lung_ct.quantification import LungDensityStats, kernel_note, lung_density_stats
from radpilot.analyses.lung_ct.segmentation import (
    DEFAULT_PARAMS,
    LEFT_LUNG_LABEL,
    RIGHT_LUNG_LABEL,
    SegmentationParams,
    segment_lungs,
    segment_lungs_slice,
)
from radpilot.contract import (
    Analysis,
    Code,
    Findings,
    InputRequirements,
    Measurement,
    NotApplicableError,
    OutputSpec,
    Segment,
    Segmentation,
    StructureSpec,
)
from radpilot.dicom.volume import Volume

logger = logging.getLogger(__name__)

ANATOMICAL_STRUCTURE = Code("123037004", "SCT", "Anatomical Structure")
RIGHT_LUNG = Code("3341006", "SCT", "Right lung")
LEFT_LUNG = Code("44029006", "SCT", "Left lung")
BOTH_LUNGS = Code("74101002", "SCT", "Both lungs")
VOLUME = Code("118565006", "SCT", "Volume")
LAA950 = Code("LAA950", "99RADPILOT", "Lung low attenuation area below -950 HU")
PERC15 = Code("PERC15", "99RADPILOT", "15th percentile of lung attenuation")
ATTENUATION = Code("112031", "DCM", "Attenuation Coefficient")
MEAN = Code("373098007", "SCT", "Mean")
UNIT_ML = Code("mL", "UCUM", "milliliter")
UNIT_PERCENT = Code("%", "UCUM", "percent")
UNIT_HU = Code("[hnsf'U]", "UCUM", "Hounsfield unit")

MIN_SLICES = 20
MIN_COVERAGE_MM = 150.0
MIN_FIELD_OF_VIEW_MM = 200.0
MAX_TILT_DEG = 10.0
LUNG_CODES = (RIGHT_LUNG.value, LEFT_LUNG.value, "39607008")  # right, left, lung structure (both as one label)
ASSUMED_SLICE_SPACING_MM = (0.7, 0.7)  # the size rules of the 2-D core when a reference set gives no spacing


class LungCTQuant(Analysis):
    """Lung segmentation (right/left), lung volumes, LAA-950, Perc15 and mean attenuation on chest CT.

    Parameters
    ----------
    params
        Segmentation parameters (defaults validated on real CT; see the benchmark).
    """

    name = "lung_ct_quant"
    version = "1.0.0"
    description = (
        "Segments the right and left lung on an axial chest CT with a classical threshold method and reports "
        "lung volumes, LAA-950, Perc15 and mean lung attenuation per lung."
    )
    required_models = ()
    inputs = InputRequirements(
        ("CT",),
        f"axial chest CT in HU: at least {MIN_SLICES} slices covering at least {MIN_COVERAGE_MM:.0f} mm, "
        f"field of view at least {MIN_FIELD_OF_VIEW_MM:.0f} mm, tilt at most {MAX_TILT_DEG:.0f} degrees",
    )
    outputs = (
        OutputSpec.of("total_lung_volume_ml", "Total lung volume", "mL", VOLUME, BOTH_LUNGS, key=True, relative=True),
        OutputSpec.of("right_lung_volume_ml", "Right lung volume", "mL", VOLUME, RIGHT_LUNG, relative=True),
        OutputSpec.of("left_lung_volume_ml", "Left lung volume", "mL", VOLUME, LEFT_LUNG, relative=True),
        OutputSpec.of("laa950_percent", "LAA-950 (both lungs)", "%", LAA950, BOTH_LUNGS, key=True),
        OutputSpec.of("right_laa950_percent", "LAA-950 (right lung)", "%", LAA950, RIGHT_LUNG),
        OutputSpec.of("left_laa950_percent", "LAA-950 (left lung)", "%", LAA950, LEFT_LUNG),
        OutputSpec.of("perc15_hu", "Perc15 (both lungs)", "HU", PERC15, BOTH_LUNGS),
        OutputSpec.of("mean_lung_hu", "Mean lung attenuation (both lungs)", "HU", ATTENUATION, BOTH_LUNGS),
    )
    structures = (
        StructureSpec("right_lung", (RIGHT_LUNG.value,)),
        StructureSpec("left_lung", (LEFT_LUNG.value,)),
        StructureSpec("lungs", LUNG_CODES),
        StructureSpec("both_lungs", LUNG_CODES, parts=("right_lung", "left_lung"), surface=False),
    )
    display_windows = {"CT": (-600.0, 1500.0)}  # the lung window
    slice_entry_description = (
        "radpilot.analyses.lung_ct.segment_lungs_slice - the 2-D core of LungCTQuant with the analysis' own "
        "SegmentationParams, adaptive thresholds estimated per slice; LungCTQuant.check_input/run are NOT used: they "
        "need a 3-D chest CT, and the 3-D steps (3-D connected components, right/left split) are not checked on single slices"
    )

    def __init__(self, params: SegmentationParams = DEFAULT_PARAMS) -> None:
        if not isinstance(params, SegmentationParams):
            raise TypeError(f"params must be SegmentationParams, got {type(params).__name__}")
        self.params = params

    # ------------------------------------------------------------------ input
    def check_input(self, volume: Volume) -> None:
        """Raise :class:`NotApplicableError` unless ``volume`` is an axial CT volume that covers the chest."""
        if not isinstance(volume, Volume):
            raise TypeError(f"volume must be a Volume, got {type(volume).__name__}")
        modality = volume.modality.upper()
        if modality != "CT":
            raise NotApplicableError(f"series modality is {volume.modality or 'not recorded'}; {self.name} analyses CT only")
        n_slices = volume.num_slices
        coverage = volume.extent_mm[0]
        if n_slices < MIN_SLICES or coverage < MIN_COVERAGE_MM:
            slices = "1 slice" if n_slices == 1 else f"{n_slices} slices"
            raise NotApplicableError(
                f"series has {slices} covering {coverage:.0f} mm; {self.name} needs a chest CT volume of at least "
                f"{MIN_SLICES} slices covering at least {MIN_COVERAGE_MM:.0f} mm from the lung apices to the bases"
            )
        if not volume.is_axial(MAX_TILT_DEG):
            angle = math.degrees(math.acos(min(1.0, abs(float(volume.direction[2][2])))))
            raise NotApplicableError(
                f"series is not axial (its slices are tilted {angle:.0f} degrees from axial); "
                f"{self.name} needs axial slices (within {MAX_TILT_DEG:.0f} degrees)"
            )
        _, fov_y, fov_x = volume.extent_mm
        if min(fov_y, fov_x) < MIN_FIELD_OF_VIEW_MM:
            raise NotApplicableError(
                f"field of view is {fov_x:.0f} x {fov_y:.0f} mm; {self.name} needs at least "
                f"{MIN_FIELD_OF_VIEW_MM:.0f} mm to hold both lungs"
            )
        sample = volume.voxels[:: max(1, n_slices // 8), ::4, ::4]
        if float(np.percentile(sample, 1)) > -500.0 or float(sample.max()) < 0.0:
            raise NotApplicableError(
                "the values do not look like Hounsfield units (no air below -500 HU or no tissue above 0 HU); "
                f"{self.name} needs CT values in HU"
            )

    # ------------------------------------------------------------------ run
    def run(self, volume: Volume) -> Findings:
        """Segment the lungs and measure them; pure and deterministic."""
        self.check_input(volume)
        result = segment_lungs(volume.voxels, volume.spacing_zyx, volume.direction, params=self.params)
        labels = result.labels
        present = [v for v in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL) if np.any(labels == v)]
        if not present:
            raise NotApplicableError(f"no aerated lung was found in this series (is it a chest CT?); {self.name} needs the lungs in view")
        ml_per_voxel = volume.ml_per_voxel
        algorithm = f"RadPilot {self.name} {self.version} (threshold segmentation)"
        segments: list[Segment] = []
        measurements: list[Measurement] = []
        sites = {RIGHT_LUNG_LABEL: RIGHT_LUNG, LEFT_LUNG_LABEL: LEFT_LUNG}
        for value in present:
            site = sites[value]
            segments.append(Segment(number=value, label=site.meaning, category=ANATOMICAL_STRUCTURE, type=site, algorithm_name=algorithm))
            stats = lung_density_stats(volume.voxels, labels == value, ml_per_voxel)
            measurements.extend(self._measurements(stats, site, value))
        total = lung_density_stats(volume.voxels, labels > 0, ml_per_voxel)
        measurements.extend(self._measurements(total, BOTH_LUNGS, None))

        kernel = str(volume.metadata.get("ConvolutionKernel", "") or "")
        notes = [kernel_note(kernel or None)]
        notes.append(
            f"Lungs segmented with adaptive thresholds (body {result.thresholds.body:.0f} HU, "
            f"lung {result.thresholds.lung:.0f} HU); airways attached to the lung within a slice and dense disease "
            "at the lung wall are not separated."
        )
        if len(present) == 1:
            missing = "left" if present[0] == RIGHT_LUNG_LABEL else "right"
            notes.append(f"Only one lung was found; the {missing} lung is missing from the segmentation.")
        if result.split_method == "midline":
            notes.append("The lungs touch; they were separated at the body midline, so the right/left split is approximate.")
        areas = (labels > 0).sum(axis=(1, 2))
        key_slice = int(np.argmax(areas))
        logger.info(
            "lung_ct_quant done",
            extra={
                "series_uid": volume.series_uid,
                "total_ml": round(total.volume_ml, 1),
                "laa950": round(total.laa950_percent, 2),
                "kernel": kernel,
            },
        )
        return Findings(
            analysis=self.name,
            version=self.version,
            measurements=measurements,
            segmentation=Segmentation(labels=labels.astype(np.uint8), segments=segments),
            key_slices=[key_slice],
            notes=notes,
        )

    # ------------------------------------------------------------------ validation entry points
    def run_slice(self, image: np.ndarray, pixel_spacing_mm: tuple[float, float] | None) -> np.ndarray:
        """The 2-D core on one axial slice in HU: a boolean mask of both lungs."""
        return segment_lungs_slice(image, pixel_spacing_mm=pixel_spacing_mm or ASSUMED_SLICE_SPACING_MM, params=self.params)

    def reference_outputs(self, volume: Volume, masks: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Volume, LAA-950, Perc15 and mean HU inside the reference mask of both lungs (CT only)."""
        mask = masks.get("both_lungs")
        if mask is None or volume.modality.upper() != "CT" or not mask.any():
            return {}
        stats = lung_density_stats(volume.voxels, mask, volume.ml_per_voxel)
        return {
            "total_lung_volume_ml": stats.volume_ml,
            "laa950_percent": stats.laa950_percent,
            "perc15_hu": stats.perc15_hu,
            "mean_lung_hu": stats.mean_hu,
        }

    @staticmethod
    def _measurements(stats: LungDensityStats, site: Code, segment: int | None) -> list[Measurement]:
        where = site.meaning.lower()
        return [
            Measurement(
                name=VOLUME,
                value=round(stats.volume_ml, 2),
                unit=UNIT_ML,
                finding_site=site,
                segment_number=segment,
                description=f"{site.meaning} volume",
            ),
            Measurement(
                name=LAA950,
                value=round(stats.laa950_percent, 3),
                unit=UNIT_PERCENT,
                finding_site=site,
                segment_number=segment,
                description=f"LAA-950: percentage of {where} voxels below -950 HU",
            ),
            Measurement(
                name=PERC15,
                value=round(stats.perc15_hu, 1),
                unit=UNIT_HU,
                finding_site=site,
                segment_number=segment,
                description=f"Perc15: 15th percentile of {where} attenuation",
            ),
            Measurement(
                name=ATTENUATION,
                value=round(stats.mean_hu, 1),
                unit=UNIT_HU,
                finding_site=site,
                segment_number=segment,
                derivation=MEAN,
                description=f"mean {where} attenuation",
            ),
        ]
