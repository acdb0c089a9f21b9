"""The reading room's text in English and Korean, from message catalogues (``radpilot/web/locales/*.yaml``).

Each catalogue maps a dotted key to a message with ``{name}`` placeholders. A page
asks :func:`translator_for` for the request's language: the ``radpilot_lang`` cookie
(set by ``GET /ui/lang/{code}``), else the browser's Accept-Language, else English.
A key missing from a catalogue is an error (tests check both hold every key), so no
page can show a raw key or fall back silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
LANGUAGES = ("en", "ko")
DEFAULT_LANGUAGE = "en"
LANGUAGE_COOKIE = "radpilot_lang"


@cache
def catalogue(language: str) -> Mapping[str, str]:
    """The messages of ``language`` (one of :data:`LANGUAGES`)."""
    if language not in LANGUAGES:
        raise KeyError(f"no message catalogue for language {language!r}; available: {', '.join(LANGUAGES)}")
    content = yaml.safe_load((LOCALES_DIR / f"{language}.yaml").read_text(encoding="utf-8")) or {}
    if not isinstance(content, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in content.items()):
        raise ValueError(f"{LOCALES_DIR / f'{language}.yaml'} must map message keys to strings")
    return content


@dataclass(frozen=True)
class Translator:
    language: str

    def __call__(self, key: str, **values: Any) -> str:
        message = catalogue(self.language)[key]
        return message.format(**values) if values else message

    def messages(self, prefix: str) -> dict[str, str]:
        """The messages whose keys start with ``prefix`` (for the page's script)."""
        return {k: v for k, v in catalogue(self.language).items() if k.startswith(prefix)}


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    """The language to show: the cookie's when it names a known one, else the first known in Accept-Language."""
    if cookie in LANGUAGES:
        return cookie  # type: ignore[return-value]
    for part in (accept_language or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return DEFAULT_LANGUAGE


def translator_for(cookies: Mapping[str, str], headers: Mapping[str, str]) -> Translator:
    return Translator(negotiate(cookies.get(LANGUAGE_COOKIE), headers.get("accept-language")))
