"""HNSW with the product's settings: recall@10 against exact search, and query time.

Targets are judged on clustered vectors: real CLIP embeddings are clustered, while random
512-d unit vectors are nearly equidistant and defeat any graph index (shown as the worst
case).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from benchkit.processes import log
from benchkit.vectors import around, unit_vectors

from speedbench.results import FilteredRun, HnswResult, HnswRun
from speedbench.settings import CLUSTER_SPREAD, HNSW_DIM, HNSW_K, Sizes


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


def timed_build(vectors: np.ndarray) -> tuple[object, float]:
    """The index with the product's settings, labels = row numbers, and its build time."""
    from hanclip_library.vector_index import build_index

    start = time.perf_counter()
    vindex = build_index(np.arange(len(vectors)), vectors, "speed-benchmark", vectors.shape[1])
    return vindex, time.perf_counter() - start


def timed_queries(search: Callable[[np.ndarray], list], queries: np.ndarray) -> tuple[list, list]:
    """Each query's hits and its seconds, one query at a time as `search` runs them, after
    one untimed warm-up query."""
    search(queries[0])
    found, times = [], []
    for query in queries:
        start = time.perf_counter()
        found.append(search(query))
        times.append(time.perf_counter() - start)
    return found, times


def hnsw_run(vectors: np.ndarray, queries: np.ndarray, built: tuple[object, float]) -> HnswRun:
    """Query the index `built` from `vectors` one vector at a time, as `search` does."""
    vindex, build_s = built
    found, times = timed_queries(lambda query: vindex.search(query, HNSW_K), queries)
    exact = exact_top_k(vectors, queries, HNSW_K)
    p50, p95 = np.percentile(times, (50, 95)) * 1000
    ids = [[photo_id for photo_id, _ in hits] for hits in found]
    return HnswRun(recall_at_k(ids, exact), float(p50), float(p95), build_s)


# Photos are dated over FILTER_MONTHS months from 2015-01; the filter keeps one of them.
FILTER_MONTHS = 100
FILTER_AFTER, FILTER_BEFORE = "2019-01", "2019-02"


def _month(index: int) -> tuple[int, int]:
    year, month = divmod(index % FILTER_MONTHS, 12)
    return 2015 + year, month + 1


def dated_store(directory: Path, raw: np.ndarray):
    """A library.db with one row per vector, as `index` writes them: every photo in month
    `i % FILTER_MONTHS`, the even ones dated by EXIF, the odd ones by file time only."""
    from datetime import datetime

    from hanclip_library.store import NewPhoto, PhotoStore

    store = PhotoStore(directory)
    photos = []
    for i, embedding in enumerate(raw):
        year, month = _month(i)
        when = datetime(year, month, 1 + i % 28, 12)
        photos.append(
            NewPhoto(
                path=f"/photos/{year}/{month:02}/{i}.jpg",
                size=1,
                mtime_ns=int(when.timestamp()) * 10**9,
                sha256=f"{i:064x}",
                width=4032,
                height=3024,
                taken_at=when.isoformat() if i % 2 == 0 else None,
                embedding=embedding,
            )
        )
    store.add_photos(photos)
    return store


def filtered_run(vindex, raw: np.ndarray, queries: np.ndarray) -> FilteredRun:
    """A date filter keeping 1/FILTER_MONTHS of the photos, timed per query as `search` runs
    it: the candidates from SQLite, then `search_among`."""
    from hanclip_library import vector_index
    from hanclip_library.request import CLI, SearchRequest

    dated = SearchRequest(after=FILTER_AFTER, before=FILTER_BEFORE)
    after, before = dated.date_bound("after", CLI), dated.date_bound("before", CLI)
    with tempfile.TemporaryDirectory(prefix="speedbench-filtered-") as tmp:
        store = dated_store(Path(tmp), raw)
        # `search` loads the index from its file, which then also serves the exact scan.
        vector_index.save_index(Path(tmp), vindex)
        vindex = vector_index.load_index(Path(tmp))
        try:
            passing = len(store.ids_passing(after=after, before=before))

            def one(query: np.ndarray) -> list[tuple[int, float]]:
                # Photo ids are 1..n, the benchmark index's labels 0..n-1.
                allowed = {i - 1 for i in store.ids_passing(after=after, before=before)}
                return vindex.search_among(query, HNSW_K, allowed)

            found, times = timed_queries(one, queries)
        finally:
            store.close()
    p50, p95 = np.percentile(times, (50, 95)) * 1000
    return FilteredRun(
        passing=passing,
        share=passing / len(raw),
        strategy="exact" if passing <= vector_index.EXACT_MAX_CANDIDATES else "graph",
        complete=float(np.mean([len(hits) == min(HNSW_K, passing) for hits in found])),
        p50_ms=float(p50),
        p95_ms=float(p95),
    )


def measure_hnsw(sizes: Sizes, seed: int = 0) -> HnswResult:
    from hanclip_library import vector_index

    n, q = sizes.hnsw_vectors, sizes.hnsw_queries
    rng = np.random.default_rng(seed)
    # Queries come from the same distribution as the base vectors but are not in the index.
    centres = unit_vectors(rng, sizes.hnsw_clusters, HNSW_DIM)
    clustered_set = around(rng, centres, n + q, CLUSTER_SPREAD / np.sqrt(HNSW_DIM))
    log(f"hnsw: clustered, {n:,} vectors")
    built = timed_build(clustered_set[:n])
    clustered = hnsw_run(clustered_set[:n], clustered_set[n:], built)
    log(f"hnsw: filtered, {n // FILTER_MONTHS:,} of {n:,} photos pass")
    filtered = filtered_run(built[0], clustered_set[:n], clustered_set[n:])
    del clustered_set, built  # the next set would otherwise double the peak memory
    uniform_set = unit_vectors(rng, n + q, HNSW_DIM)
    log(f"hnsw: random unit vectors, {n:,} vectors")
    uniform = hnsw_run(uniform_set[:n], uniform_set[n:], timed_build(uniform_set[:n]))
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
        filtered=filtered,
    )
