"""`hanclip search`: Korean words and photos in (one, or a weighted sum), the nearest photos
that pass the filters out.

A score is the cosine of the query and photo vectors. A calibrated model (a trained bundle
with a `calibration` block) also gives each hit a match probability, sigmoid(a·score + b), the
chance that the photo matches the query at even prior odds (trainer/calibration.py says what
that means); `min_prob` filters on it by the score it stands for.

What to search for comes as one `SearchRequest` (`request.py`), checked by the front end that
built it; the searcher checks it again against the model (`min_prob` needs a calibrated one).

Text in photos (`photo_text.py`) joins the ranking by one rule: the photos whose text holds
every word of the query (two letters or more) come first, best text match first (FTS5's bm25),
then the photos found by their look, by score, leaving those out. A photo that shows its words
is what was asked for, however far its look is: a fusion of ranks (Reciprocal Rank Fusion)
would put a receipt whose look ranks 500th below the look's first few, and with no text match
both rules leave the look's ranking exactly as it was. The score cuts (`min_score`,
`min_prob`) judge looks, so they leave text matches in; the date and folder filters, the
offline folders and `limit` apply to both. `text_only` keeps the text matches alone, `no_text`
the look alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hanclip_library.folders import still_offline
from hanclip_library.library import LibraryBusy, OpenLibrary
from hanclip_library.photo_text import PhotoText, TextFound, TextMatch, searchable_words
from hanclip_library.query import QueryTerm, SearchInputError, combine, normalise_query
from hanclip_library.request import CLI, SearchRequest
from hanclip_library.store import PhotoRecord
from hanclip_library.vector_index import VectorIndex, sync_index
from hanclip_model.errors import HanclipError, StorageError
from hanclip_model.storage import storage_error

if TYPE_CHECKING:
    from hanclip_model.model import HanclipModel


@dataclass
class SearchHit:
    rank: int
    path: str
    score: float
    taken_at: str | None  # the date filters and sorting use: EXIF date, else the file's mtime
    width: int | None
    height: int | None
    offline: bool = False  # under a folder that is offline (shown with include_offline)
    date_source: str = "exif"  # where taken_at comes from: "exif" or "mtime"
    photo_id: int | None = None  # the photo's id in the library (the server's URLs use it)
    match_probability: float | None = None  # None: the model is not calibrated
    # The photo's row, for the pages that show it; None in a hit a running server sent.
    record: PhotoRecord | None = None
    text_match: TextMatch | None = None  # where the words stand, for a hit found by its text


def hit_fields(hit: SearchHit) -> dict[str, object]:
    """A hit as `search --json` writes it (the server adds the photo's id and URLs):
    `match_probability` only from a calibrated model, `text_match` only for a hit found by its
    text, so other output is unchanged."""
    fields: dict[str, object] = {
        "rank": hit.rank,
        "path": hit.path,
        "score": round(hit.score, 6),
    }
    if hit.match_probability is not None:
        fields["match_probability"] = round(hit.match_probability, 6)
    fields.update(
        taken_at=hit.taken_at,
        width=hit.width,
        height=hit.height,
        offline=hit.offline,
        date_source=hit.date_source,
    )
    if hit.text_match is not None:
        fields["text_match"] = hit.text_match.as_json()
    return fields


def hit_from_fields(fields: Mapping[str, Any]) -> SearchHit:
    """`hit_fields` read back, with the photo's `id` the server adds (a search answered by a
    running `hanclip serve`); KeyError, TypeError or ValueError when a field is wrong."""
    probability = fields.get("match_probability")
    text = fields.get("text_match")
    return SearchHit(
        rank=int(fields["rank"]),
        path=str(fields["path"]),
        score=float(fields["score"]),
        taken_at=fields["taken_at"],
        width=fields["width"],
        height=fields["height"],
        offline=bool(fields["offline"]),
        date_source=str(fields["date_source"]),
        photo_id=int(fields["id"]),
        match_probability=None if probability is None else float(probability),
        text_match=None if text is None else TextMatch.from_json(text),
    )


@dataclass(frozen=True)
class SearchResult:
    hits: list[SearchHit]
    offline_left_out: int  # photos of offline folders the search did not look at
    # Photos among the best that are gone from their path since the last `index` (deleted,
    # moved, or on a drive unplugged since), left out: `hanclip index` brings the library up
    # to date.
    gone_left_out: int = 0


def score_threshold(request: SearchRequest, model: HanclipModel) -> float | None:
    """The lowest score a hit may have: `min_score`, or the score at which the match
    probability reaches `min_prob` (a > 0, so the probability rises with the score and
    passing it is passing that score), whichever is higher; None when neither is given."""
    thresholds = [] if request.min_score is None else [request.min_score]
    if request.min_prob is not None and model.calibration is not None:
        thresholds.append(model.calibration.score_at(request.min_prob))
    return max(thresholds) if thresholds else None


def order_hits(hits: list[SearchHit], sort: str) -> list[SearchHit]:
    """`hits` (best first) in the order asked for, ranked 1.. in that order."""
    if sort != "score":
        # sorted() is stable, reversed too: photos of the same date stay best first.
        hits = sorted(hits, key=lambda hit: hit.taken_at or "", reverse=sort == "date")
    return [replace(hit, rank=rank) for rank, hit in enumerate(hits, start=1)]


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


def query_vector(
    opened: OpenLibrary, text: str | None, image: Path | None, photo_id: int | None = None
) -> np.ndarray:
    library, model = opened.library, opened.model
    if photo_id is not None:
        if library.store.record_by_id(photo_id) is None:
            raise HanclipError(f"no photo with id {photo_id} in {library.directory}")
        return model.project_images(library.store.embedding(photo_id)[None])[0]
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


def terms_vector(
    opened: OpenLibrary,
    terms: Sequence[QueryTerm],
    text_vectors: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """normalize(Σ w_i · q_i): the texts (normalised already, `SearchRequest.terms`) embedded
    in one batch (those `text_vectors` holds already embedded: a server embeds its queries'
    texts apart), each photo as with --image."""
    known = text_vectors or {}
    texts = [t.text for t in terms if t.text is not None and t.text not in known]
    texts = list(dict.fromkeys(texts))
    embedded = dict(known)
    if texts:
        embedded.update(zip(texts, opened.model.embed_texts(texts), strict=True))
    vectors = [
        embedded[term.text]
        if term.text is not None
        else query_vector(opened, None, term.image, term.photo_id)
        for term in terms
    ]
    return combine(np.stack(vectors), [term.weight for term in terms])


def indexed_folders(opened: OpenLibrary, request: SearchRequest) -> list[str]:
    """The request's folders as the library writes paths, each checked to hold an indexed
    photo (one query a folder): a folder mistyped or never indexed would otherwise find
    nothing in silence."""
    folders = [os.path.abspath(os.path.expanduser(folder)) for folder in request.folders]
    for given, folder in zip(request.folders, folders, strict=True):
        if not opened.store.ids_under([folder]):
            raise SearchInputError(
                f"no indexed photo is under {given}: index it first (hanclip index {given}),"
                " or see the indexed folders with hanclip info",
                "folder_not_indexed",
                "in",
                given,
            )
    return folders


def allowed_photo_ids(opened: OpenLibrary, request: SearchRequest) -> set[int]:
    """Ids of the photos the date and folder filters let through (one SQLite query, and the
    folders checked by `indexed_folders`)."""
    return opened.store.ids_passing(
        after=request.date_bound("after", CLI),
        before=request.date_bound("before", CLI),
        folders=indexed_folders(opened, request),
    )


def query_photo_ids(opened: OpenLibrary, request: SearchRequest) -> set[int]:
    """The indexed photos the query is made of (`image`, `sub_image`, `like`): never among its
    results, as the `image` field's help says; a copy at another path is another photo."""
    store = opened.store
    records = (store.record_for_path(os.path.abspath(p)) for p in request.image + request.sub_image)
    ids = {record.id for record in records if record is not None}
    return ids if request.like is None else ids | {request.like}


def _gone(path: str) -> bool:
    """The photo's file is not at its path (one stat); a file that cannot be read for another
    reason (permissions, a failing disk) is still there."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def search_library(
    opened: OpenLibrary,
    request: SearchRequest,
    *,
    terms: Sequence[QueryTerm] | None = None,
    vector_index: Callable[[OpenLibrary], VectorIndex] | None = None,
    text_vectors: Mapping[str, np.ndarray] | None = None,
) -> SearchResult:
    """The `request.limit` nearest photos to the sum of `terms` (default: the request's)
    that pass its filters, leaving out the photos the query is made of, photos whose file is
    gone since the last `index`, and photos of offline folders unless `include_offline` (then
    they are marked): exactly `limit` whenever that many pass, in its `sort` order.

    `vector_index` gives the HNSW index in line with SQLite (default `current_index`, which
    reads it from disk: a long-lived server keeps its own); `text_vectors`, the terms' texts
    already embedded (`terms_vector`)."""
    request.check(CLI, opened.model)
    library, model = opened.library, opened.model
    threshold = score_threshold(request, model)
    if library.store.count() == 0:
        raise HanclipError(
            f"no photos indexed in {library.directory} yet: run `hanclip index PATH` first"
        )
    allowed = allowed_photo_ids(opened, request) if request.narrows else None
    opened.check_image_space()
    vector = terms_vector(opened, request.terms if terms is None else terms, text_vectors)
    vindex = (vector_index or current_index)(opened)
    if vector.shape[0] != vindex.dim:
        raise HanclipError(
            f"model {model.name!r} gives {vector.shape[0]}-d query vectors but its image "
            f"vectors are {vindex.dim}-d: its text and image encoders do not share a space"
        )
    offline = offline_photo_ids(opened)
    include_offline = request.include_offline
    left_out = query_photo_ids(opened, request) | (set() if include_offline else offline)
    words = () if request.no_text else text_words(request.terms if terms is None else terms)
    records: dict[int, PhotoRecord] = {}
    gone: set[int] = set()
    while True:  # again while a hit is gone: each round stats only the hits new to it
        by_text = _text_found(
            PhotoText(library.store.conn), words, request.limit, left_out | gone, allowed
        )
        text_ids = {found.photo_id for found in by_text}
        room = 0 if request.text_only else request.limit - len(by_text)
        by_look = _nearest(vindex, vector, room, left_out | gone | text_ids, allowed)
        if threshold is not None:
            by_look = [(photo_id, score) for photo_id, score in by_look if score >= threshold]
        found = [*_look_scores(opened, vector, by_text), *by_look]
        records.update(library.store.records_by_ids(i for i, _ in found if i not in records))
        newly_gone = {
            photo_id
            for photo_id, _ in found
            if photo_id in records and photo_id not in offline and _gone(records[photo_id].path)
        }
        if not newly_gone:
            break
        gone |= newly_gone
    matches = {found.photo_id: found.match for found in by_text}
    probabilities = model.match_probability(np.array([score for _, score in found]))
    hits = []
    for index, (photo_id, score) in enumerate(found):
        record = records.get(photo_id)
        if record is None:
            continue
        hits.append(
            SearchHit(
                rank=len(hits) + 1,
                path=record.path,
                score=score,
                taken_at=record.date,
                width=record.width,
                height=record.height,
                offline=photo_id in offline,
                date_source=record.date_source,
                photo_id=photo_id,
                match_probability=None if probabilities is None else float(probabilities[index]),
                record=record,
                text_match=matches.get(photo_id),
            )
        )
    offline_left_out = 0 if include_offline else len(offline)
    return SearchResult(order_hits(hits, request.sort), offline_left_out, len(gone))


def _nearest(
    vindex: VectorIndex,
    vector: np.ndarray,
    limit: int,
    left_out: Set[int],
    allowed: set[int] | None,
) -> list[tuple[int, float]]:
    """The `limit` nearest photos, best first, of those `allowed` (None: all) but `left_out`."""
    if allowed is None:
        return vindex.search(vector, limit, exclude=frozenset(left_out))
    return vindex.search_among(vector, limit, allowed - left_out)


def text_words(terms: Sequence[QueryTerm]) -> tuple[str, ...]:
    """The words a text match must hold: those of the terms added to the query (a term
    subtracted says what the photo should not look like, not what it must not say)."""
    words = [word for t in terms if t.text is not None and t.weight > 0 for word in t.text.split()]
    return searchable_words(dict.fromkeys(words))


def _text_found(
    texts: PhotoText,
    words: Sequence[str],
    limit: int,
    left_out: Set[int],
    allowed: set[int] | None,
) -> list[TextFound]:
    """The `limit` best text matches of `words` among the photos `allowed` (None: all) but
    `left_out`: asked for more while the filters leave fewer than `limit` of those found."""
    asked = limit
    while words:
        found = texts.find(words, asked)
        passing = [
            f
            for f in found
            if f.photo_id not in left_out and (allowed is None or f.photo_id in allowed)
        ]
        if len(passing) >= limit or len(found) < asked:
            return passing[:limit]
        asked *= 4
    return []


def _look_scores(
    opened: OpenLibrary, vector: np.ndarray, by_text: Sequence[TextFound]
) -> list[tuple[int, float]]:
    """(id, score) of the photos found by their text, in their text order: the score is
    their look's, as for every hit."""
    if not by_text:
        return []
    ids, raw = opened.store.embeddings(np.array([f.photo_id for f in by_text], dtype=np.int64))
    scores = dict(
        zip(ids.tolist(), (opened.model.project_images(raw) @ vector).tolist(), strict=True)
    )
    return [(f.photo_id, float(scores[f.photo_id])) for f in by_text if f.photo_id in scores]
