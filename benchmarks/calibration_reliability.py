"""How close the match probability comes to the observed match rate on the synthetic world,
and how close any p = sigmoid(a·cos + b) could come.

    python benchmarks/calibration_reliability.py [--rows 2000 10000] [--seeds 0 1 2]

Each world (rows x seed) is trained as tests/test_calibration.py trains it, which also fits
the shipped calibration on held-out pseudo pairs. On new held-out pairs, each photo meets one
matching caption and `--negatives` others (weighted to even odds), at two meanings of match:
instance (the same sample's caption) and concept (another sample's caption of its concept).
The shipped fit and the best two-parameter sigmoid (fitted on the first half's real pairs) are
measured on the second half: a row's figure is the largest |predicted − observed| over the
bins whose rate is known to ±0.02; `within` says whether every such bin is within 0.05.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from benchkit import entry
from benchkit.processes import BenchmarkError, log
from train_synthetic import project, recall_at_1

from hanclip_model.bundle import Calibration
from trainer.calibration import (
    LabelledScores,
    ReliabilityBin,
    concept_pairs,
    fit_logistic,
    reliability,
    sample_pairs,
)
from trainer.synthetic import make_world
from trainer.train import TrainConfig, train_heads

DIMS = (128, 96)
EPOCHS, BATCH_SIZE = 4, 128
MEASURED = 0.02  # a bin counts when its rate is known to ±0.02
TOLERANCE = 0.05
LEVELS = ("instance", "concept")
SHIPPED, BEST = "held-out pseudo pairs (shipped)", "real pairs of the other half"


@dataclass(frozen=True)
class FitFigure:
    rows: int  # the world's
    seed: int
    level: str  # instance | concept
    fitted_on: str
    a: float
    b: float
    bins: tuple[ReliabilityBin, ...]

    @property
    def worst(self) -> float:
        """Largest |predicted − observed| over the measured bins."""
        measured = zip(self.bins, self.measured_bins, strict=True)
        return max((abs(b.predicted - b.observed) for b, m in measured if m), default=0.0)

    @property
    def within(self) -> bool:
        return self.worst <= TOLERANCE

    @property
    def midpoint(self) -> float:
        """The cosine at p = 1/2."""
        return -self.b / self.a

    @property
    def cosine_for_tolerance(self) -> float:
        """How far in cosine the curve may sit from the truth at p = 1/2 for an error of
        TOLERANCE there: dp/dcos = a·p(1−p) = a/4."""
        return 4 * TOLERANCE / self.a

    @property
    def misses(self) -> tuple[float, ...]:
        """Predicted − observed per bin of predicted probability, 0-0.1 … 0.9-1."""
        return tuple(round(b.predicted - b.observed, 3) for b in self.bins)

    @property
    def measured_bins(self) -> tuple[bool, ...]:
        """Whether each bin's rate is known to ±MEASURED."""
        return tuple(b.calibrated_error <= MEASURED for b in self.bins)


@dataclass(frozen=True)
class WorldFigure:
    rows: int
    seed: int
    test: int
    recall_image_to_korean: float
    train_seconds: float


@dataclass(frozen=True)
class SummaryRow:
    level: str
    fitted_on: str
    worlds_within: int  # worlds whose every measured bin is within TOLERANCE
    worlds: int
    worst_miss: float


@dataclass(frozen=True)
class Results:
    tolerance: float
    measured: float
    worlds: tuple[WorldFigure, ...]
    fits: tuple[FitFigure, ...]

    @property
    def summary(self) -> tuple[SummaryRow, ...]:
        rows = []
        for level in LEVELS:
            for fitted_on in (SHIPPED, BEST):
                fits = [f for f in self.fits if (f.level, f.fitted_on) == (level, fitted_on)]
                held = sum(f.within for f in fits)
                worst = max(f.worst for f in fits)
                rows.append(SummaryRow(level, fitted_on, held, len(fits), worst))
        return tuple(rows)


def labelled_pairs(
    level: str, images: np.ndarray, korean: np.ndarray, concepts: np.ndarray, negatives: int
) -> LabelledScores:
    if level == "instance":
        return sample_pairs(images, korean, negatives, seed=1)
    return concept_pairs(images, korean, concepts, negatives, seed=1)


def fit_figure(
    world: tuple[int, int], level: str, fitted_on: str, fit: Calibration, pairs: LabelledScores
) -> FitFigure:
    bins = reliability(fit.probability(pairs.cosines), pairs.matches, pairs.weights)
    return FitFigure(*world, level=level, fitted_on=fitted_on, a=fit.a, b=fit.b, bins=tuple(bins))


def measure_world(
    rows: int, seed: int, test: int, negatives: int
) -> tuple[WorldFigure, list[FitFigure]]:
    world = make_world(rows, rows, rows, test, d_img=DIMS[0], d_txt=DIMS[1], seed=seed)
    started = time.perf_counter()
    result = train_heads(
        world.banks, TrainConfig(epochs=EPOCHS, batch_size=BATCH_SIZE, seed=seed, device="cpu")
    )
    train_seconds = time.perf_counter() - started
    report = result.calibration
    if report is None or report.calibration is None:
        raise BenchmarkError(f"the {rows}-row world was left uncalibrated: {report}")
    images, korean = project(result.heads, world.test_images, world.test_korean)
    half = test // 2
    fits = []
    for level in LEVELS:
        first, second = (
            labelled_pairs(level, images[part], korean[part], world.test_concepts[part], negatives)
            for part in (slice(0, half), slice(half, None))
        )
        fits.append(fit_figure((rows, seed), level, SHIPPED, report.calibration, second))
        fits.append(fit_figure((rows, seed), level, BEST, fit_logistic(first), second))
    recall = recall_at_1(images, korean)
    return WorldFigure(rows, seed, test, recall, train_seconds), fits


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    example = "python benchmarks/calibration_reliability.py --rows 2000 --seeds 0 --json c.json"
    parser = entry.parser(__doc__, example)
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 10_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--test", type=int, default=50_000, help="held-out test samples")
    parser.add_argument("--negatives", type=int, default=20, help="non-matches per photo")
    args = parser.parse_args(argv)
    if args.test < 4 or args.negatives < 1 or min(args.rows) < 1000:
        parser.error("--test needs at least 4 samples, --negatives 1, --rows 1000")
    return args


def measure(rows: Sequence[int], seeds: Sequence[int], test: int, negatives: int) -> Results:
    torch.manual_seed(0)
    worlds, fits = [], []
    for world_rows in rows:
        for seed in seeds:
            log(f"training the {world_rows:,}-row world, seed {seed}")
            world, world_fits = measure_world(world_rows, seed, test, negatives)
            worlds.append(world)
            fits += world_fits
    return Results(TOLERANCE, MEASURED, tuple(worlds), tuple(fits))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return entry.finish(
        lambda: measure(args.rows, args.seeds, args.test, args.negatives),
        args.json_path,
        title="match probability against the observed match rate (synthetic worlds)",
    )


if __name__ == "__main__":
    sys.exit(main())
