"""Grayscale display polarity of a monochrome image (PS3.3 C.7.6.3.1.2, C.8.11.6.1, C.11.6).

MONOCHROME1 means the minimum value is shown white. A Presentation LUT Shape of INVERSE
asks for the same inversion of the presentation values. The DX Image Module requires
INVERSE together with MONOCHROME1 (and IDENTITY with MONOCHROME2): the pair describes
ONE inversion, not two that cancel. So an image is shown inverted when it is
MONOCHROME1, or when its Presentation LUT Shape is INVERSE.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_inverted(metadata: Mapping[str, Any]) -> bool:
    """True when higher stored values are shown darker: MONOCHROME1, or a Presentation LUT Shape of INVERSE (one inversion)."""
    photometric = str(metadata.get("PhotometricInterpretation") or "").strip().upper()
    shape = str(metadata.get("PresentationLUTShape") or "").strip().upper()
    return photometric == "MONOCHROME1" or shape == "INVERSE"
