"""SQLAlchemy models of the archive index: patient, study, series, instance.

The files themselves live in the blob store; the index holds the attributes
that C-FIND and QIDO-RS match on, and where each file is.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, LargeBinary, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from radpilot.db import Base, utcnow


class Patient(Base):
    __tablename__ = "patient"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    patient_name: Mapped[str] = mapped_column(String(324), default="", index=True)
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    __tablename__ = "study"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    patient_fk: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_id: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(128), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    # The requesting side's priority as the modality sent it (STAT, HIGH, ROUTINE, MEDIUM, LOW or empty):
    # see radpilot.archive.store.study_priority for the attributes read.
    priority: Mapped[str] = mapped_column(String(16), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # When an instance that is not derived last arrived: what the study-complete detector watches.
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    study_fk: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(String(128), default="")
    body_part_examined: Mapped[str] = mapped_column(String(64), default="")
    series_date: Mapped[str] = mapped_column(String(8), default="")
    series_time: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    series_fk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    number_of_frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    file_path: Mapped[str] = mapped_column(String(512))
    file_size: Mapped[int] = mapped_column(BigInteger)
    content_sha256: Mapped[str] = mapped_column(String(64))
    source_ae_title: Mapped[str] = mapped_column(String(16), default="")
    # RadPilot's own result object (stored by the engine): it never makes its study or series due for routing.
    derived: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)

    series: Mapped[Series] = relationship(back_populates="instances")


class InstanceMetadata(Base):
    """The WADO-RS metadata of an instance, written when it is stored, so that metadata is served without reading files.

    ``document`` is zlib-compressed DICOM JSON whose BulkDataURI values are bare bulk data
    paths (see :func:`radpilot.dicom.json_model.instance_metadata_document`), built with
    ``bulk_data_threshold``. A table of its own keeps these kilobytes out of every query
    that loads instance rows. Instances stored before it have no row until first served.
    """

    __tablename__ = "instance_metadata"

    instance_fk: Mapped[int] = mapped_column(ForeignKey("instance.id", ondelete="CASCADE"), primary_key=True)
    bulk_data_threshold: Mapped[int] = mapped_column(Integer)
    document: Mapped[bytes] = mapped_column(LargeBinary)


class StoreConflict(Base):
    """A re-sent SOP Instance UID whose content differed from the stored copy (which was kept)."""

    __tablename__ = "store_conflict"
    __table_args__ = (UniqueConstraint("sop_instance_uid", "received_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    stored_sha256: Mapped[str] = mapped_column(String(64))
    received_sha256: Mapped[str] = mapped_column(String(64))
    source_ae_title: Mapped[str] = mapped_column(String(16), default="")
    count: Mapped[int] = mapped_column(Integer, default=1)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
