"""A `hanclip serve` process for the duration of a block, as a benchmark talks to it."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from benchkit.processes import BenchmarkError, proc_status_bytes
from hanclip_eval.server_process import ServerDidNotStart, spawned_server

SERVER_START_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Server:
    url: str
    pid: int
    spawned: float  # perf_counter at spawn
    announced_s: float  # spawn to the "serving ... at URL" line
    output: list[str] = field(default_factory=list)  # its lines so far, stdout and stderr

    def since_spawn(self) -> float:
        return time.perf_counter() - self.spawned

    def peak_rss_mb(self) -> float | None:
        """Its high-water mark so far; None off Linux or once it has stopped."""
        peak = proc_status_bytes("VmHWM", self.pid)
        return None if peak is None else peak / 1024**2


@contextmanager
def running_server(
    args: Sequence[str], env: dict[str, str], timeout_s: float = SERVER_START_TIMEOUT_S
) -> Iterator[Server]:
    """`hanclip serve --port 0 ARGS...` until the block ends."""
    try:
        with spawned_server(args, env=env, timeout_s=timeout_s) as spawned:
            yield Server(
                spawned.url,
                spawned.process.pid,
                spawned.spawned_at,
                spawned.started_s,
                spawned.output,
            )
    except ServerDidNotStart as exc:
        raise BenchmarkError(str(exc)) from None
