"""Self-contained HTML reports of validation runs (and of two runs side by side).

Everything is inline: CSS in a ``<style>`` element, plots as base64 PNG rendered with
matplotlib's Agg backend, case overlays as base64 PNG drawn with numpy and Pillow.
No script, no font, no CDN: the file opens the same on a hospital workstation without
network access, and can be archived as it is.

Sections: identity (subject, code path, dataset name, version and content hash,
licence and citation, date, machine), warnings, the dataset's stated limitations, the
summary with bootstrap CIs, measurement agreement (Bland-Altman, MAE, ICC), ROC/FROC,
plots (box plots of Dice and surface distances, Bland-Altman, ROC, FROC), the worst
cases with outlines of prediction and reference, and the per-case table.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from radpilot.validation.evaluators import Overlay

CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,'DejaVu Sans',Arial,sans-serif;margin:0;color:#1d2433;background:#f4f6f9}
main{max-width:1280px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 10px;border-bottom:2px solid #dfe4ec;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.sub{color:#5a6478;margin:0 0 16px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px}th,td{border:1px solid #dfe4ec;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef2f7;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv th{width:210px}.wide{overflow-x:auto;max-width:100%}
.warn{background:#fff6e0;border:1px solid #f0c36d;border-left:6px solid #e0a21b;padding:8px 14px;margin:10px 0}
.ok{color:#1a7f37;font-weight:600}.bad{color:#b42318;font-weight:600}.muted{color:#6b7486}
tr.failed td{background:#fde8e7}tr.excluded td{background:#f3f3f3;color:#555}
.grid{display:flex;flex-wrap:wrap;gap:14px}.fig{margin:0}.fig img{border:1px solid #dfe4ec;max-width:100%}
.fig figcaption{font-size:12px;color:#4a5366;max-width:420px}.legend span{display:inline-block;margin-right:16px}
.sw{display:inline-block;width:14px;height:4px;vertical-align:middle;margin-right:4px}
code{font-size:12px;background:#f1f3f7;padding:1px 4px;border-radius:3px;word-break:break-all}
footer{margin-top:40px;font-size:12px;color:#6b7486}
"""

PREDICTED_COLOURS = [(230, 40, 40), (255, 140, 0), (200, 60, 220)]
REFERENCE_COLOURS = [(30, 200, 70), (40, 170, 255), (250, 230, 40)]


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def fmt(value: Any, digits: int | None = None) -> str:
    """A number for a table: 4 decimals below 10, 2 below 1000, else 1; '' for None; 'inf' kept."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return _e(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if digits is None:
        digits = 4 if abs(v) < 10 else 2 if abs(v) < 1000 else 1
    return f"{v:.{digits}f}"


# --------------------------------------------------------------------------------------------- images
def _png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure_png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return _png_data_uri(buffer.getvalue())


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _downsample_factor(shape: Sequence[int], target: int = 384) -> int:
    return max(1, int(math.ceil(max(shape) / target)))


def overlay_png(overlay: Overlay, target: int = 384) -> bytes:
    """A grey image (1st-99th percentile window) with reference outlines (green) and predicted outlines (red)."""
    from PIL import Image

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
    ax.set_xticks(range(1, len(series) + 1), [n[len(prefix):] or n for n, _ in series], rotation=15)
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
    label = entry.get("label") or output
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
        ax.scatter([1 - entry["specificity"]], [entry["sensitivity"]], color="#b42318", zorder=3,
                   label=f"threshold {entry['operating_threshold']}")
        ax.legend(loc="lower right", fontsize=8)
    ci = entry.get("auc_ci") or {}
    ax.set_title(f"ROC: {entry['label']}\nAUC {fmt(entry.get('auc'), 3)} (95% CI {fmt(ci.get('lower'), 3)}-{fmt(ci.get('upper'), 3)})", fontsize=10)
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


# --------------------------------------------------------------------------------------------- html parts
def _kv_table(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _identity(result: dict[str, Any]) -> str:
    s, d, m = result["subject"], result["dataset"], result["machine"]
    verified = '<span class="ok">matches the manifest</span>' if d.get("verified") else f'<span class="bad">{_e(d.get("verification"))}: {_e(d.get("verification_message"))}</span>'
    gate = result["gate_view"]
    model = f"{_e(s.get('model'))} {_e(s.get('model_version'))} (sha256 <code>{_e(s.get('model_sha256'))}</code>)" if s.get("model") else "none (no model file)"
    rows = [
        ("Run", f"{_e(result.get('run_id', 'not stored'))} - {_e(result['created_at'])} - {fmt(result['seconds'], 1)} s"),
        ("Subject", f"{_e(s['kind'])} <b>{_e(s['name'])}</b> version <b>{_e(s['version'])}</b>"),
        ("Model", model),
        ("Code path", _e(s["code_path"])),
        ("Dataset", f"<b>{_e(d['name'])}</b> version {_e(d['version'])} - {_e(d.get('title'))}"),
        ("Content hash", f"<code>{_e(d.get('content_hash'))}</code> {verified}"),
        ("Reference", f"{_e(d['reference'].get('kind'))}: {_e(d['reference'].get('description'))}"),
        ("Cases", f"{gate['n_evaluated']} evaluated of {gate['n_cases']} in the dataset; {gate['n_included']} in the statistics, "
                  f"{gate['n_excluded']} excluded, {gate['n_failed']} failed"),
        ("Independent of development", "yes" if gate["independent"] else f'<span class="bad">no</span> - {_e(gate.get("dependence"))}'),
        ("Licence", _e(d.get("licence"))),
        ("Terms", _e(d.get("terms"))),
        ("Citation", "<br>".join(_e(c) for c in d.get("citation", []))),
        ("Statistics", f"percentile bootstrap over cases, {result['summary']['n_resamples']} resamples, seed {result['summary']['seed']}, "
                       f"{int(round(result['summary']['confidence'] * 100))} % intervals"),
        ("Machine", _e(", ".join(f"{k} {v}" for k, v in m.items()))),
    ]
    return _kv_table(rows)


def _summary_table(result: dict[str, Any]) -> str:
    pct = int(round(result["summary"]["confidence"] * 100))
    head = f"<tr><th>metric</th><th>n</th><th>mean</th><th>{pct} % CI of the mean</th><th>median</th><th>SD</th><th>min</th><th>max</th></tr>"
    rows = []
    for name, s in result["summary"]["per_metric"].items():
        if not s.get("n"):
            rows.append(f"<tr><td>{_e(name)}</td><td class='num'>0</td><td colspan='6' class='muted'>no finite value ({s.get('n_nonfinite', 0)} non-finite)</td></tr>")
            continue
        ci = s["mean_ci"]
        ci_text = ("single case: no interval" if ci["single_case"] else f"n &lt; 5: no interval" if ci.get("too_few_cases")
                   else f"{fmt(ci['lower'])} - {fmt(ci['upper'])}")
        extra = f" <span class='bad'>(+{s['n_nonfinite']} inf)</span>" if s.get("n_nonfinite") else ""
        rows.append(
            f"<tr><td>{_e(name)}</td><td class='num'>{s['n']}{extra}</td><td class='num'><b>{fmt(s['mean'])}</b></td><td class='num'>{ci_text}</td>"
            f"<td class='num'>{fmt(s['median'])}</td><td class='num'>{fmt(s['sd'])}</td><td class='num'>{fmt(s['min'])}</td><td class='num'>{fmt(s['max'])}</td></tr>"
        )
    return f"<div class='wide'><table>{head}{''.join(rows)}</table></div>"


def _agreement_table(result: dict[str, Any]) -> str:
    entries = result["summary"].get("agreement") or {}
    if not entries:
        return ""
    pct = int(round(result["summary"]["confidence"] * 100))
    head = f"<tr><th>output</th><th>unit</th><th>n</th><th>bias (RadPilot - reference)</th><th>SD of differences</th><th>limits of agreement</th><th>MAE</th><th>{pct} % CI of MAE</th><th>ICC(2,1)</th></tr>"
    rows = []
    for name, e in entries.items():
        label = e.get("label") or name
        ba = e.get("bland_altman") or {}
        ci = e.get("mae_ci") or {}
        bias = ba.get("bias") if ba else (float(np.mean(np.subtract(e["predicted"], e["reference"]))) if e.get("predicted") else None)
        rows.append(
            f"<tr><td>{_e(label)}</td><td>{_e(e.get('unit'))}</td><td class='num'>{e['n']}</td><td class='num'>{fmt(bias)}</td>"
            f"<td class='num'>{fmt(ba.get('sd'))}</td><td class='num'>{fmt(ba.get('lower'))} to {fmt(ba.get('upper'))}</td>"
            f"<td class='num'>{fmt(e.get('mae'))}</td><td class='num'>{fmt(ci.get('lower'))} - {fmt(ci.get('upper'))}</td>"
            f"<td class='num'>{fmt(e.get('icc_2_1'))}</td></tr>"
        )
    return f"<h2>Measurement agreement</h2><div class='wide'><table>{head}{''.join(rows)}</table></div>"


def _classification_table(result: dict[str, Any]) -> str:
    entries = result["summary"].get("classification") or {}
    if not entries:
        return ""
    rows = []
    for name, e in entries.items():
        ci = e.get("auc_ci") or {}
        rows.append(
            f"<tr><td>{_e(e['label'])}</td><td class='num'>{e['n']}</td><td class='num'>{e.get('n_positive', '')}</td>"
            f"<td class='num'>{fmt(e.get('auc'), 3)}</td><td class='num'>{fmt(ci.get('lower'), 3)} - {fmt(ci.get('upper'), 3)}</td>"
            f"<td class='num'>{fmt(e.get('operating_threshold'))}</td><td class='num'>{fmt(e.get('sensitivity'), 3)}</td>"
            f"<td class='num'>{fmt(e.get('specificity'), 3)}</td><td class='num'>{e.get('tp', '')}/{e.get('fp', '')}/{e.get('tn', '')}/{e.get('fn', '')}</td>"
            f"<td>{_e(e.get('note', ''))}</td></tr>"
        )
    head = "<tr><th>question</th><th>n</th><th>positives</th><th>AUC</th><th>95 % CI</th><th>threshold</th><th>sensitivity</th><th>specificity</th><th>TP/FP/TN/FN</th><th></th></tr>"
    return f"<h2>Classification</h2><table>{head}{''.join(rows)}</table>"


TABLE_SKIP_PREFIXES = ("jaccard_", "abs_", "area_reference_px_", "area_predicted_px_")


def _case_table(result: dict[str, Any]) -> str:
    cases = result["cases"]
    metric_names: list[str] = []
    for c in cases:
        for n in c["metrics"]:
            if n not in metric_names and not n.startswith(TABLE_SKIP_PREFIXES) and not n.endswith("_abs_error") and not n.endswith("_abs_error_percent"):
                metric_names.append(n)
    value_names: list[str] = []
    for c in cases:
        for n in c["values"]:
            if n not in value_names:
                value_names.append(n)
    attr_names: list[str] = []
    for c in cases:
        for n in c["attributes"]:
            if n not in attr_names:
                attr_names.append(n)
    mask_names = {n for c in cases for n, v in c["values"].items() if v.get("reference_mask") is not None}
    head = (
        "<tr><th>case</th><th>status</th>" + "".join(f"<th>{_e(a)}</th>" for a in attr_names)
        + "".join(f"<th>{_e(m)}</th>" for m in metric_names)
        + "".join(f"<th>{_e(v)} RadPilot</th><th>{_e(v)} reference</th>"
                  + (f"<th>{_e(v)} on the reference mask</th>" if v in mask_names else "") for v in value_names)
        + "<th>s</th><th>remarks</th></tr>"
    )
    rows = []
    for c in cases:
        cls = "failed" if c["status"] == "failed" else "excluded" if c["excluded"] else ""
        status = "failed" if c["status"] == "failed" else f"excluded: {c['excluded']}" if c["excluded"] else "ok"
        remarks = c["error"] or ""
        cells = [f"<td>{_e(c['case_id'])}</td><td>{_e(status)}</td>"]
        cells += [f"<td>{_e(c['attributes'].get(a, ''))}</td>" for a in attr_names]
        cells += [f"<td class='num'>{fmt(c['metrics'].get(m))}</td>" for m in metric_names]
        for v in value_names:
            pair = c["values"].get(v, {})
            cells.append(f"<td class='num'>{fmt(pair.get('predicted'))}</td><td class='num'>{fmt(pair.get('reference'))}</td>")
            if v in mask_names:
                cells.append(f"<td class='num'>{fmt(pair.get('reference_mask'))}</td>")
        cells.append(f"<td class='num'>{fmt(c['seconds'], 2)}</td><td>{_e(remarks)}</td>")
        rows.append(f"<tr class='{cls}'>{''.join(cells)}</tr>")
    return f"<div class='wide'><table>{head}{''.join(rows)}</table></div>"


def _overlay_section(overlays: Sequence[Overlay]) -> str:
    if not overlays:
        return ""
    figures = []
    names: list[str] = []
    for o in overlays:
        for s in list(o.reference) + list(o.predicted):
            if s not in names:
                names.append(s)
        tag = f" <span class='muted'>(excluded: {_e(o.excluded)})</span>" if o.excluded else ""
        figures.append(
            f"<figure class='fig'><img alt='case {_e(o.case_id)}' src='{_png_data_uri(overlay_png(o))}'>"
            f"<figcaption><b>{_e(o.case_id)}</b>{tag} {_e(o.caption)}</figcaption></figure>"
        )
    structures = names
    legend = "".join(
        f"<span><i class='sw' style='background:rgb{REFERENCE_COLOURS[i % 3]}'></i>{_e(s)} reference "
        f"<i class='sw' style='background:rgb{PREDICTED_COLOURS[i % 3]}'></i>{_e(s)} RadPilot</span>"
        for i, s in enumerate(structures)
    )
    return (
        "<h2>Worst cases</h2><p class='legend'>" + legend + "</p>"
        "<p class='muted'>The cases with the lowest value of the primary metric among those in the statistics, "
        "then the cases excluded from them (reference defects).</p>"
        f"<div class='grid'>{''.join(figures)}</div>"
    )


def render_report(result: dict[str, Any], overlays: Sequence[Overlay] = ()) -> str:
    """The self-contained HTML report of one validation run (``result`` as returned by the runner)."""
    s, d = result["subject"], result["dataset"]
    title = f"Validation of {s['name']} {s['version']} on {d['name']} {d['version']}"
    warnings = "".join(f"<div class='warn'>{_e(w)}</div>" for w in result.get("warnings", []))
    limitations = "".join(f"<li>{_e(x)}</li>" for x in d.get("limitations", []))
    plots = []
    for prefix, plot_title, ylabel in (("dice_", "Dice per case", "Dice"), ("hd95_", "HD95 per case", "distance"), ("assd_", "ASSD per case", "distance")):
        png = box_plot(result, prefix, plot_title, ylabel)
        if png:
            plots.append(f"<figure class='fig'><img alt='{_e(plot_title)}' src='{png}'></figure>")
    for output, entry in (result["summary"].get("agreement") or {}).items():
        png = bland_altman_plot(output, entry)
        if png:
            plots.append(f"<figure class='fig'><img alt='Bland-Altman {_e(output)}' src='{png}'></figure>")
        elif entry.get("n"):
            plots.append(f"<p class='muted'>{_e(output)}: a Bland-Altman plot needs at least 2 cases.</p>")
    for name, entry in (result["summary"].get("classification") or {}).items():
        png = roc_plot(name, entry)
        if png:
            plots.append(f"<figure class='fig'><img alt='ROC {_e(name)}' src='{png}'></figure>")
    detection = result["summary"].get("detection")
    if detection:
        png = froc_plot(detection)
        if png:
            plots.append(f"<figure class='fig'><img alt='FROC' src='{png}'></figure>")
    primary = result.get("primary_metric", "")
    primary_summary = result["summary"]["per_metric"].get(primary) or {}
    headline = ""
    if primary_summary.get("n"):
        ci = primary_summary["mean_ci"]
        ci_text = "" if ci["single_case"] or ci.get("too_few_cases") else f" (95 % CI {fmt(ci['lower'])} - {fmt(ci['upper'])})"
        headline = f"<p><b>{_e(primary)}</b>: mean {fmt(primary_summary['mean'])}{ci_text}, median {fmt(primary_summary['median'])}, min {fmt(primary_summary['min'])} over {primary_summary['n']} cases.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<meta name="generator" content="RadPilot validation workbench"><style>{CSS}</style></head>
<body><main>
<h1>{_e(title)}</h1>
<p class="sub">RadPilot validation workbench - every accuracy figure RadPilot shows comes from a report like this one.</p>
{warnings}
{headline}
<h2>What was measured</h2>
{_identity(result)}
<h2>Limitations of this dataset (from its README)</h2>
<ul>{limitations or '<li>none stated</li>'}</ul>
<h2>Summary</h2>
{_summary_table(result)}
{_agreement_table(result)}
{_classification_table(result)}
<h2>Plots</h2>
<div class="grid">{''.join(plots) or '<p class="muted">no plot for this run</p>'}</div>
{_overlay_section(overlays)}
<h2>Per-case results</h2>
{_case_table(result)}
<footer>Result format {_e(result.get('format'))}. The JSON beside this report holds every number shown here.</footer>
</main></body></html>
"""


# --------------------------------------------------------------------------------------------- comparison
def compare_results(a: dict[str, Any], b: dict[str, Any], *, seed: int = 0, n_resamples: int = 2000) -> dict[str, Any]:
    """Two runs side by side: every flat metric with its difference (B - A), and a paired comparison on shared cases."""
    from radpilot.validation import metrics as M

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
            pairs = [(x, y) for x, y in pairs if isinstance(x, (int, float)) and isinstance(y, (int, float)) and math.isfinite(x) and math.isfinite(y)]
            if len(pairs) < 1:
                continue
            diff = np.array([y - x for x, y in pairs])
            ci = M.bootstrap_ci(diff, np.mean, n_resamples=n_resamples, seed=seed)
            paired[m] = {"n": len(pairs), "mean_difference": float(diff.mean()), "ci_lower": ci.lower, "ci_upper": ci.upper,
                         "single_case": ci.single_case, "n_b_better": int((diff > 0).sum()), "n_a_better": int((diff < 0).sum())}
        if a["dataset"].get("content_hash") != b["dataset"].get("content_hash"):
            paired["_warning"] = "the two runs saw different dataset contents (hashes differ)"
    return {
        "a": {k: a.get(k) for k in ("run_id", "created_at")} | {"subject": a["subject"], "dataset": {"name": a["dataset"]["name"], "version": a["dataset"]["version"], "content_hash": a["dataset"].get("content_hash")}},
        "b": {k: b.get(k) for k in ("run_id", "created_at")} | {"subject": b["subject"], "dataset": {"name": b["dataset"]["name"], "version": b["dataset"]["version"], "content_hash": b["dataset"].get("content_hash")}},
        "metrics": rows,
        "paired": paired,
        "primary_metric": a.get("primary_metric"),
    }


def render_comparison(comparison: dict[str, Any], a: dict[str, Any], b: dict[str, Any]) -> str:
    """Self-contained HTML of :func:`compare_results`, with Dice box plots of both runs."""
    la = f"A: {a['subject']['name']} {a['subject']['version']} on {a['dataset']['name']} (run {a.get('run_id')})"
    lb = f"B: {b['subject']['name']} {b['subject']['version']} on {b['dataset']['name']} (run {b.get('run_id')})"
    rows = "".join(
        f"<tr><td>{_e(r['metric'])}</td><td class='num'>{fmt(r['a'])}</td><td class='num'>{fmt(r['b'])}</td><td class='num'>{fmt(r['difference'])}</td></tr>"
        for r in comparison["metrics"]
    )
    paired_rows = "".join(
        f"<tr><td>{_e(m)}</td><td class='num'>{p['n']}</td><td class='num'>{fmt(p['mean_difference'])}</td>"
        f"<td class='num'>{'' if p['single_case'] else fmt(p['ci_lower']) + ' - ' + fmt(p['ci_upper'])}</td>"
        f"<td class='num'>{p['n_b_better']}</td><td class='num'>{p['n_a_better']}</td></tr>"
        for m, p in comparison["paired"].items() if not m.startswith("_")
    )
    warning = f"<div class='warn'>{_e(comparison['paired']['_warning'])}</div>" if "_warning" in comparison["paired"] else ""
    plots = []
    for label, doc in (("A", a), ("B", b)):
        png = box_plot(doc, "dice_", f"Dice per case, run {label}", "Dice")
        if png:
            plots.append(f"<figure class='fig'><img alt='Dice {label}' src='{png}'></figure>")
    paired_html = (
        "<h2>Paired comparison on shared cases (B - A)</h2><p class='muted'>Mean per-case difference with a bootstrap 95 % CI; "
        "'B higher' counts cases where B's value is higher (better for Dice, worse for distances and errors).</p>"
        f"<table><tr><th>metric</th><th>n</th><th>mean difference</th><th>95 % CI</th><th>B higher</th><th>A higher</th></tr>{paired_rows}</table>"
        if paired_rows else "<p class='muted'>No paired comparison: the runs are on different datasets.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Validation comparison</title><style>{CSS}</style></head>
<body><main><h1>Validation comparison</h1><p class="sub">{_e(la)}<br>{_e(lb)}</p>{warning}
<h2>Metrics side by side</h2><div class="wide"><table><tr><th>metric</th><th>A</th><th>B</th><th>B - A</th></tr>{rows}</table></div>
{paired_html}
<h2>Plots</h2><div class="grid">{''.join(plots)}</div>
</main></body></html>
"""
