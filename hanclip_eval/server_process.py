"""A `hanclip serve` in a child process, for the scripts that need one running: the tests, the
screenshot script, the latency benchmark. It listens on a free port (`--port 0`), and the URL
is read from its first line (`serving LIB (N photos) at URL (Ctrl-C stops)`).

Also the flags a headless Debian Chromium needs to look at the page on a machine without a
display or a network (the tests and the screenshot script drive it through Playwright).
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

CHROMIUM = "/usr/bin/chromium"
# Root in a container needs --no-sandbox; the rest keep Chromium from reaching for Google's
# hosts (refused on a closed network, and slow to give up) or a GPU.
HEADLESS_CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


class ServerDidNotStart(RuntimeError):
    """The child exited, or printed no URL in time; the message holds what it printed."""


@dataclass
class SpawnedServer:
    url: str  # http://127.0.0.1:PORT/
    port: int
    process: subprocess.Popen
    spawned_at: float  # time.perf_counter() when the process was started
    started_s: float  # from then to its URL line
    output: list[str] = field(default_factory=list)  # its lines so far, stdout and stderr


def serve_command(args: Sequence[str]) -> list[str]:
    """`hanclip serve --port 0 ARGS...` with this interpreter."""
    return [sys.executable, "-m", "hanclip_cli", "serve", "--port", "0", *args]


@contextmanager
def spawned_server(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout_s: float = 120.0
) -> Iterator[SpawnedServer]:
    """`hanclip serve --port 0 ARGS...` until the block ends (then terminated, killed if it
    does not stop within 20 s). Its output is read all along, so it never blocks on a pipe."""
    spawned_at = time.perf_counter()
    process = subprocess.Popen(
        serve_command(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        env={**(env or {}), "PYTHONUNBUFFERED": "1"} if env is not None else None,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line.rstrip("\n"))
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        url = _await_url(lines, output, spawned_at + timeout_s)
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        started_s = time.perf_counter() - spawned_at
        yield SpawnedServer(url, port, process, spawned_at, started_s, output)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _await_url(lines: queue.Queue[str | None], output: list[str], deadline: float) -> str:
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.perf_counter()))
        except queue.Empty:
            raise ServerDidNotStart(
                "hanclip serve printed no URL in time:\n" + "\n".join(output[-15:])
            ) from None
        if line is None:
            raise ServerDidNotStart("hanclip serve exited:\n" + "\n".join(output[-15:]))
        if line.startswith("serving ") and " at " in line:
            return line.split(" at ", 1)[1].split()[0]
