"""Dataset manifests: what a reference dataset is, what it checks, under which terms, and its content hash.

A manifest is a small YAML file (see :mod:`radpilot.validation.datasets` for where
they live and which layouts exist); :func:`parse_manifest` checks every field and
says which one is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from radpilot.validation.datasets.errors import DatasetError
from radpilot.validation.datasets.hashing import compute_content_hash

LAYOUTS = ("png-slices", "png-radiographs", "dicom-series", "volume-files", "cine-volume-files")
REFERENCE_KINDS = ("manual", "automatic", "phantom", "other")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


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
        "name",
        "version",
        "title",
        "layout",
        "root",
        "analysis",
        "models",
        "outputs",
        "reference",
        "licence",
        "terms",
        "citation",
        "limitations",
        "content_hash",
        "file_count",
        "total_bytes",
        "options",
        "development_use",
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


def pin_manifest(path: Path, root: Path) -> DatasetManifest:
    """Rewrite a manifest file with the current content hash of ``root`` (for maintainers, after a deliberate change)."""
    manifest = load_manifest(path)
    digest = compute_content_hash(root)
    content = yaml.safe_load(Path(path).read_text())
    content.update(content_hash=digest.value, file_count=digest.file_count, total_bytes=digest.total_bytes)
    Path(path).write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True, width=110))
    return replace(manifest, content_hash=digest.value, file_count=digest.file_count, total_bytes=digest.total_bytes)
