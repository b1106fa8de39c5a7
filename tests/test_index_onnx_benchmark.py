"""benchmarks/index_onnx.py: one whole run at tiny sizes with the tiny models, and its report.

No speed target is asserted here (the tiny models say nothing about ViT-B/32); what is
asserted is that every figure is measured, that the ratios and PASS/FAIL lines follow from
the reported figures, and that the exported bundle indexes without importing torch.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from benchscripts import load_script
from speedbench import onnx_index


@pytest.fixture(scope="module")
def results(tiny, tmp_path_factory: pytest.TempPathFactory) -> onnx_index.Results:
    models = onnx_index.Models(tiny.image_spec, tiny.text_dense, None)
    work = tmp_path_factory.mktemp("index-onnx")
    return onnx_index.run_benchmark(
        work, onnx_index.QUICK, quantize=True, models=models, probe_cores=False
    )


def test_both_backends_measured_and_ratios_follow(results: onnx_index.Results) -> None:
    s, e, x = results.startup, results.encoder, results.end_to_end
    assert len(s.onnx_wall_s) == len(s.torch_wall_s) == onnx_index.QUICK.runs
    assert min(*s.onnx_wall_s, *s.torch_wall_s, s.onnx_median_s, s.torch_median_s) > 0
    assert min(*s.onnx_peak_rss_mb, *s.torch_peak_rss_mb) > 0
    assert e.onnx_photos_per_s > 0 and e.torch_photos_per_s > 0
    assert e.ratio == pytest.approx(e.onnx_photos_per_s / e.torch_photos_per_s)
    assert e.onnx_photos_per_s == pytest.approx(e.batch / min(e.onnx_batch_s))
    assert e.min_cosine_photos > 0.999  # the export was verified at 0.999 on other images
    assert x.photos == onnx_index.QUICK.photos
    assert x.onnx_photos_per_s > 0 and x.torch_photos_per_s > 0
    assert x.ratio == pytest.approx(x.onnx_photos_per_s / x.torch_photos_per_s)
    # Fewer photos than two index batches: no steady rate, said so rather than guessed.
    assert x.steady_ratio is None and x.onnx_steady_photos_per_s is None
    q = results.int8
    assert q is not None and q.photos_per_s > 0
    assert q.ratio_vs_fp32 == pytest.approx(q.photos_per_s / e.onnx_photos_per_s)
    assert q.kept == (q.verify_min_cosine >= 0.99)
    assert (q.message == "") == q.kept


def test_exported_bundle_indexes_without_torch(results: onnx_index.Results) -> None:
    assert results.startup.onnx_imports_onnxruntime
    assert not results.startup.onnx_imports_torch
    assert not results.startup.onnx_imports_open_clip


def test_report_and_targets_follow_the_figures(results: onnx_index.Results) -> None:
    report = onnx_index.format_report(results)
    s, e = results.startup, results.encoder
    assert s.passed == (s.onnx_median_s <= onnx_index.STARTUP_TARGET_S)
    assert e.passed == (e.ratio >= onnx_index.RATIO_TARGET)
    assert f"start-up <= 1.5 s: {'PASS' if s.passed else 'FAIL'}" in report
    assert f"ONNX/torch >= 1.1x: {'PASS' if e.passed else 'FAIL'} ({e.ratio:.2f}x" in report
    assert "exported run imported torch: no" in report
    assert ("KEPT" if results.int8.kept else "REFUSED") in report
    # The verdicts flip with the figures, not with anything else.
    slow = replace(results, startup=replace(s, onnx_median_s=9.0, passed=False))
    assert "start-up <= 1.5 s: FAIL (9.00 s)" in onnx_index.format_report(slow)
    figures = json.loads(onnx_index.figures_json(results))
    assert figures["encoder"]["ratio"] == pytest.approx(e.ratio)
    assert figures["startup"]["onnx_imports_torch"] is False


def test_main_exits_nonzero_only_when_a_measurement_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, results: onnx_index.Results
) -> None:
    script = load_script("index_onnx.py", "index_onnx")
    monkeypatch.setattr(onnx_index, "run_benchmark", lambda *a, **k: results)
    out = tmp_path / "figures.json"
    assert script.main(["--quick", "--work", str(tmp_path), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["sizes"]["photos"] == onnx_index.QUICK.photos

    def fails(*args: object, **kwargs: object) -> None:
        raise onnx_index.BenchmarkError("index exited 1")

    monkeypatch.setattr(onnx_index, "run_benchmark", fails)
    assert script.main(["--quick", "--work", str(tmp_path)]) == 1


def test_steady_rate_reads_commits_between_batches() -> None:
    watch = onnx_index.IndexWatch(Path("unused.db"))
    assert onnx_index.steady_rate(watch, 96) is None
    watch.commits = [(2.0, 32), (3.0, 64), (4.0, 96)]
    assert onnx_index.steady_rate(watch, 96) == pytest.approx(32.0)
    assert onnx_index.steady_rate(watch, 100) is None  # the last commit is not every photo
