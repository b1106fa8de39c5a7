"""Issue 23, the search's part: API errors in the API's words, a folder with nothing indexed
under it, the query photo never among its own results, photos deleted since `index` left out,
and one language rule for the web page and the --html page."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from served import running_server

from hanclip_eval.tiny_models import write_photo_folder


def _get(served, path: str, **params) -> httpx.Response:
    return httpx.get(served.api(path), params=params, timeout=60)


@pytest.fixture
def indexed(cli, tiny, photos: Path, library: Path) -> tuple[Path, Path]:
    result = cli("index", photos, "--library", library, "--model", tiny.plain_bundle)
    assert result.exit_code == 0, result.stderr
    return library, photos


# -- 9: the API's errors name its parameters, the page says them in its language -----------


@pytest.mark.parametrize(
    ("params", "param"),
    [({"after": "2023-13"}, "after"), ({"before": "2023-02-30"}, "before")],
)
def test_api_date_errors_name_the_parameter_not_the_flag(served, params, param) -> None:
    response = _get(served, "/api/search", q="바다", **params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert f"{param}={params[param]!r}" in body["error"] and "--" not in body["error"]
    assert body["problem"] == {"reason": "not_a_date", "param": param, "value": params[param]}


def test_cli_date_errors_still_name_the_flag(cli, indexed) -> None:
    library, _ = indexed
    result = cli("search", "바다", "--after", "2023-13", "--library", library)
    assert result.exit_code == 2
    assert "--after '2023-13' is not a date" in result.stderr


# -- 8: a folder with no indexed photo under it ---------------------------------------------


def test_search_in_a_folder_with_nothing_indexed_says_so(cli, indexed, tmp_path: Path) -> None:
    library, photos = indexed
    missing = tmp_path / "없는 폴더"
    result = cli("search", "바다", "--in", missing, "--library", library)
    # An error, exit 2, as "no photos indexed in LIBRARY yet": the search has nothing to see.
    assert result.exit_code == 2, result.stdout
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"no indexed photo is under {missing}" in lines[0]
    # One folder of two: the other's photos are not searched in silence either.
    result = cli("search", "바다", "--in", photos, "--in", missing, "--library", library)
    assert result.exit_code == 2 and str(missing) in result.stderr
    assert cli("search", "바다", "--in", photos, "--library", library).exit_code == 0


def test_api_folder_with_nothing_indexed_is_a_400_naming_in(served) -> None:
    response = _get(served, "/api/search", q="바다", **{"in": "/nonexistent"})
    assert response.status_code == 400, response.text
    body = response.json()
    assert "no indexed photo is under /nonexistent" in body["error"]
    assert body["problem"] == {
        "reason": "folder_not_indexed",
        "param": "in",
        "value": "/nonexistent",
    }


# -- 13a: the photo a search is made of is not among its results ----------------------------


def test_search_image_leaves_the_photo_itself_out(cli, indexed) -> None:
    library, photos = indexed
    photo = photos / "바다_노을.jpg"
    assert photo.exists()
    rows = cli("search", "--image", photo, "-n", "50", "--json", "--library", library).json()
    assert str(photo) not in [row["path"] for row in rows]
    assert len(rows) == 7  # every other photo: exactly the limit whenever that many pass
    assert all(row["score"] < 0.9999 for row in rows)


def test_the_self_rule_is_stated_in_help(cli) -> None:
    result = cli("search", "--help")
    assert result.exit_code == 0
    words = " ".join(result.stdout.replace("│", " ").split())
    assert "the photo itself is not among the results" in words


def test_similar_photos_leave_the_photo_out_as_search_image_does(served, cli) -> None:
    photo = served.photos / "바다_노을.jpg"
    rows = cli("search", "--image", photo, "-n", "5", "--json", "--library", served.library)
    hit = httpx.get(served.api("/api/search"), params={"q": "바다", "n": 50}, timeout=60).json()[
        "results"
    ]
    photo_id = next(r["id"] for r in hit if r["path"] == str(photo))
    similar = _get(served, f"/api/photos/{photo_id}/similar", n=5).json()["results"]
    assert [r["path"] for r in similar] == [r["path"] for r in rows.json()]


# -- 13b: a photo deleted since the last index is left out ----------------------------------


def test_a_deleted_photo_is_left_out_of_every_output(cli, indexed, tmp_path: Path) -> None:
    library, photos = indexed
    doomed = photos / "고양이.png"
    doomed.unlink()
    common = ["--library", library, "-n", "50"]
    paths = cli("search", "바다", "--paths", *common).stdout.splitlines()
    assert len(paths) == 7 and str(doomed) not in paths
    rows = cli("search", "바다", "--json", *common).json()
    assert [row["path"] for row in rows] == paths
    assert [row["rank"] for row in rows] == list(range(1, 8))
    # Exactly the limit whenever that many photos are still there.
    assert (
        len(cli("search", "바다", "--paths", "--library", library, "-n", "7").stdout.split()) == 7
    )
    page = tmp_path / "page.html"
    result = cli("search", "바다", "--html", page, *common)
    assert result.exit_code == 0 and str(doomed) not in page.read_text("utf-8")
    assert "1 photo" in result.stderr and "hanclip index" in result.stderr


def test_api_leaves_a_deleted_photo_out(tiny, tmp_path: Path, cli, _cache_dir: Path) -> None:
    photos, library = tmp_path / "사진", tmp_path / "library"
    write_photo_folder(photos, count=6)
    assert cli("index", photos, "--library", library, "--model", tiny.plain_bundle).exit_code == 0
    with running_server(library, photos, _cache_dir) as server:
        first = _get(server, "/api/search", q="바다", n=50).json()["results"]
        gone = Path(first[0]["path"])
        gone.unlink()
        answer = _get(server, "/api/search", q="바다", n=50).json()
        after = answer["results"]
        assert len(after) == 5 and str(gone) not in [r["path"] for r in after]
        assert answer["gone_left_out"] == 1  # said, as the command line says it
        similar = _get(server, f"/api/photos/{first[1]['id']}/similar", n=50).json()["results"]
        assert str(gone) not in [r["path"] for r in similar] and len(similar) == 4


# -- 13c: one language rule for both pages --------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "html_lang", "words"),
    [
        ("ko_KR.UTF-8", "ko", "사진 8장"),
        ("en_US.UTF-8", "en", "8 photos"),
        ("C.UTF-8", "ko", "사진 8장"),
    ],
)
def test_the_html_page_follows_lang(
    cli, indexed, tmp_path: Path, monkeypatch, lang, html_lang, words
) -> None:
    library, _ = indexed
    for name in ("LC_ALL", "LC_MESSAGES", "LANGUAGE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", lang)
    page = tmp_path / "page.html"
    result = cli("search", "바다", "-n", "50", "--html", page, "--library", library)
    assert result.exit_code == 0, result.stderr
    text = page.read_text("utf-8")
    assert f'<html lang="{html_lang}">' in text and words in text


def test_the_web_page_follows_accept_language(served) -> None:
    korean = _get(served, "/").text
    english = httpx.get(served.url, headers={"Accept-Language": "en-US,en;q=0.9"}, timeout=60).text
    assert '<html lang="ko">' in korean and "검색" in korean
    assert '<html lang="en">' in english and "Search" in english
    assert not re.search("[가-힣]", english)  # every word of it, its script's strings too
