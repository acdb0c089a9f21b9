"""Model registry: manifests, sha256 verification, cached ONNX Runtime sessions.

Every model lives in a folder ``<name>/`` with a ``manifest.json`` that names the
ONNX file and its sha256, the input geometry and normalisation, the labels
with their codes, the training data and metrics, and the intended use.  A file
whose hash differs from its manifest is refused, never run.

Model folders are searched in the repository's ``models/`` and in any further
folders given (an analysis may ship its models in its own folder's ``models/``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
REQUIRED_MANIFEST_KEYS = ("name", "version", "file", "sha256", "input", "labels", "intended_use", "training_data")


class ModelIntegrityError(RuntimeError):
    """A model file does not match its manifest (changed, corrupt or missing)."""


class ManifestError(ValueError):
    """A manifest is missing a field or has a wrong one; the message says which."""


@dataclass(frozen=True)
class ModelManifest:
    """What a model is, what it expects and how it was made."""

    name: str
    version: str
    file: Path
    sha256: str
    input: dict[str, Any]
    labels: list[dict[str, Any]]
    intended_use: str
    training_data: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    acceptance_criteria: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ModelManifest:
        try:
            content = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{path}: cannot read manifest: {exc}") from exc
        if not isinstance(content, dict):
            raise ManifestError(f"{path}: manifest must be a JSON object")
        missing = [key for key in REQUIRED_MANIFEST_KEYS if key not in content]
        if missing:
            raise ManifestError(f"{path}: manifest lacks required field(s) {missing}")
        sha = str(content["sha256"]).lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ManifestError(f"{path}: sha256 must be 64 hexadecimal characters, got {content['sha256']!r}")
        if not isinstance(content["labels"], list):
            raise ManifestError(f"{path}: labels must be a list")
        return cls(
            name=str(content["name"]),
            version=str(content["version"]),
            file=Path(path).parent / str(content["file"]),
            sha256=sha,
            input=dict(content["input"]),
            labels=list(content["labels"]),
            intended_use=str(content["intended_use"]),
            training_data=dict(content["training_data"]),
            metrics=dict(content.get("metrics") or {}),
            acceptance_criteria=list(content.get("acceptance_criteria") or []),
            raw=content,
        )


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def available_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA when onnxruntime-gpu is installed and a GPU is present, else the CPU."""
    import onnxruntime  # noqa: PLC0415 - ONNX Runtime loads lazily: training scripts import the registry without it

    present = onnxruntime.get_available_providers()
    providers = ["CUDAExecutionProvider"] if prefer_gpu and "CUDAExecutionProvider" in present else []
    return providers + ["CPUExecutionProvider"]


class ModelRegistry:
    """Finds manifests under its model folders and hands out verified, cached ONNX Runtime sessions.

    Parameters
    ----------
    models_dir
        Folder (or folders, searched in order) with one sub-folder per model, each holding ``manifest.json``.
    providers
        ONNX Runtime execution providers; default CUDA if available, then CPU.
    intra_op_threads
        Threads per session (0: ONNX Runtime's default).
    """

    def __init__(
        self, models_dir: Path | Sequence[Path] = DEFAULT_MODELS_DIR, *, providers: list[str] | None = None, intra_op_threads: int = 0
    ) -> None:
        dirs = [models_dir] if isinstance(models_dir, (str, Path)) else list(models_dir)
        if not dirs:
            raise ValueError("ModelRegistry needs at least one models folder")
        self.models_dirs: tuple[Path, ...] = tuple(dict.fromkeys(Path(d) for d in dirs))
        self.providers = providers
        self.intra_op_threads = intra_op_threads
        self._sessions: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    @property
    def models_dir(self) -> Path:
        """The first (primary) models folder."""
        return self.models_dirs[0]

    def manifests(self) -> list[ModelManifest]:
        found: list[ModelManifest] = []
        for folder in self.models_dirs:
            if folder.is_dir():
                found.extend(ModelManifest.load(p) for p in sorted(folder.glob("*/manifest.json")))
        return found

    def manifest(self, name: str, version: str | None = None) -> ModelManifest:
        candidates = [m for m in self.manifests() if m.name == name and (version is None or m.version == version)]
        if not candidates:
            known = ", ".join(f"{m.name} {m.version}" for m in self.manifests()) or "none"
            wanted = f"{name} {version}" if version else name
            folders = ", ".join(str(d) for d in self.models_dirs)
            raise KeyError(f"no model {wanted!r} in {folders}; available: {known}")
        return sorted(candidates, key=lambda m: _version_key(m.version))[-1]

    def verify(self, manifest: ModelManifest) -> None:
        """Raise ModelIntegrityError unless the file exists and matches the manifest's sha256."""
        if not manifest.file.is_file():
            raise ModelIntegrityError(f"model {manifest.name} {manifest.version}: file {manifest.file} is missing")
        actual = file_sha256(manifest.file)
        if actual != manifest.sha256:
            raise ModelIntegrityError(
                f"model {manifest.name} {manifest.version}: {manifest.file.name} has sha256 {actual}, "
                f"but its manifest says {manifest.sha256}; the file was changed or is corrupt and will not be run"
            )

    def session(self, name: str, version: str | None = None) -> Any:  # an onnxruntime.InferenceSession (loaded lazily)
        """A verified ONNX Runtime session, created once per process and model version."""
        manifest = self.manifest(name, version)
        key = (manifest.name, manifest.version)
        with self._lock:
            if key not in self._sessions:
                self.verify(manifest)
                import onnxruntime  # noqa: PLC0415 - ONNX Runtime loads lazily: training scripts import the registry without it

                options = onnxruntime.SessionOptions()
                if self.intra_op_threads:
                    options.intra_op_num_threads = self.intra_op_threads
                providers = self.providers or available_providers()
                self._sessions[key] = onnxruntime.InferenceSession(manifest.file.read_bytes(), sess_options=options, providers=providers)
                logger.info("model loaded", extra={"model": manifest.name, "version": manifest.version, "providers": providers})
            return self._sessions[key]


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in version.replace("-", ".").split("."))
