"""Where `hanclip duplicates` should draw its line: copies of a photo against other photos.

    python benchmarks/duplicates_threshold.py [--photos 40] [--bundle DIR]

Photo-like pictures (`benchkit.inputs.synthetic_photo`) and the copies a library collects of
each (JPEG at quality 60, PNG <-> JPEG, resized to 50% and 25%) are embedded with the image
model of `--bundle` or, offline, the random-weight ViT-B/32; the report gives the cosines of
copies against their originals (lowest) and of different photos (highest), in the raw space
and through the heads. "threshold (raw space)", the middle of the gap in the raw space that
`hanclip duplicates` compares, is where `hanclip_library.duplicates.DEFAULT_THRESHOLD` comes
from (random weights: a measured starting point, which `--threshold` overrides).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from benchkit import entry
from benchkit.inputs import synthetic_photo

from hanclip_model.heads import l2_normalize

ORIGINAL_SIZE = (800, 600)
COPY_KINDS = ("jpeg-q60", "other-format", "resized-50", "resized-25")


@dataclass(frozen=True)
class CopyScores:
    """One kind of copy's cosine with its original: the lowest and low percentiles."""

    kind: str
    min: float
    p1: float
    p5: float
    p50: float


@dataclass(frozen=True)
class DifferentScores:
    """Different photos against each other: the highest and high percentiles."""

    pairs: int
    max: float
    p50: float
    p95: float
    p99: float


@dataclass(frozen=True)
class Space:
    """The copies' scores against their originals and the different photos' scores."""

    copies: tuple[CopyScores, ...]
    different: DifferentScores

    @property
    def lowest_copy(self) -> float:
        return min(c.min for c in self.copies)

    @property
    def highest_different(self) -> float:
        return self.different.max

    @property
    def gap(self) -> float:
        return self.lowest_copy - self.highest_different

    @property
    def threshold(self) -> float:
        """The middle of the gap (or of the overlap, where there is no gap)."""
        return (self.lowest_copy + self.highest_different) / 2


@dataclass(frozen=True)
class Results:
    photos: int  # each with its original and one copy of every COPY_KINDS
    embedded_by: str
    raw: Space  # what `hanclip duplicates` compares
    search: Space  # through the heads

    @property
    def threshold_raw_space(self) -> float:
        return round(self.raw.threshold, 2)


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


def space(vectors: np.ndarray, count: int) -> Space:
    """`vectors` rows: photo 0's original and copies (COPY_KINDS order), then photo 1's, ..."""
    per_photo = 1 + len(COPY_KINDS)
    unit = l2_normalize(vectors).reshape(count, per_photo, -1)
    copies = []
    for k, kind in enumerate(COPY_KINDS):
        scores = np.einsum("pd,pd->p", unit[:, 0], unit[:, 1 + k])
        copies.append(CopyScores(kind, float(scores.min()), *_percentiles(scores, (1, 5, 50))))
    flat = unit.reshape(count * per_photo, -1)
    photo = np.repeat(np.arange(count), per_photo)
    different = (flat @ flat.T)[photo[:, None] < photo[None, :]]
    high = _percentiles(different, (50, 95, 99))
    return Space(tuple(copies), DifferentScores(different.size, float(different.max()), *high))


def _percentiles(scores: np.ndarray, points: Sequence[int]) -> list[float]:
    return [float(v) for v in np.percentile(scores, points)]


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


def measure(photos: int, bundle: str | None, seed: int) -> Results:
    what, raw_embeddings, project = embedders(bundle)
    with tempfile.TemporaryDirectory() as tmp:
        variants = write_variants(Path(tmp), photos, seed)
        raw = raw_embeddings([path for paths in variants for path in paths])
    return Results(photos, what, space(raw, photos), space(project(raw), photos))


def main(argv: Sequence[str] | None = None) -> int:
    example = "python benchmarks/duplicates_threshold.py --photos 40 --json dup.json"
    parser = entry.parser(__doc__, example)
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--bundle", help="a hanclip bundle with real weights (default: random)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.photos < 2:
        parser.error("--photos must be at least 2")
    return entry.finish(
        lambda: measure(args.photos, args.bundle, args.seed),
        args.json_path,
        title="copies of a photo against other photos: where `hanclip duplicates` draws its line",
    )


if __name__ == "__main__":
    sys.exit(main())
