"""`radpilot serve` on a node without users (the `make run` start): an administrator and a radiologist
with one-time passwords, shown once on the terminal, never in the log, and usable at once."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, start_serve

pytestmark = pytest.mark.integration

PASSWORD_LINE = re.compile(r"^\s+(admin|radiologist)\s+\((administrator|radiologist)\): (\S+)$", re.MULTILINE)


def serve_once(data_dir: Path, output_file: Path, check) -> str:  # noqa: ANN001 - callable(base_url, output)
    http_port = free_port()
    with output_file.open("w") as output:
        process = start_serve(data_dir, dicom_port=free_port(), http_port=http_port, output=output)
        try:
            check(f"http://127.0.0.1:{http_port}", output_file.read_text())
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    return output_file.read_text()


def sign_in(base_url: str, name: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=30)
    form = client.get("/ui/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    response = client.post("/ui/login", data={"username": name, "password": password, "csrf_token": token, "next": "/ui/"})
    assert response.status_code == 303, response.text
    return client


def test_first_start_creates_two_users_whose_one_time_passwords_work_and_must_be_changed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    seen: dict[str, str] = {}

    def first(base_url: str, output: str) -> None:
        seen.update({name: password for name, _, password in PASSWORD_LINE.findall(output)})
        assert set(seen) == {"admin", "radiologist"}, output
        assert httpx.get(f"{base_url}/api/studies", timeout=10).status_code == 401
        client = sign_in(base_url, "admin", seen["admin"])
        assert client.get("/ui/", headers={"Accept": "text/html"}).headers["location"] == "/ui/password"
        assert client.get("/api/studies").status_code == 403
        client.close()
        client = sign_in(base_url, "radiologist", seen["radiologist"])
        page = client.get("/ui/password")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        new = {
            "csrf_token": csrf,
            "current_password": seen["radiologist"],
            "new_password": "reads-chest-ct-1",
            "repeat_password": "reads-chest-ct-1",
        }
        assert client.post("/ui/password", data=new).status_code == 303
        assert client.get("/api/studies").status_code == 200
        client.close()

    output = serve_once(data_dir, tmp_path / "first.out", first)
    for password in seen.values():
        assert output.count(password) == 1, "a one-time password was written more than once (to the log?)"
        log_lines = [line for line in output.splitlines() if password in line]
        assert all(PASSWORD_LINE.match(line) for line in log_lines)

    def second(base_url: str, output: str) -> None:
        assert not PASSWORD_LINE.search(output)

    again = serve_once(data_dir, tmp_path / "second.out", second)
    assert "First start" not in again and all(p not in again for p in seen.values())
