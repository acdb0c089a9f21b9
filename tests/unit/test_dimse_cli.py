"""The DICOM network commands of the CLI: nodes, echo, send, find, pull."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydicom.uid import generate_uid
from typer.testing import CliRunner

import radpilot.cli as cli
from radpilot.archive import Archive
from radpilot.config import RemoteNode, Settings
from tests.factories import make_ct_dataset, make_ct_series, to_part10_bytes, write_part10
from tests.helpers import free_port


@pytest.fixture(autouse=True)
def keep_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands configure logging for a terminal; leave pytest's logging alone."""
    monkeypatch.setattr(cli, "configure_logging", lambda level="INFO": None)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write_nodes_file(path: Path, *nodes: RemoteNode) -> Path:
    path.write_text(yaml.safe_dump({"nodes": [n.model_dump(exclude_none=True) for n in nodes]}))
    return path


@pytest.fixture
def pacs(radpilot):  # noqa: ANN001, ANN201
    """A RadPilot node playing the PACS, and a nodes file naming it 'pacs'."""
    return radpilot


@pytest.fixture
def nodes_file(tmp_path: Path, pacs) -> Path:  # noqa: ANN001
    node = RemoteNode(name="pacs", ae_title=pacs.ae_title, host="127.0.0.1", port=pacs.dicom_port)
    return write_nodes_file(tmp_path / "nodes.yaml", node)


def test_nodes_lists_the_configured_nodes(runner: CliRunner, nodes_file: Path) -> None:
    result = runner.invoke(cli.app, ["nodes", "--nodes-file", str(nodes_file)])
    assert result.exit_code == 0, result.output
    assert "pacs" in result.stdout and "RADPILOT" in result.stdout

    as_json = runner.invoke(cli.app, ["nodes", "--nodes-file", str(nodes_file), "--json"])
    assert [n["name"] for n in json.loads(as_json.stdout)] == ["pacs"]


def test_nodes_can_come_from_the_environment_as_json(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADPILOT_NODES", json.dumps([{"name": "envpacs", "ae_title": "ENVPACS", "host": "h", "port": 104}]))
    result = runner.invoke(cli.app, ["nodes", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["ae_title"] == "ENVPACS"


def test_echo_succeeds_against_a_listening_node(runner: CliRunner, nodes_file: Path) -> None:
    result = runner.invoke(cli.app, ["echo", "pacs", "--nodes-file", str(nodes_file)])
    assert result.exit_code == 0, result.output
    assert "success" in result.output


@pytest.mark.parametrize(
    "command", [["echo", "nosuchnode"], ["send", "nosuchnode", "."], ["find", "nosuchnode"], ["pull", "nosuchnode", "1.2.3"]]
)
def test_unknown_node_exits_2_listing_the_known_nodes(runner: CliRunner, nodes_file: Path, command: list[str]) -> None:
    result = runner.invoke(cli.app, [*command, "--nodes-file", str(nodes_file)])
    assert result.exit_code == 2
    assert "unknown DICOM node 'nosuchnode'" in result.output
    assert "pacs (RADPILOT@127.0.0.1" in result.output


def test_echo_to_a_node_that_is_down_exits_1_naming_it(runner: CliRunner, tmp_path: Path) -> None:
    down = write_nodes_file(tmp_path / "down.yaml", RemoteNode(name="down", ae_title="DOWN", host="127.0.0.1", port=free_port()))
    result = runner.invoke(cli.app, ["echo", "down", "--nodes-file", str(down)])
    assert result.exit_code == 1
    assert "cannot connect to DICOM node 'down'" in result.output


def test_send_a_folder_stores_every_file_and_summarises(runner: CliRunner, nodes_file: Path, pacs, tmp_path: Path) -> None:  # noqa: ANN001
    folder = tmp_path / "study"
    write_part10(make_ct_series(4), folder / "series1")
    write_part10(make_ct_series(2), folder / "series2")
    (folder / "README.txt").write_text("not DICOM")

    result = runner.invoke(cli.app, ["send", "pacs", str(folder), "--nodes-file", str(nodes_file), "--ae-title", "CLI"])

    assert result.exit_code == 0, result.output
    assert "6 sent, 0 failed, 1 skipped" in result.output
    assert pacs.archive.instance_count() == 6


def test_send_exits_1_when_a_file_is_refused(runner: CliRunner, nodes_file: Path, pacs, tmp_path: Path) -> None:  # noqa: ANN001
    first = make_ct_dataset(patient_name="FIRST")
    assert pacs.archive.store_file_bytes(to_part10_bytes(first)).outcome.accepted
    conflicting = make_ct_dataset(
        sop_uid=first.SOPInstanceUID, study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID, patient_name="SECOND"
    )
    (path,) = write_part10([conflicting], tmp_path / "bad")

    result = runner.invoke(cli.app, ["send", "pacs", str(path), "--nodes-file", str(nodes_file)])

    assert result.exit_code == 1
    assert "0 sent, 1 failed" in result.output
    assert "different content" in result.output


@pytest.fixture
def pacs_with_studies(pacs) -> dict[str, str]:  # noqa: ANN001
    uids = {}
    for name, date, patient_id in (("a", "20200610", "P1"), ("b", "20211224", "P2")):
        uid = generate_uid()
        uids[name] = uid
        for ds in make_ct_series(2, study_uid=uid, study_date=date, patient_id=patient_id):
            assert pacs.archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted
    return uids


def test_find_prints_json_matches(runner: CliRunner, nodes_file: Path, pacs_with_studies: dict[str, str]) -> None:
    result = runner.invoke(
        cli.app, ["find", "pacs", "--level", "study", "--study-date", "20200101-20201231", "--json", "--nodes-file", str(nodes_file)]
    )

    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["StudyInstanceUID"] == pacs_with_studies["a"]
    assert row["ModalitiesInStudy"] == ["CT"]
    assert row["NumberOfStudyRelatedInstances"] in (2, "2")


def test_find_prints_a_table_at_series_level(runner: CliRunner, nodes_file: Path, pacs_with_studies: dict[str, str]) -> None:
    result = runner.invoke(
        cli.app,
        ["find", "pacs", "--level", "series", "--patient-id", "P2", "-k", "SeriesDate=", "--nodes-file", str(nodes_file)],
        env={"COLUMNS": "400"},
    )

    assert result.exit_code == 0, result.output
    assert "SeriesInstanceUID" in result.stdout and "SeriesDate" in result.stdout
    assert "1 match(es)" in result.output


def test_pull_retrieves_a_study_into_the_local_archive(
    runner: CliRunner,
    radpilot_factory,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    our_port = free_port()
    source = radpilot_factory(ae_title="SOURCE", nodes=[RemoteNode(name="us", ae_title="LOCAL", host="127.0.0.1", port=our_port)])
    study_uid = generate_uid()
    for ds in make_ct_series(3, study_uid=study_uid):
        assert source.archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted
    nodes = write_nodes_file(
        tmp_path / "nodes.yaml", RemoteNode(name="source", ae_title="SOURCE", host="127.0.0.1", port=source.dicom_port)
    )
    data_dir = tmp_path / "local"

    result = runner.invoke(
        cli.app,
        [
            "pull",
            "source",
            study_uid,
            "--nodes-file",
            str(nodes),
            "--data-dir",
            str(data_dir),
            "--ae-title",
            "LOCAL",
            "--dicom-port",
            str(our_port),
        ],
    )

    assert result.exit_code == 0, result.output
    assert "3 completed, 0 failed" in result.output
    archive = Archive.from_settings(Settings(data_dir=data_dir))
    try:
        assert archive.instance_count() == 3
    finally:
        archive.close()
