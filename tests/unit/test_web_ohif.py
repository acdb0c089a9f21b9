"""OHIF hosting: RadPilot's /app-config.js, static files with index.html fallback, reserved prefixes."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.web import ohif
from radpilot.web.app import create_app
from tests.fixtures.auth import authenticate

INDEX_HTML = '<!doctype html><html><head><script src="/app-config.js"></script></head><body>OHIF-INDEX</body></html>'


def fake_ohif_dist(folder: Path) -> Path:
    """A minimal stand-in for OHIF's dist/: index.html, a hashed bundle, a wasm file, a shipped app-config."""
    folder.mkdir(parents=True)
    (folder / "index.html").write_text(INDEX_HTML)
    (folder / "app.bundle.0f6159c501addfe9.js").write_text("console.log('bundle');")
    (folder / "0ddf166f7a343eda.wasm").write_bytes(b"\x00asm\x01\x00\x00\x00")
    (folder / "app-config.js").write_text("window.config = {name: 'config/default.js'};")
    (folder / "assets").mkdir()
    (folder / "assets" / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (folder / "assets" / "favicon.ico").write_bytes(b"ICO")
    return folder


def build_client(tmp_path: Path, ohif_dir: Path | None) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", ohif_dir=ohif_dir)
    archive = Archive.from_settings(settings)
    try:
        with TestClient(create_app(settings, archive)) as client:
            yield authenticate(client, archive.engine)
    finally:
        archive.close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from build_client(tmp_path, fake_ohif_dist(tmp_path / "dist"))


@pytest.fixture
def client_without_ohif(tmp_path: Path) -> Iterator[TestClient]:
    yield from build_client(tmp_path, tmp_path / "no-such-dist")


def config_object(js: str) -> dict:
    """The JSON object assigned to window.config in RadPilot's app-config.js."""
    start = js.index("window.config = ") + len("window.config = ")
    end = js.index("};\n", start) + 1
    return json.loads(js[start:end])


def test_app_config_points_ohif_at_radpilot_dicomweb(client: TestClient) -> None:
    response = client.get("/app-config.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    config = config_object(response.text)
    assert config["defaultDataSourceName"] == "radpilot"
    assert config["showStudyList"] is True
    (source,) = config["dataSources"]
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    assert source["sourceName"] == "radpilot"
    c = source["configuration"]
    assert c["qidoRoot"] == c["wadoRoot"] == c["wadoUriRoot"] == "/dicomweb"
    assert c["imageRendering"] == c["thumbnailRendering"] == "wadors"
    assert c["supportsWildcard"] is True and c["supportsFuzzyMatching"] is False
    assert c["enableStudyLazyLoad"] is True and c["staticWado"] is False
    assert c["bulkDataURI"]["enabled"] is True
    assert c["omitQuotationForMultipartRequest"] is True
    # The roots are made absolute in the browser from the page's own origin.
    assert "window.location.origin" in response.text
    assert "config/default.js" not in response.text


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_app_config_evaluates_to_absolute_roots_in_javascript(client: TestClient, tmp_path: Path) -> None:
    script = tmp_path / "check.js"
    script.write_text(
        "global.window = {location: {origin: 'http://radpilot.example:8000'}};\n"
        + client.get("/app-config.js").text
        + "\nconsole.log(JSON.stringify(window.config.dataSources[0].configuration));\n"
    )
    out = subprocess.run(["node", str(script)], capture_output=True, text=True, check=True, timeout=30)
    configuration = json.loads(out.stdout)
    assert configuration["qidoRoot"] == "http://radpilot.example:8000/dicomweb"
    assert configuration["wadoRoot"] == "http://radpilot.example:8000/dicomweb"
    assert configuration["wadoUriRoot"] == "http://radpilot.example:8000/dicomweb"


@pytest.mark.parametrize(
    "path", ["/?resultsPerPage=25", "/viewer?StudyInstanceUIDs=1.2.3.4", "/viewer/dicomweb", "/local", "/some/deep/route"]
)
def test_ohif_routes_fall_back_to_index_html(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert "OHIF-INDEX" in response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"


def test_ohif_static_files_are_served_with_their_types(client: TestClient) -> None:
    bundle = client.get("/app.bundle.0f6159c501addfe9.js")
    assert bundle.status_code == 200 and bundle.text == "console.log('bundle');"
    assert "javascript" in bundle.headers["content-type"]
    assert "immutable" in bundle.headers["cache-control"]
    wasm = client.get("/0ddf166f7a343eda.wasm")
    assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
    assert client.get("/assets/logo.svg").status_code == 200
    assert client.head("/app.bundle.0f6159c501addfe9.js").status_code == 200


def test_favicon_is_served_from_ohif_assets(client: TestClient) -> None:
    response = client.get("/favicon.ico")
    assert response.status_code == 200 and response.content == b"ICO"


def test_missing_asset_is_404_not_index(client: TestClient) -> None:
    response = client.get("/app.bundle.doesnotexist.js")
    assert response.status_code == 404
    assert "OHIF-INDEX" not in response.text


def test_ohif_responses_are_cross_origin_isolated(client: TestClient) -> None:
    for path in ("/viewer", "/app-config.js", "/app.bundle.0f6159c501addfe9.js"):
        headers = client.get(path).headers
        assert headers["cross-origin-opener-policy"] == "same-origin"
        assert headers["cross-origin-embedder-policy"] == "require-corp"


@pytest.mark.parametrize("path", ["/api/nope", "/api/studies/1.2.3/nope/deeper", "/dicomweb", "/dicomweb/nope/x", "/ui/nope"])
def test_reserved_prefixes_are_not_swallowed_by_the_fallback(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"detail": "Not Found"}
    assert "OHIF-INDEX" not in response.text


def test_unknown_api_path_with_other_methods_is_404(client: TestClient) -> None:
    assert client.post("/api/nope", json={}).status_code == 404
    assert client.delete("/ui/nope").status_code == 404


def test_radpilot_routes_still_answer(client: TestClient) -> None:
    assert client.get("/api/health").json()["status"] == "ok"
    assert client.get("/api/openapi.json").status_code == 200
    assert client.get("/ui/").status_code == 200
    assert client.get("/ui/static/radpilot.css").status_code == 200


@pytest.mark.parametrize("path", ["/..%2f..%2fetc%2fpasswd", "/assets/..%2f..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/etc/passwd"])
def test_paths_outside_the_dist_folder_are_never_served(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert "root:" not in response.text


def test_static_file_lookup_stays_inside_the_folder(tmp_path: Path) -> None:
    dist = fake_ohif_dist(tmp_path / "dist")
    (tmp_path / "secret.txt").write_text("secret")
    assert ohif._static_file(dist.resolve(), "../secret.txt") is None
    assert ohif._static_file(dist.resolve(), "assets") is None
    assert ohif._static_file(dist.resolve(), "index.html") == dist.resolve() / "index.html"


def test_the_web_root_lands_on_the_worklist_and_ohif_keeps_its_viewer_routes(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/ui/"
    assert "OHIF-INDEX" in client.get("/viewer?StudyInstanceUIDs=1.2.3.4").text


def test_without_ohif_the_root_redirects_to_the_study_list(client_without_ohif: TestClient) -> None:
    response = client_without_ohif.get("/", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/ui/"
    viewer = client_without_ohif.get("/viewer?StudyInstanceUIDs=1.2.3")
    assert viewer.status_code == 503 and "not installed" in viewer.text
    assert client_without_ohif.get("/api/nope").status_code == 404
    assert client_without_ohif.get("/favicon.ico").status_code == 404
    assert client_without_ohif.get("/app-config.js").status_code == 200


def test_resolve_ohif_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = fake_ohif_dist(tmp_path / "dist")
    assert ohif.resolve_ohif_dir(Settings(data_dir=tmp_path, ohif_dir=dist)) == dist.resolve()
    assert ohif.resolve_ohif_dir(Settings(data_dir=tmp_path, ohif_dir=tmp_path / "missing")) is None
    monkeypatch.setattr(ohif, "DEFAULT_OHIF_DIR", dist)
    assert ohif.resolve_ohif_dir(Settings(data_dir=tmp_path)) == dist.resolve()
    monkeypatch.setattr(ohif, "DEFAULT_OHIF_DIR", tmp_path / "missing")
    assert ohif.resolve_ohif_dir(Settings(data_dir=tmp_path)) is None


def test_default_ohif_dir_is_the_repository_third_party_folder() -> None:
    assert ohif.DEFAULT_OHIF_DIR == Path(__file__).resolve().parents[2] / "third_party" / "ohif" / "dist"
