"""Dictation accuracy and speed on held-out radiology sentences spoken by espeak-ng.

The sentences (benchmarks/data/dictation_heldout_en.txt, none of them in the lexicon) are
synthesised in two voices at two speeds. Every hypothesis and every reference goes through the
same report-form formatter before the word error rate (jiwer) is computed, so "7 mm" and
"seven millimeters" are the same words. Side by side, on the same audio:

* ``no_prompt``: the recogniser without the lexicon prompt, formatted;
* ``prompt``: with the exam's lexicon prompt, formatted, no near-miss correction;
* ``prompt_corrected``: prompt + near-miss correction + formatting (what RadPilot returns);
* ``prompt_unformatted``: the recogniser's own text with the prompt, compared with the report
  form as it is (what formatting buys).

Speed: the real-time factor of one ``radpilot dictate --json`` process over all the clips of a
voice (wall time, Python start and model loading included, divided by the audio's length), and
the streaming endpoint's latency: clips sent at real-time pace over the WebSocket, time from
the first speech sample sent to the first partial text received.

espeak-ng speech is far cleaner and more monotonous than a radiologist's: this ranks the
configurations; it does not predict the error rate on real speech. The machine's two cores are
shared, so the JSON records the load average next to the times.

Usage: ``.venv/bin/python benchmarks/dictation_wer.py [--sample N] [--stream-clips N]``.
Writes benchmarks/results/dictation_wer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SENTENCES = REPO / "benchmarks" / "data" / "dictation_heldout_en.txt"
RESULTS = REPO / "benchmarks" / "results" / "dictation_wer.json"
VOICES = ("en-us", "en-gb")
SPEEDS = (140, 175)  # words per minute: measured dictation pace and a fast reader
EXAM_OF = {"liver": "abdomen_ct", "spleen": "abdomen_ct", "bile": "abdomen_ct", "kidney": "abdomen_ct", "ascites": "abdomen_ct"}
CARDIAC = ("coronary", "ventricular", "aorta", "pericardial", "atrium", "anterior descending")


def exam_for(sentence: str) -> str:
    lower = sentence.lower()
    if any(word in lower for word in CARDIAC):
        return "cardiac_ct"
    if any(word in lower for word in EXAM_OF):
        return "abdomen_ct"
    if "cardiothoracic" in lower or "costophrenic" in lower or "endotracheal" in lower:
        return "chest_xray"
    return "chest_ct"


def load_sentences(path: Path = SENTENCES) -> list[str]:
    sentences = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    from radpilot.dictation.lexicon import load_lexicon

    examples = {e.strip().lower() for v in load_lexicon().values() for e in v.examples}
    leaked = [s for s in sentences if s.lower() in examples]
    if leaked:
        raise SystemExit(f"held-out sentences found in the lexicon's examples: {leaked}")
    return sentences


def wer_words(text: str) -> str:
    """Lower case, sentence punctuation removed (a decimal point, %, x and units stay words)."""
    text = text.lower().replace("\n", " ")
    text = re.sub(r"(?<!\d)[.,;:!?()]|[.,;:!?()](?!\d)", " ", text)
    return " ".join(text.split())


def synthesise(sentences: list[str], folder: Path) -> list[dict[str, Any]]:
    clips = []
    for voice in VOICES:
        for speed in SPEEDS:
            for index, sentence in enumerate(sentences):
                path = folder / f"{voice}_{speed}_{index:02d}.wav"
                subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), sentence], check=True)
                clips.append({"path": path, "voice": voice, "speed": speed, "index": index, "sentence": sentence})
    return clips


def dictate_batch(paths: list[Path], exam: str) -> tuple[list[dict[str, Any]], float]:
    """One ``radpilot dictate --json`` process over ``paths``: its results and wall time (start-up and model load included)."""
    command = [sys.executable, "-c", "from radpilot.cli import app; app()", "dictate", "--json", "--exam", exam, *map(str, paths)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"radpilot dictate failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout[done.stdout.index("[") :]), seconds


def streaming_latency(clips: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send clips at real-time pace over the WebSocket; time from the first speech sample sent to the first partial text."""
    import numpy as np
    from fastapi.testclient import TestClient

    from radpilot.archive import Archive
    from radpilot.config import Settings
    from radpilot.dictation.audio import SAMPLE_RATE, decode_audio
    from radpilot.security.principal import Role
    from radpilot.security.tokens import create_token
    from radpilot.web.app import create_app

    measurements = []
    chunk_samples = SAMPLE_RATE // 10  # the browser sends about every 100 ms
    with tempfile.TemporaryDirectory() as tmp:
        archive = Archive(Path(tmp) / "dicom", f"sqlite:///{Path(tmp) / 'index.db'}", durability="none")
        app = create_app(Settings(data_dir=Path(tmp) / "data", ohif_dir=Path(tmp) / "none"), archive)
        token = create_token(archive.engine, "dictation-benchmark", Role.RADIOLOGIST, by="benchmark")
        with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
            for clip in clips:
                audio = decode_audio(clip["path"], max_seconds=60)
                onset = int(np.argmax(np.abs(audio) > 0.02))  # first sample of speech
                pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
                sent_onset: list[float] = []
                with client.websocket_connect(f"/api/dictation/stream?exam={exam_for(clip['sentence'])}") as socket:
                    assert socket.receive_json()["type"] == "ready"

                    def sender(socket: Any = socket, pcm: bytes = pcm, onset: int = onset, sent_onset: list[float] = sent_onset) -> None:
                        start = time.perf_counter()
                        for i, offset in enumerate(range(0, len(pcm), chunk_samples * 2)):
                            time.sleep(max(0.0, start + i * 0.1 - time.perf_counter()))
                            socket.send_bytes(pcm[offset : offset + chunk_samples * 2])
                            if not sent_onset and (offset // 2 + chunk_samples) > onset:
                                sent_onset.append(time.perf_counter())
                        socket.send_json({"type": "end"})  # the talk button is released

                    thread = threading.Thread(target=sender)
                    thread.start()
                    first_partial = None
                    message: dict[str, Any] = {"type": ""}
                    while message["type"] not in {"final", "error"}:
                        message = socket.receive_json()
                        if message["type"] == "partial" and first_partial is None:
                            first_partial = time.perf_counter()
                    thread.join()
                latency = first_partial - sent_onset[0] if first_partial and sent_onset else None
                measurements.append({"clip": clip["path"].name, "first_partial_s": latency, "final_text": message.get("text")})
        archive.close()
    return measurements


def measure(
    model: str,
    clips: list[dict[str, Any]],
    audio_s: dict[Path, float],
    stream_clips_n: int,
    load_before: tuple[float, ...],
    *,
    baseline: bool = True,
) -> dict[str, Any]:
    """Accuracy and speed of one dictation model on the synthesised clips."""
    from jiwer import wer

    from radpilot.config import Settings
    from radpilot.dictation import Dictation, report_form, vocabulary_for
    from radpilot.dictation.audio import decode_audio
    from radpilot.dictation.formatting import format_english

    os.environ["RADPILOT_DICTATION_MODEL_EN"] = model  # the `radpilot dictate` processes and the web app read it
    print(f"--- model {model}", flush=True)
    # The product, as a user runs it: one `radpilot dictate` process per exam type over all its clips.
    batches = []
    for exam in sorted({exam_for(c["sentence"]) for c in clips}):
        members = [c for c in clips if exam_for(c["sentence"]) == exam]
        cpu_before = os.times()
        results, wall = dictate_batch([c["path"] for c in members], exam)
        cpu_after = os.times()
        cpu = (cpu_after.children_user - cpu_before.children_user) + (cpu_after.children_system - cpu_before.children_system)
        for clip, result in zip(members, results):
            clip["product"] = result
        audio_total = sum(audio_s[c["path"]] for c in members)
        batches.append(
            {
                "exam": exam,
                "clips": len(members),
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "audio_s": round(audio_total, 2),
                "rtf": round(wall / audio_total, 3),
                "cpu_per_audio_s": round(cpu / audio_total, 3),
            }
        )
        print(
            f"batch {exam}: {len(members)} clips, {wall:.1f} s wall ({cpu:.1f} s CPU) for {audio_total:.1f} s of audio, "
            f"RTF {wall / audio_total:.3f} (CPU {cpu / audio_total:.3f}), load {os.getloadavg()[0]:.1f}",
            flush=True,
        )

    # The same audio without the prompt (in this process; only accuracy is compared).
    backend = Dictation(Settings()).backend("en") if baseline else None
    for clip in clips:
        audio = decode_audio(clip["path"], max_seconds=60)
        clip["no_prompt_raw"] = backend.transcribe(audio, language="en", prompt=None).text if backend else ""

    rows = []
    for clip in clips:
        vocabulary = vocabulary_for(exam_for(clip["sentence"]))
        reference = wer_words(format_english(clip["sentence"]))
        product = clip["product"]
        raw = product.get("raw_text", "")
        hyp = {
            "no_prompt": report_form(clip["no_prompt_raw"], language="en", vocabulary=vocabulary, correct=False)[0],
            "prompt": report_form(raw, language="en", vocabulary=vocabulary, correct=False)[0],
            "prompt_corrected": product.get("text", ""),
            "prompt_unformatted": raw,
        }
        rows.append(
            {
                "clip": clip["path"].name,
                "voice": clip["voice"],
                "speed": clip["speed"],
                "reference": reference,
                **{f"hyp_{k}": wer_words(v) for k, v in hyp.items()},
            }
        )

    conditions = (
        ("no_prompt", "prompt", "prompt_corrected", "prompt_unformatted")
        if baseline
        else ("prompt", "prompt_corrected", "prompt_unformatted")
    )
    summary: dict[str, Any] = {}
    for condition in conditions:
        overall = wer([r["reference"] for r in rows], [r[f"hyp_{condition}"] for r in rows])
        per_group = {
            f"{v}_{s}": round(
                wer(
                    [r["reference"] for r in rows if r["voice"] == v and r["speed"] == s],
                    [r[f"hyp_{condition}"] for r in rows if r["voice"] == v and r["speed"] == s],
                ),
                4,
            )
            for v in VOICES
            for s in SPEEDS
        }
        summary[condition] = {"wer": round(overall, 4), "by_voice_speed": per_group}
        print(f"WER {condition:20s} {overall:.3f}  " + "  ".join(f"{k} {w:.3f}" for k, w in per_group.items()), flush=True)

    stream_clips = [c for c in clips if c["voice"] == "en-us" and c["speed"] == SPEEDS[0]][:stream_clips_n]
    stream = streaming_latency(stream_clips) if stream_clips else []
    latencies = [m["first_partial_s"] for m in stream if m["first_partial_s"] is not None]
    if latencies:
        print(
            f"streaming first partial after speech onset: median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s",
            flush=True,
        )

    rtfs = [b["rtf"] for b in batches]
    report = {
        "benchmark": "dictation_wer",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "model": model,
        "sentences": len({c["sentence"] for c in clips}),
        "voices": VOICES,
        "speeds_wpm": SPEEDS,
        "clips": len(rows),
        "wer": summary,
        "batch_rtf": {
            "overall": round(sum(b["wall_s"] for b in batches) / sum(b["audio_s"] for b in batches), 3),
            "overall_cpu_per_audio_s": round(sum(b["cpu_s"] for b in batches) / sum(b["audio_s"] for b in batches), 3),
            "median": statistics.median(rtfs),
            "max": max(rtfs),
            "runs": batches,
        },
        "streaming": {
            "first_partial_median_s": statistics.median(latencies) if latencies else None,
            "first_partial_max_s": max(latencies) if latencies else None,
            "clips": stream,
        },
        "targets": {"wer_formatted": 0.10, "batch_rtf": 0.5, "first_partial_s": 1.0},
        "rows": rows,
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=0, help="use N sentences spread evenly over the list (0: all)")
    parser.add_argument("--stream-clips", type=int, default=6, help="clips sent over the WebSocket for the latency figure")
    parser.add_argument(
        "--models",
        default="",
        help="comma-separated dictation models measured side by side on the same audio (default: the configured one)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the recogniser-without-prompt pass (halves the time)")
    parser.add_argument(
        "--sentences",
        type=Path,
        default=SENTENCES,
        help="sentence file (default: the held-out set; benchmarks/data/dictation_dev_en.txt is the set to tune on)",
    )
    args = parser.parse_args()

    from radpilot.config import Settings
    from radpilot.dictation.audio import SAMPLE_RATE, decode_audio

    models = [m.strip() for m in args.models.split(",") if m.strip()] or [Settings().dictation_model_en]

    sentences = load_sentences(args.sentences)
    if args.sample and args.sample < len(sentences):
        step = len(sentences) / args.sample
        sentences = [sentences[int(i * step)] for i in range(args.sample)]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        clips = synthesise(sentences, Path(tmp))
        audio_s = {c["path"]: decode_audio(c["path"], max_seconds=60).size / SAMPLE_RATE for c in clips}
        reports = {model: measure(model, clips, audio_s, args.stream_clips, load_before, baseline=not args.no_baseline) for model in models}

    if len(reports) > 1:
        print(
            "side by side: "
            + "  ".join(
                f"{m} WER {r['wer']['prompt_corrected']['wer']:.3f} RTF {r['batch_rtf']['overall']:.3f}" for m, r in reports.items()
            )
        )
    report = reports[models[0]] if len(models) == 1 else {"benchmark": "dictation_wer", "models": reports}
    results = RESULTS if args.sentences == SENTENCES else RESULTS.with_name(f"dictation_wer_{args.sentences.stem}.json")
    report["sentences_file"] = str(args.sentences)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
