"""The `hanclip` command line: the Typer app, assembled from one module per command
(`hanclip_cli/commands/`), and its console entry point."""

from __future__ import annotations

import sys

import typer
from rich.text import Text

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
)
from hanclip_cli.common import err_console

app = typer.Typer(
    name="hanclip",
    help="Search your own photos in Korean, on your own machine.\n\n"
    "Example: hanclip index ~/Photos, then hanclip search '바다 위 노을'",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
for command in (index, search, train, bench, info, repair, forget, duplicates, export, serve):
    app.command(epilog=command.EPILOG)(getattr(command, command.__name__.rsplit(".", 1)[1]))

models_app = typer.Typer(
    name="models",
    help=models.HELP,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
models_app.callback(invoke_without_command=True, epilog=models.EPILOG)(models.models)
models_app.command("install", epilog=models.INSTALL_EPILOG)(models.models_install)
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
        err_console.print(
            Text(f"error: {message} (see hanclip --help)", style="bold red"), soft_wrap=True
        )
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
