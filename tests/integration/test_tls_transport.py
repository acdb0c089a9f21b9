"""Transport security: DICOM TLS on a second port (BCP 195, optional mutual TLS) and HTTPS, checked with dcmtk and curl."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from radpilot.archive.query import Query, QueryLevel
from tests.factories import make_ct_dataset
from tests.fixtures.dcmtk import DcmtkTools
from tests.fixtures.tls import Pki, make_pki
from tests.helpers import free_port, require_or_skip

pytestmark = pytest.mark.integration


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def _tls_node(radpilot_factory, pki: Pki, **extra):  # noqa: ANN001, ANN202
    return radpilot_factory(
        dicom_tls_port=free_port(), tls_cert_file=pki.server_cert, tls_key_file=pki.server_key, tls_ca_file=pki.ca_cert, **extra
    )


def _echo(dcmtk: DcmtkTools, port: int, *tls: str | Path) -> subprocess.CompletedProcess[str]:
    return dcmtk.run("echoscu", *tls, "-aec", "RADPILOT", "-to", "10", "-ta", "10", "127.0.0.1", str(port), timeout=30)


def test_dicom_tls_port_accepts_tls_and_refuses_plain_associations(radpilot_factory, dcmtk: DcmtkTools, pki: Pki, tmp_path: Path) -> None:  # noqa: ANN001
    node = _tls_node(radpilot_factory, pki)
    tls_port = node.server.dimse.tls_port
    client = ("+tls", pki.client_key, pki.client_cert, "+cf", pki.ca_cert)
    ok = _echo(dcmtk, tls_port, *client)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert _echo(dcmtk, tls_port, "+tla", "+cf", pki.ca_cert).returncode == 0  # no client certificate: allowed without mutual TLS
    plain = _echo(dcmtk, tls_port)
    assert plain.returncode != 0  # a plain association to the TLS port fails
    assert _echo(dcmtk, node.settings.dicom_port).returncode == 0  # the plain port still works
    untrusted = _echo(dcmtk, tls_port, "+tls", pki.client_key, pki.client_cert, "+cf", pki.other_ca_cert)
    assert untrusted.returncode != 0  # the client does not trust our certificate
    old = _echo(dcmtk, tls_port, *client, "+pn")  # retired profile: no encryption, must not be accepted
    assert old.returncode != 0

    ds = make_ct_dataset(rows=16, columns=16)
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    store = dcmtk.run("storescu", *client, "-aec", "RADPILOT", "127.0.0.1", str(tls_port), path, timeout=60)
    assert store.returncode == 0, store.stdout + store.stderr
    assert node.archive.find(Query(QueryLevel.IMAGE, {"SOPInstanceUID": str(ds.SOPInstanceUID)}))


def test_mutual_tls_refuses_a_client_without_a_certificate(radpilot_factory, dcmtk: DcmtkTools, pki: Pki) -> None:  # noqa: ANN001
    node = _tls_node(radpilot_factory, pki, tls_require_client_cert=True)
    tls_port = node.server.dimse.tls_port
    assert _echo(dcmtk, tls_port, "+tls", pki.client_key, pki.client_cert, "+cf", pki.ca_cert).returncode == 0
    assert _echo(dcmtk, tls_port, "+tla", "+cf", pki.ca_cert).returncode != 0


def _curl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    curl = shutil.which("curl")
    if curl is None:
        require_or_skip("curl is not installed")
    return subprocess.run(
        [curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "15", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_web_serves_https_with_the_certificate_under_bcp195(radpilot_factory, pki: Pki) -> None:  # noqa: ANN001
    node = _tls_node(radpilot_factory, pki)
    url = f"https://127.0.0.1:{node.server.http_port}/api/status"
    ok = _curl("--cacert", pki.ca_cert, url)
    assert ok.returncode == 0 and ok.stdout not in ("", "000"), ok.stderr
    assert _curl(url.replace("https://", "http://")).stdout in ("000", "")  # plain HTTP to the HTTPS port gets no page
    assert _curl("--cacert", pki.other_ca_cert, url).returncode != 0  # an untrusted server certificate is refused
    assert _curl("--cacert", pki.ca_cert, "--tlsv1.1", "--tls-max", "1.1", url).returncode != 0  # below TLS 1.2


def test_an_encrypted_key_opens_with_its_password_from_the_environment_and_it_is_never_logged(
    radpilot_factory,
    pki: Pki,
    dcmtk: DcmtkTools,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,  # noqa: ANN001
) -> None:
    password = "s3cret-Passphrase-4711"
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), None)
    encrypted = pki.server_key.with_name("server-encrypted.key")
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(password.encode())
        )
    )
    monkeypatch.setenv("RADPILOT_TLS_KEY_PASSWORD", password)
    caplog.set_level(logging.DEBUG)
    node = radpilot_factory(dicom_tls_port=free_port(), tls_cert_file=pki.server_cert, tls_key_file=encrypted)
    assert _echo(dcmtk, node.server.dimse.tls_port, "+tla", "+cf", pki.ca_cert).returncode == 0
    assert password not in caplog.text and password not in repr(node.settings)
    monkeypatch.setenv("RADPILOT_TLS_KEY_PASSWORD", "wrong")
    with pytest.raises(Exception, match="cannot be used together") as refused:
        radpilot_factory(dicom_tls_port=free_port(), tls_cert_file=pki.server_cert, tls_key_file=encrypted)
    assert "wrong" not in str(refused.value)
