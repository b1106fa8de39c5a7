"""A loaded bundle: the two frozen encoders, the optional heads, and the four embedding calls."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hanclip_model.bundle import BundleSpec, Calibration, resolve_bundle
from hanclip_model.cache import cache_root
from hanclip_model.encoders import ClipEncoder, TextEncoder
from hanclip_model.errors import BundleError
from hanclip_model.heads import Heads, l2_normalize, load_heads

if TYPE_CHECKING:
    from PIL import Image

    from hanclip_model.fast_text.runtime import FastTextEncoder


class HanclipModel:
    """Image and text vectors in one space. Each part loads on first use.

    `project_*` needs only the heads file, `embed_texts` only the text encoder, and
    `embed_images` only the image encoder, so a text search never loads the image model.
    """

    def __init__(
        self,
        spec: BundleSpec,
        device: str | None = None,
        *,
        fast_text: bool = True,
        few_texts: bool = False,
    ):
        self.spec = spec
        self.image_encoder = ClipEncoder(spec.image_model, device=device)
        self.text_encoder = TextEncoder(spec.text_model, device=device)
        # Texts go through an ONNX export of the text encoder (no torch import; see
        # benchmarks/speed.py for the cold-start figures) unless disabled or the
        # architecture cannot be exported exactly.
        self.fast_text = fast_text and os.environ.get("HANCLIP_FAST_TEXT", "1") != "0"
        self.fast_text_error: str | None = None
        # A process that embeds a few texts and exits (a `search`): open the ONNX text
        # encoder without pre-packing its weights (ready sooner, each text slower).
        self.few_texts = few_texts

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def fingerprint(self) -> str:
        return self.spec.fingerprint

    @property
    def calibration(self) -> Calibration | None:
        return self.spec.calibration

    def match_probability(self, scores: np.ndarray) -> np.ndarray | None:
        """Match probabilities of search scores (cosines); None when the bundle carries no
        calibration (the built-in ones, tiny training runs): then there are scores only."""
        calibration = self.spec.calibration
        return None if calibration is None else calibration.probability(scores)

    @cached_property
    def heads(self) -> Heads | None:
        return load_heads(self.spec.heads_path) if self.spec.heads_path is not None else None

    def project_images(self, raw: np.ndarray) -> np.ndarray:
        """Raw CLIP image embeddings [N, d_image] -> search vectors [N, D] (f1, or identity)."""
        heads = self.heads
        raw = np.asarray(raw, dtype=np.float32)
        if heads is None:
            return l2_normalize(raw)
        self._check_input_dim("image", raw.shape[-1])
        return heads.image(raw)

    def project_texts(self, raw: np.ndarray) -> np.ndarray:
        """Raw text-encoder embeddings [N, d_text] -> search vectors [N, D] (f2, or identity)."""
        heads = self.heads
        raw = np.asarray(raw, dtype=np.float32)
        if heads is None:
            return l2_normalize(raw)
        self._check_input_dim("text", raw.shape[-1])
        return heads.text(raw)

    def raw_image_embeddings(
        self, images: Sequence[str | Path | Image.Image], batch_size: int = 32
    ) -> np.ndarray:
        """CLIP embeddings before the head: what the library stores."""
        from hanclip_model.images import as_rgb_images

        loaded = as_rgb_images(images, self.image_encoder.image_size)
        raw = self.image_encoder.embed_images(loaded, batch_size=batch_size)
        self._check_input_dim("image", raw.shape[1])
        return raw

    @cached_property
    def _fast_text_encoder(self) -> FastTextEncoder | None:
        """The ONNX export of the text encoder, made on first use; None when this model
        cannot be exported exactly (the reason is kept in `fast_text_error`)."""
        from hanclip_model.fast_text.cache import ensure_fast_text
        from hanclip_model.fast_text.runtime import FastTextEncoder

        try:
            export = ensure_fast_text(self.spec.text_model, cache_root())
            return FastTextEncoder.load(export, prepack=not self.few_texts)
        except BundleError as exc:
            self.fast_text_error = str(exc)
            return None

    def _text_backend(self) -> TextEncoder | FastTextEncoder:
        fast = self._fast_text_encoder if self.fast_text else None
        if fast is None:
            self.fast_text = False
            return self.text_encoder
        return fast

    def raw_text_embeddings(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        raw = self._text_backend().embed(texts, batch_size=batch_size)
        self._check_input_dim("text", raw.shape[1])
        return raw

    def embed_images(
        self, images: Sequence[str | Path | Image.Image], batch_size: int = 32
    ) -> np.ndarray:
        return self.project_images(self.raw_image_embeddings(images, batch_size))

    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.project_texts(self.raw_text_embeddings(texts, batch_size))

    def check_encoders(self) -> None:
        """Load both encoders and check that their dimensions fit the heads (or, without
        heads, each other): a bundle that cannot work fails here, before any indexing.

        The text side is the fast (ONNX) export, made now if missing: torch is loaded for
        the image model at this point anyway, and later searches start without it."""
        image_dim, text_dim = self.image_encoder.dim, self._text_backend().dim
        self._check_input_dim("image", image_dim)
        self._check_input_dim("text", text_dim)
        if self.heads is None and image_dim != text_dim:
            raise BundleError(
                f"bundle {self.name!r} has no heads, but {self.spec.image_model!r} gives "
                f"{image_dim}-d vectors and {self.spec.text_model!r} {text_dim}-d: "
                "they cannot be compared"
            )

    def _check_input_dim(self, side: str, got: int) -> None:
        heads = self.heads
        if heads is None:
            return
        head = heads.image if side == "image" else heads.text
        if head.in_dim != got:
            model = self.spec.image_model if side == "image" else self.spec.text_model
            raise BundleError(
                f"bundle {self.name!r}: its heads expect {head.in_dim}-d {side} embeddings "
                f"but {model!r} gives {got}-d"
            )


def load_bundle(
    path_or_name: str | Path, device: str | None = None, *, few_texts: bool = False
) -> HanclipModel:
    """A bundle directory or a built-in name (`mclip`); nothing heavy loads until used.
    `few_texts`: see `HanclipModel`."""
    spec = resolve_bundle(path_or_name)
    model = HanclipModel(spec, device=device, few_texts=few_texts)
    model.heads  # noqa: B018 - read the heads file now so a broken bundle fails early
    return model
