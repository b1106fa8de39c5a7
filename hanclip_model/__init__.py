"""Turning pixels and words into comparable vectors (inference only)."""

from hanclip_model.bundle import BUILTIN_BUNDLES, BundleSpec, read_bundle, resolve_bundle
from hanclip_model.errors import BundleError, HanclipError, ImageLoadError
from hanclip_model.model import HanclipModel, load_bundle

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
]
