"""`hanclip search` answered by a `hanclip serve` running on the same library.

The server announces itself in `serve.json`; a search that its API can say exactly, with the
same model, is its answer (the same hits as a search of its own); anything else, and any
failure to answer, is a search of its own, as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from served import running_server

from hanclip_cli.serve.discovery import SERVER_FILE, STARTING_FILE, read_server_file
from hanclip_eval.tiny_models import write_photo_folder
from hanclip_library import searcher


@pytest.fixture(scope="module")
def server_library(tiny, tmp_path_factory: pytest.TempPathFactory, _cache_dir: Path):
    root = tmp_path_factory.mktemp("via-server")
    photos, library = root / "사진", root / "library"
    write_photo_folder(photos, count=12)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HANCLIP_CACHE", str(_cache_dir))
        patch.setenv("HANCLIP_DEVICE", "cpu")
        from conftest import CliResultRunner

        result = CliResultRunner()(
            "index", photos, "--library", library, "--model", tiny.plain_bundle
        )
    assert result.exit_code == 0, result.stderr
    with running_server(library, photos, _cache_dir) as server:
        yield server


@pytest.fixture
def via_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANCLIP_VIA_SERVER", "1")


def _no_local_search(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("searched on its own")

    monkeypatch.setattr(searcher, "search_library", refuse)


def _json(cli, *args) -> list[dict]:
    result = cli("search", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()


SEARCHES = [
    ["바다 위 노을"],
    ["바다", "+", "노을", "-", "사람", "-n", "5"],
    ["고양이", "--sort", "date", "-n", "12"],
    ["산", "--after", "2020", "--min-score", "-1"],
]


@pytest.mark.parametrize("args", SEARCHES)
def test_the_servers_answer_is_the_search_of_its_own(
    cli, server_library, via_server, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    library = ["--library", str(server_library.library)]
    monkeypatch.setenv("HANCLIP_VIA_SERVER", "0")
    own = _json(cli, *args, *library)
    monkeypatch.setenv("HANCLIP_VIA_SERVER", "1")
    _no_local_search(monkeypatch)
    served = _json(cli, *args, *library)
    assert [{k: v for k, v in hit.items() if k != "score"} for hit in served] == [
        {k: v for k, v in hit.items() if k != "score"} for hit in own
    ]
    assert [h["score"] for h in served] == pytest.approx([h["score"] for h in own], abs=2e-6)


def test_the_table_and_paths_come_from_the_server_too(
    cli, server_library, via_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_local_search(monkeypatch)
    library = ["--library", str(server_library.library)]
    table = cli("search", "바다", "-n", "3", *library)
    assert table.exit_code == 0 and "score" in table.stdout, table.stderr
    paths = cli("search", "바다", "-n", "3", "--paths", *library)
    assert paths.exit_code == 0 and len(paths.stdout.splitlines()) == 3
    folder = str(server_library.photos / "여행")
    within = _json(cli, "바다", "--in", folder, *library)
    assert within and all(hit["path"].startswith(folder + os.sep) for hit in within)


@pytest.mark.parametrize(
    "extra",
    [
        ["--add", "노을"],
        ["--image", "{photos}/고양이.png"],
        ["-n", "500"],
        ["--model", "{heads}"],
        ["--in", "사진"],
    ],
)
def test_what_the_api_cannot_say_is_searched_on_its_own(
    cli, tiny, server_library, via_server, extra: list[str]
) -> None:
    given = [a.format(photos=server_library.photos, heads=tiny.heads_bundle) for a in extra]
    calls = []
    original = searcher.search_library

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(searcher, "search_library", counting)
        result = cli("search", "바다", *given, "--library", server_library.library, "--json")
    assert calls == [1], result.stderr  # the search ran here, once
    if "--in" not in given:
        assert result.exit_code == 0, result.stderr


def test_a_dead_or_foreign_announcement_is_ignored(
    cli, tiny, tmp_path: Path, photos: Path, via_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = tmp_path / "library"
    assert cli("index", photos, "--library", library, "--model", tiny.plain_bundle).exit_code == 0
    expected = _json(cli, "바다", "--library", library)
    record = {"url": "http://127.0.0.1:9/", "pid": os.getpid(), "library": str(library)}
    for fingerprint, pid in (("x", os.getpid()), (None, 2**22 + 12345)):
        record.update(pid=pid, fingerprint=fingerprint or _fingerprint(tiny.plain_bundle))
        (library / SERVER_FILE).write_text(json.dumps(record))
        assert _json(cli, "바다", "--library", library) == expected
    (library / SERVER_FILE).write_text("{not json")
    assert _json(cli, "바다", "--library", library) == expected


def _fingerprint(bundle: Path) -> str:
    from hanclip_model.bundle import resolve_bundle

    return resolve_bundle(str(bundle)).fingerprint


def test_the_server_announces_itself_and_withdraws_when_it_stops(
    tiny, tmp_path: Path, _cache_dir: Path, cli
) -> None:
    photos, library = tmp_path / "사진", tmp_path / "library"
    write_photo_folder(photos, count=4)
    assert cli("index", photos, "--library", library, "--model", tiny.plain_bundle).exit_code == 0
    with running_server(library, photos, _cache_dir) as server:
        found = read_server_file(library)
        assert found is not None and found.url == server.url
        assert found.library == str(library) and found.fingerprint == _fingerprint(
            tiny.plain_bundle
        )
    assert not (library / SERVER_FILE).exists()


def test_photos_an_index_commits_are_in_the_next_served_search(
    tiny, tmp_path: Path, _cache_dir: Path, cli, via_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos, library = tmp_path / "사진", tmp_path / "library"
    write_photo_folder(photos, count=4)
    common = ["--library", library, "--model", tiny.plain_bundle]
    assert cli("index", photos, *common).exit_code == 0
    with running_server(library, photos, _cache_dir):
        shutil.copy(photos / "고양이.png", photos / "새 고양이.png")
        assert cli("index", photos, *common).exit_code == 0
        with monkeypatch.context() as patch:
            _no_local_search(patch)
            hits = _json(cli, "고양이", "-n", "10", "--library", library)
        assert str(photos / "새 고양이.png") in {hit["path"] for hit in hits}
        assert len(hits) == 5


def _wait_for(condition, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # the search was this process: reap its child


def test_a_large_librarys_search_starts_a_resident_server_that_stops_when_idle(
    cli, tiny, tmp_path: Path, photos: Path, via_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = tmp_path / "library"
    assert cli("index", photos, "--library", library, "--model", tiny.plain_bundle).exit_code == 0
    monkeypatch.setenv("HANCLIP_RESIDENT", "1")
    monkeypatch.setenv("HANCLIP_RESIDENT_MIN_PHOTOS", "9")
    first = _json(cli, "바다", "--library", library)  # 8 photos: below the threshold
    assert not (library / SERVER_FILE).exists() and not (library / STARTING_FILE).exists()

    monkeypatch.setenv("HANCLIP_RESIDENT_MIN_PHOTOS", "8")
    monkeypatch.setenv("HANCLIP_RESIDENT_IDLE_S", "6")
    assert _json(cli, "바다", "--library", library) == first
    assert _wait_for(lambda: read_server_file(library) is not None), "no server announced"
    server = read_server_file(library)
    try:
        assert not (library / STARTING_FILE).exists()
        # The next search is the server's answer; a second search starts no second server.
        with monkeypatch.context() as patch:
            _no_local_search(patch)
            served = _json(cli, "바다", "--library", library)
        assert [h["path"] for h in served] == [h["path"] for h in first]
        assert read_server_file(library) == server
        # Idle for the given seconds: it stops by itself and withdraws its announcement.
        assert _wait_for(lambda: not (library / SERVER_FILE).exists(), timeout_s=30)
    finally:
        _stop(server.pid)


def test_no_resident_server_when_turned_off_or_another_is_starting(
    cli, tiny, tmp_path: Path, photos: Path, via_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = tmp_path / "library"
    assert cli("index", photos, "--library", library, "--model", tiny.plain_bundle).exit_code == 0
    monkeypatch.setenv("HANCLIP_RESIDENT_MIN_PHOTOS", "1")
    monkeypatch.setenv("HANCLIP_RESIDENT", "0")
    assert _json(cli, "바다", "--library", library)
    assert not (library / STARTING_FILE).exists()
    monkeypatch.setenv("HANCLIP_RESIDENT", "1")
    (library / STARTING_FILE).touch()  # another search is starting one right now
    assert _json(cli, "바다", "--library", library)
    time.sleep(1)
    assert not (library / SERVER_FILE).exists()
