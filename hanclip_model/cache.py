"""Where derived files live: encoded memory banks and the ONNX exports of the encoders."""

from __future__ import annotations

import os
from pathlib import Path

from hanclip_model import settings


def cache_root() -> Path:
    """`settings.CACHE`, else the platform's user cache directory (~/.cache/hanclip)."""
    chosen = settings.CACHE.get()
    if chosen:
        return Path(os.path.expanduser(chosen))
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("hanclip", appauthor=False))
