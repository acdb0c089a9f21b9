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
``cine-volume-files``
    A cine of a few phases stored as one volume file per phase, each with its reference
    label volume (e.g. end-diastole and end-systole): every case becomes ONE
    :class:`~radpilot.dicom.cine.CineVolume` of those phases, in the order the manifest
    lists them, with the labels of each phase as its reference. Sets whose files hold no
    geometry are placed on a nominal grid the manifest states. The ``cmr-acdc`` layout.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.uid import MRImageStorage, generate_uid

from radpilot.dicom.cine import CineVolume
from radpilot.validation.datasets.cases import CaseData, CaseRef, PhaseReference, ReferencePoint
from radpilot.validation.datasets.errors import DatasetError
from radpilot.validation.datasets.grid import labels_on_volume_grid, volume_from_label_image
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
    """``options.reference_values``: {output: column}, or {output: {column, scale}} where the set stores the value in
    other units than the output (e.g. an ejection fraction as a fraction for an output in percent: scale 100)."""
    out: dict[str, float] = {}
    for output, source in (options.get("reference_values") or {}).items():
        column, scale = source, 1.0
        if isinstance(source, dict):
            if not source.get("column"):
                raise DatasetError(f"options.reference_values.{output} must name its column, got {source!r}")
            column = source["column"]
            try:
                scale = float(source.get("scale", 1.0))
            except (TypeError, ValueError) as exc:
                raise DatasetError(f"options.reference_values.{output}.scale must be a number, got {source.get('scale')!r}") from exc
            if not np.isfinite(scale) or scale == 0:
                raise DatasetError(f"options.reference_values.{output}.scale must be a finite non-zero number, got {scale}")
        value = _float_or_none(row.get(str(column)))
        if value is not None:
            out[str(output)] = value * scale
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


@dataclass(frozen=True)
class _PhaseSpec:
    name: str
    image: str
    labels: str
    trigger_time_ms: float | None


_PHASE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,15}$")


def _phase_specs(options: dict[str, Any]) -> list[_PhaseSpec]:
    phases = options.get("phases")
    if not isinstance(phases, list) or not phases:
        raise DatasetError(
            "options.phases must list the cine's phases in order, each {name, image, labels} with {case} in the file patterns, "
            "e.g. [{name: ed, image: 'images/{case}_ED.nii.gz', labels: 'labels/{case}_ED.nii.gz'}, ...]"
        )
    out: list[_PhaseSpec] = []
    for i, item in enumerate(phases):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) and item.get(k) for k in ("name", "image", "labels")):
            raise DatasetError(f"options.phases[{i}] must be a mapping with name, image and labels, got {item!r}")
        name = str(item["name"])
        if not _PHASE_NAME.match(name):
            raise DatasetError(f"options.phases[{i}].name {name!r} must be lower-case letters, digits or '_' (it names metrics)")
        trigger = item.get("trigger_time_ms")
        if trigger is not None and (isinstance(trigger, bool) or not isinstance(trigger, (int, float)) or not np.isfinite(trigger)):
            raise DatasetError(f"options.phases[{i}].trigger_time_ms must be a number, got {trigger!r}")
        out.append(_PhaseSpec(name, str(item["image"]), str(item["labels"]), None if trigger is None else float(trigger)))
    names = [p.name for p in out]
    if len(set(names)) != len(names):
        raise DatasetError(f"options.phases names {names} are not unique")
    return out


def _nominal_geometry(options: dict[str, Any]) -> tuple[tuple[float, float, float], np.ndarray] | None:
    """``options.nominal_geometry`` as (spacing z, y, x; direction rows), or None to keep the files' own geometry."""
    geometry = options.get("nominal_geometry")
    if geometry is None:
        return None
    where = "options.nominal_geometry"
    if not isinstance(geometry, dict):
        raise DatasetError(f"{where} must be a mapping with pixel_spacing_mm, slice_spacing_mm and image_orientation_patient")
    try:
        pixel, gap = float(geometry["pixel_spacing_mm"]), float(geometry["slice_spacing_mm"])
        orientation = np.asarray(geometry["image_orientation_patient"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{where} needs numbers pixel_spacing_mm, slice_spacing_mm and image_orientation_patient (6): {exc}") from exc
    if not (np.isfinite(pixel) and np.isfinite(gap)) or pixel <= 0 or gap <= 0:
        raise DatasetError(f"{where}: spacings must be positive, got {pixel} and {gap}")
    if orientation.shape != (6,) or not np.isfinite(orientation).all():
        raise DatasetError(f"{where}.image_orientation_patient must be 6 numbers (row and column direction), got {orientation.tolist()}")
    row, col = orientation[:3], orientation[3:]
    if min(np.linalg.norm(row), np.linalg.norm(col)) < 1e-6 or abs(float(row @ col)) > 1e-3 * np.linalg.norm(row) * np.linalg.norm(col):
        raise DatasetError(f"{where}.image_orientation_patient: the row and column directions must be non-zero and perpendicular")
    row = row / np.linalg.norm(row)
    col = col - (row @ col) * row
    col = col / np.linalg.norm(col)
    return (gap, pixel, pixel), np.stack([row, col, np.cross(row, col)])


def _grouped_rows(rows: list[dict[str, str]], id_col: str, options: dict[str, Any], path: Path) -> list[dict[str, str]]:
    """One row per case id, the first; rows of one case (e.g. one per phase) must agree on its reference values."""
    first: dict[str, dict[str, str]] = {}
    for row in rows:
        case_id = row[id_col]
        if case_id not in first:
            first[case_id] = row
            continue
        kept, again = _reference_values(first[case_id], options), _reference_values(row, options)
        if kept != again:
            raise DatasetError(f"{path}: the rows of case {case_id} disagree on its reference values ({kept} against {again})")
    return list(first.values())


class CineVolumeFilesAdapter(Adapter):
    """``cine-volume-files``: one image and one label volume file per phase; a case is ONE CineVolume of its phases.

    Options: ``cases_file`` (CSV, required; several rows may share a case id, e.g. one per
    phase, and must then agree on its reference values), ``case_id_column``, ``split``,
    ``attributes``, ``exclude_from_statistics``, ``reference_values`` (see
    :func:`_reference_values`), ``phases`` (in cine order: ``{name, image, labels[,
    trigger_time_ms]}``, file patterns with ``{case}``; ``name`` names the per-phase
    metrics), ``mask_labels`` ({label value: structure name}), ``modality`` (default MR)
    and ``nominal_geometry`` (``{pixel_spacing_mm, slice_spacing_mm,
    image_orientation_patient}``): for sets whose files hold no geometry, the cine is
    placed on that grid instead of the files' own (the voxel arrays are not resampled).

    Labels must lie on their image's voxel grid and every phase on the first phase's;
    label values other than 0 and those of ``mask_labels`` are refused.
    """

    layout = "cine-volume-files"

    def cases(self, root: Path, options: dict[str, Any]) -> list[CaseRef]:
        phases = _phase_specs(options)
        cases_file = options.get("cases_file")
        if not cases_file:
            raise DatasetError("cine-volume-files needs options.cases_file (a CSV naming the cases)")
        path = root / str(cases_file)
        id_col = str(options.get("case_id_column", "case_id"))
        rows = _filters(_read_csv(path), options)
        _require_columns(rows, [id_col], path)
        out = []
        for row in _grouped_rows(rows, id_col, options, path):
            case_id = row[id_col]
            files: dict[str, str] = {}
            for phase in phases:
                for role, pattern in (("image", phase.image), ("labels", phase.labels)):
                    rel = pattern.format(case=case_id)
                    if not (root / rel).is_file():
                        raise DatasetError(f"case {case_id}: the {phase.name} {role} file {rel} does not exist under {root}")
                    files[f"{role}:{phase.name}"] = rel
            out.append(CaseRef(case_id, files, _reference_values(row, options), _attributes(row, options), _exclusion(row, options)))
        if not out:
            raise DatasetError(f"{path}: no cases")
        return out

    def load(self, root: Path, case: CaseRef, options: dict[str, Any]) -> CaseData:
        phases = _phase_specs(options)
        structure_labels = _VolumeCasesMixin._structure_labels(options)
        allowed = {0, *structure_labels.values()}
        modality = str(options.get("modality", "MR"))
        first: Any = None
        frames: list[np.ndarray] = []
        references: list[PhaseReference] = []
        for index, phase in enumerate(phases):
            image_rel, labels_rel = case.files[f"image:{phase.name}"], case.files[f"labels:{phase.name}"]
            image = read_label_image(root / image_rel)
            volume = volume_from_label_image(image, modality=modality)
            if first is None:
                first = volume
            elif volume.shape != first.shape or not np.allclose(volume.affine_lps, first.affine_lps, atol=1e-3):
                raise DatasetError(
                    f"case {case.case_id}: phase {phase.name} ({image_rel}, shape {volume.shape}) is not on the grid of phase "
                    f"{phases[0].name} (shape {first.shape}); every phase of a cine must share one grid"
                )
            labels = labels_on_volume_grid(read_label_image(root / labels_rel), volume)
            if labels.dtype.kind == "f" and not np.array_equal(labels, np.rint(labels)):
                raise DatasetError(f"case {case.case_id}: {labels_rel} holds non-integer label values")
            present = {int(v) for v in np.unique(labels)}
            if not present <= allowed:
                raise DatasetError(
                    f"case {case.case_id}: {labels_rel} holds label value(s) {sorted(present - allowed)} that options.mask_labels "
                    f"does not name (it names {sorted(allowed - {0})})"
                )
            frames.append(np.asarray(volume.voxels, dtype=np.float32))
            references.append(PhaseReference(phase.name, index, labels.astype(np.uint8)))
        assert first is not None
        geometry = _nominal_geometry(options)
        spacing, direction, origin = (
            (geometry[0], geometry[1], (0.0, 0.0, 0.0)) if geometry else (first.spacing_zyx, first.direction, first.origin)
        )
        # Deterministic UIDs: the analysis names the images each segmentation lies on by them, which is how the
        # evaluator knows which phase a segmentation shows.
        uid = [f"radpilot-validation-cine:{case.case_id}"]
        frame_uids = tuple(tuple(generate_uid(entropy_srcs=[*uid, phase.name, str(z)]) for z in range(first.shape[0])) for phase in phases)
        cine = CineVolume(
            voxels=frames[0],
            spacing_zyx=spacing,
            origin=origin,
            direction=direction,
            study_uid=generate_uid(entropy_srcs=[*uid, "study"]),
            series_uid=generate_uid(entropy_srcs=[*uid, "series"]),
            frame_of_reference_uid=generate_uid(entropy_srcs=[*uid, "frame-of-reference"]),
            sop_instance_uids=frame_uids[0],
            sop_class_uid=MRImageStorage if modality.upper() == "MR" else "",
            modality=modality,
            metadata={},
            frames=np.stack(frames),
            frame_sop_instance_uids=frame_uids,
            trigger_times_ms=tuple(p.trigger_time_ms for p in phases),
        )
        return CaseData(ref=case, kind="volume", volume=cine, structure_labels=structure_labels, reference_phases=tuple(references))


ADAPTERS: dict[str, Adapter] = {
    a.layout: a for a in (PngSlicesAdapter(), PngRadiographsAdapter(), DicomSeriesAdapter(), VolumeFilesAdapter(), CineVolumeFilesAdapter())
}
