"""Frames of an instance's pixel data, read from its file frame by frame (WADO-RS ``.../frames/{list}``).

Native pixel data (any native transfer syntax, big endian and deflated included)
comes out as little endian bytes; encapsulated frames as stored. Nothing is
decompressed. A frame that cannot be had raises :class:`FrameError`, whose kind
says why.
"""

from __future__ import annotations

import enum
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels.utils import get_expected_length

from radpilot.pacs.dicomweb.media import EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, NATIVE_SYNTAXES
from radpilot.pacs.dicomweb.wado import read_header

PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
EXTENDED_OFFSET_TABLE = 0x7FE00001
EXTENDED_OFFSET_TABLE_LENGTHS = 0x7FE00002


class FrameErrorKind(enum.Enum):
    MALFORMED_FRAME_LIST = "malformed frame list"  # the request's frame list is not 1-based numbers
    NO_PIXEL_DATA = "no pixel data"  # the instance has no frames at all
    NO_SUCH_FRAME = "no such frame"  # a frame number beyond the instance's frames
    UNREADABLE = "unreadable"  # the file's pixel data does not hold what its attributes say


class FrameError(Exception):
    """Frames that cannot be had; ``kind`` says why, the message says it in words."""

    def __init__(self, kind: FrameErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def parse_frame_list(text: str) -> list[int]:
    """Frame numbers of a ``frames/{list}`` path segment (``1``, ``1,3,5``).

    Raises
    ------
    FrameError
        (MALFORMED_FRAME_LIST) When the list is not comma-separated numbers from 1.
    """
    try:
        numbers = [int(n) for n in text.split(",")]
    except ValueError:
        raise FrameError(
            FrameErrorKind.MALFORMED_FRAME_LIST,
            f"frame list {text!r} must be comma-separated frame numbers (1, 2, ...)",
        ) from None
    if not numbers or any(n < 1 for n in numbers):
        raise FrameError(FrameErrorKind.MALFORMED_FRAME_LIST, f"frame list {text!r}: frame numbers start at 1")
    return numbers


@dataclass(frozen=True)
class PixelSource:
    """Where an instance's pixel data is and how it is laid out."""

    path: Path
    transfer_syntax: str
    dataset: Dataset  # read with large values deferred
    tag: int
    number_of_frames: int

    @property
    def encapsulated(self) -> bool:
        return self.transfer_syntax not in NATIVE_SYNTAXES


def open_pixel_source(path: Path, transfer_syntax: str) -> PixelSource | None:
    """The pixel data of the instance at ``path`` (None when it has none)."""
    dataset = read_header(path, transfer_syntax)
    tag = next((t for t in (PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA) if t in dataset), None)
    if tag is None:
        return None
    try:
        frames = int(dataset.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    return PixelSource(path, transfer_syntax, dataset, tag, max(frames, 1))


def _raw_value(source: PixelSource, tag: int) -> Any:
    return source.dataset.get_item(tag, keep_deferred=True)


def _value_bytes(source: PixelSource, start: int, length: int) -> bytes:
    """``length`` bytes of the pixel data value from ``start``, read from the file where it was deferred."""
    raw = _raw_value(source, source.tag)
    value = getattr(raw, "value", None)
    if value is None:
        with source.path.open("rb") as handle:
            handle.seek(raw.value_tell + start)
            data = handle.read(length)
    else:
        data = bytes(value[start : start + length])
    if len(data) < length:
        raise FrameError(FrameErrorKind.UNREADABLE, f"pixel data of {source.path.name} is shorter than its attributes say")
    return data


def _byte_swapped(data: bytes, unit: int) -> bytes:
    if unit <= 1:
        return data
    return np.frombuffer(data, dtype=f">u{unit}").astype(f"<u{unit}").tobytes()


def _swap_unit(source: PixelSource) -> int:
    """Size of the values whose bytes a big endian file holds reversed (1: none)."""
    if source.transfer_syntax != EXPLICIT_VR_BIG_ENDIAN:
        return 1
    bits = int(source.dataset.get("BitsAllocated") or 8)
    if source.tag != PIXEL_DATA:
        return 4 if source.tag == FLOAT_PIXEL_DATA else 8
    vr = _raw_value(source, source.tag).VR
    return max(bits // 8, 2 if vr == "OW" else 1)


def native_frames(source: PixelSource, numbers: Sequence[int]) -> list[bytes]:
    """Native frames (1-based numbers) as little endian bytes, read from the file frame by frame."""
    dataset = source.dataset
    bits = int(dataset.get("BitsAllocated") or 8)
    if bits == 1:
        return _bit_frames(source, numbers)
    frame_length = get_expected_length(dataset, "bytes") // source.number_of_frames
    unit = _swap_unit(source)
    return [_byte_swapped(_value_bytes(source, (n - 1) * frame_length, frame_length), unit) for n in numbers]


def _bit_frames(source: PixelSource, numbers: Sequence[int]) -> list[bytes]:
    """Frames of 1-bit pixel data, which need not start on a byte boundary."""
    dataset = source.dataset
    frame_bits = int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("SamplesPerPixel") or 1)
    total = (frame_bits * source.number_of_frames + 7) // 8
    data = _byte_swapped(_value_bytes(source, 0, total), _swap_unit(source))
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    return [np.packbits(bits[(n - 1) * frame_bits : n * frame_bits], bitorder="little").tobytes() for n in numbers]


def encapsulated_frames(source: PixelSource, numbers: Sequence[int]) -> list[bytes]:
    """Compressed frames (1-based numbers) as stored, found through the offset tables."""
    extended = None
    if EXTENDED_OFFSET_TABLE in source.dataset and EXTENDED_OFFSET_TABLE_LENGTHS in source.dataset:
        extended = (
            bytes(source.dataset[EXTENDED_OFFSET_TABLE].value),
            bytes(source.dataset[EXTENDED_OFFSET_TABLE_LENGTHS].value),
        )
    raw = _raw_value(source, source.tag)
    frames: list[bytes] = []
    with source.path.open("rb") as handle:
        buffer: Any = handle
        if raw.value is None:
            handle.seek(raw.value_tell)
        else:
            buffer = io.BytesIO(bytes(raw.value))
        for number in numbers:
            try:
                frames.append(get_frame(buffer, number - 1, number_of_frames=source.number_of_frames, extended_offsets=extended))
            except (ValueError, EOFError) as exc:
                raise FrameError(
                    FrameErrorKind.UNREADABLE, f"frame {number} cannot be read from the encapsulated pixel data: {exc}"
                ) from exc
    return frames


def read_frames(path: Path, transfer_syntax: str, numbers: Sequence[int] | None) -> tuple[list[bytes], str]:
    """Frames (1-based ``numbers``; None for all) of the instance at ``path`` and the syntax they are in.

    Raises
    ------
    FrameError
        NO_PIXEL_DATA when the instance has no pixel data, NO_SUCH_FRAME when a frame
        number is out of range, UNREADABLE when the pixel data is shorter or broken.
    """
    source = open_pixel_source(path, transfer_syntax)
    if source is None:
        raise FrameError(FrameErrorKind.NO_PIXEL_DATA, "the instance has no pixel data, so it has no frames")
    if numbers is None:
        numbers = list(range(1, source.number_of_frames + 1))
    beyond = [n for n in numbers if n > source.number_of_frames]
    if beyond:
        raise FrameError(
            FrameErrorKind.NO_SUCH_FRAME,
            f"frame {beyond[0]} does not exist: the instance has {source.number_of_frames} frame(s)",
        )
    if source.encapsulated:
        return encapsulated_frames(source, numbers), transfer_syntax
    return native_frames(source, numbers), EXPLICIT_VR_LITTLE_ENDIAN
