"""Readers for the image–caption retrieval benchmarks, in their published file formats.

Each reader takes the folder the user downloaded into and `limit` (the first N images in
the order given below; their captions come with them) and returns a RetrievalSet.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hanclip_eval.datasets.base import (
    RetrievalSet,
    build_retrieval_set,
    caption_list,
    check_images_exist,
    image_folder,
    read_json,
    read_jsonl,
    read_lines,
    require_dir,
    require_file,
)
from hanclip_model.errors import HanclipError

MSCOCO_KO_FILE = "MSCOCO_train_val_Korean.json"
KARPATHY_FILE = "dataset_coco.json"
MSCOCO_KO_SOURCE = (
    "download it from AIHub (https://aihub.or.kr, 'MSCOCO 한국어 이미지 설명 데이터셋')"
)
KARPATHY_SOURCE = (
    "it is the Karpathy split file in caption_datasets.zip from "
    "https://cs.stanford.edu/people/karpathy/deepimagesent/ (or use --split val)"
)
COCO_IMAGES_SOURCE = "put the COCO 2014 images (https://cocodataset.org) in {}, at each file_path"
XTD10_SOURCE = "get it from https://github.com/adobe-research/Cross-lingual-Test-Dataset-XTD10"
XTD10_IMAGES_SOURCE = "the XTD10 images are MSCOCO 2014 images, put them in images/"
XM3600_SOURCE = (
    "get captions.jsonl from https://google.github.io/crossmodal-3600/web-data/captions.zip"
)
XM3600_IMAGES_SOURCE = (
    "extract https://open-images-dataset.s3.amazonaws.com/crossmodal-3600/images.tgz into images/"
)
KOCC3M_SOURCE = (
    "download a KoCC3M parquet file from https://huggingface.co/datasets/QuoQA-NLP/KoCC3M"
)
KOCC3M_IMAGES_SOURCE = "fetch the images into images/, each named sha1(image_url) + its extension"
KOCC3M_COLUMNS = ("image_url", "korean_caption")
JSONL_SOURCE = 'write one {"image": "relative/path.jpg", "captions": ["..."]} object per line'


def _field(record: object, key: str, where: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise HanclipError(f"{where}: record has no '{key}'")
    return record[key]


def _karpathy_test_ids(data_dir: Path) -> list[int]:
    path = require_file(data_dir / KARPATHY_FILE, KARPATHY_SOURCE)
    images = _field(read_json(path), "images", str(path))
    return [
        int(_field(image, "cocoid", f"{path}: image {number}"))
        for number, image in enumerate(images)
        if _field(image, "split", f"{path}: image {number}") == "test"
    ]


def read_mscoco_ko(
    data_dir: Path, *, split: str = "karpathy-test", limit: int | None = None
) -> RetrievalSet:
    """MSCOCO with AIHub's Korean captions (all `caption_ko` of each image).

    split "karpathy-test": the 5k Karpathy test images in the order of dataset_coco.json (so
    limit=1000 is the usual 1k test fold); "val": every val2014 record in file order.
    """
    path = require_file(data_dir / MSCOCO_KO_FILE, MSCOCO_KO_SOURCE)
    records = read_json(path)
    if not isinstance(records, list):
        raise HanclipError(f"{path}: expected a JSON list of image records")
    if split == "val":
        chosen = [
            record
            for number, record in enumerate(records)
            if str(_field(record, "file_path", f"{path}: record {number}")).startswith("val2014")
        ]
    elif split == "karpathy-test":
        by_id = {int(_field(r, "id", f"{path}: record {n}")): r for n, r in enumerate(records)}
        test_ids = _karpathy_test_ids(data_dir)
        absent = [image_id for image_id in test_ids if image_id not in by_id]
        if absent:
            raise HanclipError(
                f"{len(absent)} Karpathy test images have no record in {path}, "
                f"the first is id {absent[0]}"
            )
        chosen = [by_id[image_id] for image_id in test_ids]
    else:
        raise HanclipError(f"mscoco-ko has no split {split!r}: use karpathy-test or val")
    entries = (
        (data_dir / str(_field(r, "file_path", str(path))), caption_list(r.get("caption_ko")))
        for r in chosen
    )
    dataset = build_retrieval_set("mscoco-ko", entries, limit, path)
    check_images_exist(dataset.image_paths, "mscoco-ko", COCO_IMAGES_SOURCE.format(data_dir))
    return dataset


def read_xtd10_ko(data_dir: Path, *, limit: int | None = None) -> RetrievalSet:
    """XTD10 Korean: line i of test_1kcaptions_ko.txt describes line i of test_image_names.txt."""
    captions = read_lines(require_file(data_dir / "test_1kcaptions_ko.txt", XTD10_SOURCE))
    names = read_lines(require_file(data_dir / "test_image_names.txt", XTD10_SOURCE))
    if len(captions) != len(names):
        raise HanclipError(
            f"XTD10 in {data_dir}: {len(captions)} captions but {len(names)} image names"
        )
    images = image_folder(data_dir)
    entries = ((images / name, [caption]) for name, caption in zip(names, captions, strict=True))
    dataset = build_retrieval_set("xtd10-ko", entries, limit, data_dir)
    check_images_exist(dataset.image_paths, "xtd10-ko", XTD10_IMAGES_SOURCE)
    return dataset


def read_crossmodal3600(
    data_dir: Path, *, limit: int | None = None, language: str = "ko"
) -> RetrievalSet:
    """Crossmodal-3600: every caption in `language` of each image, in captions.jsonl order."""
    path = require_file(data_dir / "captions.jsonl", XM3600_SOURCE)
    images = image_folder(data_dir)

    def entries() -> Iterator[tuple[Path, list[object]]]:
        for where, record in read_jsonl(path):
            key = _field(record, "image/key", where)
            in_language = record.get(language)
            texts = in_language.get("caption") if isinstance(in_language, dict) else None
            yield images / f"{key}.jpg", caption_list(texts)

    dataset = build_retrieval_set("crossmodal3600", entries(), limit, path)
    check_images_exist(dataset.image_paths, "crossmodal3600", XM3600_IMAGES_SOURCE)
    return dataset


def _kocc3m_parquet(data_dir: Path) -> Path:
    """kocc3m*.parquet, or the only parquet file in data_dir."""
    candidates = sorted(data_dir.glob("*.parquet")) if data_dir.is_dir() else []
    named = [path for path in candidates if path.name.lower().startswith("kocc3m")]
    chosen = named or candidates
    if len(chosen) == 1:
        return chosen[0]
    if not chosen:
        raise HanclipError(f"kocc3m*.parquet not found in {data_dir}: {KOCC3M_SOURCE}")
    names = ", ".join(path.name for path in chosen)
    raise HanclipError(
        f"several parquet files in {data_dir} ({names}): keep one or name it kocc3m*"
    )


def kocc3m_image_stem(image_url: str) -> str:
    """The file name, without extension, that a KoCC3M image is fetched to."""
    return hashlib.sha1(image_url.encode("utf-8")).hexdigest()


def _images_by_stem(folder: Path) -> dict[str, Path]:
    """File stem → path; where one stem has several extensions, the first name sorted wins."""
    found: dict[str, Path] = {}
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if path.is_file():
            found.setdefault(path.stem, path)
    return found


def _kocc3m_rows(path: Path) -> Iterator[tuple[str, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise HanclipError("reading KoCC3M needs pyarrow: pip install 'hanclip[bench]'") from None
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise HanclipError(f"{path}: not a readable parquet file ({exc})") from None
    absent = [c for c in KOCC3M_COLUMNS if c not in parquet.schema_arrow.names]
    if absent:
        raise HanclipError(f"{path}: no column {', '.join(absent)} (expected {KOCC3M_COLUMNS})")
    # Batches, so a limited run reads only the first row groups of a 3M-row file.
    for batch in parquet.iter_batches(columns=list(KOCC3M_COLUMNS), batch_size=65536):
        yield from zip(*(batch.column(c).to_pylist() for c in KOCC3M_COLUMNS), strict=True)


def read_kocc3m(data_dir: Path, *, limit: int | None = None) -> RetrievalSet:
    """KoCC3M rows whose image was fetched, each with its one Korean caption, in file order.

    An image lives in images/ as sha1(image_url as UTF-8).hexdigest() plus any extension
    (fetchers keep the URL's extension or write .jpg). Rows without a fetched image are
    skipped and counted in `skipped` (up to where `limit` stopped the reading).
    """
    path = _kocc3m_parquet(data_dir)
    images = _images_by_stem(require_dir(data_dir / "images", KOCC3M_IMAGES_SOURCE))
    entries = (
        (images.get(kocc3m_image_stem(url)) if isinstance(url, str) else None, [caption])
        for url, caption in _kocc3m_rows(path)
    )
    return build_retrieval_set("kocc3m", entries, limit, path)


def read_captions_jsonl(data_dir: Path, *, limit: int | None = None) -> RetrievalSet:
    """Any set written as {"image": path relative to the file, "captions": [...]} per line.

    `data_dir` is the .jsonl file itself or a folder holding captions.jsonl.
    """
    path = data_dir if data_dir.suffix == ".jsonl" else data_dir / "captions.jsonl"
    require_file(path, JSONL_SOURCE)
    entries = (
        (
            path.parent / str(_field(record, "image", where)),
            caption_list(_field(record, "captions", where)),
        )
        for where, record in read_jsonl(path)
    )
    dataset = build_retrieval_set("jsonl", entries, limit, path)
    check_images_exist(dataset.image_paths, "jsonl", f"image paths are relative to {path.parent}")
    return dataset
