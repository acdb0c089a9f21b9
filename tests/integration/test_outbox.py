"""Forwarding through the outbox: results reach a real DICOM node, and a node that is down loses nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from radpilot.config import RemoteNode
from radpilot.db import utcnow
from radpilot.engine.jobs import RetryPolicy
from radpilot.engine.outbox import Outbox, make_sender
from tests.factories import make_ct_series, to_part10_bytes
from tests.fixtures.radpilot import orthanc_node
from tests.helpers import free_port

pytestmark = pytest.mark.integration


def _store_series(node, count: int = 3) -> list[str]:
    uids = []
    for ds in make_ct_series(count):
        result = node.archive.store_file_bytes(to_part10_bytes(ds))
        uids.append(result.sop_instance_uid)
    return uids


def test_delivery_by_c_store_reaches_orthanc(radpilot_factory, orthanc, clean_orthanc) -> None:
    node = radpilot_factory(nodes=[orthanc_node(orthanc)])
    uids = _store_series(node)
    outbox = Outbox(node.archive, make_sender(node.settings))
    outbox.enqueue("orthanc", uids)
    assert outbox.run_due() == 1
    assert orthanc.instance_count() == 3
    assert outbox.pending() == []


def test_delivery_by_stow_rs_reaches_orthanc(radpilot_factory, orthanc, clean_orthanc) -> None:
    destination = orthanc_node(orthanc).model_copy(update={"transport": "dicomweb"})
    node = radpilot_factory(nodes=[destination])
    uids = _store_series(node, 2)
    outbox = Outbox(node.archive, make_sender(node.settings))
    outbox.enqueue("orthanc", uids)
    assert outbox.run_due() == 1
    assert orthanc.instance_count() == 2


def test_destination_down_is_retried_with_backoff_and_loses_nothing(radpilot_factory) -> None:
    """The destination is unreachable for an 'hour' of retries, then comes up and gets everything."""
    down_port = free_port()
    destination = RemoteNode(name="later", ae_title="LATER", host="127.0.0.1", port=down_port)
    source = radpilot_factory(nodes=[destination])
    uids = _store_series(source, 4)
    outbox = Outbox(source.archive, make_sender(source.settings), backoff=RetryPolicy(base_s=5, factor=2, cap_s=300))
    outbox.enqueue("later", uids)

    now = utcnow()
    for _ in range(15):  # 15 attempts at up to 5-minute intervals: over an hour of outage
        [pending] = outbox.pending()
        now = max(now, pending.next_attempt_at.replace(tzinfo=now.tzinfo)) + timedelta(seconds=1)
        assert outbox.run_due(now) == 0
    [pending] = outbox.pending()
    assert pending.attempts == 15
    assert "LATER" in pending.last_error or "later" in pending.last_error
    assert (pending.next_attempt_at.replace(tzinfo=now.tzinfo) - now) <= timedelta(seconds=301)

    receiver = radpilot_factory(ae_title="LATER", dicom_port=down_port)
    assert outbox.run_due(now + timedelta(minutes=6)) == 1
    assert receiver.archive.instance_count() == 4
    assert outbox.pending() == []


def test_unknown_destination_is_kept_with_a_clear_error(radpilot) -> None:
    uids = _store_series(radpilot, 1)
    outbox = Outbox(radpilot.archive, make_sender(radpilot.settings))
    outbox.enqueue("nowhere", uids)
    assert outbox.run_due() == 0
    [pending] = outbox.pending()
    assert "unknown DICOM node 'nowhere'" in pending.last_error
