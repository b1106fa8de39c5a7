"""The export cache: one folder per text model under `HANCLIP_CACHE/fast-text/`.

The folder name carries a fingerprint of the source model (`sources.source_fingerprint`) and
the export format, so a changed model is exported again, and an export that is current is
used as it is. Where the export cannot be made (no torch), one of an older format that the
runtime still reads serves as it is.
"""

from __future__ import annotations

from pathlib import Path

from hanclip_model.fast_text.export import export_text_encoder
from hanclip_model.fast_text.runtime import (
    CONFIG_NAME,
    FAST_TEXT_FORMAT,
    READABLE_FORMATS,
    FastTextConfig,
)
from hanclip_model.files import replace_dir
from hanclip_model.onnx_runtime import current_config, export_dir, remove_other_exports
from hanclip_model.sources import source_fingerprint


def fast_text_dir(cache_root: str | Path, spec: str, format: int = FAST_TEXT_FORMAT) -> Path:
    """The cache folder of `spec`'s export in `format`; a new fingerprint names a new folder."""
    return export_dir(cache_root, "fast-text", format, spec, source_fingerprint(spec))


def ensure_fast_text(
    spec: str, cache_root: str | Path, *, device: str = "cpu", quantize: bool = False
) -> Path:
    """`spec`'s export folder under `cache_root`, exported first when missing or stale."""
    target = fast_text_dir(cache_root, spec)
    if _is_current(target, spec, quantize):
        return target
    export_text_encoder(spec, target, device=device, quantize=quantize)
    # A hub model's revision is known only once the export has downloaded it.
    settled = fast_text_dir(cache_root, spec)
    if settled != target:
        replace_dir(target, settled)
    remove_other_exports(settled, spec, CONFIG_NAME, lambda d: FastTextConfig.read(d).spec)
    return settled


def cached_fast_text(spec: str, cache_root: str | Path) -> Path | None:
    """`spec`'s current export folder when the cache holds one, the newest format first
    (nothing is exported)."""
    for format in sorted(READABLE_FORMATS, reverse=True):
        target = fast_text_dir(cache_root, spec, format)
        if _is_current(target, spec, quantize=False):
            return target
    return None


def _is_current(directory: Path, spec: str, quantize: bool) -> bool:
    config = current_config(directory, CONFIG_NAME, FastTextConfig.read, spec, source_fingerprint)
    return config is not None and (config.int8_cosine is not None or not quantize)
