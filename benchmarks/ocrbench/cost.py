"""What the recognition pass adds to `hanclip index`: a folder of photo-like JPEGs, one in ten
carrying a sign with Korean text, indexed into two fresh libraries by the console script,
once with `--no-ocr` and once with the default text engine; same photos, same bundle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchkit.inputs import JPEG_QUALITY, build_random_bundle, synthetic_photo, tiny_bundle
from benchkit.workspace import Workspace, check_index_counts, isolated_env
from PIL import Image, ImageDraw, ImageFont

from hanclip_model.files import atomic_path
from ocrbench import testset

TEXT_EVERY = 10  # one photo in ten holds text


@dataclass(frozen=True)
class CostFigure:
    """`hanclip index` with and without the recognition pass, on the same photos."""

    photos: int
    with_text: int
    size: str  # "WxH"
    bundle: str  # "random ViT-B/32" or "tiny"
    index_no_ocr_s: float
    index_ocr_s: float
    ratio: float  # index_ocr_s / index_no_ocr_s


def text_photo(size: tuple[int, int], seed: int) -> Image.Image:
    """A photo-like picture with a sign: a light panel with dark text of a tenth of the
    height, from `testset.TEXTS`."""
    image = synthetic_photo(size, seed=seed)
    lines = testset.TEXTS["sign"][seed % len(testset.TEXTS["sign"])].split()[:3]
    font = ImageFont.truetype(str(testset.fonts()[0]), max(16, size[1] // 10))
    draw = ImageDraw.Draw(image)
    text = " ".join(lines)
    width = draw.textlength(text, font=font)
    left, top, pad = size[0] // 10, size[1] // 3, font.size // 2
    box = (left - pad, top - pad, left + width + pad, top + font.size * 1.4 + pad)
    draw.rectangle(box, fill=(245, 245, 240))
    draw.text((left, top), text, font=font, fill=(20, 20, 20))
    return image


def write_folder(folder: Path, photos: int, size: tuple[int, int]) -> tuple[list[Path], int]:
    """`photos` JPEGs (made once per folder), every TEXT_EVERY-th with a sign; (paths, how
    many with text)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, texted = [], 0
    for i in range(photos):
        has_text = i % TEXT_EVERY == TEXT_EVERY - 1
        texted += has_text
        path = folder / f"photo-{i:03d}{'-text' if has_text else ''}.jpg"
        paths.append(path)
        if path.is_file():
            continue
        image = text_photo(size, seed=i) if has_text else synthetic_photo(size, seed=i)
        with atomic_path(path) as tmp:
            image.save(tmp, "JPEG", quality=JPEG_QUALITY)
    return paths, texted


def measure_cost(work: Path, photos: int, size: tuple[int, int], tiny: bool) -> CostFigure:
    """Index the folder twice, each into a fresh library: `--no-ocr`, then the default."""
    if tiny:
        bundle, kind = tiny_bundle(work / "tiny-bundle"), "tiny"
    else:
        bundle, kind = build_random_bundle(work / "bundle-xlmr-tokenizer"), "random ViT-B/32"
    folder = work / f"cost-{size[0]}x{size[1]}-{photos}"
    paths, texted = write_folder(folder, photos, size)
    space = Workspace(work, bundle, isolated_env(work), watch_index=False)
    space.index(folder, space.fresh("warm-up"), options=("--no-ocr",))  # caches, page cache
    seconds = []
    for name, options in (("no-ocr", ("--no-ocr",)), ("ocr", ())):
        run, _ = space.index(folder, space.fresh(f"cost-{name}"), options=options)
        check_index_counts(run, len(paths))
        seconds.append(run.wall_s)
    return CostFigure(
        len(paths), texted, f"{size[0]}x{size[1]}", kind, *seconds, seconds[1] / seconds[0]
    )
