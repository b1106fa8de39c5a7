"""The library behind `hanclip serve`: opened once, read from one thread, never written.

SQLite connections belong to the thread that opened them, and a search is a few milliseconds
of work, so every library call runs on one dedicated thread, in turn; thumbnails are made on
other threads from the records it returns. The text model stays loaded (its first query is
made at start-up) and embeds the queries' texts on a thread of its own before their search
goes to the library's (`QueryTexts`: the texts asked meanwhile in one batch, the last ones
kept), so a search never waits behind another's text encoding. The HNSW index is kept in
memory: it is read again from SQLite only when another connection (an `index` run) has
committed since, which SQLite's data_version tells at no cost. The server never takes the
library's writer lock, so an `index` started while it runs is never turned away.

The duplicate groups are a pass over every photo: the last answer is kept until the library
or the offline folders change (`duplicates`).
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from hanclip_cli.common import CONSOLE_NOTICES
from hanclip_library.duplicates import DuplicateGroup, find_duplicates
from hanclip_library.library import OpenLibrary, open_library
from hanclip_library.photo_text import PhotoText, Reading
from hanclip_library.request import MAX_DEPTH, SearchRequest
from hanclip_library.searcher import (
    SearchHit,
    indexed_folders,
    offline_photo_ids,
    search_library,
)
from hanclip_library.store import PhotoRecord, PhotoStore
from hanclip_library.timeline import (
    FolderCount,
    TimelineCursor,
    TimelinePage,
    folder_counts,
    timeline_page,
)
from hanclip_library.vector_index import VectorIndex, sync_index

T = TypeVar("T")

KEPT_QUERIES = 1024  # texts whose vectors are kept: a next page, a filter changed
MAX_BATCH = 32  # texts embedded in one run of the text encoder


class QueryTexts:
    """The vectors of search texts, embedded on a thread of their own: the texts asked while
    the encoder is busy go into its next run together (one run for several short texts costs
    much less than one each, and nothing waits for a batch to fill), and the vectors of the
    last `kept` texts are kept. A run that fails is tried again text by text, so one bad text
    fails only the searches that asked for it."""

    def __init__(
        self, embed: Callable[[list[str]], np.ndarray], *, kept: int = KEPT_QUERIES
    ) -> None:
        self._embed = embed
        self._kept = kept
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._asked: queue.SimpleQueue[tuple[list[str], Future] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="hanclip-texts", daemon=True)
        self._thread.start()

    def vectors(self, texts: Sequence[str]) -> Future:
        """A future of {text: vector} for every one of `texts`."""
        answer: Future = Future()
        with self._lock:
            known = all(text in self._vectors for text in texts)
            if known:
                for text in texts:
                    self._vectors.move_to_end(text)
                found = {text: self._vectors[text] for text in texts}
        if known:
            answer.set_result(found)
        else:
            self._asked.put((list(texts), answer))
        return answer

    def close(self) -> None:
        self._asked.put(None)
        self._thread.join()

    def _work(self) -> None:
        while (first := self._asked.get()) is not None:
            batch, stop = [first], False
            while sum(len(texts) for texts, _ in batch) < MAX_BATCH:
                try:
                    item = self._asked.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            # A search given up on (its client gone) is not embedded for.
            self._run([item for item in batch if item[1].set_running_or_notify_cancel()])
            if stop:
                return

    def _run(self, batch: list[tuple[list[str], Future]]) -> None:
        asked = list(dict.fromkeys(text for texts, _ in batch for text in texts))
        with self._lock:
            known = {text: self._vectors[text] for text in asked if text in self._vectors}
        new = [text for text in asked if text not in known]
        try:
            found = dict(zip(new, self._embed(new), strict=True)) if new else {}
        except BaseException as exc:  # noqa: BLE001 - given to the searches that asked
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
            else:
                for item in batch:
                    self._run([item])
            return
        with self._lock:
            self._vectors.update(found)
            for text in asked:
                self._vectors.move_to_end(text)
            while len(self._vectors) > self._kept:
                self._vectors.popitem(last=False)
        known.update(found)
        for texts, answer in batch:
            answer.set_result({text: known[text] for text in texts})


@dataclass(frozen=True)
class Page:
    """One page of a ranking: hits `offset+1 .. offset+len(hits)`."""

    hits: list[SearchHit]
    offset: int
    more: bool  # a next page may hold more
    offline_left_out: int
    gone_left_out: int = 0  # among the best: files deleted since the last `index`


@dataclass(frozen=True)
class PhotoInfo:
    record: PhotoRecord
    offline: bool
    reading: Reading | None = None  # the newest reading of its text; None: not read yet


class LibraryService:
    """One library and its model, for many requests."""

    def __init__(
        self,
        library: Path | None,
        model: str | None,
        *,
        device: str | None = None,
    ) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hanclip-library")
        self._vindex: VectorIndex | None = None
        self._version: int | None = None
        self._duplicates: tuple[tuple, list[DuplicateGroup]] | None = None  # (asked, found)
        self.opened: OpenLibrary = self._thread.submit(self._open, library, model, device).result()
        # A photo's row for its thumbnail or original is read on a thread and connection of
        # its own: a grid of thumbnails never waits behind searches on the library's thread
        # (benchmarks/serve_load.py: cached thumbnails then waited as long as a search).
        self._lookup = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hanclip-lookup")
        self._rows: PhotoStore = self._lookup.submit(
            PhotoStore, self.opened.directory, create=False
        ).result()
        self.texts = QueryTexts(self.opened.model.embed_texts)

    def _open(self, library: Path | None, model: str | None, device: str | None) -> OpenLibrary:
        opened = open_library(
            library,
            model,
            for_writing=False,
            device=device,
            few_texts=False,
            notices=CONSOLE_NOTICES,
        )
        try:
            # The text model and the search index load now, before the URL is shown, so the
            # first query is as quick as the next.
            opened.model.embed_texts(["바다 위 노을"])
            if opened.store.count():
                opened.check_image_space()  # photos of another image model: say so now
                self._index(opened)
        except BaseException:
            opened.close()
            raise
        return opened

    @property
    def directory(self) -> Path:
        return self.opened.directory

    def run(self, function: Callable[..., T], *args: object) -> T:
        """`function(*args)` on the library's thread (blocking)."""
        return self._thread.submit(function, *args).result()

    def submit(self, function: Callable[..., T], *args: object):
        """`function(*args)` on the library's thread, as a concurrent future."""
        return self._thread.submit(function, *args)

    def record(self, photo_id: int):
        """The row of photo `photo_id` (None: no such photo), read on the lookup thread, as a
        concurrent future; it sees every commit made before it is asked."""
        return self._lookup.submit(self._rows.record_by_id, photo_id)

    def close(self) -> None:
        self.texts.close()
        self._lookup.submit(self._rows.close).result()
        self._lookup.shutdown()
        self._thread.submit(self.opened.close).result()
        self._thread.shutdown()

    # -- on the library's thread ---------------------------------------------------------

    def _index(self, opened: OpenLibrary) -> VectorIndex:
        """The HNSW index in line with SQLite's last commit, read again only after one."""
        version = opened.store.data_version()  # read first: a commit after it shows next time
        if self._vindex is None or version != self._version:
            self._vindex = sync_index(
                opened.directory, opened.store, opened.model, write=False, current=self._vindex
            )
            self._version = version
        return self._vindex

    def photo_count(self) -> int:
        return self.opened.store.count()

    def search(
        self, request: SearchRequest, text_vectors: dict[str, np.ndarray] | None = None
    ) -> Page:
        """Hits `offset+1 .. offset+limit` of the request's search (the photo it asks for
        photos `like` is never among them: the searcher leaves a query's own photos out).
        Each page is cut from one ranking of the best `offset + limit` photos (one more is
        asked for, to know whether a next page holds any), ranked 1.. . `text_vectors`: its
        texts embedded already (`QueryTexts`)."""
        offset = request.offset
        end = offset + request.limit
        by_score = request.sort == "score"
        deeper = replace(request, limit=end + by_score)
        result = search_library(
            self.opened,
            deeper,
            terms=request.terms,
            vector_index=self._index,
            text_vectors=text_vectors,
        )
        hits = result.hits
        more = len(hits) > end
        if more:  # the best `end` by score, in the order asked for
            best = {id(hit) for hit in sorted(hits, key=lambda hit: -hit.score)[:end]}
            hits = [hit for hit in hits if id(hit) in best]
        hits = [replace(hit, rank=rank) for rank, hit in enumerate(hits, start=1)]
        return Page(
            hits=hits[offset:end],
            offset=offset,
            # By date, a page is the `limit` best photos in date order: a page cut from a
            # deeper ranking would not follow it in date, so there is no next one.
            more=by_score and more and end < MAX_DEPTH,
            offline_left_out=result.offline_left_out,
            gone_left_out=result.gone_left_out,
        )

    def photo(self, photo_id: int) -> PhotoInfo | None:
        record = self.opened.store.record_by_id(photo_id)
        if record is None:
            return None
        return PhotoInfo(
            record,
            offline=photo_id in offline_photo_ids(self.opened),
            reading=PhotoText(self.opened.store.conn).newest(record.sha256),
        )

    def timeline(
        self,
        request: SearchRequest,
        cursor: TimelineCursor,
        limit: int,
        folder: str | None = None,
    ) -> TimelinePage:
        return timeline_page(self.opened, request, cursor=cursor, limit=limit, folder=folder)

    def folders(self) -> list[FolderCount]:
        return folder_counts(self.opened)

    def duplicates(self, threshold: float, request: SearchRequest) -> list[DuplicateGroup]:
        """`hanclip duplicates`' groups for the request's folders and `include_offline`,
        kept while nothing commits and no folder goes offline or comes back."""
        opened = self.opened
        indexed_folders(opened, request)  # a folder with no indexed photo: said, as search does
        asked = (
            opened.store.data_version(),
            threshold,
            request.folders,
            request.include_offline,
            frozenset(offline_photo_ids(opened)),
        )
        if self._duplicates is None or self._duplicates[0] != asked:
            found = find_duplicates(
                opened,
                threshold=threshold,
                folders=request.folders,
                include_offline=request.include_offline,
                vector_index=self._index,
            )
            self._duplicates = (asked, found)
        return self._duplicates[1]
