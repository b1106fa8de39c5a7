"""Tests that need something this project cannot install with pip (Debian's Chromium,
Tesseract's language data): skipped where it is missing, except where CI installed it and
says so, where a skip would hide a failure."""

from __future__ import annotations

import os

import pytest


def skip_unless_present(missing: str | None, required_by: str) -> None:
    """Skip the calling test module when `missing` says what is absent; fail instead when the
    environment variable `required_by` is set (`.ci/run` sets it after installing)."""
    if missing is None:
        return
    if os.environ.get(required_by):
        raise RuntimeError(f"{required_by} is set, but {missing}")
    pytest.skip(missing, allow_module_level=True)
