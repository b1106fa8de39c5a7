"""In this process: the image encoder stage, ONNX against torch (and int8), and the cosines
on the benchmark photos."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from benchkit.processes import log
from benchkit.vectors import row_cosines

from hanclip_model.bundle import read_bundle
from hanclip_model.device import usable_cores
from onnxbench.bundles import Bundles
from onnxbench.figures import EncoderStage, Int8, Sizes


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
    encoder = EncoderStage(
        batch=sizes.batch,
        repeats=sizes.repeats,
        threads=threads,
        onnx_batch_s=tuple(times["onnx"]),
        torch_batch_s=tuple(times["torch"]),
        min_cosine_photos=float(row_cosines(vectors["onnx"], vectors["torch"]).min()),
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
