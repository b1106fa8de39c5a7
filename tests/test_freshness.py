"""Whether the HNSW index holds the library's photos, known from a generation in O(1).

Every way the index and SQLite can drift that the id comparison catches is caught: the
index file deleted, a stale generation, photos another writer added, a crash between the
SQLite commit and the index swap, a library.db restored from a backup. And a current index
is trusted without reading a single photo id.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hanclip_library import vector_index
from hanclip_library.library import Library
from hanclip_library.store import DB_NAME, NewPhoto, PhotoStore
from hanclip_library.vector_index import (
    POINTER_NAME,
    index_is_current,
    load_index,
    read_pointer,
    sync_index,
)
from hanclip_model import load_bundle


def _index(cli, photos: Path, library: Path, bundle: Path) -> dict:
    result = cli("index", photos, "--library", library, "--model", bundle, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()


def _paths(cli, library: Path, bundle: Path) -> set[str]:
    result = cli("search", "바다", "-n", "100", "--library", library, "--model", bundle, "--json")
    assert result.exit_code == 0, result.stderr
    return {hit["path"] for hit in result.json()}


@pytest.fixture
def indexed(cli, tiny, photos: Path, library: Path) -> Path:
    _index(cli, photos, library, tiny.plain_bundle)
    return library


def _refuse_id_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self):
        raise AssertionError("read every photo id to check the index")

    monkeypatch.setattr(PhotoStore, "ids", refuse)


def _add_row(library: Path, path: str, seed: int) -> None:
    """A photo written by another writer: straight into SQLite, no index update."""
    store = PhotoStore(library, create=False)
    try:
        vector = np.random.default_rng(seed).standard_normal(32).astype(np.float32)
        store.add_photos(
            [NewPhoto(path, 10, 1, f"{seed:064x}", 8, 8, None, vector / np.linalg.norm(vector))]
        )
    finally:
        store.close()


def test_the_index_records_the_generation_and_a_current_one_reads_no_id(
    indexed: Path, tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = Library(indexed, create=False)
    try:
        generation = lib.store.generation()
        assert generation is not None and generation.count(":") == 1
        assert read_pointer(indexed)["generation"] == generation
        model = load_bundle(tiny.plain_bundle)
        assert index_is_current(indexed, lib.store, model.fingerprint)
        assert not index_is_current(indexed, lib.store, "another-fingerprint")
        _refuse_id_reads(monkeypatch)
        vindex = sync_index(indexed, lib.store, model, write=False)
        assert len(vindex) == 8 and vindex.generation == generation
    finally:
        lib.close()


def test_every_photo_change_moves_the_generation_in_its_own_transaction(indexed: Path) -> None:
    database = indexed / DB_NAME
    store = PhotoStore(indexed, create=False)
    try:
        seen = {store.generation()}
        conn = store.conn
        conn.execute("UPDATE photos SET path = path || '.moved' WHERE id = 1")
        conn.commit()
        assert store.generation() in seen  # a move is the same photo: the index holds it
        conn.execute("UPDATE photos SET embedding = embedding WHERE id = 1")
        conn.commit()
        seen.add(store.generation())
        conn.execute("DELETE FROM photos WHERE id = 2")
        conn.commit()
        seen.add(store.generation())
        _add_row(indexed, "/elsewhere/new.jpg", seed=1)
        seen.add(store.generation())
        assert len(seen) == 4
        # A change rolled back leaves the generation as it was.
        before = store.generation()
        conn.execute("DELETE FROM photos WHERE id = 3")
        conn.rollback()
        assert store.generation() == before
    finally:
        store.close()
    assert sqlite3.connect(database).execute("SELECT counter FROM photo_generation").fetchone()


def test_a_deleted_index_file_is_rebuilt(cli, indexed: Path, tiny) -> None:
    for data in indexed.glob("hnsw-*.bin"):
        data.unlink()
    lib = Library(indexed, create=False)
    try:
        assert not index_is_current(indexed, lib.store, load_bundle(tiny.plain_bundle).fingerprint)
    finally:
        lib.close()
    assert len(_paths(cli, indexed, tiny.plain_bundle)) == 8
    assert load_index(indexed) is not None


def test_a_stale_generation_is_compared_and_only_the_pointer_rewritten(
    cli, indexed: Path, tiny
) -> None:
    pointer = json.loads((indexed / POINTER_NAME).read_text())
    pointer["generation"] = "1:0000000000000000"
    (indexed / POINTER_NAME).write_text(json.dumps(pointer))
    assert len(_paths(cli, indexed, tiny.plain_bundle)) == 8
    after = read_pointer(indexed)
    lib = Library(indexed, create=False)
    try:
        assert after["generation"] == lib.store.generation()
    finally:
        lib.close()
    assert after["file"] == pointer["file"]  # the same photos: the data file was kept


def test_photos_another_writer_added_are_found(indexed: Path, tiny, tmp_path: Path) -> None:
    _add_row(indexed, str(tmp_path / "other" / "x.jpg"), seed=5)
    lib = Library(indexed, create=False)
    try:
        # A reader (an index run holds the writer lock): updated in memory, from SQLite.
        vindex = sync_index(indexed, lib.store, load_bundle(tiny.plain_bundle), write=False)
        assert len(vindex) == 9 and vindex.generation == lib.store.generation()
        (added,) = {int(i) for i in lib.store.ids()} - {int(i) for i in load_index(indexed).labels}
        assert added in vindex.labels
    finally:
        lib.close()


def test_a_readers_index_in_memory_takes_in_the_commits_in_place(
    indexed: Path, tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server holds its index in memory: after another writer's commit it is brought in
    line in place (the new photos only), never read whole from disk again; one that cannot
    be (too many photos gone) is read from disk as before."""
    model = load_bundle(tiny.plain_bundle)
    lib = Library(indexed, create=False)
    try:
        held = sync_index(indexed, lib.store, model, write=False)
        before = set(held.labels)
        _add_row(indexed, str(tmp_path / "other" / "x.jpg"), seed=5)
        with monkeypatch.context() as patched:
            patched.setattr(vector_index, "load_index", _refuse_disk_reads)
            again = sync_index(indexed, lib.store, model, write=False, current=held)
        assert again is held and again.generation == lib.store.generation()
        (added,) = set(again.labels) - before
        assert set(again.labels) == {int(i) for i in lib.store.ids()}
        vector = lib.store.embedding(added)
        assert again.search(model.project_images(vector[None])[0], 1)[0][0] == added

        lib.store.remove_photos(sorted(before)[:5])  # most of the library gone
        from_disk = sync_index(indexed, lib.store, model, write=False, current=held)
        assert from_disk is not held
        assert set(from_disk.labels) == {int(i) for i in lib.store.ids()}
    finally:
        lib.close()


def test_a_readers_index_whose_file_is_gone_is_read_again(
    indexed: Path, tiny, tmp_path: Path
) -> None:
    """Filtered searches read an index's vectors from its file (hnswlib's own copy is slow to
    read): an index whose file went before it was mapped is not kept in memory, it is read
    again (here rebuilt, its pointer naming the same file)."""
    model = load_bundle(tiny.plain_bundle)
    lib = Library(indexed, create=False)
    try:
        held = sync_index(indexed, lib.store, model, write=False)
        held.data_file.unlink()
        _add_row(indexed, str(tmp_path / "other" / "y.jpg"), seed=6)
        again = sync_index(indexed, lib.store, model, write=False, current=held)
        assert again is not held
        assert set(again.labels) == {int(i) for i in lib.store.ids()}
    finally:
        lib.close()


def _refuse_disk_reads(directory: Path):
    raise AssertionError(f"read the index from {directory} again")


def test_a_crash_between_the_commit_and_the_index_swap_is_caught(
    cli, indexed: Path, tiny, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.new("RGB", (40, 30), (200, 10, 10)).save(photos / "새사진.png")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after SQLite committed the new photo

    monkeypatch.setattr(vector_index, "save_index", crash)
    crashed = cli("index", photos, "--library", indexed, "--model", tiny.plain_bundle)
    assert crashed.exit_code != 0
    monkeypatch.undo()
    lib = Library(indexed, create=False)
    try:  # SQLite holds the new photo, the index on disk does not
        assert lib.store.count() == 9 and len(load_index(indexed)) == 8
    finally:
        lib.close()
    assert str(photos / "새사진.png") in _paths(cli, indexed, tiny.plain_bundle)


def test_a_restored_backup_that_reaches_the_same_counter_is_not_taken_for_current(
    indexed: Path, tmp_path: Path
) -> None:
    backup = tmp_path / "backup"
    shutil.copytree(indexed, backup)
    _add_row(indexed, "/a/one.jpg", seed=1)
    _add_row(backup, "/b/other.jpg", seed=2)
    stores = [PhotoStore(indexed, create=False), PhotoStore(backup, create=False)]
    try:
        ours, theirs = (store.generation() for store in stores)
    finally:
        for store in stores:
            store.close()
    assert ours.split(":")[0] == theirs.split(":")[0]  # the same count of changes
    assert ours != theirs  # but not the same photos


def test_a_library_from_before_the_generation_is_compared_then_recorded(
    cli, indexed: Path, tiny, photos: Path
) -> None:
    # As schema 4 left it: no generation table or triggers, a pointer without generation, and
    # nothing of the later steps (the text found in photos).
    conn = sqlite3.connect(indexed / DB_NAME)
    for trigger in ("photos_added", "photos_removed", "photos_reembedded"):
        conn.execute("DROP TRIGGER " + trigger)
    conn.execute("DROP TABLE photo_generation")
    conn.execute("DROP TABLE photo_text_fts")
    conn.execute("DROP TABLE photo_text")  # its triggers go with it
    conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    pointer = json.loads((indexed / POINTER_NAME).read_text())
    del pointer["generation"]
    (indexed / POINTER_NAME).write_text(json.dumps(pointer))

    assert len(_paths(cli, indexed, tiny.plain_bundle)) == 8  # a reader: compares, as before
    report = _index(cli, photos, indexed, tiny.plain_bundle)  # the writer migrates
    assert report["unchanged"] == 8
    lib = Library(indexed, create=False)
    try:
        assert read_pointer(indexed)["generation"] == lib.store.generation() is not None
    finally:
        lib.close()


def test_a_re_index_with_nothing_new_does_not_open_the_index(
    cli, indexed: Path, tiny, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(directory):
        raise AssertionError("opened the HNSW index although nothing changed")

    monkeypatch.setattr(vector_index, "load_index", refuse)
    report = _index(cli, photos, indexed, tiny.plain_bundle)
    assert report["unchanged"] == 8 and report["added"] == 0


def test_a_library_nothing_touched_since_its_last_clean_check_is_not_read_whole_again(
    cli, indexed: Path, tiny, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """quick_check reads every page: after a clean one, a re-index of a library.db that
    nothing else has written since skips it; anything that wrote to it brings it back."""
    from hanclip_library import store as store_module

    assert (indexed / store_module.CHECKED_NAME).is_file()
    checks = []
    original = store_module.first_problem

    def counting(conn):
        checks.append(1)
        return original(conn)

    monkeypatch.setattr(store_module, "first_problem", counting)
    _index(cli, photos, indexed, tiny.plain_bundle)
    assert checks == []
    # Another program writes to the database: the next writer checks it whole.
    conn = sqlite3.connect(indexed / DB_NAME)
    conn.execute("INSERT INTO meta (key, value) VALUES ('other', '1')")
    conn.commit()
    conn.close()
    _index(cli, photos, indexed, tiny.plain_bundle)
    assert checks == [1]
    _index(cli, photos, indexed, tiny.plain_bundle)
    assert checks == [1]  # checked clean, then closed by itself: trusted again
