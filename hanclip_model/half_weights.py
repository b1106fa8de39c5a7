"""An exported graph's weights stored in float16 while it still computes in float32.

ONNX Runtime's CPU kernels are float32 (its float16 ones are few and slower), so only the
storage is halved: each large float32 initializer (`MIN_ELEMENTS` values or more) is stored
as float16 under a new name, and a `Cast(to=FLOAT)` at the start of the graph gives the old
name back its float32 tensor. Every float16 value is a float32 one, so the Cast is exact, and
ONNX Runtime's constant folding replaces it by the float32 tensor when a session opens: what
runs per query or per batch is the float32 graph, weights rounded to float16
(`benchmarks/bundle_footprint.py` times the opening and a run of both forms).

The rounding moves the outputs a little, so an export keeps this form only where its own
verification still passes (`float16_trial`), as the token table keeps the smallest form that
verifies (`fast_text.table`); each export records the form kept (`graph_weights`) and what
it measured. `store_float32_weights` undoes the rewrite, for ONNX Runtime's int8 quantiser,
which quantises only weights that are float32 initializers.

A graph keeps the layout it came in: weights in `<graph>.data` beside it when they were
apart (`encoder.onnx.data`), inside the graph when they were inside. Needs the `onnx`
package (installed where exports are made, with torch); reading such a graph needs only
ONNX Runtime.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FLOAT32 = "float32"
FLOAT16 = "float16"
GRAPH_WEIGHT_FORMS = (FLOAT32, FLOAT16)
# Smaller tensors (biases, LayerNorm scales) are a rounding error of the file and are read by
# every op they feed: they stay float32.
MIN_ELEMENTS = 1024
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_WEIGHTS_APART_MIN_BYTES = 1024  # smaller tensors stay inside the graph


@dataclass(frozen=True)
class Rewritten:
    """What a rewrite of a graph's weights changed."""

    tensors: int  # initializers converted
    bytes_before: int  # the graph and its weights file, on disk
    bytes_after: int


def store_float16_weights(
    source: Path, target: Path, *, min_elements: int = MIN_ELEMENTS
) -> Rewritten:
    """Write the graph `source` as `target` with every float32 initializer of at least
    `min_elements` values stored as float16 and cast back to float32 where the graph starts.
    A tensor float16 cannot hold (a value beyond its range, or not finite) stays float32.
    `target` may be `source`."""
    return _rewrite(source, target, lambda model: _float16_initializers(model, min_elements))


def store_float32_weights(source: Path, target: Path) -> Rewritten:
    """Write the graph `source` as `target` with the float16 initializers that
    `store_float16_weights` made back in float32 (the values as float16 rounded them), their
    Casts removed: the float32 graph an ONNX tool that reads initializers expects."""
    return _rewrite(source, target, _float32_initializers)


def float32_copy(graph: Path, target: Path) -> Rewritten:
    """The graph `graph` with its weights in float32 (`store_float32_weights`), written as
    `target` in another folder, which exists. Its files are copied there first: the `onnx`
    package refuses to read weights from a file with several hard links, and a bundle's are
    links to the export cache's."""
    graph, *weights = graph_files(graph)
    shutil.copyfile(graph, target)
    for part in weights:  # under the names the graph gives them
        shutil.copyfile(part, target.parent / part.name)
    return store_float32_weights(target, target)


def graph_files(graph: Path) -> list[Path]:
    """`graph` and the weights files it names (none when its weights are inside it)."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(graph), load_external_data=False)
    locations = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return [graph, *(graph.parent / location for location in sorted(locations))]


@dataclass
class Float16Trial:
    """The graph of `float16_trial`, in float16 while the trial lasts."""

    rewritten: Rewritten
    kept: bool = False

    def keep(self) -> None:
        self.kept = True


@contextmanager
def float16_trial(graph: Path) -> Iterator[Float16Trial]:
    """The graph `graph` (with its weights file) stored in float16 for the block, which
    verifies it in place and calls `keep()` when it passes; otherwise, and when the block
    raises, the float32 files are put back as they were. The float32 files wait in a hidden
    folder beside the graph meanwhile (moved, not copied)."""
    parts = graph_files(graph)
    with tempfile.TemporaryDirectory(prefix=".float32-", dir=graph.parent) as scratch:
        aside = Path(scratch)
        for part in parts:
            os.replace(part, aside / part.name)
        trial: Float16Trial | None = None
        try:
            trial = Float16Trial(store_float16_weights(aside / graph.name, graph))
            yield trial
        finally:
            if trial is None or not trial.kept:
                graph.unlink(missing_ok=True)
                graph.with_name(graph.name + ".data").unlink(missing_ok=True)
                for part in parts:
                    os.replace(aside / part.name, part)


def _rewrite(source: Path, target: Path, change: Callable[[Any], int]) -> Rewritten:
    """Load `source` whole, `change` its proto (returning how many tensors it converted) and
    save it as `target`, its weights apart when those of `source` were."""
    import onnx

    before = graph_files(source)
    bytes_before = sum(part.stat().st_size for part in before)
    apart = len(before) > 1
    model = onnx.load(str(source))  # its weights read into the proto: `target` may be `source`
    tensors = change(model)
    weights = target.with_name(target.name + ".data")
    # onnx appends to a weights file that exists: a stale one would be kept inside the new.
    for stale in {*before[1:], weights} if target == source else {weights}:
        stale.unlink(missing_ok=True)
    if apart:
        save_weights_apart(model, target)
    else:
        onnx.save_model(model, str(target))
    bytes_after = sum(part.stat().st_size for part in graph_files(target))
    return Rewritten(tensors, bytes_before, bytes_after)


def save_weights_apart(model: Any, path: Path) -> None:
    """Save the ONNX `model` as `path` with its weights in `path.data`, as the exports store
    a graph: ONNX Runtime then maps them instead of parsing them out of one protobuf."""
    import onnx

    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
        size_threshold=_WEIGHTS_APART_MIN_BYTES,
    )


def _float16_initializers(model: Any, min_elements: int) -> int:
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inputs = {value.name for value in graph.input}  # an initializer that is also an input
    taken = _names(graph)
    casts = []
    for tensor in graph.initializer:
        if (
            tensor.data_type != TensorProto.FLOAT
            or tensor.name in inputs
            or int(np.prod(tensor.dims)) < min_elements
        ):
            continue
        values = numpy_helper.to_array(tensor)
        if not np.isfinite(values).all() or np.abs(values).max() > _FLOAT16_MAX:
            continue
        name = tensor.name
        stored = _unused(f"{name}.float16", taken)
        tensor.CopyFrom(numpy_helper.from_array(values.astype(np.float16), stored))
        casts.append(
            helper.make_node("Cast", [stored], [name], name=f"{stored}.cast", to=TensorProto.FLOAT)
        )
    nodes = [*casts, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    return len(casts)


def _float32_initializers(model: Any) -> int:
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    restored = set()
    for index, node in enumerate(graph.node):
        source = initializers.get(node.input[0]) if node.op_type == "Cast" else None
        if (
            source is None
            or node.domain not in ("", "ai.onnx")
            or source.data_type != TensorProto.FLOAT16
            or readers[source.name] != 1
            or [a.i for a in node.attribute if a.name == "to"] != [TensorProto.FLOAT]
        ):
            continue
        values = numpy_helper.to_array(source).astype(np.float32)
        source.CopyFrom(numpy_helper.from_array(values, node.output[0]))
        restored.add(index)
    nodes = [node for index, node in enumerate(graph.node) if index not in restored]
    del graph.node[:]
    graph.node.extend(nodes)
    return len(restored)


def _names(graph: Any) -> set[str]:
    names = {tensor.name for tensor in graph.initializer}
    names |= {value.name for value in (*graph.input, *graph.output, *graph.value_info)}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
    return names


def _unused(name: str, taken: set[str]) -> str:
    candidate, number = name, 1
    while candidate in taken:
        candidate, number = f"{name}.{number}", number + 1
    taken.add(candidate)
    return candidate
