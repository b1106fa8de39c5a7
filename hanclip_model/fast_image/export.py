"""Exporting an open_clip image tower for indexing without torch (`runtime`); needs torch.

Built in a temporary folder, verified against open_clip on `verify_images()` (fixed generated
images of several sizes, aspect ratios and colour modes), then renamed into place: an export
that exists is an export that was proven. Two checks, both one image at a time and in a batch:

* the pixels `runtime.preprocess_image` makes vs open_clip's own transform: max abs
  difference <= MAX_PIXEL_DIFF (both do the same float32 steps, so it is 0 in practice);
* the embeddings ONNX Runtime gives from those pixels vs open_clip's model on its own
  transform's pixels, in float32 on the CPU: cosine >= MIN_COSINE for every image.

An export that fails either raises `BundleError` with the reason and leaves nothing behind.
The graph's weights are then stored in float16 (`half_weights`) when that changes no
verification image's embedding by more than MIN_FLOAT16_COSINE to the float32 graph's (a
bar above MIN_COSINE: it is the same image space, so a library indexed through a float32
export keeps its vectors) and the export still verifies; else they stay float32. The form
kept and the cosine measured are recorded in `fast_image.json`.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from hanclip_model.encoders import first_line
from hanclip_model.errors import BundleError
from hanclip_model.fast_image.runtime import (
    ENCODER_NAME,
    FAST_IMAGE_FORMAT,
    INPUT_NAME,
    OUTPUT_NAME,
    QUANTIZED_ENCODER_NAME,
    RESAMPLING,
    FastImageConfig,
    FastImageEncoder,
    PreprocessConfig,
    preprocess_images,
)
from hanclip_model.files import atomic_dir
from hanclip_model.half_weights import (
    FLOAT16,
    float16_trial,
    float32_copy,
    save_weights_apart,
)
from hanclip_model.heads import l2_normalize
from hanclip_model.onnx_runtime import (
    inference_session,
    root_logger_muted,
    row_cosines,
    worst_cosine,
)
from hanclip_model.storage import storage_error

if TYPE_CHECKING:
    from hanclip_model.encoders import ClipEncoder

ONNX_OPSET = 17
# The int8 graph is kept only when every verification image stays this close to fp32.
MIN_INT8_COSINE = 0.99
MIN_COSINE = 0.999  # ONNX Runtime + numpy preprocessing vs open_clip, every verification image
MAX_PIXEL_DIFF = 1e-5  # numpy/Pillow pixels vs open_clip's transform, max abs difference
# float16-stored weights vs the float32 graph, every verification image: kept only this
# close, since both are the same image space (`BundleSpec.image_fingerprint`).
MIN_FLOAT16_COSINE = 0.9999
# (width, height, mode): landscape, portrait, square, one smaller than any model's input (so
# it is upscaled), a very wide one, and the modes photos arrive in besides RGB.
VERIFY_SHAPES = (
    (320, 240, "RGB"),
    (240, 320, "RGB"),
    (257, 257, "RGB"),
    (37, 23, "RGB"),
    (640, 161, "RGB"),
    (200, 150, "L"),
    (150, 200, "RGBA"),
    (333, 500, "P"),
)


def verify_images(seed: int = 0) -> list[Image.Image]:
    """Fixed images for verification: smooth gradients, edges and noise, always the same."""
    rng = np.random.default_rng(seed)
    images = []
    for index, (width, height, mode) in enumerate(VERIFY_SHAPES):
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        channels = [
            128 + 127 * np.sin(x / (7 + index) + c) * np.cos(y / (11 + 2 * c)) for c in range(3)
        ]
        pixels = np.stack(channels, axis=-1)
        pixels[(x // 16 + y // 16) % 2 == 0] *= 0.6  # hard edges, where resampling differs
        pixels += rng.normal(0, 12, pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        images.append(image if mode == "RGB" else image.convert(mode))
    return images


def export_image_encoder(
    encoder: ClipEncoder, out_dir: str | Path, *, fingerprint: str = "unknown"
) -> Path:
    """Export `encoder`'s image tower into `out_dir` (needs torch and open_clip).

    Built in a temporary folder next to `out_dir`, verified (see the module docstring), then
    renamed into place; `fingerprint` identifies the weights in `fast_image.json`. The model is
    traced on the CPU and put back on its device afterwards. A full, read-only or vanished
    cache disk raises `StorageError`; a transform or model that cannot be reproduced exactly,
    `BundleError`.
    """
    out_dir = Path(out_dir)
    preprocess = preprocess_config(encoder.preprocess)
    model = encoder.model
    device = next(model.parameters()).device
    saving = f"the fast image encoder of {encoder.spec} was not cached"
    try:
        with atomic_dir(out_dir, saving=saving, what="cache folder") as staging:
            model.to("cpu")
            config = FastImageConfig(
                format=FAST_IMAGE_FORMAT,
                spec=encoder.spec,
                fingerprint=fingerprint,
                dim=encoder.dim,
                preprocess=preprocess,
                opset=ONNX_OPSET,
            )
            _export_graph(staging / ENCODER_NAME, model, preprocess.crop_size)
            config.write(staging)
            reference = _open_clip_reference(config, model, encoder.preprocess)
            config = _verified(staging, reference)
            _smallest_weights(staging, config, reference).write(staging)
    finally:
        model.to(device)
    return out_dir


def preprocess_config(transform: Any) -> PreprocessConfig:
    """open_clip's transform (a torchvision Compose) as a `PreprocessConfig`.

    Only the steps `runtime` reproduces are accepted: Resize (shortest side, or both sides),
    CenterCrop (none after a resize of both sides), conversion to RGB, ToTensor, Normalize,
    in that order; anything else (timm's ResizeKeepRatio, which open_clip uses for the
    longest side and for a non-square shortest side, ...) is refused with its name."""
    from torchvision import transforms as tv

    steps = list(getattr(transform, "transforms", [transform]))
    names = [_step_name(step) for step in steps]
    # open_clip's "squash" resize has no crop: the resize gives the input size itself.
    if names == ["Resize", "RGB", "ToTensor", "Normalize"] and not isinstance(steps[0].size, int):
        steps.insert(1, tv.CenterCrop(steps[0].size))
        names.insert(1, "CenterCrop")
    if names != ["Resize", "CenterCrop", "RGB", "ToTensor", "Normalize"]:
        raise BundleError(f"cannot export an image transform of steps {names}")
    resize, crop, normalize = steps[0], steps[1], steps[-1]
    if resize.max_size is not None:
        raise BundleError("cannot export an image transform whose Resize has a max_size")
    size = [resize.size] if isinstance(resize.size, int) else list(resize.size)
    interpolation = str(getattr(resize.interpolation, "value", resize.interpolation))
    crop_size = list(crop.size) if len(crop.size) == 2 else [crop.size[0]] * 2
    config = PreprocessConfig(
        resize_mode="shortest" if len(size) == 1 else "squash",
        resize_size=[int(s) for s in size],
        interpolation=interpolation,
        crop_size=[int(s) for s in crop_size],
        mean=[float(m) for m in normalize.mean],
        std=[float(s) for s in normalize.std],
    )
    try:
        config.check()
    except BundleError as exc:
        raise BundleError(f"cannot export this image transform: {exc}") from None
    assert config.interpolation in RESAMPLING
    return config


def _step_name(step: Any) -> str:
    """What a transform step does, in the terms of `preprocess_config`."""
    from torchvision import transforms as tv

    name = getattr(step, "__name__", type(step).__name__)
    if type(step) is tv.Resize:
        return "Resize"
    if type(step) is tv.CenterCrop:
        return "CenterCrop"
    if type(step) is tv.Normalize:
        return "Normalize"
    if name == "_convert_to_rgb" or (name == "MaybeConvertMode" and step.mode == "RGB"):
        return "RGB"
    if type(step) is tv.ToTensor or name == "MaybeToTensor":
        return "ToTensor"
    return name


def _export_graph(path: Path, model: Any, crop_size: list[int]) -> None:
    """pixels -> L2-normalised embedding, traced on the CPU in fp32, batch axis dynamic; the
    weights in `encoder.onnx.data` (`_weights_apart`)."""
    import torch

    class ImageGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = model.visual

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.normalize(self.visual(pixels), p=2, dim=-1)

    graph = ImageGraph().eval()
    example = torch.randn(2, 3, *crop_size)
    traced = path.with_name("traced.onnx")
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's fused inference kernel has no ONNX form: trace the plain ops.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # Tracer notices about shape checks that are constant for every input; the
            # verification against open_clip is what proves the graph right.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                (example,),
                str(traced),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
    except (RuntimeError, ValueError, TypeError) as exc:  # the exporter's errors, not the disk's
        raise BundleError(f"cannot export the image tower to ONNX: {first_line(exc)}") from None
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    _weights_apart(traced, path)
    traced.unlink()


def _weights_apart(traced: Path, path: Path) -> None:
    """Save the graph `traced` as `path` with its weights in `path.data`: ONNX Runtime then
    maps them instead of parsing them out of one protobuf, which opens the session sooner
    and with less memory (benchmarks/bundle_footprint.py times both)."""
    import onnx

    save_weights_apart(onnx.load(str(traced)), path)


def verify_export(directory: Path, model: Any, transform: Any) -> FastImageConfig:
    """Check an export in `directory` against open_clip's `model` (on the CPU) and its
    `transform` on `verify_images()`; the config with what was measured, or `BundleError`."""
    config = FastImageConfig.read(directory)
    return _verified(directory, _open_clip_reference(config, model, transform))


@dataclass(frozen=True)
class _Reference:
    """open_clip's embeddings of `verify_images()`, and how far our pixels are from its."""

    vectors: np.ndarray  # [N, dim], L2-normalised
    max_pixel_diff: float


def _open_clip_reference(config: FastImageConfig, model: Any, transform: Any) -> _Reference:
    """open_clip's side of the verification; `BundleError` when our preprocessing (as
    `config` states it) does not make open_clip's pixels."""
    import torch

    images = verify_images()
    ours = preprocess_images(images, config.preprocess)
    theirs = torch.stack([transform(image) for image in images])
    if ours.shape != tuple(theirs.shape):
        raise BundleError(
            f"export of {config.spec!r}: pixels of shape {ours.shape}, "
            f"open_clip makes {tuple(theirs.shape)}"
        )
    pixel_diff = float(np.abs(ours - theirs.numpy()).max())
    if not pixel_diff <= MAX_PIXEL_DIFF:
        raise BundleError(
            f"export of {config.spec!r}: preprocessing differs from open_clip's transform "
            f"(max abs pixel difference {pixel_diff:.3g} > {MAX_PIXEL_DIFF})"
        )
    with torch.no_grad():
        vectors = l2_normalize(model.encode_image(theirs).float().numpy())
    return _Reference(vectors, pixel_diff)


def _verified(directory: Path, reference: _Reference) -> FastImageConfig:
    """The export in `directory` against open_clip's `reference`, one image at a time and in
    a batch: its config with what was measured, or `BundleError`."""
    encoder = FastImageEncoder.load(directory)
    config = encoder.config
    worst = worst_cosine(encoder.embed, verify_images(), reference.vectors)
    if not worst >= MIN_COSINE:
        raise BundleError(
            f"export of {config.spec!r} disagrees with open_clip "
            f"(cosine {worst:.4f} < {MIN_COSINE})"
        )
    return replace(config, min_cosine=worst, max_pixel_diff=reference.max_pixel_diff)


def _smallest_weights(
    directory: Path, config: FastImageConfig, reference: _Reference
) -> FastImageConfig:
    """The verified float32 export in `directory` (`config`) with its graph's weights stored
    in float16 when every verification image, one at a time and in a batch, stays within
    MIN_FLOAT16_COSINE of the float32 graph and within MIN_COSINE of open_clip; else kept
    float32. The cosine to the float32 graph is recorded either way."""
    images = verify_images()
    float32 = FastImageEncoder.load(directory).embed(images)
    with float16_trial(directory / ENCODER_NAME) as trial:
        half = FastImageEncoder.load(directory)
        to_float32 = worst_cosine(half.embed, images, float32)
        to_open_clip = worst_cosine(half.embed, images, reference.vectors)
        if to_float32 >= MIN_FLOAT16_COSINE and to_open_clip >= MIN_COSINE:
            trial.keep()
    if not trial.kept:
        return replace(config, float16_cosine=to_float32)
    return replace(
        config, graph_weights=FLOAT16, float16_cosine=to_float32, min_cosine=to_open_clip
    )


def quantize_image_encoder(directory: str | Path) -> FastImageConfig:
    """Add ONNX Runtime's dynamic int8 quantisation of the fp32 graph in `directory` (an export
    by `export_image_encoder`) as `encoder-int8.onnx`, and record its worst cosine against the
    fp32 graph on `verify_images()`. Needs the `onnx` package, not torch. A graph whose
    weights are stored in float16 is quantised from its float32 form (the quantiser reads
    only float32 initializers), and compared with the graph as stored.

    Kept only at `MIN_INT8_COSINE` or above: below it the int8 file is removed and
    `BundleError` says what was measured. A library indexed with it is in its own image space
    (`BundleSpec.image_fingerprint`), so int8 and fp32 vectors never meet in one index."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    directory = Path(directory)
    fp32 = FastImageEncoder.load(directory)
    target = directory / QUANTIZED_ENCODER_NAME
    try:
        # The quantiser advises pre-processing the graph, through warnings and the root logger.
        with (
            root_logger_muted(),
            warnings.catch_warnings(),
            _float32_copy(directory) as fp32_graph,
        ):
            warnings.simplefilter("ignore")
            quantize_dynamic(fp32_graph, target, weight_type=QuantType.QInt8)
        int8 = FastImageEncoder(fp32.config, inference_session(target))
        images = verify_images()
        worst = float(row_cosines(int8.embed(images), fp32.embed(images)).min())
    except Exception as exc:
        target.unlink(missing_ok=True)
        error = storage_error(exc, directory, what="bundle folder", unexplained_write=True)
        if error is None:
            raise
        raise error.saving("the int8 image encoder was not written") from exc
    if not worst >= MIN_INT8_COSINE:
        target.unlink(missing_ok=True)
        raise BundleError(
            f"int8 image encoder of {fp32.config.spec!r} strays too far from fp32 "
            f"(cosine {worst:.4f} < {MIN_INT8_COSINE}): not kept"
        )
    config = replace(fp32.config, int8_cosine=worst)
    config.write(directory)
    return config


@contextmanager
def _float32_copy(directory: Path) -> Iterator[Path]:
    """The graph of `directory` with float32 weights, copied into a scratch folder there for
    the quantiser (`half_weights.float32_copy`)."""
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=directory) as scratch:
        graph = Path(scratch) / ENCODER_NAME
        float32_copy(directory / ENCODER_NAME, graph)
        yield graph
