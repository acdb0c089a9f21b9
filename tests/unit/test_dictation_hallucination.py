"""Whisper's invented "Thank you." after the end of speech is dropped; a believed one is kept."""

from __future__ import annotations

from radpilot.dictation.backend import RawTranscript, Word, without_hallucinated_ending


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
