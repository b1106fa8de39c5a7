"""hanclip's commands as a user runs them, in caches and libraries under the work directory."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchkit.processes import BenchmarkError, CpuSample, ProcessRun, others_cores, run_process

# The naive contender runs in a fresh process through the entry script (`--naive-search`).
ENTRY_SCRIPT = Path(__file__).resolve().parents[1] / "speed.py"

FAST_IMAGE_ENV = "HANCLIP_FAST_IMAGE"
INDEX_BATCH = 32  # `hanclip index`'s default --batch-size: photos per commit
ISOLATED_KEYS = (
    "HANCLIP_CACHE",
    "HANCLIP_HOME",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)

# What the index benchmarks measure is embedding photos (their ceiling is decode + model): the
# text in photos is a pass of its own, measured by benchmarks/ocr_quality.py.
EMBEDDING_ONLY = ("--no-ocr",)


def isolated_env(work: Path) -> dict[str, str]:
    """Caches and libraries inside the work directory; no hub is ever asked."""
    env = dict(os.environ)
    for key in ("HANCLIP_MODEL", "HANCLIP_DEVICE", "HANCLIP_FAST_TEXT"):
        env.pop(key, None)  # the user's own settings would change what is measured
    values = (work / "cache", work / "home", work / "hf", "1", "1")
    env.update({key: str(value) for key, value in zip(ISOLATED_KEYS, values, strict=True)})
    return env


@contextmanager
def isolated_process(env: dict[str, str]) -> Iterator[None]:
    """This process's own model loads and exports use the work directory's caches, as its
    children do (`env` from `isolated_env`); the caller's environment comes back after."""
    keys = (*ISOLATED_KEYS, FAST_IMAGE_ENV)
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update({key: env[key] for key in ISOLATED_KEYS})
    os.environ.pop(FAST_IMAGE_ENV, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def default_work(name: str) -> Path:
    """A work directory kept in the user's cache, so that the next run reuses its inputs."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("hanclip-bench", appauthor=False)) / name


@contextmanager
def work_directory(explicit: Path | None) -> Iterator[Path]:
    """`--work` is kept (photos and bundle are reused); the default temp dir is removed."""
    if explicit is not None:
        yield explicit.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="hanclip-bench-") as tmp:
        yield Path(tmp)


def hanclip_command() -> list[str]:
    """The console script users run, next to this interpreter; else `python -m`."""
    script = Path(sys.executable).with_name("hanclip")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "hanclip_cli"]


def photo_rows(db: Path) -> int:
    """Photos in a library database, read-only; 0 while it is missing or busy (a poll)."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM photos").fetchone()[0])
    except sqlite3.Error:
        return 0


@dataclass
class IndexWatch:
    """Polled while `hanclip index` runs. Its library database appears once both models are
    loaded, which ends the start-up; each batch of photos is then one commit. The CPU
    samples at both ends tell how much of the machine other jobs took meanwhile."""

    db: Path
    opened_s: float | None = None
    commits: list[tuple[float, int]] = field(default_factory=list)
    opened_cpu: CpuSample | None = None
    committed_cpu: CpuSample | None = None

    def __call__(self, elapsed_s: float, pid: int) -> None:
        if self.opened_s is None:
            if self.db.exists():
                self.opened_s, self.opened_cpu = elapsed_s, CpuSample.take(pid)
            return
        count = photo_rows(self.db)
        if count and (not self.commits or count != self.commits[-1][1]):
            self.commits.append((elapsed_s, count))
            self.committed_cpu = CpuSample.take(pid)

    def steady_photos_per_s(self, photos: int, batch: int) -> float | None:
        """Photos/s from the first full batch's commit to the last commit: the pipeline is
        full by then. Needs two full batches after the first (else None): with a partial
        last batch, decoding done during the first forward would flatter it."""
        if photos < 3 * batch or not self.commits or self.commits[-1][1] != photos:
            return None
        first = next(t for t, count in self.commits if count >= batch)
        return (photos - batch) / (self.commits[-1][0] - first)

    def others_cores(self) -> float | None:
        """Cores other jobs kept busy during the embedding phase; None when not observed."""
        if self.opened_cpu is None or self.committed_cpu is None or self.opened_s is None:
            return None
        wall = self.commits[-1][0] - self.opened_s
        return others_cores(self.opened_cpu, self.committed_cpu, wall) if wall > 0 else None

    def phase_s(self, photos: int, wall_s: float) -> float:
        """Library opened to last photo committed; when a poll missed either end, the start
        or the exit stands in, which can only make the phase longer, never flatter it."""
        opened = self.opened_s or 0.0
        done = self.commits[-1][0] if self.commits and self.commits[-1][1] == photos else wall_s
        return done - opened


@dataclass(frozen=True)
class Workspace:
    """hanclip's commands on one bundle, as a user runs them, writing under `root`."""

    root: Path
    bundle: Path
    env: dict[str, str]
    hanclip: list[str] = field(default_factory=hanclip_command)
    # False: `index` runs unpolled (scale.py times whole processes; polling would cost them).
    watch_index: bool = True

    def fresh(self, name: str) -> Path:
        path = self.root / "runs" / name
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def index(
        self,
        folder: Path,
        library: Path,
        device: str | None = "cpu",
        options: Sequence[str] = (),
    ) -> tuple[ProcessRun, IndexWatch | None]:
        """`hanclip index FOLDER --json OPTIONS...`."""
        cmd = [*self.hanclip, "index", str(folder), "--library", str(library)]
        cmd += ["--model", str(self.bundle), "--json", *options]
        if device:
            cmd += ["--device", device]
        watch = IndexWatch(library / "library.db") if self.watch_index else None
        return run_process(cmd, self.env, watch), watch

    def search(
        self, query: str, library: Path, *options: str, env: dict[str, str] | None = None
    ) -> ProcessRun:
        """`hanclip search QUERY --json OPTIONS...`; `env` adds to the workspace's."""
        cmd = [*self.hanclip, "search", query, "--library", str(library)]
        cmd += ["--model", str(self.bundle), "--json", *options]
        return run_process(cmd, {**self.env, **(env or {})})

    def with_import_log(self, *args: str) -> ProcessRun:
        """`hanclip ARGS...` under `python -X importtime` (the log goes to stderr: see
        `processes.import_log`)."""
        script = self.hanclip[1:] if self.hanclip[0] == sys.executable else self.hanclip
        return run_process([sys.executable, "-X", "importtime", *script, *args], self.env)

    def naive_search(self, query: str, vectors: Path, paths: Path) -> ProcessRun:
        """`speedbench.naive.naive_search` in a fresh process."""
        cmd = [sys.executable, str(ENTRY_SCRIPT), "--naive-search"]
        return run_process([*cmd, str(self.bundle), str(vectors), str(paths), query], self.env)


def check_index_counts(run: ProcessRun, expected: int) -> None:
    """`hanclip index --json` added every photo and failed none, or the run is void."""
    counts = json.loads(run.stdout)
    if counts.get("added") != expected or counts.get("failed"):
        raise BenchmarkError(f"index added {counts.get('added')} of {expected}: {counts}")
