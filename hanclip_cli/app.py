"""The `hanclip` command line: thin commands that parse, call one function, and render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from hanclip_cli.common import (
    console,
    err_console,
    handle_errors,
    make_progress,
    notice,
    print_json,
)

app = typer.Typer(
    name="hanclip",
    help="Search your own photos in Korean, on your own machine.\n\n"
    "Example: hanclip index ~/Photos, then hanclip search '바다 위 노을'",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

LibraryOption = Annotated[
    Path | None,
    typer.Option(
        "--library",
        "-l",
        help="Library directory (default: env HANCLIP_HOME, else the user data directory).",
        show_default=False,
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model bundle directory or built-in name (mclip). Default: env HANCLIP_MODEL, "
        "else the library's model, else a bundle in the library's models/, else mclip.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DeviceOption = Annotated[
    str | None,
    typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present)."),
]


def _open(library: Path | None, model: str | None, *, create: bool, device: str | None = None):
    from hanclip_cli.library import Library, choose_model, library_dir
    from hanclip_model import load_bundle

    lib = Library(library_dir(library), create=create)
    choice = choose_model(model, lib)
    if choice.notice:
        notice(choice.notice)
    return lib, load_bundle(choice.model, device=device), choice.model


@app.command(
    epilog="Examples:\n\n"
    "  hanclip index ~/Pictures\n\n"
    "  hanclip index ~/Pictures/여행 ~/Pictures/가족 --json\n\n"
    "  hanclip index ~/Pictures --model ./my-bundle"
)
@handle_errors
def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders (or single photos) to index.")],
    library: LibraryOption = None,
    model: ModelOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Photos per model batch.")] = 32,
    reembed: Annotated[
        bool, typer.Option("--reembed", help="Embed every photo again (new image model).")
    ] = False,
    include_hidden: Annotated[
        bool, typer.Option("--include-hidden", help="Also walk hidden folders and files.")
    ] = False,
    device: DeviceOption = None,
    json_output: JsonOption = False,
) -> None:
    """Index photos: embed new or changed files, prune deleted ones, recognise moves.

    Runs again in seconds: unchanged photos are skipped, renamed or moved ones are found by
    their content hash, so nothing is embedded twice.
    """
    import os

    from hanclip_cli.indexer import index_library

    lib, bundle, model_name = _open(library, model, create=True, device=device)
    roots = [Path(os.path.abspath(os.path.expanduser(p))) for p in paths]
    with lib.writer_lock(), make_progress() as progress:
        report = index_library(
            lib,
            bundle,
            model_name,
            roots,
            batch_size=batch_size,
            reembed=reembed,
            include_hidden=include_hidden,
            progress=progress,
        )
    if json_output:
        failures = [{"path": p, "error": e} for p, e in report.failures]
        print_json({**report.counts(), "failures": failures, "library": str(lib.directory)})
    else:
        counts = ", ".join(f"{v} {k}" for k, v in report.counts().items())
        console.print(f"{lib.directory}: {counts}", highlight=False)
        for path, error in report.failures[:20]:
            err_console.print(Text(f"  could not read {path}: {error}"))
    if report.failed:
        more = f" ({len(report.failures) - 20} not listed)" if len(report.failures) > 20 else ""
        notice(f"warning: {report.failed} file(s) could not be indexed{more}")


@app.command(
    epilog="Examples:\n\n"
    "  hanclip search '바다 위 노을'\n\n"
    "  hanclip search '누워있는 고양이' -n 20 --json\n\n"
    "  hanclip search --image ~/Pictures/IMG_0001.jpg"
)
@handle_errors
def search(
    query: Annotated[
        str | None, typer.Argument(help="What to look for, in Korean or any language.")
    ] = None,
    image: Annotated[
        Path | None, typer.Option("--image", "-i", help="Find photos similar to this photo.")
    ] = None,
    limit: Annotated[int, typer.Option("-n", "--limit", min=1, help="How many results.")] = 10,
    library: LibraryOption = None,
    model: ModelOption = None,
    device: DeviceOption = None,
    json_output: JsonOption = False,
) -> None:
    """Search the library with words (e.g. '바다 위 노을') or with a photo (--image)."""
    from hanclip_cli.common import fail
    from hanclip_cli.searcher import normalise_query, search_library

    if (query is None) == (image is None):
        fail("give a query or --image PATH (one of them), e.g. hanclip search '바다 위 노을'")
    if query is not None:
        query = normalise_query(query)
    lib, bundle, model_name = _open(library, model, create=False, device=device)
    hits = search_library(lib, bundle, model_name, text=query, image=image, limit=limit)
    if json_output:
        print_json(
            [
                {
                    "rank": h.rank,
                    "path": h.path,
                    "score": round(h.score, 6),
                    "taken_at": h.taken_at,
                    "width": h.width,
                    "height": h.height,
                }
                for h in hits
            ]
        )
        return
    table = Table(box=None, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("score")
    table.add_column("path", overflow="fold")  # a path cut short is useless: wrap it whole
    table.add_column("taken", no_wrap=True)
    for hit in hits:
        table.add_row(str(hit.rank), f"{hit.score:.3f}", Text(hit.path), hit.taken_at or "")
    console.print(table)


def main() -> None:
    app()
