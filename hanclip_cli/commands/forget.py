"""`hanclip forget`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from hanclip_cli.common import (
    console,
    handle_errors,
    print_json,
)
from hanclip_cli.options import JsonOption, LibraryOption

EPILOG = (
    "Examples:\n\n"
    "  hanclip forget /media/usb/사진   # a drive that is gone for good\n\n"
    "  hanclip forget ~/Pictures/옛날사진 --json"
)


@handle_errors
def forget(
    path: Annotated[Path, typer.Argument(help="Folder (or photo) to forget; need not exist.")],
    library: LibraryOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove the photos at or below PATH from the library, without scanning it.

    For a folder or drive that is gone for good (its photos were kept as offline). Only the
    library changes: your files are never touched.
    """
    from hanclip_library.forget import forget_folder

    report = forget_folder(library, path)
    if json_output:
        print_json(
            {
                "path": report.path,
                "removed": report.photos,
                "offline_folders_cleared": report.offline_folders,
                "failures_cleared": report.failures,
                "roots_dropped": list(report.roots),
                "library": report.library,
            }
        )
        return
    console.print(
        Text(f"{report.path}: {report.photos} photo(s) removed from the library {report.library}")
    )
