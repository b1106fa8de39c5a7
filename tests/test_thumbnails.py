"""Thumbnails: upright, bounded, cached in the library folder, rebuilt when the photo changes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from hanclip_library import thumbnails as thumbs
from hanclip_library.store import PhotoRecord
from hanclip_library.thumbnails import (
    GRID_SIZE,
    ThumbnailCache,
    ThumbnailUnavailable,
    render_thumbnail,
    thumbnail_etag,
)


def _photo(path: Path, size=(800, 600), color=(200, 40, 40), orientation: int | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, color)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(path, format="JPEG", exif=exif.tobytes())
    return path


def _record(path: Path, photo_id: int = 1, sha: str | None = None) -> PhotoRecord:
    st = path.stat()
    return PhotoRecord(
        id=photo_id,
        path=str(path),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        sha256=sha or f"{photo_id:064x}",
    )


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return image.size


def test_thumbnail_is_upright_and_within_the_box(tmp_path: Path) -> None:
    plain = _photo(tmp_path / "가로.jpg", size=(1200, 800))
    turned = _photo(tmp_path / "세로.jpg", size=(1200, 800), orientation=6)
    assert _size(render_thumbnail(plain, GRID_SIZE)) == (360, 240)
    # EXIF orientation 6: stored landscape, shown portrait.
    assert _size(render_thumbnail(turned, GRID_SIZE)) == (240, 360)


def test_a_small_photo_is_not_enlarged(tmp_path: Path) -> None:
    small = _photo(tmp_path / "작은.jpg", size=(64, 48))
    assert _size(render_thumbnail(small, GRID_SIZE)) == (64, 48)


def test_made_once_then_read_from_the_library_folder(tmp_path: Path, monkeypatch) -> None:
    photo = _photo(tmp_path / "사진" / "a.jpg")
    cache = ThumbnailCache.for_library(tmp_path / "library")
    first = cache.get(_record(photo))
    kept = list((tmp_path / "library" / ".thumbnails").rglob("*.jpg"))
    assert len(kept) == 1 and kept[0].read_bytes() == first.data

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(thumbs, "render_thumbnail", no_render)
    again = cache.get(_record(photo))
    assert again == first


def test_a_changed_photo_gets_a_new_thumbnail_and_etag(tmp_path: Path) -> None:
    photo = _photo(tmp_path / "a.jpg", color=(255, 0, 0))
    cache = ThumbnailCache.for_library(tmp_path / "library")
    indexed = _record(photo)
    before = cache.get(indexed)
    _photo(photo, color=(0, 0, 255), size=(640, 480))
    os.utime(photo, ns=(indexed.mtime_ns + 10**9, indexed.mtime_ns + 10**9))
    # The library still holds the old record: the file differs from it, so it is made fresh.
    changed = cache.get(indexed)
    assert changed.etag != before.etag == thumbnail_etag(_record_as(indexed), GRID_SIZE)
    assert changed.etag == thumbnail_etag(indexed, GRID_SIZE)
    with Image.open(io.BytesIO(changed.data)) as image:
        r, g, b = image.convert("RGB").getpixel((5, 5))
        assert b > 200 and r < 50
    # ... and not kept under the old record's key.
    assert len(list((tmp_path / "library" / ".thumbnails").rglob("*.jpg"))) == 1
    # Once `index` records the change, the new record has its own kept thumbnail.
    reindexed = _record(photo, sha="f" * 64)
    assert cache.get(reindexed).etag == thumbnail_etag(reindexed, GRID_SIZE) != before.etag


def _record_as(record: PhotoRecord) -> PhotoRecord:
    """`record` for a file that is not there: its etag is the plain key."""
    return PhotoRecord(
        id=record.id,
        path=record.path + ".gone",
        size=record.size,
        mtime_ns=record.mtime_ns,
        sha256=record.sha256,
    )


def test_an_offline_photo_is_served_from_the_cache_else_unavailable(tmp_path: Path) -> None:
    shown = _photo(tmp_path / "drive" / "a.jpg")
    never = _photo(tmp_path / "drive" / "b.jpg", color=(0, 255, 0))
    cache = ThumbnailCache.for_library(tmp_path / "library")
    kept = cache.get(_record(shown, 1))
    records = _record(shown, 1), _record(never, 2)
    shown.unlink()
    never.unlink()
    assert cache.get(records[0]) == kept
    with pytest.raises(ThumbnailUnavailable):
        cache.get(records[1])


def test_an_unreadable_photo_is_unavailable(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(ThumbnailUnavailable, match="broken.jpg"):
        ThumbnailCache.for_library(tmp_path / "library").get(_record(broken))


def test_the_cache_stays_within_its_bound_dropping_least_recently_used(tmp_path: Path) -> None:
    photos = [_photo(tmp_path / f"p{i}.jpg", color=(i * 20, 100, 200 - i * 20)) for i in range(8)]
    records = [_record(p, i + 1) for i, p in enumerate(photos)]
    one = len(render_thumbnail(photos[0], GRID_SIZE))
    cache = ThumbnailCache.for_library(tmp_path / "library", max_bytes=int(one * 4.5))
    cache.get(records[0])
    for record in records[1:]:
        cache.get(record)
        os.utime(cache._path(thumbs._key(records[0], GRID_SIZE)))  # photo 0 stays in use
    assert cache.kept_bytes() <= int(one * 4.5)
    kept = {p.name for p in (tmp_path / "library" / ".thumbnails").rglob("*.jpg")}
    assert f"{thumbs._key(records[0], GRID_SIZE)}.jpg" in kept
    assert f"{thumbs._key(records[1], GRID_SIZE)}.jpg" not in kept  # the oldest went first
    assert f"{thumbs._key(records[-1], GRID_SIZE)}.jpg" in kept


def test_an_unwritable_library_folder_still_gives_thumbnails(tmp_path: Path) -> None:
    photo = _photo(tmp_path / "a.jpg")
    blocker = tmp_path / "library"
    blocker.write_text("a file where the folder would be")
    cache = ThumbnailCache.for_library(blocker)
    thumbnail = cache.get(_record(photo))
    assert _size(thumbnail.data) == (360, 270)
    assert blocker.read_text() == "a file where the folder would be"


def test_a_library_inside_the_photo_tree_never_indexes_its_thumbnails(tiny, tmp_path, cli):
    from hanclip_eval.tiny_models import write_photo_folder

    photos = tmp_path / "사진"
    write_photo_folder(photos, count=4)
    library = photos / "hanclip-library"  # not hidden: walked by `index`
    first = cli("index", photos, "--library", library, "--model", tiny.plain_bundle, "--json")
    assert first.exit_code == 0 and first.json()["added"] == 4
    cache = ThumbnailCache.for_library(library)
    for photo in sorted(photos.rglob("*.jpg")):
        cache.get(_record(photo))
    assert list((library / ".thumbnails").rglob("*.jpg"))
    again = cli("index", photos, "--library", library, "--json").json()
    assert (again["scanned"], again["added"]) == (4, 0)
