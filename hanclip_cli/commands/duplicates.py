"""`hanclip duplicates`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from hanclip_cli.common import (
    CONSOLE_NOTICES,
    console,
    handle_errors,
    print_json,
)
from hanclip_cli.options import JsonOption, LibraryOption, ModelOption

EPILOG = (
    "Examples:\n\n"
    "  hanclip duplicates\n\n"
    "  hanclip duplicates --in ~/사진/2023_제주 --threshold 0.97\n\n"
    "  hanclip duplicates --json > 중복.json"
)


@handle_errors
def duplicates(
    library: LibraryOption = None,
    model: ModelOption = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            "-t",
            help="Lowest cosine of two photos' image embeddings to count as copies (0-1); "
            "lower finds more, e.g. burst shots. Default: 0.99, measured by "
            "benchmarks/duplicates_threshold.py.",
            show_default=False,
        ),
    ] = None,
    folders: Annotated[
        list[Path] | None,
        typer.Option(
            "--in", metavar="FOLDER", help="Only photos at or below this folder (repeatable)."
        ),
    ] = None,
    include_offline: Annotated[
        bool,
        typer.Option(
            "--include-offline",
            help="Also compare photos of folders that are offline (an unplugged drive).",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """List groups of near-identical photos (burst shots, re-saved or resized copies), from
    the stored embeddings: no photo is read again, and nothing is deleted.

    Every two photos of a group are at least --threshold alike (a chain of copies of copies
    is not one group); a group's similarity is the lowest of them."""
    from hanclip_library.duplicates import DEFAULT_THRESHOLD, find_duplicates
    from hanclip_library.library import open_library

    with open_library(library, model, for_writing=False, notices=CONSOLE_NOTICES) as opened:
        groups = find_duplicates(
            opened,
            threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
            folders=folders or (),
            include_offline=include_offline,
        )
    if json_output:
        print_json([group.as_json() for group in groups])
        return
    if not groups:
        console.print(Text("no near-identical photos found"))
        return
    for number, group in enumerate(groups, start=1):
        console.print(
            Text(
                f"group {number}: {len(group.photos)} photos, similarity {group.similarity:.4f}",
                style="bold",
            )
        )
        for photo in group.photos:
            pixels = f"{photo.width}x{photo.height}" if photo.width and photo.height else "-"
            line = f"  {photo.path}  {_megabytes(photo.size)}  {pixels}  {photo.taken_at}"
            console.print(Text(line))


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size / 1000:.0f} kB"
