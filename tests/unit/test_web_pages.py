"""The server-rendered archive search at /ui/archive/: content, escaping, links, search and paging."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.web.app import create_app
from tests.factories import make_ct_series, to_part10_bytes
from tests.fixtures.auth import authenticate

HOSTILE_NAME = "<script>alert(1)</script>^EVIL"


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    store = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.db'}", durability="none")
    yield store
    store.close()


@pytest.fixture
def client(archive: Archive, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", ohif_dir=tmp_path / "no-ohif")
    with TestClient(create_app(settings, archive)) as test_client:
        yield authenticate(test_client, archive.engine)


def store_study(archive: Archive, count: int = 3, **attrs) -> str:
    series = make_ct_series(count, rows=8, columns=8, **attrs)
    for ds in series:
        assert archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted
    return str(series[0].StudyInstanceUID)


def test_ui_redirects_to_trailing_slash(client: TestClient) -> None:
    response = client.get("/ui", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/ui/"


def test_study_list_shows_a_study_with_its_viewer_link(client: TestClient, archive: Archive) -> None:
    uid = store_study(archive, patient_name="DOE^JANE", patient_id="PAT-9", study_date="20240102", accession="ACC9")
    response = client.get("/ui/archive/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    html = response.text
    assert "DOE, JANE" in html and "PAT-9" in html and "2024-01-02" in html and "CT CHEST" in html
    assert "ACC9" in html and uid in html
    assert f'<a class="open" href="/viewer?StudyInstanceUIDs={uid}">Open in viewer</a>' in html
    row = re.search(r"<tr><td>DOE, JANE</td>.*?</tr>", html).group(0)
    assert '<td class="num">1</td><td class="num">3</td>' in row
    assert ">CT<" in row


def test_patient_name_is_escaped(client: TestClient, archive: Archive) -> None:
    store_study(archive, count=1, patient_name=HOSTILE_NAME, patient_id='"><img src=x onerror=alert(2)>')
    html = client.get("/ui/archive/").text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;, EVIL" in html
    assert "<img src=x" not in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in html  # MarkupSafe (Jinja2 autoescape) writes " as &#34;
    assert "<script" not in html.lower()


def test_study_description_and_accession_are_escaped(client: TestClient, archive: Archive) -> None:
    series = make_ct_series(1, rows=8, columns=8, accession="A<b>1</b>")
    for ds in series:
        ds.StudyDescription = "<script>alert(1)</script>"
        assert archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted
    html = client.get("/ui/archive/").text
    assert '<td>&lt;script&gt;alert(1)&lt;/script&gt;<span class="uid">Accession A&lt;b&gt;1&lt;/b&gt;</span>' in html
    assert "<script" not in html.lower() and "<b>1" not in html


def test_search_values_are_escaped_back_into_the_form(client: TestClient) -> None:
    html = client.get("/ui/archive/", params={"patient_name": '"><script>x</script>'}).text
    assert "<script>x" not in html
    assert 'value="&#34;&gt;&lt;script&gt;x&lt;/script&gt;"' in html


def test_search_filters_the_list(client: TestClient, archive: Archive) -> None:
    store_study(archive, count=1, patient_name="DOE^JANE", patient_id="P1", study_date="20240102", modality="CT")
    store_study(archive, count=1, patient_name="SMITH^JOHN", patient_id="P2", study_date="20230301", modality="MR")
    assert "SMITH, JOHN" not in client.get("/ui/archive/", params={"patient_name": "doe"}).text
    assert "DOE, JANE" not in client.get("/ui/archive/", params={"patient_id": "P2"}).text
    assert "SMITH, JOHN" not in client.get("/ui/archive/", params={"modality": "CT"}).text
    by_date = client.get("/ui/archive/", params={"date_from": "2024-01-01", "date_to": "2024-12-31"}).text
    assert "DOE, JANE" in by_date and "SMITH, JOHN" not in by_date
    assert 'value="2024-01-01"' in by_date
    assert "No studies match." in client.get("/ui/archive/", params={"patient_name": "nobody"}).text


def test_bad_search_shows_the_reason(client: TestClient) -> None:
    response = client.get("/ui/archive/", params={"date_from": "not-a-date"})
    assert response.status_code == 400
    assert 'role="alert"' in response.text and "date_from" in response.text


def test_paging_links_keep_the_search(client: TestClient, archive: Archive) -> None:
    for day in range(1, 6):
        store_study(archive, count=1, patient_name="DOE^JANE", study_date=f"202401{day:02d}")
    first = client.get("/ui/archive/", params={"patient_name": "doe", "limit": 2}).text
    assert first.count("Open in viewer") == 2
    assert 'href="/ui/archive/?patient_name=doe&amp;limit=2&amp;offset=2">Next' in first
    assert "Previous" not in first
    last = client.get("/ui/archive/", params={"patient_name": "doe", "limit": 2, "offset": 4}).text
    assert last.count("Open in viewer") == 1
    assert 'href="/ui/archive/?patient_name=doe&amp;limit=2&amp;offset=2">&larr; Previous' in last
    assert "Next" not in last
    second = client.get("/ui/archive/", params={"patient_name": "doe", "limit": 2, "offset": 2}).text
    assert 'href="/ui/archive/?patient_name=doe&amp;limit=2">&larr; Previous' in second


def test_nonsense_paging_values_fall_back_to_defaults(client: TestClient, archive: Archive) -> None:
    store_study(archive, count=1)
    response = client.get("/ui/archive/", params={"limit": "lots", "offset": "-4"})
    assert response.status_code == 200 and "Open in viewer" in response.text
