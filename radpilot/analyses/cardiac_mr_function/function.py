"""Ventricular volumes over the cycle, end-diastole / end-systole, and the function figures derived from them.

Definitions (as in SCMR's post-processing recommendations, Schulz-Menger et al. JCMR 2020):

* volume of a structure in a phase = labelled pixels x pixel area x slice spacing (summation of
  discs; the slice spacing, not the thickness, so a gap between slices is counted);
* end-diastole (ED) = the phase of largest LV cavity volume, end-systole (ES) = the phase of
  smallest; the RV is measured at the same two phases;
* SV = EDV - ESV; EF = SV / EDV x 100 %; LV mass = LV myocardial volume at ED x 1.05 g/mL
  (myocardial density; papillary muscles and trabeculae count as cavity, as in ACDC's labels);
* cardiac output = LV SV x HeartRate / 1000 (L/min), only where the header states HeartRate;
* body surface area (Mosteller) = sqrt(height cm x weight kg / 3600) m², only where the header
  states PatientSize (m) and PatientWeight (kg); indexed values are divided by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MYOCARDIAL_DENSITY_G_PER_ML = 1.05
RV, MYO, LV = 1, 2, 3


@dataclass(frozen=True)
class VolumeCurves:
    lv_ml: np.ndarray  # per phase
    rv_ml: np.ndarray
    myo_ml: np.ndarray


@dataclass(frozen=True)
class Function:
    ed_phase: int  # 0-based index into the cine's phases
    es_phase: int
    lv_edv_ml: float
    lv_esv_ml: float
    lv_sv_ml: float
    lv_ef_percent: float
    lv_mass_g: float
    rv_edv_ml: float
    rv_esv_ml: float
    rv_sv_ml: float
    rv_ef_percent: float
    cardiac_output_l_min: float | None
    bsa_m2: float | None


def volume_curves(labels: np.ndarray, ml_per_voxel: float) -> VolumeCurves:
    """(phases, slices, rows, cols) labels -> per-phase volumes in mL."""
    counts = np.stack([(labels == v).sum(axis=(1, 2, 3)) for v in (RV, MYO, LV)]).astype(np.float64) * ml_per_voxel
    return VolumeCurves(lv_ml=counts[2], rv_ml=counts[0], myo_ml=counts[1])


def ed_es(lv_ml: np.ndarray) -> tuple[int, int]:
    """ED = largest LV cavity volume, ES = smallest (the first such phase on ties)."""
    return int(np.argmax(lv_ml)), int(np.argmin(lv_ml))


def body_surface_area_m2(height_m: float | None, weight_kg: float | None) -> float | None:
    """Mosteller's formula; None when either is missing or implausible (height 0.3-2.5 m, weight 2-400 kg)."""
    if height_m is None or weight_kg is None:
        return None
    if not (0.3 <= height_m <= 2.5 and 2.0 <= weight_kg <= 400.0):
        return None
    return float(np.sqrt(height_m * 100.0 * weight_kg / 3600.0))


def _ef(edv: float, esv: float) -> float:
    return 100.0 * (edv - esv) / edv if edv > 0 else 0.0


def cardiac_function(curves: VolumeCurves, heart_rate_bpm: float | None, height_m: float | None, weight_kg: float | None) -> Function:
    ed, es = ed_es(curves.lv_ml)
    lv_edv, lv_esv = float(curves.lv_ml[ed]), float(curves.lv_ml[es])
    rv_edv, rv_esv = float(curves.rv_ml[ed]), float(curves.rv_ml[es])
    sv = lv_edv - lv_esv
    co = sv * heart_rate_bpm / 1000.0 if heart_rate_bpm and 20.0 <= heart_rate_bpm <= 250.0 else None
    return Function(
        ed_phase=ed,
        es_phase=es,
        lv_edv_ml=lv_edv,
        lv_esv_ml=lv_esv,
        lv_sv_ml=sv,
        lv_ef_percent=_ef(lv_edv, lv_esv),
        lv_mass_g=float(curves.myo_ml[ed]) * MYOCARDIAL_DENSITY_G_PER_ML,
        rv_edv_ml=rv_edv,
        rv_esv_ml=rv_esv,
        rv_sv_ml=rv_edv - rv_esv,
        rv_ef_percent=_ef(rv_edv, rv_esv),
        cardiac_output_l_min=co,
        bsa_m2=body_surface_area_m2(height_m, weight_kg),
    )
