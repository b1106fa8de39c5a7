"""Issue 23, the library's part of the first hour: `duplicates` that do not chain and date
photos as `search` does, a library on a read-only disk that can be read, `repair` of the
settings page, and installed bundles as `--model` names."""

from __future__ import annotations

import gc
import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from hanclip_library.duplicates import RawVectors, candidate_pairs, group_duplicates
from hanclip_library.store import DB_NAME, PhotoStore
from hanclip_library.vector_index import build_index

# -- duplicates: every two photos of a group are copies (no chains) ---------------------------


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _groups(vectors: np.ndarray, threshold: float):
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    raw = RawVectors(ids, vectors)
    vindex = build_index(ids, vectors, "test", vectors.shape[1])
    return group_duplicates(candidate_pairs(vindex, raw, threshold), threshold)


def _lowest_pair(vectors: np.ndarray, ids: tuple[int, ...]) -> float:
    members = vectors[[i - 1 for i in ids]]
    scores = members @ members.T
    return float(scores[np.triu_indices(len(ids), k=1)].min())


def test_a_chain_of_copies_of_copies_is_not_one_group():
    # A~B and B~C are copies at 0.99; A and C are not (their cosine is about 0.98).
    angle = np.arccos(0.9925)
    a, b, c = (np.array([np.cos(k * angle), np.sin(k * angle), 0.0]) for k in (0, 1, 2))
    other = np.array([0.0, 0.0, 1.0])
    vectors = _unit(np.stack([a, b, c, other]))
    assert vectors[0] @ vectors[2] < 0.99 <= min(vectors[0] @ vectors[1], vectors[1] @ vectors[2])
    groups = _groups(vectors, 0.99)
    assert len(groups) == 1 and len(groups[0].ids) == 2 and 2 in groups[0].ids
    assert groups[0].similarity >= 0.99


def test_a_long_chain_never_makes_a_group_below_the_threshold():
    # 60 photos, each a copy of the next: single pairs would join all of them at 0.55.
    steps = np.linspace(0, 1.0, 60)
    vectors = _unit(np.stack([np.cos(steps), np.sin(steps), np.zeros(60)], axis=1))
    for threshold in (0.99, 0.9):
        groups = _groups(vectors, threshold)
        assert groups and all(len(g.ids) < 60 for g in groups)
        for group in groups:
            assert group.similarity >= threshold
            assert group.similarity == pytest.approx(_lowest_pair(vectors, group.ids), abs=1e-6)


def test_a_burst_of_forty_shots_stays_one_group():
    rng = np.random.default_rng(0)
    burst = _unit(np.array([1.0, 0, 0, 0, 0, 0]) + rng.normal(0, 0.01, (40, 6)))
    others = _unit(rng.normal(0, 1, (30, 6)))
    vectors = np.vstack([burst, others])
    groups = _groups(vectors, 0.99)
    assert groups[0].ids == tuple(range(1, 41))
    assert groups[0].similarity == pytest.approx(_lowest_pair(vectors, groups[0].ids), abs=1e-6)
    assert groups[0].similarity >= 0.99
    assert all(set(g.ids).isdisjoint(range(1, 41)) for g in groups[1:])


def test_random_libraries_give_groups_whose_every_pair_reaches_the_threshold():
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (8, 5))
    vectors = _unit(centres[rng.integers(0, 8, 120)] + rng.normal(0, 0.12, (120, 5)))
    for threshold in (0.97, 0.9, 0.8):
        groups = _groups(vectors, threshold)
        seen: set[int] = set()
        for group in groups:
            assert seen.isdisjoint(group.ids)
            seen |= set(group.ids)
            assert _lowest_pair(vectors, group.ids) >= threshold - 1e-6
            assert group.similarity >= threshold


# -- duplicates and search date a photo by one rule -------------------------------------------


def _copies(folder: Path) -> set[str]:
    """Three copies of one photo (no EXIF date: dated by their files) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (96, 64))
    ImageDraw.Draw(image).ellipse((10, 10, 60, 50), fill=(250, 200, 40))
    paths = [folder / name for name in ("원본.png", "복사.png", "또복사.png")]
    for path in paths:
        image.save(path)
    return {str(p) for p in paths}


def test_duplicates_dates_photos_as_search_does(cli, tiny, photos, library):
    copies = _copies(photos / "복사본")
    common = ["--library", library, "--model", tiny.heads_bundle]
    assert cli("index", photos, *common).exit_code == 0
    groups = cli("duplicates", *common, "--threshold", "0.9999", "--json").json()
    shown = {p["path"]: p for g in groups for p in g["photos"]}
    assert copies <= set(shown)
    hits = cli("search", "바다", *common, "-n", "50", "--json").json()
    searched = {hit["path"]: hit for hit in hits}
    for path in copies:
        assert shown[path]["taken_at"] is not None
        assert shown[path]["taken_at"] == searched[path]["taken_at"]
        assert shown[path]["date_source"] == searched[path]["date_source"] == "mtime"


# -- an installed bundle's name is a model name -----------------------------------------------


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_an_installed_name_is_a_model_everywhere_model_is_taken(
    cli, tiny, photos, library, monkeypatch
):
    installed = cli("models", "install", tiny.heads_bundle, "--name", "mine", "--library", library)
    assert installed.exit_code == 0, installed.stderr
    mine = library / "models" / "mine"
    common = ["--library", library, "--model", "mine"]
    assert cli("index", photos, *common).exit_code == 0
    assert cli("info", "--library", library, "--json").json()["model"] == str(mine)
    hits = cli("search", "바다", *common, "--json").json()
    assert hits
    assert cli("duplicates", *common, "--json").exit_code == 0
    monkeypatch.setenv("HANCLIP_MODEL", "mine")
    assert cli("search", "바다", "--library", library, "--json").json() == hits
    entries = cli("models", "--library", library, "--json").json()
    assert [e["name"] for e in entries if e["in_use"]] == ["mine"]


def test_the_unknown_model_error_lists_the_installed_names(cli, tiny, photos, library):
    assert cli("models", "install", tiny.heads_bundle, "--name", "mine", "--library", library)
    assert cli("index", photos, "--library", library, "--model", "mine").exit_code == 0
    for command in (["search", "바다"], ["duplicates"], ["index", photos]):
        line = _one_line_error(cli(*command, "--library", library, "--model", "nope"))
        assert "unknown model 'nope'" in line and "mine" in line and "mclip" in line


def test_hanclip_base_is_a_train_base_not_a_search_model(cli, photos, library):
    from hanclip_model.bundle import resolve_bundle

    names = [e["name"] for e in cli("models", "--library", library, "--json").json()]
    assert "hanclip-base" not in names and "mclip" in names
    line = _one_line_error(cli("index", photos, "--library", library, "--model", "hanclip-base"))
    assert "hanclip train --base-model" in line and "not a search model" in line
    assert not library.exists()
    line = _one_line_error(cli("index", photos, "--library", library, "--model", "nope"))
    assert "unknown model 'nope'" in line and "hanclip-base" not in line
    # What `train --base-model hanclip-base` reads stays.
    assert resolve_bundle("hanclip-base").name == "hanclip-base"


# -- repair with the settings page damaged ----------------------------------------------------


def _damage_meta(library: Path) -> None:
    """Turn the page holding the library's settings (`meta`) to garbage."""
    database = library / DB_NAME
    with closing(sqlite3.connect(database)) as conn:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'meta'").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    garbage = np.random.default_rng(0).integers(0, 256, page_size, dtype=np.uint8)
    with open(database, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(garbage.tobytes())


def test_repair_counts_the_lost_settings_and_recovers_the_model_and_folders(
    cli, tiny, photos, library
):
    assert cli("models", "install", tiny.heads_bundle, "--name", "mine", "--library", library)
    common = ["--library", library, "--model", "mine"]
    assert cli("index", photos, *common, "--exclude", "*.png").exit_code == 0
    before = cli("info", "--library", library, "--json").json()
    _damage_meta(library)

    report = cli("repair", "--library", library, "--json").json()
    assert report["repaired"] and report["photos_lost"] == 0
    assert report["photos_saved"] == before["photos"] > 0
    assert set(report["settings_lost"]) == {"model", "image_model", "roots", "excludes"}
    assert set(report["settings_recovered"]) == {"model", "image_model", "roots"}
    after = cli("info", "--library", library, "--json").json()
    for key in ("model", "image_model", "roots", "photos"):
        assert after[key] == before[key], key
    assert after["excludes"] == []  # nothing tells them: said lost
    assert cli("search", "바다", "--library", library, "--json").json()


def test_repair_says_what_is_lost_and_a_library_without_a_model_picks_none(
    cli, tiny, photos, library
):
    common = ["--library", library, "--model", tiny.plain_bundle]
    assert cli("index", photos, *common).exit_code == 0
    _damage_meta(library)

    said = cli("repair", "--library", library)
    assert said.exit_code == 0, said.stderr
    assert "settings lost: model, image_model, roots, excludes" in said.stdout
    assert "--model" in said.stdout and "models install" in said.stdout
    info = cli("info", "--library", library, "--json").json()
    assert info["model"] is None and info["roots"] == [str(photos)]

    for command in (["search", "바다"], ["duplicates"], ["index", photos]):
        line = _one_line_error(cli(*command, "--library", library))
        assert "records no model" in line and "--model" in line, command
        assert "models install" in line and "mclip" not in line
    assert cli("search", "바다", *common, "--json").json()
    # `bench` compares the baselines alone: there is no bundle of the user's to add.
    from hanclip_cli.commands.bench import BASELINES, default_models

    assert default_models(library) == list(BASELINES)


# -- a library on a read-only disk is read ----------------------------------------------------


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below `folder`: (size, mtime)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def read_only_disk(monkeypatch):
    """`read_only(folder)`: from then on the kernel says the disk holding `folder` is
    mounted read-only (statvfs's ST_RDONLY), which is what `read_only_folder` asks. Tests run
    as root here, where a chmod stops no write: the write refused is SQLite's own."""
    real = os.statvfs
    folders: list[Path] = []

    def statvfs(path):
        found = real(path)
        if any(Path(path) == f or f in Path(path).parents for f in folders):
            fields = list(found)
            fields[8] |= os.ST_RDONLY  # f_flag
            return os.statvfs_result(fields)
        return found

    monkeypatch.setattr(os, "statvfs", statvfs)
    return folders.append


def test_a_read_only_library_is_opened_so_that_sqlite_writes_nothing(
    cli, tiny, photos, library, read_only_disk
):
    from hanclip_library.store import read_only_folder

    assert cli("index", photos, "--library", library, "--model", tiny.plain_bundle).exit_code == 0
    read_only_disk(library)
    assert read_only_folder(library)
    store = PhotoStore(library, create=False)
    try:
        assert store.read_only and store.count() == 8
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.conn.execute("INSERT INTO meta (key, value) VALUES ('x', '1')")
    finally:
        store.close()


def test_search_info_duplicates_and_serve_read_a_read_only_library(
    cli, tiny, photos, library, read_only_disk, monkeypatch
):
    from hanclip_cli.serve.discovery import start_resident_server, write_server_file
    from hanclip_cli.serve.service import LibraryService
    from hanclip_library.thumbnails import ThumbnailCache

    common = ["--library", library, "--model", tiny.heads_bundle]
    assert cli("index", photos, *common).exit_code == 0
    hits = cli("search", "바다", *common, "--json").json()
    (library / "serve.json").unlink(missing_ok=True)
    before = _files(library)
    read_only_disk(library)

    assert cli("search", "바다", *common, "--json").json() == hits
    info = cli("info", "--library", library, "--json")
    assert info.exit_code == 0 and info.json()["photos"] == 8
    assert cli("duplicates", *common, "--json").exit_code == 0
    service = LibraryService(library, str(tiny.heads_bundle))
    try:
        thumbnails = ThumbnailCache.for_library(service.directory)
        record = service.run(service.opened.store.record_for_path, hits[0]["path"])
        assert thumbnails.get(record).data[:2] == b"\xff\xd8"  # a JPEG, made on the fly
        assert not write_server_file(service.directory, "http://127.0.0.1:1/", "x")
    finally:
        service.close()
    monkeypatch.setenv("HANCLIP_RESIDENT_MIN_PHOTOS", "1")
    assert not start_resident_server(library, str(tiny.heads_bundle), 8)
    assert _files(library) == before  # no log, no lock, no thumbnail, no server file


@pytest.fixture
def tmpfs(tmp_path: Path):
    """A small tmpfs that `remount(mode)` makes read-only ("ro") or writable ("rw");
    skipped where file systems cannot be mounted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mount = ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)]
    if subprocess.run(mount, capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield disk
    finally:
        gc.collect()
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=False)
        subprocess.run(["umount", str(disk)], check=True)


def test_a_library_on_a_disk_mounted_read_only_is_read(cli, tiny, photos, tmpfs):
    library = tmpfs / "library"
    common = ["--library", library, "--model", tiny.heads_bundle]
    assert cli("index", photos, *common).exit_code == 0
    hits = cli("search", "바다", *common, "--json").json()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        assert cli("search", "바다", *common, "--json").json() == hits
        info = cli("info", "--library", library, "--json")
        assert info.exit_code == 0, info.stderr
        assert info.json()["database"]["status"] == "ok"
        assert cli("duplicates", *common, "--json").exit_code == 0
    finally:
        gc.collect()
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
