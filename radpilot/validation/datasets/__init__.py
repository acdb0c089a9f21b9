"""Reference datasets: manifests, a registry, content hashes and the adapters that read each layout.

A reference dataset is a folder of images with reference annotations, described by
a small YAML **manifest**: where the folder is, its layout, which analysis (and
models) it checks and which outputs, the licence and terms, the citation, the
limitations its README states, and the **content hash** the folder had when the
manifest was written, so a changed dataset is noticed before it produces numbers.

The package, bottom up:

* :mod:`~radpilot.validation.datasets.errors`: :class:`DatasetError`;
* :mod:`~radpilot.validation.datasets.hashing`: the content hash of a folder;
* :mod:`~radpilot.validation.datasets.manifest`: parsing, checking and pinning manifests;
* :mod:`~radpilot.validation.datasets.readers`: NIfTI (nibabel) and MetaImage volumes;
* :mod:`~radpilot.validation.datasets.grid`: reference volumes on an image's voxel grid;
* :mod:`~radpilot.validation.datasets.cases`: a case before and after its files are read;
* :mod:`~radpilot.validation.datasets.adapters`: one adapter per layout;
* :mod:`~radpilot.validation.datasets.registry`: shipped and user manifests, verification.

Everything callers use is importable from ``radpilot.validation.datasets`` itself.
"""

from __future__ import annotations

from collections.abc import Callable

from radpilot.validation.datasets.adapters import (
    ADAPTERS,
    Adapter,
    CineVolumeFilesAdapter,
    DicomSeriesAdapter,
    PngRadiographsAdapter,
    PngSlicesAdapter,
    VolumeFilesAdapter,
)
from radpilot.validation.datasets.cases import CaseData, CaseRef, PhaseReference, ReferencePoint
from radpilot.validation.datasets.errors import DatasetError
from radpilot.validation.datasets.grid import labels_on_volume_grid, volume_from_label_image
from radpilot.validation.datasets.hashing import HASH_PREFIX, ContentHash, compute_content_hash, dataset_files
from radpilot.validation.datasets.manifest import (
    LAYOUTS,
    NAME_PATTERN,
    REFERENCE_KINDS,
    DatasetManifest,
    load_manifest,
    parse_manifest,
    pin_manifest,
)
from radpilot.validation.datasets.readers import LabelImage, read_label_image, read_metaimage, read_nifti
from radpilot.validation.datasets.registry import (
    SHARED_DATA_ENV,
    SHIPPED_MANIFEST_DIR,
    DatasetRegistry,
    Verification,
    default_shared_root,
    user_manifest_dir,
)

# Kept importable from here as before; nothing in this package uses it.
ProgressCallback = Callable[[int, int, str], None]

__all__ = [
    "ADAPTERS",
    "HASH_PREFIX",
    "LAYOUTS",
    "NAME_PATTERN",
    "REFERENCE_KINDS",
    "SHARED_DATA_ENV",
    "SHIPPED_MANIFEST_DIR",
    "Adapter",
    "CaseData",
    "CaseRef",
    "CineVolumeFilesAdapter",
    "PhaseReference",
    "ReferencePoint",
    "ContentHash",
    "DatasetError",
    "DatasetManifest",
    "DatasetRegistry",
    "DicomSeriesAdapter",
    "LabelImage",
    "PngRadiographsAdapter",
    "PngSlicesAdapter",
    "ProgressCallback",
    "Verification",
    "VolumeFilesAdapter",
    "compute_content_hash",
    "dataset_files",
    "default_shared_root",
    "labels_on_volume_grid",
    "load_manifest",
    "parse_manifest",
    "pin_manifest",
    "read_label_image",
    "read_metaimage",
    "read_nifti",
    "user_manifest_dir",
    "volume_from_label_image",
]
