"""How fast `hanclip train`'s stages run on one device, with real-size random-weight encoders.

    python benchmarks/train_throughput.py [--device cuda] [--work DIR] [--images N ...]

With the bundle of `speed.py` (true FLOPs, meaningless outputs) and the code paths `hanclip
train` runs, on `--device` (default CUDA when torch sees a GPU): captions/s into the e^I bank
(CLIP text tower) and the e^K bank (the text encoder; a Korean bank costs the same), images/s
of the image bank on 12-MP JPEGs (DataLoader decode + ViT-B/32), soft retrieval timed on a
slice and extrapolated to 1M x 1.5M (its work is proportional to queries x bank), and one
epoch at batch 2048 (the second of two) scaled by steps to 1M rows. Each figure comes with its
time at those targets. Bundle and photos are kept under `--work`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
from benchkit import entry
from benchkit.environment import cpu_model
from benchkit.processes import BenchmarkError, LoadSampler, LoadSummary, log
from benchkit.vectors import unit_vectors

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


# Small enough for a CPU run; the report says how long it took.
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
    def rate_per_s(self) -> float:
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
    def extrapolation_factor(self) -> float:
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

    @property
    def scale_factor(self) -> float:
        return self.target_steps / self.steps


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

    @property
    def reads_per_photo(self) -> float:
        """How often the image bank read each distinct photo (a GPU run cycles a few)."""
        return self.images.items / self.distinct_photos


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
    name: str,
    items: Sequence[str],
    encoder,
    dim: int,
    batch_size: int,
    folder: Path,
    target: int = TARGET_CAPTIONS,
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
    query_rows, bank_rows = unit_vectors(rng, queries, dim), unit_vectors(rng, bank, dim)
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
        unit_vectors(rng, rows, image_dim),
        unit_vectors(rng, rows, text_dim),
        unit_vectors(rng, PSEUDO_BANK_ROWS, image_dim),
        unit_vectors(rng, PSEUDO_BANK_ROWS, text_dim),
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

    from hanclip_model.device import is_cuda

    if is_cuda(device):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()


def run_benchmark(bundle: Path, photos: Sequence[Path], sizes: Sizes, device: str) -> Results:
    """Every measurement, in this process, on `device`."""
    import torch
    from PIL import Image

    from hanclip_model.bundle import resolve_bundle
    from hanclip_model.device import is_cuda, usable_cores
    from hanclip_model.encoders import ClipEncoder, TextEncoder
    from trainer.banks import bank_batch_size, image_batch_encoder

    started = time.perf_counter()
    spec = resolve_bundle(str(bundle))
    log(f"loading the encoders on {device}")
    clip, text = ClipEncoder(spec.image_model, device), TextEncoder(spec.text_model, device)
    captions = english_captions(max(sizes.clip_captions, sizes.text_captions))
    # Untimed first calls: lazy initialisation and first-seen shapes are not throughput.
    clip.embed_texts(captions[:WARMUP_CAPTIONS]), text.embed(captions[:WARMUP_CAPTIONS])
    clip.embed_images([Image.new("RGB", (clip.image_size, clip.image_size))] * 2)
    text_batch, image_batch = bank_batch_size("text", device), bank_batch_size("image", device)
    for photo in photos:
        photo.read_bytes()  # into the page cache: the disk is not what is measured
    paths = [str(photos[i % len(photos)]) for i in range(sizes.images)]
    encoder = image_batch_encoder(clip)
    with tempfile.TemporaryDirectory(prefix="hanclip-train-throughput-") as tmp:
        folder = Path(tmp)
        log(f"e^I bank: {sizes.clip_captions:,} captions, CLIP text tower")
        english = captions[: sizes.clip_captions]
        clip_text = time_bank(
            "english-clip", english, clip.embed_texts, clip.dim, text_batch, folder
        )
        log(f"e^K bank: {sizes.text_captions:,} captions, text encoder")
        english = captions[: sizes.text_captions]
        text_bank = time_bank("english-text", english, text.embed, text.dim, text_batch, folder)
        log(f"image bank: {sizes.images:,} photos, DataLoader workers: {encoder.workers}")
        images = time_bank("images", paths, encoder, clip.dim, image_batch, folder, TARGET_IMAGES)
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


def sizes_from(args: argparse.Namespace, device: str) -> Sizes:
    from hanclip_model.device import is_cuda

    sizes = CUDA_SIZES if is_cuda(device) else CPU_SIZES
    return entry.resized(sizes, args, *(f.name for f in fields(Sizes)))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    example = "python benchmarks/train_throughput.py --device cuda --json train.json"
    parser = entry.parser(__doc__, example, work="kept; default: user cache")
    parser.add_argument(
        "--device", help="cpu, cuda, cuda:1 ... (default: HANCLIP_DEVICE, else CUDA if available)"
    )
    parser.add_argument("--bundle", type=Path, help="measure this bundle instead")
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
    from benchkit.inputs import prepare_inputs
    from benchkit.workspace import default_work

    from hanclip_model.device import pick_device, usable_cores

    device = pick_device(args.device)
    sizes = sizes_from(args, device)
    work = (args.work or default_work("train-throughput")).resolve()
    work.mkdir(parents=True, exist_ok=True)

    def measure() -> Results:
        with LoadSampler(usable_cores()) as load:
            inputs = prepare_inputs(work, sizes.photos, args.bundle)
            load.probe("start")
            results = run_benchmark(inputs.bundle, inputs.photos, sizes, device)
            load.probe("end")
        return replace(results, load=load.summary())

    title = "hanclip training throughput (offline: real-size architectures, random weights)"
    return entry.finish(measure, args.json_path, title=title)


if __name__ == "__main__":
    sys.exit(main())
