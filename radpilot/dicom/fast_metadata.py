"""An instance's WADO-RS metadata and header read straight from its bytes, for the common case, at a fraction of pydicom's cost.

At ingest the archive must prove every element complete and every value decodable, and
keep the instance's metadata (:func:`~radpilot.dicom.json_model.instance_metadata_document`).
Through pydicom that is most of a C-STORE's CPU time: each of a CT header's hundred values
goes through several layers of objects. Most instances a hospital sends are plain:
explicit VR little endian (native or encapsulated pixel data) or implicit VR little endian
(the default transfer syntax, which many modalities use), text in ASCII, ISO 8859-1 or
UTF-8, well-formed numbers. For those, :func:`read_plain_instance` walks the element bytes
once and builds the same JSON object the pydicom path builds, with the same functions for
numbers and person names, and the same bytes in the end; and the header the archive indexes,
as raw elements, as pydicom's reader leaves them.

It answers for that subset only, which takes in private elements a router forwarded as UN
when pydicom would keep them as bytes too. With implicit VR each element gets the VR the
pydicom path's document gives it (:meth:`_Walker.implicit_vr`); an ambiguous one it cannot
settle the same way goes to pydicom. Any other transfer syntax or character set (ISO 2022
code extensions among them), text its character set cannot decode, a number pydicom would have
to guess at, an unknown VR, a UN element pydicom would read with another VR (a public tag, a
private creator, a private tag whose creator pydicom knows), an element out of order or cut
short, trailing bytes: it
returns None, and the caller takes the pydicom path, which decides (and words any refusal)
exactly as before. So its answer is the pydicom path's answer or no answer, never a different
one; ``tests/unit/test_fast_metadata.py`` compares the two on real files, on every character
set file pydicom ships, and on fuzzed bytes. A document from here also vouches for what the
pydicom path checks: every element is complete, nothing trails the dataset, and every value
decodes.
"""

from __future__ import annotations

import base64
import re
import struct
from dataclasses import dataclass
from typing import Any

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from radpilot.dicom.json_model import PIXEL_DATA_TAGS, _number, metadata_document_bytes, tag_key

UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM_TAG, ITEM_END_TAG, SEQUENCE_END_TAG = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0"
SPECIFIC_CHARACTER_SET = 0x00080005
# The single-byte and UTF-8 character sets this path reads, and the codec pydicom decodes them with
# (no Specific Character Set: pydicom's default, ISO 8859-1). ISO 2022 code extensions are pydicom's to read.
CHARACTER_SET_CODECS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
# The VRs whose text pydicom decodes with the dataset's character set; it decodes the others as ISO 8859-1.
CHARACTER_SET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2), as pydicom reads them.
LONG_LENGTH_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "UV": "Q", "SV": "q", "FL": "f", "FD": "d"}
# How pydicom splits and trims each text VR (pydicom.values): the JSON values follow from that.
SPLIT_THEN_TRIM_END = frozenset({"LO", "SH", "UC"})  # convert_text: each value rstrip("\0 ")
TRIM_END_THEN_SPLIT = frozenset({"AS", "CS", "DA", "DT", "TM"})  # multi_string: the whole value rstrip(" \0")
SINGLE_VALUE_TEXT = frozenset({"LT", "ST", "UT"})  # convert_single_string: rstrip("\0 "), never split
TEXT_VRS = SPLIT_THEN_TRIM_END | TRIM_END_THEN_SPLIT | SINGLE_VALUE_TEXT | {"AE", "UI", "UR", "PN", "IS", "DS"}
KNOWN_VRS = TEXT_VRS | BINARY_VRS | frozenset(NUMBER_FORMATS) | {"AT", "SQ", "UN"}
# Numbers that pydicom reads as written and _number turns into the same JSON number; anything else is pydicom's to judge.
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_ELEMENT_HEADER = struct.Struct("<HH2sH")
_LONG_LENGTH = struct.Struct("<L")
_ITEM_HEADER = struct.Struct("<LL")
MAX_DEPTH = 64  # deeper nesting is left to the pydicom path (which refuses what it cannot read)
PIXEL_REPRESENTATION = 0x00280103
# Image pixel values whose VR follows Pixel Representation (PS3.3 C.7.6.3; pydicom's _us_ss_tags):
# smallest and largest pixel value in the image and series, pixel padding value and range limit.
US_OR_SS_BY_PIXEL_REPRESENTATION = frozenset({0x00280106, 0x00280107, 0x00280108, 0x00280109, 0x00280120, 0x00280121})


# One element walked at depth 0: tag, VR, length field, value start, element end.
ElementExtent = tuple[int, str, int, int, int]


class _NotPlain(Exception):
    """The instance is outside what this module answers for: the pydicom path takes it."""


@dataclass(frozen=True)
class PlainInstance:
    """What one walk over a plain instance gives: its metadata document and its header as pydicom reads one.

    ``header`` holds the file meta group and every top-level element of at most ``threshold``
    bytes (larger ones, pixel data among them, are left out) as raw elements that pydicom
    decodes when they are first read, exactly as ``dcmread`` leaves them.
    """

    document: bytes
    header: Dataset


def read_plain_instance(data: bytes, meta_start: int, dataset_start: int, transfer_syntax: str, threshold: int) -> PlainInstance | None:
    """Metadata document and header of a Part 10 instance whose file meta group spans ``meta_start`` to ``dataset_start``.

    None when the instance (its file meta group included) is outside the subset described above.
    """
    if not _plain_transfer_syntax(transfer_syntax):
        return None
    implicit = UID(transfer_syntax).is_implicit_VR
    if implicit and data[dataset_start + 4 : dataset_start + 6].isalpha():
        return None  # written with explicit VR after all: pydicom notices and reads it so
    walker = _Walker(data, threshold)
    meta_elements: list[ElementExtent] = []
    dataset_elements: list[ElementExtent] = []
    try:
        walker.record = meta_elements
        meta, _ = walker.dataset(meta_start, dataset_start, prefix="", top_level=False, depth=0)
        if any(not key.startswith("0002") for key in meta):
            return None
        walker.record = dataset_elements
        walker.implicit = implicit  # the file meta group is always explicit VR (PS3.10 7.1)
        header, _ = walker.dataset(dataset_start, len(data), prefix="", top_level=True, depth=0)
    except (_NotPlain, struct.error, UnicodeDecodeError):
        return None
    dataset = Dataset(_raw_elements(data, dataset_elements, threshold, implicit=implicit))
    charset = header.get(tag_key(SPECIFIC_CHARACTER_SET), {}).get("Value")
    dataset.set_original_encoding(implicit, True, convert_encodings(charset[0]) if charset and charset[0] else default_encoding)
    file_meta = FileMetaDataset(_raw_elements(data, meta_elements, threshold))
    file_meta.set_original_encoding(False, True)
    dataset.file_meta = file_meta
    return PlainInstance(metadata_document_bytes(header, transfer_syntax), dataset)


def _raw_elements(
    data: bytes, elements: list[ElementExtent], threshold: int, *, implicit: bool = False
) -> dict[BaseTag, DataElement | RawDataElement]:
    """Raw elements as pydicom's reader makes them; values longer than ``threshold`` are left out.

    Read with implicit VR, pydicom leaves the VR to be looked up when the value is first
    read (None), except for a sequence of undefined length, which it knows to be one.
    """
    raw: dict[BaseTag, DataElement | RawDataElement] = {}
    for tag, vr, length, value_start, element_end in elements:
        if element_end - value_start > threshold:
            continue
        key = BaseTag(tag)
        raw_vr = None if implicit and length != UNDEFINED_LENGTH else vr
        raw[key] = RawDataElement(key, raw_vr, length, data[value_start:element_end], value_start, implicit, True)
    return raw


def _plain_transfer_syntax(transfer_syntax: str) -> bool:
    uid = UID(transfer_syntax)
    if not uid.is_transfer_syntax or uid == DeflatedExplicitVRLittleEndian:
        return False
    return uid.is_little_endian


class _Walker:
    def __init__(self, data: bytes, threshold: int) -> None:
        self.data = data
        self.view = memoryview(data)
        self.threshold = threshold
        self.codec = CHARACTER_SET_CODECS[""]  # of the dataset's text, from its Specific Character Set
        self.implicit = False  # the elements carry no VR: each is the one pydicom looks up (implicit_vr)
        self.pixel_representation: int | None = None  # of the top-level dataset, once walked past (0028,0103)
        # When a list: the extent of each element walked at depth 0.
        self.record: list[ElementExtent] | None = None

    def dataset(
        self, start: int, end: int, *, prefix: str, top_level: bool, depth: int, delimited: bool = False
    ) -> tuple[dict[str, Any], int]:
        """The DICOM JSON object of the elements from ``start``, and the position after them.

        The elements end exactly at ``end``, or, when ``delimited`` (an undefined-length
        item), at an item delimiter before ``end``, which the returned position is after.
        """
        if depth > MAX_DEPTH:
            raise _NotPlain("nested too deeply")
        result: dict[str, Any] = {}
        creators: dict[int, str] = {}  # private block (group << 16 | block) -> its private creator, as read
        data = self.data
        position, previous = start, -1
        while delimited or position < end:
            if position + 8 > end:
                raise _NotPlain("element header cut short")
            group, element, vr_bytes, short_length = _ELEMENT_HEADER.unpack_from(data, position)
            tag = group << 16 | element
            if delimited and tag == ITEM_END_TAG:
                if data[position + 4 : position + 8] != b"\x00\x00\x00\x00":
                    raise _NotPlain("item delimiter with a length")
                return result, position + 8
            if tag <= previous or group == 0xFFFE or (top_level and group == 0x0002):
                raise _NotPlain("element out of order, a delimiter, or file meta in the dataset")
            previous = tag
            if self.implicit:  # tag, 4-byte length (PS3.5 7.1.3)
                (length,) = _LONG_LENGTH.unpack_from(data, position + 4)
                vr, value_start = self.implicit_vr(tag, length, creators, top_level), position + 8
            else:
                vr = vr_bytes.decode("ascii")
                if vr in LONG_LENGTH_VRS:
                    if position + 12 > end:
                        raise _NotPlain("element header cut short")
                    (length,) = _LONG_LENGTH.unpack_from(data, position + 8)
                    value_start = position + 12
                else:
                    length, value_start = short_length, position + 8
                if vr == "UN" and (length == UNDEFINED_LENGTH or not _stays_unknown(tag, creators)):
                    raise _NotPlain("a UN element pydicom reads with another VR")
            if vr not in KNOWN_VRS:
                raise _NotPlain("a VR this path does not read")
            key = tag_key(tag)
            path = prefix + key
            if length == UNDEFINED_LENGTH:
                if vr == "SQ":
                    items, position = self.sequence(value_start, end, path, depth, delimited=True)
                    result[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                elif top_level and tag in PIXEL_DATA_TAGS and vr in ("OB", "OW"):
                    result[key], position = {"vr": vr, "BulkDataURI": path}, self.after_fragments(value_start, end)
                else:
                    raise _NotPlain("undefined length outside a sequence or encapsulated pixel data")
                if self.record is not None and depth == 0:
                    self.record.append((tag, vr, length, value_start, position))
                continue
            value_end = value_start + length
            if value_end > end:
                raise _NotPlain("value cut short")
            if tag == SPECIFIC_CHARACTER_SET:
                if depth:
                    raise _NotPlain("a character set of its own in a sequence item")
                self.codec = self.character_set_codec(value_start, value_end)
            result[key] = attribute = self.attribute(vr, tag, value_start, value_end, path, top_level, depth)
            if group % 2 and 0x0010 <= element <= 0x00FF:
                creators[group << 16 | element] = _private_creator(vr, attribute)
            elif tag == PIXEL_REPRESENTATION and top_level:
                values = attribute.get("Value")
                self.pixel_representation = values[0] if vr == "US" and values and len(values) == 1 else None
            if self.record is not None and depth == 0:
                self.record.append((tag, vr, length, value_start, value_end))
            position = value_end
        if position != end:
            raise _NotPlain("elements run past their dataset")
        return result, position

    def implicit_vr(self, tag: int, length: int, creators: dict[int, str], top_level: bool) -> str:
        """The VR of an element read with implicit VR, as the pydicom path's document gives it, where this path can be sure.

        A top-level value longer than the threshold is one pydicom defers: the document takes its
        VR from the public dictionary, so a private one is UN. Otherwise a public tag has its
        dictionary's VR; a private creator is LO; a private tag has its creator's dictionary VR
        where pydicom knows it, else UN. Of the VRs the dictionary leaves ambiguous, two are
        settled as pydicom settles them: deferred top-level pixel data (the first choice, OB)
        and US or SS from the top-level Pixel Representation walked before. Any other ambiguity,
        an unknown public tag, a private block whose creator is empty or deferred, and an
        undefined length on anything but a sequence are pydicom's to read.
        """
        group, element = tag >> 16, tag & 0xFFFF
        deferred = top_level and length != UNDEFINED_LENGTH and length > self.threshold
        if group % 2:
            if element < 0x0010:
                raise _NotPlain("a private element outside a private block")
            if deferred:
                return "UN"
            if element <= 0x00FF:
                vr = "LO"
            else:
                creator = creators.get(group << 16 | element >> 8)
                if creator == "":
                    raise _NotPlain("a private block whose creator is empty or was deferred")
                try:
                    vr = private_dictionary_VR(tag, creator) if creator else "UN"
                except KeyError:
                    vr = "UN"
        else:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                raise _NotPlain("a public tag pydicom does not know") from None
        if length == UNDEFINED_LENGTH and vr != "SQ":
            raise _NotPlain("undefined length on an element that is not a sequence")
        if " or " not in vr:
            return vr
        if deferred and vr == "OB or OW" and tag in PIXEL_DATA_TAGS:
            return "OB"
        if not deferred and top_level and vr == "US or SS" and tag in US_OR_SS_BY_PIXEL_REPRESENTATION:
            if self.pixel_representation == 0:
                return "US"
            if self.pixel_representation is not None:
                return "SS"
        raise _NotPlain("an ambiguous VR this path does not settle")

    def character_set_codec(self, start: int, end: int) -> str:
        names = bytes(self.view[start:end]).decode("ascii").rstrip(" \x00").split("\\")
        codec = CHARACTER_SET_CODECS.get(names[0].strip()) if len(names) == 1 else None
        if codec is None:
            raise _NotPlain("a character set this path does not read")
        return codec

    def attribute(self, vr: str, tag: int, start: int, end: int, path: str, top_level: bool, depth: int) -> dict[str, Any]:
        length = end - start
        if vr == "SQ":
            items = self.sequence(start, end, path, depth, delimited=False)[0] if length else []
            return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
        if vr in BINARY_VRS or vr == "UN":
            return self.binary(vr, tag, start, end, path, top_level)
        result: dict[str, Any] = {"vr": vr}
        if not length:
            return result
        if vr in NUMBER_FORMATS:
            values = self.numbers(vr, start, end)
        elif vr == "AT":
            values = self.tags(start, end)
        else:
            values = self.texts(vr, bytes(self.view[start:end]))
        if values and any(v is not None for v in values):
            result["Value"] = values
        return result

    def binary(self, vr: str, tag: int, start: int, end: int, path: str, top_level: bool) -> dict[str, Any]:
        length = end - start
        if not length:
            return {"vr": vr}
        # pydicom defers a top-level value longer than the threshold; a deferred value, top-level
        # pixel data, and any value longer than the threshold become bulk data (json_model._binary_json).
        if length > self.threshold or (top_level and tag in PIXEL_DATA_TAGS):
            return {"vr": vr, "BulkDataURI": path}
        return {"vr": vr, "InlineBinary": base64.b64encode(self.view[start:end]).decode("ascii")}

    def numbers(self, vr: str, start: int, end: int) -> list[Any]:
        code = NUMBER_FORMATS[vr]
        size = struct.calcsize("<" + code)  # standard sizes: natively an L is 8 bytes
        if (end - start) % size:
            raise _NotPlain("binary number of a length pydicom refuses")
        values = struct.unpack_from(f"<{(end - start) // size}{code}", self.data, start)
        if code in "fd":
            return [_number(v, vr) for v in values]
        return list(values)

    def tags(self, start: int, end: int) -> list[str]:
        if (end - start) % 4:
            raise _NotPlain("AT value of a length pydicom refuses")
        words = struct.unpack_from(f"<{(end - start) // 2}H", self.data, start)
        return [f"{words[i]:04X}{words[i + 1]:04X}" for i in range(0, len(words), 2)]

    def texts(self, vr: str, raw: bytes) -> list[Any]:
        if b"\x1b" in raw:
            raise _NotPlain("an escape sequence in text")
        if raw.isascii():
            text = raw.decode("ascii")
        elif vr in CHARACTER_SET_VRS:
            text = raw.decode(self.codec)  # strict: bytes the character set cannot decode go to pydicom
        else:
            raise _NotPlain("text beyond ASCII in a VR pydicom reads as ISO 8859-1")
        if vr in SPLIT_THEN_TRIM_END:
            values = [v.rstrip("\x00 ") for v in text.split("\\")]
        elif vr in TRIM_END_THEN_SPLIT:
            values = text.rstrip(" \x00").split("\\")
        elif vr in SINGLE_VALUE_TEXT:
            values = [text.rstrip("\x00 ")]
        elif vr == "AE":
            values = [v.strip() for v in text.split("\\")]
        elif vr == "UI":
            values = text.rstrip("\x00 ").split("\\")
        elif vr == "UR":
            values = [text.rstrip()]
        elif vr == "PN":
            return _person_names(raw, self.codec)
        elif vr == "IS":
            return [_integer_string(v) for v in text.rstrip(" \x00").split("\\")]
        else:  # DS
            return [_decimal_string(v) for v in text.strip().rstrip(" \x00").split("\\")]
        if vr in SINGLE_VALUE_TEXT or vr == "UR":
            return [] if values == [""] else [v or None for v in values]
        return [v or None for v in values]

    def sequence(self, start: int, end: int, path: str, depth: int, *, delimited: bool) -> tuple[list[dict[str, Any]], int]:
        """A sequence's items, and the position after them.

        They end exactly at ``end`` (a defined-length sequence), or, when ``delimited`` (an
        undefined-length one), at the sequence delimiter, which the returned position is after.
        """
        items: list[dict[str, Any]] = []
        position = start
        while delimited or position < end:
            if position + 8 > end:
                raise _NotPlain("item header cut short, or a sequence without its delimiter")
            tag, length = _ITEM_HEADER.unpack_from(self.data, position)
            tag = (tag & 0xFFFF) << 16 | tag >> 16
            if delimited and tag == SEQUENCE_END_TAG and length == 0:
                return items, position + 8
            if tag != ITEM_TAG:
                raise _NotPlain("not an item in a sequence")
            item_start = position + 8
            prefix = f"{path}/{len(items)}/"
            if length == UNDEFINED_LENGTH:
                item, position = self.dataset(item_start, end, prefix=prefix, top_level=False, depth=depth + 1, delimited=True)
            else:
                if item_start + length > end:
                    raise _NotPlain("item cut short")
                item, position = self.dataset(item_start, item_start + length, prefix=prefix, top_level=False, depth=depth + 1)
            items.append(item)
        if position != end:
            raise _NotPlain("items run past their sequence")
        return items, position

    def after_fragments(self, start: int, end: int) -> int:
        """After encapsulated pixel data: pydicom reads to the first sequence delimiter, wherever it is."""
        delimiter = self.data.find(SEQUENCE_DELIMITER, start, end)
        if delimiter < 0 or delimiter + 8 > end or self.data[delimiter + 4 : delimiter + 8] != b"\x00\x00\x00\x00":
            raise _NotPlain("encapsulated pixel data without its delimiter")
        return delimiter + 8


def _stays_unknown(tag: int, creators: dict[int, str]) -> bool:
    """Whether pydicom keeps an element sent as UN unknown (and reads it as bytes), as its raw_element_vr hook decides.

    It gives a public tag its dictionary VR and a private creator LO; a private tag whose
    creator's dictionary it knows gets that dictionary's VR. Only the rest stays UN.
    """
    group, element = tag >> 16, tag & 0xFFFF
    if not group % 2 or 0x0010 <= element <= 0x00FF:
        return False
    if element < 0x0010:
        return True  # in no private block: pydicom looks no creator up
    creator = creators.get(group << 16 | element >> 8)
    if creator is None:
        return True
    if not creator:
        return False  # an empty creator: left to pydicom
    try:
        private_dictionary_VR(tag, creator)
    except KeyError:
        return True
    return False


def _private_creator(vr: str, attribute: dict[str, Any]) -> str:
    """A private creator's name as pydicom looks it up ("" when it has no single LO value)."""
    values = attribute.get("Value") if vr == "LO" else None
    return values[0] if values and len(values) == 1 and isinstance(values[0], str) else ""


def _person_names(raw: bytes, codec: str) -> list[Any]:
    names = []
    for name in raw.rstrip(b"\x00 ").decode(codec).split("\\"):
        groups = name.split("=")
        if len(groups) > 3:
            raise _NotPlain("person name with more than three component groups")
        named = {key: group for key, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False) if group}
        names.append(named or None)
    return names


def _integer_string(value: str) -> int | None:
    if not value.strip(" "):
        return None
    if not _INTEGER.fullmatch(value.strip(" ")):
        raise _NotPlain("IS value pydicom would have to guess at")
    return int(value)


def _decimal_string(value: str) -> int | float | None:
    if not value.strip(" "):
        return None
    text = value.strip(" ")
    if not _DECIMAL.fullmatch(text):
        raise _NotPlain("DS value pydicom would have to guess at")
    number = _number(text, "DS")
    if number is None:
        raise _NotPlain("DS value out of range")
    return number
