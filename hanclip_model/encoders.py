"""The frozen encoders: open_clip for images (and English text), sentence-transformers for text,
or the open_clip model's own text tower where the bundle names one (`open_clip-text:SPEC`).

All load on first use, run in eval mode under `torch.inference_mode` (on CUDA also under
autocast to float16), and return float32, L2-normalised numpy arrays. torch is imported only
when an encoder actually loads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from hanclip_model.bundle import clip_text_source
from hanclip_model.device import is_cuda, pick_device, require_torch
from hanclip_model.errors import BundleError
from hanclip_model.heads import l2_normalize
from hanclip_model.hub import fetching
from hanclip_model.sources import is_local, require_local_dir
from hanclip_model.texts import nfc_texts

if TYPE_CHECKING:
    import torch
    from PIL import Image

# The language an open_clip text tower that takes one (NLLB's tokenizer: a language token
# before the text) is told the queries are in: hanclip's queries are Korean.
QUERY_LANGUAGE = "kor_Hang"

# Rows per forward pass, (CPU, CUDA): a GPU needs large batches to be kept busy; on a CPU
# larger batches gain little and only cost memory.
_BATCH_SIZES = {"image": (32, 256), "clip_text": (256, 1024), "text": (64, 512)}


def default_batch_size(kind: str, device: str) -> int:
    """Rows per forward pass of an encoder on `device`; kind: image, clip_text or text."""
    cpu, cuda = _BATCH_SIZES[kind]
    return cuda if is_cuda(device) else cpu


def inference_context(device: str) -> ExitStack:
    """`torch.inference_mode`, and on CUDA autocast to float16.

    float16 rather than bfloat16: three more mantissa bits, and OpenAI trained CLIP in mixed
    float16, so its activations fit float16's range. Callers cast the outputs to float32.
    """
    import torch

    stack = ExitStack()
    stack.enter_context(torch.inference_mode())
    if is_cuda(device):
        stack.enter_context(torch.autocast("cuda", dtype=torch.float16))
    return stack


def parse_image_model(spec: str) -> tuple[str, str | None]:
    """`ViT-B-32:openai` -> ("ViT-B-32", "openai"); schema specs pass through whole."""
    if spec.startswith(("hf-hub:", "local-dir:")):
        return spec, None
    name, _, pretrained = spec.partition(":")
    return name, pretrained or None


@dataclass(frozen=True)
class _OpenClipParts:
    model: Any
    preprocess: Any
    tokenizer: Any
    device: str


def load_open_clip(spec: str, device: str, what: str) -> _OpenClipParts:
    """An open_clip model, its image transform and its tokenizer, in eval mode on `device`;
    `what` ("image model", "text model") names it in the one-line `BundleError`."""
    import open_clip

    name, pretrained = parse_image_model(spec)
    # A registry tag (`openai`) or `hf-hub:` is downloaded; a file or `local-dir:` is not.
    remote = spec.startswith("hf-hub:") or (
        pretrained is not None and not os.path.isfile(pretrained)
    )
    with fetching(what, spec, remote=remote):
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=device
            )
            tokenizer = open_clip.get_tokenizer(name)
        except (RuntimeError, ValueError, OSError, KeyError) as exc:
            raise BundleError(f"cannot load {what} {spec!r}: {first_line(exc)}") from None
    model.eval()
    model.requires_grad_(False)
    return _OpenClipParts(model, preprocess, tokenizer, device)


def open_clip_embed_dim(model: Any) -> int:
    """The size of an open_clip model's embeddings: its image tower's `output_dim`, else (a
    timm image tower has none, or it was dropped) its text tower's or text projection's."""
    for tower in (getattr(model, "visual", None), getattr(model, "text", None)):
        dim = getattr(tower, "output_dim", None)
        if dim:
            return int(dim)
    projection = model.text_projection
    return int(getattr(projection, "out_features", None) or projection.shape[-1])


class ClipEncoder:
    """An open_clip model: `embed_images` for photos, `embed_texts` for English captions."""

    def __init__(self, spec: str, device: str | None = None) -> None:
        self.spec = spec
        self._requested_device = device

    @property
    def loaded(self) -> bool:
        return "_clip" in self.__dict__

    @cached_property
    def _clip(self) -> _OpenClipParts:
        require_torch(f"image model {self.spec!r} without an ONNX export")
        return load_open_clip(self.spec, pick_device(self._requested_device), "image model")

    @property
    def device(self) -> str:
        return self._clip.device

    @property
    def model(self) -> Any:
        """The open_clip model itself, in eval mode (loads it)."""
        return self._clip.model

    @property
    def preprocess(self) -> Callable[[Image.Image], Any]:
        """open_clip's image transform: an RGB image to the model's input tensor."""
        return self._clip.preprocess

    @property
    def image_size(self) -> int:
        size = self._clip.model.visual.image_size
        return int(min(size) if isinstance(size, (tuple, list)) else size)

    @property
    def dim(self) -> int:
        return open_clip_embed_dim(self._clip.model)

    def embed_images(
        self, images: Sequence[Image.Image], batch_size: int | None = None
    ) -> np.ndarray:
        """Raw CLIP image embeddings [N, dim] of RGB PIL images."""
        import torch

        clip = self._clip
        batch_size = batch_size or default_batch_size("image", clip.device)
        out = []
        for start in range(0, len(images), batch_size):
            batch = [clip.preprocess(im) for im in images[start : start + batch_size]]
            out.append(self._encode_pixels(torch.stack(batch)))
        return stack_normalized(out, self.dim)

    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Raw CLIP image embeddings [N, dim] of preprocessed pixels, a [N, 3, H, W] tensor as
        `preprocess` makes them; pinned host memory goes to the GPU without blocking."""
        return stack_normalized([self._encode_pixels(pixels)], self.dim)

    def _encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        clip = self._clip
        with inference_context(clip.device):
            features = clip.model.encode_image(pixels.to(clip.device, non_blocking=True))
            return features.float().cpu().numpy()

    def embed_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """CLIP text-tower embeddings [N, dim] (English captions for the e^I bank)."""
        clip = self._clip
        batch_size = batch_size or default_batch_size("clip_text", clip.device)
        out = []
        with inference_context(clip.device):
            for start in range(0, len(texts), batch_size):
                tokens = clip.tokenizer(list(texts[start : start + batch_size])).to(clip.device)
                out.append(clip.model.encode_text(tokens).float().cpu().numpy())
        return stack_normalized(out, self.dim)


class TextEncoder:
    """A bundle's text side: a sentence-transformers model (mean-pooled, L2-normalised sentence
    embeddings), or the text tower of an open_clip model (`open_clip-text:SPEC`)."""

    def __init__(self, spec: str, device: str | None = None) -> None:
        self.spec = spec
        self._requested_device = device

    @property
    def loaded(self) -> bool:
        return "_tower" in self.__dict__

    @cached_property
    def _tower(self) -> _SentenceTower | _ClipTextTower:
        source = clip_text_source(self.spec)
        if source is None:
            require_local_dir(self.spec, "text model")
        require_torch(f"text model {self.spec!r} without an ONNX export")
        device = pick_device(self._requested_device)
        if source is not None:
            return _ClipTextTower.load(source, device)
        return _SentenceTower(load_sentence_transformer(self.spec, device))

    @property
    def device(self) -> str:
        return self._tower.device

    @property
    def dim(self) -> int:
        return self._tower.dim

    @property
    def open_clip_parts(self) -> tuple[Any, Any]:
        """(the open_clip model, its tokenizer, set to the query language) of an
        `open_clip-text:` tower, as queries run them (loads it): what its export reads."""
        tower = self._tower
        if not isinstance(tower, _ClipTextTower):
            raise BundleError(f"{self.spec!r} is not an open_clip text tower")
        return tower.model, tower.tokenizer

    def embed(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Sentence embeddings [N, dim] for texts in any language the model knows."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._tower.embed(nfc_texts(texts), batch_size)


@dataclass(frozen=True)
class _SentenceTower:
    model: Any  # a SentenceTransformer

    @property
    def device(self) -> str:
        return str(self.model.device)

    @property
    def dim(self) -> int:
        return sentence_embedding_dim(self.model)

    def embed(self, texts: list[str], batch_size: int | None) -> np.ndarray:
        device = self.device
        with inference_context(device):
            vectors = self.model.encode(
                texts,
                batch_size=batch_size or default_batch_size("text", device),
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return l2_normalize(vectors)


@dataclass(frozen=True)
class _ClipTextTower:
    """An open_clip model's own tokenizer and `encode_text`, its image tower dropped."""

    model: Any
    tokenizer: Any
    device: str
    dim: int

    @classmethod
    def load(cls, spec: str, device: str) -> _ClipTextTower:
        quiet_transformers()
        parts = load_open_clip(spec, device, "text model")
        dim = open_clip_embed_dim(parts.model)
        # A query never needs the image tower: its memory is given back.
        parts.model.visual = None
        tokenizer = parts.tokenizer
        # NLLB's tokenizer puts a language token before the text: say it is Korean (its
        # `src_lang` setter rebuilds that prefix; open_clip's `set_language` does not, here).
        inner = getattr(tokenizer, "tokenizer", None)
        if getattr(inner, "src_lang", None) is not None:
            inner.src_lang = QUERY_LANGUAGE
        return cls(parts.model, tokenizer, device, dim)

    def embed(self, texts: list[str], batch_size: int | None) -> np.ndarray:
        batch_size = batch_size or default_batch_size("clip_text", self.device)
        out = []
        with inference_context(self.device):
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[start : start + batch_size]).to(self.device)
                out.append(self.model.encode_text(tokens).float().cpu().numpy())
        return stack_normalized(out, self.dim)


def load_sentence_transformer(spec: str, device: str) -> Any:
    """A sentence-transformers model (a folder, or a hub id fetched through `fetching`), in
    eval mode; a `BundleError` when it cannot be loaded."""
    if clip_text_source(spec) is not None:
        raise BundleError(f"{spec!r} is an open_clip text tower, not a sentence-transformers model")
    from sentence_transformers import SentenceTransformer

    quiet_transformers()
    with fetching("text model", spec, remote=not is_local(spec)):
        try:
            model = SentenceTransformer(spec, device=device)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise BundleError(f"cannot load text model {spec!r}: {first_line(exc)}") from None
    model.eval()
    return model


def sentence_embedding_dim(model: Any) -> int:
    """A SentenceTransformer's output size (sentence-transformers 6 renamed the method)."""
    get_dim = getattr(model, "get_embedding_dimension", None)
    return int((get_dim or model.get_sentence_embedding_dimension)())


def quiet_transformers() -> None:
    """Keep per-file loading bars and warnings out of our progress display and --json output."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def stack_normalized(chunks: list[np.ndarray], dim: int) -> np.ndarray:
    if not chunks:
        return np.zeros((0, dim), dtype=np.float32)
    return l2_normalize(np.concatenate(chunks, axis=0))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
