"""`hanclip models` and `hanclip models install`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from hanclip_cli.common import (
    console,
    handle_errors,
    notice,
    print_json,
)
from hanclip_cli.options import JsonOption, LibraryOption

HELP = "The models this library can use: list them, install a trained bundle."
EPILOG = (
    "Examples:\n\n"
    "  hanclip models\n\n"
    "  hanclip models --json --library ~/사진/.hanclip\n\n"
    "  hanclip models install ./한국어-모델 --default   # then: hanclip search '바다 위 노을'"
)


@handle_errors
def models(
    ctx: typer.Context,
    library: LibraryOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the built-in and installed model bundles: image and text model, language, what
    it was trained on, whether it is calibrated, and which one `search` uses now."""
    if ctx.invoked_subcommand is not None:
        return
    from hanclip_library.installed import list_models
    from hanclip_library.library import library_dir

    entries = list_models(library_dir(library))
    if json_output:
        print_json([entry.as_json() for entry in entries])
        return
    _print_models(entries)


def _print_models(entries) -> None:
    """Each model as three short lines rather than a table row: the encoders' names alone are
    as wide as a narrow terminal, and a table would fold them mid-name."""
    for entry in entries:
        mark = "*" if entry.in_use else " "
        name = Text(f"{mark} {entry.name}{' (default)' if entry.default else ''}", style="bold")
        if entry.error:
            console.print(name, Text(f"{entry.kind}  unreadable: {entry.error}"), sep="  ")
            continue
        calibrated = "yes" if entry.calibrated else "no"
        facts = f"{entry.kind}  language {entry.language or '—'}  calibrated {calibrated}"
        console.print(name, Text(facts), sep="  ")
        encoders = f"{_short_model(entry.image_model)} + {_short_model(entry.text_model)}"
        console.print(Text(f"    encoders    {encoders}"))
        console.print(Text(f"    trained on  {entry.trained_on}"))
    for entry in entries:
        if entry.in_use:
            where = f" ({entry.path})" if entry.path else ""
            console.print(Text(f"* in use: {entry.name}{where}"))
    for entry in entries:
        if entry.card:
            console.print(Text(f"card of {entry.name}: {entry.card}"))
    console.print(Text("full names and paths: hanclip models --json"), style="dim")


def _short_model(spec: str | None) -> str:
    """An encoder as a table has room for: a folder by its name, a hub id without the
    sentence-transformers organisation (`--json` has them whole)."""
    if not spec:
        return "—"
    if spec.startswith("local-dir:"):
        return Path(spec[len("local-dir:") :]).name + "/"
    if spec.startswith("/"):
        return Path(spec).name + "/"
    return spec.removeprefix("sentence-transformers/")


INSTALL_EPILOG = (
    "Examples:\n\n"
    "  hanclip models install ./한국어-모델\n\n"
    "  hanclip models install ~/학습결과/hanclip-ko --name 한국어 --default\n\n"
    "  hanclip models install ./새-모델 --name 한국어 --force --json   # replace it"
)


@handle_errors
def models_install(
    source: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="The bundle folder (the one holding hanclip.json)."),
    ],
    library: LibraryOption = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Folder name under the library's models/ (default: the bundle's own name).",
            show_default=False,
        ),
    ] = None,
    default: Annotated[
        bool,
        typer.Option(
            "--default",
            help="Make it the library's model: `search` and `index` use it from now on "
            "(when the library's photos were embedded by another image model, says the "
            "`index --reembed` command that moves them).",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a different bundle installed as NAME.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Copy a trained bundle into the library's models/ (checked first, moved in whole)."""
    from hanclip_library.installed import install_bundle
    from hanclip_library.library import library_dir

    result = install_bundle(library_dir(library), source, name, default, force=force)
    for note in result.notes:
        notice(note)
    if json_output:
        print_json(result.as_json())
        return
    if result.already_installed:
        line = f"{result.name} is installed already: {result.path}"
    else:
        replaced = " (replacing the bundle that was there)" if result.replaced else ""
        line = f"installed {result.name} into {result.path}{replaced}"
    console.print(Text(line))
    if result.default:
        console.print(Text(f"{result.name} is the library's default model"))
    if result.in_use:
        console.print(Text(f"`hanclip search` now uses {result.name}"))
