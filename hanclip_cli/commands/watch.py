"""`hanclip watch`."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from hanclip_cli.common import (
    CONSOLE_NOTICES,
    console,
    err_console,
    fail,
    handle_errors,
    make_progress,
    offline_text,
    resumable,
)
from hanclip_cli.options import (
    DeviceOption,
    ExcludeOption,
    IncludeHiddenOption,
    JsonOption,
    LibraryOption,
    ModelOption,
)

if TYPE_CHECKING:
    from rich.progress import Progress

    from hanclip_library.watch import BatchReport, Watcher

EPILOG = (
    "Examples:\n\n"
    "  hanclip watch ~/Pictures   # 새 사진이 들어오면 바로 검색됩니다\n\n"
    "  hanclip watch ~/Pictures/여행 /media/usb/사진 --json   # one line per batch\n\n"
    "  hanclip serve --watch ~/Pictures   # the web page and the watch in one process\n\n"
    "At login: docs/watch.md (a systemd user unit, a launchd agent)."
)

SettleOption = Annotated[
    float,
    typer.Option(
        "--settle",
        min=0.1,
        help="Seconds a changed photo must stay unchanged before it is indexed (a copy in "
        "progress keeps changing).",
    ),
]


@handle_errors
@resumable("the photos indexed so far are kept")
def watch(
    paths: Annotated[list[Path], typer.Argument(help="Folders to keep indexed.")],
    library: LibraryOption = None,
    model: ModelOption = None,
    settle: SettleOption = 0.5,
    include_hidden: IncludeHiddenOption = False,
    exclude: ExcludeOption = None,
    ocr: Annotated[
        bool | None,
        typer.Option(
            "--ocr/--no-ocr",
            help="Read the text in new photos, as `index` does (default: on when a text engine "
            "is installed).",
            show_default=False,
        ),
    ] = None,
    background: Annotated[
        bool,
        typer.Option(
            "--background/--foreground",
            help="Run at a low CPU priority (nice 10), giving way to what you are doing; "
            "--foreground: at the priority it was started with.",
        ),
    ] = True,
    device: DeviceOption = None,
    json_output: JsonOption = False,
) -> None:
    """Keep the library current: index the folders, then index each change as it happens.

    First a normal `index` (what changed while nothing watched), then new, changed, deleted,
    renamed and copied photos within seconds, through the file system's events. A folder that
    goes away (a drive unplugged) goes offline, its photos kept; back, it is indexed again
    with nothing embedded twice. Another `index` or `forget` may run meanwhile. Ctrl-C or
    SIGTERM finishes the batch in hand and stops. It runs at a low CPU priority.
    """
    from hanclip_cli.commands.index import RichProgress, _text_reader
    from hanclip_library.indexer import IndexOptions
    from hanclip_library.library import open_library
    from hanclip_library.watch import WatchOptions, in_background, watch_library

    # As `index`: the model's idle OpenMP threads sleep instead of spinning.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    roots = watched_roots(paths, library)
    if background:  # before the model loads: its threads start at this priority
        in_background(whole_process=True)
    opened = open_library(library, model, for_writing=True, device=device, notices=CONSOLE_NOTICES)
    progress = make_progress(disable=json_output)
    index = IndexOptions(include_hidden=include_hidden, exclude=tuple(exclude or ()))
    with opened:
        reader = None if ocr is False else _text_reader(opened, None, None, ocr)
        listener = ConsoleListener(json_output, progress, str(opened.directory))
        try:
            watch_library(
                opened,
                roots,
                WatchOptions(index=index, settle_s=settle),
                listener,
                progress=RichProgress(progress),
                text_reader=reader,
                started=stop_on_signals,
            )
        finally:
            progress.stop()


def watched_roots(paths: Sequence[Path], library: Path | None) -> list[Path]:
    """The folders to watch, absolute; a file is refused, and so is a missing folder under
    which the library knows no photo (one it knows photos under is offline: watched for)."""
    from hanclip_library.indexer import check_roots
    from hanclip_library.library import library_dir
    from hanclip_library.store import DB_NAME, PhotoStore

    roots = [Path(os.path.abspath(os.path.expanduser(p))) for p in paths]
    for root in roots:
        if root.exists() and not root.is_dir():
            fail(f"{root} is not a folder: watch folders (`hanclip index` takes single photos)")
    directory = library_dir(library)
    if not (directory / DB_NAME).exists():
        check_roots(roots, None)
    elif not all(root.exists() for root in roots):
        store = PhotoStore(directory, create=False)
        try:
            check_roots(roots, store)
        finally:
            store.close()
    return roots


def stop_on_signals(watcher: Watcher) -> None:
    """SIGTERM and Ctrl-C let the batch in hand finish, then stop; a second Ctrl-C stops at
    once (what was committed is kept, as with `index`)."""

    def on_signal(signum: int, frame: object) -> None:
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            # os.write, not the console: a signal handler may interrupt the console's lock.
            os.write(2, b"stopping after the batch in hand (Ctrl-C again stops at once)\n")
        watcher.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


# Shown in a batch's line when not zero, in this order.
_SHOWN = ("added", "updated", "moved", "removed", "excluded", "failed", "offline", "pruned")


class ConsoleListener:
    """A watch on the terminal: the catch-up as `index` shows it, then a line per batch
    (`--json`: one JSON object a line on stdout, nothing else there)."""

    def __init__(self, json_output: bool, progress: Progress, library: str) -> None:
        self._json = json_output
        self._progress = progress
        self._library = library

    def watching(self, online: Sequence[str], offline: Sequence[str]) -> None:
        for root in offline:
            err_console.print(Text(f"offline: {root}: watching for it to come back", "yellow"))
        if online:
            what = ", ".join(online)
            err_console.print(Text(f"watching {what} (Ctrl-C stops)"), highlight=False)

    def applied(self, batch: BatchReport) -> None:
        if batch.catch_up:
            self._progress.stop()  # its live display would wake ten times a second
        report = batch.report
        if self._json:
            line = json.dumps({**batch.as_json(), "library": self._library}, ensure_ascii=False)
            sys.stdout.write(line.encode("utf-8", "backslashreplace").decode("utf-8") + "\n")
            sys.stdout.flush()
            return
        counts = report.counts()
        if batch.catch_up:
            changes = ", ".join(f"{v} {k}" for k, v in counts.items())
        else:
            changes = ", ".join(f"{counts[k]} {k}" for k in _SHOWN if counts[k]) or "no change"
        when = batch.finished_at[11:19]
        console.print(Text(f"{when} {changes} ({batch.seconds:.1f} s)"), highlight=False)
        for folder in report.offline_folders:
            line = f"offline: {offline_text(folder.path, folder.reason)}: its {folder.photos} "
            err_console.print(Text(line + "photo(s) kept", style="yellow"))
        for failure in report.failures[:20]:
            err_console.print(Text(f"  could not read {failure.path}: {failure.error}"))
