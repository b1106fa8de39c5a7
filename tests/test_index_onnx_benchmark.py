"""benchmarks/index_onnx.py: one whole run at tiny sizes with the tiny models, and its report.

No speed target is asserted here (the tiny models say nothing about ViT-B/32); what is
asserted is that every figure is measured, that the ratios and PASS/FAIL lines follow from
the reported figures, and that the exported bundle indexes without importing torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from benchkit.figures import Spread, to_json
from benchkit.processes import BenchmarkError
from benchkit.report import render
from benchkit.workspace import IndexWatch
from benchscripts import load_script
from onnxbench import figures as onnx_figures
from onnxbench import index_runs
from onnxbench import run as onnx_run
from onnxbench.bundles import Models


@pytest.fixture(scope="module")
def results(tiny, tmp_path_factory: pytest.TempPathFactory) -> onnx_figures.Results:
    models = Models(tiny.image_spec, tiny.text_dense, None)
    work = tmp_path_factory.mktemp("index-onnx")
    return onnx_run.run_benchmark(
        work, onnx_figures.QUICK, quantize=True, models=models, probe_cores=False
    )


def test_both_backends_measured_and_ratios_follow(results: onnx_figures.Results) -> None:
    s, e, x = results.startup, results.encoder, results.end_to_end
    assert s.onnx.wall_s.count == s.torch.wall_s.count == onnx_figures.QUICK.runs
    assert min(*s.onnx.wall_s.runs, *s.torch.wall_s.runs) > 0
    assert min(*s.onnx.peak_rss_mb.runs, *s.torch.peak_rss_mb.runs) > 0
    assert e.onnx_photos_per_s > 0 and e.torch_photos_per_s > 0
    assert e.ratio == pytest.approx(e.onnx_photos_per_s / e.torch_photos_per_s)
    assert e.onnx_photos_per_s == pytest.approx(e.batch / min(e.onnx_batch_s))
    assert e.min_cosine_photos > 0.999  # the export was verified at 0.999 on other images
    assert x.photos == onnx_figures.QUICK.photos
    assert x.onnx_photos_per_s > 0 and x.torch_photos_per_s > 0
    assert x.ratio == pytest.approx(x.onnx_photos_per_s / x.torch_photos_per_s)
    # Fewer photos than two index batches: no steady rate, said so rather than guessed.
    assert x.steady_ratio is None and x.onnx.steady_photos_per_s is None
    q = results.int8
    assert q is not None and q.photos_per_s > 0
    assert q.ratio_vs_fp32 == pytest.approx(q.photos_per_s / e.onnx_photos_per_s)
    assert q.kept == (q.verify_min_cosine >= 0.99)
    assert (q.message == "") == q.kept


def test_exported_bundle_indexes_without_torch(results: onnx_figures.Results) -> None:
    assert results.startup.onnx_imports_onnxruntime
    assert not results.startup.onnx_imports_torch
    assert not results.startup.onnx_imports_open_clip


def _report(results: onnx_figures.Results) -> str:
    return render("index onnx", results, onnx_figures.checks(results))


def test_report_and_targets_follow_the_figures(results: onnx_figures.Results) -> None:
    report = _report(results)
    s, e = results.startup, results.encoder
    startup, ratio = onnx_figures.checks(results)
    assert startup.passed == (s.onnx.wall_s.p50 <= 1.5)
    assert ratio.passed == (e.ratio >= 1.1)
    # A verdict that fails reads "FAIL (4% short)": its brackets are text, not a group.
    started, sped = re.escape(startup.verdict()), re.escape(ratio.verdict())
    assert re.search(rf"\n  {started} +exported start-up, median +[0-9.]+ s  <= 1.5 s", report)
    assert re.search(rf"\n  {sped} +encoder stage ONNX/torch +{e.ratio:.4g}x  >= 1.1x", report)
    assert re.search(r"\n  onnx imports torch +no\n", report)
    assert re.search(rf"\n  kept +{'yes' if results.int8.kept else 'no'}\n", report)
    # The verdicts flip with the figures, not with anything else.
    slow = replace(results, startup=replace(s, onnx=replace(s.onnx, wall_s=Spread.of([9.0]))))
    assert re.search(r"\n  FAIL \(500% over\) +exported start-up, median +9 s", _report(slow))
    # An encoder stage as fast as torch falls short of 1.1x, whatever this machine measured.
    even = replace(e, onnx_batch_s=e.torch_batch_s)
    short = _report(replace(results, encoder=even))
    assert re.search(r"\n  FAIL \(9% short\) +encoder stage ONNX/torch +1x  >= 1.1x", short)
    figures = json.loads(to_json(results, onnx_figures.checks(results)))
    assert figures["encoder"]["ratio"] == pytest.approx(e.ratio)
    assert figures["startup"]["onnx_imports_torch"] is False


def test_main_exits_nonzero_only_when_a_measurement_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, results: onnx_figures.Results
) -> None:
    script = load_script("index_onnx.py", "index_onnx")
    monkeypatch.setattr(onnx_run, "run_benchmark", lambda *a, **k: results)
    out = tmp_path / "figures.json"
    assert script.main(["--quick", "--work", str(tmp_path), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["sizes"]["photos"] == onnx_figures.QUICK.photos

    def fails(*args: object, **kwargs: object) -> None:
        raise BenchmarkError("index exited 1")

    monkeypatch.setattr(onnx_run, "run_benchmark", fails)
    assert script.main(["--quick", "--work", str(tmp_path)]) == 1


def test_steady_rate_reads_commits_between_batches() -> None:
    watch = IndexWatch(Path("unused.db"))
    assert index_runs.steady_rate(watch, 96) is None
    watch.commits = [(2.0, 32), (3.0, 64), (4.0, 96)]
    assert index_runs.steady_rate(watch, 96) == pytest.approx(32.0)
    assert index_runs.steady_rate(watch, 100) is None  # the last commit is not every photo
