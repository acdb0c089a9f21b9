"""Declarative routing: YAML rules on DICOM attributes choose analyses and destinations per series.

A rules file looks like::

    rules:
      - name: chest-ct
        match:
          Modality: CT                       # one value or a list (any of), case-insensitive
          BodyPartExamined: [CHEST, LUNG, THORAX]
          SeriesDescription: {regex: "(?i)lung|chest|thorax"}
          ImageType: {contains: AXIAL}
          SliceThickness: {min: 0.5, max: 5.0}
          NumberOfSlices: {min: 40}
          ContrastBolusAgent: {present: false}
          StationName: CT1
          CallingAETitle: [MODALITY1, PACS]
        analyses: [lung_ct_quant]
        destinations: [pacs]
        priority: routine                    # stat | routine
        stop: false                          # true: later rules are not evaluated for this series

Every rule that matches a series contributes its analyses; ``route --dry-run``
explains, per rule and condition, why a series matched or not.

Without a site rules file, the rules are the analyses' own defaults: each analysis
folder's ``routing.yaml`` (which may route only to that analysis), in analysis-name
order.  ``radpilot route --print-default-rules`` writes them as one file to start from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from radpilot.analyses import discover_analyses
from radpilot.contract import Analysis

MATCHABLE_ATTRIBUTES = {
    "Modality",
    "BodyPartExamined",
    "SeriesDescription",
    "ImageType",
    "SliceThickness",
    "NumberOfSlices",
    "ContrastBolusAgent",
    "StationName",
    "CallingAETitle",
    "ViewPosition",
    "SOPClassUID",
    "Manufacturer",
    "ProtocolName",
}
OPERATORS = {"regex", "contains", "min", "max", "present", "any_of", "equals"}
PRIORITIES = {"stat", "routine"}


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, line and reason."""


@dataclass(frozen=True)
class SeriesFacts:
    """What routing may look at for one series."""

    study_instance_uid: str
    series_instance_uid: str
    attributes: dict[str, Any]

    def get(self, keyword: str) -> Any:
        return self.attributes.get(keyword)


@dataclass(frozen=True)
class Condition:
    attribute: str
    operator: str
    operand: Any

    def evaluate(self, facts: SeriesFacts) -> tuple[bool, str]:
        """Return (matched, reason in plain words)."""
        value = facts.get(self.attribute)
        shown = _show(value)
        if self.operator == "present":
            present = value not in (None, "", [])
            ok = present == bool(self.operand)
            return ok, f"{self.attribute} is {'present' if present else 'absent'} ({shown})"
        if value in (None, "", []):
            return False, f"{self.attribute} is absent; rule needs {self._describe()}"
        if self.operator == "any_of":
            values = [str(v).strip().upper() for v in (value if isinstance(value, list) else [value])]
            ok = any(v in self.operand for v in values)
            return ok, f"{self.attribute} is {shown}; rule needs one of {sorted(self.operand)}"
        if self.operator == "regex":
            ok = bool(self.operand.search(" ".join(map(str, value)) if isinstance(value, list) else str(value)))
            return ok, f"{self.attribute} {shown} {'matches' if ok else 'does not match'} /{self.operand.pattern}/"
        if self.operator == "contains":
            values = [str(v).strip().upper() for v in (value if isinstance(value, list) else str(value).split("\\"))]
            ok = all(item in values for item in self.operand)
            return ok, f"{self.attribute} is {shown}; rule needs it to contain {self.operand}"
        number = _as_float(value)
        if number is None:
            return False, f"{self.attribute} {shown} is not a number"
        if self.operator == "min":
            return number >= self.operand, f"{self.attribute} is {number:g}; rule needs at least {self.operand:g}"
        return number <= self.operand, f"{self.attribute} is {number:g}; rule needs at most {self.operand:g}"

    def _describe(self) -> str:
        operand = self.operand.pattern if self.operator == "regex" else self.operand
        return f"{self.operator} {operand}"


@dataclass(frozen=True)
class Rule:
    name: str
    conditions: tuple[Condition, ...]
    analyses: tuple[str, ...]
    destinations: tuple[str, ...] = ()
    priority: str = "routine"
    stop: bool = False
    line: int = 0

    def evaluate(self, facts: SeriesFacts) -> tuple[bool, list[tuple[bool, str]]]:
        outcomes = [condition.evaluate(facts) for condition in self.conditions]
        return all(ok for ok, _ in outcomes), outcomes


@dataclass
class RuleExplanation:
    rule: str
    matched: bool
    reasons: list[tuple[bool, str]]


@dataclass
class RoutingDecision:
    """The analyses chosen for one series and why."""

    facts: SeriesFacts
    analyses: list[tuple[str, Rule]] = field(default_factory=list)
    explanations: list[RuleExplanation] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return bool(self.analyses)


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    source: str = "<rules>"

    def route(self, facts: SeriesFacts) -> RoutingDecision:
        decision = RoutingDecision(facts=facts)
        chosen: set[str] = set()
        for rule in self.rules:
            matched, reasons = rule.evaluate(facts)
            decision.explanations.append(RuleExplanation(rule.name, matched, reasons))
            if not matched:
                continue
            for analysis in rule.analyses:
                if analysis not in chosen:
                    chosen.add(analysis)
                    decision.analyses.append((analysis, rule))
            if rule.stop:
                break
        return decision


def _show(value: Any) -> str:
    if value in (None, "", []):
        return "empty"
    if isinstance(value, list):
        return "\\".join(map(str, value))
    return repr(str(value))


def _as_float(value: Any) -> float | None:
    try:
        return float(value[0] if isinstance(value, list) else value)
    except (TypeError, ValueError, IndexError):
        return None


class _LineLoader(yaml.SafeLoader):
    """A YAML loader that records the line of every mapping as ``__line__``."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _fail(source: str, line: int, message: str) -> RulesError:
    return RulesError(f"{source}, line {line}: {message}")


def _parse_condition(source: str, line: int, attribute: str, spec: Any) -> list[Condition]:
    if attribute not in MATCHABLE_ATTRIBUTES:
        raise _fail(source, line, f"unknown attribute {attribute!r}; known: {', '.join(sorted(MATCHABLE_ATTRIBUTES))}")
    if isinstance(spec, dict):
        spec = {k: v for k, v in spec.items() if k != "__line__"}
        unknown = set(spec) - OPERATORS
        if unknown or not spec:
            raise _fail(source, line, f"{attribute}: unknown operator(s) {sorted(unknown) or '(none)'}; use {sorted(OPERATORS)}")
        conditions = []
        for operator, operand in spec.items():
            conditions.append(_make_condition(source, line, attribute, operator, operand))
        return conditions
    if isinstance(spec, list):
        return [_make_condition(source, line, attribute, "any_of", spec)]
    if isinstance(spec, bool):
        return [_make_condition(source, line, attribute, "present", spec)]
    return [_make_condition(source, line, attribute, "any_of", [spec])]


def _make_condition(source: str, line: int, attribute: str, operator: str, operand: Any) -> Condition:
    if operator in ("any_of", "equals"):
        values = operand if isinstance(operand, list) else [operand]
        if not values or any(isinstance(v, (dict, list)) for v in values):
            raise _fail(source, line, f"{attribute}: expected a value or a list of values")
        return Condition(attribute, "any_of", frozenset(str(v).strip().upper() for v in values))
    if operator == "regex":
        try:
            return Condition(attribute, "regex", re.compile(str(operand)))
        except re.error as exc:
            raise _fail(source, line, f"{attribute}: invalid regular expression {operand!r}: {exc}") from exc
    if operator == "contains":
        values = operand if isinstance(operand, list) else [operand]
        return Condition(attribute, "contains", tuple(str(v).strip().upper() for v in values))
    if operator in ("min", "max"):
        if isinstance(operand, bool) or not isinstance(operand, (int, float)):
            raise _fail(source, line, f"{attribute}: {operator} needs a number, got {operand!r}")
        return Condition(attribute, operator, float(operand))
    if not isinstance(operand, bool):
        raise _fail(source, line, f"{attribute}: present needs true or false, got {operand!r}")
    return Condition(attribute, "present", operand)


def parse_rules(text: str, *, source: str = "<rules>", known_analyses: set[str] | None = None) -> RuleSet:
    """Parse and validate a rules document.

    Raises
    ------
    RulesError
        With the file, line and reason of the first problem found.
    """
    try:
        document = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        raise _fail(source, line, f"not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        raise _fail(source, 1, "expected a mapping with a 'rules' list")
    rules: list[Rule] = []
    names: set[str] = set()
    for entry in document["rules"]:
        if not isinstance(entry, dict):
            raise _fail(source, document["__line__"], "each rule must be a mapping")
        rules.append(_parse_rule(source, entry, names, known_analyses))
    return RuleSet(tuple(rules), source)


def _parse_rule(source: str, entry: dict, names: set[str], known_analyses: set[str] | None) -> Rule:
    line = entry["__line__"]
    allowed = {"name", "match", "analyses", "destinations", "priority", "stop", "__line__"}
    unknown = set(entry) - allowed
    if unknown:
        raise _fail(source, line, f"unknown key(s) {sorted(unknown)} in rule; allowed: {sorted(allowed - {'__line__'})}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(source, line, "rule needs a 'name'")
    if name in names:
        raise _fail(source, line, f"duplicate rule name {name!r}")
    names.add(name)
    match = entry.get("match") or {}
    if not isinstance(match, dict):
        raise _fail(source, line, f"rule {name!r}: 'match' must be a mapping of attribute to condition")
    match_line = match.get("__line__", line)
    conditions: list[Condition] = []
    for attribute, spec in match.items():
        if attribute != "__line__":
            conditions.extend(_parse_condition(source, match_line, attribute, spec))
    analyses = entry.get("analyses")
    if not isinstance(analyses, list) or not analyses or not all(isinstance(a, str) for a in analyses):
        raise _fail(source, line, f"rule {name!r}: 'analyses' must be a non-empty list of analysis names")
    if known_analyses is not None:
        missing = [a for a in analyses if a not in known_analyses]
        if missing:
            raise _fail(source, line, f"rule {name!r}: unknown analysis {missing[0]!r}; known: {sorted(known_analyses)}")
    destinations = entry.get("destinations") or []
    if not isinstance(destinations, list) or not all(isinstance(d, str) for d in destinations):
        raise _fail(source, line, f"rule {name!r}: 'destinations' must be a list of node names")
    priority = str(entry.get("priority", "routine")).lower()
    if priority not in PRIORITIES:
        raise _fail(source, line, f"rule {name!r}: priority must be one of {sorted(PRIORITIES)}, got {priority!r}")
    stop = entry.get("stop", False)
    if not isinstance(stop, bool):
        raise _fail(source, line, f"rule {name!r}: 'stop' must be true or false")
    return Rule(name, tuple(conditions), tuple(analyses), tuple(destinations), priority, stop, line)


def default_rules(analyses: Mapping[str, Analysis]) -> RuleSet:
    """The analyses' own default rules (each folder's ``routing.yaml``), in analysis-name order.

    Raises
    ------
    RulesError
        When a default rule names another analysis, or two analyses' rules share a name.
    """
    rules: list[Rule] = []
    sources: list[str] = []
    for name, analysis in sorted(analyses.items()):
        path = analysis.routing_file()
        if not path.is_file():
            continue  # no default rule: the analysis runs only where a site rule names it
        for rule in parse_rules(path.read_text(), source=str(path), known_analyses={name}).rules:
            if any(r.name == rule.name for r in rules):
                raise RulesError(f"{path}: line {rule.line}: rule name {rule.name!r} is already used by another analysis' default rules")
            rules.append(rule)
        sources.append(str(path))
    return RuleSet(tuple(rules), "default rules of the analyses (" + ", ".join(sources) + ")")


def default_rules_text(analyses: Mapping[str, Analysis]) -> str:
    """The analyses' default rules as one rules file, to copy and edit for a site."""
    parts = [
        "# RadPilot's default routing rules: each analysis' own routing.yaml. Edit a copy and point",
        "# RADPILOT_RULES_FILE (or --rules-file) at it.",
        "rules:",
    ]
    for name, analysis in sorted(analyses.items()):
        path = analysis.routing_file()
        if path.is_file():
            document = yaml.safe_load(path.read_text()) or {}
            parts.append(f"  # from {name} ({path.name})")
            body = yaml.safe_dump(document.get("rules") or [], sort_keys=False, default_flow_style=None, width=120)
            parts.extend("  " + line for line in body.splitlines())
    return "\n".join(parts) + "\n"


def load_rules(path: Path | None = None, analyses: Mapping[str, Analysis] | None = None) -> RuleSet:
    """The site's rules file checked against the known analyses (default: all installed), or without one their defaults."""
    analyses = analyses if analyses is not None else discover_analyses()
    if not path:
        return default_rules(analyses)
    path = Path(path)
    if not path.is_file():
        raise RulesError(f"{path}: rules file does not exist")
    return parse_rules(path.read_text(), source=str(path), known_analyses=set(analyses))
