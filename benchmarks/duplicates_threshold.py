"""Where `hanclip duplicates` should draw its line: copies of a photo against other photos.

Generates varied photo-like pictures (smooth colour at two scales, hard-edged shapes, sensor
noise: `speedbench.inputs.synthetic_photo`), makes the copies a photo library collects of
one picture (JPEG re-saved at quality 60, PNG <-> JPEG, resized to 50% and 25%), embeds every
file with the image model of `--bundle` (a user's real weights) or, offline, the random-weight
ViT-B/32 (`hanclip_eval.random_models.random_clip_vit_b32`), and prints the cosine
distributions: copy against its original (min and low percentiles) and different photos
against each other (max and high percentiles), in the raw image embedding space and in the
search space (through the bundle's heads, or seeded random heads offline). The threshold
printed is the midpoint of the gap between the lowest copy score and the highest
different-photo score, in the raw space, which is what `hanclip duplicates` compares.

`hanclip_library.duplicates.DEFAULT_THRESHOLD` is this script's figure for the random-weight
ViT-B/32 (real CLIP weights cannot be fetched where it was run): a random network's gap is not
CLIP's, so the default is a measured starting point, and `--threshold` overrides it.

    python benchmarks/duplicates_threshold.py [--photos 40] [--bundle DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from speedbench.inputs import synthetic_photo

from hanclip_model.heads import l2_normalize

ORIGINAL_SIZE = (800, 600)
COPY_KINDS = ("jpeg-q60", "other-format", "resized-50", "resized-25")


@dataclass(frozen=True)
class Distribution:
    """Cosine scores of one kind of pair."""

    scores: np.ndarray

    def percentiles(self, points: tuple[int, ...]) -> str:
        values = np.percentile(self.scores, points)
        return " ".join(f"p{p}={v:.4f}" for p, v in zip(points, values, strict=True))


@dataclass(frozen=True)
class Measurement:
    """The copies' scores against their originals and the different photos' scores."""

    copies: dict[str, Distribution]
    different: Distribution

    @property
    def lowest_copy(self) -> float:
        return float(min(d.scores.min() for d in self.copies.values()))

    @property
    def highest_different(self) -> float:
        return float(self.different.scores.max())

    @property
    def threshold(self) -> float:
        """The middle of the gap (or of the overlap, where there is no gap)."""
        return (self.lowest_copy + self.highest_different) / 2


def write_variants(folder: Path, count: int, seed: int) -> list[list[Path]]:
    """For each photo: its original, then one file per COPY_KINDS entry. Even photos start
    as JPEG (quality 95), odd ones as PNG, so "other-format" covers both directions."""
    from PIL import Image

    photos = []
    for i in range(count):
        image = synthetic_photo(ORIGINAL_SIZE, seed=seed * 10_000 + i)
        as_jpeg = i % 2 == 0
        original = folder / f"{i:03d}-original.{'jpg' if as_jpeg else 'png'}"
        image.save(original, **({"format": "JPEG", "quality": 95} if as_jpeg else {}))
        decoded = Image.open(original).convert("RGB")
        other = folder / f"{i:03d}-other-format.{'png' if as_jpeg else 'jpg'}"
        decoded.save(other, **({} if as_jpeg else {"quality": 95}))
        q60 = folder / f"{i:03d}-jpeg-q60.jpg"
        decoded.save(q60, "JPEG", quality=60)
        resized = []
        for share in (2, 4):
            small = decoded.resize((decoded.width // share, decoded.height // share), Image.LANCZOS)
            path = folder / f"{i:03d}-resized-{100 // share}.jpg"
            small.save(path, "JPEG", quality=90)
            resized.append(path)
        photos.append([original, q60, other, *resized])
    return photos


def measure(vectors: np.ndarray, count: int) -> Measurement:
    """`vectors` rows: photo 0's original and copies (COPY_KINDS order), then photo 1's, ..."""
    per_photo = 1 + len(COPY_KINDS)
    unit = l2_normalize(vectors).reshape(count, per_photo, -1)
    copies = {
        kind: Distribution(np.einsum("pd,pd->p", unit[:, 0], unit[:, 1 + k]))
        for k, kind in enumerate(COPY_KINDS)
    }
    flat = unit.reshape(count * per_photo, -1)
    scores = flat @ flat.T
    photo = np.repeat(np.arange(count), per_photo)
    different = scores[photo[:, None] < photo[None, :]]
    return Measurement(copies, Distribution(different))


def embedders(bundle: str | None) -> tuple[str, Callable, Callable]:
    """(what embeds, raw image embeddings of paths, projection into the search space)."""
    if bundle is not None:
        from hanclip_model import load_bundle

        model = load_bundle(bundle)
        return f"bundle {bundle}", model.raw_image_embeddings, model.project_images
    import torch

    from hanclip_eval.random_models import random_clip_vit_b32
    from hanclip_model.images import as_rgb_images
    from trainer.heads import HanclipHeads

    encoder = random_clip_vit_b32(device="cpu")
    torch.manual_seed(0)
    heads = HanclipHeads(image_dim=512, text_dim=384, out_dim=512).eval()

    def raw(paths: list[Path]) -> np.ndarray:
        return encoder.embed_images(as_rgb_images(paths, encoder.image_size))

    def project(vectors: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return heads.project_image(torch.from_numpy(vectors)).numpy()

    return (
        "random-weight ViT-B/32 (open_clip, no pretrained tag), seeded random heads",
        raw,
        project,
    )


def report(name: str, measurement: Measurement) -> None:
    print(f"\n{name}")
    for kind, distribution in measurement.copies.items():
        print(
            f"  copy {kind:<13} vs original: min={distribution.scores.min():.4f} "
            f"{distribution.percentiles((1, 5, 50))}"
        )
    different = measurement.different
    print(
        f"  different photos ({different.scores.size} pairs): "
        f"max={different.scores.max():.4f} {different.percentiles((50, 95, 99))}"
    )
    gap = measurement.lowest_copy - measurement.highest_different
    print(
        f"  lowest copy {measurement.lowest_copy:.4f}, highest different "
        f"{measurement.highest_different:.4f}: gap {gap:+.4f}, threshold "
        f"{measurement.threshold:.4f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--bundle", help="a hanclip bundle with real weights (default: random)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.photos < 2:
        parser.error("--photos must be at least 2")
    what, raw_embeddings, project = embedders(args.bundle)
    with tempfile.TemporaryDirectory() as tmp:
        photos = write_variants(Path(tmp), args.photos, args.seed)
        raw = raw_embeddings([path for variants in photos for path in variants])
    print(f"{args.photos} photos x (original + {len(COPY_KINDS)} copies), embedded by {what}")
    raw_space = measure(raw, args.photos)
    report("raw image embeddings (what `hanclip duplicates` compares)", raw_space)
    report("search space (through the heads)", measure(project(raw), args.photos))
    print(f"\nthreshold (raw space): {raw_space.threshold:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
