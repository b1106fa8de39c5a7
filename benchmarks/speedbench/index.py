"""`hanclip index` throughput, in rounds with the machine's ceiling and the naive loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchkit.figures import Spread
from benchkit.inputs import linked_folder
from benchkit.processes import ProcessRun, log, median
from benchkit.workspace import (
    EMBEDDING_ONLY,
    INDEX_BATCH,
    IndexWatch,
    Workspace,
    check_index_counts,
)

from speedbench.ceiling import ClipParts, ceiling_round, summarise_ceilings
from speedbench.naive import naive_index_rate
from speedbench.results import CeilingResult, CeilingRound, IndexResult


@dataclass(frozen=True)
class IndexRun:
    """`hanclip index` of the photos into a fresh library, and, just before it, the same
    command on an empty folder: its start-up alone."""

    startup: ProcessRun
    whole: ProcessRun
    watch: IndexWatch


@dataclass(frozen=True)
class IndexRounds:
    index: IndexResult
    ceiling: CeilingResult | None  # None: measured alone


def index_run(ws: Workspace, folder: Path, empty: Path, photos: int, device: str) -> IndexRun:
    startup, _ = ws.index(empty, ws.fresh("startup-library"), device, EMBEDDING_ONLY)
    whole, watch = ws.index(folder, ws.fresh("index-library"), device, EMBEDDING_ONLY)
    check_index_counts(whole, photos)
    return IndexRun(startup, whole, watch)


def summarise_index(runs: Sequence[IndexRun], photos: int, device: str) -> IndexResult:
    """Medians and per-run figures. The embedding phase of each run is timed inside it,
    from the library's opening (models loaded) to the last photo's commit: scanning,
    hashing, decoding, embedding and writing, none of the imports and model loading that
    the ceiling leaves out too."""
    phases = [r.watch.phase_s(photos, r.whole.wall_s) for r in runs]
    steady = tuple(r.watch.steady_photos_per_s(photos, INDEX_BATCH) for r in runs)
    whole = Spread.of([r.whole.wall_s for r in runs])
    startup = Spread.of([r.startup.wall_s for r in runs])
    extra_cpu = median([r.whole.cpu_s for r in runs]) - median([r.startup.cpu_s for r in runs])
    # With few photos, start-up's own spread can exceed the work: then this says nothing.
    extra_wall = whole.p50 - startup.p50 if whole.p50 > startup.p50 else None
    return IndexResult(
        device=device,
        photos=photos,
        whole_wall_s=whole,
        startup_wall_s=startup,
        embedding_phase_s=Spread.of(phases),
        photos_per_s=photos / median(phases),
        photos_per_s_runs=tuple(photos / p for p in phases),
        whole_photos_per_s_runs=tuple(photos / w for w in whole.runs),
        steady_photos_per_s_runs=steady,
        steady_photos_per_s=None if None in steady else median(steady),
        others_cores=tuple(r.watch.others_cores() for r in runs),
        whole_photos_per_s=photos / whole.p50,
        whole_minus_startup_photos_per_s=photos / extra_wall if extra_wall else None,
        cores_busy=extra_cpu / extra_wall if extra_wall else None,
        peak_rss_bytes=max(r.whole.peak_rss_bytes for r in runs),
    )


def measure_index(
    ws: Workspace, photos: Sequence[Path], runs: int, clip: ClipParts | None, device: str = "cpu"
) -> IndexRounds:
    """`runs` rounds of `hanclip index` on `device`; with `clip`, each round also measures the
    ceiling and the naive loop. This machine's speed drifts with its neighbours' load, so each
    ratio is taken within a round, where all three met the same conditions."""
    folder = linked_folder(ws.root / "runs" / "photos", photos)
    empty = ws.fresh("empty")  # the start-up's own run
    empty.mkdir()
    index_runs: list[IndexRun] = []
    ceilings: list[CeilingRound] = []
    naive: list[float] = []
    for run in range(runs):
        if clip is not None:
            ceilings.append(ceiling_round(clip, photos))
        index_runs.append(index_run(ws, folder, empty, len(photos), device))
        note = _round_note(index_runs[-1], len(photos))
        if clip is not None:
            naive.append(naive_index_rate(clip.model, clip.preprocess, photos))
            note += _ceiling_note(ceilings[-1], naive[-1])
        log(f"index ({device}) round {run + 1}/{runs}: {note}")
    ceiling = summarise_ceilings(ceilings, naive) if clip is not None else None
    return IndexRounds(summarise_index(index_runs, len(photos), device), ceiling)


def _round_note(run: IndexRun, photos: int) -> str:
    others = run.watch.others_cores()
    return (
        f"empty folder {run.startup.wall_s:.2f} s, photos {run.whole.wall_s:.2f} s, "
        f"embedding phase {run.watch.phase_s(photos, run.whole.wall_s):.2f} s, "
        f"other jobs' cores {'n/a' if others is None else f'{others:.2f}'}"
    )


def _ceiling_note(ceiling: CeilingRound, naive: float) -> str:
    return (
        f"; ceiling {ceiling.ceiling_photos_per_s:.2f} photos/s (decode "
        f"{ceiling.decode_core_s_per_photo * 1000:.0f} + model "
        f"{ceiling.model_core_s_per_photo * 1000:.0f} ms core), naive {naive:.2f} photos/s"
    )
