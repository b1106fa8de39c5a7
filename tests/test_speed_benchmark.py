"""benchmarks/speed.py: its measurements run and its report shows every section and target.

No timing target is asserted here; the targets live in the benchmark. A real `--quick` run
spawns `hanclip index` and `search` processes that import torch, open_clip and
sentence-transformers, plus a one-time text-encoder export, which is slow even with tiny
models. So these tests run every in-process measurement for real on the tiny test bundle
and small inputs, and drive the command-timing code with a stand-in for the spawned
commands; `run_process` and the naive search are tested on their own.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchkit import environment, inputs, processes, workspace
from benchkit.figures import Check, to_json
from benchkit.report import render
from benchkit.vectors import unit_vectors
from benchscripts import load_script
from speedbench import accuracy, ceiling, hnsw, index, naive, search, settings, targets
from speedbench.results import (
    BenchmarkResults,
    BundleInfo,
    Int8Accuracy,
    OneTime,
    ceiling_given_others,
    per_round,
)

from hanclip_model.bundle import read_bundle
from hanclip_model.device import usable_cores

SECTIONS = (
    "hanclip speed benchmark",
    "\nload average\n",
    "\none time\n",
    "\nsearch\n",
    "\nindex\n",
    "\nceiling\n",
    "\n  ceiling photos   ",
    "\n  naive photos   ",
    "\nhnsw\n",
    "\n  filtered\n",
    "    strategy  exact",
    "\naccuracy\n",
    "\nratios\n",
    "\nTargets: ",
)
IMPORT_LOG = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 |   _io
import time:       200 |        300 | site
import time:        50 |     150000 |     numpy._core
import time:      1000 |     200000 |   numpy
import time:      2000 |     250000 | hanclip_cli.app
import time:       500 |      50000 | onnxruntime
"""
TINY_SIZES = dict(photos=2, library=60, hnsw_vectors=600, hnsw_queries=20, hnsw_clusters=6)


@dataclass
class FakeWorkspace:
    """Stands in for the spawned commands: canned, plausible results, no processes."""

    root: Path
    bundle: Path
    calls: list[str] = field(default_factory=list)

    def fresh(self, name: str) -> Path:
        return self.root / "runs" / name

    def _run(self, kind: str, stdout: str, wall_s: float, stderr: str = "") -> Any:
        self.calls.append(kind)
        return processes.ProcessRun(wall_s, wall_s * 0.9, 300 * 1024**2, stdout, stderr)

    def index(
        self, folder: Path, library: Path, device: str | None = "cpu", options: Any = ()
    ) -> Any:
        # The index figures are about embedding: the text pass is measured on its own.
        assert tuple(options) == workspace.EMBEDDING_ONLY
        photos = len(list(folder.iterdir()))
        done = self._run("index", json.dumps({"added": photos, "failed": 0}), 5.0 + photos)
        watch = workspace.IndexWatch(library / "library.db", 4.0, [(4.5 + photos, photos)])
        return done, watch

    def search(self, query: str, library: Path) -> Any:
        return self._run("search", json.dumps([{"rank": i} for i in range(1, 11)]), 0.5)

    def with_import_log(self, *args: str) -> Any:
        return self._run("imports", "[]", 0.6, stderr=IMPORT_LOG)

    def naive_search(self, query: str, vectors: Path, paths: Path) -> Any:
        assert np.load(vectors).shape[0] == TINY_SIZES["library"]
        return self._run("naive", "", 9.0)


@dataclass(frozen=True)
class Measured:
    results: BenchmarkResults
    calls: list[str]  # the stand-in commands, in the order the benchmark ran them


@pytest.fixture(scope="module")
def measured(tiny, tmp_path_factory: pytest.TempPathFactory) -> Measured:
    """One benchmark's figures: real in-process measurements, stand-in commands."""
    work = tmp_path_factory.mktemp("speed")
    env = workspace.isolated_env(work)
    with pytest.MonkeyPatch.context() as patch:
        for key in workspace.ISOLATED_KEYS:  # the fast-text export goes to the work dir's cache
            patch.setenv(key, env[key])
        return _measure(tiny.heads_bundle, work)


def _measure(bundle: Path, work: Path) -> Measured:
    sizes = settings.Sizes(**TINY_SIZES, runs=2)
    photos = inputs.ensure_photos(work / "photos", sizes.photos, (320, 240))
    library = work / "runs" / "search-library"
    _seed_library(library, bundle, photos[0])
    inputs.fill_library(library, sizes.library)
    ws = FakeWorkspace(work, bundle)
    spec = read_bundle(bundle)
    clip = ceiling.load_clip(spec.image_model)
    rounds = index.measure_index(ws, photos, sizes.runs, clip)
    results = BenchmarkResults(
        environment=environment.environment(usable_cores()),
        bundle=BundleInfo.of(spec),
        sizes=sizes,
        one_time=OneTime(
            bundle="given",
            bundle_s=0.0,
            photos_generated=2,
            photos_s=1.0,
            photo_mean_mb=0.1,
            first_index_s=20.0,
            fast_text_export_s=13.0,
        ),
        load_average=processes.LoadSummary(
            cores_available={"before commands": 1.9, "end": 1.5},
            at_start_1_5_15=(1.0, 1.0, 1.0),
            at_end_1_5_15=(1.0, 1.0, 1.0),
            during_1min_min=1.0,
            during_1min_median=1.0,
            during_1min_max=1.0,
        ),
        search=search.measure_search(ws, library, sizes),
        index=rounds.index,
        ceiling=rounds.ceiling,
        index_cuda=None,
        hnsw=hnsw.measure_hnsw(sizes),
        accuracy=accuracy.measure_accuracy(spec, clip, photos),
        work=str(work),
        wall_s=60.0,
    )
    return Measured(results, ws.calls)


def _seed_library(library: Path, bundle: Path, photo: Path) -> None:
    """A library with one really embedded photo, as the first `hanclip index` leaves it."""
    from hanclip_library.store import NewPhoto, PhotoStore
    from hanclip_model import load_bundle

    library.mkdir(parents=True)
    raw = load_bundle(bundle).raw_image_embeddings([photo])[0]
    store = PhotoStore(library)
    store.add_photos([NewPhoto(str(photo), 1, 1, "0" * 64, 320, 240, None, raw)])
    store.close()


def test_every_target_is_measured(measured: Measured) -> None:
    checks = targets.checks(measured.results)
    assert {c.target for c in checks} == set(targets.TARGETS)
    assert all(np.isfinite(c.value) for c in checks)
    assert measured.calls.count("index") == 4  # start-up and photos, two runs each
    assert measured.calls.count("search") == 3  # one warm-up and two timed
    assert measured.calls.count("naive") == 2
    assert measured.results.search.imports_s == pytest.approx(0.3003)


def test_in_process_figures(measured: Measured) -> None:
    results = measured.results
    limits, text, vectors = results.ceiling, results.accuracy.fast_text, results.hnsw
    assert limits.ceiling_photos_per_s.min > 0 and limits.naive_photos_per_s.min > 0
    assert limits.ceiling_photos_per_s.count == limits.naive_photos_per_s.count == 2  # per round
    # The tiny bundle's ONNX export and heads are exact; the figures must say so.
    assert text.sentences == len(settings.SENTENCES)
    assert text.one_at_a_time.min > 0.999
    assert results.accuracy.heads is not None and results.accuracy.heads.image.min > 0.999
    assert results.accuracy.draft_decode.photos == 2
    assert vectors.vectors == TINY_SIZES["hnsw_vectors"]
    assert 0 <= vectors.random.recall_at_10 <= 1
    assert vectors.clustered.recall_at_10 > 0.9
    # A filter keeping one month in a hundred: 6 of 600, every query gets all 6 of them.
    assert vectors.filtered.passing == TINY_SIZES["hnsw_vectors"] // 100
    assert vectors.filtered.share == pytest.approx(0.01)
    assert vectors.filtered.complete == 1.0
    assert vectors.filtered.p95_ms >= vectors.filtered.p50_ms > 0


def _report(results: BenchmarkResults) -> str:
    return render("hanclip speed benchmark", results, targets.checks(results))


def test_report_shows_every_section_and_target(measured: Measured) -> None:
    text = _report(measured.results)
    for section in SECTIONS:
        assert section in text, section
    target_lines = text.split("\nTargets: ")[1].splitlines()[1:]
    assert len(target_lines) == len(targets.TARGETS)
    assert all(line.split()[0] in ("PASS", "FAIL") for line in target_lines)


def test_json_keeps_the_figures_under_their_names(measured: Measured) -> None:
    checks = targets.checks(measured.results)
    figures = json.loads(to_json(measured.results, checks))
    assert set(figures["checks"]) == {t.key for t in targets.TARGETS}
    assert figures["search"]["ours_wall_s"]["p50"] == measured.results.search.ours_wall_s.p50
    naive_runs = measured.results.ceiling.naive_photos_per_s.runs
    assert figures["ceiling"]["naive_photos_per_s"]["runs"] == list(naive_runs)
    assert figures["accuracy"]["fast_text"]["one_at_a_time"]["min"] > 0.999
    assert figures["hnsw"]["clustered"]["recall_at_10"] > 0.9
    assert figures["checks"]["filtered_p50_ms"] == measured.results.hnsw.filtered.p50_ms
    assert figures["sizes"]["library"] == TINY_SIZES["library"]


def test_naive_search_prints_ten_hits(tiny, tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    vectors = unit_vectors(rng, 40, 16)  # the tiny heads project to 16-d
    np.save(tmp_path / "v.npy", vectors)
    np.save(tmp_path / "p.npy", np.array([f"/p/{i}.jpg" for i in range(40)]))
    naive.naive_search(str(tiny.heads_bundle), tmp_path / "v.npy", tmp_path / "p.npy", "노을")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[0].split()[0] == "1"


def test_entry_script_keeps_its_options() -> None:
    script = load_script("speed.py", "speed_entry")
    args = script.parse_args(["--quick", "--runs", "2", "--photos", "0", "--json", "f.json"])
    assert script.sizes_from(args) == replace(settings.QUICK, runs=2, photos=1)
    assert args.json_path == Path("f.json") and args.work is None and args.bundle is None
    assert script.sizes_from(script.parse_args([])) == settings.FULL


def test_import_seconds_sums_the_top_level_imports() -> None:
    assert search.import_seconds(IMPORT_LOG) == pytest.approx(0.3003)
    assert search.import_seconds("no log here\n[]") == 0.0


def test_ceiling_formula() -> None:
    # 2 cores, 0.04 core-s decode + 0.21 core-s model per photo: 8 photos/s.
    assert ceiling.machine_ceiling(2, 0.04, 0.21) == pytest.approx(8.0)


def test_recall_counts_set_overlap() -> None:
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = [[4, 3, 2, 1], [5, 6, 0, 9]]  # order does not matter; the second is half right
    assert hnsw.recall_at_k(found, exact) == pytest.approx(0.75)


def test_exact_top_k_matches_a_full_sort() -> None:
    rng = np.random.default_rng(0)
    base, queries = unit_vectors(rng, 300, 16), unit_vectors(rng, 7, 16)
    got = hnsw.exact_top_k(base, queries, 5, chunk=3)
    want = np.argsort(-(queries @ base.T), axis=1)[:, :5]
    assert [sorted(row) for row in got.tolist()] == [sorted(row) for row in want.tolist()]


def test_checks_say_pass_or_by_how_much_they_fail() -> None:
    assert Check.of(targets.SEARCH_WALL_S, 0.8).verdict() == "PASS"
    assert Check.of(targets.SEARCH_WALL_S, 1.25).verdict() == "FAIL (25% over)"
    assert Check.of(targets.INDEX_VS_CEILING, 0.68).verdict() == "FAIL (20% short)"
    assert Check.of(targets.HNSW_RECALL, None).verdict() == "n/a"


def test_run_process_measures_the_child_alone() -> None:
    ballast = np.ones(64 * 1024**2 // 8)  # this process grows; the child must not inherit it
    child = processes.run_process([sys.executable, "-c", "print('ok')"], {"PATH": "/usr/bin:/bin"})
    assert child.stdout == "ok\n"
    assert ballast.nbytes == 64 * 1024**2 and child.peak_rss_bytes < 48 * 1024**2
    assert child.wall_s > 0 and child.cpu_s > 0


def test_index_watch_times_the_embedding_phase(tmp_path: Path) -> None:
    from hanclip_library.store import PhotoStore

    watch = workspace.IndexWatch(tmp_path / "library.db")
    pid = os.getpid()
    watch(1.0, pid)  # no database yet: still starting up
    store = PhotoStore(tmp_path)
    watch(2.0, pid)  # the library is opened
    watch(2.5, pid)  # open, nothing committed
    store.add_photos([_photo(i) for i in range(3)])
    watch(3.0, pid)
    store.add_photos([_photo(3)])
    watch(3.5, pid)
    store.close()
    assert watch.opened_s == 2.0 and watch.commits == [(3.0, 3), (3.5, 4)]
    assert watch.others_cores() is not None and watch.others_cores() >= 0
    assert watch.phase_s(4, wall_s=9.0) == pytest.approx(1.5)
    assert watch.phase_s(5, wall_s=9.0) == pytest.approx(7.0)  # missed: up to the exit


def test_steady_state_starts_after_the_first_full_batch() -> None:
    commits = [(10.0, 20), (10.1, 32), (12.0, 64), (14.1, 96)]
    watch = workspace.IndexWatch(Path("library.db"), 5.0, commits)
    assert watch.steady_photos_per_s(96, batch=32) == pytest.approx(64 / 4.0)
    assert watch.steady_photos_per_s(48, batch=32) is None  # a partial batch would flatter it
    assert watch.phase_s(96, wall_s=20.0) == pytest.approx(9.1)


def _photo(i: int) -> Any:
    from hanclip_library.store import NewPhoto

    return NewPhoto(f"/p/{i}.jpg", 1, 1, f"{i:064x}", 1, 1, None, np.zeros(4, np.float32))


def test_run_process_calls_its_watch_while_the_command_runs() -> None:
    seen: list[float] = []
    pids: set[int] = set()

    def watch(elapsed_s: float, pid: int) -> None:
        seen.append(elapsed_s)
        pids.add(pid)

    processes.run_process([sys.executable, "-c", "import time; time.sleep(0.3)"], {}, watch)
    assert len(seen) >= 2 and seen == sorted(seen) and len(pids) == 1


def test_others_cores_is_machine_time_less_ours() -> None:
    start = processes.CpuSample(machine_s=100.0, command_s=10.0, own_s=1.0)
    end = processes.CpuSample(machine_s=106.0, command_s=13.5, own_s=1.5)
    assert processes.others_cores(start, end, wall_s=2.0) == pytest.approx(1.0)


def test_ceiling_given_others_scales_by_free_cores() -> None:
    rates, ceilings, others = [4.0, 6.0, 3.0], [8.0, 8.0, 6.0], [1.0, 0.0, None]
    # Round 1 had one core of two: ceiling 4 -> 1.0; round 2 all: 6/8; round 3 unknown.
    scaled = ceiling_given_others(rates, ceilings, others, cores=2)
    assert scaled == pytest.approx((1.0 + 0.75) / 2)


def test_ratios_are_taken_within_each_round() -> None:
    assert per_round([4.0, 9.0, 5.0], [8.0, 9.0, 4.0]) == pytest.approx(1.0)
    assert per_round([None, 9.0], [8.0, 9.0]) is None


def test_cores_available_counts_what_busy_loops_got() -> None:
    assert 0 < processes.cores_available(1, seconds=0.2) <= 1.05


def test_run_process_reports_a_failed_command() -> None:
    with pytest.raises(processes.BenchmarkError, match="exited 3"):
        processes.run_process([sys.executable, "-c", "import sys; sys.exit(3)"], {})


def test_a_dropped_int8_path_is_reported_without_a_target(measured: Measured) -> None:
    results = measured.results
    text = results.accuracy.fast_text
    assert text.int8.gate_cosine is not None
    assert text.int8.kept == (text.int8.gate_cosine >= 0.99)
    dropped = replace(text, int8=Int8Accuracy(gate_cosine=0.95, kept=False))
    results = replace(results, accuracy=replace(results.accuracy, fast_text=dropped))
    assert targets.TEXT_INT8_COSINE not in {c.target for c in targets.checks(results)}
    shown = _report(results)
    assert re.search(r"gate cosine +0\.95\n +kept +no\n", shown)
    assert targets.TEXT_INT8_COSINE.label not in shown
