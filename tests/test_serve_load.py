"""`hanclip serve` under load: the load benchmark's short mode, the bound on requests at once
(`guard.Throttle`: a wait, else a 503 in one line of JSON with Retry-After, never a crash),
and downloads dropped mid-way (nothing left behind: no file handle, no temporary file).

No timing is asserted: the load targets live in benchmarks/serve_load.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from benchkit.load import RssSampler, Tally
from benchscripts import load_script
from served import serve_env

from hanclip_cli.serve.guard import Limits, Throttle
from hanclip_eval import server_process
from hanclip_eval.tiny_models import write_photo_folder
from hanclip_library.thumbnails import THUMBNAILS_DIR
from hanclip_model.files import TMP_SUFFIX

bench = load_script("serve_load.py", "serve_load")
BIG_PHOTO_MB = 32  # more than the kernel buffers a stalled download between two sockets


# -- the benchmark's short mode -------------------------------------------------------


def test_short_load_run_has_no_errors_and_sees_every_commit(tmp_path: Path) -> None:
    """A real server, a real `hanclip watch`, four clients for five seconds."""
    out = tmp_path / "load.json"
    assert bench.main(["--short", "--work", str(tmp_path / "work"), "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["errors"] == 0, figures["error_messages"]
    assert figures["server_error_lines"] == 0
    commits = figures["commits"]
    assert commits["made"] >= 1 and commits["seen"] == commits["made"]
    asked = {row["key"]: row["requests"] for row in figures["endpoints"]}
    timeline = figures["timeline"] == "asked"
    for key in bench.KEYS + bench.WRITER_KEYS:
        assert asked[key] > 0 or (key == "timeline" and not timeline), key
    assert figures["hang_ups"] > 0  # downloads dropped mid-way, none an error
    assert figures["memory"]["samples"] > 0 and figures["requests_per_s"] > 0


def test_arguments() -> None:
    _, sizes = bench.parse_args([])
    assert (sizes.clients, sizes.seconds, sizes.photos, sizes.tiny) == (16, 60.0, 10_000, False)
    _, sizes = bench.parse_args(["--short", "--clients", "2"])
    assert (sizes.clients, sizes.seconds, sizes.tiny) == (2, bench.SHORT.seconds, True)
    with pytest.raises(SystemExit):
        bench.parse_args(["--seconds", "600", "--copy-every", "1"])  # 600 photos to copy in


def test_tally_keeps_latencies_and_failures_by_endpoint() -> None:
    tally = Tally()
    for ms in range(1, 101):
        tally.answered("search", ms / 1000)
    tally.failed("search", "503 busy")
    tally.hang_ups += 2
    search, original = tally.figures(("search", "original"))
    assert (search.requests, search.errors) == (100, 1)
    assert (search.p50_ms, search.p99_ms, search.max_ms) == pytest.approx((50.5, 99.01, 100))
    assert (original.requests, original.p99_ms) == (0, None)
    assert tally.requests == 103 and tally.error_count == 1
    assert tally.messages == ["search: 503 busy"]


def test_memory_growth_is_the_last_window_over_the_first() -> None:
    sampler = RssSampler(pid=0)
    mb = 1024**2
    sampler.samples = [(0.0, 100 * mb), (3.0, 110 * mb), (6.0, 130 * mb), (9.5, 121 * mb)]
    memory = sampler.figures(run_s=12.0)  # windows of a third: 0-4 s and 8-12 s
    assert memory is not None and memory.window_s == 4.0
    assert (memory.first_window_mb, memory.last_window_mb, memory.peak_mb) == (110, 121, 130)
    assert memory.growth_percent == pytest.approx(10.0)
    assert RssSampler(pid=0).figures(run_s=12.0) is None


# -- Throttle, in-process -------------------------------------------------------------


class HeldApp:
    """An ASGI app whose answers wait until `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def __call__(self, scope, receive, send) -> None:
        self.started += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _ask(app) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    await app({"type": "http", "method": "GET", "path": "/"}, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def test_throttle_runs_a_few_queues_a_few_and_refuses_the_rest_in_json() -> None:
    async def scenario() -> None:
        held = HeldApp()
        throttle = Throttle(held, Limits(running=2, waiting=1, wait_s=30.0))
        running = [asyncio.ensure_future(_ask(throttle)) for _ in range(2)]
        waiting = asyncio.ensure_future(_ask(throttle))
        await asyncio.sleep(0.05)
        assert held.started == 2 and not waiting.done()
        status, headers, body = await asyncio.wait_for(_ask(throttle), 5)  # no room: at once
        assert status == 503 and headers[b"retry-after"] == b"1"
        assert headers[b"content-type"].startswith(b"application/json")
        assert b"\n" not in body and "busy" in json.loads(body)["error"]
        held.release.set()
        answers = await asyncio.gather(*running, waiting)
        assert [status for status, _, _ in answers] == [200, 200, 200]  # the waiter's turn
        assert (await _ask(throttle))[0] == 200  # every slot given back

    asyncio.run(scenario())


def test_throttle_refuses_a_request_that_waited_too_long() -> None:
    async def scenario() -> None:
        held = HeldApp()
        throttle = Throttle(held, Limits(running=1, waiting=4, wait_s=0.2))
        first = asyncio.ensure_future(_ask(throttle))
        await asyncio.sleep(0.05)
        status, headers, _ = await asyncio.wait_for(_ask(throttle), 5)
        assert status == 503 and b"retry-after" in headers
        held.release.set()
        assert (await first)[0] == 200
        assert (await _ask(throttle))[0] == 200

    asyncio.run(scenario())


# -- a real server: overload, and downloads dropped mid-way ----------------------------


@pytest.fixture(scope="module")
def big_library(tiny, tmp_path_factory: pytest.TempPathFactory, _cache_dir: Path):
    """(library, the big photo's path): three small photos and one of BIG_PHOTO_MB (a JPEG
    with bytes after its end marker, as some cameras write), indexed with the tiny bundle."""
    from conftest import index_once

    root = tmp_path_factory.mktemp("load")
    photos = root / "photos"
    small = write_photo_folder(photos, count=3)
    big = photos / "big.jpg"
    big.write_bytes(small[0].read_bytes() + bytes(BIG_PHOTO_MB * 1024 * 1024))
    library = root / "library"
    index_once(photos, library, tiny.plain_bundle, home=root / "home", cache=_cache_dir)
    return library, big.resolve()


@contextmanager
def serving(
    monkeypatch, library: Path, cache: Path, limits: Limits | None = None
) -> Iterator[server_process.SpawnedServer]:
    """`serve` (the function `hanclip serve` calls) in a child process, with `limits`."""
    given = "None" if limits is None else f"Limits{tuple(vars(limits).values())!r}"
    code = (
        "from pathlib import Path\n"
        "from hanclip_cli.serve.guard import Limits\n"
        "from hanclip_cli.serve.server import ServeOptions, serve\n"
        f"serve(ServeOptions(library=Path({str(library)!r}), port=0, limits={given}))\n"
    )
    monkeypatch.setattr(server_process, "serve_command", lambda args: [sys.executable, "-c", code])
    with server_process.spawned_server([], env=serve_env(cache), timeout_s=120) as server:
        yield server


def _photo_id(url: str, path: Path) -> int:
    body = httpx.get(url + "api/search", params={"q": "사진", "n": 10}, timeout=60).json()
    return next(hit["id"] for hit in body["results"] if hit["path"] == str(path))


def _stalled_download(port: int, photo_id: int) -> socket.socket:
    """A GET of an original whose answer this client stops reading after the status line:
    the server's writes block once the socket buffers are full, and its request stays open."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    request = f"GET /api/photos/{photo_id}/original HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    sock.sendall(request.encode())
    assert sock.recv(64).startswith(b"HTTP/1.1 200")
    return sock


def _fds(pid: int) -> dict[str, str]:
    fd = Path(f"/proc/{pid}/fd")
    links = {}
    for entry in fd.iterdir():
        try:
            links[entry.name] = str(entry.readlink())
        except OSError:
            continue  # closed meanwhile
    return links


def _settled_fds(pid: int, at_most: int, timeout_s: float = 20.0) -> dict[str, str]:
    """The server's descriptors once there are at most `at_most` (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while len(fds := _fds(pid)) > at_most and time.monotonic() < deadline:
        time.sleep(0.1)
    return fds


def _opened(pid: int, path: Path, expected: int, timeout_s: float = 20.0) -> int:
    """How many descriptors of the server have `path` open, once that is `expected` (or
    the timeout)."""
    deadline = time.monotonic() + timeout_s
    while (count := list(_fds(pid).values()).count(str(path))) != expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return count


def _no_error_in(output: list[str]) -> None:
    text = "\n".join(output)
    assert "Traceback" not in text and "error answering" not in text, text


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc")
def test_overload_waits_or_gets_a_503_and_the_server_keeps_answering(
    big_library, _cache_dir: Path, monkeypatch
) -> None:
    library, big = big_library
    limits = Limits(running=2, waiting=1, wait_s=60.0)
    with serving(monkeypatch, library, _cache_dir, limits) as server:
        url, pid = server.url, server.process.pid
        photo = _photo_id(url, big)
        before = len(_settled_fds(pid, 0, timeout_s=1.0))
        stalled = [_stalled_download(server.port, photo) for _ in range(limits.running)]

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                waiter = asyncio.ensure_future(client.get("/api/info"))
                await asyncio.sleep(0.5)  # in the queue now
                refused = await client.get("/api/search", params={"q": "바다"})
                assert not waiter.done()
                stalled.pop().close()  # a slot frees: the waiter's turn
                return [refused, await waiter]

        refused, waited = asyncio.run(burst())
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "busy" in refused.json()["error"] and "\n" not in refused.text
        assert waited.status_code == 200
        stalled.pop().close()
        for _ in range(5):  # answering as before
            answer = httpx.get(url + "api/search", params={"q": "바다 위 노을"}, timeout=60)
            assert answer.status_code == 200 and answer.json()["results"]
        assert len(_settled_fds(pid, before)) <= before
        assert server.process.poll() is None
    _no_error_in(server.output)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc")
def test_a_download_dropped_mid_way_leaves_nothing_behind(
    big_library, _cache_dir: Path, monkeypatch
) -> None:
    library, big = big_library
    with serving(monkeypatch, library, _cache_dir) as server:
        url, pid = server.url, server.process.pid
        photo = _photo_id(url, big)
        before = len(_settled_fds(pid, 0, timeout_s=1.0))
        for _ in range(6):  # originals: a first chunk read, then the connection dropped
            with (
                httpx.Client(base_url=url, timeout=60) as client,
                client.stream("GET", f"/api/photos/{photo}/original") as response,
            ):
                assert response.status_code == 200
                next(response.iter_raw())
        assert _opened(pid, big, 0) == 0  # each dropped download's file closed
        stalled = [_stalled_download(server.port, photo) for _ in range(3)]
        assert _opened(pid, big, 3) == 3  # open while it is sent
        for sock in stalled:
            sock.close()
        for size in ("grid", "large"):  # thumbnails asked for, the client gone before the answer
            for _ in range(3):
                sock = socket.create_connection(("127.0.0.1", server.port))
                path = f"/api/photos/{photo}/thumbnail?size={size}"
                sock.sendall(
                    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
                )
                sock.close()
        answer = httpx.get(url + f"api/photos/{photo}/thumbnail", timeout=60)
        assert answer.status_code == 200 and answer.content
        fds = _settled_fds(pid, before)
        assert len(fds) <= before
        assert str(big) not in fds.values()
        assert server.process.poll() is None
    assert not list((library / THUMBNAILS_DIR).rglob(f"*{TMP_SUFFIX}*"))
    _no_error_in(server.output)
