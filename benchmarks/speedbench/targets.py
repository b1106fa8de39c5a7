"""The speed targets, and each one's verdict on a run's figures."""

from __future__ import annotations

from benchkit.figures import Check, Target

from speedbench.results import BenchmarkResults, Int8Accuracy
from speedbench.settings import GB

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


def checks(results: BenchmarkResults) -> list[Check]:
    text = results.accuracy.fast_text
    hnsw = results.hnsw.clustered
    r = results.ratios
    return [
        Check.of(SEARCH_WALL_S, results.search.ours_wall_s.p50),
        Check.of(SEARCH_SPEEDUP, results.search.speedup),
        Check.of(INDEX_VS_CEILING, r.index_vs_ceiling),
        Check.of(INDEX_VS_NAIVE, r.index_vs_naive),
        Check.of(HNSW_RECALL, hnsw.recall_at_10),
        Check.of(HNSW_P50_MS, hnsw.p50_ms),
        Check.of(FILTERED_P50_MS, results.hnsw.filtered.p50_ms),
        Check.of(SEARCH_RSS_GB, results.search.peak_rss_bytes / GB),
        Check.of(INDEX_RSS_GB, results.index.peak_rss_bytes / GB),
        Check.of(TEXT_COSINE, min(text.one_at_a_time.min, text.batched.min)),
    ] + _int8_checks(text.int8)


def _int8_checks(int8: Int8Accuracy) -> list[Check]:
    """A target only for an int8 path the product keeps; a dropped one is reported only."""
    if not int8.kept or int8.one_at_a_time is None:
        return []
    return [Check.of(TEXT_INT8_COSINE, int8.one_at_a_time.min)]
