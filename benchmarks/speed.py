"""hanclip's speed targets, every figure and every ratio measured in one offline run.

Real-size architectures with random weights (open_clip `ViT-B-32` with no pretrained tag, a
paraphrase-multilingual-MiniLM-L12-v2-shaped BERT with its 250k vocabulary and a stand-in
XLM-R-style Unigram tokenizer of the same size, random heads), so
FLOPs and file sizes are the real ones and only the rankings mean nothing. One run measures:

* search: wall time of a `hanclip search` process, start to exit, on a 10,000-photo library,
  against a naive fresh process (torch + sentence-transformers + open_clip, numpy search);
* index: photos/s of `hanclip index` on generated 12-megapixel JPEGs, against the machine's
  ceiling, cores / (decode + model core-seconds per photo), and a naive sequential loop;
* HNSW (the product's settings): recall@10 against exact search and p50 query time at
  100,000 vectors, random unit vectors and clustered ones;
* peak RSS of the `index` and `search` processes;
* every approximate path against its torch fp32 reference (cosine): the ONNX text encoder,
  the numpy heads, JPEG draft decoding.

The report goes to stdout (progress to stderr); the process exits 0 whether or not the
targets are met, and non-zero only when a measurement could not be made.

    python benchmarks/speed.py [--work DIR] [--photos 96] [--runs 3] [--quick] [--json PATH]

`--bundle DIR` benchmarks an existing bundle (real weights, say) instead of random ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

PHOTO_SIZE = (4000, 3000)  # 12 megapixels, a phone camera's 4:3 frame
SEED_PHOTO_SIZE = (640, 480)  # the few real rows of the search library
SEED_PHOTOS = 4
JPEG_QUALITY = 90
# Luminance noise (grey levels) on top of smooth fields: about 3.5 MB per 12 MP JPEG at q90,
# the size of a phone photo, so entropy decoding costs what it costs on real photos.
PHOTO_NOISE_STD = 6.0
INDEX_BATCH = 32  # `hanclip index`'s default --batch-size
MODEL_BATCHES = 3  # timed ViT forwards for the ceiling, after one warm-up
HNSW_DIM = 512
HNSW_K = 10
# Within-cluster spread of the clustered vectors: a point's cosine to its centre is ~0.7 and
# to another point of its cluster ~0.5; a guess at CLIP photos of one topic, not a measurement.
CLUSTER_SPREAD = 1.0
DRAFT_PHOTOS = 8  # photos embedded twice (draft and full decode) for the image-path cosine
HEAD_ROWS = 256  # random raw embeddings run through the numpy and the torch heads
GB = 1024**3
_STARTED = time.perf_counter()

QUERIES = (
    "바다 위 노을",
    "누워있는 고양이",
    "공원에서 뛰는 강아지",
    "눈 덮인 산",
    "서울 야경",
)

# Korean, English and mixed sentences; one NFD, one far beyond max_seq_length (truncation).
SENTENCES = (
    "바다 위 노을",
    "누워있는 고양이",
    "공원에서 뛰는 강아지와 아이들",
    "눈 덮인 산 사진",
    "서울의 밤거리 야경",
    "해변에서 뛰어노는 아이들",
    "창가에 앉아 있는 고양이",
    "비 오는 날의 우산",
    "벚꽃이 핀 봄날의 공원",
    "가을 단풍이 물든 산길",
    "생일 케이크와 촛불",
    "기차역 플랫폼에 서 있는 사람들",
    "자전거를 타는 남자",
    "부엌에서 요리하는 할머니",
    "하늘을 나는 비행기",
    "강아지가 공을 물고 있다",
    "결혼식에서 찍은 가족 사진",
    "눈사람을 만드는 아이",
    "밤하늘의 별과 은하수",
    "제주도 바닷가의 돌담",
    "카페 테이블 위의 커피 한 잔",
    "축구 경기를 하는 학생들",
    "오래된 한옥 마을",
    "무지개가 뜬 들판",
    "호수에 비친 산 그림자",
    "시장에서 과일을 파는 상인",
    "a cat sleeping on the sofa by the window",
    "a dog running on the beach at sunset",
    "children playing in the snow",
    "a bowl of bibimbap on a wooden table",
    "city lights at night from a rooftop",
    "an old man reading a newspaper on a bench",
    "two people riding bicycles along the river",
    "a red car parked in front of a house",
    "mountains covered with snow under a blue sky",
    "a birthday party with balloons",
    "fireworks over the harbour",
    "a baby sleeping in a crib",
    "a train crossing a bridge",
    "  Sunset over the SEA, 2023!  ",
    "서울 야경 city lights at night",
    "우리 강아지 Max의 첫 생일 party",
    "제주 Jeju island 여행 2019",
    "고양이 cat 🐱",
    "KTX 열차 안에서",
    "N서울타워",
    "짜장면과 탕수육",
    "1998년 여름 가족 여행",
    "\u1107\u1161\u1103\u1161 \u110b\u1171 \u1102\u1169\u110b\u1173\u11af",  # 바다 위 노을, NFD
    " ".join(["해변에서 본 바다 노을 a beach at sunset"] * 120),
)


# -- configuration and targets --------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is."""

    photos: int  # 12-MP JPEGs for index throughput
    library: int  # photos in the search library
    hnsw_vectors: int
    hnsw_queries: int
    hnsw_clusters: int
    runs: int  # cold-process repetitions of each timed command


FULL = Sizes(
    photos=96,  # three batches of 32: the steady state is measured too
    library=10_000,
    hnsw_vectors=100_000,
    hnsw_queries=1_000,
    hnsw_clusters=1_000,
    runs=3,
)
QUICK = Sizes(
    photos=4, library=1_000, hnsw_vectors=5_000, hnsw_queries=200, hnsw_clusters=50, runs=1
)


@dataclass(frozen=True)
class Target:
    label: str
    op: str  # "<=" or ">="
    limit: float
    unit: str


TARGETS: dict[str, Target] = {
    "search_wall_s": Target("search wall time (cold process)", "<=", 1.0, "s"),
    "search_speedup": Target("search: naive / ours", ">=", 8.0, "x"),
    "index_vs_ceiling": Target("index: ours / machine ceiling", ">=", 0.85, ""),
    "index_vs_naive": Target("index: ours / naive loop", ">=", 2.0, "x"),
    "hnsw_recall": Target("HNSW recall@10 (clustered)", ">=", 0.98, ""),
    "hnsw_p50_ms": Target("HNSW query p50 (clustered)", "<=", 2.0, "ms"),
    "search_rss_gb": Target("search peak RSS", "<=", 1.0, "GB"),
    "index_rss_gb": Target("index peak RSS", "<=", 3.0, "GB"),
    "text_cosine": Target("fast text vs sentence-transformers, min cosine", ">=", 0.999, ""),
    "text_int8_cosine": Target("int8 fast text vs sentence-transformers", ">=", 0.99, ""),
}


@dataclass(frozen=True)
class Check:
    """One target against its measured value."""

    key: str
    value: float | None  # None: not measured in this run

    @property
    def target(self) -> Target:
        return TARGETS[self.key]

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        t = self.target
        return self.value <= t.limit if t.op == "<=" else self.value >= t.limit

    def verdict(self) -> str:
        """PASS, FAIL with the gap in per cent of the limit, or n/a."""
        if self.passed is None:
            return "n/a"
        if self.passed:
            return "PASS"
        gap = abs(self.value - self.target.limit) / self.target.limit
        word = "over" if self.target.op == "<=" else "short"
        return f"FAIL ({gap:.0%} {word})" if gap >= 0.01 else f"FAIL ({gap:.1%} {word})"


class BenchmarkError(RuntimeError):
    """A measurement could not be made (a command failed, a result was incomplete)."""


# -- small measuring tools -----------------------------------------------------------------


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds only the report."""
    elapsed = time.perf_counter() - _STARTED
    print(f"[{elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def usable_cores() -> int:
    # The affinity mask is what this process and its children may actually run on.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(unit_rows(a) * unit_rows(b), axis=1)


def cosine_summary(cosines: np.ndarray) -> dict[str, float]:
    return {"min": float(np.min(cosines)), "mean": float(np.mean(cosines)), "n": len(cosines)}


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

    def summary(self) -> dict[str, Any]:
        return {
            "cores_available": self.free_cores,
            "at_start_1_5_15": [round(v, 2) for v in self.at_start],
            "at_end_1_5_15": [round(v, 2) for v in os.getloadavg()],
            "during_1min_min": round(min(self.samples), 2),
            "during_1min_median": round(median(self.samples), 2),
            "during_1min_max": round(max(self.samples), 2),
        }


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
        count = self._count()
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

    def _count(self) -> int:
        try:
            with closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=0.1)) as db:
                return int(db.execute("SELECT COUNT(*) FROM photos").fetchone()[0])
        except sqlite3.Error:  # not created yet, or busy: the next poll sees it
            return 0

    def phase_s(self, photos: int, wall_s: float) -> float:
        """Library opened to last photo committed; when a poll missed either end, the start
        or the exit stands in, which can only make the phase longer, never flatter it."""
        opened = self.opened_s or 0.0
        done = self.commits[-1][0] if self.commits and self.commits[-1][1] == photos else wall_s
        return done - opened


def hanclip_command() -> list[str]:
    """The console script users run, next to this interpreter; else `python -m`."""
    script = Path(sys.executable).with_name("hanclip")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "hanclip_cli"]


# -- inputs: model bundle and photos -------------------------------------------------------


def build_random_bundle(directory: Path) -> Path:
    """A bundle of real-size random models (kept: building one takes a while)."""
    from hanclip_eval.random_models import RANDOM_CLIP_SPEC, random_minilm
    from hanclip_model.bundle import MANIFEST_NAME, write_bundle

    if (directory / MANIFEST_NAME).is_file():
        return directory
    import torch

    from hanclip_model.encoders import quiet_transformers
    from trainer.heads import HanclipHeads

    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    quiet_transformers()  # loading bars would bury the progress lines
    # The real MiniLM's tokenizer is a 250,002-piece Unigram vocabulary, dear to load;
    # the stand-in matches its kind and size so a cold search pays what a user's does.
    random_minilm(staging / "text", tokenizer="unigram")
    torch.manual_seed(0)
    HanclipHeads(512, 384, 512).eval().save(staging / "heads.safetensors")
    write_bundle(
        staging,
        name="random-vit-b32-minilm-l12",
        image_model=RANDOM_CLIP_SPEC,
        text_model="text",
        heads="heads.safetensors",
    )
    os.replace(staging, directory)
    return directory


def _smooth_field(rng: np.random.Generator, grid: tuple[int, int], size: tuple[int, int]):
    from PIL import Image

    cells = rng.integers(0, 256, size=(*grid, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(cells).resize(size, Image.BICUBIC), dtype=np.float32)


def synthetic_photo(size: tuple[int, int], seed: int):
    """A photo-like RGB image: smooth colour at two scales, hard-edged shapes, sensor noise.

    Flat or purely random pixels would make JPEG decoding far cheaper or far dearer than a
    camera photo; this lands at a phone photo's file size.
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    width, height = size
    pixels = 0.7 * _smooth_field(rng, (6, 8), size) + 0.3 * _smooth_field(rng, (60, 80), size)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(20, width // 3)), y0 + int(rng.integers(20, height // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=colour)
    noise = rng.standard_normal((height, width, 1), dtype=np.float32) * PHOTO_NOISE_STD
    noisy = np.asarray(image, dtype=np.float32) + noise
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def ensure_photos(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """`count` JPEGs in `folder`, generated once; photo i is always the same picture."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo-{i:03d}.jpg" for i in range(count)]
    for i, path in enumerate(paths):
        if path.is_file():
            continue
        tmp = path.with_suffix(".tmp")
        synthetic_photo(size, seed=i).save(tmp, "JPEG", quality=JPEG_QUALITY)
        os.replace(tmp, path)  # an interrupted run leaves no truncated photo behind
    return paths


def linked_folder(folder: Path, photos: Sequence[Path]) -> Path:
    """A fresh folder holding exactly `photos` (hard links: no copy, and no symlinks)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for photo in photos:
        try:
            os.link(photo, folder / photo.name)
        except OSError:
            shutil.copy2(photo, folder / photo.name)
    return folder


def read_bytes(paths: Sequence[Path]) -> None:
    """Bring files into the page cache, so every contender reads them from memory."""
    for path in paths:
        path.read_bytes()


# -- hanclip as a user runs it ---------------------------------------------------------------


@dataclass
class Workspace:
    """Everything one run writes, under the work directory."""

    root: Path
    bundle: Path
    env: dict[str, str]
    hanclip: list[str] = field(default_factory=hanclip_command)

    def fresh(self, name: str) -> Path:
        path = self.root / "runs" / name
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def index(
        self, folder: Path, library: Path, device: str | None = "cpu"
    ) -> tuple[ProcessRun, IndexWatch]:
        cmd = [*self.hanclip, "index", str(folder), "--library", str(library)]
        cmd += ["--model", str(self.bundle), "--json"]
        if device:
            cmd += ["--device", device]
        watch = IndexWatch(library / "library.db")
        return run_process(cmd, self.env, watch), watch

    def search(self, query: str, library: Path) -> ProcessRun:
        cmd = [*self.hanclip, "search", query, "--library", str(library)]
        return run_process([*cmd, "--model", str(self.bundle), "--json"], self.env)

    def search_imports(self, query: str, library: Path) -> ProcessRun:
        """The same search under `python -X importtime` (the import log goes to stderr)."""
        cmd = [sys.executable, "-X", "importtime", "-m", "hanclip_cli", "search", query]
        cmd += ["--library", str(library), "--model", str(self.bundle), "--json"]
        return run_process(cmd, self.env)

    def naive_search(self, query: str, vectors: Path, paths: Path) -> ProcessRun:
        """`naive_search` in a fresh process, through this same file."""
        cmd = [sys.executable, str(Path(__file__).resolve()), "--naive-search"]
        return run_process([*cmd, str(self.bundle), str(vectors), str(paths), query], self.env)


def import_seconds(importtime_log: str) -> float:
    """Total import time in a `python -X importtime` log: the cumulative times of the
    top-level imports (one space of nesting), in seconds."""
    total_us = 0
    for line in importtime_log.splitlines():
        fields = line.split("|")
        if line.startswith("import time:") and len(fields) == 3 and fields[1].strip().isdigit():
            name = fields[2]
            if name.startswith(" ") and not name.startswith("  "):
                total_us += int(fields[1])
    return total_us / 1e6


def index_counts(run: ProcessRun, expected: int) -> dict[str, Any]:
    counts = json.loads(run.stdout)
    if counts.get("added") != expected or counts.get("failed"):
        raise BenchmarkError(f"index added {counts.get('added')} of {expected}: {counts}")
    return counts


ISOLATED_KEYS = (
    "HANCLIP_CACHE",
    "HANCLIP_HOME",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)


def isolated_env(work: Path) -> dict[str, str]:
    """Caches and libraries inside the work directory; no hub is ever asked."""
    env = dict(os.environ)
    for key in ("HANCLIP_MODEL", "HANCLIP_DEVICE", "HANCLIP_FAST_TEXT"):
        env.pop(key, None)  # the user's own settings would change what is measured
    values = (work / "cache", work / "home", work / "hf", "1", "1")
    env.update({key: str(value) for key, value in zip(ISOLATED_KEYS, values, strict=True)})
    return env


# -- search ----------------------------------------------------------------------------------


def fill_library(library: Path, total: int, seed: int = 0) -> int:
    """Add synthetic rows (random raw embeddings, fake paths) until `total` photos; returns
    how many were added. Embedding 10,000 photos with the ViT would take an hour here, and
    search never reads the photos themselves."""
    from hanclip_cli.store import NewPhoto, PhotoStore

    store = PhotoStore(library, create=False)
    try:
        have = store.count()
        dim = store.embedding(int(store.ids()[0])).shape[0]
        rng = np.random.default_rng(seed)
        for start in range(have, total, 1000):
            count = min(1000, total - start)
            raw = rng.standard_normal((count, dim), dtype=np.float32)
            photos = [
                NewPhoto(
                    path=f"/synthetic/{start + i:06d}.jpg",
                    size=3_500_000,
                    mtime_ns=1_700_000_000_000_000_000 + start + i,
                    sha256=f"{start + i:064x}",
                    width=PHOTO_SIZE[0],
                    height=PHOTO_SIZE[1],
                    taken_at=None,
                    embedding=raw[i],
                )
                for i in range(count)
            ]
            store.add_photos(photos)
        return max(0, total - have)
    finally:
        store.close()


def export_search_vectors(library: Path, bundle: Path, out_dir: Path) -> tuple[Path, Path]:
    """The library's search vectors and paths as .npy files, for the naive search."""
    from hanclip_cli.store import PhotoStore
    from hanclip_model import load_bundle

    store = PhotoStore(library, create=False)
    try:
        ids, raw = store.embeddings()
        by_id = {k: record.path for k, record in store.records_by_ids(ids).items()}
    finally:
        store.close()
    vectors = load_bundle(bundle).project_images(raw)
    vectors_path, paths_path = out_dir / "vectors.npy", out_dir / "paths.npy"
    np.save(vectors_path, vectors)
    np.save(paths_path, np.array([by_id[int(i)] for i in ids]))
    return vectors_path, paths_path


def naive_search(bundle: str, vectors_path: str, paths_path: str, query: str) -> None:
    """What a script written without hanclip's care would do: import the usual libraries,
    load the text model with sentence-transformers, project with torch, search with numpy.
    Run in a fresh process by `--naive-search`."""
    import open_clip  # noqa: F401 - such a script imports what indexing needed too
    import torch
    from sentence_transformers import SentenceTransformer

    from hanclip_model.bundle import read_bundle
    from trainer.heads import HanclipHeads

    spec = read_bundle(bundle)
    text_model = SentenceTransformer(spec.text_model, device="cpu")
    raw = text_model.encode([query], convert_to_tensor=True, normalize_embeddings=True)
    with torch.inference_mode():
        if spec.heads_path is not None:
            raw = HanclipHeads.load(spec.heads_path).eval().project_text(raw)
    query_vector = raw[0].float().numpy()
    vectors, paths = np.load(vectors_path), np.load(paths_path)
    scores = vectors @ query_vector
    for rank, i in enumerate(np.argsort(-scores)[:10], start=1):
        print(f"{rank:2d}  {scores[i]:.3f}  {paths[i]}")


def with_others(command: Callable[[], ProcessRun]) -> tuple[ProcessRun, float | None]:
    """Run one command; also how many cores other jobs kept busy meanwhile (None off Linux).
    The launcher's own few milliseconds of start-up count as theirs."""
    if not Path("/proc/stat").is_file():
        return command(), None
    machine, own = machine_busy_s(), time.process_time()
    run = command()
    spent = machine_busy_s() - machine - (time.process_time() - own) - run.cpu_s
    return run, max(0.0, spent / run.wall_s)


def measure_search(ws: Workspace, library: Path, sizes: Sizes) -> dict[str, Any]:
    """Timed cold searches, ours and naive, on the same library and vectors; interleaved,
    so that a change in the machine's load hits both alike."""
    log("search: warm-up search (syncs the HNSW index with the new rows)")
    ws.search(QUERIES[0], library)
    vectors, paths = export_search_vectors(library, ws.bundle, ws.root / "runs")
    ours, naive, others = [], [], []
    for run in range(sizes.runs):
        query = QUERIES[run % len(QUERIES)]
        result, busy = with_others(lambda q=query: ws.search(q, library))
        ours.append(result)
        others.append(busy)
        if len(json.loads(ours[-1].stdout)) != 10:
            raise BenchmarkError(f"search returned {ours[-1].stdout[:200]!r}, not 10 hits")
        naive.append(ws.naive_search(query, vectors, paths))
        log(
            f"search: run {run + 1}/{sizes.runs}: ours {ours[-1].wall_s:.2f} s, "
            f"naive {naive[-1].wall_s:.2f} s"
        )
    traced = ws.search_imports(QUERIES[0], library)
    return {
        # One more run, with the import log: how much of a search is spent importing.
        "imports_s": import_seconds(traced.stderr),
        "imports_run_wall_s": traced.wall_s,
        "library_photos": sizes.library,
        "runs": sizes.runs,
        "ours_wall_s": [r.wall_s for r in ours],
        "ours_cpu_s": [r.cpu_s for r in ours],
        "ours_median_s": median([r.wall_s for r in ours]),
        "others_cores": others,
        "naive_wall_s": [r.wall_s for r in naive],
        "naive_median_s": median([r.wall_s for r in naive]),
        "speedup": median([r.wall_s for r in naive]) / median([r.wall_s for r in ours]),
        "peak_rss_bytes": max(r.peak_rss_bytes for r in ours),
        "naive_peak_rss_bytes": max(r.peak_rss_bytes for r in naive),
    }


# -- index -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexRun:
    """`hanclip index` of the photos into a fresh library, and, just before it, the same
    command on an empty folder: its start-up alone."""

    startup: ProcessRun
    whole: ProcessRun
    watch: IndexWatch


def index_run(ws: Workspace, folder: Path, empty: Path, photos: int, device: str) -> IndexRun:
    startup, _ = ws.index(empty, ws.fresh("startup-library"), device)
    whole, watch = ws.index(folder, ws.fresh("index-library"), device)
    index_counts(whole, photos)
    return IndexRun(startup, whole, watch)


def summarise_index(runs: Sequence[IndexRun], photos: int, device: str) -> dict[str, Any]:
    """Medians and per-run figures. The embedding phase of each run is timed inside it,
    from the library's opening (models loaded) to the last photo's commit: scanning,
    hashing, decoding, embedding and writing, none of the imports and model loading that
    the ceiling leaves out too."""
    phases = [r.watch.phase_s(photos, r.whole.wall_s) for r in runs]
    steady = [r.watch.steady_photos_per_s(photos, INDEX_BATCH) for r in runs]
    whole = [r.whole.wall_s for r in runs]
    whole_s, startup_s = median(whole), median([r.startup.wall_s for r in runs])
    extra_cpu = median([r.whole.cpu_s for r in runs]) - median([r.startup.cpu_s for r in runs])
    # With few photos, start-up's own spread can exceed the work: then this says nothing.
    extra_wall = whole_s - startup_s if whole_s > startup_s else None
    return {
        "device": device,
        "photos": photos,
        "runs": len(runs),
        "whole_wall_s": whole,
        "startup_wall_s": [r.startup.wall_s for r in runs],
        "embedding_phase_s": phases,
        "whole_median_s": whole_s,
        "startup_median_s": startup_s,
        "embedding_median_s": median(phases),
        "photos_per_s": photos / median(phases),
        "photos_per_s_runs": [photos / p for p in phases],
        "whole_photos_per_s_runs": [photos / w for w in whole],
        "steady_photos_per_s_runs": steady,
        "steady_photos_per_s": None if None in steady else median(steady),
        # Cores that other jobs kept busy during each embedding phase (None: not observed).
        "others_cores": [r.watch.others_cores() for r in runs],
        "whole_photos_per_s": photos / whole_s,
        "whole_minus_startup_photos_per_s": photos / extra_wall if extra_wall else None,
        # Below the core count when the pipeline leaves cores idle or other jobs take them.
        "cores_busy": extra_cpu / extra_wall if extra_wall else None,
        "peak_rss_bytes": max(r.whole.peak_rss_bytes for r in runs),
    }


def measure_index(
    ws: Workspace,
    photos: Sequence[Path],
    runs: int,
    device: str,
    model_parts: tuple[Any, Any, int] | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """`runs` rounds of: the ceiling, `hanclip index`, the naive loop (the last two only
    with `model_parts`). This machine's speed drifts with its neighbours' load, so each
    ratio is taken within a round, where all three met the same conditions."""
    folder = linked_folder(ws.root / "runs" / "photos", photos)
    empty = ws.fresh("empty")
    empty.mkdir()
    index_runs, ceilings = [], []
    for run in range(runs):
        if model_parts is not None:
            ceilings.append(ceiling_round(model_parts, photos))
        index_runs.append(index_run(ws, folder, empty, len(photos), device))
        if model_parts is not None:
            ceilings[-1]["naive_photos_per_s"] = naive_index_rate(*model_parts[:2], photos)
        note = _round_note(index_runs[-1], len(photos), ceilings)
        log(f"index ({device}) round {run + 1}/{runs}: {note}")
    index = summarise_index(index_runs, len(photos), device)
    return index, summarise_ceilings(ceilings) if ceilings else None


def _round_note(run: IndexRun, photos: int, ceilings: Sequence[dict[str, Any]]) -> str:
    others = run.watch.others_cores()
    note = (
        f"empty folder {run.startup.wall_s:.2f} s, photos {run.whole.wall_s:.2f} s, "
        f"embedding phase {run.watch.phase_s(photos, run.whole.wall_s):.2f} s, "
        f"other jobs' cores {'n/a' if others is None else f'{others:.2f}'}"
    )
    if ceilings:
        c = ceilings[-1]
        note += (
            f"; ceiling {c['ceiling_photos_per_s']:.2f} photos/s (decode "
            f"{c['decode_core_s_per_photo'] * 1000:.0f} + model "
            f"{c['model_core_s_per_photo'] * 1000:.0f} ms core), naive "
            f"{c['naive_photos_per_s']:.2f} photos/s"
        )
    return note


def clip_model(spec: str) -> tuple[Any, Any, int]:
    """(open_clip model in eval mode, its preprocess, its input size), as hanclip loads it."""
    import open_clip

    from hanclip_model.encoders import parse_image_model

    name, pretrained = parse_image_model(spec)
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, device="cpu"
    )
    model.eval().requires_grad_(False)
    size = model.visual.image_size
    return model, preprocess, int(min(size) if isinstance(size, (tuple, list)) else size)


def decode_core_seconds(photos: Sequence[Path], image_size: int) -> tuple[float, list[Any]]:
    """Core-seconds per photo of hanclip's decode (JPEG draft mode), on this one thread;
    returns the decoded images too."""
    from hanclip_model.images import load_image

    load_image(photos[0], image_size)  # first call pays for imports and plugin registration
    images, spent = [], 0.0
    for path in photos:
        start = time.thread_time()
        images.append(load_image(path, image_size).image)
        spent += time.thread_time() - start
    return spent / len(photos), images


def preprocess_core_seconds(preprocess: Any, images: Sequence[Any]) -> tuple[float, list[Any]]:
    """Core-seconds per photo of open_clip's preprocess on decoded photos (not part of the
    ceiling formula; shown because `index` pays it)."""
    start = time.process_time()
    tensors = [preprocess(image) for image in images]
    return (time.process_time() - start) / len(images), tensors


def model_core_seconds(
    model: Any, tensors: Sequence[Any], batch: int, threads: int | None = None
) -> dict[str, float]:
    """CPU seconds of one ViT forward on `batch` photos divided by `batch`, the lowest of
    MODEL_BATCHES forwards, on all of torch's threads (or on `threads`).

    Process CPU time, not wall time: with every core busy it counts what the forward costs
    the machine, which is what the ceiling divides the cores by.
    """
    import torch

    pixels = torch.stack([tensors[i % len(tensors)] for i in range(batch)])
    all_threads = torch.get_num_threads()
    torch.set_num_threads(threads or all_threads)
    cpu, wall = [], []
    try:
        with torch.inference_mode():
            model.encode_image(pixels)  # warm-up: first-call allocations, kernel choice
            for _ in range(MODEL_BATCHES):
                cpu_start, wall_start = time.process_time(), time.perf_counter()
                model.encode_image(pixels)
                cpu.append(time.process_time() - cpu_start)
                wall.append(time.perf_counter() - wall_start)
    finally:
        torch.set_num_threads(all_threads)
    # The least disturbed batch: this machine's neighbours come and go within seconds.
    return {
        "core_s_per_photo": min(cpu) / batch,
        "wall_s_per_photo": min(wall) / batch,
        "torch_threads": threads or all_threads,
    }


def machine_ceiling(cores: int, decode_core_s: float, model_core_s: float) -> float:
    """Photos/s when every core does nothing but decode and run the model."""
    return cores / (decode_core_s + model_core_s)


def naive_index_rate(model: Any, preprocess: Any, photos: Sequence[Path]) -> float:
    """Photos/s of the obvious loop: full-resolution decode, RGB, preprocess, one photo per
    forward. Timed after one warm-up photo, so start-up does not count against it (which
    flatters the naive loop: `hanclip index` is timed from its library's opening instead)."""
    import torch
    from PIL import Image

    def embed(path: Path) -> None:
        with Image.open(path) as image:
            pixels = preprocess(image.convert("RGB"))[None]
        model.encode_image(pixels)

    with torch.inference_mode():
        embed(photos[0])
        start = time.perf_counter()
        for path in photos:
            embed(path)
        return len(photos) / (time.perf_counter() - start)


def ceiling_round(model_parts: tuple[Any, Any, int], photos: Sequence[Path]) -> dict[str, Any]:
    """Decode and model core-seconds per photo, measured now, and the ceiling they give."""
    model, preprocess, image_size = model_parts
    cores = usable_cores()
    read_bytes(photos)
    decode_s, images = decode_core_seconds(photos, image_size)
    prep_s, tensors = preprocess_core_seconds(preprocess, images)
    model_s = model_core_seconds(model, tensors, INDEX_BATCH)
    # Threads working in parallel cost more CPU time per photo than one thread alone
    # (shared caches and memory bandwidth, synchronisation). The all-cores figure counts
    # that overhead as work; the one-thread figure gives a stricter ceiling, for information.
    single = model_core_seconds(model, tensors, INDEX_BATCH, threads=1)
    return {
        "cores": cores,
        "image_size": image_size,
        "decode_core_s_per_photo": decode_s,
        "preprocess_core_s_per_photo": prep_s,
        "model_core_s_per_photo": model_s["core_s_per_photo"],
        "model_wall_s_per_photo": model_s["wall_s_per_photo"],
        "torch_threads": model_s["torch_threads"],
        "ceiling_photos_per_s": machine_ceiling(cores, decode_s, model_s["core_s_per_photo"]),
        "model_1thread_core_s_per_photo": single["core_s_per_photo"],
        "strict_ceiling_photos_per_s": machine_ceiling(cores, decode_s, single["core_s_per_photo"]),
    }


def summarise_ceilings(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds, with each round's ceiling and naive rate kept."""
    keys = [k for k, v in rounds[0].items() if isinstance(v, float)]
    summary = {k: median([r[k] for r in rounds]) for k in keys}
    summary.update(
        cores=rounds[0]["cores"],
        image_size=rounds[0]["image_size"],
        torch_threads=rounds[0]["torch_threads"],
        model_batch=INDEX_BATCH,
        rounds=len(rounds),
        ceiling_runs=[r["ceiling_photos_per_s"] for r in rounds],
        strict_ceiling_runs=[r["strict_ceiling_photos_per_s"] for r in rounds],
        naive_runs=[r["naive_photos_per_s"] for r in rounds],
    )
    return summary


# -- accuracy of the approximate paths ---------------------------------------------------------


def fast_text_cosines(text_model: str) -> dict[str, Any]:
    """The ONNX export (as `search` runs it) against sentence-transformers in fp32."""
    import unicodedata

    from sentence_transformers import SentenceTransformer

    from hanclip_model.cache import cache_root
    from hanclip_model.encoders import quiet_transformers
    from hanclip_model.fast_text.cache import ensure_fast_text
    from hanclip_model.fast_text.runtime import FastTextEncoder

    quiet_transformers()
    fast = FastTextEncoder.load(ensure_fast_text(text_model, cache_root()))
    reference = SentenceTransformer(text_model, device="cpu").eval()
    texts = [unicodedata.normalize("NFC", t) for t in SENTENCES]  # as the CLI does
    expected = reference.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    single = np.concatenate([fast.embed([t]) for t in texts])
    batched = fast.embed(texts)
    return {
        "sentences": len(texts),
        "one_at_a_time": cosine_summary(row_cosines(single, expected)),
        "batched": cosine_summary(row_cosines(batched, expected)),
        "fp32_ms_per_query": _ms_per_query(fast, texts),
        "int8": int8_text_cosines(text_model, texts, expected),
    }


def int8_text_cosines(text_model: str, texts: list[str], expected: np.ndarray) -> dict[str, Any]:
    """The optional int8 export (ONNX Runtime dynamic quantisation), which the export keeps
    only when its worst cosine with the fp32 export is >= MIN_QUANTIZED_COSINE."""
    from hanclip_model.cache import cache_root
    from hanclip_model.fast_text.cache import ensure_fast_text
    from hanclip_model.fast_text.runtime import FastTextConfig, FastTextEncoder

    export = ensure_fast_text(text_model, cache_root(), quantize=True)
    config = FastTextConfig.read(export)
    result: dict[str, Any] = {"gate_cosine": config.int8_cosine, "kept": config.quantized}
    if config.quantized:
        int8 = FastTextEncoder.load(export, quantized=True)
        single = np.concatenate([int8.embed([t]) for t in texts])
        result["one_at_a_time"] = cosine_summary(row_cosines(single, expected))
        result["ms_per_query"] = _ms_per_query(int8, texts)
    return result


def _ms_per_query(encoder: Any, texts: list[str]) -> float:
    """Median milliseconds to embed one sentence, warm, over `texts`."""
    encoder.embed(texts[:1])
    times = []
    for text in texts:
        start = time.perf_counter()
        encoder.embed([text])
        times.append(time.perf_counter() - start)
    return median(times) * 1000


def heads_cosines(heads_path: Path, seed: int = 0) -> dict[str, Any]:
    """The numpy heads (BatchNorm folded) against the torch module, on random inputs."""
    import torch

    from hanclip_model.heads import load_heads
    from trainer.heads import HanclipHeads

    numpy_heads, torch_heads = load_heads(heads_path), HanclipHeads.load(heads_path).eval()
    rng = np.random.default_rng(seed)
    image_in = rng.standard_normal((HEAD_ROWS, numpy_heads.image.in_dim), dtype=np.float32)
    text_in = rng.standard_normal((HEAD_ROWS, numpy_heads.text.in_dim), dtype=np.float32)
    with torch.inference_mode():
        image_ref = torch_heads.project_image(torch.from_numpy(image_in)).numpy()
        text_ref = torch_heads.project_text(torch.from_numpy(text_in)).numpy()
    return {
        "image": cosine_summary(row_cosines(numpy_heads.image(image_in), image_ref)),
        "text": cosine_summary(row_cosines(numpy_heads.text(text_in), text_ref)),
    }


def draft_decode_cosines(model_parts: tuple[Any, Any, int], photos: Sequence[Path]) -> dict:
    """Image embeddings of JPEG-draft decodes (hanclip) against full-resolution decodes.

    With random weights the scale is unknown, so the mean cosine between different photos
    is given beside it: agreement means something only where that one is clearly lower.
    """
    import torch
    from PIL import Image

    from hanclip_model.images import load_image

    model, preprocess, image_size = model_parts
    draft, full = [], []
    for path in photos:
        draft.append(preprocess(load_image(path, image_size).image))
        with Image.open(path) as image:
            full.append(preprocess(image.convert("RGB")))
    with torch.inference_mode():
        draft_vectors = unit_rows(model.encode_image(torch.stack(draft)).numpy())
        full_vectors = unit_rows(model.encode_image(torch.stack(full)).numpy())
    between = full_vectors @ full_vectors.T
    others = between[~np.eye(len(photos), dtype=bool)]
    return {
        "draft_vs_full": cosine_summary(row_cosines(draft_vectors, full_vectors)),
        "different_photos_mean": float(others.mean()) if len(others) else float("nan"),
        "photos": len(photos),
    }


# -- HNSW ------------------------------------------------------------------------------------


def random_unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return unit_rows(rng.standard_normal((n, dim), dtype=np.float32))


def clustered_vectors(
    rng: np.random.Generator, n: int, dim: int, clusters: int, spread: float = CLUSTER_SPREAD
) -> np.ndarray:
    """Unit vectors around `clusters` random centres (isotropic Gaussian spread)."""
    centres = random_unit_vectors(rng, clusters, dim)
    labels = rng.integers(0, clusters, n)
    noise = rng.standard_normal((n, dim), dtype=np.float32) * (spread / np.sqrt(dim))
    return unit_rows(centres[labels] + noise)


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int, chunk: int = 128) -> np.ndarray:
    """Row indices of the k largest inner products per query (unordered), by brute force."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ base.T
        out[start : start + chunk] = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return out


def recall_at_k(found: Sequence[Sequence[int]], exact: np.ndarray) -> float:
    """Mean share of each query's true k nearest that the approximate search returned."""
    k = exact.shape[1]
    hits = [len(set(map(int, f)) & set(map(int, e))) / k for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits))


def hnsw_run(vectors: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    """Build with the product's settings, query one vector at a time as `search` does."""
    from hanclip_cli.vector_index import build_index

    start = time.perf_counter()
    vindex = build_index(np.arange(len(vectors)), vectors, "speed-benchmark", vectors.shape[1])
    build_s = time.perf_counter() - start
    vindex.search(queries[0], HNSW_K)  # warm-up
    found, times = [], []
    for query in queries:
        start = time.perf_counter()
        hits = vindex.search(query, HNSW_K)
        times.append(time.perf_counter() - start)
        found.append([photo_id for photo_id, _ in hits])
    exact = exact_top_k(vectors, queries, HNSW_K)
    return {
        "recall_at_10": recall_at_k(found, exact),
        "p50_ms": float(np.percentile(times, 50) * 1000),
        "p95_ms": float(np.percentile(times, 95) * 1000),
        "build_s": build_s,
    }


def measure_hnsw(sizes: Sizes, seed: int = 0) -> dict[str, Any]:
    from hanclip_cli import vector_index

    n, q = sizes.hnsw_vectors, sizes.hnsw_queries
    rng = np.random.default_rng(seed)
    results: dict[str, Any] = {
        "vectors": n,
        "queries": q,
        "dim": HNSW_DIM,
        "M": vector_index.M,
        "ef_construction": vector_index.EF_CONSTRUCTION,
        "ef_search": vector_index.EF_SEARCH,
        "clusters": sizes.hnsw_clusters,
        "cluster_spread": CLUSTER_SPREAD,
    }
    # Queries come from the same distribution as the base vectors but are not in the index.
    clustered = clustered_vectors(rng, n + q, HNSW_DIM, sizes.hnsw_clusters)
    log(f"hnsw: clustered, {n:,} vectors")
    results["clustered"] = hnsw_run(clustered[:n], clustered[n:])
    del clustered
    uniform = random_unit_vectors(rng, n + q, HNSW_DIM)
    log(f"hnsw: random unit vectors, {n:,} vectors")
    results["random"] = hnsw_run(uniform[:n], uniform[n:])
    return results


# -- one whole run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    work: Path
    sizes: Sizes
    bundle: Path | None  # None: build the random real-size bundle


def environment(cores: int) -> dict[str, Any]:
    import hnswlib  # noqa: F401 - its presence is part of the environment
    import onnxruntime
    import open_clip
    import sentence_transformers
    import torch

    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": cores,
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "open_clip": open_clip.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "cuda": torch.cuda.is_available(),
    }


def prepare_inputs(options: Options) -> tuple[Path, list[Path], dict[str, Any]]:
    """(bundle, 12-MP photos, one-time figures), built once per work directory."""
    start = time.perf_counter()
    if options.bundle is not None:
        bundle, built = options.bundle.resolve(), "given"
    else:
        log("building the random-weight bundle (once per work directory)")
        target = options.work / "bundle-xlmr-tokenizer"
        built = "cached" if (target / "hanclip.json").is_file() else "built"
        bundle = build_random_bundle(target)
    bundle_s = time.perf_counter() - start
    start = time.perf_counter()
    folder = options.work / f"photos-{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}"
    missing = sum(
        not (folder / f"photo-{i:03d}.jpg").is_file() for i in range(options.sizes.photos)
    )
    log(f"photos: {options.sizes.photos} 12-MP JPEGs, {missing} to generate")
    photos = ensure_photos(folder, options.sizes.photos, PHOTO_SIZE)
    one_time = {
        "bundle": built,
        "bundle_s": bundle_s,
        "photos_generated": missing,
        "photos_s": time.perf_counter() - start,
        "photo_mean_mb": float(np.mean([p.stat().st_size for p in photos]) / 1e6),
    }
    return bundle, photos, one_time


def first_index(ws: Workspace, library: Path) -> ProcessRun:
    """The first `index` with an empty cache: it exports the fast text encoder."""
    shutil.rmtree(ws.root / "cache", ignore_errors=True)
    seeds = ensure_photos(ws.root / "seed-photos", SEED_PHOTOS, SEED_PHOTO_SIZE)
    log("first index (exports the fast text encoder)")
    result, _ = ws.index(ws.root / "seed-photos", library)
    index_counts(result, len(seeds))
    return result


def measure_commands(
    ws: Workspace,
    photos: Sequence[Path],
    sizes: Sizes,
    model_parts: tuple[Any, Any, int],
    one_time: dict[str, Any],
) -> dict[str, Any]:
    """`hanclip index` and `search` as users run them, with the ceiling and the naive
    contenders beside them."""
    library = ws.fresh("search-library")
    first = first_index(ws, library)
    index, ceiling = measure_index(ws, photos, sizes.runs, "cpu", model_parts)
    results: dict[str, Any] = {"index": index, "ceiling": ceiling}
    one_time["first_index_s"] = first.wall_s
    one_time["fast_text_export_s"] = first.wall_s - index["startup_median_s"]
    log(f"search library: adding rows up to {sizes.library:,} photos")
    fill_library(library, sizes.library)
    results["search"] = measure_search(ws, library, sizes)
    import torch

    if torch.cuda.is_available():
        results["index_cuda"] = measure_index(ws, photos, sizes.runs, "cuda")[0]
    return results


def measure_in_process(
    spec: Any, model_parts: tuple[Any, Any, int], photos: Sequence[Path], sizes: Sizes
) -> dict[str, Any]:
    """The environment, the approximate paths against their references, and HNSW."""
    log("accuracy: fast text, heads, draft decoding")
    results: dict[str, Any] = {
        "environment": environment(usable_cores()),
        "bundle": {
            "path": str(spec.directory),
            "image_model": spec.image_model,
            "text_model": spec.text_model,
        },
        "accuracy": {
            "fast_text": fast_text_cosines(spec.text_model),
            "heads": heads_cosines(spec.heads_path) if spec.heads_path else None,
            "draft_decode": draft_decode_cosines(model_parts, photos[:DRAFT_PHOTOS]),
        },
    }
    results["hnsw"] = measure_hnsw(sizes)
    return results


def run_benchmark(options: Options) -> dict[str, Any]:
    """Every measurement, with the load average sampled throughout."""
    options.work.mkdir(parents=True, exist_ok=True)
    env = isolated_env(options.work)
    # This process's own model loads must use the same isolated caches as its children.
    os.environ.update({k: env[k] for k in ISOLATED_KEYS})
    started = time.perf_counter()
    with LoadSampler(usable_cores()) as load:
        bundle, photos, one_time = prepare_inputs(options)
        from hanclip_model.bundle import read_bundle

        spec = read_bundle(bundle)
        model_parts = clip_model(spec.image_model)
        ws = Workspace(options.work.resolve(), bundle, env)
        load.probe("before commands")
        results = measure_commands(ws, photos, options.sizes, model_parts, one_time)
        load.probe("before in-process")
        results.update(measure_in_process(spec, model_parts, photos, options.sizes))
        load.probe("end")
    results.update(
        sizes=asdict(options.sizes),
        one_time=one_time,
        load_average=load.summary(),
        work=str(options.work),
        wall_s=time.perf_counter() - started,
    )
    results["checks"] = {c.key: c.value for c in checks(results)}
    return results


# -- figures, checks and the report ------------------------------------------------------------


def per_round(ours: Sequence[float | None], theirs: Sequence[float]) -> float | None:
    """Median over rounds of ours / theirs; None if any round lacks our figure."""
    if any(o is None for o in ours):
        return None
    return median([o / t for o, t in zip(ours, theirs, strict=True)])


def ceiling_given_others(index: dict[str, Any], ceiling: dict[str, Any]) -> float | None:
    """Median over rounds of ours / that round's ceiling scaled to the cores other jobs left
    free during the embedding phase; None when their load was not observed."""
    cores = ceiling["cores"]
    scaled = [
        rate / (full * max(cores - others, 0.1) / cores)
        for rate, full, others in zip(
            index["photos_per_s_runs"], ceiling["ceiling_runs"], index["others_cores"], strict=True
        )
        if others is not None
    ]
    return median(scaled) if scaled else None


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    """Every ratio the targets name, each the median of its per-round ratios."""
    index, ceiling = results["index"], results["ceiling"]
    limit, naive = ceiling["ceiling_runs"], ceiling["naive_runs"]
    return {
        "index_vs_ceiling": per_round(index["photos_per_s_runs"], limit),
        "index_vs_naive": per_round(index["photos_per_s_runs"], naive),
        "index_steady_vs_ceiling": per_round(index["steady_photos_per_s_runs"], limit),
        "index_vs_ceiling_given_others": ceiling_given_others(index, ceiling),
        "index_vs_strict_ceiling": per_round(
            index["photos_per_s_runs"], ceiling["strict_ceiling_runs"]
        ),
        "index_whole_vs_ceiling": per_round(index["whole_photos_per_s_runs"], limit),
        "index_whole_vs_naive": per_round(index["whole_photos_per_s_runs"], naive),
    }


def checks(results: dict[str, Any]) -> list[Check]:
    text = results["accuracy"]["fast_text"]
    r = ratios(results)
    return [
        Check("search_wall_s", results["search"]["ours_median_s"]),
        Check("search_speedup", results["search"]["speedup"]),
        Check("index_vs_ceiling", r["index_vs_ceiling"]),
        Check("index_vs_naive", r["index_vs_naive"]),
        Check("hnsw_recall", results["hnsw"]["clustered"]["recall_at_10"]),
        Check("hnsw_p50_ms", results["hnsw"]["clustered"]["p50_ms"]),
        Check("search_rss_gb", results["search"]["peak_rss_bytes"] / GB),
        Check("index_rss_gb", results["index"]["peak_rss_bytes"] / GB),
        Check("text_cosine", min(text["one_at_a_time"]["min"], text["batched"]["min"])),
    ] + _int8_checks(text.get("int8"))


def _int8_checks(int8: dict[str, Any] | None) -> list[Check]:
    """A target only for an int8 path the product keeps; a dropped one is reported only."""
    if not int8 or not int8.get("kept"):
        return []
    return [Check("text_int8_cosine", int8["one_at_a_time"]["min"])]


def _line(label: str, value: str, note: str = "") -> str:
    return f"  {label:<46} {value:>14}  {note}".rstrip()


def _target_note(check: Check) -> str:
    t = check.target
    return f"target {t.op} {t.limit:g}{t.unit}  {check.verdict()}"


def _runs(values: Sequence[float], unit: str = "s") -> str:
    return "[" + " ".join(f"{v:.2f}" for v in values) + f"] {unit}"


def _optional(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _optional_runs(values: Sequence[float | None]) -> str:
    return "[" + " ".join("n/a" if v is None else f"{v:.2f}" for v in values) + "]"


def header_section(results: dict[str, Any]) -> list[str]:
    env, load, sizes = results["environment"], results["load_average"], results["sizes"]
    return [
        "hanclip speed benchmark, offline: "
        + (
            "the given bundle"
            if results["one_time"]["bundle"] == "given"
            else "real-size architectures, random weights"
        ),
        "=" * 76,
        f"machine       {env['cores']} cores usable, {env['cpu']}, {env['platform']}, "
        f"CUDA {'yes' if env['cuda'] else 'no'}",
        f"software      python {env['python']}, torch {env['torch']}, onnxruntime "
        f"{env['onnxruntime']}, open_clip {env['open_clip']}, sentence-transformers "
        f"{env['sentence_transformers']}",
        f"bundle        {results['bundle']['path']}",
        f"              image {results['bundle']['image_model']}, "
        f"text {results['bundle']['text_model']}",
        f"load average  start {load['at_start_1_5_15']}, during (1-min) min "
        f"{load['during_1min_min']} / median {load['during_1min_median']} / max "
        f"{load['during_1min_max']}, end {load['at_end_1_5_15']} (includes this benchmark)",
        "free cores    "
        + ", ".join(f"{k}: {v:.2f}" for k, v in load["cores_available"].items())
        + f" of {env['cores']} (CPU time {env['cores']} busy loops got in 1 s)",
        f"runs          {sizes['runs']} cold processes per timed command; medians shown",
        f"work dir      {results['work']}; benchmark wall time {results['wall_s']:.0f} s",
    ]


def one_time_section(results: dict[str, Any]) -> list[str]:
    t = results["one_time"]
    return [
        "One-time costs (not part of any ratio)",
        _line("random-weight bundle", f"{t['bundle_s']:.1f} s", f"({t['bundle']})"),
        _line(
            "12-MP JPEG generation",
            f"{t['photos_s']:.1f} s",
            f"({t['photos_generated']} generated, mean {t['photo_mean_mb']:.2f} MB)",
        ),
        _line(f"first `hanclip index` ({SEED_PHOTOS} small photos)", f"{t['first_index_s']:.1f} s"),
        _line(
            "  of which fast text export",
            f"{t['fast_text_export_s']:.1f} s",
            "(first index - median start-up)",
        ),
    ]


def search_section(results: dict[str, Any], by_key: dict[str, Check]) -> list[str]:
    s = results["search"]
    return [
        f"Search: {s['library_photos']:,}-photo library, process start to exit "
        f"(results printed), {s['runs']} runs",
        _line("hanclip search (median)", f"{s['ours_median_s']:.3f} s", _runs(s["ours_wall_s"])),
        _line("", "", _target_note(by_key["search_wall_s"])),
        _line("  its CPU time (median)", f"{median(s['ours_cpu_s']):.3f} s"),
        _line(
            "  other jobs' cores during each run",
            "",
            _optional_runs(s["others_cores"]),
        ),
        _line(
            "  of which imports (one more run, -X importtime)",
            f"{s['imports_s']:.3f} s",
            f"of {s['imports_run_wall_s']:.3f} s in that run (the log adds a little)",
        ),
        _line(
            "naive: torch+ST+open_clip, numpy (median)",
            f"{s['naive_median_s']:.3f} s",
            _runs(s["naive_wall_s"]),
        ),
        _line("naive / ours", f"{s['speedup']:.1f}x", _target_note(by_key["search_speedup"])),
    ]


def _index_lines(index: dict[str, Any]) -> list[str]:
    return [
        _line(
            f"hanclip index --device {index['device']}, whole command",
            f"{index['whole_median_s']:.2f} s",
            f"{_runs(index['whole_wall_s'])} = {index['whole_photos_per_s']:.2f} photos/s",
        ),
        _line(
            "  embedding phase (library opened -> last commit)",
            f"{index['embedding_median_s']:.2f} s",
            f"{_runs(index['embedding_phase_s'])} = {index['photos_per_s']:.2f} photos/s "
            "(used for the ratios)",
        ),
        _line(
            f"  steady state, after the first batch of {INDEX_BATCH}",
            _optional(index["steady_photos_per_s"]),
            "photos/s " + _optional_runs(index["steady_photos_per_s_runs"])
            if index["steady_photos_per_s"] is not None
            else f"(needs --photos >= {3 * INDEX_BATCH})",
        ),
        _line(
            "  same command on an empty folder (start-up)",
            f"{index['startup_median_s']:.2f} s",
            _runs(index["startup_wall_s"]),
        ),
        _line(
            "  whole - empty-folder start-up",
            f"{index['whole_median_s'] - index['startup_median_s']:.2f} s",
            f"= {_optional(index['whole_minus_startup_photos_per_s'])} photos/s (cross-check)",
        ),
        _line(
            "  cores busy (extra CPU / extra wall)",
            _optional(index["cores_busy"]),
            "below the core count: idle pipeline stages or other jobs' load",
        ),
        _line(
            "  other jobs' cores during each embedding phase",
            "",
            _optional_runs(index["others_cores"])
            + " (/proc/stat busy time less this benchmark's and hanclip's)",
        ),
    ]


def index_section(results: dict[str, Any], by_key: dict[str, Check]) -> list[str]:
    index, c, r = results["index"], results["ceiling"], ratios(results)
    t = results["one_time"]
    lines = [
        f"Index: {index['photos']} JPEGs {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} q{JPEG_QUALITY} "
        f"(mean {t['photo_mean_mb']:.2f} MB), fresh library, {index['runs']} rounds of",
        "  ceiling, `hanclip index`, naive loop; each ratio is the median of per-round ratios",
        *_index_lines(index),
        _line("  peak RSS", f"{index['peak_rss_bytes'] / GB:.2f} GB"),
        "  per round, medians shown:",
        _line(
            f"decode, load_image draft to {c['image_size']}px, 1 core",
            f"{c['decode_core_s_per_photo'] * 1000:.1f} ms",
            "core-s per photo",
        ),
        _line(
            f"model, ViT forward batch {c['model_batch']}, {c['torch_threads']} threads",
            f"{c['model_core_s_per_photo'] * 1000:.1f} ms",
            f"core-s per photo (process CPU time, best of {MODEL_BATCHES} batches; "
            f"wall {c['model_wall_s_per_photo'] * 1000:.1f} ms)",
        ),
        _line(
            "model, the same forwards on 1 thread",
            f"{c['model_1thread_core_s_per_photo'] * 1000:.1f} ms",
            "core-s per photo (no parallel overhead)",
        ),
        _line(
            "preprocess (open_clip, not in the ceiling)",
            f"{c['preprocess_core_s_per_photo'] * 1000:.1f} ms",
            "core-s per photo",
        ),
        _line(
            f"machine ceiling = {c['cores']} / (decode + model)",
            f"{c['ceiling_photos_per_s']:.2f}",
            f"photos/s {_runs(c['ceiling_runs'], '')}",
        ),
        _line(
            "naive loop (full decode, 1 photo/forward)",
            f"{c['naive_photos_per_s']:.2f}",
            f"photos/s {_runs(c['naive_runs'], '')}after a warm-up photo, no start-up",
        ),
        _line(
            "ours / ceiling",
            f"{r['index_vs_ceiling']:.2f}",
            _target_note(by_key["index_vs_ceiling"]),
        ),
        _line(
            "ours / naive", f"{r['index_vs_naive']:.1f}x", _target_note(by_key["index_vs_naive"])
        ),
        _line(
            "steady state / ceiling",
            _optional(r["index_steady_vs_ceiling"]),
            "(information: the first batch's pipeline fill and hashing left out)",
        ),
        _line(
            "ours / strict ceiling (1-thread model core-s)",
            _optional(r["index_vs_strict_ceiling"]),
            f"(information; strict ceiling {c['strict_ceiling_photos_per_s']:.2f} photos/s)",
        ),
        _line(
            "ours / ceiling at the cores other jobs left",
            _optional(r["index_vs_ceiling_given_others"]),
            "(information: ceiling x free cores / cores)",
        ),
        _line(
            "whole command: ours / ceiling, ours / naive",
            f"{r['index_whole_vs_ceiling']:.2f}, {r['index_whole_vs_naive']:.1f}x",
            "(information; start-up included)",
        ),
    ]
    if "index_cuda" in results:
        lines += ["CUDA (information, no target)", *_index_lines(results["index_cuda"])]
    return lines


def hnsw_section(results: dict[str, Any], by_key: dict[str, Check]) -> list[str]:
    h = results["hnsw"]

    def row(name: str, run: dict[str, Any]) -> str:
        return _line(
            name,
            f"recall {run['recall_at_10']:.4f}",
            f"p50 {run['p50_ms']:.2f} ms, p95 {run['p95_ms']:.2f} ms, build {run['build_s']:.0f} s",
        )

    return [
        f"HNSW: {h['vectors']:,} x {h['dim']} vectors, {h['queries']:,} held-out queries, "
        f"M={h['M']} ef_construction={h['ef_construction']} ef_search={h['ef_search']}",
        row(f"clustered ({h['clusters']:,} Gaussian clusters)", h["clustered"]),
        _line("", "", _target_note(by_key["hnsw_recall"])),
        _line("", "", _target_note(by_key["hnsw_p50_ms"])),
        row("random unit vectors (worst case, no target)", h["random"]),
        "  Targets are judged on the clustered set: real CLIP embeddings are clustered, while",
        "  random 512-d unit vectors are nearly equidistant and defeat any graph index.",
    ]


def memory_section(results: dict[str, Any], by_key: dict[str, Check]) -> list[str]:
    s, i = results["search"], results["index"]
    return [
        "Memory: peak RSS of the process (wait4 rusage, max over runs)",
        _line(
            "hanclip search",
            f"{s['peak_rss_bytes'] / GB:.2f} GB",
            _target_note(by_key["search_rss_gb"]),
        ),
        _line(
            "hanclip index",
            f"{i['peak_rss_bytes'] / GB:.2f} GB",
            _target_note(by_key["index_rss_gb"]),
        ),
        _line("naive search (information)", f"{s['naive_peak_rss_bytes'] / GB:.2f} GB"),
    ]


def _cosines(summary: dict[str, Any]) -> str:
    return (
        f"min {summary['min']:.7f}, mean {summary['mean']:.7f} (1 - min = {1 - summary['min']:.1e})"
    )


def accuracy_section(results: dict[str, Any], by_key: dict[str, Check]) -> list[str]:
    a = results["accuracy"]
    text, draft = a["fast_text"], a["draft_decode"]
    lines = [
        "Approximate paths vs the torch fp32 reference (cosine, same inputs)",
        _line(
            f"fast text (ONNX), {text['sentences']} sentences, one at a time",
            "",
            _cosines(text["one_at_a_time"]),
        ),
        _line("fast text (ONNX), same sentences batched", "", _cosines(text["batched"])),
        _line("", "", _target_note(by_key["text_cosine"])),
    ] + _int8_lines(text, by_key)
    if a["heads"] is not None:
        lines += [
            _line("heads in numpy (BatchNorm folded), f1", "", _cosines(a["heads"]["image"])),
            _line("heads in numpy (BatchNorm folded), f2", "", _cosines(a["heads"]["text"])),
        ]
    lines += [
        _line(
            f"JPEG draft vs full decode, {draft['photos']} photos",
            "",
            _cosines(draft["draft_vs_full"]),
        ),
        _line(
            "  scale: different photos (random weights)",
            "",
            f"mean {draft['different_photos_mean']:.6f}",
        ),
    ]
    return lines


def _int8_lines(text: dict[str, Any], by_key: dict[str, Check]) -> list[str]:
    int8 = text.get("int8")
    if not int8:
        return []
    if not int8["kept"]:
        gate = int8["gate_cosine"]
        return [
            _line(
                "fast text int8 (ONNX dynamic quantisation)",
                "not kept",
                f"worst cosine with the fp32 export {gate:.4f} < 0.99: never used",
            )
        ]
    speed = f"{int8['ms_per_query']:.1f} vs {text['fp32_ms_per_query']:.1f} ms per query (fp32)"
    return [
        _line("fast text int8, one at a time", "", _cosines(int8["one_at_a_time"])),
        _line("", "", _target_note(by_key["text_int8_cosine"])),
        _line("  int8 speed, warm", "", speed),
    ]


def targets_section(all_checks: Sequence[Check]) -> list[str]:
    met = sum(bool(c.passed) for c in all_checks)
    lines = [f"Targets: {met} of {len(all_checks)} met"]
    for c in all_checks:
        t = c.target
        value = "n/a" if c.value is None else f"{c.value:.4g}{t.unit}"
        lines.append(f"  {c.verdict():<16} {t.label:<48} {value:>10} {t.op} {t.limit:g}{t.unit}")
    return lines


def format_report(results: dict[str, Any]) -> str:
    all_checks = checks(results)
    by_key = {c.key: c for c in all_checks}
    sections = [
        header_section(results),
        one_time_section(results),
        search_section(results, by_key),
        index_section(results, by_key),
        hnsw_section(results, by_key),
        memory_section(results, by_key),
        accuracy_section(results, by_key),
        targets_section(all_checks),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


# -- command line ------------------------------------------------------------------------------


@contextmanager
def work_directory(explicit: Path | None) -> Iterator[Path]:
    """`--work` is kept (photos and bundle are reused); the default temp dir is removed."""
    if explicit is not None:
        yield explicit.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="hanclip-speed-") as tmp:
        yield Path(tmp)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python benchmarks/speed.py --work /tmp/hanclip-speed --json speed.json",
    )
    parser.add_argument("--work", type=Path, help="work directory (default: a temp dir)")
    parser.add_argument("--photos", type=int, help="12-MP JPEGs to index (default 96)")
    parser.add_argument("--runs", type=int, help="cold runs of each timed command (default 3)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run: a smoke test")
    parser.add_argument("--json", type=Path, dest="json_path", help="also write figures here")
    parser.add_argument(
        "--bundle", type=Path, help="benchmark this bundle instead of random real-size models"
    )
    # The naive contender runs in a fresh process through this same file.
    parser.add_argument("--naive-search", nargs=4, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else FULL
    if args.photos is not None:
        sizes = replace(sizes, photos=max(1, args.photos))
    if args.runs is not None:
        sizes = replace(sizes, runs=max(1, args.runs))
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.naive_search:
        naive_search(*args.naive_search)
        return 0
    with work_directory(args.work) as work:
        options = Options(work, sizes_from(args), args.bundle)
        try:
            results = run_benchmark(options)
        except BenchmarkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(format_report(results), end="")
    if args.json_path is not None:
        args.json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
