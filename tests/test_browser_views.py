"""The library's views of the `hanclip serve` page in a real browser (issue 26): the timeline
the page opens on, the folders and one folder, the duplicate groups; each a URL, each drawn
(a screenshot checked to hold pictures). Debian's Chromium driven by Playwright, as
tests/test_serve_browser.py; skipped where either is missing unless HANCLIP_REQUIRE_BROWSER
is set."""

from __future__ import annotations

import io
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import test_serve_browser as serve_browser
import test_serve_views
from needs import skip_unless_present
from test_serve_browser import TIMEOUT_MS, _browser_missing, api, url_params, wait_for_thumbnails
from test_serve_views import COPY_THRESHOLD

skip_unless_present(_browser_missing(), "HANCLIP_REQUIRE_BROWSER")

from playwright.sync_api import Browser, Page  # noqa: E402

views = test_serve_views.views  # the server on the dated photos, a fixture
KOREAN_MONTHS = {"2023-07": "2023년 7월", "2023-04": "2023년 4월", "2022-01": "2022년 1월"}


def _new_page(browser: Browser, problems: list[str], **options) -> Page:
    context = browser.new_context(
        viewport=options.pop("viewport", {"width": 1280, "height": 800}),
        locale=options.pop("locale", "ko-KR"),
        **options,
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    # A 4xx the test asks for is said on the page: a console error of any other kind is not.
    page.on(
        "console",
        lambda msg: (
            problems.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    return page


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page; at its end, no script error, no console error (a CSP violation, a
    module that did not load) may have happened."""
    problems: list[str] = []
    page = _new_page(browser, problems)
    try:
        yield page
    finally:
        page.context.close()
    assert problems == []


def tile_ids(page: Page, selector: str = "#view .tile") -> list[int]:
    return serve_browser.tile_ids(page, selector)


def timeline_ids(served, **params) -> list[int]:
    body = api(served, "/api/timeline", n=200, **params)
    return [p["id"] for month in body["months"] for p in month["photos"]]


def assert_drawn(page: Page, selector: str = "#view .tile .frame") -> None:
    """A screenshot of the page shows what it should: the page as a whole many colours, and
    the first `selector` (a photo's frame) a picture, not a blank or one-colour box: many
    colours, none most of it, a spread of brightness."""
    from PIL import Image, ImageStat

    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    assert len(shot.getcolors(1 << 20) or []) > 200
    box = page.locator(selector).first.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100, box
    area = shot.crop(
        (int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"]))
    )
    colours = area.getcolors(1 << 20) or []
    assert len(colours) > 200
    assert max(count for count, _ in colours) < 0.6 * area.width * area.height
    assert ImageStat.Stat(area.convert("L")).stddev[0] > 15


def test_the_page_opens_on_the_timeline_by_month(page: Page, views) -> None:
    page.goto(views.url)
    page.wait_for_function("() => document.querySelectorAll('#view .tile').length === 22")
    wait_for_thumbnails(page, "#view .month:first-child .tile img")
    assert tile_ids(page) == timeline_ids(views)
    assert page.locator("#grid .tile").count() == 0  # the search's grid stays empty
    heads = page.eval_on_selector_all("#view .month-head", "hs => hs.map(h => h.textContent)")
    months = [m["month"] for m in api(views, "/api/timeline")["months"]]
    assert len(heads) == len(months)
    for month, text in KOREAN_MONTHS.items():
        assert heads[months.index(month)] == text
    assert "22장" in page.inner_text("#status")
    assert page.get_attribute("#views a[data-view='timeline']", "aria-current") == "page"
    assert_drawn(page)

    # The month's header stays in sight, below the page's header, as its photos scroll by.
    position = page.eval_on_selector(".month-head", "h => getComputedStyle(h).position")
    assert position == "sticky"
    page.evaluate("window.scrollBy(0, 500)")
    page.wait_for_timeout(100)
    header_bottom = page.eval_on_selector(".top", "t => t.getBoundingClientRect().bottom")
    visible = page.evaluate(
        """(below) => [...document.querySelectorAll('.month-head')]
            .filter(h => Math.abs(h.getBoundingClientRect().top - below) < 2)
            .map(h => h.textContent)""",
        header_bottom,
    )
    assert len(visible) == 1


def test_the_timeline_loads_on_as_it_scrolls(browser: Browser, views) -> None:
    problems: list[str] = []
    page = _new_page(browser, problems, viewport={"width": 600, "height": 400})
    try:
        seen: list[dict[str, list[str]]] = []
        page.on(
            "request",
            lambda r: (
                seen.append(parse_qs(urlsplit(r.url).query))
                if urlsplit(r.url).path == "/api/timeline"
                else None
            ),
        )
        page.goto(views.url + "?n=4")
        page.wait_for_selector("#view .tile")
        page.wait_for_load_state("networkidle")
        assert len(tile_ids(page)) < 22  # the rest waits for a scroll
        for _ in range(20):
            if len(tile_ids(page)) == 22:
                break
            page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
            page.wait_for_timeout(150)
        ids = tile_ids(page)
        assert ids == timeline_ids(views) and len(set(ids)) == 22
        assert seen[0].get("cursor") is None and all("cursor" in s for s in seen[1:])
        assert "22장" in page.inner_text("#status")
    finally:
        page.context.close()
    assert problems == []


def test_the_filters_of_a_search_apply_to_the_timeline(page: Page, views) -> None:
    page.goto(views.url + "?after=2023")
    page.wait_for_selector("#view .tile")
    page.wait_for_load_state("networkidle")
    assert tile_ids(page) == timeline_ids(views, after="2023")
    assert page.input_value("#after") == "2023"
    page.fill("#after", "")
    page.fill("#before", "2022-03")
    page.press("#before", "Enter")
    page.wait_for_function("() => new URLSearchParams(location.search).get('before') === '2022-03'")
    expected = timeline_ids(views, before="2022-03")
    page.wait_for_function(
        "(n) => document.querySelectorAll('#view .tile').length === n", arg=len(expected)
    )
    assert tile_ids(page) == expected
    assert "after" not in url_params(page)
    # A bad date is said in the page's language, as a search's.
    page.goto(views.url + "?after=2023-13")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.includes('2023-13')"
    )
    assert "날짜" in page.inner_text("#status")


def test_the_folder_view_and_a_click_into_a_folder(page: Page, views) -> None:
    page.goto(views.url)
    page.wait_for_selector("#view .tile")
    page.click("#views a[data-view='folders']")
    page.wait_for_selector("#view .folder-link")
    assert url_params(page)["view"] == ["folders"]
    folders = api(views, "/api/folders")["folders"]
    rows = page.eval_on_selector_all("#view .folder-link", "ls => ls.map(l => l.title)")
    assert rows == [f["path"] for f in folders]
    year = page.locator("#view .folder-link", has_text="2022")
    assert "14장" in year.inner_text()
    root = page.locator("#view .folder-link").first
    assert "하위 폴더까지 22장" in root.inner_text()

    year.click()
    page.wait_for_function("() => document.querySelectorAll('#view .tile').length === 14")
    folder = str(views.photos / "2022")
    assert url_params(page)["view"] == ["folder"] and url_params(page)["path"] == [folder]
    assert tile_ids(page) == [
        p["id"] for m in api(views, "/api/folder", path=folder)["months"] for p in m["photos"]
    ]
    assert page.inner_text("#view .trail strong") == "2022"
    wait_for_thumbnails(page, "#view .month:first-child .tile img")
    assert_drawn(page)

    # A folder of folders: its subfolders, and back up by the trail.
    page.goto(views.url + "?" + f"view=folder&path={views.photos / '2023'}")
    page.wait_for_selector("#view .subfolders .folder-link")
    names = page.eval_on_selector_all(
        ".subfolders .folder-name", "ns => ns.map(n => n.textContent)"
    )
    assert names == ["봄", "여름"]
    assert "바로 들어 있지 않습니다" in page.inner_text("#status")
    page.click(".subfolders .folder-link >> nth=1")
    page.wait_for_function("() => document.querySelectorAll('#view .tile').length === 3")
    page.go_back()
    page.wait_for_selector("#view .subfolders")
    page.go_back()  # the folder before, a page of its own
    page.wait_for_function("() => document.querySelectorAll('#view .tile').length === 14")
    assert url_params(page)["view"] == ["folder"] and url_params(page)["path"] == [folder]


def test_the_duplicates_view_shows_each_group_side_by_side(page: Page, views) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(views.url + f"?view=duplicates&threshold={COPY_THRESHOLD}")
    page.wait_for_selector("#view .dup-group")
    wait_for_thumbnails(page, "#view .dup-photo img")
    groups = api(views, "/api/duplicates", threshold=COPY_THRESHOLD)["groups"]
    assert page.locator("#view .dup-group").count() == len(groups) == 2
    for index, group in enumerate(groups):
        section = page.locator("#view .dup-group").nth(index)
        paths = section.locator(".path").all_inner_texts()
        assert paths == [p["path"] for p in group["photos"]]
        tops = {round(card.bounding_box()["y"]) for card in section.locator(".dup-photo").all()}
        assert len(tops) == 1  # side by side
        assert "KB" in section.locator(".dup-size").first.inner_text()
    assert "아무것도 지우지 않습니다" in page.inner_text("#status")
    assert page.get_attribute("#views a[data-view='duplicates']", "aria-current") == "page"
    assert_drawn(page)

    first = page.locator("#view .dup-photo").first
    first.locator(".copy").click()
    page.wait_for_function(
        "() => document.querySelector('#view .dup-photo .copy').textContent === '복사했습니다'"
    )
    assert page.evaluate("() => navigator.clipboard.readText()") == groups[0]["photos"][0]["path"]

    # A photo of a group opens the large view.
    first.locator(".tile").click()
    page.locator("#viewer").wait_for(state="visible")
    assert page.inner_text("#viewer-path") == groups[0]["photos"][0]["path"]
    assert url_params(page)["view"] == ["duplicates"]


def test_a_timeline_photo_opens_the_large_view_and_a_search_leaves_the_timeline(
    page: Page, views
) -> None:
    page.goto(views.url)
    page.wait_for_selector("#view .tile")
    newest = timeline_ids(views)[0]
    page.click(f"#view .tile[data-id='{newest}']")
    page.locator("#viewer").wait_for(state="visible")
    assert url_params(page)["photo"] == [str(newest)]
    assert page.locator("#viewer-score").is_hidden()  # nothing was asked: no score
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "(id) => new URLSearchParams(location.search).get('photo') === String(id)",
        arg=timeline_ids(views)[1],
    )
    page.keyboard.press("Escape")
    page.locator("#viewer").wait_for(state="hidden")

    page.fill("#q", "바다")
    page.press("#q", "Enter")
    page.wait_for_selector("#grid .tile")
    assert page.is_hidden("#view") and url_params(page)["q"] == ["바다"]
    page.go_back()
    page.wait_for_selector("#view .tile")
    assert page.is_hidden("#grid")


def test_an_english_browser_gets_the_views_in_english(browser: Browser, views) -> None:
    problems: list[str] = []
    page = _new_page(browser, problems, locale="en-US")
    try:
        page.goto(views.url)
        page.wait_for_selector("#view .month-head")
        assert page.inner_text("#views a[data-view='folders']") == "Folders"
        assert "July 2023" in page.inner_text("#view .month-head >> nth=0")
        assert "22 photos" in page.inner_text("#status")
    finally:
        page.context.close()
    assert problems == []
