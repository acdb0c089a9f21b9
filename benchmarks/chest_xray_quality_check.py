"""How often the chest_xray segmentation quality check fires, on good films and on deliberately bad inputs.

Every input goes through the production path (a DX DICOM dataset -> ``volume_from_datasets`` ->
``ChestXray.check_input`` + ``run``) and ends in one of four outcomes:

* ``refused``: ``check_input`` raised NotApplicableError (the frontal-view plausibility check,
  :func:`radpilot.analyses.chest_xray.view.frontal_plausibility`);
* ``flagged``: accepted, but the quality check (:mod:`radpilot.analyses.chest_xray.quality`) found
  the segmentation implausible: CTR, widths, cardiomegaly and areas withheld, and said so;
* ``cut_off``: accepted and plausible, CTR withheld because a structure reaches the image edge;
* ``reported``: a CTR was reported.

"Fires" = refused or flagged.  Input sets:

* ``good``: the 199 JSRT developer films as DX PA (MONOCHROME2, 0.7 mm).  The shipped model was
  trained on them, so this is the false-alarm rate on films like its training data, an optimistic
  figure;
* ``good_variants``: the same films as another site might send them: tilted 6 degrees, zoomed out
  to 85 % on a wider field, or with a gamma 0.7 curve and detector noise (one variant per film,
  in turn); a less optimistic false-alarm proxy;
* bad: ``cropped`` (the central 50 % x 50 % of the film), ``rotated_90`` (turned a quarter turn,
  header unchanged), ``inverted`` (values inverted but the header still says MONOCHROME2),
  ``non_chest_ct`` (the 120 axial chest CT slices of shared/data/ct-lung-slices sent as a DX: a
  thorax with two lungs and a heart between them, but not a radiograph).

For a reported CTR on a film-derived input the absolute error against the film's reference CTR
is given, to show whether what got through was measured right.  The measures of the quality
check on ``good`` (min, 1st percentile, max) are printed to justify its limits.

Research use only (JSRT/SCR terms).  Usage:
``.venv/bin/python benchmarks/chest_xray_quality_check.py [--limit N]``; writes
benchmarks/results/chest_xray_quality_check.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from radpilot.analyses.chest_xray import ChestXray  # noqa: E402
from radpilot.analyses.chest_xray.analysis import IMPLAUSIBLE_SEGMENTATION  # noqa: E402
from radpilot.analyses.chest_xray.quality import LIMITS, measure  # noqa: E402
from radpilot.contract import NotApplicableError  # noqa: E402
from radpilot.dicom.volume import volume_from_datasets  # noqa: E402
from radpilot.modelhub.registry import ModelRegistry  # noqa: E402
from tests.helpers import shared_data_path  # noqa: E402
from tests.unit.test_chest_xray_analysis import jsrt_case, radiograph_dataset  # noqa: E402

RESULT = REPO / "benchmarks" / "results" / "chest_xray_quality_check.json"


def _to_12_bit(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 4095).astype(np.uint16)


def _tilted(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _to_12_bit(ndimage.rotate(p.astype(float), 6.0, reshape=False, order=1, mode="nearest"))


def _zoomed_out(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    small = ndimage.zoom(p.astype(float), 0.85, order=1)
    out = np.full(p.shape, float(np.percentile(p, 2)))
    top, left = (p.shape[0] - small.shape[0]) // 2, (p.shape[1] - small.shape[1]) // 2
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return _to_12_bit(out)


def _gamma_noise(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _to_12_bit(4095.0 * (p / 4095.0) ** 0.7 + rng.normal(0.0, 40.0, p.shape))


GOOD_VARIANTS: tuple[Callable[[np.ndarray, np.random.Generator], np.ndarray], ...] = (_tilted, _zoomed_out, _gamma_noise)

BAD: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "cropped": lambda p: np.ascontiguousarray(p[128:384, 128:384]),
    "rotated_90": lambda p: np.ascontiguousarray(np.rot90(p)),
    "inverted": lambda p: (4095 - p).astype(np.uint16),
}


def _outcome(analysis: ChestXray, pixels: np.ndarray) -> dict[str, Any]:
    volume = volume_from_datasets([radiograph_dataset(pixels)])
    try:
        analysis.check_input(volume)
    except NotApplicableError as exc:
        return {"outcome": "refused", "reason": str(exc)}
    findings = analysis.run(volume)
    labels = findings.segmentation.labels[0]  # no Patient Orientation flips here: the source grid is the standard one
    measures = measure(labels, findings.confidence)
    flagged = [q for q in findings.qualitative if q.value == IMPLAUSIBLE_SEGMENTATION]
    ctr = next((m.value for m in findings.measurements if m.name.value == "RP-CTR"), None)
    if flagged:
        return {"outcome": "flagged", "reason": flagged[0].description, "measures": measures}
    if ctr is None:
        return {"outcome": "cut_off", "measures": measures}
    return {"outcome": "reported", "ctr": ctr, "measures": measures}


def _ct_slices(limit: int | None) -> Iterator[tuple[str, np.ndarray]]:
    root = shared_data_path() / "ct-lung-slices" / "images"
    paths = sorted(root.glob("*.png"))[:limit] if limit else sorted(root.glob("*.png"))
    for path in paths:
        values = np.array(Image.open(path)).astype(np.int32) - 4096  # README: stored = source + 4096
        yield path.stem, _to_12_bit((values + 1024) * 2.0)  # about -1024..1024 onto 0..4095, as a film would hold it


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(r["outcome"] for r in results)
    n = len(results)
    errors = [abs(r["ctr"] - r["ctr_ref"]) for r in results if r["outcome"] == "reported" and r.get("ctr_ref") is not None]
    rules = Counter()
    for r in results:
        if r["outcome"] == "flagged":
            for name, (low, high, _) in LIMITS.items():
                value = r["measures"].get(name)
                if value is not None and not (low <= value <= high):
                    rules[name] += 1
    return {
        "inputs": n,
        "outcomes": {k: counts.get(k, 0) for k in ("refused", "flagged", "cut_off", "reported")},
        "fires_rate": round((counts["refused"] + counts["flagged"]) / n, 4) if n else None,
        "flagged_rate": round(counts["flagged"] / n, 4) if n else None,
        "ctr_reported_rate": round(counts["reported"] / n, 4) if n else None,
        "rules_that_flagged": dict(rules),
        "reported_ctr_abs_error_vs_film_reference": {
            "median": round(float(np.median(errors)), 4) if errors else None,
            "max": round(float(np.max(errors)), 4) if errors else None,
            "over_0.05": int(sum(e > 0.05 for e in errors)),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N films (and N CT slices)")
    args = parser.parse_args()
    analysis = ChestXray(registry=ModelRegistry(providers=["CPUExecutionProvider"], intra_op_threads=1), detect_nodules=False)
    root = shared_data_path() / "cxr-jsrt"
    with open(root / "metadata.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "dev"][: args.limit]
    rng = np.random.default_rng(0)
    sets: dict[str, list[dict[str, Any]]] = {name: [] for name in ("good", "good_variants", *BAD, "non_chest_ct")}
    started = time.perf_counter()
    for index, row in enumerate(rows):
        case = jsrt_case(row["case_id"])
        variant = GOOD_VARIANTS[index % len(GOOD_VARIANTS)]
        inputs = {"good": case.pixels, "good_variants": variant(case.pixels, rng), **{k: f(case.pixels) for k, f in BAD.items()}}
        for name, pixels in inputs.items():
            result = _outcome(analysis, pixels)
            extra = {"variant": variant.__name__.lstrip("_")} if name == "good_variants" else {}
            sets[name].append({"case": case.case_id, "ctr_ref": case.ctr, **extra, **result})
    for name, pixels in _ct_slices(args.limit):
        sets["non_chest_ct"].append({"case": name, **_outcome(analysis, pixels)})
    elapsed = time.perf_counter() - started

    good_measures = [r["measures"] for r in sets["good"] if "measures" in r]
    extremes = {
        name: {
            "min": round(float(np.min(v)), 4),
            "p01": round(float(np.percentile(v, 1)), 4),
            "max": round(float(np.max(v)), 4),
            "limits": list(LIMITS[name][:2]),
        }
        for name in LIMITS
        if (v := [m[name] for m in good_measures if name in m])
    }
    report = {
        "benchmark": "chest_xray_quality_check",
        "data": "JSRT + SCR developer split (research use only; Shiraishi et al. AJR 2000, van Ginneken et al. MedIA 2006) "
        "and ct-lung-slices (LUNA16/LIDC-IDRI, CC BY 3.0)",
        "warning": "the shipped model was trained on the 199 JSRT films: 'good' is its training data (optimistic)",
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "seconds": round(elapsed, 1),
        "summary": {name: _summary(results) for name, results in sets.items()},
        "good_measure_extremes": extremes,
        "per_input": sets,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'set':<15} {'inputs':>6} {'refused':>8} {'flagged':>8} {'cut_off':>8} {'reported':>9} {'fires':>7}  reported CTR |err| max")
    for name, s in report["summary"].items():
        o = s["outcomes"]
        err = s["reported_ctr_abs_error_vs_film_reference"]["max"]
        print(
            f"{name:<15} {s['inputs']:>6} {o['refused']:>8} {o['flagged']:>8} {o['cut_off']:>8} {o['reported']:>9} "
            f"{100 * (s['fires_rate'] or 0):>6.1f}%  {'-' if err is None else f'{err:.3f}'}  rules {s['rules_that_flagged']}"
        )
    print("quality measures on the good films (min / 1st percentile / max vs limits):")
    for name, e in extremes.items():
        print(f"  {name:<18} {e['min']:.3f} / {e['p01']:.3f} / {e['max']:.3f}   limits {e['limits']}")
    print(f"wrote {RESULT} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
