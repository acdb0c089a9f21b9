"""STOW-RS with hostile bodies: mutated DICOM parts and broken multipart framing get a 4xx answer, never a server error."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radpilot.archive import Archive
from radpilot.pacs.dicomweb import make_dicomweb_router
from tests.fuzz_support import mutated_part10, on_disk, open_fuzz_archive

DICOM_PART = 'multipart/related; type="application/dicom"; boundary="fuzz"'
SETTINGS = settings(max_examples=150, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def stow(tmp_path: Path) -> Iterator[tuple[TestClient, Archive]]:
    archive = open_fuzz_archive(tmp_path)
    app = FastAPI()
    app.include_router(make_dicomweb_router(archive, max_stow_bytes=1024**2), prefix="/dicomweb")
    yield TestClient(app, raise_server_exceptions=False), archive
    archive.close()


def framed(data: bytes) -> bytes:
    return b"--fuzz\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--fuzz--\r\n"


def test_mutated_dicom_parts_are_stored_or_refused_per_part(stow: tuple[TestClient, Archive]) -> None:
    client, archive = stow

    @SETTINGS
    @given(mutated_part10())
    def post(data: bytes) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            response = client.post("/dicomweb/studies", content=framed(data), headers={"Content-Type": DICOM_PART})
        assert response.status_code in (200, 409), response.text
        if response.status_code == 409:
            [failure] = response.json()["00081198"]["Value"]
            assert failure["0040A160"]["Value"][0], "a refused part says why"
        assert not [f for f in on_disk(archive) if f.startswith(".incoming/")]

    post()


@st.composite
def broken_multipart(draw: st.DrawFn) -> tuple[bytes, str]:
    body = bytearray(framed(b"\0" * 128 + b"DICM" + draw(st.binary(max_size=64))))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(body)))
        choice = draw(st.sampled_from(("cut", "insert", "flip")))
        if choice == "cut":
            del body[position:]
        elif choice == "insert":
            body[position:position] = draw(st.sampled_from([b"--fuzz", b"\r\n", b"--fuzz--", b"Content-Type: text/plain\r\n", b"\r\n\r\n"]))
        elif body:
            body[min(position, len(body) - 1)] ^= 0xFF
    content_type = draw(
        st.sampled_from(
            [
                DICOM_PART,
                'multipart/related; type="application/dicom"',  # no boundary
                'multipart/related; type="application/dicom"; boundary=""',
                'multipart/related; type="application/dicom"; boundary="' + "b" * 300 + '"',
                "multipart/related; boundary=fuzz; type=",
                "application/dicom",
                "text/plain",
                "",
            ]
        )
    )
    return bytes(body), content_type


def test_broken_multipart_framing_gets_a_client_error(stow: tuple[TestClient, Archive]) -> None:
    client, archive = stow

    @SETTINGS
    @given(broken_multipart())
    def post(case: tuple[bytes, str]) -> None:
        body, content_type = case
        response = client.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type} if content_type else {})
        assert response.status_code in (200, 400, 409, 415), (response.status_code, response.text)

    post()
    assert archive.instance_count() == 0
