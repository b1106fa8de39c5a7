"""The inputs benchmarks fabricate: bundles (real-size random weights, or the tests' tiny
ones), photo-like JPEGs, a large library, Korean query texts."""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchkit.processes import log
from hanclip_model.bundle import HEADS_NAME, MANIFEST_NAME
from hanclip_model.files import atomic_path, replace_dir

if TYPE_CHECKING:
    from PIL import Image

CLIP_DIM = 512  # ViT-B-32's image embedding
PHOTO_SIZE = (4000, 3000)  # 12 megapixels, a phone camera's 4:3 frame
JPEG_QUALITY = 90
# Luminance noise (grey levels) on top of smooth fields brings a 12 MP JPEG at q90 to a phone
# photo's file size (the speed report gives the mean), so entropy decoding costs what it
# costs on real photos.
PHOTO_NOISE_STD = 6.0


def build_random_bundle(directory: Path) -> Path:
    """A bundle of real-size random models (kept: building one takes a while)."""
    if (directory / MANIFEST_NAME).is_file():
        return directory
    import torch

    from hanclip_eval.random_models import MINILM_L12, RANDOM_CLIP_SPEC, random_minilm
    from hanclip_model.bundle import write_bundle
    from hanclip_model.encoders import quiet_transformers
    from trainer.heads import HanclipHeads

    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    quiet_transformers()  # loading bars would bury the progress lines
    # The real MiniLM's tokenizer is a 250,002-piece Unigram vocabulary, dear to load;
    # the stand-in matches its kind and size so a cold search pays what a user's does.
    random_minilm(staging / "text", shape=MINILM_L12, tokenizer="unigram")
    torch.manual_seed(0)
    heads = HanclipHeads(image_dim=CLIP_DIM, text_dim=MINILM_L12.hidden, out_dim=CLIP_DIM)
    heads.eval().save(staging / HEADS_NAME)
    write_bundle(
        staging,
        name="random-vit-b32-minilm-l12",
        image_model=RANDOM_CLIP_SPEC,
        text_model="text",
        heads=HEADS_NAME,
    )
    replace_dir(staging, directory)
    return directory


def _smooth_field(
    rng: np.random.Generator, grid: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    from PIL import Image

    cells = rng.integers(0, 256, size=(*grid, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(cells).resize(size, Image.BICUBIC), dtype=np.float32)


def synthetic_photo(size: tuple[int, int], seed: int) -> Image.Image:
    """A photo-like RGB image: smooth colour at two scales, hard-edged shapes, sensor noise.

    Flat or purely random pixels would make JPEG decoding far cheaper or far dearer than a
    camera photo; this lands at a phone photo's file size.
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    width, height = size
    pixels = 0.7 * _smooth_field(rng, (6, 8), size) + 0.3 * _smooth_field(rng, (60, 80), size)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(20, width // 3)), y0 + int(rng.integers(20, height // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=colour)
    noise = rng.standard_normal((height, width, 1), dtype=np.float32) * PHOTO_NOISE_STD
    noisy = np.asarray(image, dtype=np.float32) + noise
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def photo_paths(folder: Path, count: int) -> list[Path]:
    return [folder / f"photo-{i:03d}.jpg" for i in range(count)]


def ensure_photos(
    folder: Path, count: int, size: tuple[int, int], first_seed: int = 0
) -> list[Path]:
    """`count` JPEGs in `folder`, generated once; photo i is always the same picture (seed
    `first_seed + i`: another first seed gives other pictures). An interrupted run leaves no
    truncated photo behind for the next one to reuse."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = photo_paths(folder, count)
    for i, path in enumerate(paths):
        if path.is_file():
            continue
        with atomic_path(path) as tmp:
            synthetic_photo(size, seed=first_seed + i).save(tmp, "JPEG", quality=JPEG_QUALITY)
    return paths


def linked_folder(folder: Path, photos: Sequence[Path]) -> Path:
    """A fresh folder holding exactly `photos` (hard links: no copy, and no symlinks)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for photo in photos:
        try:
            os.link(photo, folder / photo.name)
        except OSError:
            shutil.copy2(photo, folder / photo.name)
    return folder


def read_bytes(paths: Sequence[Path]) -> int:
    """Bring files into the page cache, so every contender reads them from memory; the
    bytes read."""
    total = 0
    for path in paths:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                total += len(chunk)
    return total


def synthetic_root(library: Path) -> Path:
    """The folder of the rows `fill_library` adds to `library`."""
    return library.parent / f"{library.name}-synthetic"


def fill_library(library: Path, total: int, seed: int = 0) -> int:
    """Add synthetic rows (random raw embeddings) until `total` photos; returns how many were
    added. Search never decodes the photos, and the ViT's cost per photo is what the index
    measurement is for already; but it leaves out a hit whose file is gone, so each row has an
    empty file under `synthetic_root(library)`."""
    from hanclip_library.store import NewPhoto, PhotoStore

    root = synthetic_root(library)
    root.mkdir(exist_ok=True)
    store = PhotoStore(library, create=False)
    try:
        have = store.count()
        dim = store.embedding(int(store.ids()[0])).shape[0]
        rng = np.random.default_rng(seed)
        for start in range(have, total, 1000):
            count = min(1000, total - start)
            raw = rng.standard_normal((count, dim), dtype=np.float32)
            paths = [root / f"{start + i:06d}.jpg" for i in range(count)]
            for path in paths:
                path.touch()
            photos = [
                NewPhoto(
                    path=str(paths[i]),
                    size=3_500_000,
                    mtime_ns=1_700_000_000_000_000_000 + start + i,
                    sha256=f"{start + i:064x}",
                    width=PHOTO_SIZE[0],
                    height=PHOTO_SIZE[1],
                    taken_at=None,
                    embedding=raw[i],
                )
                for i in range(count)
            ]
            store.add_photos(photos)
        return max(0, total - have)
    finally:
        store.close()


@dataclass(frozen=True)
class Inputs:
    """The bundle and the 12-MP photos, with what preparing them cost."""

    bundle: Path
    photos: tuple[Path, ...]
    bundle_origin: str  # "given", "cached" or "built"
    bundle_s: float
    photos_generated: int
    photos_s: float

    @property
    def photo_mean_mb(self) -> float:
        return float(np.mean([p.stat().st_size for p in self.photos]) / 1e6)


def prepare_inputs(work: Path, photos: int, bundle: Path | None) -> Inputs:
    """The bundle (`bundle`, else the random real-size one) and `photos` 12-MP JPEGs, built
    once per work directory."""
    start = time.perf_counter()
    if bundle is not None:
        bundle, origin = bundle.resolve(), "given"
    else:
        log("building the random-weight bundle (once per work directory)")
        target = work / "bundle-xlmr-tokenizer"
        origin = "cached" if (target / MANIFEST_NAME).is_file() else "built"
        bundle = build_random_bundle(target)
    bundle_s = time.perf_counter() - start
    start = time.perf_counter()
    folder = work / f"photos-{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}"
    missing = sum(not p.is_file() for p in photo_paths(folder, photos))
    log(f"photos: {photos} 12-MP JPEGs, {missing} to generate")
    paths = ensure_photos(folder, photos, PHOTO_SIZE)
    return Inputs(bundle, tuple(paths), origin, bundle_s, missing, time.perf_counter() - start)


def tiny_bundle(directory: Path) -> Path:
    """The tests' kind of tiny bundle (32-d image model, heads to 16-d), built once under
    `directory` (its manifest names the models there by absolute path)."""
    bundle, marker = directory / "bundle", directory / "complete"
    if marker.is_file():
        return bundle
    import torch

    from hanclip_eval.tiny_models import (
        build_tiny_open_clip,
        build_tiny_sentence_transformer,
        write_bundle_dir,
    )
    from trainer.heads import HanclipHeads

    shutil.rmtree(directory, ignore_errors=True)
    image_spec = build_tiny_open_clip(directory / "clip", embed_dim=32)
    text = build_tiny_sentence_transformer(directory / "text")
    write_bundle_dir(bundle, image_spec, text, heads=HEADS_NAME, name="tiny-heads")
    torch.manual_seed(0)
    HanclipHeads(image_dim=32, text_dim=32, out_dim=16).eval().save(bundle / HEADS_NAME)
    marker.write_text("1")
    return bundle


# Query texts are "<when> <where> <what>": 8 x 10 x 15 = 1,200 distinct phrases.
WHEN = ("여름", "겨울", "밤", "아침", "비 오는 날", "생일", "주말", "가을 저녁")
WHERE = (
    "해변에서",
    "공원에서",
    "산 위에서",
    "한강에서",
    "제주도에서",
    "카페에서",
    "시장에서",
    "눈 덮인 길에서",
    "기차역에서",
    "한옥 마을에서",
)
WHAT = (
    "고양이",
    "강아지",
    "아이들",
    "할머니",
    "가족 사진",
    "친구들",
    "자전거",
    "기차",
    "노을",
    "눈사람",
    "벚꽃",
    "단풍",
    "커피 한 잔",
    "생일 케이크",
    "불꽃놀이",
)
PHRASES = len(WHEN) * len(WHERE) * len(WHAT)


def korean_queries(count: int, seed: int = 0) -> list[str]:
    """`count` distinct Korean query texts, the same ones for the same seed (no cache can
    answer one); a shorter list is the start of a longer one."""
    phrases = [f"{when} {where} {what}" for when in WHEN for where in WHERE for what in WHAT]
    if count > len(phrases):
        raise ValueError(f"{count} queries asked, {len(phrases)} distinct ones available")
    random.Random(seed).shuffle(phrases)
    return phrases[:count]
