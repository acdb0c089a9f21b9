"""Train the nodule-centre heatmap network on one cross-validation fold (or on all dev cases).

    nice -n 19 .venv-train/bin/python training/chest_xray/nodules/train_nodules.py --fold K --out DIR

``--fold -1`` trains on all 199 dev cases (the shipped model; the last epoch is kept).
``--quick``: one tiny epoch on a few images (for the unit test).

Input: the segmentation model's preprocessing (256 x 256, percentile normalisation; the cached
arrays of ``data.load_arrays_cached``).  Training samples are 128 x 128 crops of the 256 grid,
drawn each epoch as ``--pos-repeats`` crops around every training nodule (random position of the
nodule inside the crop: positive-case oversampling) plus one random crop per training case
(centre uniform in the central 160 x 160 region: lungs, mediastinum, diaphragm).  Crop, rotation
(+-7 deg) and isotropic scale (0.9-1.1) in one bilinear resampling (border replication); then the
segmentation recipe's intensity augmentation (``augment.augment_batch`` with the geometry switched
off: gamma, contrast, brightness, noise).  ``--hflip P``: each crop is also mirrored left-right with
probability P, in the same resampling (a nodule looks the same on either side; the heart does not,
so the net learns nodules over a heart on either side; 0, the default, draws nothing extra from the
random stream, so runs without flips are the same as before the option).

Targets at stride 2 (64 x 64 per crop): a Gaussian blob per nodule (sigma = max(1, diameter/4)
output pixels; the pixel nearest the centre = 1) for the CenterNet penalty-reduced focal loss
(alpha 2, beta 4, normalised by the number of nodule centres in the batch), and log(diameter in
model pixels) with an L1 loss on the pixels within sigma of the centre (weight 0.1).
Writes DIR/config.json, DIR/log.jsonl, DIR/last.pt.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import data  # noqa: E402  (training/chest_xray/data.py)
import nodule_data  # noqa: E402
from augment import AugmentConfig, augment_batch  # noqa: E402  (training/chest_xray/augment.py)
from loop import set_determinism, train_epochs, write_config  # noqa: E402  (training/chest_xray/loop.py)
from nodule_model import build_model, count_parameters  # noqa: E402

from radpilot.analyses.chest_xray.nodules import candidates_from_outputs  # noqa: E402
from radpilot.analyses.chest_xray.preprocess import MODEL_SIZE  # noqa: E402

DEFAULTS = {
    "channels": [16, 32, 64, 128, 128],
    "stem": 16,
    "crop": 128,
    "pos_repeats": 2,
    "neg_crops_per_case": 1,
    "batch_size": 16,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "warmup_epochs": 2,
    "size_weight": 0.1,
    "sigma_fraction": 0.25,
    "sigma_min": 1.0,
    "rotation_deg": 7.0,
    "scale": [0.9, 1.1],
    "hflip": 0.0,
}
STRIDE = 2


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet penalty-reduced pixel-wise focal loss (alpha 2, beta 4), summed / number of centres."""
    p = torch.sigmoid(logits).clamp(1e-6, 1 - 1e-6)
    pos = target >= 1.0 - 1e-6
    pos_loss = -(F.logsigmoid(logits) * (1 - p) ** 2)[pos].sum()
    neg_loss = -(F.logsigmoid(-logits) * p**2 * (1 - target) ** 4)[~pos].sum()
    return (pos_loss + neg_loss) / max(int(pos.sum()), 1)


def make_targets(points: list[list[tuple[float, float, float]]], out_size: int, cfg: dict) -> tuple[np.ndarray, ...]:
    """points per sample: (row, col, diameter) in OUTPUT pixels -> heatmap, log-diameter, size mask."""
    n = len(points)
    heat = np.zeros((n, 1, out_size, out_size), np.float32)
    logd = np.zeros((n, 1, out_size, out_size), np.float32)
    size_mask = np.zeros((n, 1, out_size, out_size), np.float32)
    grid = np.arange(out_size, dtype=np.float32)
    for k, plist in enumerate(points):
        for r, c, d in plist:
            sigma = max(cfg["sigma_min"], cfg["sigma_fraction"] * d)
            dist2 = (grid[:, None] - r) ** 2 + (grid[None, :] - c) ** 2
            heat[k, 0] = np.maximum(heat[k, 0], np.exp(-dist2 / (2 * sigma**2)))
            ri, ci = int(round(r)), int(round(c))
            if 0 <= ri < out_size and 0 <= ci < out_size:
                heat[k, 0, ri, ci] = 1.0
            near = dist2 <= max(sigma, 1.0) ** 2
            logd[k, 0][near] = math.log(max(d * STRIDE, 1.0))  # diameter in model (256-grid) pixels
            size_mask[k, 0][near] = 1.0
    return heat, logd, size_mask


def sample_epoch(train_ids: list[str], nodules: dict, rng: np.random.Generator, cfg: dict) -> list[tuple[str, float, float]]:
    """(case_id, crop-centre row, crop-centre col) on the 256 grid."""
    half = cfg["crop"] / 2
    samples = []
    for case_id in train_ids:
        if case_id in nodules:
            r, c = nodules[case_id].model_grid()
            for _ in range(cfg["pos_repeats"]):
                samples.append((case_id, r + rng.uniform(-(half - 16), half - 16), c + rng.uniform(-(half - 16), half - 16)))
        for _ in range(cfg["neg_crops_per_case"]):
            samples.append((case_id, rng.uniform(48, MODEL_SIZE - 48), rng.uniform(48, MODEL_SIZE - 48)))
    return [samples[i] for i in rng.permutation(len(samples))]


def crop_batch(
    images: torch.Tensor,
    batch: list[tuple[str, float, float]],
    index: dict[str, int],
    nodules: dict,
    rng: np.random.Generator,
    generator: torch.Generator,
    cfg: dict,
):
    """Crops with rotation/scale + intensity augmentation, and their targets."""
    n, size, crop = len(batch), MODEL_SIZE, cfg["crop"]
    out_size = crop // STRIDE
    angle = np.deg2rad(rng.uniform(-cfg["rotation_deg"], cfg["rotation_deg"], n))
    scale = rng.uniform(*cfg["scale"], n)
    mirror = rng.uniform(size=n) < cfg["hflip"] if cfg["hflip"] > 0 else np.zeros(n, dtype=bool)
    theta = np.zeros((n, 2, 3), np.float32)
    points = []
    for k, (case_id, rc, cc) in enumerate(batch):
        a = (crop / size) / scale[k] * np.array([[np.cos(angle[k]), -np.sin(angle[k])], [np.sin(angle[k]), np.cos(angle[k])]])
        if mirror[k]:
            a = a @ np.diag([-1.0, 1.0])  # the crop's x axis reversed: a mirrored crop, its nodule mapped by the same matrix
        t = np.array([(2 * cc + 1) / size - 1, (2 * rc + 1) / size - 1])  # (x, y) normalised crop centre
        theta[k, :, :2], theta[k, :, 2] = a, t
        plist = []
        nodule = nodules.get(case_id)
        if nodule is not None:
            r, c = nodule.model_grid()
            p = np.array([(2 * c + 1) / size - 1, (2 * r + 1) / size - 1])
            u = np.linalg.solve(a, p - t)
            col_o, row_o = ((u + 1) * crop - 1) / 2
            d_out = nodule.diameter_model_px() * scale[k] / STRIDE
            plist.append(((row_o + 0.5) / STRIDE - 0.5, (col_o + 0.5) / STRIDE - 0.5, d_out))
        points.append(plist)
    src = images[torch.tensor([index[b[0]] for b in batch])]
    grid = F.affine_grid(torch.from_numpy(theta), [n, 1, crop, crop], align_corners=False)
    x = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    no_geometry = AugmentConfig(rotation_deg=0.0, scale=(1.0, 1.0), translation=0.0)
    x, _ = augment_batch(x, torch.zeros((n, crop, crop), dtype=torch.long), generator, no_geometry)
    heat, logd, size_mask = make_targets(points, out_size, cfg)
    return x, torch.from_numpy(heat), torch.from_numpy(logd), torch.from_numpy(size_mask)


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    heats, diams = [], []
    for start in range(0, len(images), batch_size):
        h, d = model(torch.from_numpy(images[start : start + batch_size]))
        heats.append(h.numpy()[:, 0])
        diams.append(d.numpy()[:, 0])
    return np.concatenate(heats), np.concatenate(diams)


def quick_validation(model, val_set, nodules: dict) -> dict:
    """Rough validation (no lung mask): sensitivity at <= 1 and <= 4 FP/image on the held-out fold."""
    from radpilot.validation.metrics import detection_hits, froc, sensitivity_at_fp

    heats, diams = predict(model, val_set.images)
    results = []
    for case_id, heat, diam in zip(val_set.case_ids, heats, diams):
        cands = candidates_from_outputs(heat, diam, (512, 512), (0.7, 0.7), None)
        pts = np.array([[c.row, c.col] for c in cands]).reshape(-1, 2)
        scores = np.array([c.score for c in cands])
        nod = nodules.get(case_id)
        refs = np.array([[nod.row, nod.col]]) if nod else np.zeros((0, 2))
        radii = np.array([nod.diameter_mm / 2]) if nod else np.zeros(0)
        results.append(detection_hits(pts, scores, refs, radii, (0.7, 0.7), margin_mm=nodule_data.HIT_MARGIN_MM))
    sens = sensitivity_at_fp(froc(results), [1.0, 4.0])
    return {"val_sens_at_1fp": float(sens[0]), "val_sens_at_4fp": float(sens[1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fold", type=int, required=True, help="held-out fold 0..4, or -1 to train on all dev cases")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--pos-repeats", type=int, default=DEFAULTS["pos_repeats"])
    parser.add_argument("--hflip", type=float, default=DEFAULTS["hflip"], help="probability of mirroring a crop left-right")
    parser.add_argument("--val-every", type=int, default=10, help="rough held-out check every N epochs (0: never)")
    parser.add_argument("--quick", action="store_true", help="one tiny epoch on a few images (smoke test)")
    args = parser.parse_args(argv)

    set_determinism(args.seed, args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = {**DEFAULTS, "lr": args.lr, "pos_repeats": args.pos_repeats, "hflip": args.hflip}

    train_ids, val_ids = nodule_data.split(args.fold)
    nodules = nodule_data.read_nodules()
    epochs = args.epochs
    if args.quick:
        train_ids = [c for c in train_ids if c in nodules][:3] + [c for c in train_ids if c not in nodules][:1]
        val_ids, epochs = [], 1
        train_set = data.load_arrays(train_ids)
    else:
        train_set = data.load_arrays_cached(train_ids)
    val_set = data.load_arrays_cached(val_ids) if val_ids and args.val_every > 0 else None

    config = {
        **cfg,
        "epochs": epochs,
        "seed": args.seed,
        "fold": args.fold,
        "split_seed": data.SPLIT_SEED,
        "n_folds": data.N_FOLDS,
        "train_cases": len(train_ids),
        "train_nodules": sum(c in nodules for c in train_ids),
        "val_cases": len(val_ids),
        "optimizer": "AdamW",
        "schedule": "linear warm-up then cosine to 0, per step",
        "loss": "CenterNet focal loss on Gaussian centre heatmaps + 0.1 x L1 on log diameter near centres",
        "intensity_augmentation": AugmentConfig().describe(),
        "flips": f"left-right, p {args.hflip:g}" if args.hflip > 0 else "none",
        "quick": args.quick,
        "torch": str(torch.__version__),
        "threads": args.threads,
    }
    model = build_model(config)
    config["parameters"] = count_parameters(model)
    write_config(out, config)
    print(
        f"fold {args.fold}: {len(train_ids)} training cases ({config['train_nodules']} nodules), "
        f"{len(val_ids)} held out, {config['parameters']} parameters, {epochs} epochs",
        flush=True,
    )

    generator = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    index = {c: i for i, c in enumerate(train_set.case_ids)}
    images = torch.from_numpy(train_set.images)
    per_epoch = len(sample_epoch(train_ids, nodules, np.random.default_rng(0), cfg))

    def epoch_batches() -> Iterator[tuple[torch.Tensor, ...]]:
        samples = sample_epoch(train_ids, nodules, rng, cfg)
        for start in range(0, len(samples), cfg["batch_size"]):
            batch = samples[start : start + cfg["batch_size"]]
            if len(batch) < 2:  # BatchNorm needs more than one sample
                continue
            yield crop_batch(images, batch, index, nodules, rng, generator, cfg)

    def batch_losses(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, heat, logd, size_mask = batch
        raw = model.raw(x)
        loss_heat = focal_loss(raw[:, :1], heat)
        loss_size = (torch.abs(raw[:, 1:2] - logd) * size_mask).sum() / size_mask.sum().clamp(min=1.0)
        return loss_heat + cfg["size_weight"] * loss_size, {"loss": loss_heat, "size_l1": loss_size}

    def validate(record: dict) -> dict:
        if record["epoch"] % args.val_every == 0 or record["epoch"] == epochs:
            return quick_validation(model, val_set, nodules)
        return {}

    train_epochs(
        model,
        epochs=epochs,
        steps_per_epoch=int(np.ceil(per_epoch / cfg["batch_size"])),
        lr=args.lr,
        weight_decay=cfg["weight_decay"],
        warmup_epochs=cfg["warmup_epochs"],
        epoch_batches=epoch_batches,
        batch_losses=batch_losses,
        out=out,
        config=config,
        validate=validate if val_set is not None else None,
    )
    print(f"done: {out / 'last.pt'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
