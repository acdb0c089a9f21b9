"""The grayscale pipeline of a monochrome image (PS3.3 C.11: Modality LUT, VOI LUT, Presentation LUT).

Stored values -> **Modality LUT** (C.11.1: Rescale Slope/Intercept, or a Modality LUT Sequence)
-> modality values -> **VOI LUT** (C.11.2: a VOI LUT Sequence, or Window Center/Width with VOI
LUT Function LINEAR, LINEAR_EXACT or SIGMOID) -> values of interest -> **Presentation LUT**
(C.11.6: polarity) -> P-values shown on the display.

Polarity: MONOCHROME1 means the minimum value is shown white. A Presentation LUT Shape of
INVERSE asks for the same inversion of the presentation values. The DX Image Module
(C.8.11.6.1) requires INVERSE together with MONOCHROME1 (and IDENTITY with MONOCHROME2): the
pair describes ONE inversion, not two that cancel. So an image is shown inverted when it is
MONOCHROME1, or when its Presentation LUT Shape is INVERSE.

LUT Data (C.11.1.1.1, C.11.2.1.1): the descriptor gives (entries, first value mapped, bits per
entry); 0 entries means 65536; the first value mapped is signed when the input is signed.
Entries of 9-16 bits are 16-bit words. Entries of 8 bits are bytes (two per 16-bit word), but
some writers pad each 8-bit entry to a 16-bit word; the standard says to tell the two apart by
the length of LUT Data, and so does :func:`read_lut`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


def is_inverted(metadata: Mapping[str, Any]) -> bool:
    """True when higher stored values are shown darker: MONOCHROME1, or a Presentation LUT Shape of INVERSE (one inversion)."""
    photometric = str(metadata.get("PhotometricInterpretation") or "").strip().upper()
    shape = str(metadata.get("PresentationLUTShape") or "").strip().upper()
    return photometric == "MONOCHROME1" or shape == "INVERSE"


@dataclass(frozen=True)
class Lut:
    """One lookup table: input ``first_mapped + i`` maps to ``data[i]``; inputs outside are clamped to the end entries."""

    first_mapped: int
    bits: int
    data: np.ndarray  # int64, one entry per input value

    def apply(self, values: np.ndarray) -> np.ndarray:
        """The table applied to ``values`` (any numeric array), as float64."""
        index = np.clip(np.rint(np.asarray(values, dtype=np.float64) - self.first_mapped), 0, self.data.size - 1).astype(np.int64)
        return self.data[index].astype(np.float64)

    def as_metadata(self) -> dict[str, Any]:
        """The form kept in ``Volume.metadata`` (``{"first_mapped", "bits", "data"}``)."""
        return {"first_mapped": self.first_mapped, "bits": self.bits, "data": self.data}


def _words(raw: Any, little_endian: bool) -> np.ndarray:
    """LUT Data as 16-bit words: US/SS values as read, or OW bytes in the file's byte order."""
    if isinstance(raw, (bytes, bytearray)):
        if len(raw) % 2:
            raise ValueError(f"LUT Data has an odd number of bytes ({len(raw)})")
        return np.frombuffer(bytes(raw), dtype="<u2" if little_endian else ">u2").astype(np.int64)
    if isinstance(raw, (int, np.integer)):
        raw = [raw]
    # SS values come back negative; the entries are unsigned (C.11.1.1.1), so reinterpret the 16 bits.
    return np.asarray([int(v) & 0xFFFF for v in raw], dtype=np.int64)


def read_lut(item: Any, *, signed_input: bool, little_endian: bool = True, what: str = "LUT") -> Lut:
    """Decode one Modality or VOI LUT Sequence item (``LUTDescriptor`` and ``LUTData``).

    ``signed_input``: the input values are signed (Pixel Representation 1), so a first value
    mapped read as an unsigned 16-bit number above 32767 is negative. Raises ValueError naming
    what is wrong (missing elements, bits out of 8..16, LUT Data shorter than the descriptor).
    """
    descriptor_raw = item.get("LUTDescriptor") if hasattr(item, "get") else None
    if descriptor_raw is None or "LUTData" not in item:
        raise ValueError(f"{what}: LUT Descriptor or LUT Data is missing")
    try:
        descriptor = [int(v) for v in descriptor_raw]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: LUT Descriptor is not three numbers: {descriptor_raw!r}") from exc
    if len(descriptor) != 3:
        raise ValueError(f"{what}: LUT Descriptor must hold 3 values, got {descriptor!r}")
    entries = descriptor[0] & 0xFFFF or 2**16
    first = descriptor[1]
    if signed_input and first >= 2**15:
        first -= 2**16
    elif not signed_input and first < 0:
        first += 2**16
    bits = descriptor[2]
    if not 8 <= bits <= 16:
        raise ValueError(f"{what}: {bits} bits per LUT entry; the standard allows 8 to 16")
    words = _words(item.LUTData, little_endian)
    if bits == 8 and words.size * 2 >= entries and words.size < entries:
        # Packed bytes, two entries per word, low byte first in the word's own value.
        data = np.stack([words & 0xFF, words >> 8], axis=1).reshape(-1)[:entries]
    else:
        if words.size < entries:
            raise ValueError(f"{what}: LUT Data holds {words.size} entries but the LUT Descriptor announces {entries}")
        data = words[:entries]
    data = data & ((1 << bits) - 1)
    return Lut(first_mapped=int(first), bits=int(bits), data=np.ascontiguousarray(data, dtype=np.int64))


def _first_number(value: Any) -> float | None:
    """The first number of a (possibly multi-valued) header value (the first of several windows is the default)."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
        if value is None:
            return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _upper(metadata: Mapping[str, Any], keyword: str) -> str:
    value = metadata.get(keyword)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return str(value or "").strip().upper()


def _metadata_lut(metadata: Mapping[str, Any]) -> Lut | None:
    lut = metadata.get("VOILUTSequence")
    if isinstance(lut, Lut):
        return lut
    if isinstance(lut, Mapping) and len(lut.get("data", ())) > 0:
        return Lut(int(lut["first_mapped"]), int(lut.get("bits", 16)), np.asarray(lut["data"], dtype=np.int64))
    return None


def has_voi(metadata: Mapping[str, Any]) -> bool:
    """True when the header carries a usable VOI LUT or window."""
    if _metadata_lut(metadata) is not None:
        return True
    width = _first_number(metadata.get("WindowWidth"))
    return _first_number(metadata.get("WindowCenter")) is not None and width is not None and width > 0


def apply_voi(values: np.ndarray, metadata: Mapping[str, Any]) -> tuple[np.ndarray, str]:
    """Apply the header's VOI transformation to modality values; returns (0..1 image, what was applied).

    The VOI LUT Sequence wins over a window (C.11.2.1: a viewer may use either; the LUT is the
    more specific).  Of several windows the first is used (the modality's default).  Without
    either, the values are returned unchanged as float64 and ``"none"``.
    """
    values = np.asarray(values, dtype=np.float64)
    lut = _metadata_lut(metadata)
    if lut is not None:
        return lut.apply(values) / float(2**lut.bits - 1), "VOI LUT"
    center = _first_number(metadata.get("WindowCenter"))
    width = _first_number(metadata.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        return values, "none"
    function = _upper(metadata, "VOILUTFunction") or "LINEAR"
    if function == "SIGMOID":  # C.11.2.1.3.1
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width)), "window SIGMOID"
    if function == "LINEAR_EXACT":  # C.11.2.1.3.2
        return np.clip((values - center) / width + 0.5, 0.0, 1.0), "window LINEAR_EXACT"
    if width < 1:  # LINEAR needs width >= 1 (C.11.2.1.2.1)
        width = 1.0
    denominator = max(width - 1.0, 1e-6)
    return np.clip((values - (center - 0.5)) / denominator + 0.5, 0.0, 1.0), "window LINEAR"
