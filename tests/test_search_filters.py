"""Filters inside the search (dates, folders, scores), exactly N results, order and output."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hanclip_library import vector_index
from hanclip_library.request import CLI, HTTP, SearchRequest
from hanclip_library.searcher import SearchHit, order_hits
from hanclip_library.store import DateBound
from hanclip_library.vector_index import StoredVectors, build_index, load_index, save_index
from hanclip_model.errors import HanclipError
from hanclip_model.heads import l2_normalize


def ns(*when: int) -> int:
    """A local date and time as file times give it, in nanoseconds."""
    return int(datetime(*when).timestamp()) * 10**9


def dated_photo(
    path: Path,
    seed: int,
    *,
    mtime_ns: int,
    exif_date: str | None = None,
    shape: tuple[int, int] = (24, 32),
) -> None:
    """A photo of random pixels (`shape`: height, width) with that file time and, if given,
    that EXIF DateTimeOriginal."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if exif_date:
        exif.get_ifd(0x8769)[36867] = exif_date  # DateTimeOriginal
    Image.fromarray(pixels).save(path, exif=exif)
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def dated(tmp_path: Path) -> Path:
    """24 photos: A/ one a month of 2020 by file time; B/ six with an EXIF date in the first
    half of 2023 (their files dated 2019), six by file time in its second half."""
    root = tmp_path / "사진"
    for month in range(1, 13):
        dated_photo(root / "A" / f"a{month:02}.png", month, mtime_ns=ns(2020, month, 15, 12))
    for month in range(1, 7):
        dated_photo(
            root / "B" / f"exif{month:02}.jpg",
            100 + month,
            mtime_ns=ns(2019, 1, 1),
            exif_date=f"2023:{month:02}:10 08:30:00",
        )
    for month in range(7, 13):
        dated_photo(root / "B" / f"b{month:02}.png", 200 + month, mtime_ns=ns(2023, month, 1, 9))
    return root


@pytest.fixture
def search(cli, tiny, dated, library):
    common = ["--library", library, "--model", tiny.plain_bundle]
    assert cli("index", dated, *common).exit_code == 0

    def run(*args: object) -> list[dict]:
        result = cli("search", "바다", *args, "--json", *common)
        assert result.exit_code == 0, result.stderr
        return result.json()

    return run


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2023", "2023-01-01"), ("2023-07", "2023-07-01"), (" 2023-07-14 ", "2023-07-14")],
)
def test_a_date_is_the_start_of_its_day_month_or_year(text, expected) -> None:
    year, month, day = (int(part) for part in expected.split("-"))
    bound = SearchRequest(after=text).date_bound("after", CLI)
    assert bound == DateBound(expected, ns(year, month, day))


@pytest.mark.parametrize("text", ["2023-13", "2023-02-30", "23", "2023/07", "어제"])
def test_a_bad_date_is_an_error(text) -> None:
    request = SearchRequest(query=("바다",), before=text)
    with pytest.raises(HanclipError, match="--before .* is not a date"):
        request.check(CLI)
    with pytest.raises(HanclipError, match="^before=.* is not a date"):
        request.check(HTTP)


def test_dates_come_from_exif_else_the_files_time(search, dated) -> None:
    hits = {Path(hit["path"]).name: hit for hit in search("-n", "24")}
    assert len(hits) == 24
    assert hits["exif03.jpg"]["taken_at"] == "2023-03-10T08:30:00"
    assert hits["exif03.jpg"]["date_source"] == "exif"
    assert hits["a05.png"]["taken_at"] == "2020-05-15T12:00:00"
    assert hits["a05.png"]["date_source"] == "mtime"
    assert set(hits["a05.png"]) == {
        "rank", "path", "score", "taken_at", "width", "height", "offline", "date_source"
    }  # fmt: skip


def test_the_table_shows_the_same_date(cli, tiny, dated, library) -> None:
    common = ["--library", library, "--model", tiny.plain_bundle]
    assert cli("index", dated / "A", *common).exit_code == 0
    result = cli("search", "바다", "-n", "12", *common)
    assert result.exit_code == 0
    assert "2020-05-15T12:00:00" in result.stdout


def _best_passing(every: list[dict], passes, n: int) -> list[str]:
    return [hit["path"] for hit in every if passes(hit)][:n]


@pytest.mark.parametrize(
    ("args", "passes", "n", "count"),
    [
        (["--after", "2023"], lambda h: h["taken_at"] >= "2023", 5, 5),
        (["--after", "2023"], lambda h: h["taken_at"] >= "2023", 12, 12),  # exactly N pass
        (["--after", "2023"], lambda h: h["taken_at"] >= "2023", 20, 12),  # fewer than N
        (["--before", "2020-07"], lambda h: h["taken_at"] < "2020-07", 10, 6),
        (
            ["--after", "2020-03", "--before", "2020-05"],
            lambda h: "2020-03" <= h["taken_at"] < "2020-05",
            10,
            2,
        ),
        (
            ["--after", "2020-03-15", "--before", "2020-03-16"],
            lambda h: h["taken_at"].startswith("2020-03-15"),
            3,
            1,
        ),
        (["--in", "A"], lambda h: "/A/" in h["path"], 20, 12),
        (["--in", "A", "--in", "B"], lambda h: True, 30, 24),
        (
            ["--in", "A", "--after", "2020-10"],
            lambda h: "/A/" in h["path"] and h["taken_at"] >= "2020-10",
            10,
            3,
        ),
        (
            ["--in", "B", "--before", "2023-07"],
            lambda h: "/B/" in h["path"] and h["taken_at"] < "2023-07",
            4,
            4,
        ),
        (["--in", "A/a01.png"], lambda h: h["path"].endswith("/A/a01.png"), 5, 1),
        (["--in", "A", "--after", "2023"], lambda h: False, 5, 0),
    ],
)
def test_filters_give_exactly_n_of_the_best_that_pass(
    search, dated, monkeypatch, args, passes, n, count
) -> None:
    every = search("-n", "24")
    monkeypatch.chdir(dated)  # --in resolves a relative folder as `index` does
    hits = search(*args, "-n", str(n))
    assert len(hits) == count
    assert [h["path"] for h in hits] == _best_passing(every, passes, n)
    assert [h["rank"] for h in hits] == list(range(1, count + 1))


def test_a_library_without_the_date_index_filters_the_same(search, library) -> None:
    """Readers never migrate: a library from before schema step 4 is filtered by its rows."""
    before = search("--after", "2020-06", "--before", "2023-03", "-n", "9")
    with closing(sqlite3.connect(library / "library.db")) as conn, conn:
        conn.execute("DROP INDEX idx_photos_date")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    assert search("--after", "2020-06", "--before", "2023-03", "-n", "9") == before
    assert len(before) == 9
    with closing(sqlite3.connect(library / "library.db")) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [
            ("3",)
        ]


def test_min_score_cuts_off_weak_matches(search) -> None:
    every = search("-n", "24")
    cut = (every[4]["score"] + every[5]["score"]) / 2  # between the 5th and the 6th best
    hits = search("--min-score", str(cut), "-n", "10")
    assert [h["path"] for h in hits] == [h["path"] for h in every[:5]]
    assert search("--min-score", "1.01") == []
    after = search("--after", "2023", "--min-score", str(cut), "-n", "10")
    expected = [h["path"] for h in every[:5] if h["taken_at"] >= "2023"]
    assert [h["path"] for h in after] == expected


def test_sort_by_date_orders_the_n_best(search) -> None:
    best = search("-n", "7")
    newest = search("-n", "7", "--sort", "date")
    oldest = search("-n", "7", "--sort", "date-asc")
    assert {h["path"] for h in newest} == {h["path"] for h in best} == {h["path"] for h in oldest}
    assert [h["taken_at"] for h in newest] == sorted((h["taken_at"] for h in best), reverse=True)
    assert [h["taken_at"] for h in oldest] == sorted(h["taken_at"] for h in best)
    assert [h["rank"] for h in newest] == list(range(1, 8))


def test_order_hits_keeps_the_best_first_within_a_date() -> None:
    def hit(path: str, score: float, date: str) -> SearchHit:
        return SearchHit(0, path, score, date, None, None)

    hits = [hit("a", 0.9, "2020"), hit("b", 0.8, "2023"), hit("c", 0.7, "2020")]
    assert [h.path for h in order_hits(hits, "date")] == ["b", "a", "c"]
    assert [h.path for h in order_hits(hits, "date-asc")] == ["a", "c", "b"]
    assert [(h.path, h.rank) for h in order_hits(hits, "score")] == [("a", 1), ("b", 2), ("c", 3)]


def test_offline_photos_do_not_pass_a_filter(cli, tiny, dated, library, tmp_path) -> None:
    common = ["--library", library, "--model", tiny.plain_bundle]
    assert cli("index", dated, *common).exit_code == 0
    (dated / "B").rename(tmp_path / "unplugged")
    assert cli("index", dated, *common).exit_code == 0

    def run(*args: str) -> list[dict]:
        result = cli("search", "바다", *args, "--json", *common)
        assert result.exit_code == 0, result.stderr
        return result.json()

    assert run("--after", "2023", "-n", "5") == []
    shown = run("--after", "2023", "-n", "5", "--include-offline")
    assert len(shown) == 5 and all(h["offline"] for h in shown)
    assert len(run("--in", str(dated), "-n", "30")) == 12


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--after", "2023-13"], "--after '2023-13' is not a date"),
        (["--sort", "name"], "--sort 'name'"),
        (["--json", "--paths"], "choose one output"),
    ],
)
def test_bad_filter_and_output_options_are_one_line_errors(
    cli, tiny, photos, library, args, message
) -> None:
    common = ["--library", library, "--model", tiny.plain_bundle]
    assert cli("index", photos, *common).exit_code == 0
    result = cli("search", "바다", *args, *common)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


@pytest.mark.parametrize("exact_up_to", [0, 10_000])
def test_search_among_returns_min_k_allowed_best_first(monkeypatch, exact_up_to) -> None:
    """Both strategies (the filtered graph search, the exact scan): exactly min(k, allowed)."""
    monkeypatch.setattr(vector_index, "EXACT_MAX_CANDIDATES", exact_up_to)
    rng = np.random.default_rng(0)
    vectors = l2_normalize(rng.standard_normal((400, 8)).astype(np.float32))
    ids = np.arange(1000, 1400)
    vindex = build_index(ids, vectors, "test", 8)
    query = l2_normalize(rng.standard_normal((1, 8)).astype(np.float32))[0]
    scores = dict(zip(ids.tolist(), (vectors @ query).tolist(), strict=True))
    for allowed_count, k in [(10, 10), (3, 10), (300, 10), (1, 1), (0, 5)]:
        allowed = set(rng.choice(ids, allowed_count, replace=False).tolist())
        found = vindex.search_among(query, k, allowed)
        assert len(found) == min(k, allowed_count)
        assert {photo_id for photo_id, _ in found} <= allowed
        assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
        for photo_id, score in found:
            assert score == pytest.approx(scores[photo_id], abs=1e-5)
        if exact_up_to:
            best = sorted(allowed, key=lambda i: -scores[i])[:k]
            assert [photo_id for photo_id, _ in found] == best


def test_the_exact_scan_reads_the_vectors_from_the_saved_file(tmp_path) -> None:
    """A loaded index scores a selective filter from its own file (memory-mapped), with the
    very vectors hnswlib holds; a stale, short or foreign file is never used."""
    rng = np.random.default_rng(1)
    vectors = l2_normalize(rng.standard_normal((300, 16)).astype(np.float32))
    ids = rng.permutation(np.arange(5, 305))
    save_index(tmp_path, build_index(ids, vectors, "test", 16))
    loaded = load_index(tmp_path)
    query = l2_normalize(rng.standard_normal((1, 16)).astype(np.float32))[0]
    allowed = set(rng.choice(ids, 40, replace=False).tolist())
    by_file = loaded.search_among(query, 10, allowed)
    assert loaded._stored is not None  # the file served the scan
    stored = loaded._stored.get(np.array(sorted(allowed)))
    assert np.array_equal(stored, np.asarray(loaded.index.get_items(sorted(allowed))))
    in_memory = build_index(ids, vectors, "test", 16)
    assert by_file == in_memory.search_among(query, 10, allowed)

    loaded.add(np.array([999]), vectors[:1])  # the file lacks photo 999 now
    assert loaded.data_file is None
    assert 999 in {i for i, _ in loaded.search_among(vectors[0], 1, allowed | {999})}
    # The file still serves the photos it holds; hnswlib's copy only the one added since.
    assert loaded._stored is not None
    in_memory.add(np.array([999]), vectors[:1])
    for among in (allowed, allowed | {999}):
        assert loaded.search_among(query, 10, among) == in_memory.search_among(query, 10, among)

    short = load_index(tmp_path)
    short.data_file.write_bytes(short.data_file.read_bytes()[:500])
    assert StoredVectors.open(short.data_file, 16, 300) is None
    assert short.search_among(query, 10, allowed) == by_file  # hnswlib's own copy instead
    assert short.data_file is None


def test_paths_and_nul_output_pipe_into_xargs(cli, tiny, photos, library) -> None:
    """Through the installed console script and a real pipe, as `... --paths | xargs` runs."""
    common = ["--library", str(library), "--model", str(tiny.plain_bundle)]
    assert cli("index", photos, *common).exit_code == 0
    expected = [h["path"] for h in cli("search", "고양이", "-n", "5", "--json", *common).json()]
    hanclip = str(Path(sys.executable).parent / "hanclip")
    for flag, xargs in (("--paths", ["xargs", "-d", "\n"]), ("-0", ["xargs", "-0"])):
        search = subprocess.Popen(
            [hanclip, "search", "고양이", "-n", "5", flag, *common], stdout=subprocess.PIPE
        )
        listed = subprocess.run(
            [*xargs, "ls", "-1d", "--"], stdin=search.stdout, capture_output=True, check=True
        )
        search.stdout.close()
        assert search.wait(timeout=300) == 0
        assert sorted(os.fsdecode(listed.stdout).splitlines()) == sorted(expected)
    raw = subprocess.run(
        [hanclip, "search", "고양이", "-n", "5", "-0", *common], capture_output=True, check=True
    ).stdout
    assert raw == b"".join(os.fsencode(path) + b"\0" for path in expected)
    lines = subprocess.run(
        [hanclip, "search", "고양이", "-n", "5", "--paths", *common],
        capture_output=True,
        check=True,
    ).stdout
    assert lines.decode() == "".join(f"{path}\n" for path in expected)
