"""The views of `hanclip serve` with nothing asked (issue 26): the timeline, the folders, one
folder's photos and the duplicate groups, through a running server (tests/served.py), and the
SQL behind the timeline read through the date index."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from conftest import CliResultRunner
from served import Served, running_server
from test_search_filters import dated_photo, ns

from hanclip_library.request import SearchRequest
from hanclip_library.store import PhotoRecord, PhotoStore
from hanclip_library.timeline import TimelineCursor, folder_counts, timeline_page

# Two photos of the tiny model's random space this close are copies (exact copies are 1.0).
COPY_THRESHOLD = 0.99999


def _photo(path: Path, seed: int, *, mtime_ns: int, exif_date: str | None = None) -> None:
    dated_photo(path, seed, mtime_ns=mtime_ns, exif_date=exif_date, shape=(48, 64))


def write_dated_photos(root: Path) -> None:
    """22 photos: 2022/ one a month by file time (and two of the same second in May);
    2023/봄/ three with an EXIF date (their files dated 2019); 2023/여름/ three by file time;
    복사본/ exact copies of one of each kind (their dates kept)."""
    for month in range(1, 13):
        _photo(root / "2022" / f"f{month:02}.png", month, mtime_ns=ns(2022, month, 15, 12))
    for name, seed in (("same_a.png", 50), ("same_b.png", 51)):
        _photo(root / "2022" / name, seed, mtime_ns=ns(2022, 5, 20, 9))
    for day, seed in ((10, 60), (2, 61), (28, 62)):
        month = 3 if day != 2 else 4
        _photo(
            root / "2023" / "봄" / f"exif{month:02}{day:02}.jpg",
            seed,
            mtime_ns=ns(2019, 1, 1),
            exif_date=f"2023:{month:02}:{day:02} 08:30:00",
        )
    for day, seed in ((1, 70), (9, 71), (30, 72)):
        _photo(root / "2023" / "여름" / f"f07{day:02}.png", seed, mtime_ns=ns(2023, 7, day, 9))
    copies = root / "복사본"
    copies.mkdir()
    shutil.copy2(root / "2022" / "f05.png", copies / "f05 사본.png")
    shutil.copy2(root / "2023" / "봄" / "exif0310.jpg", copies / "exif0310 사본.jpg")


@pytest.fixture(scope="module")
def views(tiny, tmp_path_factory, _cache_dir) -> Iterator[Served]:
    """A server on the dated photos, indexed with the tiny model."""
    root = tmp_path_factory.mktemp("views")
    photos, library = root / "사진", root / "library"
    write_dated_photos(photos)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HANCLIP_CACHE", str(_cache_dir))
        patch.setenv("HANCLIP_DEVICE", "cpu")
        patch.setenv("HANCLIP_HOME", str(root / "home"))
        result = CliResultRunner()(
            "index", photos, "--library", library, "--model", tiny.plain_bundle, "--no-ocr"
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    with running_server(library, photos, _cache_dir) as server:
        yield server


def _get(served: Served, route: str, /, **params) -> httpx.Response:
    return httpx.get(served.api(route), params=params, timeout=60)


def _ok(served: Served, route: str, /, **params) -> dict:
    response = _get(served, route, **params)
    assert response.status_code == 200, response.text
    return response.json()


def _problem(served: Served, route: str, /, **params) -> dict:
    response = _get(served, route, **params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert "Traceback" not in body["error"] and "\n" not in body["error"]
    return body.get("problem") or {}


def _records(served: Served) -> list[PhotoRecord]:
    store = PhotoStore(served.library, create=False)
    try:
        return list(store.records_by_ids(store.ids()).values())
    finally:
        store.close()


def _newest_first(records: list[PhotoRecord]) -> list[int]:
    return [r.id for r in sorted(records, key=lambda r: (r.date, r.mtime_ns, r.id), reverse=True)]


def _photos(body: dict) -> list[dict]:
    return [photo for month in body["months"] for photo in month["photos"]]


def _walk(
    served: Served, route: str = "/api/timeline", /, cursor: str | None = None, **params
) -> list[list[dict]]:
    """Every page of a timeline from `cursor` on (None: from the start), by its cursors."""
    pages = []
    while True:
        body = _ok(served, route, **params, **({"cursor": cursor} if cursor else {}))
        pages.append(_photos(body))
        if not body["more"]:
            assert body["cursor"] is None
            return pages
        cursor = body["cursor"]
        assert len(pages) < 100


def test_the_timeline_is_every_photo_newest_first_by_month(views) -> None:
    records = _records(views)
    body = _ok(views, "/api/timeline")
    assert body["n"] == 60 and body["more"] is False and body["offline_left_out"] == 0
    photos = _photos(body)
    assert [p["id"] for p in photos] == _newest_first(records)
    assert len(photos) == 22
    # Dated as search dates them: the EXIF date where there is one, else the file's time.
    by_id = {r.id: r for r in records}
    for photo in photos:
        record = by_id[photo["id"]]
        assert photo["taken_at"] == record.date and photo["path"] == record.path
        assert photo["date_source"] == ("exif" if "exif" in Path(record.path).name else "mtime")
        assert photo["size"] == Path(record.path).stat().st_size
        assert photo["thumbnail"].startswith(f"/api/photos/{photo['id']}/thumbnail")
    months = [month["month"] for month in body["months"]]
    assert months == sorted(set(months), reverse=True)
    assert months[:3] == ["2023-07", "2023-04", "2023-03"] and months[-1] == "2022-01"
    for month in body["months"]:
        assert all(p["taken_at"].startswith(month["month"]) for p in month["photos"])
    # The two photos of the same second: the later id first.
    same = [p["id"] for p in photos if Path(p["path"]).name.startswith("same_")]
    assert same == sorted(same, reverse=True)


def test_dates_agree_with_search_sorted_by_date(views, cli) -> None:
    found = cli(
        "search", "바다", "-n", "50", "--sort", "date", "--json", "--library", views.library
    ).json()
    timeline = _photos(_ok(views, "/api/timeline"))
    assert [p["taken_at"] for p in timeline] == [hit["taken_at"] for hit in found]


@pytest.mark.parametrize("n", [1, 4, 7])
def test_pages_follow_by_cursor_without_gaps_or_repeats(views, n: int) -> None:
    pages = _walk(views, n=n)
    assert all(len(page) == n for page in pages[:-1]) and 0 < len(pages[-1]) <= n
    ids = [p["id"] for page in pages for p in page]
    assert ids == [p["id"] for p in _photos(_ok(views, "/api/timeline"))]


def test_a_photo_added_between_pages_leaves_the_pages_whole(
    tiny, tmp_path: Path, cli, _cache_dir: Path
) -> None:
    photos, library = tmp_path / "사진", tmp_path / "library"
    write_dated_photos(photos)
    assert cli("index", photos, "--library", library, "--model", tiny.plain_bundle).exit_code == 0
    with running_server(library, photos, _cache_dir) as server:
        whole = [p["id"] for p in _photos(_ok(server, "/api/timeline"))]
        first = _ok(server, "/api/timeline", n=5)
        _photo(photos / "2024" / "new.png", 99, mtime_ns=ns(2024, 1, 1))  # newest of all
        _photo(photos / "2022" / "old.png", 98, mtime_ns=ns(2021, 1, 1))  # oldest of all
        assert cli("index", photos, "--library", library).exit_code == 0
        rest = _walk(server, cursor=first["cursor"], n=5)
    seen = [p["id"] for p in _photos(first)] + [p["id"] for page in rest for p in page]
    assert seen[:-1] == whole  # the new newest waits for the next read from the top
    assert Path(rest[-1][-1]["path"]).name == "old.png"


def test_photos_of_an_offline_folder_are_left_out_unless_asked_for(
    tiny, tmp_path: Path, cli, _cache_dir: Path
) -> None:
    photos, library = tmp_path / "사진", tmp_path / "library"
    write_dated_photos(photos)
    assert cli("index", photos, "--library", library, "--model", tiny.plain_bundle).exit_code == 0
    drive = photos / "2023" / "여름"
    with running_server(library, photos, _cache_dir) as server:
        everything = _photos(_ok(server, "/api/timeline"))
        on_drive = [p["id"] for p in everything if p["path"].startswith(str(drive))]
        drive.rename(tmp_path / "unplugged")  # the drive is unplugged ...
        assert cli("index", photos, "--library", library).exit_code == 0  # ... and stays known
        body = _ok(server, "/api/timeline")
        assert body["offline_left_out"] == 3 and len(on_drive) == 3
        assert [p["id"] for p in _photos(body)] == [
            p["id"] for p in everything if p["id"] not in on_drive
        ]
        shown = _ok(server, "/api/timeline", include_offline="1")
        assert [p["id"] for p in _photos(shown)] == [p["id"] for p in everything]
        assert [p["id"] for p in _photos(shown) if p["offline"]] == on_drive
        assert shown["offline_left_out"] == 0
        folders = {f["path"]: f for f in _ok(server, "/api/folders")["folders"]}
        assert folders[str(drive)]["offline"] is True
        assert folders[str(drive.parent)]["offline"] is False
        inside = _ok(server, "/api/folder", path=str(drive), include_offline="1")
        assert [p["id"] for p in _photos(inside)] == on_drive


def test_the_filters_of_a_search_apply(views) -> None:
    records = _records(views)
    spring = str(views.photos / "2023" / "봄")
    cases = [
        ({"after": "2023"}, lambda r: r.date >= "2023"),
        ({"before": "2022-06"}, lambda r: r.date < "2022-06"),
        ({"after": "2022-05", "before": "2022-06"}, lambda r: r.date.startswith("2022-05")),
        ({"in": spring}, lambda r: r.path.startswith(spring + "/")),
        ({"in": spring, "after": "2023-04"}, lambda r: spring in r.path and r.date > "2023-04"),
    ]  # fmt: skip
    for params, keep in cases:
        pages = _walk(views, n=3, **params)
        ids = [p["id"] for page in pages for p in page]
        assert ids == _newest_first([r for r in records if keep(r)]), params
        assert ids, params
    # What judges a match has nothing to judge: it changes nothing.
    asked = _ok(views, "/api/timeline", q="바다", min_score="0.9", sort="date-asc")
    assert _photos(asked) == _photos(_ok(views, "/api/timeline"))


@pytest.mark.parametrize(
    ("params", "reason", "param"),
    [
        ({"after": "2023-13"}, "not_a_date", "after"),
        ({"before": "yesterday"}, "not_a_date", "before"),
        ({"in": "relative/folder"}, "not_a_full_path", "in"),
        ({"in": "/no/such/folder"}, "folder_not_indexed", "in"),
        ({"n": "0"}, "out_of_range", "n"),
        ({"n": "201"}, "out_of_range", "n"),
        ({"n": "many"}, "not_a_whole_number", "n"),
        ({"cursor": "not-a-cursor"}, "not_a_cursor", "cursor"),
        ({"cursor": "eyJlIjpbMSwyXSwibSI6bnVsbH0"}, "not_a_cursor", "cursor"),  # {"e":[1,2],...}
        ({"include_offline": "maybe"}, "not_a_switch", "include_offline"),
    ],
)
def test_bad_timeline_parameters_are_problems_the_page_can_say(views, params, reason, param):
    problem = _problem(views, "/api/timeline", **params)
    assert (problem["reason"], problem["param"]) == (reason, param)


def test_folders_come_in_tree_order_with_their_counts(views) -> None:
    body = _ok(views, "/api/folders")
    root = str(views.photos)
    assert body["roots"] == [root]
    folders = {f["path"]: f for f in body["folders"]}
    assert [f["path"] for f in body["folders"]] == [
        root,
        f"{root}/2022",
        f"{root}/2023",
        f"{root}/2023/봄",
        f"{root}/2023/여름",
        f"{root}/복사본",
    ]
    expected = {  # (depth, directly in it, at or below it)
        root: (0, 0, 22),
        f"{root}/2022": (1, 14, 14),
        f"{root}/2023": (1, 0, 6),
        f"{root}/2023/봄": (2, 3, 3),
        f"{root}/2023/여름": (2, 3, 3),
        f"{root}/복사본": (1, 2, 2),
    }
    for path, (depth, own, total) in expected.items():
        folder = folders[path]
        assert (folder["depth"], folder["photos"], folder["total"]) == (depth, own, total), path
        assert folder["name"] == Path(path).name and folder["offline"] is False


def test_a_folders_own_photos_newest_first(views) -> None:
    records = _records(views)
    spring = views.photos / "2023" / "봄"
    body = _ok(views, "/api/folder", path=str(spring))
    assert body["path"] == str(spring)
    assert [p["id"] for p in _photos(body)] == _newest_first(
        [r for r in records if Path(r.path).parent == spring]
    )
    # Only the photos directly in it, by cursor pages; `..` and a trailing slash read as text.
    top = _ok(views, "/api/folder", path=f"{views.photos}/2023/봄/../")
    assert top["path"] == str(views.photos / "2023") and _photos(top) == []
    assert _photos(_ok(views, "/api/folder", path=str(views.photos))) == []
    pages = _walk(views, "/api/folder", path=str(views.photos / "2022"), n=5, after="2022-06")
    names = [Path(p["path"]).name for page in pages for p in page]
    assert names == [f"f{m:02}.png" for m in range(12, 5, -1)]


@pytest.mark.parametrize(
    ("path", "reason"),
    [("", "not_a_full_path"), ("2022", "not_a_full_path"), ("/no/such", "folder_not_indexed")],
)
def test_an_unknown_folder_is_a_problem(views, path: str, reason: str) -> None:
    assert _problem(views, "/api/folder", path=path)["reason"] == reason


def test_duplicate_groups_are_what_duplicates_finds(views, cli) -> None:
    expected = cli(
        "duplicates", "--threshold", str(COPY_THRESHOLD), "--json", "--library", views.library
    ).json()
    body = _ok(views, "/api/duplicates", threshold=str(COPY_THRESHOLD))
    assert body["total"] == len(expected) == 2 and body["more"] is False
    assert body["threshold"] == COPY_THRESHOLD
    for group, cli_group in zip(body["groups"], expected, strict=True):
        assert group["similarity"] == pytest.approx(cli_group["similarity"])
        fields = {"path", "size", "width", "height", "taken_at", "date_source"}
        assert [{k: p[k] for k in fields} for p in group["photos"]] == cli_group["photos"]
        for photo in group["photos"]:
            assert photo["thumbnail"].startswith(f"/api/photos/{photo['id']}/thumbnail?v=")
            assert photo["original"] == f"/api/photos/{photo['id']}/original"
    names = sorted(Path(p["path"]).name for g in body["groups"] for p in g["photos"])
    assert names == sorted(["f05.png", "f05 사본.png", "exif0310.jpg", "exif0310 사본.jpg"])
    # Paged; a folder narrows the groups to its photos.
    first = _ok(views, "/api/duplicates", threshold=str(COPY_THRESHOLD), n=1)
    second = _ok(views, "/api/duplicates", threshold=str(COPY_THRESHOLD), n=1, offset=1)
    assert first["more"] is True and second["more"] is False
    assert first["groups"] + second["groups"] == body["groups"]
    narrow = _ok(
        views,
        "/api/duplicates",
        threshold=str(COPY_THRESHOLD),
        **{"in": str(views.photos / "2022")},
    )
    assert narrow["total"] == 0


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"threshold": "0"}, "not_a_threshold"),
        ({"threshold": "1.5"}, "not_a_threshold"),
        ({"threshold": "nan"}, "not_a_threshold"),
        ({"threshold": "high"}, "not_a_threshold"),
        ({"n": "-1"}, "out_of_range"),
        ({"offset": "x"}, "not_a_whole_number"),
        ({"in": "/no/such"}, "folder_not_indexed"),
    ],
)
def test_bad_duplicates_parameters_are_problems(views, params: dict, reason: str) -> None:
    assert _problem(views, "/api/duplicates", **params)["reason"] == reason


# -- the SQL ----------------------------------------------------------------------------


def _plans(library: Path, **params: object) -> list[str]:
    """The query plan of every statement a timeline page runs (two pages: the second from
    the first's cursor)."""
    store = PhotoStore(library, create=False)
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    try:
        opened = SimpleNamespace(store=store)
        request = SearchRequest(**params)
        first = timeline_page(opened, request, limit=5)  # type: ignore[arg-type]
        assert first.cursor.exif is not None and first.cursor.file_time is not None
        timeline_page(opened, request, cursor=first.cursor, limit=5)  # type: ignore[arg-type]
        store.conn.set_trace_callback(None)
        timeline_sql = [s for s in statements if "FROM photos" in s and "ORDER BY" in s]
        assert len(timeline_sql) == 4
        plans = []
        for sql in timeline_sql:
            rows = store.conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
            plans.append(" | ".join(row[-1] for row in rows))
        return plans
    finally:
        store.close()


def test_the_timeline_reads_the_date_index_not_the_table(views) -> None:
    for params in ({}, {"after": "2022-03", "before": "2024"}):
        plans = _plans(views.library, **params)
        for plan in plans:
            assert plan.startswith("SEARCH photos USING INDEX idx_photos_date ("), plan
            assert "TEMP B-TREE" not in plan, plan  # the index's own order: no sort
        # From a cursor, both walks start at it (a range of the index), not at the top.
        assert "taken_at<?" in plans[2] and "mtime_ns<?" in plans[3], plans


def test_a_cursor_reads_back_exactly_and_folders_count_in_process(views) -> None:
    cursor = TimelineCursor(("2023-03-10T08:30:00", 5, 7), (1_650_000_000_000_000_000, 9))
    assert TimelineCursor.read(cursor.text) == cursor
    assert TimelineCursor.read("") == TimelineCursor()
    store = PhotoStore(views.library, create=False)
    try:
        counts = folder_counts(SimpleNamespace(store=store))  # type: ignore[arg-type]
    finally:
        store.close()
    assert sum(f.photos for f in counts) == 22


def test_the_library_is_left_as_it_was(views) -> None:
    before = (views.library / "library.db").read_bytes()
    for path in ("/api/timeline", "/api/folders", "/api/duplicates"):
        _ok(views, path)
    _ok(views, "/api/folder", path=str(views.photos / "2022"))
    assert (views.library / "library.db").read_bytes() == before
    assert sqlite3.sqlite_version_info >= (3, 15)  # row values, which the cursor's SQL uses
