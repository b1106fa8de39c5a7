"""The photo library's SQLite database: the source of truth for everything indexed.

One row per photo (path, size, mtime, content hash, dimensions, EXIF date, the raw CLIP image
embedding), one row per file that could not be read, with the reason, and one row per folder
found offline (its photos kept, left out of search). The HNSW index is derived from this and
can always be rebuilt from it.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shlex
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from hanclip_library.migrations import check_version, migrate
from hanclip_model.errors import HanclipError
from hanclip_model.storage import storage_error

if TYPE_CHECKING:
    from hanclip_library.meta import LibraryMeta

DB_NAME = "library.db"
# What the database and its write-ahead log were (size, mtime, inode) when this hanclip last
# closed them after a clean quick_check: see `PhotoStore._unchanged_since_checked`.
CHECKED_NAME = "integrity-checked.json"

# SQLite's own words for a file it cannot trust: SQLITE_CORRUPT ("database disk image is
# malformed", "malformed database schema ..."), SQLITE_NOTADB ("file is not a database", "file
# is encrypted or is not a database" before SQLite 3.37) and SQLITE_IOERR ("disk I/O error").
# Matched on the text because `sqlite_errorcode` needs Python 3.11. A locked, full or
# read-only database is not damaged: those errors stay what they are.
_DAMAGE_WORDS = ("malformed", "not a database", "disk i/o error")


def repair_command(directory: Path | str) -> str:
    return f"hanclip repair --library {shlex.quote(str(directory))}"


class LibraryDamaged(HanclipError):
    """SQLite cannot trust `library.db`; `hanclip repair` saves what it can still read."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"library database {path} is damaged ({problem}): run "
            f"`{repair_command(path.parent)}` to save what can still be read into a fresh one "
            "(the damaged file is kept)"
        )


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite's error says the database file itself is damaged."""
    message = str(exc).lower()
    return any(words in message for words in _DAMAGE_WORDS)


def damage_error(path: Path, exc: sqlite3.DatabaseError) -> HanclipError | None:
    """What `exc`, met on the library database `path`, is to report: LibraryDamaged when
    SQLite says the file is damaged, None when it says something else.

    "disk I/O error" is also how SQLite meets a full disk or a drive pulled out: when the
    library's folder says that is so, it is reported instead (`hanclip_model.storage`).
    """
    if not is_damage(exc):
        return None
    storage = storage_error(exc, path.parent, what="library folder")
    return storage or LibraryDamaged(path, str(exc))


def first_problem(conn: sqlite3.Connection) -> str | None:
    """The first problem `PRAGMA quick_check` finds, on one line; None when it finds none.

    quick_check reads every page once; it leaves out integrity_check's costlier comparison
    of each index with its table, which a damaged page fails anyway.
    """
    (result,) = conn.execute("PRAGMA quick_check(1)").fetchone()
    if result == "ok":
        return None
    # SQLite heads its report with a line "*** in database main ***".
    return " ".join(line for line in str(result).splitlines() if not line.startswith("***"))


Method = TypeVar("Method", bound=Callable[..., Any])
Class = TypeVar("Class", bound=type)


def _reporting_damage(method: Method) -> Method:
    """`method`, with an error that says the database file is damaged as LibraryDamaged."""
    if inspect.isgeneratorfunction(method):
        # Its rows would be read after the wrapper returned, outside it.
        raise TypeError(f"PhotoStore.{method.__name__} must return its rows whole")

    @wraps(method)
    def call(self: PhotoStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            error = damage_error(self.path, exc)
            if error is None:
                raise
            self._clean = False  # met damage: the next writer checks in full
            raise error from exc

    return call  # type: ignore[return-value]


def _reports_damage(cls: Class) -> Class:
    """Every public method of `cls` reports a damaged file as LibraryDamaged.

    One place for it, whichever query meets the damage first: SQLite reads a page only when a
    query needs it, so the damage may show at the thousandth row of an `index` or in the last
    lookup of a `search`. A method is wrapped, not each row, so reading costs nothing more.
    """
    for name, member in list(vars(cls).items()):
        if inspect.isfunction(member) and not name.startswith("_"):
            setattr(cls, name, _reporting_damage(member))
    return cls


@dataclass
class PhotoRecord:
    """What the library knows about one indexed photo: the columns of its `photos` row that
    `records_by_ids` reads, in this order, so a row is a PhotoRecord(*row)."""

    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str
    width: int | None = None
    height: int | None = None
    taken_at: str | None = None

    @property
    def date_source(self) -> str:
        """Where `date` comes from: "exif" (the photo's date taken) or "mtime" (its file)."""
        return "exif" if self.taken_at else "mtime"

    @property
    def date(self) -> str:
        """The date filters and sorting use: EXIF date taken, else the file's modification
        time, both local time in ISO 8601 (EXIF dates carry no time zone)."""
        if self.taken_at:
            return self.taken_at
        return datetime.fromtimestamp(self.mtime_ns / 1e9).isoformat(timespec="seconds")


# SQLite's INTEGER range (a rowid, a file time in ns).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# An open end of a date range: above every ISO date text (file times: the INTEGER range).
_TEXT_MAX = "\uffff"


def int64(value: int) -> int:
    """A file time as SQLite can hold it: dates past the year 2262 are beyond every file."""
    return min(max(value, INT64_MIN), INT64_MAX)


@dataclass(frozen=True)
class DateBound:
    """The start of a day in both forms a photo's date is stored in."""

    text: str  # "2023-07-01": compared, as text, with EXIF dates ("2023-07-14T09:30:00")
    mtime_ns: int  # the same local moment, compared with a file's modification time


@dataclass(slots=True)
class NewPhoto:
    """A photo about to be stored, with its raw CLIP embedding; `replaces` is the id of the
    row its file had before it changed, dropped in the same transaction."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    width: int | None
    height: int | None
    taken_at: str | None
    embedding: np.ndarray
    replaces: int | None = None


@dataclass(frozen=True)
class OfflineFolder:
    """A folder that held indexed photos and is not there: its photos are kept, not pruned.

    `reason` is "missing", "empty" or "unreadable"; `since` is when an `index` first found it
    so (None until it is recorded).
    """

    path: str
    reason: str
    photos: int
    since: str | None = None


@dataclass(frozen=True)
class RecordedFailure:
    """A file that could not be indexed: the size and mtime it had then (the same file is not
    tried again), why, and when (UTC, ISO 8601; None only before it is recorded). The columns
    of its `failures` row, in this order, so a row is a RecordedFailure(*row)."""

    path: str
    size: int
    mtime_ns: int
    error: str
    failed_at: str | None = None

    def as_json(self) -> dict[str, str | None]:
        """As `hanclip info --errors --json` lists it."""
        return {"path": self.path, "error": self.error, "failed_at": self.failed_at}


@dataclass(frozen=True)
class Forgotten:
    """How many rows of each kind `forget_under` dropped."""

    photos: int
    offline_folders: int
    failures: int


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def at_or_below(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies below it (compared as text, no file system)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def at_or_below_params(folder: str) -> list[str]:
    """The parameters of `path = ? OR (path >= ? AND path < ?)`, which selects `folder` and
    every path below it through the path index. Paths starting with "F/" are exactly those
    in ["F/", "F0"); substr() would read every row instead, and LIKE would take % and _ in a
    folder's name for wildcards."""
    prefix = folder.rstrip("/") + "/"
    return [folder, prefix, prefix[:-1] + chr(ord("/") + 1)]


def read_only_folder(directory: Path) -> bool:
    """Whether the library's folder cannot be written: its disk is mounted read-only, or
    this user may not write it. The one place this is decided: such a library is read
    without creating SQLite's log files (`read_only_uri`), and nothing is written there
    (no thumbnail kept, no search index saved, no server announced or started)."""
    try:
        flags = os.statvfs(directory).f_flag
    except OSError:
        return False
    return bool(flags & os.ST_RDONLY) or not os.access(directory, os.W_OK)


def read_only_uri(database: Path) -> str:
    """How a reader opens `database` in a folder it cannot write, so that SQLite writes
    nothing there and any write fails.

    Its write-ahead log needs a -shm file beside the database, which that folder cannot
    get. A log left holding commits (with its -shm) is read as it is (`mode=ro`). With none,
    the database file holds everything and is opened `immutable`: nothing can write the
    folder, so SQLite need not lock or watch it (no -shm at all)."""
    log = database.with_name(database.name + "-wal")
    try:
        has_log = log.stat().st_size > 0
    except OSError:
        has_log = False
    query = "mode=ro" if has_log else "mode=ro&immutable=1"
    return f"{database.absolute().as_uri()}?{query}"


# A RecordedFailure's columns.
_FAILURES = "SELECT path, size, mtime_ns, error, failed_at FROM failures"


@_reports_damage
class PhotoStore:
    """Typed access to `library.db`; every statement is parameterised."""

    def __init__(self, directory: Path, *, create: bool = True) -> None:
        self.path = directory / DB_NAME
        if not create and not self.path.exists():
            raise HanclipError(f"no library at {directory}: run `hanclip index PATH` first")
        # A reader of a library in a folder it cannot write: see `read_only_uri`.
        self.read_only = not create and read_only_folder(directory)
        try:
            if self.read_only:
                self.conn = sqlite3.connect(read_only_uri(self.path), uri=True, timeout=30)
            else:
                self.conn = sqlite3.connect(str(self.path), timeout=30)
        except sqlite3.DatabaseError as exc:
            raise HanclipError(f"cannot open library database {self.path}: {exc}") from None
        self.conn.row_factory = sqlite3.Row
        self._writer = create
        self._clean = False  # checked (or unchanged since checked) and no damage met since
        try:
            self._open(directory, create=create)
        except BaseException:
            self.conn.close()
            raise

    def _open(self, directory: Path, *, create: bool) -> None:
        try:
            # The version is read before anything is written (the WAL switch writes the file
            # header): a library from a newer hanclip is refused exactly as it was found.
            version = check_version(self.conn, self.path)
            self.conn.execute("PRAGMA synchronous=NORMAL")
            # Only the writer (`index`, run to change the library) migrates. A reader reads an
            # older library as it is (every step keeps the read path working, see
            # migrations.py): a `search` or `info` by a newer hanclip leaves the library
            # openable by the hanclip that wrote it, needs no write access to it, and never
            # waits for the write lock.
            if create:
                # A writer that met damage halfway would already have committed its first
                # writes into the damaged file: checked first, the file stays exactly as it
                # was found, for `hanclip repair`. quick_check reads each page once: skipped
                # for a file nothing has written since it was last found clean.
                problem = None
                if version and not self._unchanged_since_checked():
                    problem = first_problem(self.conn)
                if problem is not None:
                    raise LibraryDamaged(self.path, problem)
                self._clean = True
                # WAL lets `search` read the last committed state while `index` writes. The
                # mode is stored in the file, so readers need not set it.
                self.conn.execute("PRAGMA journal_mode=WAL")
                migrate(self.conn, self.path)
            elif version == 0:
                raise HanclipError(f"no library at {directory}: run `hanclip index PATH` first")
        except sqlite3.DatabaseError as exc:
            error = damage_error(self.path, exc)
            if error is not None:
                raise error from exc
            raise HanclipError(f"cannot open library database {self.path}: {exc}") from None

    def close(self) -> None:
        self.conn.close()
        if self._writer and self._clean:
            self._record_checked()

    def _file_state(self) -> list[list[int] | None]:
        """(size, mtime_ns, inode) of the database and of its write-ahead log (None: none, or
        empty, as SQLite leaves it on opening a database: then the database holds it all)."""
        state: list[list[int] | None] = []
        for path in (self.path, self.path.with_name(DB_NAME + "-wal")):
            try:
                st = path.stat()
            except FileNotFoundError:
                state.append(None)
                continue
            empty_log = path != self.path and st.st_size == 0
            state.append(None if empty_log else [st.st_size, st.st_mtime_ns, st.st_ino])
        return state

    def _unchanged_since_checked(self) -> bool:
        """Whether nothing has written the database since this hanclip closed it after a clean
        quick_check: the file and its log are exactly as they were then (size, mtime, inode).
        quick_check reads every page, and a re-index that finds nothing new should not pay
        for it each time (benchmarks/scale.py times that re-index); a file anything else has
        touched since is checked in full, and `hanclip info` and `repair` always check."""
        try:
            recorded = json.loads(self.path.with_name(CHECKED_NAME).read_text(encoding="utf-8"))
            return recorded == self._file_state()
        except (OSError, UnicodeDecodeError, ValueError):
            return False

    def _record_checked(self) -> None:
        from hanclip_model.files import atomic_write_text

        # A full, read-only or vanished disk (atomic_write_text says so as a StorageError):
        # the next writer checks in full, as before, and the run's own error stands.
        with contextlib.suppress(OSError, HanclipError):
            atomic_write_text(self.path.with_name(CHECKED_NAME), json.dumps(self._file_state()))

    def quick_check(self) -> str | None:
        """What SQLite's quick_check finds wrong with the file first; None when nothing."""
        try:
            return first_problem(self.conn)
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            return str(exc)

    # -- metadata ---------------------------------------------------------------------------

    def get_meta(self, key: str) -> object | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: object) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [key, json.dumps(value, ensure_ascii=False)],
            )

    @property
    def meta(self) -> LibraryMeta:
        from hanclip_library.meta import LibraryMeta

        return LibraryMeta(self)

    # -- photos -----------------------------------------------------------------------------

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM photos").fetchone()[0])

    def generation(self) -> str | None:
        """Which set of photos the library holds, as "counter:token" (migration 5): another
        value means photos were added, removed or re-embedded since. None for a library
        whose schema predates it (a reader does not migrate): then nothing is known."""
        try:
            row = self.conn.execute(
                "SELECT counter, token FROM photo_generation WHERE one = 1"
            ).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        return None if row is None else f"{row[0]}:{row[1]}"

    def ids(self) -> np.ndarray:
        # No ORDER BY: SQLite then scans the small hash index instead of the table with its
        # embeddings, which a search would otherwise read whole.
        rows = self.conn.execute("SELECT id FROM photos").fetchall()
        return np.sort(np.array([r[0] for r in rows], dtype=np.int64))

    def records_under(self, roots: Iterable[Path]) -> dict[str, PhotoRecord]:
        """Photos whose path is one of `roots` or lies below one of them."""
        found: dict[str, PhotoRecord] = {}
        for root in roots:
            # Plain tuples, not one dict per row: a no-op `index` of 100k photos reads them all.
            rows = self.conn.execute(
                "SELECT id, path, size, mtime_ns, sha256 FROM photos "
                "WHERE path = ? OR (path >= ? AND path < ?)",
                at_or_below_params(str(root)),
            )
            for photo_id, path, size, mtime_ns, sha256 in rows:
                found[path] = PhotoRecord(photo_id, path, size, mtime_ns, sha256)
        return found

    def ids_under(self, folders: Iterable[str]) -> set[int]:
        """Ids of the photos at or below each of `folders`."""
        found: set[int] = set()
        for folder in folders:
            rows = self.conn.execute(
                "SELECT id FROM photos WHERE path = ? OR (path >= ? AND path < ?)",
                at_or_below_params(folder),
            )
            found.update(int(r[0]) for r in rows)
        return found

    def ids_passing(
        self,
        *,
        after: DateBound | None = None,
        before: DateBound | None = None,
        folders: Sequence[str] = (),
    ) -> set[int]:
        """Ids of the photos dated on or after `after`, before `before`, and at or below one of
        `folders`, in one query: the dates are two ranges of the (taken_at, mtime_ns) index,
        one of EXIF dates, one of file times where taken_at is NULL (schema step 4; a library
        without it reads those rows instead), the folders ranges on the path index (see
        `ids_under`)."""
        if after is None and before is None:
            if folders:
                return self.ids_under(folders)
            found = {int(r[0]) for r in self.conn.execute("SELECT id FROM photos")}
        else:
            # Fixed SQL, an open bound given as the lowest or highest value: the query stays
            # two bounded ranges of the (taken_at, mtime_ns) index either way.
            rows = self.conn.execute(
                "SELECT id FROM photos WHERE (taken_at >= ? AND taken_at < ?) "
                "OR (taken_at IS NULL AND mtime_ns >= ? AND mtime_ns < ?)",
                [
                    after.text if after else "",
                    before.text if before else _TEXT_MAX,
                    int64(after.mtime_ns) if after else INT64_MIN,
                    int64(before.mtime_ns) if before else INT64_MAX,
                ],
            )
            found = {int(r[0]) for r in rows}
        return found & self.ids_under(folders) if folders else found

    def record_for_path(self, path: str) -> PhotoRecord | None:
        row = self.conn.execute("SELECT id FROM photos WHERE path = ?", [path]).fetchone()
        return None if row is None else self.record_by_id(row[0])

    def records_by_ids(self, ids: Iterable[int]) -> dict[int, PhotoRecord]:
        """The one query that reads a PhotoRecord's columns (the others find ids, then ask)."""
        ids = [int(i) for i in ids]
        found: dict[int, PhotoRecord] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                f"SELECT id, path, size, mtime_ns, sha256, width, height, taken_at "
                f"FROM photos WHERE id IN ({marks})",
                chunk,
            ):
                found[row[0]] = PhotoRecord(*row)
        return found

    def record_by_id(self, photo_id: int) -> PhotoRecord | None:
        return self.records_by_ids([photo_id]).get(int(photo_id))

    def find_by_hash(self, sha256: str) -> PhotoRecord | None:
        row = self.conn.execute(
            "SELECT id FROM photos WHERE sha256 = ? LIMIT 1", [sha256]
        ).fetchone()
        return None if row is None else self.record_by_id(row[0])

    def data_version(self) -> int:
        """SQLite's count of commits made by other connections: equal on two reads of this
        connection when nothing was committed in between (a cheap "did the library change")."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def embedding(self, photo_id: int) -> np.ndarray:
        row = self.conn.execute("SELECT embedding FROM photos WHERE id = ?", [photo_id]).fetchone()
        return np.frombuffer(row[0], dtype=np.float32).copy()

    def embeddings(self, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, raw embeddings) for `ids`, or for every photo, in id order."""
        if ids is None:
            rows = self.conn.execute("SELECT id, embedding FROM photos ORDER BY id").fetchall()
        else:
            rows = []
            wanted = [int(i) for i in ids]
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows += self.conn.execute(
                    f"SELECT id, embedding FROM photos WHERE id IN ({marks}) ORDER BY id", chunk
                ).fetchall()
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        out_ids = np.array([r[0] for r in rows], dtype=np.int64)
        vectors = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
        return out_ids, vectors

    def add_photos(self, photos: list[NewPhoto]) -> list[int]:
        """Insert photos in one transaction, dropping the rows they replace; returns new ids."""
        new_ids = []
        with self.conn:
            for photo in photos:
                if photo.replaces is not None:
                    self.conn.execute("DELETE FROM photos WHERE id = ?", [int(photo.replaces)])
            for photo in photos:
                cursor = self.conn.execute(
                    "INSERT INTO photos (path, size, mtime_ns, sha256, width, height, taken_at, "
                    "embedding, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        photo.path,
                        photo.size,
                        photo.mtime_ns,
                        photo.sha256,
                        photo.width,
                        photo.height,
                        photo.taken_at,
                        np.ascontiguousarray(photo.embedding, dtype=np.float32).tobytes(),
                        _now(),
                    ],
                )
                new_ids.append(int(cursor.lastrowid))
                self.conn.execute("DELETE FROM failures WHERE path = ?", [photo.path])
        return new_ids

    def move_photo(self, photo_id: int, path: str, size: int, mtime_ns: int) -> None:
        """Same content at a new path (a rename or move): keep the row and its embedding."""
        with self.conn:
            self.conn.execute(
                "UPDATE photos SET path = ?, size = ?, mtime_ns = ? WHERE id = ?",
                [path, size, mtime_ns, photo_id],
            )
            self.conn.execute("DELETE FROM failures WHERE path = ?", [path])

    def remove_photos(self, ids: Iterable[int]) -> None:
        with self.conn:
            for photo_id in ids:
                self.conn.execute("DELETE FROM photos WHERE id = ?", [int(photo_id)])

    def clear_photos(self) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM photos")
            self.conn.execute("DELETE FROM offline_folders")

    def forget_under(self, path: str) -> Forgotten:
        """Drop the photos, offline folders and failures at or below `path`, in one
        transaction."""
        photo_ids = self.ids_under([path])
        folders = [f.path for f in self.offline_folders() if at_or_below(f.path, path)]
        failures = list(self.failures_under([Path(path)]))
        with self.conn:
            for photo_id in photo_ids:
                self.conn.execute("DELETE FROM photos WHERE id = ?", [photo_id])
            for folder in folders:
                self.conn.execute("DELETE FROM offline_folders WHERE path = ?", [folder])
            for failure in failures:
                self.conn.execute("DELETE FROM failures WHERE path = ?", [failure])
        return Forgotten(len(photo_ids), len(folders), len(failures))

    # -- offline folders --------------------------------------------------------------------

    def offline_folders(self) -> list[OfflineFolder]:
        """The folders the last `index` of their root found offline, by path."""
        # A reader may open a library from before the table (see migrations.py).
        has_table = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'offline_folders'"
        ).fetchall()
        if not has_table:
            return []
        rows = self.conn.execute(
            "SELECT path, reason, photos, since FROM offline_folders ORDER BY path"
        )
        return [OfflineFolder(*row) for row in rows]

    def record_offline(self, roots: Iterable[Path], folders: Iterable[OfflineFolder]) -> None:
        """Make `folders` the offline folders at or below `roots`: any other recorded there is
        back (or was pruned). A folder still offline keeps the date it went offline."""
        since = {f.path: f.since for f in self.offline_folders()}
        roots = [str(root) for root in roots]
        with self.conn:
            for path in since:
                if any(at_or_below(path, root) for root in roots):
                    self.conn.execute("DELETE FROM offline_folders WHERE path = ?", [path])
            for folder in folders:
                self.conn.execute(
                    "INSERT INTO offline_folders (path, reason, photos, since) VALUES (?, ?, ?, ?)",
                    [folder.path, folder.reason, folder.photos, since.get(folder.path) or _now()],
                )

    # -- failures ---------------------------------------------------------------------------

    def record_failure(self, path: str, size: int, mtime_ns: int, error: str) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO failures (path, size, mtime_ns, error, failed_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET size = excluded.size, "
                "mtime_ns = excluded.mtime_ns, error = excluded.error, "
                "failed_at = excluded.failed_at",
                [path, size, mtime_ns, error, _now()],
            )

    def failures_under(self, roots: Iterable[Path]) -> dict[str, RecordedFailure]:
        """The failures recorded at or below each of `roots`, by path."""
        found = {}
        for root in roots:
            rows = self.conn.execute(
                _FAILURES + " WHERE path = ? OR (path >= ? AND path < ?)",
                at_or_below_params(str(root)),
            )
            for row in rows:
                found[row[0]] = RecordedFailure(*row)
        return found

    def forget_failures(self, paths: Iterable[str]) -> None:
        with self.conn:
            for path in paths:
                self.conn.execute("DELETE FROM failures WHERE path = ?", [path])

    def failures(self) -> list[RecordedFailure]:
        """Every recorded failure, by path."""
        return [RecordedFailure(*row) for row in self.conn.execute(_FAILURES + " ORDER BY path")]
