"""Voice commands on short push-to-talk clips: how many are recognised, and how many short dictated phrases
are taken for a command, with and without commands by rescoring (radpilot.dictation.service).

Clips are spoken by espeak-ng: each command of the report editor and short phrases radiologists dictate on
their own ("No change.", "I agree."), plus noise bursts, in voices split in two:

* ``dev``: en-us at 140 wpm and en-gb at 175 wpm, the clips the rescoring thresholds were chosen on;
* ``heldout``: five other voices and speeds, and short phrases not used to choose them.

Both configurations run in one process on the same audio and the same loaded model. espeak-ng speech is
cleaner than a radiologist's: this ranks configurations, it does not predict real-speech accuracy.

Usage: ``.venv/bin/python benchmarks/dictation_commands.py``. Writes benchmarks/results/dictation_commands.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from radpilot.config import Settings  # noqa: E402
from radpilot.dictation import Dictation  # noqa: E402
from radpilot.dictation.audio import SAMPLE_RATE, AudioError, decode_audio  # noqa: E402
from tests.dictation_support import speak  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "dictation_commands.json"
# (spoken, expected command, expected argument)
COMMANDS = (
    ("Accept AI findings.", "accept_ai_findings", None),
    ("Undo.", "undo", None),
    ("Undo that.", "undo", None),
    ("Scratch that.", "undo", None),
    ("Delete that.", "undo", None),
    ("Sign report.", "sign", None),
    ("Go to findings.", "go_to_section", "findings"),
    ("Go to impression.", "go_to_section", "impression"),
    ("Insert normal.", "insert_normal", None),
    ("Insert template chest CT.", "insert_template", None),
)
SHORT_TEXT = {
    "dev": (
        "No change.",
        "Normal.",
        "Stable.",
        "Unremarkable.",
        "No acute findings.",
        "As above.",
        "Clear lungs.",
        "Heart size normal.",
        "I agree.",
        "Findings as described.",
    ),
    "heldout": (
        "No interval change.",
        "Lungs are clear.",
        "Unchanged.",
        "Nothing further.",
        "See above.",
        "Agreed.",
        "Mild cardiomegaly.",
        "No effusion.",
        "Degenerative change.",
        "Within normal limits.",
    ),
}
VOICES = {
    "dev": (("en-us", 140), ("en-gb", 175)),
    "heldout": (("en-us+m7", 150), ("en-gb-x-rp", 165), ("en-029", 145), ("en-us+f4", 155), ("en-gb-x-gbclan", 185)),
}
NOISE_BURSTS = 4  # per split: white noise at speech level, 0.5-2 s
NOISE_SEEDS = {"dev": 100, "heldout": 200}  # fixed: the same bursts on every run


def noise_clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def clips_of(split: str, folder: Path) -> list[dict[str, Any]]:
    clips: list[dict[str, Any]] = []
    for voice, speed in VOICES[split]:
        for spoken, command, argument in COMMANDS:
            path = speak(spoken, folder / f"{voice}_{speed}_{len(clips):03d}.wav", voice=voice, words_per_minute=speed)
            clips.append(
                {"voice": f"{voice} {speed}", "kind": "command", "spoken": spoken, "command": command, "argument": argument, "path": path}
            )
        for spoken in SHORT_TEXT[split]:
            path = speak(spoken, folder / f"{voice}_{speed}_{len(clips):03d}.wav", voice=voice, words_per_minute=speed)
            clips.append({"voice": f"{voice} {speed}", "kind": "text", "spoken": spoken, "path": path})
    for k in range(NOISE_BURSTS):
        clips.append({"voice": "noise", "kind": "noise", "spoken": "", "audio": noise_clip(0.5 + 0.5 * k, seed=NOISE_SEEDS[split] + k)})
    return clips


def outcome(dictation: Dictation, clip: dict[str, Any], audio: np.ndarray) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = dictation.transcribe(audio, exam="chest_xray")
    except AudioError as exc:
        return {"heard": "", "commands": [], "error": str(exc), "seconds": time.perf_counter() - started}
    commands = [(c["command"], c.get("argument")) for c in result.commands]
    return {"heard": result.raw_text, "text": result.text, "commands": commands, "seconds": time.perf_counter() - started}


def judged(clip: dict[str, Any], result: dict[str, Any]) -> str:
    if clip["kind"] == "command":
        if not result["commands"]:
            return "missed"
        kind, argument = result["commands"][0]
        right = kind == clip["command"] and (clip["argument"] is None or argument == clip["argument"])
        return "recognised" if right and len(result["commands"]) == 1 else "wrong command"
    return "false command" if result["commands"] else "kept"


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    commands = [r for r in rows if r["kind"] == "command"]
    others = [r for r in rows if r["kind"] != "command"]
    return {
        "commands": len(commands),
        "recognised": sum(r["judged"] == "recognised" for r in commands),
        "wrong_command": sum(r["judged"] == "wrong command" for r in commands),
        "missed": sum(r["judged"] == "missed" for r in commands),
        "short_texts_and_noise": len(others),
        "false_commands": sum(r["judged"] == "false command" for r in others),
        "median_seconds_per_clip": round(float(np.median([r["seconds"] for r in rows])), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    configurations = {
        "without_rescoring": Dictation(Settings(dictation_command_rescoring=False)),
        "with_rescoring": Dictation(Settings(dictation_command_rescoring=True)),
    }
    results: dict[str, Any] = {"splits": {}, "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        for split in ("dev", "heldout"):
            clips = clips_of(split, Path(tmp))
            rows: dict[str, list[dict[str, Any]]] = {name: [] for name in configurations}
            for clip in clips:
                audio = clip["audio"] if "audio" in clip else decode_audio(clip["path"], max_seconds=60)
                for name, dictation in configurations.items():  # alternated clip by clip
                    result = outcome(dictation, clip, audio)
                    row = {k: v for k, v in clip.items() if k not in ("path", "audio")} | result
                    row["judged"] = judged(clip, result)
                    rows[name].append(row)
            results["splits"][split] = {name: {"summary": summary(r), "clips": r} for name, r in rows.items()}
            for name, r in rows.items():
                print(f"{split:8s} {name:18s} {summary(r)}")
            for without, with_ in zip(rows["without_rescoring"], rows["with_rescoring"], strict=True):
                if without["judged"] != with_["judged"]:
                    print(
                        f"  {with_['voice']:22s} {with_['spoken']!r:28s} heard {with_['heard']!r}: {without['judged']} -> {with_['judged']}"
                    )
    results["load_average_after"] = os.getloadavg()
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str))
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
