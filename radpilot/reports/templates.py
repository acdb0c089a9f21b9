"""Report templates per exam type: YAML data files a department edits, pre-filled from AI findings.

The shipped templates live in ``radpilot/reports/exam_templates``; a file of the same name in
``settings.report_templates_dir`` replaces one, a new name adds one. Each names the fixed
text of the five sections and its *fields*: an analysis output (by the name the analysis
declares in its :class:`~radpilot.contract.OutputSpec`), the section it goes to, and the
phrase that quotes it (``{value}`` with an optional format, e.g. ``{value:.1f}``).

Pre-fill appends, for every field with a finding: verified (accepted or edited, the edited
value winning) findings as plain text; pending findings as AI-sourced phrases, marked until
the radiologist accepts them; rejected findings never.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from radpilot.contract import Analysis, Code, OutputSpec
from radpilot.reports.findings import FindingState, ReportFinding

SHIPPED_DIR = Path(__file__).resolve().parent / "exam_templates"
SECTIONS = ("clinical_information", "technique", "comparison", "findings", "impression")
SECTION_TITLES = {
    "clinical_information": "Clinical information",
    "technique": "Technique",
    "comparison": "Comparison",
    "findings": "Findings",
    "impression": "Impression",
}
ALLOWED_FIELDS = {"value"}


class TemplateError(ValueError):
    """A template file is wrong; the message names the file, the entry and the problem."""


@dataclass(frozen=True)
class TemplateField:
    """One AI-sourced phrase of a template: the output it quotes, where, and how."""

    output: str
    section: str
    text: str
    unit: str = ""

    def render(self, value: float) -> str:
        return self.text.format(value=value)


@dataclass(frozen=True)
class ReportTemplate:
    name: str
    title: str
    modalities: tuple[str, ...]
    procedure: Code
    sections: dict[str, str]
    fields: tuple[TemplateField, ...]
    source: Path
    inactive_outputs: tuple[str, ...] = field(default=())  # fields no installed analysis declares (yet)
    keywords: tuple[str, ...] = field(default=())  # words of the study description / body part that choose it

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "modalities": list(self.modalities),
            "procedure": {"code": self.procedure.value, "scheme": self.procedure.scheme, "meaning": self.procedure.meaning},
            "sections": dict(self.sections),
            "fields": [f.__dict__ for f in self.fields],
            "inactive_outputs": list(self.inactive_outputs),
            "source": str(self.source),
        }


@dataclass
class AiPhrase:
    """A phrase of a report quoting an AI finding; ``pending`` until the radiologist accepts it."""

    id: str
    finding_id: str
    output: str
    section: str
    text: str
    state: str  # pending | accepted

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Prefill:
    sections: dict[str, str]
    phrases: list[AiPhrase]
    quoted: list[ReportFinding]


def _check_format(path: Path, where: str, text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        raise TemplateError(f"{path}: {where}: 'text' must be a non-empty string")
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"{path}: {where}: text {text!r} is not a valid format: {exc}") from exc
    names = [name for _, name, _, _ in parts if name is not None]
    for _, name, _spec, conversion in parts:
        if name is not None and (name not in ALLOWED_FIELDS or conversion):
            raise TemplateError(f"{path}: {where}: text {text!r} may use only {{value}} with a format, not {{{name}}}")
    if "value" not in names:
        raise TemplateError(f"{path}: {where}: text {text!r} must contain {{value}}")
    try:
        text.format(value=1.5)
    except (ValueError, TypeError) as exc:
        raise TemplateError(f"{path}: {where}: text {text!r} cannot format a number: {exc}") from exc
    return text


def parse_template(path: Path, outputs: Mapping[str, OutputSpec]) -> ReportTemplate:
    """One template file, checked against the outputs the installed analyses declare.

    Raises
    ------
    TemplateError
        Naming the file and the problem: not YAML, unknown section, bad field, a unit that
        differs from the declared output's.
    """
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TemplateError(f"{path}: cannot be read as YAML: {exc}") from exc
    if not isinstance(content, dict):
        raise TemplateError(f"{path}: must hold a mapping with name, title, modalities, procedure, sections, fields")
    unknown = set(content) - {"name", "title", "modalities", "keywords", "procedure", "sections", "fields"}
    if unknown:
        raise TemplateError(f"{path}: unknown keys {sorted(unknown)}")
    name = content.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise TemplateError(f"{path}: 'name' must be an identifier, got {name!r}")
    if name != path.stem:
        raise TemplateError(f"{path}: 'name' {name!r} must match the file name {path.stem!r}")
    title = content.get("title")
    if not isinstance(title, str) or not title.strip():
        raise TemplateError(f"{path}: 'title' must be a non-empty string")
    modalities = content.get("modalities") or []
    if not isinstance(modalities, list) or not all(isinstance(m, str) and m for m in modalities):
        raise TemplateError(f"{path}: 'modalities' must be a list of modality codes, e.g. [CT]")
    keywords = content.get("keywords") or []
    if not isinstance(keywords, list) or not all(isinstance(k, str) and k for k in keywords):
        raise TemplateError(f"{path}: 'keywords' must be a list of words matched in the study description or body part")
    procedure = content.get("procedure") or {}
    try:
        procedure_code = Code(str(procedure["code"]), str(procedure["scheme"]), str(procedure["meaning"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise TemplateError(f"{path}: 'procedure' must have code, scheme and meaning ({exc})") from exc
    sections = content.get("sections") or {}
    if not isinstance(sections, dict):
        raise TemplateError(f"{path}: 'sections' must be a mapping of section name to text")
    bad = set(sections) - set(SECTIONS)
    if bad:
        raise TemplateError(f"{path}: unknown sections {sorted(bad)}; the sections are {', '.join(SECTIONS)}")
    texts = {s: str(sections.get(s) or "") for s in SECTIONS}
    fields: list[TemplateField] = []
    inactive: list[str] = []
    for index, entry in enumerate(content.get("fields") or []):
        where = f"fields[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"output", "section", "text", "unit"}:
            raise TemplateError(f"{path}: {where}: must be a mapping with output, section, text and optional unit")
        output = entry.get("output")
        if not isinstance(output, str) or not output.isidentifier():
            raise TemplateError(f"{path}: {where}: 'output' must name an analysis output, got {output!r}")
        section = entry.get("section", "findings")
        if section not in SECTIONS:
            raise TemplateError(f"{path}: {where}: section {section!r} is not one of {', '.join(SECTIONS)}")
        unit = str(entry.get("unit", "") or "")
        spec = outputs.get(output)
        if spec is None:
            inactive.append(output)
        elif unit and spec.unit and unit != spec.unit:
            raise TemplateError(f"{path}: {where}: unit {unit!r} differs from output {output!r}'s declared unit {spec.unit!r}")
        fields.append(TemplateField(output, section, _check_format(path, where, entry.get("text")), unit or (spec.unit if spec else "")))
    return ReportTemplate(
        name,
        title.strip(),
        tuple(modalities),
        procedure_code,
        texts,
        tuple(fields),
        path,
        tuple(inactive),
        tuple(k.upper() for k in keywords),
    )


def declared_outputs(analyses: Mapping[str, Analysis]) -> dict[str, OutputSpec]:
    found: dict[str, OutputSpec] = {}
    for analysis in analyses.values():
        for spec in analysis.outputs:
            found.setdefault(spec.name, spec)
    return found


class TemplateLibrary:
    """The templates in force: the shipped ones, each replaced or added to by the department's folder."""

    def __init__(self, analyses: Mapping[str, Analysis], override_dir: Path | None = None) -> None:
        outputs = declared_outputs(analyses)
        files = {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.yaml"))}
        if override_dir is not None:
            if not Path(override_dir).is_dir():
                raise TemplateError(f"report templates folder {override_dir} does not exist")
            files.update({p.stem: p for p in sorted(Path(override_dir).glob("*.yaml"))})
        self.templates = {name: parse_template(path, outputs) for name, path in sorted(files.items())}

    def get(self, name: str) -> ReportTemplate:
        try:
            return self.templates[name]
        except KeyError:
            raise TemplateError(f"unknown report template {name!r}; known: {', '.join(self.templates)}") from None

    def suggest(self, modalities: Sequence[str], description: str = "") -> ReportTemplate | None:
        """The template for one of the study's modalities whose keywords best match ``description`` (first by name on a tie)."""
        wanted = {m.upper() for m in modalities}
        words = description.upper()
        candidates = [t for t in self.templates.values() if wanted & {m.upper() for m in t.modalities}]
        if not candidates:
            return None
        return max(candidates, key=lambda t: sum(1 for k in t.keywords if k in words))


def prefill(template: ReportTemplate, findings: Sequence[ReportFinding]) -> Prefill:
    """The template's sections with its fields filled from ``findings``; rejected findings never appear."""
    sections = dict(template.sections)
    phrases: list[AiPhrase] = []
    quoted: list[ReportFinding] = []
    by_output: dict[str, ReportFinding] = {}
    for finding in findings:
        if finding.state is FindingState.REJECTED:
            continue
        by_output.setdefault(finding.output, finding)
    added: dict[str, list[str]] = {s: [] for s in SECTIONS}
    for number, template_field in enumerate(template.fields, start=1):
        quoted_finding = by_output.get(template_field.output)
        if quoted_finding is None:
            continue
        text = template_field.render(quoted_finding.shown_value)
        added[template_field.section].append(text)
        quoted.append(quoted_finding)
        phrases.append(
            AiPhrase(
                id=f"ai{number}",
                finding_id=quoted_finding.finding_id,
                output=quoted_finding.output,
                section=template_field.section,
                text=text,
                state="accepted" if quoted_finding.verified else "pending",
            )
        )
    for section, lines in added.items():
        if lines:
            base = sections[section].rstrip()
            sections[section] = (base + "\n" if base else "") + "\n".join(lines)
    return Prefill(sections, phrases, quoted)
