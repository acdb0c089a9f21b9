"""The audit trail forwarded to a real rsyslog over TLS (RFC 5425 framing, RFC 5424 messages) on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import build_context
from sqlalchemy import Engine
from typer.testing import CliRunner

from radpilot.cli import app
from radpilot.db import make_engine, migrate
from radpilot.security.audit import record
from radpilot.security.syslog_forward import SyslogTlsForwarder, forward_pending
from tests.fixtures.tls import Pki, make_pki
from tests.helpers import free_port, require_or_skip, wait_for

pytestmark = pytest.mark.integration

GTLS_MODULE = Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so")
RSYSLOG_CONFIG = """
global(workDirectory="{work}" DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="{ca}" DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="raw" type="string" string="%rawmsg%\\n")
action(type="omfile" file="{received}" template="raw")
"""


class Collector:
    def __init__(self, root: Path, pki: Pki) -> None:
        rsyslogd = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
        if not Path(rsyslogd).exists() or not GTLS_MODULE.exists():
            require_or_skip("rsyslog with TLS (Debian packages rsyslog, rsyslog-gnutls) is not installed")
        self.port = free_port()
        self.received = root / "received.log"
        config = root / "rsyslog.conf"
        config.write_text(
            RSYSLOG_CONFIG.format(
                work=root, ca=pki.ca_cert, cert=pki.server_cert, key=pki.server_key, port=self.port, received=self.received
            )
        )
        self.process = subprocess.Popen(
            [rsyslogd, "-n", "-f", str(config), "-i", str(root / "rsyslogd.pid")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_for(lambda: self._listening(), 20.0, "rsyslogd listening")

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"rsyslogd exited: {self.process.stderr.read().decode(errors='replace') if self.process.stderr else ''}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def lines(self) -> list[str]:
        return self.received.read_text(encoding="utf-8").splitlines() if self.received.exists() else []

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def collector(tmp_path: Path, pki: Pki) -> Iterator[Collector]:
    root = tmp_path / "rsyslog"
    root.mkdir()
    peer = Collector(root, pki)
    yield peer
    peer.stop()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    migrate(engine)
    yield engine
    engine.dispose()


def test_audit_events_reach_rsyslog_over_tls_once_each(engine: Engine, collector: Collector, pki: Pki) -> None:
    record(engine, who="CT01", action="dimse.store", target="1.2.3", source="CT01@127.0.0.1:4000")
    record(engine, who="alice", action="auth.login.failed", target="alice", outcome="failure", source="127.0.0.1")
    forwarder = SyslogTlsForwarder("127.0.0.1", collector.port, pki.ca_cert)
    assert forward_pending(engine, forwarder, "RADPILOT") == 2
    assert forward_pending(engine, forwarder, "RADPILOT") == 0  # nothing sent twice
    record(engine, who="bob", action="web.page", target="/ui/worklist", source="127.0.0.1")
    assert forward_pending(engine, forwarder, "RADPILOT") == 1
    wait_for(lambda: len(collector.lines()) >= 3, 15.0, "three messages in rsyslog's file")
    lines = collector.lines()
    assert len(lines) == 3
    assert lines[0].startswith("<85>1 ") and lines[1].startswith("<84>1 ")
    messages = [ET.fromstring(line[line.index("<AuditMessage>") :]) for line in lines]
    assert [m.find("EventIdentification/EventID").get("csd-code") for m in messages] == ["110104", "110114", "110110"]


def test_a_collector_with_an_untrusted_certificate_gets_nothing_and_nothing_is_marked_sent(
    engine: Engine, collector: Collector, pki: Pki, tmp_path: Path
) -> None:
    record(engine, who="CT01", action="dimse.store", target="1.2.3")
    wrong = SyslogTlsForwarder("127.0.0.1", collector.port, pki.other_ca_cert)
    with pytest.raises(OSError):
        forward_pending(engine, wrong, "RADPILOT")
    time.sleep(0.5)
    assert collector.lines() == []
    # The CLI reads the collector from the settings and sends the row that was not delivered.
    env = {
        "RADPILOT_DATA_DIR": str(tmp_path),
        "RADPILOT_AUDIT_SYSLOG_HOST": "127.0.0.1",
        "RADPILOT_AUDIT_SYSLOG_PORT": str(collector.port),
        "RADPILOT_AUDIT_SYSLOG_CA_FILE": str(pki.ca_cert),
    }
    result = CliRunner().invoke(app, ["audit", "forward"], env=env)
    assert result.exit_code == 0, result.output
    assert '"forwarded": 1' in result.stdout
    wait_for(lambda: len(collector.lines()) == 1, 15.0, "the row in rsyslog's file")


def test_serve_forwards_dimse_audit_rows_to_the_collector(radpilot_factory, collector: Collector, pki: Pki) -> None:  # noqa: ANN001
    from pynetdicom import AE  # noqa: PLC0415

    node = radpilot_factory(
        audit_syslog_host="127.0.0.1",
        audit_syslog_port=collector.port,
        audit_syslog_ca_file=pki.ca_cert,
        audit_forward_interval_s=0.2,
    )
    assoc = AE(ae_title="ECHOSCU").associate("127.0.0.1", node.dicom_port, contexts=[build_context("1.2.840.10008.1.1")])
    assert assoc.is_established
    assoc.release()
    record(node.archive.engine, who="alice", action="auth.login", target="alice", source="127.0.0.1")
    wait_for(lambda: any("110114" in line for line in collector.lines()), 15.0, "the login row forwarded by the running server")
