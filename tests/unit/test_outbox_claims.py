"""Several front ends share one outbox table: each delivery is sent by one of them, once.

Two :class:`Outbox` objects over one database stand for two ``radpilot serve`` processes
(the topology test in tests/integration/test_scale_out_topology.py runs real ones).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from radpilot.archive import Archive
from radpilot.db import utcnow
from radpilot.engine.outbox import Outbox
from radpilot.engine.outbox_models import Delivery
from tests.factories import make_ct_series, to_part10_bytes


@pytest.fixture
def archive(tmp_path: Path):  # noqa: ANN201 - Archive generator
    store = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.sqlite3'}", durability="none")
    yield store
    store.close()


class RecordingSender:
    """Takes every delivery slowly (so two front ends overlap) and remembers who sent what."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[str, ...]]] = []
        self.lock = threading.Lock()

    def __call__(self, destination: str, files: list) -> None:
        time.sleep(0.05)
        with self.lock:
            self.sent.append((destination, tuple(sorted(str(f) for f in files))))


def queue_deliveries(archive: Archive, outbox: Outbox, count: int) -> None:
    for ds in make_ct_series(count):
        outbox.enqueue("pacs", [archive.store_file_bytes(to_part10_bytes(ds)).sop_instance_uid])


def test_two_front_ends_working_one_outbox_send_each_delivery_once(archive: Archive) -> None:
    sender = RecordingSender()
    front_ends = [Outbox(archive, sender), Outbox(archive, sender)]
    queue_deliveries(archive, front_ends[0], 12)
    start = threading.Barrier(2)

    def work(outbox: Outbox) -> None:
        start.wait()
        outbox.run_due()

    threads = [threading.Thread(target=work, args=(outbox,)) for outbox in front_ends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(sender.sent) == 12
    assert len(set(sender.sent)) == 12, "a delivery was sent twice"
    assert front_ends[0].pending() == []


def test_a_claim_held_by_a_dead_front_end_blocks_until_its_lease_runs_out(archive: Archive) -> None:
    sender = RecordingSender()
    survivor = Outbox(archive, sender)
    queue_deliveries(archive, survivor, 1)
    with survivor.sessions() as session, session.begin():
        session.execute(update(Delivery).values(claimed_by="dead-host:1:0", claimed_until=utcnow() + timedelta(minutes=5)))

    assert survivor.run_due() == 0 and sender.sent == []

    with survivor.sessions() as session, session.begin():
        session.execute(update(Delivery).values(claimed_until=utcnow() - timedelta(seconds=1)))
    assert survivor.run_due() == 1 and len(sender.sent) == 1
    [row] = survivor.all()
    assert (row.state, row.claimed_by, row.claimed_until) == ("done", survivor.owner, None)
