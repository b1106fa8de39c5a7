"""Library location, model choice, the writer lock, and the HNSW index file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hanclip_library.library import (
    Library,
    LibraryBusy,
    choose_model,
    default_model,
    installed_bundle,
    library_dir,
)
from hanclip_library.store import NewPhoto
from hanclip_library.vector_index import POINTER_NAME, load_index, sync_index
from hanclip_model.heads import l2_normalize


def test_library_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HANCLIP_HOME", str(tmp_path / "env"))
    assert library_dir(tmp_path / "flag") == tmp_path / "flag"
    assert library_dir(None) == tmp_path / "env"
    monkeypatch.delenv("HANCLIP_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert library_dir(None) == tmp_path / "xdg" / "hanclip"


def test_model_choice_order(tmp_path, monkeypatch, tiny):
    lib = Library(tmp_path / "lib", create=True)
    default = choose_model(None, lib.directory, lib)  # the rule's pick (catalog.py)
    assert default.model == default_model() and default_model() in default.notice

    bundle = lib.models_dir / "mine"
    bundle.mkdir(parents=True)
    (bundle / "hanclip.json").write_text("{}")
    assert installed_bundle(lib.models_dir) == bundle
    assert choose_model(None, lib.directory, lib).model == str(bundle)

    lib.meta.model = str(tiny.plain_bundle)
    assert choose_model(None, lib.directory, lib).model == str(tiny.plain_bundle)
    monkeypatch.setenv("HANCLIP_MODEL", "mclip")
    assert choose_model(None, lib.directory, lib) == type(default)("mclip")
    assert choose_model(str(tiny.heads_bundle), lib.directory, lib).model == str(tiny.heads_bundle)


def test_a_second_writer_is_refused(tmp_path):
    lib = Library(tmp_path / "lib", create=True)
    other = Library(tmp_path / "lib", create=True)
    with (
        lib.writer_lock(),
        pytest.raises(LibraryBusy, match="another `hanclip index`"),
        other.writer_lock(),
    ):
        pass
    with other.writer_lock():  # released: now it is free
        pass


class _Projector:
    """A model stand-in: identity projection, a fixed fingerprint."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint

    def project_images(self, raw: np.ndarray) -> np.ndarray:
        return l2_normalize(raw)


def _add(lib: Library, count: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    photos = [
        NewPhoto(f"/p/{seed}-{i}.jpg", 1, 1, f"{seed}-{i}", 1, 1, None, rng.normal(size=8))
        for i in range(count)
    ]
    return lib.store.add_photos(photos)


def test_index_follows_sqlite_incrementally(tmp_path):
    lib = Library(tmp_path / "lib", create=True)
    ids = _add(lib, 50, seed=0)
    model = _Projector("fp-a")
    vindex = sync_index(lib.directory, lib.store, model)
    assert vindex.labels == set(ids)

    lib.store.remove_photos(ids[:5])
    new = _add(lib, 3, seed=1)
    vindex = sync_index(lib.directory, lib.store, model)
    assert vindex.labels == set(ids[5:]) | set(new)
    reloaded = load_index(lib.directory)
    assert reloaded.labels == vindex.labels and reloaded.deleted == set(ids[:5])
    assert len(list(lib.directory.glob("hnsw-*.bin"))) == 1  # the old file is gone

    # Every stored photo is its own nearest neighbour.
    stored_ids, raw = lib.store.embeddings()
    for photo_id, vector in zip(stored_ids, l2_normalize(raw), strict=True):
        assert reloaded.search(vector, 1)[0][0] == photo_id


def test_index_is_rebuilt_when_missing_corrupt_or_for_another_model(tmp_path):
    lib = Library(tmp_path / "lib", create=True)
    ids = set(_add(lib, 20, seed=0))
    sync_index(lib.directory, lib.store, _Projector("fp-a"))
    for data in lib.directory.glob("hnsw-*.bin"):
        data.write_bytes(b"garbage")
    assert load_index(lib.directory) is None
    assert sync_index(lib.directory, lib.store, _Projector("fp-a")).labels == ids

    rebuilt = sync_index(lib.directory, lib.store, _Projector("fp-b"))
    assert rebuilt.fingerprint == "fp-b" and load_index(lib.directory).fingerprint == "fp-b"
    (lib.directory / POINTER_NAME).unlink()
    assert sync_index(lib.directory, lib.store, _Projector("fp-b"), write=False).labels == ids
    assert not (lib.directory / POINTER_NAME).exists()  # write=False leaves the disk alone


def test_ids_are_never_reused(tmp_path):
    lib = Library(tmp_path / "lib", create=True)
    first = _add(lib, 3, seed=0)
    lib.store.remove_photos([first[-1]])
    assert _add(lib, 1, seed=1)[0] > first[-1]


def test_prefix_queries_treat_wildcards_literally(tmp_path):
    lib = Library(tmp_path / "lib", create=True)
    rng = np.random.default_rng(0)
    for path in ["/a/100%_x/p.jpg", "/a/100ab_x/p.jpg", "/a/100%_x.jpg"]:
        lib.store.add_photos([NewPhoto(path, 1, 1, path, 1, 1, None, rng.normal(size=4))])
    found = lib.store.records_under([Path("/a/100%_x")])
    assert set(found) == {"/a/100%_x/p.jpg"}
