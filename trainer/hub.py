"""Files of public datasets on the Hugging Face hub: fetched, or found in a local folder, and
read row by row.

`find_files` gives the files of one hub dataset that match a recipe's patterns. With no
`data_dir` they come from `huggingface_hub.snapshot_download`: resumable, kept in the HF
cache (`HF_HUB_CACHE`, shared with every other tool), shown with huggingface_hub's own
progress bars, and pinned to a commit where the recipe names one. With a `data_dir` nothing
is fetched; the same files are read from

    <data_dir>/<owner>__<name>/<path in the hub repo>

for example `~/data/kakaobrain__coyo-700m/data/part-00000-….snappy.parquet`. The patterns
are matched by huggingface_hub's own `filter_repo_objects`, so a folder holds exactly what a
download would (a `*` also crosses `/`, as on the hub). Each pattern must match a file: a
pattern that matches nothing would quietly drop a corpus, or a list of held-out images.

Rows are read with pyarrow from parquet a batch of row groups at a time (a limited run reads
only the first groups of a large file), and from COCO-format caption files
(`{"annotations": [{"image_id": …, "caption": …}, …]}`) with the json module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hanclip_model.errors import HanclipError
from hanclip_model.files import file_sha256

FileFormat = Literal["parquet", "coco-json"]

# Rows per parquet batch: text columns are small; image columns hold whole encoded photos.
TEXT_BATCH_ROWS = 8192
IMAGE_BATCH_ROWS = 64


@dataclass(frozen=True)
class HubFiles:
    """Some files of a hub repository: those matching `allow_patterns`, at `revision`
    (a commit hash pins them; None is the main branch)."""

    repo_id: str
    allow_patterns: tuple[str, ...]
    revision: str | None = None
    repo_type: str = "dataset"

    @property
    def folder_name(self) -> str:
        """The repository's folder in a `--data-dir`: `owner__name`."""
        return self.repo_id.replace("/", "__")


@dataclass(frozen=True)
class FoundFiles:
    """The files matching a `HubFiles`, sorted by their path in the repository."""

    files: HubFiles
    root: Path  # the repository's folder: a hub snapshot or <data_dir>/<owner>__<name>
    paths: tuple[Path, ...]
    origin: Literal["hub", "data-dir"]
    commit: str | None  # the commit a download resolved to; None for a data dir

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def record(self) -> dict[str, object]:
        """Where these files came from, for the model card: the commit of a download, or the
        SHA-256 of each file read from a folder (no commit says what that folder holds)."""
        record: dict[str, object] = {"repo_id": self.files.repo_id, "origin": self.origin}
        if self.origin == "hub":
            record["revision"] = self.commit
            record["files"] = [self.relative(path) for path in self.paths]
        else:
            record["files"] = {self.relative(p): "sha256:" + file_sha256(p) for p in self.paths}
        return record


def find_files(files: HubFiles, data_dir: Path | None) -> FoundFiles:
    """The files of `files`, downloaded (data_dir None) or read from `data_dir`."""
    if data_dir is None:
        root = _download(files)
        return _matching(files, root, "hub", commit=root.name)
    root = data_dir / files.folder_name
    if not root.is_dir():
        raise HanclipError(
            f"folder {files.folder_name}/ not found in {data_dir}: put the files of the hub "
            f"dataset {files.repo_id} there, at their paths in the repository "
            f"({', '.join(files.allow_patterns)})"
        )
    return _matching(files, root, "data-dir", commit=None)


def _matching(
    files: HubFiles, root: Path, origin: Literal["hub", "data-dir"], commit: str | None
) -> FoundFiles:
    from huggingface_hub.utils import filter_repo_objects

    # Hidden entries are no repository files: `hf download --local-dir` keeps its own
    # bookkeeping in .cache/ beside them.
    present = sorted(
        name
        for name in (path.relative_to(root).as_posix() for path in root.rglob("*"))
        if not any(part.startswith(".") for part in name.split("/")) and (root / name).is_file()
    )
    for pattern in files.allow_patterns:
        if not list(filter_repo_objects(present, allow_patterns=[pattern])):
            where = (
                f"the hub dataset {files.repo_id} (revision {files.revision or 'main'}): "
                "the recipe may be out of date"
                if origin == "hub"
                else f"{root}: put it there at its path in the hub repository {files.repo_id}"
            )
            raise HanclipError(f"no file matching {pattern} in {where}")
    chosen = filter_repo_objects(present, allow_patterns=list(files.allow_patterns))
    return FoundFiles(files, root, tuple(root / name for name in chosen), origin, commit)


def _download(files: HubFiles) -> Path:
    """snapshot_download: resumable, cached in the HF cache, huggingface_hub's progress bars."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from hanclip_model.storage import storage_error

    name = files.repo_id
    try:
        return Path(
            snapshot_download(
                files.repo_id,
                repo_type=files.repo_type,
                revision=files.revision,
                allow_patterns=list(files.allow_patterns),
            )
        )
    except GatedRepoError:
        raise HanclipError(
            f"the hub dataset {name} is gated: accept its terms on huggingface.co and log in "
            "(`hf auth login`), or fetch its files yourself and pass --data-dir"
        ) from None
    except RepositoryNotFoundError:
        raise HanclipError(f"the hub has no dataset {name} (or it is private)") from None
    except RevisionNotFoundError:
        raise HanclipError(f"the hub dataset {name} has no revision {files.revision}") from None
    except LocalEntryNotFoundError:
        raise HanclipError(
            f"cannot reach the Hugging Face hub to fetch {name}, and the HF cache does not "
            "hold it: connect, or put its files in a folder and pass --data-dir DIR "
            "(layout: DIR/owner__name/<path in the repo>, see docs/training.md)"
        ) from None
    except HfHubHTTPError as exc:
        raise HanclipError(f"the Hugging Face hub refused {name}: {exc}") from None
    except OSError as exc:
        error = storage_error(exc, Path(HF_HUB_CACHE), what="Hugging Face cache folder")
        if error is None:
            raise
        raise error from exc


def file_rows(
    path: Path, file_format: FileFormat, columns: Sequence[str], *, batch_rows: int
) -> Iterator[tuple[Any, ...]]:
    """The values of `columns`, one tuple per row, in file order."""
    if file_format == "parquet":
        yield from _parquet_rows(path, columns, batch_rows)
    else:
        yield from _coco_json_rows(path, columns)


def _parquet_rows(path: Path, columns: Sequence[str], batch_rows: int) -> Iterator[tuple]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise HanclipError(
            "reading a recipe's parquet files needs pyarrow: pip install pyarrow"
        ) from None
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise HanclipError(f"{path}: not a readable parquet file ({exc})") from None
    names = parquet.schema_arrow.names
    absent = [column for column in columns if column not in names]
    if absent:
        raise HanclipError(
            f"{path}: no column {', '.join(absent)} (it has {', '.join(names)}): "
            "the recipe may be out of date"
        )
    for batch in parquet.iter_batches(columns=list(columns), batch_size=batch_rows):
        yield from zip(*(batch.column(c).to_pylist() for c in columns), strict=True)


def _coco_json_rows(path: Path, columns: Sequence[str]) -> Iterator[tuple]:
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HanclipError(f"{path}: not a JSON caption file ({exc})") from None
    annotations = content.get("annotations") if isinstance(content, dict) else None
    if not isinstance(annotations, list):
        raise HanclipError(f"{path}: expected COCO captions, an object with an 'annotations' list")
    for annotation in annotations:
        if isinstance(annotation, dict):
            yield tuple(annotation.get(column) for column in columns)
