"""What each built-in model costs on this machine's CPU, all of them in one run.

    python benchmarks/model_costs.py [--models a,b] [--quick] [--work DIR] [--json PATH]
                                     [--costs PATH]

Every built-in is built at its real size with seeded random weights (open_clip's own configs;
the XLM-R and NLLB text towers from local configs of their real sizes, never fetched; stand-in
tokenizers of the same kind and vocabulary size: `hanclip_eval.random_models`) and saved as a
checkpoint, as a download would be. Measured, each in a fresh process of its own:

- index: photos/s of the image tower through torch on batches of 32 preprocessed photos (what
  `index` embeds per batch; decoding the photos costs the same for every model and is left
  out), and that process's peak RSS;
- search: the path a user's `search` takes. The text side's ONNX export is made first, in a
  process of its own, into the work folder's cache (`fast_clip_text` for an open_clip text
  tower, `fast_text` for a sentence-transformers one; verified at cosine >= 0.999 against
  torch, or refused with the reason kept); then a fresh process opens the model as `search`
  does (`load_bundle(..., few_texts=True)`: the cached export, no torch import) and encodes
  one short Korean query, timed from its spawn (cold), and that process's peak RSS; then, in
  another process that opens it as `serve` does (weights pre-packed), that query warm
  (median). Where the export was refused the product, and so this figure, goes through
  torch: `query_path` says which, with the reason;
- search through torch, beside it: the same in a process that loads the text side through
  torch (the whole checkpoint, as the torch fallback does);
- download: the checkpoints' size, parameters x 4 bytes (float32), both towers.

`--costs` (default `hanclip_model/measured_costs.json` for a full run) is what `hanclip models`
shows and the default-model rule (`hanclip_model.catalog.pick_default`) reads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchkit import entry
from benchkit.processes import ProcessRun, log, median, run_process

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COSTS = ROOT / "hanclip_model" / "measured_costs.json"
QUERY = "바다 위 노을"
BATCH = 32


@dataclass(frozen=True)
class Sizes:
    batches: int  # timed image batches (one more is run first, untimed)
    repeats: int  # warm queries


FULL, QUICK = Sizes(batches=4, repeats=20), Sizes(batches=1, repeats=5)


@dataclass(frozen=True)
class ModelCost:
    model: str
    image_model: str
    index_photos_per_s: float
    index_cost_x: float  # the baseline's time per photo = 1
    query_ms: float  # the product's path (`query_path`): ONNX where the export verified
    cold_search_s: float
    index_peak_bytes: int
    search_peak_bytes: int
    download_mb: float
    query_path: str  # "onnx", or "torch: <why the export was refused>"
    torch_query_ms: float  # the text side through torch
    torch_cold_search_s: float
    torch_search_peak_bytes: int


@dataclass(frozen=True)
class Results:
    machine: str
    batch: int
    query: str
    models: tuple[ModelCost, ...]
    default_model: str  # what the rule picks from these figures and the published ones


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    example = "python benchmarks/model_costs.py --models mclip,xlmr-b32 --quick"
    parser = entry.parser(__doc__, example, work="default: a temp dir; reuse one to keep models")
    parser.add_argument("--models", help="comma-separated built-in names (default: all)")
    parser.add_argument("--quick", action="store_true", help="one batch, five warm queries")
    parser.add_argument(
        "--costs",
        type=Path,
        help=f"write the measured costs here ({DEFAULT_COSTS.relative_to(ROOT)} for a full run)",
    )
    # The measuring children run through this same file.
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- children: each figure in a fresh process ---------------------------------------------------


def child_index(spec: str, batches: str) -> None:
    import torch

    from hanclip_model.encoders import ClipEncoder

    encoder = ClipEncoder(spec, device="cpu")
    size = encoder.image_size
    pixels = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    encoder.embed_pixels(pixels)  # warm: the first batch pays for allocation
    start = time.perf_counter()
    for _ in range(int(batches)):
        encoder.embed_pixels(pixels)
    elapsed = time.perf_counter() - start
    print(json.dumps({"photos_per_s": int(batches) * BATCH / elapsed}))


def child_search_torch(text_spec: str, spawned: str, repeats: str) -> None:
    from hanclip_model.encoders import TextEncoder

    encoder = TextEncoder(text_spec, device="cpu")
    _time_queries(encoder.embed, spawned, repeats, {})


def child_export_text(text_spec: str) -> None:
    """The text side's verified ONNX export in the cache (`HANCLIP_CACHE`), made now; prints
    the reason when it was refused."""
    from hanclip_model.bundle import clip_text_source
    from hanclip_model.cache import cache_root
    from hanclip_model.errors import BundleError

    try:
        if clip_text_source(text_spec) is not None:
            from hanclip_model.fast_clip_text.cache import ensure_fast_clip_text

            ensure_fast_clip_text(text_spec, cache_root())
        else:
            from hanclip_model.fast_text.cache import ensure_fast_text

            ensure_fast_text(text_spec, cache_root())
    except BundleError as exc:
        print(json.dumps({"refused": str(exc)}))
        return
    print(json.dumps({"refused": None}))


def child_search(bundle: str, spawned: str, repeats: str) -> None:
    """A query as hanclip encodes it: the bundle's text side, ONNX where its export is cached
    and verified, else torch. Cold as `search` opens it (`few_texts`: ready sooner); warm
    (`repeats` > 0) as `serve` keeps it open (weights pre-packed: faster per query)."""
    from hanclip_model.model import load_bundle

    model = load_bundle(bundle, device="cpu", few_texts=int(repeats) == 0)

    def after_first() -> dict[str, object]:
        # `fast_text` stays true only where the query went through the ONNX export.
        path = "onnx" if model.fast_text else f"torch: {model.fast_text_error or 'turned off'}"
        return {"query_path": path, "torch_imported": "torch" in sys.modules}

    _time_queries(model.embed_texts, spawned, repeats, after_first)


def _time_queries(embed: Callable, spawned: str, repeats: str, extra: object) -> None:
    """Print the cold time (spawn to the first vector) and the warm median of `embed`, and
    `extra` (a dict, or a function giving one after the first query)."""
    embed([QUERY])
    cold = time.time() - float(spawned)
    found = extra() if callable(extra) else extra
    times = []
    for _ in range(int(repeats)):
        start = time.perf_counter()
        embed([QUERY])
        times.append((time.perf_counter() - start) * 1000)
    warm = median(times) if times else None
    print(json.dumps({"cold_s": cold, "query_ms": warm, **found}))


# -- the parent ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    image_spec: str
    text_spec: str
    checkpoint_bytes: int

    def bundle(self, folder: Path) -> Path:
        """A bundle naming these encoders (no heads), as a built-in names its models."""
        from hanclip_model.bundle import write_bundle

        write_bundle(
            folder,
            name=folder.name,
            image_model=self.image_spec,
            text_model=self.text_spec,
            heads=None,
        )
        return folder


def prepare(name: str, models_dir: Path) -> Prepared:
    """The built-in `name` at real size, random weights, saved under `models_dir`."""
    from hanclip_eval.random_models import (
        DISTILBERT_MULTILINGUAL,
        random_minilm,
        save_random_clip_vit_b32,
        save_random_open_clip,
    )
    from hanclip_model.bundle import BUILTIN_BUNDLES, clip_text_model, clip_text_source
    from hanclip_model.encoders import parse_image_model

    spec = BUILTIN_BUNDLES[name]
    if clip_text_source(spec.text_model) is not None:
        model, tag = parse_image_model(spec.image_model)
        local = save_random_open_clip(model, tag or "", models_dir / name)
        return Prepared(local, clip_text_model(local), _weights_bytes(models_dir / name))
    # mclip: OpenAI's ViT-B/32 (the whole CLIP checkpoint) + a DistilBERT-multilingual with
    # its Dense layer to 512, as sentence-transformers' clip-ViT-B-32-multilingual-v1.
    image = save_random_clip_vit_b32(models_dir / "vit-b-32")
    text = models_dir / f"{name}-text"
    if not (text / "modules.json").is_file():
        random_minilm(text, shape=DISTILBERT_MULTILINGUAL, dense_out=512)
    size = _weights_bytes(models_dir / "vit-b-32") + _weights_bytes(text)
    return Prepared(image, str(text), size)


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))


def measure(names: Sequence[str], work: Path, sizes: Sizes) -> Results:
    from benchkit.environment import cpu_model

    from hanclip_model.bundle import BUILTIN_BUNDLES
    from hanclip_model.catalog import CATALOG, MeasuredCost, MeasuredCosts, pick_default

    # The children import this checkout's packages, whatever else is installed.
    env = {**_environ(), "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # The exports live in the work folder's own cache, never the user's.
    env |= {"HANCLIP_CACHE": str(work / "cache"), "HANCLIP_DEVICE": "cpu"}
    me = [sys.executable, str(Path(__file__).resolve()), "--child"]
    rows = []
    for name in names:
        log(f"{name}: building at real size with random weights")
        prepared = prepare(name, work / "models")
        log(f"{name}: index")
        index = run_process([*me, "index", prepared.image_spec, str(sizes.batches)], env)
        log(f"{name}: exporting the text side to ONNX (verified against torch)")
        exported = json.loads(run_process([*me, "export-text", prepared.text_spec], env).stdout)
        if exported["refused"]:
            log(f"{name}: export refused, searches go through torch: {exported['refused']}")
        log(f"{name}: search")
        bundle = prepared.bundle(work / "bundles" / name)
        search = run_process([*me, "search", str(bundle), repr(time.time()), "0"], env)
        warm = run_process([*me, "search", str(bundle), repr(time.time()), str(sizes.repeats)], env)
        if json.loads(search.stdout)["torch_imported"]:
            log(f"{name}: the search imported torch: its cold figure is not the ONNX path's")
        log(f"{name}: search through torch")
        torch_search = run_process(
            [*me, "search-torch", prepared.text_spec, repr(time.time()), str(sizes.repeats)], env
        )
        rows.append(
            _Row(name, prepared, json.loads(index.stdout)["photos_per_s"], index.peak_rss_bytes,
                 search, json.loads(warm.stdout)["query_ms"], torch_search)
        )  # fmt: skip
    base = next((r.photos_per_s for r in rows if r.name == "mclip"), None)
    models = tuple(
        ModelCost(
            model=row.name,
            image_model=BUILTIN_BUNDLES[row.name].image_model,
            index_photos_per_s=row.photos_per_s,
            index_cost_x=base / row.photos_per_s if base else float("nan"),
            query_ms=row.warm_query_ms,
            cold_search_s=row.searched["cold_s"],
            index_peak_bytes=row.index_peak,
            search_peak_bytes=row.search.peak_rss_bytes,
            download_mb=row.prepared.checkpoint_bytes / 1e6,
            query_path=row.searched["query_path"],
            torch_query_ms=row.torch_searched["query_ms"],
            torch_cold_search_s=row.torch_searched["cold_s"],
            torch_search_peak_bytes=row.torch_search.peak_rss_bytes,
        )
        for row in rows
    )
    machine = f"{cpu_model()}, {_cores()} cores, torch CPU"
    costs = MeasuredCosts(machine, {m.model: _cost(m, MeasuredCost) for m in models})
    return Results(machine, BATCH, QUERY, models, pick_default(CATALOG, costs).model)


@dataclass(frozen=True)
class _Row:
    """One model's measurements, before they are figures."""

    name: str
    prepared: Prepared
    photos_per_s: float
    index_peak: int
    search: ProcessRun  # cold, as `search`
    warm_query_ms: float  # as `serve`
    torch_search: ProcessRun

    @property
    def searched(self) -> dict:
        return json.loads(self.search.stdout)

    @property
    def torch_searched(self) -> dict:
        return json.loads(self.torch_search.stdout)


def _cost(row: ModelCost, kind: type) -> object:
    return kind(
        index_photos_per_s=row.index_photos_per_s,
        query_ms=row.query_ms,
        cold_search_s=row.cold_search_s,
        index_peak_mib=row.index_peak_bytes / 1024**2,
        search_peak_mib=row.search_peak_bytes / 1024**2,
        download_mb=row.download_mb,
    )


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def _cores() -> int:
    from hanclip_model.device import usable_cores

    return usable_cores()


def write_costs(path: Path, results: Results) -> None:
    """The file `hanclip models` reads: these rows merged over the ones already there."""
    from hanclip_model.catalog import MeasuredCost
    from hanclip_model.files import atomic_write_text

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    models = dict(data.get("models") or {})
    for row in results.models:
        models[row.model] = vars(_cost(row, MeasuredCost))
    data = {
        "machine": results.machine,
        "command": "python benchmarks/model_costs.py",
        "method": "real-size architectures, random weights, on the CPU: photos through torch, "
        "queries through the verified ONNX export where there is one (see the script)",
        "models": models,
    }
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        kind, *rest = args.child
        children = {
            "index": child_index,
            "export-text": child_export_text,
            "search": child_search,
            "search-torch": child_search_torch,
        }
        children[kind](*rest)
        return 0
    from benchkit.workspace import work_directory

    from hanclip_model.bundle import SEARCH_BUILTINS

    names = args.models.split(",") if args.models else list(SEARCH_BUILTINS)
    unknown = sorted(set(names) - set(SEARCH_BUILTINS))
    if unknown:
        print(f"error: not a built-in search model: {', '.join(unknown)}", file=sys.stderr)
        return 2
    costs = args.costs or (None if args.quick else DEFAULT_COSTS)

    def run() -> Results:
        results = measure(names, work, QUICK if args.quick else FULL)
        if costs is not None:
            write_costs(costs, results)
        return results

    with work_directory(args.work) as work:
        return entry.finish(run, args.json_path, title="hanclip built-in model costs (CPU)")


if __name__ == "__main__":
    sys.exit(main())
