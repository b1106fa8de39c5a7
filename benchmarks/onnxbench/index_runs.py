"""`hanclip index` processes on both bundles: start-up, imports, end-to-end photos/s."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchkit.figures import Spread
from benchkit.inputs import read_bytes
from benchkit.processes import BenchmarkError, ProcessRun, log, run_process
from benchkit.workspace import (
    FAST_IMAGE_ENV,
    INDEX_BATCH,
    IndexWatch,
    Workspace,
    check_index_counts,
)

from onnxbench.bundles import Bundles
from onnxbench.figures import EndToEnd, Startup

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
    run, watch = ws.index(folder, ws.fresh(name))
    check_index_counts(run, photos)
    went_torch = TORCH_NOTE in run.stderr
    if went_torch != (backend == "torch"):
        note = next((line for line in run.stderr.splitlines() if TORCH_NOTE in line), "")
        raise BenchmarkError(f"the {backend} run did not run on {backend}: {note or run.stderr}")
    return run, watch


def imported_modules(ws: Workspace, folder: Path) -> set[str]:
    """Top-level modules one `hanclip index` imported (`python -X importtime`'s log)."""
    cmd = ws.hanclip
    if cmd[0] == sys.executable:  # python -m hanclip_cli
        prefixed = [sys.executable, "-X", "importtime", *cmd[1:]]
    else:  # the console script is a Python file
        prefixed = [sys.executable, "-X", "importtime", *cmd]
    library = ws.fresh("imports-library")
    args = ["index", str(folder), "--library", str(library), "--model", str(ws.bundle)]
    run = run_process([*prefixed, *args, "--json", "--device", "cpu"], ws.env)
    check_index_counts(run, 1)
    names = set()
    for line in run.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            names.add(name.split(".", 1)[0])
    if "hanclip_cli" not in names:
        raise BenchmarkError("no import log from `python -X importtime`")
    return names


def measure_startup(backs: Backends, folder: Path, runs: int, warmup: bool) -> Startup:
    log("start-up: the exported bundle's imports (python -X importtime)")
    names = imported_modules(backs.onnx, folder)
    if warmup:
        log("start-up: one untimed torch run (the page cache, like the exported runs had)")
        index_once(backs.torch, folder, 1, "startup-torch", "torch")
    onnx, torch_ = [], []
    for i in range(runs):
        onnx.append(index_once(backs.onnx, folder, 1, "startup-onnx", "onnx")[0])
        torch_.append(index_once(backs.torch, folder, 1, "startup-torch", "torch")[0])
        log(
            f"start-up run {i + 1}/{runs}: onnx {onnx[-1].wall_s:.2f} s, "
            f"torch {torch_[-1].wall_s:.2f} s"
        )
    return Startup(
        onnx_wall_s=Spread.of([r.wall_s for r in onnx]),
        torch_wall_s=Spread.of([r.wall_s for r in torch_]),
        onnx_peak_rss_mb=tuple(r.peak_rss_bytes / MB for r in onnx),
        torch_peak_rss_mb=tuple(r.peak_rss_bytes / MB for r in torch_),
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
    read_bytes(photos)
    onnx: list[ProcessRun] = []
    torch_: list[ProcessRun] = []
    steady: dict[str, list[float | None]] = {"onnx": [], "torch": []}
    for i in range(runs):
        for backend, ws, runs_of in (("onnx", backs.onnx, onnx), ("torch", backs.torch, torch_)):
            run, watch = index_once(ws, folder, len(photos), f"e2e-{backend}", backend)
            runs_of.append(run)
            steady[backend].append(steady_rate(watch, len(photos)))
        log(
            f"end-to-end run {i + 1}/{runs}: onnx {onnx[-1].wall_s:.2f} s, "
            f"torch {torch_[-1].wall_s:.2f} s for {len(photos)} photos"
        )
    from PIL import Image

    with Image.open(photos[0]) as image:
        megapixels = image.width * image.height / 1e6
    return EndToEnd(
        photos=len(photos),
        megapixels=megapixels,
        onnx_wall_s=Spread.of([r.wall_s for r in onnx]),
        torch_wall_s=Spread.of([r.wall_s for r in torch_]),
        batch=INDEX_BATCH,
        onnx_steady_photos_per_s_runs=tuple(steady["onnx"]),
        torch_steady_photos_per_s_runs=tuple(steady["torch"]),
        onnx_peak_rss_mb=tuple(r.peak_rss_bytes / MB for r in onnx),
        torch_peak_rss_mb=tuple(r.peak_rss_bytes / MB for r in torch_),
    )
