"""Forward the audit trail to a syslog collector over TLS (RFC 5424 messages, RFC 5425 octet-counted framing).

Forwarding reads the chain, never the caller's transaction: :func:`forward_pending`
sends every row after the head's ``forwarded_seq`` and advances it only once the
collector took them, so a collector that is down loses nothing (rows are sent again).
"""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from radpilot.security.atna import syslog_message
from radpilot.security.audit import AuditChainHead, AuditEvent

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyslogTlsForwarder:
    """A TLS syslog collector: its address, the CA that signed its certificate, optionally our client certificate."""

    host: str
    port: int
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    timeout_s: float = 10.0

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return context

    def send(self, messages: list[bytes]) -> None:
        """Send the messages on one TLS connection, each framed as ``MSG-LEN SP SYSLOG-MSG``."""
        with socket.create_connection((self.host, self.port), timeout=self.timeout_s) as raw:
            with self.context().wrap_socket(raw, server_hostname=self.host) as tls:
                tls.sendall(b"".join(str(len(m)).encode("ascii") + b" " + m for m in messages))
                try:
                    tls.unwrap()  # close_notify: the collector sees a clean end, not a truncated stream
                except (ssl.SSLError, OSError):
                    pass  # the collector closed without answering close_notify; what was sent is sent


def forward_pending(engine: Engine, forwarder: SyslogTlsForwarder, audit_source_id: str, batch: int = 500) -> int:
    """Send the rows not yet forwarded; returns how many were sent. Network errors propagate with nothing marked sent."""
    sent = 0
    while True:
        with Session(engine) as session:
            head = session.get(AuditChainHead, 1)
            if head is None:
                raise RuntimeError("the audit chain head row is missing: the database was not migrated (revision 0011)")
            rows = list(
                session.scalars(select(AuditEvent).where(AuditEvent.seq > head.forwarded_seq).order_by(AuditEvent.seq).limit(batch))
            )
            if not rows:
                return sent
            forwarder.send([syslog_message(row, audit_source_id) for row in rows])
        with Session(engine) as session, session.begin():
            session.execute(update(AuditChainHead).where(AuditChainHead.id == 1).values(forwarded_seq=rows[-1].seq))
        sent += len(rows)
        logger.info(
            "audit events forwarded",
            extra={"count": len(rows), "last_seq": rows[-1].seq, "collector": f"{forwarder.host}:{forwarder.port}"},
        )
