"""benchmarks/serve_latency.py: its requests, statistics, report, and a measurement of a real
`hanclip serve`.

No latency target is asserted here; the target lives in the benchmark. The benchmark itself
builds real-size random models and a 10,000-photo library, minutes of work; here the same
measurement code runs against a server over the tests' 12-photo library and tiny bundle, a
few requests of each kind, and the cold CLI runs are a stand-in (each spawned `hanclip
search` imports the whole model stack).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from benchkit.figures import Spread, to_json
from benchkit.inputs import PHRASES, korean_queries
from benchkit.processes import BenchmarkError, LoadSummary, ProcessRun
from benchkit.report import render
from benchkit.server import running_server
from benchscripts import load_script
from served import serve_env

from hanclip_library.thumbnails import THUMBNAILS_DIR

bench = load_script("serve_latency.py", "serve_latency")
HANGUL = range(0xAC00, 0xD7A4)


def test_queries_are_distinct_korean_and_repeatable() -> None:
    texts = korean_queries(400)
    assert len(set(texts)) == 400
    assert all(any(ord(ch) in HANGUL for ch in text) for text in texts)
    assert korean_queries(400) == texts
    assert korean_queries(10) == texts[:10]
    assert korean_queries(10, seed=1) != texts[:10]
    with pytest.raises(ValueError):
        korean_queries(PHRASES + 1)


def test_latency_percentiles_in_ms() -> None:
    ms = Spread.of([float(i) for i in range(1, 101)])
    assert ms.count == 100
    assert (ms.min, ms.max) == pytest.approx((1.0, 100.0))
    assert (ms.p50, ms.p90, ms.p99) == pytest.approx((50.5, 90.1, 99.01))


def _narrow(folder: str) -> Any:
    return bench.Filter("filtered_narrow", "in=<folder>", {"in": folder})


def test_plan_uses_each_text_and_photo_once() -> None:
    plan = bench.make_plan(5, list(range(1, 21)), [3, 4], [_narrow("/p")])
    calls = [*plan.warmup, *(c for s in plan.scenarios for c in s.calls)]
    texts = [params["q"] for path, params in calls if path == "/api/search"]
    assert len(texts) == len(set(texts)) == bench.WARMUP_SEARCHES + 2 + 3 * 5
    similar = [path for path, _ in calls if path.endswith("/similar")]
    assert len(similar) == len(set(similar)) == 6  # one of them warms up
    by_key = {s.key: s for s in plan.scenarios}
    assert list(by_key) == [
        "search",
        "filtered_narrow",
        "second_page",
        "similar",
        "thumbnail_first",
        "thumbnail_cached",
    ]
    assert all(p["in"] == "/p" for _, p in by_key["filtered_narrow"].calls)
    assert all(p["offset"] == bench.PAGE for _, p in by_key["second_page"].calls)
    thumbnails = [path for path, _ in by_key["thumbnail_first"].calls]
    assert thumbnails == ["/api/photos/3/thumbnail", "/api/photos/4/thumbnail"]
    assert by_key["thumbnail_cached"].calls == by_key["thumbnail_first"].calls
    assert not any(path.endswith("/thumbnail") for path, _ in plan.warmup)


def _answer(path: str, status: int = 200, **kwargs: Any) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "http://x" + path), **kwargs)


def test_check_response_rejects_what_is_not_an_answer() -> None:
    search = ("/api/search", {"q": "노을", "in": "/p"})
    bench.check_response(_answer("/api/search", json={"results": [{"path": "/p/a.jpg"}]}), search)
    with pytest.raises(BenchmarkError, match="outside /p"):
        bench.check_response(
            _answer("/api/search", json={"results": [{"path": "/pq.jpg"}]}), search
        )
    with pytest.raises(BenchmarkError, match="no results"):
        bench.check_response(_answer("/api/search", json={"results": []}), search)
    with pytest.raises(httpx.HTTPStatusError):
        bench.check_response(_answer("/api/search", 400, json={"error": "bad"}), search)
    thumb = ("/api/photos/1/thumbnail", {})
    jpeg = {"content": b"\xff\xd8", "headers": {"content-type": "image/jpeg"}}
    bench.check_response(_answer(thumb[0], **jpeg), thumb)
    with pytest.raises(BenchmarkError, match="no JPEG"):
        bench.check_response(_answer(thumb[0], json={"error": "x"}), thumb)


def _fake_server(monkeypatch, code: str) -> None:
    """`hanclip serve` stands in as a Python one-liner."""
    from hanclip_eval import server_process as spawn

    monkeypatch.setattr(spawn, "serve_command", lambda args: [sys.executable, "-c", code])


def test_server_launch_reads_the_url_and_stops_the_server(monkeypatch) -> None:
    line = "serving /lib (3 photos) at http://127.0.0.1:1234/ (Ctrl-C stops)"
    _fake_server(monkeypatch, f"import time; print({line!r}, flush=True); time.sleep(60)")
    with running_server([], dict(os.environ), timeout_s=20) as server:
        assert server.url == "http://127.0.0.1:1234/"
        assert 0 < server.announced_s < 20
        assert server.peak_rss_mb() > 0
    assert server.peak_rss_mb() is None  # stopped: its /proc entry is gone


def test_server_launch_reports_an_exit(monkeypatch) -> None:
    _fake_server(monkeypatch, "import sys; print('no library here', file=sys.stderr); sys.exit(3)")
    with (
        pytest.raises(BenchmarkError, match="exited:\nno library here"),
        running_server([], dict(os.environ), timeout_s=20),
    ):
        pass


def test_server_launch_gives_up_on_a_silent_server(monkeypatch) -> None:
    _fake_server(monkeypatch, "import time; print('loading', flush=True); time.sleep(60)")
    with (
        pytest.raises(BenchmarkError, match="no URL in time:\nloading"),
        running_server([], dict(os.environ), timeout_s=1),
    ):
        pass


@dataclass
class FakeWorkspace:
    """Stands in for cold `hanclip search` processes."""

    walls: list[float]
    texts: list[str] = field(default_factory=list)

    def search(self, text: str, library: Path) -> ProcessRun:
        self.texts.append(text)
        return ProcessRun(self.walls[len(self.texts) - 1], 1.0, 1, '[{"rank": 1}]', "")


def test_cli_figures_are_the_median_of_cold_runs() -> None:
    ws = FakeWorkspace([3.0, 2.0, 4.0])
    cli = bench.measure_cli(ws, Path("/lib"), ["가", "나", "다"])
    assert cli.runs == (3.0, 2.0, 4.0) and cli.p50 == 3.0
    assert ws.texts == ["가", "나", "다"]


def _results(search_p50_ms: float) -> Any:
    rows = tuple(
        bench.Latency(key, key, Spread.of([p50 * 0.8, p50, p50 * 3]))
        for key, p50 in (("search", search_p50_ms), ("similar", 5.0), ("thumbnail_first", 40.0))
    )
    load = LoadSummary({"before server": 1.9}, (0.5, 0.4, 0.3), (1.0, 0.6, 0.4), 0.5, 0.8, 1.2)
    return bench.Results(
        library_photos=10_000,
        real_photos=12,
        photo_size=(4000, 3000),
        bundle="/b (cached)",
        cores=2,
        load_average=load,
        server=bench.ServerFigures(6.5, 6.6, 120.0, 900.0, rows),
        cli_search_s=Spread.of([3.0, 2.9, 3.2]),
        work="/w",
        wall_s=90.0,
    )


def _report(results: Any) -> str:
    return render("hanclip serve latency", results, bench.checks(results))


def test_report_shows_every_request_and_the_target() -> None:
    passing = _report(_results(20.0))
    assert re.search(r"\n  PASS +server search p50 +20 ms  <= 50 ms\n", passing)
    assert re.search(r"\ncli over server p50 +150\n", passing)
    for text in ("library photos", "10,000", "real photos", "synthetic photos", "9,988"):
        assert text in passing
    assert re.search(r"\n    similar +similar +5 +", passing)
    assert re.search(r"\n  FAIL \(0\.2% over\) +server search p50", _report(_results(50.1)))


def test_json_keeps_the_figures_under_their_names() -> None:
    results = _results(20.0)
    figures = json.loads(to_json(results, bench.checks(results)))
    assert figures["checks"] == {"search_p50_ms": 20.0} and figures["passed"]["search_p50_ms"]
    similar = next(row for row in figures["server"]["latencies"] if row["key"] == "similar")
    assert similar["ms"]["p50"] == 5.0
    assert figures["cli_search_s"]["p50"] == 3.0 and figures["cli_over_server_p50"] == 150.0
    assert figures["load_average"]["cores_available"] == {"before server": 1.9}


def test_arguments() -> None:
    args = bench.parse_args([])
    assert (args.work, args.photos, args.queries, args.json_path) == (None, 10_000, 100, None)
    args = bench.parse_args(["--work", "w", "--photos", "50", "--queries", "3", "--json", "f"])
    assert (args.work, args.photos, args.queries) == (Path("w"), 50, 3)
    with pytest.raises(SystemExit):
        bench.parse_args(["--queries", str(bench.MAX_QUERIES + 1)])


def test_measures_a_real_server(
    served_library: tuple[Path, Path], _cache_dir: Path, tmp_path: Path
) -> None:
    """The whole measurement against `hanclip serve` on a copy of the 12-photo library (the
    benchmark writes thumbnails into it), three requests of each kind."""
    original, photos = served_library
    library_path = tmp_path / "library"
    shutil.copytree(original, library_path, ignore=shutil.ignore_patterns(THUMBNAILS_DIR))
    library = bench.read_library(library_path, photos.resolve())
    assert len(library.all_ids) == len(library.real_ids) == 12
    filters = [_narrow(str(photos.resolve()))]
    plan = bench.make_plan(3, library.all_ids, library.real_ids[:2], filters, page=4)
    env = serve_env(_cache_dir)
    with running_server(["--library", str(library_path)], env) as server:
        figures = bench.measure_server(server, plan)
    assert figures.ready_s >= figures.announced_s > 0
    assert figures.first_search_ms > 0 and figures.peak_rss_mb > 0
    counts = {row.key: row.ms.count for row in figures.latencies}
    assert counts == {
        "search": 3,
        "filtered_narrow": 3,
        "second_page": 3,
        "similar": 3,
        "thumbnail_first": 2,
        "thumbnail_cached": 2,
    }
    assert all(0 < row.ms.min <= row.ms.p50 <= row.ms.max for row in figures.latencies)
    assert len(list((library_path / THUMBNAILS_DIR).rglob("*.jpg"))) == 2
    report = _report(replace(_results(1.0), server=figures))
    assert "search, filtered in=<folder>" in report
