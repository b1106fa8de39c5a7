"""Readers for the zero-shot classification benchmarks, with Korean class names built in.

Labels index the built-in Korean names directly; where a dataset ships its own class-name
metadata (CIFAR meta files, STL-10 class_names.txt) the reader checks that it lists the
same English names in the same order, so a misaligned table fails loudly instead of quietly
scoring the wrong class. `limit` keeps the first N images of the order each reader names.
"""

from __future__ import annotations

import os
import pickle
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np

from hanclip_eval.datasets.base import (
    ArrayImages,
    ClassificationSet,
    dataset_folder,
    read_lines,
    require_dir,
    require_file,
)
from hanclip_eval.datasets.class_names import (
    CALTECH101_KO,
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    STL10_CLASSES,
)
from hanclip_model.errors import HanclipError
from hanclip_model.images import IMAGE_EXTENSIONS

# Each class's prompts are embedded and averaged; ["{}"] uses the bare class name instead.
DEFAULT_TEMPLATES = ("{}의 사진", "{}의 흐릿한 사진", "{}의 클로즈업 사진", "{}의 저해상도 사진")

CIFAR10_SOURCE = "extract https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz here"
CIFAR100_SOURCE = "extract https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz here"
STL10_SOURCE = "extract https://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz here"
CALTECH101_SOURCE = (
    "extract 101_ObjectCategories.tar.gz from caltech-101.zip "
    "(https://data.caltech.edu/records/mzrjq-6wc02) here"
)
CALTECH101_BACKGROUND = "BACKGROUND_Google"  # clutter images, not a class (as in torchvision)
STL10_SIDE = 96


def build_prompts(
    class_names_ko: list[str], templates: list[str] | tuple[str, ...] = DEFAULT_TEMPLATES
) -> list[list[str]]:
    """For each class, one prompt per template ("{}" stands for the class name)."""
    if not templates:
        raise HanclipError("no prompt templates given")
    for template in templates:
        if template.count("{}") != 1:
            raise HanclipError(f"prompt template {template!r} must contain {{}} exactly once")
    return [[template.replace("{}", name) for template in templates] for name in class_names_ko]


class _ArrayUnpickler(pickle.Unpickler):
    """Builds dicts, lists, bytes and numpy arrays and nothing else: a pickle can call any
    function it names, and these files come from the internet."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how protocol 2 stores bytes when written by Python 3
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as f:
            # The CIFAR files are Python 2 pickles: their str keys and names load as bytes.
            content = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise HanclipError(f"{path}: not a CIFAR python pickle ({exc})") from None
    if not isinstance(content, dict):
        raise HanclipError(f"{path}: not a CIFAR python pickle (no dict inside)")
    return content


def _entry(content: dict[bytes, Any], key: bytes, path: Path) -> Any:
    if key not in content:
        raise HanclipError(f"{path}: no {key.decode()!r} entry")
    return content[key]


def _check_class_order(found: list[str], classes: tuple[tuple[str, str], ...], path: Path) -> None:
    expected = [english for english, _ in classes]
    if found != expected:
        label, (theirs, ours) = next(
            (i, pair) for i, pair in enumerate(zip_longest(found, expected)) if pair[0] != pair[1]
        )
        raise HanclipError(
            f"{path} does not match the built-in Korean class table: label {label} is "
            f"{theirs!r} there but {ours!r} here"
        )


def _check_labels(labels: np.ndarray, n_images: int, n_classes: int, path: Path) -> None:
    if labels.shape != (n_images,):
        raise HanclipError(f"{path}: {labels.size} labels for {n_images} images")
    if n_images and (labels.min() < 0 or labels.max() >= n_classes):
        raise HanclipError(f"{path}: labels outside 0..{n_classes - 1}")


def _read_cifar(
    data_dir: Path,
    limit: int | None,
    *,
    name: str,
    folder: str,
    files: tuple[str, str],  # (test batch, meta)
    keys: tuple[bytes, bytes],  # (labels in the batch, class names in the meta)
    classes: tuple[tuple[str, str], ...],
    source: str,
) -> ClassificationSet:
    root = dataset_folder(data_dir, folder)
    batch_path = require_file(root / files[0], source)
    meta_path = root / files[1]
    if meta_path.is_file():
        names = _entry(_unpickle(meta_path), keys[1], meta_path)
        _check_class_order(
            [n.decode() if isinstance(n, bytes) else n for n in names], classes, meta_path
        )
    batch = _unpickle(batch_path)
    data = np.asarray(_entry(batch, b"data", batch_path), dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise HanclipError(f"{batch_path}: data is {list(data.shape)}, expected [N, 3072]")
    labels = np.asarray(_entry(batch, keys[0], batch_path), dtype=np.int64)
    _check_labels(labels, data.shape[0], len(classes), batch_path)
    # Each row holds the red, green and blue 32x32 planes one after another.
    pixels = data[:limit].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return ClassificationSet(
        name=name,
        images=ArrayImages(pixels),
        labels=labels[:limit],
        class_names_ko=[korean for _, korean in classes],
        class_keys=[english for english, _ in classes],
    )


def read_cifar10(data_dir: Path, *, limit: int | None = None) -> ClassificationSet:
    """CIFAR-10 test batch (10,000 images) in file order."""
    return _read_cifar(
        data_dir,
        limit,
        name="cifar10",
        folder="cifar-10-batches-py",
        files=("test_batch", "batches.meta"),
        keys=(b"labels", b"label_names"),
        classes=CIFAR10_CLASSES,
        source=CIFAR10_SOURCE,
    )


def read_cifar100(data_dir: Path, *, limit: int | None = None) -> ClassificationSet:
    """CIFAR-100 test set (10,000 images, 100 fine labels) in file order."""
    return _read_cifar(
        data_dir,
        limit,
        name="cifar100",
        folder="cifar-100-python",
        files=("test", "meta"),
        keys=(b"fine_labels", b"fine_label_names"),
        classes=CIFAR100_CLASSES,
        source=CIFAR100_SOURCE,
    )


def read_stl10(data_dir: Path, *, limit: int | None = None) -> ClassificationSet:
    """STL-10 test set (8,000 images, 96x96) in file order; reads only the first `limit`."""
    root = dataset_folder(data_dir, "stl10_binary")
    images_path = require_file(root / "test_X.bin", STL10_SOURCE)
    labels_path = require_file(root / "test_y.bin", STL10_SOURCE)
    names_path = root / "class_names.txt"
    if names_path.is_file():
        _check_class_order(read_lines(names_path), STL10_CLASSES, names_path)
    image_bytes = 3 * STL10_SIDE * STL10_SIDE
    n_images, remainder = divmod(images_path.stat().st_size, image_bytes)
    if remainder or labels_path.stat().st_size != n_images:
        raise HanclipError(
            f"{root}: test_X.bin and test_y.bin do not hold the same number of 96x96 images"
        )
    count = n_images if limit is None else min(n_images, limit)
    pixels = np.fromfile(images_path, dtype=np.uint8, count=count * image_bytes)
    # Stored channel-major and column-major per image: [N, C, W, H] → [N, H, W, C].
    pixels = pixels.reshape(count, 3, STL10_SIDE, STL10_SIDE).transpose(0, 3, 2, 1)
    labels = np.fromfile(labels_path, dtype=np.uint8, count=count).astype(np.int64) - 1
    _check_labels(labels, count, len(STL10_CLASSES), labels_path)
    return ClassificationSet(
        name="stl10",
        images=ArrayImages(pixels),
        labels=labels,
        class_names_ko=[korean for _, korean in STL10_CLASSES],
        class_keys=[english for english, _ in STL10_CLASSES],
    )


def _caltech_classes(root: Path) -> list[str]:
    """Class folders in sorted(os.listdir) order: case-sensitive, so Faces sorts before ant."""
    classes = [
        name
        for name in sorted(os.listdir(root))
        if (root / name).is_dir() and name != CALTECH101_BACKGROUND and not name.startswith(".")
    ]
    if not classes:
        raise HanclipError(f"{root}: no class folders")
    unknown = [name for name in classes if name not in CALTECH101_KO]
    if unknown:
        raise HanclipError(
            f"{root}: folder {unknown[0]!r} is not a Caltech101 class (no Korean name for it)"
        )
    return classes


def read_caltech101(data_dir: Path, *, limit: int | None = None) -> ClassificationSet:
    """Caltech101: label = index of the folder among the sorted class folders.

    Images are taken round-robin across classes (the first file of every class, then the
    second, ...; files sorted by name), so a `limit` keeps a subset that covers all classes.
    """
    root = require_dir(dataset_folder(data_dir, "101_ObjectCategories"), CALTECH101_SOURCE)
    classes = _caltech_classes(root)
    per_class = [
        [
            (label, root / name / file)
            for file in sorted(os.listdir(root / name))
            if not file.startswith(".") and os.path.splitext(file)[1].lower() in IMAGE_EXTENSIONS
        ]
        for label, name in enumerate(classes)
    ]
    ordered = [item for round_ in zip_longest(*per_class) for item in round_ if item is not None]
    if not ordered:
        raise HanclipError(f"{root}: no images in the class folders")
    ordered = ordered[:limit]
    return ClassificationSet(
        name="caltech101",
        images=[path for _, path in ordered],
        labels=np.array([label for label, _ in ordered], dtype=np.int64),
        class_names_ko=[CALTECH101_KO[name] for name in classes],
        class_keys=classes,
    )
