"""`hanclip duplicates`: groups of near-identical photos (burst shots, re-saved or resized
copies) from the stored embeddings, without reading a photo again.

The HNSW graph proposes candidates (each photo's nearest neighbours in the search space);
the decision is an exact cosine of the raw image embeddings from SQLite. Raw embeddings are
the image model's own space: they do not depend on the heads, which were trained to match
captions, not to keep copies apart from look-alikes (`benchmarks/duplicates_threshold.py`
measures both spaces). Pairs at or above the threshold make groups in which every two photos
are such a pair (`group_duplicates`, pure): a chain of copies of copies is not one group.
hanclip only lists them: it deletes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from hanclip_library.library import OpenLibrary
from hanclip_library.searcher import current_index, offline_photo_ids
from hanclip_library.store import PhotoRecord
from hanclip_library.vector_index import EF_SEARCH, VectorIndex
from hanclip_model.errors import HanclipError
from hanclip_model.heads import l2_normalize

# Measured by benchmarks/duplicates_threshold.py with the random-weight ViT-B/32 (real CLIP
# weights could not be fetched there): the middle of the gap between the lowest score of a
# re-encoded or resized copy against its original and the highest score of two different
# photos, in the raw space. A starting point: `--threshold` overrides it.
DEFAULT_THRESHOLD = 0.99
# Neighbours asked of HNSW per photo at first; doubled for a photo whose last neighbour is
# still a duplicate, so every member of a large burst is found.
FIRST_K = 16
BATCH = 256


@dataclass(frozen=True)
class ScoredPair:
    """Two photo ids (first < second) and the cosine of their raw embeddings."""

    first: int
    second: int
    score: float


@dataclass(frozen=True)
class IdGroup:
    """Photo ids that are near-identical, every two of them, and the lowest cosine between
    any two of them (never below the threshold)."""

    ids: tuple[int, ...]
    similarity: float


@dataclass(frozen=True)
class DuplicatePhoto:
    path: str
    size: int
    width: int | None
    height: int | None
    # Dated as search dates it (`PhotoRecord.date`): EXIF date taken, else the file's time.
    taken_at: str
    date_source: str  # "exif" or "mtime", as in search
    photo_id: int | None = None  # its id in the library (the server's URLs); not in as_json

    @classmethod
    def of(cls, record: PhotoRecord) -> DuplicatePhoto:
        return cls(
            record.path,
            record.size,
            record.width,
            record.height,
            record.date,
            record.date_source,
            record.id,
        )


@dataclass(frozen=True)
class DuplicateGroup:
    similarity: float
    photos: tuple[DuplicatePhoto, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "similarity": self.similarity,
            "photos": [
                {
                    "path": p.path,
                    "size": p.size,
                    "width": p.width,
                    "height": p.height,
                    "taken_at": p.taken_at,
                    "date_source": p.date_source,
                }
                for p in self.photos
            ],
        }


def group_duplicates(pairs: Iterable[ScoredPair], threshold: float) -> list[IdGroup]:
    """Pairs at or above `threshold` → groups in which every two photos are such a pair
    (complete linkage), each with its lowest pairwise cosine; largest groups first, then the
    most similar, then by first id.

    Joining by single pairs would chain: copies of copies of copies end in one group whose
    ends are not alike at all. Here two groups join only when every photo of one is close
    to every photo of the other, the closest such two first (a pair the graph did not
    propose counts as not close). Merging lowers a group's closeness to the others, never
    raises it, so following nearest neighbours until two groups are each other's nearest
    finds the same groups as joining the closest two first each time, in time linear in
    the pairs (the nearest-neighbour chain).
    """
    # Each group, by its smallest id: its closeness to the groups it may join (the lowest
    # cosine between their photos, known only when every one of those pairs is close).
    near: dict[int, dict[int, float]] = {}
    for pair in pairs:
        if pair.score >= threshold:
            near.setdefault(pair.first, {})[pair.second] = pair.score
            near.setdefault(pair.second, {})[pair.first] = pair.score
    members = {i: [i] for i in near}
    lowest = {i: 1.0 for i in near}
    open_ids = sorted(near, reverse=True)  # groups to start a chain from, smallest id last
    done: set[int] = set()
    chain: list[int] = []
    while chain or open_ids:
        if not chain:
            start = open_ids.pop()
            if start in done or start not in members:
                continue
            chain.append(start)
        here = chain[-1]
        neighbours = near[here]
        if not neighbours:
            done.add(here)  # no group is close to all of it: it is whole
            chain.pop()
            continue
        # The previous link wins a tie, so the chain never circles.
        previous = chain[-2] if len(chain) > 1 else None
        best = max(neighbours, key=lambda other: (neighbours[other], other == previous, -other))
        if best != previous:
            chain.append(best)
            continue
        chain.pop()
        chain.pop()
        keep = min(here, best)
        _join(near, members, lowest, keep, max(here, best))
        open_ids.append(keep)  # the joined group may join more
    groups = [
        IdGroup(tuple(sorted(ids)), lowest[first]) for first, ids in members.items() if len(ids) > 1
    ]
    return sorted(groups, key=lambda g: (-len(g.ids), -g.similarity, g.ids[0]))


def _join(
    near: dict[int, dict[int, float]],
    members: dict[int, list[int]],
    lowest: dict[int, float],
    keep: int,
    gone: int,
) -> None:
    """Group `gone` joins group `keep`: close to another group only where both were."""
    kept, dropped = near.pop(keep), near.pop(gone)
    score = kept.pop(gone)
    dropped.pop(keep)
    joined = {other: min(s, dropped[other]) for other, s in kept.items() if other in dropped}
    for other in kept.keys() | dropped.keys():
        near[other].pop(keep, None)
        near[other].pop(gone, None)
        if other in joined:
            near[other][keep] = joined[other]
    near[keep] = joined
    members[keep] += members.pop(gone)
    lowest[keep] = min(lowest[keep], lowest.pop(gone), score)


@dataclass(frozen=True)
class RawVectors:
    """The raw embeddings of the photos compared, L2-normalised: row i is photo `ids[i]`."""

    ids: np.ndarray  # sorted
    unit: np.ndarray

    def rows(self, photo_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.ids, photo_ids)

    @cached_property
    def id_set(self) -> frozenset[int]:
        return frozenset(int(i) for i in self.ids)


def _neighbours(vindex: VectorIndex, raw: RawVectors, batch: np.ndarray, k: int) -> np.ndarray:
    """The k nearest of each photo in `batch` (rows of labels) among `raw.ids`, from the
    graph; exactly, from the raw vectors, where the graph cannot return k of them."""
    index = vindex.index
    index.set_ef(max(EF_SEARCH, k))
    queries = np.asarray(index.get_items(batch.tolist()), dtype=np.float32)
    allowed = raw.id_set
    # The filter is a Python call per visited node: only pay it when some photos are left out.
    only = None if len(allowed) == len(vindex) else (lambda label: label in allowed)
    try:
        labels, _ = index.knn_query(queries, k=k, filter=only)
    except RuntimeError:
        scores = raw.unit[raw.rows(batch)] @ raw.unit.T
        labels = raw.ids[np.argsort(-scores, axis=1, kind="stable")[:, :k]]
    return np.asarray(labels, dtype=np.int64)


def candidate_pairs(vindex: VectorIndex, raw: RawVectors, threshold: float) -> list[ScoredPair]:
    """Every pair of photos in `raw` whose raw cosine reaches `threshold`, as far as each
    photo's nearest neighbours in the graph reach: a photo whose last neighbour still
    reaches it asks again with twice as many."""
    found: dict[tuple[int, int], float] = {}
    pending, k = raw.ids, FIRST_K
    while len(pending):
        k = min(k, len(raw.ids))
        again = []
        for start in range(0, len(pending), BATCH):
            batch = pending[start : start + BATCH]
            labels = _neighbours(vindex, raw, batch, k)
            queries = raw.unit[raw.rows(batch)]
            scores = np.einsum("bd,bkd->bk", queries, raw.unit[raw.rows(labels)])
            for photo_id, row, row_scores in zip(batch, labels, scores, strict=True):
                for neighbour, score in zip(row, row_scores, strict=True):
                    if neighbour != photo_id and score >= threshold:
                        pair = (int(min(photo_id, neighbour)), int(max(photo_id, neighbour)))
                        found[pair] = float(score)
                if row_scores[-1] >= threshold and k < len(raw.ids):
                    again.append(photo_id)
        pending, k = np.array(again, dtype=np.int64), 2 * k
    return [ScoredPair(a, b, s) for (a, b), s in sorted(found.items())]


def _ids_in(opened: OpenLibrary, folders: Sequence[Path]) -> set[int]:
    return opened.store.ids_under(os.path.abspath(os.path.expanduser(f)) for f in folders)


def find_duplicates(
    opened: OpenLibrary,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    folders: Sequence[Path] = (),
    include_offline: bool = False,
    vector_index: Callable[[OpenLibrary], VectorIndex] | None = None,
) -> list[DuplicateGroup]:
    """Groups of near-identical photos among the library's (those under `folders` when given;
    photos of offline folders only with `include_offline`). `vector_index` gives the HNSW
    index in line with SQLite (default `current_index`; a long-lived server keeps its own)."""
    if not 0 < threshold <= 1:
        raise HanclipError(f"--threshold must be above 0 and at most 1, not {threshold}")
    store = opened.store
    if store.count() == 0:
        return []
    opened.check_image_space()
    allowed = {int(i) for i in store.ids()}
    if folders:
        allowed &= _ids_in(opened, folders)
    if not include_offline:
        allowed -= offline_photo_ids(opened)
    if len(allowed) < 2:
        return []
    vindex = (vector_index or current_index)(opened)
    ids, vectors = store.embeddings(np.array(sorted(allowed), dtype=np.int64))
    raw = RawVectors(ids, l2_normalize(vectors))
    groups = group_duplicates(candidate_pairs(vindex, raw, threshold), threshold)
    records = store.records_by_ids(i for g in groups for i in g.ids)
    return [
        DuplicateGroup(
            similarity=group.similarity,
            photos=tuple(DuplicatePhoto.of(records[i]) for i in group.ids),
        )
        for group in groups
    ]
