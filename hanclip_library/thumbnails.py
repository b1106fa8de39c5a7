"""Thumbnails of indexed photos: made once, kept in the library folder, size-bounded.

A thumbnail is a JPEG no larger than SIZE x SIZE pixels, upright (EXIF orientation applied),
decoded the way `index` decodes the photo (HEIC and camera RAW included). Its cache key is the
photo's content hash and the size and modification time the library recorded for it, so a
photo that `index` sees change gets a new thumbnail, and copies of one photo share one. A
photo whose file differs from what the library recorded (changed since the last `index`) is
rendered fresh and not cached.

The cache lives in `<library>/.thumbnails/`, at most `max_bytes` in all: past that the least
recently used files go. Where the folder cannot be written (read-only media, a full disk),
thumbnails are made and served without being kept; the library itself is never written.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hanclip_library.store import PhotoRecord, read_only_folder
from hanclip_model.errors import ImageLoadError, StorageError
from hanclip_model.files import TMP_SUFFIX, atomic_write_bytes
from hanclip_model.images import load_image

# Named as desktops name theirs: `index` always skips such a folder (DEFAULT_EXCLUDES), so a
# library kept inside the photo tree never indexes its own thumbnails.
THUMBNAILS_DIR = ".thumbnails"
GRID_SIZE = 360  # the grid: 180-px tiles at twice the pixels for high-density screens
LARGE_SIZE = 1600  # the large view
SIZES = (GRID_SIZE, LARGE_SIZE)
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
JPEG_QUALITY = 82
# After an eviction the cache is this fraction of its bound, so evictions are rare events.
_EVICT_TO = 0.9


class ThumbnailUnavailable(Exception):
    """The photo cannot be shown: its file is gone or unreadable, and no thumbnail is kept."""


@dataclass(frozen=True)
class Thumbnail:
    data: bytes  # JPEG
    etag: str  # changes whenever the bytes may


def render_thumbnail(path: str | os.PathLike, size: int) -> bytes:
    """The photo at `path` as a JPEG within `size` x `size`, upright, RGB."""
    loaded = load_image(path, min_side=size)
    image = loaded.image
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def _key(record: PhotoRecord, size: int) -> str:
    text = f"{record.sha256}:{record.size}:{record.mtime_ns}:{size}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _stat(record: PhotoRecord) -> os.stat_result | None:
    """The photo's file as it is now; None when it cannot be seen (offline, gone)."""
    try:
        return os.stat(record.path)
    except OSError:
        return None


def _changed(record: PhotoRecord, st: os.stat_result | None) -> bool:
    """Whether the file differs from what the library recorded of it."""
    return st is not None and (st.st_size, st.st_mtime_ns) != (record.size, record.mtime_ns)


def _etag(record: PhotoRecord, size: int, st: os.stat_result | None) -> str:
    key = _key(record, size)
    if st is None or not _changed(record, st):
        return key
    return f"{key}-{st.st_size:x}-{st.st_mtime_ns:x}"


class ThumbnailCache:
    """Thumbnails by photo record; `directory` None makes them without keeping them."""

    def __init__(
        self, directory: Path | None, max_bytes: int = DEFAULT_MAX_BYTES, *, keep: bool = True
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._total: int | None = None  # bytes kept, counted on the first write
        # False: those kept already are served, none is written or touched.
        self._writable = keep and directory is not None

    @classmethod
    def for_library(cls, library: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> ThumbnailCache:
        """The library's cache; on a library that cannot be written, thumbnails are made on
        the fly (`read_only_folder`)."""
        return cls(library / THUMBNAILS_DIR, max_bytes, keep=not read_only_folder(library))

    def get(self, record: PhotoRecord, size: int = GRID_SIZE) -> Thumbnail:
        """The thumbnail of `record`, from the cache or made now (and kept when it can be).

        Raises ThumbnailUnavailable when the photo cannot be read and none is kept.
        """
        key = _key(record, size)
        st = _stat(record)
        if _changed(record, st):  # changed since indexed: what the library knows is not the file
            return Thumbnail(self._render(record, size), etag=_etag(record, size, st))
        cached = self._read(key)
        if cached is not None:
            return Thumbnail(cached, etag=key)
        if st is None:
            raise ThumbnailUnavailable(f"{record.path} cannot be read (offline or gone)")
        data = self._render(record, size)
        self._keep(key, data)
        return Thumbnail(data, etag=key)

    def _render(self, record: PhotoRecord, size: int) -> bytes:
        try:
            return render_thumbnail(record.path, size)
        except ImageLoadError as exc:
            raise ThumbnailUnavailable(f"{record.path}: {exc}") from None

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.jpg"

    def _read(self, key: str) -> bytes | None:
        if self.directory is None:
            return None
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if self._writable:
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: evicted last
        return data

    def _keep(self, key: str, data: bytes) -> None:
        if not self._writable or self.directory is None:
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
        except (OSError, StorageError):
            # Read-only media or a full disk: thumbnails are still served, only not kept.
            self._writable = False
            return
        with self._lock:
            if self._total is None:
                self._total = self._count()
            else:
                self._total += len(data)
            if self._total > self.max_bytes:
                self._total = self._evict(int(self.max_bytes * _EVICT_TO))

    def _files(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, path) of every kept thumbnail."""
        assert self.directory is not None
        found = []
        try:
            shards = list(os.scandir(self.directory))
        except OSError:
            return []
        for shard in shards:
            if not shard.is_dir(follow_symlinks=False):
                continue
            try:
                entries = list(os.scandir(shard.path))
            except OSError:
                continue
            for entry in entries:
                if not entry.name.endswith(".jpg") or TMP_SUFFIX in entry.name:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                found.append((st.st_mtime, st.st_size, Path(entry.path)))
        return found

    def _count(self) -> int:
        return sum(size for _, size, _ in self._files())

    def _evict(self, target: int) -> int:
        """Remove the least recently used thumbnails until at most `target` bytes stay."""
        files = sorted(self._files())
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= target:
                break
            try:
                path.unlink()
            except OSError:
                continue
            total -= size
        return total

    def kept_bytes(self) -> int:
        """Bytes the cache holds now (counted from the folder)."""
        return self._count() if self.directory is not None else 0


def thumbnail_etags(record: PhotoRecord, sizes: Sequence[int]) -> list[str]:
    """What names the bytes `ThumbnailCache.get(record, size)` gives for each size (the file
    looked at once): the cache key, or, for a file changed since it was indexed, the key and
    the file's own size and time."""
    st = _stat(record)
    return [_etag(record, size, st) for size in sizes]


def thumbnail_etag(record: PhotoRecord, size: int) -> str:
    return thumbnail_etags(record, [size])[0]
