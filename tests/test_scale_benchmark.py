"""benchmarks/scale.py: its fabricated files and library, the measurement of one size run
against this checkout at a tiny size with the tiny bundle, and the report's statistics and
targets. The benchmark itself fabricates 100k and 1M photos; nothing here asserts a speed."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from benchkit.figures import Spread
from benchkit.inputs import korean_queries
from benchkit.report import render
from benchkit.workspace import photo_rows
from benchscripts import load_script
from conftest import EMBED_DIM, TinyModels
from scalebench.checkout import PAGE, Checkout, search
from scalebench.figures import Report, SizeFigures, checks, size_checks
from scalebench.library import (
    FORMAT,
    SCHEMA_VERSION,
    ensure_real_files,
    ensure_synthetic_files,
    fabricate_library,
    raw_dim,
    synthetic_folder,
)
from scalebench.measure import measure_size
from scalebench.texts import TEXT_EVERY, matching_queries, unmatched_queries, written_texts

REPO = Path(__file__).resolve().parents[1]


script = load_script("scale.py", "scale_script")


def test_real_files_are_distinct_valid_jpegs_with_their_stat_and_hash(tmp_path: Path) -> None:
    from PIL import Image

    root, files = ensure_real_files(tmp_path, 30)
    assert len(files) == 30 and len({f.sha256 for f in files}) == 30
    assert len({Path(f.path).parent for f in files}) > 1  # spread over subfolders
    for f in files[:5]:
        data = Path(f.path).read_bytes()
        assert Path(f.path).is_relative_to(root)
        assert hashlib.sha256(data).hexdigest() == f.sha256 and len(data) == f.size < 2000
        assert Path(f.path).stat().st_mtime_ns == f.mtime_ns
        with Image.open(f.path) as image:
            image.load()
            assert image.format == "JPEG"
    assert ensure_real_files(tmp_path, 30) == (root, files)  # written once, reused


def test_synthetic_files_are_empty_links_made_once_and_extended(tmp_path: Path) -> None:
    from scalebench.library import SYNTHETIC_PER_FOLDER, synthetic_path

    root = ensure_synthetic_files(tmp_path, 10, 1_500)
    assert root == synthetic_folder(tmp_path, 10) and root.name.endswith(f"-f{FORMAT}")
    paths = [Path(synthetic_path(root, n)) for n in range(10, 1_500)]
    assert all(p.is_file() and p.stat().st_size == 0 for p in paths)
    assert not Path(synthetic_path(root, 9)).exists() and len({p.parent for p in paths}) == 2
    assert paths[0].stat().st_nlink == SYNTHETIC_PER_FOLDER - 10  # one inode per subfolder
    mtime = paths[-1].stat().st_mtime_ns
    assert ensure_synthetic_files(tmp_path, 10, 1_200) == root  # nothing to make
    assert ensure_synthetic_files(tmp_path, 10, 2_100) == root  # grown, the rest kept
    assert Path(synthetic_path(root, 2_099)).is_file() and paths[-1].stat().st_mtime_ns == mtime


def test_text_queries_match_the_texts_written_or_none() -> None:
    texts = written_texts()
    assert len(set(texts)) == len(texts) > 100
    matching = matching_queries(5)
    assert matching == texts[:5]
    words = {word for text in texts for word in text.split()}
    for query in unmatched_queries(5):
        assert set(query.split()) - words  # a word no text holds
    assert len(set(unmatched_queries(20))) == 20 and TEXT_EVERY == 10


def _columns_and_indexes(conn: sqlite3.Connection) -> dict[str, object]:
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    found: dict[str, object] = {}
    for table in sorted(tables):
        found[table] = [tuple(r)[1:] for r in conn.execute(f"PRAGMA table_info({table})")]
        for index in conn.execute(f"PRAGMA index_list({table})"):
            name = index[1]
            columns = [r[2] for r in conn.execute(f"PRAGMA index_info({name})")]
            found[f"{table}.{name}"] = (bool(index[2]), columns)
    return found


def test_the_fabricated_library_has_schema_4_of_the_migrations(tmp_path: Path) -> None:
    from hanclip_library.migrations import MIGRATIONS

    _, files = ensure_real_files(tmp_path, 10)
    library = tmp_path / "library"
    synthetic = ensure_synthetic_files(tmp_path, 10, 25)
    fabricate_library(library, 25, files, dim=8, synthetic=synthetic)
    made = sqlite3.connect(str(library / "library.db"))
    reference = sqlite3.connect(":memory:")
    for step in MIGRATIONS[:SCHEMA_VERSION]:
        step.apply(reference)
    assert _columns_and_indexes(made) == _columns_and_indexes(reference)
    assert made.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("4",)
    rows = made.execute("SELECT path, size, mtime_ns, sha256, embedding FROM photos ORDER BY id")
    rows = rows.fetchall()
    assert [r[:4] for r in rows[:10]] == [(f.path, f.size, f.mtime_ns, f.sha256) for f in files]
    assert all(Path(r[0]).is_relative_to(synthetic) for r in rows[10:])
    assert all(Path(r[0]).is_file() for r in rows)  # no row is gone
    assert len(rows) == 25 == len({r[0] for r in rows})
    assert raw_dim(library) == 8 and photo_rows(library / "library.db") == 25


def test_one_size_measured_on_this_checkout(tmp_path: Path, tiny: TinyModels) -> None:
    """Fabricate, migrate and index with this checkout: the re-index finds every real file
    unchanged, searches return a full page (no row is gone), text queries find the photos
    with text first, and every figure has its runs."""
    from hanclip_library.store import PhotoStore

    checkout = Checkout.at(REPO)
    ws = checkout.workspace(tmp_path, tiny.heads_bundle)
    queries = korean_queries(6, seed=16)  # 1 + 2 cold, 1 + 2 warm
    figures = measure_size(
        ws, checkout, 300, queries, real_files=100, dim=EMBED_DIM, reindex_runs=1, probe_runs=1
    )
    assert figures.photos == 300 and figures.real_files == 100
    assert figures.reindex_counts["added"] == 0 and figures.reindex_counts["unchanged"] == 100
    assert len(figures.cold_search_s.runs) == 2 and len(figures.warm_search_ms.runs) == 2
    assert figures.timeline_first_page_ms is not None and figures.timeline_first_page_ms.runs
    assert len(figures.cold_rss_mb.runs) == 2 and figures.cold_rss_mb.min > 10
    assert figures.load_index_s.runs and figures.sync_index_s.runs and figures.hnsw_mb > 0

    store = PhotoStore(Path(figures.library), create=False)  # migrated by the first index
    try:
        assert store.count() == 300
        assert len(store.records_under([tmp_path / f"files-100-f{FORMAT}"])) == 100
        synthetic = store.conn.execute("SELECT path FROM photos WHERE id > 100").fetchall()
        assert len(synthetic) == 200 and all(Path(p).is_file() for (p,) in synthetic)
        assert (
            store.conn.execute("SELECT COUNT(*) FROM photo_text WHERE status = 'text'").fetchone()[
                0
            ]
            == 300 // TEXT_EVERY
        )
    finally:
        store.close()
    _, hits = search(ws, "바닷가의 강아지", Path(figures.library))
    assert len(hits) == PAGE
    # A page as large as the library: every row is found, none is gone.
    run = ws.search("바닷가의 강아지", Path(figures.library), "-n", "300", "--no-text")
    assert len(json.loads(run.stdout)) == 300
    _, hits = search(ws, matching_queries(1)[0], Path(figures.library), "--text-only")
    assert hits and all(hit["text_match"]["spans"] for hit in hits)

    text = figures.text
    assert text is not None and text.text_rows == 30
    assert len(text.matching_text_s.runs) == 2 == len(text.unmatched_look_s.runs)
    assert text.matching_text_hits.min >= 1 and text.matching_ratio > 0
    report = format_report(_report([figures]))
    assert "reindex counts" in report and "\n  n/a " in report  # no re-index target at 100 files
    assert "PASS" in report or "FAIL" in report  # the text ratios are judged at this size
    assert "matching ratio" in report


def _stat(*values: float) -> Spread:
    return Spread.of(values)


def format_report(report: Report) -> str:
    return render("hanclip at scale", report, checks(report))


def _figures(photos: int, cold: float, reindex: float, real: int = 100_000) -> SizeFigures:
    return SizeFigures(
        photos=photos,
        real_files=real,
        dim=512,
        library="/lib",
        library_origin="copied",
        db_mb=1.0,
        hnsw_mb=1.0,
        first_index_s=1.0,
        cold_search_s=_stat(cold, cold + 0.2, cold - 0.1),
        cold_rss_mb=_stat(500, 510, 505),
        warm_search_ms=_stat(5, 6, 7),
        load_index_s=_stat(0.2, 0.25, 0.3),
        sync_index_s=_stat(0.5, 0.45, 0.4),
        id_read_s=None,
        reindex_s=_stat(reindex, reindex + 1, reindex - 0.1),
        reindex_counts={"added": 0},
    )


def _report(sizes: list[SizeFigures]) -> Report:
    return Report("ckout", "bundle", 2, (1, 1, 1), (1, 1, 1), "/w", 3, tuple(sizes), 1.0)


def _outcomes(report: str) -> list[str]:
    lines = report.split("Targets:")[1].strip().splitlines()[1:]
    return [line.split()[0] for line in lines]


@pytest.mark.parametrize(
    ("photos", "cold", "reindex", "expected"),
    [
        (100_000, 0.5, 1.99, ["PASS", "PASS"]),
        (100_000, 0.51, 2.0, ["FAIL", "FAIL"]),
        (1_000_000, 1.0, 1.0, ["PASS", "PASS"]),
        (1_000_000, 1.01, 3.0, ["FAIL", "FAIL"]),
        (2_000_000, 5.0, 1.0, ["n/a", "PASS"]),
    ],
)
def test_pass_and_fail_follow_the_targets(
    photos: int, cold: float, reindex: float, expected: list[str]
) -> None:
    figures = _figures(photos, cold, reindex)
    assert [c.passed for c in size_checks(figures)] == [
        {"PASS": True, "FAIL": False, "n/a": None}[e] for e in expected
    ]
    assert _outcomes(format_report(_report([figures]))) == expected
    small = replace(figures, real_files=1_000)  # the re-index target is for 100,000 files
    assert size_checks(small)[1].passed is None


def test_p50_is_the_median_of_the_runs_shown() -> None:
    stat = _stat(0.9, 0.3, 0.5, 0.7, 0.4)
    assert (stat.p50, stat.min, stat.max) == (0.5, 0.3, 0.9)
    assert _stat(1, 2, 3, 4).p50 == 2.5
    figures = replace(_figures(100_000, 0.4, 1.0), cold_search_s=stat)
    row = next(
        line
        for line in format_report(_report([figures])).splitlines()
        if line.startswith("  cold search ")
    )
    assert row.split()[2:10] == ["p50", "0.5", "min", "0.3", "max", "0.9", "n", "5"]
    assert row.endswith("[0.9 0.3 0.5 0.7 0.4] s")
    assert figures.freshness_s == pytest.approx(0.45 - 0.25)


def test_arguments() -> None:
    args = script.parse_args([])
    assert args.sizes == (100_000, 1_000_000) and args.runs == 7 and args.real_files == 100_000
    assert args.code == REPO
    quick = script.parse_args(["--quick"])
    assert quick.sizes == script.QUICK_SIZES and quick.runs == 3 and quick.real_files == 1_000


def test_the_resident_servers_searches_get_their_own_verdict() -> None:
    figures = replace(
        _figures(1_000_000, 5.0, 1.0),
        resident_search_s=_stat(0.3, 0.4, 0.35),
        resident_rss_mb=_stat(40, 41, 42),
    )
    found = {c.label: c.passed for c in size_checks(figures)}
    assert found["cold search p50 at 1,000,000, on its own"] is False
    assert found["cold search p50 at 1,000,000, resident server up"] is True
    report = format_report(_report([figures]))
    row = next(line for line in report.splitlines() if line.startswith("  resident search "))
    assert row.split()[2:10] == ["p50", "0.35", "min", "0.3", "max", "0.4", "n", "3"]
