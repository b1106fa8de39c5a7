"""Time the training pipeline on a synthetic world, and show that it learns.

Builds a synthetic world (English, image and Korean banks of 40,000 rows each, D=512/384,
1,000 held-out image/Korean pairs), saves it as .npy files the way an outside generator
would, reads the banks back memmapped, then trains with the default hyperparameters for 10
epochs. Prints seconds per stage (pseudo-pair precompute, training) and image→Korean and
Korean→image R@1 on the held-out pairs before and after training (chance = 1/1000).

    python benchmarks/train_synthetic.py [--rows 40000] [--test 1000] [--epochs 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trainer.heads import HanclipHeads
from trainer.synthetic import make_world
from trainer.train import TrainBanks, TrainConfig, TrainProgress, init_heads, train_heads

BANK_FILES = ("english_clip", "english_text", "image_bank", "korean_bank")


def recall_at_1(query: np.ndarray, gallery: np.ndarray) -> float:
    """Share of queries whose most similar gallery row is their own pair (same index)."""
    return float(np.mean(np.argmax(query @ gallery.T, axis=1) == np.arange(len(query))))


def both_ways_recall(
    heads: HanclipHeads, test_images: np.ndarray, test_korean: np.ndarray
) -> tuple[float, float]:
    with torch.no_grad():
        images = heads.project_image(torch.from_numpy(test_images)).numpy()
        korean = heads.project_text(torch.from_numpy(test_korean)).numpy()
    return recall_at_1(images, korean), recall_at_1(korean, images)


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
    args = parser.parse_args()

    started = time.perf_counter()
    world = make_world(args.rows, args.rows, args.rows, args.test, seed=0)
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


if __name__ == "__main__":
    main()
