"""A real `hanclip serve` process for the API and browser tests: started on a free port, its URL
read from its first line of output, stopped at the end."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Served:
    url: str  # http://127.0.0.1:PORT/
    port: int
    library: Path
    photos: Path
    process: subprocess.Popen
    output: list[str]  # the lines it printed so far (stdout and stderr)

    def api(self, path: str) -> str:
        return self.url.rstrip("/") + path


def serve_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        HANCLIP_CACHE=str(cache),
        HANCLIP_DEVICE="cpu",
        HANCLIP_FAST_CLI="1",
    )
    env.pop("HANCLIP_MODEL", None)
    return env


@contextmanager
def running_server(
    library: Path,
    photos: Path,
    cache: Path,
    extra: Sequence[str] = (),
    timeout: float = 120.0,
) -> Iterator[Served]:
    """`hanclip serve --library LIBRARY --port 0 EXTRA...` until the block ends."""
    command = [
        sys.executable,
        "-m",
        "hanclip_cli",
        "serve",
        "--library",
        str(library),
        "--port",
        "0",
        *extra,
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        env={**serve_env(cache), "COLUMNS": "400"},
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
    url = None
    try:
        while url is None:
            line = lines.get(timeout=timeout)
            if line is None:
                raise RuntimeError("hanclip serve exited:\n" + "\n".join(output))
            if line.startswith("serving "):
                url = line.split(" at ", 1)[1].split()[0]
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        yield Served(url, port, library, photos, process, output)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
