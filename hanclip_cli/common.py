"""What every command shares: consoles, the one-line error exit, progress bars, JSON output."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import wraps
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from rich.console import Console
from rich.markup import escape

from hanclip_model.errors import HanclipError
from hanclip_model.storage import storage_error

if TYPE_CHECKING:
    from rich.progress import Progress

USAGE_ERROR = 2

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Print `error: message` on one line to stderr and exit with `code`."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    # SystemExit rather than typer.Exit: the fast `search` path runs without Typer.
    raise SystemExit(code)


def notice(message: str) -> None:
    err_console.print(f"[yellow]{escape(message)}[/]", highlight=False, soft_wrap=True)


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
