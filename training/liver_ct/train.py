"""Train one CV fold (``--fold 0..4``) or the shipped all-data model (``--fold -1``) of the liver/spleen U-Net.

Writes ``config.json``, ``log.jsonl`` (one record per epoch), ``last.pt`` (checkpoint every epoch) and, for a
CV fold, ``fold_metrics.json``: Dice and volumes per held-out patient on the native BTCV grid, computed with
the runtime post-processing (:func:`radpilot.analyses.liver_ct.preprocess.labels_from_logits`).
Run niced with one thread: ``nice -n 5 python training/liver_ct/train.py --fold 0 --minutes 8 --out runs/cv/fold0``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from data import Case, case_ids, folds, load_case
from model import build_model, count_parameters
from monai.losses import DiceCELoss
from torch.nn import functional as F

from radpilot.analyses.liver_ct.preprocess import LIVER, SPLEEN, labels_from_logits

CROP = 112
BATCH = 8


def dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(a, b).sum()) / denom


def sample_batch(cases: list[Case], rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(BATCH):
        case = cases[rng.integers(len(cases))]
        organ_slices = np.flatnonzero(case.y.reshape(case.y.shape[0], -1).any(axis=1))
        z = int(rng.choice(organ_slices)) if (rng.random() < 0.9 and organ_slices.size) else int(rng.integers(case.x.shape[0]))
        x, y = case.x[z].astype(np.float32), case.y[z]
        h, w = y.shape
        ph, pw = max(0, CROP - h), max(0, CROP - w)
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, ph), (0, pw)))
            y = np.pad(y, ((0, ph), (0, pw)))
            h, w = y.shape
        r0, c0 = int(rng.integers(h - CROP + 1)), int(rng.integers(w - CROP + 1))
        xs.append(x[:, r0 : r0 + CROP, c0 : c0 + CROP])
        ys.append(y[r0 : r0 + CROP, c0 : c0 + CROP])
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys).astype(np.int64))


def augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation +-10 deg, isotropic scale 0.85-1.2 (spacing and body size), shift +-10 %; contrast 0.9-1.1,
    brightness +-0.05 (about +-20 HU: scanners and contrast timing), Gaussian noise sigma <= 0.02. No flips."""
    n = x.shape[0]
    ang = torch.from_numpy(rng.uniform(-10, 10, n) * math.pi / 180).float()
    scale = torch.from_numpy(rng.uniform(0.85, 1.2, n)).float()
    shift = torch.from_numpy(rng.uniform(-0.1, 0.1, (n, 2))).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(ang) / scale
    theta[:, 0, 1] = -torch.sin(ang) / scale
    theta[:, 1, 0] = torch.sin(ang) / scale
    theta[:, 1, 1] = torch.cos(ang) / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0].long()
    contrast = torch.from_numpy(rng.uniform(0.9, 1.1, (n, 1, 1, 1))).float()
    bright = torch.from_numpy(rng.uniform(-0.05, 0.05, (n, 1, 1, 1))).float()
    sigma = torch.from_numpy(rng.uniform(0, 0.02, (n, 1, 1, 1))).float()
    x = (x * contrast + bright + torch.randn_like(x) * sigma).clamp(0, 1)
    return x, y


def _soft(mask: torch.Tensor, width: int = 5) -> torch.Tensor:
    """(H, W) bool -> (H, W) float in 0..1 with a ramp of ``width`` pixels at the edge (box blur)."""
    return F.avg_pool2d(mask[None, None].float(), width, stride=1, padding=width // 2, count_include_pad=False)[0, 0]


def organ_augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Label-aware intensity augmentation, before the geometric one (x (N, 3, H, W) in 0..1, y (N, H, W)).

    1. Organ attenuation (probability 0.5 per slice): liver and spleen each shifted by its own offset,
       +-0.125 (+-50 HU), feathered at the edge. Phase, fat and disease move the two organs' attenuation
       independently; BTCV-0007's spleen is darker than its liver and the model, which had learned "the
       spleen is at least as bright as the liver", missed it (Dice 0.09).
    2. Synthetic focal lesions (probability 0.3 per slice with liver): 1-3 ellipses of 4-22 px radius (8-44 mm) centred
       in the liver, 0.05-0.25 (20-100 HU) darker, soft-edged, clipped to the feathered liver, and still labelled
       liver: manual liver masks include tumours, and the IRCAD patient's two large hypodense tumours were left out.
    The same change is applied to the three channels (neighbouring slices) alike.
    """
    x = x.clone()
    rows, cols = torch.meshgrid(torch.arange(x.shape[2]), torch.arange(x.shape[3]), indexing="ij")
    for i in range(x.shape[0]):
        if rng.random() < 0.5:
            for organ in (LIVER, SPLEEN):
                mask = y[i] == organ
                if mask.any():
                    x[i] += float(rng.uniform(-0.125, 0.125)) * _soft(mask)[None]
        liver = y[i] == LIVER
        if rng.random() < 0.3 and int(liver.sum()) > 50:
            inside = _soft(liver, 7)
            candidates = torch.nonzero(liver)
            for _ in range(int(rng.integers(1, 4))):
                r0, c0 = candidates[int(rng.integers(len(candidates)))].tolist()
                a, b = rng.uniform(4, 22, 2)
                angle = rng.uniform(0, math.pi)
                u = (rows - r0) * math.cos(angle) + (cols - c0) * math.sin(angle)
                v = -(rows - r0) * math.sin(angle) + (cols - c0) * math.cos(angle)
                blob = _soft((u / a) ** 2 + (v / b) ** 2 <= 1.0, 3)
                x[i] -= float(rng.uniform(0.05, 0.25)) * (blob * inside)[None]
    return x.clamp(0, 1)


@torch.no_grad()
def predict_case(model: torch.nn.Module, case: Case, chunk: int = 16) -> np.ndarray:
    model.eval()
    outs = []
    for i in range(0, case.x.shape[0], chunk):
        outs.append(model(torch.from_numpy(case.x[i : i + chunk].astype(np.float32))).numpy())
    return labels_from_logits(np.concatenate(outs), case.model_rc, case.labels.shape[1:])


def evaluate(model: torch.nn.Module, cases: list[Case]) -> list[dict]:
    rows = []
    for case in cases:
        pred = predict_case(model, case)
        ml = case.spacing_zrc[0] * case.spacing_zrc[1] * case.spacing_zrc[2] / 1000.0
        row = {"case_id": case.case_id}
        for name, label in (("liver", LIVER), ("spleen", SPLEEN)):
            ref, out = case.labels == label, pred == label
            row[f"{name}_dice"] = dice(ref, out)
            row[f"{name}_ml_ref"] = float(ref.sum() * ml)
            row[f"{name}_ml_pred"] = float(out.sum() * ml)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--minutes", type=float, default=8.0, help="wall-clock training budget; the schedule is sized from it")
    ap.add_argument("--steps", type=int, default=0, help="fixed number of steps (overrides --minutes)")
    ap.add_argument("--stop-at", type=int, default=0, help="stop (with a checkpoint) at this step, keeping the --steps schedule")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="2 cases, 3 steps (tests)")
    ap.add_argument(
        "--organ-augment", action="store_true", help="label-aware organ attenuation shifts and synthetic lesions (organ_augment)"
    )
    ap.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="continue from this last.pt (weights; fresh optimizer): 10 warm-up steps to the learning rate the first "
        "schedule had reached, then cosine to 0 at --steps (the total, counting the steps already done)",
    )
    ap.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start from the weights of this finished run's last.pt, with a fresh optimizer and a fresh schedule of "
        "--steps steps (warm restart: 5 %% warm-up to --lr, then cosine to 0); use another --seed so the batches differ",
    )
    args = ap.parse_args()
    if args.init_from is not None and args.resume is not None:
        ap.error("--init-from and --resume are exclusive")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    ids = case_ids()
    if args.quick:
        ids = ids[:2]
    if args.fold >= 0:
        held = folds(ids)[args.fold] if not args.quick else ids[:1]
    else:
        held = []
    train_ids = [c for c in ids if c not in held]
    t0 = time.time()
    train_cases = [load_case(c) for c in train_ids]
    held_cases = [load_case(c) for c in held]
    config = {
        "fold": args.fold,
        "train_cases": train_ids,
        "held_out_cases": held,
        "channels": [12, 24, 48, 96, 192],
        "crop": CROP,
        "batch": BATCH,
        "lr": args.lr,
        "seed": args.seed,
        "threads": args.threads,
        "loss": "monai DiceCELoss(softmax, one-hot, background excluded, Dice over the batch) = CE + (1 - mean soft Dice liver/spleen)",
        "optimizer": "AdamW weight_decay 1e-4, 5 % linear warm-up then cosine to 0 per step",
        "organ_augment": bool(args.organ_augment),
    }
    model = build_model(config)
    start, resume_lr = 0, None
    if args.resume is not None:
        checkpoint = torch.load(args.resume, map_location="cpu", weights_only=True)
        model.load_state_dict(checkpoint["state_dict"])
        start = int(checkpoint["step"])
        first_total = int(checkpoint["config"]["steps"])
        first_warm = max(1, first_total // 20)
        resume_lr = args.lr * 0.5 * (1 + math.cos(math.pi * (start - first_warm) / max(1, first_total - first_warm)))
        config["resumed"] = {"from_step": start, "first_schedule_steps": first_total, "lr_at_resume": resume_lr}
        print(f"resumed at step {start} (first schedule {first_total} steps), lr {resume_lr:.2e}", flush=True)
    if args.init_from is not None:
        checkpoint = torch.load(args.init_from, map_location="cpu", weights_only=True)
        if checkpoint["config"]["fold"] != args.fold:
            raise SystemExit(f"{args.init_from} was trained for fold {checkpoint['config']['fold']}, not {args.fold}")
        model.load_state_dict(checkpoint["state_dict"])
        config["initialised_from"] = {
            "checkpoint": str(args.init_from),
            "steps": int(checkpoint["step"]),
            "lr": checkpoint["config"]["lr"],
            "seed": checkpoint["config"]["seed"],
        }
        print(f"initialised from {args.init_from} ({checkpoint['step']} steps)", flush=True)
    config["parameters"] = count_parameters(model)
    print(f"loaded {len(train_cases)} train / {len(held_cases)} held-out cases in {time.time() - t0:.1f}s", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)

    # size the schedule from the measured speed of the first steps
    total = 3 if args.quick else args.steps
    step, log_every, losses = start, 25, []
    t_train = time.time()
    budget_s = args.minutes * 60.0
    log = (args.out / "log.jsonl").open("a")
    while True:
        if total == 0 and step == start + 20:
            per_step = (time.time() - t_train) / 20
            total = max(40, int(budget_s / per_step))
            print(f"{per_step:.2f}s/step -> {total} steps", flush=True)
        planned = total or 10**9
        if resume_lr is not None:
            k = step - start
            lr = resume_lr * (k + 1) / 10 if k < 10 else resume_lr * 0.5 * (1 + math.cos(math.pi * (k - 10) / max(1, planned - start - 10)))
        else:
            warm = max(1, planned // 20)
            lr = (
                args.lr * (step + 1) / warm
                if step < warm
                else args.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, planned - warm)))
            )
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        x, y = sample_batch(train_cases, rng)
        if args.organ_augment:
            x = organ_augment(x, y, rng)
        x, y = augment(x, y, rng)
        loss = loss_fn(model(x), y[:, None])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % log_every == 0 or step == total:
            rec = {
                "step": step,
                "total": total,
                "lr": lr,
                "loss": float(np.mean(losses[-log_every:])),
                "elapsed_s": round(time.time() - t_train, 1),
            }
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
            config["steps"] = total
            torch.save({"state_dict": model.state_dict(), "config": config, "step": step}, args.out / "last.pt")
        if (total and step >= total) or (args.stop_at and step >= args.stop_at):
            break
    config["steps"] = total
    config["train_seconds"] = round(time.time() - t_train, 1)
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    torch.save({"state_dict": model.state_dict(), "config": config, "step": step}, args.out / "last.pt")
    if held_cases:
        rows = evaluate(model, held_cases)
        summary = {k: float(np.mean([r[k] for r in rows])) for k in ("liver_dice", "spleen_dice")}
        (args.out / "fold_metrics.json").write_text(json.dumps({"fold": args.fold, "cases": rows, "mean": summary}, indent=2) + "\n")
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
