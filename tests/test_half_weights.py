"""Storing a graph's weights in float16 (`hanclip_model.half_weights`): the files halve, the
graph still computes in float32 with outputs within float16's rounding, ONNX Runtime folds
the Casts away when a session opens, and a trial that is not kept leaves the float32 files as
they were."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hanclip_model.half_weights import (
    float16_trial,
    float32_copy,
    graph_files,
    store_float16_weights,
    store_float32_weights,
)

WIDTH = 256


def _graph(directory: Path, *, apart: bool = True, weight_scale: float = 1.0) -> Path:
    """x [N, WIDTH] -> x @ w + b, then a Gather with a large int64 index table: a weight to
    halve, a bias too small to, and a tensor that is not float."""
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((WIDTH, WIDTH)) * weight_scale).astype(np.float32)
    bias = rng.standard_normal(WIDTH).astype(np.float32)
    order = np.tile(np.arange(WIDTH, dtype=np.int64)[::-1], 8)[:WIDTH]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["s"]),
        helper.make_node("Gather", ["s", "order"], ["y"], axis=1),
    ]
    initializers = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(bias, "b"),
        numpy_helper.from_array(np.tile(order, 8)[: 8 * WIDTH], "order_long"),
        numpy_helper.from_array(order, "order"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", WIDTH])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "encoder.onnx"
    if apart:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="encoder.onnx.data",
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(path))
    return path


def _run(path: Path) -> np.ndarray:
    x = np.random.default_rng(1).standard_normal((4, WIDTH)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x})
    return y


def _sizes(path: Path) -> int:
    return sum(part.stat().st_size for part in graph_files(path))


def _initializer_types(path: Path) -> dict[str, int]:
    model = onnx.load(str(path), load_external_data=False)
    return {tensor.name: tensor.data_type for tensor in model.graph.initializer}


def test_the_weights_file_halves_and_the_outputs_stay_within_float16_rounding(tmp_path):
    source = _graph(tmp_path / "float32")
    target = tmp_path / "float16" / "encoder.onnx"
    target.parent.mkdir()
    rewritten = store_float16_weights(source, target)
    assert rewritten.tensors == 1  # the weight; the bias is small, the index table int64
    assert graph_files(target) == [target, target.with_name("encoder.onnx.data")]
    weight_bytes = WIDTH * WIDTH * 4
    assert rewritten.bytes_before - rewritten.bytes_after == pytest.approx(
        weight_bytes / 2, rel=0.01
    )
    assert rewritten.bytes_before == _sizes(source) and rewritten.bytes_after == _sizes(target)
    types = _initializer_types(target)
    assert types == {
        "w.float16": TensorProto.FLOAT16,
        "b": TensorProto.FLOAT,
        "order_long": TensorProto.INT64,
        "order": TensorProto.INT64,
    }
    full, half = _run(source), _run(target)
    assert half.dtype == np.float32 and half.shape == full.shape
    # Each weight moves by at most 2^-11 of itself: a sum of WIDTH of them, a few 1e-3.
    np.testing.assert_allclose(half, full, rtol=0, atol=0.05)
    cosines = (half * full).sum(1) / np.linalg.norm(half, axis=1) / np.linalg.norm(full, axis=1)
    assert cosines.min() > 0.99999


def test_a_graph_with_its_weights_inside_keeps_them_inside(tmp_path):
    source = _graph(tmp_path, apart=False)
    target = tmp_path / "half.onnx"
    rewritten = store_float16_weights(source, target)
    assert graph_files(target) == [target] and not target.with_name("half.onnx.data").exists()
    assert rewritten.bytes_after < rewritten.bytes_before * 0.6
    np.testing.assert_allclose(_run(target), _run(source), rtol=0, atol=0.05)


def test_rewriting_in_place_leaves_no_stale_weights_behind(tmp_path):
    graph = _graph(tmp_path)
    expected = _run(graph)
    rewritten = store_float16_weights(graph, graph)
    assert rewritten.bytes_after == _sizes(graph) < rewritten.bytes_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.onnx", "encoder.onnx.data"]
    np.testing.assert_allclose(_run(graph), expected, rtol=0, atol=0.05)


def test_float32_weights_undo_the_rewrite_exactly(tmp_path):
    half = tmp_path / "half.onnx"
    store_float16_weights(_graph(tmp_path / "source"), half)
    back = tmp_path / "back.onnx"
    assert store_float32_weights(half, back).tensors == 1
    assert _initializer_types(back)["w"] == TensorProto.FLOAT
    assert "Cast" not in [node.op_type for node in onnx.load(str(back)).graph.node]
    np.testing.assert_array_equal(_run(back), _run(half))  # float16 -> float32 is exact
    assert store_float32_weights(back, tmp_path / "again.onnx").tensors == 0


def test_a_float32_copy_reads_hard_linked_weights_and_leaves_them_as_they_were(tmp_path):
    """A bundle's graph files are hard links to the export cache's, whose weights the `onnx`
    package will not read in place: the copy is made first, then rewritten."""
    cached = _graph(tmp_path / "cache")
    store_float16_weights(cached, cached)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for part in graph_files(cached):
        (bundle / part.name).hardlink_to(part)
    linked = bundle / cached.name
    before = {part.name: part.read_bytes() for part in graph_files(linked)}
    target = tmp_path / "scratch" / cached.name
    target.parent.mkdir()
    assert float32_copy(linked, target).tensors == 1
    assert _initializer_types(target)["w"] == TensorProto.FLOAT
    assert graph_files(target) == [target, target.with_name("encoder.onnx.data")]
    np.testing.assert_array_equal(_run(target), _run(linked))
    assert {part.name: part.read_bytes() for part in graph_files(linked)} == before
    assert _initializer_types(cached)["w.float16"] == TensorProto.FLOAT16


def test_onnx_runtime_folds_the_casts_when_a_session_opens(tmp_path):
    half = tmp_path / "half.onnx"
    store_float16_weights(_graph(tmp_path / "source"), half)
    optimised = tmp_path / "optimised.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(optimised)
    ort.InferenceSession(str(half), options, providers=["CPUExecutionProvider"])
    model = onnx.load(str(optimised))
    assert "Cast" not in [node.op_type for node in model.graph.node]
    assert TensorProto.FLOAT16 not in {tensor.data_type for tensor in model.graph.initializer}


def test_a_tensor_float16_cannot_hold_stays_float32(tmp_path):
    source = _graph(tmp_path / "source", weight_scale=1e5)  # beyond float16's 65504
    target = tmp_path / "half.onnx"
    assert store_float16_weights(source, target).tensors == 0
    assert _initializer_types(target)["w"] == TensorProto.FLOAT
    np.testing.assert_array_equal(_run(target), _run(source))


def test_a_trial_not_kept_puts_the_float32_files_back(tmp_path):
    graph = _graph(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with float16_trial(graph) as trial:
        assert _initializer_types(graph)["w.float16"] == TensorProto.FLOAT16
        assert trial.rewritten.tensors == 1
    assert not trial.kept
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing else left


def test_a_trial_kept_stays_float16_and_leaves_nothing_aside(tmp_path):
    graph = _graph(tmp_path)
    before = _sizes(graph)
    with float16_trial(graph) as trial:
        trial.keep()
    assert _sizes(graph) == trial.rewritten.bytes_after < before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.onnx", "encoder.onnx.data"]


def test_a_trial_that_fails_puts_the_float32_files_back(tmp_path):
    graph = _graph(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RuntimeError, match="verification broke"), float16_trial(graph):
        raise RuntimeError("verification broke")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
