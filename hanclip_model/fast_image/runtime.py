"""The image encoder on ONNX Runtime: a photo becomes a vector without torch or open_clip.

Once per image model, `export.export_image_encoder` writes the open_clip visual tower as an
ONNX graph, and this module reads it:

* `encoder.onnx` (+ `encoder.onnx.data`, its weights): pixels [N, 3, H, W] float32 ->
  L2-normalised image embeddings [N, dim] (the visual tower, then the normalisation), fp32,
  any batch size. ONNX Runtime optimises it for this CPU as the session opens. Its weights
  are stored in float16 where the export verified that form (`half_weights`: cast back to
  float32 as the session opens; `graph_weights` in the config), else in float32.
* `fast_image.json`: the preprocessing open_clip's transform applies, read from that
  transform at export (`PreprocessConfig`), and what the verification measured.

The preprocessing is redone here in Pillow and numpy step by step as torchvision does it:
convert to RGB, resize with Pillow (the shortest side to `resize_size`, or both sides when
`resize_mode` is "squash"), center crop (zero padding where the image is smaller), /255,
(x - mean) / std in float32. The export checks the pixels against open_clip's own transform.

Exports made before also hold `encoder-optimized.onnx` (+ `.data`), the graph saved after
ONNX Runtime's optimisations, and keep the weights of `encoder.onnx` inside it: such an
export is opened as it was (the optimised graph on the CPU). One graph is stored now, its
weights apart: optimising it as a session opens makes the opening a little slower, and only
when photos are to be embedded (`benchmarks/bundle_footprint.py` times both forms), where a
second copy of every weight was a third of a bundle; and the one graph is what every path
runs (the CPU, CUDA's provider, the int8 quantiser), where the pre-optimised one was the CPU's.

This module imports neither torch nor open_clip (a test holds it to that).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hanclip_model.device import is_cuda
from hanclip_model.errors import BundleError
from hanclip_model.files import atomic_write_text
from hanclip_model.half_weights import FLOAT32, GRAPH_WEIGHT_FORMS
from hanclip_model.heads import l2_normalize
from hanclip_model.onnx_runtime import inference_session

FAST_IMAGE_FORMAT = 1
CONFIG_NAME = "fast_image.json"
ENCODER_NAME = "encoder.onnx"
# Written by earlier exports only: ENCODER_NAME after ONNX Runtime's optimisations.
OPTIMIZED_ENCODER_NAME = "encoder-optimized.onnx"
QUANTIZED_ENCODER_NAME = "encoder-int8.onnx"
INPUT_NAME = "pixels"
OUTPUT_NAME = "image_embedding"
DEFAULT_BATCH_SIZE = 32

# torchvision's InterpolationMode values, as Pillow's resampling filters.
RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
RESIZE_MODES = ("shortest", "squash")


@dataclass(frozen=True)
class PreprocessConfig:
    """open_clip's image transform, as plain numbers (see the module docstring)."""

    resize_mode: str  # "shortest": shortest side to resize_size[0]; "squash": to (h, w)
    resize_size: list[int]  # [short side] for "shortest", [h, w] for "squash"
    interpolation: str  # a key of RESAMPLING
    crop_size: list[int]  # [h, w]
    mean: list[float]
    std: list[float]
    mode: str = "RGB"

    def check(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise BundleError(f"unsupported resize mode {self.resize_mode!r}")
        if self.interpolation not in RESAMPLING:
            raise BundleError(f"unsupported interpolation {self.interpolation!r}")
        if len(self.resize_size) != (1 if self.resize_mode == "shortest" else 2):
            raise BundleError(f"resize size {self.resize_size} does not fit {self.resize_mode}")
        if len(self.crop_size) != 2 or len(self.mean) != 3 or len(self.std) != 3:
            raise BundleError("crop size, mean or std has the wrong length")
        if self.mode != "RGB":
            raise BundleError(f"unsupported colour mode {self.mode!r}")


@dataclass(frozen=True)
class FastImageConfig:
    """`fast_image.json`."""

    format: int
    spec: str
    fingerprint: str
    dim: int
    preprocess: PreprocessConfig
    opset: int
    # Measured by the export's verification on its fixed images (None: not verified yet):
    min_cosine: float | None = None  # ONNX Runtime + our preprocessing vs open_clip, worst
    max_pixel_diff: float | None = None  # our pixels vs open_clip's transform, max abs
    # The int8 graph (`encoder-int8.onnx`), kept only when its worst cosine against the fp32
    # graph on the verification images reached `export.MIN_INT8_COSINE`; None: no int8 graph.
    int8_cosine: float | None = None
    # How `encoder.onnx` stores its large weights (`half_weights.GRAPH_WEIGHT_FORMS`): float16
    # only when every verification image stayed within `export.MIN_FLOAT16_COSINE` of the
    # float32 graph, the worst cosine of that trial recorded (None: not tried, as in exports
    # made before). It computes in float32 either way.
    graph_weights: str = FLOAT32
    float16_cosine: float | None = None

    @classmethod
    def read(cls, directory: Path) -> FastImageConfig:
        path = Path(directory) / CONFIG_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["preprocess"] = PreprocessConfig(**data["preprocess"])
            config = cls(**data)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as exc:
            raise BundleError(f"cannot read fast image encoder {path}: {exc}") from None
        if config.format != FAST_IMAGE_FORMAT:
            raise BundleError(f"{path}: unsupported format {config.format!r}")
        if config.graph_weights not in GRAPH_WEIGHT_FORMS:
            raise BundleError(f"{path}: unknown graph weights {config.graph_weights!r}")
        config.preprocess.check()
        return config

    def write(self, directory: Path) -> None:
        text = json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"
        atomic_write_text(Path(directory) / CONFIG_NAME, text)


def preprocess_image(image: Image.Image, config: PreprocessConfig) -> np.ndarray:
    """One image as the model's input, float32 [3, H, W], as open_clip's transform makes it."""
    image = _resized(image, config)
    image = _center_cropped(image, config.crop_size)
    if image.mode != config.mode:
        image = image.convert(config.mode)
    pixels = np.asarray(image, dtype=np.uint8).astype(np.float32) / np.float32(255)
    pixels = pixels.transpose(2, 0, 1)
    mean = np.asarray(config.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(config.std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((pixels - mean) / std, dtype=np.float32)


def preprocess_images(images: Sequence[Image.Image], config: PreprocessConfig) -> np.ndarray:
    """[N, 3, H, W] float32."""
    h, w = config.crop_size
    if not images:
        return np.zeros((0, 3, h, w), dtype=np.float32)
    return np.stack([preprocess_image(image, config) for image in images])


def _resized(image: Image.Image, config: PreprocessConfig) -> Image.Image:
    """torchvision's `resize` of a PIL image: the new size as it computes it, Pillow's filter."""
    width, height = image.size
    if config.resize_mode == "squash":
        new_h, new_w = config.resize_size
    else:
        (requested,) = config.resize_size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = requested, int(requested * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_w, new_h) == (width, height):
        return image
    return image.resize((new_w, new_h), RESAMPLING[config.interpolation])


def _center_cropped(image: Image.Image, crop_size: list[int]) -> Image.Image:
    """torchvision's `center_crop`; where the image is smaller it is padded with zeros around
    it (Pillow fills the part of a crop box outside the image with zeros)."""
    crop_h, crop_w = crop_size
    width, height = image.size
    if (width, height) == (crop_w, crop_h):
        return image
    left = _crop_start(width, crop_w)
    top = _crop_start(height, crop_h)
    return image.crop((left, top, left + crop_w, top + crop_h))


def _crop_start(size: int, crop: int) -> int:
    if crop > size:
        return -((crop - size) // 2)
    return int(round((size - crop) / 2.0))


class FastImageEncoder:
    """Image embeddings from an export: numpy, Pillow and onnxruntime only."""

    def __init__(self, config: FastImageConfig, session: Any) -> None:
        self.config = config
        self._session = session

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        optimized: bool = True,
        quantized: bool = False,
        device: str = "cpu",
    ) -> FastImageEncoder:
        """Open an export made by `export_image_encoder`; intra-op threads: `usable_cores()`.

        `optimized`: open the graph ONNX Runtime optimised at export for the CPU, when there
        is one (exports made before one graph was stored). `quantized`: the int8 graph
        (`export.quantize_image_encoder`), which must be there and must have held its
        accuracy. `device` "cuda[:N]": ONNX Runtime's CUDA provider (the plain graph: the
        optimised one was fused for the CPU)."""
        directory = Path(directory)
        config = FastImageConfig.read(directory)
        if quantized:
            if config.int8_cosine is None or not (directory / QUANTIZED_ENCODER_NAME).is_file():
                raise BundleError(f"{directory} has no int8 image encoder that held its accuracy")
            preoptimized, path = False, directory / QUANTIZED_ENCODER_NAME
        else:
            preoptimized = optimized and not is_cuda(device)
            preoptimized = preoptimized and (directory / OPTIMIZED_ENCODER_NAME).is_file()
            path = directory / (OPTIMIZED_ENCODER_NAME if preoptimized else ENCODER_NAME)
        try:
            session = inference_session(path, preoptimized=preoptimized, device=device)
        except Exception as exc:  # onnxruntime raises its own error types for a bad file
            raise BundleError(f"cannot load fast image encoder {directory}: {exc}") from None
        _check_session(session, config, directory)
        return cls(config, session)

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def image_size(self) -> int:
        return int(min(self.config.preprocess.crop_size))

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings [N, dim], float32, of preprocessed pixels [N, 3, H, W]."""
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        feeds = {INPUT_NAME: np.ascontiguousarray(pixels, dtype=np.float32)}
        (vectors,) = self._session.run([OUTPUT_NAME], feeds)
        return l2_normalize(np.asarray(vectors, dtype=np.float32))

    def embed(
        self, images: Sequence[Image.Image], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> np.ndarray:
        """L2-normalised image embeddings [N, dim], float32, of PIL images (any mode)."""
        chunks = [
            self.embed_pixels(preprocess_images(images[i : i + batch_size], self.config.preprocess))
            for i in range(0, len(images), batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks, axis=0)


def _check_session(session: Any, config: FastImageConfig, directory: Path) -> None:
    """The graph must take the pixels the config makes and give vectors of its size."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    h, w = config.preprocess.crop_size
    if (
        [i.name for i in inputs] != [INPUT_NAME]
        or [o.name for o in outputs] != [OUTPUT_NAME]
        or list(inputs[0].shape[1:]) != [3, h, w]
        or outputs[0].shape[-1] != config.dim
    ):
        raise BundleError(
            f"fast image encoder {directory}: the graph does not match {CONFIG_NAME} "
            f"(input {inputs[0].shape if inputs else None}, "
            f"output {outputs[0].shape if outputs else None})"
        )
