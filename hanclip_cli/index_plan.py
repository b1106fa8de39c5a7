"""What `hanclip index` decides, kept apart from what it does.

Two pure steps, no SQLite, threads, model or file system:

1. `plan_index` compares the scan with what the library knows: a file whose size and mtime
   match its row is unchanged; a file that failed before with the same size and mtime is not
   retried (the same bytes would fail the same way); every other file is a candidate to hash.
   A known row whose file was not seen has vanished, unless it lies under a folder that could
   not be listed this time: that photo may well still be there, so its row is kept.
2. `plan_hashes` sorts the candidates by content: the same content at the same path was only
   touched; content a vanished row had at another path was moved (the row and its embedding
   follow the file); anything else is embedded, where a stored embedding of identical content
   is reused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hanclip_cli.store import PhotoRecord


@dataclass(frozen=True)
class FileInfo:
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
class RecordedFailure:
    """A file that could not be indexed last time, with the size and mtime it had then."""

    path: str
    size: int
    mtime_ns: int
    error: str


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
    kept: tuple[PhotoRecord, ...]
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


def plan_index(
    files: Iterable[FileInfo],
    scan_failures: Iterable[ScanFailure],
    known: Iterable[PhotoRecord],
    failures: Iterable[RecordedFailure],
) -> IndexPlan:
    """Sort the scanned files against the rows and failures the library holds under the roots."""
    files = list(files)
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
    blocked = tuple(f.path.rstrip("/") + "/" for f in unreadable.values() if f.folder)
    gone = [row for path, row in known_by_path.items() if path not in seen]
    return IndexPlan(
        unchanged=tuple(unchanged),
        failed_before=tuple(failed_before),
        candidates=tuple(candidates),
        vanished=tuple(row for row in gone if not row.path.startswith(blocked)),
        kept=tuple(row for row in gone if row.path.startswith(blocked)),
        forget=tuple(p for p in failed_by_path if p not in seen and p not in unreadable),
    )


def plan_hashes(plan: IndexPlan, hashes: Mapping[str, str | HashError]) -> HashPlan:
    """Sort the candidates by the hash (or hash error) found for each path."""
    vanished = {row.path: row for row in plan.vanished}
    vanished_by_hash: dict[str, list[PhotoRecord]] = {}
    for row in vanished.values():
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
            del vanished[moved_row.path]
            moved.append(PathUpdate(moved_row, info))
        else:
            to_embed.append(Pending(info, sha, previous))
    return HashPlan(
        touched=tuple(touched),
        moved=tuple(moved),
        to_embed=tuple(to_embed),
        failed=tuple(failed),
        vanished=tuple(vanished.values()),
    )
