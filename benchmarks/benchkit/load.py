"""What a load benchmark keeps while many clients talk to a server: each request's latency by
endpoint, every failure in words, and the server process's memory and file handles over time.

A failure is anything but the answer asked for (a status, a body that does not hold what it
should, a connection error, a timeout): `Tally.failed`, counted per endpoint, the first few
messages kept for the report.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchkit.processes import proc_status_bytes

MESSAGES_KEPT = 10


class RequestFailed(Exception):
    """A request whose answer was not the one asked for; the message says how."""


@dataclass(frozen=True)
class EndpointFigures:
    """One kind of request over the run: the client's wall time per answered request."""

    key: str
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass
class Tally:
    """Latencies (seconds) and failures by endpoint key, as the clients report them."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    messages: list[str] = field(default_factory=list)
    hang_ups: int = 0  # downloads the client dropped on purpose, mid-way

    def answered(self, key: str, seconds: float) -> None:
        self.latencies[key].append(seconds)

    def failed(self, key: str, message: str) -> None:
        self.errors[key] += 1
        if len(self.messages) < MESSAGES_KEPT:
            self.messages.append(f"{key}: {message}")

    @property
    def requests(self) -> int:
        """Answered, failed, or dropped on purpose."""
        return sum(map(len, self.latencies.values())) + self.hang_ups + self.error_count

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def figures(self, keys: tuple[str, ...]) -> tuple[EndpointFigures, ...]:
        """One row per key, in that order (a key never asked: no latency)."""
        rows = []
        for key in keys:
            ms = np.asarray(self.latencies.get(key, ()), dtype=np.float64) * 1000
            p50, p99, top = (
                (float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), float(ms.max()))
                if ms.size
                else (None, None, None)
            )
            rows.append(EndpointFigures(key, int(ms.size), self.errors.get(key, 0), p50, p99, top))
        return tuple(rows)


def open_fds(pid: int) -> int | None:
    """File descriptors `pid` holds now (Linux); None once it has exited, or off Linux."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@dataclass(frozen=True)
class MemoryFigures:
    """The server's resident memory over the run (VmRSS, sampled), and its growth from the
    first window of the run to the last (each `window_s` long: a minute, or a third of a
    shorter run): the peak of the last over the peak of the first."""

    window_s: float
    samples: int
    first_window_mb: float
    last_window_mb: float
    peak_mb: float

    @property
    def growth_percent(self) -> float:
        return 100 * (self.last_window_mb / self.first_window_mb - 1)


class RssSampler:
    """VmRSS of `pid` every `interval_s`, on the event loop (reading /proc is a few
    microseconds), from `start()` until `stop()`."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, int]] = []  # (seconds since start, bytes)
        self._task: asyncio.Task | None = None

    def _sample(self, started: float) -> None:
        rss = proc_status_bytes("VmRSS", self.pid)
        if rss is not None:
            self.samples.append((time.perf_counter() - started, rss))

    async def _run(self) -> None:
        started = time.perf_counter()
        while True:
            self._sample(started)
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def figures(self, run_s: float, window_s: float = 60.0) -> MemoryFigures | None:
        """None without samples (not Linux, or the server was gone)."""
        if not self.samples:
            return None
        window = min(window_s, run_s / 3)
        first = [b for t, b in self.samples if t <= window] or [self.samples[0][1]]
        last = [b for t, b in self.samples if t >= run_s - window] or [self.samples[-1][1]]
        mb = 1024**2
        peak = max(b for _, b in self.samples)
        return MemoryFigures(window, len(self.samples), max(first) / mb, max(last) / mb, peak / mb)


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of `pid`, all its threads; None once it has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
