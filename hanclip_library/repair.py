"""`hanclip repair`: what SQLite can still read of a damaged `library.db`, in a fresh one.

The damaged file is never written to and never deleted. It is read through a read-only
connection into a fresh database built beside it; only then is it renamed aside
(`library.db.damaged-<UTC time>`, its -wal and -shm with it) and the fresh one takes its
name. Until that rename `library.db` is the damaged file as it was, so a repair stopped
halfway leaves the library as it found it.

Python's sqlite3 has no `.recover`: that reads raw pages and belongs to the sqlite3 shell, not
to the SQLite library the module wraps. So the salvage reads through SQL, row by row: each
table in rowid order, and where a read fails, the next rowid SQLite can read from again is
searched for (`next_readable`); the rows between are lost. The fresh database comes from the
migrations, so it has this hanclip's schema, and the schema is read from it: every table and
column it has is copied (`table_copies`), but for the few tables it makes its own
(`NOT_COPIED`) and the full-text index, which its triggers build again from the rows copied
(`derived_tables`), so a new migration's table or column is never left behind.

A photo row whose embedding is unusable (not whole float32s, not finite, or not the length of
the others) is left out: the next `hanclip index` finds its file new and embeds it again.
Saved photos keep their ids, and the id sequence is set above every id the damaged database or
the HNSW index held. The index therefore stays right for the saved photos: the next search or
index drops the lost ones from it (`sync_index`), and no new photo can take a lost one's
label. The repair needs no model, so it works when the bundle is gone.

The library's settings (its `meta` rows: model, image model, folders, excludes) are copied
like any table. Where damage keeps some from being read, they are reported lost, and those
that what was saved tells are made again (`recover_settings`); a library left with no model
is given none: `search` then asks for one instead of taking another model's space.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hanclip_library.library import MODELS_DIR, installed_bundles, library_dir, writer_lock
from hanclip_library.migrations import VERSION_KEY, NewerLibrary, check_version
from hanclip_library.store import (
    DB_NAME,
    INT64_MAX,
    INT64_MIN,
    LibraryDamaged,
    PhotoStore,
    at_or_below,
    is_damage,
)
from hanclip_library.vector_index import load_index, read_pointer
from hanclip_model.bundle import BUILTIN_BUNDLES, SEARCH_BUILTINS, BundleSpec, read_bundle
from hanclip_model.errors import HanclipError
from hanclip_model.heads import load_heads

# Where the fresh database is built; what an interrupted repair left there is thrown away.
WORK_DIR = ".repair"
# SQLite keeps a database's -wal and -shm beside it under these suffixes.
COMPANIONS = ("-wal", "-shm")


def usable_embedding(blob: object) -> bool:
    """Whether a stored embedding is whole, finite float32s (its length is checked after)."""
    if not isinstance(blob, bytes) or not blob or len(blob) % 4:
        return False
    return bool(np.isfinite(np.frombuffer(blob, dtype=np.float32)).all())


@dataclass(frozen=True)
class Table:
    """How one table is copied: `select` reads rowid and columns from a rowid on, in rowid
    order; `insert` writes those columns; `keep` says whether a row read is worth keeping."""

    name: str
    select: str
    insert: str
    keep: Callable[[sqlite3.Row], bool]


def _every_row(row: sqlite3.Row) -> bool:
    return True


# Which rows of a table are worth keeping, where not all are.
KEEP: dict[str, Callable[[sqlite3.Row], bool]] = {
    "photos": lambda row: usable_embedding(row["embedding"]),
    # The fresh database records its own schema version.
    "meta": lambda row: row["key"] != VERSION_KEY,
}
# Tables the fresh database makes its own and nothing is copied into: the photos' generation
# (migration 5) starts afresh, so the HNSW index of a repaired library, recorded with the old
# one, is compared with it photo by photo.
NOT_COPIED = ("photo_generation",)


def _quoted(name: str) -> str:
    """An SQL identifier: a name read from the fresh database's own schema, quoted all the
    same (a table or column name cannot be a parameter)."""
    return '"' + name.replace('"', '""') + '"'


def table_copies(fresh: sqlite3.Connection) -> list[Table]:
    """How each table of the fresh database (as the migrations made it) is copied into it,
    in the order they were made: all of its columns, by name, as the damaged database may
    hold them in another order."""
    names = fresh.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY rowid"
    ).fetchall()
    derived = derived_tables(fresh)
    copies = []
    for (name,) in names:
        if name in NOT_COPIED or name in derived:
            continue
        columns = [row[0] for row in fresh.execute("SELECT name FROM pragma_table_info(?)", [name])]
        listed = ", ".join(_quoted(column) for column in columns)
        table = _quoted(name)
        select = "SELECT rowid, " + listed + " FROM " + table + " WHERE rowid >= ? ORDER BY rowid"
        marks = ", ".join("?" * len(columns))
        insert = "INSERT INTO " + table + " (" + listed + ") VALUES (" + marks + ")"
        copies.append(Table(name, select, insert, KEEP.get(name, _every_row)))
    return copies


def derived_tables(fresh: sqlite3.Connection) -> set[str]:
    """The virtual tables of the fresh database (the full-text index of the text in photos,
    migration 7) and the shadow tables that hold their data: derived from the tables they
    index, they are never copied. Their triggers fill them again as the rows they index are
    copied, so a damaged index is rebuilt rather than carried over."""
    virtual = [
        name
        for (name,) in fresh.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND sql LIKE 'CREATE VIRTUAL TABLE%'"
        )
    ]
    every = [name for (name,) in fresh.execute("SELECT name FROM sqlite_master")]
    return {
        name for name in every for table in virtual if name == table or name.startswith(table + "_")
    }


def photo_id_queries(fresh: sqlite3.Connection) -> list[str]:
    """One query per index of the photos table, each reading every photo's id through it
    alone: the first that reads whole counts the photos the damaged database had. (An index
    an older schema lacks fails like a damaged one, and is skipped.)"""
    names = fresh.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'photos' "
        "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    ).fetchall()
    return ["SELECT id FROM photos INDEXED BY " + _quoted(name) for (name,) in names]


# The settings a library keeps in `meta`, by the name a repair reports each under, with the
# rows that hold it. (`checked_fingerprint` is none: a library without it checks again.)
SETTING_ROWS = {
    "model": ("model",),
    "image_model": ("image_model", "image_fingerprint"),
    "roots": ("roots",),
    "excludes": ("excludes",),
}


@dataclass(frozen=True)
class SettingsSalvage:
    """What became of the library's settings when its `meta` rows could not all be read:
    `lost`, those not read (names of SETTING_ROWS), and `recovered`, those of them made
    again from what was saved, each with how."""

    lost: tuple[str, ...] = ()
    recovered: dict[str, str] = field(default_factory=dict)

    @property
    def still_lost(self) -> tuple[str, ...]:
        return tuple(name for name in self.lost if name not in self.recovered)


@dataclass(frozen=True)
class RepairReport:
    """What `repair_library` found and did.

    `problem` is None for a healthy database, which is left as it was. `photos_lost` is None
    when not even the damaged file's photo indexes could be read to count them.
    """

    library: Path
    problem: str | None
    damaged_file: Path | None
    photos_saved: int
    photos_lost: int | None
    settings: SettingsSalvage = field(default_factory=SettingsSalvage)

    @property
    def repaired(self) -> bool:
        return self.problem is not None

    def as_json(self) -> dict[str, object]:
        return {
            "library": str(self.library),
            "repaired": self.repaired,
            "problem": self.problem,
            "damaged_file": str(self.damaged_file) if self.damaged_file else None,
            "photos_saved": self.photos_saved,
            "photos_lost": self.photos_lost,
            "settings_lost": list(self.settings.lost),
            "settings_recovered": dict(self.settings.recovered),
        }


@dataclass(frozen=True)
class Salvage:
    """How many photos the fresh database got, how many of the damaged one's it lacks, and
    what became of the library's settings."""

    saved: int
    lost: int | None
    settings: SettingsSalvage = field(default_factory=SettingsSalvage)


def repair_library(library: Path | None) -> RepairReport:
    """Check `library.db`; when it is damaged, replace it with what can still be read."""
    directory = library_dir(library)
    database = directory / DB_NAME
    if not database.exists():
        raise HanclipError(f"no library at {directory}: run `hanclip index PATH` first")
    try:
        with writer_lock(directory):
            problem = _first_problem(directory)
            if problem is None:
                return RepairReport(directory, None, None, 0, 0)
            salvage, kept = _replace_damaged(database)
    except OSError as exc:
        raise HanclipError(f"cannot repair {directory}: {exc.strerror or exc}") from None
    except sqlite3.DatabaseError as exc:
        raise HanclipError(f"cannot repair {database}, left as it was: {exc}") from None
    return RepairReport(directory, problem, kept, salvage.saved, salvage.lost, salvage.settings)


def _replace_damaged(database: Path) -> tuple[Salvage, Path]:
    """Salvage `database` into a fresh one, set it aside, and put the fresh one in its
    place; returns the salvage and where the damaged file now is."""
    work = database.parent / WORK_DIR
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        salvage = salvage_into(database, work)
        moves = aside_moves(database, datetime.now(timezone.utc), os.listdir(database.parent))
        for source, target in moves:
            if source.exists():
                os.rename(source, target)
        os.replace(work / DB_NAME, database)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return salvage, moves[-1][1]


def _first_problem(directory: Path) -> str | None:
    """What SQLite finds wrong with the library's database first; None when nothing."""
    try:
        with closing(PhotoStore(directory, create=False)) as store:
            return store.quick_check()
    except LibraryDamaged as exc:
        return exc.problem


def aside_moves(database: Path, when: datetime, taken: Collection[str]) -> list[tuple[Path, Path]]:
    """(from, to) renames that set the damaged database aside, the database last.

    Its -wal and -shm go first and keep their suffixes, so the copy opens as it was, and the
    fresh database never meets the old log. An earlier copy (`taken` names the directory's
    files) is never overwritten.
    """
    stamp = f"{database.name}.damaged-{when.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}"
    name, number = stamp, 1
    while any(name + suffix in taken for suffix in ("", *COMPANIONS)):
        number += 1
        name = f"{stamp}-{number}"
    return [
        (database.with_name(database.name + suffix), database.with_name(name + suffix))
        for suffix in (*COMPANIONS, "")
    ]


def next_readable(start: int, readable: Callable[[int], bool]) -> int | None:
    """The smallest rowid above `start` that `readable` holds for; None when none is.

    `readable(rowid)` says whether rows can be read from `rowid` on. It fails for the rowids
    on a damaged page (`start` is one) and holds again past them: steps double until it
    holds, then the last gap is halved, so a damaged stretch costs about twice the log2 of
    its length in probes.
    """
    low, step = start, 1
    while True:
        high = min(start + step, INT64_MAX)
        if readable(high):
            break
        if high == INT64_MAX:
            return None
        low, step = high, step * 2
    while high - low > 1:
        middle = (low + high) // 2
        if readable(middle):
            high = middle
        else:
            low = middle
    return high


@dataclass
class Reading:
    """How a table's read went: `skipped` once a damaged stretch of it was passed over."""

    skipped: bool = False


def readable_rows(
    conn: sqlite3.Connection, select: str, reading: Reading | None = None
) -> Iterator[sqlite3.Row]:
    """Every row that SQLite can still read of a table, in rowid order; `select` reads a
    table's rowid and columns from the rowid it is given on, in rowid order. `reading`
    learns whether some rows could not be read."""
    reading = reading if reading is not None else Reading()

    def first_from(rowid: int) -> list[sqlite3.Row] | None:
        """The first row from `rowid` on ([] past the last row); None where it is unreadable."""
        try:
            return conn.execute(select + " LIMIT 1", [rowid]).fetchall()
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            return None

    start = INT64_MIN
    while start <= INT64_MAX:
        try:
            for row in conn.execute(select, [start]):
                start = row[0] + 1
                yield row
            return
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            reading.skipped = True
        # The sqlite3 module steps to the next row before it hands out the current one: the
        # last row before the damage may be readable and still not handed out.
        rows = first_from(start)
        if rows is None:
            found = next_readable(start, lambda rowid: first_from(rowid) is not None)
            if found is None:
                return
            start = found
        elif rows:
            start = rows[0][0] + 1
            yield rows[0]
        else:
            return


def salvage_into(database: Path, work: Path) -> Salvage:
    """Build `work/library.db` from what can be read of `database`."""
    with closing(_open_damaged(database)) as source:
        try:
            check_version(source, database)
        except NewerLibrary:
            raise
        except (sqlite3.DatabaseError, HanclipError):
            pass  # unreadable: the copy gets this hanclip's schema either way
        fresh = PhotoStore(work, create=True)
        try:
            with fresh.conn as target:
                whole = {
                    table.name: _copy_table(source, target, table) for table in table_copies(target)
                }
                saved = _drop_odd_embeddings(target)
                known = _indexed_photo_ids(source, photo_id_queries(target))
                _keep_ids_unused(source, target, known, work.parent)
            settings = SettingsSalvage()
            if not whole["meta"]:
                settings = recover_settings(fresh, work.parent)
        finally:
            fresh.close()
    lost = None if known is None else len(known - saved)
    return Salvage(len(saved), lost, settings)


def _open_damaged(database: Path) -> sqlite3.Connection:
    # Read-only, so SQLite writes nothing to the file, not even the checkpoint of a closing
    # connection. writable_schema lets it read a file shorter than its header says (a
    # truncated copy) up to where it ends, instead of refusing all of it, as `.dump` does.
    conn = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA writable_schema = ON")
    return conn


def _has_table(source: sqlite3.Connection, name: str) -> bool:
    """Whether the damaged database has the table (an older schema may lack it)."""
    try:
        found = source.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [name]
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        return False
    return bool(found)


def _copy_table(source: sqlite3.Connection, target: sqlite3.Connection, table: Table) -> bool:
    """Every readable row of `table` worth keeping that the fresh schema accepts; whether
    the table was read whole (False too where the damaged schema does not show it)."""
    if not _has_table(source, table.name):
        return False
    reading = Reading()
    for row in readable_rows(source, table.select, reading):
        if not table.keep(row):
            continue
        try:
            target.execute(table.insert, tuple(row)[1:])
        except sqlite3.IntegrityError:
            continue  # a NULL or a duplicate that only damage can have made
    return not reading.skipped


def _drop_odd_embeddings(target: sqlite3.Connection) -> set[int]:
    """Drop photos whose embedding length is not the most common one; the saved ids."""
    lengths = target.execute(
        "SELECT length(embedding), count(*) FROM photos GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1"
    ).fetchall()
    if lengths:
        target.execute("DELETE FROM photos WHERE length(embedding) != ?", [lengths[0][0]])
    return {int(row[0]) for row in target.execute("SELECT id FROM photos")}


def _indexed_photo_ids(source: sqlite3.Connection, queries: list[str]) -> set[int] | None:
    """Every photo id the damaged database held; None when no index of them reads whole."""
    for query in queries:
        try:
            return {int(row[0]) for row in source.execute(query)}
        except sqlite3.DatabaseError:
            continue
    return None


def _keep_ids_unused(
    source: sqlite3.Connection,
    target: sqlite3.Connection,
    known: set[int] | None,
    directory: Path,
) -> None:
    """Start the photo id sequence above every id the damaged database or the HNSW index
    may hold, so a new photo never takes the label of a lost one."""
    held = [*(known or ()), *_old_sequence(source)]
    vindex = load_index(directory)
    if vindex is not None:
        held += [*vindex.labels, *vindex.deleted]
    floor = max(held, default=0)
    updated = target.execute(
        "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'photos'", [floor]
    ).rowcount
    if not updated:
        target.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('photos', ?)", [floor])


def _old_sequence(source: sqlite3.Connection) -> list[int]:
    try:
        rows = source.execute("SELECT seq FROM sqlite_sequence WHERE name = 'photos'").fetchall()
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        return []
    return [int(row[0]) for row in rows if isinstance(row[0], int)]


def recover_settings(fresh: PhotoStore, directory: Path) -> SettingsSalvage:
    """The settings the damaged `meta` did not give the fresh database, made again where
    what was saved tells them: the folders from the photos' paths; the model from the
    models at hand (the built-ins, the bundles in `models/`) whose search space is the one
    the library's HNSW index records; the image model from that model, else from the one
    image model at hand that gives embeddings of the saved ones' length. What nothing
    tells (the excludes; a model the index does not name) stays lost, and is said."""
    lost = tuple(
        name
        for name, rows in SETTING_ROWS.items()
        if any(fresh.get_meta(row) is None for row in rows)
    )
    meta, recovered = fresh.meta, {}
    paths = [row[0] for row in fresh.conn.execute("SELECT path FROM photos")]
    if "roots" in lost and paths:
        meta.roots = [Path(folder) for folder in photo_folders(paths)]
        recovered["roots"] = "the folders of the saved photos"
    at_hand = _models_at_hand(directory)
    pointer = read_pointer(directory) or {}
    recorded = pointer.get("fingerprint")
    indexed = [(name, spec) for name, spec in at_hand if spec.fingerprint == recorded]
    if "model" in lost and indexed:
        meta.model = indexed[0][0]
        recovered["model"] = "the model of the library's search index"
    if "image_model" in lost:
        dim = _embedding_dim(fresh)
        fitting = indexed or [(n, spec) for n, spec in at_hand if _image_dim(spec) == dim]
        spaces = {spec.image_fingerprint: spec for _, spec in fitting}
        if len(spaces) == 1:
            spec = next(iter(spaces.values()))
            meta.set_image_space(spec.image_model, spec.image_fingerprint)
            recovered["image_model"] = (
                "the image model of the library's search index"
                if indexed
                else f"the one image model at hand giving {dim}-d embeddings"
            )
    return SettingsSalvage(lost, recovered)


def photo_folders(paths: Iterable[str]) -> list[str]:
    """The folders holding `paths`, but those below another of them: where `index` was
    pointed, as far as the photos tell."""
    kept: list[str] = []
    # A folder sorts before every folder below it (its path is their prefix).
    for folder in sorted({os.path.dirname(path) for path in paths}):
        if not any(at_or_below(folder, other) for other in kept):
            kept.append(folder)
    return kept


def _models_at_hand(directory: Path) -> list[tuple[str, BundleSpec]]:
    """(the name a library records, the spec) of the built-in search models and the bundles
    installed in the library; those that cannot be read are left out."""
    found = [(name, BUILTIN_BUNDLES[name]) for name in SEARCH_BUILTINS]
    for folder in installed_bundles(directory / MODELS_DIR):
        try:
            found.append((str(folder), read_bundle(folder)))
        except HanclipError:
            continue
    return found


def _image_dim(spec: BundleSpec) -> int | None:
    """The length of the bundle's image embeddings, where it says it without loading an
    encoder: its `dims`, else its heads' input."""
    dims = spec.extra.get("dims")
    if isinstance(dims, dict) and isinstance(dims.get("image"), int):
        return int(dims["image"])
    if spec.heads_path is None:
        return None
    try:
        return load_heads(spec.heads_path).image.in_dim
    except HanclipError:
        return None


def _embedding_dim(fresh: PhotoStore) -> int | None:
    row = fresh.conn.execute("SELECT length(embedding) FROM photos LIMIT 1").fetchone()
    return None if row is None else int(row[0]) // 4
