"""`hanclip serve`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from hanclip_cli.common import (
    console,
    err_console,
    handle_errors,
)
from hanclip_cli.options import DeviceOption, LibraryOption, ModelOption

if TYPE_CHECKING:
    from hanclip_cli.serve.server import WatchPlan

EPILOG = (
    "Examples:\n\n"
    "  hanclip serve   # then open http://127.0.0.1:8765/?q=바다+위+노을\n\n"
    "  hanclip serve --library ~/사진/.hanclip --port 9000 --open\n\n"
    "  hanclip serve --host 0.0.0.0 --allow-host nas.local   # other machines too (a warning)\n\n"
    "  hanclip serve --watch ~/Pictures   # 새 사진도 바로 검색됩니다 (hanclip watch, same process)"
)


@handle_errors
def serve(
    library: LibraryOption = None,
    model: ModelOption = None,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. Anything but 127.0.0.1 / localhost makes your photos "
            "visible to the network."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8765,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Also answer requests for this host name (repeatable), e.g. a name other "
            "machines use for this one. Others are refused (DNS-rebinding guard).",
            show_default=False,
        ),
    ] = None,
    thumbnail_cache_mb: Annotated[
        int,
        typer.Option(
            min=1, help="Most space the thumbnails kept in the library folder may take (MB)."
        ),
    ] = 512,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the page in the default browser.")
    ] = False,
    device: DeviceOption = None,
    idle_exit: Annotated[
        float | None,
        typer.Option(
            "--idle-exit",
            min=1,
            help="Stop after this many seconds without a request (default: run until Ctrl-C).",
            show_default=False,
        ),
    ] = None,
    watch: Annotated[
        list[Path] | None,
        typer.Option(
            "--watch",
            help="Keep this folder indexed meanwhile, as `hanclip watch` does (repeatable): "
            "new photos show in the next answer.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Look at your photos in a browser: search, thumbnails, similar photos.

    A local web app on http://127.0.0.1:8765/ (only this machine can reach it unless --host
    says otherwise). It only reads the library: an `index` may run meanwhile, and new photos
    show once it commits. With --watch it keeps folders indexed too, as `hanclip watch`.
    Thumbnails are made once and kept in the library folder.
    """
    from hanclip_cli.serve.server import ServeOptions
    from hanclip_cli.serve.server import serve as run_server

    options = ServeOptions(
        library=library,
        model=model,
        host=host,
        port=port,
        device=device,
        allow_hosts=tuple(allow_host or ()),
        thumbnail_cache_mb=thumbnail_cache_mb,
        open_browser=open_browser,
        idle_exit=idle_exit,
    )
    try:
        run_server(
            options,
            announce=lambda line: console.print(Text(line)),
            warn=lambda line: err_console.print(Text(line, style="yellow")),
            watch=_watch_plan(watch, library) if watch else None,
        )
    except KeyboardInterrupt:
        # Ctrl-C is how a server is stopped, not an error: uvicorn has shut down cleanly (and
        # raised it again), and the announcement in the library folder is withdrawn.
        return


def _watch_plan(paths: list[Path], library: Path | None) -> WatchPlan:
    """`--watch`'s folders, checked as `hanclip watch` checks them, its batches told as it
    tells them (no progress bar: the server's lines come between)."""
    from hanclip_cli.commands.index import _text_reader
    from hanclip_cli.commands.watch import ConsoleListener, watched_roots
    from hanclip_cli.common import make_progress
    from hanclip_cli.serve.server import WatchPlan

    listener = ConsoleListener(False, make_progress(disable=True), library="")
    return WatchPlan(
        tuple(watched_roots(paths, library)),
        listener,
        text_reader=lambda opened: _text_reader(opened, None, None, None),
    )
