"""Cross-validated evaluation of the lung/heart segmentation recipe, with a classical baseline.

    nice -n 19 .venv-train/bin/python training/chest_xray/evaluate.py

For each fold K, the fold model (``runs/cv/foldK/last.pt``: the last epoch, as for the
shipped all-data model, no checkpoint chosen on the held-out cases) is exported to ONNX
and run with onnxruntime on the held-out cases through the runtime's numpy pre- and
post-processing (256 x 256 input; logits resampled bilinearly to 512 x 512, argmax,
largest connected component per structure).  Per case: Dice per structure against the
SCR masks on the stored 512 grid, and the CTR from the predicted masks (README
definition) against metadata.csv ``ctr``.  Summaries: mean with a bootstrap 95 % CI over
cases (2000 resamples, seed 0), per fold, CTR MAE / bias / SD / r.

Baselines, fitted on each training fold only:
* ``atlas``: the per-pixel majority label of the training masks (position only).
* ``atlas_otsu``: lungs = atlas lung region (training frequency > 0.1) AND darker than
  the image's Otsu threshold inside it, split by the atlas side; heart from the atlas.

Writes ``training/chest_xray/results/cv_metrics.json`` and prints a table.
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

import data  # noqa: E402

from radpilot.analyses.chest_xray.preprocess import (  # noqa: E402
    cardiothoracic_ratio,
    dice,
    labels_from_logits,
    largest_components,
    preprocess,
)

STRUCTURES = data.STRUCTURES


def bootstrap_ci(values: np.ndarray, statistic=np.mean, n: int = 2000, seed: int = 0) -> list[float]:
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    stats = [statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(n)]
    return [float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))]


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    total = weight[-1]
    mean_cum = np.cumsum(hist * centres)
    w0, w1 = weight[:-1], total - weight[:-1]
    m0 = mean_cum[:-1] / np.maximum(w0, 1)
    m1 = (mean_cum[-1] - mean_cum[:-1]) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between))])


class Atlas:
    """Per-pixel label frequencies of the training fold on the stored 512 grid."""

    def __init__(self, label_maps: list[np.ndarray]) -> None:
        counts = np.zeros((4,) + label_maps[0].shape, dtype=np.float64)
        for labels in label_maps:
            for v in range(4):
                counts[v] += labels == v
        self.freq = counts / len(label_maps)
        self.majority = largest_components(np.argmax(self.freq, axis=0).astype(np.uint8))

    def predict_atlas(self, image: np.ndarray) -> np.ndarray:  # noqa: ARG002 - position only
        return self.majority.copy()

    def predict_atlas_otsu(self, image: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        region = (self.freq[1] + self.freq[2]) > 0.1
        smooth = ndimage.uniform_filter(image.astype(np.float64), 5)
        threshold = otsu_threshold(smooth[region])
        dark = region & (smooth < threshold)
        dark = ndimage.binary_opening(dark, iterations=2)
        dark = ndimage.binary_fill_holes(dark)
        out = np.zeros(image.shape, dtype=np.uint8)
        out[self.majority == 3] = 3
        side_right = self.freq[1] >= self.freq[2]
        out[dark & side_right & (out == 0)] = 1
        out[dark & ~side_right & (out == 0)] = 2
        return largest_components(out)


def case_metrics(pred: np.ndarray, truth: np.ndarray, ref_ctr: float) -> dict:
    record = {f"dice_{s}": dice(pred == v, truth == v) for v, s in enumerate(STRUCTURES, start=1)}
    ctr = cardiothoracic_ratio(pred)
    record["ctr"] = None if ctr is None else ctr.ratio
    record["ctr_ref"] = ref_ctr
    return record


def summarise(records: list[dict], folds: dict[str, int]) -> dict:
    summary: dict = {"dice": {}, "per_fold": {}}
    for s in STRUCTURES:
        values = np.array([r[f"dice_{s}"] for r in records])
        summary["dice"][s] = {
            "mean": float(values.mean()),
            "ci95": bootstrap_ci(values),
            "median": float(np.median(values)),
            "sd": float(values.std(ddof=1)),
            "min": float(values.min()),
            "worst_case": records[int(np.argmin(values))]["case_id"],
        }
    paired = [(r["ctr"], r["ctr_ref"]) for r in records if r["ctr"] is not None]
    pred, ref = np.array(paired).T if paired else (np.array([]), np.array([]))
    diff = pred - ref
    summary["ctr"] = {
        "cases": int(len(diff)),
        "missing": int(len(records) - len(diff)),
        "mae": float(np.abs(diff).mean()) if len(diff) else None,
        "mae_ci95": bootstrap_ci(np.abs(diff)) if len(diff) else None,
        "bias": float(diff.mean()) if len(diff) else None,
        "sd_difference": float(diff.std(ddof=1)) if len(diff) > 1 else None,
        "limits_of_agreement": [float(diff.mean() - 1.96 * diff.std(ddof=1)), float(diff.mean() + 1.96 * diff.std(ddof=1))]
        if len(diff) > 1
        else None,
        "pearson_r": float(np.corrcoef(pred, ref)[0, 1]) if len(diff) > 1 and pred.std() > 0 else None,
        "within_0.02": float(np.mean(np.abs(diff) <= 0.02)) if len(diff) else None,
    }
    for fold in sorted(set(folds.values())):
        rows = [r for r in records if folds[r["case_id"]] == fold]
        entry = {f"dice_{s}": float(np.mean([r[f"dice_{s}"] for r in rows])) for s in STRUCTURES}
        diffs = [abs(r["ctr"] - r["ctr_ref"]) for r in rows if r["ctr"] is not None]
        entry["ctr_mae"] = float(np.mean(diffs)) if diffs else None
        entry["cases"] = len(rows)
        summary["per_fold"][str(fold)] = entry
    return summary


def _rounded(value):
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def to_json(result: dict) -> str:
    """Indented summary, one line per case (keeps the committed file small and diffable)."""
    result = _rounded(result)
    rows = result.pop("per_case")
    text = json.dumps(result, indent=1)
    lines = ",\n".join("  " + json.dumps(row) for row in rows)
    return text[:-2] + ',\n "per_case": [\n' + lines + "\n ]\n}\n"


def checkpoint_session(checkpoint: Path, threads: int):  # noqa: ANN201 - (onnxruntime.InferenceSession, config)
    """Export ``checkpoint`` to ONNX next to it (``last.pt`` -> ``last.onnx``) and open it with onnxruntime."""
    from export import export_onnx
    from model import build_model
    from onnx_io import load_checkpoint, onnx_session

    model, config = load_checkpoint(checkpoint, build_model)
    content = export_onnx(model, checkpoint.with_suffix(".onnx"))
    return onnx_session(content, threads), config


def predict(session, image: np.ndarray) -> np.ndarray:
    logits = session.run(["logits"], {"image": preprocess(image)})[0][0]
    return labels_from_logits(logits, image.shape)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=HERE / "runs" / "cv")
    parser.add_argument("--checkpoint-name", default="last.pt")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "cv_metrics.json")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (1: the one-core timing)")
    parser.add_argument("--folds", type=int, nargs="*", default=None, help="only these folds (default: all found)")
    args = parser.parse_args(argv)

    cases = data.read_cases()
    by_id = {c.case_id: c for c in cases}
    folds = data.assign_folds(cases)
    fold_ids = args.folds if args.folds is not None else list(range(data.N_FOLDS))
    available = [k for k in fold_ids if (args.runs / f"fold{k}" / args.checkpoint_name).is_file()]
    missing = sorted(set(fold_ids) - set(available))
    if missing:
        print(f"warning: no checkpoint for fold(s) {missing}; they are left out", file=sys.stderr)

    truth = {c.case_id: data.load_labels(c.case_id) for c in cases}
    records: dict[str, list[dict]] = {"model": [], "atlas": [], "atlas_otsu": []}
    timings = []
    configs = {}
    for k in available:
        session, config = checkpoint_session(args.runs / f"fold{k}" / args.checkpoint_name, args.threads)
        configs[k] = config
        train_ids = [c for c, f in folds.items() if f != k]
        test_ids = sorted(c for c, f in folds.items() if f == k)
        atlas = Atlas([truth[c] for c in train_ids])
        for case_id in test_ids:
            image = data.load_image(case_id)
            started = time.perf_counter()
            pred = predict(session, image)
            timings.append(time.perf_counter() - started)
            for name, labels in (("model", pred), ("atlas", atlas.predict_atlas(image)), ("atlas_otsu", atlas.predict_atlas_otsu(image))):
                row = {"case_id": case_id, "fold": k, **case_metrics(labels, truth[case_id], by_id[case_id].ctr)}
                records[name].append(row)
        done = [r for r in records["model"] if r["fold"] == k]
        print(f"fold {k}: " + " ".join(f"{s} {np.mean([r[f'dice_{s}'] for r in done]):.4f}" for s in STRUCTURES), flush=True)
    if not records["model"]:
        print("no fold checkpoints found", file=sys.stderr)
        return 1

    evaluated = {r["case_id"]: folds[r["case_id"]] for r in records["model"]}
    result = {
        "description": "5-fold cross-validation on the 199 JSRT dev cases (SCR masks); each case predicted by the "
        "model of the fold that held it out (ONNX, onnxruntime CPU, runtime numpy pre/post-processing); "
        "Dice on the stored 512 x 512 grid; CTR vs metadata.csv ctr",
        "checkpoint": args.checkpoint_name,
        "folds_evaluated": available,
        "cases": len(records["model"]),
        "epochs": sorted({c.get("epochs") for c in configs.values()}),
        "model": summarise(records["model"], evaluated),
        "baselines": {name: summarise(records[name], evaluated) for name in ("atlas", "atlas_otsu")},
        "inference_seconds_one_core" if args.threads == 1 else f"inference_seconds_{args.threads}_threads": {
            "median": float(np.median(timings)),
            "p90": float(np.percentile(timings, 90)),
            "includes": "numpy preprocessing + onnxruntime + bilinear upsampling to 512 + argmax + largest components",
        },
        "per_case": [
            {**m, **{f"atlas_otsu_dice_{s}": b[f"dice_{s}"] for s in STRUCTURES}} for m, b in zip(records["model"], records["atlas_otsu"])
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_json(result))

    print(f"\n{'method':<12}" + "".join(f"{s + ' Dice (95% CI)':>30}" for s in STRUCTURES) + f"{'CTR MAE':>10}{'bias':>9}")
    for name, summary in (("model", result["model"]), *result["baselines"].items()):
        cells = "".join(
            f"{summary['dice'][s]['mean']:>10.4f} ({summary['dice'][s]['ci95'][0]:.4f}-{summary['dice'][s]['ci95'][1]:.4f})".rjust(30)
            for s in STRUCTURES
        )
        ctr = summary["ctr"]
        print(
            f"{name:<12}{cells}{ctr['mae'] if ctr['mae'] is not None else float('nan'):>10.4f}"
            f"{ctr['bias'] if ctr['bias'] is not None else float('nan'):>+9.4f}"
        )
    timing = np.median(timings)
    print(f"\ninference per image (threads={args.threads}): median {timing:.3f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
