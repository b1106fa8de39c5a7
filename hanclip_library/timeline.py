"""The library with nothing asked: its photos newest first (the timeline), its folders with
their counts, and the photos of one folder; what `hanclip serve`'s page shows before a word
is typed.

A photo is dated as search dates it (`PhotoRecord.date`): its EXIF date taken, else its
file's time, in local time. The two are stored apart (`taken_at`, text; `mtime_ns` where
`taken_at` is NULL) and both are ranges of one index, (taken_at, mtime_ns, id) (schema step
4). So the timeline is two walks down that index, newest first, merged by date: the photos
with an EXIF date by (taken_at, mtime_ns, id), those without by (mtime_ns, id), which is
their date order too (a later file time is never an earlier local date, but for the hour a
clock goes back). A page goes on from where each walk stopped (a keyset, never OFFSET: a
page deep down costs what the first does), and the cursor holds both places: paged on, the
timeline shows every photo once and none twice, whatever is added or removed meanwhile.

The filters are the search's (`SearchRequest`): its dates and folders, and the photos of
offline folders left out unless `include_offline`. What judges a match (words, scores, the
text switches) has nothing to judge here and is not read. Files are not looked at: the
timeline lists what the library holds, as `info` counts it (the thumbnail of a photo gone
since the last `index` is a 404 the page shows as such).
"""

from __future__ import annotations

import base64
import heapq
import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from hanclip_library.folders import still_offline
from hanclip_library.library import OpenLibrary
from hanclip_library.query import SearchInputError
from hanclip_library.request import CLI, SearchRequest
from hanclip_library.searcher import indexed_folders
from hanclip_library.store import (
    INT64_MAX,
    INT64_MIN,
    PhotoRecord,
    at_or_below,
    at_or_below_params,
    damage_error,
    int64,
)

TIMELINE_PAGE = 60  # photos in a page of the timeline when the API is not given `n`
_RECORD = "id, path, size, mtime_ns, sha256, width, height, taken_at"  # a PhotoRecord's


@dataclass(frozen=True)
class TimelineCursor:
    """Where a page of the timeline stopped in each of its two walks: the last photo shown
    with an EXIF date (taken_at, mtime_ns, id) and the last by file time (mtime_ns, id); None
    where a walk has shown nothing yet. Sent to the client as an opaque text (`text`)."""

    exif: tuple[str, int, int] | None = None
    file_time: tuple[int, int] | None = None

    @property
    def text(self) -> str:
        data = {"e": self.exif, "m": self.file_time}
        raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def read(cls, text: str | None, param: str = "cursor") -> TimelineCursor:
        """The cursor a page handed out; an empty one is the start. Anything else is a
        SearchInputError naming `param`."""
        if not text:
            return cls()
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            data = json.loads(raw.decode("utf-8"))
            exif, file_time = data["e"], data["m"]
            cursor = cls(
                None if exif is None else (_text(exif[0]), _int(exif[1]), _int(exif[2])),
                None if file_time is None else (_int(file_time[0]), _int(file_time[1])),
            )
            if (exif is not None and len(exif) != 3) or (
                file_time is not None and len(file_time) != 2
            ):
                raise ValueError
        except (ValueError, TypeError, KeyError, IndexError, UnicodeError):
            shown = text if len(text) <= 40 else text[:40] + "…"
            raise SearchInputError(
                f"{param}={shown!r} is not a cursor this server gave: leave it out to start "
                "from the newest photo",
                "not_a_cursor",
                param,
                shown,
            ) from None
        return cursor


def _int(value: object) -> int:
    if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
        raise ValueError
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError
    return value


@dataclass(frozen=True)
class TimelinePhoto:
    record: PhotoRecord
    offline: bool  # under an offline folder (shown with include_offline)

    @property
    def month(self) -> str:
        """ "2023-07": the month the timeline files it under."""
        return self.record.date[:7]


@dataclass(frozen=True)
class Month:
    month: str  # "2023-07"
    photos: list[TimelinePhoto]


@dataclass(frozen=True)
class TimelinePage:
    photos: list[TimelinePhoto]
    cursor: TimelineCursor  # where the next page starts
    more: bool  # a next page holds photos
    offline_left_out: int  # photos of offline folders the timeline does not show

    @property
    def months(self) -> list[Month]:
        """The page's photos by month, newest first (the next page may go on with the last)."""
        months: list[Month] = []
        for photo in self.photos:
            if not months or months[-1].month != photo.month:
                months.append(Month(photo.month, []))
            months[-1].photos.append(photo)
        return months


@dataclass
class _Where:
    """A WHERE clause being built, its parameters beside it."""

    clauses: list[str] = field(default_factory=list)
    params: list[object] = field(default_factory=list)

    def add(self, clause: str, *params: object) -> None:
        self.clauses.append(clause)
        self.params.extend(params)

    def sql(self) -> str:
        return " AND ".join(self.clauses) or "1"


def _under_any(folders: Sequence[str]) -> tuple[str, list[object]]:
    """`path` at or below one of `folders`, through the path index (`store.at_or_below_params`)."""
    clause = " OR ".join("path = ? OR (path >= ? AND path < ?)" for _ in folders)
    return f"({clause})", [p for folder in folders for p in at_or_below_params(folder)]


def _directly_in(folder: str) -> tuple[str, list[object]]:
    """`path` is a file of `folder` itself, not of a folder below it."""
    prefix = folder.rstrip("/") + "/"
    return (
        "(path >= ? AND path < ? AND instr(substr(path, ?), '/') = 0)",
        [prefix, prefix[:-1] + chr(ord("/") + 1), len(prefix) + 1],
    )


def _file_date(mtime_ns: int) -> str:
    """`PhotoRecord.date` of a photo with no EXIF date, from its file time alone."""
    return datetime.fromtimestamp(mtime_ns / 1e9).isoformat(timespec="seconds")


def _query(opened: OpenLibrary, sql: str, params: Sequence[object]) -> list[tuple]:
    """Rows of `sql`, a damaged file said as the store says it (LibraryDamaged)."""
    store = opened.store
    try:
        return store.conn.execute(sql, list(params)).fetchall()
    except sqlite3.DatabaseError as exc:
        error = damage_error(store.path, exc)
        if error is None:
            raise
        raise error from exc


def _offline_folders(opened: OpenLibrary) -> list[str]:
    return [folder.path for folder in still_offline(opened.store.offline_folders())]


def timeline_page(
    opened: OpenLibrary,
    request: SearchRequest,
    *,
    cursor: TimelineCursor | None = None,
    limit: int = TIMELINE_PAGE,
    folder: str | None = None,
) -> TimelinePage:
    """The `limit` newest photos after `cursor` that pass the request's dates and folders
    (and lie directly in `folder`, when given), leaving out photos of offline folders unless
    `include_offline`. A folder of `in` with no indexed photo is an error, as in search."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    cursor = cursor or TimelineCursor()
    where = _Where()
    folders = indexed_folders(opened, request)
    if folders:
        clause, params = _under_any(folders)
        where.add(clause, *params)
    if folder is not None:
        clause, params = _directly_in(folder)
        where.add(clause, *params)
    offline = _offline_folders(opened)
    offline_left_out = 0
    if offline and not request.include_offline:
        clause, params = _under_any(offline)
        where.add(f"NOT {clause}", *params)
        offline_left_out = len(opened.store.ids_under(offline))
    after, before = request.date_bound("after", CLI), request.date_bound("before", CLI)

    exif = _Where(list(where.clauses), list(where.params))
    exif.add("taken_at IS NOT NULL")
    if after is not None:
        exif.add("taken_at >= ?", after.text)
    if before is not None:
        exif.add("taken_at < ?", before.text)
    if cursor.exif is not None:
        # The first term alone bounds the index range (SQLite reads the row value as a filter).
        exif.add(
            "taken_at <= ? AND (taken_at, mtime_ns, id) < (?, ?, ?)", cursor.exif[0], *cursor.exif
        )
    file_time = _Where(list(where.clauses), list(where.params))
    file_time.add("taken_at IS NULL")
    if after is not None:
        file_time.add("mtime_ns >= ?", int64(after.mtime_ns))
    if before is not None:
        file_time.add("mtime_ns < ?", int64(before.mtime_ns))
    if cursor.file_time is not None:
        file_time.add("(mtime_ns, id) < (?, ?)", *cursor.file_time)

    # One more than a page from each walk: whether anything is left after the page.
    by_exif = _query(
        opened,
        # Constant SQL only: the column list and clauses of "?" placeholders (the values
        # travel as parameters; tests/test_faults.py keeps f-strings out of SQL).
        "SELECT " + _RECORD + " FROM photos WHERE " + exif.sql() + " "
        "ORDER BY taken_at DESC, mtime_ns DESC, id DESC LIMIT ?",
        [*exif.params, limit + 1],
    )
    by_file_time = _query(
        opened,
        "SELECT " + _RECORD + " FROM photos WHERE " + file_time.sql() + " "
        "ORDER BY mtime_ns DESC, id DESC LIMIT ?",
        [*file_time.params, limit + 1],
    )
    dated = heapq.merge(
        ((row[7], row[3], row[0], row) for row in by_exif),
        ((_file_date(row[3]), row[3], row[0], row) for row in by_file_time),
        reverse=True,
    )
    records = [PhotoRecord(*row) for *_, row in dated]
    shown = records[:limit]
    last_exif = next((r for r in reversed(shown) if r.taken_at is not None), None)
    last_file = next((r for r in reversed(shown) if r.taken_at is None), None)
    next_cursor = TimelineCursor(
        cursor.exif
        if last_exif is None
        else (last_exif.taken_at, last_exif.mtime_ns, last_exif.id),
        cursor.file_time if last_file is None else (last_file.mtime_ns, last_file.id),
    )
    photos = [
        TimelinePhoto(record, any(at_or_below(record.path, f) for f in offline)) for record in shown
    ]
    return TimelinePage(photos, next_cursor, len(records) > limit, offline_left_out)


# -- folders -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderCount:
    """A folder of the library: how many photos lie directly in it and at or below it;
    `depth` 0 for a root (a folder `index` was given, or the top of photos under none)."""

    path: str
    depth: int
    photos: int
    total: int
    offline: bool  # at or below a folder that is offline now

    @property
    def name(self) -> str:
        return os.path.basename(self.path) or self.path

    def as_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "name": self.name,
            "depth": self.depth,
            "photos": self.photos,
            "total": self.total,
            "offline": self.offline,
        }


def _folder_roots(roots: Iterable[Path]) -> list[str]:
    """The recorded roots as folders (a photo given as a root stands for its folder), the
    outermost of nested ones."""
    folders = sorted(
        {os.path.dirname(str(r)) if os.path.splitext(str(r))[1] else str(r) for r in roots},
        key=len,
    )
    kept: list[str] = []
    for folder in folders:
        if not any(at_or_below(folder, outer) for outer in kept):
            kept.append(folder)
    return kept


def folder_counts(opened: OpenLibrary) -> list[FolderCount]:
    """Every folder that holds photos, and every folder between it and its root, in tree
    order (a folder, then the folders below it, by name), each with its counts."""
    paths = [row[0] for row in _query(opened, "SELECT path FROM photos", ())]
    own = Counter(os.path.dirname(path) for path in paths)
    roots = _folder_roots(opened.store.meta.roots)
    total: Counter[str] = Counter()
    top: dict[str, str] = {}
    for folder, count in own.items():
        root = next((r for r in roots if at_or_below(folder, r)), folder)
        here = folder
        while True:
            total[here] += count
            top[here] = root
            if here == root or here == os.path.dirname(here):
                break
            here = os.path.dirname(here)
    offline = _offline_folders(opened)
    found = []
    for path in total:
        root = top[path]
        depth = 0 if path == root else path[len(root) :].strip("/").count("/") + 1
        found.append(
            FolderCount(
                path, depth, own[path], total[path], any(at_or_below(path, f) for f in offline)
            )
        )
    # Tree order: a root's name, then each folder below it by its names one by one.
    found.sort(key=lambda f: (top[f.path].split("/"), f.path.split("/")))
    return found


def checked_folder(opened: OpenLibrary, text: str, param: str = "path") -> str:
    """The folder the API's `param` names, as the library writes paths (absolute, no
    trailing slash, `..` resolved as text); a SearchInputError when it is not a full path or
    holds no indexed photo at or below it."""
    if not (text.startswith("/") or text.startswith("~")) or "\x00" in text:
        raise SearchInputError(
            f"{param}={text!r}: give a folder's full path, e.g. /home/me/사진/2024",
            "not_a_full_path",
            param,
            text,
        )
    folder = os.path.normpath(os.path.expanduser(text))
    if not folder.startswith("/"):
        folder = os.path.abspath(folder)
    holds = _query(
        opened,
        "SELECT 1 FROM photos WHERE path = ? OR (path >= ? AND path < ?) LIMIT 1",
        at_or_below_params(folder),
    )
    if not holds:
        raise SearchInputError(
            f"no indexed photo is under {text}: index it first (hanclip index {text})",
            "folder_not_indexed",
            param,
            text,
        )
    return folder
