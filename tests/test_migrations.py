"""Schema migrations of `library.db`: a library written by schema 1 opens with today's code
and keeps every embedding; a newer library is refused untouched; each step is atomic."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
from fixtures.make_library_v1 import PHOTO_COUNT, PLACEHOLDER_ROOT

from hanclip_library import migrations
from hanclip_library.migrations import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    NewerLibrary,
    migrate,
    migration,
    stored_version,
)
from hanclip_library.store import DB_NAME, PhotoStore
from hanclip_model.errors import HanclipError
from hanclip_model.model import HanclipModel

FIXTURE_V1 = Path(__file__).parent / "fixtures" / "library-v1"


def _copy_v1_library(tmp_path: Path) -> tuple[Path, Path]:
    """(library, photos): the v1 fixture copied, its photo paths moved from the placeholder
    to the copy and the photos given the mtimes the database recorded; nothing else changes."""
    root = tmp_path / "v1"
    shutil.copytree(FIXTURE_V1, root)
    library, photos = root / "library", root / "photos"
    with closing(sqlite3.connect(library / DB_NAME)) as conn, conn:
        rows = conn.execute("SELECT id, path, mtime_ns FROM photos").fetchall()
        for photo_id, path, mtime_ns in rows:
            assert path.startswith(PLACEHOLDER_ROOT + "/")
            moved = str(photos) + path.removeprefix(PLACEHOLDER_ROOT)
            conn.execute("UPDATE photos SET path = ? WHERE id = ?", [moved, photo_id])
            os.utime(moved, ns=(mtime_ns, mtime_ns))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'roots'", [json.dumps([str(photos)])])
    return library, photos


def _query(database: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(database)) as conn:
        return conn.execute(sql).fetchall()


def _version(database: Path) -> int:
    with closing(sqlite3.connect(database)) as conn:
        return stored_version(conn, database)


def _set_version(database: Path, version: object) -> None:
    with closing(sqlite3.connect(database)) as conn, conn:
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", [json.dumps(version)]
        )


def _schema(database: Path) -> dict[str, object]:
    """Tables with their columns, indexes with their table, uniqueness and columns."""
    with closing(sqlite3.connect(database)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        indexes = conn.execute(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'"
        ).fetchall()
        return {
            "tables": {
                t: conn.execute("SELECT * FROM pragma_table_info(?)", [t]).fetchall()
                for t in sorted(tables)
            },
            "indexes": {
                name: (
                    table,
                    conn.execute(
                        'SELECT "unique", origin, partial FROM pragma_index_list(?) WHERE name = ?',
                        [table, name],
                    ).fetchall(),
                    conn.execute("SELECT name FROM pragma_index_info(?)", [name]).fetchall(),
                )
                for name, table in sorted(indexes)
            },
        }


def _files(directory: Path) -> dict[str, bytes]:
    """Every file in `directory`, SQLite's -wal and -shm included, with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def _fresh_database(tmp_path: Path) -> Path:
    """The database of a library made by today's code."""
    directory = tmp_path / "fresh"
    directory.mkdir()
    PhotoStore(directory, create=True).close()
    return directory / DB_NAME


@pytest.fixture
def no_encoders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to load or run an encoder fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an encoder was loaded")

    for name in ("check_encoders", "raw_image_embeddings", "raw_text_embeddings"):
        monkeypatch.setattr(HanclipModel, name, refuse)


# -- registration ------------------------------------------------------------------------------


def test_steps_are_numbered_from_one_in_order_and_the_last_is_the_schema_version():
    assert [step.number for step in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert SCHEMA_VERSION == MIGRATIONS[-1].number == 7
    assert [step.name for step in MIGRATIONS] == [
        "create_photo_tables",
        "index_taken_at",
        "record_offline_folders",
        "index_photo_dates",
        "count_photo_changes",
        "index_photo_files",
        "record_photo_text",
    ]


def test_a_step_must_take_the_next_number(monkeypatch):
    monkeypatch.setattr(migrations, "MIGRATIONS", list(MIGRATIONS))

    def albums(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE albums (id INTEGER PRIMARY KEY)")

    for wrong in (SCHEMA_VERSION, SCHEMA_VERSION + 2):
        with pytest.raises(ValueError, match=f"numbered {wrong}, expected {SCHEMA_VERSION + 1}"):
            migration(wrong)(albums)
    assert migration(SCHEMA_VERSION + 1)(albums) is albums
    assert migrations.MIGRATIONS[-1] == Migration(SCHEMA_VERSION + 1, albums)
    assert len(MIGRATIONS) == SCHEMA_VERSION  # the real list is untouched


# -- applying steps ----------------------------------------------------------------------------


def _add_step(monkeypatch: pytest.MonkeyPatch, step: migrations.Step) -> None:
    monkeypatch.setattr(
        migrations, "MIGRATIONS", [*MIGRATIONS, Migration(SCHEMA_VERSION + 1, step)]
    )
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", SCHEMA_VERSION + 1)


def test_a_new_database_gets_every_step(tmp_path):
    database = tmp_path / DB_NAME
    with closing(sqlite3.connect(database)) as conn:
        assert stored_version(conn, database) == 0
        migrate(conn, database)
        assert stored_version(conn, database) == SCHEMA_VERSION
    schema = _schema(database)
    tables = {"photos", "failures", "meta", "sqlite_sequence", "offline_folders"}
    assert tables <= set(schema["tables"])
    indexes = {"idx_photos_path", "idx_photos_sha256", "idx_photos_taken_at", "idx_photos_date"}
    assert indexes <= set(schema["indexes"])


def test_migrating_twice_changes_nothing(tmp_path):
    database = tmp_path / DB_NAME
    with closing(sqlite3.connect(database)) as conn:
        migrate(conn, database)
        before, changes = database.read_bytes(), conn.total_changes
        migrate(conn, database)
        assert conn.total_changes == changes and not conn.in_transaction
    assert database.read_bytes() == before


def test_a_failing_step_rolls_back_and_keeps_the_version(tmp_path, monkeypatch):
    library, _ = _copy_v1_library(tmp_path)
    database = library / DB_NAME

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE albums (id INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO meta (key, value) VALUES ('half', '1')")
        raise sqlite3.OperationalError("disk I/O error")

    _add_step(monkeypatch, broken)
    with closing(sqlite3.connect(database)) as conn:
        with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
            migrate(conn, database)
        assert not conn.in_transaction
    # The steps before it stay applied, each committed on its own.
    assert _version(database) == SCHEMA_VERSION
    assert not _query(database, "SELECT name FROM sqlite_master WHERE name = 'albums'")
    assert not _query(database, "SELECT key FROM meta WHERE key = 'half'")


def test_a_step_that_ends_its_own_transaction_is_caught(tmp_path, monkeypatch):
    def commits(conn: sqlite3.Connection) -> None:
        conn.executescript("CREATE TABLE albums (id INTEGER PRIMARY KEY);")

    _add_step(monkeypatch, commits)
    database = tmp_path / DB_NAME
    with (
        closing(sqlite3.connect(database)) as conn,
        pytest.raises(RuntimeError, match="ended its transaction"),
    ):
        migrate(conn, database)
    assert _version(database) == SCHEMA_VERSION


def test_two_writers_upgrading_at_once_apply_a_step_once(tmp_path, monkeypatch):
    database = tmp_path / DB_NAME
    with closing(sqlite3.connect(database)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        migrate(conn, database)
    inside, second_waits = threading.Event(), threading.Event()
    applied: list[str] = []

    def albums(conn: sqlite3.Connection) -> None:
        applied.append(threading.current_thread().name)
        inside.set()
        assert second_waits.wait(10)
        time.sleep(0.2)  # the second writer is now blocked on our write lock
        conn.execute("CREATE TABLE albums (id INTEGER PRIMARY KEY)")  # fails if run twice

    _add_step(monkeypatch, albums)
    errors: list[BaseException] = []

    def upgrade(trace: bool) -> None:
        try:
            with closing(sqlite3.connect(database, timeout=30)) as conn:
                if trace:  # set when the second one, having read the old version, asks to write
                    conn.set_trace_callback(
                        lambda sql: second_waits.set() if sql.startswith("BEGIN") else None
                    )
                migrate(conn, database)
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=upgrade, args=(False,), name="first")
    second = threading.Thread(target=upgrade, args=(True,), name="second")
    first.start()
    assert inside.wait(10)
    second.start()
    first.join(30)
    second.join(30)
    assert not errors
    assert applied == ["first"]
    assert _version(database) == SCHEMA_VERSION + 1


def test_an_unreadable_schema_version_is_an_error(tmp_path):
    database = _fresh_database(tmp_path)
    for bad in ("two", 0, True, None):
        _set_version(database, bad)
        with pytest.raises(HanclipError, match="schema_version .* is not one hanclip writes"):
            PhotoStore(database.parent, create=False)


def test_a_reader_of_an_empty_database_finds_no_library(tmp_path, cli):
    library = tmp_path / "library"
    library.mkdir()
    (library / DB_NAME).touch()
    result = cli("info", "--library", library)
    assert result.exit_code == 2 and "no library at" in result.stderr
    assert (library / DB_NAME).read_bytes() == b""


# -- a library written by schema 1 -------------------------------------------------------------


def test_a_v1_library_opens_and_reindexes_without_re_embedding(tmp_path, cli, no_encoders):
    library, photos = _copy_v1_library(tmp_path)
    database = library / DB_NAME
    blobs = _query(database, "SELECT id, embedding FROM photos ORDER BY id")
    assert len(blobs) == PHOTO_COUNT and _version(database) == 1

    # A reader reads the old schema as it is: nothing on disk changes.
    before = _files(library)
    info = cli("info", "--json", "--library", library)
    assert info.exit_code == 0, info.stderr
    assert info.json()["photos"] == PHOTO_COUNT
    assert _files(library) == before

    # The writer migrates; no photo is embedded again (no encoder may even load).
    index = cli("index", photos, "--library", library, "--model", "mclip", "--json")
    assert index.exit_code == 0, index.stderr
    report = index.json()
    assert report["unchanged"] == PHOTO_COUNT
    assert report["added"] == report["updated"] == report["removed"] == 0
    assert report["moved"] == report["failed"] == 0
    assert _version(database) == SCHEMA_VERSION
    assert _query(database, "SELECT id, embedding FROM photos ORDER BY id") == blobs
    assert _schema(database) == _schema(_fresh_database(tmp_path))

    query = photos / "고양이.png"
    search = cli("search", "--image", query, "--library", library, "--model", "mclip", "--json")
    assert search.exit_code == 0, search.stderr
    hits = search.json()
    # The query photo itself is never among its results (issue 23): all the others are.
    assert str(query) not in [hit["path"] for hit in hits] and len(hits) == PHOTO_COUNT - 1


# -- a library written by a newer hanclip ------------------------------------------------------


@pytest.mark.parametrize("command", ["info", "index", "search", "search --image", "fast search"])
def test_a_newer_library_is_refused_and_left_untouched(
    tmp_path, cli, no_encoders, fast_search, command
):
    library, photos = _copy_v1_library(tmp_path)
    _set_version(library / DB_NAME, SCHEMA_VERSION + 1)
    common = ["--library", str(library), "--model", "mclip"]
    before = _files(library)
    assert set(before) == {DB_NAME}  # no -wal or -shm: the last connection closed cleanly
    if command == "fast search":
        code, stderr = fast_search(["바다", *common])
    else:
        args = {
            "info": ["info", "--library", library],
            "index": ["index", photos, *common],
            "search": ["search", "바다", *common],
            "search --image": ["search", "--image", photos / "dog.jpeg", *common],
        }[command]
        result = cli(*args)
        code, stderr = result.exit_code, result.stderr
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("error: library ")
    assert str(library / DB_NAME) in lines[0]
    assert f"schema version {SCHEMA_VERSION + 1}" in lines[0]
    assert f"up to {SCHEMA_VERSION}" in lines[0] and "upgrade hanclip" in lines[0]
    assert _files(library) == before


def test_a_newer_library_is_checked_before_the_writer_switches_it_to_wal(tmp_path):
    database = tmp_path / DB_NAME
    with closing(sqlite3.connect(database)) as conn:
        migrate(conn, database)  # rollback journal: the writer would switch it to WAL
    _set_version(database, SCHEMA_VERSION + 1)
    before = _files(tmp_path)
    with pytest.raises(NewerLibrary, match=f"{SCHEMA_VERSION + 1}"):
        PhotoStore(tmp_path, create=True)
    assert _files(tmp_path) == before
    assert _query(database, "PRAGMA journal_mode") == [("delete",)]
