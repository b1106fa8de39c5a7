"""`hanclip index` through ONNX Runtime (an exported bundle) against torch, in one run.

See `benchmarks/index_onnx.py` for what is measured and why; this module holds the
measurements, the figures (frozen dataclasses, the keys of `--json`) and the report.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hanclip_model.bundle import HEADS_NAME, MANIFEST_NAME, read_bundle, write_bundle
from hanclip_model.device import usable_cores
from speedbench.inputs import ensure_photos, linked_folder, read_bytes
from speedbench.processes import (
    BenchmarkError,
    LoadSampler,
    ProcessRun,
    log,
    median,
    run_process,
)
from speedbench.results import Environment, LoadSummary
from speedbench.run import environment
from speedbench.settings import INDEX_BATCH
from speedbench.workspace import (
    ISOLATED_KEYS,
    IndexWatch,
    Workspace,
    check_index_counts,
    isolated_env,
)

STARTUP_TARGET_S = 1.5  # exported bundle, one photo, whole `hanclip index` process
RATIO_TARGET = 1.1  # ONNX / torch photos/s of the encoder stage
FAST_IMAGE_ENV = "HANCLIP_FAST_IMAGE"
TORCH_NOTE = "photos went through torch"  # `hanclip index`'s notice when ONNX was not used
MB = 1024**2


@dataclass(frozen=True)
class Sizes:
    photos: int  # JPEGs of `photo_size` for the end-to-end runs and the cosines
    runs: int  # timed runs of each process, per backend
    photo_size: tuple[int, int] = (1632, 1224)  # about 2 megapixels
    batch: int = 32  # the encoder stage's batch: `hanclip index`'s default --batch-size
    repeats: int = 5  # timed batches per encoder (after one warm-up); the best counts
    warmup: bool = True  # one untimed process of each backend before the timed ones


FULL = Sizes(photos=64, runs=3)
QUICK = Sizes(photos=4, runs=1, photo_size=(640, 480), batch=8, repeats=2, warmup=False)


@dataclass(frozen=True)
class Models:
    """What the two bundles are made of."""

    image_spec: str  # "local-dir:...": fixed weights, so it can be exported
    text_model: Path
    heads: Path | None  # a heads file, copied into each bundle; None: no heads


@dataclass(frozen=True)
class Bundles:
    exported: Path  # after `hanclip export`: carries encoders/image and encoders/text
    plain: Path  # the same models, no encoders
    export_s: float
    export_already: bool  # a kept work directory held the export already
    export_min_cosine: float | None  # ONNX vs open_clip on the verification images


@dataclass(frozen=True)
class Startup:
    """Whole `hanclip index` processes on a folder of one photo, a fresh library each."""

    onnx_wall_s: tuple[float, ...]
    torch_wall_s: tuple[float, ...]
    onnx_median_s: float
    torch_median_s: float
    speedup: float  # torch median / onnx median
    onnx_peak_rss_mb: tuple[float, ...]
    torch_peak_rss_mb: tuple[float, ...]
    onnx_imports_torch: bool  # one more exported run, under `python -X importtime`
    onnx_imports_onnxruntime: bool
    onnx_imports_open_clip: bool
    target_s: float
    passed: bool  # onnx_median_s <= target_s


@dataclass(frozen=True)
class EncoderStage:
    """Preprocessed batches through the image tower alone, in this process."""

    batch: int
    repeats: int
    threads: int  # torch's intra-op threads and ONNX Runtime's: the usable cores
    onnx_batch_s: tuple[float, ...]
    torch_batch_s: tuple[float, ...]
    onnx_photos_per_s: float  # batch / best batch time
    torch_photos_per_s: float
    ratio: float  # onnx / torch
    min_cosine_photos: float  # ONNX vs torch, every benchmark photo, same pixels
    target_ratio: float
    passed: bool


@dataclass(frozen=True)
class EndToEnd:
    """Whole `hanclip index` processes on the photos, a fresh library each. The steady rate
    is read from the library while it runs (each batch of photos is one commit): photos
    committed between the first batch's commit and the last, over the time between them, so
    neither the start-up nor the first forward counts."""

    photos: int
    megapixels: float
    onnx_wall_s: tuple[float, ...]
    torch_wall_s: tuple[float, ...]
    onnx_photos_per_s: float  # photos / median wall: start-up included
    torch_photos_per_s: float
    ratio: float
    batch: int  # `hanclip index`'s default --batch-size: photos per commit
    onnx_steady_photos_per_s_runs: tuple[float | None, ...]
    torch_steady_photos_per_s_runs: tuple[float | None, ...]
    onnx_steady_photos_per_s: float | None  # median of the runs; None: under two batches
    torch_steady_photos_per_s: float | None
    steady_ratio: float | None
    onnx_peak_rss_mb: tuple[float, ...]
    torch_peak_rss_mb: tuple[float, ...]


@dataclass(frozen=True)
class Int8:
    """`quantize_image_encoder` on a copy of the export; timed like the encoder stage."""

    kept: bool
    verify_min_cosine: float  # int8 vs fp32 on the verification images (what decides)
    min_cosine_photos: float  # int8 vs fp32 on the benchmark photos
    batch_s: tuple[float, ...]
    photos_per_s: float
    ratio_vs_fp32: float  # int8 / ONNX fp32 photos/s, same loop
    ratio_vs_torch: float
    message: str  # the refusal, when refused


@dataclass(frozen=True)
class Results:
    environment: Environment
    sizes: Sizes
    image_spec: str
    export_s: float
    export_already: bool
    export_min_cosine: float | None
    startup: Startup
    encoder: EncoderStage
    end_to_end: EndToEnd
    int8: Int8 | None  # None: --quantize-images not given
    load_average: LoadSummary
    work: str
    wall_s: float


# ---------------------------------------------------------------------------------------
# Inputs


def build_models(work: Path) -> Models:
    """Real-size random models, saved once per work directory: open_clip ViT-B/32 in the
    `local-dir:` layout, a MiniLM-L12-shaped text model with a 250k Unigram tokenizer, heads."""
    import torch

    from hanclip_eval.random_models import MINILM_L12, random_minilm, save_random_clip_vit_b32
    from hanclip_model.encoders import quiet_transformers
    from trainer.heads import HanclipHeads

    root = work / "models"
    log("real-size random models (once per work directory)")
    image_spec = save_random_clip_vit_b32(root / "clip-vit-b32")
    text = root / "text-minilm-l12"
    if not (text / "modules.json").is_file():
        quiet_transformers()
        staging = root / ".text.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        random_minilm(staging, shape=MINILM_L12, tokenizer="unigram")
        os.replace(staging, text)
    heads = root / HEADS_NAME
    if not heads.is_file():
        torch.manual_seed(0)
        model = HanclipHeads(image_dim=512, text_dim=MINILM_L12.hidden, out_dim=512)
        model.eval().save(heads)
    return Models(image_spec, text, heads)


def _write_bundle(directory: Path, models: Models, name: str) -> None:
    if models.heads is not None:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copy2(models.heads, directory / HEADS_NAME)
    write_bundle(
        directory,
        name=name,
        image_model=models.image_spec,
        text_model=str(models.text_model),
        heads=HEADS_NAME if models.heads is not None else None,
    )


def prepare_bundles(work: Path, models: Models) -> Bundles:
    """The plain bundle, and the exported one (`hanclip export`, run in this process with the
    work directory's cache: its fast text export is what the plain bundle's runs use too)."""
    from hanclip_model.bundle_export import export_bundle

    plain, exported = work / "bundles" / "plain", work / "bundles" / "exported"
    shutil.rmtree(plain, ignore_errors=True)
    _write_bundle(plain, models, "plain")
    manifest = exported / MANIFEST_NAME
    if manifest.is_file():  # a kept work directory: its export is reused if the models match
        kept, wanted = read_bundle(exported), read_bundle(plain)
        if (kept.image_model, kept.text_model) != (wanted.image_model, wanted.text_model):
            shutil.rmtree(exported)
    if not manifest.is_file():
        _write_bundle(exported, models, "exported")
    log("hanclip export (ONNX image and text encoders into the bundle)")
    report = export_bundle(str(exported))
    if read_bundle(exported).image_int8:
        raise BenchmarkError(f"{exported} uses the int8 image graph: remove it and rerun")
    return Bundles(exported, plain, report.seconds, report.already, report.image_min_cosine)


def startup_folder(work: Path, photo: Path) -> Path:
    return linked_folder(work / "startup-photo", [photo])


def photo_folder(work: Path, sizes: Sizes) -> tuple[Path, list[Path]]:
    width, height = sizes.photo_size
    folder = work / f"photos-{width}x{height}"
    log(f"photos: {sizes.photos} JPEGs of {width}x{height} (generated once)")
    paths = ensure_photos(folder, sizes.photos, sizes.photo_size)
    # Exactly these photos: a kept folder may hold more from a run with a larger --photos.
    return linked_folder(work / f"index-photos-{sizes.photos}", paths), paths


# ---------------------------------------------------------------------------------------
# Processes


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


def measure_startup(
    backs: Backends, folder: Path, runs: int, warmup: bool, target_s: float = STARTUP_TARGET_S
) -> Startup:
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
    onnx_median, torch_median = median([r.wall_s for r in onnx]), median([r.wall_s for r in torch_])
    return Startup(
        onnx_wall_s=tuple(r.wall_s for r in onnx),
        torch_wall_s=tuple(r.wall_s for r in torch_),
        onnx_median_s=onnx_median,
        torch_median_s=torch_median,
        speedup=torch_median / onnx_median,
        onnx_peak_rss_mb=tuple(r.peak_rss_bytes / MB for r in onnx),
        torch_peak_rss_mb=tuple(r.peak_rss_bytes / MB for r in torch_),
        onnx_imports_torch="torch" in names,
        onnx_imports_onnxruntime="onnxruntime" in names,
        onnx_imports_open_clip="open_clip" in names,
        target_s=target_s,
        passed=onnx_median <= target_s,
    )


def steady_rate(watch: IndexWatch, photos: int) -> float | None:
    """Photos/s from the first commit to the last (the last holding every photo); None with
    fewer than two commits seen."""
    commits = watch.commits
    if len(commits) < 2 or commits[-1][1] != photos:
        return None
    (first_s, first), (last_s, last) = commits[0], commits[-1]
    return (last - first) / (last_s - first_s) if last_s > first_s else None


def _median_or_none(values: Sequence[float | None]) -> float | None:
    seen = [v for v in values if v is not None]
    return median(seen) if seen else None


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
    onnx_wall, torch_wall = median([r.wall_s for r in onnx]), median([r.wall_s for r in torch_])
    onnx_rate, torch_rate = len(photos) / onnx_wall, len(photos) / torch_wall
    onnx_steady, torch_steady = _median_or_none(steady["onnx"]), _median_or_none(steady["torch"])
    from PIL import Image

    with Image.open(photos[0]) as image:
        megapixels = image.width * image.height / 1e6
    return EndToEnd(
        photos=len(photos),
        megapixels=megapixels,
        onnx_wall_s=tuple(r.wall_s for r in onnx),
        torch_wall_s=tuple(r.wall_s for r in torch_),
        onnx_photos_per_s=onnx_rate,
        torch_photos_per_s=torch_rate,
        ratio=onnx_rate / torch_rate,
        batch=INDEX_BATCH,
        onnx_steady_photos_per_s_runs=tuple(steady["onnx"]),
        torch_steady_photos_per_s_runs=tuple(steady["torch"]),
        onnx_steady_photos_per_s=onnx_steady,
        torch_steady_photos_per_s=torch_steady,
        steady_ratio=onnx_steady / torch_steady if onnx_steady and torch_steady else None,
        onnx_peak_rss_mb=tuple(r.peak_rss_bytes / MB for r in onnx),
        torch_peak_rss_mb=tuple(r.peak_rss_bytes / MB for r in torch_),
    )


# ---------------------------------------------------------------------------------------
# In this process: the encoder stage, the cosines, int8


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


def photo_pixels(photos: Sequence[Path], encoder: Any) -> np.ndarray:
    """The photos as `hanclip index` feeds them: decoded at the model's size (JPEG draft),
    preprocessed as the export's config says (verified equal to open_clip's transform)."""
    from hanclip_model.fast_image.runtime import preprocess_images
    from hanclip_model.images import load_image

    images = [load_image(path, encoder.image_size).image for path in photos]
    return preprocess_images(images, encoder.config.preprocess)


def best_batch_times(
    contenders: dict[str, Callable[[np.ndarray], np.ndarray]], batch: np.ndarray, repeats: int
) -> dict[str, list[float]]:
    """Each contender on `batch`, one warm-up then `repeats` timed calls, interleaved so that
    a neighbour's burst of load falls on all of them alike."""
    for embed in contenders.values():
        embed(batch)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, embed in contenders.items():
            start = time.perf_counter()
            embed(batch)
            times[name].append(time.perf_counter() - start)
    return times


def embed_all(embed: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray, batch: int):
    return np.concatenate([embed(pixels[i : i + batch]) for i in range(0, len(pixels), batch)])


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def quantized_copy(export: Path, work: Path) -> tuple[Any, bool, float, str]:
    """(int8 encoder, kept, worst cosine on the verification images, refusal message):
    `quantize_image_encoder` on a hard-linked copy of the export, which decides. When it
    refuses (and removes its file), the same quantisation is redone beside it so that its
    speed is still measured."""
    from hanclip_model.errors import BundleError
    from hanclip_model.fast_image.export import quantize_image_encoder, verify_images
    from hanclip_model.fast_image.runtime import (
        ENCODER_NAME,
        QUANTIZED_ENCODER_NAME,
        FastImageEncoder,
    )
    from hanclip_model.fast_text.runtime import inference_session
    from hanclip_model.files import link_tree

    target = work / "int8-image"
    shutil.rmtree(target, ignore_errors=True)
    link_tree(export, target)
    (target / QUANTIZED_ENCODER_NAME).unlink(missing_ok=True)
    log("int8: quantize_image_encoder on a copy of the export")
    try:
        config = quantize_image_encoder(target)
    except BundleError as exc:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            target / ENCODER_NAME, target / QUANTIZED_ENCODER_NAME, weight_type=QuantType.QInt8
        )
        fp32 = FastImageEncoder.load(target)
        int8 = FastImageEncoder(fp32.config, inference_session(target / QUANTIZED_ENCODER_NAME))
        images = verify_images()
        worst = float(row_cosines(int8.embed(images), fp32.embed(images)).min())
        return int8, False, worst, str(exc)
    assert config.int8_cosine is not None
    return FastImageEncoder.load(target, quantized=True), True, config.int8_cosine, ""


@dataclass(frozen=True)
class InProcess:
    encoder: EncoderStage
    int8: Int8 | None


def measure_in_process(
    bundles: Bundles, photos: Sequence[Path], sizes: Sizes, work: Path, quantize: bool
) -> InProcess:
    """The encoder stage (ONNX vs torch, int8 too with `quantize`) and the cosines."""
    import torch

    from hanclip_model.encoders import ClipEncoder
    from hanclip_model.fast_image.runtime import FastImageEncoder

    spec = read_bundle(bundles.exported)
    assert spec.image_export is not None
    onnx = FastImageEncoder.load(spec.image_export)
    clip = ClipEncoder(spec.image_model, device="cpu")
    pixels = photo_pixels(photos, onnx)
    batch = pixels[np.arange(sizes.batch) % len(pixels)]
    threads = usable_cores()

    def torch_embed(chunk: np.ndarray) -> np.ndarray:
        return clip.embed_pixels(torch.from_numpy(chunk))

    contenders: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "onnx": onnx.embed_pixels,
        "torch": torch_embed,
    }
    int8_parts = quantized_copy(spec.image_export, work) if quantize else None
    if int8_parts is not None:
        contenders["int8"] = int8_parts[0].embed_pixels
    with torch_threads(threads):
        clip.model  # noqa: B018 - loaded before the clock starts
        log(f"encoder stage: batches of {sizes.batch}, {', '.join(contenders)}")
        times = best_batch_times(contenders, batch, sizes.repeats)
        log("cosines on the benchmark photos")
        vectors = {
            name: embed_all(embed, pixels, sizes.batch) for name, embed in contenders.items()
        }
    rate = {name: sizes.batch / min(values) for name, values in times.items()}
    ratio = rate["onnx"] / rate["torch"]
    encoder = EncoderStage(
        batch=sizes.batch,
        repeats=sizes.repeats,
        threads=threads,
        onnx_batch_s=tuple(times["onnx"]),
        torch_batch_s=tuple(times["torch"]),
        onnx_photos_per_s=rate["onnx"],
        torch_photos_per_s=rate["torch"],
        ratio=ratio,
        min_cosine_photos=float(row_cosines(vectors["onnx"], vectors["torch"]).min()),
        target_ratio=RATIO_TARGET,
        passed=ratio >= RATIO_TARGET,
    )
    int8 = None
    if int8_parts is not None:
        _, kept, verify_cosine, message = int8_parts
        int8 = Int8(
            kept=kept,
            verify_min_cosine=verify_cosine,
            min_cosine_photos=float(row_cosines(vectors["int8"], vectors["onnx"]).min()),
            batch_s=tuple(times["int8"]),
            photos_per_s=rate["int8"],
            ratio_vs_fp32=rate["int8"] / rate["onnx"],
            ratio_vs_torch=rate["int8"] / rate["torch"],
            message=message,
        )
    return InProcess(encoder, int8)


# ---------------------------------------------------------------------------------------
# One run


@contextmanager
def isolated_process_env(env: dict[str, str]) -> Iterator[None]:
    """This process's own model loads and exports use the work directory's caches, as its
    children do; the caller's environment comes back afterwards."""
    keys = (*ISOLATED_KEYS, FAST_IMAGE_ENV)
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update({key: env[key] for key in ISOLATED_KEYS})
    os.environ.pop(FAST_IMAGE_ENV, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_benchmark(
    work: Path,
    sizes: Sizes,
    *,
    quantize: bool = False,
    models: Models | None = None,
    probe_cores: bool = True,
) -> Results:
    """Every measurement of one run. `models`: given ones (tests: tiny); default the
    real-size random models, built once per work directory."""
    started = time.perf_counter()
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = isolated_env(work)
    with isolated_process_env(env), LoadSampler(usable_cores()) as load:
        if probe_cores:
            load.probe("start")
        models = models or build_models(work)
        bundles = prepare_bundles(work, models)
        folder, photos = photo_folder(work, sizes)
        one = startup_folder(work, photos[0])
        backs = backends(work, bundles, env)
        startup = measure_startup(backs, one, sizes.runs, sizes.warmup)
        end_to_end = measure_end_to_end(backs, folder, photos, sizes.runs)
        in_process = measure_in_process(bundles, photos, sizes, work, quantize)
        if probe_cores:
            load.probe("end")
    return Results(
        environment=environment(usable_cores()),
        sizes=sizes,
        image_spec=models.image_spec,
        export_s=bundles.export_s,
        export_already=bundles.export_already,
        export_min_cosine=bundles.export_min_cosine,
        startup=startup,
        encoder=in_process.encoder,
        end_to_end=end_to_end,
        int8=in_process.int8,
        load_average=load.summary(),
        work=str(work),
        wall_s=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------------------
# Report


def _runs(values: Sequence[float], unit: str = "s", digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values) + f" {unit}"


def _rates(values: Sequence[float | None]) -> str:
    return ", ".join(_rate(v) for v in values)


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def format_report(results: Results) -> str:
    env, s, e, x = results.environment, results.startup, results.encoder, results.end_to_end
    lines = [
        "hanclip index: ONNX Runtime (exported bundle) vs torch (HANCLIP_FAST_IMAGE=0)",
        f"machine: {env.cores} usable cores, {env.cpu}; torch {env.torch}, "
        f"onnxruntime {env.onnxruntime}, open_clip {env.open_clip}",
        f"image model: {results.image_spec}",
        f"load average during the run (1 min): min {results.load_average.during_1min_min}, "
        f"median {results.load_average.during_1min_median}, "
        f"max {results.load_average.during_1min_max}; cores a busy loop got: "
        f"{results.load_average.cores_available or 'not probed'}",
        f"export: {'already in the work directory' if results.export_already else 'made now'}"
        f" ({results.export_s:.1f} s); verification min cosine ONNX vs open_clip "
        + (f"{results.export_min_cosine:.6f}" if results.export_min_cosine is not None else "n/a"),
        "",
        f"{'':40} {'onnx':>12} {'torch':>12} {'onnx/torch':>11}",
        f"1. start-up, `hanclip index` of 1 photo, whole process (median of {len(s.onnx_wall_s)})",
        f"{'   wall s':40} {s.onnx_median_s:12.2f} {s.torch_median_s:12.2f} "
        f"{s.onnx_median_s / s.torch_median_s:10.2f}x",
        f"{'   peak RSS MB (max)':40} {max(s.onnx_peak_rss_mb):12.0f} "
        f"{max(s.torch_peak_rss_mb):12.0f}",
        f"   runs: onnx {_runs(s.onnx_wall_s)}; torch {_runs(s.torch_wall_s)}",
        f"   exported run imported torch: {'yes' if s.onnx_imports_torch else 'no'}, "
        f"open_clip: {'yes' if s.onnx_imports_open_clip else 'no'}, "
        f"onnxruntime: {'yes' if s.onnx_imports_onnxruntime else 'no'} (python -X importtime)",
        f"2. photos/s, encoder stage: batches of {e.batch} preprocessed 224x224 pixels, "
        f"best of {e.repeats}, {e.threads} threads each",
        f"{'   photos/s':40} {e.onnx_photos_per_s:12.1f} {e.torch_photos_per_s:12.1f} "
        f"{e.ratio:10.2f}x",
        f"   batch s: onnx {_runs(e.onnx_batch_s, digits=3)}; "
        f"torch {_runs(e.torch_batch_s, digits=3)}",
        f"   min cosine ONNX vs torch on the {x.photos} benchmark photos: "
        f"{e.min_cosine_photos:.6f}",
        f"   end to end: `hanclip index` of {x.photos} JPEGs of {x.megapixels:.1f} MP "
        f"(median of {len(x.onnx_wall_s)}; decoding is a cost both pay alike)",
        f"{'   photos/s, whole process':40} {x.onnx_photos_per_s:12.1f} "
        f"{x.torch_photos_per_s:12.1f} {x.ratio:10.2f}x",
        f"{'   photos/s, steady (commit to commit)':40} {_rate(x.onnx_steady_photos_per_s):>12} "
        f"{_rate(x.torch_steady_photos_per_s):>12} {_ratio(x.steady_ratio):>11}",
        f"{'   peak RSS MB (max)':40} {max(x.onnx_peak_rss_mb):12.0f} "
        f"{max(x.torch_peak_rss_mb):12.0f}",
        f"   runs: onnx {_runs(x.onnx_wall_s)}; torch {_runs(x.torch_wall_s)}",
        f"   steady photos/s runs (batches of {x.batch}, first batch's commit to the last): "
        f"onnx {_rates(x.onnx_steady_photos_per_s_runs)}; "
        f"torch {_rates(x.torch_steady_photos_per_s_runs)}",
    ]
    if results.int8 is not None:
        q = results.int8
        lines += [
            "3. int8 image graph (dynamic quantisation), encoder stage, same loop",
            f"{'   photos/s':40} {q.photos_per_s:12.1f}   ({q.ratio_vs_fp32:.2f}x ONNX fp32, "
            f"{q.ratio_vs_torch:.2f}x torch)",
            f"   batch s: {_runs(q.batch_s, digits=3)}",
            f"   min cosine int8 vs fp32: verification images {q.verify_min_cosine:.4f}, "
            f"benchmark photos {q.min_cosine_photos:.4f}",
            f"   {'KEPT' if q.kept else 'REFUSED'} (quantize_image_encoder keeps it at >= 0.99 "
            "on the verification images)" + (f": {q.message}" if q.message else ""),
        ]
    else:
        lines.append("3. int8: not measured (--quantize-images not given)")
    lines += [
        "",
        f"target: exported start-up <= {s.target_s:.1f} s: "
        f"{'PASS' if s.passed else 'FAIL'} ({s.onnx_median_s:.2f} s)",
        f"target: encoder stage ONNX/torch >= {e.target_ratio:.1f}x: "
        f"{'PASS' if e.passed else 'FAIL'} ({e.ratio:.2f}x; end to end {x.ratio:.2f}x whole "
        f"process, {_ratio(x.steady_ratio)} steady, for information)",
        f"total {results.wall_s:.0f} s, work directory {results.work}",
    ]
    return "\n".join(lines) + "\n"


def figures_json(results: Results) -> str:
    return json.dumps(asdict(results), indent=2, ensure_ascii=False) + "\n"
