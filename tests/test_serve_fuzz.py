"""Every endpoint of `hanclip serve` asked with random and hostile parameters (hypothesis):
huge, negative and non-numbers, NUL bytes and bytes that are no UTF-8, `../` paths, unicode,
parameters given again, unknown ones, forged cursors. Whatever is asked, the answer is never
a 500 and never holds a traceback; an error is JSON with one line to say it.

Against a running server (tests/served.py) on the dated library of tests/test_serve_views.py
(photos with EXIF dates and without, folders, copies), so every route has something to find.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_from_bytes

import httpx
import pytest
import test_serve_views
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

views = test_serve_views.views  # the server, a fixture

EXAMPLES = 30  # per test: enough to reach every parameter, the whole file in well under a minute

PARAMS = (
    "q", "n", "offset", "after", "before", "in", "min_score", "min_prob", "sort",
    "include_offline", "text_only", "no_text", "cursor", "path", "threshold", "size", "v",
    "photo", "view", "id",
)  # fmt: skip
HOSTILE = (
    "", " ", "0", "1", "-1", "1e309", "-1e309", "nan", "inf", "0x10", "1_000", "١٢",
    str(2**63), str(2**63 - 1), str(-(2**63) - 1), "9" * 400, "0.99", "1.0000001", "true",
    "../../../etc/passwd", "/etc/passwd", "/..", "//", "/", "~", "~root/.ssh", "./relative",
    "~\x00", "~root\x00/x", "/a\x00b",
    "a\x00b", "\x00", "바다 위 노을", "😀" * 50, "\u202e\u200b", "' OR 1=1 --", "<script>",
    "2023-13", "2023-02-30", "0000", "9999-12-31", "1969-12-31", "10000-01-01", "2023-7",
    "+", "-", "2:", "0:바다", "바다 + + 노을", "score", "date-asc", "grid", "large", "huge",
    "eyJlIjpudWxsLCJtIjpudWxsfQ", "e30", "!!!", "=" * 10,
)  # fmt: skip

# Text a URL can carry: no lone surrogates (no UTF-8 for them: a client cannot send one).
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
values = st.one_of(
    st.sampled_from(HOSTILE),
    texts,
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


def _cursor_json(exif, file_time) -> str:
    raw = json.dumps({"e": exif, "m": file_time}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
# Cursors of the right shape with hostile contents, and of the wrong one.
cursors = st.one_of(
    st.builds(
        _cursor_json,
        st.one_of(st.none(), st.lists(anything, max_size=4)),
        st.one_of(st.none(), st.lists(anything, max_size=3)),
    ),
    st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode()),
)


def _encoded(text: str) -> str:
    return quote(text, safe="")


# A query: pairs (a parameter given again counts), each value percent-encoded here, some as
# raw bytes that are no UTF-8 (%FF) or hold NUL (%00).
pair = st.tuples(
    st.one_of(st.sampled_from(PARAMS), texts.filter(bool)).map(_encoded),
    st.one_of(
        values.map(_encoded),
        cursors.map(_encoded),
        st.binary(max_size=12).map(lambda b: quote_from_bytes(b, safe="")),
    ),
)
queries = st.lists(pair, max_size=6).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))


def _ids(served) -> list[int]:
    body = httpx.get(served.api("/api/timeline"), timeout=30).json()
    return [p["id"] for month in body["months"] for p in month["photos"]]


def photo_ids(served):
    known = _ids(served)
    return st.one_of(
        st.sampled_from(known).map(str),
        st.integers(min_value=-5, max_value=2**70).map(str),
        st.sampled_from(["abc", "1e3", "0x1", "%2e%2e", "..%2f..%2fetc", "%00", "1%00", "٣"]),
    )


@pytest.fixture(autouse=True)
def _no_error_logged(views):
    """Nothing the server met was unexpected: it logged no error, printed no traceback."""
    before = len(views.output)
    yield
    logged = [
        line for line in views.output[before:] if "error answering" in line or "Traceback" in line
    ]
    assert logged == []


def assert_answered(served, route: str, query: str) -> None:
    url = served.api(route) + (f"?{query}" if query else "")
    response = httpx.get(url, timeout=60)
    said = response.content.decode("utf-8", "replace")
    assert response.status_code < 500, (url, response.status_code, said[:500])
    assert "Traceback" not in said and 'File "' not in said, (url, said[:500])
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), url
        message = response.json()["error"]
        assert isinstance(message, str) and message and "\n" not in message, (url, message)


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

ROUTES = (
    "/api/search",
    "/api/timeline",
    "/api/folder",
    "/api/folders",
    "/api/duplicates",
    "/api/info",
    "/",
    "/static/page.js",
)


# Where a hostile value meets the file system, the dates or the paging: each such parameter
# given every hostile value, one at a time (random pairs would seldom meet `in=~\x00`).
MATRIX_PARAMS = ("in", "path", "after", "before", "cursor", "threshold", "n", "offset")


@pytest.mark.parametrize(
    "route", ["/api/timeline", "/api/folder", "/api/duplicates", "/api/search?q=바다"]
)
def test_every_hostile_value_of_every_filter(views, route: str) -> None:
    joiner = "&" if "?" in route else "?"
    with httpx.Client(timeout=60) as client:
        for name in MATRIX_PARAMS:
            for value in HOSTILE:
                url = views.api(route) + f"{joiner}{name}={_encoded(value)}"
                response = client.get(url)
                assert response.status_code < 500, (url, response.text[:300])
                assert "Traceback" not in response.text, url


@pytest.mark.parametrize("route", ROUTES)
def test_an_endpoint_never_fails_on_what_it_is_asked(views, route: str) -> None:
    @FUZZ
    @given(query=queries)
    def ask(query: str) -> None:
        assert_answered(views, route, query)

    ask()


@pytest.mark.parametrize("tail", ["", "/thumbnail", "/original", "/similar"])
def test_a_photo_endpoint_never_fails_on_what_it_is_asked(views, tail: str) -> None:
    @FUZZ
    @given(photo=photo_ids(views), query=queries)
    def ask(photo: str, query: str) -> None:
        assert_answered(views, f"/api/photos/{photo}{tail}", query)

    ask()


@FUZZ
@given(cursor=cursors, query=queries)
def test_a_forged_cursor_is_a_400_or_a_page(views, cursor: str, query: str) -> None:
    for route in ("/api/timeline", f"/api/folder?path={quote(str(views.photos / '2022'))}"):
        joiner = "&" if "?" in route else "?"
        assert_answered(views, f"{route}{joiner}cursor={_encoded(cursor)}", query)


@FUZZ
@given(path=st.one_of(st.sampled_from(HOSTILE), texts).map(_encoded), query=queries)
def test_a_hostile_path_is_a_400_or_a_folder(views, path: str, query: str) -> None:
    assert_answered(views, "/api/folder", f"path={path}&{query}")
    assert_answered(views, f"/static/{path}", "")
