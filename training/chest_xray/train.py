"""Train the chest radiograph lung/heart U-Net on one cross-validation fold (or on all dev cases).

    nice -n 19 .venv-train/bin/python training/chest_xray/train.py --fold K --epochs N --seed S --out DIR

``--fold -1`` trains on all 199 dev cases (the shipped model; no validation, the last
epoch is kept).  ``--quick``: one tiny epoch on 4 images (for the unit test).
Writes DIR/config.json, DIR/log.jsonl (one line per epoch), DIR/last.pt and, with a
validation fold, DIR/best.pt (best mean validation Dice at 256 x 256).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import data  # noqa: E402
from augment import AugmentConfig, augment_batch  # noqa: E402
from loop import set_determinism, train_epochs, write_config  # noqa: E402
from model import build_model, count_parameters  # noqa: E402

DEFAULTS = {
    "channels": [8, 16, 32, 64, 128],
    "input_pool": 2,
    "batch_size": 8,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "warmup_epochs": 2,
    "dice_weight": 1.0,
    "ce_weight": 1.0,
}


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, ce_weight: float, dice_weight: float) -> torch.Tensor:
    ce = F.cross_entropy(logits, target)
    probs = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    soft_dice = (2 * intersection + 1.0) / (denominator + 1.0)
    return ce_weight * ce + dice_weight * (1.0 - soft_dice[1:].mean())


def dice_per_structure(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N,H,W) label maps -> (N,3) Dice for labels 1..3."""
    out = np.zeros((pred.shape[0], 3))
    for v in (1, 2, 3):
        p, t = pred == v, target == v
        inter = np.logical_and(p, t).sum((1, 2))
        total = p.sum((1, 2)) + t.sum((1, 2))
        out[:, v - 1] = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)
    return out


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start : start + batch_size]).contiguous(memory_format=torch.channels_last)
        outputs.append(model(x).float().numpy())
    return np.concatenate(outputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fold", type=int, required=True, help="held-out fold 0..4, or -1 to train on all dev cases")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split-seed", type=int, default=data.SPLIT_SEED)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--quick", action="store_true", help="one tiny epoch on 4 images (smoke test)")
    args = parser.parse_args(argv)

    set_determinism(args.seed, args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    cases = data.read_cases()
    folds = data.assign_folds(cases, seed=args.split_seed)
    if args.fold == -1:
        train_ids, val_ids = sorted(folds), []
    else:
        if not 0 <= args.fold < data.N_FOLDS:
            parser.error(f"--fold must be -1 or 0..{data.N_FOLDS - 1}")
        train_ids = sorted(c for c, f in folds.items() if f != args.fold)
        val_ids = sorted(c for c, f in folds.items() if f == args.fold)
    epochs = args.epochs
    if args.quick:
        train_ids, val_ids, epochs = train_ids[:4], val_ids[:2], 1
        train_set = data.load_arrays(train_ids)
        val_set = data.load_arrays(val_ids) if val_ids else None
    else:
        train_set = data.load_arrays_cached(train_ids)
        val_set = data.load_arrays_cached(val_ids) if val_ids else None

    config = {
        **DEFAULTS,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "epochs": epochs,
        "seed": args.seed,
        "fold": args.fold,
        "split_seed": args.split_seed,
        "n_folds": data.N_FOLDS,
        "train_cases": len(train_ids),
        "val_cases": len(val_ids),
        "augmentation": AugmentConfig().describe(),
        "optimizer": "AdamW",
        "schedule": "linear warm-up then cosine to 0, per step",
        "loss": "cross-entropy + (1 - mean soft Dice of labels 1..3, batch-wise)",
        "quick": args.quick,
        "torch": str(torch.__version__),
        "threads": args.threads,
    }
    model = build_model(config).to(memory_format=torch.channels_last)
    config["parameters"] = count_parameters(model)
    write_config(out, config)
    print(
        f"fold {args.fold}: {len(train_ids)} training, {len(val_ids)} validation cases, {config['parameters']} parameters, {epochs} epochs",
        flush=True,
    )

    generator = torch.Generator().manual_seed(args.seed)
    order_rng = np.random.default_rng(args.seed)
    images_all = torch.from_numpy(train_set.images)
    labels_all = torch.from_numpy(train_set.labels.astype(np.int64))

    def epoch_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = order_rng.permutation(len(train_ids))
        for start in range(0, len(order), args.batch_size):
            index = torch.from_numpy(order[start : start + args.batch_size])
            if len(index) < 2:  # BatchNorm needs more than one sample
                continue
            x, y = augment_batch(images_all[index], labels_all[index], generator)
            yield x.contiguous(memory_format=torch.channels_last), y

    def batch_losses(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y = batch
        loss = dice_ce_loss(model(x), y, DEFAULTS["ce_weight"], DEFAULTS["dice_weight"])
        return loss, {"loss": loss}

    best = -1.0

    def validate(record: dict) -> dict:
        """Validation Dice at 256 x 256; keeps the best epoch as best.pt (reported only, never shipped)."""
        nonlocal best
        pred = predict_logits(model, val_set.images).argmax(1)
        dice = dice_per_structure(pred, val_set.labels).mean(0)
        metrics = {
            "val_dice_right_lung": float(dice[0]),
            "val_dice_left_lung": float(dice[1]),
            "val_dice_heart": float(dice[2]),
            "val_dice_mean": float(dice.mean()),
        }
        if dice.mean() > best:
            best = float(dice.mean())
            torch.save(
                {"state_dict": model.state_dict(), "config": config, "epoch": record["epoch"], "metrics": {**record, **metrics}},
                out / "best.pt",
            )
        return metrics

    train_epochs(
        model,
        epochs=epochs,
        steps_per_epoch=int(np.ceil(len(train_ids) / args.batch_size)),
        lr=args.lr,
        weight_decay=DEFAULTS["weight_decay"],
        warmup_epochs=DEFAULTS["warmup_epochs"],
        epoch_batches=epoch_batches,
        batch_losses=batch_losses,
        out=out,
        config=config,
        validate=validate if val_set is not None else None,
    )
    print(f"done: {out / 'last.pt'}" + (f", best val Dice {best:.4f}" if val_set is not None else ""), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
