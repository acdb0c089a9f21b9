"""Dictation end to end: audio -> recogniser (with the exam's prompt) -> voice commands cut out ->
near-miss terms corrected -> report form. One :class:`Dictation` per process loads each model once."""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radpilot.config import Settings
from radpilot.dictation.audio import SAMPLE_RATE, AudioError, check_audio, decode_audio
from radpilot.dictation.backend import ModelError, RawTranscript, SpeechBackend, Word, bare_word, load_backend
from radpilot.dictation.commands import CommandKind, TextPiece, VoiceCommand, command_phrases, split_commands
from radpilot.dictation.formatting import format_report_text
from radpilot.dictation.lexicon import NEGATIONS, ExamVocabulary, vocabulary_for

logger = logging.getLogger(__name__)

LANGUAGES = ("en", "ko")

# Commands by rescoring. A push-to-talk clip that holds only a command is where the recogniser errs most
# ("Accept AI findings." heard as "Okay, I find things.", "Scratch that." as "crash note."): free decoding has
# too little context. When a short clip's transcript holds no command, each command phrase is scored as the
# clip's whole transcript (teacher-forced), and the best one replaces the transcript when it fits well in
# absolute terms and not far worse than what was heard. Thresholds chosen on espeak-ng command and short-text
# clips of two voices (en-us 140 wpm, en-gb 175 wpm), where commands scored -0.2 to -3.6 and short texts -3.9
# to -6.8; checked on other voices and phrases with benchmarks/dictation_commands.py.
RESCORE_MAX_WORDS = 6
RESCORE_MAX_SECONDS = 4.0
COMMAND_MIN_LOG_PROBABILITY = -3.5
COMMAND_MAX_BELOW_HEARD = 2.3

# Whisper's other invention after the end of speech: a short fragment after the last full stop ("... 21 centimeters.
# Good.", "... 0.46. Okay.", "... 1.8 centimeters. yours.", "... 0.55. I am."), seen on 10 of 160 espeak-ng clips of
# dictation sentences written to tune this (not the benchmark's held-out ones), its first word at probability
# 0.01-0.29. Dropped only when it is at most two words, its first word barely believed, and it carries nothing a
# report needs: no number, unit or spoken punctuation (the formatter leaves it as it is), no negation, no lexicon
# term and no voice command; so "... No effusion.", "... Stable." or "... Scratch that." are never dropped.
TAIL_MAX_WORDS = 2
TAIL_MAX_CONFIDENCE = 0.3
_TAIL = re.compile(r"^(?P<head>.*\S[.!?])\s+(?P<tail>[^.!?]+[.!?…]*)$", re.DOTALL)


@dataclass
class DictationResult:
    """Report text, the commands spoken, and the recogniser's timed words (as heard, before formatting)."""

    text: str
    pieces: list[dict[str, Any]]
    words: list[Word]
    raw_text: str
    language: str
    exam: str | None
    duration_s: float
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def commands(self) -> list[dict[str, Any]]:
        return [p for p in self.pieces if p["type"] == "command"]

    def as_dict(self, **extra: Any) -> dict[str, Any]:
        return {
            **extra,
            "text": self.text,
            "words": [w.as_dict() for w in self.words],
            "commands": self.commands,
            "pieces": self.pieces,
            "raw_text": self.raw_text,
            "language": self.language,
            "exam": self.exam,
            "duration_s": round(self.duration_s, 3),
        }


def report_form(raw_text: str, *, language: str, vocabulary: ExamVocabulary, correct: bool = True) -> tuple[str, list[dict[str, Any]]]:
    """(report text, pieces) of a transcript: commands cut out, terms corrected, numbers, units and punctuation formatted."""
    pieces: list[dict[str, Any]] = []
    texts: list[str] = []
    for piece in _corrected_pieces(raw_text, language, vocabulary, correct):
        if isinstance(piece, TextPiece):
            formatted = format_report_text(piece.text, language)
            if formatted.strip():
                pieces.append({"type": "text", "text": formatted})
                texts.append(formatted)
        else:
            pieces.append(_command_dict(piece, vocabulary))
    text = ""
    for part in texts:
        text += part if not text or text.endswith("\n") else " " + part
    return text, pieces


def _corrected_pieces(raw_text: str, language: str, vocabulary: ExamVocabulary, correct: bool) -> list[TextPiece | VoiceCommand]:
    """Commands and text of a transcript, the text's near-miss terms corrected.

    Commands are looked for again in the corrected text: the recogniser may mishear the term a
    command names ("go to find things" becomes "go to findings" only once corrected).
    """
    result: list[TextPiece | VoiceCommand] = []
    for piece in split_commands(raw_text, language):
        if isinstance(piece, TextPiece) and correct and language == "en":
            result.extend(split_commands(vocabulary.correct(piece.text), language))
        else:
            result.append(piece)
    return result


def _command_dict(command: VoiceCommand, vocabulary: ExamVocabulary) -> dict[str, Any]:
    entry: dict[str, Any] = command.as_dict()
    if command.kind is CommandKind.INSERT_NORMAL and vocabulary.normal:
        # The phrase itself travels with the command, so the editor needs no copy of the lexicon.
        name = command.argument if command.argument in vocabulary.normal else next(iter(vocabulary.normal))
        entry["argument"], entry["text"] = name, vocabulary.normal[name]
    return entry


def command_by_rescoring(backend: SpeechBackend, audio: np.ndarray, raw: RawTranscript, vocabulary: ExamVocabulary) -> RawTranscript:
    """``raw``, or the command phrase that fits a short clip without a heard command (see RESCORE_MAX_WORDS)."""
    if len(raw.words) > RESCORE_MAX_WORDS or raw.duration_s > RESCORE_MAX_SECONDS:
        return raw
    if any(isinstance(piece, VoiceCommand) for piece in _corrected_pieces(raw.text, "en", vocabulary, correct=True)):
        return raw
    phrases = command_phrases(tuple(vocabulary.normal))
    scores = backend.score_phrases(audio, [raw.text, *phrases] if raw.text.strip() else list(phrases), language="en")
    heard_score = scores.pop(0) if raw.text.strip() else float("-inf")
    best = int(np.argmax(scores))
    if scores[best] < COMMAND_MIN_LOG_PROBABILITY or scores[best] < heard_score - COMMAND_MAX_BELOW_HEARD:
        return raw
    logger.info(
        "dictation command found by rescoring",
        extra={"heard": raw.text, "command": phrases[best], "score": round(scores[best], 2), "heard_score": round(heard_score, 2)},
    )
    return RawTranscript(phrases[best], raw.words, raw.duration_s)


def without_unbelieved_tail(raw: RawTranscript, vocabulary: ExamVocabulary) -> RawTranscript:
    """``raw`` without a trailing fragment the recogniser invented after the end of speech (see TAIL_MAX_WORDS)."""
    match = _TAIL.match(raw.text.strip())
    if match is None:
        return raw
    tail = match["tail"].strip()
    bare = [bare_word(w) for w in tail.split()]
    if not 0 < len(bare) <= TAIL_MAX_WORDS or len(raw.words) <= len(bare):
        return raw
    heard = raw.words[-len(bare) :]
    if [bare_word(w.word) for w in heard] != bare or heard[0].confidence >= TAIL_MAX_CONFIDENCE:
        return raw
    term_words = {bare_word(word) for term in vocabulary.terms for word in term.split()}
    if (
        any(ch.isdigit() for ch in tail)
        or [bare_word(w) for w in format_report_text(tail, "en").split()] != bare
        or any(word in NEGATIONS or word in term_words for word in bare)
        or any(isinstance(piece, VoiceCommand) for piece in split_commands(tail, "en"))
    ):
        return raw
    logger.info("dictation dropped an unbelieved ending", extra={"ending": tail, "confidence": round(heard[0].confidence, 2)})
    return RawTranscript(match["head"], raw.words[: -len(bare)], raw.duration_s)


class Dictation:
    """The dictation service of one process: models load lazily, once, and are shared by threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._backends: dict[str, SpeechBackend] = {}
        self._lock = threading.Lock()

    def model_for(self, language: str) -> str:
        if language not in LANGUAGES:
            raise ValueError(f"unsupported dictation language {language!r}: expected one of {', '.join(LANGUAGES)}")
        model = self.settings.dictation_model_en if language == "en" else self.settings.dictation_model_ko
        if not model:
            raise ModelError(
                f"no dictation model is configured for {language!r}: set RADPILOT_DICTATION_MODEL_{language.upper()} to an installed model's manifest"
            )
        return model

    def backend(self, language: str) -> SpeechBackend:
        model = self.model_for(language)
        with self._lock:
            if model not in self._backends:
                self._backends[model] = load_backend(
                    model,
                    threads=self.settings.dictation_threads,
                    beam_size=self.settings.dictation_beam_size,
                    cache_dir=self.settings.model_cache_dir,
                )
            return self._backends[model]

    def check_request(self, language: str, exam: str | None) -> ExamVocabulary:
        """The exam's vocabulary; ValueError/LexiconError/ModelError naming a bad language, exam or missing model."""
        vocabulary = vocabulary_for(exam)
        self.model_for(language)
        return vocabulary

    def transcribe(self, audio: np.ndarray, *, language: str = "en", exam: str | None = None, name: str = "the audio") -> DictationResult:
        """The final dictation of a 16 kHz mono clip; AudioError when it holds no recognisable speech."""
        vocabulary = self.check_request(language, exam)
        check_audio(audio, name=name, max_seconds=self.settings.dictation_max_seconds)
        started = time.perf_counter()
        backend = self.backend(language)
        raw = backend.transcribe(audio, language=language, prompt=vocabulary.prompt() if language == "en" else None)
        if language == "en":
            raw = without_unbelieved_tail(raw, vocabulary)
        heard = raw.text
        if language == "en" and self.settings.dictation_command_rescoring:
            raw = command_by_rescoring(backend, audio, raw, vocabulary)
        if not raw.text.strip():
            raise AudioError(f"no speech was recognised in {name}")
        result = self._result(raw, language, exam, vocabulary)
        result.raw_text = heard
        result.seconds["recognise"] = time.perf_counter() - started
        logger.info(
            "dictation transcribed",
            extra={
                "language": language,
                "exam": exam,
                "audio_s": round(raw.duration_s, 2),
                "seconds": round(result.seconds["recognise"], 2),
            },
        )
        return result

    def partial(self, audio: np.ndarray, *, language: str = "en", exam: str | None = None) -> str:
        """Quick text of the audio so far (greedy, no word timings), for the streaming endpoint; "" if nothing heard yet."""
        vocabulary = vocabulary_for(exam)
        if audio.size < SAMPLE_RATE // 4:
            return ""
        raw = self.backend(language).transcribe(
            audio, language=language, prompt=vocabulary.prompt() if language == "en" else None, fast=True
        )
        return report_form(raw.text, language=language, vocabulary=vocabulary)[0] if raw.text.strip() else ""

    def transcribe_file(self, path: Path, *, language: str = "en", exam: str | None = None) -> DictationResult:
        audio = decode_audio(path, max_seconds=self.settings.dictation_max_seconds)
        return self.transcribe(audio, language=language, exam=exam, name=str(path))

    def transcribe_bytes(self, data: bytes, *, language: str = "en", exam: str | None = None) -> DictationResult:
        audio = decode_audio(data, max_seconds=self.settings.dictation_max_seconds)
        return self.transcribe(audio, language=language, exam=exam)

    @staticmethod
    def _result(raw: RawTranscript, language: str, exam: str | None, vocabulary: ExamVocabulary) -> DictationResult:
        text, pieces = report_form(raw.text, language=language, vocabulary=vocabulary)
        return DictationResult(text, pieces, list(raw.words), raw.text, language, exam, raw.duration_s)
