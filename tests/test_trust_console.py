"""Issue 11's three storage events end to end, through the installed `hanclip` console script:
an unplugged drive, a damaged database, a full disk. The library is compared before and after
(rows, embedding bytes, HNSW labels) wherever nothing may change.

Each case also has finer tests through the in-process runner (test_offline.py,
test_damaged.py, test_storage_errors.py); these prove the same in real processes, as a user
meets them. The drive and the full disk are real tmpfs mounts where the test may mount one
(root); elsewhere the drive is an empty folder and the full-disk case is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from hanclip_eval.tiny_models import write_photo_folder
from hanclip_library.vector_index import load_index


def _hanclip(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "hanclip"
    if not script.exists():
        pytest.fail("the hanclip console script is not installed next to this Python")
    return subprocess.run(
        [str(script), *(str(a) for a in args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HANCLIP_HOME": str(tmp_path / "home")}


def _state(library: Path) -> tuple[dict[str, bytes], set[int]]:
    """Every photo's path and raw embedding bytes, and the HNSW labels."""
    with closing(sqlite3.connect(f"file:{library / 'library.db'}?mode=ro", uri=True)) as db:
        rows = dict(db.execute("SELECT path, embedding FROM photos"))
    vindex = load_index(library)
    return rows, (vindex.labels if vindex is not None else set())


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


@contextmanager
def _drive(mount_point: Path, size: str = "8m") -> Iterator[bool]:
    """A tmpfs at `mount_point` (True) where one can be mounted, else a plain folder (False)."""
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = (
        os.geteuid() == 0
        and shutil.which("mount") is not None
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted and os.path.ismount(mount_point):
            subprocess.run(["umount", str(mount_point)], check=True)


def test_an_unplugged_drive_is_offline_and_comes_back_with_nothing_embedded(tiny, tmp_path, env):
    drive, library, keep = tmp_path / "usb", tmp_path / "library", tmp_path / "copy"
    common = ["--library", library, "--model", tiny.plain_bundle]
    with _drive(drive) as mounted:
        photos = drive / "Photos"
        write_photo_folder(photos, count=10)
        shutil.copytree(photos, keep)  # the bytes and times to put back
        assert _hanclip("index", photos, *common, "--json", env=env).returncode == 0
        before = _state(library)
        assert len(before[0]) == 10

        # Unplugged: the mount point stays, empty (unmounted, or emptied where no mount).
        if mounted:
            subprocess.run(["umount", str(drive)], check=True)
        else:
            shutil.rmtree(photos)
        unplugged = _hanclip("index", drive / "Photos", *common, "--json", env=env)
        assert unplugged.returncode == 0, unplugged.stderr
        report = json.loads(unplugged.stdout)
        assert (report["removed"], report["offline"], report["added"]) == (0, 10, 0)
        assert "offline" in unplugged.stderr
        assert _state(library) == before  # rows, embeddings and HNSW untouched
        info = json.loads(_hanclip("info", "--library", library, "--json", env=env).stdout)
        assert [(f["path"], f["photos"]) for f in info["offline_folders"]] == [(str(photos), 10)]
        hits = json.loads(_hanclip("search", "바다", *common, "--json", env=env).stdout)
        assert hits == []  # offline photos are left out of search by default

        # Plugged back in: the same files at the same place.
        if mounted:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(drive)], check=True
            )
        shutil.copytree(keep, photos)
        hits = json.loads(_hanclip("search", "바다", *common, "-n", "10", "--json", env=env).stdout)
        assert len(hits) == 10  # back the moment the folder is, before any index
        back = json.loads(_hanclip("index", photos, *common, "--json", env=env).stdout)
        assert (back["unchanged"], back["added"], back["updated"], back["removed"]) == (10, 0, 0, 0)
        assert back["offline"] == 0
        assert _state(library) == before  # nothing re-embedded, same rows, same labels


def test_a_damaged_database_is_one_line_then_repaired(tiny, tmp_path, env):
    photos, library = tmp_path / "photos", tmp_path / "library"
    write_photo_folder(photos, count=8)
    common = ["--library", library, "--model", tiny.plain_bundle]
    assert _hanclip("index", photos, *common, env=env).returncode == 0
    database = library / "library.db"
    damaged = database.read_bytes()
    damaged = b"this is not an sqlite file!!" + damaged[28:]
    database.write_bytes(damaged)

    for command in (("search", "바다"), ("index", photos)):
        line = _one_error_line(_hanclip(*command, *common, env=env))
        assert str(database) in line and "hanclip repair" in line
        assert database.read_bytes() == damaged  # a failing command never writes it
    info = _hanclip("info", "--library", library, "--json", env=env)
    assert json.loads(info.stdout)["database"]["status"] == "damaged"

    repaired = json.loads(_hanclip("repair", "--library", library, "--json", env=env).stdout)
    kept = Path(repaired["damaged_file"])
    assert kept.read_bytes() == damaged  # moved aside, never deleted or changed
    info = json.loads(_hanclip("info", "--library", library, "--json", env=env).stdout)
    assert info["database"]["status"] == "ok"
    again = json.loads(_hanclip("index", photos, *common, "--json", env=env).stdout)
    assert again["added"] == 8 - repaired["photos_saved"]  # what was lost is embedded again


def test_a_full_disk_stops_in_one_line_and_the_same_command_goes_on(tiny, tmp_path, env):
    photos = tmp_path / "photos"
    write_photo_folder(photos, count=16, seed=5)
    with _drive(tmp_path / "disk", size="4m") as mounted:
        if not mounted:
            pytest.skip("a full disk needs a tmpfs, which needs root")
        library = tmp_path / "disk" / "library"
        common = ["--library", library, "--model", tiny.plain_bundle, "--batch-size", "1"]
        first = photos / "first"
        first.mkdir()
        for path in sorted(photos.glob("*.*"))[:4]:
            path.rename(first / path.name)
        assert _hanclip("index", first, *common, env=env).returncode == 0
        before = _state(library)[0]
        filler = tmp_path / "disk" / "filler"
        with open(filler, "wb") as f:
            free = os.statvfs(filler.parent).f_bavail * os.statvfs(filler.parent).f_frsize
            f.write(b"\0" * max(free - 64 * 1024, 0))

        line = _one_error_line(_hanclip("index", photos, *common, env=env))
        assert "is full" in line and re.search(r"\d+ photos? saved in this run", line), line
        kept = _state(library)[0]
        assert {path: kept[path] for path in before} == before  # committed rows intact

        filler.unlink()
        done = json.loads(_hanclip("index", photos, *common, "--json", env=env).stdout)
        assert done["added"] + done["unchanged"] + done["moved"] == 16
        after = _state(library)[0]
        assert {path: after[path] for path in kept} == kept
