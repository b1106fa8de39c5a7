"""The export cache of open_clip text towers: one folder per model under
`HANCLIP_CACHE/fast-clip-text/`, as `fast_text.cache` keeps the sentence-transformers ones.

A text model here is a bundle's `open_clip-text:SPEC`; the folder name carries the fingerprint
of SPEC's weights (`fast_image.cache.image_fingerprint`: the same open_clip model, the same
rule), so changed weights are exported again and a current export is used as it is, without
torch. A tower whose export is refused (one it cannot reproduce, or one that fails its
verification) gets a `<folder>.refused.json` with the reason and the versions of the libraries
that made and checked it (`onnx_runtime.record_refusal`): later runs go straight to the torch
path without exporting again, until the weights or one of those versions change, or `retry`.
A model that could not be loaded (a failed download) is not recorded: it is tried again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hanclip_model.bundle import clip_text_source
from hanclip_model.errors import BundleError
from hanclip_model.fast_clip_text.export import MIN_COSINE, export_clip_text_encoder
from hanclip_model.fast_clip_text.runtime import (
    CONFIG_NAME,
    FAST_CLIP_TEXT_FORMAT,
    FastClipTextConfig,
)
from hanclip_model.onnx_runtime import (
    current_config,
    export_dir,
    package_versions,
    record_refusal,
    recorded_refusal,
    settle_export,
)

if TYPE_CHECKING:
    from hanclip_model.encoders import TextEncoder

# What makes, runs and checks an export: a refusal holds only while these are the same.
EXPORT_PACKAGES = (
    "torch",
    "open_clip_torch",
    "transformers",
    "tokenizers",
    "ftfy",
    "onnxruntime",
    "numpy",
)


def open_clip_source(text_model: str) -> str:
    """The open_clip spec of the text model `open_clip-text:SPEC`, or `BundleError`."""
    source = clip_text_source(text_model)
    if source is None:
        raise BundleError(f"{text_model!r} is not an open_clip text tower")
    return source


def clip_text_fingerprint(source: str) -> str | None:
    """Identifies the weights of the open_clip model `source` (as its image tower's export
    does); None for a hub model not downloaded, `BundleError` for random weights."""
    from hanclip_model.fast_image.cache import image_fingerprint

    return image_fingerprint(source)


def fast_clip_text_dir(cache_root: str | Path, text_model: str) -> Path:
    """The cache folder of the text model `open_clip-text:SPEC`'s export."""
    source = open_clip_source(text_model)
    fingerprint = clip_text_fingerprint(source)
    return export_dir(cache_root, "fast-clip-text", FAST_CLIP_TEXT_FORMAT, source, fingerprint)


def ensure_fast_clip_text(
    text_model: str,
    cache_root: str | Path,
    *,
    encoder: TextEncoder | None = None,
    retry: bool = False,
) -> Path:
    """The verified export folder of `open_clip-text:SPEC` under `cache_root`, exported first
    when missing or stale (from `encoder` when given, else a `TextEncoder` on the CPU; needs
    torch then).

    `BundleError` when the model cannot be loaded, or cannot be exported exactly; the latter is
    recorded and raised again on later calls with the same library versions without exporting,
    unless `retry`."""
    source = open_clip_source(text_model)
    target = fast_clip_text_dir(cache_root, text_model)
    if is_current(target, source):
        return target
    refused = refusal(target)
    if refused is not None and not retry:
        raise BundleError(refused)
    if encoder is None:
        from hanclip_model.encoders import TextEncoder

        encoder = TextEncoder(text_model, device="cpu")
    # Loads the model first: a hub model's revision is known only once it is downloaded.
    model, tokenizer = encoder.open_clip_parts
    settled = fast_clip_text_dir(cache_root, text_model)
    fingerprint = clip_text_fingerprint(source) or "unknown"
    try:
        export_clip_text_encoder(model, tokenizer, settled, spec=source, fingerprint=fingerprint)
    except BundleError as exc:
        versions = export_versions()
        record_refusal(settled, str(exc), versions, format=FAST_CLIP_TEXT_FORMAT, spec=source)
        raise
    return settle_export(
        settled, source, CONFIG_NAME, lambda folder: FastClipTextConfig.read(folder).spec
    )


def cached_fast_clip_text(text_model: str, cache_root: str | Path) -> Path | None:
    """The current export folder of `open_clip-text:SPEC` when the cache holds one (nothing
    is exported, torch is not needed); None also for a model with nothing to cache."""
    try:
        target = fast_clip_text_dir(cache_root, text_model)
    except BundleError:
        return None
    return target if is_current(target, open_clip_source(text_model)) else None


def is_current(directory: Path, source: str) -> bool:
    """Whether `directory` holds a verified export of the open_clip model `source`'s current
    weights."""
    config = current_config(
        directory, CONFIG_NAME, FastClipTextConfig.read, source, clip_text_fingerprint
    )
    return config is not None and config.min_cosine is not None and config.min_cosine >= MIN_COSINE


def refusal(directory: Path) -> str | None:
    """The recorded reason why `directory`'s model was not exported, if one was with the
    library versions installed now."""
    return recorded_refusal(directory, export_versions())


def export_versions() -> dict[str, str | None]:
    """The installed version of each of `EXPORT_PACKAGES` (None: not installed)."""
    return package_versions(EXPORT_PACKAGES)
