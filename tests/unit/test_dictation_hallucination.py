"""Whisper's invented "Thank you." after the end of speech is dropped; a believed one is kept; so is any other
short fragment it invents after the last sentence, unless it carries something a report needs."""

from __future__ import annotations

import pytest

from radpilot.dictation.backend import RawTranscript, Word, without_hallucinated_ending
from radpilot.dictation.lexicon import vocabulary_for
from radpilot.dictation.service import without_unbelieved_tail


def transcript(text: str, *confidences: tuple[str, float]) -> RawTranscript:
    return RawTranscript(text, tuple(Word(word, 0.0, 0.0, confidence) for word, confidence in confidences), 1.4)


def test_a_barely_believed_thank_you_after_a_command_is_dropped() -> None:
    # What tiny.en returned for espeak-ng's "Go to findings." (the word confidences as it gave them).
    heard = transcript("Go to findings. Thank you.", ("Go", 0.58), ("to", 0.97), ("findings.", 0.74), ("Thank", 0.06), ("you.", 0.99))
    cleaned = without_hallucinated_ending(heard)
    assert cleaned.text == "Go to findings."
    assert [w.word for w in cleaned.words] == ["Go", "to", "findings."]


def test_a_thank_you_the_recogniser_believed_is_kept() -> None:
    heard = transcript("Thank you.", ("Thank", 0.93), ("you.", 0.99))
    assert without_hallucinated_ending(heard) == heard


def test_thank_you_inside_the_text_and_other_endings_are_kept() -> None:
    heard = transcript("Thank you for the referral. Mild emphysema.", ("Thank", 0.05), ("you", 0.9), ("emphysema.", 0.9))
    assert without_hallucinated_ending(heard) == heard
    watching = transcript("No effusion. Thanks for watching!", ("effusion.", 0.9), ("Thanks", 0.03), ("for", 0.9), ("watching!", 0.9))
    assert without_hallucinated_ending(watching).text == "No effusion."


# --- a short fragment invented after the last full stop (radpilot.dictation.service.without_unbelieved_tail) ---------


def _words(text: str, *confidences: float) -> RawTranscript:
    words = text.split()
    assert len(words) == len(confidences)
    return RawTranscript(text, tuple(Word(word, 0.0, 0.0, c) for word, c in zip(words, confidences)), 4.0)


CHEST_CT = vocabulary_for("chest_ct")


@pytest.mark.parametrize(
    ("heard", "kept"),
    [
        # What tiny.en returned after espeak-ng sentences (word confidences as it gave them).
        (_words("The liver measures 21 centimeters. Good.", 0.9, 0.9, 0.99, 0.69, 0.38, 0.04), "The liver measures 21 centimeters."),
        (_words("With a ratio of 0.55. I am.", 0.9, 0.9, 0.9, 0.9, 0.63, 0.13, 0.88), "With a ratio of 0.55."),
        (_words("Measuring 21 centimeters. Okay, good.", 0.99, 0.89, 0.51, 0.03, 0.27), "Measuring 21 centimeters."),
        (
            _words("Segment 4 measures 1.8 centimeters. There's...", 0.9, 0.79, 0.88, 0.92, 0.31, 0.29),
            "Segment 4 measures 1.8 centimeters.",
        ),
    ],
)
def test_a_barely_believed_fragment_after_the_last_sentence_is_dropped(heard: RawTranscript, kept: str) -> None:
    cleaned = without_unbelieved_tail(heard, CHEST_CT)
    assert cleaned.text == kept
    assert len(cleaned.words) == len(kept.split())


@pytest.mark.parametrize(
    "heard",
    [
        _words("Mild emphysema. No effusion.", 0.9, 0.9, 0.1, 0.9),  # a negation
        _words("Mild emphysema. Stable.", 0.9, 0.9, 0.1),  # a lexicon term
        _words("Mild emphysema. Scratch that.", 0.9, 0.9, 0.1, 0.5),  # a voice command
        _words("Mild emphysema. Period.", 0.9, 0.9, 0.1),  # spoken punctuation
        _words("Mild emphysema. Seven.", 0.9, 0.9, 0.1),  # a number
        _words("Mild emphysema. Thanks.", 0.9, 0.9, 0.5),  # believed
        _words("Mild emphysema. Small right effusion.", 0.9, 0.9, 0.1, 0.9, 0.9),  # three words: a sentence
        _words("Go to findings.", 0.1, 0.9, 0.9),  # nothing before it
    ],
)
def test_a_fragment_that_carries_anything_a_report_needs_or_was_believed_is_kept(heard: RawTranscript) -> None:
    assert without_unbelieved_tail(heard, CHEST_CT) == heard
