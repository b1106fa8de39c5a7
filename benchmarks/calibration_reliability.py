"""How close the match probability comes to the observed match rate on the synthetic world,
and how close any p = sigmoid(a·cos + b) could come.

For each world (bank rows × seed) the heads are trained with the calibration test's settings
(tests/test_calibration.py: 128/96-d, 4 epochs, batch 128), which also fits the shipped
calibration on held-out pseudo pairs, as `hanclip train` does. Then, on new held-out (image,
Korean) pairs, each photo meets one matching caption and `--negatives` non-matching ones
(weighted to even odds, the probability's definition), at two meanings of "match":

* instance: the photo and the caption of the same sample; every other caption is a
  non-match, also one of the same concept (another photo of the same kind of scene);
* concept: the photo and the caption of another sample of its concept; captions of other
  concepts are non-matches.

Two fits are measured on the same pairs (the second half of the test samples): the shipped
one, and the best a two-parameter sigmoid can do, fitted by the same maximum likelihood on
the real pairs of the first half. A row's figure is the largest |predicted − observed| over
the bins of predicted probability whose observed rate is measured to ±0.02 (one standard
error, were the prediction exact); `within 0.05` says whether every such bin is.

    python benchmarks/calibration_reliability.py [--rows 2000 10000] [--seeds 0 1 2]
        [--test 50000] [--negatives 20] [--json PATH]

It takes about a minute per 10,000-row world on 2 cores. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from train_synthetic import project, recall_at_1

from hanclip_model.bundle import Calibration
from trainer.calibration import (
    LabelledScores,
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
class BinFigure:
    low: float
    high: float
    predicted: float
    observed: float
    calibrated_error: float

    @property
    def measured(self) -> bool:
        return self.calibrated_error <= MEASURED


@dataclass(frozen=True)
class FitFigure:
    level: str  # instance | concept
    fitted_on: str
    a: float
    b: float
    bins: list[BinFigure]

    @property
    def worst(self) -> float:
        """Largest |predicted − observed| over the measured bins."""
        return max((abs(b.predicted - b.observed) for b in self.bins if b.measured), default=0.0)

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


@dataclass(frozen=True)
class WorldFigure:
    rows: int
    seed: int
    test: int
    recall_image_to_korean: float
    train_seconds: float
    fits: list[FitFigure]


def labelled_pairs(
    level: str, images: np.ndarray, korean: np.ndarray, concepts: np.ndarray, negatives: int
) -> LabelledScores:
    if level == "instance":
        return sample_pairs(images, korean, negatives, seed=1)
    return concept_pairs(images, korean, concepts, negatives, seed=1)


def fit_figure(level: str, fitted_on: str, fit: Calibration, pairs: LabelledScores) -> FitFigure:
    bins = reliability(fit.probability(pairs.cosines), pairs.matches, pairs.weights)
    return FitFigure(
        level=level,
        fitted_on=fitted_on,
        a=fit.a,
        b=fit.b,
        bins=[BinFigure(b.low, b.high, b.predicted, b.observed, b.calibrated_error) for b in bins],
    )


def measure_world(rows: int, seed: int, test: int, negatives: int) -> WorldFigure:
    world = make_world(rows, rows, rows, test, d_img=DIMS[0], d_txt=DIMS[1], seed=seed)
    started = time.perf_counter()
    result = train_heads(
        world.banks, TrainConfig(epochs=EPOCHS, batch_size=BATCH_SIZE, seed=seed, device="cpu")
    )
    train_seconds = time.perf_counter() - started
    report = result.calibration
    if report is None or report.calibration is None:
        raise SystemExit(f"error: the {rows}-row world was left uncalibrated: {report}")
    images, korean = project(result.heads, world.test_images, world.test_korean)
    half = test // 2
    fits = []
    for level in LEVELS:
        first, second = (
            labelled_pairs(level, images[part], korean[part], world.test_concepts[part], negatives)
            for part in (slice(0, half), slice(half, None))
        )
        fits.append(fit_figure(level, SHIPPED, report.calibration, second))
        fits.append(fit_figure(level, BEST, fit_logistic(first), second))
    return WorldFigure(
        rows=rows,
        seed=seed,
        test=test,
        recall_image_to_korean=recall_at_1(images, korean),
        train_seconds=train_seconds,
        fits=fits,
    )


def format_world(world: WorldFigure) -> str:
    lines = [
        f"world: {world.rows:,} rows per bank, seed {world.seed}, {world.test:,} test samples "
        f"(R@1 image→Korean among them {world.recall_image_to_korean:.3f}; trained in "
        f"{world.train_seconds:.1f} s)",
        f"  {'match':9} {'fitted on':33} {'a':>7} {'b':>7} {'p=½ at':>7}  {'worst':>6}  "
        f"within {TOLERANCE}  predicted − observed per bin, 0-0.1 … 0.9-1 (* measured)",
    ]
    for fit in world.fits:
        per_bin = " ".join(
            f"{b.predicted - b.observed:+.2f}{'*' if b.measured else ' '}" for b in fit.bins
        )
        lines.append(
            f"  {fit.level:9} {fit.fitted_on:33} {fit.a:7.1f} {fit.b:7.1f} {fit.midpoint:7.4f}  "
            f"{fit.worst:6.3f}  {'yes' if fit.within else 'no':10}  {per_bin}"
        )
    shipped = world.fits[0]
    lines.append(
        f"  at the shipped slope, an error of {TOLERANCE} at p = ½ is "
        f"{shipped.cosine_for_tolerance:.4f} in cosine"
    )
    return "\n".join(lines) + "\n"


def format_summary(worlds: Sequence[WorldFigure]) -> str:
    lines = [f"within {TOLERANCE} in every measured bin, over {len(worlds)} worlds:"]
    for level in LEVELS:
        for fitted_on in (SHIPPED, BEST):
            fits = [
                f for w in worlds for f in w.fits if (f.level, f.fitted_on) == (level, fitted_on)
            ]
            worst = max(f.worst for f in fits)
            held = sum(f.within for f in fits)
            lines.append(
                f"  {level:9} {fitted_on:33} {held}/{len(fits)} worlds, worst miss {worst:.3f}"
            )
    return "\n".join(lines) + "\n"


def figures_json(worlds: Sequence[WorldFigure]) -> str:
    data = []
    for world in worlds:
        entry = asdict(world)
        for fit, block in zip(world.fits, entry["fits"], strict=True):
            block.update(worst=fit.worst, within=fit.within, midpoint=fit.midpoint)
        data.append(entry)
    return json.dumps({"tolerance": TOLERANCE, "measured": MEASURED, "worlds": data}, indent=2)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 10_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--test", type=int, default=50_000, help="held-out test samples")
    parser.add_argument("--negatives", type=int, default=20, help="non-matches per photo")
    parser.add_argument("--json", dest="json_path", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.test < 4 or args.negatives < 1 or min(args.rows) < 1000:
        parser.error("--test needs at least 4 samples, --negatives 1, --rows 1000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    worlds = []
    for rows in args.rows:
        for seed in args.seeds:
            print(f"training the {rows:,}-row world, seed {seed} ...", file=sys.stderr)
            world = measure_world(rows, seed, args.test, args.negatives)
            print(format_world(world))
            worlds.append(world)
    print(format_summary(worlds), end="")
    if args.json_path is not None:
        args.json_path.write_text(figures_json(worlds), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
