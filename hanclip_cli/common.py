"""What every command shares: consoles, the one-line error exit, progress bars, JSON output."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from functools import wraps
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from hanclip_model.errors import HanclipError
from hanclip_model.storage import storage_error

if TYPE_CHECKING:
    from rich.progress import Progress

USAGE_ERROR = 2

# Rich never breaks a line of ours: a terminal folds a long one at its edge, and a pipe or a
# narrow window gets it whole (a path broken in two names no file).
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Print `error: message` on one line to stderr and exit with `code`."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    # SystemExit rather than typer.Exit: the fast `search` path runs without Typer.
    raise SystemExit(code)


def notice(message: str) -> None:
    err_console.print(f"[yellow]{escape(message)}[/]", highlight=False)


def handle_errors(command: F) -> F:
    """Turn a HanclipError raised by a command into the one-line error exit, and so a full
    disk, a read-only one or a vanished folder met on a path no command explains itself."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except HanclipError as exc:
            fail(str(exc))
        except (OSError, sqlite3.Error) as exc:
            error = storage_error(exc, None)
            if error is None:
                raise
            fail(str(error))
        except KeyboardInterrupt:
            fail("interrupted", code=130)

    return wrapper  # type: ignore[return-value]


def resumable(kept: str) -> Callable[[F], F]:
    """For a long run that keeps its work as it goes: Ctrl-C says what is `kept` and that the
    same command goes on from there (exit 130, as any interrupted command)."""

    def decorate(command: F) -> F:
        @wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return command(*args, **kwargs)
            except KeyboardInterrupt:
                fail(f"interrupted: {kept}; run the same command again to go on", code=130)

        return wrapper  # type: ignore[return-value]

    return decorate


_UNBOUNDED = 100_000  # columns: wider than any table


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[str | Text]], right: Collection[str] = ()
) -> None:
    """Rows under their headers when the table fits the console; else the headers, then one
    record a line, cells two spaces apart, so no cell (a path) is ever split. `right`: the
    headers of the columns aligned right."""
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for header in headers:
        table.add_column(header, justify="right" if header in right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    unbounded = console.options.update_width(_UNBOUNDED)  # the width it wants, not the console's
    if console.measure(table, options=unbounded).maximum <= console.width:
        console.print(table)
        return
    console.print(Text("  ".join(headers), style="bold"))
    for row in rows:
        console.print(Text("  ").join(Text(c) if isinstance(c, str) else c for c in row))


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def to_json(data: Any) -> str:
    """JSON text that is valid UTF-8 whatever it holds: Korean stays readable, and the lone
    surrogates of an undecodable file name become \\udcXX escapes instead of an error."""
    text = json.dumps(data, ensure_ascii=False, indent=2)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def print_json(data: Any) -> None:
    """JSON on stdout (no rich markup, no wrapping)."""
    sys.stdout.write(to_json(data) + "\n")
    sys.stdout.flush()


def make_progress(*, disable: bool = False) -> Progress:
    """A rich progress bar on stderr, so --json output on stdout stays clean."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=disable,
        transient=False,
    )


OFFLINE_REASONS = {
    "missing": "is missing",
    "empty": "is empty (a drive not mounted?)",
    "unreadable": "cannot be read",
}


def offline_text(path: str, reason: str) -> str:
    """An offline folder and why, as `index` and `info` say it."""
    return f"{path} {OFFLINE_REASONS.get(reason, reason)}"


class ConsoleNotices:
    """A library's notices on stderr: the line, and a spinner while a wait lasts."""

    def notice(self, message: str) -> None:
        notice(message)

    def waiting(self, message: str) -> AbstractContextManager[object]:
        return err_console.status(message)


CONSOLE_NOTICES = ConsoleNotices()
