"""`hanclip serve`: the library on a local web page, through uvicorn."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from hanclip_model.errors import HanclipError


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


def url_for(host: str, port: int) -> str:
    from hanclip_cli.serve.guard import WILDCARD_HOSTS

    shown = "127.0.0.1" if host in WILDCARD_HOSTS else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def serve(options: ServeOptions, *, announce=print, warn=print) -> None:
    """Open the library, bind, print the URL, and answer until Ctrl-C."""
    import uvicorn

    from hanclip_cli.serve.guard import allowed_hosts, is_loopback
    from hanclip_cli.serve.service import LibraryService
    from hanclip_cli.serve.web import build_app
    from hanclip_cli.thumbnails import ThumbnailCache

    if not 0 <= options.port <= 65535:
        raise HanclipError(f"--port {options.port}: give 0 to 65535 (0: any free port)")
    if options.thumbnail_cache_mb < 1:
        raise HanclipError("--thumbnail-cache-mb must be at least 1")
    sock = bind(options.host, options.port)
    try:
        service = LibraryService(options.library, options.model, device=options.device)
    except BaseException:
        sock.close()
        raise
    try:
        port = sock.getsockname()[1]
        thumbnails = ThumbnailCache.for_library(
            service.directory, options.thumbnail_cache_mb * 1024 * 1024
        )
        app = build_app(service, thumbnails, allowed_hosts(options.host, port, options.allow_hosts))
        url = url_for(options.host, port)
        if not is_loopback(options.host):
            warn(
                f"warning: --host {options.host} makes your photos visible to every machine "
                "that can reach this one on the network"
            )
        announce(
            f"serving {service.directory} ({service.run(service.photo_count)} photos) at {url} "
            "(Ctrl-C stops)"
        )
        if options.open_browser:
            import webbrowser

            webbrowser.open(url)
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", server_header=False
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        service.close()
