"""`hanclip search --html FILE [--open]`: one self-contained page of the hits."""

from __future__ import annotations

import base64
import io
import os
import shutil
import webbrowser
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes, urlsplit

import numpy as np
import pytest
from conftest import index_once
from PIL import Image

from hanclip_cli.commands.search import SearchArgs, parse_search_args
from hanclip_cli.gallery import render_gallery
from hanclip_eval.tiny_models import write_photo_folder
from hanclip_library.request import SearchRequest
from hanclip_library.searcher import SearchHit
from hanclip_library.thumbnails import GRID_SIZE

ROTATED = "세로 #1 100%.jpg"  # landscape pixels, EXIF orientation 6: upright it is portrait
HOSTILE = '<script>alert(1)<\\script> & "q".jpg'
DOOMED = "지울 사진.jpg"  # deleted after indexing in the tests that need it
VOID = {"img", "br", "meta", "link", "input", "hr", "source", "wbr"}


def _pixels(seed: int, height: int, width: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _write_photos(folder: Path) -> None:
    write_photo_folder(folder, count=6)  # Korean names, a Korean subfolder
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to show
    _pixels(1, 40, 80).save(folder / ROTATED, exif=exif)
    _pixels(2, 30, 30).save(folder / HOSTILE)
    _pixels(3, 30, 40).save(folder / DOOMED)


@pytest.fixture(autouse=True)
def _english(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's words follow the locale (tests/test_first_hour_search.py): these tests read
    the English ones."""
    for name in ("LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "en_US.UTF-8")


def _index(cli, folder: Path, library: Path, model: Path) -> None:
    result = cli("index", folder, "--library", library, "--model", model)
    assert result.exit_code == 0, result.stderr


@pytest.fixture(scope="module")
def indexed(tiny, tmp_path_factory: pytest.TempPathFactory, _cache_dir: Path):
    """(library, photos, model): nine photos indexed, shared by the module's tests (which
    only read the photos)."""
    root = tmp_path_factory.mktemp("gallery")
    folder = root / "사진"
    _write_photos(folder)
    library = root / "library"
    index_once(folder, library, tiny.plain_bundle, home=root / "home", cache=_cache_dir)
    return library, folder, tiny.plain_bundle


class Page(HTMLParser):
    """What a reader of the page sees: the tags, the texts, and each tile."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, str] = {}  # by element: title, h1, or class
        self.tiles: list[dict] = []
        self._open: list[str | None] = []  # the named element each open tag is in
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        classes = (attrs.get("class") or "").split()
        if "tile" in classes:
            self.tiles.append(
                {
                    "position": int(attrs["data-rank"]),
                    "preview": attrs["data-preview"],
                    "hrefs": [],
                    "img": None,
                }
            )
        tile = self.tiles[-1] if self.tiles and "tile" in self._open else None
        if tile is not None and tag == "a":
            tile["hrefs"].append(attrs["href"])
        if tile is not None and tag == "img":
            tile["img"] = attrs["src"]
        if tile is not None and tag == "time":
            tile["datetime"] = attrs["datetime"]
        if tag in VOID:
            return
        name = next(iter(classes), None) if classes else None
        self._open.append(name or (tag if tag in ("title", "h1") else None))

    def handle_endtag(self, tag):
        if tag not in VOID and self._open:
            self._open.pop()

    def handle_data(self, data):
        names = [name for name in self._open if name]
        if not names:
            return
        name = names[-1]
        if "tile" in self._open and self.tiles:
            self.tiles[-1][name] = self.tiles[-1].get(name, "") + data
        else:
            self.texts[name] = self.texts.get(name, "") + data


def _page(path: Path) -> Page:
    raw = path.read_bytes()
    return Page(raw.decode("utf-8"))  # UTF-8, or this raises


def _jpeg(src: str) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert src.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :], validate=True)))
    assert image.format == "JPEG"
    image.load()
    return image


def _path_of(uri: str) -> str:
    parts = urlsplit(uri)
    assert parts.scheme == "file" and parts.netloc == "" and not parts.query
    assert not parts.fragment
    return unquote(parts.path, errors="strict")


def _common(indexed) -> list[object]:
    library, _, model = indexed
    return ["--library", library, "--model", model]


def test_the_page_holds_a_tile_per_hit_in_rank_order(cli, indexed, tmp_path) -> None:
    out = tmp_path / "노을 결과.html"
    plain = cli("search", "바다 위 노을", "-n", "100", "--json", *_common(indexed))
    result = cli("search", "바다 위 노을", "-n", "100", "--json", "--html", out, *_common(indexed))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == plain.stdout  # stdout stays what it would be
    hits = result.json()
    assert len(hits) == 9
    assert result.stderr.strip().splitlines() == [f"gallery: 9 photos → {out}"]

    page = _page(out)
    assert page.tags[0] == ("html", {"lang": "en"})  # the page's words are English here
    assert ("meta", {"charset": "utf-8"}) in page.tags
    assert page.texts["h1"] == "바다 위 노을"
    assert page.texts["title"].startswith("바다 위 노을") and "9 photos" in page.texts["title"]
    assert "9 photos" in page.texts["summary"]
    assert [tile["position"] for tile in page.tiles] == list(range(1, 10))
    for hit, tile in zip(hits, page.tiles, strict=True):
        assert tile["position"] == hit["rank"] and tile["rank"] == f"#{hit['rank']}"
        assert tile["score"] == f"{hit['score']:.3f}"
        assert tile["datetime"] == hit["taken_at"]
        assert tile["date"].startswith(hit["taken_at"].replace("T", " "))
        assert tile["path"] == hit["path"]
        # Both links (the picture and the path) open the original, as a proper file:// URI.
        assert len(tile["hrefs"]) == 2 and len(set(tile["hrefs"])) == 1
        assert _path_of(tile["hrefs"][0]) == hit["path"]
        assert Path(hit["path"]).as_uri() == tile["hrefs"][0]
        assert tile["preview"] == "thumbnail"
        thumbnail = _jpeg(tile["img"])
        assert 0 < max(thumbnail.size) <= GRID_SIZE
    # Self-contained: nothing fetched from anywhere, no script.
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed")
        for name in ("src", "href"):
            value = attrs.get(name)
            assert value is None or value.startswith(("data:image/jpeg;base64,", "file:///"))
    assert "<style>" in out.read_text(encoding="utf-8")


def test_a_korean_name_with_reserved_characters_round_trips_and_its_thumbnail_is_upright(
    cli, indexed, tmp_path
) -> None:
    _, folder, _ = indexed
    out = tmp_path / "page.html"
    result = cli("search", "산", "-n", "100", "--html", out, *_common(indexed))
    assert result.exit_code == 0, result.stderr
    tile = next(t for t in _page(out).tiles if t["path"] == str(folder / ROTATED))
    uri = tile["hrefs"][0]
    assert "#" not in uri and "%25" in uri and "%20" in uri  # '#', '%' and ' ' escaped
    assert "%EC%84%B8%EB%A1%9C" in uri  # 세로, percent-encoded UTF-8
    assert _path_of(uri) == str(folder / ROTATED)
    width, height = _jpeg(tile["img"]).size
    assert height == 2 * width  # 80x40 stored, shown turned: 40x80


def test_a_hostile_file_name_is_text_not_markup(cli, indexed, tmp_path) -> None:
    _, folder, _ = indexed
    out = tmp_path / "page.html"
    result = cli("search", "고양이", "-n", "100", "--html", out, *_common(indexed))
    assert result.exit_code == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert "<script" not in text and "<\\script" not in text
    assert "&lt;script&gt;alert(1)&lt;\\script&gt; &amp; &quot;q&quot;.jpg" in text
    page = _page(out)
    assert all(tag != "script" for tag, _ in page.tags)
    tile = next(t for t in page.tiles if t["path"] == str(folder / HOSTILE))
    assert _path_of(tile["hrefs"][0]) == str(folder / HOSTILE)
    assert tile["img"] is not None


def test_a_photo_deleted_after_indexing_is_left_out(cli, tiny, tmp_path, library) -> None:
    folder = tmp_path / "사진"
    _write_photos(folder)
    _index(cli, folder, library, tiny.plain_bundle)
    (folder / DOOMED).unlink()
    out = tmp_path / "page.html"
    common = ["--library", library, "--model", tiny.plain_bundle]
    result = cli("search", "바다", "-n", "100", "--paths", "--html", out, *common)
    assert result.exit_code == 0, result.stderr
    paths = result.stdout.splitlines()
    assert str(folder / DOOMED) not in paths  # issue 23: a gone photo is left out
    tiles = _page(out).tiles
    assert [t["path"] for t in tiles] == paths
    assert len(tiles) == 8 and all(_jpeg(t["img"]) for t in tiles)


def test_offline_photos_show_their_kept_thumbnails_or_a_placeholder(
    cli, tiny, tmp_path, library
) -> None:
    folder = tmp_path / "사진"
    _write_photos(folder)
    model = tiny.plain_bundle
    common = ["--library", library, "--model", model]
    _index(cli, folder, library, model)
    first = tmp_path / "first.html"
    # Two photos seen once (thumbnails kept in the library), then the drive goes away.
    assert cli("search", "바다", "-n", "2", "--html", first, *common).exit_code == 0
    seen = {t["path"] for t in _page(first).tiles}
    folder.rename(tmp_path / "away")
    _index(cli, folder, library, model)
    out = tmp_path / "offline.html"
    result = cli("search", "바다", "-n", "100", "--include-offline", "--html", out, *common)
    assert result.exit_code == 0, result.stderr
    page = _page(out)
    assert len(page.tiles) == 9 and all("offline" in t["note"] for t in page.tiles)
    assert {t["path"] for t in page.tiles if t["preview"] == "thumbnail"} == seen
    assert all("offline" in t["placeholder"] for t in page.tiles if t["preview"] != "thumbnail")
    assert "--include-offline" in page.texts["filters"]


def test_combined_queries_and_filters_are_named_on_the_page(cli, indexed, tmp_path) -> None:
    _, folder, _ = indexed
    out = tmp_path / "page.html"
    args = [
        "바다", "+", "노을", "-", "사람", "--after", "2000", "--before", "2100-01",
        "--in", folder, "--min-score", "-1", "--sort", "date-asc", "-n", "4",
    ]  # fmt: skip
    result = cli("search", *args, "--json", "--html", out, *_common(indexed))
    assert result.exit_code == 0, result.stderr
    hits = result.json()
    assert len(hits) == 4
    page = _page(out)
    assert page.texts["h1"] == "바다 + 노을 - 사람"
    filters = page.texts["filters"]
    for shown in ("--after 2000", "--before 2100-01", f"--in {folder}", "--min-score -1.0"):
        assert shown in filters
    assert "--sort date-asc" in filters
    assert [(t["rank"], t["path"]) for t in page.tiles] == [
        (f"#{h['rank']}", h["path"]) for h in hits
    ]

    out2 = tmp_path / "page2.html"
    photo = folder / ROTATED
    result = cli(
        "search", "--image", photo, "--add", "노을", "--sub", "사람", "--html", out2,
        "--paths", *_common(indexed),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    page = _page(out2)
    assert page.texts["h1"] == f"--image {photo} --add 노을 --sub 사람"
    assert [t["path"] for t in page.tiles] == result.stdout.splitlines()
    assert "filters" not in page.texts


def test_no_hits_still_writes_a_page_that_says_so(cli, indexed, tmp_path) -> None:
    out = tmp_path / "없음.html"
    result = cli("search", "바다", "--min-score", "2", "--html", out, *_common(indexed))
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"gallery: 0 photos → {out}"
    page = _page(out)
    assert page.tiles == []
    assert "No photo matched" in page.texts["empty"]
    assert "0 photos" in page.texts["summary"]


def test_open_shows_the_written_page_in_the_browser(cli, indexed, tmp_path, monkeypatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    out = tmp_path / "노을.html"
    result = cli("search", "바다 위 노을", "--html", out, "--open", *_common(indexed))
    assert result.exit_code == 0, result.stderr
    assert opened == [out.as_uri()]
    assert Path(_path_of(opened[0])).read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("route", ["typer", "fast"])
def test_open_without_html_is_a_usage_error(route, cli, fast_search, indexed, monkeypatch) -> None:
    monkeypatch.setattr(webbrowser, "open", lambda *a, **k: pytest.fail("opened a browser"))
    argv = ["바다", "--open", *map(str, _common(indexed))]
    if route == "typer":
        result = cli("search", *argv)
        code, stderr = result.exit_code, result.stderr
        assert result.stdout == ""
    else:
        code, stderr = fast_search(argv)
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1 and "--open" in stderr and "--html" in stderr


def _unwritable_targets(tmp_path: Path) -> list[Path]:
    (tmp_path / "a-folder.html").mkdir()
    (tmp_path / "a-file").write_text("x")
    targets = [
        tmp_path / "no such folder" / "page.html",
        tmp_path / "a-folder.html",
        tmp_path / "a-file" / "page.html",
    ]
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        targets.append(locked / "page.html")
    return targets


@pytest.mark.parametrize("route", ["typer", "fast"])
def test_an_unwritable_target_is_one_line_and_no_output(
    route, cli, fast_search, indexed, tmp_path
) -> None:
    for target in _unwritable_targets(tmp_path):
        argv = ["바다", "--paths", "--html", str(target), *map(str, _common(indexed))]
        if route == "typer":
            result = cli("search", *argv)
            code, stdout, stderr = result.exit_code, result.stdout, result.stderr
        else:
            code, stderr = fast_search(argv)
            stdout = ""
        assert code != 0, target
        assert stdout == ""
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: cannot write the page"), stderr
        assert "Traceback" not in stderr
        assert not target.is_file()
        if target.parent.is_dir():
            assert not list(target.parent.glob("*.tmp"))


def test_the_fast_path_writes_the_same_page(cli, fast_search, indexed, tmp_path, monkeypatch):
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    typer_page, fast_page = tmp_path / "typer.html", tmp_path / "빠른.html"
    argv = ["바다", "-", "사람", "-n", "5", "--sort", "date", *map(str, _common(indexed))]
    assert cli("search", *argv, "--html", typer_page).exit_code == 0
    code, stderr = fast_search([*argv, "--html", str(fast_page), "--open"])
    assert code == 0, stderr
    assert stderr.strip().splitlines() == [f"gallery: 5 photos → {fast_page}"]
    assert opened == [fast_page.as_uri()]
    typer_tiles, fast_tiles = _page(typer_page).tiles, _page(fast_page).tiles
    assert len(fast_tiles) == 5
    assert [(t["path"], t["score"], t["img"]) for t in fast_tiles] == [
        (t["path"], t["score"], t["img"]) for t in typer_tiles
    ]


def test_the_fast_parser_reads_html_and_open() -> None:
    assert parse_search_args(["바다", "--html", "노을.html", "--open"]) == SearchArgs(
        SearchRequest(query=("바다",), html=Path("노을.html"), open_page=True)
    )
    assert parse_search_args(["바다", "--html=x.html"]) == SearchArgs(
        SearchRequest(query=("바다",), html=Path("x.html"))
    )


def test_a_relative_html_path_is_written_where_the_command_runs(
    cli, indexed, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("search", "바다", "-n", "3", "--html", "결과.html", *_common(indexed))
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip() == f"gallery: 3 photos → {tmp_path / '결과.html'}"
    assert len(_page(tmp_path / "결과.html").tiles) == 3


def test_render_gallery_writes_any_file_name_as_utf8_and_links_its_bytes() -> None:
    # An undecodable name (Latin-1 bytes on a UTF-8 system) arrives with lone surrogates.
    raw = b"/photos/caf\xe9 <b>.jpg"
    path = os.fsdecode(raw)
    hits = [
        SearchHit(1, path, 0.5, None, None, None, photo_id=7),
        SearchHit(2, "/photos/오프라인.jpg", 0.25, "2023-07-14T08:30:00", 10, 10, offline=True),
    ]
    page_text = render_gallery("카페 <b>", hits, {7: None}, filters=["--in /photos"])
    page_text.encode("utf-8")  # no lone surrogate left
    page = Page(page_text)
    assert page.texts["h1"] == "카페 <b>"
    first, second = page.tiles
    assert unquote_to_bytes(urlsplit(first["hrefs"][0]).path) == raw
    assert first["path"] == "/photos/caf\ufffd <b>.jpg"
    assert first["preview"] == second["preview"] == "placeholder"
    assert "datetime" not in first and second["datetime"] == "2023-07-14T08:30:00"
    assert "offline" in second["placeholder"] and second["note"] == "offline"
    assert all(tag not in ("b", "script") for tag, _ in page.tags)

    empty = Page(render_gallery("바다", [], {}, offline_left_out=3))
    assert page.tiles and not empty.tiles
    assert "3 photos in offline folders" in empty.texts["empty"]
    assert "--include-offline" in empty.texts["empty"]


def test_search_help_shows_the_html_example(cli) -> None:
    result = cli("search", "--help")
    assert result.exit_code == 0
    assert "--html" in result.stdout and "--open" in result.stdout
    assert "노을.html" in result.stdout


def test_the_page_is_one_file_and_a_copy_of_it_shows_everything(cli, indexed, tmp_path):
    out = tmp_path / "page.html"
    assert cli("search", "바다", "-n", "3", "--html", out, *_common(indexed)).exit_code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]  # no temporary file left
    moved = tmp_path / "elsewhere" / "copy.html"
    moved.parent.mkdir()
    shutil.copy(out, moved)
    out.unlink()
    tiles = _page(moved).tiles
    assert len(tiles) == 3 and all(_jpeg(t["img"]) for t in tiles)
