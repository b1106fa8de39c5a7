"""benchmarks/train_throughput.py (its arithmetic, report and a run on the tiny models) and the
DataLoader image bank it measures (same rows as one photo at a time, unreadable photos left
empty, resumed after an interruption).

No speed is asserted here: the figures live in the benchmark.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchkit.figures import to_json
from benchkit.report import duration, render
from benchscripts import load_script

from hanclip_eval.tiny_models import write_photo_folder
from hanclip_model.encoders import ClipEncoder, default_batch_size, is_cuda
from hanclip_model.images import load_image
from trainer.banks import (
    bank_batch_size,
    drop_empty_rows,
    encode_bank,
    image_batch_encoder,
    loader_workers,
)

bench = load_script("train_throughput.py", "train_throughput")


# -- the benchmark's arithmetic and report -------------------------------------------------


def test_extrapolation_is_proportional_to_the_work() -> None:
    assert bench.extrapolate(8.0, 20_000 * 30_000, 1_000_000 * 1_500_000) == pytest.approx(20_000.0)
    with pytest.raises(ValueError):
        bench.extrapolate(1.0, 0, 10)
    retrieval = bench.RetrievalFigure(20_000, 30_000, 512, 8.0, 1_000_000, 1_500_000)
    assert retrieval.extrapolation_factor == pytest.approx(2500)
    assert retrieval.target_seconds == pytest.approx(20_000.0)
    epoch = bench.EpochFigure(32_768, 2048, 16, 6.5, 1_000_000)
    assert epoch.target_steps == 489  # 488 full batches of 2048 and one of 576
    assert epoch.target_seconds == pytest.approx(6.5 * 489 / 16)
    bank = bench.BankFigure("images", 64, 32, 4.0, 1_500_000)
    assert bank.rate_per_s == 16.0
    assert bank.target_seconds == pytest.approx(1_500_000 / 16)


def test_durations_read_well() -> None:
    assert duration(8.04) == "8.0 s"
    assert duration(600) == "10.0 min"
    assert duration(5.5 * 3600) == "5.5 h"
    assert duration(3 * 86400) == "3.0 days"


def _results() -> Any:
    return bench.Results(
        device="cpu",
        device_name="Some CPU",
        cores=2,
        torch_threads=2,
        torch="2.x",
        cuda=None,
        bundle="/b",
        photo_size=(4000, 3000),
        distinct_photos=64,
        loader_workers=1,
        text_tokens_mean=11.5,
        clip_text=bench.BankFigure("english-clip", 256, 256, 25.6, 1_000_000),
        text=bench.BankFigure("english-text", 1024, 256, 30.0, 1_000_000),
        images=bench.BankFigure("images", 64, 64, 6.4, 1_500_000),
        retrieval=bench.RetrievalFigure(20_000, 30_000, 512, 8.0, 1_000_000, 1_500_000),
        epoch=bench.EpochFigure(32_768, 2048, 16, 6.5, 1_000_000),
        wall_s=120.0,
    )


def _section(report: str, name: str) -> dict[str, str]:
    """A report section's `label  value` lines, by label."""
    lines = report.split(f"\n{name}\n")[1].split("\n\n")[0].splitlines()
    return dict(re.split(r"  +", line.strip(), maxsplit=1) for line in lines)


def test_report_and_json() -> None:
    results = _results()
    report = render("train throughput", results)
    assert re.search(r"\ndevice name +Some CPU\n", report) and re.search(r"\ncores +2\n", report)
    clip_text = _section(report, "clip text")  # 256 captions in 25.6 s
    assert clip_text["rate"] == "10 /s" and clip_text["target"] == "27.8 h"
    assert _section(report, "images")["target"] == "41.7 h"
    retrieval = _section(report, "retrieval")
    assert retrieval["target"] == "5.6 h" and retrieval["extrapolation factor"] == "2,500"
    assert (retrieval["queries"], retrieval["bank"]) == ("20,000", "30,000")
    assert _section(report, "images")["batch size"] == "64"
    assert re.search(r"\nloader workers +1\n", report)
    epoch = _section(report, "epoch")
    assert epoch["target"] == "3.3 min" and epoch["scale factor"] == "30.56"
    figures = json.loads(to_json(results))
    assert figures["retrieval"]["extrapolation_factor"] == pytest.approx(2500)
    assert figures["images"]["rate_per_s"] == pytest.approx(10.0)
    assert figures["epoch"]["target_seconds"] == pytest.approx(6.5 * 489 / 16)


def test_sizes_follow_the_device_and_the_flags() -> None:
    args = bench.parse_args(["--images", "10"])
    assert bench.sizes_from(args, "cpu") == replace(bench.CPU_SIZES, images=10)
    assert bench.sizes_from(bench.parse_args([]), "cuda:0") == bench.CUDA_SIZES
    with pytest.raises(SystemExit):
        bench.parse_args(["--train-rows", "0"])


def test_a_tiny_run(tiny, tmp_path: Path) -> None:
    photos = write_photo_folder(tmp_path / "photos", count=3)
    sizes = bench.Sizes(
        clip_captions=6,
        text_captions=10,
        photos=3,
        images=5,
        retrieval_queries=40,
        retrieval_bank=70,
        train_rows=64,
    )
    results = bench.run_benchmark(tiny.plain_bundle, photos, sizes, "cpu")
    assert (results.clip_text.items, results.text.items, results.images.items) == (6, 10, 5)
    assert results.images.batch_size == bank_batch_size("image", "cpu")
    assert results.loader_workers == loader_workers("cpu")
    assert (results.retrieval.queries, results.retrieval.bank) == (40, 70)
    assert (results.epoch.rows, results.epoch.batch_size, results.epoch.steps) == (64, 64, 1)
    assert results.epoch.seconds > 0 and results.text_tokens_mean > 2
    assert results.reads_per_photo == pytest.approx(5 / 3)


# -- batch sizes and workers per device ------------------------------------------------------


def test_batch_sizes_and_workers_per_device() -> None:
    assert is_cuda("cuda") and is_cuda("cuda:1") and not is_cuda("cpu")
    for kind in ("image", "clip_text", "text"):
        assert default_batch_size(kind, "cuda") > default_batch_size(kind, "cpu")
    assert bank_batch_size("text", "cpu") == 256  # what the caption banks always used
    assert bank_batch_size("image", "cuda:0") > bank_batch_size("image", "cpu")
    assert [loader_workers("cpu", n) for n in (1, 2, 16)] == [0, 1, 4]
    assert [loader_workers("cuda", n) for n in (1, 2, 16)] == [0, 1, 15]


# -- the DataLoader image bank -----------------------------------------------------------------


@pytest.fixture
def clip(tiny) -> ClipEncoder:
    return ClipEncoder(tiny.image_spec, "cpu")


@pytest.fixture
def photo_paths(tmp_path: Path) -> list[str]:
    paths = [str(p) for p in write_photo_folder(tmp_path / "photos", count=7)]
    broken = tmp_path / "photos" / "broken.jpg"
    broken.write_bytes(b"not a JPEG at all")
    paths.insert(3, str(broken))
    return paths


@pytest.mark.parametrize("workers", [0, 2])
def test_image_bank_rows_match_one_photo_at_a_time(
    clip: ClipEncoder, photo_paths: list[str], tmp_path: Path, workers: int
) -> None:
    encoder = image_batch_encoder(clip, workers=workers)
    bank = encode_bank(photo_paths, encoder, clip.dim, tmp_path / "images.npy", batch_size=3)
    assert bank.shape == (len(photo_paths), clip.dim)
    for path, row in zip(photo_paths, bank, strict=True):
        if path.endswith("broken.jpg"):
            assert not row.any()  # unreadable: an empty row
            continue
        alone = clip.embed_images([load_image(path, clip.image_size).image])[0]
        np.testing.assert_allclose(row, alone, atol=1e-5)
    assert len(drop_empty_rows(bank)) == len(photo_paths) - 1


def test_image_bank_resumes_after_an_interruption(
    clip: ClipEncoder, photo_paths: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = np.array(
        encode_bank(photo_paths, image_batch_encoder(clip), clip.dim, tmp_path / "whole.npy")
    )
    path = tmp_path / "images.npy"

    def stop_after_first_batch(rows: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        encode_bank(
            photo_paths,
            image_batch_encoder(clip),
            clip.dim,
            path,
            batch_size=3,
            on_rows=stop_after_first_batch,
        )
    assert not path.exists()
    assert json.loads((tmp_path / "images.progress.json").read_text()) == {"rows_done": 3}

    embedded: list[int] = []
    embed_pixels = ClipEncoder.embed_pixels

    def counting(self: ClipEncoder, pixels: Any) -> np.ndarray:
        embedded.append(len(pixels))
        return embed_pixels(self, pixels)

    monkeypatch.setattr(ClipEncoder, "embed_pixels", counting)
    reported: list[int] = []
    bank = encode_bank(
        photo_paths,
        image_batch_encoder(clip),
        clip.dim,
        path,
        batch_size=3,
        on_rows=reported.append,
    )
    assert embedded == [3, 2]  # rows 3-7 only: the first batch was kept
    assert reported == [3, 3, 2]
    np.testing.assert_allclose(bank, whole, atol=1e-5)
    assert not (tmp_path / "images.progress.json").exists()
