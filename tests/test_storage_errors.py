"""A full disk, a read-only one, a library on a drive that vanished: one line, then resume.

Each failure is simulated where hanclip writes (an error raised after some photos, the way the
kernel or SQLite raises it) and, where the machine lets a test mount file systems (root with
CAP_SYS_ADMIN), met for real: a tiny tmpfs filled up, or remounted read-only. In every case
the command exits 2 with one `error:` line naming the cause and what was saved, the rows
committed before are untouched, and the same command run again once the cause is gone goes
on from there.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from hanclip_cli.common import handle_errors
from hanclip_eval.tiny_models import write_photo_folder
from hanclip_library.store import PhotoStore
from hanclip_library.vector_index import POINTER_NAME
from hanclip_model.errors import HanclipError, StorageError
from hanclip_model.files import atomic_path
from hanclip_model.storage import NEARLY_FULL_BYTES, storage_error

SAVED = re.compile(r"; (\d+) photos? saved in this run \(")


def _error_line(result) -> str:
    """The one `error:` line of a failed command (exit 2, no traceback)."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def _saved(line: str) -> int:
    found = SAVED.search(line)
    assert found, line
    return int(found.group(1))


def _rows(library: Path) -> dict[str, tuple[int, str, bytes]]:
    """Every photo row as SQLite holds it: path -> (id, sha256, embedding bytes)."""
    conn = sqlite3.connect(library / "library.db")
    try:
        rows = conn.execute("SELECT path, id, sha256, embedding FROM photos").fetchall()
    finally:
        conn.close()
    return {path: (photo_id, sha, bytes(blob)) for path, photo_id, sha, blob in rows}


def _fail_nth_call(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str, n: int, act: Callable[[], None]
) -> dict[str, bool]:
    """Make `owner.name` run `act` on its `n`-th call (the calls before go through), until the
    returned switch's "on" is set False."""
    original = getattr(owner, name)
    calls = [0]
    switch = {"on": True}

    def patched(*args, **kwargs):
        calls[0] += 1
        if switch["on"] and calls[0] == n:
            act()
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, patched)
    return switch


def _raise(error: BaseException) -> Callable[[], None]:
    def act() -> None:
        raise error

    return act


# -- the classifier ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "is full"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "is full"),
        (sqlite3.OperationalError("database or disk is full"), "is full"),
        (RuntimeError("Error while serializing: I/O error: No space left (os error 28)"), "full"),
        (OSError(errno.EROFS, "Read-only file system"), "is read-only"),
        (sqlite3.OperationalError("attempt to write a readonly database"), "is read-only"),
        (OSError(errno.EACCES, "Permission denied"), "read-only for this user"),
        (OSError(errno.EIO, "Input/output error"), "input/output error"),
        (OSError(errno.ENOENT, "No such file or directory"), "are no longer there"),
    ],
)
def test_each_cause_is_named_in_words(tmp_path, error, words):
    found = storage_error(error, tmp_path, what="library folder")
    assert isinstance(found, StorageError)
    assert words in str(found) and str(tmp_path) in str(found)
    assert "run the same command again" in str(found)


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EIO, "Input/output error"),
        OSError(errno.ENOENT, "No such file or directory"),
        sqlite3.OperationalError("disk I/O error"),
        sqlite3.OperationalError("attempt to write a readonly database"),
        sqlite3.OperationalError("unable to open database file"),
    ],
)
def test_a_vanished_folder_is_named_whatever_the_error(tmp_path, error):
    gone = tmp_path / "drive" / "library"
    found = storage_error(error, gone, what="library folder")
    assert found is not None
    assert found.cause == f"the library folder {gone} is no longer there (drive unplugged?)"


@pytest.mark.parametrize(
    "error",
    [
        sqlite3.DatabaseError("database disk image is malformed"),
        sqlite3.DatabaseError("file is not a database"),
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("disk I/O error"),  # on a healthy disk: a damaged file
        sqlite3.OperationalError("no such table: photos"),
        OSError(errno.ENOSPC, "No space left on device", "/elsewhere/photo.jpg"),
        OSError(None, "100 requested and 10 written"),  # no errno, and the disk has room
        HanclipError("disk is full"),
        ValueError("the disk is full"),
    ],
)
def test_other_errors_are_not_storage_failures(tmp_path, error):
    assert storage_error(error, tmp_path) is None


def test_a_writer_that_lost_the_errno_is_explained_by_the_disk(tmp_path, monkeypatch):
    class Full:
        f_flag, f_bavail, f_frsize = 0, 3, 4096

    class ReadOnly(Full):
        f_flag, f_bavail = os.ST_RDONLY, 10**9

    short = OSError("100 requested and 10 written")  # numpy's words, no errno
    protobuf = RuntimeError("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : serialization failed")
    monkeypatch.setattr(os, "statvfs", lambda path: Full())
    assert "is full" in str(storage_error(short, tmp_path))
    assert storage_error(protobuf, tmp_path) is None  # not known to be a write
    assert "is full" in str(storage_error(protobuf, tmp_path, unexplained_write=True))
    # How SQLite reports a full disk when it cannot grow its shared-memory file.
    assert "is full" in str(storage_error(sqlite3.OperationalError("disk I/O error"), tmp_path))
    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly())
    assert "is read-only" in str(storage_error(short, tmp_path))
    assert Full.f_bavail * Full.f_frsize < NEARLY_FULL_BYTES


def test_atomic_write_on_a_full_disk_keeps_the_old_file(tmp_path):
    target = tmp_path / "checkpoint.safetensors"
    target.write_bytes(b"epoch 1")
    with pytest.raises(StorageError, match="is full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of epoch 2")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"epoch 1"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_any_command_reports_a_storage_failure_in_one_line(tmp_path, capsys):
    (tmp_path / "out").mkdir()

    @handle_errors
    def command() -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "out" / "x.json"))

    with pytest.raises(SystemExit) as stop:
        command()
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"error: the disk holding {tmp_path / 'out'} is read-only (make it writable, then run "
        "the same command again)"
    ]

    @handle_errors
    def buggy() -> None:
        raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(OSError):
        buggy()


# -- index: simulated ----------------------------------------------------------------------------

FAILURES = {
    "full disk": (OSError(errno.ENOSPC, "No space left on device"), "is full"),
    "full disk, SQLite": (sqlite3.OperationalError("database or disk is full"), "is full"),
    "read-only disk": (OSError(errno.EROFS, "Read-only file system"), "is read-only"),
    "read-only database": (
        sqlite3.OperationalError("attempt to write a readonly database"),
        "is read-only",
    ),
}


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_index_stops_in_one_line_and_the_rerun_goes_on(
    cli, tiny, photos, library, monkeypatch, kind
):
    error, words = FAILURES[kind]
    common = ["--library", library, "--model", tiny.plain_bundle, "--batch-size", "2"]
    # The second batch of two photos fails: the first is committed.
    switch = _fail_nth_call(monkeypatch, PhotoStore, "add_photos", 2, _raise(error))

    line = _error_line(cli("index", photos, *common))
    assert words in line and str(library) in line
    assert _saved(line) == 2
    saved = _rows(library)
    assert len(saved) == 2

    switch["on"] = False
    report = cli("index", photos, *common, "--json").json()
    assert (report["unchanged"], report["added"]) == (2, 6)
    after = _rows(library)
    assert len(after) == 8
    assert {path: after[path] for path in saved} == saved  # same ids, hashes, embedding bytes


def test_library_folder_gone_mid_run(cli, tiny, photos, library, tmp_path, monkeypatch):
    """The library folder disappears while `index` writes: SQLite goes on through the files it
    holds open, and the first file opened by name afterwards (the search index) fails."""
    away = tmp_path / "unplugged"
    common = ["--library", library, "--model", tiny.plain_bundle, "--batch-size", "2"]
    switch = _fail_nth_call(
        monkeypatch, PhotoStore, "add_photos", 2, lambda: os.rename(library, away)
    )

    line = _error_line(cli("index", photos, *common))
    assert f"the library folder {library} is no longer there (drive unplugged?)" in line
    assert "reconnect the drive" in line
    assert _saved(line) == 8
    assert not library.exists()

    os.rename(away, library)  # plugged in again
    switch["on"] = False
    saved = _rows(library)
    report = cli("index", photos, *common, "--json").json()
    assert (report["unchanged"], report["added"]) == (8, 0)
    assert _rows(library) == saved
    info = cli("info", "--library", library, "--json").json()
    assert info["index"]["status"] == "ok"


def test_search_index_written_short_keeps_the_old_one(cli, tiny, photos, library, monkeypatch):
    """hnswlib writes a short file without a word when the disk fills up: it is never pointed
    at, the old index stays in use, and the run says so like any other full disk."""
    import hanclip_library.vector_index as vector_index

    common = ["--library", library, "--model", tiny.plain_bundle]
    assert cli("index", photos, *common).exit_code == 0
    before = {p.name: p.read_bytes() for p in library.glob("hnsw*")}
    write_photo_folder(photos / "새 폴더", count=2, seed=7)

    real_fsync = vector_index.fsync_file

    def short_write(path) -> None:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        real_fsync(path)

    class Full:
        f_flag, f_bavail, f_frsize = 0, 0, 4096

    with monkeypatch.context() as patched:
        patched.setattr(vector_index, "fsync_file", short_write)
        patched.setattr(os, "statvfs", lambda path: Full())
        line = _error_line(cli("index", photos, *common))
    assert f"the disk holding {library} is full" in line
    assert _saved(line) == 2
    assert {p.name: p.read_bytes() for p in library.glob("hnsw*")} == before

    hits = cli("search", "바다", *common, "-n", "20", "--json").json()
    assert len(hits) == 10
    report = cli("index", photos, *common, "--json").json()
    assert (report["unchanged"], report["added"]) == (10, 0)
    assert json.loads((library / POINTER_NAME).read_text())["count"] == 10


# -- index: for real, where file systems can be mounted -----------------------------------------


@contextmanager
def _tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `mount_point`; the test is skipped where it cannot be mounted."""
    mount_point.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        gc.collect()  # memory maps of files on it, held by tracebacks of caught errors
        subprocess.run(["umount", str(mount_point)], check=True)


def _remount(mount_point: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount_point)], check=True)


def _fill(disk: Path, leave: int = 0) -> Path:
    """A file taking all free space on `disk` but about `leave` bytes."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        block = b"\0" * 4096
        for _ in range(max(free - leave, 0) // len(block)):
            os.write(fd, block)
        if leave == 0:
            with pytest.raises(OSError) as full:
                while True:
                    os.write(fd, block)
            assert full.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_index_on_a_disk_that_fills_up(cli, tiny, photos, tmp_path):
    more = tmp_path / "더"
    write_photo_folder(more, count=8, seed=3)
    with _tmpfs(tmp_path / "disk", "4m") as disk:
        library = disk / "library"
        common = ["--library", library, "--model", tiny.plain_bundle, "--batch-size", "1"]
        assert cli("index", photos, *common).exit_code == 0
        before = _rows(library)

        filler = _fill(disk, leave=96 * 1024)
        line = _error_line(cli("index", photos, more, *common))
        assert f"the disk holding {library} is full" in line
        saved = _saved(line)
        assert 0 < saved < 8  # the room left holds a few photos, not all
        kept = _rows(library)
        assert len(kept) == 8 + saved
        assert {path: kept[path] for path in before} == before

        filler.unlink()
        report = cli("index", photos, more, *common, "--json").json()
        assert (report["unchanged"], report["added"]) == (8 + saved, 8 - saved)
        after = _rows(library)
        assert {path: after[path] for path in kept} == kept
        assert cli("info", "--library", library, "--json").json()["index"]["status"] == "ok"


def test_index_on_a_read_only_disk(cli, tiny, photos, tmp_path):
    more = tmp_path / "더"
    write_photo_folder(more, count=4, seed=3)
    with _tmpfs(tmp_path / "disk", "4m") as disk:
        library = disk / "library"
        common = ["--library", library, "--model", tiny.plain_bundle]
        assert cli("index", photos, *common).exit_code == 0
        before = _rows(library)

        _remount(disk, "ro")
        try:
            line = _error_line(cli("index", photos, more, *common))
        finally:
            _remount(disk, "rw")
        assert f"the disk holding {library} is read-only; nothing was changed" in line
        assert _rows(library) == before

        report = cli("index", photos, more, *common, "--json").json()
        assert (report["unchanged"], report["added"]) == (8, 4)


# -- train: the bank cache and the checkpoint ----------------------------------------------------


def _encoder(calls: list[list[str]], dim: int) -> Callable[[list[str]], np.ndarray]:
    def encode(items):
        calls.append(list(items))
        rows = [
            np.random.default_rng(len(t) + 7 * int(t.split()[-1])).normal(size=dim) for t in items
        ]
        return np.asarray(rows, dtype=np.float32)

    return encode


ITEMS = [f"caption {i}" for i in range(20)]


def test_bank_interrupted_by_a_full_disk_resumes_to_the_same_bank(tmp_path, monkeypatch):
    import trainer.banks as banks

    whole = banks.encode_bank(
        ITEMS, _encoder([], 8), 8, tmp_path / "whole" / "bank.npy", batch_size=4
    )
    path = tmp_path / "cache" / "bank.npy"
    full = OSError(errno.ENOSPC, "No space left on device")
    with monkeypatch.context() as patched, pytest.raises(StorageError) as stopped:
        _fail_nth_call(patched, banks, "atomic_write_text", 3, _raise(full))
        banks.encode_bank(ITEMS, _encoder([], 8), 8, path, batch_size=4)
    assert f"the disk holding {path.parent} is full; 8 of 20 rows of bank.npy kept" in str(
        stopped.value
    )

    calls: list[list[str]] = []
    resumed = banks.encode_bank(ITEMS, _encoder(calls, 8), 8, path, batch_size=4)
    assert calls[0][0] == "caption 8"  # went on from the rows kept
    assert np.array_equal(resumed, whole)
    assert sorted(p.name for p in path.parent.iterdir()) == ["bank.npy"]


def test_bank_on_a_disk_that_fills_up(tmp_path):
    """A memory map into a file with holes dies of SIGBUS when the disk fills: the bank's file
    is given its blocks first, so a full disk is an error, then a resume."""
    from trainer.banks import encode_bank

    dim = 4096  # 20 rows of 16 KiB
    whole = encode_bank(ITEMS, _encoder([], dim), dim, tmp_path / "whole.npy", batch_size=4)
    with _tmpfs(tmp_path / "disk", "256k") as disk:
        path = disk / "banks" / "bank.npy"
        with pytest.raises(StorageError, match=r"is full; 0 of 20 rows of bank\.npy kept"):
            encode_bank(ITEMS, _encoder([], dim), dim, path, batch_size=4)
        _remount(disk, "size=1m")

        filled: list[Path] = []
        calls: list[list[str]] = []

        def encode_then_fill(items):
            if len(calls) == 2:
                filled.append(_fill(disk))
            return _encoder(calls, dim)(items)

        with pytest.raises(StorageError, match=r"is full; 8 of 20 rows of bank\.npy kept"):
            encode_bank(ITEMS, encode_then_fill, dim, path, batch_size=4)
        filled[0].unlink()
        calls.clear()
        resumed = np.array(encode_bank(ITEMS, _encoder(calls, dim), dim, path, batch_size=4))
        assert calls[0][0] == "caption 8"
        assert np.array_equal(resumed, whole)


def test_checkpoint_on_a_full_disk_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import safetensors.torch
    import torch

    from trainer.synthetic import make_world
    from trainer.train import CHECKPOINT_NAME, TrainConfig, train_heads

    world = make_world(300, 300, 300, 10, d_img=32, d_txt=24, n_concepts=20, seed=0)
    config = TrainConfig(epochs=3, batch_size=64, seed=0, device="cpu")
    whole = train_heads(world.banks, config)
    full = RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    state = tmp_path / ".train-state"
    message = f"the disk holding {re.escape(str(state))} is full"
    with monkeypatch.context() as patched, pytest.raises(StorageError, match=message):
        _fail_nth_call(patched, safetensors.torch, "save_file", 2, _raise(full))
        train_heads(world.banks, config, checkpoint_dir=state)
    assert not [p for p in state.iterdir() if p.name.endswith(".tmp")]

    resumed = train_heads(world.banks, config, checkpoint_dir=state)
    assert resumed.epochs_resumed == 1 and (state / CHECKPOINT_NAME).is_file()
    for name, tensor in resumed.heads.state_dict().items():
        assert torch.equal(tensor, whole.heads.state_dict()[name]), name


# -- the text export cache -----------------------------------------------------------------------


def test_export_on_a_full_disk_leaves_nothing_and_says_so(
    cli, tiny, photos, library, tmp_path, monkeypatch
):
    import hanclip_model.fast_text.export as export

    common = ["--library", library, "--model", tiny.plain_bundle]
    assert cli("index", photos, *common).exit_code == 0
    cache = tmp_path / "cache"
    monkeypatch.setenv("HANCLIP_CACHE", str(cache))
    _fail_nth_call(
        monkeypatch, export.np, "save", 1, _raise(OSError(errno.ENOSPC, "No space left"))
    )
    line = _error_line(cli("search", "바다", *common))
    assert f"the disk holding {cache / 'fast-text'} is full" in line
    assert "fast text encoder" in line and "was not cached" in line
    assert list((cache / "fast-text").iterdir()) == []


def test_export_on_a_disk_that_fills_up(cli, tiny, photos, library, tmp_path, monkeypatch):
    common = ["--library", library, "--model", tiny.plain_bundle]
    assert cli("index", photos, *common).exit_code == 0
    with _tmpfs(tmp_path / "disk", "64k") as disk:
        monkeypatch.setenv("HANCLIP_CACHE", str(disk))
        line = _error_line(cli("search", "바다", *common))
        assert f"the disk holding {disk / 'fast-text'} is full" in line
        assert list((disk / "fast-text").iterdir()) == []
        _remount(disk, "size=64m")
        assert len(cli("search", "바다", *common, "--json").json()) == 8
