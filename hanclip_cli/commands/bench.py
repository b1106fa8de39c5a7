"""`hanclip bench`: choose the models, run the benchmark, render one table."""

from __future__ import annotations

import platform
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from hanclip_cli.common import (
    console,
    handle_errors,
    make_progress,
    print_json,
)
from hanclip_cli.options import DeviceOption, JsonOption, LibraryOption
from hanclip_eval.runner import BenchRow
from hanclip_model.bundle import SEARCH_BUILTINS
from hanclip_model.device import require_torch
from hanclip_model.errors import HanclipError

# Every built-in search model, then the baselines that are no bundle.
BASELINES = (*SEARCH_BUILTINS, "clip-translate", "koclip")
# Data sets with published Korean figures (`hanclip_model.catalog`): the Markdown table shows
# them beside the same figure measured here.
PUBLISHED_FIGURES = {"xtd10-ko": "xtd10", "crossmodal3600": "crossmodal3600"}

COLUMNS = {
    "retrieval": [
        ("i2t_r1", "I→T R@1"),
        ("i2t_r5", "R@5"),
        ("i2t_r10", "R@10"),
        ("t2i_r1", "T→I R@1"),
        ("t2i_r5", "R@5"),
        ("t2i_r10", "R@10"),
        ("rsum", "RSUM"),
        ("i2t_rprec", "I→T R-P"),
        ("t2i_rprec", "T→I R-P"),
    ],
    "classification": [("accuracy", "accuracy"), ("macro_f1", "macro-F1")],
    "latency": [
        ("query_p50_ms", "query p50 ms"),
        ("query_p95_ms", "query p95 ms"),
        ("images_per_s", "photos/s"),
    ],
}
PERCENT_KEYS = {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"}
PERCENT_KEYS |= {"i2t_rprec", "t2i_rprec", "accuracy", "macro_f1"}


@dataclass
class BenchResult:
    dataset: str
    kind: str
    split: str | None
    size: dict[str, int]
    rows: list[BenchRow]
    notes: list[str] = field(default_factory=list)


def default_models(library: Path | None) -> list[str]:
    """The user's HanCLIP bundle (one with heads) if one is configured, then the baselines."""
    from hanclip_library.library import Library, NoModel, choose_model, library_dir
    from hanclip_library.store import DB_NAME
    from hanclip_model import resolve_bundle

    directory = library_dir(library)
    models = list(BASELINES)
    try:
        if (directory / DB_NAME).exists():
            with Library(directory, create=False) as lib:
                choice = choose_model(None, directory, lib)
        else:
            choice = choose_model(None, directory)
    except NoModel:  # its settings were lost: there is no bundle of the user's to compare
        return models
    try:
        if resolve_bundle(choice.model).heads_path is not None:
            models.insert(0, choice.model)
    except HanclipError:
        pass
    return models


def run_bench(
    *,
    dataset: str,
    data_dir: Path | None,
    models: list[str],
    split: str | None,
    limit: int | None,
    templates: list[str],
    random_weights: bool,
    batch_size: int,
    library: Path | None,
    device: str | None,
) -> BenchResult:
    from hanclip_eval import runner as runs

    runs.check_bench_dataset(dataset)
    if random_weights and dataset != runs.LATENCY:
        raise HanclipError("--random-weights only makes sense with --dataset latency")
    if random_weights:  # the random models are made with torch; asked before any display
        require_torch("hanclip bench --random-weights", instead=None)
    if random_weights:
        names = models or list(runs.RANDOM_MODEL_NAMES)
    else:
        names = models or default_models(library)
    if dataset == runs.LATENCY:
        with make_progress() as progress, tempfile.TemporaryDirectory() as workdir:
            if random_weights:
                factories = runs.random_weight_models(Path(workdir), names, device)
            else:
                factories = _factories(names, device)
            rows = runs.bench_latency(factories, progress=_reporter(progress))
        notes = [f"{platform.machine()}, {_cpu_note()}"]
        if random_weights:
            notes.append("random weights: real architectures and cost, meaningless outputs")
        return BenchResult("latency", "latency", None, {}, rows, notes)

    from hanclip_eval.datasets import DATASETS, DEFAULT_TEMPLATES, load_dataset

    if data_dir is None:
        raise HanclipError(f"--data-dir is needed for {dataset}")
    # Read (and so check) the data before any progress display opens: errors stay one line.
    data = load_dataset(dataset, data_dir, split=split, limit=limit)
    info = DATASETS[dataset]
    factories = _factories(names, device)
    with make_progress() as progress:
        if info.kind == "retrieval":
            rows = runs.bench_retrieval(
                data, factories, batch_size=batch_size, progress=_reporter(progress)
            )
            size = {"images": len(data.image_paths), "captions": len(data.captions)}
        else:
            chosen = templates or list(DEFAULT_TEMPLATES)
            rows = runs.bench_classification(
                data, factories, chosen, batch_size=batch_size, progress=_reporter(progress)
            )
            size = {"images": len(data.labels), "classes": len(data.class_names_ko)}
    chosen_split = split or (info.splits[0] if info.splits else None)
    skipped = getattr(data, "skipped", 0)
    notes = [f"images skipped: {skipped}"] if skipped else []
    return BenchResult(dataset, info.kind, chosen_split, size, rows, notes)


def _reporter(progress):
    """Progress callback for hanclip_eval.runner: one bar per (model, stage)."""
    tasks: dict[tuple[str, str], object] = {}

    def report(model: str, stage: str, done: int, total: int) -> None:
        key = (model, stage)
        if key not in tasks:
            tasks[key] = progress.add_task(f"{_display_name(model)}: {stage}", total=total)
        progress.update(tasks[key], advance=done)

    return report


def _factories(names: list[str], device: str | None):
    from hanclip_eval.baselines import load_embedder

    return {name: (lambda name=name: load_embedder(name, device)) for name in names}


def _cpu_note() -> str:
    import os

    return f"{os.cpu_count()} CPU cores"


def _format(key: str, value: float) -> str:
    if key in PERCENT_KEYS:
        return f"{100 * value:.1f}"
    if key == "rsum":
        return f"{value:.1f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _display_name(model: str) -> str:
    path = Path(model)
    return path.name if path.is_absolute() else model


def render_bench(result: BenchResult, *, json_output: bool, markdown: bool) -> None:
    columns = COLUMNS[result.kind]
    if json_output:
        print_json(
            {
                "dataset": result.dataset,
                "kind": result.kind,
                "split": result.split,
                "size": result.size,
                "notes": result.notes,
                "rows": [asdict(row) for row in result.rows],
            }
        )
        return
    title = result.dataset + (f" ({result.split})" if result.split else "")
    size = ", ".join(f"{v} {k}" for k, v in result.size.items())
    caption = "; ".join(x for x in [size, *result.notes] if x)
    if markdown:
        header = ["model", *(label for _, label in columns)]
        lines = [f"**{title}**" + (f" — {caption}" if caption else ""), ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        published = _published(result)
        if published is not None:
            header += [f"{published.label} here", "published"]
            lines[-2:] = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in result.rows:
            cells = [_display_name(row.model)]
            if row.error:
                cells += [f"unavailable: {row.error.splitlines()[0]}"] + [""] * (len(header) - 2)
            else:
                cells += [_format(key, row.metrics[key]) for key, _ in columns]
                if published is not None:
                    cells += published.cells(row)
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if published is not None:
            lines += ["", f"published: {published.sources}"]
        console.print("\n".join(lines), markup=False, highlight=False)
        return
    table = Table(title=title, caption=caption or None, header_style="bold")
    table.add_column("model", no_wrap=True)
    for _, label in columns:
        table.add_column(label, justify="right")
    for row in result.rows:
        if row.error:
            table.add_row(_display_name(row.model), *["—"] * len(columns))
        else:
            cells = [_format(key, row.metrics[key]) for key, _ in columns]
            table.add_row(_display_name(row.model), *cells)
    # Redirected output is 80 columns to rich; widen rather than cut figures short.
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    out = console
    if not console.is_terminal and natural > console.width:
        out = Console(width=natural, file=console.file)
    out.print(table)
    for row in result.rows:
        if row.error:
            console.print(Text(f"{_display_name(row.model)} unavailable: {row.error}", "dim"))


@dataclass(frozen=True)
class _Published:
    """The published Korean figure of a data set and the same figure measured here."""

    dataset: str  # a `hanclip_model.catalog` data set key
    label: str
    sources: str

    def cells(self, row: BenchRow) -> list[str]:
        from hanclip_model.catalog import CROSSMODAL3600, published

        m = row.metrics
        if self.dataset == CROSSMODAL3600:
            here = 100 * (m["t2i_r1"] + m["t2i_r5"] + m["t2i_r10"]) / 3
        else:
            here = 100 * m["t2i_r10"]
        entry = published(row.model)
        figure = entry.figure(self.dataset) if entry is not None else None
        return [f"{here:.1f}", f"{figure.value:.1f}" if figure is not None else "—"]


def _published(result: BenchResult) -> _Published | None:
    """The published column of `result`'s Markdown table: only for a data set with published
    figures, compared by a model that has one."""
    from hanclip_model.catalog import CROSSMODAL3600, published

    dataset = PUBLISHED_FIGURES.get(result.dataset)
    if dataset is None:
        return None
    figures = [published(row.model) for row in result.rows if not row.error]
    found = [f for entry in figures if entry for f in entry.figures if f.dataset == dataset]
    if not found:
        return None
    label = "T→I mean R@1/5/10" if dataset == CROSSMODAL3600 else "T→I R@10"
    return _Published(dataset, label, "; ".join(sorted({f.source for f in found})))


EPILOG = (
    "Examples:\n\n"
    "  hanclip bench --dataset xtd10-ko --data-dir ~/data/xtd10 --model ./hanclip-ko\n\n"
    "  hanclip bench --dataset cifar10 --data-dir ~/data --template '{}의 사진' --markdown\n\n"
    "  hanclip bench --dataset latency --random-weights"
)


@handle_errors
def bench(
    dataset: Annotated[
        str,
        typer.Option(
            help="mscoco-ko, xtd10-ko, crossmodal3600, kocc3m, jsonl (retrieval); cifar10, "
            "cifar100, stl10, caltech101 (zero-shot); latency (speed)."
        ),
    ],
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder holding the dataset's files.")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Model to compare (repeatable): a bundle, mclip, clip-translate, koclip. "
            "Default: your HanCLIP bundle (if any), mclip, clip-translate, koclip.",
            show_default=False,
        ),
    ] = None,
    split: Annotated[str | None, typer.Option(help="mscoco-ko: karpathy-test or val.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Use the first N images.")] = None,
    template: Annotated[
        list[str] | None,
        typer.Option(help="Zero-shot prompt, e.g. '{}의 사진' (repeatable; averaged)."),
    ] = None,
    random_weights: Annotated[
        bool,
        typer.Option(
            "--random-weights", help="latency: real architectures, random weights (offline)."
        ),
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    library: LibraryOption = None,
    device: DeviceOption = None,
    json_output: JsonOption = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")] = False,
) -> None:
    """Recall@K, zero-shot accuracy / macro-F1 and latency, every model in one run."""

    result = run_bench(
        dataset=dataset,
        data_dir=data_dir,
        models=model or [],
        split=split,
        limit=limit,
        templates=template or [],
        random_weights=random_weights,
        batch_size=batch_size,
        library=library,
        device=device,
    )
    render_bench(result, json_output=json_output, markdown=markdown)
