"""The exported bundle on disk, and `hanclip index`'s memory when it has nothing to embed.

    python benchmarks/bundle_footprint.py --work /tmp/footprint [--runs 3] [--quick]
                                          [--model xlmr-b32]

Measured side by side with rclip 3.3.0, whose model files take 578 MiB and whose start-up
peaks at 441 MiB (the targets). The real-size random ViT-B/32 + MiniLM-L12 models (seeded
weights saved in open_clip's `local-dir:` layout, which can be exported where the unsaved
random ViT of `benchkit.inputs.build_random_bundle` cannot; a 250,002-piece Unigram
tokenizer; heads: `onnxbench.bundles.build_models`), or with `--model` a built-in at its
real size with random weights as `model_costs.py` builds it (open_clip's own config, the
XLM-R or NLLB tower from a local config, never fetched; a stand-in tokenizer of its kind and
vocabulary size), become a bundle that `hanclip export` fills in this process, and the
report gives:

* every file of the bundle with its size, and the total (target: <= 578 MiB);
* the form the token table was kept in, and the worst cosine to torch each form the export
  tried reached;
* the form each graph's weights were kept in (`hanclip_model.half_weights`) and what each
  form tried reached (image: float16's worst cosine to the float32 graph; text: each form's,
  with the table kept, to torch), and the graph as stored against a float32-weights copy of
  it made here (the graph before float16 was kept), each opened in a fresh process: the
  session's opening, its first run and a warm run (a batch of 32 photos; one query of 8
  tokens), peak RSS;
* peak RSS and wall time of `hanclip index` with nothing to embed, `--runs` times each: a
  fresh library on an empty folder, then a no-op re-index of it (target: <= 441 MiB);
* what storing one graph per encoder costs when a session opens: each graph as stored
  (optimised for this CPU as it opens) against a pre-optimised copy made here (the second
  graph exports kept before), each opened in a fresh process: seconds and peak RSS.

Models, the export cache and the bundle are kept in `--work`; `--quick` uses the tests' tiny
models (a smoke test: their sizes say nothing).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit import entry
from benchkit.environment import Environment, environment
from benchkit.figures import Check, Spread, Target
from benchkit.processes import BenchmarkError, log, run_process
from benchkit.workspace import (
    EMBEDDING_ONLY,
    Workspace,
    isolated_env,
    isolated_process,
    work_directory,
)
from onnxbench.bundles import Models, build_models

from hanclip_model.bundle import (
    HEADS_NAME,
    IMAGE_ENCODER_DIR,
    TEXT_ENCODER_DIR,
    write_bundle,
)
from hanclip_model.device import usable_cores
from hanclip_model.half_weights import FLOAT16

MIB = 1024**2
RCLIP_MODEL_FILES_MIB = 578.0  # rclip 3.3.0's ONNX models on disk, measured side by side
RCLIP_STARTUP_MIB = 441.0  # rclip 3.3.0's peak RSS at start-up, same machine
TOTAL = Target("total_mib", "bundle on disk", "<=", RCLIP_MODEL_FILES_MIB, " MiB")
FRESH = Target(
    "fresh_index_peak_mib", "fresh index, nothing to embed", "<=", RCLIP_STARTUP_MIB, " MiB"
)
NOOP = Target("noop_index_peak_mib", "no-op re-index", "<=", RCLIP_STARTUP_MIB, " MiB")
GRAPH_FILE = "encoder.onnx"
DEFAULT_NAME = "vit-b32-minilm-l12"
PREOPTIMIZED_FILE = "encoder-optimized.onnx"

PHOTO_BATCH = 32  # what `index` embeds per batch
QUERY_TOKENS = 8
WARM_RUNS = 3  # after the first; their median is the warm figure
# A fresh interpreter opens one graph as the product does, runs it on random inputs (rows,
# and QUERY_TOKENS along a free sequence axis) and prints the seconds of each step.
_OPEN_AND_RUN = f"""
import json, sys, time
from pathlib import Path
import numpy as np
import onnxruntime
from hanclip_model.onnx_runtime import inference_session
start = time.perf_counter()
session = inference_session(Path(sys.argv[1]))
opened = time.perf_counter() - start
rows, feeds = int(sys.argv[2]), {{}}
for given in session.get_inputs():
    shape = [d if isinstance(d, int) else rows if i == 0 else {QUERY_TOKENS}
             for i, d in enumerate(given.shape)]
    if given.type == "tensor(float)":
        feeds[given.name] = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    else:
        feeds[given.name] = np.ones(shape, dtype=np.int64)
runs = []
for _ in range({1 + WARM_RUNS}):
    start = time.perf_counter()
    session.run(None, feeds)
    runs.append(time.perf_counter() - start)
print(json.dumps([opened, runs[0], float(np.median(runs[1:]))]))
"""
# A fresh interpreter opens one graph and prints the seconds the session took to open.
_OPEN_SESSION = """
import sys, time
from pathlib import Path
import onnxruntime
from hanclip_model.onnx_runtime import inference_session
start = time.perf_counter()
inference_session(Path(sys.argv[1]), preoptimized=sys.argv[2] == "1")
print(time.perf_counter() - start)
"""


@dataclass(frozen=True)
class BundleFile:
    path: str  # inside the bundle
    size_bytes: int


@dataclass(frozen=True)
class IndexMemory:
    """`hanclip index` of an empty folder: into a fresh library, then again (a no-op)."""

    fresh_peak_rss_bytes: Spread
    fresh_wall_s: Spread
    noop_peak_rss_bytes: Spread
    noop_wall_s: Spread


@dataclass(frozen=True)
class GraphOpening:
    """One encoder's session opened in a fresh process, from the one graph stored (optimised
    as it opens) and from a pre-optimised copy (opened as it is)."""

    encoder: str
    stored_open_s: Spread
    preoptimized_open_s: Spread
    stored_peak_rss_bytes: Spread
    preoptimized_peak_rss_bytes: Spread
    preoptimized_copy_bytes: int  # what keeping the copy would add to the bundle


@dataclass(frozen=True)
class GraphWeights:
    """One encoder's graph: the form its weights were kept in, what each form tried reached
    (see the module docstring), and the graph as stored against a float32-weights copy, each
    opened and run in a fresh process `runs` times."""

    encoder: str
    kept: str  # "float16" or "float32"
    cosines: dict[str, float]
    rows: int  # per run: photos, or queries
    stored_graph_bytes: int  # the graph and its weights file
    float32_graph_bytes: int
    stored_open_s: Spread
    float32_open_s: Spread
    stored_first_run_s: Spread
    float32_first_run_s: Spread
    stored_warm_run_s: Spread
    float32_warm_run_s: Spread
    stored_peak_rss_bytes: Spread
    float32_peak_rss_bytes: Spread


@dataclass(frozen=True)
class Results:
    environment: Environment
    model: str  # the built-in measured, or the ViT-B/32 + MiniLM-L12 bundle
    bundle: str
    export_s: float  # near 0 when the work directory's cache held the exports (linked in)
    files: tuple[BundleFile, ...]
    total_bytes: int
    token_table: str  # the form the token table was kept in
    token_table_cosines: dict[str, float]  # each form tried: worst cosine to the model
    graph_weights: tuple[GraphWeights, ...]
    index: IndexMemory
    openings: tuple[GraphOpening, ...]
    wall_s: float


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    example = "python benchmarks/bundle_footprint.py --work /tmp/footprint --runs 3"
    parser = entry.parser(__doc__, example, work="kept; default: a temp dir")
    parser.add_argument("--runs", type=int, default=3, help="processes per figure (default 3)")
    parser.add_argument("--quick", action="store_true", help="the tests' tiny models, one run")
    parser.add_argument(
        "--model",
        help="a built-in (e.g. xlmr-b32) at real size, random weights, instead of the "
        "ViT-B/32 + MiniLM-L12 bundle",
    )
    args = parser.parse_args(argv)
    if args.quick and args.model:
        parser.error("--quick uses the tests' tiny models: leave out --model")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    runs = 1 if args.quick else max(1, args.runs)
    with work_directory(args.work) as work:
        return entry.finish(
            lambda: run_benchmark(work, runs, tiny=args.quick, builtin=args.model),
            args.json_path,
            title="The exported bundle on disk, and `hanclip index` with nothing to embed",
            checks=checks,
        )


def checks(results: Results) -> list[Check]:
    index = results.index
    return [
        Check.of(TOTAL, results.total_bytes / MIB),
        Check.of(FRESH, index.fresh_peak_rss_bytes.max / MIB),
        Check.of(NOOP, index.noop_peak_rss_bytes.max / MIB),
    ]


def run_benchmark(
    work: Path, runs: int, *, tiny: bool = False, builtin: str | None = None
) -> Results:
    """Every measurement of one run (see the module docstring)."""
    from hanclip_model.bundle_export import export_bundle

    started = time.perf_counter()
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = isolated_env(work)
    name = builtin or DEFAULT_NAME
    with isolated_process(env):
        bundle = models_bundle(work, tiny=tiny, builtin=builtin)
        log("hanclip export (the ONNX encoders into the bundle; made once per work directory)")
        report = export_bundle(str(bundle))
    text = text_config(bundle / TEXT_ENCODER_DIR)
    files = bundle_files(bundle)
    ws = Workspace(work, bundle, env, watch_index=False)
    scratch = work / "graph-forms"
    return Results(
        environment=environment(usable_cores()),
        model=name,
        bundle=str(bundle),
        export_s=report.seconds,
        files=files,
        total_bytes=sum(f.size_bytes for f in files),
        token_table=text.token_table,
        token_table_cosines=text.token_table_cosines or {},
        graph_weights=(
            measure_graph_weights(bundle / IMAGE_ENCODER_DIR, scratch, runs, env),
            measure_graph_weights(bundle / TEXT_ENCODER_DIR, scratch, runs, env),
        ),
        index=measure_index(ws, runs),
        openings=tuple(
            measure_opening(bundle / folder, work / "preoptimized", runs, env)
            for folder in (IMAGE_ENCODER_DIR, TEXT_ENCODER_DIR)
        ),
        wall_s=time.perf_counter() - started,
    )


def models_bundle(work: Path, *, tiny: bool, builtin: str | None) -> Path:
    """The bundle to export, of the models measured (see the module docstring)."""
    directory = work / "bundle"
    if builtin is None:
        models = tiny_models(work) if tiny else build_models(work)
        text_model = str(models.text_model)
        return fresh_bundle(directory, DEFAULT_NAME, models.image_spec, text_model, models.heads)
    from model_costs import prepare

    log(f"{builtin} at real size, random weights (once per work directory)")
    prepared = prepare(builtin, work / "models")
    return fresh_bundle(directory, builtin, prepared.image_spec, prepared.text_spec, None)


def text_config(export: Path) -> Any:
    """The config of the text export in `export`: an open_clip tower's or a
    sentence-transformers model's."""
    from hanclip_model.fast_clip_text.runtime import CONFIG_NAME, FastClipTextConfig
    from hanclip_model.fast_text.runtime import FastTextConfig

    if (export / CONFIG_NAME).is_file():
        return FastClipTextConfig.read(export)
    return FastTextConfig.read(export)


def tiny_models(work: Path) -> Models:
    from hanclip_eval.tiny_models import build_tiny_open_clip, build_tiny_sentence_transformer

    root = work / "tiny-models"
    image_spec = build_tiny_open_clip(root / "clip", embed_dim=32)
    text = build_tiny_sentence_transformer(root / "text", out_dim=32)
    return Models(image_spec, text, None)


def fresh_bundle(
    directory: Path, name: str, image_spec: str, text_model: str, heads: Path | None
) -> Path:
    """A bundle of these models without encoders (the export cache makes a new export
    cheap)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    if heads is not None:
        shutil.copy2(heads, directory / HEADS_NAME)
    write_bundle(
        directory,
        name=f"random-{name}",
        image_model=image_spec,
        text_model=text_model,
        heads=HEADS_NAME if heads is not None else None,
    )
    return directory


def bundle_files(bundle: Path) -> tuple[BundleFile, ...]:
    """Every file of the bundle, largest first: what a download or a copy carries."""
    found = [
        BundleFile(str(path.relative_to(bundle)), path.stat().st_size)
        for path in bundle.rglob("*")
        if path.is_file()
    ]
    return tuple(sorted(found, key=lambda f: (-f.size_bytes, f.path)))


def measure_index(ws: Workspace, runs: int) -> IndexMemory:
    """`hanclip index` of an empty folder into a fresh library, then again, `runs` times."""
    empty = ws.root / "empty-folder"
    shutil.rmtree(empty, ignore_errors=True)
    empty.mkdir(parents=True)
    fresh, noop = [], []
    for run in range(runs):
        log(f"hanclip index of an empty folder, fresh then again ({run + 1}/{runs})")
        library = ws.fresh(f"library-{run}")
        for into in (fresh, noop):
            process, _ = ws.index(empty, library, options=EMBEDDING_ONLY)
            into.append(process)
    return IndexMemory(
        fresh_peak_rss_bytes=Spread.of([p.peak_rss_bytes for p in fresh]),
        fresh_wall_s=Spread.of([p.wall_s for p in fresh]),
        noop_peak_rss_bytes=Spread.of([p.peak_rss_bytes for p in noop]),
        noop_wall_s=Spread.of([p.wall_s for p in noop]),
    )


def measure_opening(export: Path, scratch: Path, runs: int, env: dict[str, str]) -> GraphOpening:
    """Open `export`'s graph as stored and as a pre-optimised copy, alternately, `runs`
    times each, every time in a fresh process."""
    copy = scratch / export.name / PREOPTIMIZED_FILE
    shutil.rmtree(copy.parent, ignore_errors=True)
    copy.parent.mkdir(parents=True)
    preoptimized_copy(export / GRAPH_FILE, copy)
    copy_bytes = sum(p.stat().st_size for p in copy.parent.glob(f"{PREOPTIMIZED_FILE}*"))
    opened: dict[bool, list[tuple[float, int]]] = {False: [], True: []}
    log(f"opening the {export.name} encoder's session: as stored, and pre-optimised")
    for _ in range(runs):
        for preoptimized, graph in ((False, export / GRAPH_FILE), (True, copy)):
            cmd = [sys.executable, "-c", _OPEN_SESSION, str(graph), "1" if preoptimized else "0"]
            process = run_process(cmd, env)
            try:
                seconds = float(process.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                raise BenchmarkError(f"opening {graph} printed {process.stdout!r}") from None
            opened[preoptimized].append((seconds, process.peak_rss_bytes))
    return GraphOpening(
        encoder=export.name,
        stored_open_s=Spread.of([s for s, _ in opened[False]]),
        preoptimized_open_s=Spread.of([s for s, _ in opened[True]]),
        stored_peak_rss_bytes=Spread.of([r for _, r in opened[False]]),
        preoptimized_peak_rss_bytes=Spread.of([r for _, r in opened[True]]),
        preoptimized_copy_bytes=copy_bytes,
    )


def measure_graph_weights(
    export: Path, scratch: Path, runs: int, env: dict[str, str]
) -> GraphWeights:
    """The form `export`'s graph keeps its weights in, and that graph against a float32 copy
    of it, each opened and run in a fresh process, alternately, `runs` times."""
    config = image_or_text_config(export)
    float32 = scratch / export.name / GRAPH_FILE
    float32_copy(export / GRAPH_FILE, float32)
    rows = PHOTO_BATCH if export.name == Path(IMAGE_ENCODER_DIR).name else 1
    measured: dict[bool, list[tuple[float, float, float, int]]] = {False: [], True: []}
    log(f"the {export.name} graph as stored and with float32 weights: opened and run")
    for _ in range(runs):
        for copy, graph in ((False, export / GRAPH_FILE), (True, float32)):
            process = run_process([sys.executable, "-c", _OPEN_AND_RUN, str(graph), str(rows)], env)
            try:
                opened, first, warm = json.loads(process.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                raise BenchmarkError(f"running {graph} printed {process.stdout!r}") from None
            measured[copy].append((opened, first, warm, process.peak_rss_bytes))

    def spread(copy: bool, index: int) -> Spread:
        return Spread.of([figures[index] for figures in measured[copy]])

    return GraphWeights(
        encoder=export.name,
        kept=config.graph_weights,
        cosines=graph_cosines(config),
        rows=rows,
        stored_graph_bytes=graph_bytes(export / GRAPH_FILE),
        float32_graph_bytes=graph_bytes(float32),
        stored_open_s=spread(False, 0),
        float32_open_s=spread(True, 0),
        stored_first_run_s=spread(False, 1),
        float32_first_run_s=spread(True, 1),
        stored_warm_run_s=spread(False, 2),
        float32_warm_run_s=spread(True, 2),
        stored_peak_rss_bytes=spread(False, 3),
        float32_peak_rss_bytes=spread(True, 3),
    )


def image_or_text_config(export: Path) -> Any:
    from hanclip_model.fast_image.runtime import CONFIG_NAME, FastImageConfig

    if (export / CONFIG_NAME).is_file():
        return FastImageConfig.read(export)
    return text_config(export)


def graph_cosines(config: Any) -> dict[str, float]:
    """What each form of the graph's weights reached: for the image graph, float16's worst
    cosine to the float32 graph; for a text graph, each form's to torch."""
    if hasattr(config, "float16_cosine"):
        return {} if config.float16_cosine is None else {FLOAT16: config.float16_cosine}
    return dict(config.graph_weights_cosines)


def float32_copy(graph: Path, target: Path) -> None:
    """`graph` with its weights in float32 as `target`, in a folder of its own made new."""
    from hanclip_model import half_weights

    shutil.rmtree(target.parent, ignore_errors=True)
    target.parent.mkdir(parents=True)
    half_weights.float32_copy(graph, target)


def graph_bytes(graph: Path) -> int:
    from hanclip_model.half_weights import graph_files

    return sum(part.stat().st_size for part in graph_files(graph))


def preoptimized_copy(graph: Path, target: Path) -> None:
    """`graph` after ONNX Runtime's extended optimisations, saved as `target` (in a folder
    that exists) with its weights in `target.data`: the second graph exports stored beside
    each one before (tests/test_bundle_footprint.py makes old bundles with it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", target.name + ".data"
    )
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


if __name__ == "__main__":
    sys.exit(main())
