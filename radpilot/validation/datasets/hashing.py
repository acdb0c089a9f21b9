"""Content hashes of dataset folders, and the folder's own SHA256SUMS list when it has one.

Content hash: ``sha256:`` + the SHA-256 of the lines ``<relative path>\\0<file
sha256>\\n`` of every non-hidden file under the root, sorted by path. Any added,
removed, renamed or changed file changes it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from radpilot.validation.datasets.errors import DatasetError

HASH_PREFIX = "sha256:"


@dataclass(frozen=True)
class ContentHash:
    value: str
    file_count: int
    total_bytes: int
    files: dict[str, str]  # relative path -> sha256


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_files(root: Path) -> list[Path]:
    """Every non-hidden regular file under ``root`` (hidden folders skipped), sorted by relative path."""
    root = Path(root)
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith("."):
                out.append(Path(dirpath) / name)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def compute_content_hash(root: Path) -> ContentHash:
    """The content hash of a dataset folder (see the module docstring for the definition)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    digest = hashlib.sha256()
    files: dict[str, str] = {}
    total = 0
    for path in dataset_files(root):
        rel = path.relative_to(root).as_posix()
        sha = _file_sha256(path)
        files[rel] = sha
        total += path.stat().st_size
        digest.update(f"{rel}\0{sha}\n".encode())
    return ContentHash(HASH_PREFIX + digest.hexdigest(), len(files), total, files)


def sha256sums_differences(root: Path, files: dict[str, str]) -> list[str]:
    """Files that differ from a SHA256SUMS list in the folder (if it has one)."""
    sums = root / "SHA256SUMS"
    if not sums.is_file():
        return []
    out: list[str] = []
    listed: set[str] = set()
    for line in sums.read_text().splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2:
            continue
        sha, rel = parts[0].lower(), parts[1].lstrip("*")
        listed.add(rel)
        actual = files.get(rel)
        if actual is None:
            out.append(f"missing: {rel}")
        elif actual != sha:
            out.append(f"changed: {rel}")
    for rel in sorted(set(files) - listed - {"SHA256SUMS"}):
        out.append(f"not in SHA256SUMS: {rel}")
    return out
