"""`hanclip index` processes on both bundles: start-up, imports, end-to-end photos/s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchkit.figures import Spread
from benchkit.inputs import read_bytes
from benchkit.processes import BenchmarkError, ProcessRun, import_log, log
from benchkit.workspace import (
    EMBEDDING_ONLY,
    FAST_IMAGE_ENV,
    INDEX_BATCH,
    IndexWatch,
    Workspace,
    check_index_counts,
)

from onnxbench.bundles import Bundles
from onnxbench.figures import EndToEnd, Processes, Startup

TORCH_NOTE = "photos went through torch"  # `hanclip index`'s notice when ONNX was not used
MB = 1024**2


@dataclass(frozen=True)
class Backends:
    onnx: Workspace
    torch: Workspace


def backends(work: Path, bundles: Bundles, env: dict[str, str]) -> Backends:
    onnx_env = dict(env)
    onnx_env.pop(FAST_IMAGE_ENV, None)
    torch_env = {**env, FAST_IMAGE_ENV: "0"}
    return Backends(
        Workspace(work, bundles.exported, onnx_env), Workspace(work, bundles.plain, torch_env)
    )


def index_once(
    ws: Workspace, folder: Path, photos: int, name: str, backend: str
) -> tuple[ProcessRun, IndexWatch]:
    """One `hanclip index` process into a fresh library; it must have added every photo,
    through the backend it is meant to measure."""
    run, watch = ws.index(folder, ws.fresh(name), options=EMBEDDING_ONLY)
    check_index_counts(run, photos)
    went_torch = TORCH_NOTE in run.stderr
    if went_torch != (backend == "torch"):
        note = next((line for line in run.stderr.splitlines() if TORCH_NOTE in line), "")
        raise BenchmarkError(f"the {backend} run did not run on {backend}: {note or run.stderr}")
    return run, watch


def imported_modules(ws: Workspace, folder: Path) -> set[str]:
    """Top-level modules one `hanclip index` imported (`python -X importtime`'s log)."""
    library = ws.fresh("imports-library")
    args = ["index", str(folder), "--library", str(library), "--model", str(ws.bundle)]
    run = ws.with_import_log(*args, "--json", "--device", "cpu")
    check_index_counts(run, 1)
    names = {name.strip().split(".", 1)[0] for name, _ in import_log(run.stderr)}
    if "hanclip_cli" not in names:
        raise BenchmarkError("no import log from `python -X importtime`")
    return names


def index_processes(
    backs: Backends, folder: Path, photos: int, name: str, runs: int
) -> tuple[Processes, Processes]:
    """`runs` rounds of one `hanclip index` of `folder` per backend, ONNX then torch."""
    done: dict[str, list[tuple[ProcessRun, IndexWatch]]] = {"onnx": [], "torch": []}
    for i in range(runs):
        for backend, ws in (("onnx", backs.onnx), ("torch", backs.torch)):
            done[backend].append(index_once(ws, folder, photos, f"{name}-{backend}", backend))
        walls = ", ".join(f"{b} {runs_of[-1][0].wall_s:.2f} s" for b, runs_of in done.items())
        log(f"{name} run {i + 1}/{runs}: {walls} for {photos} photos")
    onnx, torch_ = (
        Processes(
            wall_s=Spread.of([run.wall_s for run, _ in runs_of]),
            peak_rss_mb=Spread.of([run.peak_rss_bytes / MB for run, _ in runs_of]),
            steady_photos_per_s_runs=tuple(steady_rate(watch, photos) for _, watch in runs_of),
        )
        for runs_of in done.values()
    )
    return onnx, torch_


def measure_startup(backs: Backends, folder: Path, runs: int, warmup: bool) -> Startup:
    log("start-up: the exported bundle's imports (python -X importtime)")
    names = imported_modules(backs.onnx, folder)
    if warmup:
        log("start-up: one untimed torch run (the page cache, like the exported runs had)")
        index_once(backs.torch, folder, 1, "startup-torch", "torch")
    onnx, torch_ = index_processes(backs, folder, 1, "startup", runs)
    return Startup(
        onnx=onnx,
        torch=torch_,
        onnx_imports_torch="torch" in names,
        onnx_imports_onnxruntime="onnxruntime" in names,
        onnx_imports_open_clip="open_clip" in names,
    )


def steady_rate(watch: IndexWatch, photos: int) -> float | None:
    """Photos/s from the first commit to the last (the last holding every photo); None with
    fewer than two commits seen."""
    commits = watch.commits
    if len(commits) < 2 or commits[-1][1] != photos:
        return None
    (first_s, first), (last_s, last) = commits[0], commits[-1]
    return (last - first) / (last_s - first_s) if last_s > first_s else None


def measure_end_to_end(
    backs: Backends, folder: Path, photos: Sequence[Path], runs: int
) -> EndToEnd:
    from PIL import Image

    read_bytes(photos)
    onnx, torch_ = index_processes(backs, folder, len(photos), "end-to-end", runs)
    with Image.open(photos[0]) as image:
        megapixels = image.width * image.height / 1e6
    return EndToEnd(len(photos), megapixels, INDEX_BATCH, onnx, torch_)
