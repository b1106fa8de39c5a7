"""Where derived files live: encoded memory banks and fast (ONNX) text-encoder exports."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """env HANCLIP_CACHE, else the platform's user cache directory (~/.cache/hanclip)."""
    env = os.environ.get("HANCLIP_CACHE")
    if env:
        return Path(os.path.expanduser(env))
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("hanclip", appauthor=False))
