"""The adapters that read each dataset layout: list a folder's cases, load one case.

Layouts (``layout`` in the manifest; ``options`` tune column and file names):

``png-slices``
    2-D slices with one binary mask each: ``images/<id>.png`` (16-bit, stored value =
    source value + ``value_offset``) and ``masks/<id>.png``; a CSV (``cases_file``)
    lists them, or the two folders are paired by file name. The ``ct-lung-slices``
    layout.
``png-radiographs``
    2-D radiographs with one mask per structure, ``masks/<structure>/<id>.png``, and a
    CSV with pixel spacing and reference values (e.g. the CTR). The ``cxr-jsrt`` layout.
``dicom-series``
    One folder per case with a DICOM series (``<case>/dicom/``) and a reference label
    volume (NIfTI ``.nii``/``.nii.gz`` or MetaImage ``.mha``) on the same grid, plus an
    optional CSV of reference values. The ``ct-lung`` layout.
``volume-files``
    As ``dicom-series`` but the image is itself a NIfTI or MetaImage volume (values in
    HU for CT, or stored values turned into HU by ``rescale_slope`` / ``rescale_intercept``
    as a DICOM modality LUT would). The volume is built directly from the file, not by
    the DICOM reader.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError

from radpilot.validation.datasets.cases import CaseData, CaseRef, ReferencePoint
from radpilot.validation.datasets.errors import DatasetError
from radpilot.validation.datasets.grid import volume_from_label_image
from radpilot.validation.datasets.readers import read_label_image


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def _float_or_none(value: str | None) -> float | None:
    if value is None or str(value).strip() in ("", "unknown", "nan", "NA"):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _require_columns(rows: list[dict[str, str]], columns: Iterable[str], path: Path) -> None:
    if not rows:
        raise DatasetError(f"{path} lists no cases")
    missing = [c for c in columns if c and c not in rows[0]]
    if missing:
        raise DatasetError(f"{path} lacks column(s) {missing}; it has {sorted(rows[0])}")


def _filters(rows: list[dict[str, str]], options: dict[str, Any]) -> list[dict[str, str]]:
    """Rows kept by ``options.split`` ({column, allowed}); others are not part of the dataset at all."""
    split = options.get("split")
    if not split:
        return rows
    column, allowed = split["column"], {str(v) for v in split["allowed"]}
    return [r for r in rows if r.get(column) in allowed]


def _exclusion(row: dict[str, str], options: dict[str, Any]) -> str | None:
    rule = options.get("exclude_from_statistics")
    if not rule:
        return None
    column, allowed = rule["column"], {str(v) for v in rule["allowed"]}
    value = row.get(column, "")
    if value in allowed:
        return None
    return f"{column} = {value}" + (f" ({rule['reason']})" if rule.get("reason") else "")


def _reference_values(row: dict[str, str], options: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for output, column in (options.get("reference_values") or {}).items():
        value = _float_or_none(row.get(column))
        if value is not None:
            out[str(output)] = value
    return out


def _reference_points(row: dict[str, str], options: dict[str, Any]) -> dict[str, list[ReferencePoint]]:
    """``options.reference_points``: {detection name: {row, column, diameter_mm columns}}; a row without a centre has none."""
    out: dict[str, list[ReferencePoint]] = {}
    for name, columns in (options.get("reference_points") or {}).items():
        if not isinstance(columns, dict) or not {"row", "column", "diameter_mm"} <= set(columns):
            raise DatasetError(f"options.reference_points.{name} must name its row, column and diameter_mm columns, got {columns!r}")
        y, x, size = (_float_or_none(row.get(columns[key])) for key in ("row", "column", "diameter_mm"))
        out[str(name)] = [ReferencePoint(y, x, size or 0.0)] if y is not None and x is not None else []
    return out


def _attributes(row: dict[str, str], options: dict[str, Any]) -> dict[str, str]:
    return {str(name): str(row.get(column, "")) for name, column in (options.get("attributes") or {}).items()}


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as handle:
            return np.array(handle)
    except OSError as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


class Adapter:
    """Reads one layout: lists the cases of a folder and loads one case."""

    layout: str = ""

    def cases(self, root: Path, options: dict[str, Any]) -> list[CaseRef]:
        raise NotImplementedError

    def load(self, root: Path, case: CaseRef, options: dict[str, Any]) -> CaseData:
        raise NotImplementedError


class PngSlicesAdapter(Adapter):
    """``png-slices``: one 16-bit PNG image and one binary PNG mask per 2-D slice (see the module docstring).

    Options: ``cases_file`` (CSV; without it ``images/*.png`` are paired with
    ``masks/<same name>``), ``case_id_column``, ``image_column``, ``mask_column``,
    ``value_offset`` (subtracted from stored values; per row from
    ``value_offset_column`` if given), ``pixel_spacing_mm`` (``null`` = unknown),
    ``structure`` (name of the masked structure), ``exclude_from_statistics``,
    ``split``, ``attributes``, ``reference_values``.
    """

    layout = "png-slices"

    def cases(self, root: Path, options: dict[str, Any]) -> list[CaseRef]:
        cases_file = options.get("cases_file")
        if cases_file and (root / cases_file).is_file():
            path = root / cases_file
            rows = _filters(_read_csv(path), options)
            id_col = options.get("case_id_column", "case_id")
            img_col, mask_col = options.get("image_column", "image_file"), options.get("mask_column", "mask_file")
            _require_columns(rows, [id_col, img_col, mask_col], path)
            out = []
            offset_col = options.get("value_offset_column")
            for row in rows:
                attributes = _attributes(row, options)
                if offset_col and row.get(offset_col):
                    attributes["value_offset"] = row[offset_col]
                out.append(
                    CaseRef(
                        case_id=row[id_col],
                        files={"image": row[img_col], "mask": row[mask_col]},
                        reference_values=_reference_values(row, options),
                        attributes=attributes,
                        excluded=_exclusion(row, options),
                    )
                )
            return out
        images = sorted((root / "images").glob("*.png"))
        if not images:
            raise DatasetError(f"{root}: no {cases_file or 'cases CSV'} and no images/*.png")
        out = []
        for image in images:
            mask = root / "masks" / image.name
            if not mask.is_file():
                raise DatasetError(f"{root}: image {image.name} has no mask masks/{image.name}")
            out.append(CaseRef(case_id=image.stem, files={"image": f"images/{image.name}", "mask": f"masks/{image.name}"}))
        return out

    def load(self, root: Path, case: CaseRef, options: dict[str, Any]) -> CaseData:
        offset = float(case.attributes.get("value_offset", options.get("value_offset", 0)) or 0)
        image = _read_png(root / case.files["image"]).astype(np.float32) - np.float32(offset)
        if image.ndim != 2:
            raise DatasetError(f"{case.files['image']}: expected a single-channel image, got shape {image.shape}")
        mask = _read_png(root / case.files["mask"]).astype(bool)
        if mask.shape != image.shape:
            raise DatasetError(f"case {case.case_id}: mask shape {mask.shape} differs from the image {image.shape}")
        spacing = options.get("pixel_spacing_mm")
        return CaseData(
            ref=case,
            kind="image2d",
            image=image,
            pixel_spacing_mm=(float(spacing), float(spacing))
            if isinstance(spacing, (int, float))
            else (tuple(spacing) if spacing else None),  # type: ignore[arg-type]
            reference_masks={_required(options, "structure"): mask},
        )


class PngRadiographsAdapter(Adapter):
    """``png-radiographs``: ``images/<id>.png`` and ``masks/<structure>/<id>.png`` with a CSV of cases.

    Options: ``cases_file``, ``case_id_column``, ``image_column`` (default
    ``images/<id>.png``), ``mask_pattern`` (default ``masks/{structure}/{case}.png``),
    ``structures``, ``pixel_spacing_column`` or ``pixel_spacing_mm``, ``split``,
    ``reference_values``, ``attributes``, ``exclude_from_statistics``.
    """

    layout = "png-radiographs"

    def cases(self, root: Path, options: dict[str, Any]) -> list[CaseRef]:
        structures = [str(s) for s in options.get("structures") or []]
        if not structures:
            raise DatasetError("png-radiographs needs options.structures (the mask folders to compare)")
        pattern = str(options.get("mask_pattern", "masks/{structure}/{case}.png"))
        cases_file = options.get("cases_file")
        rows: list[dict[str, str]]
        id_col = options.get("case_id_column", "case_id")
        if cases_file and (root / cases_file).is_file():
            rows = _filters(_read_csv(root / cases_file), options)
            _require_columns(rows, [id_col], root / cases_file)
        else:
            rows = [{id_col: p.stem} for p in sorted((root / "images").glob("*.png"))]
            if not rows:
                raise DatasetError(f"{root}: no {cases_file or 'cases CSV'} and no images/*.png")
        img_col = options.get("image_column")
        spacing_col = options.get("pixel_spacing_column")
        out = []
        for row in rows:
            case_id = row[id_col]
            files = {"image": row[img_col] if img_col and row.get(img_col) else f"images/{case_id}.png"}
            for structure in structures:
                files[f"mask:{structure}"] = pattern.format(structure=structure, case=case_id)
            attributes = _attributes(row, options)
            if spacing_col and row.get(spacing_col):
                attributes["pixel_spacing_mm"] = row[spacing_col]
            out.append(
                CaseRef(
                    case_id,
                    files,
                    _reference_values(row, options),
                    attributes,
                    _exclusion(row, options),
                    _reference_points(row, options),
                )
            )
        return out

    def load(self, root: Path, case: CaseRef, options: dict[str, Any]) -> CaseData:
        image = _read_png(root / case.files["image"]).astype(np.float32)
        if image.ndim != 2:
            raise DatasetError(f"{case.files['image']}: expected a single-channel image, got shape {image.shape}")
        masks = {}
        for role, rel in case.files.items():
            if role.startswith("mask:"):
                mask = _read_png(root / rel).astype(bool)
                if mask.shape != image.shape:
                    raise DatasetError(f"case {case.case_id}: {rel} has shape {mask.shape}, the image {image.shape}")
                masks[role[5:]] = mask
        spacing = _float_or_none(case.attributes.get("pixel_spacing_mm")) or _float_or_none(str(options.get("pixel_spacing_mm", "")))
        return CaseData(
            ref=case, kind="image2d", image=image, pixel_spacing_mm=(spacing, spacing) if spacing else None, reference_masks=masks
        )


class _VolumeCasesMixin:
    def _volume_cases(self, root: Path, options: dict[str, Any], image_key: str, default_image: str) -> list[CaseRef]:
        mask_pattern = str(options.get("mask_file", "{case}/lung_mask.nii.gz"))
        image_pattern = str(options.get(image_key, default_image))
        cases_file = options.get("cases_file")
        id_col = options.get("case_id_column", "case_id")
        if cases_file and (root / cases_file).is_file():
            rows = _filters(_read_csv(root / cases_file), options)
            _require_columns(rows, [id_col], root / cases_file)
        else:
            rows = [{id_col: p.name} for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        out = []
        for row in rows:
            case_id = row[id_col]
            files = {"image": image_pattern.format(case=case_id), "mask": mask_pattern.format(case=case_id)}
            if not (root / files["mask"]).exists():
                # accept the other supported mask formats under the same stem
                stem = files["mask"]
                for suffix in (".nii.gz", ".nii", ".mha", ".mhd"):
                    if stem.endswith(suffix):
                        stem = stem[: -len(suffix)]
                        break
                for suffix in (".nii.gz", ".nii", ".mha"):
                    if (root / (stem + suffix)).is_file():
                        files["mask"] = stem + suffix
                        break
            out.append(CaseRef(case_id, files, _reference_values(row, options), _attributes(row, options), _exclusion(row, options)))
        if not out:
            raise DatasetError(f"{root}: no cases found")
        return out

    @staticmethod
    def _structure_labels(options: dict[str, Any]) -> dict[str, int]:
        labels = options.get("mask_labels")
        if not isinstance(labels, dict) or not labels:
            raise DatasetError("options.mask_labels must map each label value of the masks to a structure name, e.g. {1: liver}")
        return {str(name): int(value) for value, name in labels.items()}


def _required(options: dict[str, Any], key: str) -> str:
    value = options.get(key)
    if not value:
        raise DatasetError(f"options.{key} is required: the structure name the reference masks hold (e.g. lungs, liver)")
    return str(value)


class DicomSeriesAdapter(_VolumeCasesMixin, Adapter):
    """``dicom-series``: ``<case>/dicom/*`` (one series) and a label volume ``<case>/lung_mask.nii.gz`` (or .mha).

    Options: ``cases_file``, ``case_id_column``, ``series_dir`` (default
    ``{case}/dicom``), ``mask_file`` (default ``{case}/lung_mask.nii.gz``),
    ``mask_labels`` ({label value: structure name}), ``reference_values``,
    ``attributes``, ``split``, ``exclude_from_statistics``.
    """

    layout = "dicom-series"

    def cases(self, root: Path, options: dict[str, Any]) -> list[CaseRef]:
        return self._volume_cases(root, options, "series_dir", "{case}/dicom")

    def load(self, root: Path, case: CaseRef, options: dict[str, Any]) -> CaseData:
        folder = root / case.files["image"]
        if not folder.is_dir():
            raise DatasetError(f"case {case.case_id}: series folder {folder} does not exist")
        datasets = []
        for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            try:
                datasets.append(pydicom.dcmread(path))
            except InvalidDicomError as exc:
                raise DatasetError(f"{path} is not a DICOM file: {exc}") from exc
        if not datasets:
            raise DatasetError(f"case {case.case_id}: {folder} holds no DICOM files")
        return CaseData(
            ref=case,
            kind="dicom",
            datasets=datasets,
            reference_labels=read_label_image(root / case.files["mask"]),
            structure_labels=self._structure_labels(options),
        )


class VolumeFilesAdapter(_VolumeCasesMixin, Adapter):
    """``volume-files``: ``<case>/image.nii.gz`` (or .mha; CT values in HU) and a label volume beside it.

    Options as ``dicom-series`` with ``image_file`` (default ``{case}/image.nii.gz``)
    instead of ``series_dir``, ``modality`` (default CT), and ``rescale_slope`` /
    ``rescale_intercept`` (value = stored x slope + intercept; default 1 and 0) for sets
    stored on another scale (e.g. 8-bit windowed CT).
    """

    layout = "volume-files"

    def cases(self, root: Path, options: dict[str, Any]) -> list[CaseRef]:
        return self._volume_cases(root, options, "image_file", "{case}/image.nii.gz")

    def load(self, root: Path, case: CaseRef, options: dict[str, Any]) -> CaseData:
        image = read_label_image(root / case.files["image"])
        volume = volume_from_label_image(
            image, modality=str(options.get("modality", "CT")), metadata={"ConvolutionKernel": case.attributes.get("kernel", "")}
        )
        slope, intercept = options.get("rescale_slope", 1.0), options.get("rescale_intercept", 0.0)
        try:
            slope, intercept = float(slope), float(intercept)
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"options.rescale_slope / rescale_intercept must be numbers, got {slope!r} / {intercept!r}") from exc
        if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
            raise DatasetError(
                f"options.rescale_slope must be a finite non-zero number and rescale_intercept finite, got {slope} / {intercept}"
            )
        if (slope, intercept) != (1.0, 0.0):
            volume = dataclasses.replace(volume, voxels=(volume.voxels * np.float32(slope) + np.float32(intercept)).astype(np.float32))
        return CaseData(
            ref=case,
            kind="volume",
            volume=volume,
            reference_labels=read_label_image(root / case.files["mask"]),
            structure_labels=self._structure_labels(options),
        )


ADAPTERS: dict[str, Adapter] = {
    a.layout: a for a in (PngSlicesAdapter(), PngRadiographsAdapter(), DicomSeriesAdapter(), VolumeFilesAdapter())
}
