"""The recognition pass of `hanclip index`, through the command line, with a fake engine."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
from PIL import Image
from text_photos import BROKEN, PLAIN, FakeEngine, use_engine, write_photo, write_text_photos

from hanclip_library.migrations import SCHEMA_VERSION
from hanclip_library.store import DB_NAME
from hanclip_library.text_engines import (
    EngineId,
    EngineUnavailable,
    LookingEngine,
    Recognition,
    RecognitionFailed,
)
from hanclip_library.text_pass import READ_SIDE, read_one

PHOTOS = 8  # write_text_photos: two with text, one broken, five without


def index(cli, photos, library, model, *extra):
    result = cli("index", photos, "--library", library, "--model", model, "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return result.json()


def readings(library) -> list[tuple[str, str]]:
    with sqlite3.connect(library / DB_NAME) as conn:
        return conn.execute("SELECT status, text FROM photo_text ORDER BY id").fetchall()


@pytest.fixture
def text_photos(tmp_path):
    return write_text_photos(tmp_path / "사진")


def test_the_pass_reads_every_photo_once_and_counts_what_it_read(
    cli, tiny, text_photos, library, monkeypatch
):
    engine = use_engine(monkeypatch, FakeEngine())
    folder = text_photos[BROKEN].parent
    report = index(cli, folder, library, tiny.plain_bundle)
    assert report["added"] == PHOTOS
    assert report["text"] == {
        "engine": "tesseract+detect",  # the default, which use_engine stands in for
        "engine_version": "1",
        "languages": "kor+eng",
        "read": PHOTOS,
        "with_text": 2,
        "no_text": 5,
        "failed": 1,
    }
    assert sorted(engine.reads) == sorted(text_photos)
    # Nothing new: nothing read, the failed photo included (read again only with --reocr).
    again = use_engine(monkeypatch, FakeEngine())
    assert index(cli, folder, library, tiny.plain_bundle)["text"]["read"] == 0
    assert again.reads == []
    info = cli("info", "--library", library, "--json").json()["text"]
    assert info == {"read": 8, "with_text": 2, "no_text": 5, "failed": 1, "pending": 0}
    reocr = use_engine(monkeypatch, FakeEngine())
    assert index(cli, folder, library, tiny.plain_bundle, "--reocr")["text"]["read"] == PHOTOS
    assert len(reocr.reads) == PHOTOS and len(readings(library)) == PHOTOS


def test_an_engine_failure_is_recorded_with_its_reason_and_skipped(
    cli, tiny, text_photos, library, monkeypatch
):
    use_engine(monkeypatch, FakeEngine())
    result = cli(
        "index", text_photos[BROKEN].parent, "--library", library, "--model", tiny.plain_bundle
    )
    assert result.exit_code == 0, result.stderr
    assert "1 failed" in result.stdout
    assert f"could not read the text of {text_photos[BROKEN]}" in result.stderr
    with sqlite3.connect(library / DB_NAME) as conn:
        (error,) = conn.execute("SELECT error FROM photo_text WHERE status = 'failed'").fetchone()
    assert error == "the fake engine cannot read this one"


def test_a_moved_or_copied_photo_is_not_read_again_and_a_changed_one_is(
    cli, tiny, text_photos, library, monkeypatch
):
    folder = text_photos[BROKEN].parent
    use_engine(monkeypatch, FakeEngine())
    index(cli, folder, library, tiny.plain_bundle)
    (folder / "옮김").mkdir()
    shutil.move(text_photos["screenshot.png"], folder / "옮김" / "screenshot.png")
    shutil.copy(text_photos["chat.png"], folder / "chat copy.png")
    engine = use_engine(monkeypatch, FakeEngine())
    report = index(cli, folder, library, tiny.plain_bundle)
    assert report["moved"] == 1 and report["added"] == 1
    assert engine.reads == [] and report["text"]["read"] == 0
    write_photo(text_photos[PLAIN[0]], 3 + 0, seed=1)  # new pixels, same key: another photo
    engine = use_engine(monkeypatch, FakeEngine())
    report = index(cli, folder, library, tiny.plain_bundle)
    assert report["updated"] == 1 and engine.reads == [PLAIN[0]]


def test_a_kill_during_the_pass_keeps_what_was_read_and_the_rerun_goes_on(
    cli, tiny, text_photos, library, monkeypatch
):
    folder = text_photos[BROKEN].parent
    use_engine(monkeypatch, FakeEngine(interrupt_after=3))
    result = cli("index", folder, "--library", library, "--model", tiny.plain_bundle)
    assert result.exit_code != 0
    assert len(readings(library)) == 3  # read before the kill: committed
    engine = use_engine(monkeypatch, FakeEngine())
    report = index(cli, folder, library, tiny.plain_bundle)
    assert report["unchanged"] == PHOTOS  # the photos themselves were all saved
    assert len(engine.reads) == PHOTOS - 3 and report["text"]["read"] == PHOTOS - 3
    assert len(readings(library)) == PHOTOS


def test_without_an_engine_index_says_so_in_one_line_and_works_as_before(
    cli, tiny, text_photos, library, monkeypatch
):
    from hanclip_library import text_pass

    line = "text recognition needs tesserocr: pip install 'hanclip[ocr]'"

    def unavailable(*args):
        raise EngineUnavailable(line)

    monkeypatch.setattr(text_pass, "open_text_engine", unavailable)
    folder = text_photos[BROKEN].parent
    result = cli("index", folder, "--library", library, "--model", tiny.plain_bundle, "--json")
    assert result.exit_code == 0, result.stderr
    said = [said for said in result.stderr.splitlines() if "text" in said]
    assert said == [f"text in photos not read: {line}"]  # the progress bar aside
    assert result.json()["added"] == PHOTOS and result.json()["text"] is None
    asked = cli("index", folder, "--library", library, "--model", tiny.plain_bundle, "--ocr")
    assert asked.exit_code != 0 and line in asked.stderr
    quiet = cli("index", folder, "--library", library, "--model", tiny.plain_bundle, "--no-ocr")
    assert quiet.exit_code == 0 and "text" not in quiet.stderr


def test_a_library_from_before_the_text_table_opens_and_gains_the_pass(
    cli, tiny, text_photos, library, monkeypatch
):
    folder = text_photos[BROKEN].parent
    index(cli, folder, library, tiny.plain_bundle, "--no-ocr")
    with sqlite3.connect(library / DB_NAME) as conn:  # as schema 6 left it
        for trigger in ("photo_text_ai", "photo_text_ad", "photo_text_au"):
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("DROP TABLE photo_text_fts")
        conn.execute("DROP TABLE photo_text")
        conn.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    info = cli("info", "--library", library, "--json").json()
    assert info["text"]["pending"] == PHOTOS  # a reader reads it as it is
    found = cli("search", "스타벅스", "--library", library, "--model", tiny.plain_bundle, "--json")
    assert found.exit_code == 0 and all("text_match" not in hit for hit in found.json())
    use_engine(monkeypatch, FakeEngine())
    assert index(cli, folder, library, tiny.plain_bundle)["text"]["read"] == PHOTOS
    with sqlite3.connect(library / DB_NAME) as conn:
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert json.loads(version) == SCHEMA_VERSION


class LookingFake:
    """An engine with a first look: it records the size of every image it is handed, and its
    look sees text only in images whose top-left pixel is red."""

    id = EngineId("fake+look", "1", "kor+eng")
    look_side = 300

    def __init__(self) -> None:
        self.looked: list[tuple[int, int]] = []
        self.read_sizes: list[tuple[int, int]] = []

    def first_look(self, image):
        self.looked.append(image.size)
        return "page" if image.getpixel((0, 0))[0] > 200 else None

    def read_as(self, image, layout: str) -> Recognition:
        self.read_sizes.append(image.size)
        return Recognition("영수증 4,500원")

    def read(self, image) -> Recognition:  # the one step, as the benchmark calls it
        layout = self.first_look(image)
        return Recognition("") if layout is None else self.read_as(image, layout)


def test_the_first_look_is_made_on_a_small_decode_and_only_text_is_decoded_large(tmp_path):
    """A 12-MP JPEG is looked at from a draft decode near the look's side; one the look
    rejects is never decoded at the reading's size, one it keeps is."""
    engine = LookingFake()
    assert isinstance(engine, LookingEngine)
    photos = {}
    for name, colour in (("plain", (20, 90, 160)), ("receipt", (250, 10, 10))):
        photos[name] = tmp_path / f"{name}.jpg"
        Image.new("RGB", (4000, 3000), colour).save(photos[name], quality=90)

    reading, _ = read_one(engine, "a" * 64, [str(photos["plain"])])
    assert reading.status == "no_text" and engine.read_sizes == []
    assert min(engine.looked[0]) >= engine.look_side and max(engine.looked[0]) < 2000

    reading, _ = read_one(engine, "b" * 64, [str(photos["receipt"])])
    assert reading.status == "text" and "영수증" in reading.text
    assert min(engine.read_sizes[0]) >= READ_SIDE > max(engine.looked[1])


def test_a_photo_that_breaks_the_look_is_recorded_as_failed(tmp_path):
    engine = LookingFake()
    engine.first_look = lambda image: (_ for _ in ()).throw(RecognitionFailed("detector broke"))
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (800, 600), "white").save(path)
    reading, where = read_one(engine, "c" * 64, [str(path)])
    assert reading.status == "failed" and reading.error == "detector broke" and where == str(path)
