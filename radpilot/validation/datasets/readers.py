"""Volume files of reference datasets: NIfTI through nibabel, MetaImage by a reader of its own.

Both give a :class:`LabelImage`: the array indexed as the file stores it, (i, j, k),
and the 4x4 map from (i, j, k, 1) to patient coordinates in LPS millimetres (the
DICOM convention the rest of RadPilot uses).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from radpilot.validation.datasets.errors import DatasetError


@dataclass(frozen=True)
class LabelImage:
    """A volume read from NIfTI or MetaImage: array indexed (i, j, k) and the 4x4 map from (i, j, k, 1) to LPS mm."""

    array: np.ndarray
    affine_lps: np.ndarray
    path: Path | None = None

    @property
    def spacing_ijk(self) -> tuple[float, float, float]:
        return tuple(float(np.linalg.norm(self.affine_lps[:3, a])) for a in range(3))  # type: ignore[return-value]


_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_nifti(path: Path) -> LabelImage:
    """Read a NIfTI-1 or NIfTI-2 file (``.nii`` or ``.nii.gz``, one 3-D volume) with nibabel.

    The geometry is the sform when ``sform_code > 0``, else the qform when
    ``qform_code > 0``, else the voxel sizes alone, converted from RAS (NIfTI) to
    LPS (DICOM). Stored values are returned in the file's own type; a scale
    (``scl_slope``/``scl_inter``) other than 1 and 0 is applied in float64.
    """

    path = Path(path)
    try:
        image = nibabel.load(str(path), mmap=False)  # no memory map: the file is not kept open behind the array
    except (OSError, EOFError, zlib.error, ValueError, ImageFileError, HeaderDataError) as exc:
        raise DatasetError(f"{path}: cannot read NIfTI file: {exc}") from exc
    if not isinstance(image, nibabel.Nifti1Image):  # Nifti2Image is a subclass; a .hdr/.img pair is not
        raise DatasetError(f"{path}: not a single-file NIfTI image (nibabel read it as {type(image).__name__})")
    shape = tuple(int(d) for d in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DatasetError(f"{path}: expected one 3-D volume, got dimensions {shape}")
    proxy = image.dataobj
    try:
        data = np.asarray(proxy.get_unscaled()).reshape(shape, order="F")
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read the NIfTI voxel data (truncated?): {exc}") from exc
    data = data.astype(data.dtype.newbyteorder("="), copy=False)
    # nibabel keeps the scale on the proxy (1 and 0 when the header has none or slope 0/NaN, as the
    # standard says); applied here in float64 so a scaled file reads as it always did.
    slope, inter = float(proxy.slope), float(proxy.inter)
    if (slope, inter) != (1.0, 0.0):
        data = data * slope + inter
    header = image.header
    if int(header["sform_code"]) > 0:
        affine = header.get_sform()
    elif int(header["qform_code"]) > 0:
        affine = header.get_qform()
    else:
        # NIfTI "method 1": voxel sizes alone, no offset. Not nibabel's ``image.affine``, which
        # falls back to the Analyze convention (x flipped, centred on the volume).
        zooms = [float(z) or 1.0 for z in header.get_zooms()[:3]]
        affine = np.diag([*zooms, 1.0])
    return LabelImage(np.ascontiguousarray(data), _RAS_TO_LPS @ np.asarray(affine, dtype=np.float64), path)


# nibabel reads no MetaImage (.mha/.mhd: ITK's format), so this small reader stays.
_MET_TYPES = {
    "MET_UCHAR": "u1",
    "MET_CHAR": "i1",
    "MET_USHORT": "u2",
    "MET_SHORT": "i2",
    "MET_UINT": "u4",
    "MET_INT": "i4",
    "MET_ULONG": "u8",
    "MET_LONG": "i8",
    "MET_ULONG_LONG": "u8",
    "MET_LONG_LONG": "i8",
    "MET_FLOAT": "f4",
    "MET_DOUBLE": "f8",
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
    matrix = [
        float(v)
        for v in (header.get("TransformMatrix") or header.get("Rotation") or header.get("Orientation") or "1 0 0 0 1 0 0 0 1").split()
    ]
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
