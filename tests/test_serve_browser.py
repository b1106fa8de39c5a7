"""The `hanclip serve` page in a real browser: Debian's Chromium, driven by Playwright.

Against the session's running server (the `served` fixture: 12 photos indexed with the tiny
model), and a server on photos with text read by the fake engine (`text_served`). Skipped
where /usr/bin/chromium or Playwright is missing, unless HANCLIP_REQUIRE_BROWSER is set (CI
sets it): there a missing browser is a failure.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from needs import skip_unless_present
from served import Served, running_server
from test_text_display import HOSTILE_TEXT, index_text_library
from text_photos import BROKEN, PLAIN, SCREENSHOT

from hanclip_eval.server_process import CHROMIUM

TIMEOUT_MS = 15_000


def _browser_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright cannot be imported: {exc}"
    return None


skip_unless_present(_browser_missing(), "HANCLIP_REQUIRE_BROWSER")

from playwright.sync_api import Browser, Page  # noqa: E402


@pytest.fixture
def page(browser: Browser, served) -> Iterator[Page]:
    """A fresh page; at its end, no script error and no CSP violation may have happened."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="ko-KR")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(msg.text)
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None
        ),
    )
    try:
        yield page
    finally:
        context.close()
    assert problems == []


def api(served, route: str, **params) -> dict:
    """The JSON answer of `route` (params may hold `path`, as /api/folder asks)."""
    response = httpx.get(served.api(route), params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def url_params(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def tile_ids(page: Page, selector: str = "#grid .tile") -> list[int]:
    return [int(i) for i in page.eval_on_selector_all(selector, "ts => ts.map(t => t.dataset.id)")]


def wait_for_thumbnails(page: Page, selector: str) -> None:
    page.wait_for_function(
        """(selector) => {
            const images = [...document.querySelectorAll(selector)];
            return images.length > 0 && images.every((img) => img.complete && img.naturalWidth > 0);
        }""",
        arg=selector,
    )


def search_requests(page: Page) -> list[dict[str, list[str]]]:
    """The query of every /api/search request the page makes from now on."""
    seen: list[dict[str, list[str]]] = []

    def record(request) -> None:
        parts = urlsplit(request.url)
        if parts.path == "/api/search":
            seen.append(parse_qs(parts.query))

    page.on("request", record)
    return seen


def test_korean_search_shows_thumbnails_and_puts_the_query_in_the_url(page: Page, served) -> None:
    page.goto(served.url)
    page.wait_for_function(
        "() => document.querySelector('#library-info').textContent.includes('12장')"
    )
    page.fill("#q", "바다 위 노을")
    page.press("#q", "Enter")
    page.wait_for_selector("#grid .tile")
    wait_for_thumbnails(page, "#grid .tile img")

    expected = api(served, "/api/search", q="바다 위 노을")["results"]
    assert tile_ids(page) == [hit["id"] for hit in expected]
    first = page.locator("#grid .tile").first
    assert first.locator("img").get_attribute("alt") == Path(expected[0]["path"]).name
    assert first.locator("img").get_attribute("loading") == "lazy"
    assert first.locator(".score").inner_text() == f"{expected[0]['score']:.3f}"
    assert first.locator(".date").inner_text() == expected[0]["taken_at"][:10].replace("-", ".")
    assert url_params(page)["q"] == ["바다 위 노을"]
    assert "12장" in page.inner_text("#status")


def test_enter_during_hangul_composition_does_not_search(page: Page, served) -> None:
    page.goto(served.url)
    page.wait_for_function(
        "() => document.querySelector('#library-info').textContent.includes('12장')"
    )
    requests = search_requests(page)
    page.focus("#q")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.imeSetComposition", {"text": "바", "selectionStart": 1, "selectionEnd": 1})
    page.keyboard.press("Enter")  # arrives with isComposing: it ends the syllable, nothing more
    assert page.evaluate("location.search") == ""
    assert page.locator("#grid .tile").count() == 0

    cdp.send("Input.insertText", {"text": "바다"})
    assert page.input_value("#q") == "바다"
    page.keyboard.press("Enter")
    page.wait_for_selector("#grid .tile")
    assert url_params(page)["q"] == ["바다"]
    # One search, for the whole word: the Enter inside the composition sent none.
    assert [r["q"] for r in requests] == [["바다"]]


def test_a_search_url_runs_its_search_and_filters_go_into_the_url(page: Page, served) -> None:
    requests = search_requests(page)
    page.goto(served.url + "?q=고양이&sort=date")
    page.wait_for_selector("#grid .tile")
    assert page.input_value("#q") == "고양이"
    assert page.input_value("#sort") == "date"
    assert requests[0]["q"] == ["고양이"] and requests[0]["sort"] == ["date"]
    assert len(tile_ids(page)) == 12

    trip = served.photos / "여행"
    page.fill("#in", str(trip))
    page.fill("#after", "2000")
    page.click("#search")
    page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 1")
    params = url_params(page)
    assert params["in"] == [str(trip)]
    assert params["after"] == ["2000"]
    assert params["sort"] == ["date"] and params["q"] == ["고양이"]
    assert "before" not in params and "min_score" not in params  # defaults stay out
    only = api(served, "/api/search", q="고양이", after="2000", sort="date", **{"in": str(trip)})
    assert tile_ids(page) == [hit["id"] for hit in only["results"]]

    page.go_back()  # the previous search, its filters and results
    page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 12")
    assert page.input_value("#in") == ""
    assert page.input_value("#after") == ""
    assert page.input_value("#sort") == "date"


def test_a_tile_opens_the_large_view_with_similar_photos(page: Page, served) -> None:
    page.goto(served.url + "?q=바다")
    page.wait_for_selector("#grid .tile")
    first = api(served, "/api/search", q="바다")["results"][0]
    page.click(f"#grid .tile[data-id='{first['id']}']")

    viewer = page.locator("#viewer")
    viewer.wait_for(state="visible")
    wait_for_thumbnails(page, "#viewer img.large")
    assert page.inner_text("#viewer-path") == first["path"]
    assert url_params(page)["photo"] == [str(first["id"])]
    assert page.get_attribute("#viewer-original", "href") == first["original"]
    assert page.get_attribute("#viewer-original", "target") == "_blank"
    page.wait_for_selector("#similar .tile")
    wait_for_thumbnails(page, "#similar .tile img")
    similar = tile_ids(page, "#similar .tile")
    expected = api(served, f"/api/photos/{first['id']}/similar", n=12)["results"]
    assert similar == [hit["id"] for hit in expected]
    assert first["id"] not in similar

    other = expected[0]
    page.click(f"#similar .tile[data-id='{other['id']}']")
    page.wait_for_function(
        "(path) => document.querySelector('#viewer-path').textContent === path", arg=other["path"]
    )
    page.wait_for_function(
        "(id) => ![...document.querySelectorAll('#similar .tile')].some(t => t.dataset.id == id)"
        " && document.querySelectorAll('#similar .tile').length > 0",
        arg=other["id"],
    )
    wait_for_thumbnails(page, "#viewer img.large")
    assert f"/api/photos/{other['id']}/thumbnail?size=large" in page.get_attribute(
        "#viewer img.large", "src"
    )
    assert url_params(page)["photo"] == [str(other["id"])]

    page.keyboard.press("Escape")
    viewer.wait_for(state="hidden")
    page.wait_for_function("() => !new URLSearchParams(location.search).has('photo')")
    assert url_params(page)["q"] == ["바다"]

    # The URL of a large view opens it.
    page.goto(served.url + f"?q=바다&photo={other['id']}")
    viewer.wait_for(state="visible")
    assert page.inner_text("#viewer-path") == other["path"]
    page.click("#viewer-close")
    viewer.wait_for(state="hidden")


def test_scrolling_down_loads_the_next_pages_without_duplicates(browser: Browser, served) -> None:
    context = browser.new_context(viewport={"width": 600, "height": 400}, locale="ko-KR")
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        requests = search_requests(page)
        page.goto(served.url + "?q=바다&n=4")
        page.wait_for_selector("#grid .tile")
        page.wait_for_load_state("networkidle")
        assert len(tile_ids(page)) < 12  # the rest waits for a scroll

        for _ in range(10):
            if len(tile_ids(page)) == 12 and "찾았습니다" in page.inner_text("#status"):
                break
            page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
            page.wait_for_timeout(150)
        ids = tile_ids(page)
        assert len(ids) == 12 and len(set(ids)) == 12
        everything = api(served, "/api/search", q="바다", n=12)["results"]
        assert ids == [hit["id"] for hit in everything]
        assert [r["n"] for r in requests] == [["4"]] * len(requests)
        assert [r["offset"][0] for r in requests][:3] == ["0", "4", "8"]
        assert "12장을 찾았습니다" in page.inner_text("#status")
    finally:
        context.close()


def test_api_errors_and_empty_results_are_shown_as_text(page: Page, served) -> None:
    page.goto(served.url + "?q=바다&after=notadate")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.includes('notadate')"
    )
    assert "error" in page.get_attribute("#status", "class")
    assert page.locator("#grid .tile").count() == 0
    assert page.input_value("#after") == "notadate"

    page.goto(served.url + "?q=바다&min_score=0.999")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.includes('일치하는 사진이 없습니다')"
    )
    assert page.locator("#grid .tile").count() == 0


def test_the_page_renders_a_real_picture(page: Page, served) -> None:
    from PIL import Image

    page.goto(served.url + "?q=" + "바다 위 노을")
    page.wait_for_selector("#grid .tile")
    wait_for_thumbnails(page, "#grid .tile img")
    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    assert shot.size == (1280, 800)
    assert len(shot.getcolors(1 << 20) or []) > 200

    box = page.locator("#grid").bounding_box()
    assert box is not None and box["width"] > 500 and box["height"] > 150
    grid = shot.crop(
        (int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), min(800, int(box["y"] + 300)))
    )
    colours = grid.getcolors(1 << 20) or []
    assert len(colours) > 50
    # No one colour covers most of the grid: the thumbnails are drawn.
    assert max(c for c, _ in colours) < 0.6 * grid.width * grid.height
    assert re.search(r"\d+장", page.inner_text("#status"))


def test_a_calibrated_models_match_probability_is_shown(page: Page, served) -> None:
    """The tiny model is uncalibrated: its answers are given a match_probability on the way,
    as a calibrated bundle's would carry one, and the tiles show it as a percentage."""
    import json

    def calibrated(route) -> None:
        response = route.fetch()
        body = response.json()
        for hit, p in zip(body["results"], (0.004, 0.374, 0.996), strict=False):
            hit["match_probability"] = p
        route.fulfill(response=response, body=json.dumps(body))

    page.route("**/api/search?*", calibrated)
    page.goto(served.url + "?q=" + "바다")
    page.wait_for_selector("#grid .tile")
    scores = page.eval_on_selector_all("#grid .tile .score", "s => s.map(e => e.textContent)")
    assert scores[0].endswith("· <1%") and scores[1].endswith("· 37%")
    assert scores[2].endswith("· >99%") and "%" not in scores[3]


def test_a_bad_parameter_is_said_in_the_pages_language(page: Page, served) -> None:
    page.goto(served.url + "?q=바다&after=2023-13")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.includes('2023-13')"
    )
    status = page.inner_text("#status")
    assert "--after" not in status and "is not a date" not in status
    assert "날짜" in status and "error" in page.get_attribute("#status", "class")


def test_an_english_browser_gets_the_page_in_english(browser, served) -> None:
    context = browser.new_context(locale="en-US")
    try:
        page = context.new_page()
        page.goto(served.url + "?q=바다&after=2023-13")
        page.wait_for_function(
            "() => document.querySelector('#status').textContent.includes('2023-13')"
        )
        assert page.get_attribute("html", "lang") == "en"
        assert page.inner_text("#search") == "Search"
        assert "not a date" in page.inner_text("#status")
        page.goto(served.url + "?q=바다")
        page.wait_for_selector("#grid .tile")
        assert re.search(r"\d+ photos", page.inner_text("#status"))
    finally:
        context.close()


@pytest.fixture(scope="module")
def text_served(tiny, tmp_path_factory, _cache_dir) -> Iterator[Served]:
    """A server on a library of photos with text (tests/test_text_display.py's)."""
    library, photos = index_text_library(
        tmp_path_factory.mktemp("text"), tiny.plain_bundle, _cache_dir
    )
    with running_server(library, photos[BROKEN].parent, _cache_dir) as server:
        yield server


def marks(page: Page, selector: str) -> list[str]:
    return page.eval_on_selector_all(f"{selector} mark", "ms => ms.map(m => m.textContent)")


def test_a_hit_found_by_its_text_shows_its_snippet_and_the_large_view_its_text(
    page: Page, text_served
) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(text_served.url + "?q=스타벅스 영수증")
    page.wait_for_selector("#grid .tile .snippet")
    first = page.locator("#grid .tile").first
    assert marks(page, "#grid .tile:first-child .snippet") == ["스타벅스", "영수증"]
    assert "아메리카노" in first.locator(".snippet").inner_text()
    assert page.locator("#grid .snippet").count() == 1  # the others were found by their look

    first.click()
    body = page.locator("#viewer-text-body")
    page.wait_for_function("() => !document.querySelector('#viewer-text').hidden")
    assert body.inner_text() == SCREENSHOT  # its lines kept
    assert marks(page, "#viewer-text-body") == ["스타벅스", "영수증"]
    assert page.eval_on_selector("#viewer-text-body", "b => getComputedStyle(b).userSelect") in (
        "text",
        "auto",
    )
    page.click("#viewer-text-copy")
    page.wait_for_function(
        "(text) => document.querySelector('#viewer-text-copy').textContent === text",
        arg="복사했습니다",
    )
    assert page.evaluate("() => navigator.clipboard.readText()") == SCREENSHOT

    # A photo with no text says so, without a copy button.
    page.keyboard.press("Escape")
    page.click(f"#grid .tile[title$='{PLAIN[0]}']")
    page.wait_for_function(
        "() => document.querySelector('#viewer-text-body').textContent.includes('찾지 못했')"
    )
    assert page.locator("#viewer-text-copy").is_hidden()


def test_markup_in_a_photos_text_stays_text(page: Page, text_served) -> None:
    page.goto(text_served.url + "?q=카톡")
    page.wait_for_selector("#grid .tile .snippet")
    snippet = page.locator("#grid .snippet").first
    assert '<script>alert("x")</script>' in snippet.inner_text()
    assert marks(page, "#grid .snippet") == ["카톡"]
    assert page.locator("#grid script, #viewer script").count() == 0
    snippet.click()
    page.wait_for_function("() => !document.querySelector('#viewer-text').hidden")
    assert page.inner_text("#viewer-text-body") == HOSTILE_TEXT


def test_text_switches_in_the_url_are_kept_and_a_conflict_is_said(page: Page, text_served):
    page.goto(text_served.url + "?q=카톡&text_only=1")
    page.wait_for_selector("#grid .tile .snippet")
    assert page.locator("#grid .tile").count() == 1  # the text alone
    page.fill("#q", "스타벅스")
    page.press("#q", "Enter")
    page.wait_for_function(
        "(word) => document.querySelector('#grid .snippet mark')?.textContent === word",
        arg="스타벅스",
    )
    assert page.locator("#grid .tile").count() == 1 and url_params(page)["text_only"] == ["1"]

    page.goto(text_served.url + "?q=카톡&text_only=1&no_text=1")
    page.wait_for_function("() => document.querySelector('#status').className.includes('error')")
    status = page.inner_text("#status")
    assert "하나만 고르세요" in status and "choose one" not in status
