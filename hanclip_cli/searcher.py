"""`hanclip search`: a Korean query (or a photo) in, the nearest photos out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hanclip_cli.folders import still_offline
from hanclip_cli.library import LibraryBusy, OpenLibrary
from hanclip_cli.vector_index import VectorIndex, sync_index
from hanclip_model.errors import HanclipError, StorageError
from hanclip_model.storage import storage_error
from hanclip_model.texts import clean_text


@dataclass
class SearchHit:
    rank: int
    path: str
    score: float
    taken_at: str | None
    width: int | None
    height: int | None
    offline: bool = False  # under a folder that is offline (shown with include_offline)


# Text encoders read at most a few hundred tokens; beyond this the rest is never seen.
MAX_QUERY_CHARS = 1000


def normalise_query(text: str) -> str:
    """NFC (macOS and some IMEs send decomposed Hangul), trimmed, at most MAX_QUERY_CHARS;
    empty is an error."""
    query = clean_text(text)
    if query is None:
        raise HanclipError(
            "the search query is empty: give some words, e.g. hanclip search '바다 위 노을'"
        )
    return query[:MAX_QUERY_CHARS].rstrip()


def current_index(opened: OpenLibrary) -> VectorIndex:
    """The HNSW index for `model`, brought up to date with SQLite.

    While an `index` run holds the library, the index is updated in memory only and reflects
    the last committed state of SQLite; so it is when the library's disk is full or read-only
    (the next `index` there writes it).
    """
    library, model = opened.library, opened.model
    try:
        with library.writer_lock():
            return sync_index(library.directory, library.store, model, write=True)
    except LibraryBusy:
        return sync_index(library.directory, library.store, model, write=False)
    except (OSError, StorageError) as exc:
        if storage_error(exc, library.directory) is None:
            raise
        return sync_index(library.directory, library.store, model, write=False)


def query_vector(opened: OpenLibrary, text: str | None, image: Path | None) -> np.ndarray:
    library, model = opened.library, opened.model
    if image is not None:
        path = os.path.abspath(image)
        stored = library.store.record_for_path(path)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise HanclipError(f"cannot read {image}: {exc.strerror or exc}") from None
        if stored is not None and (stored.size, stored.mtime_ns) == (st.st_size, st.st_mtime_ns):
            raw = library.store.embedding(stored.id)[None]
        else:
            raw = model.raw_image_embeddings([path])
        return model.project_images(raw)[0]
    return model.embed_texts([normalise_query(text or "")])[0]


def offline_photo_ids(opened: OpenLibrary) -> set[int]:
    """Photos under the folders the last `index` found offline and that are not back now:
    probed here, so photos return the moment their folder does, before any `index`."""
    store = opened.store
    return store.ids_under(folder.path for folder in still_offline(store.offline_folders()))


def search_library(
    opened: OpenLibrary,
    *,
    text: str | None = None,
    image: Path | None = None,
    limit: int = 10,
    include_offline: bool = False,
) -> list[SearchHit]:
    """The `limit` nearest photos, leaving out photos of offline folders unless
    `include_offline` (then they are marked)."""
    if text is not None:
        text = normalise_query(text)
    if limit < 1:
        raise HanclipError("-n must be at least 1")
    library, model = opened.library, opened.model
    if library.store.count() == 0:
        raise HanclipError(
            f"no photos indexed in {library.directory} yet: run `hanclip index PATH` first"
        )
    opened.check_image_space()
    vector = query_vector(opened, text, image)
    vindex = current_index(opened)
    if vector.shape[0] != vindex.dim:
        raise HanclipError(
            f"model {model.name!r} gives {vector.shape[0]}-d query vectors but its image "
            f"vectors are {vindex.dim}-d: its text and image encoders do not share a space"
        )
    offline = offline_photo_ids(opened)
    found = vindex.search(vector, limit, exclude=frozenset() if include_offline else offline)
    records = library.store.records_by_ids(photo_id for photo_id, _ in found)
    hits = []
    for photo_id, score in found:
        record = records.get(photo_id)
        if record is None:
            continue
        hits.append(
            SearchHit(
                rank=len(hits) + 1,
                path=record.path,
                score=score,
                taken_at=record.taken_at,
                width=record.width,
                height=record.height,
                offline=photo_id in offline,
            )
        )
    return hits
