"""Where derived files live: encoded memory banks and the ONNX exports of the encoders."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from hanclip_model.errors import BundleError


def cache_root() -> Path:
    """env HANCLIP_CACHE, else the platform's user cache directory (~/.cache/hanclip)."""
    env = os.environ.get("HANCLIP_CACHE")
    if env:
        return Path(os.path.expanduser(env))
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("hanclip", appauthor=False))


def remove_other_exports(
    keep: Path, spec: str, config_name: str, read_spec: Callable[[Path], str]
) -> list[Path]:
    """Remove the export folders beside `keep` of the model `spec` (stale weights: an export
    is hundreds of MB): those holding a `config_name` that `read_spec` reads as `spec` (one it
    cannot read, BundleError, is left alone). Returns the folders removed."""
    removed = []
    for other in keep.parent.iterdir():
        # Dot-folders are other processes' exports still being built or swapped in.
        if other == keep or other.name.startswith(".") or not (other / config_name).is_file():
            continue
        try:
            stale = read_spec(other) == spec
        except BundleError:
            continue
        if stale:
            shutil.rmtree(other, ignore_errors=True)
            removed.append(other)
    return removed
