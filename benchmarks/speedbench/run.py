"""One whole run: inputs, the commands as users run them, the in-process measurements."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchkit.environment import environment
from benchkit.inputs import ensure_photos, fill_library, prepare_inputs
from benchkit.processes import LoadSampler, ProcessRun, log
from benchkit.workspace import Workspace, check_index_counts, isolated_env, isolated_process

from hanclip_model.bundle import read_bundle
from hanclip_model.device import usable_cores
from speedbench.accuracy import measure_accuracy
from speedbench.ceiling import ClipParts, load_clip
from speedbench.hnsw import measure_hnsw
from speedbench.index import measure_index
from speedbench.results import (
    BenchmarkResults,
    BundleInfo,
    CeilingResult,
    IndexResult,
    OneTime,
    SearchResult,
)
from speedbench.search import measure_search
from speedbench.settings import SEED_PHOTO_SIZE, SEED_PHOTOS, Sizes


@dataclass(frozen=True)
class Options:
    work: Path
    sizes: Sizes
    bundle: Path | None  # None: build the random real-size bundle


@dataclass(frozen=True)
class CommandResults:
    index: IndexResult
    ceiling: CeilingResult
    search: SearchResult
    index_cuda: IndexResult | None
    first_index_s: float  # the first `index`, which exports the fast text encoder


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
        index_cuda = measure_index(ws, photos, sizes.runs, None, "cuda").index
    assert rounds.ceiling is not None
    return CommandResults(rounds.index, rounds.ceiling, search, index_cuda, first.wall_s)


def run_benchmark(options: Options) -> BenchmarkResults:
    """Every measurement, with the load average sampled throughout."""
    options.work.mkdir(parents=True, exist_ok=True)
    env = isolated_env(options.work)
    started = time.perf_counter()
    with isolated_process(env), LoadSampler(usable_cores()) as load:
        inputs = prepare_inputs(options.work, options.sizes.photos, options.bundle)
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
            fast_text_export_s=commands.first_index_s - commands.index.startup_wall_s.p50,
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
