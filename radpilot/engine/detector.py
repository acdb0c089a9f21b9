"""Study-complete detection: a study is ready when no instance has arrived for a quiet period.

The detector keeps a watermark: every pass it routes the studies whose last
change lies between the previous watermark and ``now - quiet period``.  Routing
submits jobs idempotently, so routing a study twice (after a restart) never
duplicates work, while a series that grew gets a new job whose results
supersede the old ones.  RadPilot's own results are stored as derived objects,
which are no change to their study: they never make it due again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from radpilot.archive import Archive
from radpilot.db import utcnow

logger = logging.getLogger(__name__)

RESCAN_ON_START = timedelta(days=1)


@dataclass(frozen=True)
class DetectorStatus:
    """How far study-complete routing has got: what a PACS administrator watches to see it keep up.

    ``routed_up_to`` is the watermark: every study that last changed at or before it has been
    routed (a study whose routing raised is logged and not tried again until it changes).
    None until the first pass has finished.
    """

    running: bool
    quiet_period_s: float
    routed_up_to: datetime | None
    last_pass_at: datetime | None
    last_pass_studies: int


class StudyCompleteDetector:
    """Calls ``on_complete(study_uid)`` for each study that has been quiet for ``quiet_period_s``."""

    def __init__(self, archive: Archive, on_complete: Callable[[str], None], *, quiet_period_s: float, poll_s: float = 1.0) -> None:
        self.archive = archive
        self.on_complete = on_complete
        self.quiet = timedelta(seconds=quiet_period_s)
        self.poll_s = poll_s
        self.watermark: datetime = utcnow() - RESCAN_ON_START
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_pass: tuple[datetime, int] | None = None

    def due_studies(self, now: datetime | None = None) -> tuple[list[str], datetime]:
        """Studies last changed in (watermark, now - quiet], and the new watermark."""
        horizon = (now or utcnow()) - self.quiet
        return self.archive.studies_changed_between(self.watermark, horizon), horizon

    def poll_once(self, now: datetime | None = None) -> list[str]:
        uids, horizon = self.due_studies(now)
        for uid in uids:
            try:
                self.on_complete(uid)
            except Exception:  # noqa: BLE001 - one bad study must not stop the others
                logger.exception("routing a complete study failed", extra={"study_instance_uid": uid})
        self.watermark = max(self.watermark, horizon)
        self._last_pass = (now or utcnow(), len(uids))
        return uids

    def status(self) -> DetectorStatus:
        last_pass = self._last_pass  # one read: the loop thread replaces the tuple whole
        return DetectorStatus(
            running=self._thread is not None and self._thread.is_alive(),
            quiet_period_s=self.quiet.total_seconds(),
            routed_up_to=self.watermark if last_pass is not None else None,
            last_pass_at=last_pass[0] if last_pass is not None else None,
            last_pass_studies=last_pass[1] if last_pass is not None else 0,
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="radpilot-study-complete", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - keep detecting; the error is logged
                logger.exception("study-complete detector error")
