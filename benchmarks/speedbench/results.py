"""Every figure of one run, in frozen dataclasses.

The field and property names are the keys of the `--json` file, which consumers of the
benchmark's output read: rename one only together with them. Sequences are tuples, one
value per run or round, in the order they were measured; None is a figure this run could
not observe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from benchkit.environment import Environment
from benchkit.figures import Spread
from benchkit.processes import LoadSummary, median

from speedbench.settings import Sizes

if TYPE_CHECKING:
    from hanclip_model.bundle import BundleSpec


@dataclass(frozen=True)
class SearchResult:
    """Cold `hanclip search` processes against the naive script, on the same library."""

    library_photos: int
    ours_wall_s: Spread
    ours_cpu_s: Spread
    others_cores: tuple[float | None, ...]  # cores other jobs kept busy during each run
    naive_wall_s: Spread
    peak_rss_bytes: int
    naive_peak_rss_bytes: int
    imports_s: float  # one more run of ours, with the import log
    imports_run_wall_s: float

    @property
    def speedup(self) -> float:
        """Naive median over ours."""
        return self.naive_wall_s.p50 / self.ours_wall_s.p50


@dataclass(frozen=True)
class IndexResult:
    """`hanclip index` of the photos into a fresh library. The embedding phase runs from the
    library's opening (models loaded) to the last commit."""

    device: str
    photos: int
    whole_wall_s: Spread
    startup_wall_s: Spread  # the same command on an empty folder
    embedding_phase_s: Spread
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

    @property
    def whole_minus_startup_s(self) -> float:
        """The whole command less its start-up alone (a cross-check of the phase)."""
        return self.whole_wall_s.p50 - self.startup_wall_s.p50


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
    """Every figure of `CeilingRound` over the rounds, and the naive loop's rate in each
    (each ratio is taken within a round)."""

    cores: int
    image_size: int
    torch_threads: int
    model_batch: int
    decode_core_s_per_photo: Spread
    preprocess_core_s_per_photo: Spread
    model_core_s_per_photo: Spread
    model_wall_s_per_photo: Spread
    model_1thread_core_s_per_photo: Spread
    ceiling_photos_per_s: Spread
    strict_ceiling_photos_per_s: Spread
    naive_photos_per_s: Spread


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

    @property
    def ratios(self) -> IndexRatios:
        return index_ratios(self.index, self.ceiling)


@dataclass(frozen=True)
class IndexRatios:
    """Every index ratio, each the median of its per-round ratios; None where a round
    lacks a figure."""

    index_vs_ceiling: float | None
    index_vs_naive: float | None
    index_steady_vs_ceiling: float | None
    index_vs_ceiling_given_others: float | None
    index_vs_strict_ceiling: float | None
    index_whole_vs_ceiling: float | None
    index_whole_vs_naive: float | None


def per_round(ours: Sequence[float | None], theirs: Sequence[float]) -> float | None:
    """Median over rounds of ours / theirs; None if any round lacks our figure."""
    if any(o is None for o in ours):
        return None
    return median([o / t for o, t in zip(ours, theirs, strict=True)])


def ceiling_given_others(
    rates: Sequence[float],
    ceilings: Sequence[float],
    others: Sequence[float | None],
    cores: int,
) -> float | None:
    """Median over rounds of our rate / that round's ceiling scaled to the cores other jobs
    left free during the embedding phase; None when their load was not observed."""
    scaled = [
        rate / (full * max(cores - busy, 0.1) / cores)
        for rate, full, busy in zip(rates, ceilings, others, strict=True)
        if busy is not None
    ]
    return median(scaled) if scaled else None


def index_ratios(index: IndexResult, ceiling: CeilingResult) -> IndexRatios:
    limit, naive = ceiling.ceiling_photos_per_s.runs, ceiling.naive_photos_per_s.runs
    return IndexRatios(
        index_vs_ceiling=per_round(index.photos_per_s_runs, limit),
        index_vs_naive=per_round(index.photos_per_s_runs, naive),
        index_steady_vs_ceiling=per_round(index.steady_photos_per_s_runs, limit),
        index_vs_ceiling_given_others=ceiling_given_others(
            index.photos_per_s_runs, limit, index.others_cores, ceiling.cores
        ),
        index_vs_strict_ceiling=per_round(
            index.photos_per_s_runs, ceiling.strict_ceiling_photos_per_s.runs
        ),
        index_whole_vs_ceiling=per_round(index.whole_photos_per_s_runs, limit),
        index_whole_vs_naive=per_round(index.whole_photos_per_s_runs, naive),
    )
