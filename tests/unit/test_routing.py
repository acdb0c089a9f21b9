"""Routing rules: parsing with line-numbered errors, matching, and explanations."""

from __future__ import annotations

import pytest

from radpilot.engine.routing import RulesError, SeriesFacts, load_rules, parse_rules

CHEST_CT = SeriesFacts(
    "1.2.3",
    "1.2.3.4",
    {
        "Modality": "CT",
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "SeriesDescription": "Thorax 1.0 B70f",
        "SliceThickness": "1.0",
        "NumberOfSlices": 300,
        "BodyPartExamined": "CHEST",
        "CallingAETitle": "CT1",
    },
)

RULES = """
rules:
  - name: lung
    match:
      Modality: ct
      SeriesDescription: {regex: "(?i)thorax|lung"}
      ImageType: {contains: AXIAL}
      SliceThickness: {min: 0.5, max: 3}
      NumberOfSlices: {min: 40}
      ContrastBolusAgent: {present: false}
      CallingAETitle: [CT1, CT2]
    analyses: [lung_ct_quant]
    destinations: [pacs]
    priority: stat
  - name: thick-slices
    match:
      SliceThickness: {min: 5}
    analyses: [other]
"""


def test_matching_series_gets_analysis_destinations_and_priority() -> None:
    decision = parse_rules(RULES).route(CHEST_CT)
    assert [(a, r.name, r.destinations, r.priority) for a, r in decision.analyses] == [("lung_ct_quant", "lung", ("pacs",), "stat")]
    failed = decision.explanations[1]
    assert not failed.matched
    assert failed.reasons == [(False, "SliceThickness is 1; rule needs at least 5")]


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"Modality": "MR"}, "Modality is 'MR'; rule needs one of ['CT']"),
        ({"NumberOfSlices": 3}, "NumberOfSlices is 3; rule needs at least 40"),
        ({"ContrastBolusAgent": "IOMERON"}, "ContrastBolusAgent is present ('IOMERON')"),
        ({"SeriesDescription": "Scout"}, "SeriesDescription 'Scout' does not match /(?i)thorax|lung/"),
        ({"ImageType": ["DERIVED", "SECONDARY"]}, "ImageType is DERIVED\\SECONDARY; rule needs it to contain ('AXIAL',)"),
        ({"CallingAETitle": None}, "CallingAETitle is absent; rule needs any_of"),
    ],
)
def test_non_matching_series_is_explained(change: dict, reason: str) -> None:
    facts = SeriesFacts("1", "2", {**CHEST_CT.attributes, **change})
    decision = parse_rules(RULES).route(facts)
    assert not decision.matched
    assert any(not ok and text.startswith(reason) for ok, text in decision.explanations[0].reasons), decision.explanations[0].reasons


@pytest.mark.parametrize(
    "text, message",
    [
        ("rules: [", "line 1: not valid YAML"),
        ("something: else", "expected a mapping with a 'rules' list"),
        ("rules:\n  - name: a\n    match:\n      Modality: CT\n", "line 2: rule 'a': 'analyses' must be a non-empty list"),
        ("rules:\n  - name: a\n    match:\n      Colour: red\n    analyses: [x]\n", "line 4: unknown attribute 'Colour'"),
        ("rules:\n  - name: a\n    match:\n      SeriesDescription: {regex: '('}\n    analyses: [x]\n", "invalid regular expression"),
        ("rules:\n  - name: a\n    match:\n      SliceThickness: {min: thin}\n    analyses: [x]\n", "min needs a number"),
        ("rules:\n  - name: a\n    analyses: [x]\n    priority: urgent\n", "priority must be one of"),
        ("rules:\n  - name: a\n    analyses: [x]\n  - name: a\n    analyses: [x]\n", "line 4: duplicate rule name"),
        ("rules:\n  - name: a\n    analyses: [x]\n    colour: red\n", "unknown key(s) ['colour']"),
    ],
)
def test_bad_rules_are_rejected_with_line_and_reason(text: str, message: str) -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(text, source="rules.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("rules.yaml")


def test_unknown_analysis_is_rejected_when_known_set_given() -> None:
    with pytest.raises(RulesError, match="unknown analysis 'other'"):
        parse_rules(RULES, known_analyses={"lung_ct_quant"})


def test_stop_ends_evaluation() -> None:
    text = "rules:\n  - name: a\n    analyses: [x]\n    stop: true\n  - name: b\n    analyses: [y]\n"
    decision = parse_rules(text).route(CHEST_CT)
    assert [a for a, _ in decision.analyses] == ["x"]
    assert len(decision.explanations) == 1


def test_default_rules_route_a_non_contrast_chest_ct_to_calcium_scoring_and_lung_quantification() -> None:
    decision = load_rules().route(CHEST_CT)
    assert [a for a, _ in decision.analyses] == ["coronary_calcium", "lung_ct_quant"]


def test_default_rules_route_a_contrast_chest_ct_to_lung_quantification_only() -> None:
    contrast = SeriesFacts("1.2.3", "1.2.3.5", {**CHEST_CT.attributes, "ContrastBolusAgent": "IOPAMIDOL"})
    assert [a for a, _ in load_rules().route(contrast).analyses] == ["lung_ct_quant"]


def test_series_no_rule_matches_is_not_an_error() -> None:
    decision = load_rules().route(SeriesFacts("1", "2", {"Modality": "US"}))
    assert not decision.matched and decision.explanations
