"""Worklist flags: declared in each analysis' flags.yaml, evaluated on findings, refused with the file and reason when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from radpilot.analyses import discover_analyses
from radpilot.contract import Analysis, Code, DetectionSpec, Findings, FlagRule, Measurement, OutputSpec, PointFinding
from radpilot.engine.flags import FlagsFileError, evaluate_flags, load_all_flag_rules, load_flag_rules

RATIO = Code("RATIO", "99TEST", "Ratio")
UNIT = Code("1", "UCUM", "no units")
NODULE = Code("27925004", "SCT", "Nodule")


class Demo(Analysis):
    name, version = "demo_flags", "0.1.0"
    outputs = (OutputSpec.of("ratio", "Ratio", "", RATIO),)
    detections = (DetectionSpec("nodule", NODULE.value),)

    def check_input(self, volume):  # noqa: ANN001, ANN201
        return None

    def run(self, volume):  # noqa: ANN001, ANN201
        raise NotImplementedError


def demo_in(folder: Path, flags_yaml: str | None) -> Demo:
    if flags_yaml is not None:
        (folder / "flags.yaml").write_text(flags_yaml)
    analysis = Demo()
    analysis.flags_file = lambda: folder / "flags.yaml"  # type: ignore[method-assign]
    return analysis


GOOD = """
flags:
  - {name: high_ratio, label: High ratio, output: ratio, above: 0.5}
  - {name: nodules, label: Nodule candidates, detection: nodule, at_least: 2, critical: true}
"""


def findings(ratio: float, nodules: int) -> Findings:
    return Findings(
        "demo_flags",
        "0.1.0",
        measurements=[Measurement(RATIO, ratio, UNIT)],
        points=[PointFinding(NODULE, (0.0, float(i), 0.0)) for i in range(nodules)],
    )


def test_flags_are_raised_by_outputs_and_detection_counts_past_their_thresholds(tmp_path: Path) -> None:
    analysis = demo_in(tmp_path, GOOD)
    rules = load_flag_rules(analysis)
    assert [r.name for r in rules] == ["high_ratio", "nodules"]
    assert evaluate_flags(analysis, rules, findings(0.5, 1)) == []  # "above" is strict, "at_least" is not met
    raised = evaluate_flags(analysis, rules, findings(0.51, 2))
    assert [(f.name, f.critical, f.value, f.threshold) for f in raised] == [("high_ratio", False, 0.51, 0.5), ("nodules", True, 2.0, 2.0)]
    assert evaluate_flags(analysis, rules, Findings("demo_flags", "0.1.0")) == []  # an output not produced raises nothing


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("flags: [{name: x, label: X, output: nope, above: 1}]", "declares no output 'nope'"),
        ("flags: [{name: x, label: X, detection: nope, at_least: 1}]", "declares no detection 'nope'"),
        ("flags: [{name: x, label: X, output: ratio}]", "exactly one threshold"),
        ("flags: [{name: x, label: X, output: ratio, detection: nodule, above: 1}]", "exactly one of 'output' and 'detection'"),
        ("flags: [{name: x, label: X, output: ratio, above: high}]", "must be a finite number"),
        ("flags: [{name: x, label: X, output: ratio, above: 1, colour: red}]", "unknown keys \\['colour'\\]"),
        ("flags: [{name: x, label: X, output: ratio, above: 1}, {name: x, label: Y, output: ratio, above: 2}]", "used twice"),
        ("flags: {x: 1}", "a mapping with one key 'flags' holding a list"),
        ("flags: [", "not valid YAML"),
    ],
)
def test_a_bad_flags_file_is_refused_naming_the_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(FlagsFileError, match=message) as caught:
        load_flag_rules(demo_in(tmp_path, text))
    assert str(tmp_path / "flags.yaml") in str(caught.value)


def test_no_flags_file_means_no_flags(tmp_path: Path) -> None:
    assert load_flag_rules(demo_in(tmp_path, None)) == ()


def test_the_shipped_analyses_declare_valid_flags() -> None:
    rules = load_all_flag_rules(discover_analyses())
    flagged = {name: {r.name for r in found} for name, found in rules.items() if found}
    assert {"cardiomegaly", "nodule_candidates"} <= flagged["chest_xray"]
    assert "emphysema" in flagged["lung_ct_quant"]
    assert any(r.critical for found in rules.values() for r in found)


def test_flag_rule_validates_itself() -> None:
    with pytest.raises(ValueError, match="identifier"):
        FlagRule("not a name", "X", output="ratio", above=1)
    with pytest.raises(ValueError, match="needs a label"):
        FlagRule("x", "", output="ratio", above=1)
