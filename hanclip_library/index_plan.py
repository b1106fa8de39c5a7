"""What `hanclip index` decides, kept apart from what it does.

Two pure steps, no SQLite, threads, model or file system:

1. `plan_index` compares the scan with what the library knows: a file whose size and mtime
   match its row is unchanged; a file that failed before with the same size and mtime is not
   retried (the same bytes would fail the same way); every other file is a candidate to hash.
   A known row whose file was not seen was excluded (a name below its root matches an
   `--exclude` pattern), or is offline, or has vanished. It is offline when a folder between
   its root and the photo (`folders_to_probe` names them, the caller probes them) is missing,
   empty or unreadable: a drive not mounted, a folder moved away, a network share down. The
   photo may well still exist, so the row and its embedding are kept, whatever the number of
   photos; only a file gone from a folder that is there and readable has vanished.
2. `plan_hashes` sorts the candidates by content: the same content at the same path was only
   touched; content a vanished row had at another path was moved (the row and its embedding
   follow the file), and so was content of an offline row whose folder is missing or empty (a
   renamed folder); anything else is embedded, where a stored embedding of identical content
   is reused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from hanclip_library.folders import FolderState
from hanclip_library.store import OfflineFolder, PhotoRecord, RecordedFailure, at_or_below
from hanclip_model.images import is_excluded


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A photo file the scan found (one per file: slots keep a scan of many cheap)."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ScanFailure:
    """A file that cannot be stat'ed, a name that is not UTF-8, or a folder that cannot be
    listed (then its path stands for everything below it)."""

    path: str
    reason: str
    folder: bool = False


@dataclass(frozen=True)
class Candidate:
    """A new or changed file to hash; `previous` is the row at its path, if any."""

    info: FileInfo
    previous: PhotoRecord | None


@dataclass(frozen=True)
class IndexPlan:
    unchanged: tuple[FileInfo, ...]
    failed_before: tuple[RecordedFailure, ...]
    candidates: tuple[Candidate, ...]
    vanished: tuple[PhotoRecord, ...]
    kept: tuple[PhotoRecord, ...]  # under the offline folders
    offline: tuple[OfflineFolder, ...]
    excluded: tuple[PhotoRecord, ...]
    forget: tuple[str, ...]


@dataclass(frozen=True)
class HashError:
    reason: str


@dataclass(frozen=True)
class PathUpdate:
    """A row whose content is at `info` now: same id and embedding, new path, size and mtime."""

    row: PhotoRecord
    info: FileInfo


@dataclass(frozen=True)
class Pending:
    """A new or changed file, after hashing, that needs an embedding."""

    info: FileInfo
    sha256: str
    replaces: PhotoRecord | None


@dataclass(frozen=True)
class HashFailure:
    info: FileInfo
    reason: str


@dataclass(frozen=True)
class HashPlan:
    touched: tuple[PathUpdate, ...]
    moved: tuple[PathUpdate, ...]
    to_embed: tuple[Pending, ...]
    failed: tuple[HashFailure, ...]
    vanished: tuple[PhotoRecord, ...]
    kept: tuple[PhotoRecord, ...]  # offline rows whose content did not turn up elsewhere
    offline: tuple[OfflineFolder, ...]  # the offline folders still holding such rows


def _root_of(path: str, roots: Sequence[str]) -> str:
    """The innermost root holding `path`; "/" when none does (every folder above it counts)."""
    return max((r for r in roots if at_or_below(path, r)), key=len, default="/")


def _names_below_root(path: str, roots: Sequence[str]) -> list[str]:
    """The folder and file names from below its root down to `path`; none for the root."""
    root = _root_of(path, roots)
    return [] if path == root else path[len(root.rstrip("/")) + 1 :].split("/")


def _chain(path: str, roots: Sequence[str]) -> list[str]:
    """The folders from the root holding `path` down to `path`'s own folder: the root alone
    when `path` is the root (a photo given as a root)."""
    chain = [_root_of(path, roots)]
    for name in _names_below_root(path, roots)[:-1]:
        chain.append(f"{chain[-1].rstrip('/')}/{name}")
    return chain


def _ancestors(path: str) -> Iterator[str]:
    """`path` itself, then each folder above it up to "/"."""
    while True:
        yield path
        if path == "/":
            return
        path = path.rsplit("/", 1)[0] or "/"


def _not_seen(
    files: list[FileInfo],
    scan_failures: Iterable[ScanFailure],
    known: Iterable[PhotoRecord],
    roots: Sequence[str],
    excludes: Sequence[str],
) -> tuple[list[PhotoRecord], list[PhotoRecord], dict[str, FolderState]]:
    """(excluded rows, other rows whose file was not seen, the folders the scan could not
    list, as states)."""
    seen = {info.path for info in files}
    blocked: dict[str, FolderState] = {
        f.path.rstrip("/") or "/": "unreadable" for f in scan_failures if f.folder
    }
    excluded, gone = [], []
    for row in known:
        if row.path in seen:
            continue
        names = _names_below_root(row.path, roots)
        if any(is_excluded(name, excludes) for name in names):
            excluded.append(row)
        else:
            gone.append(row)
    return excluded, gone, blocked


def folders_to_probe(
    files: Iterable[FileInfo],
    scan_failures: Iterable[ScanFailure],
    known: Iterable[PhotoRecord],
    *,
    roots: Sequence[str] = (),
    excludes: Sequence[str] = (),
) -> tuple[str, ...]:
    """The folders whose state `plan_index` needs: each between its root and a photo whose
    file was not seen (and not under a folder the scan could not list), sorted."""
    _, gone, blocked = _not_seen(list(files), scan_failures, known, roots, excludes)
    wanted: set[str] = set()
    for row in gone:
        chain = _chain(row.path, roots)
        if not any(folder in blocked for folder in chain):
            wanted.update(chain)
    return tuple(sorted(wanted))


def _offline_at(chain: list[str], states: Mapping[str, FolderState]) -> str | None:
    """The top-most folder of `chain` that is not there, if any (unprobed counts as there)."""
    for folder in chain:
        if states.get(folder, "present") != "present":
            return folder
    return None


def plan_index(
    files: Iterable[FileInfo],
    scan_failures: Iterable[ScanFailure],
    known: Iterable[PhotoRecord],
    failures: Iterable[RecordedFailure],
    *,
    roots: Sequence[str] = (),
    folders: Mapping[str, FolderState] | None = None,
    excludes: Sequence[str] = (),
) -> IndexPlan:
    """Sort the scanned files against the rows and failures the library holds under the roots.

    `folders` holds the state of (some of) the folders `folders_to_probe` names; a folder the
    scan could not list is unreadable whatever it says.
    """
    files = list(files)
    scan_failures = list(scan_failures)
    unreadable = {f.path: f for f in scan_failures}
    known_by_path = {row.path: row for row in known}
    failed_by_path = {f.path: f for f in failures}
    unchanged: list[FileInfo] = []
    failed_before: list[RecordedFailure] = []
    candidates: list[Candidate] = []
    for info in files:
        row = known_by_path.get(info.path)
        failure = failed_by_path.get(info.path)
        if row is not None and (row.size, row.mtime_ns) == (info.size, info.mtime_ns):
            unchanged.append(info)
        elif failure is not None and (failure.size, failure.mtime_ns) == (
            info.size,
            info.mtime_ns,
        ):
            failed_before.append(failure)
        else:
            candidates.append(Candidate(info, row))
    seen = {info.path for info in files}
    excluded, gone, blocked = _not_seen(
        files, scan_failures, known_by_path.values(), roots, excludes
    )
    states = {**(folders or {}), **blocked}
    vanished, kept, offline_at = [], [], Counter[str]()
    for row in gone:
        folder = _offline_at(_chain(row.path, roots), states)
        if folder is None:
            vanished.append(row)
        else:
            kept.append(row)
            offline_at[folder] += 1
    offline = tuple(
        OfflineFolder(folder, states[folder], photos)
        for folder, photos in sorted(offline_at.items())
    )
    return IndexPlan(
        unchanged=tuple(unchanged),
        failed_before=tuple(failed_before),
        candidates=tuple(candidates),
        vanished=tuple(vanished),
        kept=tuple(kept),
        offline=offline,
        excluded=tuple(excluded),
        # A failure under an offline folder is kept with its photos: the file may be back.
        forget=tuple(
            p
            for p in failed_by_path
            if p not in seen
            and p not in unreadable
            and not any(at_or_below(p, f.path) for f in offline)
        ),
    )


def plan_hashes(plan: IndexPlan, hashes: Mapping[str, str | HashError]) -> HashPlan:
    """Sort the candidates by the hash (or hash error) found for each path."""
    vanished = {row.path: row for row in plan.vanished}
    folders = {folder.path: folder for folder in plan.offline}
    folder_of = {
        row.path: next(folders[p] for p in _ancestors(row.path) if p in folders)
        for row in plan.kept
    }
    kept = {row.path: row for row in plan.kept}
    vanished_by_hash: dict[str, list[PhotoRecord]] = {}
    # An unreadable folder may still hold the file: content found elsewhere is then a copy.
    movable = [row for row in plan.kept if folder_of[row.path].reason != "unreadable"]
    for row in [*movable, *vanished.values()]:
        vanished_by_hash.setdefault(row.sha256, []).append(row)
    touched: list[PathUpdate] = []
    moved: list[PathUpdate] = []
    to_embed: list[Pending] = []
    failed: list[HashFailure] = []
    for candidate in plan.candidates:
        info, previous = candidate.info, candidate.previous
        sha = hashes[info.path]
        if isinstance(sha, HashError):
            failed.append(HashFailure(info, sha.reason))
        elif previous is not None and previous.sha256 == sha:
            touched.append(PathUpdate(previous, info))
        elif previous is None and vanished_by_hash.get(sha):
            moved_row = vanished_by_hash[sha].pop()
            vanished.pop(moved_row.path, None)
            kept.pop(moved_row.path, None)
            moved.append(PathUpdate(moved_row, info))
        else:
            to_embed.append(Pending(info, sha, previous))
    still = Counter(folder_of[path].path for path in kept)
    return HashPlan(
        touched=tuple(touched),
        moved=tuple(moved),
        to_embed=tuple(to_embed),
        failed=tuple(failed),
        vanished=tuple(vanished.values()),
        kept=tuple(kept.values()),
        offline=tuple(
            OfflineFolder(f.path, f.reason, still[f.path]) for f in plan.offline if still[f.path]
        ),
    )
