"""The text in photos where people see it: the API's `text_match` and `text`, and the snippet
of `search --html` (the web page's is in tests/test_serve_browser.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import text_photos
from served import Served, running_server
from text_photos import BROKEN, PLAIN, SCREENSHOT, FakeEngine, use_engine, write_text_photos
from typer.testing import CliRunner

from hanclip_cli.serve.routes import photo_text_fields
from hanclip_cli.ui_text import LANGUAGES, ui_strings

# What the chat photo reads in these tests: markup in a photo's text must stay text.
HOSTILE_TEXT = '카톡 <script>alert("x")</script> & 메시지'


def index_text_library(root: Path, bundle: Path, cache: Path) -> tuple[Path, dict[str, Path]]:
    """(library, photos by name): tests/text_photos.py's photos, the chat one reading
    HOSTILE_TEXT, indexed with `bundle` and read by the fake engine."""
    from hanclip_cli.cli import app

    photos = write_text_photos(root / "사진")
    library = root / "library"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HANCLIP_CACHE", str(cache))
        patch.setenv("HANCLIP_DEVICE", "cpu")
        patch.setenv("HANCLIP_HOME", str(root / "home"))
        patch.setitem(text_photos.TEXTS, "chat.png", HOSTILE_TEXT)
        use_engine(patch, FakeEngine())
        args = ["index", str(photos[BROKEN].parent), "--library", str(library)]
        result = CliRunner().invoke(app, [*args, "--model", str(bundle)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return library, photos


@pytest.fixture(scope="module")
def text_library(tiny, tmp_path_factory, _cache_dir) -> tuple[Path, dict[str, Path]]:
    return index_text_library(tmp_path_factory.mktemp("text"), tiny.plain_bundle, _cache_dir)


@pytest.fixture(scope="module")
def text_served(text_library, _cache_dir) -> Iterator[Served]:
    library, photos = text_library
    with running_server(library, photos[BROKEN].parent, _cache_dir) as server:
        yield server


def _get(served: Served, path: str, **params) -> dict:
    response = httpx.get(served.api(path), params=params, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_hit_found_by_its_text_carries_its_match(text_served, text_library) -> None:
    _, photos = text_library
    results = _get(text_served, "/api/search", q="스타벅스 영수증")["results"]
    first = results[0]
    assert first["path"] == str(photos["screenshot.png"])
    match = first["text_match"]
    assert [match["snippet"][s:e] for s, e in match["spans"]] == ["스타벅스", "영수증"]
    assert [box["text"] for box in match["boxes"]] == ["스타벅스", "영수증"]
    assert all("text_match" not in hit for hit in results[1:])
    look = _get(text_served, "/api/search", q="스타벅스 영수증", no_text="1")["results"]
    assert all("text_match" not in hit for hit in look)


def test_a_photo_has_its_text_and_why_not(text_served, text_library) -> None:
    _, photos = text_library
    by_path = {
        hit["path"]: hit["id"]
        for hit in _get(text_served, "/api/search", q="사진", n=50)["results"]
    }
    expected = {
        "screenshot.png": ("text", SCREENSHOT),
        "chat.png": ("text", HOSTILE_TEXT),
        PLAIN[0]: ("no_text", None),
        BROKEN: ("failed", None),
    }
    for name, (status, text) in expected.items():
        photo = _get(text_served, f"/api/photos/{by_path[str(photos[name])]}")
        assert (photo["text_status"], photo["text"]) == (status, text), name
    assert photo_text_fields(None) == {"text_status": "pending", "text": None}


def test_conflicting_switches_are_a_problem_the_page_can_say(text_served) -> None:
    response = httpx.get(
        text_served.api("/api/search"),
        params={"q": "카톡", "text_only": "1", "no_text": "1"},
        timeout=60,
    )
    assert response.status_code == 400
    problem = response.json()["problem"]
    assert problem["reason"] == "conflicting_switches" and problem["param"] == "text_only"
    for language in LANGUAGES:
        strings = ui_strings(language)
        assert {"problem_conflicting_switches", "param_text_only", "param_no_text"} <= set(strings)


def test_the_html_page_shows_the_snippet_marked_and_escaped(cli, tiny, text_library, tmp_path):
    library, photos = text_library
    page = tmp_path / "카톡.html"
    args = ["search", "카톡", "-n", "3", "--html", page, "--json", "--library", library]
    result = cli(*args, "--model", tiny.plain_bundle)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["path"] == str(photos["chat.png"])
    written = page.read_text("utf-8")
    assert written.count('class="snippet"') == 1  # the one hit found by its text
    assert (
        "<mark>카톡</mark> &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; 메시지"
        in written
    )
    assert "<script" not in written


def test_overlapping_spans_make_one_mark() -> None:
    from hanclip_cli.gallery import _snippet
    from hanclip_library.photo_text import TextMatch

    match = TextMatch("스타벅스 <b>", ((0, 4), (2, 4), (0, 2)))
    html = _snippet(match, "en")
    assert html.endswith("><mark>스타벅스</mark> &lt;b&gt;</p>")
