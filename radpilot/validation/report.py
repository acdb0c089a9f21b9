"""Self-contained HTML reports of validation runs (and of two runs side by side).

Everything is inline: CSS in a ``<style>`` element, plots as base64 PNG rendered with
matplotlib's Agg backend, case overlays as base64 PNG drawn with numpy and Pillow.
No script, no font, no CDN: the file opens the same on a hospital workstation without
network access, and can be archived as it is. The HTML comes from the Jinja2
templates in ``radpilot/validation/templates`` with autoescaping (:mod:`radpilot.html`);
this module computes what they show.

Sections: identity (subject, code path, dataset name, version and content hash,
licence and citation, date, machine), warnings, the dataset's stated limitations, the
summary with bootstrap CIs, measurement agreement (Bland-Altman, MAE, ICC), ROC/FROC,
plots (box plots of Dice and surface distances, Bland-Altman, ROC, FROC), the worst
cases with outlines of prediction and reference, and the per-case table.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from radpilot.html import template_environment
from radpilot.validation import metrics as M
from radpilot.validation.evaluators import Overlay

PREDICTED_COLOURS = [(230, 40, 40), (255, 140, 0), (200, 60, 220)]
REFERENCE_COLOURS = [(30, 200, 70), (40, 170, 255), (250, 230, 40)]


def fmt(value: Any, digits: int | None = None) -> str:
    """A number for a table: 4 decimals below 10, 2 below 1000, else 1; '' for None; 'inf' kept.

    Plain text: the templates escape it (``|fmt``), and plot titles use it as it is.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if digits is None:
        digits = 4 if abs(v) < 10 else 2 if abs(v) < 1000 else 1
    return f"{v:.{digits}f}"


def _output_label(name: str, entry: dict[str, Any]) -> str:
    """How the report names an output: the label its analysis declares (runs stored before labels were kept: the name)."""
    return entry.get("label") or name


# --------------------------------------------------------------------------------------------- images
def _png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure_png(fig: Any) -> str:
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib loads lazily (about 1 s), only when a report is drawn

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return _png_data_uri(buffer.getvalue())


def _pyplot() -> Any:
    import matplotlib  # noqa: PLC0415 - matplotlib loads lazily (about 1 s), only when a report is drawn

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after the Agg backend is chosen, as matplotlib requires

    return plt


def _outline(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _downsample_factor(shape: Sequence[int], target: int = 384) -> int:
    return max(1, int(math.ceil(max(shape) / target)))


def overlay_png(overlay: Overlay, target: int = 384) -> bytes:
    """A grey image (1st-99th percentile window) with reference outlines (green) and predicted outlines (red)."""
    image = np.asarray(overlay.image, dtype=np.float64)
    f = _downsample_factor(image.shape, target)
    low, high = np.percentile(image, [1, 99])
    grey = np.clip((image - low) / (high - low if high > low else 1.0), 0, 1)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    if f > 1:
        h, w = (image.shape[0] // f) * f, (image.shape[1] // f) * f
        rgb = rgb[:h, :w].reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3)).astype(np.uint8)

    def small(mask: np.ndarray) -> np.ndarray:
        m = np.asarray(mask, dtype=bool)
        if f > 1:
            h, w = (m.shape[0] // f) * f, (m.shape[1] // f) * f
            m = m[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3)) >= 0.5
        return m

    for i, mask in enumerate(overlay.reference.values()):
        rgb[_outline(small(mask))] = REFERENCE_COLOURS[i % len(REFERENCE_COLOURS)]
    for i, mask in enumerate(overlay.predicted.values()):
        rgb[_outline(small(mask))] = PREDICTED_COLOURS[i % len(PREDICTED_COLOURS)]
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _metric_values(result: dict[str, Any], name: str) -> list[float]:
    out = []
    for case in result["cases"]:
        if case["status"] != "ok" or case["excluded"]:
            continue
        v = case["metrics"].get(name)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out.append(float(v))
    return out


def box_plot(result: dict[str, Any], prefix: str, title: str, ylabel: str) -> str | None:
    """Box plot (with the cases as points) of every per-case metric whose name starts with ``prefix``."""
    names = [n for n in result["summary"]["per_metric"] if n.startswith(prefix) and n != "dice_mean"]
    series = [(n, _metric_values(result, n)) for n in names]
    series = [(n, v) for n, v in series if v]
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(series), 3.6))
    ax.boxplot([v for _, v in series], showfliers=False, widths=0.5)
    rng = np.random.default_rng(0)
    for i, (_, values) in enumerate(series, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=9, alpha=0.6, color="#2b6cb0", zorder=3)
    ax.set_xticks(range(1, len(series) + 1), [n[len(prefix) :] or n for n, _ in series], rotation=15)
    ax.set_title(title, fontsize=11)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    return _figure_png(fig)


def bland_altman_plot(output: str, entry: dict[str, Any]) -> str | None:
    if entry.get("bland_altman") is None:
        return None
    plt = _pyplot()
    p, r = np.asarray(entry["predicted"]), np.asarray(entry["reference"])
    ba = entry["bland_altman"]
    unit = entry.get("unit") or ""
    label = _output_label(output, entry)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    mean, diff = (p + r) / 2, p - r
    ax1.scatter(mean, diff, s=14, color="#2b6cb0", alpha=0.75)
    for y, style, text in ((ba["bias"], "-", "bias"), (ba["lower"], "--", "-1.96 SD"), (ba["upper"], "--", "+1.96 SD")):
        ax1.axhline(y, linestyle=style, color="#b42318" if text == "bias" else "#6b7486", linewidth=1)
        ax1.annotate(f"{text} {y:.3g}", xy=(1.0, y), xycoords=("axes fraction", "data"), fontsize=8, ha="right", va="bottom")
    ax1.axhline(0, color="black", linewidth=0.5)
    ax1.set_xlabel(f"mean of RadPilot and reference {unit}".strip())
    ax1.set_ylabel(f"RadPilot - reference {unit}".strip())
    ax1.set_title(f"Bland-Altman: {label} (n={ba['n']})", fontsize=11)
    lo, hi = float(min(p.min(), r.min())), float(max(p.max(), r.max()))
    pad = (hi - lo) * 0.05 or 1.0
    ax2.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#6b7486", linewidth=1)
    ax2.scatter(r, p, s=14, color="#2b6cb0", alpha=0.75)
    ax2.set_xlabel(f"reference {unit}".strip())
    ax2.set_ylabel(f"RadPilot {unit}".strip())
    ax2.set_title(f"{label}: RadPilot vs reference", fontsize=11)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _figure_png(fig)


def roc_plot(name: str, entry: dict[str, Any]) -> str | None:
    if not entry.get("roc"):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot(entry["roc"]["fpr"], entry["roc"]["tpr"], color="#2b6cb0", linewidth=2)
    ax.plot([0, 1], [0, 1], color="#6b7486", linestyle="--", linewidth=1)
    if entry.get("sensitivity") is not None and entry.get("specificity") is not None:
        ax.scatter(
            [1 - entry["specificity"]], [entry["sensitivity"]], color="#b42318", zorder=3, label=f"threshold {entry['operating_threshold']}"
        )
        ax.legend(loc="lower right", fontsize=8)
    ci = entry.get("auc_ci") or {}
    ax.set_title(
        f"ROC: {entry['label']}\nAUC {fmt(entry.get('auc'), 3)} (95% CI {fmt(ci.get('lower'), 3)}-{fmt(ci.get('upper'), 3)})", fontsize=10
    )
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    return _figure_png(fig)


def froc_plot(entry: dict[str, Any]) -> str | None:
    if not entry.get("fps_per_case"):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    ax.step(entry["fps_per_case"], entry["sensitivity"], where="post", color="#2b6cb0", linewidth=2)
    ax.set_xscale("symlog", linthresh=0.125)
    ax.set_xlim(0, max(8.0, max(entry["fps_per_case"])))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per case")
    ax.set_ylabel("sensitivity")
    ax.set_title(f"FROC: CPM {fmt(entry.get('cpm'), 3)}", fontsize=11)
    ax.grid(alpha=0.3)
    return _figure_png(fig)


# --------------------------------------------------------------------------------------------- what the templates show
TEMPLATES = template_environment("radpilot.validation", filters={"fmt": fmt})
TABLE_SKIP_PREFIXES = ("jaccard_", "abs_", "area_reference_px_", "area_predicted_px_")


@dataclass(frozen=True)
class Plot:
    """One entry of a report's plot grid: an inline PNG (``src``, a data: URI) or, without one, a note."""

    alt: str = ""
    src: str | None = None
    note: str = ""


@dataclass(frozen=True)
class AgreementRow:
    """One output's agreement with the reference, as the agreement table shows it."""

    label: str
    unit: str | None
    n: int
    bias: float | None
    sd: float | None
    lower: float | None
    upper: float | None
    mae: float | None
    mae_lower: float | None
    mae_upper: float | None
    icc: float | None


@dataclass(frozen=True)
class OverlayFigure:
    case_id: str
    excluded: str | None
    caption: str
    src: str


@dataclass(frozen=True)
class LegendEntry:
    name: str
    reference_colour: str
    predicted_colour: str


@dataclass(frozen=True)
class CaseColumns:
    """The columns of the per-case table, in the order the cases first name them."""

    attributes: list[str]
    metrics: list[str]
    values: list[str]
    masks: set[str]  # values that also have a measurement on the reference mask


def _confidence_percent(result: dict[str, Any]) -> int:
    return int(round(result["summary"]["confidence"] * 100))


def _agreement_rows(result: dict[str, Any]) -> list[AgreementRow]:
    rows = []
    for name, e in (result["summary"].get("agreement") or {}).items():
        ba = e.get("bland_altman") or {}
        ci = e.get("mae_ci") or {}
        bias = ba.get("bias") if ba else (float(np.mean(np.subtract(e["predicted"], e["reference"]))) if e.get("predicted") else None)
        rows.append(
            AgreementRow(
                label=_output_label(name, e),
                unit=e.get("unit"),
                n=e["n"],
                bias=bias,
                sd=ba.get("sd"),
                lower=ba.get("lower"),
                upper=ba.get("upper"),
                mae=e.get("mae"),
                mae_lower=ci.get("lower"),
                mae_upper=ci.get("upper"),
                icc=e.get("icc_2_1"),
            )
        )
    return rows


def _case_columns(cases: Sequence[dict[str, Any]]) -> CaseColumns:
    def first_seen(names: Any) -> list[str]:
        return list(dict.fromkeys(names))

    return CaseColumns(
        attributes=first_seen(n for c in cases for n in c["attributes"]),
        metrics=first_seen(
            n
            for c in cases
            for n in c["metrics"]
            if not n.startswith(TABLE_SKIP_PREFIXES) and not n.endswith("_abs_error") and not n.endswith("_abs_error_percent")
        ),
        values=first_seen(n for c in cases for n in c["values"]),
        masks={n for c in cases for n, v in c["values"].items() if v.get("reference_mask") is not None},
    )


def _plots(result: dict[str, Any]) -> list[Plot]:
    plots = []
    for prefix, plot_title, ylabel in (
        ("dice_", "Dice per case", "Dice"),
        ("hd95_", "HD95 per case", "distance"),
        ("assd_", "ASSD per case", "distance"),
    ):
        png = box_plot(result, prefix, plot_title, ylabel)
        if png:
            plots.append(Plot(alt=plot_title, src=png))
    for output, entry in (result["summary"].get("agreement") or {}).items():
        png = bland_altman_plot(output, entry)
        if png:
            plots.append(Plot(alt=f"Bland-Altman {output}", src=png))
        elif entry.get("n"):
            plots.append(Plot(note=f"{output}: a Bland-Altman plot needs at least 2 cases."))
    for name, entry in (result["summary"].get("classification") or {}).items():
        png = roc_plot(name, entry)
        if png:
            plots.append(Plot(alt=f"ROC {name}", src=png))
    detection = result["summary"].get("detection")
    if detection:
        png = froc_plot(detection)
        if png:
            plots.append(Plot(alt="FROC", src=png))
    return plots


def _overlay_figures(overlays: Sequence[Overlay]) -> tuple[list[OverlayFigure], list[LegendEntry]]:
    figures = [OverlayFigure(o.case_id, o.excluded, o.caption, _png_data_uri(overlay_png(o))) for o in overlays]
    structures = list(dict.fromkeys(s for o in overlays for s in [*o.reference, *o.predicted]))
    legend = [
        LegendEntry(name, f"rgb{REFERENCE_COLOURS[i % len(REFERENCE_COLOURS)]}", f"rgb{PREDICTED_COLOURS[i % len(PREDICTED_COLOURS)]}")
        for i, name in enumerate(structures)
    ]
    return figures, legend


def render_report(result: dict[str, Any], overlays: Sequence[Overlay] = ()) -> str:
    """The self-contained HTML report of one validation run (``result`` as returned by the runner)."""
    s, d = result["subject"], result["dataset"]
    figures, legend = _overlay_figures(overlays)
    return TEMPLATES.get_template("report.html").render(
        result=result,
        title=f"Validation of {s['name']} {s['version']} on {d['name']} {d['version']}",
        confidence_percent=_confidence_percent(result),
        machine=", ".join(f"{k} {v}" for k, v in result["machine"].items()),
        agreement=_agreement_rows(result),
        plots=_plots(result),
        overlays=figures,
        legend=legend,
        columns=_case_columns(result["cases"]),
    )


# --------------------------------------------------------------------------------------------- comparison
def compare_results(a: dict[str, Any], b: dict[str, Any], *, seed: int = 0, n_resamples: int = 2000) -> dict[str, Any]:
    """Two runs side by side: every flat metric with its difference (B - A), and a paired comparison on shared cases."""
    names = sorted(set(a["metrics"]) | set(b["metrics"]))
    rows = []
    for name in names:
        va, vb = a["metrics"].get(name), b["metrics"].get(name)
        rows.append({"metric": name, "a": va, "b": vb, "difference": (vb - va) if va is not None and vb is not None else None})
    paired: dict[str, Any] = {}
    if a["dataset"]["name"] == b["dataset"]["name"]:
        ca = {c["case_id"]: c for c in a["cases"] if c["status"] == "ok" and not c["excluded"]}
        cb = {c["case_id"]: c for c in b["cases"] if c["status"] == "ok" and not c["excluded"]}
        shared = sorted(set(ca) & set(cb))
        metric_names = [m for m in a["summary"]["per_metric"] if m in b["summary"]["per_metric"]]
        for m in metric_names:
            pairs = [(ca[c]["metrics"].get(m), cb[c]["metrics"].get(m)) for c in shared]
            pairs = [
                (x, y)
                for x, y in pairs
                if isinstance(x, (int, float)) and isinstance(y, (int, float)) and math.isfinite(x) and math.isfinite(y)
            ]
            if len(pairs) < 1:
                continue
            diff = np.array([y - x for x, y in pairs])
            ci = M.bootstrap_ci(diff, np.mean, n_resamples=n_resamples, seed=seed)
            paired[m] = {
                "n": len(pairs),
                "mean_difference": float(diff.mean()),
                "ci_lower": ci.lower,
                "ci_upper": ci.upper,
                "single_case": ci.single_case,
                "n_b_better": int((diff > 0).sum()),
                "n_a_better": int((diff < 0).sum()),
            }
        if a["dataset"].get("content_hash") != b["dataset"].get("content_hash"):
            paired["_warning"] = "the two runs saw different dataset contents (hashes differ)"
    return {
        "a": {k: a.get(k) for k in ("run_id", "created_at")}
        | {
            "subject": a["subject"],
            "dataset": {"name": a["dataset"]["name"], "version": a["dataset"]["version"], "content_hash": a["dataset"].get("content_hash")},
        },
        "b": {k: b.get(k) for k in ("run_id", "created_at")}
        | {
            "subject": b["subject"],
            "dataset": {"name": b["dataset"]["name"], "version": b["dataset"]["version"], "content_hash": b["dataset"].get("content_hash")},
        },
        "metrics": rows,
        "paired": paired,
        "primary_metric": a.get("primary_metric"),
    }


def render_comparison(comparison: dict[str, Any], a: dict[str, Any], b: dict[str, Any]) -> str:
    """Self-contained HTML of :func:`compare_results`, with Dice box plots of both runs."""
    plots = []
    for label, doc in (("A", a), ("B", b)):
        png = box_plot(doc, "dice_", f"Dice per case, run {label}", "Dice")
        if png:
            plots.append(Plot(alt=f"Dice {label}", src=png))
    return TEMPLATES.get_template("comparison.html").render(
        comparison=comparison,
        label_a=f"A: {a['subject']['name']} {a['subject']['version']} on {a['dataset']['name']} (run {a.get('run_id')})",
        label_b=f"B: {b['subject']['name']} {b['subject']['version']} on {b['dataset']['name']} (run {b.get('run_id')})",
        paired={m: p for m, p in comparison["paired"].items() if not m.startswith("_")},
        plots=plots,
    )
