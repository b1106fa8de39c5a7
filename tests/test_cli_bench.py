"""`hanclip bench` end to end: tiny models against a tiny dataset in every supported format.

The baselines load tiny stand-ins through the same code users run: HANCLIP_CLIP_MODEL,
HANCLIP_TRANSLATOR_MODEL and HANCLIP_KOCLIP_MODEL point at directories built here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from benchdata import WRITERS
from tinybaselines import build_tiny_koclip, build_tiny_nllb

import hanclip_eval.runner
from hanclip_eval.datasets import DATASETS, RetrievalSet, load_dataset

RECALL_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
RETRIEVAL_FRACTIONS = (*RECALL_KEYS, "i2t_rprec", "t2i_rprec")
CLASSIFICATION_FRACTIONS = ("accuracy", "macro_f1")
# The metrics a table shows, in its column order.
SHOWN = {
    "retrieval": (*RECALL_KEYS, "rsum", "i2t_rprec", "t2i_rprec"),
    "classification": CLASSIFICATION_FRACTIONS,
}
RETRIEVAL_HEADER = ["model", "I→T R@1", "R@5", "R@10", "T→I R@1", "R@5", "R@10", "RSUM"]
RETRIEVAL_HEADER += ["I→T R-P", "T→I R-P"]
CLASSIFICATION_HEADER = ["model", "accuracy", "macro-F1"]
# Every model on two retrieval sets and one classification set; the two tiny bundles
# elsewhere (the tiny translator generates 64 tokens per text: that is what makes a run slow).
ALL_MODEL_SETS = ("mscoco-ko", "xtd10-ko", "cifar10")
# The file each reader names when a data directory is empty.
EXPECTED_FILE = {
    "mscoco-ko": "MSCOCO_train_val_Korean.json",
    "xtd10-ko": "test_1kcaptions_ko.txt",
    "crossmodal3600": "captions.jsonl",
    "kocc3m": "kocc3m*.parquet",
    "jsonl": "captions.jsonl",
    "cifar10": "test_batch not found in {data_dir}/cifar-10-batches-py",
    "cifar100": "test not found in {data_dir}/cifar-100-python",
    "stl10": "test_X.bin",
    "caltech101": "101_ObjectCategories/",
}


@dataclass(frozen=True)
class TinyBaselines:
    translator: Path
    koclip: Path


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """Models this small gain nothing from two threads, and on a busy machine the hand-offs
    between them cost more than the arithmetic (the tiny translator runs 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def baselines(tmp_path_factory: pytest.TempPathFactory) -> TinyBaselines:
    return TinyBaselines(
        translator=build_tiny_nllb(tmp_path_factory.mktemp("nllb")),
        koclip=build_tiny_koclip(tmp_path_factory.mktemp("koclip")),
    )


@pytest.fixture(autouse=True)
def baseline_env(tiny, baselines: TinyBaselines, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANCLIP_CLIP_MODEL", tiny.image_spec)
    monkeypatch.setenv("HANCLIP_TRANSLATOR_MODEL", str(baselines.translator))
    monkeypatch.setenv("HANCLIP_KOCLIP_MODEL", str(baselines.koclip))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-data")


def data_dir(root: Path, name: str) -> Path:
    """`name`'s tiny dataset under `root`, written on first use."""
    directory = root / name
    if name == "kocc3m":
        pytest.importorskip("pyarrow")
    if not directory.exists():
        WRITERS[name](directory)
    return directory


def model_args(models: list[str]) -> list[str]:
    return [arg for model in models for arg in ("--model", model)]


def display_name(model: str) -> str:
    """What the table calls a model: a bundle by its folder name."""
    return Path(model).name


def one_error_line(result) -> str:
    """The error of a failed run: exit code 2 and one non-blank line on stderr."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def check_metrics(kind: str, metrics: dict[str, float], size: dict[str, int]) -> None:
    """Every metric of `kind` present, finite, and in its range."""
    fractions = RETRIEVAL_FRACTIONS if kind == "retrieval" else CLASSIFICATION_FRACTIONS
    counts = ("n_images", "n_captions") if kind == "retrieval" else ("n_images", "n_classes")
    expected_keys = {*fractions, *counts} | ({"rsum"} if kind == "retrieval" else set())
    assert set(metrics) == expected_keys
    for key in fractions:
        assert math.isfinite(metrics[key]) and 0.0 <= metrics[key] <= 1.0, (key, metrics)
    assert metrics["n_images"] == size["images"]
    if kind == "classification":
        assert metrics["n_classes"] == size["classes"]
        return
    assert metrics["n_captions"] == size["captions"]
    assert math.isfinite(metrics["rsum"]) and 0.0 <= metrics["rsum"] <= 600.0
    assert metrics["rsum"] == pytest.approx(100 * sum(metrics[k] for k in RECALL_KEYS))
    for direction in ("i2t", "t2i"):
        r1, r5, r10 = (metrics[f"{direction}_r{k}"] for k in (1, 5, 10))
        assert r1 <= r5 <= r10
    # Fewer than 10 images and captions: the whole set is ranked, so every query hits by 10.
    assert metrics["i2t_r10"] == metrics["t2i_r10"] == 1.0


def expected_size(name: str, directory: Path) -> tuple[dict[str, int], int]:
    """The size `bench` should report for a dataset, and how many images its reader skipped."""
    dataset = load_dataset(name, directory)
    if isinstance(dataset, RetrievalSet):
        size = {"images": len(dataset.image_paths), "captions": len(dataset.captions)}
        return size, dataset.skipped
    return {"images": len(dataset.labels), "classes": len(dataset.class_names_ko)}, 0


def table_rows(stdout: str) -> dict[str, list[str]]:
    """Rich table body rows by model name: the cells after the name, stripped."""
    rows = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0] and cells[0] != "model":
            rows[cells[0]] = cells[1:]
    return rows


def markdown_rows(stdout: str) -> tuple[list[str], list[list[str]]]:
    """(header cells, body rows) of the one Markdown table in `stdout`; checks its shape."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    assert lines[start + 1] == "|" + "---|" * len(header)
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        body.append([cell.strip() for cell in line.strip("|").split("|")])
    assert all(len(row) == len(header) for row in body)
    return header, body


@pytest.mark.parametrize("name", list(DATASETS))
def test_bench_every_dataset_as_table_json_and_markdown(cli, tiny, data_root, name):
    directory = data_dir(data_root, name)
    kind = DATASETS[name].kind
    models = [str(tiny.plain_bundle), str(tiny.heads_bundle)]
    if name in ALL_MODEL_SETS:
        models += ["clip-translate", "koclip"]
    args = ["bench", "--dataset", name, "--data-dir", directory, *model_args(models)]

    report = cli(*args, "--json")
    assert report.exit_code == 0, report.stderr
    result = report.json()
    size, skipped = expected_size(name, directory)
    assert (result["dataset"], result["kind"], result["size"]) == (name, kind, size)
    assert [note for note in result["notes"] if "skipped" in note] == (
        [f"images skipped: {skipped}"] if skipped else []
    )
    assert result["split"] == ("karpathy-test" if name == "mscoco-ko" else None)
    assert [row["model"] for row in result["rows"]] == models
    for row in result["rows"]:
        assert row["error"] is None, row
        check_metrics(kind, row["metrics"], size)

    table = cli(*args)
    assert table.exit_code == 0, table.stderr
    assert name in table.stdout and "unavailable" not in table.stdout
    labels = RETRIEVAL_HEADER if kind == "retrieval" else CLASSIFICATION_HEADER
    for word in {w for label in labels for w in label.split()}:
        assert word in table.stdout
    caption = ", ".join(f"{value} {key}" for key, value in size.items())
    assert caption in table.stdout
    cells = table_rows(table.stdout)
    assert list(cells) == [display_name(model) for model in models]
    for row in cells.values():
        assert len(row) == len(labels) - 1
        assert all(re.match(r"\d", cell) for cell in row), row

    markdown = cli(*args, "--markdown")
    assert markdown.exit_code == 0, markdown.stderr
    assert markdown.stdout.startswith(f"**{name}")
    header, body = markdown_rows(markdown.stdout)
    assert header == labels
    assert [row[0] for row in body] == [display_name(model) for model in models]
    # The same figures as the JSON: fractions in percent, RSUM as it is, one decimal.
    for row, reported in zip(body, result["rows"], strict=True):
        metrics = reported["metrics"]
        shown = [f"{(1 if key == 'rsum' else 100) * metrics[key]:.1f}" for key in SHOWN[kind]]
        assert row[1:] == shown


def test_retrieval_table_shows_whole_figures(cli, tiny, data_root, tmp_path):
    bundle = tmp_path / "hanclip-ko"  # the bundle name of `hanclip bench --help`
    bundle.symlink_to(tiny.heads_bundle, target_is_directory=True)
    directory = data_dir(data_root, "xtd10-ko")
    args = ["bench", "--dataset", "xtd10-ko", "--data-dir", directory]
    args += model_args([str(bundle), str(tiny.plain_bundle)])
    _, body = markdown_rows(cli(*args, "--markdown").stdout)
    assert table_rows(cli(*args).stdout) == {row[0]: row[1:] for row in body}


def test_limit_keeps_the_first_images(cli, tiny, data_root):
    directory = data_dir(data_root, "caltech101")
    args = ["bench", "--dataset", "caltech101", "--data-dir", directory]
    args += [*model_args([str(tiny.plain_bundle)]), "--json"]
    full = cli(*args).json()
    limited = cli(*args, "--limit", "2")
    assert limited.exit_code == 0, limited.stderr
    result = limited.json()
    assert result["size"] == {"images": 2, "classes": 4}
    assert full["size"]["images"] > result["size"]["images"]
    (row,) = result["rows"]
    check_metrics("classification", row["metrics"], result["size"])


def test_template_is_what_the_classes_are_embedded_in(cli, tiny, data_root, monkeypatch):
    used = []
    build_prompts = hanclip_eval.runner.build_prompts

    def spy(class_names_ko, templates):
        prompts = build_prompts(class_names_ko, templates)
        used.append(prompts)
        return prompts

    monkeypatch.setattr(hanclip_eval.runner, "build_prompts", spy)
    directory = data_dir(data_root, "stl10")
    args = ["bench", "--dataset", "stl10", "--data-dir", directory]
    args += [*model_args([str(tiny.heads_bundle)]), "--json"]
    result = cli(*args, "--template", "{}의 사진")
    assert result.exit_code == 0, result.stderr
    (prompts,) = used
    assert prompts[0] == ["비행기의 사진"] and len(prompts) == 10
    (row,) = result.json()["rows"]
    check_metrics("classification", row["metrics"], result.json()["size"])
    error = one_error_line(cli(*args, "--template", "사진"))
    assert "must contain {} exactly once" in error


@pytest.mark.parametrize("name", list(DATASETS))
def test_missing_data_is_one_line_naming_the_file(cli, tiny, tmp_path, name):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["bench", "--dataset", name, "--data-dir", empty, "--model", tiny.plain_bundle]
    error = one_error_line(cli(*args))
    assert EXPECTED_FILE[name].format(data_dir=empty) in error
    assert str(empty) in error and "not found" in error


def test_missing_data_error_is_all_that_stderr_gets(cli, tiny, tmp_path):
    result = cli("bench", "--dataset", "xtd10-ko", "--data-dir", tmp_path, "-m", tiny.plain_bundle)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1, repr(result.stderr)


def test_a_model_that_cannot_load_is_reported_and_the_rest_measured(
    cli, tiny, data_root, tmp_path, monkeypatch
):
    empty = tmp_path / "koclip"
    empty.mkdir()
    monkeypatch.setenv("HANCLIP_KOCLIP_MODEL", str(empty))
    directory = data_dir(data_root, "jsonl")
    models = [str(tiny.plain_bundle), "koclip", str(tiny.heads_bundle)]
    args = ["bench", "--dataset", "jsonl", "--data-dir", directory, *model_args(models)]

    report = cli(*args, "--json")
    assert report.exit_code == 0, report.stderr
    rows = {row["model"]: row for row in report.json()["rows"]}
    assert list(rows) == models
    assert rows["koclip"]["metrics"] == {}
    assert rows["koclip"]["error"].startswith("cannot load KoCLIP")
    assert str(empty) in rows["koclip"]["error"]
    for model in (str(tiny.plain_bundle), str(tiny.heads_bundle)):
        assert rows[model]["error"] is None
        check_metrics("retrieval", rows[model]["metrics"], report.json()["size"])

    table = cli(*args)
    assert table.exit_code == 0, table.stderr
    cells = table_rows(table.stdout)
    assert set(cells["koclip"]) == {"—"}
    assert all(re.match(r"\d", cell) for cell in cells["plain"] + cells["heads"])
    assert "koclip unavailable: cannot load KoCLIP" in table.stdout

    markdown = cli(*args, "--markdown")
    _, body = markdown_rows(markdown.stdout)
    assert body[1][0] == "koclip" and body[1][1].startswith("unavailable: cannot load KoCLIP")


def test_latency_times_queries_and_photos(cli, tiny):
    models = [str(tiny.plain_bundle), "clip-translate"]
    report = cli("bench", "--dataset", "latency", *model_args(models), "--json")
    assert report.exit_code == 0, report.stderr
    result = report.json()
    assert (result["dataset"], result["kind"], result["size"]) == ("latency", "latency", {})
    assert any("CPU cores" in note for note in result["notes"])
    assert [row["model"] for row in result["rows"]] == models
    rounds, queries = 3, len(hanclip_eval.runner.LATENCY_QUERIES)
    for row in result["rows"]:
        assert row["error"] is None, row
        metrics = row["metrics"]
        assert set(metrics) == {"query_p50_ms", "query_p95_ms", "images_per_s", "n_queries"}
        assert 0 < metrics["query_p50_ms"] <= metrics["query_p95_ms"]
        assert math.isfinite(metrics["images_per_s"]) and metrics["images_per_s"] > 0
        assert metrics["n_queries"] == rounds * queries == 60


def test_random_weights_only_for_latency(cli, data_root):
    directory = data_dir(data_root, "xtd10-ko")
    result = cli("bench", "--dataset", "xtd10-ko", "--data-dir", directory, "--random-weights")
    error = one_error_line(result)
    assert "--random-weights" in error and "latency" in error
    assert result.stdout == ""
