"""Time the training pipeline on a synthetic world, and show that it learns.

    python benchmarks/train_synthetic.py [--rows 40000] [--dims 512 384] [--epochs 10]

A synthetic world (English, image and Korean banks of `--rows` each, `--test` held-out
image/Korean pairs) is saved as .npy files the way an outside generator would and read back
memmapped, then trained. Reports seconds per stage, image->Korean and Korean->image R@1 on
the held-out pairs before and after training (chance = 1/test), and the match probability's
reliability there: each photo with its own caption and `--negatives` others, weighted to even
odds, in bins of predicted probability (trainer/calibration.py). The default world parts
matches so well that nearly every pair lands below 10 % or above 90 %; a smaller one shows the
middle of the curve, e.g. `--rows 10000 --dims 128 96 --epochs 4 --batch-size 128 --test 50000`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from benchkit import entry
from benchkit.processes import log

from trainer.calibration import CalibrationReport, ReliabilityBin, reliability, sample_pairs
from trainer.heads import HanclipHeads
from trainer.synthetic import make_world
from trainer.train import TrainBanks, TrainConfig, TrainProgress, init_heads, train_heads

BANK_FILES = ("english_clip", "english_text", "image_bank", "korean_bank")


@dataclass(frozen=True)
class Recall:
    """R@1 on the held-out pairs, before and after training."""

    untrained: float
    trained: float


@dataclass(frozen=True)
class Results:
    banks: dict[str, int]
    test_pairs: int
    config: str
    device: str
    torch_threads: int
    world_s: float  # generation and the .npy files
    pseudo_pairs_s: float
    training_s: float
    total_s: float
    loss_per_epoch: tuple[float, ...]
    image_to_korean: Recall
    korean_to_image: Recall
    calibration: CalibrationReport | None
    reliability: tuple[ReliabilityBin, ...]  # empty: not calibrated

    @property
    def chance(self) -> float:
        return 1 / self.test_pairs


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


def test_reliability(
    heads: HanclipHeads,
    calibration: CalibrationReport | None,
    test_images: np.ndarray,
    test_korean: np.ndarray,
    negatives: int,
) -> tuple[ReliabilityBin, ...]:
    if calibration is None or calibration.calibration is None:
        return ()
    images, korean = project(heads, test_images, test_korean)
    pairs = sample_pairs(images, korean, negatives, seed=1)
    fit = calibration.calibration
    return tuple(reliability(fit.probability(pairs.cosines), pairs.matches, pairs.weights))


def log_epoch(update: TrainProgress) -> None:
    if update.stage == "training" and update.step == update.steps:
        log(f"epoch {update.epoch}/{update.epochs}: last batch loss {update.loss:.3f}")


def measure(args: argparse.Namespace) -> Results:
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
        log(f"synthetic world: {banks.sizes()}, {args.test} test pairs, training")
        result = train_heads(banks, cfg, progress=log_epoch)
        after = both_ways_recall(result.heads, test_images, test_korean)
    bins = test_reliability(
        result.heads, result.calibration, test_images, test_korean, args.negatives
    )
    return Results(
        banks=banks.sizes(),
        test_pairs=args.test,
        config=str(cfg),
        device=str(result.device),
        torch_threads=torch.get_num_threads(),
        world_s=world_seconds,
        pseudo_pairs_s=result.stage_seconds["pseudo_pairs"],
        training_s=result.stage_seconds["training"],
        total_s=time.perf_counter() - started,
        loss_per_epoch=tuple(result.loss_history),
        image_to_korean=Recall(before[0], after[0]),
        korean_to_image=Recall(before[1], after[1]),
        calibration=result.calibration,
        reliability=bins,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    example = "python benchmarks/train_synthetic.py --rows 10000 --dims 128 96 --json t.json"
    parser = entry.parser(__doc__, example)
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
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    title = "hanclip training on a synthetic world: time per stage, R@1, reliability"
    return entry.finish(lambda: measure(args), args.json_path, title=title)


if __name__ == "__main__":
    sys.exit(main())
