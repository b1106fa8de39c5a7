"""Benchmark datasets by name: `load_dataset("xtd10-ko", data_dir)` and the DATASETS registry.

Nothing is downloaded: every reader reads the files the user fetched into `data_dir`, and a
missing file is a one-line HanclipError that names it and says where to get it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hanclip_eval.datasets.base import ArrayImages, ClassificationSet, RetrievalSet
from hanclip_eval.datasets.classification_sets import (
    DEFAULT_TEMPLATES,
    build_prompts,
    read_caltech101,
    read_cifar10,
    read_cifar100,
    read_stl10,
)
from hanclip_eval.datasets.retrieval_sets import (
    kocc3m_image_stem,
    read_captions_jsonl,
    read_crossmodal3600,
    read_kocc3m,
    read_mscoco_ko,
    read_xtd10_ko,
)
from hanclip_model.errors import HanclipError


@dataclass(frozen=True)
class DatasetInfo:
    kind: Literal["retrieval", "classification"]
    reader: Callable[..., RetrievalSet | ClassificationSet]
    splits: tuple[str, ...] = ()  # the first is the default; empty: the reader takes no split


DATASETS: dict[str, DatasetInfo] = {
    "mscoco-ko": DatasetInfo("retrieval", read_mscoco_ko, ("karpathy-test", "val")),
    "xtd10-ko": DatasetInfo("retrieval", read_xtd10_ko),
    "crossmodal3600": DatasetInfo("retrieval", read_crossmodal3600),
    "kocc3m": DatasetInfo("retrieval", read_kocc3m),
    "jsonl": DatasetInfo("retrieval", read_captions_jsonl),
    "cifar10": DatasetInfo("classification", read_cifar10),
    "cifar100": DatasetInfo("classification", read_cifar100),
    "stl10": DatasetInfo("classification", read_stl10),
    "caltech101": DatasetInfo("classification", read_caltech101),
}


def load_dataset(
    name: str, data_dir: str | Path, *, split: str | None = None, limit: int | None = None
) -> RetrievalSet | ClassificationSet:
    """Read the benchmark `name` from `data_dir`; `limit` keeps its first N images."""
    info = DATASETS.get(name)
    if info is None:
        raise HanclipError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if limit is not None and limit < 1:
        raise HanclipError(f"limit must be at least 1, got {limit}")
    if not info.splits:
        if split is not None:
            raise HanclipError(f"{name} has no splits to choose from (got {split!r})")
        return info.reader(Path(data_dir), limit=limit)
    chosen = split or info.splits[0]
    if chosen not in info.splits:
        raise HanclipError(
            f"{name} has no split {chosen!r}: choose one of {', '.join(info.splits)}"
        )
    return info.reader(Path(data_dir), split=chosen, limit=limit)


__all__ = [
    "DATASETS",
    "DEFAULT_TEMPLATES",
    "ArrayImages",
    "ClassificationSet",
    "DatasetInfo",
    "RetrievalSet",
    "build_prompts",
    "kocc3m_image_stem",
    "load_dataset",
]
