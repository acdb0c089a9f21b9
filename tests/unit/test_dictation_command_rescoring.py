"""Commands by rescoring: a short clip in which the recogniser heard no command is checked against the command
phrases, and becomes the best one only when it fits well and not far worse than what was heard.

The rule is tested with a recogniser whose phrase scores are given; the real Whisper tiny.en on espeak-ng speech
is tested in tests/unit/test_dictation_recognition.py (and measured by benchmarks/dictation_commands.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from radpilot.dictation.backend import RawTranscript, Word
from radpilot.dictation.commands import COMMAND_PHRASES, CommandKind, VoiceCommand, command_phrases, split_commands
from radpilot.dictation.lexicon import vocabulary_for
from radpilot.dictation.service import (
    COMMAND_MAX_BELOW_HEARD,
    COMMAND_MIN_LOG_PROBABILITY,
    RESCORE_MAX_SECONDS,
    RESCORE_MAX_WORDS,
    command_by_rescoring,
)

AUDIO = np.zeros(16000, dtype=np.float32)
CHEST = vocabulary_for("chest_xray")


class ScoredBackend:
    """A recogniser whose fit of each phrase is given: ``scores[phrase]``, the rest ``default``."""

    name = "scored"
    languages = ("en",)

    def __init__(self, scores: dict[str, float], default: float = -8.0) -> None:
        self.scores, self.default = scores, default
        self.asked: list[list[str]] = []

    def transcribe(self, audio: np.ndarray, *, language: str, prompt: str | None, fast: bool = False) -> RawTranscript:
        raise AssertionError("not used")

    def score_phrases(self, audio: np.ndarray, phrases: Sequence[str], *, language: str) -> list[float]:
        self.asked.append(list(phrases))
        return [self.scores.get(p, self.default) for p in phrases]


def heard(text: str, seconds: float = 1.5) -> RawTranscript:
    words = tuple(Word(w, 0.0, 0.1, 0.9) for w in text.split())
    return RawTranscript(text, words, seconds)


def test_a_misheard_command_that_fits_becomes_the_command() -> None:
    backend = ScoredBackend({"Okay, I find things.": -1.2, "Accept AI findings.": -3.3})
    result = command_by_rescoring(backend, AUDIO, heard("Okay, I find things."), CHEST)
    assert result.text == "Accept AI findings."
    assert backend.asked[0][0] == "Okay, I find things." and set(COMMAND_PHRASES) <= set(backend.asked[0])


def test_a_command_that_fits_too_poorly_leaves_the_text() -> None:
    backend = ScoredBackend({"I agree.": -0.7, "Undo.": COMMAND_MIN_LOG_PROBABILITY - 0.1})
    assert command_by_rescoring(backend, AUDIO, heard("I agree."), CHEST).text == "I agree."


def test_a_command_far_worse_than_what_was_heard_leaves_the_text() -> None:
    # It clears the absolute bound, but the heard text fits the audio much better.
    backend = ScoredBackend({"No change.": -0.2, "Undo.": -0.2 - COMMAND_MAX_BELOW_HEARD - 0.1})
    assert command_by_rescoring(backend, AUDIO, heard("No change."), CHEST).text == "No change."


def test_nothing_heard_is_checked_against_the_commands_alone() -> None:
    backend = ScoredBackend({"Undo.": -2.0})
    assert command_by_rescoring(backend, AUDIO, heard(""), CHEST).text == "Undo."
    assert "" not in backend.asked[0]


def test_a_heard_command_long_clip_or_many_words_is_not_rescored() -> None:
    backend = ScoredBackend({"Sign report.": -0.1})
    for raw in (
        heard("Go to impression."),
        heard("A small nodule", seconds=RESCORE_MAX_SECONDS + 0.5),
        heard(" ".join(["word"] * (RESCORE_MAX_WORDS + 1))),
    ):
        assert command_by_rescoring(backend, AUDIO, raw, CHEST) is raw
    assert backend.asked == []


def test_the_exams_normal_phrases_are_candidates() -> None:
    name = next(iter(CHEST.normal))
    backend = ScoredBackend({f"Insert normal {name}.": -1.0})
    assert command_by_rescoring(backend, AUDIO, heard("In certain normal."), CHEST).text == f"Insert normal {name}."


@pytest.mark.parametrize("phrase", command_phrases(tuple(CHEST.normal)))
def test_every_command_phrase_is_read_as_one_command(phrase: str) -> None:
    pieces = split_commands(phrase)
    assert len(pieces) == 1 and isinstance(pieces[0], VoiceCommand), pieces


def test_a_template_name_after_a_comma_is_still_a_template_command() -> None:
    # tiny.en wrote espeak-ng's "Insert template chest CT." as "Insert template, chest CT."
    (command,) = split_commands("Insert template, chest CT.")
    assert isinstance(command, VoiceCommand) and command.kind is CommandKind.INSERT_TEMPLATE and command.argument == "chest ct"
