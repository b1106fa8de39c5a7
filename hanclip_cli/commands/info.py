"""`hanclip info`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from hanclip_cli.common import (
    console,
    handle_errors,
    offline_text,
    print_json,
)
from hanclip_cli.options import JsonOption, LibraryOption

EPILOG = (
    "Examples:\n\n"
    "  hanclip info\n\n"
    "  hanclip info --errors   # which photos could not be read, and why\n\n"
    "  hanclip info --json --library ~/사진/.hanclip"
)


@handle_errors
def info(
    library: LibraryOption = None,
    errors: Annotated[bool, typer.Option("--errors", help="List files that failed.")] = False,
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
        print_json(summary)
        return
    console.print(Text(f"library      {summary['library']}"))
    console.print(Text(_database_text(summary)), soft_wrap=True)  # a command to copy whole
    if "photos" not in summary:
        return  # not even that could be read: the database line says why
    health = summary["index"]
    hint = " (--errors lists them)" if summary["failed"] and not errors else ""
    lines = [
        f"photos       {summary['photos']}",
        f"failed       {summary['failed']}{hint}",
        f"model        {summary['model']}",
        f"image model  {summary['image_model']}",
        f"folders      {', '.join(summary['roots']) or '-'}",
        *(
            f"offline      {offline_text(f['path'], f['reason'])}: {f['photos']} photo(s) kept, "
            f"since {f['since']}"
            for f in summary["offline_folders"]
        ),
        *([f"excludes     {', '.join(summary['excludes'])}"] if summary["excludes"] else []),
        f"index        {health['status']}: {health['vectors']} vectors"
        + (f", model fingerprint {health['fingerprint']}" if health["fingerprint"] else ""),
    ]
    for line in lines:
        console.print(Text(line))
    for failure in summary.get("errors", []):
        console.print(Text(f"  {failure['path']}: {failure['error']}"))


def _database_text(summary: dict) -> str:
    from hanclip_library.store import repair_command

    database = summary["database"]
    if database["status"] == "ok":
        return "database     ok"
    return (
        f"database     damaged: {database['detail']} "
        f"(`{repair_command(summary['library'])}` saves what can still be read)"
    )
