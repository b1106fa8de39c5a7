"""Every `HANCLIP_*` environment variable, declared once and read from here.

Where a variable is the default of a command-line option (`HANCLIP_HOME` for `--library`,
`HANCLIP_MODEL` for `--model`, `HANCLIP_DEVICE` for `--device`), the option names it
(`envvar=settings.HOME.name`) so `--help` shows it; code that runs without the command line
(the server, the library, the benchmarks) reads the same setting through `get`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, what it does, and its value when unset."""

    name: str
    help: str
    default: str | None = None

    def get(self) -> str | None:
        """The value, or the default when unset or empty."""
        return os.environ.get(self.name) or self.default

    def enabled(self) -> bool:
        """For on/off switches: on unless set to 0."""
        return os.environ.get(self.name, self.default or "1") != "0"

    def number(self, fallback: float) -> float:
        """A number, or `fallback` when unset or not a number."""
        try:
            return float(os.environ.get(self.name, fallback))
        except ValueError:
            return fallback


HOME = Setting("HANCLIP_HOME", "the library folder when --library is not given")
MODEL = Setting("HANCLIP_MODEL", "the model bundle or built-in name when --model is not given")
DEVICE = Setting("HANCLIP_DEVICE", "cpu, cuda, cuda:1 ... when --device is not given")
CACHE = Setting("HANCLIP_CACHE", "where derived files (ONNX exports, encoded banks) are kept")
FAST_TEXT = Setting("HANCLIP_FAST_TEXT", "0: embed queries through torch, not ONNX Runtime")
FAST_IMAGE = Setting("HANCLIP_FAST_IMAGE", "0: embed photos through torch, not ONNX Runtime")
FAST_CLI = Setting("HANCLIP_FAST_CLI", "0: `search` always goes through Typer")
VIA_SERVER = Setting("HANCLIP_VIA_SERVER", "0: `search` never asks a running `serve`")
RESIDENT = Setting("HANCLIP_RESIDENT", "0: `search` never starts a background `serve`")
RESIDENT_MIN_PHOTOS = Setting(
    "HANCLIP_RESIDENT_MIN_PHOTOS", "photos from which `search` starts a background `serve`"
)
RESIDENT_IDLE_S = Setting(
    "HANCLIP_RESIDENT_IDLE_S", "seconds without a request before that background `serve` exits"
)
CLIP_MODEL = Setting("HANCLIP_CLIP_MODEL", "`bench`: the CLIP of the clip-translate baseline")
TRANSLATOR_MODEL = Setting("HANCLIP_TRANSLATOR_MODEL", "`bench`: the ko→en translator")
KOCLIP_MODEL = Setting("HANCLIP_KOCLIP_MODEL", "`bench`: the KoCLIP baseline's weights")

ALL = (
    HOME,
    MODEL,
    DEVICE,
    CACHE,
    FAST_TEXT,
    FAST_IMAGE,
    FAST_CLI,
    VIA_SERVER,
    RESIDENT,
    RESIDENT_MIN_PHOTOS,
    RESIDENT_IDLE_S,
    CLIP_MODEL,
    TRANSLATOR_MODEL,
    KOCLIP_MODEL,
)
