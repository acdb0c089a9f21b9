"""Cross-validated FROC of the nodule detector, with a classical LoG baseline.

    nice -n 19 .venv-train/bin/python training/chest_xray/nodules/evaluate_nodules.py

For each fold K the fold model (``runs/nodules/cv/foldK/last.pt``: the last epoch, no checkpoint
chosen on held-out cases) is exported to ONNX and run with onnxruntime (one thread) on its
held-out cases through the runtime path (``radpilot.analyses.chest_xray.nodules``: numpy
preprocessing, ``run_model``, ``candidates_from_outputs``).  The lung mask is the one the runtime
would use: the lung/heart segmentation model of the SAME fold (``runs/cv/foldK/last.onnx``, which
never saw the case either), right | left lung.

Hit criterion (``radpilot.validation.metrics.detection_hits``): a candidate hits when its centre
lies within the nodule radius (JSRT size / 2) + 5 mm of the JSRT centre, on the stored 512 grid
(0.7 mm pixels); each nodule is counted once by its best hit, further hits on it are ignored,
everything else is a false positive (non-nodule films contribute false positives only).

Reported: FROC sensitivity at 1/8 .. 8 FP/image (step interpolation), CPM, each with a percentile
bootstrap 95 % CI over cases (2000 resamples, seed 0); the operating point = the lowest score
threshold with <= 1 FP/image on the pooled CV candidates; sensitivity by subtlety / size / fold at
that threshold; diameter error of the detected nodules; one-core inference time.

Mask margin: candidates farther than ``mask_margin_mm`` from the lung mask are dropped; 10 % of the
JSRT nodules lie outside the SCR lung fields (behind the heart, below the diaphragm dome), so the
margin is a trade-off.  The margin used for the model (and shipped in the manifest) is chosen
among ``MARGINS`` by CV CPM (a single post-processing parameter; all margins are reported).

Baselines ``log_blob`` / ``log_blob_eroded5mm``: multi-scale scale-normalised Laplacian of Gaussian
on the same preprocessed 256 x 256 image (sigma 1.5-10 model pixels, i.e. blob diameters ~6-40 mm),
score = max over scales of -sigma^2 LoG (bright-blob contrast), candidates by the same
``candidates_from_outputs``, inside the lung mask, or at least 5 mm inside it.

Writes ``training/chest_xray/results/nodule_cv_metrics.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import data  # noqa: E402
import nodule_data  # noqa: E402
from evaluate import _rounded, to_json  # noqa: E402 - the segmentation evaluation's compact JSON layout

from radpilot.analyses.chest_xray import nodules as runtime  # noqa: E402
from radpilot.analyses.chest_xray.preprocess import labels_from_logits, preprocess  # noqa: E402
from radpilot.validation.metrics import (  # noqa: E402
    LUNA16_FP_RATES,
    bootstrap_ci,
    cpm,
    detection_hits,
    froc,
    sensitivity_at_fp,
)

SPACING = (nodule_data.STORED_SPACING_MM, nodule_data.STORED_SPACING_MM)
MARGINS = (None, 0.0, 5.0, 10.0, 20.0)  # mm; None = no lung restriction
TIE_BREAK_MARGIN_MM = 10.0  # the margin planned before any result; wins ties
LOG_SIGMAS = (1.5, 2.1, 3.0, 4.2, 6.0, 8.5, 10.0)
N_BOOT = 2000


def log_response(image256: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max over scales of the scale-normalised -LoG (bright blobs), and the diameter (model px) of the best scale."""
    from scipy import ndimage

    stack = np.stack([-(s**2) * ndimage.gaussian_laplace(image256.astype(np.float64), s) for s in LOG_SIGMAS])
    best = np.argmax(stack, axis=0)
    return stack.max(axis=0), 2 * np.sqrt(2) * np.asarray(LOG_SIGMAS)[best]


def case_result(cands: list, nodule) -> object:
    pts = np.array([[c.row, c.col] for c in cands], dtype=float).reshape(-1, 2)
    scores = np.array([c.score for c in cands], dtype=float)
    refs = np.array([[nodule.row, nodule.col]]) if nodule else np.zeros((0, 2))
    radii = np.array([nodule.diameter_mm / 2]) if nodule else np.zeros(0)
    return detection_hits(pts, scores, refs, radii, SPACING, margin_mm=nodule_data.HIT_MARGIN_MM)


def _ci(values_or_cases, statistic) -> dict:
    ci = bootstrap_ci(values_or_cases, statistic=statistic, n_resamples=N_BOOT, seed=0)
    return {"estimate": ci.estimate, "ci95": [ci.lower, ci.upper]}


def summarise(case_ids: list[str], results: list, cands: dict, nodules: dict, folds: dict) -> dict:
    curve = froc(results)
    rates = list(LUNA16_FP_RATES)
    out: dict = {"froc": {}, "n_cases": len(results), "n_nodules": int(curve.n_references)}
    for rate in rates:
        out["froc"][str(rate)] = _ci(results, lambda cs, r=rate: float(sensitivity_at_fp(froc(cs), [r])[0]))
    out["cpm"] = _ci(results, cpm)
    # operating point: lowest threshold with <= 1 FP/image
    ok = np.flatnonzero(curve.fps_per_case <= 1.0 + 1e-12)
    j = int(ok[-1])
    threshold = float(curve.thresholds[j])
    detected = {
        c: (r.n_references > 0 and bool(np.nan_to_num(r.reference_scores, nan=-1.0)[0] >= threshold)) for c, r in zip(case_ids, results)
    }
    fp_counts = np.array([int(np.sum(r.fp_scores >= threshold)) for r in results])
    nod_ids = [c for c in case_ids if c in nodules]
    out["operating_point"] = {
        "score_threshold": threshold,
        "expected_fp_per_image": float(curve.fps_per_case[j]),
        "expected_fp_per_image_ci95": _ci(fp_counts.astype(float), np.mean)["ci95"],
        "sensitivity": float(curve.sensitivity[j]),
        "sensitivity_ci95": _ci(np.array([float(detected[c]) for c in nod_ids]), np.mean)["ci95"],
        "images_with_any_fp": float(np.mean(fp_counts > 0)),
        "chosen_as": "lowest score threshold with <= 1.0 false positive per image on the pooled 5-fold CV candidates",
    }
    thresholds_at = {}
    for rate in rates:
        k = int(np.flatnonzero(curve.fps_per_case <= rate + 1e-12)[-1])
        thresholds_at[rate] = float(curve.thresholds[k])
    out["threshold_at_fp"] = {str(r): t for r, t in thresholds_at.items()}

    def group_stats(ids: list[str]) -> dict:
        hits = np.array([float(detected[c]) for c in ids])
        entry = {"nodules": len(ids), "sensitivity_at_operating_point": float(hits.mean()) if len(ids) else None}
        if len(ids) > 1:
            entry["ci95"] = _ci(hits, np.mean)["ci95"]
        for rate in (1.0, 4.0):
            t = thresholds_at[rate]
            scores = np.array([np.nan_to_num(results[case_ids.index(c)].reference_scores, nan=-1.0)[0] for c in ids])
            entry[f"sensitivity_at_{rate:g}fp"] = float(np.mean(scores >= t)) if len(ids) else None
        return entry

    out["by_subtlety"] = {str(s): group_stats([c for c in nod_ids if nodules[c].subtlety == s]) for s in range(1, 6)}
    size_groups = {"<10mm": (0, 10), "10-20mm": (10, 20), "20-30mm": (20, 30), ">=30mm": (30, 1000)}
    out["by_size"] = {g: group_stats([c for c in nod_ids if lo <= nodules[c].diameter_mm < hi]) for g, (lo, hi) in size_groups.items()}
    out["by_malignancy"] = {m: group_stats([c for c in nod_ids if nodules[c].malignancy == m]) for m in ("malignant", "benign")}
    per_fold = {}
    for fold in sorted({folds[c] for c in case_ids}):
        idx = [i for i, c in enumerate(case_ids) if folds[c] == fold]
        per_fold[str(fold)] = float(sensitivity_at_fp(froc([results[i] for i in idx]), [1.0])[0])
    out["per_fold_sensitivity_at_1fp"] = per_fold
    errors = []
    for c, r in zip(case_ids, results):
        if r.n_references and r.matched_candidate[0] >= 0:
            errors.append(cands[c][int(r.matched_candidate[0])].diameter_mm - nodules[c].diameter_mm)
    if errors:
        errors = np.array(errors)
        out["diameter_error_mm"] = {
            "detected_nodules_any_score": int(len(errors)),
            "mae": float(np.abs(errors).mean()),
            "bias": float(errors.mean()),
            "median_abs": float(np.median(np.abs(errors))),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--runs",
        type=Path,
        nargs="+",
        default=[HERE.parent / "runs" / "nodules" / "cv"],
        help="one CV run folder, or several (e.g. seeds): their fold models are averaged (ensemble)",
    )
    parser.add_argument("--seg-runs", type=Path, default=HERE.parent / "runs" / "cv")
    parser.add_argument("--out", type=Path, default=HERE.parent / "results" / "nodule_cv_metrics.json")
    parser.add_argument("--tta-scales", type=float, nargs="*", default=[], help="extra test-time scales (in the graph)")
    parser.add_argument("--tta-mirror", action="store_true", help="average with the left-right mirror (in the graph)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    args = parser.parse_args(argv)
    global N_BOOT
    N_BOOT = args.n_boot

    from export_nodules import export_onnx, load_checkpoints
    from onnx_io import onnx_session

    nodules = nodule_data.read_nodules()
    folds = nodule_data.folds()
    available = [k for k in range(data.N_FOLDS) if all((r / f"fold{k}" / "last.pt").is_file() for r in args.runs)]
    if len(available) < data.N_FOLDS:
        print(f"warning: folds {sorted(set(range(data.N_FOLDS)) - set(available))} missing; left out", file=sys.stderr)
    outputs, masks, log_maps, timings, configs = {}, {}, {}, [], {}

    def run_name(r: Path) -> str:
        r = r.resolve()
        return str(r.relative_to(HERE.parent)) if HERE.parent in r.parents else str(r)

    single_outputs: dict[str, dict] = {run_name(r): {} for r in args.runs} if len(args.runs) > 1 else {}
    for k in available:
        model, config = load_checkpoints([r / f"fold{k}" / "last.pt" for r in args.runs], tuple(args.tta_scales), args.tta_mirror)
        configs[k] = config
        onnx_name = (
            ("last" if len(args.runs) == 1 else f"ensemble{len(args.runs)}")
            + ("_mirror" if args.tta_mirror else "")
            + ("_tta" + "_".join(f"{s:g}" for s in args.tta_scales) if args.tta_scales else "")
            + ".onnx"
        )
        session = onnx_session(export_onnx(model, args.runs[0] / f"fold{k}" / onnx_name), args.threads)
        singles = (
            {
                run_name(r): onnx_session(export_onnx(load_checkpoints([r / f"fold{k}" / "last.pt"], (), args.tta_mirror)[0]), args.threads)
                for r in args.runs
            }
            if len(args.runs) > 1
            else {}
        )
        seg = onnx_session((args.seg_runs / f"fold{k}" / "last.onnx").read_bytes(), args.threads)
        for case_id in sorted(c for c, f in folds.items() if f == k):
            image = data.load_image(case_id)
            started = time.perf_counter()
            heat, diam = runtime.run_model(session, image)
            runtime.candidates_from_outputs(heat, diam, image.shape, SPACING, None)
            timings.append(time.perf_counter() - started)
            outputs[case_id] = (heat, diam)
            for name, single in singles.items():
                single_outputs[name][case_id] = runtime.run_model(single, image)
            labels = labels_from_logits(seg.run(["logits"], {"image": preprocess(image)})[0][0], image.shape)
            masks[case_id] = (labels == 1) | (labels == 2)
            log_maps[case_id] = log_response(preprocess(image)[0, 0])
        print(f"fold {k}: {sum(f == k for f in folds.values())} cases predicted", flush=True)
    case_ids = sorted(outputs)

    def evaluate(kind: str, margin, mask_of=None, outputs_of=None):
        mask_of = mask_of or masks
        outputs_of = outputs_of or outputs
        cands, results = {}, []
        for c in case_ids:
            if kind == "model":
                heat, diam = outputs_of[c]
                cands[c] = runtime.candidates_from_outputs(
                    heat,
                    diam,
                    (512, 512),
                    SPACING,
                    mask_of[c],
                    mask_margin_mm=margin,
                    min_score=runtime.MIN_SCORE,
                    max_candidates=runtime.MAX_CANDIDATES,
                )
            else:
                response, diam = log_maps[c]
                cands[c] = runtime.candidates_from_outputs(
                    response,
                    diam,
                    (512, 512),
                    SPACING,
                    mask_of[c],
                    mask_margin_mm=margin,
                    min_score=1e-6,
                    max_candidates=runtime.MAX_CANDIDATES,
                )
            results.append(case_result(cands[c], nodules.get(c)))
        return cands, results

    margins_table = {}
    evaluated = {}
    for margin in MARGINS:
        cands, results = evaluate("model", margin)
        curve = froc(results)
        key = "none" if margin is None else f"{margin:g}"
        margins_table[key] = {
            "cpm": cpm(curve),
            **{f"sens_at_{r:g}fp": float(s) for r, s in zip(LUNA16_FP_RATES, sensitivity_at_fp(curve))},
            "max_sensitivity": float(curve.sensitivity[-1]),
        }
        evaluated[key] = (margin, cands, results)
        print(f"model, mask margin {key}: CPM {margins_table[key]['cpm']:.3f}, sens@1FP {margins_table[key]['sens_at_1fp']:.3f}")
    default_key = f"{TIE_BREAK_MARGIN_MM:g}"  # ties go to the a-priori default
    best_key = max(margins_table, key=lambda k: (round(margins_table[k]["cpm"], 6), k == default_key))
    margin, cands, results = evaluated[best_key]
    model_summary = summarise(case_ids, results, cands, nodules, folds)

    from scipy import ndimage

    eroded = {c: ndimage.binary_erosion(m, iterations=int(round(5.0 / SPACING[0]))) for c, m in masks.items()}
    baselines = {}
    for name, margin_b, mask_of, where in (
        ("log_blob", 0.0, masks, "inside the lung mask"),
        ("log_blob_eroded5mm", 0.0, eroded, "at least 5 mm inside the lung mask (drops rib-cage / heart-border edges)"),
    ):
        b_cands, b_results = evaluate("log", margin_b, mask_of)
        baselines[name] = summarise(case_ids, b_results, b_cands, nodules, folds)
        baselines[name]["description"] = (
            "multi-scale scale-normalised LoG on the preprocessed 256 image, sigma "
            f"{list(LOG_SIGMAS)} model px, score = max over scales of -sigma^2 LoG, local "
            f"maxima + 10 mm suppression as for the model, candidates {where}"
        )

    single_models = {}
    for name, outs in single_outputs.items():
        s_cands, s_results = evaluate("model", margin, outputs_of=outs)
        summ = summarise(case_ids, s_results, s_cands, nodules, folds)
        single_models[name] = {k: summ[k] for k in ("froc", "cpm", "operating_point", "by_subtlety")}

    op = model_summary["operating_point"]["score_threshold"]
    per_case = []
    for c, r in zip(case_ids, results):
        nod = nodules.get(c)
        row = {"case_id": c, "fold": folds[c], "n_candidates": len(cands[c]), "fp_at_operating_point": int(np.sum(r.fp_scores >= op))}
        if nod:
            score = float(r.reference_scores[0]) if r.matched_candidate[0] >= 0 else None
            row.update(
                {
                    "subtlety": nod.subtlety,
                    "size_mm": nod.diameter_mm,
                    "hit_score": score,
                    "detected_at_operating_point": bool(score is not None and score >= op),
                    "inside_lung_mask": bool(masks[c][int(round(nod.row)), int(round(nod.col))]),
                }
            )
        per_case.append(row)
    result = {
        "description": "5-fold cross-validation on the 199 JSRT dev cases (124 nodules); each case predicted by the fold "
        "model that held it out (ONNX, onnxruntime CPU, runtime numpy pre/post-processing), lung mask from "
        "the same fold's cxr_lung_heart_seg model; FROC pooled over all 199 images",
        "hit_criterion": "candidate centre within nodule radius (JSRT size / 2) + 5 mm of the JSRT centre, 512 grid at "
        "0.7 mm; one TP per nodule (best hit), further hits ignored, others false positives "
        "(radpilot.validation.metrics.detection_hits, margin_mm=5)",
        "bootstrap": f"percentile, cases resampled, {N_BOOT} resamples, seed 0",
        "checkpoint": "last.pt (last epoch)",
        "runs": [run_name(r) for r in args.runs],
        "ensemble_seeds": configs[available[0]].get("ensemble_seeds") if available else None,
        "tta_scales": list(args.tta_scales),
        "tta_mirror": args.tta_mirror,
        "folds_evaluated": available,
        "epochs": sorted({c.get("epochs") for c in configs.values()}),
        "postprocessing_parameters": {
            "min_score": runtime.MIN_SCORE,
            "nms_mm": runtime.NMS_MM,
            "mask_margin_mm": margin,
            "max_candidates": runtime.MAX_CANDIDATES,
            "peak_window": runtime.PEAK_WINDOW,
        },
        "mask_margin_selection": {
            "chosen": best_key,
            "rule": "highest CV CPM among the margins tried (ties: the default 10 mm)",
            "table": margins_table,
        },
        "model": model_summary,
        "baselines": baselines,
        "single_seed_models": single_models,
        "inference_seconds_one_core": {
            "median": float(np.median(timings)),
            "p90": float(np.percentile(timings, 90)),
            "includes": "numpy preprocessing + onnxruntime (1 thread) + candidate extraction; not the lung segmentation",
        },
        "per_case": per_case,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_json(result))

    print(f"\n{'method':<20}{'CPM':>22}" + "".join(f"{r:>8g}" for r in LUNA16_FP_RATES))
    for name, summ in (("model", model_summary), *baselines.items(), *single_models.items()):
        print(
            f"{name[-20:]:<20}{summ['cpm']['estimate']:>8.3f} ({summ['cpm']['ci95'][0]:.3f}-{summ['cpm']['ci95'][1]:.3f})"
            + "".join(f"{summ['froc'][str(r)]['estimate']:>8.3f}" for r in LUNA16_FP_RATES)
        )
    print(f"operating point: {json.dumps(_rounded(model_summary['operating_point']))}")
    print(f"by subtlety: {json.dumps(_rounded(model_summary['by_subtlety']))}")
    print(f"inference {np.median(timings):.3f} s/image (one core); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
