"""What the export tests read of a stored graph's weights, and a float16 trial made to fall
short (`hanclip_model.half_weights`)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest


def initializer_types(graph: Path) -> set[int]:
    """The ONNX data types of `graph`'s initializers (its weights file is not read)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    return {tensor.data_type for tensor in model.graph.initializer}


def float16_falls_short(monkeypatch: pytest.MonkeyPatch, export: ModuleType, cosine: float):
    """Make the float16 trial of the text export module `export` measure `cosine` (its own
    `_worst_cosine`) while the float16 graph is in place; the float32 form is checked as
    before."""
    real_trial = export.float16_trial

    @contextmanager
    def falling_short(graph):
        with real_trial(graph) as trial:
            monkeypatch.setattr(export, "_worst_cosine", lambda *args: cosine)
            yield trial

    monkeypatch.setattr(export, "float16_trial", falling_short)
