"""Time the training pipeline on a synthetic world, and show that it learns.

Builds a synthetic world (English, image and Korean banks of 40,000 rows each, D=512/384,
1,000 held-out image/Korean pairs), saves it as .npy files the way an outside generator
would, reads the banks back memmapped, then trains with the default hyperparameters for 10
epochs. Prints seconds per stage (pseudo-pair precompute, training) and image→Korean and
Korean→image R@1 on the held-out pairs before and after training (chance = 1/1000), then the
match probability's reliability on those pairs: each photo with its own caption and with
--negatives others, weighted to even odds (the probability's definition, see
trainer/calibration.py), in bins of predicted probability. Bins measured to ±0.02 (the
standard error their match rate would have, were the calibration exact) are marked `*`.

    python benchmarks/train_synthetic.py [--rows 40000] [--test 1000] [--epochs 10]
        [--negatives 20] [--dims 512 384]

The default world parts matches from non-matches so well that nearly every pair lands below
10 % or above 90 %; a smaller one shows the middle of the curve, e.g.
`--rows 10000 --dims 128 96 --epochs 4 --batch-size 128 --test 50000`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trainer.calibration import reliability, sample_pairs
from trainer.heads import HanclipHeads
from trainer.synthetic import make_world
from trainer.train import (
    TrainBanks,
    TrainConfig,
    TrainProgress,
    TrainResult,
    init_heads,
    train_heads,
)

BANK_FILES = ("english_clip", "english_text", "image_bank", "korean_bank")


def recall_at_1(query: np.ndarray, gallery: np.ndarray, chunk: int = 4096) -> float:
    """Share of queries whose most similar gallery row is their own pair (same index)."""
    hits = 0
    for start in range(0, len(query), chunk):
        best = np.argmax(query[start : start + chunk] @ gallery.T, axis=1)
        hits += int(np.sum(best == np.arange(start, start + len(best))))
    return hits / len(query)


def project(
    heads: HanclipHeads, test_images: np.ndarray, test_korean: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        images = heads.project_image(torch.from_numpy(test_images)).numpy()
        korean = heads.project_text(torch.from_numpy(test_korean)).numpy()
    return images, korean


def both_ways_recall(
    heads: HanclipHeads, test_images: np.ndarray, test_korean: np.ndarray
) -> tuple[float, float]:
    images, korean = project(heads, test_images, test_korean)
    return recall_at_1(images, korean), recall_at_1(korean, images)


def print_reliability(
    result: TrainResult, test_images: np.ndarray, test_korean: np.ndarray, negatives: int
) -> None:
    report = result.calibration
    if report is None or report.calibration is None:
        print(f"not calibrated: {report.reason if report else 'no report'}")
        return
    calibration = report.calibration
    print(
        f"calibration: a = {calibration.a:.2f}, b = {calibration.b:.2f} "
        f"({report.held_out_rows} held-out captions, {report.pairs} pairs, "
        f"noise σ {report.noise_std})"
    )
    images, korean = project(result.heads, test_images, test_korean)
    pairs = sample_pairs(images, korean, negatives, seed=1)
    bins = reliability(calibration.probability(pairs.cosines), pairs.matches, pairs.weights)
    print("  predicted p   pairs   weight  predicted  observed  ±s.e.  difference")
    for b in bins:
        mark = "*" if b.calibrated_error <= 0.02 else " "
        print(
            f"  {b.low:.1f}-{b.high:.1f}{mark}  {b.pairs:8d} {b.weight:8.1f}    {b.predicted:.3f}"
            f"     {b.observed:.3f}  {b.standard_error:.3f}  {b.predicted - b.observed:+.3f}"
        )


def print_epoch(update: TrainProgress) -> None:
    if update.stage == "training" and update.step == update.steps:
        print(f"  epoch {update.epoch}/{update.epochs}: last batch loss {update.loss:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=40_000, help="rows of each bank")
    parser.add_argument("--test", type=int, default=1_000, help="held-out image/Korean pairs")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--negatives", type=int, default=20, help="non-matches per test pair (reliability)"
    )
    parser.add_argument(
        "--dims", type=int, nargs=2, default=(512, 384), metavar=("IMAGE", "TEXT"),
        help="dimensions of the CLIP and the multilingual embeddings",
    )  # fmt: skip
    args = parser.parse_args()

    started = time.perf_counter()
    d_img, d_txt = args.dims
    world = make_world(args.rows, args.rows, args.rows, args.test, d_img, d_txt, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in BANK_FILES:
            np.save(folder / f"{name}.npy", getattr(world.banks, name))
        np.save(folder / "test_images.npy", world.test_images)
        np.save(folder / "test_korean.npy", world.test_korean)
        del world
        world_seconds = time.perf_counter() - started

        banks = TrainBanks(
            **{name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in BANK_FILES}
        )
        test_images = np.load(folder / "test_images.npy")
        test_korean = np.load(folder / "test_korean.npy")
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device)
        untrained = init_heads(banks.image_dim, banks.text_dim, banks.image_dim, cfg.seed)
        before = both_ways_recall(untrained.eval(), test_images, test_korean)

        print(f"synthetic world: {banks.sizes()}, {args.test} test pairs, {cfg}")
        result = train_heads(banks, cfg, progress=print_epoch)
        after = both_ways_recall(result.heads, test_images, test_korean)

    total = time.perf_counter() - started
    print(f"device: {result.device}, torch threads: {torch.get_num_threads()}")
    stages = {
        "world generation + .npy files": world_seconds,
        "pseudo-pair precompute": result.stage_seconds["pseudo_pairs"],
        f"training ({cfg.epochs} epochs)": result.stage_seconds["training"],
        "total": total,
    }
    for stage, seconds in stages.items():
        print(f"{stage + ':':31}{seconds:7.1f} s")
    print(f"loss per epoch: {' '.join(f'{loss:.3f}' for loss in result.loss_history)}")
    print(f"R@1 image→Korean: {before[0]:.3f} untrained, {after[0]:.3f} trained")
    print(f"R@1 Korean→image: {before[1]:.3f} untrained, {after[1]:.3f} trained")
    print(f"chance: {1 / args.test:.3f}")
    print_reliability(result, test_images, test_korean, args.negatives)


if __name__ == "__main__":
    main()
