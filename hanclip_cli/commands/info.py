"""`hanclip info`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from hanclip_cli.common import (
    console,
    handle_errors,
    offline_text,
    print_json,
)
from hanclip_cli.options import JsonOption, LibraryOption

if TYPE_CHECKING:
    from hanclip_library.library import LibrarySummary
    from hanclip_library.photo_text import TextCounts

EPILOG = (
    "Examples:\n\n"
    "  hanclip info\n\n"
    "  hanclip info --errors   # which photos could not be read, and why\n\n"
    "  hanclip info --json --library ~/사진/.hanclip"
)


@handle_errors
def info(
    library: LibraryOption = None,
    errors: Annotated[
        bool, typer.Option("--errors", help="List files that failed, and photos whose text did.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Where the library is, what it holds, and whether its database and search index are
    healthy.

    A damaged database is reported (`database  damaged: ...`, with the command that repairs
    it) and still exits 0: finding it is what `info` is for. `search` and `index` stop on it.
    """
    from hanclip_library.library import library_summary

    summary = library_summary(library, with_errors=errors)
    if json_output:
        print_json(summary.as_json())
        return
    console.print(Text(f"library      {summary.library}"))
    console.print(Text(_database_text(summary)))
    contents = summary.contents
    if contents is None:
        return  # not even that could be read: the database line says why
    health = contents.index
    hint = " (--errors lists them)" if contents.failed and not errors else ""
    text_hint = " (--errors lists the failed)" if contents.text.failed and not errors else ""
    lines = [
        f"photos       {contents.photos}",
        f"text         {_text_line(contents.text)}{text_hint}",
        f"failed       {contents.failed}{hint}",
        f"model        {contents.model}",
        f"image model  {contents.image_model}",
        f"folders      {', '.join(contents.roots) or '-'}",
        *(
            f"offline      {offline_text(f.path, f.reason)}: {f.photos} photo(s) kept, "
            f"since {f.since}"
            for f in contents.offline_folders
        ),
        *([f"excludes     {', '.join(contents.excludes)}"] if contents.excludes else []),
        f"index        {health.status}: {health.vectors} vectors"
        + (f", model fingerprint {health.fingerprint}" if health.fingerprint else ""),
    ]
    for line in lines:
        console.print(Text(line))
    for failure in summary.errors or ():
        console.print(Text(f"  {failure.path}: {failure.error}"))
    if summary.text_errors:
        console.print(Text("text not read:"))
    for text_failure in summary.text_errors or ():
        console.print(Text(f"  {text_failure.path}: {text_failure.error}"))


def _text_line(counts: TextCounts) -> str:
    """The photos by the text read in them, as the info line says it."""
    return (
        f"{counts.read} read ({counts.with_text} with text, {counts.no_text} without, "
        f"{counts.failed} failed), {counts.pending} not read yet"
    )


def _database_text(summary: LibrarySummary) -> str:
    from hanclip_library.store import repair_command

    if summary.database.status == "ok":
        return "database     ok"
    return (
        f"database     damaged: {summary.database.problem} "
        f"(`{repair_command(summary.library)}` saves what can still be read)"
    )
