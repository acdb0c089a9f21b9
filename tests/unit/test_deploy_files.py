"""The deployment files a hospital's IT department uses: Docker Compose and systemd units.

Docker's daemon and a running systemd are not available here, so the files are checked
the way far as this machine allows: ``docker-compose config`` validates the Compose file,
``systemd-analyze verify`` the units, and every RadPilot command line in them is parsed
by RadPilot's own CLI (an unknown or missing option fails). The topology test
(tests/integration/test_scale_out_topology.py) runs the same commands as real processes.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import typer
import yaml

from radpilot.cli import app
from tests.helpers import REPO_ROOT, require_or_skip

DEPLOY = REPO_ROOT / "deploy"
UNITS = ("radpilot-serve.service", "radpilot-worker@.service")


def parse_radpilot_command(argv: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str]):  # noqa: ANN201 - a click Context
    """Parse ``radpilot SUBCOMMAND ...`` with RadPilot's CLI, with ``env`` as the environment the unit or container gives."""
    assert Path(argv[0]).name == "radpilot", argv
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    command = typer.main.get_command(app).commands[argv[1]]  # type: ignore[attr-defined]
    return command.make_context(argv[1], list(argv[2:]))


def compose_config() -> dict:
    binary = shutil.which("docker-compose")
    if binary is None:
        require_or_skip("docker-compose is not installed (Debian package docker-compose)")
    result = subprocess.run([binary, "-f", str(DEPLOY / "compose.yaml"), "config"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid_and_runs_two_front_ends_and_two_workers_on_shared_services(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose_config()["services"]
    assert {"postgres", "redis", "front-a", "front-b", "worker-1", "worker-2"} <= set(services)
    radpilot_services = {name: spec for name, spec in services.items() if spec.get("image") == "radpilot:latest"}
    assert sorted(radpilot_services) == ["front-a", "front-b", "worker-1", "worker-2"]
    for name, spec in radpilot_services.items():
        env = spec["environment"]
        assert env["RADPILOT_DATABASE_URL"].startswith("postgresql") and env["RADPILOT_QUEUE_BACKEND"] == "celery", name
        assert any(str(volume).endswith("/srv/radpilot") or "/srv/radpilot" in str(volume) for volume in spec["volumes"]), name
        context = parse_radpilot_command(spec["command"], monkeypatch, env)
        assert context.info_name in ("serve", "worker")
    published = sorted(int(port["published"]) for name in ("front-a", "front-b") for port in services[name]["ports"])
    assert published == [8000, 8001, 11112, 11113, 11114, 11115]


def test_systemd_units_verify_and_start_the_same_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("systemd-analyze") is None:
        require_or_skip("systemd-analyze is not installed (Debian package systemd)")
    env_file = tmp_path / "radpilot.env"
    env_file.write_text((DEPLOY / "radpilot.env.example").read_text())
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line and not line.startswith("#"))
    installed = []
    for unit in UNITS:
        text = (DEPLOY / "systemd" / unit).read_text()
        # As installed on this machine: the checkout instead of /opt/radpilot, this test's env
        # file, and no User= (the radpilot system user does not exist here).
        text = text.replace("/opt/radpilot", str(REPO_ROOT)).replace("/etc/radpilot/radpilot.env", str(env_file))
        text = "\n".join(line for line in text.splitlines() if not line.startswith(("User=", "Group=")))
        name = unit.replace("@.", "@w1.")
        (tmp_path / name).write_text(text + "\n")
        installed.append(name)
        exec_start = next(line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStart="))
        argv = shlex.split(exec_start.replace("%i", "w1").replace("%H", "host"))
        assert Path(argv[0]).is_file(), argv[0]
        parse_radpilot_command(argv, monkeypatch, env)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *installed], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
