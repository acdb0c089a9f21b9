"""The outbox: results waiting to be delivered to their destinations, retried until taken.

A delivery is one result set (a list of stored SOP Instance UIDs) for one
destination node, or one message (an HL7 v2 message for an MLLP peer, a FHIR resource
for a FHIR server) carried in the row itself.  It is written in the same database as the archive, so a
restart, a crash or a destination that is down for an hour loses nothing: the
deliverer retries with capped exponential backoff (the jobs' :class:`RetryPolicy`)
until the destination takes every instance. A delivery with ``max_attempts`` stops
after that many attempts and is marked ``failed`` with its last error, for a person to see.

Several front ends (``radpilot serve`` processes sharing one database) each run an
outbox. Before sending, a front end claims the delivery with one conditional UPDATE
(``claimed_by``, ``claimed_until``): exactly one claim succeeds, so a result set is
never sent by two front ends at once, and the claim of a front end that died runs
out after :data:`CLAIM_LEASE` and the delivery is taken by another.

A delivery row is added in one way only, :func:`add_delivery`: by :meth:`Outbox.enqueue`
in its own transaction, and by the pipeline in the transaction that records a job's
result set.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from radpilot.archive import Archive
from radpilot.db import make_session_factory, utcnow
from radpilot.engine.jobs import RetryPolicy
from radpilot.engine.outbox_models import Delivery
from radpilot.pacs import scu
from radpilot.pacs.fhir_client import FhirDeliveryError, post_resource
from radpilot.pacs.mllp import MllpError, send_message
from radpilot.pacs.stow_client import stow

logger = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    """A destination did not take every instance; the message says which and why."""


DELIVERY_RETRY = RetryPolicy(base_s=5.0, factor=2.0, cap_s=300.0)
"""5, 10, 20 ... seconds between attempts of a delivery, never more than five minutes."""

CLAIM_LEASE = timedelta(minutes=10)
"""How long one front end's claim on a delivery holds: longer than any single send should take."""


def add_delivery(
    session: Session,
    destination: str,
    sop_instance_uids: Sequence[str],
    *,
    job_id: int | None = None,
    reference: str = "",
    max_attempts: int | None = None,
) -> Delivery:
    """Add a pending delivery of ``sop_instance_uids`` to ``destination`` in the caller's transaction."""
    delivery = Delivery(
        destination=destination,
        sop_instance_uids=json.dumps(list(sop_instance_uids)),
        job_id=job_id,
        kind="dicom",
        reference=reference,
        max_attempts=max_attempts,
    )
    session.add(delivery)
    return delivery


MESSAGE_KINDS = ("hl7", "fhir")


def add_message_delivery(
    session: Session, kind: str, destination: str, payload: bytes, *, reference: str = "", max_attempts: int | None = None
) -> Delivery:
    """Add a pending delivery of one message (``kind`` 'hl7' or 'fhir') to ``destination`` in the caller's transaction."""
    if kind not in MESSAGE_KINDS:
        raise ValueError(f"unknown message kind {kind!r}: expected one of {', '.join(MESSAGE_KINDS)}")
    if not payload:
        raise ValueError(f"a {kind} delivery to {destination!r} needs a non-empty payload")
    delivery = Delivery(
        destination=destination, sop_instance_uids="[]", kind=kind, payload=payload, reference=reference, max_attempts=max_attempts
    )
    session.add(delivery)
    return delivery


# A sender takes (destination name, list of file paths) and raises DeliveryError unless all were taken.
Sender = Callable[[str, list], None]
# A message sender takes (destination name, payload bytes) and raises DeliveryError unless the peer took it.
MessageSender = Callable[[str, bytes], None]


class Outbox:
    """Persisted deliveries and the loop that works them off."""

    def __init__(
        self,
        archive: Archive,
        sender: Sender,
        *,
        backoff: RetryPolicy = DELIVERY_RETRY,
        message_senders: dict[str, MessageSender] | None = None,
        claim_lease: timedelta = CLAIM_LEASE,
    ) -> None:
        self.archive = archive
        self.sender = sender
        self.message_senders = dict(message_senders or {})
        self.backoff = backoff
        self.claim_lease = claim_lease
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.sessions = make_session_factory(archive.engine)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def enqueue(self, destination: str, sop_instance_uids: list[str], *, job_id: int | None = None) -> int:
        with self.sessions() as session, session.begin():
            delivery = add_delivery(session, destination, sop_instance_uids, job_id=job_id)
            session.flush()
            delivery_id = delivery.id
        logger.info("delivery queued", extra={"delivery": delivery_id, "destination": destination, "instances": len(sop_instance_uids)})
        self._wake.set()
        return delivery_id

    def pending(self) -> list[Delivery]:
        with self.sessions() as session:
            return list(session.scalars(select(Delivery).where(Delivery.state == "pending").order_by(Delivery.id)))

    def all(self, limit: int = 200) -> list[Delivery]:
        with self.sessions() as session:
            return list(session.scalars(select(Delivery).order_by(Delivery.id.desc()).limit(limit)))

    def run_due(self, now: datetime | None = None) -> int:
        """Attempt every delivery that is due; return how many were completed."""
        now = now or utcnow()
        with self.sessions() as session:
            due = list(
                session.scalars(
                    select(Delivery)
                    .where(Delivery.state == "pending", Delivery.next_attempt_at <= now, _claim_free(now))
                    .order_by(Delivery.id)
                )
            )
        return sum(1 for delivery in due if self._claim(delivery.id) and self._attempt(delivery))

    def _claim(self, delivery_id: int) -> bool:
        """Take ``delivery_id`` for this outbox unless another front end holds a live claim on it."""
        now = utcnow()
        with self.sessions() as session, session.begin():
            taken = session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.state == "pending", _claim_free(now))
                .values(claimed_by=self.owner, claimed_until=now + self.claim_lease)
                .execution_options(synchronize_session=False)
            ).rowcount
        return taken == 1

    def _files_of(self, uids: list[str]) -> list:
        instances = self.archive.instances_by_uid(uids)
        missing = set(uids) - {i.sop_instance_uid for i in instances}
        if missing:
            raise DeliveryError(f"{len(missing)} instance(s) are no longer in the archive: {sorted(missing)[:3]}")
        return [self.archive.path_of(i) for i in instances]

    def _send(self, delivery: Delivery) -> None:
        if delivery.kind in (None, "dicom"):
            self.sender(delivery.destination, self._files_of(delivery.uids))
            return
        message_sender = self.message_senders.get(delivery.kind)
        if message_sender is None:
            raise DeliveryError(f"this RadPilot has no sender for {delivery.kind!r} deliveries")
        message_sender(delivery.destination, delivery.payload or b"")

    def _attempt(self, delivery: Delivery) -> bool:
        try:
            self._send(delivery)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
            self._reschedule(delivery.id, str(exc))
            return False
        with self.sessions() as session, session.begin():
            row = session.get(Delivery, delivery.id)
            row.state, row.delivered_at, row.attempts, row.last_error = "done", utcnow(), row.attempts + 1, ""
            row.claimed_until = None
        logger.info("delivered", extra={"delivery": delivery.id, "destination": delivery.destination})
        return True

    def _reschedule(self, delivery_id: int, error: str) -> None:
        with self.sessions() as session, session.begin():
            row = session.get(Delivery, delivery_id)
            row.attempts += 1
            row.last_error = error[:2000]
            delay = self.backoff.delay_s(row.attempts)
            row.next_attempt_at = utcnow() + timedelta(seconds=delay)
            row.claimed_until = None
            attempts = row.attempts
            gave_up = row.max_attempts is not None and attempts >= row.max_attempts
            if gave_up:
                row.state = "failed"
        if gave_up:
            logger.error(
                "delivery failed; no more attempts",
                extra={"delivery": delivery_id, "attempts": attempts, "error": error[:300]},
            )
            return
        logger.warning(
            "delivery failed; will retry",
            extra={"delivery": delivery_id, "attempt": attempts, "retry_in_s": round(delay, 1), "error": error[:300]},
        )

    def start(self, poll_s: float = 2.0) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(poll_s,), name="radpilot-outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the loop; a delivery it cannot finish within ``timeout_s`` stays pending and is sent again later."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def _loop(self, poll_s: float) -> None:
        while not self._stop.is_set():
            try:
                self.run_due()
            except Exception:  # noqa: BLE001 - keep the deliverer alive; the error is logged
                logger.exception("outbox loop error")
            self._wake.wait(poll_s)
            self._wake.clear()


def _claim_free(now: datetime):  # noqa: ANN202 - a SQLAlchemy boolean clause
    """No front end holds a live claim on the delivery."""
    return or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now)


def make_sender(settings) -> Sender:  # noqa: ANN001 - radpilot.config.Settings
    """A sender that delivers to configured nodes by C-STORE, or by STOW-RS for ``transport: dicomweb``."""

    def send(destination: str, files: list) -> None:
        try:
            node = settings.node(destination)
        except KeyError as exc:
            raise DeliveryError(str(exc)) from exc
        if node.transport == "dicomweb":
            stow(node.dicomweb_url, files)
            return
        report = scu.send(settings, node, files)
        if not report.ok or report.skipped:
            problems = "; ".join(f"{r.path.name}: {r.message or r.outcome}" for r in report.results if not r.ok)
            raise DeliveryError(f"{node.name} did not take {report.failed + report.skipped} instance(s): {problems}")

    return send


def make_message_senders(settings) -> dict[str, MessageSender]:  # noqa: ANN001 - radpilot.config.Settings
    """Senders of HL7 v2 messages (MLLP, to ``settings.hl7_destinations`` by name) and FHIR resources (``fhir_base_url``)."""

    def send_hl7(destination: str, payload: bytes) -> None:
        peer = next((d for d in settings.hl7_destinations if d.name == destination), None)
        if peer is None:
            known = ", ".join(d.name for d in settings.hl7_destinations) or "none"
            raise DeliveryError(f"unknown HL7 destination {destination!r}; configured: {known}")
        try:
            send_message(peer.host, peer.port, payload, timeout_s=settings.message_timeout_s)
        except MllpError as exc:
            raise DeliveryError(str(exc)) from exc

    def send_fhir(destination: str, payload: bytes) -> None:
        if not settings.fhir_base_url:
            raise DeliveryError("no FHIR server is configured (RADPILOT_FHIR_BASE_URL)")
        try:
            post_resource(settings.fhir_base_url, payload, timeout_s=settings.message_timeout_s)
        except FhirDeliveryError as exc:
            raise DeliveryError(str(exc)) from exc

    return {"hl7": send_hl7, "fhir": send_fhir}
