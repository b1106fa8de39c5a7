"""`hanclip watch` and `hanclip serve --watch`: real processes, real file-system events (no
timing assertion: each expected state is waited for, up to a deadline)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from served import running_server

from hanclip_eval.tiny_models import write_photo_folder
from hanclip_library.store import OfflineFolder, PhotoRecord, PhotoStore
from hanclip_library.watch import BACKGROUND_NICE, _Pending, in_background

REPO = Path(__file__).resolve().parents[1]
STARTED_S = 180  # a cold start on a busy machine: torch, the model, the catch-up
CHANGED_S = 30  # a change seen, settled and applied
T = TypeVar("T")


@dataclass
class Watch:
    process: subprocess.Popen
    batches: list[dict] = field(default_factory=list)  # its --json lines
    errors: list[str] = field(default_factory=list)  # its stderr lines

    def changes(self) -> dict[str, int]:
        """The counts of every batch after the catch-up, summed."""
        summed: dict[str, int] = {}
        for batch in self.batches:
            if not batch["catch_up"]:
                for key in ("added", "updated", "moved", "removed", "failed", "offline"):
                    summed[key] = summed.get(key, 0) + batch[key]
        return summed

    def said(self) -> str:
        return "\n".join(self.errors[-20:])


def _pump(stream, into: list, parse: Callable[[str], object]) -> None:
    for line in stream:
        into.append(parse(line))


@contextmanager
def watching(
    library: Path, model: Path, *folders: Path, extra: tuple[str, ...] = ()
) -> Iterator[Watch]:
    """`hanclip watch FOLDERS --json EXTRA...` in a child process, once its catch-up is
    applied."""
    command = [sys.executable, "-m", "hanclip_cli", "watch", *map(str, folders)]
    command += ["--library", str(library), "--model", str(model), "--no-ocr", "--json", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    watch = Watch(process)
    threading.Thread(target=_pump, args=(process.stdout, watch.batches, json.loads)).start()
    threading.Thread(target=_pump, args=(process.stderr, watch.errors, str.rstrip)).start()
    try:
        eventually(lambda: any(b["catch_up"] for b in watch.batches), watch, STARTED_S)
        yield watch
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def eventually(check: Callable[[], T], watch: Watch, deadline_s: float = CHANGED_S) -> T:
    """`check()` once it is true, polled until the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        found = check()
        if found:
            return found
        if watch.process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"not seen in {deadline_s} s; the watch said:\n{watch.said()}")
        time.sleep(0.2)


def photos(library: Path) -> dict[str, PhotoRecord]:
    store = PhotoStore(library, create=False)
    try:
        return store.records_under([Path("/")])
    finally:
        store.close()


def offline(library: Path) -> list[OfflineFolder]:
    store = PhotoStore(library, create=False)
    try:
        return store.offline_folders()
    finally:
        store.close()


def nice_values(pid: int) -> dict[int, int]:
    """The nice value of each thread of process `pid` (Linux: /proc/PID/task/TID/stat)."""
    values = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(OSError):  # a thread that ended meanwhile
            fields = task.joinpath("stat").read_text().rpartition(")")[2].split()
            values[int(task.name)] = int(fields[16])  # field 19 of stat: nice
    return values


linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="threads have their own priority on Linux"
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def jpegs(folder: Path, count: int, seed: int) -> list[Path]:
    """`count` JPEGs of their own content (another seed draws other photos)."""
    made = write_photo_folder(folder, count=count, seed=seed)
    return [path for path in made if path.suffix == ".jpg"]


def test_watch_follows_new_changed_deleted_renamed_copied_and_new_subfolder(tiny, tmp_path, cli):
    folder, library = tmp_path / "사진", tmp_path / "library"
    write_photo_folder(folder, count=4)
    spare = jpegs(tmp_path / "spare", 8, seed=7)
    with watching(library, tiny.plain_bundle, folder) as watch:
        assert len(photos(library)) == 4

        new = folder / "새사진.jpg"
        shutil.copy(spare[0], new)
        first = eventually(lambda: photos(library).get(str(new)), watch)
        assert first.sha256 == sha256(spare[0])

        new.write_bytes(spare[1].read_bytes())  # changed in place
        eventually(lambda: photos(library)[str(new)].sha256 == sha256(spare[1]), watch)

        renamed = folder / "이름바꿈.jpg"
        before = photos(library)[str(new)]
        new.rename(renamed)
        moved = eventually(lambda: photos(library).get(str(renamed)), watch)
        assert moved.id == before.id and str(new) not in photos(library)

        deleted = folder / "바다_노을.jpg"
        deleted.unlink()
        eventually(lambda: str(deleted) not in photos(library), watch)

        copied = folder / "복사본.jpg"
        shutil.copy(renamed, copied)
        eventually(lambda: str(copied) in photos(library), watch)

        subfolder = folder / "새폴더" / "안쪽"
        subfolder.mkdir(parents=True)
        for path in spare[2:4]:
            shutil.copy(path, subfolder / path.name)
        eventually(
            lambda: all(str(subfolder / p.name) in photos(library) for p in spare[2:4]), watch
        )

        changes = watch.changes()
        assert changes["moved"] >= 1 and changes["removed"] >= 1 and changes["failed"] == 0
    found = cli("search", "바다", "--library", library, "-n", "50", "--json")
    assert found.exit_code == 0, found.stderr
    assert str(renamed) in {hit["path"] for hit in found.json()}


def test_a_photo_written_slowly_is_embedded_once_whole(tiny, tmp_path):
    folder, library = tmp_path / "사진", tmp_path / "library"
    write_photo_folder(folder, count=4)
    source, marker = jpegs(tmp_path / "spare", 8, seed=3)[:2]
    data = source.read_bytes()
    slow = folder / "천천히.jpg"
    # Pauses well under the settle time, whatever the machine's load: still one copy.
    extra = ("--settle", "2", "--foreground")
    with watching(library, tiny.plain_bundle, folder, extra=extra) as watch:
        if sys.platform.startswith("linux"):  # --foreground: the priority it was started at
            base = os.getpriority(os.PRIO_PROCESS, 0)
            assert set(nice_values(watch.process.pid).values()) == {base}
        with open(slow, "wb") as out:
            for start in range(0, len(data), max(1, len(data) // 6)):
                out.write(data[start : start + max(1, len(data) // 6)])
                out.flush()
                time.sleep(0.3)
        record = eventually(lambda: photos(library).get(str(slow)), watch)
        assert record.sha256 == sha256(source)
        # A photo copied after it: once it is in, every batch before it has been applied.
        shutil.copy(marker, folder / "나중.jpg")
        eventually(lambda: str(folder / "나중.jpg") in photos(library), watch)
        changes = watch.changes()
    assert (changes["added"], changes["updated"], changes["failed"]) == (2, 0, 0)


@contextmanager
def tmpfs(folder: Path) -> Iterator[Callable[[bool], None]]:
    """`folder` as a tmpfs mount point (root, where mounting is allowed): yields
    `mounted(bool)` to unmount or mount it again; skips the test where it cannot mount."""
    folder.mkdir()

    def mounted(on: bool) -> None:
        command = (
            ["mount", "-t", "tmpfs", "hanclip-test", str(folder)] if on else ["umount", str(folder)]
        )
        subprocess.run(command, check=True, capture_output=True)

    try:
        mounted(True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield mounted
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_an_unmounted_drive_goes_offline_and_comes_back_with_nothing_embedded(tiny, tmp_path):
    drive, library = tmp_path / "drive", tmp_path / "library"
    kept = tmp_path / "kept"
    write_photo_folder(kept, count=4)
    with tmpfs(drive) as mounted:
        shutil.copytree(kept, drive, dirs_exist_ok=True)  # mtimes kept (copy2)
        with watching(library, tiny.plain_bundle, drive) as watch:
            before = photos(library)
            assert len(before) == 4

            mounted(False)
            gone = eventually(lambda: offline(library), watch)
            assert [(f.path, f.reason) for f in gone] == [(str(drive), "empty")]
            assert photos(library) == before  # kept, never deleted

            mounted(True)
            shutil.copytree(kept, drive, dirs_exist_ok=True)
            eventually(lambda: not offline(library), watch)
            assert photos(library) == before
            changes = watch.changes()
    assert changes["added"] == changes["updated"] == changes["moved"] == changes["removed"] == 0


def test_a_folder_renamed_away_goes_offline_and_comes_back(tiny, tmp_path):
    folder, library = tmp_path / "사진", tmp_path / "library"
    write_photo_folder(folder, count=4)
    with watching(library, tiny.plain_bundle, folder) as watch:
        before = photos(library)
        away = folder.rename(tmp_path / "치운곳")
        gone = eventually(lambda: offline(library), watch)
        assert [(f.path, f.reason) for f in gone] == [(str(folder), "missing")]
        assert photos(library) == before

        away.rename(folder)
        eventually(lambda: not offline(library), watch)
        assert photos(library) == before
        changes = watch.changes()
    assert changes["added"] == changes["updated"] == changes["removed"] == 0


def test_index_runs_while_watching_and_sigterm_stops_with_the_library_whole(tiny, tmp_path, cli):
    folder, other, library = tmp_path / "사진", tmp_path / "다른", tmp_path / "library"
    write_photo_folder(folder, count=4)
    write_photo_folder(other, count=4, seed=5)
    spare = jpegs(tmp_path / "spare", 8, seed=9)
    with watching(library, tiny.plain_bundle, folder) as watch:
        if sys.platform.startswith("linux"):  # background work: every thread at nice 10
            assert min(nice_values(watch.process.pid).values()) >= BACKGROUND_NICE
        manual = cli("index", other, "--library", library, "--no-ocr", "--json")
        assert manual.exit_code == 0, manual.stderr  # the watch holds no lock between batches
        shutil.copy(spare[0], folder / "그다음.jpg")
        eventually(lambda: str(folder / "그다음.jpg") in photos(library), watch)

        watch.process.send_signal(signal.SIGTERM)
        assert watch.process.wait(timeout=60) == 0, watch.said()
    info = cli("info", "--library", library, "--json")
    assert info.exit_code == 0, info.stderr
    assert info.json()["database"]["status"] == "ok"
    assert info.json()["photos"] == 9 and info.json()["index"]["status"] == "ok"
    found = cli("search", "바다", "--library", library, "--json")
    assert found.exit_code == 0 and found.json(), found.stderr


def test_serve_watch_finds_a_new_photo_in_its_next_answer(tiny, tmp_path, _cache_dir):
    folder, library = tmp_path / "사진", tmp_path / "library"
    write_photo_folder(folder, count=4)
    spare = jpegs(tmp_path / "spare", 8, seed=11)
    extra = ["--model", str(tiny.plain_bundle), "--watch", str(folder)]
    with running_server(library, folder, _cache_dir, extra) as server:

        def found() -> set[str]:
            answer = httpx.get(server.api("/api/search"), params={"q": "바다", "n": 50})
            return {hit["path"] for hit in answer.json()["results"]}

        deadline = time.monotonic() + STARTED_S
        while len(found()) < 4:  # the catch-up runs beside the server
            assert time.monotonic() < deadline, "\n".join(server.output)
            time.sleep(0.2)
        if sys.platform.startswith("linux"):  # the watch's thread low, the server's not
            nice = nice_values(server.pid)
            assert nice[server.pid] == os.getpriority(os.PRIO_PROCESS, 0)
            assert max(nice.values()) >= BACKGROUND_NICE
        new = folder / "새사진.jpg"
        shutil.copy(spare[0], new)
        deadline = time.monotonic() + CHANGED_S
        while str(new) not in found():
            assert time.monotonic() < deadline, "\n".join(server.output)
            time.sleep(0.2)


@pytest.mark.parametrize("what", ["file", "missing"])
def test_watch_refuses_a_file_or_a_missing_folder_in_one_line(tiny, tmp_path, cli, what):
    target = tmp_path / "없는폴더"
    if what == "file":
        target = write_photo_folder(tmp_path / "사진", count=1)[0]
    result = cli("watch", target, "--library", tmp_path / "library", "--model", tiny.plain_bundle)
    assert result.exit_code != 0
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "library").exists()


def test_watch_help_shows_a_korean_example(cli):
    result = cli("watch", "--help")
    assert result.exit_code == 0 and "hanclip watch ~/Pictures" in result.stdout
    assert "새 사진" in result.stdout


@linux_only
def test_a_watch_thread_runs_low_and_so_do_the_threads_it_starts():
    base = os.getpriority(os.PRIO_PROCESS, 0)
    seen: dict[str, int] = {}

    def started_by_it() -> None:
        seen["child"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def watch_thread() -> None:
        seen["lowered"] = in_background()
        seen["own"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        child = threading.Thread(target=started_by_it)
        child.start()
        child.join()
        seen["again"] = in_background()  # never raised back: still at least as low
        seen["own_again"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    thread = threading.Thread(target=watch_thread)
    thread.start()
    thread.join()
    assert seen["lowered"] and seen["again"]
    assert seen["own"] == seen["child"] == seen["own_again"] == max(base, BACKGROUND_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # this one not


def test_pending_paths_settle_together_below_a_new_folder():
    pending = _Pending()
    pending.touch(["/p/new", "/p/a.jpg"], 1.0)
    pending.touch(["/p/new/b.jpg"], 5.0)  # still being written into the new folder
    assert pending.clusters() == {"/p/a.jpg": 1.0, "/p/new": 5.0}
    pending.take(["/p/new"])
    assert pending.clusters() == {"/p/a.jpg": 1.0}
