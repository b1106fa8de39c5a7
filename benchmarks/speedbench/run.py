"""One whole run: inputs, the commands as users run them, the in-process measurements."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hanclip_model.bundle import MANIFEST_NAME, read_bundle
from hanclip_model.device import usable_cores
from speedbench.accuracy import measure_accuracy
from speedbench.ceiling import ClipParts, load_clip
from speedbench.hnsw import measure_hnsw
from speedbench.index import measure_index, measure_index_alone
from speedbench.inputs import build_random_bundle, ensure_photos, fill_library, photo_paths
from speedbench.processes import LoadSampler, ProcessRun, log
from speedbench.results import (
    BenchmarkResults,
    BundleInfo,
    CeilingResult,
    Environment,
    IndexResult,
    OneTime,
    SearchResult,
)
from speedbench.search import measure_search
from speedbench.settings import PHOTO_SIZE, SEED_PHOTO_SIZE, SEED_PHOTOS, Sizes
from speedbench.workspace import ISOLATED_KEYS, Workspace, check_index_counts, isolated_env


@dataclass(frozen=True)
class Options:
    work: Path
    sizes: Sizes
    bundle: Path | None  # None: build the random real-size bundle


@dataclass(frozen=True)
class Inputs:
    """The bundle and the 12-MP photos, with what preparing them cost."""

    bundle: Path
    photos: tuple[Path, ...]
    bundle_origin: str  # "given", "cached" or "built"
    bundle_s: float
    photos_generated: int
    photos_s: float

    @property
    def photo_mean_mb(self) -> float:
        return float(np.mean([p.stat().st_size for p in self.photos]) / 1e6)


@dataclass(frozen=True)
class CommandResults:
    index: IndexResult
    ceiling: CeilingResult
    search: SearchResult
    index_cuda: IndexResult | None
    first_index_s: float  # the first `index`, which exports the fast text encoder


@contextmanager
def work_directory(explicit: Path | None) -> Iterator[Path]:
    """`--work` is kept (photos and bundle are reused); the default temp dir is removed."""
    if explicit is not None:
        yield explicit.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="hanclip-speed-") as tmp:
        yield Path(tmp)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where there is none)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def environment(cores: int) -> Environment:
    import hnswlib  # noqa: F401 - its presence is part of the environment
    import onnxruntime
    import open_clip
    import sentence_transformers
    import torch

    return Environment(
        cores=cores,
        cpu=cpu_model(),
        platform=platform.platform(),
        python=platform.python_version(),
        torch=torch.__version__,
        onnxruntime=onnxruntime.__version__,
        open_clip=open_clip.__version__,
        sentence_transformers=sentence_transformers.__version__,
        cuda=torch.cuda.is_available(),
    )


def prepare_inputs(options: Options) -> Inputs:
    """The bundle and the photos, built once per work directory."""
    start = time.perf_counter()
    if options.bundle is not None:
        bundle, origin = options.bundle.resolve(), "given"
    else:
        log("building the random-weight bundle (once per work directory)")
        target = options.work / "bundle-xlmr-tokenizer"
        origin = "cached" if (target / MANIFEST_NAME).is_file() else "built"
        bundle = build_random_bundle(target)
    bundle_s = time.perf_counter() - start
    start = time.perf_counter()
    folder = options.work / f"photos-{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}"
    missing = sum(not p.is_file() for p in photo_paths(folder, options.sizes.photos))
    log(f"photos: {options.sizes.photos} 12-MP JPEGs, {missing} to generate")
    photos = ensure_photos(folder, options.sizes.photos, PHOTO_SIZE)
    return Inputs(bundle, tuple(photos), origin, bundle_s, missing, time.perf_counter() - start)


def first_index(ws: Workspace, library: Path) -> ProcessRun:
    """The first `index` with an empty cache: it exports the fast text encoder."""
    shutil.rmtree(ws.root / "cache", ignore_errors=True)
    seeds = ensure_photos(ws.root / "seed-photos", SEED_PHOTOS, SEED_PHOTO_SIZE)
    log("first index (exports the fast text encoder)")
    result, _ = ws.index(ws.root / "seed-photos", library)
    check_index_counts(result, len(seeds))
    return result


def measure_commands(
    ws: Workspace, photos: Sequence[Path], sizes: Sizes, clip: ClipParts
) -> CommandResults:
    """`hanclip index` and `search` as users run them, with the ceiling and the naive
    contenders beside them."""
    library = ws.fresh("search-library")
    first = first_index(ws, library)
    rounds = measure_index(ws, photos, sizes.runs, clip)
    log(f"search library: adding rows up to {sizes.library:,} photos")
    fill_library(library, sizes.library)
    search = measure_search(ws, library, sizes)
    import torch

    index_cuda = None
    if torch.cuda.is_available():
        index_cuda = measure_index_alone(ws, photos, sizes.runs, "cuda")
    return CommandResults(rounds.index, rounds.ceiling, search, index_cuda, first.wall_s)


def run_benchmark(options: Options) -> BenchmarkResults:
    """Every measurement, with the load average sampled throughout."""
    options.work.mkdir(parents=True, exist_ok=True)
    env = isolated_env(options.work)
    # This process's own model loads must use the same isolated caches as its children.
    os.environ.update({k: env[k] for k in ISOLATED_KEYS})
    started = time.perf_counter()
    with LoadSampler(usable_cores()) as load:
        inputs = prepare_inputs(options)
        spec = read_bundle(inputs.bundle)
        clip = load_clip(spec.image_model)
        ws = Workspace(options.work.resolve(), inputs.bundle, env)
        load.probe("before commands")
        commands = measure_commands(ws, inputs.photos, options.sizes, clip)
        load.probe("before in-process")
        environment_now = environment(usable_cores())
        accuracy = measure_accuracy(spec, clip, inputs.photos)
        hnsw = measure_hnsw(options.sizes)
        load.probe("end")
    return BenchmarkResults(
        environment=environment_now,
        bundle=BundleInfo.of(spec),
        sizes=options.sizes,
        one_time=OneTime(
            bundle=inputs.bundle_origin,
            bundle_s=inputs.bundle_s,
            photos_generated=inputs.photos_generated,
            photos_s=inputs.photos_s,
            photo_mean_mb=inputs.photo_mean_mb,
            first_index_s=commands.first_index_s,
            fast_text_export_s=commands.first_index_s - commands.index.startup_median_s,
        ),
        load_average=load.summary(),
        search=commands.search,
        index=commands.index,
        ceiling=commands.ceiling,
        index_cuda=commands.index_cuda,
        hnsw=hnsw,
        accuracy=accuracy,
        work=str(options.work),
        wall_s=time.perf_counter() - started,
    )
