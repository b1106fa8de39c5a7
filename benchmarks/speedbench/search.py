"""Cold `hanclip search` processes against the naive script, on the same library."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from benchkit.figures import Spread
from benchkit.processes import BenchmarkError, import_log, log, with_others
from benchkit.workspace import Workspace

from hanclip_eval.runner import LATENCY_QUERIES
from speedbench.results import SearchResult
from speedbench.settings import Sizes


def export_search_vectors(library: Path, bundle: Path, out_dir: Path) -> tuple[Path, Path]:
    """The library's search vectors and paths as .npy files, for the naive search."""
    from hanclip_library.store import PhotoStore
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


def import_seconds(importtime_log: str) -> float:
    """Total import time in a `python -X importtime` log: the cumulative times of the
    top-level imports (one space of nesting), in seconds."""
    imports = import_log(importtime_log)
    return sum(us for name, us in imports if name[:1] == " " and name[1:2] != " ") / 1e6


def measure_search(ws: Workspace, library: Path, sizes: Sizes) -> SearchResult:
    """Timed cold searches, ours and naive, on the same library and vectors; interleaved,
    so that a change in the machine's load hits both alike."""
    log("search: warm-up search (syncs the HNSW index with the new rows)")
    ws.search(LATENCY_QUERIES[0], library)
    vectors, paths = export_search_vectors(library, ws.bundle, ws.root / "runs")
    ours, naive, others = [], [], []
    for run in range(sizes.runs):
        query = LATENCY_QUERIES[run % len(LATENCY_QUERIES)]
        result, busy = with_others(lambda q=query: ws.search(q, library))
        if len(json.loads(result.stdout)) != 10:
            raise BenchmarkError(f"search returned {result.stdout[:200]!r}, not 10 hits")
        ours.append(result)
        others.append(busy)
        naive.append(ws.naive_search(query, vectors, paths))
        log(
            f"search: run {run + 1}/{sizes.runs}: ours {ours[-1].wall_s:.2f} s, "
            f"naive {naive[-1].wall_s:.2f} s"
        )
    # One more run, with the import log: how much of a search is spent importing.
    args = ["search", LATENCY_QUERIES[0], "--library", str(library)]
    traced = ws.with_import_log(*args, "--model", str(ws.bundle), "--json")
    return SearchResult(
        library_photos=sizes.library,
        ours_wall_s=Spread.of([r.wall_s for r in ours]),
        ours_cpu_s=Spread.of([r.cpu_s for r in ours]),
        others_cores=tuple(others),
        naive_wall_s=Spread.of([r.wall_s for r in naive]),
        peak_rss_bytes=max(r.peak_rss_bytes for r in ours),
        naive_peak_rss_bytes=max(r.peak_rss_bytes for r in naive),
        imports_s=import_seconds(traced.stderr),
        imports_run_wall_s=traced.wall_s,
    )
