"""A real `hanclip serve` process for the API and browser tests (hanclip_eval.server_process),
with the tests' offline environment."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hanclip_eval.server_process import spawned_server


@dataclass
class Served:
    url: str  # http://127.0.0.1:PORT/
    port: int
    library: Path
    photos: Path
    output: list[str]  # the lines it printed so far (stdout and stderr)
    pid: int | None = None

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
        COLUMNS="400",
    )
    env.pop("HANCLIP_MODEL", None)
    return env


@contextmanager
def running_server(
    library: Path, photos: Path, cache: Path, extra: Sequence[str] = ()
) -> Iterator[Served]:
    """`hanclip serve --library LIBRARY --port 0 EXTRA...` until the block ends."""
    args = ["--library", str(library), *extra]
    with spawned_server(args, env=serve_env(cache)) as server:
        yield Served(server.url, server.port, library, photos, server.output, server.process.pid)
