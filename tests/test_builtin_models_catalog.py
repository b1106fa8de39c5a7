"""The catalog of published Korean figures, the measured costs, the default-model rule, and
what `hanclip models` shows of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hanclip_model.bundle import SEARCH_BUILTINS
from hanclip_model.catalog import (
    CATALOG,
    CROSSMODAL3600,
    XTD10,
    MeasuredCost,
    MeasuredCosts,
    pick_default,
    read_measured,
)


def _cost(photos_per_s: float, query_ms: float) -> MeasuredCost:
    return MeasuredCost(photos_per_s, query_ms, 1.0, 500.0, 400.0, 600.0)


def test_every_search_built_in_has_an_entry_with_sources():
    assert set(CATALOG) == set(SEARCH_BUILTINS)
    for entry in CATALOG.values():
        assert entry.figures or entry.note
        for figure in entry.figures:
            assert figure.dataset in (XTD10, CROSSMODAL3600) and 0 < figure.value <= 100
            assert figure.source
            if figure.recalls:  # a mean is the mean of its published recalls
                assert figure.value == pytest.approx(sum(figure.recalls) / 3, abs=0.05)
    assert CATALOG["mclip"].figures == () and "none published" in CATALOG["mclip"].note
    assert CATALOG["xlmr-b32"].figure(XTD10).value == 84.1
    assert CATALOG["nllb-siglip-large"].figure(CROSSMODAL3600).value == 77.2


def test_the_rule_takes_the_best_figure_within_the_cost_limits():
    costs = {
        "mclip": _cost(10.0, 10.0),
        "xlmr-b32": _cost(10.0, 20.0),  # 1.0x, eligible
        "siglip2-b32": _cost(8.0, 30.0),  # 1.25x, eligible, a better figure
        "siglip2-b16": _cost(5.0, 30.0),  # 2x: too slow to index
        "nllb-siglip-base": _cost(9.0, 60.0),  # query too slow
        "nllb-siglip-large": _cost(1.0, 200.0),
    }
    pick = pick_default(CATALOG, MeasuredCosts("test", costs))
    assert pick.model == "siglip2-b32"
    assert "2.00x" in pick.reasons["siglip2-b16"] and "60.0 ms" in pick.reasons["nllb-siglip-base"]
    assert "eligible" in pick.reasons["xlmr-b32"] and "no published" in pick.reasons["mclip"]
    assert "1.3x" in pick.rule and "50 ms" in pick.rule
    # At exactly 1.3x an index is still cheap enough; a query at 50 ms is not.
    costs["siglip2-b32"] = _cost(10.0 / 1.3, 49.9)
    assert pick_default(CATALOG, MeasuredCosts("test", costs)).model == "siglip2-b32"
    costs["siglip2-b32"] = _cost(10.0 / 1.3, 50.0)
    assert pick_default(CATALOG, MeasuredCosts("test", costs)).model == "xlmr-b32"


def test_without_measured_costs_the_baseline_stays():
    assert pick_default(CATALOG, None).model == "mclip"
    only_new = MeasuredCosts("test", {"xlmr-b32": _cost(10.0, 10.0)})
    assert pick_default(CATALOG, only_new).model == "mclip"
    slow = {name: _cost(1.0, 500.0) for name in CATALOG}
    slow["mclip"] = _cost(10.0, 10.0)
    assert pick_default(CATALOG, MeasuredCosts("test", slow)).model == "mclip"


def test_measured_costs_read_back_and_a_bad_file_is_none(tmp_path):
    path = tmp_path / "costs.json"
    assert read_measured(path) is None
    path.write_text("{not json", encoding="utf-8")
    assert read_measured(path) is None
    row = vars(_cost(12.5, 20.0))
    path.write_text(json.dumps({"machine": "m", "models": {"mclip": row}}), encoding="utf-8")
    measured = read_measured(path)
    assert measured.machine == "m" and measured.costs["mclip"].index_photos_per_s == 12.5


# -- hanclip models ---------------------------------------------------------------------------


@pytest.fixture
def measured_file(monkeypatch, tmp_path) -> Path:
    from hanclip_model import catalog

    path = tmp_path / "measured_costs.json"
    models = {name: vars(_cost(10.0, 20.0)) for name in CATALOG}
    path.write_text(json.dumps({"machine": "test box", "models": models}), encoding="utf-8")
    monkeypatch.setattr(catalog, "MEASURED_PATH", path)
    monkeypatch.setattr(catalog.read_measured, "__defaults__", (path,))
    return path


def test_models_json_adds_published_and_measured(cli, library, measured_file):
    result = cli("models", "--library", library, "--json")
    assert result.exit_code == 0, result.stderr
    entries = {e["name"]: e for e in result.json() if e["kind"] == "built-in"}
    assert set(entries) == set(SEARCH_BUILTINS)
    # The fields it always had are all still there.
    old = {"name", "kind", "path", "image_model", "text_model", "language", "trained_on"}
    assert all(old <= set(e) for e in entries.values())
    xlmr = entries["xlmr-b32"]
    figures = {f["dataset"]: f for f in xlmr["published"]["figures"]}
    assert figures["xtd10"]["value"] == 84.1 and "open_clip" in figures["xtd10"]["source"]
    assert figures["crossmodal3600"]["recalls"] == [43.5, 71.7, 81.1]
    assert xlmr["measured"]["index_photos_per_s"] == 10.0
    assert xlmr["measured"]["machine"] == "test box"
    assert entries["mclip"]["published"]["figures"] == []
    assert "none published" in entries["mclip"]["published"]["note"]


def test_models_table_shows_figures_and_costs(cli, library, measured_file):
    result = cli("models", "--library", library)
    assert result.exit_code == 0, result.stderr
    assert "XM3600 65.4" in result.stdout and "XTD10 R@10 84.1" in result.stdout
    assert "none published" in result.stdout  # mclip
    assert "10.0 photos/s" in result.stdout and "test box" in result.stdout
    assert "own text tower" in result.stdout


def test_models_without_a_measured_file(cli, library, monkeypatch, tmp_path):
    from hanclip_model import catalog

    monkeypatch.setattr(catalog.read_measured, "__defaults__", (tmp_path / "none.json",))
    result = cli("models", "--library", library, "--json")
    assert result.exit_code == 0, result.stderr
    assert all(e["measured"] is None for e in result.json())


# -- the default model of a new library --------------------------------------------------------


def test_a_new_library_takes_the_rules_pick(measured_file, tmp_path):
    from hanclip_library.library import choose_model, default_model

    costs = {name: vars(_cost(1.0, 500.0)) for name in CATALOG}
    costs["mclip"] = vars(_cost(10.0, 10.0))
    costs["xlmr-b32"] = vars(_cost(10.0, 20.0))
    measured_file.write_text(json.dumps({"machine": "m", "models": costs}), encoding="utf-8")
    assert default_model() == "xlmr-b32"
    choice = choose_model(None, tmp_path / "new-library")
    assert choice.model == "xlmr-b32" and "xlmr-b32" in choice.notice
    measured_file.unlink()
    assert default_model() == "mclip"


def test_a_library_keeps_its_model_when_the_default_changes(
    cli, tiny, photos, library, monkeypatch
):
    from hanclip_library import library as library_module
    from hanclip_library.library import Library, choose_model
    from hanclip_model.encoders import ClipEncoder
    from hanclip_model.fast_image.runtime import FastImageEncoder

    old, new = str(tiny.plain_bundle), str(tiny.heads_bundle)
    monkeypatch.setattr(library_module, "default_model", lambda: old)
    index = cli("index", photos, "--library", library, "--json")  # no --model: the default
    assert index.exit_code == 0, index.stderr
    assert index.json()["added"] == 8

    monkeypatch.setattr(library_module, "default_model", lambda: new)
    assert choose_model(None, library.parent / "another").model == new  # a new library

    def refuse(self, images, batch_size=32):
        raise AssertionError("the library's photos were embedded again")

    monkeypatch.setattr(ClipEncoder, "embed_images", refuse)
    monkeypatch.setattr(FastImageEncoder, "embed", refuse)
    search = cli("search", "바다 위 노을", "--library", library, "--json")
    assert search.exit_code == 0, search.stderr
    assert len(search.json()) == 8 and "no model given" not in search.stderr
    again = cli("index", photos, "--library", library, "--json")
    assert again.exit_code == 0, again.stderr
    assert again.json()["added"] == 0
    with Library(library, create=False) as opened:
        assert opened.meta.model == old


# -- bench -------------------------------------------------------------------------------------


def test_bench_compares_every_built_in_by_default():
    from hanclip_cli.commands.bench import BASELINES

    assert set(SEARCH_BUILTINS) <= set(BASELINES)
    assert BASELINES[-2:] == ("clip-translate", "koclip")


@pytest.mark.parametrize(
    ("dataset", "here", "published"),
    [("xtd10-ko", "80.0", "84.1"), ("crossmodal3600", "60.0", "65.4")],
)
def test_bench_markdown_puts_the_published_figure_beside_the_measured(
    capsys, dataset, here, published
):
    from hanclip_cli.commands.bench import BenchResult, render_bench
    from hanclip_eval.runner import BenchRow

    metrics = {key: 0.5 for key in ("i2t_r1", "i2t_r5", "i2t_r10", "i2t_rprec", "t2i_rprec")}
    metrics |= {"t2i_r1": 0.4, "t2i_r5": 0.6, "t2i_r10": 0.8, "rsum": 300.0}
    rows = [BenchRow("xlmr-b32", dict(metrics)), BenchRow("/tmp/mine", dict(metrics))]
    result = BenchResult(dataset, "retrieval", None, {"images": 10, "captions": 10}, rows)
    render_bench(result, json_output=False, markdown=True)
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| model |"))
    assert header.endswith("here | published |")
    xlmr = next(line for line in out.splitlines() if line.startswith("| xlmr-b32 |"))
    assert xlmr.endswith(f"| {here} | {published} |")
    mine = next(line for line in out.splitlines() if line.startswith("| mine |"))
    assert mine.endswith("| — |") and "published: open_clip" in out
    # A data set without published figures, or no model with one: the table as it was.
    result = BenchResult(dataset, "retrieval", None, {}, [BenchRow("/tmp/mine", dict(metrics))])
    render_bench(result, json_output=False, markdown=True)
    assert "published" not in capsys.readouterr().out
