"""HNSW with the product's settings: recall@10 against exact search, and query time.

Targets are judged on clustered vectors: real CLIP embeddings are clustered, while random
512-d unit vectors are nearly equidistant and defeat any graph index (shown as the worst
case).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from hanclip_model.heads import l2_normalize
from speedbench.processes import log
from speedbench.results import HnswResult, HnswRun
from speedbench.settings import CLUSTER_SPREAD, HNSW_DIM, HNSW_K, Sizes


def random_unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return l2_normalize(rng.standard_normal((n, dim), dtype=np.float32))


def clustered_vectors(
    rng: np.random.Generator, n: int, dim: int, clusters: int, spread: float = CLUSTER_SPREAD
) -> np.ndarray:
    """Unit vectors around `clusters` random centres (isotropic Gaussian spread)."""
    centres = random_unit_vectors(rng, clusters, dim)
    labels = rng.integers(0, clusters, n)
    noise = rng.standard_normal((n, dim), dtype=np.float32) * (spread / np.sqrt(dim))
    return l2_normalize(centres[labels] + noise)


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


def hnsw_run(vectors: np.ndarray, queries: np.ndarray) -> HnswRun:
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
    return HnswRun(
        recall_at_10=recall_at_k(found, exact),
        p50_ms=float(np.percentile(times, 50) * 1000),
        p95_ms=float(np.percentile(times, 95) * 1000),
        build_s=build_s,
    )


def measure_hnsw(sizes: Sizes, seed: int = 0) -> HnswResult:
    from hanclip_cli import vector_index

    n, q = sizes.hnsw_vectors, sizes.hnsw_queries
    rng = np.random.default_rng(seed)
    # Queries come from the same distribution as the base vectors but are not in the index.
    clustered_set = clustered_vectors(rng, n + q, HNSW_DIM, sizes.hnsw_clusters)
    log(f"hnsw: clustered, {n:,} vectors")
    clustered = hnsw_run(clustered_set[:n], clustered_set[n:])
    del clustered_set  # the next set would otherwise double the peak memory
    uniform_set = random_unit_vectors(rng, n + q, HNSW_DIM)
    log(f"hnsw: random unit vectors, {n:,} vectors")
    uniform = hnsw_run(uniform_set[:n], uniform_set[n:])
    return HnswResult(
        vectors=n,
        queries=q,
        dim=HNSW_DIM,
        M=vector_index.M,
        ef_construction=vector_index.EF_CONSTRUCTION,
        ef_search=vector_index.EF_SEARCH,
        clusters=sizes.hnsw_clusters,
        cluster_spread=CLUSTER_SPREAD,
        clustered=clustered,
        random=uniform,
    )
