"""How fast `hanclip train`'s stages run on one device, with real-size random-weight encoders.

One offline run, on the device that `--device` names (default: CUDA when torch sees a GPU,
else the CPU), with the bundle of `benchmarks/speed.py` (open_clip ViT-B/32 and a
paraphrase-multilingual-MiniLM-L12-v2-size text encoder, random weights: true FLOPs,
meaningless outputs) and the code paths `hanclip train` runs:

* caption banks: captions/s encoding English captions into the e^I bank (CLIP text tower)
  and into the e^K bank (the text encoder; a Korean caption bank costs the same per
  caption), through `encode_bank` with its per-device batch size;
* the image bank: images/s of decode + preprocess (DataLoader workers) + ViT-B/32 on
  generated phone-size JPEGs (12 MP), through `encode_bank` and the DataLoader encoder; on
  a GPU the few distinct photos are read over and over (each read decodes in full);
* soft retrieval (the pseudo images): seconds for Q captions against a bank of N images,
  512-d, measured on a slice and extrapolated to 1M × 1.5M. The work is exactly Q·N·D
  multiply-adds twice and Q·N exponentials, so its time is proportional to Q × N;
* training: seconds per epoch at batch 2048, the second of two epochs measured on R rows and
  scaled by steps to 1M rows (every step of a fixed batch size costs the same).

The bundle and the photos are made once and kept under `--work` (default: a folder in the
user cache). The report goes to stdout, progress to stderr.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--work DIR] [--json PATH]
        [--clip-captions N] [--text-captions N] [--photos N] [--images N]
        [--retrieval-queries Q] [--retrieval-bank N] [--train-rows R]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
from speedbench.processes import BenchmarkError, LoadSampler, log
from speedbench.results import LoadSummary

TARGET_CAPTIONS = 1_000_000
TARGET_IMAGES = 1_500_000
TRAIN_BATCH = 2048  # TrainConfig's default
PSEUDO_BANK_ROWS = 1024  # image and Korean banks of the training run: its pseudo-pair stage
# is timed on its own, and is not part of an epoch
RETRIEVAL_WARMUP = (256, 1024)  # queries x bank of the untimed first call
WARMUP_CAPTIONS = 32


@dataclass(frozen=True)
class Sizes:
    """How much each measurement encodes or computes."""

    clip_captions: int  # English captions through the CLIP text tower
    text_captions: int  # English captions through the text encoder
    photos: int  # distinct JPEGs generated (kept in the work directory)
    images: int  # photos encoded into the image bank (the distinct ones, cycled)
    retrieval_queries: int
    retrieval_bank: int
    train_rows: int


# About two minutes of measuring on two cores.
CPU_SIZES = Sizes(
    clip_captions=256,
    text_captions=1024,
    photos=64,
    images=64,
    retrieval_queries=20_000,
    retrieval_bank=30_000,
    train_rows=32_768,
)
CUDA_SIZES = Sizes(
    clip_captions=65_536,
    text_captions=262_144,
    photos=96,
    images=4096,
    retrieval_queries=100_000,
    retrieval_bank=300_000,
    train_rows=262_144,
)


def extrapolate(seconds: float, measured: float, target: float) -> float:
    """Seconds for `target` units of work, from `seconds` for `measured` units."""
    if measured <= 0:
        raise ValueError("nothing was measured")
    return seconds * target / measured


@dataclass(frozen=True)
class BankFigure:
    """One bank encoded: `items` rows in `seconds`, and the time for `target_items`."""

    bank: str
    items: int
    batch_size: int
    seconds: float
    target_items: int

    @property
    def per_second(self) -> float:
        return self.items / self.seconds

    @property
    def target_seconds(self) -> float:
        return extrapolate(self.seconds, self.items, self.target_items)


@dataclass(frozen=True)
class RetrievalFigure:
    """Soft retrieval of `queries` rows against `bank` rows, extrapolated to the targets."""

    queries: int
    bank: int
    dim: int
    seconds: float
    target_queries: int
    target_bank: int

    @property
    def factor(self) -> float:
        return self.target_queries * self.target_bank / (self.queries * self.bank)

    @property
    def target_seconds(self) -> float:
        return extrapolate(
            self.seconds, self.queries * self.bank, self.target_queries * self.target_bank
        )


@dataclass(frozen=True)
class EpochFigure:
    """One training epoch over `rows` captions (`steps` batches), scaled to `target_rows` by
    steps: at a fixed batch size every step costs the same."""

    rows: int
    batch_size: int
    steps: int
    seconds: float
    target_rows: int

    @property
    def target_steps(self) -> int:
        return math.ceil(self.target_rows / self.batch_size)

    @property
    def target_seconds(self) -> float:
        return extrapolate(self.seconds, self.steps, self.target_steps)


@dataclass(frozen=True)
class Results:
    device: str
    device_name: str
    cores: int
    torch_threads: int
    torch: str
    cuda: str | None  # torch's CUDA version, when the device is a GPU
    bundle: str
    photo_size: tuple[int, int]
    distinct_photos: int
    loader_workers: int
    text_tokens_mean: float  # per caption, the text encoder's tokenizer (CLIP pads to 77)
    clip_text: BankFigure
    text: BankFigure
    images: BankFigure
    retrieval: RetrievalFigure
    epoch: EpochFigure
    load: LoadSummary | None = None
    wall_s: float = 0.0


# -- measurements ------------------------------------------------------------------------


def unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    """Random unit vectors: soft retrieval and training cost the same whatever the values."""
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def english_captions(count: int) -> list[str]:
    """Caption-like English sentences (the stand-in corpus's), repeated up to `count`."""
    from hanclip_eval.random_models import standin_corpus

    english = [s for s in standin_corpus() if s.isascii()]
    return [english[i % len(english)] for i in range(count)]


def mean_tokens(text_model: str, captions: Sequence[str]) -> float:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(text_model)
    return float(np.mean([len(ids) for ids in tokenizer(list(captions[:1000]))["input_ids"]]))


def time_bank(
    name: str, items: Sequence[str], encoder, dim: int, batch_size: int, folder: Path, target: int
) -> BankFigure:
    """`encode_bank` into a fresh file, as `hanclip train` builds a bank."""
    from trainer.banks import encode_bank

    start = time.perf_counter()
    bank = encode_bank(items, encoder, dim, folder / f"{name}.npy", batch_size=batch_size)
    seconds = time.perf_counter() - start
    if bank.shape != (len(items), dim) or not np.all(np.linalg.norm(bank, axis=1) > 0):
        raise BenchmarkError(f"the {name} bank came out incomplete")
    return BankFigure(name, len(items), batch_size, seconds, target)


def time_retrieval(queries: int, bank: int, dim: int, device: str) -> RetrievalFigure:
    from trainer.retrieval import soft_retrieve
    from trainer.train import TrainConfig

    rng = np.random.default_rng(0)
    query_rows, bank_rows = unit_rows(rng, queries, dim), unit_rows(rng, bank, dim)
    tau = TrainConfig().tau_retrieval
    warm_q, warm_b = RETRIEVAL_WARMUP
    soft_retrieve(query_rows[:warm_q], bank_rows[:warm_b], tau, device=device)
    start = time.perf_counter()
    soft_retrieve(query_rows, bank_rows, tau, device=device)
    seconds = time.perf_counter() - start
    return RetrievalFigure(queries, bank, dim, seconds, TARGET_CAPTIONS, TARGET_IMAGES)


def time_epoch(rows: int, image_dim: int, text_dim: int, device: str) -> EpochFigure:
    """Two epochs of `train_heads`; the second one's seconds (the first warms up)."""
    from trainer.train import TrainBanks, TrainConfig, TrainProgress, train_heads

    rng = np.random.default_rng(1)
    banks = TrainBanks(
        unit_rows(rng, rows, image_dim),
        unit_rows(rng, rows, text_dim),
        unit_rows(rng, PSEUDO_BANK_ROWS, image_dim),
        unit_rows(rng, PSEUDO_BANK_ROWS, text_dim),
    )
    epoch_ends: list[float] = []
    steps: list[int] = []

    def on_progress(update: TrainProgress) -> None:
        # The last step's report reads its loss: the epoch has finished on the device.
        if update.stage == "training" and update.step == update.steps:
            epoch_ends.append(time.perf_counter())
            steps.append(update.steps)

    cfg = TrainConfig(epochs=2, batch_size=TRAIN_BATCH, device=device)
    train_heads(banks, cfg, progress=on_progress)
    if len(epoch_ends) != 2:
        raise BenchmarkError(f"training reported {len(epoch_ends)} epochs, not 2")
    batch = min(TRAIN_BATCH, rows)
    return EpochFigure(rows, batch, steps[1], epoch_ends[1] - epoch_ends[0], TARGET_CAPTIONS)


def device_name(device: str) -> str:
    import torch

    from hanclip_model.encoders import is_cuda

    if is_cuda(device):
        return torch.cuda.get_device_name(torch.device(device))
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or "unknown CPU"


def run_benchmark(bundle: Path, photos: Sequence[Path], sizes: Sizes, device: str) -> Results:
    """Every measurement, in this process, on `device`."""
    import torch
    from PIL import Image

    from hanclip_model.bundle import resolve_bundle
    from hanclip_model.device import usable_cores
    from hanclip_model.encoders import ClipEncoder, TextEncoder, is_cuda
    from trainer.banks import bank_batch_size, image_batch_encoder

    started = time.perf_counter()
    spec = resolve_bundle(str(bundle))
    log(f"loading the encoders on {device}")
    clip, text = ClipEncoder(spec.image_model, device), TextEncoder(spec.text_model, device)
    captions = english_captions(max(sizes.clip_captions, sizes.text_captions))
    # Untimed first calls: lazy initialisation and first-seen shapes are not throughput.
    clip.embed_texts(captions[:WARMUP_CAPTIONS]), text.embed(captions[:WARMUP_CAPTIONS])
    clip.embed_images([Image.new("RGB", (clip.image_size, clip.image_size))] * 2)
    text_batch = bank_batch_size("text", device)
    with tempfile.TemporaryDirectory(prefix="hanclip-train-throughput-") as tmp:
        folder = Path(tmp)
        log(f"e^I bank: {sizes.clip_captions:,} captions, CLIP text tower")
        clip_text = time_bank(
            "english-clip",
            captions[: sizes.clip_captions],
            clip.embed_texts,
            clip.dim,
            text_batch,
            folder,
            TARGET_CAPTIONS,
        )
        log(f"e^K bank: {sizes.text_captions:,} captions, text encoder")
        text_bank = time_bank(
            "english-text",
            captions[: sizes.text_captions],
            text.embed,
            text.dim,
            text_batch,
            folder,
            TARGET_CAPTIONS,
        )
        for photo in photos:
            photo.read_bytes()  # into the page cache: the disk is not what is measured
        paths = [str(photos[i % len(photos)]) for i in range(sizes.images)]
        encoder = image_batch_encoder(clip)
        log(f"image bank: {sizes.images:,} photos, DataLoader workers: {encoder.workers}")
        images = time_bank(
            "images",
            paths,
            encoder,
            clip.dim,
            bank_batch_size("image", device),
            folder,
            TARGET_IMAGES,
        )
    log(f"soft retrieval: {sizes.retrieval_queries:,} x {sizes.retrieval_bank:,}")
    retrieval = time_retrieval(sizes.retrieval_queries, sizes.retrieval_bank, clip.dim, device)
    log(f"training: two epochs over {sizes.train_rows:,} rows")
    epoch = time_epoch(sizes.train_rows, clip.dim, text.dim, device)
    with Image.open(photos[0]) as first:
        photo_size = first.size
    return Results(
        device=device,
        device_name=device_name(device),
        cores=usable_cores(),
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        cuda=torch.version.cuda if is_cuda(device) else None,
        bundle=str(bundle),
        photo_size=photo_size,
        distinct_photos=len(photos),
        loader_workers=encoder.workers,
        text_tokens_mean=mean_tokens(spec.text_model, captions[: sizes.text_captions]),
        clip_text=clip_text,
        text=text_bank,
        images=images,
        retrieval=retrieval,
        epoch=epoch,
        wall_s=time.perf_counter() - started,
    )


# -- the report --------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """Seconds in the unit a person reads best: s, min, h or days."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def count(n: float) -> str:
    """1,000,000 -> 1M, 1,500,000 -> 1.5M, 20,000 -> 20k."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size:
            return f"{n / size:.4g}{suffix}"
    return f"{n:g}"


def _row(what: str, measured_on: str, result: str, full: str) -> str:
    return f"{what:<36} {measured_on:<40} {result:>12}  {full}"


def format_report(results: Results) -> str:
    r = results
    width, height = r.photo_size
    lines = [
        "hanclip training throughput, offline: real-size architectures, random weights",
        "=" * 118,
        f"device        {r.device}: {r.device_name}" + (f" (CUDA {r.cuda})" if r.cuda else ""),
        f"machine       {r.cores} cores usable; torch {r.torch}, {r.torch_threads} threads",
        f"bundle        {r.bundle}",
    ]
    if r.load is not None:
        free = ", ".join(f"{k}: {v:.2f}" for k, v in r.load.cores_available.items())
        lines += [
            f"load average  start {r.load.at_start_1_5_15[0]}, during (1-min) min "
            f"{r.load.during_1min_min} / median {r.load.during_1min_median} / max "
            f"{r.load.during_1min_max}, end {r.load.at_end_1_5_15[0]} (includes this run)",
            f"free cores    {free} of {r.cores} (CPU time busy loops got in 1 s)",
        ]
    lines += [
        f"wall time     {r.wall_s:.0f} s (loading the models and measuring)",
        "",
        _row("stage", "measured on", "result", "at full size"),
        _row("-" * 36, "-" * 40, "-" * 12, "-" * 26),
    ]
    for figure, what, unit in (
        (r.clip_text, "e^I bank: CLIP text tower", "captions"),
        (r.text, "e^K bank: text encoder", "captions"),
    ):
        lines.append(
            _row(
                what,
                f"{figure.items:,} {unit}, batch {figure.batch_size}",
                f"{figure.per_second:,.1f}/s",
                f"{count(figure.target_items)} {unit}: {duration(figure.target_seconds)}",
            )
        )
    images = r.images
    lines.append(
        _row(
            "image bank: decode+preprocess+ViT",
            f"{images.items:,} photos, batch {images.batch_size}, workers {r.loader_workers}",
            f"{images.per_second:,.1f}/s",
            f"{count(images.target_items)} images: {duration(images.target_seconds)}",
        )
    )
    ret = r.retrieval
    lines.append(
        _row(
            f"soft retrieval, {ret.dim}-d",
            f"{ret.queries:,} x {ret.bank:,}",
            duration(ret.seconds),
            f"{count(ret.target_queries)} x {count(ret.target_bank)}: "
            f"{duration(ret.target_seconds)} (extrapolated, x{ret.factor:,.0f})",
        )
    )
    ep = r.epoch
    lines.append(
        _row(
            f"training epoch, batch {ep.batch_size}",
            f"{ep.rows:,} rows ({ep.steps} steps)",
            duration(ep.seconds),
            f"{count(ep.target_rows)} rows: {duration(ep.target_seconds)} "
            f"(scaled, x{ep.target_steps / ep.steps:,.1f})",
        )
    )
    lines += [
        "",
        f"Photos: {r.distinct_photos} distinct generated {width}x{height} JPEGs"
        + (
            f", read {images.items / r.distinct_photos:.3g} times each"
            if images.items > r.distinct_photos
            else ""
        )
        + "; in the page cache. Captions: the text encoder saw "
        f"{r.text_tokens_mean:.1f} tokens per caption (CLIP's tower always runs 77).",
        f"Soft retrieval is extrapolated from the {ret.queries:,} x {ret.bank:,} slice: its "
        "work is Q*N*D multiply-adds twice and Q*N exponentials, proportional to Q x N.",
        f"The epoch is the second of two over {ep.rows:,} random rows ({ep.steps} steps), scaled "
        f"to the {ep.target_steps:,} steps of batch {ep.batch_size} that {count(ep.target_rows)} "
        "rows make (every step costs the same at a fixed batch).",
        "A target-language caption bank costs what the e^K bank costs per caption.",
    ]
    return "\n".join(lines) + "\n"


def figures_json(results: Results) -> str:
    """Every figure under its field name, with the derived rates and full-size seconds."""
    data = asdict(results)
    for name in ("clip_text", "text", "images"):
        figure: BankFigure = getattr(results, name)
        data[name]["per_second"] = figure.per_second
        data[name]["target_seconds"] = figure.target_seconds
    data["retrieval"]["target_seconds"] = results.retrieval.target_seconds
    data["retrieval"]["extrapolation_factor"] = results.retrieval.factor
    data["epoch"]["target_steps"] = results.epoch.target_steps
    data["epoch"]["target_seconds"] = results.epoch.target_seconds
    return json.dumps(data, indent=2) + "\n"


# -- one run -----------------------------------------------------------------------------


def default_work() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("hanclip-bench", appauthor=False)) / "train-throughput"


def sizes_from(args: argparse.Namespace, device: str) -> Sizes:
    from hanclip_model.encoders import is_cuda

    sizes = CUDA_SIZES if is_cuda(device) else CPU_SIZES
    given = {f.name: getattr(args, f.name) for f in fields(Sizes)}
    return replace(sizes, **{k: v for k, v in given.items() if v is not None})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python benchmarks/train_throughput.py --device cuda --json train.json",
    )
    parser.add_argument(
        "--device", help="cpu, cuda, cuda:1 ... (default: HANCLIP_DEVICE, else CUDA if available)"
    )
    parser.add_argument("--work", type=Path, help="work directory, kept (default: user cache)")
    parser.add_argument("--bundle", type=Path, help="measure this bundle instead")
    parser.add_argument("--json", type=Path, dest="json_path", help="also write figures here")
    for field in fields(Sizes):
        cpu, cuda = getattr(CPU_SIZES, field.name), getattr(CUDA_SIZES, field.name)
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=int,
            help=f"default {cpu:,} on a CPU, {cuda:,} on CUDA",
        )
    args = parser.parse_args(argv)
    if any(getattr(args, f.name) is not None and getattr(args, f.name) < 1 for f in fields(Sizes)):
        parser.error("sizes must be positive")
    if args.train_rows is not None and args.train_rows < 2:
        parser.error("--train-rows must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # The models are built locally: no hub is ever asked.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from speedbench.run import Options, prepare_inputs
    from speedbench.settings import FULL

    from hanclip_model.device import pick_device, usable_cores

    device = pick_device(args.device)
    sizes = sizes_from(args, device)
    work = (args.work or default_work()).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        with LoadSampler(usable_cores()) as load:
            inputs = prepare_inputs(Options(work, replace(FULL, photos=sizes.photos), args.bundle))
            load.probe("start")
            results = run_benchmark(inputs.bundle, inputs.photos, sizes, device)
            load.probe("end")
        results = replace(results, load=load.summary())
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_report(results), end="")
    if args.json_path is not None:
        args.json_path.write_text(figures_json(results), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
