"""Train the short-axis cine segmentation U-Net (RV cavity, LV myocardium, LV cavity) on one CV fold or all dev patients.

    nice -n 5 /work/main/.venv/bin/python training/cardiac_mr/cmr_train.py --fold K --epochs N --out DIR

``--fold -1`` trains on all 80 dev patients (the shipped model; the last epoch is kept).
``--quick``: one epoch on 2 patients (smoke test). Writes DIR/config.json, DIR/log.jsonl, DIR/last.pt.
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
sys.path.insert(0, str(HERE.parent / "chest_xray"))  # augment.py, loop.py, nets.py: shared with the radiograph models

import cmr_data  # noqa: E402
from augment import AugmentConfig, augment_batch  # noqa: E402
from cmr_model import build_model, count_parameters  # noqa: E402
from loop import set_determinism, train_epochs, write_config  # noqa: E402

from radpilot.analyses.cardiac_mr_function.preprocess import TRAIN_TILE  # noqa: E402

AUGMENT = AugmentConfig(
    rotation_deg=30.0, scale=(0.8, 1.25), translation=0.1, gamma=(0.7, 1.5), contrast=(0.8, 1.2), brightness=0.1, noise_sigma=0.03
)
DEFAULTS = {"channels": [8, 16, 32, 64, 128], "batch_size": 16, "lr": 2e-3, "weight_decay": 1e-4, "warmup_epochs": 2, "jitter_px": 16.0}


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    ce = F.cross_entropy(logits, target, weight=class_weights)
    probs = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    soft_dice = (2 * (probs * onehot).sum(dims) + 1.0) / (probs.sum(dims) + onehot.sum(dims) + 1.0)
    return ce + (1.0 - soft_dice[1:].mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples-per-epoch", type=int, default=640, help="slices drawn (without replacement) per epoch")
    parser.add_argument("--resume", type=Path, help="start from this checkpoint's weights (a second leg of training)")
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--ce-class-weights", type=str, default="1,1,1,1", help="cross-entropy weights of background, RV, myocardium, LV")
    parser.add_argument(
        "--reference-channel",
        action="store_true",
        help="a second input channel: the same slice at end-diastole (the cine's first phase at runtime), so that the model sees how the slice moved",
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    set_determinism(args.seed, args.threads)

    patients = cmr_data.read_patients()
    folds = cmr_data.assign_folds(patients)
    ids = sorted(folds)
    train_ids = ids if args.fold == -1 else [p for p in ids if folds[p] != args.fold]
    val_ids = [] if args.fold == -1 else [p for p in ids if folds[p] == args.fold]
    epochs = args.epochs
    if args.quick:
        train_ids, val_ids, epochs = train_ids[:2], val_ids[:1], 1
    train = cmr_data.load_slices(train_ids)
    val = cmr_data.load_slices(val_ids) if val_ids else None
    config = {
        **DEFAULTS,
        "epochs": epochs,
        "samples_per_epoch": args.samples_per_epoch,
        "seed": args.seed,
        "fold": args.fold,
        "split_seed": cmr_data.SPLIT_SEED,
        "train_patients": len(train_ids),
        "val_patients": len(val_ids),
        "train_slices": len(train.images),
        "tile": TRAIN_TILE,
        "augmentation": {**AUGMENT.describe(), "flips": "none (the RV lies on the image left in a standard short-axis view)"},
        "optimizer": "AdamW",
        "schedule": "linear warm-up then cosine to 0, per step",
        "loss": "cross-entropy + (1 - mean soft Dice of labels 1..3, batch-wise)",
        "torch": str(torch.__version__),
        "threads": args.threads,
        "in_channels": 2 if args.reference_channel else 1,
    }
    model = build_model(config).to(memory_format=torch.channels_last)
    if args.resume:
        previous = torch.load(args.resume, map_location="cpu", weights_only=True)
        if previous["config"]["fold"] != args.fold:
            # a fold's second leg must not start from weights that saw its held-out patients
            raise SystemExit(f"{args.resume} was trained for fold {previous['config']['fold']}, not {args.fold}")
        model.load_state_dict(previous["state_dict"])
        config["resumed_from"] = {"checkpoint": str(args.resume), "config": previous["config"]}
    class_weights = torch.tensor([float(v) for v in args.ce_class_weights.split(",")])
    config["ce_class_weights"] = class_weights.tolist()
    config["lr"] = args.lr
    config["parameters"] = count_parameters(model)
    write_config(args.out, config)
    print(
        f"fold {args.fold}: {len(train_ids)} patients / {len(train.images)} slices, {config['parameters']} parameters, {epochs} epochs",
        flush=True,
    )

    generator = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    batch = DEFAULTS["batch_size"]

    def epoch_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = rng.permutation(len(train.images))[: args.samples_per_epoch]
        for start in range(0, len(order) - 1, batch):
            index = order[start : start + batch]
            if len(index) < 2:
                continue
            x, y = cmr_data.training_tiles(train, index, TRAIN_TILE, DEFAULTS["jitter_px"], rng, args.reference_channel)
            xa, ya = augment_batch(torch.from_numpy(x), torch.from_numpy(y), generator, AUGMENT)
            yield xa.contiguous(memory_format=torch.channels_last), ya

    def batch_losses(b: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = dice_ce_loss(model(b[0]), b[1], class_weights)
        return loss, {"loss": loss}

    val_rng = np.random.default_rng(0)

    @torch.no_grad()
    def validate(record: dict) -> dict:
        if val is None or (record["epoch"] % 5 and record["epoch"] != epochs):
            return {}
        model.eval()
        x, y = cmr_data.training_tiles(val, np.arange(len(val.images)), TRAIN_TILE, 0.0, val_rng, args.reference_channel)
        pred = np.concatenate([model(torch.from_numpy(x[s : s + 32])).argmax(1).numpy() for s in range(0, len(x), 32)])
        out = {}
        for v, name in ((1, "rv"), (2, "myo"), (3, "lv")):
            p, t = pred == v, y == v
            out[f"val_dice_{name}"] = float(2 * (p & t).sum() / max(p.sum() + t.sum(), 1))
        model.train()
        return out

    steps = int(np.ceil((min(len(train.images), args.samples_per_epoch) - 1) / batch))
    train_epochs(
        model,
        epochs=epochs,
        steps_per_epoch=steps,
        lr=args.lr,
        weight_decay=DEFAULTS["weight_decay"],
        warmup_epochs=DEFAULTS["warmup_epochs"],
        epoch_batches=epoch_batches,
        batch_losses=batch_losses,
        out=args.out,
        config=config,
        validate=validate,
    )
    print(f"done: {args.out / 'last.pt'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
