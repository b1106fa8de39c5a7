"""`hanclip index`: walk folders, embed what is new, keep SQLite and HNSW in step.

Incremental like rclip: a file whose path, size and mtime are unchanged is skipped; a new or
changed file is hashed, and content the library already has (a rename, a move, a copy) reuses
its stored embedding instead of being decoded and embedded again. What to do is decided in
`index_plan` (pure); this module scans, probes the folders the plan asks about, hashes, decodes
and embeds, and writes the outcome: photos of offline folders are kept (and the folders
recorded) unless `prune_offline` says they are gone for good.

A photo to embed takes four shapes on its way: a FileInfo from the scan, a Candidate of the
plan (with the row at its path), a Pending once hashed, and the NewPhoto the store writes,
made from it with what its decoding (or a stored photo of the same content) tells.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from hanclip_library.folders import probe_folder
from hanclip_library.index_plan import (
    Candidate,
    FileInfo,
    HashError,
    HashPlan,
    Pending,
    ScanFailure,
    folders_to_probe,
    plan_hashes,
    plan_index,
)
from hanclip_library.library import Library, OpenLibrary
from hanclip_library.progress import NO_PROGRESS, ProgressReporter
from hanclip_library.store import NewPhoto, OfflineFolder, PhotoStore, RecordedFailure
from hanclip_library.text_pass import TextPassReport, TextReader, read_text
from hanclip_library.vector_index import index_is_current, sync_index
from hanclip_model.device import usable_cores
from hanclip_model.errors import HanclipError, ImageLoadError
from hanclip_model.files import file_sha256
from hanclip_model.images import (
    DEFAULT_EXCLUDES,
    LoadedImage,
    exclude_patterns,
    extra_installed_since,
    iter_image_files,
    load_image,
)
from hanclip_model.model import HanclipModel
from hanclip_model.storage import storage_error


@dataclass(frozen=True)
class IndexFailure:
    """A file this run could not index, and why."""

    path: str
    error: str

    def as_json(self) -> dict[str, str]:
        return {"path": self.path, "error": self.error}


COUNTS = (
    "scanned",
    "added",
    "updated",
    "moved",
    "removed",
    "unchanged",
    "failed",
    "offline",
    "pruned",
    "excluded",
)


@dataclass
class IndexReport:
    """Counts for the summary and `--json`, in the order of COUNTS, and the failures.

    `offline` counts the photos kept under `offline_folders`, `pruned` those removed instead
    (`prune_offline`), `excluded` the indexed photos removed because a pattern excludes them.
    """

    scanned: int = 0
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    offline: int = 0
    pruned: int = 0
    excluded: int = 0
    failures: list[IndexFailure] = field(default_factory=list)
    offline_folders: list[OfflineFolder] = field(default_factory=list)
    text: TextPassReport | None = None  # None: no text was read (no engine)

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTS}

    def as_json(self) -> dict[str, object]:
        """As `hanclip index --json` prints it, before the library's path."""
        offline = [
            {"path": f.path, "reason": f.reason, "photos": f.photos} for f in self.offline_folders
        ]
        failures = [failure.as_json() for failure in self.failures]
        text = None if self.text is None else self.text.as_json()
        return {**self.counts(), "failures": failures, "offline_folders": offline, "text": text}

    def fail(self, path: str, reason: str) -> None:
        self.failed += 1
        self.failures.append(IndexFailure(path, reason))

    @property
    def saved(self) -> int:
        """Photos this run has committed to the library so far."""
        return self.added + self.updated + self.moved


def scan(
    roots: Iterable[Path], include_hidden: bool = False, exclude: Sequence[str] = ()
) -> Iterator[FileInfo | ScanFailure]:
    """Yield a FileInfo per photo file below `roots`, or a ScanFailure."""
    folder_errors: list[OSError] = []
    for root in roots:
        for path in iter_image_files(root, include_hidden, folder_errors.append, exclude):
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


def _hash_or_error(info: FileInfo) -> str | HashError:
    try:
        return file_sha256(info.path)
    except OSError as exc:
        return HashError(_os_reason(exc, info.path) or "unreadable")


def _decode(info: FileInfo, min_side: int) -> LoadedImage | ImageLoadError:
    try:
        return load_image(info.path, min_side)
    except ImageLoadError as exc:
        return exc


def _prefetch(
    items: list[Pending], min_side: int, workers: int, ahead: int
) -> Iterator[tuple[Pending, LoadedImage | ImageLoadError]]:
    """Decode in threads (Pillow releases the GIL), up to `ahead` photos ahead of the model.

    `ahead` must exceed a batch: the next batch then decodes while the model runs on this
    one, instead of the model waiting for it afterwards.
    """
    window: deque[tuple[Pending, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for item in items:
            window.append((item, pool.submit(_decode, item.info, min_side)))
            if len(window) >= ahead:
                pending, future = window.popleft()
                yield pending, future.result()
        while window:
            pending, future = window.popleft()
            yield pending, future.result()


_SCAN_PROGRESS_STEP = 256


@dataclass(frozen=True)
class IndexOptions:
    """How `hanclip index` runs; the defaults are the command's."""

    batch_size: int = 32  # photos per model batch
    reembed: bool = False  # embed every photo again when the image model changed
    include_hidden: bool = False  # walk hidden folders and files too
    # Patterns remembered with the library and applied to every later run, with the
    # defaults, until `reset_excludes`.
    exclude: tuple[str, ...] = ()
    reset_excludes: bool = False
    prune_offline: bool = False  # remove the photos of offline folders under the roots
    reocr: bool = False  # read the text of every photo again with the engine given


def index_library(
    opened: OpenLibrary,
    roots: list[Path],
    options: IndexOptions = IndexOptions(),
    progress: ProgressReporter = NO_PROGRESS,
    text_reader: TextReader | None = None,
    *,
    within: Sequence[Path] | None = None,
) -> IndexReport:
    """Bring the library in line with the photos under `roots` (`_index_into`), then, with a
    `text_reader`, read the text of the photos it has not read (`text_pass.py`); returns what
    changed.

    `within` (what a watch saw change, `watch.py`): only these files and folders at or below
    `roots` are scanned and compared, planned against `roots` all the same (the folders
    between a root and a photo are probed as in a whole run); None: all of `roots`.

    A full or read-only disk, or a library folder that went away (a drive unplugged), stops
    the run with a StorageError that counts the photos it saved: they are committed, and the
    same command run again once the cause is gone goes on after them.
    """
    report = IndexReport()
    try:
        _index_into(report, opened, roots, options, progress, within)
        if text_reader is not None:
            report.text = read_text(opened.store, text_reader, progress, again=options.reocr)
        # Ends on the count of files this run went through, as the scan counted them.
        progress.stage("done", total=report.scanned)
        progress.advance(report.scanned)
        return report
    except Exception as exc:
        error = storage_error(exc, opened.directory, what="library folder")
        if error is None:
            raise
        saved = f"{report.saved} photo{'' if report.saved == 1 else 's'} saved in this run"
        raise error.saving(saved) from exc


def check_roots(roots: Sequence[Path], store: PhotoStore | None) -> None:
    """Refuse a root that is not there and under which the library knows no photo: a typo,
    where one it knows photos under is an offline folder. `store` None: a library not made
    yet, checked before anything is created."""
    for root in roots:
        if not root.exists() and (store is None or not store.ids_under([str(root)])):
            raise HanclipError(f"no such file or folder: {root}")


def _index_into(
    report: IndexReport,
    opened: OpenLibrary,
    roots: list[Path],
    options: IndexOptions,
    progress: ProgressReporter,
    within: Sequence[Path] | None = None,
) -> None:
    """Bring the library in line with the photos under `roots` (`within` them only, when
    given), counting in `report`."""
    library, model, store, meta = opened.library, opened.model, opened.store, opened.meta
    remembered = () if options.reset_excludes else meta.excludes
    excludes = tuple(dict.fromkeys(exclude_patterns([*remembered, *options.exclude])))
    check_roots(roots, store)
    known_roots = meta.roots
    if not options.reembed:
        opened.check_image_space()
    elif opened.image_space_differs:
        roots = sorted(set(roots) | {r for r in known_roots if r.exists()})
        store.clear_photos()
    # Recorded before any photo is embedded: after a crash, the rows already written are
    # known to be in this image model's space.
    meta.set_image_space(model.spec.image_model, model.spec.image_fingerprint)
    if list(excludes) != meta.excludes:
        meta.excludes = excludes

    scope = roots if within is None else list(within)
    workers = max(2, usable_cores())
    applied = (*DEFAULT_EXCLUDES, *excludes)
    present = [path for path in scope if path.exists()]
    files, unreadable = _scan_all(present, options.include_hidden, applied, report, progress)
    for failure in unreadable:
        if _is_utf8(failure.path):
            store.record_failure(failure.path, 0, 0, failure.reason)

    known = list(store.records_under(scope).values())
    names = [str(root) for root in roots]
    probe = folders_to_probe(files, unreadable, known, roots=names, excludes=applied)
    plan = plan_index(
        files,
        unreadable,
        known,
        _recorded_failures(store, scope),
        roots=names,
        folders={folder: probe_folder(folder) for folder in probe},
        excludes=applied,
    )
    store.remove_photos(row.id for row in plan.excluded)
    report.excluded = len(plan.excluded)
    report.unchanged += len(plan.unchanged)
    for failure in plan.failed_before:
        report.fail(failure.path, failure.error)
    store.forget_failures(plan.forget)

    hashed = plan_hashes(plan, _hash_all(plan.candidates, workers, progress))
    _apply_hashed(store, hashed, report)
    _embed_pending(library, model, hashed.to_embed, report, options.batch_size, workers, progress)

    store.remove_photos(row.id for row in hashed.vanished)
    report.removed += len(hashed.vanished)
    report.offline_folders = list(hashed.offline)
    if options.prune_offline:
        store.remove_photos(row.id for row in hashed.kept)
        report.pruned = len(hashed.kept)
    else:
        report.offline = len(hashed.kept)
    store.record_offline(scope, () if options.prune_offline else hashed.offline)

    meta.model = opened.model_name
    meta.roots = [*known_roots, *roots]
    progress.stage("updating search index")
    # Nothing changed since the index was made (its generation is the library's): the index
    # is not even opened, as loading it is a large share of a no-op re-index's time
    # (benchmarks/scale.py measures both).
    if not index_is_current(library.directory, store, model.fingerprint):
        sync_index(library.directory, store, model)
    meta.checked_fingerprint = model.fingerprint


def _scan_all(
    roots: list[Path],
    include_hidden: bool,
    exclude: Sequence[str],
    report: IndexReport,
    progress: ProgressReporter,
) -> tuple[list[FileInfo], list[ScanFailure]]:
    """Every photo file under `roots`, and the scan failures, one per path."""
    progress.stage("scanning")
    files: list[FileInfo] = []
    unreadable: dict[str, ScanFailure] = {}
    unreported = 0
    for entry in scan(roots, include_hidden, exclude):
        if isinstance(entry, FileInfo):
            files.append(entry)
        else:
            unreadable[entry.path] = entry
            report.fail(entry.path, entry.reason)
        unreported += 1
        # The bar moves every 256 files: a per-file update would be a large share of a no-op
        # re-index (benchmarks/scale.py).
        if unreported == _SCAN_PROGRESS_STEP:
            progress.advance(unreported)
            unreported = 0
    progress.advance(unreported)
    report.scanned = len(files) + len(unreadable)
    return files, list(unreadable.values())


def _recorded_failures(store: PhotoStore, roots: list[Path]) -> list[RecordedFailure]:
    """The failures to keep: one for want of a package installed since is tried again."""
    return [
        failure
        for failure in store.failures_under(roots).values()
        if not extra_installed_since(failure.error)
    ]


def _hash_all(
    candidates: tuple[Candidate, ...], workers: int, progress: ProgressReporter
) -> dict[str, str | HashError]:
    progress.stage("hashing new files", total=len(candidates))
    infos = [c.info for c in candidates]
    hashes: dict[str, str | HashError] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for info, sha in zip(infos, pool.map(_hash_or_error, infos), strict=True):
            hashes[info.path] = sha
            progress.advance()
    return hashes


def _apply_hashed(store: PhotoStore, hashed: HashPlan, report: IndexReport) -> None:
    for failure in hashed.failed:
        info = failure.info
        store.record_failure(info.path, info.size, info.mtime_ns, failure.reason)
        report.fail(info.path, failure.reason)
    for update in hashed.touched:
        store.move_photo(update.row.id, update.info.path, update.info.size, update.info.mtime_ns)
    report.unchanged += len(hashed.touched)
    for update in hashed.moved:
        store.move_photo(update.row.id, update.info.path, update.info.size, update.info.mtime_ns)
        report.moved += 1  # counted once committed: a failure reports what was saved


def _embed_pending(
    library: Library,
    model: HanclipModel,
    pending: Iterable[Pending],
    report: IndexReport,
    batch_size: int,
    workers: int,
    progress: ProgressReporter,
) -> None:
    """Reuse stored embeddings for known content; decode and embed the rest, batch by batch."""
    store = library.store
    to_embed: list[Pending] = []
    for item in pending:
        twin = store.find_by_hash(item.sha256)
        if twin is None:
            to_embed.append(item)
            continue
        _store(library, [_new_photo(item, twin, store.embedding(twin.id))], report)
    if not to_embed:
        return
    progress.stage("embedding photos", total=len(to_embed))
    items: list[Pending] = []
    images: list[LoadedImage] = []

    def flush() -> None:
        raw = model.raw_image_embeddings([im.image for im in images], batch_size=batch_size)
        batch = zip(items, images, raw, strict=True)
        _store(library, [_new_photo(*photo) for photo in batch], report)
        progress.advance(len(items))
        items.clear()
        images.clear()

    ahead = 2 * batch_size + workers
    for item, loaded in _prefetch(to_embed, model.image_size, workers, ahead):
        if isinstance(loaded, ImageLoadError):
            store.record_failure(item.info.path, item.info.size, item.info.mtime_ns, str(loaded))
            report.fail(item.info.path, str(loaded))
            progress.advance()
            continue
        items.append(item)
        images.append(loaded)
        if len(items) >= batch_size:
            flush()
    if items:
        flush()


class PhotoFacts(Protocol):
    """What the library stores about a photo besides its file and embedding: a decoded
    photo (LoadedImage) or a stored one of the same content (PhotoRecord) tells it."""

    @property
    def width(self) -> int | None: ...

    @property
    def height(self) -> int | None: ...

    @property
    def taken_at(self) -> str | None: ...


def _new_photo(item: Pending, facts: PhotoFacts, embedding: np.ndarray) -> NewPhoto:
    info = item.info
    return NewPhoto(
        info.path,
        info.size,
        info.mtime_ns,
        item.sha256,
        facts.width,
        facts.height,
        facts.taken_at,
        embedding,
        replaces=None if item.replaces is None else item.replaces.id,
    )


def _store(library: Library, photos: list[NewPhoto], report: IndexReport) -> None:
    """Write one batch in one transaction; a changed file's old row goes in the same one.
    Counted once committed: a failure reports what was saved."""
    library.store.add_photos(photos)
    replaced = sum(photo.replaces is not None for photo in photos)
    report.updated += replaced
    report.added += len(photos) - replaced
