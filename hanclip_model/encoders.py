"""The frozen encoders: open_clip for images (and English text), sentence-transformers for text.

Both load on first use, run in eval mode under `torch.inference_mode`, and return float32,
L2-normalised numpy arrays. torch is imported only when an encoder actually loads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from hanclip_model.device import pick_device
from hanclip_model.errors import BundleError
from hanclip_model.heads import l2_normalize
from hanclip_model.sources import require_local_dir
from hanclip_model.texts import nfc_texts

if TYPE_CHECKING:
    from PIL import Image


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
        import open_clip

        name, pretrained = parse_image_model(self.spec)
        device = pick_device(self._requested_device)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=device
            )
            tokenizer = open_clip.get_tokenizer(name)
        except (RuntimeError, ValueError, OSError, KeyError) as exc:
            raise BundleError(f"cannot load image model {self.spec!r}: {first_line(exc)}") from None
        model.eval()
        model.requires_grad_(False)
        return _OpenClipParts(model, preprocess, tokenizer, device)

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
        return int(self._clip.model.visual.output_dim)

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Raw CLIP image embeddings [N, dim] of RGB PIL images."""
        import torch

        clip = self._clip
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = [clip.preprocess(im) for im in images[start : start + batch_size]]
                pixels = torch.stack(batch).to(clip.device)
                out.append(clip.model.encode_image(pixels).float().cpu().numpy())
        return stack_normalized(out, self.dim)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """CLIP text-tower embeddings [N, dim] (English captions for the e^I bank)."""
        import torch

        clip = self._clip
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = clip.tokenizer(list(texts[start : start + batch_size])).to(clip.device)
                out.append(clip.model.encode_text(tokens).float().cpu().numpy())
        return stack_normalized(out, self.dim)


class TextEncoder:
    """A sentence-transformers model (mean-pooled, L2-normalised sentence embeddings)."""

    def __init__(self, spec: str, device: str | None = None) -> None:
        self.spec = spec
        self._requested_device = device

    @property
    def loaded(self) -> bool:
        return "_model" in self.__dict__

    @cached_property
    def _model(self) -> Any:
        require_local_dir(self.spec, "text model")
        quiet_transformers()
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(self.spec, device=pick_device(self._requested_device))
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise BundleError(f"cannot load text model {self.spec!r}: {first_line(exc)}") from None
        model.eval()
        return model

    @property
    def device(self) -> str:
        return str(self._model.device)

    @property
    def dim(self) -> int:
        return sentence_embedding_dim(self._model)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Sentence embeddings [N, dim] for texts in any language the model knows."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            nfc_texts(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return l2_normalize(vectors)


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
