"""`hanclip search`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hanclip_cli.options import DeviceOption, JsonOption, LibraryOption, ModelOption
from hanclip_cli.search_command import SEARCH_EXAMPLES

EPILOG = SEARCH_EXAMPLES


def search(
    query: Annotated[
        list[str] | None,
        typer.Argument(
            help="What to look for, in Korean or any language; join ideas with + and - "
            "(바다 + 노을 - 사람), weigh one with W: (2:강아지)."
        ),
    ] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option("--image", "-i", help="Find photos similar to this photo (repeatable)."),
    ] = None,
    limit: Annotated[int, typer.Option("-n", "--limit", min=1, help="How many results.")] = 10,
    library: LibraryOption = None,
    model: ModelOption = None,
    device: DeviceOption = None,
    json_output: JsonOption = False,
    include_offline: Annotated[
        bool,
        typer.Option(
            "--include-offline",
            help="Also show photos of folders that are offline (an unplugged drive).",
        ),
    ] = False,
    add: Annotated[
        list[str] | None, typer.Option("--add", help="Add this text to the query (repeatable).")
    ] = None,
    sub: Annotated[
        list[str] | None,
        typer.Option("--sub", help="Subtract this text from the query (repeatable)."),
    ] = None,
    sub_image: Annotated[
        list[Path] | None,
        typer.Option("--sub-image", help="Subtract this photo from the query (repeatable)."),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option(
            help="Photos dated on or after this day, month or year (2023-07-14, 2023-07, 2023)."
        ),
    ] = None,
    before: Annotated[
        str | None, typer.Option(help="Photos dated before this day, month or year.")
    ] = None,
    folders: Annotated[
        list[Path] | None,
        typer.Option("--in", help="Only photos in this folder or below it (repeatable)."),
    ] = None,
    min_score: Annotated[
        float | None, typer.Option("--min-score", help="Leave out matches scoring below this.")
    ] = None,
    min_prob: Annotated[
        float | None,
        typer.Option(
            "--min-prob",
            help="Leave out matches whose match probability is below this (0 to 1; models "
            "that `hanclip train` calibrated).",
        ),
    ] = None,
    sort: Annotated[
        str,
        typer.Option(help="Order of the results: score, date (newest first) or date-asc."),
    ] = "score",
    paths: Annotated[
        bool, typer.Option("--paths", help="Print only the paths, one a line (for xargs).")
    ] = False,
    null: Annotated[
        bool, typer.Option("-0", "--null", help="Print only the paths, each ended by NUL.")
    ] = False,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write the results as one self-contained HTML page of thumbnails here.",
        ),
    ] = None,
    open_page: Annotated[
        bool, typer.Option("--open", help="Open the --html page in the default browser.")
    ] = False,
) -> None:
    """Search the library with words (e.g. '바다 위 노을'), photos (--image), or both.

    A photo's date is its EXIF date taken, else its file's modification time. A model that
    `hanclip train` calibrated also gives each match a match probability (the `match`
    column; `match_probability` in --json).
    """
    given = dict(locals())  # the parameters, named as SearchArgs names them
    from hanclip_cli.search_command import SearchArgs, run_search

    repeated = {k: tuple(v) or None for k, v in given.items() if isinstance(v, list | tuple)}
    run_search(SearchArgs(**{**given, **repeated}))
