"""What is validated: an analysis, or a model on its own, at one version."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from radpilot.analyses import discover_analyses, model_registry
from radpilot.contract import Analysis
from radpilot.modelhub.registry import ModelManifest


class ValidationError(RuntimeError):
    """A validation cannot run (unknown subject, no evaluation path, dataset changed...); the message says why."""


@dataclass(frozen=True)
class Subject:
    """What is validated: an analysis (by its catalog name) or a model (by its manifest name), at one version."""

    kind: Literal["analysis", "model"]
    name: str
    version: str
    analysis: Analysis | None = None
    model_manifest: ModelManifest | None = None
    models_dirs: tuple[Path, ...] = ()
    owner: Analysis | None = None  # for a model: the analysis that runs it (its pre/post-processing is the model's)

    @property
    def model(self) -> str | None:
        return self.model_manifest.name if self.model_manifest is not None else None

    @property
    def model_version(self) -> str | None:
        return self.model_manifest.version if self.model_manifest is not None else None

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


def resolve_subject(
    name: str,
    *,
    model_version: str | None = None,
    models_dir: Path | None = None,
    analyses: dict[str, Analysis] | None = None,
) -> Subject:
    """Find the analysis or model called ``name`` (analyses first); ``model_version`` picks a model's version."""
    analyses = analyses if analyses is not None else discover_analyses()
    registry = model_registry(analyses, models_dir)
    if name in analyses:
        analysis = analyses[name]
        manifest = None
        required = tuple(analysis.required_models)
        if required:
            if len(required) > 1 and model_version:
                raise ValidationError(f"{name} uses several models {list(required)}; --model-version is ambiguous")
            newest = registry.manifest(required[0])
            if model_version and model_version != newest.version:
                raise ValidationError(
                    f"{name} loads {required[0]} {newest.version}; it cannot be made to load {model_version} from here - "
                    f"validate the model itself (radpilot validate {required[0]} --model-version {model_version})"
                )
            manifest = newest
        elif model_version:
            raise ValidationError(f"{name} uses no model; --model-version does not apply")
        return Subject(
            "analysis", name, str(analysis.version), analysis=analysis, model_manifest=manifest, models_dirs=registry.models_dirs
        )
    try:
        manifest = registry.manifest(name, model_version)
    except KeyError as exc:
        known_models = sorted({m.name for m in registry.manifests()})
        raise ValidationError(
            f"no analysis or model called {name!r}"
            + (f" at version {model_version}" if model_version else "")
            + f"; analyses: {', '.join(sorted(analyses)) or 'none'}; models: {', '.join(known_models) or 'none'}"
        ) from exc
    owner = next((a for _, a in sorted(analyses.items()) if manifest.name in a.required_models), None)
    return Subject("model", manifest.name, manifest.version, model_manifest=manifest, models_dirs=registry.models_dirs, owner=owner)
