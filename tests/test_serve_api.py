"""`hanclip serve`'s JSON API and its security rules, against a running server (a real uvicorn
process, see tests/served.py)."""

from __future__ import annotations

import hashlib
import io
import json
import socket
from pathlib import Path

import httpx
import pytest
from PIL import Image
from served import running_server

SEARCH_JSON_FIELDS = {
    "rank",
    "path",
    "score",
    "taken_at",
    "width",
    "height",
    "offline",
    "date_source",
}


def _get(served, path: str, **kwargs) -> httpx.Response:
    return httpx.get(served.api(path), timeout=60, **kwargs)


def _ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert isinstance(message, str) and message and "Traceback" not in message
    return message


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_search_gives_what_search_json_gives_plus_id_and_urls(served, cli) -> None:
    body = _ok(_get(served, "/api/search", params={"q": "바다 위 노을", "n": 5}))
    assert body["query"] == "바다 위 노을" and body["offset"] == 0 and body["more"] is True
    results = body["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    cli_json = cli(
        "search", "바다 위 노을", "-n", "5", "--json", "--library", served.library
    ).json()
    # The server's text encoder is pre-packed for many queries, the CLI's not (one query):
    # the same vectors to float rounding, so a score may differ in its last printed digit.
    fields = SEARCH_JSON_FIELDS - {"score"}
    assert [{k: r[k] for k in fields} for r in results] == [
        {k: r[k] for k in fields} for r in cli_json
    ]
    assert [r["score"] for r in results] == pytest.approx([r["score"] for r in cli_json], abs=2e-6)
    for r in results:
        assert set(r) == SEARCH_JSON_FIELDS | {"id", "thumbnail", "large", "original", "similar"}
        assert r["thumbnail"].startswith(f"/api/photos/{r['id']}/thumbnail")
        assert r["original"] == f"/api/photos/{r['id']}/original"
        assert r["similar"] == f"/api/photos/{r['id']}/similar"


def test_a_combined_query_and_filters_work_as_in_search(served, cli) -> None:
    params = {"q": "바다 + 노을 - 사람", "n": 12, "in": str(served.photos / "여행"), "sort": "date"}
    results = _ok(_get(served, "/api/search", params=params))["results"]
    expected = cli(
        "search", "바다", "+", "노을", "-", "사람", "-n", "12", "--json",
        "--in", served.photos / "여행", "--sort", "date", "--library", served.library,
    ).json()  # fmt: skip
    assert [r["path"] for r in results] == [r["path"] for r in expected]
    assert results and all(r["path"].startswith(str(served.photos / "여행")) for r in results)


def test_pages_follow_one_another_without_gaps_or_repeats(served) -> None:
    seen, ranks, offset = [], [], 0
    while True:
        body = _ok(_get(served, "/api/search", params={"q": "고양이", "n": 5, "offset": offset}))
        seen += [r["id"] for r in body["results"]]
        ranks += [r["rank"] for r in body["results"]]
        if not body["more"]:
            break
        offset += 5
    assert len(seen) == len(set(seen)) == 12
    assert ranks == list(range(1, 13))
    whole = _ok(_get(served, "/api/search", params={"q": "고양이", "n": 12}))["results"]
    assert [r["id"] for r in whole] == seen


def test_the_last_page_is_cut_at_the_ranking_depth(served) -> None:
    body = _ok(_get(served, "/api/search", params={"q": "바다", "n": 30, "offset": 1990}))
    assert body["n"] == 10 and body["results"] == [] and body["more"] is False


def test_similar_photos_leave_the_photo_itself_out(served) -> None:
    first = _ok(_get(served, "/api/search", params={"q": "산", "n": 1}))["results"][0]
    body = _ok(_get(served, first["similar"], params={"n": 11}))
    assert body["photo"] == first["id"]
    ids = [r["id"] for r in body["results"]]
    assert first["id"] not in ids and len(ids) == len(set(ids)) == 11
    assert body["more"] is False
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_photo_record_by_id(served) -> None:
    hit = _ok(_get(served, "/api/search", params={"q": "바다", "n": 1}))["results"][0]
    photo = _ok(_get(served, f"/api/photos/{hit['id']}"))
    assert photo["path"] == hit["path"] and photo["taken_at"] == hit["taken_at"]
    assert (photo["width"], photo["height"]) == (hit["width"], hit["height"])
    assert photo["offline"] is False and photo["thumbnail"] == hit["thumbnail"]


def test_thumbnail_is_a_cached_jpeg_with_caching_headers(served) -> None:
    hit = _ok(_get(served, "/api/search", params={"q": "고양이", "n": 1}))["results"][0]
    response = _get(served, hit["thumbnail"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.format == "JPEG" and max(image.size) <= 360
    # The URL names the version: the browser keeps it; the plain URL is revalidated.
    assert "immutable" in response.headers["cache-control"]
    etag = response.headers["etag"]
    plain = _get(served, f"/api/photos/{hit['id']}/thumbnail")
    assert plain.headers["cache-control"] == "private, no-cache" and plain.headers["etag"] == etag
    assert plain.content == response.content
    again = _get(served, f"/api/photos/{hit['id']}/thumbnail", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    kept = list((served.library / ".thumbnails").rglob("*.jpg"))
    assert response.content in [p.read_bytes() for p in kept]
    large = _get(served, hit["large"])
    assert large.status_code == 200 and large.headers["etag"] != etag


def test_original_is_the_file_itself(served) -> None:
    hit = _ok(_get(served, "/api/search", params={"q": "바다 노을", "n": 1}))["results"][0]
    response = _get(served, hit["original"])
    assert response.status_code == 200
    assert response.content == Path(hit["path"]).read_bytes()
    assert response.headers["content-disposition"].startswith("inline")
    assert response.headers["content-type"].startswith("image/")


def test_nothing_outside_the_library_can_be_asked_for(served) -> None:
    hit = _ok(_get(served, "/api/search", params={"q": "바다", "n": 1}))["results"][0]
    # A path in the query is ignored: the id alone says which photo.
    tricked = _get(served, hit["original"], params={"path": "/etc/passwd"})
    assert tricked.content == Path(hit["path"]).read_bytes()
    for path in (
        "/static/../../library.db",
        "/static/%2e%2e%2flibrary.db",
        "/static/index.html/../../../etc/passwd",
        "/api/photos/..%2f..%2fetc%2fpasswd/original",
        "/library.db",
        "/thumbnails",
    ):
        assert _get(served, path).status_code == 404, path


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/api/photos/999999/thumbnail", 404, "no photo with id 999999"),
        ("/api/photos/999999/original", 404, "no photo with id 999999"),
        ("/api/photos/999999/similar", 404, "no photo with id 999999"),
        ("/api/photos/999999", 404, "no photo with id 999999"),
        ("/api/photos/99999999999999999999999/thumbnail", 404, "not found"),
        ("/api/photos/abc/thumbnail", 404, "not found"),
        ("/api/photos/-1", 404, "not found"),
        ("/nowhere", 404, "not found"),
        ("/api/search", 400, "query is empty"),
        ("/api/search?q=%20%20", 400, "query is empty"),
        ("/api/search?q=a&n=0", 400, "n=0"),
        ("/api/search?q=a&n=abc", 400, "n='abc'"),
        ("/api/search?q=a&n=100000", 400, "n=100000"),
        ("/api/search?q=a&offset=-1", 400, "offset=-1"),
        ("/api/search?q=a&offset=2000", 400, "offset=2000"),
        ("/api/search?q=a&sort=random", 400, "sort='random'"),
        ("/api/search?q=a&min_score=abc", 400, "min_score='abc'"),
        ("/api/search?q=a&min_score=nan", 400, "min_score='nan'"),
        ("/api/search?q=a&after=notadate", 400, "is not a date"),
        ("/api/search?q=a&in=relative/folder", 400, "full path"),
        ("/api/search?q=a&include_offline=maybe", 400, "include_offline"),
        ("/api/search?q=%2B", 400, "operator"),
        ("/api/search?q=0:%EB%B0%94%EB%8B%A4", 400, "weight"),
        ("/api/photos/1/thumbnail?size=huge", 400, "size='huge'"),
    ],
)
def test_bad_requests_are_json_errors(served, path: str, status: int, words: str) -> None:
    assert words in _error(_get(served, path), status)


def test_requests_for_another_host_are_refused(served) -> None:
    """The DNS-rebinding guard: a page of evil.example whose name now points at 127.0.0.1."""
    for host in ("evil.example", f"evil.example:{served.port}", "127.0.0.1:1", "localhost"):
        response = _get(served, "/api/search", params={"q": "바다"}, headers={"Host": host})
        assert "refused" in _error(response, 400), host
    port = served.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        assert _get(served, "/api/info", headers={"Host": host}).status_code == 200, host


def test_only_get_no_cors_and_strict_headers(served) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        response = httpx.request(method, served.api("/api/search?q=a"), timeout=30)
        _error(response, 405)
        assert "access-control-allow-origin" not in response.headers
    response = _get(served, "/api/search", params={"q": "바다"}, headers={"Origin": "http://e.x"})
    assert response.status_code == 200
    assert not [h for h in response.headers if h.startswith("access-control-")]
    page = _get(served, "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for response in (page, _get(served, "/api/info"), _get(served, "/api/photos/1/thumbnail")):
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"


def test_info_and_the_library_left_as_it_was(served) -> None:
    database = served.library / "library.db"
    before = _sha(database)
    info = _ok(_get(served, "/api/info"))
    assert info["photos"] == 12 and info["library"] == str(served.library)
    for q in ("바다", "고양이", "산"):
        for hit in _ok(_get(served, "/api/search", params={"q": q}))["results"][:3]:
            _get(served, hit["thumbnail"])
            _get(served, hit["similar"])
    assert _sha(database) == before


def test_binds_loopback_and_prints_its_url(served) -> None:
    assert served.url == f"http://127.0.0.1:{served.port}/"
    line = next(line for line in served.output if line.startswith("serving "))
    assert f"{served.library} (12 photos)" in line
    with socket.create_connection(("127.0.0.1", served.port), timeout=5):
        pass


def test_an_index_running_alongside_is_seen_after_it_commits(
    tiny, tmp_path: Path, cli, _cache_dir: Path
) -> None:
    from hanclip_eval.tiny_models import write_photo_folder

    photos, library = tmp_path / "사진", tmp_path / "library"
    write_photo_folder(photos, count=6)
    assert cli("index", photos, "--library", library, "--model", tiny.plain_bundle).exit_code == 0
    with running_server(library, photos, _cache_dir) as server:
        first = _ok(_get(server, "/api/search", params={"q": "바다", "n": 50}))["results"]
        assert len(first) == 6
        write_photo_folder(photos / "새 폴더", count=5, seed=7)
        # The server holds no lock: `index` runs (and commits) while it serves.
        result = cli("index", photos, "--library", library, "--json")
        assert result.exit_code == 0, result.stderr
        assert result.json()["added"] == 5
        after = _ok(_get(server, "/api/search", params={"q": "바다", "n": 50}))["results"]
        assert len(after) == 11
        assert any("새 폴더" in r["path"] for r in after)
        assert _ok(_get(server, "/api/info"))["photos"] == 11
        removed = next(r for r in after if "새 폴더" in r["path"])
        Path(removed["path"]).unlink()
        assert cli("index", photos, "--library", library).exit_code == 0
        final = _ok(_get(server, "/api/search", params={"q": "바다", "n": 50}))["results"]
        assert len(final) == 10 and removed["id"] not in {r["id"] for r in final}
        _error(_get(server, removed["thumbnail"]), 404)


def test_other_hosts_warn_and_guard_by_machine_name(served_library, _cache_dir: Path) -> None:
    library, photos = served_library
    with running_server(library, photos, _cache_dir, extra=["--host", "0.0.0.0"]) as server:
        warning = [line for line in server.output if line.startswith("warning:")]
        assert warning and "visible" in warning[0] and "network" in warning[0]
        assert _get(server, "/api/info").status_code == 200
        response = _get(server, "/api/info", headers={"Host": f"evil.example:{server.port}"})
        _error(response, 400)


def test_serve_refuses_what_it_cannot_do_in_one_line(tmp_path: Path, served, _cache_dir) -> None:
    import subprocess
    import sys

    from served import serve_env

    def serve(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "hanclip_cli", "serve", *args],
            capture_output=True,
            text=True,
            env=serve_env(_cache_dir),
            timeout=120,
        )

    for args, words in (
        (("--library", str(tmp_path / "none"), "--port", "0"), "no library at"),
        (("--library", str(served.library), "--port", str(served.port)), "cannot listen"),
        (("--library", str(served.library), "--port", "70000"), "--port"),
        (("--library", str(served.library), "--host", "no.such.host.invalid"), "--host"),
    ):
        result = serve(*args)
        assert result.returncode != 0, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], lines
        assert "Traceback" not in result.stderr


def test_serve_help_has_a_korean_example(cli) -> None:
    result = cli("serve", "--help")
    assert result.exit_code == 0
    assert "바다" in result.stdout and "127.0.0.1" in result.stdout


def test_search_json_is_unchanged_by_the_server_fields(served, cli) -> None:
    """`search --json` keeps exactly its fields (the id and URLs are the API's)."""
    rows = cli("search", "바다", "--json", "--library", served.library).json()
    assert rows and all(set(row) == SEARCH_JSON_FIELDS for row in rows)
    json.dumps(rows)


def test_offline_photos_are_left_out_unless_asked_for(
    tiny, tmp_path: Path, cli, _cache_dir: Path
) -> None:
    from hanclip_eval.tiny_models import write_photo_folder

    photos, library = tmp_path / "사진", tmp_path / "library"
    write_photo_folder(photos, count=6)
    drive = photos / "외장"
    write_photo_folder(drive, count=3, seed=3)
    assert cli("index", photos, "--library", library, "--model", tiny.plain_bundle).exit_code == 0
    with running_server(library, photos, _cache_dir) as server:
        everything = _ok(_get(server, "/api/search", params={"q": "바다", "n": 50}))["results"]
        on_drive = [r for r in everything if r["path"].startswith(str(drive))]
        assert len(everything) == 9 and len(on_drive) == 3
        shown = on_drive[0]
        cached = _get(server, shown["thumbnail"]).content
        drive.rename(tmp_path / "unplugged")  # the drive is unplugged ...
        assert cli("index", photos, "--library", library).exit_code == 0  # ... and stays known
        body = _ok(_get(server, "/api/search", params={"q": "바다", "n": 50}))
        assert len(body["results"]) == 6 and body["offline_left_out"] == 3
        body = _ok(
            _get(server, "/api/search", params={"q": "바다", "n": 50, "include_offline": "1"})
        )
        offline = {r["id"] for r in body["results"] if r["offline"]}
        assert offline == {r["id"] for r in on_drive} and body["offline_left_out"] == 0
        assert _ok(_get(server, f"/api/photos/{shown['id']}"))["offline"] is True
        # Its thumbnail was kept: still shown; the original is not there.
        assert _get(server, shown["thumbnail"]).content == cached
        assert "not there" in _error(_get(server, shown["original"]), 404)
        never_shown = next(r for r in on_drive if r["id"] != shown["id"])
        assert "offline or gone" in _error(_get(server, never_shown["thumbnail"]), 404)
