"""Voice commands cut out of a transcript, typed, in spoken order; the rest stays report text."""

from __future__ import annotations

import pytest

from radpilot.dictation.commands import CommandKind, TextPiece, VoiceCommand, split_commands
from radpilot.dictation.lexicon import LexiconError, vocabulary_for
from radpilot.dictation.service import report_form


def commands(text: str, language: str = "en") -> list[tuple[CommandKind, str | None]]:
    return [(p.kind, p.argument) for p in split_commands(text, language) if isinstance(p, VoiceCommand)]


@pytest.mark.parametrize(
    ("spoken", "section"),
    [
        ("Go to impression.", "impression"),
        ("go to the findings section", "findings"),
        ("Jump to conclusion", "impression"),
        ("Go to clinical history.", "indication"),
        ("Move to comparison", "comparison"),
    ],
)
def test_go_to_a_section(spoken: str, section: str) -> None:
    assert commands(spoken) == [(CommandKind.GO_TO_SECTION, section)]


def test_every_command_kind_in_spoken_order_with_text_between() -> None:
    pieces = split_commands(
        "There is a nodule. Undo that. Go to the findings section. Insert normal chest. Accept the AI findings. "
        "Insert template chest CT. Sign the report."
    )
    assert pieces[0] == TextPiece("There is a nodule.")
    assert [(p.kind, p.argument) for p in pieces[1:] if isinstance(p, VoiceCommand)] == [
        (CommandKind.UNDO, None),
        (CommandKind.GO_TO_SECTION, "findings"),
        (CommandKind.INSERT_NORMAL, "chest"),
        (CommandKind.ACCEPT_AI_FINDINGS, None),
        (CommandKind.INSERT_TEMPLATE, "chest ct"),
        (CommandKind.SIGN, None),
    ]


def test_command_words_inside_findings_are_not_commands() -> None:
    assert commands("No sign of pneumothorax. The findings are stable.") == []
    assert commands("Accept A.I. findings.") == [(CommandKind.ACCEPT_AI_FINDINGS, None)]


def test_korean_commands() -> None:
    assert commands("결론으로 이동 정상 소견 삽입 실행 취소 서명", "ko") == [
        (CommandKind.GO_TO_SECTION, "impression"),
        (CommandKind.INSERT_NORMAL, None),
        (CommandKind.UNDO, None),
        (CommandKind.SIGN, None),
    ]


def test_report_form_formats_text_and_carries_the_normal_phrase_with_its_command() -> None:
    text, pieces = report_form(
        "Go to findings. A seven millimeter nodule period. Insert normal lungs.", language="en", vocabulary=vocabulary_for("chest_ct")
    )
    assert text == "A 7 mm nodule."
    assert pieces[0] == {"type": "command", "command": "go_to_section", "argument": "findings", "spoken": "Go to findings"}
    assert pieces[2]["command"] == "insert_normal"
    assert pieces[2]["text"].startswith("The lungs are clear")


def test_near_miss_terms_are_corrected_but_inflections_and_common_words_are_not() -> None:
    vocabulary = vocabulary_for("chest_ct")
    assert vocabulary.correct("Mild atelectesis. Small plural effusion.") == "Mild atelectasis. Small pleural effusion."
    assert vocabulary.correct("Centri lobular emphysema.") == "Centrilobular emphysema."
    assert (
        vocabulary.correct("Multiple nodules and effusions. The lungs are clear.") == "Multiple nodules and effusions. The lungs are clear."
    )


def test_prompt_holds_the_exam_terms_within_whispers_budget() -> None:
    prompt = vocabulary_for("abdomen_ct").prompt()
    assert "hepatic" in prompt and "millimeters" in prompt
    assert len(prompt) <= 720


def test_unknown_exam_type_names_the_known_ones() -> None:
    with pytest.raises(LexiconError, match="unknown exam type 'knee_mr'.*chest_ct"):
        vocabulary_for("knee_mr")


@pytest.mark.parametrize(
    "dictated",
    [
        "No pneumothorax is seen.",
        "No pleural effusion.",
        "Not consolidation.",
        "Without interstitial thickening.",
        "The pulmonary artery diameter is 31 mm.",
        "The endotracheal tube tip lies 4 cm above the carina.",
    ],
)
def test_correction_never_swallows_a_negation_or_a_neighbouring_word(dictated: str) -> None:
    # Found by the dictation benchmark: "No pneumothorax" was joined into "Pneumothorax", a negative finding made positive.
    for exam in ("chest_ct", "chest_xray", "abdomen_ct", "cardiac_ct"):
        assert vocabulary_for(exam).correct(dictated) == dictated
        assert report_form(dictated, language="en", vocabulary=vocabulary_for(exam))[0].lower().startswith(dictated.split()[0].lower())


def test_a_split_term_still_joins_when_the_joined_form_matches_better() -> None:
    assert vocabulary_for("chest_ct").correct("There is a telectasis at the base.") == "There is atelectasis at the base."


def test_a_command_whose_section_word_was_misheard_is_found_once_the_term_is_corrected() -> None:
    # Whisper tiny.en heard espeak-ng's "Go to findings." as "Go to find things."
    text, pieces = report_form(
        "There is a small nodule. Go to find things. No pneumothorax is seen.", language="en", vocabulary=vocabulary_for("chest_ct")
    )
    assert [p["type"] for p in pieces] == ["text", "command", "text"]
    assert pieces[1]["command"] == "go_to_section" and pieces[1]["argument"] == "findings"
    assert text == "There is a small nodule. No pneumothorax is seen."
