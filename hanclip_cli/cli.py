"""The `hanclip` command line: the Typer app, assembled from one module per command
(`hanclip_cli/commands/`), how its help reads, and its console entry point."""

from __future__ import annotations

import inspect
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import typer
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from hanclip_cli.commands import (
    bench,
    duplicates,
    export,
    forget,
    index,
    info,
    models,
    repair,
    search,
    serve,
    train,
    watch,
)
from hanclip_cli.common import console, err_console

# The placeholder a value is shown with in --help, by its type; anything else is TEXT.
_PLACEHOLDERS = {Path: "PATH", int: "INTEGER", float: "FLOAT"}


def _placeholder(param: Any) -> None:
    """Give `param` the placeholder a reader expects in --help (`--library PATH`, `PATHS...`,
    nothing after a flag) instead of the Python type recent Typer shows (`<list[Path]>`,
    `--json <bool>`). A placeholder the command declared itself is kept."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None:
        return  # a Typer that shows click's placeholders
    if param.param_type_name == "argument":
        if param.metavar is None:
            param.metavar = param.name.upper() + ("..." if param.nargs != 1 else "")
        # The name column says it all: no type column beside it.
        param.display_type_rich = lambda ctx: None
        return
    if param.metavar is not None:
        return
    if param.is_flag:
        param.metavar = ""
        return
    kind = descriptor.annotation
    if get_origin(kind) is list:  # a repeatable option: each use takes one value
        kind = get_args(kind)[0]
    param.metavar = _PLACEHOLDERS.get(kind, "TEXT")


def _paragraphs(text: str | None) -> str | None:
    """A docstring's paragraphs each as one line, for the help to wrap at the terminal's
    width (Typer's rich help keeps the source's line breaks: "found by⏎ their content")."""
    if not text:
        return text
    return "\n\n".join(p.replace("\n", " ") for p in inspect.cleandoc(text).split("\n\n"))


class _ReadableHelp:
    """What commands and groups share in their help: paragraphs rewrapped, placeholders."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _paragraphs(self.help)

    def get_params(self, ctx: typer.Context) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            _placeholder(param)
        return params


class HanclipCommand(_ReadableHelp, TyperCommand):
    """A command whose help reads well, its usage line in the usual form
    (`hanclip index [OPTIONS] PATHS...`)."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar.removesuffix("...")
                piece = name if param.required else f"[{name}]"
                pieces.append(piece + ("..." if param.nargs != 1 else ""))
        return pieces


class HanclipGroup(_ReadableHelp, TyperGroup):
    """A group whose help reads as its commands' does."""


SETTINGS = {
    "no_args_is_help": True,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": "rich",
    "cls": HanclipGroup,
    "context_settings": {"help_option_names": ["-h", "--help"]},
}

app = typer.Typer(
    name="hanclip",
    help="Search your own photos in Korean, on your own machine.\n\n"
    "Example: hanclip index ~/Photos, then hanclip search '바다 위 노을'",
    **SETTINGS,
)
_COMMANDS = (index, search, train, bench, info, repair, forget, duplicates, export, serve, watch)
for command in _COMMANDS:
    app.command(epilog=command.EPILOG, cls=HanclipCommand)(
        getattr(command, command.__name__.rsplit(".", 1)[1])
    )


def _show_version(shown: bool) -> None:
    if shown:
        console.print(Text(f"hanclip {version('hanclip')}"))
        raise typer.Exit()


@app.callback()
def _options(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ] = False,
) -> None:
    pass


# `hanclip models` alone lists the models (its callback runs without a subcommand).
models_app = typer.Typer(
    name="models", help=models.HELP, add_completion=False, **{**SETTINGS, "no_args_is_help": False}
)
models_app.callback(invoke_without_command=True, epilog=models.EPILOG, cls=HanclipGroup)(
    models.models
)
models_app.command("install", epilog=models.INSTALL_EPILOG, cls=HanclipCommand)(
    models.models_install
)
models_app.command("publish", epilog=models.PUBLISH_EPILOG, cls=HanclipCommand)(
    models.models_publish
)
app.add_typer(models_app, name="models")


def main() -> None:
    """Console entry point: usage errors become one `error:` line, like every other error."""
    args = sys.argv[1:] or ["--help"]
    try:
        code = app(args=args, prog_name="hanclip", standalone_mode=False)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        # Typer's (vendored) click usage errors: duck-typed, as their classes are private.
        format_message = getattr(exc, "format_message", None)
        if format_message is None or not isinstance(getattr(exc, "exit_code", None), int):
            raise
        message = " ".join(format_message().split())
        err_console.print(Text(f"error: {message} (see hanclip --help)", style="bold red"))
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
