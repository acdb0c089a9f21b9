"""Hostile input over the network, into a running node: deflate bombs and a full disk over C-STORE and STOW-RS.

The full disk is real where the test may mount a small tmpfs under the archive (root);
the free-space reserve is tested on any disk.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom import AE, _config, build_context

from radpilot.dicom import status as dimse_status
from radpilot.dicom.part10 import dataset_offset
from tests.factories import make_ct_dataset, to_part10_bytes
from tests.fixtures.radpilot import RunningNode
from tests.fuzz_support import deflate_bomb, on_disk

DICOM_PART = 'multipart/related; type="application/dicom"; boundary="hostile"'
BOMB_LIMIT = 32 * 1024**2


def stow(node: RunningNode, data: bytes) -> httpx.Response:
    body = b"--hostile\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--hostile--\r\n"
    headers = {**node.headers, "Content-Type": DICOM_PART}
    return httpx.post(f"{node.dicomweb_url}/studies", content=body, headers=headers, timeout=60)


def c_store(node: RunningNode, path: Path, transfer_syntax: str) -> pydicom.Dataset:
    ae = AE(ae_title="HOSTILE")
    context = build_context(CTImageStorage, [transfer_syntax])  # not read from the file: reading a bomb inflates it
    assoc = ae.associate("127.0.0.1", node.dicom_port, [context], ae_title=node.ae_title)
    assert assoc.is_established
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()


@pytest.fixture
def send_files_as_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom streams a file's encoded dataset as it is: the bomb travels deflated, as an attacker would send it."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def failure(response: httpx.Response) -> tuple[int, str]:
    [item] = response.json()["00081198"]["Value"]
    return item["00081197"]["Value"][0], item["0040A160"]["Value"][0]


def test_deflate_bomb_over_c_store_is_refused_and_nothing_stored(radpilot_factory, tmp_path: Path, send_files_as_stored: None) -> None:  # noqa: ANN001
    node = radpilot_factory(max_inflated_bytes=BOMB_LIMIT)
    path = tmp_path / "bomb.dcm"
    path.write_bytes(deflate_bomb(128 * 1024**2))  # 4 times the limit; pynetdicom, as the sender, inflates a bigger one slowly
    status = c_store(node, path, DeflatedExplicitVRLittleEndian)
    assert status.Status == dimse_status.CANNOT_UNDERSTAND
    assert status.ErrorComment.startswith("deflate bomb refused")
    assert node.archive.instance_count() == 0 and not on_disk(node.archive)


def test_deflate_bomb_over_stow_is_refused_and_nothing_stored(radpilot_factory) -> None:  # noqa: ANN001
    node = radpilot_factory(max_inflated_bytes=BOMB_LIMIT)
    bomb = deflate_bomb(2 * 1024**3)
    response = stow(node, bomb)
    assert response.status_code == 409
    reason, text = failure(response)
    assert reason == dimse_status.CANNOT_UNDERSTAND
    assert f"inflates beyond {BOMB_LIMIT} bytes" in text
    assert node.archive.instance_count() == 0 and not on_disk(node.archive)


# -- a full disk -------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs where the first node of ``radpilot_factory`` keeps its DICOM files (its index stays on the real disk)."""
    storage = tmp_path / "node0" / "radpilot-data" / "dicom"
    storage.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(storage)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield storage
    finally:
        subprocess.run(["umount", "-l", str(storage)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` with one file until at most ``leave`` bytes are free; returns the file (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while leave == 0 or free_bytes(disk) > leave:
            os.write(fd, bytes(4096))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def free_bytes(disk: Path) -> int:
    stats = os.statvfs(disk)
    return stats.f_bavail * stats.f_frsize


def instance(tmp_path: Path, name: str) -> tuple[Path, bytes]:
    data = to_part10_bytes(make_ct_dataset(rows=128, columns=128))  # 32 KiB of pixels
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


def assert_nothing_partial(node: RunningNode) -> None:
    files = on_disk(node.archive)
    assert not [f for f in files if f.startswith(".incoming/")], files
    assert len([f for f in files if f.endswith(".dcm")]) == node.archive.instance_count()
    storage = node.archive.storage_dir
    empty = [p for p in storage.rglob("*") if p.is_dir() and p != node.archive.tmp_dir and not any(p.iterdir())]
    assert not empty, f"folders left by a failed store: {empty}"


def test_full_disk_answers_c_store_out_of_resources_and_stores_again_once_space_returns(
    radpilot_factory,  # noqa: ANN001
    small_disk: Path,
    tmp_path: Path,
) -> None:
    node = radpilot_factory(min_free_bytes=0)
    filler = fill(small_disk)
    path, data = instance(tmp_path, "one.dcm")
    status = c_store(node, path, ExplicitVRLittleEndian)
    assert status.Status == dimse_status.OUT_OF_RESOURCES
    assert status.ErrorComment.startswith("archive disk full")
    assert node.archive.instance_count() == 0
    assert_nothing_partial(node)

    filler.unlink()
    assert c_store(node, path, ExplicitVRLittleEndian).Status == dimse_status.SUCCESS
    [stored] = node.archive.instances_by_uid([pydicom.dcmread(path).SOPInstanceUID])
    kept = node.archive.read_bytes(stored)
    assert kept[dataset_offset(kept) :] == data[dataset_offset(data) :]  # the node writes its own file meta
    assert_nothing_partial(node)


def test_full_disk_answers_stow_503_and_stores_again_once_space_returns(radpilot_factory, small_disk: Path, tmp_path: Path) -> None:  # noqa: ANN001
    node = radpilot_factory(min_free_bytes=0)
    filler = fill(small_disk)
    _, data = instance(tmp_path, "one.dcm")
    response = stow(node, data)
    assert response.status_code == 503 and response.headers["retry-after"]
    reason, text = failure(response)
    assert reason == dimse_status.OUT_OF_RESOURCES and text.startswith("archive disk full")
    assert_nothing_partial(node)

    filler.unlink()
    assert stow(node, data).status_code == 200
    assert node.archive.instance_count() == 1
    assert_nothing_partial(node)


def test_free_space_reserve_refuses_before_writing_on_a_real_small_disk(radpilot_factory, small_disk: Path, tmp_path: Path) -> None:  # noqa: ANN001
    node = radpilot_factory(min_free_bytes=1024**2)
    filler = fill(small_disk, leave=1024**2 + 16 * 1024)  # room for the file (33 KiB), not for the file and the reserve
    path, _ = instance(tmp_path, "one.dcm")
    status = c_store(node, path, ExplicitVRLittleEndian)
    assert status.Status == dimse_status.OUT_OF_RESOURCES and "reserve" in status.ErrorComment
    assert_nothing_partial(node)
    filler.unlink()
    assert c_store(node, path, ExplicitVRLittleEndian).Status == dimse_status.SUCCESS


def test_free_space_reserve_answers_out_of_resources_on_any_disk(radpilot_factory, tmp_path: Path) -> None:  # noqa: ANN001
    node = radpilot_factory(min_free_bytes=2**62)  # more than any disk has free
    path, data = instance(tmp_path, "one.dcm")
    status = c_store(node, path, ExplicitVRLittleEndian)
    assert status.Status == dimse_status.OUT_OF_RESOURCES and status.ErrorComment.startswith("archive disk full: below the min_free_bytes")
    response = stow(node, data)
    assert response.status_code == 503
    assert node.archive.instance_count() == 0 and not [f for f in on_disk(node.archive) if f.endswith(".dcm")]
    node.archive.min_free_bytes = 0  # the administrator frees space (or lowers the reserve)
    assert c_store(node, path, ExplicitVRLittleEndian).Status == dimse_status.SUCCESS


# -- oversized datasets over DIMSE ---------------------------------------------------------


def test_dataset_beyond_the_dimse_limit_ends_the_association_and_nothing_is_stored(radpilot_factory, tmp_path: Path) -> None:  # noqa: ANN001
    node = radpilot_factory(dicom_max_dataset_bytes=64 * 1024)
    big = tmp_path / "big.dcm"
    big.write_bytes(to_part10_bytes(make_ct_dataset(rows=256, columns=256)))  # 128 KiB of pixels, in 16 KiB PDUs
    ae = AE(ae_title="OVERSIZE")
    assoc = ae.associate("127.0.0.1", node.dicom_port, [build_context(CTImageStorage, [ExplicitVRLittleEndian])], ae_title=node.ae_title)
    assert assoc.is_established
    status = assoc.send_c_store(big)
    assert "Status" not in status, "the node must not read the dataset to its end"
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)  # the requestor's thread notices the closed connection
    assert not assoc.is_established
    assert node.archive.instance_count() == 0
    assert_nothing_partial(node)
    small = tmp_path / "small.dcm"
    small.write_bytes(to_part10_bytes(make_ct_dataset(rows=64, columns=64)))
    assert c_store(node, small, ExplicitVRLittleEndian).Status == dimse_status.SUCCESS
