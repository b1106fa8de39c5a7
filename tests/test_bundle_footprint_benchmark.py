"""benchmarks/bundle_footprint.py: one whole run with the tests' tiny models, and its report.

No size or memory target is asserted here (the tiny models say nothing of ViT-B/32); what
is asserted is that every file of the bundle is counted, that what was measured is the
one-graph layout, and that the targets' lines follow from the reported figures.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from benchkit.report import render
from benchscripts import load_script

MIB = 1024**2


@pytest.fixture(scope="module")
def footprint(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, object]:
    script = load_script("bundle_footprint.py", "bundle_footprint")
    return script, script.run_benchmark(tmp_path_factory.mktemp("footprint"), 1, tiny=True)


def test_every_file_of_the_bundle_is_counted(footprint) -> None:
    _, results = footprint
    bundle = Path(results.bundle)
    on_disk = {
        str(p.relative_to(bundle)): p.stat().st_size for p in bundle.rglob("*") if p.is_file()
    }
    assert {f.path: f.size_bytes for f in results.files} == on_disk
    assert results.total_bytes == sum(on_disk.values())
    assert not [path for path in on_disk if "optimized" in path]  # one graph per encoder
    assert results.token_table in results.token_table_cosines


def test_index_and_session_openings_are_measured(footprint) -> None:
    _, results = footprint
    index = results.index
    for spread in (index.fresh_peak_rss_bytes, index.noop_peak_rss_bytes):
        assert spread.count == 1 and spread.min > 0
    assert [o.encoder for o in results.openings] == ["image", "text"]
    for opening in results.openings:
        assert opening.stored_open_s.min > 0 and opening.preoptimized_open_s.min > 0
        assert opening.preoptimized_copy_bytes > 0


def test_each_graph_form_is_measured_against_a_float32_copy(footprint) -> None:
    _, results = footprint
    assert [g.encoder for g in results.graph_weights] == ["image", "text"]
    for graph in results.graph_weights:
        assert graph.kept == "float16"  # the tiny models verify in float16
        assert graph.cosines["float16"] >= (0.9999 if graph.encoder == "image" else 0.999)
        assert graph.float32_graph_bytes > 1.5 * graph.stored_graph_bytes
        assert graph.rows == (32 if graph.encoder == "image" else 1)
        for spread in (graph.stored_open_s, graph.float32_warm_run_s, graph.stored_first_run_s):
            assert spread.count == 1 and spread.min > 0
    assert results.model == "vit-b32-minilm-l12"


def test_the_targets_follow_from_the_figures(footprint) -> None:
    script, results = footprint
    checks = script.checks(results)
    assert [c.value for c in checks] == [
        results.total_bytes / MIB,
        results.index.fresh_peak_rss_bytes.max / MIB,
        results.index.noop_peak_rss_bytes.max / MIB,
    ]
    assert [c.target.limit for c in checks] == [578.0, 441.0, 441.0]
    report = render("footprint", results, checks)
    met = sum(bool(c.passed) for c in checks)
    assert f"Targets: {met} of 3 met" in report
    assert "encoders/image/encoder.onnx.data" in report
