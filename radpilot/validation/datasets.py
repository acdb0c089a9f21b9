"""Reference datasets: manifests, a registry, content hashes and the adapters that read each layout.

A reference dataset is a folder of images with reference annotations, described by
a small YAML **manifest**: where the folder is, its layout, which analysis (and
models) it checks and which outputs, the licence and terms, the citation, the
limitations its README states, and the **content hash** the folder had when the
manifest was written, so a changed dataset is noticed before it produces numbers.

Manifests come from two places:

* shipped with RadPilot, ``radpilot/validation/dataset_manifests/*.yaml``, for the
  shared reference sets (``root`` relative to the shared data root, see
  :func:`default_shared_root`);
* a user's own folders, registered with ``radpilot datasets add`` (or written by
  hand) as ``<data_dir>/validation/datasets/<name>.yaml`` with an absolute ``root``.

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
    HU for CT). The volume is built directly from the file, not by the DICOM reader.

Content hash: ``sha256:`` + the SHA-256 of the lines ``<relative path>\\0<file
sha256>\\n`` of every non-hidden file under the root, sorted by path. Any added,
removed, renamed or changed file changes it.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

SHIPPED_MANIFEST_DIR = Path(__file__).resolve().parent / "dataset_manifests"
SHARED_DATA_ENV = "RADPILOT_SHARED_DATA"
LAYOUTS = ("png-slices", "png-radiographs", "dicom-series", "volume-files")
REFERENCE_KINDS = ("manual", "automatic", "phantom", "other")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
HASH_PREFIX = "sha256:"


class DatasetError(ValueError):
    """A manifest or a dataset folder is wrong; the message says what and where."""


def default_shared_root() -> Path:
    """The shared reference data folder: ``$RADPILOT_SHARED_DATA`` or ``<repository>/../shared/data``."""
    configured = os.environ.get(SHARED_DATA_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def user_manifest_dir(data_dir: Path) -> Path:
    """Where the manifests of a user's own datasets live: ``<data_dir>/validation/datasets``."""
    return Path(data_dir) / "validation" / "datasets"


# ---------------------------------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class DatasetManifest:
    """What a reference dataset is, what it checks, under which terms, and its expected content hash."""

    name: str
    version: str
    title: str
    layout: str
    root: str
    analysis: str | None = None
    models: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    reference: dict[str, str] = field(default_factory=dict)
    licence: str = ""
    terms: str = ""
    citation: tuple[str, ...] = ()
    limitations: tuple[str, ...] = ()
    content_hash: str | None = None
    file_count: int | None = None
    total_bytes: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    development_use: tuple[str, ...] = ()  # analyses/models developed, tuned or trained on this data
    source: Path | None = None
    origin: Literal["shipped", "user"] = "shipped"

    @property
    def reference_kind(self) -> str:
        return str(self.reference.get("kind", "other"))

    def checks(self, subject: str) -> bool:
        """True when this dataset declares that it checks the analysis or model ``subject``."""
        return subject == self.analysis or subject in self.models

    def to_dict(self) -> dict[str, Any]:
        """The manifest as it is written to YAML (without ``source`` and ``origin``)."""
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "title": self.title,
            "layout": self.layout,
            "root": self.root,
            "analysis": self.analysis,
            "models": list(self.models),
            "outputs": list(self.outputs),
            "reference": dict(self.reference),
            "licence": self.licence,
            "terms": self.terms,
            "citation": list(self.citation),
            "limitations": list(self.limitations),
            "content_hash": self.content_hash,
            "file_count": self.file_count,
            "total_bytes": self.total_bytes,
            "options": dict(self.options),
            "development_use": list(self.development_use),
        }
        return out

    def summary(self) -> dict[str, Any]:
        """Identity of the dataset for reports and stored results."""
        return {
            "name": self.name,
            "version": self.version,
            "title": self.title,
            "layout": self.layout,
            "origin": self.origin,
            "reference": dict(self.reference),
            "licence": self.licence,
            "terms": self.terms,
            "citation": list(self.citation),
            "limitations": list(self.limitations),
            "expected_content_hash": self.content_hash,
            "development_use": list(self.development_use),
        }


def _as_str_tuple(value: Any, key: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise DatasetError(f"{where}: '{key}' must be a list of strings, got {value!r}")
    return tuple(str(v) for v in value)


def parse_manifest(content: Any, *, source: Path | None = None, origin: Literal["shipped", "user"] = "shipped") -> DatasetManifest:
    """Validate a manifest mapping (as loaded from YAML) and build a :class:`DatasetManifest`."""
    where = str(source) if source else "dataset manifest"
    if not isinstance(content, dict):
        raise DatasetError(f"{where}: a manifest must be a mapping, got {type(content).__name__}")
    missing = [k for k in ("name", "version", "layout", "root") if not content.get(k)]
    if missing:
        raise DatasetError(f"{where}: missing required field(s) {missing}")
    known = {
        "name", "version", "title", "layout", "root", "analysis", "models", "outputs", "reference", "licence",
        "terms", "citation", "limitations", "content_hash", "file_count", "total_bytes", "options", "development_use",
    }
    unknown = sorted(set(content) - known)
    if unknown:
        raise DatasetError(f"{where}: unknown field(s) {unknown}; known fields: {sorted(known)}")
    name = str(content["name"])
    if not NAME_PATTERN.match(name):
        raise DatasetError(f"{where}: name {name!r} must be lower-case letters, digits, '.', '_' or '-' (max 64)")
    layout = str(content["layout"])
    if layout not in LAYOUTS:
        raise DatasetError(f"{where}: layout {layout!r} is not one of {list(LAYOUTS)}")
    reference = content.get("reference") or {}
    if not isinstance(reference, dict):
        raise DatasetError(f"{where}: 'reference' must be a mapping with 'kind' and 'description'")
    kind = str(reference.get("kind", "other"))
    if kind not in REFERENCE_KINDS:
        raise DatasetError(f"{where}: reference.kind {kind!r} is not one of {list(REFERENCE_KINDS)}")
    content_hash = content.get("content_hash")
    if content_hash is not None:
        content_hash = str(content_hash)
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", content_hash):
            raise DatasetError(f"{where}: content_hash must be 'sha256:' and 64 hex digits, got {content_hash!r}")
    options = content.get("options") or {}
    if not isinstance(options, dict):
        raise DatasetError(f"{where}: 'options' must be a mapping")
    for key in ("file_count", "total_bytes"):
        if content.get(key) is not None and not isinstance(content.get(key), int):
            raise DatasetError(f"{where}: '{key}' must be an integer")
    return DatasetManifest(
        name=name,
        version=str(content["version"]),
        title=str(content.get("title") or name),
        layout=layout,
        root=str(content["root"]),
        analysis=str(content["analysis"]) if content.get("analysis") else None,
        models=_as_str_tuple(content.get("models"), "models", where),
        outputs=_as_str_tuple(content.get("outputs"), "outputs", where),
        reference={str(k): str(v) for k, v in reference.items()},
        licence=str(content.get("licence") or ""),
        terms=str(content.get("terms") or ""),
        citation=_as_str_tuple(content.get("citation"), "citation", where),
        limitations=_as_str_tuple(content.get("limitations"), "limitations", where),
        content_hash=content_hash,
        file_count=content.get("file_count"),
        total_bytes=content.get("total_bytes"),
        options=dict(options),
        development_use=_as_str_tuple(content.get("development_use"), "development_use", where),
        source=source,
        origin=origin,
    )


def load_manifest(path: Path, *, origin: Literal["shipped", "user"] = "shipped") -> DatasetManifest:
    try:
        content = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f"{path}: cannot read manifest: {exc}") from exc
    return parse_manifest(content, source=Path(path), origin=origin)


# ---------------------------------------------------------------------------------------------- content hash
@dataclass(frozen=True)
class ContentHash:
    value: str
    file_count: int
    total_bytes: int
    files: dict[str, str]  # relative path -> sha256


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_files(root: Path) -> list[Path]:
    """Every non-hidden regular file under ``root`` (hidden folders skipped), sorted by relative path."""
    root = Path(root)
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith("."):
                out.append(Path(dirpath) / name)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def compute_content_hash(root: Path) -> ContentHash:
    """The content hash of a dataset folder (see the module docstring for the definition)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    digest = hashlib.sha256()
    files: dict[str, str] = {}
    total = 0
    for path in dataset_files(root):
        rel = path.relative_to(root).as_posix()
        sha = _file_sha256(path)
        files[rel] = sha
        total += path.stat().st_size
        digest.update(f"{rel}\0{sha}\n".encode())
    return ContentHash(HASH_PREFIX + digest.hexdigest(), len(files), total, files)


@dataclass(frozen=True)
class Verification:
    """Result of checking a dataset folder against its manifest."""

    name: str
    status: Literal["ok", "changed", "missing", "unpinned", "invalid"]
    root: Path
    expected_hash: str | None
    actual_hash: str | None
    file_count: int | None
    total_bytes: int | None
    n_cases: int | None
    message: str
    details: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "root": str(self.root),
            "expected_hash": self.expected_hash,
            "actual_hash": self.actual_hash,
            "file_count": self.file_count,
            "total_bytes": self.total_bytes,
            "n_cases": self.n_cases,
            "message": self.message,
            "details": list(self.details),
        }


def _sha256sums_differences(root: Path, files: dict[str, str]) -> list[str]:
    """Files that differ from a SHA256SUMS list in the folder (if it has one)."""
    sums = root / "SHA256SUMS"
    if not sums.is_file():
        return []
    out: list[str] = []
    listed: set[str] = set()
    for line in sums.read_text().splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2:
            continue
        sha, rel = parts[0].lower(), parts[1].lstrip("*")
        listed.add(rel)
        actual = files.get(rel)
        if actual is None:
            out.append(f"missing: {rel}")
        elif actual != sha:
            out.append(f"changed: {rel}")
    for rel in sorted(set(files) - listed - {"SHA256SUMS"}):
        out.append(f"not in SHA256SUMS: {rel}")
    return out


# ---------------------------------------------------------------------------------------------- label images
@dataclass(frozen=True)
class LabelImage:
    """A volume read from NIfTI or MetaImage: array indexed (i, j, k) and the 4x4 map from (i, j, k, 1) to LPS mm."""

    array: np.ndarray
    affine_lps: np.ndarray
    path: Path | None = None

    @property
    def spacing_ijk(self) -> tuple[float, float, float]:
        return tuple(float(np.linalg.norm(self.affine_lps[:3, a])) for a in range(3))  # type: ignore[return-value]


_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_nifti(path: Path) -> LabelImage:
    """Read a NIfTI-1 file (``.nii`` or ``.nii.gz``, one 3-D volume) without extra dependencies.

    The geometry is the sform when ``sform_code > 0``, else the qform when
    ``qform_code > 0``, else the voxel sizes alone (as nibabel does), converted from
    RAS (NIfTI) to LPS (DICOM). ``scl_slope``/``scl_inter`` are applied when set.
    """
    path = Path(path)
    try:
        raw = gzip.open(path).read() if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: cannot read NIfTI file: {exc}") from exc
    if len(raw) < 348:
        raise DatasetError(f"{path}: too short to be a NIfTI-1 file")
    for endian in ("<", ">"):
        if struct.unpack(endian + "i", raw[:4])[0] == 348:
            break
    else:
        raise DatasetError(f"{path}: not a NIfTI-1 file (header size is not 348; NIfTI-2 is not supported)")
    if raw[344:347] not in (b"n+1", b"ni1"):
        raise DatasetError(f"{path}: NIfTI magic {raw[344:348]!r} is not 'n+1' or 'ni1'")
    dim = struct.unpack(endian + "8h", raw[40:56])
    ndim = dim[0]
    shape = tuple(int(d) for d in dim[1 : 1 + ndim])
    if ndim == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DatasetError(f"{path}: expected one 3-D volume, got dimensions {shape}")
    datatype = struct.unpack(endian + "h", raw[70:72])[0]
    if datatype not in _NIFTI_DTYPES:
        raise DatasetError(f"{path}: NIfTI datatype {datatype} is not supported")
    pixdim = struct.unpack(endian + "8f", raw[76:108])
    vox_offset = int(struct.unpack(endian + "f", raw[108:112])[0])
    slope, inter = struct.unpack(endian + "2f", raw[112:120])
    qform_code, sform_code = struct.unpack(endian + "2h", raw[252:256])
    if raw[344:347] == b"ni1":
        raise DatasetError(f"{path}: a two-file NIfTI (.hdr/.img) is not supported; use .nii or .nii.gz")
    dtype = np.dtype(_NIFTI_DTYPES[datatype]).newbyteorder(endian)
    count = int(np.prod(shape))
    if vox_offset + count * dtype.itemsize > len(raw):
        raise DatasetError(f"{path}: the file is shorter than its header says (truncated?)")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=vox_offset).reshape(shape, order="F")
    data = data.astype(dtype.newbyteorder("="))
    if slope not in (0.0, 1.0) or inter != 0.0:
        data = data * (slope or 1.0) + inter
    if sform_code > 0:
        rows = [struct.unpack(endian + "4f", raw[280 + 16 * r : 296 + 16 * r]) for r in range(3)]
        affine = np.vstack([np.array(rows, dtype=np.float64), [0, 0, 0, 1]])
    elif qform_code > 0:
        b, c, d, qx, qy, qz = struct.unpack(endian + "6f", raw[256:280])
        a = float(np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d))))
        rot = np.array(
            [
                [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
            ]
        )
        qfac = -1.0 if pixdim[0] < 0 else 1.0
        affine = np.eye(4)
        affine[:3, :3] = rot @ np.diag([pixdim[1], pixdim[2], qfac * pixdim[3]])
        affine[:3, 3] = (qx, qy, qz)
    else:
        affine = np.diag([pixdim[1] or 1.0, pixdim[2] or 1.0, pixdim[3] or 1.0, 1.0])
    return LabelImage(np.ascontiguousarray(data), _RAS_TO_LPS @ affine, path)


_MET_TYPES = {
    "MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_USHORT": "u2", "MET_SHORT": "i2", "MET_UINT": "u4", "MET_INT": "i4",
    "MET_ULONG": "u8", "MET_LONG": "i8", "MET_ULONG_LONG": "u8", "MET_LONG_LONG": "i8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}


def read_metaimage(path: Path) -> LabelImage:
    """Read a MetaImage file (``.mha`` with local data, or ``.mhd`` with a raw file), 3-D, one channel.

    MetaImage geometry is LPS (ITK): ``Offset`` is the position of voxel (0, 0, 0)
    and row ``n`` of ``TransformMatrix`` is the direction of array axis ``n``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read MetaImage file: {exc}") from exc
    header: dict[str, str] = {}
    position = 0
    while True:
        end = raw.find(b"\n", position)
        if end < 0:
            raise DatasetError(f"{path}: MetaImage header has no ElementDataFile line")
        line = raw[position:end].decode("latin-1").strip()
        position = end + 1
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise DatasetError(f"{path}: MetaImage header line {line!r} is not 'Key = Value'")
        header[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    if int(header.get("NDims", "0")) != 3:
        raise DatasetError(f"{path}: expected a 3-D MetaImage, NDims is {header.get('NDims')}")
    if int(header.get("ElementNumberOfChannels", "1")) != 1:
        raise DatasetError(f"{path}: only one-channel MetaImages are supported")
    element_type = header.get("ElementType", "")
    if element_type not in _MET_TYPES:
        raise DatasetError(f"{path}: ElementType {element_type!r} is not supported")
    dims = [int(v) for v in header["DimSize"].split()]
    spacing = [float(v) for v in (header.get("ElementSpacing") or header.get("ElementSize") or "1 1 1").split()]
    offset = [float(v) for v in (header.get("Offset") or header.get("Origin") or header.get("Position") or "0 0 0").split()]
    matrix = [float(v) for v in (header.get("TransformMatrix") or header.get("Rotation") or header.get("Orientation") or "1 0 0 0 1 0 0 0 1").split()]
    msb = header.get("BinaryDataByteOrderMSB", header.get("ElementByteOrderMSB", "False")).lower() == "true"
    data_file = header["ElementDataFile"]
    payload = raw[position:] if data_file == "LOCAL" else (path.parent / data_file).read_bytes()
    if header.get("CompressedData", "False").lower() == "true":
        try:
            payload = zlib.decompress(payload)
        except zlib.error as exc:
            raise DatasetError(f"{path}: compressed MetaImage data cannot be decompressed: {exc}") from exc
    dtype = np.dtype(_MET_TYPES[element_type]).newbyteorder(">" if msb else "<")
    count = int(np.prod(dims))
    if len(payload) < count * dtype.itemsize:
        raise DatasetError(f"{path}: MetaImage data is shorter than DimSize says")
    data = np.frombuffer(payload, dtype=dtype, count=count).reshape(dims[::-1]).transpose(2, 1, 0)
    directions = np.array(matrix, dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    for axis in range(3):
        affine[:3, axis] = directions[axis] * spacing[axis]
    affine[:3, 3] = offset
    return LabelImage(np.ascontiguousarray(data.astype(dtype.newbyteorder("="))), affine, path)


def read_label_image(path: Path) -> LabelImage:
    """NIfTI (``.nii``, ``.nii.gz``) or MetaImage (``.mha``, ``.mhd``), by file name."""
    name = Path(path).name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti(path)
    if name.endswith((".mha", ".mhd")):
        return read_metaimage(path)
    raise DatasetError(f"{path}: unsupported volume format (expected .nii, .nii.gz, .mha or .mhd)")


def labels_on_volume_grid(image: LabelImage, volume: Any, *, tolerance: float = 0.02) -> np.ndarray:
    """The label array re-indexed as ``(z, y, x)`` on ``volume``'s voxel grid.

    Only axis permutations and flips are allowed (no interpolation): the mask must
    lie on exactly the same voxel grid as the image, as a reference annotation of
    that image does. Anything else raises :class:`DatasetError` with the offset found.
    """
    volume_affine = np.asarray(volume.affine_lps, dtype=np.float64)  # (x, y, z, 1) -> LPS
    mapping = np.linalg.inv(volume_affine) @ image.affine_lps  # (i, j, k, 1) -> (x, y, z, 1)
    rot = mapping[:3, :3]
    perm = np.round(rot)
    if not np.allclose(rot, perm, atol=tolerance) or not np.allclose(np.abs(perm).sum(axis=0), 1) or not np.allclose(np.abs(perm).sum(axis=1), 1):
        where = f" ({image.path})" if image.path else ""
        raise DatasetError(
            f"reference volume{where} is not on the image's voxel grid (its axes map to {np.round(rot, 3).tolist()} "
            "in image voxels); masks must share the image grid (permuted or flipped axes are accepted)"
        )
    # For each target axis (x, y, z): the source axis and its sign.
    arr = image.array
    source_for_target = [int(np.flatnonzero(perm[t])[0]) for t in range(3)]
    signs = [int(perm[t, source_for_target[t]]) for t in range(3)]
    target_shape_xyz = tuple(volume.shape[::-1])
    arr_xyz = np.transpose(arr, source_for_target)
    offset = mapping[:3, 3]
    for t in range(3):
        if signs[t] < 0:
            arr_xyz = np.flip(arr_xyz, axis=t)
            offset[t] = offset[t] - (arr_xyz.shape[t] - 1)
    if arr_xyz.shape != target_shape_xyz or not np.allclose(offset, 0.0, atol=max(tolerance, 0.05)):
        where = f" {image.path}" if image.path else ""
        raise DatasetError(
            f"reference volume{where} has shape {arr_xyz.shape[::-1]} (z, y, x) and offset "
            f"{np.round(offset[::-1], 3).tolist()} voxels from the image of shape {volume.shape}; "
            "it must cover exactly the image grid"
        )
    return np.ascontiguousarray(np.transpose(arr_xyz, (2, 1, 0)))


def volume_from_label_image(image: LabelImage, *, modality: str = "CT", metadata: dict[str, Any] | None = None) -> Any:
    """A :class:`~radpilot.dicom.volume.Volume` from a NIfTI/MetaImage image (values as stored, e.g. HU)."""
    from radpilot.dicom.volume import Volume

    affine = image.affine_lps
    spacing_ijk = image.spacing_ijk
    direction = np.vstack([affine[:3, a] / spacing_ijk[a] for a in range(3)])
    voxels = np.transpose(image.array, (2, 1, 0))
    return Volume(
        voxels=voxels.astype(np.float32),
        spacing_zyx=(spacing_ijk[2], spacing_ijk[1], spacing_ijk[0]),
        origin=tuple(float(v) for v in affine[:3, 3]),  # type: ignore[arg-type]
        direction=direction,
        modality=modality,
        metadata=dict(metadata or {}),
    )


# ---------------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class CaseRef:
    """One case of a dataset, before its files are read."""

    case_id: str
    files: dict[str, str]
    reference_values: dict[str, float] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    excluded: str | None = None  # evaluated and shown, but left out of the statistics, because ...


@dataclass
class CaseData:
    """A case's image and reference, read from disk.

    ``kind`` says which of the image fields is set: ``image2d`` (a 2-D array of
    stored values, offsets removed), ``dicom`` (the series' pydicom datasets, for
    the production reader) or ``volume`` (a Volume built from a NIfTI/MetaImage).
    """

    ref: CaseRef
    kind: Literal["image2d", "dicom", "volume"]
    image: np.ndarray | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    datasets: list[Any] | None = None
    volume: Any | None = None
    reference_masks: dict[str, np.ndarray] = field(default_factory=dict)
    reference_labels: LabelImage | None = None
    structure_labels: dict[str, int] = field(default_factory=dict)


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


def _attributes(row: dict[str, str], options: dict[str, Any]) -> dict[str, str]:
    return {str(name): str(row.get(column, "")) for name, column in (options.get("attributes") or {}).items()}


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

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
            pixel_spacing_mm=(float(spacing), float(spacing)) if isinstance(spacing, (int, float)) else (tuple(spacing) if spacing else None),  # type: ignore[arg-type]
            reference_masks={str(options.get("structure", "lungs")): mask},
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
            out.append(CaseRef(case_id, files, _reference_values(row, options), attributes, _exclusion(row, options)))
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
        labels = options.get("mask_labels") or {1: "lungs"}
        return {str(name): int(value) for value, name in labels.items()}


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
        import pydicom
        from pydicom.errors import InvalidDicomError

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
    instead of ``series_dir``, and ``modality`` (default CT).
    """

    layout = "volume-files"

    def cases(self, root: Path, options: dict[str, Any]) -> list[CaseRef]:
        return self._volume_cases(root, options, "image_file", "{case}/image.nii.gz")

    def load(self, root: Path, case: CaseRef, options: dict[str, Any]) -> CaseData:
        image = read_label_image(root / case.files["image"])
        volume = volume_from_label_image(
            image, modality=str(options.get("modality", "CT")), metadata={"ConvolutionKernel": case.attributes.get("kernel", "")}
        )
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


# ---------------------------------------------------------------------------------------------- registry
class DatasetRegistry:
    """The reference datasets RadPilot knows: shipped manifests plus a user's own.

    Parameters
    ----------
    data_dir
        RadPilot's data folder; user manifests are read from ``<data_dir>/validation/datasets``.
    shared_root
        Root of the shared reference data; default :func:`default_shared_root`.
    shipped_dir
        Folder of shipped manifests (tests point it elsewhere).
    """

    def __init__(self, data_dir: Path | None = None, *, shared_root: Path | None = None, shipped_dir: Path | None = SHIPPED_MANIFEST_DIR) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.shared_root = Path(shared_root) if shared_root is not None else default_shared_root()
        self.shipped_dir = Path(shipped_dir) if shipped_dir is not None else None

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> DatasetRegistry:
        return cls(getattr(settings, "data_dir", None), **kwargs)

    @property
    def user_dir(self) -> Path | None:
        return user_manifest_dir(self.data_dir) if self.data_dir is not None else None

    def manifests(self) -> list[DatasetManifest]:
        """All manifests, shipped first; a user manifest with a shipped name is refused."""
        found: dict[str, DatasetManifest] = {}
        sources: list[tuple[Path, Literal["shipped", "user"]]] = []
        if self.shipped_dir is not None and self.shipped_dir.is_dir():
            sources += [(p, "shipped") for p in sorted(self.shipped_dir.glob("*.yaml"))]
        if self.user_dir is not None and self.user_dir.is_dir():
            sources += [(p, "user") for p in sorted(self.user_dir.glob("*.yaml"))]
        for path, origin in sources:
            manifest = load_manifest(path, origin=origin)
            if manifest.name in found:
                raise DatasetError(f"{path}: dataset name {manifest.name!r} is already used by {found[manifest.name].source}")
            found[manifest.name] = manifest
        return list(found.values())

    def get(self, name: str) -> DatasetManifest:
        for manifest in self.manifests():
            if manifest.name == name:
                return manifest
        known = ", ".join(m.name for m in self.manifests()) or "none"
        raise KeyError(f"no reference dataset called {name!r}; known datasets: {known}")

    def root_of(self, manifest: DatasetManifest) -> Path:
        root = Path(manifest.root).expanduser()
        if root.is_absolute():
            return root
        if manifest.origin == "user" and manifest.source is not None:
            return (manifest.source.parent / root).resolve()
        return self.shared_root / root

    def cases(self, manifest: DatasetManifest) -> list[CaseRef]:
        root = self.root_of(manifest)
        if not root.is_dir():
            raise DatasetError(f"dataset {manifest.name}: folder {root} does not exist")
        cases = ADAPTERS[manifest.layout].cases(root, manifest.options)
        ids = [c.case_id for c in cases]
        if len(set(ids)) != len(ids):
            raise DatasetError(f"dataset {manifest.name}: case ids are not unique")
        return cases

    def load_case(self, manifest: DatasetManifest, case: CaseRef) -> CaseData:
        return ADAPTERS[manifest.layout].load(self.root_of(manifest), case, manifest.options)

    def verify(self, name_or_manifest: str | DatasetManifest) -> Verification:
        """Check that the folder exists, its cases can be listed, and its content hash matches the manifest."""
        manifest = self.get(name_or_manifest) if isinstance(name_or_manifest, str) else name_or_manifest
        root = self.root_of(manifest)
        if not root.is_dir():
            return Verification(manifest.name, "missing", root, manifest.content_hash, None, None, None, None,
                                f"dataset folder {root} does not exist")
        actual = compute_content_hash(root)
        try:
            n_cases: int | None = len(self.cases(manifest))
            problem = None
        except (DatasetError, KeyError, OSError) as exc:
            n_cases, problem = None, str(exc)
        common = dict(name=manifest.name, root=root, expected_hash=manifest.content_hash, actual_hash=actual.value,
                      file_count=actual.file_count, total_bytes=actual.total_bytes, n_cases=n_cases)
        if problem:
            return Verification(status="invalid", message=f"the folder does not match layout {manifest.layout}: {problem}", **common)
        if manifest.content_hash is None:
            return Verification(status="unpinned", message="the manifest has no content_hash: results on it cannot be tied to a fixed content", **common)
        if actual.value != manifest.content_hash:
            details = _sha256sums_differences(root, actual.files)
            counts = []
            if manifest.file_count is not None and manifest.file_count != actual.file_count:
                counts.append(f"{actual.file_count} files instead of {manifest.file_count}")
            if manifest.total_bytes is not None and manifest.total_bytes != actual.total_bytes:
                counts.append(f"{actual.total_bytes} bytes instead of {manifest.total_bytes}")
            message = (
                f"content changed: hash {actual.value[:19]}... differs from the manifest's {manifest.content_hash[:19]}..."
                + (f" ({', '.join(counts)})" if counts else "")
            )
            return Verification(status="changed", message=message, details=tuple(details[:50]), **common)
        return Verification(status="ok", message=f"{actual.file_count} files, {n_cases} cases, hash matches", **common)

    def add(
        self,
        path: Path,
        *,
        name: str,
        layout: str,
        analysis: str | None = None,
        models: Iterable[str] = (),
        version: str = "1",
        title: str = "",
        reference_kind: str = "manual",
        reference_description: str = "",
        licence: str = "",
        terms: str = "",
        citation: Iterable[str] = (),
        limitations: Iterable[str] = (),
        options: dict[str, Any] | None = None,
        development_use: Iterable[str] = (),
        overwrite: bool = False,
    ) -> DatasetManifest:
        """Register a user's own folder: check its layout, pin its content hash, write the manifest."""
        if self.user_dir is None:
            raise DatasetError("no data folder configured: user datasets are kept in <data_dir>/validation/datasets")
        root = Path(path).expanduser().resolve()
        if any(m.name == name and m.origin == "shipped" for m in self.manifests()):
            raise DatasetError(f"{name!r} is the name of a shipped dataset; choose another name")
        target = self.user_dir / f"{name}.yaml"
        if target.exists() and not overwrite:
            raise DatasetError(f"dataset {name!r} is already registered ({target}); pass overwrite to replace it")
        manifest = parse_manifest(
            {
                "name": name, "version": version, "title": title or name, "layout": layout, "root": str(root),
                "analysis": analysis, "models": list(models),
                "reference": {"kind": reference_kind, "description": reference_description or "reference annotations of the user's own folder"},
                "licence": licence, "terms": terms, "citation": list(citation), "limitations": list(limitations),
                "options": dict(options or {}), "development_use": list(development_use),
            },
            source=target,
            origin="user",
        )
        if not root.is_dir():
            raise DatasetError(f"{root} is not a folder")
        cases = ADAPTERS[layout].cases(root, manifest.options)
        if not cases:
            raise DatasetError(f"{root}: no cases found for layout {layout}")
        ADAPTERS[layout].load(root, cases[0], manifest.options)  # read one case: fail now, not during a validation run
        digest = compute_content_hash(root)
        manifest = replace(manifest, content_hash=digest.value, file_count=digest.file_count, total_bytes=digest.total_bytes)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(manifest.to_dict(), sort_keys=False, allow_unicode=True))
        return manifest


def pin_manifest(path: Path, root: Path) -> DatasetManifest:
    """Rewrite a manifest file with the current content hash of ``root`` (for maintainers, after a deliberate change)."""
    manifest = load_manifest(path)
    digest = compute_content_hash(root)
    content = yaml.safe_load(Path(path).read_text())
    content.update(content_hash=digest.value, file_count=digest.file_count, total_bytes=digest.total_bytes)
    Path(path).write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True, width=110))
    return replace(manifest, content_hash=digest.value, file_count=digest.file_count, total_bytes=digest.total_bytes)


ProgressCallback = Callable[[int, int, str], None]
