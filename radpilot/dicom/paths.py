"""File and folder names made from DICOM values (UIDs, patient IDs), safe whatever the value holds.

A value read from a received or a user's file may hold ``../``, an absolute path, a NUL,
a backslash or hundreds of characters; written as a name it could land outside the folder
meant, or fail half-way. A value that is a plain name is used as it is, so the usual
outputs keep their readable UID names; any other becomes a digest of itself, the same
one every time, so instances of one study still share one folder.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

# Letters, digits, dot, dash, underscore; not starting with a dot (no ".", "..", hidden names).
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
MAX_NAME_LENGTH = 128  # well under every file system's 255 bytes, with room for a suffix


def safe_name(value: object, kind: str) -> str:
    """``value`` as one path component: itself when it is a plain name, else ``<kind>-<digest>``."""
    text = "" if value is None else str(value)
    if len(text) <= MAX_NAME_LENGTH and _PLAIN_NAME.match(text):
        return text
    return f"{kind}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:24]}"


def inside(folder: Path, *values: tuple[object, str]) -> Path:
    """``folder`` joined with a safe name for each ``(value, kind)``; raises ValueError if it would leave ``folder``."""
    path = folder.joinpath(*(safe_name(value, kind) for value, kind in values))
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{path} is outside {folder}")  # a symbolic link in the output folder
    return path
