"""Baselines behind the same interface as a bundle, so `bench` can compare them in one run.

An embedder has a `name` and turns Korean texts and photos into float32, L2-normalised
vectors of one space: `embed_texts(texts) -> [N, D]`, `embed_images(images) -> [N, D]`.

* `clip-translate`: Korean -> English with NLLB-200, then CLIP's own text tower.
* `koclip`: KoCLIP, a Korean RoBERTa and a CLIP ViT-B/32 trained together (transformers'
  `VisionTextDualEncoderModel`).
* everything else (`mclip`, bundle directories) goes to `load_bundle`.

Models load on first use, run in eval mode under `torch.inference_mode`, and torch or
transformers are imported only then.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from hanclip_model import settings
from hanclip_model.bundle import BUILTIN_BUNDLES
from hanclip_model.device import pick_device
from hanclip_model.encoders import ClipEncoder, first_line, quiet_transformers, stack_normalized
from hanclip_model.errors import BundleError, UnknownModel
from hanclip_model.images import as_rgb_images
from hanclip_model.model import load_bundle
from hanclip_model.sources import require_local_dir
from hanclip_model.texts import nfc_texts

CLIP_SPEC = "ViT-B-32:openai"
NLLB_MODEL_ID = "facebook/nllb-200-distilled-600M"
KOCLIP_MODEL_ID = "koclip/koclip-base-pt"
FLAX_WEIGHTS = "flax_model.msgpack"
SOURCE_LANG = "kor_Hang"
TARGET_LANG = "eng_Latn"
# KoCLIP's RoBERTa reads at most 512 tokens; captions and queries are far shorter.
KOCLIP_MAX_TOKENS = 128
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, ImportError)

ImageInput = str | Path | Image.Image


@dataclass(frozen=True)
class _TranslatorParts:
    model: Any
    tokenizer: Any
    target_id: int
    device: str


@dataclass(frozen=True)
class _KoclipParts:
    model: Any
    tokenizer: Any
    processor: Any
    device: str


class Embedder(Protocol):
    """What `bench` needs from a model: `HanclipModel` and the baselines all provide it."""

    @property
    def name(self) -> str: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_images(self, images: Sequence[ImageInput]) -> np.ndarray: ...


@dataclass(frozen=True)
class BaselineSources:
    """Where the baselines load from: hub ids for users, local directories for tests.

    `from_env()` lets a user with local copies point at them: `settings.CLIP_MODEL`,
    `settings.TRANSLATOR_MODEL`, `settings.KOCLIP_MODEL`.
    """

    clip: str = CLIP_SPEC
    translator: str = NLLB_MODEL_ID
    koclip: str = KOCLIP_MODEL_ID

    @classmethod
    def from_env(cls) -> BaselineSources:
        return cls(
            clip=settings.CLIP_MODEL.get() or CLIP_SPEC,
            translator=settings.TRANSLATOR_MODEL.get() or NLLB_MODEL_ID,
            koclip=settings.KOCLIP_MODEL.get() or KOCLIP_MODEL_ID,
        )


def fixed_new_tokens(source_tokens: int, length_ratio: float, max_new_tokens: int) -> int:
    """Output length when it is fixed rather than left to EOS: `length_ratio` × the source
    length in tokens (language code and </s> included, as in the output), rounded up, at
    least 1 and at most `max_new_tokens`."""
    return max(1, min(max_new_tokens, math.ceil(length_ratio * source_tokens)))


class Translator:
    """Korean -> English with an NLLB-200 model: greedy, batched, loaded on first use.

    `length_ratio` is for timing random weights, which never decide to stop: every batch then
    generates exactly `fixed_new_tokens(longest source, length_ratio, max_new_tokens)` tokens.
    Left at None (real weights), generation stops at </s> or after `max_new_tokens`.
    """

    def __init__(
        self,
        source: str = NLLB_MODEL_ID,
        device: str | None = None,
        *,
        max_new_tokens: int = 64,
        batch_size: int = 32,
        length_ratio: float | None = None,
    ) -> None:
        self.source = source
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.length_ratio = length_ratio
        self._requested_device = device

    @classmethod
    def from_model(
        cls, model: Any, tokenizer: Any, device: str | None = None, **options: Any
    ) -> Translator:
        """A translator around an already built model (e.g. `random_nllb_600m()`)."""
        translator = cls(source=type(model).__name__, device=device, **options)
        translator.__dict__["_parts"] = translator._install(model, tokenizer)
        return translator

    @cached_property
    def _parts(self) -> _TranslatorParts:
        quiet_transformers()
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        require_local_dir(self.source, "translation model")
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                self.source, src_lang=SOURCE_LANG, tgt_lang=TARGET_LANG
            )
            model = AutoModelForSeq2SeqLM.from_pretrained(self.source)
        except _LOAD_ERRORS as exc:
            raise BundleError(
                f"cannot load translation model {self.source!r}: {first_line(exc)}"
            ) from None
        return self._install(model, tokenizer)

    def _install(self, model: Any, tokenizer: Any) -> _TranslatorParts:
        target_id = tokenizer.convert_tokens_to_ids(TARGET_LANG)
        if target_id is None or target_id == tokenizer.unk_token_id:
            raise BundleError(f"tokenizer of {self.source!r} has no language code {TARGET_LANG}")
        device = pick_device(self._requested_device)
        model.to(device)
        model.eval()
        model.requires_grad_(False)
        return _TranslatorParts(model, tokenizer, target_id, device)

    @property
    def device(self) -> str:
        return self._parts.device

    def translate(self, texts: Sequence[str]) -> list[str]:
        """English translations of Korean `texts`, in order."""
        import torch

        parts = self._parts
        out: list[str] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start : start + self.batch_size])
                inputs = parts.tokenizer(batch, return_tensors="pt", padding=True)
                inputs = inputs.to(parts.device)
                lengths = {"max_new_tokens": self.max_new_tokens}
                if self.length_ratio is not None:
                    fixed = fixed_new_tokens(
                        inputs["input_ids"].shape[1], self.length_ratio, self.max_new_tokens
                    )
                    lengths = {"max_new_tokens": fixed, "min_new_tokens": fixed}
                generated = parts.model.generate(
                    **inputs,
                    forced_bos_token_id=parts.target_id,
                    num_beams=1,
                    do_sample=False,
                    **lengths,
                )
                decoded = parts.tokenizer.batch_decode(generated, skip_special_tokens=True)
                out.extend(text.strip() for text in decoded)
        return out


class ClipTranslateEmbedder:
    """CLIP for photos; Korean text translated to English, then CLIP's text tower."""

    name = "clip-translate"

    def __init__(self, clip: ClipEncoder, translator: Translator) -> None:
        self.clip = clip
        self.translator = translator

    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        english = self.translator.translate(nfc_texts(texts))
        return self.clip.embed_texts(english, batch_size=batch_size)

    def embed_images(self, images: Sequence[ImageInput], batch_size: int = 32) -> np.ndarray:
        loaded = as_rgb_images(images, self.clip.image_size)
        return self.clip.embed_images(loaded, batch_size=batch_size)

    def query_vector(self, text: str) -> np.ndarray:
        return self.embed_texts([text])[0]


class KoclipEmbedder:
    """KoCLIP through transformers' `VisionTextDualEncoderModel` (projected, L2-normalised
    text and image features). `source` is a hub id or a local directory in the same layout."""

    name = "koclip"

    def __init__(self, source: str = KOCLIP_MODEL_ID, device: str | None = None) -> None:
        self.source = source
        self._requested_device = device

    @cached_property
    def _parts(self) -> _KoclipParts:
        quiet_transformers()
        from transformers import AutoTokenizer, CLIPImageProcessor, VisionTextDualEncoderModel

        require_local_dir(self.source, "KoCLIP model")
        device = pick_device(self._requested_device)
        try:
            # koclip-base-pt ships PyTorch weights (pytorch_model.bin), which transformers
            # reads with weights_only=True; the Flax-only koclip-base cannot be read here.
            model = VisionTextDualEncoderModel.from_pretrained(self.source)
            tokenizer = AutoTokenizer.from_pretrained(self.source)
            processor = CLIPImageProcessor.from_pretrained(self.source)
        except _LOAD_ERRORS as exc:
            raise BundleError(
                f"cannot load KoCLIP {self.source!r}: {first_line(exc)}{_flax_hint(self.source)}"
            ) from None
        model.to(device)
        model.eval()
        model.requires_grad_(False)
        return _KoclipParts(model, tokenizer, processor, device)

    @property
    def device(self) -> str:
        return self._parts.device

    @property
    def dim(self) -> int:
        return int(self._parts.model.config.projection_dim)

    @property
    def image_size(self) -> int:
        return int(self._parts.model.config.vision_config.image_size)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        import torch

        parts = self._parts
        normalised = nfc_texts(texts)
        out = []
        with torch.inference_mode():
            for start in range(0, len(normalised), batch_size):
                tokens = parts.tokenizer(
                    normalised[start : start + batch_size],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=KOCLIP_MAX_TOKENS,
                )
                features = parts.model.get_text_features(
                    input_ids=tokens["input_ids"].to(parts.device),
                    attention_mask=tokens["attention_mask"].to(parts.device),
                )
                out.append(_as_array(features))
        return stack_normalized(out, self.dim)

    def embed_images(self, images: Sequence[ImageInput], batch_size: int = 32) -> np.ndarray:
        import torch

        parts = self._parts
        loaded = as_rgb_images(images, self.image_size)
        out = []
        with torch.inference_mode():
            for start in range(0, len(loaded), batch_size):
                pixels = parts.processor(
                    images=loaded[start : start + batch_size], return_tensors="pt"
                )["pixel_values"]
                features = parts.model.get_image_features(pixel_values=pixels.to(parts.device))
                out.append(_as_array(features))
        return stack_normalized(out, self.dim)

    def query_vector(self, text: str) -> np.ndarray:
        return self.embed_texts([text])[0]


BASELINE_NAMES = (ClipTranslateEmbedder.name, KoclipEmbedder.name)


def load_embedder(
    name_or_path: str, device: str | None = None, sources: BaselineSources | None = None
) -> Embedder:
    """A baseline by name (`clip-translate`, `koclip`), else a bundle (`mclip`, a directory).

    Nothing heavy loads until the first embedding call.
    """
    sources = sources or BaselineSources.from_env()
    if name_or_path == ClipTranslateEmbedder.name:
        clip = ClipEncoder(sources.clip, device=device)
        return ClipTranslateEmbedder(clip, Translator(sources.translator, device=device))
    if name_or_path == KoclipEmbedder.name:
        return KoclipEmbedder(sources.koclip, device=device)
    try:
        return load_bundle(name_or_path, device=device)
    except UnknownModel:
        raise UnknownModel(
            f"unknown model {name_or_path!r}: not a bundle directory nor one of "
            f"{', '.join([*BUILTIN_BUNDLES, *BASELINE_NAMES])}"
        ) from None


def _flax_hint(source: str) -> str:
    if not Path(os.path.expanduser(source), FLAX_WEIGHTS).is_file():
        return ""
    return f" ({FLAX_WEIGHTS} holds Flax weights, not read here: use {KOCLIP_MODEL_ID})"


def _as_array(features: Any) -> np.ndarray:
    # transformers 5 returns a model output holding the projection in `pooler_output`;
    # earlier releases return the projected tensor itself.
    tensor = getattr(features, "pooler_output", features)
    return tensor.float().cpu().numpy()
