"""The comparable outputs of every analysis, as the analyses declare them.

The workbench compares outputs with reference values by name, and production
monitoring watches the distribution of the outputs marked ``key``.  Neither keeps a
list of its own: both read the analyses' :class:`~radpilot.contract.OutputSpec`
declarations through an :class:`OutputCatalog`.
"""

from __future__ import annotations

from collections.abc import Mapping

from radpilot.analyses import discover_analyses
from radpilot.contract import Analysis, Findings, OutputSpec


class OutputCatalog:
    """The outputs declared by a set of analyses, looked up by name or matched to a measurement."""

    def __init__(self, analyses: Mapping[str, Analysis]) -> None:
        self._by_analysis: dict[str, tuple[OutputSpec, ...]] = {name: tuple(a.outputs) for name, a in sorted(analyses.items())}
        self._by_name: dict[str, OutputSpec] = {}
        for specs in self._by_analysis.values():
            for spec in specs:
                self._by_name.setdefault(spec.name, spec)

    @classmethod
    def discover(cls) -> OutputCatalog:
        """The catalogue of every installed analysis."""
        return cls(discover_analyses())

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        return tuple(self._by_name.values())

    @property
    def key_outputs(self) -> tuple[OutputSpec, ...]:
        return tuple(o for o in self._by_name.values() if o.key)

    def spec(self, name: str) -> OutputSpec | None:
        return self._by_name.get(name)

    def label(self, name: str) -> str:
        spec = self._by_name.get(name)
        return spec.label if spec is not None else name

    def unit(self, name: str) -> str:
        spec = self._by_name.get(name)
        return spec.unit if spec is not None else ""

    def match(
        self, concept: str, concept_meaning: str, site: str | None, site_meaning: str | None, *, analysis: str | None = None
    ) -> OutputSpec | None:
        """The output a measurement (concept and finding site) is, among ``analysis``' outputs (all when it is unknown)."""
        specs = self._by_analysis[analysis] if analysis in self._by_analysis else self.outputs
        return next((s for s in specs if s.matches(concept, concept_meaning, site, site_meaning)), None)

    def findings_outputs(self, findings: Findings) -> dict[str, float]:
        """The declared outputs (by name) among a Findings' measurements, read with its analysis' declarations."""
        out: dict[str, float] = {}
        for m in findings.measurements:
            site = m.finding_site
            spec = self.match(
                m.name.value, m.name.meaning, site.value if site else None, site.meaning if site else None, analysis=findings.analysis
            )
            if spec is not None and spec.name not in out:
                out[spec.name] = float(m.value)
        return out
