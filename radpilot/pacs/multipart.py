"""Strict parsing and streaming writing of MIME ``multipart/related`` bodies (RFC 2046, RFC 2387).

DICOMweb moves instances, frames and bulk data as ``multipart/related`` messages
(PS3.18 8.7.3). python-multipart only understands ``multipart/form-data``, so this
module has its own small parser: it works on any buffer with ``find`` and slicing
(``bytes`` or an ``mmap`` of a spooled request body) and returns the parts as offsets
into that buffer, so a large body is never copied as a whole. Every way a body can
be broken raises :class:`MultipartError` with a message that says what is wrong and
where.

It also parses ``Content-Type`` and ``Accept`` header values (media types with
quoted parameters and quality values).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

CRLF = b"\r\n"
CHUNK_SIZE = 1024 * 1024  # how much of a file is read at a time while a body is sent
MAX_BOUNDARY_LENGTH = 70  # RFC 2046 5.1.1
MAX_HEADER_BYTES = 16 * 1024  # a part's header section longer than this is refused
# RFC 2046 bchars: DIGIT / ALPHA / "'" / "(" / ")" / "+" / "_" / "," / "-" / "." / "/" / ":" / "=" / "?" / " "
_BOUNDARY_PATTERN = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
_TOKEN_PATTERN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class MultipartError(ValueError):
    """A ``multipart/related`` body or a header value that cannot be parsed; the message says why."""


class Searchable(Protocol):
    """A byte buffer that can be searched and sliced (``bytes``, ``bytearray``, ``mmap.mmap``)."""

    def find(self, sub: bytes, start: int = ..., end: int = ...) -> int: ...  # pragma: no cover

    def __getitem__(self, key: slice) -> bytes: ...  # pragma: no cover

    def __len__(self) -> int: ...  # pragma: no cover


# -- header values -----------------------------------------------------------------


@dataclass(frozen=True)
class MediaType:
    """A media type (or media range of an Accept header) with its parameters.

    Parameters
    ----------
    type
        ``type/subtype`` in lower case, e.g. ``multipart/related``.
    params
        Parameter names in lower case mapped to their (unquoted) values.
    """

    type: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def quality(self) -> float:
        """The ``q`` parameter (1.0 when absent or unreadable)."""
        try:
            return min(max(float(self.params.get("q", "1")), 0.0), 1.0)
        except ValueError:
            return 1.0

    def matches(self, media_type: str) -> bool:
        """True when this media range (possibly ``*/*`` or ``image/*``) covers ``media_type``."""
        return media_range_matches(self.type, media_type)


def media_range_matches(media_range: str, media_type: str) -> bool:
    """True when ``media_range`` (``*/*``, ``type/*`` or ``type/subtype``) covers ``media_type``."""
    media_range, media_type = media_range.lower(), media_type.lower()
    if media_range in ("*/*", "*"):
        return True
    if media_range.endswith("/*"):
        return media_type.split("/", 1)[0] == media_range[:-2]
    return media_range == media_type


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """Split ``text`` at ``separator`` characters that are not inside a quoted string."""
    pieces: list[str] = []
    current: list[str] = []
    in_quotes = False
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and in_quotes:
            current.append(char)
            escaped = True
        elif char == '"':
            current.append(char)
            in_quotes = not in_quotes
        elif char == separator and not in_quotes:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    if in_quotes:
        raise MultipartError(f"unterminated quoted string in header value {text!r}")
    pieces.append("".join(current))
    return pieces


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_media_type(value: str) -> MediaType:
    """Parse a ``Content-Type`` value such as ``multipart/related; type="application/dicom"; boundary=x``.

    Raises
    ------
    MultipartError
        If the value is empty, has no ``type/subtype`` or a malformed parameter.
    """
    pieces = _split_outside_quotes(value or "", ";")
    main = pieces[0].strip().lower()
    if not main:
        raise MultipartError("empty media type")
    if main != "*" and (main.count("/") != 1 or not all(_TOKEN_PATTERN.match(p) for p in main.split("/"))):
        raise MultipartError(f"{pieces[0].strip()!r} is not a media type of the form type/subtype")
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        if not piece.strip():
            continue  # tolerate "a/b; ; c=d" and a trailing ";"
        name, sep, raw = piece.partition("=")
        name = name.strip().lower()
        if not sep or not name or not _TOKEN_PATTERN.match(name):
            raise MultipartError(f"malformed parameter {piece.strip()!r} in media type {value!r}")
        params[name] = _unquote(raw)
    return MediaType(main, params)


def parse_accept(value: str | None) -> list[MediaType]:
    """Parse an ``Accept`` header into media ranges, best (highest ``q``) first.

    An absent or empty header gives ``[*/*]``; ranges with ``q=0`` are dropped.
    Ranges that cannot be parsed raise :class:`MultipartError`.
    """
    if value is None or not value.strip():
        return [MediaType("*/*")]
    ranges = [parse_media_type(piece) for piece in _split_outside_quotes(value, ",") if piece.strip()]
    ranges = [r for r in ranges if r.quality > 0]
    # sorted() is stable: equal quality keeps the client's order.
    return sorted(ranges, key=lambda r: -r.quality)


def boundary_of(content_type: MediaType) -> str:
    """The validated ``boundary`` parameter of a multipart media type.

    Raises
    ------
    MultipartError
        If the parameter is missing or is not a valid RFC 2046 boundary.
    """
    boundary = content_type.params.get("boundary")
    if boundary is None:
        raise MultipartError(f"Content-Type {content_type.type} has no boundary parameter")
    if not boundary:
        raise MultipartError("the multipart boundary parameter is empty")
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise MultipartError(f"the multipart boundary is {len(boundary)} characters long; at most 70 are allowed")
    if not _BOUNDARY_PATTERN.match(boundary):
        raise MultipartError(f"the multipart boundary {boundary!r} contains characters RFC 2046 does not allow")
    return boundary


# -- parsing -----------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One body part: its headers and where its content lies in the parsed buffer.

    Parameters
    ----------
    index
        Position of the part in the message, from 1.
    headers
        Header names in lower case mapped to their values.
    start, end
        Offsets of the content in the buffer given to :func:`parse_multipart`.
    """

    index: int
    headers: dict[str, str]
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    def content(self, buffer: Searchable) -> bytes:
        """Copy the part's content out of ``buffer`` (the one that was parsed)."""
        return bytes(buffer[self.start : self.end])


def parse_headers(raw: bytes, part_index: int) -> dict[str, str]:
    """Parse a part's header section (lines ``Name: value``, folded lines joined).

    Raises
    ------
    MultipartError
        For a line without a colon, an empty name, or a continuation line with nothing to continue.
    """
    headers: dict[str, str] = {}
    last: str | None = None
    for number, line_bytes in enumerate(raw.split(CRLF), start=1):
        line = line_bytes.decode("latin-1")
        if not line:
            continue
        if line[0] in " \t":
            if last is None:
                raise MultipartError(f"part {part_index}: header line {number} is a continuation with no header before it")
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        name = name.strip().lower()
        if not sep or not name or not _TOKEN_PATTERN.match(name):
            raise MultipartError(f"part {part_index}: header line {number} ({line[:60]!r}) is not 'Name: value'")
        headers[name] = value.strip()
        last = name
    return headers


def _first_delimiter(buffer: Searchable, dash_boundary: bytes) -> int:
    """Offset just after the first ``--boundary`` (at the start of the body or of a line)."""
    if buffer[: len(dash_boundary)] == dash_boundary:
        return len(dash_boundary)
    found = buffer.find(CRLF + dash_boundary)
    if found < 0:
        raise MultipartError(
            f"the boundary {dash_boundary[2:].decode('latin-1')!r} never appears in the body "
            "(wrong boundary parameter, or not a multipart body)"
        )
    return found + len(CRLF) + len(dash_boundary)


def _skip_line_end(buffer: Searchable, position: int, part_index: int) -> int:
    """After a delimiter: skip transport padding (spaces, tabs) and the CRLF that must follow."""
    end = min(len(buffer), position + 1024)
    line_end = buffer.find(CRLF, position, end)
    if line_end < 0 or bytes(buffer[position:line_end]).strip(b" \t"):
        raise MultipartError(f"the boundary line before part {part_index} is not followed by CRLF")
    return line_end + len(CRLF)


def _header_section(buffer: Searchable, position: int, part_index: int) -> tuple[dict[str, str], int]:
    """Parse the headers of the part starting at ``position``; return them and where the content starts."""
    if buffer[position : position + 2] == CRLF:
        return {}, position + 2  # a part with an empty header section (RFC 2046 allows it)
    limit = min(len(buffer), position + MAX_HEADER_BYTES)
    blank = buffer.find(CRLF + CRLF, position, limit)
    if blank < 0:
        if limit == len(buffer):
            raise MultipartError(f"part {part_index} is truncated: its header section has no end (no blank line)")
        raise MultipartError(
            f"part {part_index} has no blank line ending its headers within {MAX_HEADER_BYTES} bytes "
            "(a part must start with headers, then CRLF CRLF, then the content)"
        )
    return parse_headers(bytes(buffer[position:blank]), part_index), blank + 4


def parse_multipart(buffer: Searchable, boundary: str) -> list[Part]:
    """Split a ``multipart/related`` body into its parts.

    Parameters
    ----------
    buffer
        The whole body (``bytes`` or an ``mmap``).
    boundary
        The boundary from the Content-Type (see :func:`boundary_of`).

    Returns
    -------
    list[Part]
        The parts in order; empty when the body holds only the closing delimiter.

    Raises
    ------
    MultipartError
        If the body is empty, never contains the boundary, is cut off before the
        closing ``--boundary--``, or a part's header section is malformed.
    """
    if len(buffer) == 0:
        raise MultipartError("the request body is empty")
    dash_boundary = b"--" + boundary.encode("latin-1")
    delimiter = CRLF + dash_boundary
    position = _first_delimiter(buffer, dash_boundary)
    parts: list[Part] = []
    while True:
        index = len(parts) + 1
        if buffer[position : position + 2] == b"--":
            return parts  # close delimiter: anything after it is the epilogue
        position = _skip_line_end(buffer, position, index)
        headers, start = _header_section(buffer, position, index)
        end = buffer.find(delimiter, start)
        if end < 0:
            raise MultipartError(
                f"part {index} is truncated: no boundary after its content (the body ends without the closing '--{boundary}--')"
            )
        parts.append(Part(index=index, headers=headers, start=start, end=end))
        position = end + len(delimiter)
        if position >= len(buffer):
            raise MultipartError(f"the body ends right after a boundary without the closing '--{boundary}--'")


# -- writing -----------------------------------------------------------------------


def new_boundary() -> str:
    """A fresh random boundary that cannot occur by chance in DICOM content."""
    return f"radpilot-{uuid.uuid4().hex}"


def part_header(boundary: str, content_type: str, extra: dict[str, str] | None = None) -> bytes:
    """The delimiter line and header section that open one part of a multipart message."""
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing_delimiter(boundary: str) -> bytes:
    """The ``--boundary--`` line that ends a multipart message."""
    return f"--{boundary}--\r\n".encode("latin-1")


def stream_multipart(
    boundary: str, parts: Iterable[tuple[str, Iterable[bytes]] | tuple[str, Iterable[bytes], dict[str, str]]]
) -> Iterator[bytes]:
    """Yield a ``multipart/related`` body part by part.

    Parameters
    ----------
    boundary
        From :func:`new_boundary`.
    parts
        ``(content_type, chunks)`` or ``(content_type, chunks, extra_headers)`` per part;
        ``chunks`` is consumed lazily, so file contents are read only as the body is sent.

    Notes
    -----
    The body starts directly with ``--boundary`` (no preamble): some viewers
    (cornerstone's WADO-RS loader) read the boundary from the first line.
    """
    for part in parts:
        content_type, chunks = part[0], part[1]
        extra = part[2] if len(part) > 2 else None  # type: ignore[misc]
        yield part_header(boundary, content_type, extra)
        for chunk in chunks:
            if chunk:
                yield chunk
        yield CRLF
    yield closing_delimiter(boundary)


def multipart_length(boundary: str, parts: Iterable[tuple[str, int] | tuple[str, int, dict[str, str]]]) -> int:
    """Length in bytes of the body :func:`stream_multipart` writes for parts of these sizes.

    Parameters
    ----------
    parts
        ``(content_type, content_length)`` or ``(content_type, content_length, extra_headers)`` per part.

    Notes
    -----
    A client that streams a body and declares its Content-Length up front is
    understood by servers that refuse chunked request bodies.
    """
    total = len(closing_delimiter(boundary))
    for part in parts:
        extra = part[2] if len(part) > 2 else None  # type: ignore[misc]
        total += len(part_header(boundary, part[0], extra)) + part[1] + len(CRLF)
    return total


def file_chunks(path: Path, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The content of the file at ``path``, read a chunk at a time (the file is opened on the first one)."""
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            yield chunk
