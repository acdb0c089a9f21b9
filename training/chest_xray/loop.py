"""The training loop shared by the chest radiograph trainers (``train.py``, ``nodules/train_nodules.py``).

Both train the same way: AdamW, a linear warm-up then a cosine decay to 0 set per step, the last
epoch kept (no checkpoint chosen on held-out cases).  A run folder holds ``config.json``,
``log.jsonl`` (one JSON record per epoch, also printed) and ``last.pt`` (state dict, config, epochs).
What differs between the models (their batches, their loss, their validation) is passed in.

Reproducibility: the loop itself draws no random numbers; the caller's batch iterator does, in
the order it yields batches, so a fixed seed and thread count give the same weights (see
``set_determinism``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

Batch = TypeVar("Batch")


def set_determinism(seed: int, threads: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    # torch.use_deterministic_algorithms(True) makes the CPU convolutions ~5x slower here (measured);
    # oneDNN's CPU kernels are repeatable for a fixed thread count, which the test checks instead.
    torch.use_deterministic_algorithms(False)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``base`` to 0 at step ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + np.cos(np.pi * progress))


def warmup_steps(warmup_epochs: int, steps_per_epoch: int, total_steps: int) -> int:
    """``warmup_epochs`` of steps, but at most a fifth of a short run."""
    return min(warmup_epochs * steps_per_epoch, max(total_steps // 5, 1))


def write_config(out: Path, config: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def format_record(record: dict) -> str:
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())


def train_epochs(
    model: torch.nn.Module,
    *,
    epochs: int,
    steps_per_epoch: int,
    lr: float,
    weight_decay: float,
    warmup_epochs: int,
    epoch_batches: Callable[[], Iterable[Batch]],
    batch_losses: Callable[[Batch], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    out: Path,
    config: dict,
    validate: Callable[[dict], dict] | None = None,
) -> None:
    """Train ``model`` for ``epochs`` and write ``out``/log.jsonl and ``out``/last.pt.

    ``epoch_batches()`` is called once per epoch and yields that epoch's training batches;
    ``batch_losses(batch)`` runs the model and returns the loss to minimise and the losses to
    log (their epoch means go into the epoch's record under their names); ``validate(record)``
    gets that record (epoch, losses, lr) and returns held-out metrics to add to it (an empty
    dict: none this epoch).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    total_steps = steps_per_epoch * epochs
    warmup = warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    log_path = out / "log.jsonl"
    log_path.write_text("")
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        started = time.perf_counter()
        logged: dict[str, list[float]] = {}
        for batch in epoch_batches():
            for group in optimizer.param_groups:
                group["lr"] = float(lr_at(step, total_steps, warmup, lr))
            optimizer.zero_grad(set_to_none=True)
            loss, parts = batch_losses(batch)
            loss.backward()
            optimizer.step()
            for name, value in parts.items():
                logged.setdefault(name, []).append(float(value.detach()))
            step += 1
        record = {
            "epoch": epoch,
            **{name: float(np.mean(values)) for name, values in logged.items()},
            "lr": optimizer.param_groups[0]["lr"],
            "train_seconds": round(time.perf_counter() - started, 2),
        }
        if validate is not None:
            record.update(validate(dict(record)))
        record["seconds"] = round(time.perf_counter() - started, 2)
        with open(log_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(format_record(record), flush=True)
    torch.save({"state_dict": model.state_dict(), "config": config, "epoch": epochs}, out / "last.pt")
