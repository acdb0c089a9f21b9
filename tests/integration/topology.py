"""A scale-out RadPilot on this machine: front ends, Celery workers and DICOM senders as real processes.

Used by tests/integration/test_scale_out_topology.py (faults: a worker SIGKILLed, a front
end restarted) and benchmarks/scale_out.py (throughput from 1 to 2 front ends and workers).

Every front end is a ``radpilot serve`` (DIMSE + web + study-complete detector + outbox)
on one PostgreSQL database and one storage folder, queueing jobs on Redis; every worker is
a ``radpilot worker`` running the real pipeline (analysis, SEG/SR/key image, outbox rows).
A sender is a separate process (``python -m tests.integration.topology_sender``) that
C-STOREs its studies and appends the SOP Instance UID of every instance the node
acknowledged with Success to its own file: that file is what "acknowledged" means.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import yaml
from pydicom.dataset import Dataset

from radpilot.analyses.coronary_calcium.phantom import make_phantom, phantom_datasets
from tests.factories import to_part10_bytes
from tests.helpers import REPO_ROOT, free_port, subprocess_env

RADPILOT = str(REPO_ROOT / ".venv" / "bin" / "radpilot")

# Non-contrast chest CT of thin slices goes to coronary_calcium (the cheapest real analysis
# that returns a SEG, an SR and a key image), with the PACS as the destination.
RULES = """
rules:
  - name: calcium
    match:
      Modality: CT
      ImageType: {contains: [ORIGINAL]}
      NumberOfSlices: {min: 20}
    analyses: [coronary_calcium]
    destinations: [pacs]
    priority: routine
"""


@dataclass
class Cluster:
    """What every process of one topology shares."""

    root: Path
    database_url: str
    broker_url: str
    pacs: tuple[str, str, int]  # AE title, host, port of the destination
    quiet_period_s: float = 8.0
    storage: Path = field(init=False)
    rules_file: Path = field(init=False)
    nodes_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.storage = self.root / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.rules_file = self.root / "rules.yaml"
        self.rules_file.write_text(RULES)
        ae_title, host, port = self.pacs
        self.nodes_file = self.root / "nodes.yaml"
        self.nodes_file.write_text(yaml.safe_dump({"nodes": [{"name": "pacs", "ae_title": ae_title, "host": host, "port": port}]}))

    def env(self) -> dict[str, str]:
        return subprocess_env(
            PYTHONPATH=str(REPO_ROOT),
            RADPILOT_QUEUE_BACKEND="celery",
            RADPILOT_BROKER_URL=self.broker_url,
            RADPILOT_QUIET_PERIOD_S=str(self.quiet_period_s),
            RADPILOT_LOG_LEVEL="INFO",
        )


class Process:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.command, self.env, self.log = name, command, env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def signal_group(self, signum: int, wait_s: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signum)
        try:
            self.process.wait(wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        self.signal_group(signal.SIGTERM)

    def tail(self, chars: int = 3000) -> str:
        return f"\n--- {self.name} ---\n" + (self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)")


class FrontEnd(Process):
    """``radpilot serve`` on the cluster's database and storage; ports kept across restarts."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.dicom_port, self.http_port = free_port(), free_port()
        command = [
            RADPILOT,
            "serve",
            "--data-dir",
            str(cluster.storage),
            "--database-url",
            cluster.database_url,
            "--dicom-port",
            str(self.dicom_port),
            "--http-port",
            str(self.http_port),
            "--workers",
            "0",
            "--rules-file",
            str(cluster.rules_file),
            "--nodes-file",
            str(cluster.nodes_file),
        ]
        super().__init__(name, command, cluster.env(), cluster.root / f"{name}.log")

    def start_and_wait(self, timeout_s: float = 90.0) -> None:
        self.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited early:{self.tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.http_port}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} did not answer /api/health in {timeout_s} s:{self.tail()}")

    def routed_up_to(self, headers: dict[str, str]) -> datetime | None:
        """How far this front end's study-complete detector has routed (None before its first pass or while it is down)."""
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.http_port}/api/engine/detector", headers=headers, timeout=5)
        except httpx.HTTPError:
            return None
        value = answer.json().get("routed_up_to") if answer.status_code == 200 else None
        return datetime.fromisoformat(value) if value else None


class Worker(Process):
    """``radpilot worker`` running the real analysis pipeline from the cluster's broker."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        command = [
            RADPILOT,
            "worker",
            "--broker-url",
            cluster.broker_url,
            "--database-url",
            cluster.database_url,
            "--data-dir",
            str(cluster.storage),
            "--concurrency",
            "1",
            "--name",
            f"{name}@%h",
            "--lease-seconds",
            "10",
            "--visibility-timeout",
            "60",
            "--retry-base-seconds",
            "1",
            "--retry-max-seconds",
            "10",
        ]
        super().__init__(name, command, cluster.env(), cluster.root / f"{name}.log")


def write_studies(folder: Path, studies: int, slices: int, *, size: int = 160) -> list[list[Path]]:
    """``studies`` calcium phantom CT series of ``slices`` instances each, written as Part 10 files."""
    written = []
    for index in range(studies):
        phantom = make_phantom(n_slices=slices, rows=size, columns=size, pixel_mm=300.0 / size, seed=index)
        datasets: list[Dataset] = phantom_datasets(phantom, patient_id=f"SCALE{index:03d}")
        study_dir = folder / f"study{index:03d}"
        study_dir.mkdir(parents=True)
        paths = []
        for number, ds in enumerate(datasets):
            path = study_dir / f"{number:04d}.dcm"
            path.write_bytes(to_part10_bytes(ds))
            paths.append(path)
        written.append(paths)
    return written


class Sender(Process):
    """One store SCU process sending a list of files to one front end, retrying what was not acknowledged."""

    def __init__(self, cluster: Cluster, name: str, front_end: FrontEnd, files: list[Path]) -> None:
        self.file_list = cluster.root / f"{name}.files"
        self.file_list.write_text("\n".join(str(p) for p in files) + "\n")
        self.acknowledged = cluster.root / f"{name}.acknowledged"
        command = [
            sys.executable,
            "-m",
            "tests.integration.topology_sender",
            "--port",
            str(front_end.dicom_port),
            "--files",
            str(self.file_list),
            "--acknowledged",
            str(self.acknowledged),
        ]
        super().__init__(name, command, cluster.env(), cluster.root / f"{name}.log")

    def acknowledged_uids(self) -> list[str]:
        return self.acknowledged.read_text().split() if self.acknowledged.exists() else []

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout_s)
