"""The registry of reference datasets: shipped manifests plus a user's own, and their verification.

Manifests come from two places:

* shipped with RadPilot, ``radpilot/validation/dataset_manifests/*.yaml``, for the
  shared reference sets (``root`` relative to the shared data root, see
  :func:`default_shared_root`);
* a user's own folders, registered with ``radpilot datasets add`` (or written by
  hand) as ``<data_dir>/validation/datasets/<name>.yaml`` with an absolute ``root``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from radpilot.validation.datasets.adapters import ADAPTERS
from radpilot.validation.datasets.cases import CaseData, CaseRef
from radpilot.validation.datasets.errors import DatasetError
from radpilot.validation.datasets.hashing import compute_content_hash, sha256sums_differences
from radpilot.validation.datasets.manifest import DatasetManifest, load_manifest, parse_manifest

SHIPPED_MANIFEST_DIR = Path(__file__).resolve().parents[1] / "dataset_manifests"
SHARED_DATA_ENV = "RADPILOT_SHARED_DATA"


def default_shared_root() -> Path:
    """The shared reference data folder: ``$RADPILOT_SHARED_DATA`` or ``<repository>/../shared/data``."""
    configured = os.environ.get(SHARED_DATA_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def user_manifest_dir(data_dir: Path) -> Path:
    """Where the manifests of a user's own datasets live: ``<data_dir>/validation/datasets``."""
    return Path(data_dir) / "validation" / "datasets"


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

    def __init__(
        self, data_dir: Path | None = None, *, shared_root: Path | None = None, shipped_dir: Path | None = SHIPPED_MANIFEST_DIR
    ) -> None:
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
            return Verification(
                manifest.name, "missing", root, manifest.content_hash, None, None, None, None, f"dataset folder {root} does not exist"
            )
        actual = compute_content_hash(root)
        try:
            n_cases: int | None = len(self.cases(manifest))
            problem = None
        except (DatasetError, KeyError, OSError) as exc:
            n_cases, problem = None, str(exc)
        common = dict(
            name=manifest.name,
            root=root,
            expected_hash=manifest.content_hash,
            actual_hash=actual.value,
            file_count=actual.file_count,
            total_bytes=actual.total_bytes,
            n_cases=n_cases,
        )
        if problem:
            return Verification(status="invalid", message=f"the folder does not match layout {manifest.layout}: {problem}", **common)
        if manifest.content_hash is None:
            return Verification(
                status="unpinned", message="the manifest has no content_hash: results on it cannot be tied to a fixed content", **common
            )
        if actual.value != manifest.content_hash:
            details = sha256sums_differences(root, actual.files)
            counts = []
            if manifest.file_count is not None and manifest.file_count != actual.file_count:
                counts.append(f"{actual.file_count} files instead of {manifest.file_count}")
            if manifest.total_bytes is not None and manifest.total_bytes != actual.total_bytes:
                counts.append(f"{actual.total_bytes} bytes instead of {manifest.total_bytes}")
            message = f"content changed: hash {actual.value[:19]}... differs from the manifest's {manifest.content_hash[:19]}..." + (
                f" ({', '.join(counts)})" if counts else ""
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
                "name": name,
                "version": version,
                "title": title or name,
                "layout": layout,
                "root": str(root),
                "analysis": analysis,
                "models": list(models),
                "reference": {
                    "kind": reference_kind,
                    "description": reference_description or "reference annotations of the user's own folder",
                },
                "licence": licence,
                "terms": terms,
                "citation": list(citation),
                "limitations": list(limitations),
                "options": dict(options or {}),
                "development_use": list(development_use),
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
