"""The STOW-RS client against RadPilot's own STOW-RS route (in process).

Delivery to a real Orthanc by STOW-RS is in tests/integration/test_outbox.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from radpilot.archive import Archive
from radpilot.pacs import stow_client
from radpilot.pacs.dicomweb import make_dicomweb_router
from radpilot.pacs.stow_client import StowError, redact_url, stow
from tests.factories import make_ct_series, write_part10

BASE_URL = "http://testserver/dicomweb"


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    store = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.sqlite3'}", durability="none")
    yield store
    store.close()


@pytest.fixture
def sent(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, str], bytes]]:
    """Route the client's POST to the archive's STOW-RS route; record the headers and the body it streamed."""
    app = FastAPI()
    app.include_router(make_dicomweb_router(archive), prefix="/dicomweb")
    client = TestClient(app)
    requests: list[tuple[dict[str, str], bytes]] = []

    def post(url: str, *, content: Iterable[bytes], headers: dict[str, str], timeout: float) -> httpx.Response:
        assert not isinstance(content, bytes), "the body is streamed, not built in memory"
        body = b"".join(content)
        requests.append((headers, body))
        return client.post(url.removeprefix("http://testserver"), content=body, headers=headers)

    monkeypatch.setattr(stow_client.httpx, "post", post)
    return requests


def test_files_are_streamed_with_their_length_declared(archive: Archive, sent: list[tuple[dict[str, str], bytes]], tmp_path: Path) -> None:
    paths = write_part10(make_ct_series(3), tmp_path / "out")
    answer = stow(BASE_URL, paths)
    assert archive.instance_count() == 3
    assert len(answer["00081199"]["Value"]) == 3
    ((headers, body),) = sent
    assert int(headers["Content-Length"]) == len(body)
    assert all(path.read_bytes() in body for path in paths)


def test_a_refused_instance_is_a_stow_error(archive: Archive, sent: list, tmp_path: Path) -> None:
    (first,) = write_part10(make_ct_series(1), tmp_path / "a")
    stow(BASE_URL, [first])
    changed = tmp_path / "changed.dcm"
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF  # same SOP Instance UID, other content
    changed.write_bytes(bytes(data))
    with pytest.raises(StowError, match="HTTP 409.*0xA900"):
        stow(BASE_URL, [changed])
    assert archive.instance_count() == 1


def test_credentials_in_a_target_url_never_reach_an_error_message() -> None:
    assert redact_url("https://alice:s3cret@pacs.example:8443/dicom-web") == "https://pacs.example:8443/dicom-web"
    assert redact_url("http://pacs.example/dicom-web") == "http://pacs.example/dicom-web"
    with pytest.raises(StowError) as refused:
        stow("http://alice:s3cret@127.0.0.1:9/dicom-web", [])
    assert "s3cret" not in str(refused.value) and "alice" not in str(refused.value)
