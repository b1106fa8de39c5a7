"""The HNSW index over search vectors: derived from SQLite, written atomically.

On disk: `hnsw.json` (the pointer: model fingerprint, dimension, data file name, labels marked
deleted, and the photos' generation it was made from) and the hnswlib file it names. A new
version is written to a fresh file name and the pointer is swapped atomically
(`hanclip_model.files`), so a reader sees the old index or the new one, never half. A data
file the disk could not hold whole is never pointed at: the old index stays in use, and the
failure is raised as an OSError that says why.

Freshness. SQLite changes the photos' generation (`PhotoStore.generation`, migration 5) in
the same transaction as every photo added, removed or re-embedded. An index whose pointer
records the library's current generation (and the model's fingerprint) holds exactly the
library's photos: that check is one row and one small file, at any size. Any other case
(no generation yet, another one after a crash between a commit and the index swap, another
writer's photos, a missing or unreadable index) falls back to comparing every photo id,
and the index is updated or rebuilt as before, then recorded with the generation read
before the ids were (so a recorded generation is never newer than the photos it holds).
"""

from __future__ import annotations

import errno
import json
import struct
import uuid
from collections.abc import Set
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from hanclip_library.store import PhotoStore
from hanclip_model.files import TMP_SUFFIX, atomic_write_text, fsync_file
from hanclip_model.storage import disk_state

POINTER_NAME = "hnsw.json"
M = 16
EF_CONSTRUCTION = 200
EF_SEARCH = 128
# Past this share of deleted labels a rebuild is cheaper than searching around tombstones.
MAX_DELETED_FRACTION = 0.25
# Up to this many allowed photos a filtered search scores every one of them (exact, so k come
# back whenever k are allowed). A filtered graph search walks past every photo the filter
# turns down, each through a Python call: with 1% allowed it visits about a hundred nodes per
# one it keeps, while the scan costs one dot product per allowed photo. Above this count
# the allowed share is large enough for the graph (see benchmarks/speedbench/hnsw.py).
EXACT_MAX_CANDIDATES = 10_000
# hnswlib's file layout (`saveIndex` in hnswalg.h, unchanged since hnswlib 0.5): a header of
# offsetLevel0, max_elements, cur_element_count, size_data_per_element, label_offset and
# offsetData (8 bytes each, then 48 more bytes of graph settings), then one block per element:
# its level-0 links, its vector, its label.
_FILE_HEADER = struct.Struct("<6Q")
_FILE_HEADER_BYTES = 96


@dataclass(frozen=True)
class StoredVectors:
    """The vectors of a saved index file, read in place by label (memory-mapped).

    hnswlib's `get_items` copies each vector through Python objects, which for the thousand
    photos of a selective filter costs more than the whole rest of a filtered search; the file
    that the index was loaded from holds the same vectors, a strided slice away.
    """

    vectors: np.ndarray  # [count, dim], a strided view of the file
    rows: np.ndarray  # photo id -> row in `vectors`, -1 where the file has none

    @classmethod
    def open(cls, path: Path, dim: int, count: int) -> StoredVectors | None:
        """None when the file is not a whole hnswlib file of `count` vectors of `dim`."""
        try:
            data = np.memmap(path, dtype=np.uint8, mode="r")
        except (OSError, ValueError):
            return None
        if data.size < _FILE_HEADER_BYTES:
            return None
        level0, _, stored, block, label_at, vector_at = _FILE_HEADER.unpack_from(data, 0)
        if (
            level0 != 0
            or stored != count
            or count == 0
            or vector_at + 4 * dim > label_at
            or label_at + 8 > block
            or data.size < _FILE_HEADER_BYTES + count * block
        ):
            return None
        labels = np.ndarray(
            (count,),
            dtype="<u8",
            buffer=data,
            offset=_FILE_HEADER_BYTES + label_at,
            strides=(block,),
        ).astype(np.int64)
        vectors = np.ndarray(
            (count, dim),
            dtype="<f4",
            buffer=data,
            offset=_FILE_HEADER_BYTES + vector_at,
            strides=(block, 4),
        )
        rows = np.full(int(labels.max()) + 1, -1, dtype=np.int64)
        rows[labels] = np.arange(count)
        return cls(vectors, rows)

    def get(self, ids: np.ndarray) -> np.ndarray | None:
        """The vectors of `ids`, in order; None if the file lacks one of them."""
        rows = self.rows_of(ids)
        if (rows < 0).any():
            return None
        return np.asarray(self.vectors[rows], dtype=np.float32)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """The row of each of `ids` in the file, -1 where it has none."""
        rows = np.full(len(ids), -1, dtype=np.int64)
        known = (ids >= 0) & (ids < len(self.rows))
        rows[known] = self.rows[ids[known]]
        return rows


@dataclass
class VectorIndex:
    """An hnswlib index whose labels are photo ids, in the space of one model.

    `data_file` is the file the index was loaded from or last saved to, while it still holds
    every vector of the index (an `add` makes it stale; a removal does not, as removed photos
    are never asked for again: ids are never reused). Once memory-mapped (`_stored_file`), the
    vectors it holds are still read from it after an `add` (a photo's vector never changes
    under its id): only the photos added since come from hnswlib's own copy.
    """

    index: object  # hnswlib.Index
    fingerprint: str
    dim: int
    deleted: set[int] = field(default_factory=set)
    data_file: Path | None = None
    # The photos' generation (`PhotoStore.generation`) the index holds; None: unknown.
    generation: str | None = None
    _stored: StoredVectors | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def labels(self) -> set[int]:
        return {int(i) for i in self.index.get_ids_list()} - self.deleted

    def __len__(self) -> int:
        return self.index.get_current_count() - len(self.deleted)

    def search(
        self, vector: np.ndarray, k: int, exclude: Set[int] = frozenset()
    ) -> list[tuple[int, float]]:
        """The k nearest photo ids with cosine similarity, best first, leaving out `exclude`
        (ids the index holds) inside the graph search, so k are found whenever k remain."""
        k = min(k, len(self) - len(exclude))
        if k <= 0:
            return []
        self.index.set_ef(max(EF_SEARCH, k))
        query = np.asarray(vector, dtype=np.float32)[None]
        if exclude:
            labels, distances = self.index.knn_query(
                query, k=k, filter=lambda label: label not in exclude
            )
        else:
            labels, distances = self.index.knn_query(query, k=k)
        return [(int(i), float(1.0 - d)) for i, d in zip(labels[0], distances[0], strict=True)]

    def search_among(
        self, vector: np.ndarray, k: int, allowed: Set[int]
    ) -> list[tuple[int, float]]:
        """The k nearest of the `allowed` photo ids (ids the index holds), best first: exactly
        min(k, len(allowed)) of them."""
        k = min(k, len(allowed))
        if k <= 0:
            return []
        if len(allowed) > EXACT_MAX_CANDIDATES:
            self.index.set_ef(max(EF_SEARCH, k))
            try:
                labels, distances = self.index.knn_query(
                    np.asarray(vector, dtype=np.float32)[None],
                    k=k,
                    filter=lambda label: label in allowed,
                )
            except RuntimeError:
                pass  # the graph ran out of allowed photos before k: score them all instead
            else:
                pairs = zip(labels[0], distances[0], strict=True)
                return [(int(i), float(1.0 - d)) for i, d in pairs]
        return self._exact(vector, k, allowed)

    def _exact(self, vector: np.ndarray, k: int, allowed: Set[int]) -> list[tuple[int, float]]:
        ids = np.fromiter(allowed, dtype=np.int64, count=len(allowed))
        vectors = self._vectors(ids)
        scores = vectors @ np.asarray(vector, dtype=np.float32)
        best = np.argpartition(-scores, k - 1)[:k] if k < len(ids) else np.arange(len(ids))
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(int(ids[i]), float(scores[i])) for i in best]

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        """The vectors of `ids`: from the index's file where it holds them, the rest from
        hnswlib (whose `get_items` is slow per vector: the photos added since the file)."""
        stored = self._stored_file()
        rows = np.full(len(ids), -1, dtype=np.int64) if stored is None else stored.rows_of(ids)
        vectors = np.empty((len(ids), self.dim), dtype=np.float32)
        found = rows >= 0
        if found.any():
            vectors[found] = stored.vectors[rows[found]]
        if not found.all():
            vectors[~found] = np.asarray(self.index.get_items(ids[~found]), dtype=np.float32)
        return vectors

    def vectors_readable(self) -> bool:
        """Whether a filtered search reads the vectors from the index's file (memory-mapped
        from now on, so it stays readable after a writer replaces it), or has none to read."""
        return len(self) == 0 or self._stored_file() is not None

    def _stored_file(self) -> StoredVectors | None:
        """The index's file memory-mapped, once `data_file` is checked to hold the very
        vectors hnswlib holds (its first live vector compared); None where it cannot serve."""
        if self._stored is not None or self.data_file is None:
            return self._stored
        stored = StoredVectors.open(self.data_file, self.dim, self.index.get_current_count())
        if stored is None:
            self.data_file = None
            return None
        live = (int(i) for i in np.flatnonzero(stored.rows >= 0) if i not in self.deleted)
        first = next(live, None)
        try:
            own = None if first is None else self.index.get_items([first])
        except RuntimeError:  # hnswlib: a label it does not hold
            own = None
        if own is None or not np.array_equal(
            stored.get(np.array([first])), np.asarray(own, dtype=np.float32)
        ):
            self.data_file = None
            return None
        self._stored = stored
        return stored

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        self.data_file = None  # it lacks the new vectors: a save writes another file
        needed = self.index.get_current_count() + len(ids)
        if needed > self.index.get_max_elements():
            self.index.resize_index(max(needed, 2 * self.index.get_max_elements()))
        self.index.add_items(np.asarray(vectors, dtype=np.float32), np.asarray(ids, np.int64))

    def remove(self, ids: set[int]) -> None:
        for photo_id in ids:
            self.index.mark_deleted(photo_id)
        self.deleted |= ids


def build_index(ids: np.ndarray, vectors: np.ndarray, fingerprint: str, dim: int) -> VectorIndex:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=max(len(ids), 16), ef_construction=EF_CONSTRUCTION, M=M)
    vindex = VectorIndex(index=index, fingerprint=fingerprint, dim=dim)
    vindex.add(ids, vectors)
    return vindex


def load_index(directory: Path) -> VectorIndex | None:
    """The index on disk, or None when it is missing or unreadable (then it gets rebuilt)."""
    import hnswlib

    try:
        pointer = read_pointer(directory)
        if pointer is None:
            return None
        data_file = directory / Path(pointer["file"]).name
        dim = int(pointer["dim"])
        index = hnswlib.Index(space="ip", dim=dim)
        index.load_index(str(data_file), max_elements=0)
        if index.get_current_count() != int(pointer["count"]):
            return None
        return VectorIndex(
            index=index,
            fingerprint=str(pointer["fingerprint"]),
            dim=dim,
            deleted={int(i) for i in pointer.get("deleted", [])},
            data_file=data_file,
            generation=_generation(pointer),
        )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None


def read_pointer(directory: Path) -> dict | None:
    """`hnsw.json` as written, or None when it is missing or unreadable."""
    try:
        pointer = json.loads((directory / POINTER_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return pointer if isinstance(pointer, dict) else None


def _generation(pointer: dict) -> str | None:
    value = pointer.get("generation")
    return value if isinstance(value, str) else None


def index_is_current(directory: Path, store: PhotoStore, fingerprint: str) -> bool:
    """Whether the index on disk holds exactly the library's photos in the space of
    `fingerprint`, known from the generations alone (one row, one small file, one stat):
    False also where that cannot tell (then `sync_index` compares the photos). The data
    file itself is read by the next search, which rebuilds it if it is damaged."""
    generation = store.generation()
    pointer = read_pointer(directory)
    if generation is None or pointer is None:
        return False
    try:
        data_file = directory / Path(str(pointer["file"])).name
        return (
            _generation(pointer) == generation
            and pointer.get("fingerprint") == fingerprint
            and data_file.is_file()
        )
    except (KeyError, OSError):
        return False


def save_index(directory: Path, vindex: VectorIndex) -> None:
    data_name = f"hnsw-{uuid.uuid4().hex}.bin"
    data_path = directory / data_name
    _write_whole(vindex, data_path)
    try:
        _write_pointer(directory, vindex, data_name)
    except BaseException:
        data_path.unlink(missing_ok=True)
        raise
    vindex.data_file, vindex._stored = data_path, None
    # Older versions, and leftovers of a run killed mid-write, are unreferenced now.
    for old in [*directory.glob("hnsw-*.bin"), *directory.glob(f"{POINTER_NAME}.*{TMP_SUFFIX}")]:
        if old.name != data_name:
            old.unlink(missing_ok=True)


def _write_pointer(directory: Path, vindex: VectorIndex, data_name: str) -> None:
    pointer = {
        "fingerprint": vindex.fingerprint,
        "dim": vindex.dim,
        "file": data_name,
        "count": vindex.index.get_current_count(),
        "deleted": sorted(vindex.deleted),
        "space": "ip",
        "generation": vindex.generation,
    }
    atomic_write_text(directory / POINTER_NAME, json.dumps(pointer))


def record_generation(directory: Path, vindex: VectorIndex) -> None:
    """Write the pointer again with `vindex.generation`, naming the same data file: for an
    index loaded from disk whose photos were found to be the library's (no data rewritten)."""
    if vindex.data_file is None:
        save_index(directory, vindex)
        return
    _write_pointer(directory, vindex, vindex.data_file.name)


def _write_whole(vindex: VectorIndex, path: Path) -> None:
    """Write the hnswlib file, and prove it whole, before a pointer may name it.

    hnswlib's writer reports no error: a file it cannot create, or a disk that fills up, and
    it returns as if all were written. So the file is created here first (a read-only or
    vanished folder raises its own OSError), and read back after (hnswlib's reader refuses a
    short file): a short one is removed and raised as an OSError with the errno the disk's
    state explains.
    """
    import hnswlib

    path.open("xb").close()
    try:
        vindex.index.save_index(str(path))
        fsync_file(path)
        hnswlib.Index(space="ip", dim=vindex.dim).load_index(str(path), max_elements=0)
    except RuntimeError:
        cause = disk_state(path.parent) or errno.EIO
        path.unlink(missing_ok=True)
        raise OSError(cause, "the search index was not written whole", str(path)) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def sync_index(
    directory: Path,
    store: PhotoStore,
    model,
    *,
    write: bool = True,
    current: VectorIndex | None = None,
) -> VectorIndex:
    """Bring the index in line with SQLite for `model`: update in place or rebuild.

    `model` needs only `fingerprint` and `project_images` (the heads), never the encoders.
    When the index records the library's generation it is current as it is (see the module
    docstring); otherwise every photo id is compared. `current`: the index a long-lived
    reader holds in memory, brought in line in place (the photos committed since: a few
    milliseconds) instead of read whole from disk again (tens of milliseconds at 10k photos,
    after every commit of a running `watch`), as long as its file still serves its vectors
    (`vectors_readable`: hnswlib's own copy is slow to read); read from disk when it cannot be.
    """
    # Read before the photos: they are then at least this generation (see the docstring).
    generation = store.generation()
    vindex, changed = None, False
    if current is not None and current.vectors_readable():
        vindex, changed = _in_line(current, store, model, generation)
    if vindex is None:
        vindex, changed = _in_line(load_index(directory), store, model, generation)
    if vindex is None:
        ids, raw = store.embeddings()
        vectors = model.project_images(raw) if len(ids) else raw
        dim = int(vectors.shape[1]) if len(ids) else 1
        vindex = build_index(ids, vectors, model.fingerprint, dim)
        changed = True
    recorded = vindex.generation
    vindex.generation = generation
    if write and changed:
        save_index(directory, vindex)
    elif write and recorded != generation and generation is not None:
        record_generation(directory, vindex)  # the same photos: only the pointer changes
    return vindex


def _in_line(
    vindex: VectorIndex | None, store: PhotoStore, model, generation: int | None
) -> tuple[VectorIndex | None, bool]:
    """`vindex` holding exactly SQLite's photos (updated in place), and whether it changed;
    (None, False) when it cannot (none, another model's, too many deletions: rebuild)."""
    if vindex is None or vindex.fingerprint != model.fingerprint:
        return None, False
    if generation is not None and vindex.generation == generation:
        return vindex, False
    db_ids = {int(i) for i in store.ids()}
    live = vindex.labels
    to_add, to_remove = db_ids - live, live - db_ids
    total = vindex.index.get_current_count() + len(to_add)
    if len(vindex.deleted) + len(to_remove) > MAX_DELETED_FRACTION * max(total, 1):
        return None, False
    if not (to_add or to_remove):
        return vindex, False
    ids, raw = store.embeddings(np.array(sorted(to_add), dtype=np.int64))
    vectors = model.project_images(raw) if len(ids) else raw
    if len(ids) and vectors.shape[1] != vindex.dim:
        return None, False
    vindex.add(ids, vectors)
    vindex.remove(to_remove)
    return vindex, True


def drop_removed_photos(directory: Path, store: PhotoStore) -> None:
    """Mark the labels of photos no longer in SQLite deleted. Needs no model, as nothing is
    projected; past MAX_DELETED_FRACTION the next `sync_index` rebuilds."""
    generation = store.generation()
    vindex = load_index(directory)
    if vindex is None:
        return
    db_ids = {int(i) for i in store.ids()}
    removed = vindex.labels - db_ids
    if removed:
        vindex.remove(removed)
        # Current only if it now holds exactly the library's photos.
        vindex.generation = generation if vindex.labels == db_ids else None
        save_index(directory, vindex)


IndexStatus = Literal["ok", "stale", "missing", "unreadable"]


@dataclass(frozen=True)
class IndexHealth:
    """How the HNSW index on disk compares with SQLite.

    status: "ok" (same photos), "stale" (they differ: the next search or index updates it),
    "missing" or "unreadable" (the next search or index rebuilds it from SQLite). `missing`
    counts the library's photos the index lacks, `extra` the labels it holds beyond them.
    """

    status: IndexStatus
    vectors: int
    fingerprint: str | None
    missing: int
    extra: int

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def index_health(directory: Path, store: PhotoStore) -> IndexHealth:
    """How the HNSW index on disk compares with SQLite, without changing either."""
    db_ids = {int(i) for i in store.ids()}
    exists = (directory / POINTER_NAME).exists()
    vindex = load_index(directory)
    if vindex is None:
        status: IndexStatus = "unreadable" if exists else "missing"
        return IndexHealth(status, vectors=0, fingerprint=None, missing=len(db_ids), extra=0)
    labels = vindex.labels
    missing, extra = len(db_ids - labels), len(labels - db_ids)
    return IndexHealth(
        "ok" if not missing and not extra else "stale",
        vectors=len(labels),
        fingerprint=vindex.fingerprint,
        missing=missing,
        extra=extra,
    )
