"""Turning pixels and words into comparable vectors (inference only).

The names below are imported on first use, so `import hanclip_model.errors` (as the query
path does) costs nothing beyond that module: no PIL, no encoders, no torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hanclip_model.bundle import BUILTIN_BUNDLES, BundleSpec, read_bundle, resolve_bundle
    from hanclip_model.errors import BundleError, HanclipError, ImageLoadError, UnknownModel
    from hanclip_model.model import HanclipModel, load_bundle

_HOMES = {
    "BUILTIN_BUNDLES": "hanclip_model.bundle",
    "BundleSpec": "hanclip_model.bundle",
    "read_bundle": "hanclip_model.bundle",
    "resolve_bundle": "hanclip_model.bundle",
    "BundleError": "hanclip_model.errors",
    "HanclipError": "hanclip_model.errors",
    "ImageLoadError": "hanclip_model.errors",
    "UnknownModel": "hanclip_model.errors",
    "HanclipModel": "hanclip_model.model",
    "load_bundle": "hanclip_model.model",
}

__all__ = [
    "BUILTIN_BUNDLES",
    "BundleError",
    "BundleSpec",
    "HanclipError",
    "HanclipModel",
    "ImageLoadError",
    "load_bundle",
    "read_bundle",
    "resolve_bundle",
    "UnknownModel",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'hanclip_model' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
