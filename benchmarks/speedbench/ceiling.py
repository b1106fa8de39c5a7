"""The machine's ceiling for indexing: cores / (decode + model core-seconds per photo).

Both costs are measured in this process, on the same photos and in the same round as the
`hanclip index` run they are compared with.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from benchkit.figures import Spread
from benchkit.inputs import read_bytes
from benchkit.workspace import INDEX_BATCH

from hanclip_model.device import usable_cores
from speedbench.results import CeilingResult, CeilingRound
from speedbench.settings import MODEL_BATCHES


@dataclass(frozen=True)
class ClipParts:
    """The open_clip model (eval mode, CPU) and its preprocess, as hanclip loads them."""

    model: Any
    preprocess: Any
    image_size: int


def load_clip(spec: str) -> ClipParts:
    from hanclip_model.encoders import ClipEncoder

    encoder = ClipEncoder(spec, device="cpu")
    # The ceiling times the forward alone, on tensors preprocessed beforehand, so it needs
    # the parts that `embed_images` runs together.
    return ClipParts(encoder.model, encoder.preprocess, encoder.image_size)


@dataclass(frozen=True)
class ModelCost:
    core_s_per_photo: float
    wall_s_per_photo: float
    torch_threads: int


def decode_core_seconds(photos: Sequence[Path], image_size: int) -> tuple[float, list[Any]]:
    """Core-seconds per photo of hanclip's decode (JPEG draft mode), on this one thread;
    returns the decoded images too."""
    from hanclip_model.images import load_image

    load_image(photos[0], image_size)  # first call pays for imports and plugin registration
    images, spent = [], 0.0
    for path in photos:
        start = time.thread_time()
        images.append(load_image(path, image_size).image)
        spent += time.thread_time() - start
    return spent / len(photos), images


def preprocess_core_seconds(preprocess: Any, images: Sequence[Any]) -> tuple[float, list[Any]]:
    """Core-seconds per photo of open_clip's preprocess on decoded photos (not part of the
    ceiling formula; shown because `index` pays it)."""
    start = time.process_time()
    tensors = [preprocess(image) for image in images]
    return (time.process_time() - start) / len(images), tensors


def model_core_seconds(
    model: Any, tensors: Sequence[Any], batch: int, threads: int | None = None
) -> ModelCost:
    """CPU seconds of one ViT forward on `batch` photos divided by `batch`, the lowest of
    MODEL_BATCHES forwards, on all of torch's threads (or on `threads`).

    Process CPU time, not wall time: with every core busy it counts what the forward costs
    the machine, which is what the ceiling divides the cores by.
    """
    import torch

    pixels = torch.stack([tensors[i % len(tensors)] for i in range(batch)])
    all_threads = torch.get_num_threads()
    torch.set_num_threads(threads or all_threads)
    cpu, wall = [], []
    try:
        with torch.inference_mode():
            model.encode_image(pixels)  # warm-up: first-call allocations, kernel choice
            for _ in range(MODEL_BATCHES):
                cpu_start, wall_start = time.process_time(), time.perf_counter()
                model.encode_image(pixels)
                cpu.append(time.process_time() - cpu_start)
                wall.append(time.perf_counter() - wall_start)
    finally:
        torch.set_num_threads(all_threads)
    # The least disturbed batch: this machine's neighbours come and go within seconds.
    return ModelCost(min(cpu) / batch, min(wall) / batch, threads or all_threads)


def machine_ceiling(cores: int, decode_core_s: float, model_core_s: float) -> float:
    """Photos/s when every core does nothing but decode and run the model."""
    return cores / (decode_core_s + model_core_s)


def ceiling_round(clip: ClipParts, photos: Sequence[Path]) -> CeilingRound:
    """Decode and model core-seconds per photo, measured now, and the ceiling they give."""
    cores = usable_cores()
    read_bytes(photos)
    decode_s, images = decode_core_seconds(photos, clip.image_size)
    prep_s, tensors = preprocess_core_seconds(clip.preprocess, images)
    model = model_core_seconds(clip.model, tensors, INDEX_BATCH)
    # Threads working in parallel cost more CPU time per photo than one thread alone
    # (shared caches and memory bandwidth, synchronisation). The all-cores figure counts
    # that overhead as work; the one-thread figure gives a stricter ceiling, for information.
    single = model_core_seconds(clip.model, tensors, INDEX_BATCH, threads=1)
    return CeilingRound(
        cores=cores,
        image_size=clip.image_size,
        torch_threads=model.torch_threads,
        decode_core_s_per_photo=decode_s,
        preprocess_core_s_per_photo=prep_s,
        model_core_s_per_photo=model.core_s_per_photo,
        model_wall_s_per_photo=model.wall_s_per_photo,
        model_1thread_core_s_per_photo=single.core_s_per_photo,
        ceiling_photos_per_s=machine_ceiling(cores, decode_s, model.core_s_per_photo),
        strict_ceiling_photos_per_s=machine_ceiling(cores, decode_s, single.core_s_per_photo),
    )


def summarise_ceilings(rounds: Sequence[CeilingRound], naive: Sequence[float]) -> CeilingResult:
    """Each per-photo figure and ceiling over the rounds, with the naive rate (`naive[i]` was
    measured in round i)."""
    first = rounds[0]
    spreads = {
        f.name: Spread.of([getattr(r, f.name) for r in rounds])
        for f in fields(CeilingRound)
        if f.name.endswith(("_per_photo", "_per_s"))  # the costs and rates, not the machine
    }
    return CeilingResult(
        cores=first.cores,
        image_size=first.image_size,
        torch_threads=first.torch_threads,
        model_batch=INDEX_BATCH,
        naive_photos_per_s=Spread.of(naive),
        **spreads,
    )
