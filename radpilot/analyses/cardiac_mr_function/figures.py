"""The pictures the analysis draws itself: contours at end-diastole and end-systole, and the volume-time curve (PIL, numpy)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from radpilot.analyses.cardiac_mr_function.function import Function, VolumeCurves

COLORS = {1: (70, 130, 255), 2: (60, 220, 90), 3: (255, 70, 70)}  # RV cavity, LV myocardium, LV cavity
NAMES = {1: "RV cavity", 2: "LV myocardium", 3: "LV cavity"}
PANEL = 320


def _grey(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1.0, 99.5])
    return (np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * 255).astype(np.uint8)


def _panel(image: np.ndarray, labels: np.ndarray, centre_rc: tuple[float, float], half: int, title: str) -> Image.Image:
    r0, c0 = int(round(centre_rc[0])) - half, int(round(centre_rc[1])) - half
    pad = ((half * 2, half * 2), (half * 2, half * 2))
    image = np.pad(_grey(image), pad)[r0 + 2 * half : r0 + 4 * half, c0 + 2 * half : c0 + 4 * half]
    labels = np.pad(labels, pad)[r0 + 2 * half : r0 + 4 * half, c0 + 2 * half : c0 + 4 * half]
    scale = PANEL / image.shape[0]
    grey = np.asarray(Image.fromarray(image).resize((PANEL, PANEL), Image.Resampling.BILINEAR))
    big = np.asarray(Image.fromarray(labels).resize((PANEL, PANEL), Image.Resampling.NEAREST))
    rgb = np.repeat(grey[:, :, None], 3, axis=2).copy()
    width = max(1, int(round(scale / 2)))
    for value, color in COLORS.items():
        mask = big == value
        if mask.any():
            rgb[mask & ~ndimage.binary_erosion(mask, iterations=width)] = color
    panel = Image.fromarray(rgb)
    ImageDraw.Draw(panel).text((6, 4), title, fill=(255, 255, 0), font=ImageFont.load_default())
    return panel


def contour_montage(
    frames: np.ndarray,
    labels: np.ndarray,
    function: Function,
    centre_rc: tuple[float, float],
    spacing_rc: tuple[float, float],
    phase_numbers: list[int],
) -> np.ndarray:
    """Basal, mid and apical slices (rows) at ED and ES (columns) with the contours, and a legend: RGB uint8."""
    lv_slices = np.nonzero((labels[function.ed_phase] > 0).any(axis=(1, 2)))[0]
    if lv_slices.size == 0:
        lv_slices = np.arange(frames.shape[1])
    chosen = sorted({int(lv_slices[int(round(q * (lv_slices.size - 1)))]) for q in (0.15, 0.5, 0.85)})
    half = int(round(60.0 / min(spacing_rc)))  # 120 mm around the heart
    rows = []
    for z in chosen:
        cells = [
            _panel(frames[p, z], labels[p, z], centre_rc, half, f"{name} (phase {phase_numbers[p]}), slice {z + 1}")
            for name, p in (("ED", function.ed_phase), ("ES", function.es_phase))
        ]
        rows.append(np.concatenate([np.asarray(c) for c in cells], axis=1))
    legend = Image.new("RGB", (2 * PANEL, 64), (0, 0, 0))
    draw = ImageDraw.Draw(legend)
    font = ImageFont.load_default()
    for i, (value, name) in enumerate(NAMES.items()):
        draw.rectangle([8 + i * 200, 8, 20 + i * 200, 20], fill=COLORS[value])
        draw.text((26 + i * 200, 8), name, fill=(255, 255, 255), font=font)
    draw.text(
        (8, 32),
        f"LV EF {function.lv_ef_percent:.0f} %  EDV {function.lv_edv_ml:.0f} mL  ESV {function.lv_esv_ml:.0f} mL  "
        f"RV EF {function.rv_ef_percent:.0f} %",
        fill=(255, 255, 255),
        font=font,
    )
    return np.concatenate([*rows, np.asarray(legend)], axis=0)


def volume_time_curve(curves: VolumeCurves, function: Function, times_ms: list[float] | None, phase_numbers: list[int]) -> np.ndarray:
    """LV and RV cavity volume against time (or phase), ED and ES marked: RGB uint8, 640 x 400."""
    width, height, left, right, top, bottom = 640, 400, 60, 20, 30, 50
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    x_values = np.asarray(times_ms if times_ms else phase_numbers, dtype=np.float64)
    x_label = "trigger time (ms)" if times_ms else "phase"
    y_max = float(max(curves.lv_ml.max(), curves.rv_ml.max(), 1.0)) * 1.1
    x_min, x_max = float(x_values.min()), float(max(x_values.max(), x_values.min() + 1.0))

    def xy(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_min) / (x_max - x_min) * (width - left - right), height - bottom - y / y_max * (height - top - bottom))

    draw.rectangle([left, top, width - right, height - bottom], outline=(0, 0, 0))
    for k in range(5):
        y = y_max * k / 4
        px, py = xy(x_min, y)
        draw.line([px - 4, py, px, py], fill=(0, 0, 0))
        draw.text((4, py - 6), f"{y:.0f}", fill=(0, 0, 0), font=font)
    for k in range(5):
        x = x_min + (x_max - x_min) * k / 4
        px, py = xy(x, 0)
        draw.line([px, py, px, py + 4], fill=(0, 0, 0))
        draw.text((px - 10, py + 8), f"{x:.0f}", fill=(0, 0, 0), font=font)
    draw.text((width // 2 - 40, height - 20), x_label, fill=(0, 0, 0), font=font)
    draw.text((4, 8), "volume (mL)", fill=(0, 0, 0), font=font)
    for values, color in ((curves.lv_ml, COLORS[3]), (curves.rv_ml, COLORS[1])):
        points = [xy(float(x), float(y)) for x, y in zip(x_values, values)]
        draw.line(points, fill=color, width=2)
        for px, py in points:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=color)
    for phase, name in ((function.ed_phase, "ED"), (function.es_phase, "ES")):
        px, py = xy(float(x_values[phase]), float(curves.lv_ml[phase]))
        draw.line([px, top, px, height - bottom], fill=(120, 120, 120))
        draw.text((px + 3, top + 2), f"{name} phase {phase_numbers[phase]}", fill=(0, 0, 0), font=font)
    draw.text((left + 8, height - bottom - 16), "red: LV cavity  blue: RV cavity", fill=(0, 0, 0), font=font)
    return np.asarray(image, dtype=np.uint8)
