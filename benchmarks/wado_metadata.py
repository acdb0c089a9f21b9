"""What keeping WADO-RS metadata at ingest costs and gains, measured side by side in one process.

1. Ingest: the same real CT instances (512x512, ../shared/data/ct-lung, as Explicit VR
   Little Endian with fresh UIDs) are stored into two archives in alternating rounds:
   one keeps each instance's metadata (as RadPilot does), one does not (as before).
   Median milliseconds per instance and the ratio.
2. Series metadata: the whole series' DICOM JSON as WADO-RS builds it, from the kept
   documents against read from every file (the code path before metadata was kept),
   repeated alternately; median and ratio. No HTTP: ``benchmarks/dicom_node.py`` measures
   the served answer against Orthanc.

Usage: .venv/bin/python benchmarks/wado_metadata.py [--instances 256] [--rounds 5]
Writes benchmarks/results/wado_metadata.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from radpilot.archive import Archive, StoreOutcome  # noqa: E402
from radpilot.pacs.dicomweb import wado  # noqa: E402
from tests.helpers import shared_data_path  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def ct_templates(count: int) -> list[pydicom.Dataset]:
    files = sorted((shared_data_path() / "ct-lung" / "LUNGCT-002" / "dicom").glob("*.dcm"))
    if not files:
        sys.exit(f"no CT files under {shared_data_path() / 'ct-lung'}; set RADPILOT_SHARED_DATA")
    templates = []
    for index in range(count):
        ds = pydicom.dcmread(files[index % len(files)])
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        templates.append(ds)
    return templates


def new_series(templates: list[pydicom.Dataset]) -> list[bytes]:
    """The templates as one new series (fresh UIDs), as Part 10 bytes."""
    study, series = generate_uid(), generate_uid()
    out = []
    for number, ds in enumerate(templates, start=1):
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, number
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def store_ms_per_instance(archive: Archive, series: list[bytes]) -> float:
    started = time.perf_counter()
    for data in series:
        result = archive.store_file_bytes(data)
        if result.outcome is not StoreOutcome.STORED:
            raise RuntimeError(result.message)
    return (time.perf_counter() - started) * 1000 / len(series)


def series_metadata_ms(archive: Archive, study: str, series: str, from_files: bool) -> tuple[float, int]:
    """Milliseconds to build the series' metadata array (index query included) and its size in bytes."""
    started = time.perf_counter()
    entries = archive.metadata_entries(study, series)
    if from_files:
        entries = [dataclasses.replace(e, document=None, bulk_data_threshold=None) for e in entries]
        body = b"[" + b",".join(wado.metadata_document(archive, e, archive.metadata_threshold) for e in entries) + b"]"
    else:
        urls = [f"http://host/dicomweb/studies/{study}/series/{series}/instances/{e.instance.sop_instance_uid}" for e in entries]
        body = b"".join(wado.metadata_stream(archive, entries, urls, archive.metadata_threshold))
    return (time.perf_counter() - started) * 1000, len(body)


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(samples), 3), "min": round(min(samples), 3), "max": round(max(samples), 3), "n": len(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--durability", default="file", choices=("full", "file", "none"))
    args = parser.parse_args()
    templates = ct_templates(args.instances)
    work = Path(tempfile.mkdtemp(prefix="radpilot-wado-metadata-"))
    # The default durability ("file": one sync per instance), as a server runs: the metadata is built while the file syncs.
    keeping = Archive(work / "keeping", f"sqlite:///{work / 'keeping.sqlite3'}", durability=args.durability)
    plain = Archive(work / "plain", f"sqlite:///{work / 'plain.sqlite3'}", durability=args.durability)
    plain._metadata_of = lambda data, parsed: None  # type: ignore[method-assign]  # the archive as it was before
    ingest: dict[str, list[float]] = {"keeping_metadata": [], "not_keeping": []}
    try:
        last = None
        for round_ in range(args.rounds):
            order = [("keeping_metadata", keeping), ("not_keeping", plain)]
            for name, archive in order if round_ % 2 == 0 else reversed(order):
                series = new_series(templates)
                ingest[name].append(store_ms_per_instance(archive, series))
                if archive is keeping:
                    last = pydicom.dcmread(io.BytesIO(series[0]), stop_before_pixels=True)
            print(f"round {round_}: " + ", ".join(f"{k} {v[-1]:.2f} ms/instance" for k, v in ingest.items()))
        assert last is not None
        study, series_uid = str(last.StudyInstanceUID), str(last.SeriesInstanceUID)
        metadata: dict[str, list[float]] = {"kept": [], "read_from_files": []}
        sizes = {}
        for repeat in range(args.rounds * 2 + 1):
            for name in ("kept", "read_from_files") if repeat % 2 == 0 else ("read_from_files", "kept"):
                elapsed, sizes[name] = series_metadata_ms(keeping, study, series_uid, from_files=name == "read_from_files")
                if repeat:  # the first is the warm-up
                    metadata[name].append(elapsed)
    finally:
        keeping.close()
        plain.close()
        shutil.rmtree(work, ignore_errors=True)
    ingest_ms = {name: summary(values) for name, values in ingest.items()}
    metadata_ms = {name: summary(values) for name, values in metadata.items()}
    result = {
        "benchmark": "wado_metadata",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "instances_per_series": args.instances,
        "durability": args.durability,
        "ingest_ms_per_instance": ingest_ms,
        "ingest_ratio_keeping_over_not_keeping": round(ingest_ms["keeping_metadata"]["median"] / ingest_ms["not_keeping"]["median"], 3),
        "series_metadata_ms": metadata_ms,
        "series_metadata_bytes": sizes,
        "series_metadata_ratio_read_from_files_over_kept": round(
            metadata_ms["read_from_files"]["median"] / metadata_ms["kept"]["median"], 1
        ),
        "notes": "In-process, SQLite, the same durability for both archives. Ingest: store_file_bytes per instance "
        "(parse, hash, write, index). Series metadata: index query plus the JSON array of all instances.",
    }
    print(json.dumps({k: result[k] for k in list(result)[4:-1]}, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "wado_metadata.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
