"""Aggregation of a validation run: summaries with bootstrap CIs, agreement, ROC, FROC and the flat metrics the gate reads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from radpilot.validation import metrics as M
from radpilot.validation.evaluators import CaseResult, Evaluator

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0
MIN_CI_CASES = 5  # below this a bootstrap interval is not reported (it only restates the few values)


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    return arr[np.isfinite(arr)]


def _ci_dict(ci: M.BootstrapCI) -> dict[str, Any]:
    return {
        "estimate": ci.estimate,
        "lower": ci.lower,
        "upper": ci.upper,
        "confidence": ci.confidence,
        "n_resamples": ci.n_resamples,
        "n_valid": ci.n_valid,
        "seed": ci.seed,
        "single_case": ci.single_case,
    }


def aggregate(
    cases: Sequence[CaseResult],
    evaluator: Evaluator,
    *,
    seed: int = SEED,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Summaries with bootstrap CIs over the included cases, and the flat metrics the gate reads.

    Returns ``(summary, metrics)``. ``summary["per_metric"][m]`` is :func:`metrics.summarize`
    plus ``n_nonfinite`` (e.g. a HD95 of inf when a structure was missed; such values are
    counted, not averaged); ``summary["agreement"][output]`` holds Bland-Altman, MAE with
    its CI and ICC(2,1); ``summary["classification"][name]`` the ROC curve and AUC with
    its CI and sensitivity/specificity at the operating threshold.
    """
    included = [c for c in cases if c.included]
    pct = int(round(confidence * 100))
    summary: dict[str, Any] = {
        "confidence": confidence,
        "n_resamples": n_resamples,
        "seed": seed,
        "per_metric": {},
        "agreement": {},
        "classification": {},
    }
    flat: dict[str, float] = {}
    names: list[str] = []
    for case in included:
        for name in case.metrics:
            if name not in names:
                names.append(name)
    for name in names:
        raw = [c.metrics.get(name) for c in included if c.metrics.get(name) is not None]
        values = _finite(raw)
        n_nonfinite = len(raw) - int(values.size)
        if values.size == 0:
            summary["per_metric"][name] = {"n": 0, "n_nonfinite": n_nonfinite}
            continue
        s = dict(M.summarize(values, seed=seed, n_resamples=n_resamples, confidence=confidence))
        s["n_nonfinite"] = n_nonfinite
        summary["per_metric"][name] = s
        flat[f"{name}_mean"] = s["mean"]
        flat[f"{name}_median"] = s["median"]
        flat[f"{name}_min"] = s["min"]
        flat[f"{name}_max"] = s["max"]
        if s["sd"] is not None:
            flat[f"{name}_sd"] = s["sd"]
        if s["n"] < MIN_CI_CASES:
            s["mean_ci"]["too_few_cases"] = True
        else:
            flat[f"{name}_ci{pct}_lower"] = s["mean_ci"]["lower"]
            flat[f"{name}_ci{pct}_upper"] = s["mean_ci"]["upper"]
        flat[f"{name}_n"] = float(s["n"])
        if n_nonfinite:
            flat[f"{name}_n_nonfinite"] = float(n_nonfinite)

    for spec in evaluator.outputs:
        output = spec.name
        pairs = [(c.values[output]["predicted"], c.values[output]["reference"]) for c in included if output in c.values]
        pairs = [(float(p), float(r)) for p, r in pairs if p is not None and r is not None]
        n_missing = sum(1 for c in included if output not in c.values or c.values[output].get("predicted") is None)
        entry: dict[str, Any] = {"n": len(pairs), "n_missing_prediction": n_missing, "unit": spec.unit, "label": spec.label}
        if pairs:
            p, r = np.array([x for x, _ in pairs]), np.array([y for _, y in pairs])
            entry["predicted"], entry["reference"] = p.tolist(), r.tolist()
            entry["mae"] = M.mean_absolute_error(p, r) if len(p) >= 1 else None
            flat[f"{output}_mae"] = float(np.mean(np.abs(p - r)))
            flat[f"{output}_bias"] = float(np.mean(p - r))
            if len(pairs) >= 2:
                ba = M.bland_altman(p, r)
                entry["bland_altman"] = {"bias": ba.bias, "sd": ba.sd, "lower": ba.lower, "upper": ba.upper, "n": ba.n}
                flat[f"{output}_loa_lower"], flat[f"{output}_loa_upper"] = ba.lower, ba.upper
            if len(pairs) >= MIN_CI_CASES:
                mae_ci = M.bootstrap_ci((p, r), statistic=M.mean_absolute_error, n_resamples=n_resamples, confidence=confidence, seed=seed)
                entry["mae_ci"] = _ci_dict(mae_ci)
                flat[f"{output}_mae_ci{pct}_lower"], flat[f"{output}_mae_ci{pct}_upper"] = mae_ci.lower, mae_ci.upper
            if len(pairs) >= 2:
                icc = M.icc_2_1(np.column_stack([p, r]))
                entry["icc_2_1"] = icc
                if math.isfinite(icc):
                    flat[f"{output}_icc"] = icc
            if n_missing:
                flat[f"{output}_n_missing_prediction"] = float(n_missing)
        summary["agreement"][output] = entry

    for question in evaluator.classifications:
        rows = [c.values.get(question.output, {}) for c in included]
        rows = [
            (float(v["reference"]), float(v["predicted"]))
            for v in rows
            if v.get("reference") is not None and v.get("predicted") is not None
        ]
        entry = {
            "label": question.label,
            "output": question.output,
            "reference_threshold": question.reference_threshold,
            "operating_threshold": question.operating_threshold,
            "n": len(rows),
        }
        if rows:
            y = np.array([ref > question.reference_threshold for ref, _ in rows])
            score = np.array([pred for _, pred in rows])
            entry["n_positive"], entry["n_negative"] = int(y.sum()), int((~y).sum())
            counts = M.confusion_counts(y, score > question.operating_threshold)
            ss = M.sensitivity_specificity(y, score > question.operating_threshold)
            entry.update(tp=counts.tp, fp=counts.fp, tn=counts.tn, fn=counts.fn, sensitivity=ss.sensitivity, specificity=ss.specificity)
            flat[f"{question.name}_sensitivity"], flat[f"{question.name}_specificity"] = ss.sensitivity, ss.specificity
            if 0 < y.sum() < len(y) and len(y) >= MIN_CI_CASES:
                curve = M.roc_curve(y, score)
                entry["roc"] = {"fpr": curve.fpr.tolist(), "tpr": curve.tpr.tolist()}
                auc_ci = M.bootstrap_ci((y, score), statistic=M.roc_auc, n_resamples=n_resamples, confidence=confidence, seed=seed)
                entry["auc"], entry["auc_ci"] = auc_ci.estimate, _ci_dict(auc_ci)
                flat[f"{question.name}_auc"] = auc_ci.estimate
                flat[f"{question.name}_auc_ci{pct}_lower"], flat[f"{question.name}_auc_ci{pct}_upper"] = auc_ci.lower, auc_ci.upper
            else:
                entry["auc"] = None
                entry["note"] = "AUC not computed: it needs both classes among the reference labels and at least 5 cases"
        summary["classification"][question.name] = entry

    for spec in evaluator.detections:
        matched = [c.detections[spec.name] for c in included if spec.name in c.detections]
        if not matched:
            continue
        entry = detection_summary(matched, seed=seed, n_resamples=n_resamples)
        entry.update(name=spec.name, margin_mm=spec.margin_mm)
        summary.setdefault("detections", {})[spec.name] = entry
        summary.setdefault("detection", entry)  # the first is drawn as the report's FROC plot
        if math.isfinite(entry["cpm"]):
            flat[f"{spec.name}_cpm"] = entry["cpm"]
            flat[f"{spec.name}_cpm_ci{pct}_lower"], flat[f"{spec.name}_cpm_ci{pct}_upper"] = (
                entry["cpm_ci"]["lower"],
                entry["cpm_ci"]["upper"],
            )
        for rate, sensitivity in entry["sensitivity_at_fp"].items():
            if sensitivity is not None and math.isfinite(sensitivity):
                flat[f"{spec.name}_sensitivity_at_{_rate_name(float(rate))}fp"] = sensitivity

    n_attempted = len(cases)
    n_failed = sum(1 for c in cases if c.status == "failed")
    flat["n_cases_evaluated"] = float(n_attempted)
    flat["n_cases_included"] = float(len(included))
    flat["n_failed"] = float(n_failed)
    flat["failure_rate"] = n_failed / n_attempted if n_attempted else float("nan")
    return summary, {k: float(v) for k, v in flat.items() if v is not None and math.isfinite(float(v))}


def _rate_name(rate: float) -> str:
    """FP/case as a metric-name part: 1 -> "1", 0.125 -> "0_125"."""
    return f"{rate:g}".replace(".", "_")


def detection_summary(cases: Sequence[M.DetectionResult], *, seed: int = SEED, n_resamples: int = N_RESAMPLES) -> dict[str, Any]:
    """FROC and CPM (LUNA16) with a case-level bootstrap CI, for analyses that output located findings."""
    curve = M.froc(cases)
    score = M.cpm(curve)
    ci = M.bootstrap_ci(list(cases), statistic=lambda cs: M.cpm(list(cs)), n_resamples=n_resamples, seed=seed)
    return {
        "fps_per_case": curve.fps_per_case.tolist(),
        "sensitivity": curve.sensitivity.tolist(),
        "cpm": score,
        "cpm_ci": _ci_dict(ci),
        "sensitivity_at_fp": dict(zip([str(r) for r in M.LUNA16_FP_RATES], M.sensitivity_at_fp(curve).tolist())),
        "n_cases": curve.n_cases,
        "n_references": curve.n_references,
    }
