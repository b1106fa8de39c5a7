"""Schema migrations for `library.db`: numbered steps, applied in order, each recorded.

A library records the number of the last step applied to it as a JSON integer in the `meta`
row "schema_version", the row that schema 1 wrote before this module existed, so libraries
made then are recognised as version 1. `SCHEMA_VERSION` is the number of the last step.

A step is a small function registered with `@migration(number)`. Steps are only appended:
a released step never changes, because libraries out there have already run it.

Only a writer (`hanclip index`) migrates. Readers read any version up to SCHEMA_VERSION as
it is (`PhotoStore.__init__` says why), so whatever a step adds (a table, a nullable column,
an index), the read path must still work on a library that lacks it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hanclip_model.errors import HanclipError

VERSION_KEY = "schema_version"

Step = Callable[[sqlite3.Connection], None]


class NewerLibrary(HanclipError):
    """The library was written by a newer hanclip, with a schema this one does not know."""


@dataclass(frozen=True)
class Migration:
    number: int
    apply: Step

    @property
    def name(self) -> str:
        return self.apply.__name__


MIGRATIONS: list[Migration] = []


def migration(number: int) -> Callable[[Step], Step]:
    """Registers a step as migration `number`, which must be the next number.

    The step runs inside a transaction that `migrate` opens and commits: it must use
    `conn.execute`, never `executescript` (which commits first).
    """

    def register(step: Step) -> Step:
        # An explicit number, checked: two branches that each add "the next step" collide
        # here, at import, instead of numbering one of them silently differently.
        expected = len(MIGRATIONS) + 1
        if number != expected:
            raise ValueError(f"migration {step.__name__} is numbered {number}, expected {expected}")
        MIGRATIONS.append(Migration(number, step))
        return step

    return register


@migration(1)
def create_photo_tables(conn: sqlite3.Connection) -> None:
    """The schema hanclip wrote before versioned migrations: photos, failures, meta."""
    # AUTOINCREMENT: an id is never reused, so a stale HNSW label can't alias a new photo.
    conn.execute(
        "CREATE TABLE IF NOT EXISTS photos ("
        "id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, "
        "size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, "
        "width INTEGER, height INTEGER, taken_at TEXT, embedding BLOB NOT NULL, "
        "indexed_at TEXT)"
    )
    # The index names are the ones sqlite-utils gave them when it created schema 1.
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS idx_photos_path ON photos (path)")
    conn.execute("CREATE INDEX IF NOT EXISTS idx_photos_sha256 ON photos (sha256)")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS failures (path TEXT PRIMARY KEY, size INTEGER, "
        "mtime_ns INTEGER, error TEXT, failed_at TEXT)"
    )
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")


@migration(2)
def index_taken_at(conn: sqlite3.Connection) -> None:
    """Date filters select photos by when they were taken: without an index each such
    query reads every row, embeddings and all."""
    conn.execute("CREATE INDEX IF NOT EXISTS idx_photos_taken_at ON photos (taken_at)")


@migration(3)
def record_offline_folders(conn: sqlite3.Connection) -> None:
    """Folders that held indexed photos and were missing, empty or unreadable at the last
    `index` (a drive not mounted, say): their photos keep their rows and embeddings and are
    left out of search until the folder is back. A folder without a row is online."""
    conn.execute(
        "CREATE TABLE offline_folders (path TEXT PRIMARY KEY, reason TEXT NOT NULL, "
        "photos INTEGER NOT NULL, since TEXT NOT NULL)"
    )


@migration(4)
def index_photo_dates(conn: sqlite3.Connection) -> None:
    """A photo's date is its EXIF taken_at, else its mtime_ns: with both in one index, the
    photos without an EXIF date are a range of it too, instead of one table read each
    (`PhotoStore.ids_passing`). A library without it filters the same, only slower."""
    conn.execute("CREATE INDEX IF NOT EXISTS idx_photos_date ON photos (taken_at, mtime_ns)")


@migration(5)
def count_photo_changes(conn: sqlite3.Connection) -> None:
    """The photos' generation: a counter and a random token that change in the same
    transaction as every row added to, removed from or re-embedded in `photos`, whoever
    writes it (triggers). The HNSW index records the generation it was made from, so a
    search knows it is current with one read instead of comparing every photo id.

    The token makes a match mean the same photos even across a library.db restored from a
    backup and changed since: its counter may come back to the index's, not its token."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS photo_generation (one INTEGER PRIMARY KEY CHECK (one = 1), "
        "counter INTEGER NOT NULL, token TEXT NOT NULL)"
    )
    conn.execute("INSERT OR IGNORE INTO photo_generation VALUES (1, 1, lower(hex(randomblob(8))))")
    for trigger, event in (
        ("photos_added", "AFTER INSERT"),
        ("photos_removed", "AFTER DELETE"),
        ("photos_reembedded", "AFTER UPDATE OF id, embedding"),
    ):
        conn.execute(
            "CREATE TRIGGER IF NOT EXISTS " + trigger + " " + event + " ON photos BEGIN "
            "UPDATE photo_generation SET counter = counter + 1, "
            "token = lower(hex(randomblob(8))); END"
        )


@migration(6)
def index_photo_files(conn: sqlite3.Connection) -> None:
    """What `index` compares with the files on disk (path, size, mtime, hash) in one covering
    index: a re-index reads it instead of every photo's row with its embedding, many times
    its size (benchmarks/scale.py times that re-index). A library without it compares the
    same, only slower."""
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_photos_files ON photos (path, size, mtime_ns, sha256)"
    )


@migration(7)
def record_photo_text(conn: sqlite3.Connection) -> None:
    """The text read in photos (`photo_text.py`): one reading per content hash and engine
    (name, version, languages), so a moved or copied photo is not read again and a change of
    engine is another reading; `status` is "text", "no_text" or "failed" (then `error` says
    why). `words` holds the words with their boxes as JSON. `grams` is the text as the
    full-text index reads it (`photo_text.grams`): FTS5's trigram tokenizer cannot find the
    two-syllable words Korean is full of, a column of bigram tokens can, with a smaller index
    (the choice is measured in photo_text.py's docstring).

    The index is derived data kept by triggers, named as sqlite-utils names them, so its
    `table.search` works on it too; `repair` rebuilds it rather than copying it."""
    conn.execute(
        "CREATE TABLE photo_text (id INTEGER PRIMARY KEY AUTOINCREMENT, sha256 TEXT NOT NULL, "
        "engine TEXT NOT NULL, engine_version TEXT NOT NULL, languages TEXT NOT NULL, "
        "status TEXT NOT NULL CHECK (status IN ('text', 'no_text', 'failed')), "
        "text TEXT NOT NULL DEFAULT '', words TEXT NOT NULL DEFAULT '[]', "
        "grams TEXT NOT NULL DEFAULT '', error TEXT, read_at TEXT NOT NULL, "
        "UNIQUE (sha256, engine, engine_version, languages))"
    )
    conn.execute(
        "CREATE VIRTUAL TABLE photo_text_fts USING fts5 (grams, tokenize='unicode61', "
        "content='photo_text', content_rowid='id')"
    )
    insert = "INSERT INTO photo_text_fts (rowid, grams) VALUES (new.id, new.grams);"
    delete = (
        "INSERT INTO photo_text_fts (photo_text_fts, rowid, grams) "
        "VALUES ('delete', old.id, old.grams);"
    )
    for trigger, event, body in (
        ("photo_text_ai", "AFTER INSERT", insert),
        ("photo_text_ad", "AFTER DELETE", delete),
        ("photo_text_au", "AFTER UPDATE", delete + " " + insert),
    ):
        conn.execute(f"CREATE TRIGGER {trigger} {event} ON photo_text BEGIN {body} END")


SCHEMA_VERSION = MIGRATIONS[-1].number


def stored_version(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version the database records; 0 when it has none yet (a new database).

    Only reads: safe on a library this hanclip must not change.
    """
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchall()
    rows = (
        conn.execute("SELECT value FROM meta WHERE key = ?", [VERSION_KEY]).fetchall()
        if has_meta
        else []
    )
    if not rows:
        return 0
    try:
        version = json.loads(rows[0][0])
    except (TypeError, ValueError):
        version = None
    if type(version) is not int or version < 1:
        raise HanclipError(
            f"cannot open library database {path}: its schema_version {rows[0][0]!r} "
            "is not one hanclip writes"
        )
    return version


def check_version(conn: sqlite3.Connection, path: Path) -> int:
    """`stored_version`, refusing a library newer than this hanclip understands."""
    version = stored_version(conn, path)
    if version > SCHEMA_VERSION:
        raise NewerLibrary(
            f"library {path} has schema version {version}, but this hanclip knows versions "
            f"up to {SCHEMA_VERSION}: upgrade hanclip to open it"
        )
    return version


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Applies, in order, every step the database lacks, each in its own transaction."""
    while check_version(conn, path) < SCHEMA_VERSION:
        _apply_next_step(conn, path)


def _apply_next_step(conn: sqlite3.Connection, path: Path) -> None:
    # IMMEDIATE takes the write lock before the version is read again: of two processes
    # upgrading at once, the second waits, then finds the step applied and skips it.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = check_version(conn, path)
        if version < SCHEMA_VERSION:
            step = MIGRATIONS[version]
            step.apply(conn)
            if not conn.in_transaction:
                raise RuntimeError(f"migration {step.number} ({step.name}) ended its transaction")
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [VERSION_KEY, json.dumps(step.number)],
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
