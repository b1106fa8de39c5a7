"""A damaged library.db: reported in one line, kept byte for byte, and repaired.

Damage as it happens to files: a header overwritten (no longer a database), a page of photo
rows turned to garbage, a copy cut short. Every command that meets it stops with one line
and leaves the file as it was; `info` reports it; `repair` sets it aside and saves what SQLite
can still read into a fresh database, and the next `index` embeds exactly the photos it lost.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
import struct
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hanclip_eval.tiny_models import write_photo_folder
from hanclip_library.library import writer_lock
from hanclip_library.photo_text import PhotoText, Reading
from hanclip_library.repair import (
    NOT_COPIED,
    aside_moves,
    derived_tables,
    next_readable,
    photo_id_queries,
    salvage_into,
    usable_embedding,
)
from hanclip_library.store import (
    DB_NAME,
    LibraryDamaged,
    NewPhoto,
    OfflineFolder,
    PhotoStore,
    damage_error,
    is_damage,
)
from hanclip_library.text_engines import EngineId, Word
from hanclip_library.vector_index import load_index
from hanclip_model.errors import StorageError

# Enough photos for the photos table to span several pages (a root and three leaves or more).
PHOTOS = 40
DAMAGES = ["header", "page", "truncated"]


@dataclass(frozen=True)
class Pristine:
    """A library indexed once per module, and where its photo rows lie in the file."""

    photos: Path
    library: Path
    page_size: int
    leaves: list[int]  # the photos table's leaf pages, in rowid order
    cells: dict[int, int]  # rows on each leaf


def _photo_leaves(database: Path) -> tuple[int, list[int], dict[int, int]]:
    """(page size, leaf pages, rows per leaf) of the photos table, read from its root: an
    interior table page holds a child page number in each cell and the rightmost in its
    header."""
    with closing(sqlite3.connect(database)) as conn:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'photos'"
        ).fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    data = database.read_bytes()

    def page(number: int) -> bytes:
        return data[(number - 1) * page_size : number * page_size]

    top = page(root)
    assert top[0] == 0x05, "the photos table fits one page: index more photos"
    (count,) = struct.unpack(">H", top[3:5])
    pointers = struct.unpack(f">{count}H", top[12 : 12 + 2 * count])
    leaves = [struct.unpack(">I", top[p : p + 4])[0] for p in pointers]
    leaves.append(struct.unpack(">I", top[8:12])[0])
    cells = {leaf: struct.unpack(">H", page(leaf)[3:5])[0] for leaf in leaves}
    assert all(page(leaf)[0] == 0x0D for leaf in leaves)
    return page_size, leaves, cells


@pytest.fixture(scope="module")
def pristine(tiny, tmp_path_factory: pytest.TempPathFactory, _cache_dir: Path) -> Pristine:
    from hanclip_cli.cli import app

    root = tmp_path_factory.mktemp("damaged")
    photos, library = root / "사진", root / "library"
    write_photo_folder(photos, count=PHOTOS)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HANCLIP_CACHE", str(_cache_dir))
        env.setenv("HANCLIP_DEVICE", "cpu")
        env.delenv("HANCLIP_MODEL", raising=False)
        args = ["index", str(photos), "--library", str(library), "--model", str(tiny.plain_bundle)]
        result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    page_size, leaves, cells = _photo_leaves(library / DB_NAME)
    assert len(leaves) >= 3
    return Pristine(photos, library, page_size, leaves, cells)


@pytest.fixture
def indexed(pristine: Pristine, tmp_path: Path) -> Path:
    """A copy of the pristine library (its photo paths still point at the module's photos)."""
    library = tmp_path / "library"
    shutil.copytree(pristine.library, library)
    return library


def _damage(pristine: Pristine, library: Path, damage: str) -> bytes:
    """Damage the library's database; returns its bytes as damaged."""
    database = library / DB_NAME
    if damage == "header":
        with open(database, "r+b") as f:
            f.write(b"\xa5" * 100)
    elif damage == "page":
        middle = pristine.leaves[len(pristine.leaves) // 2]
        garbage = np.random.default_rng(0).integers(0, 256, pristine.page_size, dtype=np.uint8)
        with open(database, "r+b") as f:
            f.seek((middle - 1) * pristine.page_size)
            f.write(garbage.tobytes())
    else:
        # A copy that stopped before the last page of photo rows.
        database.write_bytes(
            database.read_bytes()[: (pristine.leaves[-1] - 1) * pristine.page_size]
        )
    return database.read_bytes()


def _one_line(code: int, stderr: str) -> str:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def _paths(database: Path) -> set[str]:
    with closing(sqlite3.connect(database)) as conn:
        return {row[0] for row in conn.execute("SELECT path FROM photos")}


def _ids(database: Path) -> set[int]:
    with closing(sqlite3.connect(database)) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM photos")}


# -- meeting the damage ------------------------------------------------------------------------


@pytest.mark.parametrize("damage", DAMAGES)
def test_commands_that_meet_damage_stop_with_one_line_and_change_nothing(
    pristine, indexed, tiny, cli, fast_search, damage
):
    damaged = _damage(pristine, indexed, damage)
    common = ["--library", str(indexed), "--model", str(tiny.plain_bundle)]
    runs = {
        # -n above the photo count: the search reads every row it finds.
        "search": lambda: cli("search", "바다", "-n", "100", *common),
        "index": lambda: cli("index", pristine.photos, *common, "--json"),
    }
    for name, run in runs.items():
        result = run()
        line = _one_line(result.exit_code, result.stderr)
        assert result.stdout == "", name
        assert line.startswith(f"error: library database {indexed / DB_NAME} is damaged ("), name
        assert f"run `hanclip repair --library {indexed}`" in line, name
        assert (indexed / DB_NAME).read_bytes() == damaged, name
    code, stderr = fast_search(["바다", "-n", "100", *common])
    assert "is damaged" in _one_line(code, stderr)
    assert (indexed / DB_NAME).read_bytes() == damaged


@pytest.mark.parametrize("damage", DAMAGES)
def test_info_reports_the_damage_and_exits_0(pristine, indexed, cli, damage):
    damaged = _damage(pristine, indexed, damage)
    result = cli("info", "--json", "--library", indexed)
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    assert summary["database"]["status"] == "damaged"
    assert summary["database"]["detail"]
    if damage == "page":
        # The page is in the photos table: the count comes from an index and still reads.
        assert summary["photos"] == PHOTOS
    else:
        assert set(summary) == {"library", "database"}
    text = cli("info", "--library", indexed)
    assert text.exit_code == 0, text.stderr
    line = next(line for line in text.stdout.splitlines() if line.startswith("database"))
    assert line.split()[1] == "damaged:"
    assert f"hanclip repair --library {indexed}" in line
    assert (indexed / DB_NAME).read_bytes() == damaged


def test_info_says_ok_for_a_healthy_database(indexed, cli):
    summary = cli("info", "--json", "--library", indexed).json()
    assert summary["database"] == {"status": "ok", "detail": None}
    assert summary["photos"] == PHOTOS


# -- repairing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", DAMAGES)
def test_repair_saves_what_can_be_read_and_index_embeds_the_rest(
    pristine, indexed, tiny, cli, damage
):
    old_ids = _ids(pristine.library / DB_NAME)
    damaged = _damage(pristine, indexed, damage)
    result = cli("repair", "--library", indexed, "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["repaired"] is True and report["problem"]

    kept = Path(report["damaged_file"])
    assert kept.parent == indexed and kept.name.startswith(f"{DB_NAME}.damaged-")
    assert kept.read_bytes() == damaged
    saved, lost = report["photos_saved"], report["photos_lost"]
    if damage == "header":
        assert saved == 0 and lost is None  # nothing can be read, not even how many there were
    elif damage == "page":
        assert lost == pristine.cells[pristine.leaves[len(pristine.leaves) // 2]]
        assert saved == PHOTOS - lost
    else:
        assert lost >= pristine.cells[pristine.leaves[-1]] and saved == PHOTOS - lost

    database = indexed / DB_NAME
    info = cli("info", "--json", "--library", indexed).json()
    assert info["database"]["status"] == "ok" and info["photos"] == saved
    common = ["--library", str(indexed), "--model", str(tiny.plain_bundle)]
    if saved:
        hits = cli("search", "바다", "-n", "100", "--json", *common)
        assert hits.exit_code == 0, hits.stderr
        assert {hit["path"] for hit in hits.json()} == _paths(database)
        assert len(hits.json()) == saved

    index = cli("index", pristine.photos, *common, "--json")
    assert index.exit_code == 0, index.stderr
    counts = index.json()
    assert counts["added"] == (PHOTOS if lost is None else lost)
    assert counts["unchanged"] == saved
    assert counts["updated"] == counts["moved"] == counts["removed"] == counts["failed"] == 0
    # A photo embedded again gets a new id: the HNSW index may still hold the lost ones'.
    assert not (_ids(database) - old_ids) & old_ids
    assert min(_ids(database) - old_ids) > max(old_ids)

    info = cli("info", "--json", "--library", indexed).json()
    assert info["photos"] == PHOTOS and info["index"]["status"] == "ok"
    assert kept.read_bytes() == damaged


def test_repair_of_a_healthy_library_changes_nothing(indexed, cli):
    before = {p.name: p.read_bytes() for p in sorted(indexed.iterdir()) if p.is_file()}
    result = cli("repair", "--library", indexed, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json() == {
        "library": str(indexed),
        "repaired": False,
        "problem": None,
        "damaged_file": None,
        "photos_saved": 0,
        "photos_lost": 0,
        "settings_lost": [],
        "settings_recovered": {},
    }
    text = cli("repair", "--library", indexed)
    assert text.exit_code == 0 and "healthy, nothing to repair" in text.stdout
    after = {p.name: p.read_bytes() for p in sorted(indexed.iterdir()) if p.is_file()}
    assert after == before


def test_repair_stops_while_another_writer_holds_the_library(pristine, indexed, cli):
    damaged = _damage(pristine, indexed, "page")
    with writer_lock(indexed):
        result = cli("repair", "--library", indexed)
    assert "another `hanclip index` is running" in _one_line(result.exit_code, result.stderr)
    assert sorted(p.name for p in indexed.iterdir() if DB_NAME in p.name) == [DB_NAME]
    assert (indexed / DB_NAME).read_bytes() == damaged


def test_repair_without_a_library_is_one_line(tmp_path, cli):
    result = cli("repair", "--library", tmp_path / "nowhere")
    assert "no library at" in _one_line(result.exit_code, result.stderr)


def test_repair_help_has_a_korean_example(cli):
    result = cli("repair", "--help")
    assert result.exit_code == 0
    assert any("\uac00" <= ch <= "\ud7a3" for ch in result.stdout)


def test_the_kept_hnsw_labels_are_never_reused(pristine, indexed, tiny, cli):
    """The header case loses every id the database knew; the HNSW index still has them."""
    labels = load_index(indexed)
    assert labels is not None
    held = labels.labels | labels.deleted
    _damage(pristine, indexed, "header")
    assert cli("repair", "--library", indexed).exit_code == 0
    common = ["--library", str(indexed), "--model", str(tiny.plain_bundle)]
    assert cli("index", pristine.photos, *common).exit_code == 0
    assert min(_ids(indexed / DB_NAME)) > max(held)


def test_repair_copies_every_table_and_column_the_migrations_make(tmp_path):
    library, work = tmp_path / "library", tmp_path / "work"
    library.mkdir()
    work.mkdir()
    store = PhotoStore(library, create=True)
    vector = np.ones(4, dtype=np.float32)
    store.add_photos([NewPhoto("/p/a.jpg", 10, 7, "a" * 64, 4, 3, "2023-07-14T09:30:00", vector)])
    store.record_failure("/p/bad.jpg", 5, 6, "broken JPEG")
    store.set_meta("model", "mclip")
    store.record_offline([Path("/usb")], [OfflineFolder("/usb/사진", "missing", 1)])
    engine = EngineId("fake", "1", "kor+eng")
    word = Word("스타벅스", 1, 2, 3, 4, 0.9)
    PhotoText(store.conn).record(
        [Reading("a" * 64, engine, "text", "스타벅스", (word,), "earlier")]
    )
    store.close()
    found = "SELECT rowid FROM photo_text_fts WHERE photo_text_fts MATCH '\"스타 타벅 벅스\"'"
    with closing(sqlite3.connect(library / DB_NAME)) as conn:
        names = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        # The full-text index is derived: rebuilt from the rows copied, not copied.
        derived = derived_tables(conn)
        assert {"photo_text_fts", "photo_text_fts_data"} <= derived
        copied = [name for (name,) in names if name not in NOT_COPIED and name not in derived]
        found_before = conn.execute(found).fetchall()
        indexes = conn.execute("SELECT name FROM pragma_index_list('photos')").fetchall()
        queries = photo_id_queries(conn)
        before = {name: conn.execute(f'SELECT * FROM "{name}"').fetchall() for name in copied}
    # Every column of every copied table holds a value, so one left behind would show.
    for name, rows in before.items():
        assert rows and all(value is not None for value in rows[0]), name
    salvage = salvage_into(library / DB_NAME, work)
    assert (salvage.saved, salvage.lost) == (1, 0)
    with closing(sqlite3.connect(work / DB_NAME)) as conn:
        after = {name: conn.execute(f'SELECT * FROM "{name}"').fetchall() for name in copied}
        assert conn.execute(found).fetchall() == found_before == [(1,)]
    assert after == before
    assert set(NOT_COPIED) <= {name for (name,) in names}
    assert {query.split()[-1].strip('"') for query in queries} == {name for (name,) in indexes}


# -- the pure parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "damage"),
    [
        ("database disk image is malformed", True),
        ("malformed database schema (photos)", True),
        ("file is not a database", True),
        ("file is encrypted or is not a database", True),
        ("disk I/O error", True),
        ("database is locked", False),
        ("database or disk is full", False),
        ("attempt to write a readonly database", False),
        ("no such table: photos", False),
    ],
)
def test_damage_is_told_apart_from_other_sqlite_errors(message, damage):
    assert is_damage(sqlite3.DatabaseError(message)) is damage


def test_an_io_error_is_damage_unless_the_disk_says_otherwise(tmp_path, monkeypatch):
    from hanclip_model import storage

    database = tmp_path / DB_NAME
    io_error = sqlite3.OperationalError("disk I/O error")
    error = damage_error(database, io_error)
    assert isinstance(error, LibraryDamaged) and error.problem == "disk I/O error"
    monkeypatch.setattr(storage, "disk_state", lambda where: errno.ENOSPC)
    error = damage_error(database, io_error)
    assert isinstance(error, StorageError) and "is full" in str(error)
    assert damage_error(database, sqlite3.OperationalError("database is locked")) is None


@pytest.mark.parametrize(("first", "last"), [(5, 5), (5, 6), (10, 300), (1, 100_000)])
def test_next_readable_finds_the_first_rowid_past_a_damaged_stretch(first, last):
    probes = []

    def readable(rowid: int) -> bool:
        probes.append(rowid)
        return not first <= rowid <= last

    assert next_readable(first, readable) == last + 1
    assert len(probes) <= 2 * (last - first + 2).bit_length() + 1


def test_next_readable_gives_up_when_nothing_past_the_damage_reads():
    assert next_readable(7, lambda rowid: rowid < 7) is None


def test_aside_moves_keep_the_suffixes_and_never_overwrite(tmp_path):
    from datetime import datetime, timezone

    database = tmp_path / DB_NAME
    when = datetime(2024, 7, 14, 18, 30, 5, tzinfo=timezone.utc)
    moves = aside_moves(database, when, taken={DB_NAME})
    stamp = "library.db.damaged-20240714T183005Z"
    assert moves == [
        (tmp_path / "library.db-wal", tmp_path / f"{stamp}-wal"),
        (tmp_path / "library.db-shm", tmp_path / f"{stamp}-shm"),
        (database, tmp_path / stamp),
    ]
    again = aside_moves(database, when, taken={DB_NAME, f"{stamp}-wal"})
    assert again[-1][1] == tmp_path / f"{stamp}-2"


def test_only_whole_finite_float32s_are_a_usable_embedding():
    vector = np.ones(8, dtype=np.float32)
    assert usable_embedding(vector.tobytes())
    assert not usable_embedding(vector.tobytes()[:-1])
    assert not usable_embedding(b"")
    assert not usable_embedding("text")
    assert not usable_embedding(None)
    vector[3] = np.nan
    assert not usable_embedding(vector.tobytes())
