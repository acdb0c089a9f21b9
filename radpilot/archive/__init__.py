"""RadPilot's own archive: files on disk, indexed in SQLite or PostgreSQL."""

from radpilot.archive.store import Archive, StoreOutcome, StoreResult

__all__ = ["Archive", "StoreOutcome", "StoreResult"]
