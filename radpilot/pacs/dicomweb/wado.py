"""WADO-RS (PS3.18 10.4) over the archive: instances, metadata with bulk data URIs, bulk data.

Instances are sent as stored (a file read chunk by chunk while the answer is sent)
or, when Explicit VR Little Endian is asked for, transcoded from Implicit VR and
Deflated files. Metadata is the whole header of each instance in DICOM JSON; binary
values above the bulk data threshold and all pixel data become ``BulkDataURI``
values under ``{instance URL}/bulk/``. Frames are in :mod:`.frames`.

What cannot be found raises :class:`ResourceNotFoundError`; an indexed instance
whose file is gone raises :class:`MissingFileError`.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from radpilot.archive.models import Instance
from radpilot.archive.store import Archive, MetadataEntry
from radpilot.dicom.json_model import (
    DEFAULT_BULK_DATA_THRESHOLD,
    DicomJsonError,
    instance_metadata_document,
    little_endian_bytes,
    read_metadata_header,
    resolve_bulk_path,
    with_bulk_base,
)
from radpilot.pacs.dicomweb.media import (
    APPLICATION_DICOM,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
)
from radpilot.pacs.multipart import file_chunks

logger = logging.getLogger(__name__)


class ResourceNotFoundError(LookupError):
    """A study, series, instance or bulk data value that is not in the archive.

    Parameters
    ----------
    message
        What is missing.
    parameter
        The part of the request that names it, if one does (``path`` for a bulk data path).
    """

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.parameter = parameter


class MissingFileError(RuntimeError):
    """Indexed instances whose files are not in the archive's storage."""


# -- finding instances ---------------------------------------------------------------


def find_instances(archive: Archive, study: str, series: str | None = None, sop: str | None = None) -> list[Instance]:
    """The instances of a study, series or instance, in series then instance order.

    Raises
    ------
    ResourceNotFoundError
        Naming the first of study, series and instance that the archive does not hold.
    """
    instances = archive.instances_of(study, series, sop)
    if instances:
        return instances
    if not archive.instances_of(study):
        raise ResourceNotFoundError(f"study {study} is not in the archive")
    if series is not None and not archive.instances_of(study, series):
        raise ResourceNotFoundError(f"series {series} is not in study {study}")
    raise ResourceNotFoundError(f"instance {sop} is not in series {series} of study {study}")


def require_files(archive: Archive, instances: list[Instance]) -> None:
    """Check that every instance's file is in storage before an answer starts streaming.

    Raises
    ------
    MissingFileError
        When one or more are not.
    """
    missing = [i.sop_instance_uid for i in instances if not archive.path_of(i).is_file()]
    if missing:
        logger.error("indexed instances have no file", extra={"sop_instance_uids": missing[:10]})
        raise MissingFileError(f"{len(missing)} indexed instance(s) have no file in the archive, e.g. {missing[0]}")


def instance_url(base: str, instance: Instance, study: str, series: str) -> str:
    return f"{base}/studies/{study}/series/{series}/instances/{instance.sop_instance_uid}"


# -- instances ---------------------------------------------------------------------


def transcode_to_explicit_le(path: Path) -> bytes:
    """Rewrite an Implicit VR or Deflated Little Endian file as Explicit VR Little Endian."""
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class LazyChunks:
    """An iterable whose chunks are produced only when the part is being sent."""

    def __init__(self, produce: Callable[[], Iterator[bytes]]) -> None:
        self._produce = produce

    def __iter__(self) -> Iterator[bytes]:
        return self._produce()


def instance_part(archive: Archive, instance: Instance, syntax: str | None) -> tuple[str, Iterable[bytes]]:
    """(content type, chunks) of one instance, as stored (``syntax`` None or the stored one) or transcoded."""
    path = archive.path_of(instance)
    if syntax is None or syntax == instance.transfer_syntax_uid:
        return f"{APPLICATION_DICOM}; transfer-syntax={instance.transfer_syntax_uid}", LazyChunks(lambda: file_chunks(path))
    return f"{APPLICATION_DICOM}; transfer-syntax={syntax}", LazyChunks(lambda: iter([transcode_to_explicit_le(path)]))


# -- metadata ------------------------------------------------------------------------

# Metadata is sent in chunks of about this many bytes: one write per instance costs more than the copy.
METADATA_CHUNK_BYTES = 256 * 1024


def read_header(path: Path, transfer_syntax: str, threshold: int = DEFAULT_BULK_DATA_THRESHOLD) -> Dataset:
    """Read an instance with values above ``threshold`` bytes deferred (not loaded).

    Deflated files are read whole: a deferred value cannot be found again in the deflated stream.
    """
    return read_metadata_header(path, transfer_syntax, threshold)


def find_metadata(archive: Archive, study: str, series: str | None = None, sop: str | None = None) -> list[MetadataEntry]:
    """The instances of a study, series or instance with the metadata the archive keeps for them.

    Raises
    ------
    ResourceNotFoundError
        Naming the first of study, series and instance that the archive does not hold.
    """
    entries = archive.metadata_entries(study, series, sop)
    if not entries:
        find_instances(archive, study, series, sop)  # raises, naming what is missing
    return entries


def metadata_document(archive: Archive, entry: MetadataEntry, threshold: int, to_keep: dict[int, bytes] | None = None) -> bytes:
    """The metadata of one instance with bare bulk data paths: as kept at ingest, or read from its file.

    An instance stored before metadata was kept at ingest is read from its file; when
    ``to_keep`` is given and the archive keeps metadata at this threshold, what was read
    is added to it (by instance row id) for the caller to keep, so the next request does
    not read the file again.
    """
    if entry.document is not None and entry.bulk_data_threshold == threshold:
        return entry.document
    instance = entry.instance
    dataset = read_header(archive.path_of(instance), instance.transfer_syntax_uid, threshold)
    document = instance_metadata_document(dataset, instance.transfer_syntax_uid, threshold)
    if to_keep is not None and entry.document is None and threshold == archive.metadata_threshold:
        to_keep[instance.id] = document
    return document


def instance_metadata(archive: Archive, entry: MetadataEntry, url: str, threshold: int) -> dict[str, Any]:
    """The DICOM JSON metadata of one instance, bulk data as URIs under its ``url``/bulk/."""
    return json.loads(with_bulk_base(metadata_document(archive, entry, threshold), url))


def metadata_stream(archive: Archive, entries: list[MetadataEntry], urls: list[str], threshold: int) -> Iterator[bytes]:
    """The JSON array of the instances' metadata, kept documents joined as bytes (an unreadable instance is left out).

    Metadata read from files (instances stored before it was kept at ingest) is kept in one
    transaction once the answer is complete.
    """
    buffer = bytearray(b"[")
    first = True
    to_keep: dict[int, bytes] = {}
    for entry, url in zip(entries, urls, strict=True):
        try:
            document = with_bulk_base(metadata_document(archive, entry, threshold, to_keep), url)
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not cut the whole answer short
            logger.error(
                "metadata of an instance could not be read",
                extra={"sop_instance_uid": entry.instance.sop_instance_uid, "error": str(exc)},
            )
            continue
        if not first:
            buffer += b","
        buffer += document
        first = False
        if len(buffer) >= METADATA_CHUNK_BYTES:
            yield bytes(buffer)
            buffer.clear()
    buffer += b"]"
    yield bytes(buffer)
    archive.keep_metadata(to_keep, threshold)


# -- bulk data -----------------------------------------------------------------------


def bulk_value(path: Path, transfer_syntax: str, bulk_path: str) -> bytes:
    """The bytes of the bulk data value at ``bulk_path`` (as in a BulkDataURI) of the file at ``path``.

    Little endian, whatever the file's byte order.

    Raises
    ------
    ResourceNotFoundError
        When the path names no value of the instance.
    """
    dataset = pydicom.dcmread(path)
    try:
        element = resolve_bulk_path(dataset, bulk_path)
    except DicomJsonError as exc:
        raise ResourceNotFoundError(str(exc), "path") from None
    value = element.value
    if isinstance(value, (list, tuple)):
        value = b"".join(bytes(v) for v in value)
    data = bytes(value or b"")
    return little_endian_bytes(data, element.VR, transfer_syntax != EXPLICIT_VR_BIG_ENDIAN)
