"""Every figure of one run, in frozen dataclasses.

The field names are the keys of the `--json` file (`figures_json`), which consumers of the
benchmark's output read: rename a field only together with them. Sequences are tuples, one
value per run or round, in the order they were measured; None is a figure this run could
not observe.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from speedbench.settings import Sizes

if TYPE_CHECKING:
    from hanclip_model.bundle import BundleSpec


@dataclass(frozen=True)
class SearchResult:
    """Cold `hanclip search` processes against the naive script, on the same library."""

    library_photos: int
    runs: int
    ours_wall_s: tuple[float, ...]
    ours_cpu_s: tuple[float, ...]
    ours_median_s: float
    others_cores: tuple[float | None, ...]  # cores other jobs kept busy during each run
    naive_wall_s: tuple[float, ...]
    naive_median_s: float
    speedup: float  # naive median / ours median
    peak_rss_bytes: int
    naive_peak_rss_bytes: int
    imports_s: float  # one more run of ours, with the import log
    imports_run_wall_s: float


@dataclass(frozen=True)
class IndexResult:
    """`hanclip index` of the photos into a fresh library, per run and as medians. The
    embedding phase runs from the library's opening (models loaded) to the last commit."""

    device: str
    photos: int
    runs: int
    whole_wall_s: tuple[float, ...]
    startup_wall_s: tuple[float, ...]  # the same command on an empty folder
    embedding_phase_s: tuple[float, ...]
    whole_median_s: float
    startup_median_s: float
    embedding_median_s: float
    photos_per_s: float  # over the median embedding phase: what the ratios use
    photos_per_s_runs: tuple[float, ...]
    whole_photos_per_s_runs: tuple[float, ...]
    steady_photos_per_s_runs: tuple[float | None, ...]
    steady_photos_per_s: float | None
    others_cores: tuple[float | None, ...]
    whole_photos_per_s: float
    whole_minus_startup_photos_per_s: float | None
    # Below the core count when the pipeline leaves cores idle or other jobs take them.
    cores_busy: float | None
    peak_rss_bytes: int


@dataclass(frozen=True)
class CeilingRound:
    """Decode and model core-seconds per photo, measured in one round, and the ceilings."""

    cores: int
    image_size: int
    torch_threads: int
    decode_core_s_per_photo: float
    preprocess_core_s_per_photo: float
    model_core_s_per_photo: float
    model_wall_s_per_photo: float
    model_1thread_core_s_per_photo: float
    ceiling_photos_per_s: float
    strict_ceiling_photos_per_s: float  # with the one-thread model cost


@dataclass(frozen=True)
class CeilingResult:
    """Medians over the rounds of `CeilingRound` and the naive loop, and each round's
    ceiling and naive rate (each ratio is taken within a round)."""

    cores: int
    image_size: int
    torch_threads: int
    model_batch: int
    rounds: int
    decode_core_s_per_photo: float
    preprocess_core_s_per_photo: float
    model_core_s_per_photo: float
    model_wall_s_per_photo: float
    model_1thread_core_s_per_photo: float
    ceiling_photos_per_s: float
    strict_ceiling_photos_per_s: float
    naive_photos_per_s: float
    ceiling_runs: tuple[float, ...]
    strict_ceiling_runs: tuple[float, ...]
    naive_runs: tuple[float, ...]


@dataclass(frozen=True)
class HnswRun:
    recall_at_10: float
    p50_ms: float
    p95_ms: float
    build_s: float


@dataclass(frozen=True)
class FilteredRun:
    """A search with a date filter, timed as `search` runs it: the SQLite query for the
    photos that pass, then the nearest of those (`VectorIndex.search_among`)."""

    passing: int  # photos the filter keeps
    share: float  # passing / photos
    strategy: str  # "exact" (every passing photo scored) or "graph" (filtered HNSW)
    complete: float  # share of queries that got exactly min(k, passing) results
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True)
class HnswResult:
    """The product's HNSW settings on clustered and on random unit vectors."""

    vectors: int
    queries: int
    dim: int
    M: int
    ef_construction: int
    ef_search: int
    clusters: int
    cluster_spread: float
    clustered: HnswRun
    random: HnswRun
    filtered: FilteredRun  # on the clustered set


@dataclass(frozen=True)
class CosineSummary:
    min: float
    mean: float
    n: int

    @classmethod
    def of(cls, cosines: np.ndarray) -> CosineSummary:
        return cls(float(np.min(cosines)), float(np.mean(cosines)), len(cosines))


@dataclass(frozen=True)
class Int8Accuracy:
    """The optional int8 text export; the cosine and speed only when the export kept it."""

    gate_cosine: float | None  # its worst cosine with the fp32 export; None: not tried
    kept: bool
    one_at_a_time: CosineSummary | None = None
    ms_per_query: float | None = None


@dataclass(frozen=True)
class FastTextAccuracy:
    sentences: int
    one_at_a_time: CosineSummary
    batched: CosineSummary
    fp32_ms_per_query: float
    int8: Int8Accuracy


@dataclass(frozen=True)
class HeadsAccuracy:
    image: CosineSummary
    text: CosineSummary


@dataclass(frozen=True)
class DraftDecodeAccuracy:
    draft_vs_full: CosineSummary
    different_photos_mean: float  # the scale: random weights make any cosine hard to read
    photos: int


@dataclass(frozen=True)
class AccuracyResult:
    """Every approximate path against its torch fp32 reference."""

    fast_text: FastTextAccuracy
    heads: HeadsAccuracy | None  # None: the bundle has no heads
    draft_decode: DraftDecodeAccuracy


@dataclass(frozen=True)
class Environment:
    cores: int
    cpu: str
    platform: str
    python: str
    torch: str
    onnxruntime: str
    open_clip: str
    sentence_transformers: str
    cuda: bool


@dataclass(frozen=True)
class BundleInfo:
    path: str
    image_model: str
    text_model: str

    @classmethod
    def of(cls, spec: BundleSpec) -> BundleInfo:
        return cls(str(spec.directory), spec.image_model, spec.text_model)


@dataclass(frozen=True)
class OneTime:
    """Costs paid once per work directory or run, part of no ratio."""

    bundle: str  # "given", "cached" or "built"
    bundle_s: float
    photos_generated: int
    photos_s: float
    photo_mean_mb: float
    first_index_s: float
    fast_text_export_s: float  # first index - median start-up


@dataclass(frozen=True)
class LoadSummary:
    """The machine's load while the benchmark ran (it is shared)."""

    cores_available: dict[str, float]  # moment -> cores that busy loops obtained
    at_start_1_5_15: tuple[float, ...]
    at_end_1_5_15: tuple[float, ...]
    during_1min_min: float
    during_1min_median: float
    during_1min_max: float


@dataclass(frozen=True)
class BenchmarkResults:
    environment: Environment
    bundle: BundleInfo
    sizes: Sizes
    one_time: OneTime
    load_average: LoadSummary
    search: SearchResult
    index: IndexResult
    ceiling: CeilingResult
    index_cuda: IndexResult | None  # None: no CUDA device
    hnsw: HnswResult
    accuracy: AccuracyResult
    work: str
    wall_s: float


def figures_json(results: BenchmarkResults, checks: Mapping[str, float | None]) -> str:
    """The `--json` file: every figure under its field name, and each target's value."""
    return json.dumps({**asdict(results), "checks": dict(checks)}, indent=2) + "\n"
