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


def export_from_before_float16(export: Path, old: Path, config_name: str, graph_name: str):
    """A copy of the text export `export` at `old` as exports were written before float16
    weights: its graph in float32 and its config without the fields that name the form."""
    import json
    import shutil

    from hanclip_model.half_weights import store_float32_weights

    shutil.copytree(export, old)
    store_float32_weights(export / graph_name, old / graph_name)
    data = json.loads((old / config_name).read_text(encoding="utf-8"))
    del data["graph_weights"], data["graph_weights_cosines"]
    (old / config_name).write_text(json.dumps(data), encoding="utf-8")
