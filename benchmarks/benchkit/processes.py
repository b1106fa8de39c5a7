"""Timing a child process alone, its peak RSS, and how much of the machine other jobs took.

The machine may be shared: every figure comes with the load that others put on it meanwhile
(`/proc/stat` busy time less ours, busy loops that measure the cores still free, the load
average), so that a slow figure can be told apart from a slow neighbour.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_STARTED = time.perf_counter()


class BenchmarkError(RuntimeError):
    """A measurement could not be made (a command failed, a result was incomplete)."""


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds only the report."""
    elapsed = time.perf_counter() - _STARTED
    print(f"[{elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


@dataclass(frozen=True)
class ProcessRun:
    """One child process, measured alone."""

    wall_s: float
    cpu_s: float  # user + system, all its threads
    peak_rss_bytes: int
    stdout: str
    stderr: str


# Runs in a small, fresh interpreter that forks and execs the command. Linux carries the RSS
# high-water mark of the pre-exec image into the child's ru_maxrss, so a command spawned
# straight from this (gigabyte-sized) process would report this process's peak as its own.
_LAUNCHER = """
import json, os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as f:
    json.dump({"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
               "maxrss_kb": usage.ru_maxrss, "exit": os.waitstatus_to_exitcode(status)}, f)
"""


def run_process(
    cmd: Sequence[str],
    env: dict[str, str],
    watch: Callable[[float, int], None] | None = None,
    interval_s: float = 0.05,
) -> ProcessRun:
    """Run `cmd` to completion: wall time from spawn to exit, CPU time and peak RSS of that
    process alone (wait4 in the launcher; RUSAGE_CHILDREN would be a running maximum).
    `watch`, if given, is called every `interval_s` with the seconds since the spawn and the
    launcher's pid (the command is its only child)."""
    with tempfile.TemporaryDirectory() as tmp:
        usage_path, out_path, err_path = (Path(tmp) / n for n in ("usage", "out", "err"))
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            # Files, not pipes: nothing blocks on a reader, and no reader thread competes.
            launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(usage_path)]
            start = time.perf_counter()
            proc = subprocess.Popen([*launcher, *cmd], stdout=out, stderr=err, env=env)
            while watch is not None and proc.poll() is None:
                time.sleep(interval_s)
                watch(time.perf_counter() - start, proc.pid)
            proc.wait()
        stdout = out_path.read_text("utf-8", "replace")
        stderr = err_path.read_text("utf-8", "replace")
        usage = json.loads(usage_path.read_text()) if usage_path.exists() else {"exit": -1}
    if usage["exit"] != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise BenchmarkError(f"{' '.join(cmd)} exited {usage['exit']}:\n{tail}")
    return ProcessRun(
        wall_s=usage["wall_s"],
        cpu_s=usage["cpu_s"],
        peak_rss_bytes=usage["maxrss_kb"] * 1024,  # kilobytes on Linux
        stdout=stdout,
        stderr=stderr,
    )


def import_log(stderr: str) -> list[tuple[str, int]]:
    """(name, cumulative microseconds) of each import in a `python -X importtime` log; the
    name keeps its leading spaces, one per level of nesting."""
    found = []
    for line in stderr.splitlines():
        fields = line.split("|")
        if line.startswith("import time:") and len(fields) == 3 and fields[1].strip().isdigit():
            found.append((fields[2], int(fields[1])))
    return found


def proc_status_bytes(field: str, pid: int | str = "self") -> int | None:
    """A kB field of /proc/PID/status (VmRSS, VmHWM: the peak RSS, RssFile) in bytes; None
    off Linux or once the process has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kb = next(
        (line.split()[1] for line in status.splitlines() if line.startswith(field + ":")), None
    )
    return None if kb is None else int(kb) * 1024


def machine_busy_s() -> float:
    """CPU seconds all cores have been busy since boot, every process's (/proc/stat);
    time stolen by the hypervisor counts as busy: it was not ours either."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by `pid` and its children (the launcher and its command)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    total = 0
    for member in [pid, *children]:
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            continue  # already gone
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
    return total / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds so far: the whole machine's busy time, the command's, and this process's."""

    machine_s: float
    command_s: float
    own_s: float

    @classmethod
    def take(cls, pid: int) -> CpuSample | None:
        if not Path("/proc/stat").is_file():
            return None  # not Linux: other jobs' load stays unknown
        return cls(machine_busy_s(), tree_cpu_s(pid), time.process_time())


def others_cores(start: CpuSample, end: CpuSample, wall_s: float) -> float:
    """Cores that other jobs kept busy between two samples: the machine's busy time less
    the command's and this process's."""
    machine = end.machine_s - start.machine_s
    ours = (end.command_s - start.command_s) + (end.own_s - start.own_s)
    return max(0.0, (machine - ours) / wall_s)


def with_others(command: Callable[[], ProcessRun]) -> tuple[ProcessRun, float | None]:
    """Run one command; also how many cores other jobs kept busy meanwhile (None off Linux).
    The launcher's own few milliseconds of start-up count as theirs."""
    if not Path("/proc/stat").is_file():
        return command(), None
    start = CpuSample(machine_busy_s(), 0.0, time.process_time())
    run = command()
    end = CpuSample(machine_busy_s(), run.cpu_s, time.process_time())
    return run, others_cores(start, end, run.wall_s)


_SPIN = """
import sys, time
cpu, start = time.process_time(), time.perf_counter()
while time.perf_counter() - start < float(sys.argv[1]):
    pass
print(time.process_time() - cpu)
"""


def cores_available(cores: int, seconds: float = 1.0) -> float:
    """How many cores this benchmark could get right now: `cores` busy loops run for
    `seconds`, and the CPU time they obtained is summed. On a shared machine, other jobs
    take the rest, and every figure measured meanwhile pays for it."""
    spinners = [
        subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _SPIN, str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(cores)
    ]
    return sum(float(p.communicate()[0]) for p in spinners) / seconds


@dataclass(frozen=True)
class LoadSummary:
    """The machine's load while the benchmark ran (it is shared)."""

    cores_available: dict[str, float]  # moment -> cores that busy loops obtained
    at_start_1_5_15: tuple[float, ...]
    at_end_1_5_15: tuple[float, ...]
    during_1min_min: float
    during_1min_median: float
    during_1min_max: float


class LoadSampler:
    """Samples the 1-minute load average in a thread: the machine is shared, and a figure
    taken while others' jobs ran must say so."""

    def __init__(self, cores: int, interval_s: float = 2.0) -> None:
        self.cores = cores
        self.interval_s = interval_s
        self.at_start = os.getloadavg()
        self.samples: list[float] = [self.at_start[0]]
        self.free_cores: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def probe(self, moment: str) -> None:
        """Record how many cores a busy loop can get now (see `cores_available`)."""
        self.free_cores[moment] = round(cores_available(self.cores), 2)

    def summary(self) -> LoadSummary:
        return LoadSummary(
            cores_available=dict(self.free_cores),
            at_start_1_5_15=tuple(round(v, 2) for v in self.at_start),
            at_end_1_5_15=tuple(round(v, 2) for v in os.getloadavg()),
            during_1min_min=round(min(self.samples), 2),
            during_1min_median=round(median(self.samples), 2),
            during_1min_max=round(max(self.samples), 2),
        )
