"""RadPilot's own archive: files on disk, indexed in SQLite or PostgreSQL.

Only this package reads and writes the archive's tables; other packages ask an
:class:`Archive` (its methods return plain values or detached rows).
"""

from radpilot.archive.store import Archive, ArchiveCounts, MetadataEntry, SeriesSummary, StoreOutcome, StoreResult

__all__ = ["Archive", "ArchiveCounts", "MetadataEntry", "SeriesSummary", "StoreOutcome", "StoreResult"]
