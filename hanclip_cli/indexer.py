"""`hanclip index`: walk folders, embed what is new, keep SQLite and HNSW in step.

Incremental like rclip: a file whose path, size and mtime are unchanged is skipped; a new or
changed file is hashed, and content the library already has (a rename, a move, a copy) reuses
its stored embedding instead of being decoded and embedded again.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import Progress

from hanclip_cli.library import Library, OpenLibrary
from hanclip_cli.store import NewPhoto, PhotoRecord
from hanclip_cli.vector_index import sync_index
from hanclip_model.device import usable_cores
from hanclip_model.errors import HanclipError, ImageLoadError
from hanclip_model.files import file_sha256
from hanclip_model.images import LoadedImage, iter_image_files, load_image
from hanclip_model.model import HanclipModel


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    mtime_ns: int


@dataclass
class IndexReport:
    """Counts for the summary and `--json`; `failures` holds (path, reason)."""

    scanned: int = 0
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        keys = ("scanned", "added", "updated", "moved", "removed", "unchanged", "failed")
        return {k: getattr(self, k) for k in keys}

    def fail(self, path: str, reason: str) -> None:
        self.failed += 1
        self.failures.append((path, reason))


@dataclass
class _Pending:
    """A new or changed file, after hashing, that needs decoding and embedding."""

    info: FileInfo
    sha256: str
    replaces: PhotoRecord | None


@dataclass(frozen=True)
class ScanFailure:
    """A file that cannot be stat'ed, a name that is not UTF-8, or a folder that cannot be
    listed (then its path stands for everything below it)."""

    path: str
    reason: str
    folder: bool = False


def scan(roots: Iterable[Path], include_hidden: bool = False) -> Iterator[FileInfo | ScanFailure]:
    """Yield a FileInfo per photo file below `roots`, or a ScanFailure."""
    folder_errors: list[OSError] = []
    for root in roots:
        for path in iter_image_files(root, include_hidden, folder_errors.append):
            while folder_errors:
                yield _folder_failure(folder_errors.pop())
            if not _is_utf8(path):
                yield ScanFailure(path, "file name is not valid UTF-8 (rename it to index it)")
                continue
            try:
                st = os.stat(path)
            except OSError as exc:
                yield ScanFailure(path, _os_reason(exc, path))
                continue
            yield FileInfo(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)
        while folder_errors:
            yield _folder_failure(folder_errors.pop())


def _folder_failure(exc: OSError) -> ScanFailure:
    return ScanFailure(str(exc.filename), f"cannot list folder: {exc.strerror or exc}", True)


def _is_utf8(path: str) -> bool:
    # Undecodable bytes arrive as lone surrogates, which SQLite and JSON cannot hold as text.
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _os_reason(exc: OSError, path: str) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (too many levels of symbolic links)"
    if exc.errno == errno.ENOENT and os.path.islink(path):
        return "broken symbolic link"
    return exc.strerror or str(exc)


def _hash_or_reason(info: FileInfo) -> tuple[FileInfo, str | None, str | None]:
    try:
        return info, file_sha256(info.path), None
    except OSError as exc:
        return info, None, _os_reason(exc, info.path)


def _decode(info: FileInfo, min_side: int) -> LoadedImage | ImageLoadError:
    try:
        return load_image(info.path, min_side)
    except ImageLoadError as exc:
        return exc


def _prefetch(
    items: list[_Pending], min_side: int, workers: int, ahead: int
) -> Iterator[tuple[_Pending, LoadedImage | ImageLoadError]]:
    """Decode in threads (Pillow releases the GIL), up to `ahead` photos ahead of the model.

    `ahead` must exceed a batch: the next batch then decodes while the model runs on this
    one, instead of the model waiting for it afterwards.
    """
    window: deque[tuple[_Pending, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for item in items:
            window.append((item, pool.submit(_decode, item.info, min_side)))
            if len(window) >= ahead:
                pending, future = window.popleft()
                yield pending, future.result()
        while window:
            pending, future = window.popleft()
            yield pending, future.result()


def index_library(
    opened: OpenLibrary,
    roots: list[Path],
    *,
    batch_size: int = 32,
    reembed: bool = False,
    include_hidden: bool = False,
    progress: Progress | None = None,
) -> IndexReport:
    """Bring the library in line with the photos under `roots`; returns what changed."""
    library, model, store, meta = opened.library, opened.model, opened.store, opened.meta
    for root in roots:
        if not root.exists():
            raise HanclipError(f"no such file or folder: {root}")
    known_roots = meta.roots
    if not reembed:
        opened.check_image_space()
    elif opened.image_space_differs:
        roots = sorted(set(roots) | {r for r in known_roots if r.exists()})
        store.clear_photos()
    # Recorded before any photo is embedded: after a crash, the rows already written are
    # known to be in this image model's space.
    meta.set_image_space(model.spec.image_model, model.spec.image_fingerprint)

    report = IndexReport()
    workers = max(2, usable_cores())
    task = progress.add_task("scanning", total=None) if progress else None
    files: list[FileInfo] = []
    unreadable: dict[str, ScanFailure] = {}
    for entry in scan(roots, include_hidden):
        if isinstance(entry, FileInfo):
            files.append(entry)
        else:
            unreadable[entry.path] = entry
            report.fail(entry.path, entry.reason)
        if progress is not None:
            progress.update(task, advance=1)
    report.scanned = len(files) + len(unreadable)
    for failure in unreadable.values():
        if _is_utf8(failure.path):
            store.record_failure(failure.path, 0, 0, failure.reason)

    known = store.records_under(roots)
    old_failures = store.failures_under(roots)
    seen = {f.path for f in files}
    candidates: list[FileInfo] = []
    for info in files:
        row = known.get(info.path)
        failure = old_failures.get(info.path)
        if row is not None and (row.size, row.mtime_ns) == (info.size, info.mtime_ns):
            report.unchanged += 1
        elif failure is not None and (failure["size"], failure["mtime_ns"]) == (
            info.size,
            info.mtime_ns,
        ):
            report.fail(info.path, failure["error"])  # same bytes failed before: don't retry
        else:
            candidates.append(info)
    # A photo under a folder that could not be listed this time is not gone: keep it.
    blocked = tuple(f.path.rstrip("/") + "/" for f in unreadable.values() if f.folder)
    vanished = {
        path: row
        for path, row in known.items()
        if path not in seen and not path.startswith(blocked)
    }
    store.forget_failures(p for p in old_failures if p not in seen and p not in unreadable)

    vanished_by_hash: dict[str, list[PhotoRecord]] = {}
    for row in vanished.values():
        vanished_by_hash.setdefault(row.sha256, []).append(row)

    if progress is not None:
        progress.update(task, description="hashing new files", total=len(candidates), completed=0)
    pending: list[_Pending] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for info, sha, reason in pool.map(_hash_or_reason, candidates):
            if progress is not None:
                progress.update(task, advance=1)
            if sha is None:
                store.record_failure(info.path, info.size, info.mtime_ns, reason or "unreadable")
                report.fail(info.path, reason or "unreadable")
                continue
            previous = known.get(info.path)
            if previous is not None and previous.sha256 == sha:
                store.move_photo(previous.id, info.path, info.size, info.mtime_ns)  # touched only
                report.unchanged += 1
            elif previous is None and vanished_by_hash.get(sha):
                moved_row = vanished_by_hash[sha].pop()
                del vanished[moved_row.path]
                store.move_photo(moved_row.id, info.path, info.size, info.mtime_ns)
                report.moved += 1
            else:
                pending.append(_Pending(info=info, sha256=sha, replaces=previous))

    _embed_pending(library, model, pending, report, batch_size, workers, progress, task)

    store.remove_photos(row.id for row in vanished.values())
    report.removed += len(vanished)

    meta.model = opened.model_name
    meta.roots = [*known_roots, *roots]
    if progress is not None:
        progress.update(task, description="updating search index", total=None)
    sync_index(library.directory, store, model)
    meta.checked_fingerprint = model.fingerprint
    if progress is not None:
        progress.update(task, description="done", total=1, completed=1)
    return report


def _embed_pending(
    library: Library,
    model: HanclipModel,
    pending: list[_Pending],
    report: IndexReport,
    batch_size: int,
    workers: int,
    progress: Progress | None,
    task: object,
) -> None:
    """Reuse stored embeddings for known content; decode and embed the rest, batch by batch."""
    store = library.store
    to_embed: list[_Pending] = []
    for item in pending:
        twin = store.find_by_hash(item.sha256)
        if twin is None:
            to_embed.append(item)
            continue
        meta = (twin.width, twin.height, twin.taken_at)
        _store(library, [(item, meta, store.embedding(twin.id))], report)
    if not to_embed:
        return
    if progress is not None:
        progress.update(task, description="embedding photos", total=len(to_embed), completed=0)
    batch: list[tuple[_Pending, LoadedImage]] = []

    def flush() -> None:
        raw = model.raw_image_embeddings([im.image for _, im in batch], batch_size=batch_size)
        rows = [
            (item, (loaded.width, loaded.height, loaded.taken_at), vector)
            for (item, loaded), vector in zip(batch, raw, strict=True)
        ]
        _store(library, rows, report)
        if progress is not None:
            progress.update(task, advance=len(batch))
        batch.clear()

    ahead = 2 * batch_size + workers
    for item, loaded in _prefetch(to_embed, model.image_encoder.image_size, workers, ahead):
        if isinstance(loaded, ImageLoadError):
            store.record_failure(item.info.path, item.info.size, item.info.mtime_ns, str(loaded))
            report.fail(item.info.path, str(loaded))
            if progress is not None:
                progress.update(task, advance=1)
            continue
        batch.append((item, loaded))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()


PhotoMeta = tuple[int | None, int | None, str | None]  # width, height, EXIF date taken


def _store(
    library: Library, rows: list[tuple[_Pending, PhotoMeta, np.ndarray]], report: IndexReport
) -> None:
    """Write one batch in one transaction; a changed file's old row goes in the same one."""
    photos, replaced = [], []
    for item, (width, height, taken_at), vector in rows:
        info = item.info
        photos.append(
            NewPhoto(
                info.path, info.size, info.mtime_ns, item.sha256, width, height, taken_at, vector
            )
        )
        if item.replaces is not None:
            replaced.append(item.replaces.id)
            report.updated += 1
        else:
            report.added += 1
    library.store.add_photos(photos, replace_ids=replaced)
