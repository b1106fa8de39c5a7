"""A loaded bundle: the two frozen encoders, the optional heads, and the four embedding calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hanclip_model import settings
from hanclip_model.bundle import BundleSpec, Calibration, clip_text_source, resolve_bundle
from hanclip_model.cache import cache_root
from hanclip_model.device import (
    is_cuda,
    nvidia_gpu_present,
    onnx_cuda_available,
    requested_device,
    require_torch,
    torch_available,
)
from hanclip_model.encoders import ClipEncoder, TextEncoder
from hanclip_model.errors import BundleError
from hanclip_model.heads import Heads, l2_normalize, load_heads

if TYPE_CHECKING:
    from PIL import Image

    from hanclip_model.fast_clip_text.runtime import FastClipTextConfig, FastClipTextEncoder
    from hanclip_model.fast_image.runtime import FastImageEncoder
    from hanclip_model.fast_text.runtime import FastTextConfig, FastTextEncoder


def _export_folder(
    own: Path | None,
    side: str,
    spec: str,
    cached: Callable[[str, Path], Path | None],
    ensure: Callable[[str, Path], Path],
) -> Path:
    """An encoder's ONNX export: the bundle's own (`own`), else the user cache's, exported now
    (`ensure`) where torch is installed; without torch only a cached one (`cached`) will do,
    and none is a one-line `BundleError` naming what to install."""
    if own is not None:
        return own
    if torch_available():
        return ensure(spec, cache_root())
    found = cached(spec, cache_root())
    if found is None:
        require_torch(f"{side} model {spec!r} without an ONNX export")
    return found


class HanclipModel:
    """Image and text vectors in one space. Each part loads on first use.

    `project_*` needs only the heads file, `embed_texts` only the text encoder, and
    `embed_images` only the image encoder, so a text search never loads the image model.

    Each encoder runs through ONNX Runtime (no torch) when it can: the bundle's own export
    (`hanclip export`), else a verified export in the user cache, made on first use where torch
    is installed. Otherwise through torch as before; `fast_image_error` / `fast_text_error`
    then say why. Without torch and without an export, using the encoder is a one-line
    `BundleError` naming what to install.
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
        self.device = device
        self.image_encoder = ClipEncoder(spec.image_model, device=device)
        self.text_encoder = TextEncoder(spec.text_model, device=device)
        # Texts go through an ONNX export of the text encoder (no torch import; see
        # benchmarks/speed.py for the cold-start figures) unless disabled or the
        # architecture cannot be exported exactly.
        self.fast_text = fast_text and settings.FAST_TEXT.enabled()
        self.fast_text_error: str | None = None
        # A process that embeds a few texts and exits (a `search`): open the ONNX text
        # encoder without pre-packing its weights (ready sooner, each text slower).
        self.few_texts = few_texts
        # Photos go through an ONNX export of the image tower the same way (see
        # benchmarks/index_onnx.py for start-up and photos/s against torch).
        self.fast_image = settings.FAST_IMAGE.enabled()
        self.fast_image_error: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def fingerprint(self) -> str:
        """The search space of this loaded model, read once: its heads are loaded once too
        (a server answering many requests must not hash the heads file for each)."""
        self.heads  # noqa: B018 - the heads this model uses, loaded before they are hashed
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

        backend = self._image_backend()
        loaded = as_rgb_images(images, backend.image_size)
        if backend is self.image_encoder:
            raw = self.image_encoder.embed_images(loaded, batch_size=batch_size)
        else:
            raw = backend.embed(loaded, batch_size=batch_size)
        self._check_input_dim("image", raw.shape[1])
        return raw

    @property
    def image_size(self) -> int:
        """The image encoder's input side: photos are decoded at about this size."""
        return self._image_backend().image_size

    @property
    def image_backend(self) -> str:
        """ "onnx" or "torch": what embeds photos (loads the image encoder)."""
        return "torch" if self._image_backend() is self.image_encoder else "onnx"

    @cached_property
    def _image_export_found(self) -> Path | None:
        """The folder of the image tower's ONNX export, found (or made), its config read but
        the graph not opened; None when the torch path is to be used (the reason is kept in
        `fast_image_error`). Without torch, a missing export is a `BundleError`."""
        from hanclip_model.fast_image.runtime import FastImageConfig

        if self._onnx_image_device() is None:
            return None
        try:
            export = self._image_export()
            FastImageConfig.read(export)
            return export
        except BundleError as exc:
            self._image_export_failed(exc)
            return None

    @cached_property
    def _fast_image_encoder(self) -> FastImageEncoder | None:
        """The ONNX export of the image tower opened on `_onnx_image_device()`; None when the
        torch path is to be used (see `_image_export_found`)."""
        from hanclip_model.fast_image.runtime import FastImageEncoder

        export, device = self._image_export_found, self._onnx_image_device()
        if export is None or device is None:
            return None
        try:
            return FastImageEncoder.load(export, quantized=self.spec.image_int8, device=device)
        except BundleError as exc:
            self._image_export_failed(exc)
            return None

    def _image_export_failed(self, exc: BundleError) -> None:
        """Photos go through torch, the reason kept; where they cannot, `exc` is raised."""
        if self.spec.image_int8 or not torch_available():
            raise exc
        self.fast_image_error = str(exc)

    def _onnx_image_device(self) -> str | None:
        """Where ONNX Runtime runs the image tower, or None for torch (the reason kept).

        The CPU unless a GPU is asked for or present: ONNX Runtime's CUDA provider there
        (`onnxruntime-gpu`), else torch on the GPU as before."""
        if not self.fast_image and torch_available() and not self.spec.image_int8:
            self.fast_image_error = f"turned off ({settings.FAST_IMAGE.name}=0)"
            return None
        requested = requested_device(self.device)
        if requested is None:
            requested = "cuda" if nvidia_gpu_present() else "cpu"
        if requested.partition(":")[0] == "cpu":
            return "cpu"
        if is_cuda(requested) and onnx_cuda_available():
            return requested
        if torch_available():
            self.fast_image_error = f"device {requested}: ONNX Runtime has no provider for it here"
            return None
        return "cpu"

    def _image_export(self) -> Path:
        """The verified export folder of the image tower (see `_export_folder`)."""
        from hanclip_model.fast_image.cache import cached_fast_image, ensure_fast_image

        spec = self.spec
        return _export_folder(
            spec.image_export, "image", spec.image_model, cached_fast_image, ensure_fast_image
        )

    def _image_backend(self) -> ClipEncoder | FastImageEncoder:
        fast = self._fast_image_encoder
        return self.image_encoder if fast is None else fast

    def _image_dim(self) -> int:
        """The image vectors' size, from the export's config when photos go through ONNX
        Runtime (nothing is opened), else from the torch model (which loads it)."""
        from hanclip_model.fast_image.runtime import FastImageConfig

        export = self._image_export_found
        return self.image_encoder.dim if export is None else FastImageConfig.read(export).dim

    @cached_property
    def _text_export_found(self) -> Path | None:
        """The folder of the text encoder's ONNX export: the bundle's own, else the user
        cache's, made on first use; its config read but the graph not opened. None when this
        model cannot be exported exactly (the reason is kept in `fast_text_error`). Without
        torch, a missing export is a `BundleError`.

        A sentence-transformers model's export is `fast_text`'s; an open_clip text tower's
        (`open_clip-text:`) is `fast_clip_text`'s."""
        spec = self.spec
        try:
            if self._clip_text:
                from hanclip_model.fast_clip_text import cache as clip_text_cache

                cached = clip_text_cache.cached_fast_clip_text
                ensure = clip_text_cache.ensure_fast_clip_text
            else:
                from hanclip_model.fast_text.cache import cached_fast_text as cached
                from hanclip_model.fast_text.cache import ensure_fast_text as ensure
            export = _export_folder(spec.text_export, "text", spec.text_model, cached, ensure)
            self._text_config(export)
            return export
        except BundleError as exc:
            self._text_export_failed(exc)
            return None

    @property
    def _clip_text(self) -> bool:
        """Whether the text side is an open_clip model's own text tower."""
        return clip_text_source(self.spec.text_model) is not None

    def _text_config(self, export: Path) -> FastTextConfig | FastClipTextConfig:
        """The config of the text export in `export` (`BundleError` when unreadable)."""
        if self._clip_text:
            from hanclip_model.fast_clip_text.runtime import FastClipTextConfig

            return FastClipTextConfig.read(export)
        from hanclip_model.fast_text.runtime import FastTextConfig

        return FastTextConfig.read(export)

    @cached_property
    def _fast_text_encoder(self) -> FastTextEncoder | FastClipTextEncoder | None:
        """The ONNX export of the text encoder, opened; None when texts go through torch (see
        `_text_export_found`)."""
        export = self._text_export_found
        if export is None:
            return None
        try:
            if self._clip_text:
                from hanclip_model.fast_clip_text.runtime import FastClipTextEncoder

                return FastClipTextEncoder.load(export, prepack=not self.few_texts)
            from hanclip_model.fast_text.runtime import FastTextEncoder

            return FastTextEncoder.load(export, prepack=not self.few_texts)
        except BundleError as exc:
            self._text_export_failed(exc)
            return None

    def _text_export_failed(self, exc: BundleError) -> None:
        """Texts go through torch, the reason kept; without torch, `exc` is raised."""
        if not torch_available():
            raise exc
        self.fast_text_error = str(exc)

    def _uses_fast_text(self) -> bool:
        return self.fast_text or not torch_available()

    def _text_backend(self) -> TextEncoder | FastTextEncoder | FastClipTextEncoder:
        fast = self._fast_text_encoder if self._uses_fast_text() else None
        if fast is None:
            self.fast_text = False
            return self.text_encoder
        return fast

    def _text_dim(self) -> int:
        """The text vectors' size, from the export's config when texts go through ONNX
        Runtime (nothing is opened), else from the torch model (which loads it)."""
        export = self._text_export_found if self._uses_fast_text() else None
        if export is None:
            self.fast_text = False
            return self.text_encoder.dim
        return self._text_config(export).dim

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
        """Find both encoders and check that their dimensions fit the heads (or, without
        heads, each other): a bundle that cannot work fails here, before any indexing.

        Each side's ONNX export is found, or made now if missing (torch is loaded for it
        then, and later runs start without it); its dimension is read from its config. A
        session is opened only when the encoder has work (an `index` with nothing new to
        embed opens neither); a torch encoder, the fallback, is loaded here."""
        image_dim, text_dim = self._image_dim(), self._text_dim()
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
