"""Offline voice dictation for reports: speech recognition on the RadPilot server with models that ship
inside installed packages (verified by sha256, never downloaded), a radiology vocabulary per exam type,
spoken-to-report formatting and voice commands. Sits beside archive and security: the web layer and the
command line call it; it calls only config."""

from radpilot.dictation.audio import AudioError, decode_audio, pcm16_to_float
from radpilot.dictation.backend import ModelError, SpeechBackend, Word
from radpilot.dictation.commands import CommandKind, VoiceCommand, split_commands
from radpilot.dictation.formatting import format_english, format_korean, format_report_text
from radpilot.dictation.lexicon import LexiconError, vocabulary_for
from radpilot.dictation.service import LANGUAGES, Dictation, DictationResult, report_form

__all__ = [
    "LANGUAGES",
    "AudioError",
    "CommandKind",
    "Dictation",
    "DictationResult",
    "LexiconError",
    "ModelError",
    "SpeechBackend",
    "VoiceCommand",
    "Word",
    "decode_audio",
    "format_english",
    "format_korean",
    "format_report_text",
    "pcm16_to_float",
    "report_form",
    "split_commands",
    "vocabulary_for",
]
