"""Offline folders and remembered excludes, through the CLI.

A drive that is not mounted, a folder moved away or made unreadable: its photos keep their
rows, embeddings and HNSW labels, are left out of search, and come back with nothing embedded
again the moment the folder does. Only a file gone from a folder that is there is pruned.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from PIL import Image

from hanclip_eval.tiny_models import write_photo_folder
from hanclip_library.store import DB_NAME
from hanclip_library.vector_index import load_index
from hanclip_model.model import HanclipModel

DROP_DAC = [
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
]


def _index(cli, root: Path, library: Path, model: Path, *extra: object) -> dict:
    result = cli("index", root, "--library", library, "--model", model, "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return result.json()


def _search(cli, library: Path, model: Path, *args: object) -> list[dict]:
    result = cli("search", *args, "--library", library, "--model", model, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()


def _rows(library: Path) -> list[tuple]:
    """Every photo row with its embedding bytes, by id."""
    with closing(sqlite3.connect(library / DB_NAME)) as conn:
        return conn.execute(
            "SELECT id, path, size, mtime_ns, sha256, embedding FROM photos ORDER BY id"
        ).fetchall()


def _labels(library: Path) -> set[int]:
    vindex = load_index(library)
    assert vindex is not None
    return vindex.labels


def _snapshot(library: Path) -> tuple[list[tuple], set[int]]:
    return _rows(library), _labels(library)


def _ids_under(rows: list[tuple], folder: Path) -> set[int]:
    return {row[0] for row in rows if row[1].startswith(f"{folder}/")}


def _refuse_encoders(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, loading or running an encoder fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an encoder was loaded")

    for name in ("check_encoders", "raw_image_embeddings", "raw_text_embeddings"):
        monkeypatch.setattr(HanclipModel, name, refuse)


def _photo(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 24), colour).save(path)
    return path


def test_a_missing_root_keeps_its_photos_and_they_return_with_it(
    cli, tiny, photos, library, tmp_path, monkeypatch
):
    model = tiny.plain_bundle
    assert _index(cli, photos, library, model)["added"] == 8
    before = _snapshot(library)
    away = tmp_path / "away"
    photos.rename(away)

    report = _index(cli, photos, library, model)
    assert report["offline"] == 8 and report["removed"] == report["pruned"] == 0
    assert report["offline_folders"] == [{"path": str(photos), "reason": "missing", "photos": 8}]
    assert _snapshot(library) == before
    assert _search(cli, library, model, "바다") == []
    shown = _search(cli, library, model, "바다", "--include-offline")
    assert len(shown) == 8 and all(hit["offline"] for hit in shown)
    info = cli("info", "--json", "--library", library).json()
    assert [(f["path"], f["reason"], f["photos"]) for f in info["offline_folders"]] == [
        (str(photos), "missing", 8)
    ]

    # Back: searchable before any index, then re-indexed with nothing embedded again.
    away.rename(photos)
    hits = _search(cli, library, model, "바다", "-n", "20")
    assert len(hits) == 8 and not any(hit["offline"] for hit in hits)
    assert cli("info", "--json", "--library", library).json()["offline_folders"] == []
    _refuse_encoders(monkeypatch)
    report = _index(cli, photos, library, model)
    assert report["unchanged"] == 8 and report["offline"] == 0
    assert report["added"] == report["updated"] == report["removed"] == 0
    assert report["offline_folders"] == []
    assert _snapshot(library) == before
    hits = _search(cli, library, model, "--image", photos / "고양이.png", "-n", "20")
    # Its stored embedding (no encoder loads); itself never among its results (issue 23).
    assert len(hits) == 7 and str(photos / "고양이.png") not in [hit["path"] for hit in hits]


def test_an_empty_root_is_an_unplugged_drive(cli, tiny, photos, library, tmp_path):
    model = tiny.plain_bundle
    _index(cli, photos, library, model)
    before = _snapshot(library)
    away = tmp_path / "away"
    away.mkdir()
    for entry in list(photos.iterdir()):
        entry.rename(away / entry.name)

    result = cli("index", photos, "--library", library, "--model", model)
    assert result.exit_code == 0, result.stderr
    assert "0 removed" in result.stdout and "8 offline" in result.stdout
    assert (
        f"offline: {photos} is empty (a drive not mounted?): its 8 photo(s) kept, left out of "
        "search until it is back" in result.stderr
    )
    assert "hanclip forget PATH" in result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot(library) == before
    info = cli("info", "--library", library)
    assert info.exit_code == 0
    assert "is empty (a drive not mounted?): 8 photo(s) kept" in " ".join(info.stdout.split())
    empty = cli("search", "바다", "--library", library, "--model", model)
    assert empty.exit_code == 0
    assert "no photo matched; 8 photo(s) in offline folders were left out" in " ".join(
        empty.stderr.split()
    )


def test_an_empty_result_without_offline_photos_says_only_that(cli, tiny, photos, library):
    model = tiny.plain_bundle
    _index(cli, photos, library, model)
    result = cli("search", "바다", "--after", "2999", "--library", library, "--model", model)
    assert result.exit_code == 0
    assert result.stderr.strip() == "no photo matched"
    # A year past what a 64-bit file time holds (2262) bounds nothing, rather than overflowing.
    common = ["--library", library, "--model", model, "-n", "20", "--json"]
    assert len(cli("search", "바다", "--before", "2999", *common).json()) == 8


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_real_mount_point_with_nothing_mounted(cli, tiny, library, tmp_path, monkeypatch):
    drive = tmp_path / "usb"
    drive.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(drive)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        write_photo_folder(drive / "사진", count=6)
        saved = tmp_path / "saved"
        shutil.copytree(drive, saved)  # copy2: sizes and mtimes kept, as on the drive
        model = tiny.plain_bundle
        assert _index(cli, drive, library, model)["added"] == 6
        before = _snapshot(library)
        subprocess.run(["umount", str(drive)], check=True)
        assert not os.path.ismount(drive) and not any(drive.iterdir())

        report = _index(cli, drive, library, model)
        assert report["offline_folders"] == [{"path": str(drive), "reason": "empty", "photos": 6}]
        assert report["removed"] == 0
        assert _snapshot(library) == before

        subprocess.run(mount, check=True)
        shutil.copytree(saved, drive, dirs_exist_ok=True)
        assert len(_search(cli, library, model, "바다")) == 6
        _refuse_encoders(monkeypatch)
        report = _index(cli, drive, library, model)
        assert report["unchanged"] == 6 and report["offline"] == 0
        assert _snapshot(library) == before
    finally:
        if os.path.ismount(drive):
            subprocess.run(["umount", str(drive)], check=True)


def test_a_deleted_subfolder_is_offline_while_a_deleted_photo_is_pruned(
    cli, tiny, photos, library, tmp_path
):
    model = tiny.plain_bundle
    write_photo_folder(photos / "2023" / "제주", count=4, seed=1)
    assert _index(cli, photos, library, model)["added"] == 12
    rows, labels = _snapshot(library)
    (photos / "2023").rename(tmp_path / "elsewhere")
    victim = photos / "dog.jpeg"
    victim.unlink()

    report = _index(cli, photos, library, model)
    assert report["removed"] == 1 and report["offline"] == 4 and report["unchanged"] == 7
    assert report["offline_folders"] == [
        {"path": str(photos / "2023"), "reason": "missing", "photos": 4}
    ]
    kept = [row for row in rows if row[1] != str(victim)]
    assert _snapshot(library) == (kept, {row[0] for row in kept})
    hits = _search(cli, library, model, "바다", "-n", "50")
    assert len(hits) == 7
    assert not any(hit["path"].startswith(f"{photos / '2023'}/") for hit in hits)


def test_search_fills_the_limit_with_photos_that_are_online(cli, tiny, photos, library):
    model = tiny.plain_bundle
    write_photo_folder(photos / "usb", count=8, seed=2)
    _index(cli, photos, library, model)
    shutil.rmtree(photos / "usb")
    assert _index(cli, photos, library, model)["offline"] == 8
    hits = _search(cli, library, model, "고양이", "-n", "8")
    assert len(hits) == 8
    assert not any(hit["offline"] or "/usb/" in hit["path"] for hit in hits)
    every = _search(cli, library, model, "고양이", "-n", "16", "--include-offline")
    assert len(every) == 16
    assert sum(hit["offline"] for hit in every) == 8
    assert all(hit["offline"] == ("/usb/" in hit["path"]) for hit in every)


def _hanclip(*args: object, unprivileged: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "hanclip_cli", *(str(a) for a in args)]
    if unprivileged and os.geteuid() == 0:
        # Root ignores file permissions; without these capabilities it obeys them.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("as root, a folder made unreadable stays readable (no setpriv)")
        command = [setpriv, *DROP_DAC, *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_an_unreadable_subfolder_is_offline(cli, tiny, photos, library):
    model = tiny.plain_bundle
    common = ["--library", library, "--model", model, "--json"]
    _index(cli, photos, library, model)
    before = _snapshot(library)
    locked = photos / "여행"
    locked.chmod(0)
    try:
        report = json.loads(_hanclip("index", photos, *common, unprivileged=True).stdout)
        hits = json.loads(_hanclip("search", "산", "-n", "20", *common, unprivileged=True).stdout)
        shown = json.loads(
            _hanclip(
                "search", "산", "-n", "20", "--include-offline", *common, unprivileged=True
            ).stdout
        )
    finally:
        locked.chmod(0o755)
    assert report["offline_folders"] == [{"path": str(locked), "reason": "unreadable", "photos": 1}]
    assert report["removed"] == 0 and report["unchanged"] == 7
    assert _snapshot(library) == before
    assert len(hits) == 7 and not any(h["path"].startswith(f"{locked}/") for h in hits)
    assert [h["path"] for h in shown if h["offline"]] == [str(locked / "산.jpg")]
    assert len(_search(cli, library, model, "산", "-n", "20")) == 8
    report = _index(cli, photos, library, model)
    assert report["unchanged"] == 8 and report["offline_folders"] == []


def test_prune_offline_removes_exactly_the_offline_photos(cli, tiny, photos, library, tmp_path):
    model = tiny.plain_bundle
    write_photo_folder(photos / "usb", count=5, seed=3)
    _index(cli, photos, library, model)
    rows = _rows(library)
    offline = _ids_under(rows, photos / "usb")
    assert len(offline) == 5
    (photos / "usb").rename(tmp_path / "usb")
    assert _index(cli, photos, library, model)["offline"] == 5

    report = _index(cli, photos, library, model, "--prune-offline")
    assert report["pruned"] == 5 and report["offline"] == report["removed"] == 0
    assert report["offline_folders"] == [
        {"path": str(photos / "usb"), "reason": "missing", "photos": 5}
    ]
    rest = [row for row in rows if row[0] not in offline]
    assert _snapshot(library) == (rest, {row[0] for row in rest})
    assert cli("info", "--json", "--library", library).json()["offline_folders"] == []
    assert sorted(p.name for p in (tmp_path / "usb").rglob("*.*")) == sorted(
        Path(row[1]).name for row in rows if row[0] in offline
    )


def test_forget_removes_exactly_a_folders_photos_and_touches_no_file(
    cli, tiny, photos, library, tmp_path
):
    model = tiny.plain_bundle
    write_photo_folder(photos / "usb", count=5, seed=3)
    _index(cli, photos, library, model)
    rows = _rows(library)
    gone = _ids_under(rows, photos / "usb")
    (photos / "usb").rename(tmp_path / "usb")
    _index(cli, photos, library, model)

    result = cli("forget", photos / "usb", "--library", library, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["removed"] == 5 and result.json()["offline_folders_cleared"] == 1
    rest = [row for row in rows if row[0] not in gone]
    assert _snapshot(library) == (rest, {row[0] for row in rest})
    assert cli("info", "--json", "--library", library).json()["offline_folders"] == []

    # A folder that is there: only the library forgets it, its files stay as they were.
    files = {p: p.read_bytes() for p in (photos / "여행").rglob("*") if p.is_file()}
    result = cli("forget", photos / "여행", "--library", library)
    assert result.exit_code == 0, result.stderr
    assert "1 photo(s) removed" in result.stdout
    assert {p: p.read_bytes() for p in (photos / "여행").rglob("*") if p.is_file()} == files
    assert len(_rows(library)) == len(rest) - 1


def test_forget_of_a_root_drops_the_root_and_of_an_unknown_path_is_an_error(
    cli, tiny, photos, library, tmp_path
):
    _index(cli, photos, library, tiny.plain_bundle)
    unknown = cli("forget", tmp_path / "nowhere", "--library", library)
    assert unknown.exit_code == 2
    assert unknown.stderr.strip().startswith("error: the library") and "nothing" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    assert len(_rows(library)) == 8

    result = cli("forget", photos, "--library", library, "--json")
    assert result.json()["removed"] == 8 and result.json()["roots_dropped"] == [str(photos)]
    info = cli("info", "--json", "--library", library).json()
    assert info["photos"] == 0 and info["roots"] == []
    assert _labels(library) == set()
    assert len(list(photos.rglob("*.*"))) == 8


def test_excludes_from_the_flag_and_the_defaults_are_remembered(cli, tiny, photos, library):
    model = tiny.plain_bundle
    _photo(photos / "junk" / "a.jpg", (1, 2, 3))
    _photo(photos / "여행" / "b.tmp.jpg", (4, 5, 6))
    _photo(photos / "@eaDir" / "고양이.png" / "SYNOPHOTO_THUMB_XL.jpg", (7, 8, 9))
    _photo(photos / "#recycle" / "c.jpg", (10, 11, 12))
    _photo(photos / "$RECYCLE.BIN" / "d.jpg", (13, 14, 15))
    _photo(photos / ".Trash-1000" / "files" / "e.jpg", (16, 17, 18))

    report = _index(cli, photos, library, model, "--exclude", "junk", "--exclude", "*.tmp.jpg")
    assert report["scanned"] == report["added"] == 8
    # Remembered: the next run, with no flag, and hidden folders walked too, skips the same.
    report = _index(cli, photos, library, model, "--include-hidden")
    assert report["scanned"] == report["unchanged"] == 8 and report["added"] == 0
    assert cli("info", "--json", "--library", library).json()["excludes"] == ["junk", "*.tmp.jpg"]
    assert len(_search(cli, library, model, "바다", "-n", "50")) == 8

    report = _index(cli, photos, library, model, "--reset-excludes")
    assert report["added"] == 2  # junk/a.jpg, 여행/b.tmp.jpg; the defaults stay
    assert cli("info", "--json", "--library", library).json()["excludes"] == []


def test_indexed_photos_an_exclude_now_matches_are_removed_and_counted(cli, tiny, photos, library):
    model = tiny.plain_bundle
    junk = [_photo(photos / "임시" / f"{i}.jpg", (i * 40, 0, 0)) for i in range(3)]
    assert _index(cli, photos, library, model)["added"] == 11
    rows = _rows(library)

    report = _index(cli, photos, library, model, "--exclude", "임시")
    assert report["excluded"] == 3 and report["removed"] == report["offline"] == 0
    assert report["unchanged"] == 8 and report["offline_folders"] == []
    rest = [row for row in rows if row[1] not in {str(p) for p in junk}]
    assert _snapshot(library) == (rest, {row[0] for row in rest})
    assert all(p.is_file() for p in junk)
    hits = _search(cli, library, model, "바다", "-n", "50")
    assert len(hits) == 8 and not any("/임시/" in hit["path"] for hit in hits)


@pytest.mark.parametrize("pattern", ["여행/산.jpg", " "])
def test_an_exclude_that_is_not_a_name_pattern_is_a_one_line_error(
    cli, tiny, photos, library, pattern
):
    model = tiny.plain_bundle
    _index(cli, photos, library, model)
    before = _snapshot(library)
    result = cli("index", photos, "--library", library, "--model", model, "--exclude", pattern)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --exclude")
    assert _snapshot(library) == before
    assert cli("info", "--json", "--library", library).json()["excludes"] == []


def test_a_library_from_before_offline_folders_is_read_as_it_is(cli, tiny, photos, library):
    model = tiny.plain_bundle
    _index(cli, photos, library, model)
    with closing(sqlite3.connect(library / DB_NAME)) as conn, conn:
        conn.execute("DROP TABLE offline_folders")
        conn.execute("DROP TABLE photo_text_fts")  # and what later steps added
        conn.execute("DROP TABLE photo_text")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    database = (library / DB_NAME).read_bytes()

    assert len(_search(cli, library, model, "바다")) == 8
    info = cli("info", "--json", "--library", library)
    assert info.exit_code == 0 and info.json()["offline_folders"] == []
    assert (library / DB_NAME).read_bytes() == database

    # The writer upgrades it, and then records offline folders.
    shutil.rmtree(photos / "여행")
    assert _index(cli, photos, library, model)["offline"] == 1
    with closing(sqlite3.connect(library / DB_NAME)) as conn:
        assert conn.execute("SELECT path, reason, photos FROM offline_folders").fetchall() == [
            (str(photos / "여행"), "missing", 1)
        ]
