"""What a researcher sees instead of a patient's identity: a pseudonym from a server secret.

The researcher role (issue 16) sees de-identified data only, on every route: no patient
name, ID or birth date. Each patient gets one pseudonym, an HMAC-SHA256 of their patient
ID (of their name when the ID is empty) under a secret kept on the server, so the same
patient reads the same in the study list, QIDO-RS, WADO-RS metadata and the Part 10 files,
and a study's images stay together, while no one without the secret can go back.

This is the view filter of the reading room, not the PS3.15 de-identifier of a research
export: it replaces the patient identity attributes below and leaves the rest as stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

SECRET_BYTES = 32
PSEUDONYM_PREFIX = "ANON-"
# Patient identity attributes (PS3.15 Table E.1-1 actions on the Patient module), by keyword and tag.
REPLACED = {"PatientName": "00100010", "PatientID": "00100020"}
REMOVED = {
    "PatientBirthDate": "00100030",
    "PatientBirthTime": "00100032",
    "IssuerOfPatientID": "00100021",
    "OtherPatientIDs": "00101000",
    "OtherPatientNames": "00101001",
    "OtherPatientIDsSequence": "00101002",
    "PatientBirthName": "00101005",
    "PatientAddress": "00101040",
    "PatientMotherBirthName": "00101060",
    "MedicalRecordLocator": "00101090",
    "PatientTelephoneNumbers": "00102154",
    "PatientComments": "00104000",
}
IDENTITY_TAGS = frozenset(REPLACED.values()) | frozenset(REMOVED.values())
# Query keys (QIDO-RS and /api) a researcher may not match on: matching would confirm an identity.
IDENTITY_QUERY_KEYS = frozenset(REPLACED) | frozenset(REMOVED) | IDENTITY_TAGS | {"patient_name", "patient_id", "patient_birth_date"}
# The reading room's own JSON names for the same values.
API_KEYS = ("patient_name", "patient_name_display", "patient_id", "patient_birth_date", "patient_birth_name")


def load_or_create_secret(path: Path) -> bytes:
    """The pseudonym secret in ``path``; a new random one is written (mode 0600) when the file does not exist."""
    if path.is_file():
        secret = path.read_bytes()
        if len(secret) < 16:
            raise ValueError(f"the pseudonym secret in {path} is shorter than 16 bytes")
        return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(SECRET_BYTES)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(secret)
    logger.info("pseudonym secret created", extra={"path": str(path)})
    return secret


class Pseudonymizer:
    """Replaces patient identities with pseudonyms derived from one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def code(self, patient_id: str, patient_name: str = "") -> str:
        basis = patient_id.strip() or f"name:{patient_name.strip()}"
        digest = hmac.new(self._secret, basis.encode("utf-8"), hashlib.sha256).digest()
        return base64.b32encode(digest[:10]).decode("ascii")[:12]

    def patient_id(self, patient_id: str, patient_name: str = "") -> str:
        return PSEUDONYM_PREFIX + self.code(patient_id, patient_name)

    def patient_name(self, patient_id: str, patient_name: str = "") -> str:
        return f"ANON^{self.code(patient_id, patient_name)}"

    # -- DICOM datasets and Part 10 files ------------------------------------------

    def dataset(self, ds: Dataset) -> Dataset:
        """``ds`` with its patient identity replaced, in place (nested sequences included)."""
        real_id, real_name = str(ds.get("PatientID", "") or ""), str(ds.get("PatientName", "") or "")
        self._clean(ds, real_id, real_name)
        return ds

    def _clean(self, ds: Dataset, real_id: str, real_name: str) -> None:
        if "PatientName" in ds:
            ds.PatientName = self.patient_name(real_id, real_name)
        if "PatientID" in ds:
            ds.PatientID = self.patient_id(real_id, real_name)
        for keyword in REMOVED:
            if keyword in ds:
                del ds[keyword]
        for element in ds:
            if element.VR == "SQ":
                for item in element.value:
                    self._clean(item, real_id, real_name)

    def part10(self, data: bytes) -> bytes:
        """A Part 10 file with its patient identity replaced; everything else (pixels included) as stored."""
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        self.dataset(ds)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=False)
        return out.getvalue()

    # -- DICOM JSON (QIDO-RS, WADO-RS metadata) -------------------------------------

    def dicom_json(self, value: Any) -> Any:
        """A DICOM JSON dataset or array of them, with patient identities replaced (in place; returned)."""
        if isinstance(value, list):
            for item in value:
                self.dicom_json(item)
        elif isinstance(value, dict) and _looks_like_dicom_json(value):
            real_id = _first_text(value.get(REPLACED["PatientID"]))
            real_name = _first_text(value.get(REPLACED["PatientName"]))
            self._clean_json(value, real_id, real_name)
        return value

    def _clean_json(self, obj: dict[str, Any], real_id: str, real_name: str) -> None:
        for tag, attribute in list(obj.items()):
            if not isinstance(attribute, dict):
                continue
            if tag == REPLACED["PatientName"] and attribute.get("Value"):
                attribute["Value"] = [{"Alphabetic": self.patient_name(real_id, real_name)}]
            elif tag == REPLACED["PatientID"] and attribute.get("Value"):
                attribute["Value"] = [self.patient_id(real_id, real_name)]
            elif tag in IDENTITY_TAGS:
                attribute.pop("Value", None)
                attribute.pop("BulkDataURI", None)
                attribute.pop("InlineBinary", None)
            elif attribute.get("vr") == "SQ":
                for item in attribute.get("Value") or []:
                    if isinstance(item, dict):
                        self._clean_json(item, real_id, real_name)

    # -- the reading room's JSON (/api) ----------------------------------------------

    def api_json(self, value: Any) -> Any:
        """Any JSON value with the reading room's patient fields and embedded DICOM JSON pseudonymized (in place; returned)."""
        if isinstance(value, list):
            for item in value:
                self.api_json(item)
            return value
        if not isinstance(value, dict):
            return value
        if _looks_like_dicom_json(value):
            return self.dicom_json(value)
        if any(key in value for key in API_KEYS):
            real_id, real_name = str(value.get("patient_id") or ""), str(value.get("patient_name") or "")
            for key in API_KEYS:
                if key not in value:
                    continue
                if key == "patient_id":
                    value[key] = self.patient_id(real_id, real_name)
                elif key in ("patient_name", "patient_name_display"):
                    value[key] = self.patient_name(real_id, real_name) if key == "patient_name" else self.patient_id(real_id, real_name)
                else:
                    value[key] = ""
        for item in value.values():
            if isinstance(item, dict | list):
                self.api_json(item)
        return value


def _looks_like_dicom_json(obj: dict[str, Any]) -> bool:
    return bool(obj) and all(len(k) == 8 and isinstance(v, dict) and "vr" in v for k, v in list(obj.items())[:3])


def _first_text(attribute: Any) -> str:
    if not isinstance(attribute, dict):
        return ""
    values = attribute.get("Value") or []
    if not values:
        return ""
    first = values[0]
    if isinstance(first, dict):
        return str(first.get("Alphabetic") or "")
    return str(first)
