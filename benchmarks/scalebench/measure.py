"""One size of the scale benchmark measured, and one whole run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from benchkit.figures import Spread
from benchkit.inputs import read_bytes
from benchkit.processes import BenchmarkError, log, with_others
from benchkit.server import running_server
from benchkit.workspace import Workspace

from scalebench.checkout import PAGE, Checkout, index, probe, search
from scalebench.figures import SizeFigures, TextFigures
from scalebench.library import (
    FORMAT,
    REAL_FILES,
    RealFile,
    ensure_real_files,
    ensure_synthetic_files,
    fabricate_library,
    file_mb,
    hnsw_mb,
)
from scalebench.texts import matching_queries, unmatched_queries, write_texts

RUNS = 7
REINDEX_RUNS = 3
PROBE_RUNS = 3
SERVER_START_TIMEOUT_S = 600.0
SERVER_FILE = "serve.json"  # where a running server of the library announces itself
RESIDENT_WAIT_S = 600.0  # for the resident server to load the index and announce itself
TIMELINE_PAGE = 60  # photos in the timeline's first page, as the page asks for it
TIMELINE_RUNS = 20  # first pages asked for, the first untimed


def check_noop(counts: dict[str, int], real_files: int) -> None:
    """A re-index of unchanged files: nothing added, updated, moved, removed or failed."""
    changed = {k: counts.get(k) for k in ("added", "updated", "moved", "removed", "failed")}
    if any(changed.values()) or counts.get("unchanged") != real_files:
        raise BenchmarkError(f"the re-index was not a no-op over {real_files} files: {counts}")


def prepare_library(
    ws: Workspace, checkout: Checkout, size: int, real_files: int, dim: int, fresh: bool
) -> tuple[Path, Path, list[RealFile], str]:
    """The fabricated library (cached per size and format) and the measured checkout's copy
    of it (cached per checkout: the HNSW index it builds is kept). Returns the copy, the real
    files' root, the files, and where the copy came from."""
    root, files = ensure_real_files(ws.root, min(size, real_files))
    synthetic = ensure_synthetic_files(ws.root, len(files), size)
    pristine = ws.root / "fabricated" / f"lib-{size}-r{len(files)}-d{dim}-f{FORMAT}"
    if not (pristine / "library.db").is_file():
        log(f"library: fabricating {size:,} rows in {pristine}")
        fabricate_library(pristine, size, files, dim, synthetic)
    measured = ws.root / "measured" / checkout.key / pristine.name
    if fresh or not (measured / "library.db").is_file():
        log(f"library: copying {pristine.name} for {checkout.commit}")
        shutil.rmtree(measured, ignore_errors=True)
        measured.mkdir(parents=True)
        partial = measured / "library.db.copying"  # an interrupted copy is never reused
        shutil.copyfile(pristine / "library.db", partial)
        partial.rename(measured / "library.db")
        return measured, root, files, "copied from the fabricated library"
    return measured, root, files, "reused: this checkout's earlier copy"


def _spread(values: Sequence[float]) -> Spread | None:
    return Spread.of(values) if values else None


def measure_size(
    ws: Workspace,
    checkout: Checkout,
    size: int,
    queries: Sequence[str],
    *,
    real_files: int = REAL_FILES,
    dim: int,
    reindex_runs: int = REINDEX_RUNS,
    probe_runs: int = PROBE_RUNS,
    fresh: bool = False,
) -> SizeFigures:
    """Every figure for one size. `queries`: 1 + runs texts for the cold searches, 1 + runs
    more for the warm ones (the first of each untimed)."""
    runs = (len(queries) - 2) // 2
    cold_texts, warm_texts = queries[: runs + 1], queries[runs + 1 :]
    library, root, files, origin = prepare_library(ws, checkout, size, real_files, dim, fresh)

    log(f"{size:,}: first `hanclip index {root}` (migrates; builds the HNSW index if missing)")
    no_ocr = checkout.has_text
    first, counts = index(ws, root, library, no_ocr=no_ocr)
    check_noop(counts, len(files))
    log(f"{size:,}: first index {first.wall_s:.1f} s")
    written = write_texts(ws, library) if checkout.has_text else None
    if written is None:
        log(f"{size:,}: the checkout has no text in photos: no text figures")
    else:
        log(f"{size:,}: {written['rows']:,} readings with text ({written['write_s']:.1f} s)")
    # Building a large index evicts the library from the page cache; a disk read of it would
    # land in the first timed run.
    files_read = read_bytes(sorted(p for p in library.iterdir() if p.is_file()))
    log(f"{size:,}: page cache: read {files_read / 1e6:,.0f} MB of library files")

    reindex, reindex_others = [], []
    for _ in range(reindex_runs):
        run, others = with_others(lambda: index(ws, root, library, no_ocr=no_ocr)[0])
        counts = json.loads(run.stdout)
        check_noop(counts, len(files))
        reindex.append(run.wall_s)
        reindex_others += [] if others is None else [others]
        log(f"{size:,}: no-op re-index {run.wall_s:.2f} s")

    search(ws, cold_texts[0], library, on_its_own=True)  # untimed: page cache, fast-text export
    cold, rss, cold_others = [], [], []
    for text in cold_texts[1:]:
        run, others = with_others(lambda text=text: search(ws, text, library, on_its_own=True)[0])
        cold.append(run.wall_s)
        rss.append(run.peak_rss_bytes / 1e6)
        cold_others += [] if others is None else [others]
        log(f"{size:,}: cold search on its own {run.wall_s:.3f} s, peak RSS {rss[-1]:.0f} MB")
    resident, resident_rss = measure_resident(ws, library, cold_texts, size)

    loads, syncs, id_reads = [], [], []
    for _ in range(probe_runs):
        loaded, synced = probe(ws, "load", library), probe(ws, "sync", library)
        for found in (loaded, synced):
            if found["vectors"] != size:
                raise BenchmarkError(f"the index holds {found['vectors']} vectors, not {size}")
        loads.append(float(loaded["load_s"]))
        syncs.append(float(synced["sync_s"]))
        if synced.get("id_read_s") is not None:
            id_reads.append(float(synced["id_read_s"]))
        log(f"{size:,}: load_index {loads[-1]:.3f} s, sync_index {syncs[-1]:.3f} s")

    warm, timeline = measure_warm(ws, library, warm_texts, size)
    text = None if written is None else measure_text(ws, library, written, runs, size)
    return SizeFigures(
        photos=size,
        real_files=len(files),
        dim=dim,
        library=str(library),
        library_origin=origin,
        db_mb=file_mb(library / "library.db"),
        hnsw_mb=hnsw_mb(library),
        first_index_s=first.wall_s,
        cold_search_s=Spread.of(cold),
        cold_rss_mb=Spread.of(rss),
        warm_search_ms=Spread.of([s * 1000 for s in warm]),
        load_index_s=Spread.of(loads),
        sync_index_s=Spread.of(syncs),
        id_read_s=_spread(id_reads),
        reindex_s=Spread.of(reindex),
        reindex_counts={k: v for k, v in counts.items() if isinstance(v, int)},
        cold_others_cores=_spread(cold_others),
        reindex_others_cores=_spread(reindex_others),
        resident_search_s=_spread(resident),
        resident_rss_mb=_spread(resident_rss),
        text=text,
        timeline_first_page_ms=_spread([s * 1000 for s in timeline]),
    )


def _text_hits(hits: Sequence[dict]) -> int:
    return sum(hit.get("text_match") is not None for hit in hits)


def measure_text(
    ws: Workspace, library: Path, written: dict[str, float], runs: int, size: int
) -> TextFigures:
    """Each query searched cold on its own with text and with `--no-text`, in turns (which
    goes first alternates), 1 + `runs` queries that match text and as many that do not (the
    first of each untimed). Every search must return the full page: no row is gone."""
    times: dict[tuple[str, str], list[float]] = {}
    text_hits = []
    queries = {"matching": matching_queries(runs + 1), "unmatched": unmatched_queries(runs + 1)}
    for number in range(runs + 1):
        for kind, texts in queries.items():
            ways = [("text", ()), ("look", ("--no-text",))]
            for way, options in ways if number % 2 else ways[::-1]:
                run, hits = search(ws, texts[number], library, *options, on_its_own=True)
                found = _text_hits(hits)
                if len(hits) != PAGE or (found > 0) != (kind == "matching" and way == "text"):
                    raise BenchmarkError(
                        f"search {texts[number]!r} {' '.join(options)}: {len(hits)} hits, "
                        f"{found} by text ({kind} query)"
                    )
                if number:
                    times.setdefault((kind, way), []).append(run.wall_s)
                    text_hits += [found] if kind == "matching" and way == "text" else []
        if number:
            last = ", ".join(
                f"{kind} {times[kind, 'text'][-1]:.3f} s vs {times[kind, 'look'][-1]:.3f} s"
                for kind in queries
            )
            log(f"{size:,}: cold search with text vs --no-text: {last}")
    return TextFigures(
        text_rows=int(written["rows"]),
        write_s=float(written["write_s"]),
        matching_text_s=Spread.of(times["matching", "text"]),
        matching_look_s=Spread.of(times["matching", "look"]),
        unmatched_text_s=Spread.of(times["unmatched", "text"]),
        unmatched_look_s=Spread.of(times["unmatched", "look"]),
        matching_text_hits=Spread.of(text_hits),
    )


def measure_resident(
    ws: Workspace, library: Path, texts: Sequence[str], size: int
) -> tuple[list[float], list[float]]:
    """The cold searches again, as a user's run: the first (untimed) may start the resident
    server; once it has announced itself the rest are timed, then it is stopped. Empty lists
    when no server was started (a checkout without one, or a library below its threshold)."""
    search(ws, texts[0], library)
    pid = _resident_pid(library, RESIDENT_WAIT_S)
    if pid is None:
        log(f"{size:,}: no resident server was started")
        return [], []
    seconds, rss = [], []
    try:
        for text in texts[1:]:
            run = search(ws, text, library)[0]
            seconds.append(run.wall_s)
            rss.append(run.peak_rss_bytes / 1e6)
            log(f"{size:,}: cold search, resident server up {run.wall_s:.3f} s")
    finally:
        _stop(pid)
    return seconds, rss


def _resident_pid(library: Path, timeout_s: float) -> int | None:
    """The pid in `serve.json` once it appears; None when nothing is starting at all."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return int(json.loads((library / SERVER_FILE).read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if not (library / "serve.starting").exists():
            return None
        time.sleep(0.2)
    raise BenchmarkError(f"the resident server of {library} did not start in {timeout_s:.0f} s")


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def measure_warm(
    ws: Workspace, library: Path, texts: Sequence[str], size: int
) -> tuple[list[float], list[float]]:
    """Client wall time of /api/search on a running `hanclip serve`, then of the timeline's
    first page (none for a checkout without /api/timeline); the first of each untimed."""
    import httpx

    args = ["--library", str(library), "--model", str(ws.bundle)]
    seconds, timeline = [], []
    with (
        running_server(args, ws.env, SERVER_START_TIMEOUT_S) as server,
        httpx.Client(base_url=server.url, timeout=300, trust_env=False) as client,
    ):
        for number, text in enumerate(texts):
            start = time.perf_counter()
            response = client.get("/api/search", params={"q": text, "n": PAGE})
            elapsed = time.perf_counter() - start
            response.raise_for_status()
            if not response.json()["results"]:
                raise BenchmarkError(f"/api/search {text!r}: no results")
            if number:
                seconds.append(elapsed)
        for number in range(TIMELINE_RUNS):
            start = time.perf_counter()
            response = client.get("/api/timeline", params={"n": TIMELINE_PAGE})
            elapsed = time.perf_counter() - start
            if response.status_code == 404 and not number:
                log(f"{size:,}: the checkout has no /api/timeline: no timeline figures")
                break
            response.raise_for_status()
            shown = sum(len(month["photos"]) for month in response.json()["months"])
            if shown != min(size, TIMELINE_PAGE):
                raise BenchmarkError(f"/api/timeline: {shown} photos, not {TIMELINE_PAGE}")
            if number:
                timeline.append(elapsed)
    return seconds, timeline
