"""The multipart/related parser and writer and the header value parsers used by DICOMweb."""

from __future__ import annotations

import mmap
import tempfile
from pathlib import Path

import pytest

from radpilot.pacs.multipart import (
    MAX_HEADER_BYTES,
    MultipartError,
    boundary_of,
    file_chunks,
    media_range_matches,
    multipart_length,
    new_boundary,
    parse_accept,
    parse_media_type,
    parse_multipart,
    stream_multipart,
)

BOUNDARY = "b0und4ry"


def body(*parts: tuple[str, bytes], boundary: str = BOUNDARY, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    """A well-formed multipart body; each part is (header block without final CRLF, content)."""
    out = preamble
    for headers, content in parts:
        out += f"--{boundary}\r\n".encode() + headers.encode() + b"\r\n\r\n" + content + b"\r\n"
    return out + f"--{boundary}--".encode() + epilogue


def contents(data: bytes, boundary: str = BOUNDARY) -> list[bytes]:
    return [p.content(data) for p in parse_multipart(data, boundary)]


# -- media types ---------------------------------------------------------------------


def test_media_type_with_quoted_parameters() -> None:
    media = parse_media_type('Multipart/Related; type="application/dicom"; boundary="a b;c=d"')
    assert media.type == "multipart/related"
    assert media.params == {"type": "application/dicom", "boundary": "a b;c=d"}


def test_media_type_with_escaped_quote_and_trailing_semicolon() -> None:
    media = parse_media_type(r'text/plain; title="say \"hi\""; ')
    assert media.params["title"] == 'say "hi"'


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("", "empty media type"),
        ("multipart", "type/subtype"),
        ("a/b/c", "type/subtype"),
        ("a/b; =x", "malformed parameter"),
        ("a/b; novalue", "malformed parameter"),
        ('a/b; x="unterminated', "unterminated quoted string"),
    ],
)
def test_malformed_media_types_are_refused(value: str, fragment: str) -> None:
    with pytest.raises(MultipartError, match=fragment):
        parse_media_type(value)


def test_accept_is_sorted_by_quality_and_keeps_client_order() -> None:
    ranges = parse_accept(
        'multipart/related; type="image/jpeg"; q=0.5, '
        "multipart/related; type=application/octet-stream; transfer-syntax=*, "
        'multipart/related; type="application/dicom,x"; q=0, */*'
    )
    assert [(r.type, r.params.get("type")) for r in ranges] == [
        ("multipart/related", "application/octet-stream"),
        ("*/*", None),
        ("multipart/related", "image/jpeg"),
    ]
    assert ranges[0].params["transfer-syntax"] == "*"


def test_absent_accept_means_anything() -> None:
    assert [r.type for r in parse_accept(None)] == ["*/*"]
    assert [r.type for r in parse_accept("  ")] == ["*/*"]


def test_media_range_matching() -> None:
    assert media_range_matches("*/*", "image/jpeg")
    assert media_range_matches("image/*", "image/jpeg")
    assert not media_range_matches("image/*", "application/octet-stream")
    assert media_range_matches("Application/Dicom", "application/dicom")


@pytest.mark.parametrize(
    "content_type, fragment",
    [
        ("multipart/related", "no boundary"),
        ('multipart/related; boundary=""', "empty"),
        ("multipart/related; boundary=" + "x" * 71, "at most 70"),
        ('multipart/related; boundary="bad\x01char"', "not allow"),
        ('multipart/related; boundary="ends with space "', "not allow"),
    ],
)
def test_invalid_boundaries_are_refused(content_type: str, fragment: str) -> None:
    with pytest.raises(MultipartError, match=fragment):
        boundary_of(parse_media_type(content_type))


def test_quoted_boundary_is_accepted() -> None:
    assert boundary_of(parse_media_type('multipart/related; boundary="0f3c:f5c0 (x)"')) == "0f3c:f5c0 (x)"


# -- parsing well-formed bodies ------------------------------------------------------


def test_parts_with_headers_and_binary_content() -> None:
    binary = b"\x00\r\n--not-the-boundary\r\n\r\n\xff" * 3
    data = body(("Content-Type: application/dicom", b"first"), ("Content-Type: application/dicom", binary))
    parts = parse_multipart(data, BOUNDARY)
    assert [p.index for p in parts] == [1, 2]
    assert parts[0].content_type == "application/dicom"
    assert parts[0].content(data) == b"first"
    assert parts[1].content(data) == binary
    assert parts[1].size == len(binary)


def test_preamble_epilogue_and_dicomweb_client_style_leading_crlf() -> None:
    data = body(("Content-Type: application/dicom", b"x"), preamble=b"ignored preamble\r\n", epilogue=b"\r\nbye")
    assert contents(data) == [b"x"]
    client_style = b"\r\n" + body(("Content-Type: application/dicom", b"y"))
    assert contents(client_style) == [b"y"]


def test_transport_padding_after_boundary_and_folded_headers() -> None:
    data = (
        f"--{BOUNDARY}  \t\r\nContent-Type: application/dicom;\r\n  transfer-syntax=1.2.840.10008.1.2.1\r\n"
        f"X-Empty:\r\n\r\nabc\r\n--{BOUNDARY}--\r\n"
    ).encode()
    (part,) = parse_multipart(data, BOUNDARY)
    assert part.headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    assert part.headers["x-empty"] == ""
    assert part.content(data) == b"abc"


def test_part_with_empty_header_section_and_empty_content() -> None:
    data = f"--{BOUNDARY}\r\n\r\ncontent\r\n--{BOUNDARY}\r\nContent-Type: a/b\r\n\r\n\r\n--{BOUNDARY}--".encode()
    parts = parse_multipart(data, BOUNDARY)
    assert parts[0].headers == {}
    assert parts[0].content(data) == b"content"
    assert parts[1].content(data) == b""


def test_body_with_only_the_closing_delimiter_has_no_parts() -> None:
    assert parse_multipart(f"--{BOUNDARY}--\r\n".encode(), BOUNDARY) == []


def test_parser_works_on_an_mmap() -> None:
    data = body(("Content-Type: application/dicom", b"mapped" * 1000))
    with tempfile.TemporaryFile() as handle:
        handle.write(data)
        handle.flush()
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            (part,) = parse_multipart(mapped, BOUNDARY)
            assert part.content(mapped) == b"mapped" * 1000


def test_writer_output_parses_back() -> None:
    boundary = new_boundary()
    payloads = [b"a" * 10, b"", b"\r\n--" + b"z" * 100]
    stream = stream_multipart(
        boundary,
        [("application/dicom", [p[:3], p[3:]]) for p in payloads] + [("a/b", [b"x"], {"Content-Location": "u"})],
    )
    data = b"".join(stream)
    assert data.startswith(f"--{boundary}\r\n".encode()), "viewers read the boundary from the first line"
    parts = parse_multipart(data, boundary)
    assert [p.content(data) for p in parts] == [*payloads, b"x"]
    assert parts[3].headers == {"content-type": "a/b", "content-location": "u"}


def test_declared_length_is_the_length_written() -> None:
    boundary = new_boundary()
    parts = [("application/dicom", b"a" * 10), ("application/dicom", b""), ("a/b", b"xyz", {"Content-Location": "u"})]
    written = b"".join(stream_multipart(boundary, [(p[0], [p[1]], *p[2:]) for p in parts]))
    assert multipart_length(boundary, [(p[0], len(p[1]), *p[2:]) for p in parts]) == len(written)
    assert multipart_length(boundary, []) == len(b"".join(stream_multipart(boundary, [])))


def test_file_chunks_reads_lazily_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    chunks = file_chunks(path, chunk_size=4)  # the file does not exist yet: nothing is opened before reading
    path.write_bytes(b"0123456789")
    assert list(chunks) == [b"0123", b"4567", b"89"]


# -- malformed bodies ----------------------------------------------------------------


def test_empty_body() -> None:
    with pytest.raises(MultipartError, match="body is empty"):
        parse_multipart(b"", BOUNDARY)


def test_missing_boundary() -> None:
    data = body(("Content-Type: application/dicom", b"x"), boundary="other")
    with pytest.raises(MultipartError, match="never appears"):
        parse_multipart(data, BOUNDARY)


def test_garbage() -> None:
    with pytest.raises(MultipartError, match="never appears"):
        parse_multipart(b"\x00\x01garbage that is not multipart at all\xff" * 50, BOUNDARY)


def test_body_truncated_inside_a_part() -> None:
    data = body(("Content-Type: application/dicom", b"x" * 100), ("Content-Type: application/dicom", b"y" * 100))
    cut = data[: data.rindex(b"y") - 10]
    with pytest.raises(MultipartError, match="part 2 is truncated"):
        parse_multipart(cut, BOUNDARY)


def test_boundary_never_closed() -> None:
    data = f"--{BOUNDARY}\r\nContent-Type: a/b\r\n\r\nx\r\n--{BOUNDARY}".encode()
    with pytest.raises(MultipartError, match="without the closing"):
        parse_multipart(data, BOUNDARY)


def test_body_truncated_inside_headers() -> None:
    data = f"--{BOUNDARY}\r\nContent-Type: application/dic".encode()
    with pytest.raises(MultipartError, match="header section has no end"):
        parse_multipart(data, BOUNDARY)


def test_part_without_headers_blank_line() -> None:
    """A part whose content follows the boundary line directly (no header section, no blank line)."""
    data = f"--{BOUNDARY}\r\n".encode() + b"\x02" * (MAX_HEADER_BYTES + 10) + f"\r\n--{BOUNDARY}--".encode()
    with pytest.raises(MultipartError, match="no blank line ending its headers"):
        parse_multipart(data, BOUNDARY)


def test_header_line_without_colon() -> None:
    data = f"--{BOUNDARY}\r\nDICM-binary-garbage\r\n\r\nx\r\n--{BOUNDARY}--".encode()
    with pytest.raises(MultipartError, match=r"part 1: header line 1 .* is not 'Name: value'"):
        parse_multipart(data, BOUNDARY)


def test_continuation_line_first() -> None:
    data = f"--{BOUNDARY}\r\n  folded\r\n\r\nx\r\n--{BOUNDARY}--".encode()
    with pytest.raises(MultipartError, match="continuation"):
        parse_multipart(data, BOUNDARY)


def test_boundary_line_followed_by_other_text() -> None:
    data = f"--{BOUNDARY}junk\r\nContent-Type: a/b\r\n\r\nx\r\n--{BOUNDARY}--".encode()
    with pytest.raises(MultipartError, match="not followed by CRLF"):
        parse_multipart(data, BOUNDARY)
