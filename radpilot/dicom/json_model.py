"""The DICOM JSON Model (PS3.18 Annex F): pydicom datasets and plain values to JSON objects.

pydicom has ``Dataset.to_json_dict``, but an archive needs more control: bulk data
must point at *this* server's bulk data resource with a path that also reaches
values nested in sequences, deferred (not yet read) values must stay unread, and a
malformed number in one element must not break the whole response. So this module
writes the model itself:

* keys are the 8 upper-case hex digits of the tag, each value an object with ``vr``
  and, when the attribute is not empty, ``Value`` (a list), ``InlineBinary``
  (base64) or ``BulkDataURI``;
* PN values are objects with ``Alphabetic``, ``Ideographic`` and ``Phonetic``
  component groups; IS, DS and the binary number VRs are JSON numbers; AT values
  are ``"GGGGEEEE"`` strings; SQ values are lists of nested objects;
* empty values inside a multi-valued attribute are ``null``.

Bulk data paths (see :func:`dataset_to_json`) are the tag of each element down the
sequence hierarchy with the item index between: ``7FE00010`` or
``00540016/0/00181072``. :func:`resolve_bulk_path` follows such a path back.

:func:`instance_metadata_document` writes the whole WADO-RS metadata of one instance
as bytes whose ``BulkDataURI`` values are these bare paths, so that the archive can
keep it from ingest on; :func:`with_bulk_base` makes them this server's URLs when the
document is served (the URL depends on the Host a client asked through).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filewriter import correct_ambiguous_vr_element
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian
from pydicom.valuerep import PersonName

logger = logging.getLogger(__name__)

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
INTEGER_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
FLOAT_VRS = frozenset({"DS", "FD", "FL"})
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
# Size of the values a big endian file holds byte-reversed, per binary VR (JSON binary is little endian).
SWAP_UNITS = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
DEFAULT_BULK_DATA_THRESHOLD = 1024
WINDOW_CENTER_KEY, WINDOW_WIDTH_KEY, WINDOW_EXPLANATION_KEY = "00281050", "00281051", "00281055"
_INTEGER_TEXT = re.compile(r"^[+-]?\d+$")
AVAILABLE_TRANSFER_SYNTAX_TAG = 0x00083002
SPECIFIC_CHARACTER_SET_TAG = 0x00080005
# How every BulkDataURI value starts in compact JSON. Inside a JSON string a quote is always
# escaped, so these bytes can only be the start of a BulkDataURI member, never part of a value.
_BULK_URI_MEMBER = b'"BulkDataURI":"'

BulkDataUriFactory = Callable[[str], str]


class DicomJsonError(ValueError):
    """A keyword, tag or bulk data path that does not name a DICOM attribute; the message says which."""


# -- tags and keywords ---------------------------------------------------------------


def tag_key(tag: int) -> str:
    """The DICOM JSON key of a tag: 8 upper-case hex digits."""
    return f"{int(tag):08X}"


def resolve_attribute(name: str) -> tuple[int, str]:
    """Tag and keyword of an attribute given by keyword (``PatientID``) or 8 hex digits (``00100020``).

    The keyword is ``""`` for a private or otherwise unnamed tag given in hex.

    Raises
    ------
    DicomJsonError
        If ``name`` is neither a known keyword nor 8 hex digits.
    """
    text = name.strip()
    tag = tag_for_keyword(text)
    if tag is not None:
        return int(tag), text
    if re.fullmatch(r"[0-9A-Fa-f]{8}", text):
        tag = int(text, 16)
        return tag, keyword_for_tag(tag) or ""
    raise DicomJsonError(f"{name!r} is neither a DICOM attribute keyword nor a tag of 8 hex digits")


def vr_for(tag: int) -> str:
    """The dictionary VR of a tag ('UN' when unknown; the first choice of an ambiguous VR)."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]


# -- values --------------------------------------------------------------------------


def _number(text: Any, vr: str) -> int | float | None:
    """A JSON number from a DICOM numeric value; None (null) when it is not a finite number."""
    if text is None:
        return None
    if isinstance(text, bool):
        return int(text)
    if isinstance(text, int) and vr in INTEGER_VRS:
        return int(text)
    raw = str(text).strip()
    if not raw:
        return None
    try:
        if _INTEGER_TEXT.match(raw):
            return int(raw)
        number = float(raw)
    except ValueError:
        logger.warning("value %r of VR %s is not a number; sent as null", raw[:40], vr)
        return None
    if not math.isfinite(number):
        return None
    if vr == "IS" and number.is_integer():
        return int(number)
    return number


def person_name_json(value: Any) -> dict[str, str] | None:
    """A PN value as ``{"Alphabetic": ..., "Ideographic": ..., "Phonetic": ...}`` (empty groups left out)."""
    if value is None:
        return None
    if isinstance(value, PersonName):
        groups = [value.alphabetic, value.ideographic, value.phonetic]
    else:
        groups = (str(value).split("=") + ["", ""])[:3]
    result = {name: group for name, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False) if group}
    return result or None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (MultiValue, list, tuple)):
        return list(value)
    if isinstance(value, str) and value == "":
        return []
    return [value]


def json_values(vr: str, value: Any) -> list[Any]:
    """The ``Value`` list of a non-binary, non-sequence attribute (empty list for an empty attribute)."""
    items = _as_list(value)
    if vr == "PN":
        return [person_name_json(v) for v in items]
    if vr in INTEGER_VRS or vr in FLOAT_VRS:
        return [_number(v, vr) for v in items]
    if vr == "AT":
        return [tag_key(Tag(v)) if v not in (None, "") else None for v in items]
    return [str(v) if v not in (None, "") else None for v in items]


def attribute_json(vr: str, value: Any) -> dict[str, Any]:
    """One JSON attribute object from a VR and a Python value (str, number, list of them, PersonName...)."""
    result: dict[str, Any] = {"vr": vr}
    if vr == "SQ":
        raise DicomJsonError("use dataset_to_json for sequences")
    if vr in BINARY_VRS:
        if value:
            result["InlineBinary"] = base64.b64encode(bytes(value)).decode("ascii")
        return result
    values = json_values(vr, value)
    if values and any(v is not None for v in values):
        result["Value"] = values
    return result


def keyword_attribute(keyword: str, value: Any, vr: str | None = None) -> tuple[str, dict[str, Any]]:
    """``(key, object)`` for an attribute named by keyword, e.g. ``keyword_attribute("PatientID", "P1")``."""
    tag, _ = resolve_attribute(keyword)
    return tag_key(tag), attribute_json(vr or vr_for(tag), value)


# -- datasets ------------------------------------------------------------------------


def _element_vr(element: DataElement | RawDataElement, dataset: Dataset) -> str:
    vr = element.VR
    if vr is None:  # read with implicit VR: the dictionary's, ambiguity kept to be resolved below
        try:
            vr = dictionary_VR(element.tag)
        except KeyError:
            return "UN"
    if " or " in vr and isinstance(element, RawDataElement) and not is_deferred(element):
        # Converting resolves it from the dataset (US or SS by PixelRepresentation), as parsing at ingest does;
        # correct_ambiguous_vr_element leaves a raw element read with implicit VR unresolved.
        vr = dataset[element.tag].VR
    if " or " in vr:
        choices = vr
        try:
            vr = correct_ambiguous_vr_element(element, dataset, True).VR or choices
        except Exception:  # noqa: BLE001 - an element pydicom cannot resolve: fall back to the first choice
            vr = choices
        vr = vr.split(" or ")[0]
    return vr


def is_deferred(element: DataElement | RawDataElement) -> bool:
    """True for an element read with its value left in the file (``dcmread(..., defer_size=...)``)."""
    return isinstance(element, RawDataElement) and element.value is None and element.length not in (0, None)


def little_endian_bytes(data: bytes, vr: str, little_endian: bool) -> bytes:
    """Binary value bytes in little endian order (reversed per value when read from a big endian file)."""
    unit = SWAP_UNITS.get(vr, 1)
    if little_endian or unit == 1 or len(data) % unit:
        return data
    return b"".join(data[i : i + unit][::-1] for i in range(0, len(data), unit))


def _binary_json(
    element: DataElement | RawDataElement,
    vr: str,
    path: str,
    bulk_data_uri: BulkDataUriFactory | None,
    threshold: int,
    top_level: bool,
    little_endian: bool,
) -> dict[str, Any]:
    result: dict[str, Any] = {"vr": vr}
    deferred = is_deferred(element)
    value = None if deferred else element.value
    length = element.length if deferred else len(value or b"")
    if not length:
        return result
    always_bulk = top_level and int(element.tag) in PIXEL_DATA_TAGS
    if bulk_data_uri is not None and (deferred or always_bulk or length > threshold):
        result["BulkDataURI"] = bulk_data_uri(path)
        return result
    if value is None:
        raise DicomJsonError(f"element {tag_key(element.tag)} was not read and no bulk data URI is available")
    if isinstance(value, (list, tuple)):  # encapsulated fragments held as a list
        value = b"".join(value)
    result["InlineBinary"] = base64.b64encode(little_endian_bytes(bytes(value), vr, little_endian)).decode("ascii")
    return result


def dataset_to_json(
    dataset: Dataset,
    *,
    bulk_data_uri: BulkDataUriFactory | None = None,
    threshold: int = DEFAULT_BULK_DATA_THRESHOLD,
    skip_groups: Iterable[int] = (0x0002,),
    little_endian: bool = True,
    _prefix: str = "",
) -> dict[str, Any]:
    """Convert a dataset to a DICOM JSON object.

    Parameters
    ----------
    dataset
        A pydicom dataset; values it holds deferred (``dcmread(..., defer_size=...)``)
        are not read when they become bulk data.
    bulk_data_uri
        Maps a bulk data path (``7FE00010``, ``00540016/0/00181072``) to a URI. When
        given, binary values (OB, OD, OF, OL, OV, OW, UN) longer than ``threshold``
        bytes, deferred ones and top-level pixel data become ``BulkDataURI``;
        otherwise every binary value is sent as ``InlineBinary``.
    threshold
        Size in bytes above which a binary value is bulk data.
    skip_groups
        Groups left out (by default the file meta information, group 0002).
    little_endian
        False when the dataset was read from a big endian file: inline binary values
        are then byte-swapped, as DICOM JSON binary is little endian.

    Returns
    -------
    dict
        Tag keys in ascending order mapped to attribute objects.
    """
    skipped = set(skip_groups)
    result: dict[str, Any] = {}
    for tag in sorted(dataset.keys()):
        if BaseTag(tag).group in skipped:
            continue
        raw = dataset.get_item(tag, keep_deferred=True)
        if raw is None:
            continue
        path = f"{_prefix}{tag_key(tag)}"
        vr = _element_vr(raw, dataset)
        try:
            result[tag_key(tag)] = _element_json(dataset, tag, raw, vr, path, bulk_data_uri, threshold, little_endian)
        except (ValueError, TypeError, KeyError) as exc:
            logger.warning("attribute %s could not be converted to JSON (%s); sent empty", path, exc)
            result[tag_key(tag)] = {"vr": vr}
    return result


def _element_json(
    dataset: Dataset,
    tag: int,
    raw: DataElement | RawDataElement,
    vr: str,
    path: str,
    bulk_data_uri: BulkDataUriFactory | None,
    threshold: int,
    little_endian: bool,
) -> dict[str, Any]:
    if vr in BINARY_VRS:
        return _binary_json(raw, vr, path, bulk_data_uri, threshold, "/" not in path, little_endian)
    if _plain_raw(raw, tag):
        # Converted without storing it back in the dataset: Dataset.__getitem__ does that too, at about twice the cost.
        value = convert_raw_data_element(raw, encoding=dataset.original_character_set or dataset._character_set, ds=dataset).value
        return attribute_json(vr, value)
    element = dataset[tag]  # converts a raw element (and reads a deferred non-binary value)
    if vr == "SQ":
        items = [
            dataset_to_json(
                item,
                bulk_data_uri=bulk_data_uri,
                threshold=threshold,
                skip_groups=(),
                little_endian=little_endian,
                _prefix=f"{path}/{i}/",
            )
            for i, item in enumerate(element.value or [])
        ]
        return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
    return attribute_json(vr, element.value)


def _plain_raw(raw: DataElement | RawDataElement, tag: int) -> bool:
    """A raw element read with an explicit, unambiguous VR other than SQ, not deferred: nothing but its value to convert."""
    return (
        isinstance(raw, RawDataElement)
        and raw.value is not None
        and raw.VR is not None
        and " or " not in raw.VR
        and raw.VR != "SQ"
        and tag != SPECIFIC_CHARACTER_SET_TAG
    )


def resolve_bulk_path(dataset: Dataset, path: str) -> DataElement:
    """Follow a bulk data path (``7FE00010``, ``00540016/0/00181072``) to its element.

    Raises
    ------
    DicomJsonError
        If the path is malformed or names an element or item the dataset does not have.
    """
    segments = [s for s in path.strip("/").split("/") if s]
    if not segments or len(segments) % 2 == 0:
        raise DicomJsonError(f"bulk data path {path!r} must be TAG or TAG/ITEM/TAG... (tags as 8 hex digits)")
    current: Dataset = dataset
    for position in range(0, len(segments), 2):
        tag = _path_tag(segments[position], path)
        if tag not in current:
            raise DicomJsonError(f"bulk data path {path!r}: no element {tag_key(tag)} in the instance")
        element = current[tag]
        if position == len(segments) - 1:
            return element
        current = _path_item(element, segments[position + 1], path)
    raise DicomJsonError(f"bulk data path {path!r} is empty")  # pragma: no cover - loop always returns


def _path_tag(segment: str, path: str) -> int:
    if not re.fullmatch(r"[0-9A-Fa-f]{8}", segment):
        raise DicomJsonError(f"bulk data path {path!r}: {segment!r} is not a tag of 8 hex digits")
    return int(segment, 16)


def _path_item(element: DataElement, segment: str, path: str) -> Dataset:
    if element.VR != "SQ":
        raise DicomJsonError(f"bulk data path {path!r}: element {tag_key(element.tag)} is not a sequence")
    if not segment.isdigit():
        raise DicomJsonError(f"bulk data path {path!r}: item index {segment!r} is not a number")
    items: Sequence[Dataset] = element.value or []
    index = int(segment)
    if index >= len(items):
        raise DicomJsonError(f"bulk data path {path!r}: sequence {tag_key(element.tag)} has {len(items)} item(s), no item {index}")
    return items[index]


# -- whole instances, as WADO-RS metadata -------------------------------------------


def read_metadata_header(source: Path | bytes, transfer_syntax: str, threshold: int = DEFAULT_BULK_DATA_THRESHOLD) -> Dataset:
    """Read an instance (a file or Part 10 bytes) with values above ``threshold`` bytes deferred (not loaded).

    Deflated files are read whole: a deferred value cannot be found again in the deflated stream.
    """
    defer = None if transfer_syntax == DeflatedExplicitVRLittleEndian else threshold
    return pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source, defer_size=defer)


def instance_metadata_document(dataset: Dataset, transfer_syntax: str, threshold: int = DEFAULT_BULK_DATA_THRESHOLD) -> bytes:
    """The WADO-RS metadata of one instance as compact UTF-8 JSON, each ``BulkDataURI`` its bare bulk data path.

    The instance's header in DICOM JSON (group 0002 left out) plus AvailableTransferSyntaxUID
    (0008,3002), keys in ascending order. Serve it through :func:`with_bulk_base`.
    """
    result = dataset_to_json(
        dataset,
        bulk_data_uri=lambda path: path,
        threshold=threshold,
        little_endian=transfer_syntax != ExplicitVRBigEndian,
    )
    return metadata_document_bytes(result, transfer_syntax)


def metadata_document_bytes(header: dict[str, Any], transfer_syntax: str) -> bytes:
    """The document of :func:`instance_metadata_document` from an instance's header in DICOM JSON (changed in place)."""
    header[tag_key(AVAILABLE_TRANSFER_SYNTAX_TAG)] = attribute_json("UI", transfer_syntax)
    _drop_unusable_window(header)
    return json.dumps(dict(sorted(header.items())), separators=(",", ":")).encode("utf-8")


def _drop_unusable_window(result: dict[str, Any]) -> None:
    """Leave out a VOI window whose width is below 1, with its centre and explanation.

    PS3.3 C.11.2.1.2: Window Width shall be >= 1. Some files carry 0 (3D-IRCADb's do), and OHIF draws
    such a series with inverted grey levels that no preset repairs; without the window it computes one
    from the pixels. The stored file keeps its values: only the metadata a viewer reads is repaired.
    """
    widths = result.get(WINDOW_WIDTH_KEY, {}).get("Value")
    if widths and any(not isinstance(width, (int, float)) or width < 1 for width in widths):
        for key in (WINDOW_CENTER_KEY, WINDOW_WIDTH_KEY, WINDOW_EXPLANATION_KEY):
            result.pop(key, None)


def with_bulk_base(document: bytes, instance_url: str) -> bytes:
    """A document of :func:`instance_metadata_document` with its bulk data paths made URLs under ``instance_url``/bulk/."""
    prefix = json.dumps(f"{instance_url}/bulk/")[1:-1].encode("utf-8")
    return document.replace(_BULK_URI_MEMBER, _BULK_URI_MEMBER + prefix)
