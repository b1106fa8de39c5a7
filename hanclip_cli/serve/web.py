"""The web app of `hanclip serve`: one page and the JSON API it uses (Starlette).

    GET /                               the page (a search is a URL: /?q=바다+위+노을)
    GET /api/info                       the library: photos, model
    GET /api/search?q=...&n=&offset=    a ranking, paged; filters as `search` has them
                                        (min_prob only with a calibrated model)
    GET /api/photos/{id}                one photo's record
    GET /api/photos/{id}/thumbnail      JPEG, ?size=grid|large
    GET /api/photos/{id}/original       the photo's own file
    GET /api/photos/{id}/similar        photos like it (an image query), paged

Photos are served by their id in the library, never by a path from the request. An unknown
id, route or a bad parameter is a JSON error (404, 400); so is anything unexpected (500).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from hanclip_cli.common import to_json
from hanclip_cli.serve.guard import LocalOnly
from hanclip_cli.serve.service import MAX_DEPTH, MAX_PAGE, LibraryService, Page
from hanclip_library.query import QueryTerm, parse_query
from hanclip_library.searcher import (
    SORT_ORDERS,
    SearchFilters,
    SearchHit,
    check_min_prob,
    hit_fields,
)
from hanclip_library.store import INT64_MAX, LibraryDamaged, PhotoRecord
from hanclip_library.thumbnails import (
    GRID_SIZE,
    LARGE_SIZE,
    ThumbnailCache,
    ThumbnailUnavailable,
    thumbnail_etag,
    thumbnail_etags,
)
from hanclip_model.errors import HanclipError, StorageError

log = logging.getLogger("hanclip.serve")

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
THUMBNAIL_SIZES = {"grid": GRID_SIZE, "large": LARGE_SIZE}
DEFAULT_PAGE = 30
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class BadRequest(Exception):
    """A parameter the API cannot take: 400 with this message."""


class Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return to_json(content).encode("utf-8")


def error(status: int, message: str) -> Json:
    return Json({"error": message}, status_code=status)


# -- parameters -------------------------------------------------------------------------


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}={value}: give {low} to {high}")
    return value


def _bool(params: Mapping[str, str], name: str) -> bool:
    text = params.get(name, "").lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadRequest(f"{name}={text!r}: give 1 or 0")


def _number(params: Mapping[str, str], name: str) -> float | None:
    text = params.get(name) or None
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise BadRequest(f"{name}={text!r} is not a number")
    return value


def _min_prob(params: Mapping[str, str], calibrated: bool) -> float | None:
    value = _number(params, "min_prob")
    if value is None:
        return None
    if not calibrated:
        raise BadRequest(
            "min_prob needs a calibrated model and this one is not calibrated (it gives "
            "scores only): use min_score instead"
        )
    try:
        check_min_prob(value, "min_prob")
    except HanclipError as exc:
        raise BadRequest(str(exc)) from None
    return value


def _filters(request: Request, calibrated: bool) -> SearchFilters:
    params = request.query_params
    folders = []
    for folder in params.getlist("in"):
        if not folder:
            continue
        if not (os.path.isabs(folder) or folder.startswith("~")):
            raise BadRequest(f"in={folder!r}: give a folder's full path, e.g. /home/me/사진/2024")
        folders.append(Path(folder))
    return SearchFilters(
        after=params.get("after") or None,
        before=params.get("before") or None,
        folders=tuple(folders),
        min_score=_number(params, "min_score"),
        min_prob=_min_prob(params, calibrated),
    )


def _paging(request: Request) -> tuple[int, int]:
    """(n, offset); a page that would reach past MAX_DEPTH is cut there, so the page a `more`
    announced can always be asked for with the same n."""
    params = request.query_params
    n = _int(params, "n", DEFAULT_PAGE, 1, MAX_PAGE)
    offset = _int(params, "offset", 0, 0, MAX_DEPTH - 1)
    return min(n, MAX_DEPTH - offset), offset


def _sort(request: Request) -> str:
    sort = request.query_params.get("sort") or "score"
    if sort not in SORT_ORDERS:
        raise BadRequest(f"sort={sort!r}: choose one of {', '.join(SORT_ORDERS)}")
    return sort


def _photo_id(request: Request) -> int:
    photo_id = request.path_params["photo_id"]
    if photo_id > INT64_MAX:
        raise HTTPException(404)
    return photo_id


# -- answers ----------------------------------------------------------------------------


def photo_urls(photo_id: int, record: PhotoRecord | None = None) -> dict[str, str]:
    version = large = ""
    if record is not None:
        grid_tag, large_tag = thumbnail_etags(record, (GRID_SIZE, LARGE_SIZE))
        version, large = f"?v={grid_tag}", f"&v={large_tag}"
    base = f"/api/photos/{photo_id}"
    return {
        "thumbnail": f"{base}/thumbnail{version}",
        "large": f"{base}/thumbnail?size=large{large}",
        "original": f"{base}/original",
        "similar": f"{base}/similar",
    }


def hit_json(hit: SearchHit, record: PhotoRecord | None) -> dict[str, object]:
    """A hit as `search --json` writes it (match_probability with a calibrated model),
    plus the photo's id and URLs."""
    assert hit.photo_id is not None
    return {**hit_fields(hit), "id": hit.photo_id, **photo_urls(hit.photo_id, record)}


class WebApp:
    """The routes, over one LibraryService and one ThumbnailCache."""

    def __init__(self, service: LibraryService, thumbnails: ThumbnailCache) -> None:
        self.service = service
        self.thumbnails = thumbnails
        # Thumbnails are decoded on the cores; more at once would only queue for them.
        self._decoding = asyncio.Semaphore(max(2, os.cpu_count() or 2))

    async def library(self, function, *args):
        return await asyncio.wrap_future(self.service.submit(function, *args))

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            raise HTTPException(404)
        return FileResponse(
            STATIC / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"}
        )

    async def info(self, request: Request) -> Response:
        opened = self.service.opened
        photos = await self.library(self.service.photo_count)
        return Json(
            {
                "library": str(opened.directory),
                "photos": photos,
                "model": opened.model.name,
                "max_page": MAX_PAGE,
                "max_depth": MAX_DEPTH,
            }
        )

    async def _page_json(self, page: Page, query: dict[str, object]) -> Response:
        records = await self.library(
            self.service.opened.store.records_by_ids, [hit.photo_id for hit in page.hits]
        )
        return Json(
            {
                **query,
                "offset": page.offset,
                "results": [hit_json(hit, records.get(hit.photo_id)) for hit in page.hits],
                "more": page.more,
                "offline_left_out": page.offline_left_out,
            }
        )

    def _search_options(self, request: Request) -> dict[str, object]:
        n, offset = _paging(request)
        return {
            "limit": n,
            "offset": offset,
            "include_offline": _bool(request.query_params, "include_offline"),
            "filters": _filters(request, self.service.opened.model.calibration is not None),
            "sort": _sort(request),
        }

    async def search(self, request: Request) -> Response:
        q = request.query_params.get("q", "")
        if not q.strip():
            raise BadRequest("the search query is empty: give some words, e.g. q=바다 위 노을")
        options = self._search_options(request)
        terms = parse_query(q.split())
        page = await self.library(lambda: self.service.search(terms, **options))
        opened = self.service.opened
        # Which library and model answered: `hanclip search` checks both (serve/discovery.py).
        about = {"library": str(opened.directory), "fingerprint": opened.model.fingerprint}
        return await self._page_json(page, {"query": q, "n": options["limit"], **about})

    async def _record(self, request: Request) -> PhotoRecord:
        photo_id = _photo_id(request)
        record = await self.library(self.service.opened.store.record_by_id, photo_id)
        if record is None:
            raise HTTPException(404, f"no photo with id {photo_id} in this library")
        return record

    async def photo(self, request: Request) -> Response:
        photo_id = _photo_id(request)
        found = await self.library(self.service.photo, photo_id)
        if found is None:
            raise HTTPException(404, f"no photo with id {photo_id} in this library")
        record = found.record
        return Json(
            {
                "id": record.id,
                "path": record.path,
                "taken_at": record.date,
                "date_source": record.date_source,
                "width": record.width,
                "height": record.height,
                "offline": found.offline,
                **photo_urls(record.id, record),
            }
        )

    async def similar(self, request: Request) -> Response:
        photo_id = _photo_id(request)
        options = self._search_options(request)
        record = await self._record(request)
        terms = (QueryTerm(weight=1.0, photo_id=record.id),)
        page = await self.library(lambda: self.service.search(terms, leave_out=photo_id, **options))
        return await self._page_json(page, {"photo": photo_id, "n": options["limit"]})

    async def thumbnail(self, request: Request) -> Response:
        size_name = request.query_params.get("size") or "grid"
        if size_name not in THUMBNAIL_SIZES:
            raise BadRequest(f"size={size_name!r}: choose grid or large")
        size = THUMBNAIL_SIZES[size_name]
        record = await self._record(request)
        etag = thumbnail_etag(record, size)
        versioned = request.query_params.get("v") == etag
        headers = {
            "ETag": f'"{etag}"',
            # A versioned URL names these very bytes: the browser need not ask again.
            "Cache-Control": "private, max-age=31536000, immutable"
            if versioned
            else "private, no-cache",
        }
        if request.headers.get("if-none-match", "").strip('W/"') == etag:
            return Response(status_code=304, headers=headers)
        async with self._decoding:
            try:
                thumbnail = await asyncio.to_thread(self.thumbnails.get, record, size)
            except ThumbnailUnavailable as exc:
                raise HTTPException(404, str(exc)) from None
        headers["ETag"] = f'"{thumbnail.etag}"'
        return Response(thumbnail.data, media_type="image/jpeg", headers=headers)

    async def original(self, request: Request) -> Response:
        record = await self._record(request)
        if not os.path.isfile(record.path):
            raise HTTPException(
                404, f"{record.path} is not there now (an unplugged drive, or moved)"
            )
        return FileResponse(
            record.path,
            filename=os.path.basename(record.path),
            content_disposition_type="inline",
            headers={"Cache-Control": "private, no-cache"},
        )


async def _http_error(request: Request, exc: HTTPException) -> Response:
    detail = exc.detail if isinstance(exc.detail, str) else "error"
    if exc.status_code == 404 and detail == "Not Found":  # Starlette's own: no such route
        detail = "not found: see / for the page and /api/search for the API"
    return error(exc.status_code, detail)


async def _bad_request(request: Request, exc: Exception) -> Response:
    return error(400, str(exc))


async def _library_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, LibraryDamaged | StorageError):
        return error(503, str(exc))
    return error(400, str(exc))  # what the search says of its input (a bad date, ...)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("error answering %s: %r", request.url.path, exc, exc_info=exc)
    return error(500, f"internal error: {type(exc).__name__}")


def build_app(
    service: LibraryService, thumbnails: ThumbnailCache, allowed_hosts: frozenset[str]
) -> LocalOnly:
    """The ASGI app: routes behind the Host check (see `guard`)."""
    web = WebApp(service, thumbnails)
    routes = [
        Route("/", web.page),
        Route("/static/{name}", web.static),
        Route("/api/info", web.info),
        Route("/api/search", web.search),
        Route("/api/photos/{photo_id:int}", web.photo),
        Route("/api/photos/{photo_id:int}/thumbnail", web.thumbnail),
        Route("/api/photos/{photo_id:int}/original", web.original),
        Route("/api/photos/{photo_id:int}/similar", web.similar),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: _http_error,
            BadRequest: _bad_request,
            HanclipError: _library_error,
            Exception: _unexpected,
        },
    )
    return LocalOnly(app, allowed_hosts)
