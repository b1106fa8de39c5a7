"""The scale benchmark's parts (`benchmarks/scale.py`): fabricated libraries of 100k and 1M
photos, and a hanclip checkout measured on them from the outside.

Everything done to a library goes through the measured checkout's own commands (`python -m
hanclip_cli` with PYTHONPATH=CHECKOUT) or through plain SQL that holds on schema 4 and on
anything a later migration adds: a library is fabricated at schema 4 and migrated by the
first `hanclip index` the measured checkout runs on it.

A fabricated library: `size` rows with 512-d (the bundle's raw image dimension) random unit
embeddings drawn around a few hundred centres. The first min(size, real_files) rows are real
small files on disk (tiny JPEGs, each with its own comment segment, so each file is distinct),
with each file's real size, mtime_ns and sha256: a re-index of their root finds every one
unchanged. The other rows lie under SYNTHETIC_ROOT, a folder that exists nowhere and that no
measured `index` walks (a walked root would drop them as removed).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from speedbench.processes import (
    BenchmarkError,
    ProcessRun,
    log,
    median,
    run_process,
    with_others,
)

FORMAT = 1  # of the fabricated libraries and files: bump when what is fabricated changes
REAL_FILES = 100_000
FOLDERS = 100  # the real files' subfolders
SYNTHETIC_ROOT = "/hanclip-scale-synthetic"  # rows without files; never indexed
CENTRES = 256  # the embeddings' clusters
SPREAD = 1.5  # noise around a centre, relative to the centre's length (both random normal)
PAGE = 10  # results per search: `-n 10`
RUNS = 7
REINDEX_RUNS = 3
PROBE_RUNS = 3
SERVER_START_TIMEOUT_S = 600.0
BATCH_ROWS = 10_000

# A search that neither asks a running `hanclip serve` nor starts one (serve/discovery.py).
ON_ITS_OWN = {"HANCLIP_VIA_SERVER": "0", "HANCLIP_RESIDENT": "0"}
SERVER_FILE = "serve.json"  # where a running server of the library announces itself
RESIDENT_WAIT_S = 600.0  # for the resident server to load the index and announce itself

# The cold search's target by library size: up to 100k photos 0.5 s, up to 1M 1 s.
COLD_TARGETS_S = ((100_000, 0.5), (1_000_000, 1.0))
# The no-op re-index's target, for exactly this many real files.
REINDEX_TARGET_FILES = 100_000
REINDEX_TARGET_S = 2.0

# Schema 4 of `hanclip_library/migrations.py`, in plain SQL (the indexes are created after the
# rows, which is faster and gives the same schema).
SCHEMA_VERSION = 4
_TABLES = (
    "CREATE TABLE photos (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, "
    "size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, "
    "width INTEGER, height INTEGER, taken_at TEXT, embedding BLOB NOT NULL, indexed_at TEXT)",
    "CREATE TABLE failures (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
    "error TEXT, failed_at TEXT)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE offline_folders (path TEXT PRIMARY KEY, reason TEXT NOT NULL, "
    "photos INTEGER NOT NULL, since TEXT NOT NULL)",
)
_INDEXES = (
    "CREATE UNIQUE INDEX idx_photos_path ON photos (path)",
    "CREATE INDEX idx_photos_sha256 ON photos (sha256)",
    "CREATE INDEX idx_photos_taken_at ON photos (taken_at)",
    "CREATE INDEX idx_photos_date ON photos (taken_at, mtime_ns)",
)


# -- the measured checkout ---------------------------------------------------------------


@dataclass(frozen=True)
class Checkout:
    """A hanclip source tree, run as `python -m hanclip_cli` with PYTHONPATH set to it."""

    path: Path
    commit: str  # short HEAD, "+changes" when its product files differ from it
    key: str  # names its measured libraries: the path and HEAD

    @classmethod
    def at(cls, path: Path) -> Checkout:
        path = path.resolve()
        if not (path / "hanclip_cli" / "__main__.py").is_file():
            raise BenchmarkError(f"{path} is not a hanclip checkout (no hanclip_cli/__main__.py)")
        head = _git(path, "rev-parse", "--short", "HEAD") or "unknown"
        changes = _git(path, "status", "--porcelain", "--", "hanclip_cli", "hanclip_model")
        commit = f"{head}+changes" if changes else head
        digest = hashlib.sha1(f"{path}\0{head}".encode()).hexdigest()[:10]
        return cls(path, commit, f"{head}-{digest}")

    @property
    def label(self) -> str:
        return f"{self.path} @ {self.commit}"

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """`base` with this checkout first on the path; PYTHONSAFEPATH keeps the current
        directory (another checkout, perhaps) off it."""
        return {**base, "PYTHONPATH": str(self.path), "PYTHONSAFEPATH": "1"}

    @staticmethod
    def hanclip() -> list[str]:
        return [sys.executable, "-m", "hanclip_cli"]


def _git(path: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True)
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


# -- real small files --------------------------------------------------------------------


def template_jpeg(side: int = 64) -> bytes:
    """A small valid JPEG (a few hundred bytes)."""
    from PIL import Image

    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 255 - ramp[None, :]), -1)
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, "JPEG", quality=50)
    return out.getvalue()


def unique_jpeg(template: bytes, number: int) -> bytes:
    """`template` with a comment segment (COM) naming `number` after its SOI marker: a valid
    JPEG whose bytes, and so sha256, no other number's copy shares."""
    payload = f"hanclip-scale {number}".encode()
    return (
        template[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + template[2:]
    )


@dataclass(frozen=True)
class RealFile:
    path: str
    size: int
    mtime_ns: int
    sha256: str


def real_file_path(root: Path, number: int, count: int) -> Path:
    per_folder = max(1, -(-count // FOLDERS))
    return root / f"d{number // per_folder:03d}" / f"p{number:06d}.jpg"


def ensure_real_files(work: Path, count: int) -> tuple[Path, list[RealFile]]:
    """`count` distinct small JPEGs in FOLDERS subfolders of one root, written once per work
    directory (a marker beside the root says they are whole); their stat and sha256."""
    root = work / f"files-{count}-f{FORMAT}"
    marker = root.with_name(root.name + ".complete")
    template = template_jpeg()
    if not marker.is_file():
        log(f"files: writing {count:,} small JPEGs under {root}")
        shutil.rmtree(root, ignore_errors=True)
        for number in range(count):
            path = real_file_path(root, number, count)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(unique_jpeg(template, number))
        marker.write_text(json.dumps({"count": count, "format": FORMAT}))
    files = []
    for number in range(count):
        path = real_file_path(root, number, count)
        data = unique_jpeg(template, number)
        st = os.stat(path)
        if st.st_size != len(data):
            raise BenchmarkError(f"{path} changed since it was written: remove {marker}")
        files.append(
            RealFile(str(path), st.st_size, st.st_mtime_ns, hashlib.sha256(data).hexdigest())
        )
    return root, files


# -- the fabricated library --------------------------------------------------------------


def unit_embeddings(rng: np.random.Generator, centres: np.ndarray, count: int) -> np.ndarray:
    """`count` unit vectors, each around one of `centres` (clustered, as photos are)."""
    which = rng.integers(0, len(centres), count)
    noise = rng.standard_normal((count, centres.shape[1]), dtype=np.float32) * SPREAD
    vectors = centres[which] + noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def synthetic_path(number: int) -> str:
    return f"{SYNTHETIC_ROOT}/{number // 1000:04d}/{number:07d}.jpg"


def fabricate_library(
    directory: Path, size: int, files: Sequence[RealFile], dim: int, seed: int = 0
) -> None:
    """A schema-4 `library.db` in `directory` (made in a staging folder, then renamed in):
    one row per real file, then synthetic rows up to `size`."""
    if len(files) > size:
        raise ValueError(f"{len(files)} real files for a library of {size}")
    staging = directory.with_name(directory.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CENTRES, dim), dtype=np.float32)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    conn = sqlite3.connect(str(staging / "library.db"))
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        with conn:
            for statement in _TABLES:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                [json.dumps(SCHEMA_VERSION)],
            )
        for start in range(0, size, BATCH_ROWS):
            count = min(BATCH_ROWS, size - start)
            vectors = unit_embeddings(rng, centres, count)
            rows = []
            for offset in range(count):
                number = start + offset
                blob = vectors[offset].tobytes()
                if number < len(files):
                    f = files[number]
                    rows.append((f.path, f.size, f.mtime_ns, f.sha256, 64, 64, blob, now))
                else:
                    mtime = 1_600_000_000_000_000_000 + number * 1_000_000_000
                    row = (synthetic_path(number), 3_500_000, mtime, f"{number:064x}")
                    rows.append((*row, 4032, 3024, blob, now))
            with conn:
                conn.executemany(
                    "INSERT INTO photos (path, size, mtime_ns, sha256, width, height, taken_at, "
                    "embedding, indexed_at) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                    rows,
                )
            if start and start % 200_000 == 0:
                log(f"library: {start:,} of {size:,} rows")
        with conn:
            for statement in _INDEXES:
                conn.execute(statement)
        conn.execute("PRAGMA journal_mode=WAL")  # as `hanclip index` leaves a library
    finally:
        conn.close()
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)


def library_rows(directory: Path) -> int:
    conn = sqlite3.connect(f"file:{directory / 'library.db'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM photos").fetchone()[0])
    finally:
        conn.close()


def raw_dim(directory: Path) -> int:
    """The length of the stored embeddings of a library (float32)."""
    conn = sqlite3.connect(f"file:{directory / 'library.db'}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT length(embedding) FROM photos LIMIT 1").fetchone()
    finally:
        conn.close()
    if row is None:
        raise BenchmarkError(f"no photo in {directory}")
    return int(row[0]) // 4


# -- running the checkout ----------------------------------------------------------------


@dataclass(frozen=True)
class Runner:
    """The measured checkout's commands on one bundle, in an isolated environment."""

    checkout: Checkout
    bundle: Path
    env: dict[str, str]

    def index(self, folder: Path, library: Path) -> tuple[ProcessRun, dict[str, int]]:
        cmd = [*self.checkout.hanclip(), "index", str(folder), "--library", str(library)]
        run = run_process([*cmd, "--model", str(self.bundle), "--json"], self.env)
        return run, json.loads(run.stdout)

    def search(
        self, query: str, library: Path, *, on_its_own: bool = False
    ) -> tuple[ProcessRun, list[dict]]:
        """`on_its_own`: neither asking a running server nor starting one (a checkout from
        before issue 16 ignores the two variables and always searches on its own)."""
        cmd = [*self.checkout.hanclip(), "search", query, "--library", str(library)]
        cmd += ["--model", str(self.bundle), "--json", "-n", str(PAGE)]
        env = {**self.env, **(ON_ITS_OWN if on_its_own else {})}
        run = run_process(cmd, env)
        hits = json.loads(run.stdout)
        if not hits:
            raise BenchmarkError(f"hanclip search {query!r} found nothing in {library}")
        return run, hits

    def probe(self, what: str, library: Path) -> dict[str, float | int | None]:
        """`_PROBE` in a fresh process: "load" or "sync" timed in process."""
        cmd = [sys.executable, "-c", _PROBE, what, str(library), str(self.bundle)]
        run = run_process(cmd, self.env)
        return json.loads(run.stdout.strip().splitlines()[-1])


# In a fresh process of the measured checkout: "load" times `load_index(directory)`; "sync"
# times `sync_index(directory, store, model, write=False)` (the freshness check and the load
# it makes), then the id read of the check before issue 16 (`store.ids()`, `labels`).
_PROBE = r"""
import json, sys, time
from pathlib import Path
what, directory, bundle = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
import hnswlib, numpy
from hanclip_library import vector_index
out = {}
if what == "load":
    start = time.perf_counter()
    vindex = vector_index.load_index(directory)
    out["load_s"] = time.perf_counter() - start
else:
    from hanclip_library.store import PhotoStore
    from hanclip_model import load_bundle
    model = load_bundle(bundle, device="cpu", few_texts=True)
    model.fingerprint
    store = PhotoStore(directory, create=False)
    start = time.perf_counter()
    vindex = vector_index.sync_index(directory, store, model, write=False)
    out["sync_s"] = time.perf_counter() - start
    try:
        start = time.perf_counter()
        store.ids()
        vindex.labels
        out["id_read_s"] = time.perf_counter() - start
    except AttributeError:
        out["id_read_s"] = None
out["vectors"] = None if vindex is None else len(vindex)
print(json.dumps(out))
"""


# -- figures -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """Several runs of one figure: p50 (the median), min and max, and every run."""

    p50: float
    min: float
    max: float
    runs: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            raise BenchmarkError("no run to summarise")
        return cls(median(values), float(min(values)), float(max(values)), tuple(values))


@dataclass(frozen=True)
class SizeFigures:
    photos: int
    real_files: int
    dim: int
    library: str
    library_origin: str  # "copied from the fabricated library" or "reused"
    db_mb: float
    hnsw_mb: float
    first_index_s: float  # the first `index` of this library by the checkout (migrates, builds)
    cold_search_s: Stat
    cold_rss_mb: Stat
    warm_search_ms: Stat
    load_index_s: Stat
    sync_index_s: Stat
    id_read_s: Stat | None  # store.ids() + labels; None when the checkout lacks them
    reindex_s: Stat
    reindex_counts: dict[str, int] = field(default_factory=dict)
    # Cores other processes kept busy during each cold search and re-index (the machine may
    # be shared); None off Linux.
    cold_others_cores: Stat | None = None
    reindex_others_cores: Stat | None = None
    # The same cold search processes while the resident server a first search started runs
    # (None: the checkout started none).
    resident_search_s: Stat | None = None
    resident_rss_mb: Stat | None = None

    @property
    def freshness_s(self) -> float:
        """What sync_index spends beyond loading the index: the freshness check."""
        return self.sync_index_s.p50 - self.load_index_s.p50


def cold_target_s(photos: int) -> float | None:
    for limit, seconds in COLD_TARGETS_S:
        if photos <= limit:
            return seconds
    return None


@dataclass(frozen=True)
class Verdict:
    label: str
    limit: str
    measured: str
    passes: bool | None  # None: no target at this size


def verdicts(figures: SizeFigures) -> list[Verdict]:
    cold = cold_target_s(figures.photos)
    found = []
    kinds = [("on its own", figures.cold_search_s)]
    if figures.resident_search_s is not None:
        kinds.append(("resident server up", figures.resident_search_s))
    for kind, stat in kinds:
        label = f"cold search p50 at {figures.photos:,}, {kind}"
        if cold is None:
            found.append(Verdict(label, "none", f"{stat.p50:.2f} s", None))
        else:
            found.append(Verdict(label, f"<= {cold:g} s", f"{stat.p50:.2f} s", stat.p50 <= cold))
    label = f"no-op re-index of {figures.real_files:,} files"
    measured = f"{figures.reindex_s.p50:.2f} s"
    if figures.real_files == REINDEX_TARGET_FILES:
        passes = figures.reindex_s.p50 < REINDEX_TARGET_S
        found.append(Verdict(label, f"< {REINDEX_TARGET_S:g} s", measured, passes))
    else:
        found.append(Verdict(label, f"none (target at {REINDEX_TARGET_FILES:,})", measured, None))
    return found


@dataclass(frozen=True)
class Report:
    checkout: str
    bundle: str
    cores: int
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float]
    work: str
    runs: int
    sizes: tuple[SizeFigures, ...]
    wall_s: float


def _row(label: str, stat: Stat, scale: float = 1.0, digits: int = 3) -> str:
    cells = (stat.p50 * scale, stat.min * scale, stat.max * scale)
    figures = "".join(f"{v:>10.{digits}f}" for v in cells)
    runs = " ".join(f"{v * scale:.{digits}f}" for v in stat.runs)
    return f"  {label:<44}{figures}{len(stat.runs):>6}   [{runs}]"


def format_report(report: Report) -> str:
    lines = [
        "hanclip at scale: fabricated libraries, the measured checkout run from outside",
        "=" * 100,
        f"checkout   {report.checkout}",
        f"bundle     {report.bundle}",
        f"machine    {report.cores} cores; load average (1/5/15 min) at start "
        f"{'/'.join(f'{v:.2f}' for v in report.load_start)}, at end "
        f"{'/'.join(f'{v:.2f}' for v in report.load_end)}",
        f"work dir   {report.work}; wall time {report.wall_s:.0f} s",
        "page cache: warm; after the first index, the library folder's files are read once",
        "cold search: a fresh `hanclip search QUERY --json -n 10` process, spawn to exit, one",
        "  distinct Korean query per run, after one untimed search; on its own: asking no",
        "  server and starting none; resident server up: the same processes once the first",
        "  search has started the background `hanclip serve` (issue 16), which they ask",
        "warm search: GET /api/search?q=QUERY&n=10 on a running `hanclip serve` of the library,",
        "  client wall time, after one untimed request, distinct queries",
    ]
    for size in report.sizes:
        synthetic = size.photos - size.real_files
        lines += [
            "",
            f"{size.photos:,} photos ({size.real_files:,} real small files + {synthetic:,} "
            f"rows without files), {size.dim}-d raw embeddings",
            f"  library {size.library} ({size.library_origin}): library.db {size.db_mb:,.0f} MB,"
            f" HNSW file {size.hnsw_mb:,.0f} MB",
            f"  first `hanclip index` of the real files in this run (on a fresh copy: migrates,"
            f" builds the HNSW index): {size.first_index_s:.1f} s",
            f"  {'figure':<44}{'p50':>10}{'min':>10}{'max':>10}{'runs':>6}",
            _row("cold search, on its own (s)", size.cold_search_s),
            _row("warm search via hanclip serve (ms)", size.warm_search_ms, digits=1),
            _row("load_index, fresh process (s)", size.load_index_s),
            _row("sync_index(write=False), fresh process (s)", size.sync_index_s),
        ]
        lines.append(
            f"  {'freshness check = sync_index - load_index (s)':<44}{size.freshness_s:>10.3f}"
        )
        if size.id_read_s is not None:
            lines.append(_row("id read: store.ids() + labels (s)", size.id_read_s))
        lines += [
            _row("peak RSS of the cold search (MB)", size.cold_rss_mb, digits=0),
        ]
        if size.resident_search_s is not None and size.resident_rss_mb is not None:
            lines += [
                _row("cold search, resident server up (s)", size.resident_search_s),
                _row("  its peak RSS (MB)", size.resident_rss_mb, digits=0),
            ]
        lines += [
            _row(f"no-op re-index of {size.real_files:,} files (s)", size.reindex_s),
            f"  re-index counts: {size.reindex_counts}",
        ]
        for label, others in (
            ("cold searches", size.cold_others_cores),
            ("re-indexes", size.reindex_others_cores),
        ):
            if others is not None:
                lines.append(
                    f"  other processes kept {others.p50:.2f} cores busy during the {label}"
                    f" (p50; max {others.max:.2f})"
                )
    lines += ["", "Targets:"]
    for size in report.sizes:
        for verdict in verdicts(size):
            outcome = {True: "PASS", False: "FAIL", None: "n/a "}[verdict.passes]
            limit = f"{verdict.label:<44} {verdict.limit:<28}"
            lines.append(f"  {limit} {outcome}  (measured {verdict.measured})")
    return "\n".join(lines) + "\n"


def figures_json(report: Report) -> str:
    data = asdict(report)
    for size, row in zip(report.sizes, data["sizes"], strict=True):
        row["freshness_s"] = size.freshness_s
        row["targets"] = [asdict(v) for v in verdicts(size)]
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# -- one size ----------------------------------------------------------------------------


def file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6 if path.is_file() else 0.0


def warm_page_cache(library: Path) -> int:
    """Read every file of the library folder once (into the OS page cache); bytes read."""
    total = 0
    for path in sorted(p for p in library.iterdir() if p.is_file()):
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                total += len(chunk)
    return total


def hnsw_mb(library: Path) -> float:
    return sum(file_mb(p) for p in library.glob("hnsw-*.bin"))


def check_noop(counts: dict[str, int], real_files: int) -> None:
    """A re-index of unchanged files: nothing added, updated, moved, removed or failed."""
    changed = {k: counts.get(k) for k in ("added", "updated", "moved", "removed", "failed")}
    if any(changed.values()) or counts.get("unchanged") != real_files:
        raise BenchmarkError(f"the re-index was not a no-op over {real_files} files: {counts}")


def prepare_library(
    work: Path, runner: Runner, size: int, real_files: int, dim: int, fresh: bool
) -> tuple[Path, Path, list[RealFile], str]:
    """The fabricated library (cached per size and format) and the measured checkout's copy
    of it (cached per checkout: the HNSW index it builds is kept). Returns the copy, the real
    files' root, the files, and where the copy came from."""
    root, files = ensure_real_files(work, min(size, real_files))
    pristine = work / "fabricated" / f"lib-{size}-r{len(files)}-d{dim}-f{FORMAT}"
    if not (pristine / "library.db").is_file():
        log(f"library: fabricating {size:,} rows in {pristine}")
        fabricate_library(pristine, size, files, dim)
    measured = work / "measured" / runner.checkout.key / pristine.name
    if fresh or not (measured / "library.db").is_file():
        log(f"library: copying {pristine.name} for {runner.checkout.commit}")
        shutil.rmtree(measured, ignore_errors=True)
        measured.mkdir(parents=True)
        partial = measured / "library.db.copying"  # an interrupted copy is never reused
        shutil.copyfile(pristine / "library.db", partial)
        partial.rename(measured / "library.db")
        origin = "copied from the fabricated library"
    else:
        origin = "reused: this checkout's earlier copy"
    return measured, root, files, origin


def measure_size(
    work: Path,
    runner: Runner,
    size: int,
    queries: Sequence[str],
    *,
    real_files: int = REAL_FILES,
    dim: int,
    reindex_runs: int = REINDEX_RUNS,
    probe_runs: int = PROBE_RUNS,
    fresh: bool = False,
) -> SizeFigures:
    """Every figure for one size. `queries`: 1 + runs texts for the cold searches, 1 + runs
    more for the warm ones (the first of each untimed)."""
    runs = (len(queries) - 2) // 2
    cold_texts, warm_texts = queries[: runs + 1], queries[runs + 1 :]
    library, root, files, origin = prepare_library(work, runner, size, real_files, dim, fresh)

    log(f"{size:,}: first `hanclip index {root}` (migrates; builds the HNSW index if missing)")
    first, counts = runner.index(root, library)
    check_noop(counts, len(files))
    log(f"{size:,}: first index {first.wall_s:.1f} s")
    # Building a large index evicts the library from the page cache; a disk read of it would
    # land in the first timed run (minutes at 1M on a slow disk).
    log(f"{size:,}: page cache: read {warm_page_cache(library) / 1e6:,.0f} MB of library files")

    reindex, reindex_others = [], []
    outcomes: list[dict[str, int]] = []
    for _ in range(reindex_runs):
        run, others = with_others(lambda: _kept(runner.index(root, library), outcomes))
        counts = outcomes[-1]
        check_noop(counts, len(files))
        reindex.append(run.wall_s)
        reindex_others += [] if others is None else [others]
        log(f"{size:,}: no-op re-index {run.wall_s:.2f} s")

    # untimed: page cache, fast-text export
    runner.search(cold_texts[0], library, on_its_own=True)
    cold, rss, cold_others = [], [], []
    for text in cold_texts[1:]:
        run, others = with_others(
            lambda text=text: runner.search(text, library, on_its_own=True)[0]
        )
        cold.append(run.wall_s)
        rss.append(run.peak_rss_bytes / 1e6)
        cold_others += [] if others is None else [others]
        log(f"{size:,}: cold search on its own {run.wall_s:.3f} s, peak RSS {rss[-1]:.0f} MB")
    resident, resident_rss = measure_resident(runner, library, cold_texts, size)

    loads, syncs, id_reads = [], [], []
    for _ in range(probe_runs):
        loaded = runner.probe("load", library)
        synced = runner.probe("sync", library)
        for probe in (loaded, synced):
            if probe["vectors"] != size:
                raise BenchmarkError(f"the index holds {probe['vectors']} vectors, not {size}")
        loads.append(float(loaded["load_s"]))
        syncs.append(float(synced["sync_s"]))
        if synced.get("id_read_s") is not None:
            id_reads.append(float(synced["id_read_s"]))
        log(f"{size:,}: load_index {loads[-1]:.3f} s, sync_index {syncs[-1]:.3f} s")

    warm = measure_warm(runner, library, warm_texts)
    return SizeFigures(
        photos=size,
        real_files=len(files),
        dim=dim,
        library=str(library),
        library_origin=origin,
        db_mb=file_mb(library / "library.db"),
        hnsw_mb=hnsw_mb(library),
        first_index_s=first.wall_s,
        cold_search_s=Stat.of(cold),
        cold_rss_mb=Stat.of(rss),
        warm_search_ms=Stat.of([s * 1000 for s in warm]),
        load_index_s=Stat.of(loads),
        sync_index_s=Stat.of(syncs),
        id_read_s=Stat.of(id_reads) if id_reads else None,
        reindex_s=Stat.of(reindex),
        reindex_counts={k: v for k, v in counts.items() if isinstance(v, int)},
        cold_others_cores=Stat.of(cold_others) if cold_others else None,
        reindex_others_cores=Stat.of(reindex_others) if reindex_others else None,
        resident_search_s=Stat.of(resident) if resident else None,
        resident_rss_mb=Stat.of(resident_rss) if resident_rss else None,
    )


def measure_resident(
    runner: Runner, library: Path, texts: Sequence[str], size: int
) -> tuple[list[float], list[float]]:
    """The cold searches again, as a user's run: the first (untimed) may start the resident
    server; once it has announced itself the rest are timed, then it is stopped. Empty lists
    when no server was started (a checkout without one, or a library below its threshold)."""
    runner.search(texts[0], library)
    pid = _resident_pid(library, RESIDENT_WAIT_S)
    if pid is None:
        log(f"{size:,}: no resident server was started")
        return [], []
    seconds, rss = [], []
    try:
        for text in texts[1:]:
            run = runner.search(text, library)[0]
            seconds.append(run.wall_s)
            rss.append(run.peak_rss_bytes / 1e6)
            log(f"{size:,}: cold search, resident server up {run.wall_s:.3f} s")
    finally:
        _stop(pid)
    return seconds, rss


def _resident_pid(library: Path, timeout_s: float) -> int | None:
    """The pid in `serve.json` once it appears; None when nothing is starting at all."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return int(json.loads((library / SERVER_FILE).read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if not (library / "serve.starting").exists():
            return None
        time.sleep(0.2)
    raise BenchmarkError(f"the resident server of {library} did not start in {timeout_s:.0f} s")


def _stop(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _kept(outcome: tuple[ProcessRun, dict[str, int]], into: list[dict[str, int]]) -> ProcessRun:
    """The run of `outcome`; its counts appended to `into`."""
    run, counts = outcome
    into.append(counts)
    return run


def measure_warm(runner: Runner, library: Path, texts: Sequence[str]) -> list[float]:
    """Client wall time of /api/search on a running `hanclip serve`; the first untimed."""
    import httpx

    from hanclip_eval.server_process import ServerDidNotStart, spawned_server

    args = ["--library", str(library), "--model", str(runner.bundle)]
    seconds = []
    try:
        with (
            spawned_server(args, env=runner.env, timeout_s=SERVER_START_TIMEOUT_S) as server,
            httpx.Client(base_url=server.url, timeout=300, trust_env=False) as client,
        ):
            for number, text in enumerate(texts):
                start = time.perf_counter()
                response = client.get("/api/search", params={"q": text, "n": PAGE})
                elapsed = time.perf_counter() - start
                response.raise_for_status()
                if not response.json()["results"]:
                    raise BenchmarkError(f"/api/search {text!r}: no results")
                if number:
                    seconds.append(elapsed)
    except ServerDidNotStart as exc:
        raise BenchmarkError(str(exc)) from None
    return seconds


# -- bundles -----------------------------------------------------------------------------


def tiny_bundle(directory: Path) -> Path:
    """The tests' kind of tiny bundle (32-d image model, heads to 16-d), built once under
    `directory` (its manifest names the models there by absolute path)."""
    bundle, marker = directory / "bundle", directory / "complete"
    if marker.is_file():
        return bundle
    import torch

    from hanclip_eval.tiny_models import (
        build_tiny_open_clip,
        build_tiny_sentence_transformer,
        write_bundle_dir,
    )
    from trainer.heads import HanclipHeads

    shutil.rmtree(directory, ignore_errors=True)
    image_spec = build_tiny_open_clip(directory / "clip", embed_dim=32)
    text = build_tiny_sentence_transformer(directory / "text")
    write_bundle_dir(bundle, image_spec, text, heads="heads.safetensors", name="tiny-heads")
    torch.manual_seed(0)
    HanclipHeads(image_dim=32, text_dim=32, out_dim=16).eval().save(bundle / "heads.safetensors")
    marker.write_text("1")
    return bundle


def seed_dim(work: Path, runner: Runner) -> int:
    """The bundle's raw image dimension, as the checkout stores it: one small JPEG indexed
    into a seed library (kept per bundle)."""
    digest = hashlib.sha1(str(runner.bundle.resolve()).encode()).hexdigest()[:10]
    seed = work / "seed" / digest
    library = seed / "library"
    if not (library / "library.db").is_file() or library_rows(library) != 1:
        shutil.rmtree(seed, ignore_errors=True)
        (seed / "photo").mkdir(parents=True)
        (seed / "photo" / "seed.jpg").write_bytes(unique_jpeg(template_jpeg(), 0))
        log("seed: indexing one photo to learn the bundle's raw dimension")
        _, counts = runner.index(seed / "photo", library)
        if counts.get("added") != 1:
            raise BenchmarkError(f"the seed index added {counts.get('added')} of 1: {counts}")
    return raw_dim(library)
