"""What every benchmark reader returns, and the checks they share."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
from PIL import Image

from hanclip_model.errors import HanclipError
from hanclip_model.texts import clean_text


@dataclass
class RetrievalSet:
    """Images and their captions; caption i describes image caption_image[i]."""

    name: str
    image_paths: list[Path]
    captions: list[str]
    caption_image: np.ndarray  # int64 [M], an index into image_paths
    # Images passed over while reading: no caption in the language, or (KoCC3M) not fetched.
    skipped: int = 0


class ArrayImages(Sequence[Image.Image]):
    """Images held as one uint8 [N, H, W, 3] array, made into PIL images only when read."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.pixels)

    @overload
    def __getitem__(self, index: int) -> Image.Image: ...

    @overload
    def __getitem__(self, index: slice) -> ArrayImages: ...

    def __getitem__(self, index: int | slice) -> Image.Image | ArrayImages:
        if isinstance(index, slice):
            return ArrayImages(self.pixels[index])
        return Image.fromarray(np.ascontiguousarray(self.pixels[index]))


@dataclass
class ClassificationSet:
    """Images with integer labels; label i names class_names_ko[i] and class_keys[i]."""

    name: str
    images: ArrayImages | list[Path]  # both are what HanclipModel.embed_images accepts
    labels: np.ndarray  # int64 [N]
    class_names_ko: list[str]
    class_keys: list[str]  # the dataset's own (English or folder) names, same order


def require_file(path: Path, how_to_get: str) -> Path:
    if not path.is_file():
        raise HanclipError(f"{path.name} not found in {path.parent}: {how_to_get}")
    return path


def require_dir(path: Path, how_to_get: str) -> Path:
    if not path.is_dir():
        raise HanclipError(f"folder {path.name}/ not found in {path.parent}: {how_to_get}")
    return path


def dataset_folder(data_dir: Path, name: str) -> Path:
    """data_dir/name, or data_dir itself when the user pointed at that folder already."""
    return data_dir if data_dir.name == name else data_dir / name


def image_folder(data_dir: Path) -> Path:
    """data_dir/images when it exists, else data_dir: both layouts are common."""
    images = data_dir / "images"
    return images if images.is_dir() else data_dir


def clean_caption(text: object) -> str | None:
    """NFC-normalised and stripped, so composed and decomposed Hangul compare equal."""
    return clean_text(text)


def caption_list(value: object) -> list[object]:
    """A record's captions: a list as it is, a lone string as a one-item list."""
    if isinstance(value, str):
        return [value]
    return list(value) if isinstance(value, list) else []


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise HanclipError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise HanclipError(f"{path}: not UTF-8 text") from None


def read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, object) for each non-blank line; `where` is "path:line" for error messages."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise HanclipError(f"{where}: invalid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise HanclipError(f"{where}: expected a JSON object")
                yield where, record
    except UnicodeDecodeError:
        raise HanclipError(f"{path}: not UTF-8 text") from None


def read_lines(path: Path) -> list[str]:
    """Stripped lines; blank lines at the end are dropped, inner ones kept to stay aligned."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError:
        raise HanclipError(f"{path}: not UTF-8 text") from None
    while lines and not lines[-1]:
        lines.pop()
    return lines


def build_retrieval_set(
    name: str,
    entries: Iterable[tuple[Path | None, Sequence[object]]],
    limit: int | None,
    source: Path,
) -> RetrievalSet:
    """The first `limit` images with at least one caption, captions in record order.

    An entry is (image path, captions); a None path means the image is not available. Such
    entries, and entries without a usable caption, are skipped and counted. An image listed
    again gets the new captions added to it. Reading stops as soon as `limit` images are
    taken, so `skipped` counts only what was passed over on the way.
    """
    image_paths: list[Path] = []
    image_index: dict[Path, int] = {}
    captions: list[str] = []
    caption_image: list[int] = []
    skipped = 0
    for path, texts in entries:
        if limit is not None and len(image_paths) == limit:
            break
        cleaned = [c for c in map(clean_caption, texts) if c]
        if path is None or not cleaned:
            skipped += 1
            continue
        if path not in image_index:
            image_index[path] = len(image_paths)
            image_paths.append(path)
        captions.extend(cleaned)
        caption_image.extend([image_index[path]] * len(cleaned))
    if not image_paths:
        raise HanclipError(f"{name}: no image with a caption found in {source}")
    return RetrievalSet(
        name=name,
        image_paths=image_paths,
        captions=captions,
        caption_image=np.array(caption_image, dtype=np.int64),
        skipped=skipped,
    )


def check_images_exist(paths: Sequence[Path], name: str, how_to_get: str) -> None:
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise HanclipError(
            f"{name}: {len(missing)} of {len(paths)} images missing, the first is "
            f"{missing[0]}: {how_to_get}"
        )
