"""The speed targets, the ratios they name, and each one's verdict on a run's figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from speedbench.processes import median
from speedbench.results import BenchmarkResults, CeilingResult, IndexResult, Int8Accuracy
from speedbench.settings import GB


@dataclass(frozen=True)
class Target:
    key: str  # the target's name under "checks" in the --json file
    label: str
    op: str  # "<=" or ">="
    limit: float
    unit: str

    def met_by(self, value: float) -> bool:
        return value <= self.limit if self.op == "<=" else value >= self.limit


SEARCH_WALL_S = Target("search_wall_s", "search wall time (cold process)", "<=", 1.0, "s")
SEARCH_SPEEDUP = Target("search_speedup", "search: naive / ours", ">=", 8.0, "x")
INDEX_VS_CEILING = Target("index_vs_ceiling", "index: ours / machine ceiling", ">=", 0.85, "")
INDEX_VS_NAIVE = Target("index_vs_naive", "index: ours / naive loop", ">=", 2.0, "x")
HNSW_RECALL = Target("hnsw_recall", "HNSW recall@10 (clustered)", ">=", 0.98, "")
HNSW_P50_MS = Target("hnsw_p50_ms", "HNSW query p50 (clustered)", "<=", 2.0, "ms")
FILTERED_P50_MS = Target(
    "filtered_p50_ms", "filtered search p50 (1% pass, filter + query)", "<=", 20.0, "ms"
)
SEARCH_RSS_GB = Target("search_rss_gb", "search peak RSS", "<=", 1.0, "GB")
INDEX_RSS_GB = Target("index_rss_gb", "index peak RSS", "<=", 3.0, "GB")
TEXT_COSINE = Target(
    "text_cosine", "fast text vs sentence-transformers, min cosine", ">=", 0.999, ""
)
TEXT_INT8_COSINE = Target(
    "text_int8_cosine", "int8 fast text vs sentence-transformers", ">=", 0.99, ""
)
TARGETS = (
    SEARCH_WALL_S,
    SEARCH_SPEEDUP,
    INDEX_VS_CEILING,
    INDEX_VS_NAIVE,
    HNSW_RECALL,
    HNSW_P50_MS,
    FILTERED_P50_MS,
    SEARCH_RSS_GB,
    INDEX_RSS_GB,
    TEXT_COSINE,
    TEXT_INT8_COSINE,
)


@dataclass(frozen=True)
class Check:
    """One target against its measured value."""

    target: Target
    value: float | None  # None: not measured in this run

    @property
    def key(self) -> str:
        return self.target.key

    @property
    def passed(self) -> bool | None:
        return None if self.value is None else self.target.met_by(self.value)

    def verdict(self) -> str:
        """PASS, FAIL with the gap in per cent of the limit, or n/a."""
        if self.value is None:
            return "n/a"
        if self.passed:
            return "PASS"
        gap = abs(self.value - self.target.limit) / self.target.limit
        word = "over" if self.target.op == "<=" else "short"
        return f"FAIL ({gap:.0%} {word})" if gap >= 0.01 else f"FAIL ({gap:.1%} {word})"


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


def ratios(index: IndexResult, ceiling: CeilingResult) -> IndexRatios:
    limit, naive = ceiling.ceiling_runs, ceiling.naive_runs
    return IndexRatios(
        index_vs_ceiling=per_round(index.photos_per_s_runs, limit),
        index_vs_naive=per_round(index.photos_per_s_runs, naive),
        index_steady_vs_ceiling=per_round(index.steady_photos_per_s_runs, limit),
        index_vs_ceiling_given_others=ceiling_given_others(
            index.photos_per_s_runs, limit, index.others_cores, ceiling.cores
        ),
        index_vs_strict_ceiling=per_round(index.photos_per_s_runs, ceiling.strict_ceiling_runs),
        index_whole_vs_ceiling=per_round(index.whole_photos_per_s_runs, limit),
        index_whole_vs_naive=per_round(index.whole_photos_per_s_runs, naive),
    )


def checks(results: BenchmarkResults) -> list[Check]:
    text = results.accuracy.fast_text
    hnsw = results.hnsw.clustered
    r = ratios(results.index, results.ceiling)
    return [
        Check(SEARCH_WALL_S, results.search.ours_median_s),
        Check(SEARCH_SPEEDUP, results.search.speedup),
        Check(INDEX_VS_CEILING, r.index_vs_ceiling),
        Check(INDEX_VS_NAIVE, r.index_vs_naive),
        Check(HNSW_RECALL, hnsw.recall_at_10),
        Check(HNSW_P50_MS, hnsw.p50_ms),
        Check(FILTERED_P50_MS, results.hnsw.filtered.p50_ms),
        Check(SEARCH_RSS_GB, results.search.peak_rss_bytes / GB),
        Check(INDEX_RSS_GB, results.index.peak_rss_bytes / GB),
        Check(TEXT_COSINE, min(text.one_at_a_time.min, text.batched.min)),
    ] + _int8_checks(text.int8)


def _int8_checks(int8: Int8Accuracy) -> list[Check]:
    """A target only for an int8 path the product keeps; a dropped one is reported only."""
    if not int8.kept or int8.one_at_a_time is None:
        return []
    return [Check(TEXT_INT8_COSINE, int8.one_at_a_time.min)]


def check_values(all_checks: Sequence[Check]) -> dict[str, float | None]:
    """Each target's measured value by its key, as the --json file gives them."""
    return {c.key: c.value for c in all_checks}
