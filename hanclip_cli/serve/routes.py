"""The web app of `hanclip serve`: one page and the JSON API it uses (Starlette).

    GET /                               the page (a search is a URL: /?q=바다+위+노을)
    GET /api/info                       the library: photos, model
    GET /api/search?q=...&n=&offset=    a ranking, paged; filters as `search` has them
                                        (min_prob only with a calibrated model): the
                                        parameters of a SearchRequest (`to_params`);
                                        a hit found by its text has `text_match`
    GET /api/photos/{id}                one photo's record, with the text read in it
    GET /api/photos/{id}/thumbnail      JPEG, ?size=grid|large
    GET /api/photos/{id}/original       the photo's own file
    GET /api/photos/{id}/similar        photos like it (an image query), paged
    GET /api/timeline?cursor=&n=60      the photos newest first, by month, paged by the
                                        cursor each page gives; the date and folder
                                        filters and include_offline as search has them
    GET /api/folders                    the library's folders, in tree order, with counts
    GET /api/folder?path=&cursor=&n=    the photos directly in one folder, as the timeline
    GET /api/duplicates?threshold=&n=&offset=   `hanclip duplicates`' groups, paged

Photos are served by their id in the library, never by a path from the request. An unknown
id, route or a bad parameter is a JSON error (404, 400); so is anything unexpected (500). An
error about a parameter names it (`after`, never `--after`) and carries a `problem` (reason,
parameter, value) that the page says in its own language (`hanclip_cli/ui_text.py`, the
language of the page and its words).
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import math
import os
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from hanclip_cli.common import to_json
from hanclip_cli.serve.guard import LocalOnly
from hanclip_cli.serve.service import LibraryService, Page
from hanclip_cli.ui_text import accept_language, say, ui_strings
from hanclip_library.duplicates import DEFAULT_THRESHOLD, DuplicateGroup
from hanclip_library.photo_text import Reading
from hanclip_library.query import SearchInputError
from hanclip_library.request import HTTP, MAX_DEPTH, MAX_PAGE, SearchRequest
from hanclip_library.searcher import SearchHit, hit_fields
from hanclip_library.store import INT64_MAX, LibraryDamaged, PhotoRecord
from hanclip_library.thumbnails import (
    GRID_SIZE,
    LARGE_SIZE,
    ThumbnailCache,
    ThumbnailUnavailable,
    thumbnail_etag,
    thumbnail_etags,
)
from hanclip_library.timeline import (
    TIMELINE_PAGE,
    TimelineCursor,
    TimelinePage,
    checked_folder,
)
from hanclip_model.errors import HanclipError, StorageError

log = logging.getLogger("hanclip.serve")

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {
    "page.js": "text/javascript",
    "common.js": "text/javascript",
    "views.js": "text/javascript",
    "style.css": "text/css",
    "views.css": "text/css",
}
THUMBNAIL_SIZES = {"grid": GRID_SIZE, "large": LARGE_SIZE}


class PhotoFile(FileResponse):
    """A photo's own file, read in large chunks: a 12-MP JPEG in a few reads on a worker
    thread instead of some sixty (Starlette's 64 KiB), each a hop between threads and a write
    on the event loop that every other request waits behind (benchmarks/serve_load.py)."""

    chunk_size = 1024 * 1024


class BadRequest(Exception):
    """A parameter the API cannot take: 400 with this message."""


class Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return to_json(content).encode("utf-8")


def error(status: int, message: str, problem: dict[str, str | None] | None = None) -> Json:
    body: dict[str, object] = {"error": message}
    if problem is not None:
        body["problem"] = problem
    return Json(body, status_code=status)


@cache
def page_html(language: str) -> str:
    """index.html in `language`: its {{key}} placeholders filled from the UI strings, which the
    page's script also gets whole (the body's data-ui)."""
    strings = ui_strings(language)
    filled = {key: html.escape(text) for key, text in strings.items()}
    filled["help_terms"] = html.escape(say(language, "help_terms", plus="{+}", minus="{-}"))
    filled["help_terms"] = (
        filled["help_terms"].replace("{+}", "<kbd>+</kbd>").replace("{-}", "<kbd>-</kbd>")
    )
    filled["lang"] = language
    filled["ui"] = html.escape(json.dumps(strings, ensure_ascii=False), quote=True)
    page = (STATIC / "index.html").read_text("utf-8")
    for key, text in filled.items():
        page = page.replace("{{" + key + "}}", text)
    return page


# -- parameters -------------------------------------------------------------------------


def _photo_id(request: Request) -> int:
    photo_id = request.path_params["photo_id"]
    if photo_id > INT64_MAX:
        raise HTTPException(404)
    return photo_id


def _whole(request: Request, name: str, default: int, low: int, high: int) -> int:
    """The whole number parameter `name` (`default` when absent), from `low` to `high`."""
    text = request.query_params.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SearchInputError(
            f"{name}={text!r} is not a whole number", "not_a_whole_number", name, text
        ) from None
    if not low <= value <= high:
        raise SearchInputError(f"{name}={value}: give {low} to {high}", "out_of_range", name, value)
    return value


def _threshold(request: Request) -> float:
    text = request.query_params.get("threshold")
    if not text:
        return DEFAULT_THRESHOLD
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:  # NaN fails too
        raise SearchInputError(
            f"threshold={text!r}: give a similarity above 0 and at most 1, e.g. 0.99",
            "not_a_threshold",
            "threshold",
            text,
        )
    return value


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


def record_json(record: PhotoRecord, offline: bool) -> dict[str, object]:
    """A photo of the timeline, a folder or a duplicate group: its record as the large view
    shows it, and its URLs."""
    return {
        "id": record.id,
        "path": record.path,
        "size": record.size,
        "taken_at": record.date,
        "date_source": record.date_source,
        "width": record.width,
        "height": record.height,
        "offline": offline,
        **photo_urls(record.id, record),
    }


def timeline_json(page: TimelinePage, n: int) -> dict[str, object]:
    return {
        "n": n,
        "months": [
            {
                "month": month.month,
                "photos": [record_json(photo.record, photo.offline) for photo in month.photos],
            }
            for month in page.months
        ],
        "cursor": page.cursor.text if page.more else None,
        "more": page.more,
        "offline_left_out": page.offline_left_out,
    }


def group_json(group: DuplicateGroup, records: dict[int, PhotoRecord]) -> dict[str, object]:
    """A duplicate group as `duplicates --json` writes it, each photo with its id and URLs."""
    fields = group.as_json()
    for photo, shown in zip(group.photos, fields["photos"], strict=True):  # type: ignore[arg-type]
        assert photo.photo_id is not None
        shown["id"] = photo.photo_id
        shown.update(photo_urls(photo.photo_id, records.get(photo.photo_id)))
    return fields


def photo_text_fields(reading: Reading | None) -> dict[str, str | None]:
    """The text read in a photo, as the large view shows it: `text_status` is "text",
    "no_text", "failed" or "pending" (not read yet); `text` the text, else null."""
    if reading is None:
        return {"text_status": "pending", "text": None}
    return {
        "text_status": reading.status,
        "text": reading.text if reading.status == "text" else None,
    }


class Routes:
    """The routes, over one LibraryService and one ThumbnailCache."""

    def __init__(self, service: LibraryService, thumbnails: ThumbnailCache) -> None:
        self.service = service
        self.thumbnails = thumbnails
        # Thumbnails are decoded on the cores; more at once would only queue for them.
        self._decoding = asyncio.Semaphore(max(2, os.cpu_count() or 2))

    async def library(self, function, *args):
        return await asyncio.wrap_future(self.service.submit(function, *args))

    async def page(self, request: Request) -> Response:
        language = accept_language(request.headers.get("accept-language"))
        return HTMLResponse(
            page_html(language),
            headers={"Cache-Control": "no-cache", "Vary": "Accept-Language"},
        )

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
        return Json(
            {
                **query,
                "offset": page.offset,
                "results": [hit_json(hit, hit.record) for hit in page.hits],
                "more": page.more,
                "offline_left_out": page.offline_left_out,
                "gone_left_out": page.gone_left_out,
            }
        )

    def _search_request(self, request: Request, like: int | None = None) -> SearchRequest:
        """The search the URL's parameters ask for, checked (`like`: the photo whose
        similar photos are asked for, instead of words); a page that would reach past
        MAX_DEPTH is cut there, so the page a `more` announced can always be asked for with
        the same n."""
        search = SearchRequest.from_params(request.query_params.multi_items())
        search = replace(search, limit=min(search.limit, MAX_DEPTH - search.offset))
        if like is not None:
            search = replace(search, query=(), like=like)
        search.check(HTTP, self.service.opened.model)
        return search

    async def search(self, request: Request) -> Response:
        search = self._search_request(request)
        # Its texts are embedded first, off the library's thread (service.QueryTexts).
        texts = [term.text for term in search.terms if term.text is not None]
        vectors = await asyncio.wrap_future(self.service.texts.vectors(texts)) if texts else None
        page = await self.library(self.service.search, search, vectors)
        opened = self.service.opened
        # Which library and model answered: `hanclip search` checks both (serve/discovery.py).
        about = {"library": str(opened.directory), "fingerprint": opened.model.fingerprint}
        query = request.query_params.get("q", "")
        return await self._page_json(page, {"query": query, "n": search.limit, **about})

    def _browse_request(self, request: Request) -> tuple[SearchRequest, TimelineCursor, int]:
        """The filters of a timeline or folder page (a search's: dates, folders, offline
        photos; what judges a match is not read), its cursor and its size."""
        search = SearchRequest.from_params(request.query_params.multi_items())
        for name in ("after", "before"):
            search.date_bound(name, HTTP)
        cursor = TimelineCursor.read(request.query_params.get("cursor"))
        n = search.limit if "n" in request.query_params else TIMELINE_PAGE
        return search, cursor, n

    async def timeline(self, request: Request) -> Response:
        search, cursor, n = self._browse_request(request)
        page = await self.library(self.service.timeline, search, cursor, n)
        return Json(timeline_json(page, n))

    async def folders(self, request: Request) -> Response:
        found = await self.library(self.service.folders)
        roots = [folder.path for folder in found if folder.depth == 0]
        return Json({"roots": roots, "folders": [folder.as_json() for folder in found]})

    async def folder(self, request: Request) -> Response:
        search, cursor, n = self._browse_request(request)
        text = request.query_params.get("path") or ""
        path = await self.library(checked_folder, self.service.opened, text)
        page = await self.library(self.service.timeline, search, cursor, n, path)
        return Json({"path": path, **timeline_json(page, n)})

    async def duplicates(self, request: Request) -> Response:
        search = SearchRequest.from_params(request.query_params.multi_items())
        threshold = _threshold(request)
        n = _whole(request, "n", 20, 1, MAX_PAGE)
        offset = _whole(request, "offset", 0, 0, INT64_MAX)
        groups = await self.library(self.service.duplicates, threshold, search)
        shown = groups[offset : offset + n]
        ids = [p.photo_id for group in shown for p in group.photos]
        records = await self.library(self.service.opened.store.records_by_ids, ids)
        return Json(
            {
                "threshold": threshold,
                "total": len(groups),
                "offset": offset,
                "n": n,
                "groups": [group_json(group, records) for group in shown],
                "more": offset + n < len(groups),
            }
        )

    async def _record(self, request: Request) -> PhotoRecord:
        photo_id = _photo_id(request)
        record = await asyncio.wrap_future(self.service.record(photo_id))
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
                **photo_text_fields(found.reading),
                **photo_urls(record.id, record),
            }
        )

    async def similar(self, request: Request) -> Response:
        photo_id = _photo_id(request)
        search = self._search_request(request, like=photo_id)
        await self._record(request)  # an unknown photo is a 404, not a search error
        page = await self.library(self.service.search, search)
        return await self._page_json(page, {"photo": photo_id, "n": search.limit})

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
        return PhotoFile(
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
    if isinstance(exc, SearchInputError):
        return error(400, str(exc), exc.problem())
    return error(400, str(exc))  # what else the search says of its input


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("error answering %s: %r", request.url.path, exc, exc_info=exc)
    return error(500, f"internal error: {type(exc).__name__}")


def build_site(
    service: LibraryService, thumbnails: ThumbnailCache, allowed_hosts: frozenset[str]
) -> LocalOnly:
    """The ASGI application of `hanclip serve`: its routes behind the Host check (see
    `guard`)."""
    web = Routes(service, thumbnails)
    routes = [
        Route("/", web.page),
        Route("/static/{name}", web.static),
        Route("/api/info", web.info),
        Route("/api/search", web.search),
        Route("/api/photos/{photo_id:int}", web.photo),
        Route("/api/photos/{photo_id:int}/thumbnail", web.thumbnail),
        Route("/api/photos/{photo_id:int}/original", web.original),
        Route("/api/photos/{photo_id:int}/similar", web.similar),
        Route("/api/timeline", web.timeline),
        Route("/api/folders", web.folders),
        Route("/api/folder", web.folder),
        Route("/api/duplicates", web.duplicates),
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
