"""`hanclip serve`: the library on a local web page, through uvicorn."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hanclip_model.errors import HanclipError

if TYPE_CHECKING:
    from hanclip_cli.serve.guard import Limits
    from hanclip_library.library import OpenLibrary
    from hanclip_library.text_pass import TextReader
    from hanclip_library.watch import Watcher, WatchListener


@dataclass(frozen=True)
class ServeOptions:
    library: Path | None = None
    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    device: str | None = None
    allow_hosts: tuple[str, ...] = ()
    thumbnail_cache_mb: int = 512
    open_browser: bool = False
    idle_exit: float | None = None  # seconds without a request before it stops by itself
    limits: Limits | None = None  # requests at once and waiting (None: guard.Limits())


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on `host`:`port` (0: a free port), or a one-line error."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise HanclipError(f"--host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise HanclipError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


class IdleExit:
    """The site, stamped at every request; `watch` stops a uvicorn server once `idle_s`
    seconds pass with none (a thread; a request still running counts as not idle)."""

    def __init__(self, site, idle_s: float) -> None:
        import time

        self.site, self.idle_s = site, idle_s
        self._clock = time.monotonic
        self._last = self._clock()
        self._running = 0

    async def __call__(self, scope, receive, send) -> None:
        self._running += 1
        try:
            await self.site(scope, receive, send)
        finally:
            self._running -= 1
            self._last = self._clock()

    def idle_for(self) -> float:
        return 0.0 if self._running else self._clock() - self._last

    def watch(self, server) -> None:
        import threading
        import time

        def run() -> None:
            while not server.should_exit:
                left = self.idle_s - self.idle_for()
                if left <= 0:
                    server.should_exit = True
                    return
                time.sleep(min(left, 1.0))

        threading.Thread(target=run, name="hanclip-idle-exit", daemon=True).start()


@dataclass(frozen=True)
class WatchPlan:
    """What `serve --watch` watches, and how it tells what it does."""

    roots: tuple[Path, ...]
    listener: WatchListener
    text_reader: Callable[[OpenLibrary], TextReader | None] = lambda opened: None


class BackgroundWatch:
    """`serve --watch`: `hanclip watch` on a thread of the server's process, at a low CPU
    priority where the system gives threads their own (Linux). It opens the library for
    writing on that thread (SQLite's rule) and commits through its own connection, so the
    service sees each batch at its next request (`service.py`: the index is brought in line
    after another connection commits)."""

    def __init__(self, options: ServeOptions, plan: WatchPlan, warn: Callable[[str], None]):
        self._opened: Future[Watcher] = Future()

        def run() -> None:
            from hanclip_cli.common import CONSOLE_NOTICES
            from hanclip_library.library import open_library
            from hanclip_library.watch import Watcher, WatchOptions, in_background

            in_background()  # this thread and the model's threads it starts, not the server's
            try:
                opened = open_library(
                    options.library,
                    options.model,
                    for_writing=True,
                    device=options.device,
                    notices=CONSOLE_NOTICES,
                )
            except BaseException as exc:
                self._opened.set_exception(exc)
                return
            with opened:
                try:
                    reader = plan.text_reader(opened)
                    watcher = Watcher(
                        opened, plan.roots, WatchOptions(), plan.listener, text_reader=reader
                    )
                except BaseException as exc:
                    self._opened.set_exception(exc)
                    return
                self._opened.set_result(watcher)
                try:
                    watcher.run()
                except HanclipError as exc:
                    warn(f"watch stopped: {exc}")

        self._thread = threading.Thread(target=run, name="hanclip-watch", daemon=True)
        self._thread.start()

    def started(self) -> None:
        """Once the library is open (made, for a new one); raises what opening it raised."""
        self._opened.result()

    def stop(self) -> None:
        """Let the batch in hand finish, then end the thread."""
        if self._opened.exception() is None:
            self._opened.result().stop()
        self._thread.join()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def url_for(host: str, port: int) -> str:
    from hanclip_cli.serve.guard import WILDCARD_HOSTS

    shown = "127.0.0.1" if host in WILDCARD_HOSTS else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def serve(
    options: ServeOptions, *, announce=print, warn=print, watch: WatchPlan | None = None
) -> None:
    """Open the library, bind, print the URL, and answer until Ctrl-C; with `watch`, keep
    its folders indexed meanwhile."""
    import uvicorn

    from hanclip_cli.serve.discovery import remove_server_file, write_server_file
    from hanclip_cli.serve.guard import Limits, Throttle, allowed_hosts, is_loopback
    from hanclip_cli.serve.routes import build_site
    from hanclip_cli.serve.service import LibraryService
    from hanclip_library.thumbnails import ThumbnailCache

    if not 0 <= options.port <= 65535:
        raise HanclipError(f"--port {options.port}: give 0 to 65535 (0: any free port)")
    if options.thumbnail_cache_mb < 1:
        raise HanclipError("--thumbnail-cache-mb must be at least 1")
    sock = bind(options.host, options.port)
    background = None
    try:
        if watch is not None:
            # First: it makes the library when there is none yet.
            background = BackgroundWatch(options, watch, warn)
            background.started()
        service = LibraryService(options.library, options.model, device=options.device)
    except BaseException:
        if background is not None:
            background.stop()
        sock.close()
        raise
    try:
        port = sock.getsockname()[1]
        thumbnails = ThumbnailCache.for_library(
            service.directory, options.thumbnail_cache_mb * 1024 * 1024
        )
        hosts = allowed_hosts(options.host, port, options.allow_hosts)
        site = Throttle(build_site(service, thumbnails, hosts), options.limits or Limits())
        url = url_for(options.host, port)
        if not is_loopback(options.host):
            warn(
                f"warning: --host {options.host} makes your photos visible to every machine "
                "that can reach this one on the network"
            )
        # SIGTERM ends the process through `finally`, so the announcement below is withdrawn
        # (uvicorn, once running, stops gracefully, then raises it again under this handler).
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        # `hanclip search` on this library asks this server from now on (serve/discovery.py):
        # the socket listens already, so a search that comes before uvicorn runs just waits.
        write_server_file(service.directory, url, service.opened.model.fingerprint)
        announce(
            f"serving {service.directory} ({service.run(service.photo_count)} photos) at {url} "
            "(Ctrl-C stops)"
        )
        if options.open_browser:
            import webbrowser

            webbrowser.open(url)
        idle = IdleExit(site, options.idle_exit) if options.idle_exit is not None else None
        config = uvicorn.Config(
            idle or site, log_level="warning", access_log=False, lifespan="off", server_header=False
        )
        server = uvicorn.Server(config)
        if idle is not None:
            idle.watch(server)
        server.run(sockets=[sock])
    finally:
        remove_server_file(service.directory)  # only if it is still this process's
        sock.close()
        if background is not None:
            background.stop()
        service.close()
