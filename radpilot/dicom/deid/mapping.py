"""The secret of a de-identification run and its re-identification mapping, stored encrypted.

One Fernet key (from a file or the environment, never from the command line nor a log)
does two jobs: it encrypts the mapping file and, through a derived HMAC key, makes the
pseudonyms and new UIDs, so the same input gives the same output in every run that
uses the same key (one patient keeps one pseudonym across batches).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

KEY_ENV = "RADPILOT_DEID_KEY"


class DeidKeyError(ValueError):
    """The de-identification key is missing or unusable; the message says which and where."""


@dataclass(frozen=True)
class DeidKey:
    """A Fernet key; ``hmac_key`` is derived from it for pseudonyms and UIDs."""

    fernet_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        try:
            Fernet(self.fernet_key)
        except (ValueError, TypeError) as exc:
            raise DeidKeyError("the de-identification key is not a Fernet key (32 url-safe base64-encoded bytes)") from exc

    @property
    def hmac_key(self) -> bytes:
        # A separate key for the HMAC: the encryption key itself never touches the pseudonyms.
        return hashlib.sha256(b"radpilot-deid-hmac\x00" + self.fernet_key).digest()

    def fernet(self) -> Fernet:
        return Fernet(self.fernet_key)

    def __repr__(self) -> str:  # never print the key
        return "DeidKey(<secret>)"

    @classmethod
    def generate(cls) -> DeidKey:
        return cls(Fernet.generate_key())

    @classmethod
    def from_file(cls, path: Path) -> DeidKey:
        try:
            text = path.read_bytes().strip()
        except OSError as exc:
            raise DeidKeyError(f"cannot read the de-identification key file {path}: {exc.strerror}") from exc
        return cls(text)

    @classmethod
    def from_settings(cls, key_file: Path | None) -> DeidKey:
        """From ``key_file`` if given, else from the environment variable RADPILOT_DEID_KEY."""
        if key_file is not None:
            return cls.from_file(key_file)
        value = os.environ.get(KEY_ENV, "").strip()
        if not value:
            raise DeidKeyError(f"no de-identification key: give --key-file (or RADPILOT_DEID_KEY_FILE) or set {KEY_ENV}")
        return cls(value.encode("ascii"))


def write_new_key(path: Path) -> None:
    """Write a new key to ``path`` (readable by its owner only); refuses to overwrite one."""
    key = DeidKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.fernet_key + b"\n")


@dataclass
class Mapping:
    """Pseudonym -> original identity, new UID -> original UID, and staff pseudonym (a reviewer in exported labels) -> name."""

    patients: dict[str, dict[str, Any]] = field(default_factory=dict)
    uids: dict[str, str] = field(default_factory=dict)
    persons: dict[str, str] = field(default_factory=dict)

    def merge(self, other: Mapping) -> None:
        self.patients.update(other.patients)
        self.uids.update(other.uids)
        self.persons.update(other.persons)

    def to_json(self) -> dict[str, Any]:
        return {"patients": self.patients, "uids": self.uids, "persons": self.persons}


class MappingStore:
    """The encrypted mapping file, kept outside the de-identified output."""

    def __init__(self, path: Path, key: DeidKey) -> None:
        self.path = path
        self.key = key

    def check_outside(self, output_dir: Path) -> None:
        """Refuse a mapping file inside the output: whoever receives the output must not receive the way back."""
        mapping = self.path.resolve()
        out = output_dir.resolve()
        if mapping == out or out in mapping.parents:
            raise ValueError(f"the re-identification mapping {self.path} must be stored outside the output folder {output_dir}")

    def load(self) -> Mapping:
        if not self.path.exists():
            return Mapping()
        try:
            data = json.loads(self.key.fernet().decrypt(self.path.read_bytes()))
        except InvalidToken as exc:
            raise DeidKeyError(f"the mapping {self.path} cannot be decrypted with this key (another key, or the file was altered)") from exc
        return Mapping(dict(data.get("patients", {})), dict(data.get("uids", {})), dict(data.get("persons", {})))

    def save(self, mapping: Mapping) -> None:
        """Merge ``mapping`` into the stored one and write it atomically (nothing stored is lost)."""
        stored = self.load()
        stored.merge(mapping)
        token = self.key.fernet().encrypt(json.dumps(stored.to_json(), sort_keys=True).encode("utf-8"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".mapping-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(token)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
