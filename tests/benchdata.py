"""Tiny benchmark datasets in each published format, for the readers and `hanclip bench`.

One writer per dataset name (`WRITERS`): `write_xtd10_ko(data_dir)` fills `data_dir` with a
few small images and Korean captions (or labels) laid out exactly as the real download is,
so `load_dataset(name, data_dir)` reads it. The data is fixed: tests assert on it.
"""

from __future__ import annotations

import colorsys
import json
import pickle
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hanclip_eval.datasets import kocc3m_image_stem
from hanclip_eval.datasets.class_names import CIFAR10_CLASSES, CIFAR100_CLASSES, STL10_CLASSES

IMAGE_SIDE = 8

CIFAR10_NAMES = tuple(english for english, _ in CIFAR10_CLASSES)
CIFAR100_NAMES = tuple(english for english, _ in CIFAR100_CLASSES)
STL10_NAMES = tuple(english for english, _ in STL10_CLASSES)


def write_image(path: Path, index: int = 0) -> Path:
    """A small solid image whose colour depends on `index`; PNG for `.png`, else JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = colorsys.hsv_to_rgb((index * 0.37) % 1, 0.7, 0.8)
    colour = tuple(round(255 * c) for c in rgb)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), colour).save(path, fmt)
    return path


def _write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    path.write_text(text, encoding="utf-8")


# --- MSCOCO-Korean: AIHub's JSON, the Karpathy split file, COCO 2014 images -----------------

COCO_RECORDS = [
    {
        "file_path": "val2014/COCO_val2014_000000000001.jpg",
        "id": 1,
        "captions": ["a cat", "a cat on a mat"],
        "caption_ko": ["고양이", "매트 위의 고양이"],
    },
    {
        "file_path": "val2014/COCO_val2014_000000000002.jpg",
        "id": 2,
        "captions": ["a dog"],
        "caption_ko": ["개"],
    },
    {
        "file_path": "train2014/COCO_train2014_000000000003.jpg",
        "id": 3,
        "captions": ["a bus"],
        "caption_ko": ["버스"],
    },
    {
        "file_path": "val2014/COCO_val2014_000000000004.jpg",
        "id": 4,
        "captions": ["a sunset", "sea", "x"],
        # Decomposed Hangul with spaces, and a blank caption: readers clean both.
        "caption_ko": [unicodedata.normalize("NFD", " 바다 위 노을 "), "바다", "  "],
    },
]
KARPATHY = {
    "images": [
        {"split": "test", "cocoid": 4, "filepath": "val2014", "filename": "..."},
        {"split": "val", "cocoid": 2, "filepath": "val2014", "filename": "..."},
        {"split": "train", "cocoid": 3, "filepath": "train2014", "filename": "..."},
        {"split": "test", "cocoid": 1, "filepath": "val2014", "filename": "..."},
    ]
}


def write_mscoco_ko(data_dir: Path) -> None:
    """MSCOCO_train_val_Korean.json, dataset_coco.json and every record's image.

    Karpathy test: images 4 then 1 (4 captions); val: images 1, 2, 4 (5 captions).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(COCO_RECORDS, ensure_ascii=False)
    (data_dir / "MSCOCO_train_val_Korean.json").write_text(text, encoding="utf-8")
    (data_dir / "dataset_coco.json").write_text(json.dumps(KARPATHY), encoding="utf-8")
    for index, record in enumerate(COCO_RECORDS):
        write_image(data_dir / record["file_path"], index)


# --- XTD10: caption i of test_1kcaptions_ko.txt describes image name i ----------------------

XTD10_CAPTIONS = ("고양이 한 마리", "바다 위 노을", "눈 덮인 산")
XTD10_IMAGES = ("a.jpg", "b.jpg", "c.jpg")


def write_xtd10_ko(data_dir: Path, *, images_in_folder: bool = True) -> None:
    """The two XTD10 text files (captions end with a blank line) and the images, in
    data_dir/images/ or, with `images_in_folder=False`, in data_dir itself."""
    data_dir.mkdir(parents=True, exist_ok=True)
    captions = "\n".join(XTD10_CAPTIONS) + "\n\n"
    (data_dir / "test_1kcaptions_ko.txt").write_text(captions, encoding="utf-8")
    names = "\n".join(XTD10_IMAGES) + "\n"
    (data_dir / "test_image_names.txt").write_text(names, encoding="utf-8")
    images = data_dir / "images" if images_in_folder else data_dir
    for index, name in enumerate(XTD10_IMAGES):
        write_image(images / name, index)


# --- Crossmodal-3600: captions.jsonl and images/<key>.jpg -----------------------------------

XM3600_RECORDS = [
    {"image/key": "k1", "ko": {"caption": ["해변의 개", "개"]}, "en": {"caption": ["a dog"]}},
    {"image/key": "k2", "en": {"caption": ["no korean here"]}},
    {"image/key": "k3", "ko": {"caption": ["자전거"]}},
    {"image/key": "k4", "ko": {"caption": ["비 오는 거리"]}, "en": {"caption": ["a rainy street"]}},
]


def write_crossmodal3600(data_dir: Path) -> None:
    """captions.jsonl and the images of the records with Korean captions (k1, k3, k4);
    k2 has none, so its image is not fetched either."""
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(data_dir / "captions.jsonl", XM3600_RECORDS)
    for index, record in enumerate(XM3600_RECORDS):
        if "ko" in record:
            write_image(data_dir / "images" / f"{record['image/key']}.jpg", index)


# --- KoCC3M: a parquet file and images/<sha1(image_url)>.<ext> ------------------------------

KOCC3M_ROWS = [
    ("http://example.com/a.jpg", "강아지"),
    ("http://example.com/b.PNG?size=large", "도시의 밤"),
    ("http://example.com/missing.jpg", "가져오지 못한 사진"),
    ("http://example.com/c", "산"),
]
# Image URL → the extension it was fetched with; the "missing" row was never fetched.
KOCC3M_FETCHED = {
    "http://example.com/a.jpg": ".jpg",
    "http://example.com/b.PNG?size=large": ".png",
    "http://example.com/c": ".jpg",
}


def write_kocc3m_parquet(path: Path, rows: Sequence[tuple[str, str]]) -> None:
    """A KoCC3M-style parquet file of (image_url, korean_caption) rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    urls, captions = zip(*rows, strict=True)
    table = pa.table(
        {
            "image_url": list(urls),
            "english_caption": ["english"] * len(rows),
            "korean_caption": list(captions),
        }
    )
    pq.write_table(table, path)


def kocc3m_image_path(data_dir: Path, image_url: str) -> Path:
    """Where `write_kocc3m` put the image of `image_url` (it must be in KOCC3M_FETCHED)."""
    return data_dir / "images" / f"{kocc3m_image_stem(image_url)}{KOCC3M_FETCHED[image_url]}"


def write_kocc3m(data_dir: Path) -> None:
    """kocc3m_validation.parquet (KOCC3M_ROWS) and the fetched images (KOCC3M_FETCHED)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    write_kocc3m_parquet(data_dir / "kocc3m_validation.parquet", KOCC3M_ROWS)
    for index, url in enumerate(KOCC3M_FETCHED):
        write_image(kocc3m_image_path(data_dir, url), index)


# --- Generic JSONL: {"image": relative path, "captions": [...] or "..."} per line -----------

JSONL_RECORDS = [
    {"image": "photos/1.jpg", "captions": ["첫 번째", "하나"]},
    {"image": "photos/2.png", "captions": "두 번째"},
    {"image": "photos/1.jpg", "captions": ["또 하나"]},
    {"image": "photos/3.jpg", "captions": ["세 번째 사진"]},
]


def write_jsonl(data_dir: Path) -> None:
    """captions.jsonl (one image listed twice, one lone-string caption) and its photos."""
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(data_dir / "captions.jsonl", JSONL_RECORDS)
    images = dict.fromkeys(record["image"] for record in JSONL_RECORDS)
    for index, image in enumerate(images):
        write_image(data_dir / image, index)


# --- CIFAR-10 / CIFAR-100: Python 2 pickles ------------------------------------------------

CIFAR10_LABELS = (3, 0, 9)
CIFAR100_FINE_LABELS = (0, 99, 2)
CIFAR100_COARSE_LABELS = (4, 13, 14)


def python2_style_pickle(path: Path, content: dict) -> None:
    """Protocol 2 with numpy.core names, as in the published (Python 2) CIFAR files."""
    raw = pickle.dumps(content, protocol=2)
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


def cifar_pixels(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, 32, 32, 3] with distinct values, and the same as CIFAR rows [n, 3072].

    Seeded: the CIFAR writers store exactly these images.
    """
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    return images, images.transpose(0, 3, 1, 2).reshape(n, 3072)


def write_cifar10(data_dir: Path, label_names: Sequence[str] | None = CIFAR10_NAMES) -> None:
    """cifar-10-batches-py/test_batch with cifar_pixels(3) labelled CIFAR10_LABELS, and
    batches.meta listing `label_names` (no meta file when None)."""
    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    _, rows = cifar_pixels(len(CIFAR10_LABELS))
    batch = {
        b"batch_label": b"testing batch 1 of 1",
        b"data": rows,
        b"labels": list(CIFAR10_LABELS),
    }
    python2_style_pickle(folder / "test_batch", batch)
    if label_names is not None:
        meta = {b"label_names": [n.encode() for n in label_names], b"num_vis": 3072}
        python2_style_pickle(folder / "batches.meta", meta)


def write_cifar100(data_dir: Path) -> None:
    """cifar-100-python/test with cifar_pixels(3) (fine labels CIFAR100_FINE_LABELS) and meta."""
    folder = data_dir / "cifar-100-python"
    folder.mkdir(parents=True)
    _, rows = cifar_pixels(len(CIFAR100_FINE_LABELS))
    test = {
        b"data": rows,
        b"fine_labels": list(CIFAR100_FINE_LABELS),
        b"coarse_labels": list(CIFAR100_COARSE_LABELS),
    }
    python2_style_pickle(folder / "test", test)
    meta = {b"fine_label_names": [n.encode() for n in CIFAR100_NAMES]}
    python2_style_pickle(folder / "meta", meta)


# --- STL-10: raw uint8 binaries, labels 1..10 -----------------------------------------------

STL10_FILE_LABELS = (8, 1, 10)  # as stored: 1-based


def stl10_pixels(n: int) -> np.ndarray:
    """Seeded images [n, 96, 96, 3]: the STL-10 writer stores exactly these."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)


def write_stl10(data_dir: Path) -> None:
    """stl10_binary/test_X.bin (stl10_pixels(3)), test_y.bin and class_names.txt."""
    folder = data_dir / "stl10_binary"
    folder.mkdir(parents=True)
    images = stl10_pixels(len(STL10_FILE_LABELS))
    # On disk each image is [channel, column, row]: the transpose of [row, column, channel].
    images.transpose(0, 3, 2, 1).tofile(folder / "test_X.bin")
    np.array(STL10_FILE_LABELS, dtype=np.uint8).tofile(folder / "test_y.bin")
    (folder / "class_names.txt").write_text("\n".join(STL10_NAMES) + "\n", encoding="utf-8")


# --- Caltech101: 101_ObjectCategories/<class>/image_NNNN.jpg --------------------------------

# Mixed-case folder names (sorted case-sensitively by the reader) and the background folder,
# which is not a class.
CALTECH101_FOLDERS = {
    "ant": 1,
    "accordion": 2,
    "Leopards": 1,
    "Faces": 2,
    "BACKGROUND_Google": 2,
}


def write_caltech101(data_dir: Path) -> None:
    """101_ObjectCategories with CALTECH101_FOLDERS[folder] images in each folder."""
    root = data_dir / "101_ObjectCategories"
    index = 0
    for folder, count in CALTECH101_FOLDERS.items():
        for number in range(1, count + 1):
            write_image(root / folder / f"image_{number:04d}.jpg", index)
            index += 1


WRITERS: dict[str, Callable[[Path], None]] = {
    "mscoco-ko": write_mscoco_ko,
    "xtd10-ko": write_xtd10_ko,
    "crossmodal3600": write_crossmodal3600,
    "kocc3m": write_kocc3m,
    "jsonl": write_jsonl,
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "stl10": write_stl10,
    "caltech101": write_caltech101,
}
