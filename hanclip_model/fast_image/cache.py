"""The export cache: one folder per image model under `HANCLIP_CACHE/fast-image/`.

The folder name carries a fingerprint of the model's weights (`image_fingerprint`), so a
changed model is exported again, and an export that is current is used as it is, without
torch. A model whose export fails verification gets a `<folder>.refused.json` beside it with
the reason and the versions of the libraries that made and checked the graph, so the next run
goes straight to the torch path rather than exporting again: until the weights or one of those
versions change, or `retry`. Only what a retry cannot change is recorded: a model that could
not be loaded (a download that failed, a missing file) is tried again on the next run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hanclip_model.encoders import parse_image_model
from hanclip_model.errors import BundleError
from hanclip_model.fast_image.export import MAX_PIXEL_DIFF, MIN_COSINE, export_image_encoder
from hanclip_model.fast_image.runtime import CONFIG_NAME, FAST_IMAGE_FORMAT, FastImageConfig
from hanclip_model.onnx_runtime import (
    current_config,
    export_dir,
    package_versions,
    record_refusal,
    recorded_refusal,
    settle_export,
)
from hanclip_model.sources import source_fingerprint

if TYPE_CHECKING:
    from hanclip_model.encoders import ClipEncoder

# What makes, runs and checks an export: a refusal holds only while these are the same (timm
# builds the image towers of the SigLIP models).
EXPORT_PACKAGES = ("torch", "open_clip_torch", "timm", "onnxruntime", "Pillow", "numpy")


def image_fingerprint(spec: str) -> str | None:
    """Identifies the weights behind an image model spec; None for a hub model not downloaded.

    `local-dir:PATH`: the folder's files (`source_fingerprint`); `hf-hub:REPO`: the snapshot
    revision in the Hugging Face cache; `NAME:TAG`: the spec itself (open_clip's registry names
    one set of weights per tag). A bare `NAME` has random weights, new at every load: there is
    nothing to cache, so `BundleError`."""
    name, pretrained = parse_image_model(spec)
    if spec.startswith("local-dir:"):
        return source_fingerprint(spec.removeprefix("local-dir:"))
    if spec.startswith("hf-hub:"):
        return source_fingerprint(spec.removeprefix("hf-hub:"))
    if pretrained is None:
        raise BundleError(f"image model {spec!r} has random weights: no export to cache")
    return "open_clip:" + spec


def fast_image_dir(cache_root: str | Path, spec: str) -> Path:
    """The cache folder of `spec`'s export; a new fingerprint names a new folder."""
    return export_dir(cache_root, "fast-image", FAST_IMAGE_FORMAT, spec, image_fingerprint(spec))


def ensure_fast_image(
    spec: str,
    cache_root: str | Path,
    *,
    encoder: ClipEncoder | None = None,
    retry: bool = False,
) -> Path:
    """`spec`'s verified export folder under `cache_root`, exported first when missing or stale
    (with `encoder` when given, else a `ClipEncoder` on the CPU; needs torch then).

    Raises `BundleError` when the model cannot be loaded, or cannot be exported exactly; the
    latter is recorded and raised again on later calls with the same library versions
    without exporting, unless `retry`."""
    target = fast_image_dir(cache_root, spec)
    if is_current(target, spec):
        return target
    refused = refusal(target)
    if refused is not None and not retry:
        raise BundleError(refused)
    if encoder is None:
        from hanclip_model.encoders import ClipEncoder

        encoder = ClipEncoder(spec, device="cpu")
    # Loads the model first: a hub model's revision is known only once it is downloaded.
    encoder.model  # noqa: B018
    settled = fast_image_dir(cache_root, spec)
    try:
        export_image_encoder(encoder, settled, fingerprint=image_fingerprint(spec) or "unknown")
    except BundleError as exc:
        record_refusal(settled, str(exc), export_versions(), format=FAST_IMAGE_FORMAT, spec=spec)
        raise
    return settle_export(
        settled, spec, CONFIG_NAME, lambda folder: FastImageConfig.read(folder).spec
    )


def cached_fast_image(spec: str, cache_root: str | Path) -> Path | None:
    """`spec`'s current export folder when the cache holds one (nothing is exported, torch is
    not needed); None also for a model with nothing to cache (random weights)."""
    try:
        target = fast_image_dir(cache_root, spec)
    except BundleError:
        return None
    return target if is_current(target, spec) else None


def is_current(directory: Path, spec: str) -> bool:
    """Whether `directory` holds a verified export of `spec`'s current weights."""
    config = current_config(directory, CONFIG_NAME, FastImageConfig.read, spec, image_fingerprint)
    return (
        config is not None
        and config.min_cosine is not None
        and config.min_cosine >= MIN_COSINE
        and config.max_pixel_diff is not None
        and config.max_pixel_diff <= MAX_PIXEL_DIFF
    )


def refusal(directory: Path) -> str | None:
    """The recorded reason why `directory`'s model was not exported, if one was with the
    library versions installed now (`export_versions`)."""
    return recorded_refusal(directory, export_versions())


def export_versions() -> dict[str, str | None]:
    """The installed version of each of `EXPORT_PACKAGES` (None: not installed)."""
    return package_versions(EXPORT_PACKAGES)
