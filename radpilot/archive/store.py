"""The archive: atomic, idempotent storage of DICOM instances and their index.

A stored instance is written to a temporary file, fsynced, renamed into place
and indexed in one transaction before ``store`` returns; only then may a
network service acknowledge it.  How much is synced to disk is the
``durability`` setting (see :class:`Archive`).
"""

from __future__ import annotations

import enum
import errno
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import Connection, Engine, Select, bindparam, delete, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from radpilot.archive.models import Instance, InstanceMetadata, Patient, Series, StoreConflict, Study, utcnow
from radpilot.archive.query import Query, run_query
from radpilot.db import make_engine, make_session_factory, migrate
from radpilot.dicom import status as dimse_status
from radpilot.dicom.json_model import DEFAULT_BULK_DATA_THRESHOLD, instance_metadata_document
from radpilot.dicom.part10 import (
    DEFAULT_MAX_INFLATED_BYTES,
    MalformedDicomError,
    ParsedInstance,
    dataset_offset,
    decode_values,
    parse_part10,
)

logger = logging.getLogger(__name__)

DURABILITY_MODES = ("full", "file", "none")
OPEN_MARKER = ".open"  # present while a server has the archive open; left behind by an unclean stop
# Marks the file names of derived objects, so that recovery re-indexes them as derived.
DERIVED_MARK = ".derived"
ID_CACHE_SIZE = 4096
TOUCH_INTERVAL_S = 1.0
# Level 1 compresses a CT header's JSON about 4:1 at a fraction of the cost of building it.
METADATA_COMPRESSION_LEVEL = 1
# Rows per query when metadata of many instances is read: below every database's parameter limit.
METADATA_BATCH = 900
# Threads that write and sync files while the storing thread builds the instance's metadata: one per concurrent store.
WRITER_THREADS = 16


# Built once: building a statement with its values costs more than running it (SQLAlchemy coerces each value).
INSERT_INSTANCE = Instance.__table__.insert()
INSERT_METADATA = InstanceMetadata.__table__.insert()
SELECT_INSTANCE_BY_UID = select(Instance).where(Instance.sop_instance_uid == bindparam("uid"))
SELECT_INSTANCE_ID_BY_UID = select(Instance.__table__.c.id).where(Instance.__table__.c.sop_instance_uid == bindparam("uid"))


class StoreOutcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # identical content already stored: success, nothing written
    CONFLICT = "conflict"  # different content under a stored SOP Instance UID: refused
    MALFORMED = "malformed"  # not a usable DICOM instance: refused
    FAILED = "failed"  # storage error (disk, database): refused

    @property
    def accepted(self) -> bool:
        return self in (StoreOutcome.STORED, StoreOutcome.DUPLICATE)


@dataclass(frozen=True)
class StoreResult:
    """What happened to one received instance, with the DIMSE status to answer."""

    outcome: StoreOutcome
    sop_instance_uid: str = ""
    sop_class_uid: str = ""
    study_instance_uid: str = ""
    message: str = ""

    @property
    def status(self) -> int:
        return {
            StoreOutcome.STORED: dimse_status.SUCCESS,
            StoreOutcome.DUPLICATE: dimse_status.SUCCESS,
            StoreOutcome.CONFLICT: dimse_status.CONFLICT,
            StoreOutcome.MALFORMED: dimse_status.CANNOT_UNDERSTAND,
            StoreOutcome.FAILED: dimse_status.OUT_OF_RESOURCES,
        }[self.outcome]


@dataclass(frozen=True)
class SeriesSummary:
    """One stored series as the engine's routing sees it, without reading its files."""

    study_instance_uid: str
    series_instance_uid: str
    first_instance: Instance  # lowest instance number: the header routing reads
    instance_count: int
    frame_count: int  # frames of all instances (an instance without NumberOfFrames counts one)
    derived: bool  # RadPilot's own result series


@dataclass(frozen=True)
class MetadataEntry:
    """An instance to answer WADO-RS metadata for, with its series and its metadata kept at ingest (if any)."""

    instance: Instance
    series_instance_uid: str
    document: bytes | None  # uncompressed, see radpilot.dicom.json_model.instance_metadata_document
    bulk_data_threshold: int | None


@dataclass(frozen=True)
class ArchiveCounts:
    studies: int
    series: int
    instances: int


def _text(dataset: Dataset, keyword: str, limit: int) -> str:
    value = dataset.get(keyword)
    if value is None:
        return ""
    return str(value)[:limit]


def _int_or_none(dataset: Dataset, keyword: str) -> int | None:
    value = dataset.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


# DICOM's priority values (RequestedProcedurePriority, CS) and the retired StudyPriorityID's (HIGH, MED, LOW).
_PRIORITY_VALUES = {"STAT": "STAT", "HIGH": "HIGH", "ROUTINE": "ROUTINE", "MEDIUM": "MEDIUM", "MED": "MEDIUM", "LOW": "LOW"}


def study_priority(dataset: Dataset) -> str:
    """The study's priority as the requesting side stated it, or "" when the instance says nothing.

    Read in this order: Requested Procedure Priority (0040,1003) at the top level, then in each item of
    the Request Attributes Sequence (0040,0275), then the retired Study Priority ID (0032,000C), which
    older modalities still send. Values are normalised to STAT, HIGH, ROUTINE, MEDIUM or LOW; anything
    else counts as unstated.
    """
    candidates = [dataset.get("RequestedProcedurePriority")]
    for item in dataset.get("RequestAttributesSequence") or []:
        candidates.append(item.get("RequestedProcedurePriority"))
    candidates.append(dataset.get("StudyPriorityID"))
    for value in candidates:
        normalised = _PRIORITY_VALUES.get(str(value or "").strip().upper())
        if normalised:
            return normalised
    return ""


class Archive:
    """Files on disk plus their index in a relational database.

    Parameters
    ----------
    storage_dir
        Folder that holds the DICOM files (one per instance).
    database_url
        SQLAlchemy URL of the index (SQLite or PostgreSQL).
    durability
        ``"full"``: the file, its folder and the index are synced to disk before ``store``
        returns (three syncs per instance). ``"file"`` (default): the file is synced before
        it is renamed into place; the rename and the index commit are not waited for, and
        :meth:`recover` re-indexes, after an unclean stop, whatever a power loss may have
        cut off — an acknowledged instance survives either way, at one sync per instance.
        ``"none"``: nothing is synced (tests, scratch archives).
    max_inflated_bytes
        Largest size a Deflated Explicit VR Little Endian dataset may inflate to; a larger
        one is refused as malformed (a deflate bomb) without being inflated in full.
    min_free_bytes
        Free space the archive's disk must keep after an instance is written; below it an
        instance is refused as a storage failure (0xA700) before anything is written, so
        that the disk never fills up under the index and the files already stored.
    """

    def __init__(
        self,
        storage_dir: Path,
        database_url: str,
        *,
        durability: str = "file",
        max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
        min_free_bytes: int = 0,
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, got {durability!r}")
        self.storage_dir = Path(storage_dir)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = self.storage_dir / ".incoming"
        self.tmp_dir.mkdir(exist_ok=True)
        self.durability = durability
        self.max_inflated_bytes = max_inflated_bytes
        self.min_free_bytes = min_free_bytes
        self.engine: Engine = make_engine(database_url, sqlite_synchronous="FULL" if durability == "full" else "NORMAL")
        migrate(self.engine)
        self.sessions: sessionmaker = make_session_factory(self.engine)
        self._uid_locks: dict[str, threading.Lock] = {}
        self._study_ids: dict[str, int] = {}
        self._series_ids: dict[str, int] = {}
        self._touched: dict[int, datetime] = {}
        self._uid_locks_guard = threading.Lock()
        # The bulk data threshold of the metadata kept at ingest (WADO-RS serves it when it asks for the same).
        self.metadata_threshold = DEFAULT_BULK_DATA_THRESHOLD
        self._writers = ThreadPoolExecutor(max_workers=WRITER_THREADS, thread_name_prefix="archive-write")

    @classmethod
    def from_settings(cls, settings) -> Archive:  # noqa: ANN001 - avoid import cycle with config
        return cls(
            settings.storage_dir,
            settings.resolved_database_url,
            durability=settings.durability,
            max_inflated_bytes=settings.max_inflated_bytes,
            min_free_bytes=settings.min_free_bytes,
        )

    def close(self) -> None:
        self._writers.shutdown(wait=True)
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    # -- storing -----------------------------------------------------------------

    def store_file_bytes(
        self, data: bytes, *, source_ae_title: str = "", derived: bool = False, study_instance_uid: str | None = None
    ) -> StoreResult:
        """Validate and store one DICOM Part 10 file held in memory.

        ``derived`` marks RadPilot's own result objects: they are indexed as derived
        and never make their study due for routing again (the engine would otherwise
        route a study each time its own results arrive in it).

        ``study_instance_uid``, when given, is the only study the instance may belong to
        (STOW-RS to /studies/{study}): an instance of another study is refused as a
        conflict and nothing is written.

        Never raises for bad input: the result says what happened and why.
        """
        try:
            # Its values are decoded (and judged) by _store_parsed, while the file is being synced.
            parsed = parse_part10(data, max_inflated_bytes=self.max_inflated_bytes, defer_size=self.metadata_threshold, decode=False)
        except MalformedDicomError as exc:
            return self._malformed(exc, source_ae_title)
        if study_instance_uid is not None and str(parsed.dataset.StudyInstanceUID) != study_instance_uid:
            actual = str(parsed.dataset.StudyInstanceUID)
            return self._result(
                parsed,
                StoreOutcome.CONFLICT,
                f"instance belongs to study {actual}, not to study {study_instance_uid} named in the request URL; not stored",
            )
        lock = self._lock_for(parsed.sop_instance_uid)
        with lock:
            try:
                return self._store_parsed(parsed, data, source_ae_title, derived)
            except MalformedDicomError as exc:
                return self._malformed(exc, source_ae_title)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    # First words first: a C-STORE Error Comment keeps 64 characters.
                    message = f"archive disk full ({exc.strerror}); nothing stored, retry when space is freed"
                else:
                    message = f"storage error: {exc}"
                logger.error("could not write instance", extra={"sop_instance_uid": parsed.sop_instance_uid, "error": str(exc)})
                return self._result(parsed, StoreOutcome.FAILED, message)
            except SQLAlchemyError as exc:
                # A full disk under SQLite surfaces here ("database or disk is full"), as does a lost database.
                logger.error("could not index instance", extra={"sop_instance_uid": parsed.sop_instance_uid, "error": str(exc)})
                return self._result(parsed, StoreOutcome.FAILED, f"index error: {str(exc).splitlines()[0][:300]}")

    @staticmethod
    def _malformed(exc: MalformedDicomError, source_ae_title: str) -> StoreResult:
        logger.warning("refused malformed instance", extra={"reason": str(exc), "source_ae": source_ae_title})
        return StoreResult(StoreOutcome.MALFORMED, message=str(exc))

    def _lock_for(self, sop_instance_uid: str) -> threading.Lock:
        with self._uid_locks_guard:
            lock = self._uid_locks.get(sop_instance_uid)
            if lock is None:
                if len(self._uid_locks) > 10000:
                    self._uid_locks = {k: v for k, v in self._uid_locks.items() if v.locked()}
                lock = self._uid_locks[sop_instance_uid] = threading.Lock()
            return lock

    @staticmethod
    def _result(parsed: ParsedInstance, outcome: StoreOutcome, message: str = "") -> StoreResult:
        ds = parsed.dataset
        return StoreResult(
            outcome,
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            study_instance_uid=str(ds.StudyInstanceUID),
            message=message,
        )

    def _store_parsed(self, parsed: ParsedInstance, data: bytes, source_ae_title: str, derived: bool) -> StoreResult:
        ds = parsed.dataset
        # The hash leaves out the file meta group, so it does not depend on who wrote the meta.
        digest = hashlib.sha256(memoryview(data)[dataset_offset(data) :]).hexdigest()
        # Most instances are new: a plain connection answers that, and an ORM session is opened only for a resend.
        with self.engine.connect() as connection:
            known = connection.execute(SELECT_INSTANCE_ID_BY_UID, {"uid": parsed.sop_instance_uid}).first() is not None
        if known:
            with self.sessions() as session:
                existing = session.scalar(SELECT_INSTANCE_BY_UID, {"uid": parsed.sop_instance_uid})
                if existing is not None:
                    if parsed.metadata is None:
                        decode_values(ds)  # a malformed copy is refused as such, never taken for a resend
                    return self._resend(session, parsed, existing, digest, source_ae_title, derived)
        shortfall = self._free_space_shortfall(len(data))
        if shortfall:
            logger.error("archive disk below its free-space reserve", extra={"sop_instance_uid": parsed.sop_instance_uid})
            return self._result(parsed, StoreOutcome.FAILED, shortfall)
        # The digest in the name keeps two writers of different content from ever sharing a file.
        name = f"{parsed.sop_instance_uid}.{digest[:16]}{DERIVED_MARK if derived else ''}.dcm"
        relative = Path(str(ds.StudyInstanceUID)) / str(ds.SeriesInstanceUID) / name
        final_path = self.storage_dir / relative
        if parsed.metadata is not None:  # read from the bytes, values vouched for: nothing left to hide behind the sync
            metadata = zlib.compress(parsed.metadata, METADATA_COMPRESSION_LEVEL)
            self._write_atomically(final_path, data, derived)
        elif self.durability == "none":
            decode_values(ds)
            metadata = self._metadata_of(parsed)
            self._write_atomically(final_path, data, derived)
        else:
            # The sync releases the GIL: decoding the values and building the metadata meanwhile hides their cost.
            writing = self._writers.submit(self._write_atomically, final_path, data, derived)
            try:
                decode_values(ds)
            except MalformedDicomError:
                self._discard(writing, final_path)
                raise
            metadata = self._metadata_of(parsed)
            writing.result()
        try:
            self._index_with_retry(parsed, relative, len(data), digest, source_ae_title, derived, metadata)
        except IntegrityError:
            # Another process indexed the same SOP Instance UID first: judge this copy against that one.
            with self.sessions() as session:
                existing = session.scalar(select(Instance).where(Instance.sop_instance_uid == parsed.sop_instance_uid))
                if existing is None:
                    final_path.unlink(missing_ok=True)
                    raise
                if existing.file_path != relative.as_posix():
                    final_path.unlink(missing_ok=True)
                return self._resend(session, parsed, existing, digest, source_ae_title, derived)
        except Exception:
            final_path.unlink(missing_ok=True)
            raise
        logger.debug("stored instance", extra={"sop_instance_uid": parsed.sop_instance_uid, "source_ae": source_ae_title})
        return self._result(parsed, StoreOutcome.STORED)

    def _discard(self, writing: Future[None], final_path: Path) -> None:
        """Undo a write begun for an instance that turned out malformed: its file, and the folders made for it if empty."""
        try:
            writing.result()
        except OSError:
            return  # nothing was left: the write cleans up after itself
        final_path.unlink(missing_ok=True)
        _remove_empty([final_path.parent.parent, final_path.parent])

    def _free_space_shortfall(self, size: int) -> str:
        """Why ``size`` more bytes may not be written (the free-space reserve would be broken), or "" when they may."""
        if self.min_free_bytes <= 0:
            return ""
        free = shutil.disk_usage(self.storage_dir).free
        if free - size >= self.min_free_bytes:
            return ""
        return (
            f"archive disk full: below the min_free_bytes reserve ({free} bytes free, {size} needed, "
            f"{self.min_free_bytes} kept in reserve); nothing stored, retry when space is freed"
        )

    def _metadata_of(self, parsed: ParsedInstance) -> bytes | None:
        """The compressed WADO-RS metadata of an instance about to be stored; None if it cannot be built.

        Built from the parsed dataset, which holds large values deferred exactly as a file is
        read to serve its metadata, so that the document kept is the one that reading the file
        would give (tests/unit/test_metadata_cache.py compares them byte for byte). An instance
        whose metadata cannot be built is still stored; its metadata is then built from the
        file when it is asked for (and fails there with a logged reason).
        """
        try:
            document = instance_metadata_document(parsed.dataset, parsed.transfer_syntax_uid, self.metadata_threshold)
        except Exception as exc:  # noqa: BLE001 - metadata is a cache: the instance itself must still be stored
            logger.warning(
                "metadata of an instance not kept at ingest", extra={"sop_instance_uid": parsed.sop_instance_uid, "error": str(exc)}
            )
            return None
        return zlib.compress(document, METADATA_COMPRESSION_LEVEL)

    def _index_with_retry(
        self,
        parsed: ParsedInstance,
        relative: Path,
        size: int,
        digest: str,
        source_ae_title: str,
        derived: bool,
        metadata: bytes | None = None,
    ) -> None:
        """Index in one transaction; once more with fresh ids if a cached study or series vanished meanwhile."""
        for attempt in (1, 2):
            try:
                # A connection and statements built once: the index write is on every C-STORE's critical path.
                with self.engine.begin() as connection:
                    self._index(connection, parsed, relative, size, digest, source_ae_title, derived, metadata)
                return
            except IntegrityError:
                self._forget_ids()
                if attempt == 2:
                    raise
                with self.sessions() as session:
                    if session.scalar(select(Instance.id).where(Instance.sop_instance_uid == parsed.sop_instance_uid)):
                        raise
            except Exception:
                # a rolled-back touch must not hold back the next instance's (the detector watches it)
                self._touched.clear()
                raise

    def _resend(
        self,
        session: Session,
        parsed: ParsedInstance,
        existing: Instance,
        digest: str,
        source_ae_title: str,
        derived: bool,
    ) -> StoreResult:
        if existing.content_sha256 == digest:
            if derived and not existing.derived:
                # The engine stores again a result that recovery re-indexed without knowing it was derived.
                session.execute(update(Instance).where(Instance.id == existing.id).values(derived=True))
                session.commit()
            return self._result(parsed, StoreOutcome.DUPLICATE, "identical instance already stored")
        conflict = session.scalar(
            select(StoreConflict).where(StoreConflict.sop_instance_uid == parsed.sop_instance_uid, StoreConflict.received_sha256 == digest)
        )
        if conflict is None:
            session.add(
                StoreConflict(
                    sop_instance_uid=parsed.sop_instance_uid,
                    stored_sha256=existing.content_sha256,
                    received_sha256=digest,
                    source_ae_title=source_ae_title[:16],
                )
            )
        else:
            conflict.count += 1
            conflict.last_seen_at = utcnow()
        session.commit()
        message = (
            f"SOP Instance UID {parsed.sop_instance_uid} is already stored with different content; "
            "the first copy was kept and this one refused"
        )
        logger.warning("store conflict", extra={"sop_instance_uid": parsed.sop_instance_uid, "source_ae": source_ae_title})
        return self._result(parsed, StoreOutcome.CONFLICT, message)

    def _write_atomically(self, final_path: Path, data: bytes, derived: bool) -> None:
        # Study and series folders made for this file go again if it cannot be written (a full disk leaves nothing).
        made = [folder for folder in (final_path.parent.parent, final_path.parent) if not folder.exists()]
        final_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, tmp_name = _mkstemp(self.tmp_dir, f"{DERIVED_MARK if derived else ''}.part")
        except BaseException:
            _remove_empty(made)
            raise
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                if self.durability != "none":
                    handle.flush()
                    os.fdatasync(handle.fileno())
            # A file already at the final path holds this very content (the name carries its digest).
            os.replace(tmp_name, final_path)
            if self.durability == "full":
                _fsync_dir(final_path.parent)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            _remove_empty(made)
            raise

    def _index(
        self,
        connection: Connection,
        parsed: ParsedInstance,
        relative: Path,
        size: int,
        digest: str,
        source_ae_title: str,
        derived: bool,
        metadata: bytes | None = None,
    ) -> None:
        """Insert the instance row (and its metadata row), creating its patient, study and series rows on first sight.

        Core statements and a cache of known study and series ids keep this to one
        INSERT for most instances: the index write is on every C-STORE's critical path.
        """
        ds = parsed.dataset
        study_uid, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        study_id = self._study_id(connection, ds, study_uid)
        series_id = self._series_id(connection, ds, series_uid, study_id)
        now = utcnow()
        instance_id = connection.execute(
            INSERT_INSTANCE,
            {
                "sop_instance_uid": parsed.sop_instance_uid,
                "series_fk": series_id,
                "sop_class_uid": str(ds.SOPClassUID),
                "instance_number": _int_or_none(ds, "InstanceNumber"),
                "transfer_syntax_uid": parsed.transfer_syntax_uid,
                "rows": _int_or_none(ds, "Rows"),
                "columns": _int_or_none(ds, "Columns"),
                "number_of_frames": _int_or_none(ds, "NumberOfFrames"),
                "file_path": relative.as_posix(),
                "file_size": size,
                "content_sha256": digest,
                "source_ae_title": source_ae_title[:16],
                "derived": derived,
                "received_at": now,
            },
        ).inserted_primary_key[0]
        if metadata is not None:
            connection.execute(
                INSERT_METADATA, {"instance_fk": instance_id, "bulk_data_threshold": self.metadata_threshold, "document": metadata}
            )
        if not derived:
            self._touch(connection, study_id, series_id, now)

    def _touch(self, connection: Connection, study_id: int, series_id: int, now) -> None:  # noqa: ANN001 - datetime
        """Move the study's and series' updated_at (what the study-complete detector watches), at most once a second.

        Derived objects never move it: RadPilot's own results must not make their study due again.
        """
        last = self._touched.get(series_id)
        if last is not None and (now - last).total_seconds() < TOUCH_INTERVAL_S:
            return
        connection.execute(update(Study).where(Study.id == study_id).values(updated_at=now))
        connection.execute(update(Series).where(Series.id == series_id).values(updated_at=now))
        self._touched[series_id] = now

    def _study_id(self, connection: Connection, ds: Dataset, study_uid: str) -> int:
        cached = self._study_ids.get(study_uid)
        if cached is not None:
            return cached
        study_id = connection.scalar(select(Study.id).where(Study.study_instance_uid == study_uid))
        if study_id is None:
            patient_id = self._patient_id(connection, ds)
            study_id = connection.execute(
                insert(Study).values(
                    study_instance_uid=study_uid,
                    patient_fk=patient_id,
                    study_date=_text(ds, "StudyDate", 8),
                    study_time=_text(ds, "StudyTime", 16),
                    accession_number=_text(ds, "AccessionNumber", 64),
                    study_id=_text(ds, "StudyID", 16),
                    study_description=_text(ds, "StudyDescription", 128),
                    referring_physician_name=_text(ds, "ReferringPhysicianName", 324),
                    priority=study_priority(ds),
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
            ).inserted_primary_key[0]
            logger.info("new study", extra={"study_instance_uid": study_uid, "patient_id": _text(ds, "PatientID", 64)})
            # Not cached until this transaction commits: a rollback would leave a dangling id.
            return study_id
        self._remember(self._study_ids, study_uid, study_id)
        return study_id

    def _series_id(self, connection: Connection, ds: Dataset, series_uid: str, study_id: int) -> int:
        cached = self._series_ids.get(series_uid)
        if cached is not None:
            return cached
        series_id = connection.scalar(select(Series.id).where(Series.series_instance_uid == series_uid))
        if series_id is None:
            return connection.execute(
                insert(Series).values(
                    series_instance_uid=series_uid,
                    study_fk=study_id,
                    modality=_text(ds, "Modality", 16),
                    series_number=_int_or_none(ds, "SeriesNumber"),
                    series_description=_text(ds, "SeriesDescription", 128),
                    body_part_examined=_text(ds, "BodyPartExamined", 64),
                    series_date=_text(ds, "SeriesDate", 8),
                    series_time=_text(ds, "SeriesTime", 16),
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
            ).inserted_primary_key[0]
        self._remember(self._series_ids, series_uid, series_id)
        return series_id

    def _patient_id(self, connection: Connection, ds: Dataset) -> int:
        patient_key = _text(ds, "PatientID", 64)
        row_id = connection.scalar(select(Patient.id).where(Patient.patient_id == patient_key))
        if row_id is not None:
            return row_id
        return connection.execute(
            insert(Patient).values(
                patient_id=patient_key,
                patient_name=_text(ds, "PatientName", 324),
                patient_birth_date=_text(ds, "PatientBirthDate", 8),
                patient_sex=_text(ds, "PatientSex", 16),
            )
        ).inserted_primary_key[0]

    @staticmethod
    def _remember(cache: dict, key: str, value: int) -> None:
        if len(cache) >= ID_CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[key] = value

    def _forget_ids(self) -> None:
        self._study_ids.clear()
        self._series_ids.clear()
        self._touched.clear()

    # -- recovery ----------------------------------------------------------------------

    def mark_open(self) -> bool:
        """Note that a server has the archive open; return True if the last one did not stop cleanly."""
        marker = self.storage_dir / OPEN_MARKER
        unclean = marker.exists()
        marker.write_text(str(os.getpid()))
        return unclean

    def mark_closed(self) -> None:
        (self.storage_dir / OPEN_MARKER).unlink(missing_ok=True)

    def recover(self, *, full_scan: bool) -> dict[str, int]:
        """Repair what a crash or power loss may have left: call at server start, before any writer runs.

        Complete temporaries (synced before a rename that was lost) are stored; incomplete
        ones are removed. With ``full_scan`` (after an unclean stop), files in the storage
        tree that have no index row (their commit was lost) are indexed again.
        """
        report = {"temporaries_recovered": 0, "temporaries_removed": 0, "files_reindexed": 0}
        for leftover in sorted(self.tmp_dir.glob("*.part")):
            derived = leftover.name.endswith(f"{DERIVED_MARK}.part")
            result = self.store_file_bytes(leftover.read_bytes(), source_ae_title="RECOVERY", derived=derived)
            leftover.unlink(missing_ok=True)
            report["temporaries_recovered" if result.outcome.accepted else "temporaries_removed"] += 1
        if full_scan:
            with self.sessions() as session:
                indexed = set(session.scalars(select(Instance.file_path)))
            for path in self.storage_dir.rglob("*.dcm"):
                relative = path.relative_to(self.storage_dir).as_posix()
                if relative.startswith(".") or relative in indexed:
                    continue
                derived = path.name.endswith(f"{DERIVED_MARK}.dcm")
                result = self.store_file_bytes(path.read_bytes(), source_ae_title="RECOVERY", derived=derived)
                if result.outcome is StoreOutcome.STORED:
                    report["files_reindexed"] += 1
                elif not result.outcome.accepted:
                    path.unlink(missing_ok=True)
        if any(report.values()):
            logger.warning("archive recovered after an unclean stop", extra=report)
        return report

    # -- reading -----------------------------------------------------------------

    def path_of(self, instance: Instance) -> Path:
        return self.storage_dir / instance.file_path

    def read_bytes(self, instance: Instance) -> bytes:
        return self.path_of(instance).read_bytes()

    def instance_count(self) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count(Instance.id))) or 0

    def counts(self) -> ArchiveCounts:
        """How many studies, series and instances the archive holds."""
        with self.sessions() as session:
            return ArchiveCounts(
                studies=session.scalar(select(func.count(Study.id))) or 0,
                series=session.scalar(select(func.count(Series.id))) or 0,
                instances=session.scalar(select(func.count(Instance.id))) or 0,
            )

    def studies_changed_between(self, after: datetime, until: datetime) -> list[str]:
        """Studies whose last instance that is not derived arrived in (after, until], oldest change first.

        A study that holds only derived objects has had no such arrival and is never listed.
        """
        holds_source_instance = exists(
            select(Instance.id)
            .join(Series, Instance.series_fk == Series.id)
            .where(Series.study_fk == Study.id, Instance.derived.is_(False))
        )
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Study.study_instance_uid)
                    .where(Study.updated_at > after, Study.updated_at <= until, holds_source_instance)
                    .order_by(Study.updated_at)
                )
            )

    def series_of_study(self, study_uid: str) -> list[str]:
        """Series Instance UIDs of a study, in series number order."""
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Series.series_instance_uid)
                    .join(Study, Series.study_fk == Study.id)
                    .where(Study.study_instance_uid == study_uid)
                    .order_by(Series.series_number, Series.id)
                )
            )

    def series_summary(self, series_uid: str) -> SeriesSummary:
        """The study, first instance, counts and derivation of a stored series.

        Raises
        ------
        KeyError
            When the archive holds no instance of ``series_uid``.
        """
        with self.sessions() as session:
            row = session.execute(
                select(Series.id, Study.study_instance_uid)
                .join(Study, Series.study_fk == Study.id)
                .where(Series.series_instance_uid == series_uid)
            ).first()
            first = None
            if row is not None:
                first = session.scalar(
                    select(Instance).where(Instance.series_fk == row.id).order_by(Instance.instance_number, Instance.id).limit(1)
                )
            if first is None:
                raise KeyError(f"series {series_uid} is not in the archive")
            count, frames, derived = session.execute(
                select(
                    func.count(Instance.id),
                    func.sum(func.coalesce(Instance.number_of_frames, 1)),
                    func.count(Instance.id).filter(Instance.derived.is_(True)),
                ).where(Instance.series_fk == row.id)
            ).one()
        return SeriesSummary(
            study_instance_uid=row.study_instance_uid,
            series_instance_uid=series_uid,
            first_instance=first,
            instance_count=int(count),
            frame_count=int(frames),
            derived=derived > 0,
        )

    def series_is_derived(self, series_uid: str) -> bool:
        """True when the series holds RadPilot's own result objects (stored as derived)."""
        with self.sessions() as session:
            return bool(
                session.scalar(
                    select(
                        exists()
                        .where(Instance.series_fk == Series.id, Instance.derived.is_(True))
                        .where(Series.series_instance_uid == series_uid)
                    )
                )
            )

    def instance_inputs(self, series_uid: str) -> list[tuple[str, str]]:
        """``(SOP Instance UID, content sha256)`` of every instance of a series: what a job's key is made of."""
        with self.sessions() as session:
            rows = session.execute(
                select(Instance.sop_instance_uid, Instance.content_sha256)
                .join(Series, Instance.series_fk == Series.id)
                .where(Series.series_instance_uid == series_uid)
            ).all()
        return [(sop_uid, sha256) for sop_uid, sha256 in rows]

    def instances_by_uid(self, sop_instance_uids: list[str]) -> list[Instance]:
        """The stored instances among ``sop_instance_uids`` (those no longer stored are left out)."""
        if not sop_instance_uids:
            return []
        with self.sessions() as session:
            return list(session.scalars(select(Instance).where(Instance.sop_instance_uid.in_(sop_instance_uids))))

    def instances_of(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> list[Instance]:
        """Instances of a study (optionally one series or one instance), in series then instance order."""
        with self.sessions() as session:
            return list(session.scalars(_instances_query((Instance,), study_uid, series_uid, sop_uid)))

    def metadata_entries(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> list[MetadataEntry]:
        """Instances of a study (optionally one series or one instance) with the metadata kept for them, as :meth:`instances_of` orders them.

        One query for the rows and one per batch of instances for their metadata.
        """
        with self.sessions() as session:
            rows = session.execute(_instances_query((Instance, Series.series_instance_uid), study_uid, series_uid, sop_uid)).all()
            kept: dict[int, tuple[int, bytes]] = {}
            ids = [instance.id for instance, _ in rows]
            for start in range(0, len(ids), METADATA_BATCH):
                batch = ids[start : start + METADATA_BATCH]
                for instance_fk, threshold, document in session.execute(
                    select(InstanceMetadata.instance_fk, InstanceMetadata.bulk_data_threshold, InstanceMetadata.document).where(
                        InstanceMetadata.instance_fk.in_(batch)
                    )
                ):
                    kept[instance_fk] = (threshold, document)
        entries = []
        for instance, series in rows:
            threshold, document = kept.get(instance.id, (None, None))
            entries.append(MetadataEntry(instance, series, zlib.decompress(document) if document is not None else None, threshold))
        return entries

    def keep_metadata(self, documents: dict[int, bytes], bulk_data_threshold: int) -> int:
        """Keep the metadata documents (by instance row id) of instances stored before metadata was kept at ingest.

        One transaction for all. Returns how many were kept: none when another request kept
        some of them first or an instance is gone meanwhile (they are then read again next time).
        """
        if not documents:
            return 0
        rows = [
            {
                "instance_fk": instance_id,
                "bulk_data_threshold": bulk_data_threshold,
                "document": zlib.compress(document, METADATA_COMPRESSION_LEVEL),
            }
            for instance_id, document in documents.items()
        ]
        try:
            with self.sessions() as session, session.begin():
                session.execute(insert(InstanceMetadata), rows)
        except IntegrityError:
            logger.info("metadata of some instances was kept meanwhile by another request", extra={"instances": len(rows)})
            return 0
        return len(rows)

    def find(self, query: Query) -> list[dict[str, Any]]:
        """Run a C-FIND / QIDO-RS query (see :mod:`radpilot.archive.query`)."""
        with self.sessions() as session:
            return run_query(session, query)

    def delete_instances(self, sop_instance_uids: list[str]) -> int:
        """Remove instances (index rows first, then files); empty series and studies go too."""
        if not sop_instance_uids:
            return 0
        with self.sessions() as session, session.begin():
            instances = list(session.scalars(select(Instance).where(Instance.sop_instance_uid.in_(sop_instance_uids))))
            paths = [self.path_of(i) for i in instances]
            series_ids = {i.series_fk for i in instances}
            # Explicitly, not by ON DELETE CASCADE alone: a SQLite connection may have foreign keys off.
            session.execute(delete(InstanceMetadata).where(InstanceMetadata.instance_fk.in_([i.id for i in instances])))
            for instance in instances:
                session.delete(instance)
            session.flush()
            for series_id in series_ids:
                if not session.scalar(select(func.count(Instance.id)).where(Instance.series_fk == series_id)):
                    session.delete(session.get(Series, series_id))
        self._forget_ids()
        for path in paths:
            path.unlink(missing_ok=True)
        return len(paths)

    def conflicts(self) -> list[StoreConflict]:
        with self.sessions() as session:
            return list(session.scalars(select(StoreConflict).order_by(StoreConflict.id)))


def _mkstemp(directory: Path, suffix: str) -> tuple[int, str]:
    return tempfile.mkstemp(dir=directory, suffix=suffix)


def _remove_empty(folders: list[Path]) -> None:
    """Remove these folders, innermost first, where they are still empty (another store may have filled one meanwhile)."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _instances_query(columns: tuple[Any, ...], study_uid: str, series_uid: str | None, sop_uid: str | None) -> Select[Any]:
    """``columns`` of the instances of a study (optionally one series or one instance), in series then instance order."""
    query = (
        select(*columns)
        .join(Series, Instance.series_fk == Series.id)
        .join(Study, Series.study_fk == Study.id)
        .where(Study.study_instance_uid == study_uid)
    )
    if series_uid is not None:
        query = query.where(Series.series_instance_uid == series_uid)
    if sop_uid is not None:
        query = query.where(Instance.sop_instance_uid == sop_uid)
    return query.order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
